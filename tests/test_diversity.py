"""LPIPS diversity: the exact one-pass formula against the explicit loop over pairs."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fixture_utils import assert_close, fixture, state_dict_from_manifest
from sage_jax.checkpoints.lpips import load_lpips
from sage_jax.metrics.diversity import (lpips_diversity, mean_pairwise_lpips, network_input, official_resize,
                                        resize)
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
    got = mean_pairwise_lpips(lp, x, protocol="full", batch_size=batch)
    np.testing.assert_allclose(got, _brute_force(lp, x), rtol=2e-4)


def test_protocol_clean_resizes_first(lp):
    x = _images(5, 48, 3)
    got = mean_pairwise_lpips(lp, x, protocol="clean")
    np.testing.assert_allclose(got, _brute_force(lp, np.asarray(resize(x, 32))), rtol=2e-4)
    assert abs(got - mean_pairwise_lpips(lp, x, protocol="full")) > 1e-4  # the protocol matters
    with pytest.raises(ValueError, match="protocol"):
        mean_pairwise_lpips(lp, x, protocol="32")


@pytest.fixture(scope="module")
def official():
    return dict(np.load(fixture("lpips_official_protocol.npz")))


@pytest.mark.parametrize("prefix", ["", "x256_"])
def test_official_resize_is_opencvs_bit_for_bit(official, prefix):
    """64 -> 32 (OpenCV's rounded 2x2 mean) and 256 -> 32 (INTER_LINEAR at factor 8)."""
    got = official_resize(official[f"{prefix}images"])
    np.testing.assert_array_equal(got, official[f"{prefix}official_resized"])
    # the antialiased resize is another image: the protocols differ from the first step
    assert np.abs(got.astype(int) - official[f"{prefix}clean_resized"].astype(int)).max() > 10


@pytest.mark.parametrize("prefix", ["", "x256_"])
def test_official_protocol_reproduces_the_scripts_numbers(lp, official, prefix):
    """The official script's LPIPS diversity, from the PNGs' uint8 content: every pair
    distance (through the network, fed u / 63.75 - 3), each class's pair mean (through the
    one-pass formula) and the final mean, at 1e-4 of their scale (float32, as the script)."""
    images, classes = official[f"{prefix}images"], official[f"{prefix}classes"]
    pairs = official[f"{prefix}pairs"]
    per = len(images) // len(classes)
    by_class = {str(c): images[k * per:(k + 1) * per] for k, c in enumerate(classes)}
    for k, c in enumerate(classes):
        x = network_input(by_class[str(c)], "official")
        assert x.min() >= -3 and x.max() <= 1
        d = lp(x[pairs[:, 0]], x[pairs[:, 1]])
        assert_close(d, official[f"{prefix}official_pair_d_f32"][k], f"{prefix}pair distances {c}")
    # float images in [-1, 1] that round to the same PNG give the same result
    as_float = {c: v.astype(np.float32) / 127.5 - 1 for c, v in by_class.items()}
    for imgs in (by_class, as_float):
        out = lpips_diversity(lp, imgs)
        assert out["protocol"] == "official"
        for k, c in enumerate(classes):
            assert_close(out["per_class"][str(c)], official[f"{prefix}official_class_mean_f32"][k],
                         f"{prefix}class mean {c}")
        assert_close(out["lpips"], official[f"{prefix}official_mean_f32"], f"{prefix}official mean")
    # the clean protocol is not the paper's: measurably off the official number
    clean = lpips_diversity(lp, by_class, protocol="clean")["lpips"]
    assert abs(clean - float(official[f"{prefix}official_mean_f32"])) > 0.02 * float(official[f"{prefix}official_mean_f32"])


def test_negative_head_weights(lp):
    """The identity holds for any head weights, not only non-negative ones."""
    v = jax.tree_util.tree_map(np.array, lp.variables)
    v["params"]["lin2"] = -np.abs(v["params"]["lin2"]) * 3
    lp2 = LPIPSModel(v)
    x = _images(6, 32, 11)
    np.testing.assert_allclose(mean_pairwise_lpips(lp2, x, protocol="full"), _brute_force(lp2, x), rtol=2e-4, atol=1e-6)


def test_identical_images_have_zero_diversity_and_classes_average(lp):
    one = _images(1, 32, 5)
    same = np.repeat(one, 4, axis=0)
    varied = _images(4, 32, 6)
    out = lpips_diversity(lp, {"same": same, "varied": varied}, protocol="full")
    assert abs(out["per_class"]["same"]) < 1e-6
    assert out["per_class"]["varied"] > 1e-3
    np.testing.assert_allclose(out["lpips"], (out["per_class"]["same"] + out["per_class"]["varied"]) / 2)
    assert out["protocol"] == "full"
    with pytest.raises(ValueError, match="at least 2"):
        mean_pairwise_lpips(lp, one)


def test_pair_matrix_equals_the_pair_loop_and_the_interval_holds_the_value(lp):
    from sage_jax.metrics.diversity import lpips_difference, pairwise_lpips

    x = _images(6, 32, 21)
    d = pairwise_lpips(lp, x, protocol="full", batch_size=4)   # two batches
    pairs = list(itertools.combinations(range(6), 2))
    want = np.asarray(lp(x[[i for i, _ in pairs]], x[[j for _, j in pairs]]))
    np.testing.assert_allclose([d[i, j] for i, j in pairs], want, rtol=2e-4, atol=1e-6)
    np.testing.assert_array_equal(d, d.T)
    by_class = {"a": _images(5, 32, 1), "b": _images(5, 32, 2), "c": _images(5, 32, 3)}
    mats = {}
    out = lpips_diversity(lp, by_class, protocol="clean", key=jax.random.PRNGKey(0), n_boot=200, matrices=mats)
    plain = lpips_diversity(lp, by_class, protocol="clean")
    np.testing.assert_allclose(out["lpips"], plain["lpips"], rtol=2e-4)
    iv = out["lpips_ci"]
    assert iv["lo"] < iv["value"] < iv["hi"]
    # paired: the same images against themselves differ by exactly 0; against half-blurred copies not
    assert lpips_difference(mats, mats, jax.random.PRNGKey(0), 100) == {"value": 0.0, "lo": 0.0, "hi": 0.0}
    smooth = {c: np.asarray(jax.image.resize(jax.image.resize(v, (5, 8, 8, 3), "linear"), (5, 32, 32, 3), "linear"))
              for c, v in by_class.items()}
    mats_s = {}
    lpips_diversity(lp, smooth, protocol="clean", key=jax.random.PRNGKey(0), n_boot=10, matrices=mats_s)
    assert abs(lpips_difference(mats, mats_s, jax.random.PRNGKey(0), 200)["value"]) > 1e-3
