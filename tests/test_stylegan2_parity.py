"""StyleGAN2 generator and discriminator against the PyTorch reference outputs in
``../shared/fixtures`` (weights built from the manifests, converted by our converter).
Criterion (fixtures README): max|ours - ref| <= 1e-4 * max(1, std(ref)) in float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fixture_utils import assert_close, fixture, nchw_to_nhwc, state_dict_from_manifest
from sage_jax import checkpoints


@pytest.fixture(scope="module")
def g256():
    sd, meta = state_dict_from_manifest("stylegan2_generator_256.json")
    G = checkpoints.load_generator(sd)
    return G, np.load(fixture("stylegan2_generator_256.npz")), meta


def test_g256_architecture_read_from_shapes(g256):
    G, _, meta = g256
    assert G.size == meta["ctor"]["size"] and G.style_dim == meta["ctor"]["style_dim"]
    assert G.config["n_mlp"] == meta["ctor"]["n_mlp"]
    assert G.n_latent == meta["n_latent"] and G.num_layers == meta["num_layers"]
    assert dict(map(tuple, G.config["channels"]))[256] == 64 * meta["ctor"]["channel_multiplier"]


def test_g256_mapping_and_mean_latent(g256):
    G, ref, _ = g256
    assert_close(G.mapping(ref["z"]), ref["out_mapping_w"], "mapping")
    mean_w = jnp.mean(G.mapping(ref["z_for_mean"]), axis=0, keepdims=True)
    assert_close(mean_w, ref["out_mean_w"], "mean w")


def test_g256_from_z_with_stored_noise(g256):
    G, ref, _ = g256
    img, latent = G(ref["z"], return_latents=True)
    assert img.shape == (2, 256, 256, 3) and img.dtype == jnp.float32
    assert_close(img, nchw_to_nhwc(ref["out_z_fixednoise"]), "z, stored noise")
    assert_close(latent, ref["out_z_fixednoise_latent"], "returned latents")


def test_g256_from_wplus(g256):
    G, ref, _ = g256
    img = G(ref["wplus"], input_is_latent=True)
    assert_close(img, nchw_to_nhwc(ref["out_wplus_fixednoise"]), "W+, stored noise")


def test_g256_explicit_noise_in_both_layouts(g256):
    G, ref, _ = g256
    noise_nchw = [ref[f"noise_{i}"] for i in range(G.num_layers)]
    want = nchw_to_nhwc(ref["out_wplus_explicitnoise"])
    assert_close(G(ref["wplus"], input_is_latent=True, noise=noise_nchw), want, "explicit noise (NCHW)")
    noise_nhwc = [nchw_to_nhwc(n) for n in noise_nchw]
    assert_close(G(ref["wplus"], input_is_latent=True, noise=noise_nhwc), want, "explicit noise (NHWC)")


def test_g256_truncation(g256):
    G, ref, _ = g256
    img = G(ref["z"], truncation=0.5, truncation_latent=ref["out_mean_w"])
    assert_close(img, nchw_to_nhwc(ref["out_z_trunc05"]), "truncation 0.5")


def test_g256_style_mixing(g256):
    G, ref, _ = g256
    img, latent = G([ref["z"], ref["z2"]], inject_index=4, return_latents=True)
    assert_close(img, nchw_to_nhwc(ref["out_mix_inject4"]), "style mixing")
    assert_close(latent, ref["out_mix_inject4_latent"], "mixed latents")


def test_g256_random_noise_is_keyed(g256):
    G, ref, _ = g256
    a = G(ref["wplus"], input_is_latent=True, noise="random", key=jax.random.PRNGKey(1))
    b = G(ref["wplus"], input_is_latent=True, noise="random", key=jax.random.PRNGKey(1))
    c = G(ref["wplus"], input_is_latent=True, noise="random", key=jax.random.PRNGKey(2))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(jnp.max(jnp.abs(a - c))) > 1e-3
    # random noise is not the stored noise
    stored = G(ref["wplus"], input_is_latent=True)
    assert float(jnp.max(jnp.abs(a - stored))) > 1e-3


@pytest.mark.heavy
def test_g1024_config_f_z_and_wplus():
    sd, meta = state_dict_from_manifest("stylegan2_generator_1024.json")
    ref = np.load(fixture("stylegan2_generator_1024.npz"))
    G = checkpoints.load_generator(sd)
    assert G.size == 1024 and G.n_latent == meta["n_latent"] == 18
    pool = meta["output_pool"]

    def pooled(x):
        n, h, w, c = x.shape
        return np.asarray(x).reshape(n, h // pool, pool, w // pool, pool, c).mean(axis=(2, 4))

    assert_close(G.mapping(ref["z"]), ref["out_mapping_w"], "1024 mapping")
    img, latent = G(ref["z"], return_latents=True)
    assert_close(pooled(img), nchw_to_nhwc(ref["out_z_fixednoise"]), "1024 z")
    assert_close(latent, ref["out_z_fixednoise_latent"], "1024 latents")
    img = G(ref["wplus"], input_is_latent=True)
    assert_close(pooled(img), nchw_to_nhwc(ref["out_wplus_fixednoise"]), "1024 W+")


@pytest.fixture(scope="module")
def d256():
    sd, meta = state_dict_from_manifest("stylegan2_discriminator_256.json")
    return checkpoints.load_discriminator(sd), np.load(fixture("stylegan2_discriminator_256.npz"))


def test_d256_logits(d256):
    D, ref = d256
    assert_close(D(nchw_to_nhwc(ref["images"])), ref["out_logits"], "logits")


def test_d256_input_gradient_and_r1(d256):
    D, ref = d256
    x = jnp.asarray(nchw_to_nhwc(ref["images"]), jnp.float32)

    def total(images):
        return jnp.sum(D.module.apply(D.variables, images))

    grad = jax.jit(jax.grad(total))(x)
    assert_close(grad, nchw_to_nhwc(ref["out_input_grad"]), "input gradient")
    r1 = jnp.mean(jnp.sum(jnp.square(grad).reshape(grad.shape[0], -1), axis=1))
    assert_close(r1, ref["out_r1_penalty"], "R1 penalty")


@pytest.mark.parametrize("name", ["tiny_rosinality_ckpt.pt", "tiny_rosinality_ckpt_legacy.pt",
                                  "tiny_age_layout_ckpt.pt"])
def test_tiny_checkpoint_generator_reproduces_reference(name):
    expected = np.load(fixture("tiny_checkpoints_expected.npz"))
    G = checkpoints.load_generator(checkpoints.read_torch(fixture(name)))  # g_ema / decoder.*
    assert G.size == 32 and G.style_dim == 64
    assert [tuple(c) for c in G.config["channels"]] == [(4, 32), (8, 32), (16, 16), (32, 16)]
    assert_close(G(expected["z"]), nchw_to_nhwc(expected["out_g_ema_z_fixednoise"]), name)


def test_bfloat16_compute_stays_close_to_float32(g256):
    G, ref, _ = g256
    f32 = G(ref["wplus"], input_is_latent=True)
    bf16 = G.astype(jnp.bfloat16)(ref["wplus"], input_is_latent=True)
    assert bf16.dtype == jnp.float32  # outputs are returned in float32
    assert jax.tree_util.tree_leaves(G.astype(jnp.bfloat16).variables)[0].dtype == jnp.float32
    # the saved 8-bit images differ by under one level on average (1/255 of the range)
    from sage_jax.images import to_uint8

    assert np.isfinite(np.asarray(bf16)).all()
    levels = np.abs(to_uint8(bf16).astype(np.int16) - to_uint8(f32).astype(np.int16))
    assert levels.mean() <= 1.0, levels.mean()


def test_flop_count_matches_what_xla_executes():
    """The architecture's FLOP count (benchmark denominator) against XLA's own count of
    the compiled 64 px generator: the convolutions and products XLA runs are the ones
    counted (the transposed convolutions run without products by inserted zeros), plus
    a few percent of elementwise work."""
    from sage_jax.models import _generate, init_generator
    from sage_jax.nn.flops import generator_flops

    cfg = {"size": 64, "style_dim": 64, "n_mlp": 2, "channels": [[4, 64], [8, 64], [16, 32], [32, 32], [64, 16]]}
    G = init_generator(cfg, jax.random.PRNGKey(0))
    w = jnp.zeros((2, G.n_latent, G.style_dim))
    compiled = _generate.lower(G.module, G.variables, (w,), None, None, jnp.asarray(1.0), None, None, None,
                               input_is_latent=True, randomize=False, return_latents=False,
                               truncate=False).compile()
    analysis = compiled.cost_analysis()
    xla = (analysis[0] if isinstance(analysis, list) else analysis)["flops"]
    ours = 2 * generator_flops(64, 64, 2, cfg["channels"]).total
    assert ours <= xla < 1.15 * ours, (xla, ours)
