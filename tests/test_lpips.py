"""LPIPS-VGG (lpips 0.1.4) against ``../shared/fixtures/lpips_vgg.{json,npz}``, and the
converter's key layouts."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fixture_utils import assert_close, fixture, nchw_to_nhwc, state_dict_from_manifest
from sage_jax.checkpoints.lpips import (convert_lpips, convert_lpips_parts, load_lpips, load_lpips_from_parts,
                                        lpips_to_state_dict)
from sage_jax.checkpoints.torch_reader import CheckpointError
from sage_jax.nn.lpips import normalize_channels


@pytest.fixture(scope="module")
def manifest():
    sd, meta = state_dict_from_manifest("lpips_vgg.json")
    return sd, meta


@pytest.fixture(scope="module")
def ref():
    z = np.load(fixture("lpips_vgg.npz"))
    return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def lp(manifest):
    return load_lpips(manifest[0])


def _inputs(ref):
    return nchw_to_nhwc(ref["in0"]), nchw_to_nhwc(ref["in1"])


def test_meta_cases_are_covered(manifest, ref):
    cases = manifest[1]["cases"]
    assert set(cases) == {"out_lpips"}
    assert set(ref) == {"in0", "in1", "out_lpips"}


def test_parity_float32(lp, ref):
    a, b = _inputs(ref)
    d = lp(a, b)
    assert d.dtype == jnp.float32
    out = ref["out_lpips"].reshape(-1)  # the reference's (N, 1, 1, 1), stored as (N,)
    assert_close(d, out, "out_lpips (float32)")
    # the distances are small (~1e-2): also check them relative to their size
    np.testing.assert_allclose(np.asarray(d), out, rtol=1e-4)


def test_parity_float64(manifest, ref):
    with jax.enable_x64(True):
        lp64 = load_lpips(manifest[0], dtype=jnp.float64)
        a, b = _inputs(ref)
        d = lp64(a, b)
        assert d.dtype == jnp.float64
        assert_close(d, ref["out_lpips"].reshape(-1), "out_lpips (float64)")
        # the fixture holds float32 values: agreement to their rounding
        np.testing.assert_allclose(np.asarray(d), ref["out_lpips"], rtol=1e-6)


def test_per_layer_terms_sum_to_distance(lp, ref):
    a, b = _inputs(ref)
    terms = lp(a, b, per_layer=True)
    assert terms.shape == (a.shape[0], 5)
    assert np.all(np.asarray(terms) >= 0)
    np.testing.assert_allclose(np.asarray(terms).sum(1), np.asarray(lp(a, b)), rtol=1e-6)


def test_identical_images_and_symmetry(lp, ref):
    a, b = _inputs(ref)
    assert np.max(np.abs(np.asarray(lp(a, a)))) <= 1e-12
    assert np.max(np.abs(np.asarray(lp(b, b)))) <= 1e-12
    d_ab, d_ba = np.asarray(lp(a, b)), np.asarray(lp(b, a))
    assert np.all(d_ab > 0)
    assert_close(d_ba, d_ab, "symmetry", tol=1e-6)


def test_normalize_flag_matches_minus_one_one(lp, ref):
    a, b = _inputs(ref)
    d01 = lp((a + 1) / 2, (b + 1) / 2, normalize=True)
    assert_close(d01, lp(a, b), "normalize=True on [0, 1] inputs", tol=1e-6)


def test_gradient_is_finite_under_jit(lp, ref):
    a, b = _inputs(ref)
    a, b = jnp.asarray(a[:2, :32, :32]), jnp.asarray(b[:2, :32, :32])

    @jax.jit
    def loss(x, y):
        return jnp.sum(lp.module.apply(lp.variables, x, y))

    g = jax.grad(loss)(a, b)
    assert g.shape == a.shape
    assert np.all(np.isfinite(np.asarray(g)))
    assert float(jnp.max(jnp.abs(g))) > 0


def test_channel_normalisation_at_dead_pixels():
    # a pixel whose ReLU features are all zero: value 0 and a finite gradient
    # (the plain sqrt of the squared norm gives NaN there)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 2, 2, 8)), jnp.float32).at[0, 0, 0].set(0.0)
    y = normalize_channels(x)
    assert np.all(np.asarray(y[0, 0, 0]) == 0)
    np.testing.assert_allclose(np.asarray(jnp.sum(y[0, 1:] ** 2, -1)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(y), np.asarray(x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + 1e-10)),
                               rtol=1e-6)
    w = jnp.arange(8.0)
    g = jax.grad(lambda v: jnp.sum(normalize_channels(v) * w))(x)
    assert np.all(np.isfinite(np.asarray(g)))


def _torchvision_parts(sd):
    vgg, heads = {}, {}
    for k, v in sd.items():
        m = re.fullmatch(r"net\.slice\d\.(\d+)\.(weight|bias)", k)
        if m:
            vgg[f"features.{m.group(1)}.{m.group(2)}"] = v
        elif re.fullmatch(r"lin\d\.model\.1\.weight", k):
            heads[k] = v
    assert len(vgg) == 26 and len(heads) == 5
    # torchvision's classifier is ignored (small stand-ins: only the keys matter)
    for i in (0, 3, 6):
        vgg[f"classifier.{i}.weight"] = np.zeros((2, 2), np.float32)
        vgg[f"classifier.{i}.bias"] = np.zeros((2,), np.float32)
    return vgg, heads


def test_parts_loader_matches_full_loader(manifest, lp, ref):
    sd = manifest[0]
    vgg, heads = _torchvision_parts(sd)
    lp2 = load_lpips_from_parts(vgg, heads)
    a, b = _inputs(ref)
    d_full, d_parts = np.asarray(lp(a, b)), np.asarray(lp2(a, b))
    np.testing.assert_array_equal(d_parts, d_full)
    assert_close(d_parts, ref["out_lpips"], "out_lpips (parts loader)")
    jax.tree_util.tree_map(np.testing.assert_array_equal, lp2.variables, lp.variables)


def test_head_duplicates_and_round_trip(manifest, lp):
    sd = manifest[0]
    full = convert_lpips(sd)
    only_lin = convert_lpips({k: v for k, v in sd.items() if not k.startswith("lins.")})
    only_lins = convert_lpips({k: v for k, v in sd.items() if not re.match(r"lin\d\.", k)})
    for v in (only_lin, only_lins):
        jax.tree_util.tree_map(np.testing.assert_array_equal, v, full)
    bad = dict(sd)
    bad["lins.2.model.1.weight"] = bad["lins.2.model.1.weight"] + 1
    with pytest.raises(CheckpointError, match=r"lins\.2\.model\.1\.weight"):
        convert_lpips(bad)
    back = lpips_to_state_dict(lp)
    assert set(back) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)


def test_missing_or_misshaped_keys_raise(manifest):
    sd = manifest[0]
    for key in ("net.slice3.12.weight", "scaling_layer.shift"):
        broken = {k: v for k, v in sd.items() if k != key}
        with pytest.raises(CheckpointError, match=re.escape(key)):
            convert_lpips(broken)
    broken = {k: v for k, v in sd.items() if k not in ("lin4.model.1.weight", "lins.4.model.1.weight")}
    with pytest.raises(CheckpointError, match=re.escape("lin4.model.1.weight")):
        convert_lpips(broken)
    with pytest.raises(CheckpointError, match="extra_key"):
        convert_lpips({**sd, "extra_key": np.zeros(1, np.float32)})
    wrong = dict(sd)
    wrong["net.slice1.0.weight"] = np.zeros((64, 3, 5, 5), np.float32)
    with pytest.raises(CheckpointError, match=re.escape("net.slice1.0.weight")):
        convert_lpips(wrong)
    vgg, heads = _torchvision_parts(sd)
    del vgg["features.24.bias"]
    with pytest.raises(CheckpointError, match=re.escape("features.24.bias")):
        convert_lpips_parts(vgg, heads)
    vgg, heads = _torchvision_parts(sd)
    del heads["lin1.model.1.weight"]
    with pytest.raises(CheckpointError, match=re.escape("lin1.model.1.weight")):
        convert_lpips_parts(vgg, heads)
