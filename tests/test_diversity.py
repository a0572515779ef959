"""LPIPS diversity: the exact one-pass formula against the explicit loop over pairs."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fixture_utils import state_dict_from_manifest
from sage_jax.checkpoints.lpips import load_lpips
from sage_jax.metrics.diversity import lpips_diversity, mean_pairwise_lpips, resize
from sage_jax.nn.lpips import LPIPSModel


@pytest.fixture(scope="module")
def lp():
    return load_lpips(state_dict_from_manifest("lpips_vgg.json")[0])


def _images(n, size, seed):
    x = jax.random.uniform(jax.random.PRNGKey(seed), (n, size, size, 3), minval=-1, maxval=1)
    return np.asarray(jax.image.resize(x, (n, size, size, 3), "linear"))  # a little structure


def _brute_force(lp, images):
    pairs = list(itertools.combinations(range(len(images)), 2))
    a = jnp.asarray(images[[i for i, _ in pairs]])
    b = jnp.asarray(images[[j for _, j in pairs]])
    return float(np.mean(np.asarray(lp(a, b))))


def test_features_reproduce_the_distance(lp):
    x = _images(4, 32, 0)
    taps, w = lp.features(x), lp.head_weights()
    d = sum(jnp.mean(jnp.einsum("nhwc,c->nhw", jnp.square(t[:2] - t[2:]), wk), axis=(1, 2)) for t, wk in zip(taps, w))
    np.testing.assert_allclose(np.asarray(d), np.asarray(lp(x[:2], x[2:])), rtol=1e-5)


@pytest.mark.parametrize("n,batch", [(2, 64), (7, 64), (9, 4)])  # one batch; several batches with padding
def test_mean_pairwise_equals_pair_loop(lp, n, batch):
    x = _images(n, 32, n)
    got = mean_pairwise_lpips(lp, x, size=None, batch_size=batch)
    np.testing.assert_allclose(got, _brute_force(lp, x), rtol=2e-4)


def test_protocol_32_resizes_first(lp):
    x = _images(5, 48, 3)
    got = mean_pairwise_lpips(lp, x, size=32)
    np.testing.assert_allclose(got, _brute_force(lp, np.asarray(resize(x, 32))), rtol=2e-4)
    assert abs(got - mean_pairwise_lpips(lp, x, size=None)) > 1e-4  # the protocol matters


def test_negative_head_weights(lp):
    """The identity holds for any head weights, not only non-negative ones."""
    v = jax.tree_util.tree_map(np.array, lp.variables)
    v["params"]["lin2"] = -np.abs(v["params"]["lin2"]) * 3
    lp2 = LPIPSModel(v)
    x = _images(6, 32, 11)
    np.testing.assert_allclose(mean_pairwise_lpips(lp2, x, size=None), _brute_force(lp2, x), rtol=2e-4, atol=1e-6)


def test_identical_images_have_zero_diversity_and_classes_average(lp):
    one = _images(1, 32, 5)
    same = np.repeat(one, 4, axis=0)
    varied = _images(4, 32, 6)
    out = lpips_diversity(lp, {"same": same, "varied": varied}, size=None)
    assert abs(out["per_class"]["same"]) < 1e-6
    assert out["per_class"]["varied"] > 1e-3
    np.testing.assert_allclose(out["lpips"], (out["per_class"]["same"] + out["per_class"]["varied"]) / 2)
    assert out["protocol"] == "full"
    with pytest.raises(ValueError, match="at least 2"):
        mean_pairwise_lpips(lp, one)
