"""pSp encoder training with the generator frozen (pSp's ``coach.py`` losses).

Loss per batch of real images x: ``l2 * MSE(G(E(x) + latent_avg), x)`` plus
``w_norm * mean_i ||E(x_i)||_2`` (pSp's WNormLoss with ``start_from_latent_avg``) plus,
when LPIPS weights are given, ``lpips * LPIPS(G(E(x) + latent_avg), x)``. For the tiny configuration, and whenever
``latent_lambda > 0``, also latent regression on generated images: codes w of random z
(with style mixing), x' = G(w), loss ``latent * MSE(E(x') + latent_avg, w)`` +
``l2 * MSE(G(E(x') + latent_avg), x')``; it teaches a small encoder the generator's
own latent space quickly. BatchNorm trains with batch statistics and keeps running
ones, as PyTorch's ``train()`` mode. Adam (pSp uses Ranger; Adam is the usual
substitute). The result is written as a pSp model directory (``WORKDIR/psp``) with
the encoder, the decoder and ``latent_avg``.

``restyle_iterations`` N > 0 trains an iterative encoder instead (ReStyle, Alaluf et al.
2021; not in pSp, AGE or SAGE): it takes the image beside the current reconstruction (6
channels) and adds a residual to the current codes; each step runs N passes from
``latent_avg`` and trains every pass on the loss above, with no gradient between passes.
BatchNorm keeps one set of running statistics per pass (``models.pass_variables``). The
model records the N it runs at inference (``PSPModel.encode``).
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from sage_jax import parallel
from sage_jax.models import EncoderModel, PSPModel, init_encoder, pass_variables, restyle_start
from sage_jax.nn.stylegan2 import Generator, mix_styles
from sage_jax.train.common import run_loop, scheduled_rate


def default_config() -> ml_collections.ConfigDict:
    """The ``psp`` section's defaults, the one place of each (``configs/*.py`` start from
    it through :func:`sage_jax.config.default_config`): pSp's training options (l2 1.0,
    lpips 0.8, w-norm 0, lr 1e-4, batch 8), and the options pSp does not have off."""
    c = ml_collections.ConfigDict()
    c.steps = 500000           # pSp's max_steps
    c.batch_size = 8
    c.lr = 1e-4                # Adam (pSp: Ranger)
    c.lr_schedule = "constant"  # "cosine": the rate decays to 0 over ``steps`` (not in pSp)
    c.l2_lambda = 1.0
    c.lpips_lambda = 0.8       # used only when LPIPS weights are given
    c.w_norm_lambda = 0.0
    c.latent_lambda = 0.0      # > 0: latent regression on generated images (not in pSp)
    c.generated_fraction = 0.0  # share of each batch that is generated (used when latent_lambda > 0)
    c.restyle_iterations = 0   # > 0: an iterative (ReStyle) encoder with this many passes (not in pSp)
    c.latent_avg_samples = 100000   # pSp: decoder.mean_latent(int(1e5))
    c.seed = 0
    c.log_every = 100
    c.ckpt_every = 5000
    c.keep = 3                 # checkpoints kept
    return c


def _loss(params, batch_stats, frozen, x, key, *, enc_module, gen_module, cfg, n_gen, lpips_module=None,
          iterations=0):
    avg = frozen["latent_avg"]
    n_latent = gen_module.n_latent
    gvars = frozen["gen"]

    def encode(images, stats):
        out, upd = enc_module.apply({"params": params, "batch_stats": stats}, images, train=True,
                                    mutable=["batch_stats"])
        return out, upd["batch_stats"]

    def decode(codes):
        return gen_module.apply(gvars, [codes[:, :n_latent] + avg], input_is_latent=True, randomize_noise=False)

    metrics = {}
    inputs = x
    target_codes = None
    if n_gen:
        k1, k2, k3 = jax.random.split(key, 3)
        z1 = jax.random.normal(k1, (n_gen, gen_module.style_dim))
        z2 = jax.random.normal(k2, (n_gen, gen_module.style_dim))
        labels = None
        if gen_module.c_dim:  # a class-conditional generator: images of uniformly drawn classes
            cls = jax.random.randint(jax.random.fold_in(k1, 7), (n_gen,), 0, gen_module.c_dim)
            labels = jax.nn.one_hot(cls, gen_module.c_dim, dtype=jnp.float32)
        w1 = gen_module.apply(gvars, z1, labels, method=Generator.mapping)
        w2 = gen_module.apply(gvars, z2, labels, method=Generator.mapping)
        w = jax.lax.stop_gradient(mix_styles([w1, w2], n_latent, None, k3))
        gen_imgs = jax.lax.stop_gradient(gen_module.apply(gvars, [w], input_is_latent=True, randomize_noise=False))
        if gen_imgs.shape[1:3] != x.shape[1:3]:
            gen_imgs = jax.image.resize(gen_imgs, (n_gen, *x.shape[1:]), "bilinear")
        inputs = jnp.concatenate([x, gen_imgs])
        target_codes = w
    def pass_loss(codes):
        """The loss of one pass's codes, and its terms."""
        recon = decode(codes)
        target = inputs if inputs.shape[1:3] == recon.shape[1:3] else jax.image.resize(inputs, recon.shape,
                                                                                      "bilinear")
        terms = {"l2": jnp.mean(jnp.square(recon - target))}
        total = cfg["l2_lambda"] * terms["l2"]
        if lpips_module is not None:
            terms["lpips"] = jnp.mean(lpips_module.apply(frozen["lpips"], recon, target))
            total += cfg["lpips_lambda"] * terms["lpips"]
        if cfg["w_norm_lambda"]:
            terms["w_norm"] = jnp.mean(jnp.sqrt(jnp.sum(jnp.square(codes[:, :n_latent]), axis=(1, 2))))
            total += cfg["w_norm_lambda"] * terms["w_norm"]
        if target_codes is not None:
            terms["latent"] = jnp.mean(jnp.square(codes[-n_gen:, :n_latent] + avg - target_codes))
            total += cfg["latent_lambda"] * terms["latent"]
        return total, terms, recon

    if not iterations:   # pSp: one pass
        codes, new_stats = encode(inputs, batch_stats)
        total, terms, _ = pass_loss(codes)
        metrics.update(terms)
        metrics["loss"] = total
        return total, (metrics, new_stats)

    # ReStyle (Alaluf et al. 2021): pass t sees [x, y_t] and adds a residual to the codes
    # of pass t - 1; every pass is trained on its own loss (their sum, as ReStyle's
    # per-pass backward before one optimiser step), with no gradient between passes.
    size = inputs.shape[1]
    y = restyle_start(gen_module, gvars, avg, inputs.shape[0], size)
    raw, total, new_stats = None, 0.0, []
    for t in range(iterations):
        stats_t = pass_variables({"batch_stats": batch_stats}, t)["batch_stats"]   # pass t's own statistics
        delta, stats_t = encode(jnp.concatenate([inputs, y], axis=-1), stats_t)
        new_stats.append(stats_t)
        codes = delta if raw is None else raw + delta
        loss_t, terms, recon = pass_loss(codes)
        total = total + loss_t
        if t == 0:
            metrics["l2_first"] = terms["l2"]
        raw = jax.lax.stop_gradient(codes)
        y = jax.lax.stop_gradient(recon.astype(jnp.float32))
        if y.shape[1:3] != (size, size):
            y = jax.image.resize(y, (y.shape[0], size, size, 3), "bilinear")
    metrics.update(terms)   # the last pass's terms
    metrics["loss"] = total
    return total, (metrics, jax.tree_util.tree_map(lambda *a: jnp.stack(a), *new_stats))


def _optimizer(lr: float, schedule: str, steps: int):
    """Adam at ``lr``, constant or cosine-decayed to 0 over ``steps``."""
    return optax.adam(scheduled_rate(lr, schedule, steps, "psp.lr_schedule"))


@functools.lru_cache(maxsize=8)
def _make_step(enc_module, gen_module, weights, n_gen, opt_args, lpips_module=None, iterations=0):
    """The jitted update, built once per models and options (also across resumes)."""
    plain = dict(zip(WEIGHTS, weights))
    loss = functools.partial(_loss, enc_module=enc_module, gen_module=gen_module, cfg=plain, n_gen=n_gen,
                             lpips_module=lpips_module, iterations=iterations)
    tx = _optimizer(*opt_args)

    @jax.jit
    def step_fn(s, frozen, x, key):
        grads, (metrics, stats) = jax.grad(loss, has_aux=True)(s["params"], s["batch_stats"], frozen, x, key)
        upd, opt = tx.update(grads, s["opt"], s["params"])
        return dict(s, params=optax.apply_updates(s["params"], upd), batch_stats=stats, opt=opt), metrics

    return step_fn


WEIGHTS = ("l2_lambda", "w_norm_lambda", "latent_lambda", "lpips_lambda")


def train_encoder(enc_cfg, G, cfg, dataset, workdir: str, quiet: bool = False, mesh=None,
                  stop_after: int | None = None, lpips=None) -> PSPModel:
    """Train (or resume) a pSp encoder for the frozen generator ``G`` on ``dataset``
    (images at the encoder's input size). ``lpips``: an LPIPSModel for the perceptual
    term (``lpips_lambda``). Returns the PSPModel, also saved to ``workdir/psp``."""
    from sage_jax.checkpoints import save_psp

    mesh = mesh or parallel.make_mesh()
    key = jax.random.PRNGKey(cfg.seed)
    iterations = cfg.restyle_iterations
    if isinstance(iterations, bool) or int(iterations) != iterations or iterations < 0:
        raise ValueError(f"psp.restyle_iterations must be a whole number >= 0, got {iterations!r}")
    iterations = int(iterations)
    enc_cfg = dict(enc_cfg.to_dict() if hasattr(enc_cfg, "to_dict") else enc_cfg)
    enc_cfg["input_nc"] = 6 if iterations else 3
    E = init_encoder(enc_cfg, jax.random.fold_in(key, 0))
    if E.style_dim != G.style_dim:
        raise ValueError(f"encoder style_dim {E.style_dim} != generator {G.style_dim}")
    latent_avg = np.asarray(G.mean_latent(cfg.latent_avg_samples, jax.random.fold_in(key, 1)))  # (1, D)
    opt_args = (float(cfg.lr), str(cfg.lr_schedule), int(cfg.steps))
    tx = _optimizer(*opt_args)
    batch_stats = E.variables["batch_stats"]
    if iterations:   # one set of BatchNorm statistics per pass (models.pass_variables)
        batch_stats = jax.tree_util.tree_map(lambda a: jnp.stack([a] * iterations), batch_stats)
    state = {"params": E.variables["params"], "batch_stats": batch_stats,
             "opt": tx.init(E.variables["params"]), "step": jnp.zeros((), jnp.int32)}
    n_gen = int(round(cfg.batch_size * cfg.generated_fraction)) if cfg.latent_lambda > 0 else 0
    n_real = cfg.batch_size - n_gen
    if n_real < 1 or n_real % mesh.devices.size or n_gen % mesh.devices.size:
        raise ValueError(f"real ({n_real}) and generated ({n_gen}) parts of the batch must be positive "
                         f"multiples of the {mesh.devices.size} devices")
    weights = tuple(float(cfg[k]) for k in WEIGHTS)
    step_fn = _make_step(E.module, G.module, weights, n_gen, opt_args,
                         lpips.module if lpips is not None else None, iterations)
    rep = parallel.replicated(mesh)
    frozen = {"gen": jax.device_put(G.variables, rep), "latent_avg": jax.device_put(jnp.asarray(latent_avg), rep)}
    if lpips is not None:
        frozen["lpips"] = jax.device_put(lpips.variables, rep)

    data_key, step_key = jax.random.fold_in(key, 2), jax.random.fold_in(key, 3)

    def run_step(state, x, _labels, step):
        state, metrics = step_fn(state, frozen, x, jax.random.fold_in(step_key, step))
        return dict(state, step=jnp.asarray(step + 1, jnp.int32)), metrics

    state, _ = run_loop(workdir=workdir, state=state, step_fn=run_step, dataset=dataset, batch_size=n_real,
                        data_key=data_key, mesh=mesh, steps=cfg.steps, log_every=cfg.log_every,
                        ckpt_every=cfg.ckpt_every, keep=cfg.keep, desc="train-encoder", quiet=quiet,
                        stop_after=stop_after, postfix=lambda m: {"loss": f"{m['loss']:.4f}"})
    host = parallel.to_host(state)
    E_out = EncoderModel(E.config, {"params": host["params"], "batch_stats": host["batch_stats"]})
    psp = PSPModel(E_out, G, latent_avg, {"output_size": G.size, "encoder_type": E.config["kind"],
                                           "start_from_latent_avg": True, "A_length": None,
                                           "input_nc": E_out.input_nc, "n_latent": G.n_latent,
                                           "restyle_iterations": iterations})
    save_psp(os.path.join(workdir, "psp"), psp, overwrite=True)
    return psp
