"""Converter strictness, the GeneratorModel API, and orbax save/load, on the tiny checkpoint."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fixture_utils import assert_close, fixture, nchw_to_nhwc
from sage_jax import checkpoints
from sage_jax.checkpoints import CheckpointError


@pytest.fixture(scope="module")
def tiny():
    return checkpoints.read_torch(fixture("tiny_rosinality_ckpt.pt"))


@pytest.fixture(scope="module")
def expected():
    return np.load(fixture("tiny_checkpoints_expected.npz"))


def test_missing_key_is_named(tiny):
    sd = dict(tiny["g_ema"])
    del sd["convs.3.noise.weight"]
    with pytest.raises(CheckpointError, match=r"missing key.*convs\.3\.noise\.weight"):
        checkpoints.load_generator(sd)


def test_extra_key_is_named(tiny):
    sd = dict(tiny["g_ema"], **{"convs.3.extra.weight": np.zeros(3, np.float32)})
    with pytest.raises(CheckpointError, match=r"unexpected key.*convs\.3\.extra\.weight"):
        checkpoints.load_generator(sd)
    d = dict(tiny["d"], **{"final_linear.2.weight": np.zeros((1, 1), np.float32)})
    with pytest.raises(CheckpointError, match=r"final_linear\.2\.weight"):
        checkpoints.load_discriminator(d)


def test_misshaped_key_is_named(tiny):
    sd = dict(tiny["g_ema"])
    sd["convs.2.conv.modulation.weight"] = np.zeros((17, 64), np.float32)
    with pytest.raises(CheckpointError, match=r"convs\.2\.conv\.modulation\.weight.*shape"):
        checkpoints.load_generator(sd)
    d = dict(tiny["d"])
    d["final_conv.0.weight"] = np.zeros((32, 32, 3, 3), np.float32)  # should have 33 inputs
    with pytest.raises(CheckpointError, match=r"final_conv\.0\.weight"):
        checkpoints.load_discriminator(d)


def test_foreign_blur_kernel_is_refused(tiny):
    sd = dict(tiny["g_ema"])
    sd["to_rgbs.1.upsample.kernel"] = np.ones((4, 4), np.float32)
    with pytest.raises(CheckpointError, match=r"to_rgbs\.1\.upsample\.kernel"):
        checkpoints.load_generator(sd)


def test_g_and_g_ema_both_load_and_differ(tiny, expected):
    g = checkpoints.load_generator(tiny["g"])
    g_ema = checkpoints.load_generator(tiny)  # whole checkpoint: g_ema is picked
    a, b = g(expected["z"]), g_ema(expected["z"])
    assert_close(b, nchw_to_nhwc(expected["out_g_ema_z_fixednoise"]), "g_ema")
    assert float(jnp.max(jnp.abs(a - b))) > 1e-4


def test_generator_from_path_and_from_decoder_prefix(expected):
    want = nchw_to_nhwc(expected["out_g_ema_z_fixednoise"])
    G = checkpoints.load_generator(fixture("tiny_rosinality_ckpt_legacy.pt"))
    assert_close(G(expected["z"]), want, "from path")
    age = checkpoints.read_torch(fixture("tiny_age_layout_ckpt.pt"))
    decoder = checkpoints.split_state_dict(age["state_dict"])["decoder"]
    assert_close(checkpoints.load_generator(decoder)(expected["z"]), want, "decoder part")


def test_orbax_round_trip(tmp_path, tiny, expected):
    G = checkpoints.load_generator(tiny["g_ema"])
    D = checkpoints.load_discriminator(tiny["d"])
    checkpoints.save_model(tmp_path / "g", G)
    checkpoints.save_model(tmp_path / "d", D)
    G2 = checkpoints.load_generator(tmp_path / "g")
    D2 = checkpoints.load_model(tmp_path / "d")
    assert G2.config == G.config
    np.testing.assert_array_equal(np.asarray(G2(expected["z"])), np.asarray(G(expected["z"])))
    img = G(expected["z"])
    np.testing.assert_array_equal(np.asarray(D2(img)), np.asarray(D(img)))
    with pytest.raises(FileExistsError):
        checkpoints.save_model(tmp_path / "g", G)
    with pytest.raises(CheckpointError, match="not a generator"):
        checkpoints.load_generator(tmp_path / "d")
    with pytest.raises(CheckpointError, match="model.json"):
        checkpoints.load_generator(tmp_path)


def test_generator_api_errors(tiny):
    G = checkpoints.load_generator(tiny["g_ema"])
    z = np.zeros((2, 64), np.float32)
    with pytest.raises(ValueError, match="key"):
        G(z, noise="random")
    with pytest.raises(ValueError, match="key"):
        G([z, z])
    with pytest.raises(ValueError, match="style dimension"):
        G(np.zeros((2, 32), np.float32))
    with pytest.raises(ValueError, match="input_is_latent"):
        G(np.zeros((2, 8, 64), np.float32))
    with pytest.raises(ValueError, match="at least 8"):
        G(np.zeros((2, 4, 64), np.float32), input_is_latent=True)
    with pytest.raises(ValueError, match="truncation_latent"):
        G(z, truncation=0.7)
    with pytest.raises(ValueError, match="noise map"):
        G(z, noise=[np.zeros((2, 5, 5, 1))] * G.num_layers)


def test_wplus_with_extra_entries_uses_the_first_n_latent(tiny):
    # SAGE's encoder always emits 18 codes; a smaller generator uses the first n_latent
    G = checkpoints.load_generator(tiny["g_ema"])
    w = G.mapping(jax.random.normal(jax.random.PRNGKey(0), (2, 64)))
    wplus = jnp.repeat(w[:, None], G.n_latent, axis=1)
    padded = jnp.concatenate([wplus, 100.0 + jnp.zeros((2, 18 - G.n_latent, 64))], axis=1)
    np.testing.assert_allclose(np.asarray(G(padded, input_is_latent=True)),
                               np.asarray(G(w, input_is_latent=True)), atol=1e-5)


def test_style_mixing_and_truncation_semantics(tiny):
    G = checkpoints.load_generator(tiny["g_ema"])
    k1, k2 = jax.random.split(jax.random.PRNGKey(3))
    z1, z2 = jax.random.normal(k1, (3, 64)), jax.random.normal(k2, (3, 64))
    _, lat = G([z1, z2], inject_index=3, return_latents=True)
    w1, w2 = G.mapping(z1), G.mapping(z2)
    np.testing.assert_allclose(np.asarray(lat[:, :3]), np.asarray(jnp.repeat(w1[:, None], 3, 1)), atol=1e-6)
    np.testing.assert_allclose(np.asarray(lat[:, 3:]), np.asarray(jnp.repeat(w2[:, None], 5, 1)), atol=1e-6)
    # random inject index comes from the key, reproducibly
    _, a = G([z1, z2], key=jax.random.PRNGKey(0), return_latents=True)
    _, b = G([z1, z2], key=jax.random.PRNGKey(0), return_latents=True)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # truncation 0 collapses every sample to the truncation latent
    center = G.mean_latent(256, jax.random.PRNGKey(9))
    img = G(z1, truncation=0.0, truncation_latent=center)
    np.testing.assert_allclose(np.asarray(img[0]), np.asarray(img[1]), atol=1e-5)


# ------------------------------------------------------- upsample_mode="nearest" (not in the reference)
def test_nearest_upsampling_is_the_same_size_convolution_of_the_doubled_input():
    from sage_jax.nn.layers import ModulatedConv2d, ToRGB, upsample_nearest

    k = jax.random.split(jax.random.PRNGKey(0), 4)
    x = jax.random.normal(k[0], (2, 4, 4, 6))
    style = jax.random.normal(k[1], (2, 5))
    up = ModulatedConv2d(7, 3, upsample=True, upsample_mode="nearest")
    same = ModulatedConv2d(7, 3)
    v = up.init(k[2], x, style)
    # perturb the modulation bias so that the test sees the modulation, not just the weights
    v = jax.tree_util.tree_map(lambda a: a + 0.1 * jax.random.normal(k[3], a.shape), v)
    doubled = np.repeat(np.repeat(np.asarray(x), 2, axis=1), 2, axis=2)
    np.testing.assert_array_equal(np.asarray(upsample_nearest(x)), doubled)
    np.testing.assert_allclose(np.asarray(up.apply(v, x, style)), np.asarray(same.apply(v, doubled, style)),
                               rtol=1e-6, atol=1e-6)
    # the reference's mode is a different function of the same weights
    blur = ModulatedConv2d(7, 3, upsample=True)
    assert np.abs(np.asarray(blur.apply(v, x, style)) - np.asarray(up.apply(v, x, style))).max() > 1e-2
    # ToRGB adds the nearest-doubled skip image
    rgb = ToRGB(upsample_mode="nearest")
    skip = jax.random.normal(k[3], (2, 2, 2, 3))
    rv = rgb.init(k[2], x, style, skip)
    no_skip = np.asarray(ToRGB().apply(rv, x, style))
    np.testing.assert_allclose(np.asarray(rgb.apply(rv, x, style, skip)) - no_skip,
                               np.repeat(np.repeat(np.asarray(skip), 2, axis=1), 2, axis=2), rtol=1e-6, atol=1e-6)


def test_nearest_generator_trains_saves_and_has_no_reference_layout(tmp_path):
    from sage_jax.models import init_generator

    cfg = dict(size=16, style_dim=8, n_mlp=1, channels=((4, 8), (8, 8), (16, 8)), upsample_mode="nearest")
    G = init_generator(cfg, jax.random.PRNGKey(0))
    z = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (3, 8)))
    img = np.asarray(G(z))
    assert img.shape == (3, 16, 16, 3) and np.isfinite(img).all()
    blur = init_generator(dict(cfg, upsample_mode="blur"), jax.random.PRNGKey(0))
    assert np.abs(np.asarray(blur(z)) - img).max() > 1e-3   # same weights, another function
    checkpoints.save_model(tmp_path / "g", G)
    G2 = checkpoints.load_generator(tmp_path / "g")
    assert G2.config["upsample_mode"] == "nearest"
    np.testing.assert_array_equal(np.asarray(G2(z)), img)
    with pytest.raises(CheckpointError, match="upsample_mode='nearest' has no rosinality"):
        checkpoints.generator_to_state_dict(G.config, G.variables)
    with pytest.raises(ValueError, match="upsample_mode must be one of"):
        init_generator(dict(cfg, upsample_mode="bicubic"), jax.random.PRNGKey(0))


def _bilinear_double(x):
    """numpy: each axis doubled with weights 3/4 (own pixel) and 1/4 (the neighbour on
    the output pixel's side), the border pixel repeated beyond the edge."""
    def axis(a, ax):
        a = np.moveaxis(a, ax, 0)
        pad = np.concatenate([a[:1], a, a[-1:]])
        out = np.empty((2 * len(a),) + a.shape[1:], a.dtype)
        out[0::2] = 0.75 * pad[1:-1] + 0.25 * pad[:-2]
        out[1::2] = 0.75 * pad[1:-1] + 0.25 * pad[2:]
        return np.moveaxis(out, 0, ax)
    return axis(axis(np.asarray(x, np.float64), 1), 2)


def test_bilinear_and_smooth_skip_upsampling():
    """"bilinear" doubles feature maps and skip images bilinearly; "smooth-skip" the
    feature maps by nearest neighbour and the RGB skip images bilinearly (no 2x2 steps
    for the image path to stack into tiles)."""
    from sage_jax.metrics.stages import tile_contrast
    from sage_jax.nn.layers import ModulatedConv2d, ToRGB, upsample_bilinear, upsample_nearest

    k = jax.random.split(jax.random.PRNGKey(0), 4)
    x = jax.random.normal(k[0], (2, 4, 4, 6))
    np.testing.assert_allclose(np.asarray(upsample_bilinear(x)), _bilinear_double(x), rtol=1e-5, atol=1e-6)
    style = jax.random.normal(k[1], (2, 5))
    same = ModulatedConv2d(7, 3)
    v = same.init(k[2], x, style)
    for mode, doubled in (("bilinear", _bilinear_double(x)), ("smooth-skip", np.asarray(upsample_nearest(x)))):
        up = ModulatedConv2d(7, 3, upsample=True, upsample_mode=mode)
        np.testing.assert_allclose(np.asarray(up.apply(v, x, style)),
                                   np.asarray(same.apply(v, jnp.asarray(doubled, jnp.float32), style)),
                                   rtol=1e-5, atol=1e-5)
    skip = jax.random.normal(k[3], (2, 2, 2, 3))
    rv = ToRGB().init(k[2], x, style, skip)
    no_skip = np.asarray(ToRGB().apply(rv, x, style))
    for mode in ("bilinear", "smooth-skip"):
        added = np.asarray(ToRGB(upsample_mode=mode).apply(rv, x, style, skip)) - no_skip
        np.testing.assert_allclose(added, _bilinear_double(skip), rtol=1e-5, atol=1e-5)
    # three doublings of a smooth random field (steps below the edge threshold) plus a little
    # pixel noise: nearest-neighbour leaves 8 px tiles, bilinear does not
    field = 0.03 * jax.random.normal(k[0], (16, 4, 4, 3))
    near, bil = field, field
    for _ in range(3):
        near, bil = upsample_nearest(near), upsample_bilinear(bil)
    noise = 0.002 * np.asarray(jax.random.normal(k[1], near.shape))
    assert tile_contrast(np.asarray(near) + noise) > 3
    assert 0.7 < tile_contrast(np.asarray(bil) + noise) < 1.5
    # a sharp edge on the grid (a glyph's stroke) is content, not a tile
    edges = np.full((4, 32, 32, 3), -1.0)
    edges[:, :, 8:16] = 1.0
    assert np.isnan(tile_contrast(edges)) or tile_contrast(edges + noise[:4]) < 1.5


def test_generator_in_every_upsample_mode_saves_and_loads(tmp_path):
    from sage_jax.models import init_generator

    z = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (2, 8)))
    out = {}
    for mode in ("bilinear", "smooth-skip"):
        cfg = dict(size=16, style_dim=8, n_mlp=1, channels=((4, 8), (8, 8), (16, 8)), upsample_mode=mode)
        G = init_generator(cfg, jax.random.PRNGKey(0))
        out[mode] = np.asarray(G(z))
        checkpoints.save_model(tmp_path / mode, G)
        G2 = checkpoints.load_generator(tmp_path / mode)
        assert G2.config["upsample_mode"] == mode
        np.testing.assert_array_equal(np.asarray(G2(z)), out[mode])
    assert np.abs(out["bilinear"] - out["smooth-skip"]).max() > 1e-4
