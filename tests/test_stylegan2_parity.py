"""StyleGAN2 generator and discriminator against the PyTorch reference outputs in
``../shared/fixtures`` (weights built from the manifests, converted by our converter).
Criterion: max|ours - ref| <= 1e-4 of the output's own scale (``fixture_utils.output_scale``:
max|ref|, or std(ref) where that is above 1) in float32; float64 runs to 1e-6."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fixture_utils import assert_close, fixture, nchw_to_nhwc, state_dict_from_manifest
from sage_jax import checkpoints
from sage_jax.nn import layers


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


@pytest.mark.heavy
def test_g256_float64_from_z(g256):
    """The generator in float64 throughout (mapping, modulation, convolutions, noise, RGB
    path): the reference's own precision, so the agreement is the fixture's float32
    storage, two orders below the float32 criterion."""
    G, ref, _ = g256
    with jax.enable_x64(True):
        G64 = G.astype(jnp.float64)
        img, latent = G64(ref["z"], return_latents=True)
        assert img.dtype == jnp.float64 and latent.dtype == jnp.float64
        assert_close(img, nchw_to_nhwc(ref["out_z_fixednoise"]), "float64 z, stored noise", tol=1e-6)
        assert_close(latent, ref["out_z_fixednoise_latent"], "float64 returned latents", tol=1e-6)


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
    return checkpoints.load_discriminator(sd), np.load(fixture("stylegan2_discriminator_256.npz")), sd


def test_d256_logits(d256):
    D, ref, _ = d256
    assert_close(D(nchw_to_nhwc(ref["images"])), ref["out_logits"], "logits")


def test_leaky_relu_kink_takes_pytorchs_branch():
    """At exactly 0 the leaky ReLU's gradient is the negative slope's (times the gain),
    as PyTorch's ``leaky_relu`` backward and rosinality's CUDA kernel choose; either side
    of 0 the two branches."""
    d = jax.grad(lambda x: jnp.sum(layers.fused_leaky_relu(x)))(jnp.array([-1e-30, 0.0, 1e-30]))
    np.testing.assert_allclose(np.asarray(d), [0.2 * np.sqrt(2), 0.2 * np.sqrt(2), np.sqrt(2)], rtol=1e-6)
    db = jax.grad(lambda b: jnp.sum(layers.fused_leaky_relu(jnp.zeros((2, 3)), b)))(jnp.array([-1.0, 0.0, 1.0]))
    np.testing.assert_allclose(np.asarray(db), 2 * np.array([0.2, 0.2, 1.0]) * np.sqrt(2), rtol=1e-6)


@contextlib.contextmanager
def leaky_relu_hook(record: list | None = None, branches: list | None = None):
    """Every leaky ReLU of the discriminator goes through ``layers.fused_leaky_relu``:
    while tracing inside this context, append each one's pre-activation ``x + bias`` to
    ``record``, and/or take its branch (identity where True, negative slope elsewhere)
    from ``branches`` (one boolean array per call, in call order) instead of from the
    sign of the pre-activation."""
    orig = layers.fused_leaky_relu
    count = [0]

    def hooked(x, bias=None, negative_slope=0.2, scale=layers.SQRT2):
        pre = x if bias is None else x + bias.astype(x.dtype)
        if record is not None:
            record.append(pre)
        if branches is None:
            return orig(x, bias, negative_slope, scale)  # the library's own
        take = branches[count[0]]
        count[0] += 1
        return jnp.where(take, pre, pre * negative_slope) * jnp.asarray(scale, pre.dtype)

    layers.fused_leaky_relu = hooked
    try:
        yield
    finally:
        layers.fused_leaky_relu = orig


@pytest.fixture(scope="module")
def d256_float64_branches(d256):
    """The discriminator in float64 (the reference's precision): its logits, and the
    branch every leaky ReLU takes (pre-activation > 0) with the distance of its
    pre-activation from the kink relative to that layer's largest."""
    _, ref, sd = d256
    with jax.enable_x64(True):
        D64 = checkpoints.load_discriminator(sd, dtype=jnp.float64)
        x = jnp.asarray(nchw_to_nhwc(ref["images"]), jnp.float64)

        def forward(x):
            pres = []
            with leaky_relu_hook(record=pres):
                logits = D64.module.apply(D64.variables, x)
            return logits, [p > 0 for p in pres], [jnp.abs(p) / jnp.max(jnp.abs(p)) for p in pres]

        logits, branches, distance = jax.jit(forward)(x)
        assert logits.dtype == jnp.float64
        return np.asarray(logits), [np.asarray(b) for b in branches], [np.asarray(d, np.float32) for d in distance]


def test_d256_float64_logits(d256, d256_float64_branches):
    _, ref, _ = d256
    logits, branches, _ = d256_float64_branches
    assert len(branches) == 15  # convs_0, 2 per ResBlock (6), final_conv, final_linear_0
    # the fixture holds float32 values: agreement to their rounding
    assert_close(logits, ref["out_logits"], "float64 logits", tol=1e-6)


def test_d256_input_gradient_and_r1(d256, d256_float64_branches):
    """The gradient of ``sum(D(x))`` w.r.t. the images, and the R1 penalty.

    The discriminator is piecewise smooth: its leaky ReLUs have a kink at 0, where the
    gradient jumps by a factor 5. In float32 a few pre-activations that lie within a
    rounding error of 0 (12 of the 40 M on this CPU, |x| <= 1.3 float32 eps of their
    layer's largest) land on the other side of the kink from the float64 reference, and
    the input gradient near those units then differs by up to 1.4% of max|grad|
    (1.3e-6 at 8.9e-5). Everywhere else, and everywhere when the float32 gradient takes
    the float64 network's branch at every leaky ReLU, it agrees with the reference to the
    fixture's precision (1.7e-6 of max|grad|)."""
    D, ref, _ = d256
    _, branches64, distance64 = d256_float64_branches
    x = jnp.asarray(nchw_to_nhwc(ref["images"]), jnp.float32)
    want = nchw_to_nhwc(ref["out_input_grad"])
    want_r1 = ref["out_r1_penalty"]

    @jax.jit
    def analyse(x, branches):
        def forward(x):
            pres = []
            with leaky_relu_hook(record=pres):
                total = jnp.sum(D.module.apply(D.variables, x))
            return total, pres

        (total, pres), vjp = jax.vjp(forward, x)
        (grad,) = vjp((jnp.ones_like(total), [jnp.zeros_like(p) for p in pres]))
        flips = [(p > 0) != b for p, b in zip(pres, branches)]
        # the input pixels a flipped unit sees (its receptive field): the support of the
        # gradient of the flipped units' pre-activations
        (field,) = vjp((jnp.zeros_like(total), [f.astype(p.dtype) for f, p in zip(flips, pres)]))

        def fixed(x):
            with leaky_relu_hook(branches=branches):
                return jnp.sum(D.module.apply(D.variables, x))

        return grad, jax.grad(fixed)(x), flips, field != 0

    grad, grad_fixed, flips, field = analyse(x, [jnp.asarray(b) for b in branches64])
    grad, grad_fixed, field = np.asarray(grad), np.asarray(grad_fixed), np.asarray(field)
    flips = [np.asarray(f) for f in flips]
    scale = float(np.max(np.abs(want)))
    r1 = lambda g: np.mean(np.sum(np.square(g.astype(np.float64)).reshape(g.shape[0], -1), axis=1))

    # 1. with the reference's branch at every kink: the fixture's precision, everywhere
    assert_close(grad_fixed, want, "input gradient (float64 branches)", scale=scale)
    assert_close(r1(grad_fixed), want_r1, "R1 penalty (float64 branches)", scale=float(abs(want_r1)))

    # 2. the units where float32 takes the other branch are rounding-close to the kink
    n_flips = sum(int(f.sum()) for f in flips)
    n_units = sum(f.size for f in flips)
    closest = max((float(d[f].max()) for f, d in zip(flips, distance64) if f.any()), default=0.0)
    print(f"\n{n_flips} of {n_units} leaky ReLU inputs on the other side of the kink in float32, "
          f"at most {closest / np.finfo(np.float32).eps:.2f} float32 eps of their layer's largest from it; "
          f"their receptive fields cover {field.mean():.1%} of the input")
    assert closest <= 8 * np.finfo(np.float32).eps, closest
    assert n_flips <= 1e-5 * n_units, n_flips
    if n_flips:
        assert np.any(np.abs(grad - want) > 1e-4 * scale)  # the gap is real, and it is here
    assert field.mean() < 0.25, field.mean()

    # 3. outside their receptive fields the plain float32 gradient meets the same bound
    outside = ~field
    assert_close(np.where(outside, grad, 0.0), np.where(outside, want, 0.0),
                 "input gradient outside the flipped units' receptive fields", scale=scale)
    # the penalty sums the squared gradient: the few flipped pixels move it by 2.2e-5
    assert_close(r1(grad), want_r1, "R1 penalty", scale=float(abs(want_r1)))


@pytest.mark.heavy
def test_d256_input_gradient_and_r1_in_float64(d256):
    """The whole discriminator in float64: the gradient agrees with the reference at
    every pixel, to the float32 rounding of the stored fixture."""
    _, ref, sd = d256
    with jax.enable_x64(True):
        D64 = checkpoints.load_discriminator(sd, dtype=jnp.float64)
        x = jnp.asarray(nchw_to_nhwc(ref["images"]), jnp.float64)
        grad = np.asarray(jax.jit(jax.grad(lambda x: jnp.sum(D64.module.apply(D64.variables, x))))(x))
    want = nchw_to_nhwc(ref["out_input_grad"])
    assert grad.dtype == np.float64
    assert_close(grad, want, "float64 input gradient", scale=float(np.max(np.abs(want))), tol=1e-6)
    r1 = np.mean(np.sum(np.square(grad).reshape(grad.shape[0], -1), axis=1))
    assert_close(r1, ref["out_r1_penalty"], "float64 R1 penalty", scale=float(abs(ref["out_r1_penalty"])), tol=1e-6)


@pytest.mark.parametrize("name", ["tiny_rosinality_ckpt.pt", "tiny_rosinality_ckpt_legacy.pt",
                                  "tiny_age_layout_ckpt.pt"])
def test_tiny_checkpoint_generator_reproduces_reference(name):
    expected = np.load(fixture("tiny_checkpoints_expected.npz"))
    G = checkpoints.load_generator(checkpoints.read_torch(fixture(name)))  # g_ema / decoder.*
    assert G.size == 32 and G.style_dim == 64
    assert [tuple(c) for c in G.config["channels"]] == [(4, 32), (8, 32), (16, 16), (32, 16)]
    assert_close(G(expected["z"]), nchw_to_nhwc(expected["out_g_ema_z_fixednoise"]), name)


def test_tiny_checkpoint_generator_in_float64():
    """The tiny fixture generator (its reference output was computed in float64) in
    float64 throughout: agreement to the fixture's float32 storage."""
    expected = np.load(fixture("tiny_checkpoints_expected.npz"))
    with jax.enable_x64(True):
        G = checkpoints.load_generator(checkpoints.read_torch(fixture("tiny_rosinality_ckpt.pt")), dtype=jnp.float64)
        img = G(expected["z"])
        assert img.dtype == jnp.float64
        assert_close(img, nchw_to_nhwc(expected["out_g_ema_z_fixednoise"]), "tiny g_ema, float64", tol=1e-6)


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
