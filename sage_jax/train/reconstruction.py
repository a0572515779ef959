"""The reconstruction recipe: a StyleGAN2 generator trained without a discriminator
(``gan.recipe = "reconstruction"``; not in the reference, made for small data on few cores).

Why (README, "Where the shipped model stands"): at the tiny scale every adversarial
setting tried plateaus at 0.2-0.4 of samples the oracle calls one class, while the same
synthesis network trained on reconstruction draws the data at its codes, and draws it
between the codes of one class too. So the generator is trained in two phases:

1. **Synthesis by reconstruction.** The synthesis network and a plain CNN encoder
   (:class:`sage_jax.nn.plain.PlainEncoder`) are trained jointly on the MSE of
   ``G.synthesis(E(x))`` to ``x``, one W code per image (the same code at every layer:
   what a random sample gets), the generator's stored noise. Adam (``recon_lr``,
   ``recon_b1``) for the generator, Adam ``encoder_lr`` for the encoder, both constant or
   (``recon_schedule="cosine"``) decayed to 0 over ``steps`` steps of ``batch_size``,
   checkpointed and resumable as every trainer. Every ``eval_every`` steps the learning
   curve scores the synthesis network at the class sampler's codes (:class:`SamplerGenerator`).
2. **A class-conditional mapping by regression.** Every training image is encoded; per
   class, the codes' mean and their top ``sampler_rank`` principal directions (scaled by
   their standard deviations) define a sampler ``w = mu_y + B_y z[:rank]``. A fresh
   conditional mapping network (``c_dim`` = the number of classes, StyleGAN2-ADA's label
   embedding, the config's ``n_mlp`` layers) is fitted to that sampler by regression
   (``mapping_steps`` Adam steps at ``mapping_lr`` with cosine decay, batch 256; the
   target is a function of the pixel-normalised z the mapping reads).

The result is an ordinary class-conditional StyleGAN2 generator (``g_ema``, no
discriminator), so everything downstream (pSp training, inversion, SAGE) is unchanged.
Randomness: the initialisation, batches and the regression's draws all come from
``cfg.seed``.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sage_jax import parallel
from sage_jax.models import GeneratorModel, init_generator
from sage_jax.nn.layers import pixel_norm
from sage_jax.nn.plain import PlainEncoder
from sage_jax.nn.stylegan2 import Generator
from sage_jax.train.common import SCHEDULES, run_loop, scheduled_rate

RECIPES = ("adversarial", "reconstruction")
MAPPING_BATCH = 256


def check_config(cfg) -> None:
    """Refuse impossible reconstruction settings before any work."""
    bad = [f"{k}={cfg[k]!r}" for k in ("recon_lr", "encoder_lr", "mapping_lr") if not cfg[k] > 0]
    if not 0 <= cfg.recon_b1 < 1:
        bad.append(f"recon_b1={cfg.recon_b1!r}")
    for k in ("encoder_width", "sampler_rank", "mapping_steps"):
        if int(cfg[k]) < 1:
            bad.append(f"{k}={cfg[k]!r}")
    if cfg.recon_schedule not in SCHEDULES:
        bad.append(f"recon_schedule={cfg.recon_schedule!r} (one of {SCHEDULES})")
    if bad:
        raise ValueError("gan.recipe='reconstruction' needs positive rates and sizes and 0 <= recon_b1 < 1; got "
                         + ", ".join(bad))


def class_sampler(codes: np.ndarray, labels: np.ndarray, num_classes: int, rank: int):
    """Per class: the codes' mean (C, D) and a basis (C, D, rank) of their top ``rank``
    principal directions scaled by the standard deviations along them (zero columns
    where a class has fewer codes than directions)."""
    d = codes.shape[1]
    mus = np.zeros((num_classes, d), np.float32)
    bases = np.zeros((num_classes, d, rank), np.float32)
    for c in range(num_classes):
        x = codes[labels == c].astype(np.float64)
        if not len(x):
            raise ValueError(f"class {c} has no training image")
        mus[c] = x.mean(0)
        _, sv, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
        r = min(rank, len(sv))
        bases[c, :, :r] = (vt[:r].T * (sv[:r] / np.sqrt(len(x)))).astype(np.float32)
    return mus, bases


def sampler_target(mus, bases, z, y):
    """The sampler's code for normal ``z`` (N, D) and class indices ``y`` (N,)."""
    k = bases.shape[-1]
    return mus[y] + jnp.einsum("ndk,nk->nd", bases[y], pixel_norm(z)[:, :k])


def fit_mapping(G: GeneratorModel, mus, bases, steps: int, lr: float, key, quiet: bool = True):
    """Fit ``G``'s (class-conditional) mapping network to the sampler by regression.
    Returns the new mapping parameters and the final relative RMS error (RMS of
    ``mapping - target`` over the RMS of the target's spread about the class means)."""
    from tqdm import tqdm

    gm, params, noises = G.module, G.variables["params"], G.variables["noises"]
    mapping_names = [k for k in params if k.startswith("style_") or k == "embed"]
    mp = {k: params[k] for k in mapping_names}
    rest = {k: v for k, v in params.items() if k not in mp}
    lr_mul = float(G.config.get("lr_mlp", 0.01))
    c, d = mus.shape
    mus, bases = jnp.asarray(mus), jnp.asarray(bases)
    # the MLP's weights are stored divided by lr_mul: scale their rate so every layer
    # moves at ``lr`` (the label embedding has multiplier 1)
    sched = [optax.cosine_decay_schedule(rate, steps) for rate in (lr / lr_mul, lr)]
    tx = optax.multi_transform({"mlp": optax.adam(sched[0]), "embed": optax.adam(sched[1])},
                               {k: ("embed" if k == "embed" else "mlp") for k in mp})
    opt = tx.init(mp)

    def mapping(mp, z, y):
        return gm.apply({"params": {**rest, **mp}, "noises": noises}, z, jax.nn.one_hot(y, c), method=Generator.mapping)

    @jax.jit
    def step(mp, opt, k):
        kz, ky = jax.random.split(k)
        z = jax.random.normal(kz, (MAPPING_BATCH, d))
        y = jax.random.randint(ky, (MAPPING_BATCH,), 0, c)
        loss, g = jax.value_and_grad(lambda mp: jnp.mean(jnp.square(mapping(mp, z, y) - sampler_target(mus, bases, z, y))))(mp)
        upd, opt = tx.update(g, opt, mp)
        return optax.apply_updates(mp, upd), opt, loss

    for i in tqdm(range(steps), desc="fit-mapping", disable=quiet, mininterval=1.0):
        mp, opt, _ = step(mp, opt, jax.random.fold_in(key, i))
    z = jax.random.normal(jax.random.fold_in(key, steps + 1), (4096, d))
    y = jnp.arange(4096) % c
    t = sampler_target(mus, bases, z, y)
    err = float(jnp.sqrt(jnp.mean(jnp.square(mapping(mp, z, y) - t))) /
                jnp.sqrt(jnp.mean(jnp.square(t - mus[y]))))
    return jax.tree_util.tree_map(np.asarray, mp), err


class SamplerGenerator:
    """A generator during phase 1, before it has a mapping: the synthesis network of ``G``
    at codes of the class sampler (``mus``, ``bases``; what phase 2's mapping is fitted
    to). Called as a class-conditional :class:`GeneratorModel` is by
    :func:`sage_jax.metrics.stages.generator_samples`, for the learning curve."""

    def __init__(self, G: GeneratorModel, mus, bases):
        self.G, self.mus, self.bases = G, jnp.asarray(mus), jnp.asarray(bases)
        self.style_dim, self.c_dim = G.style_dim, int(mus.shape[0])

    def __call__(self, z, *, labels, noise="stored", key=None):
        w = sampler_target(self.mus, self.bases, jnp.asarray(z), jnp.asarray(labels))
        return self.G(w, input_is_latent=True, noise=noise, key=key)


def _sampler_of(encode, e_params, dataset, n_classes: int, rank: int):
    """The class sampler (:func:`class_sampler`) of every training image's code
    (``encode(e_params, images)``: the jitted encoder, compiled once per run)."""
    codes, labels = [], []
    for images, y in dataset.batches(256):
        keep = y >= 0
        codes.append(np.asarray(encode(e_params, jnp.asarray(images)))[keep])
        labels.append(np.asarray(y)[keep])
    return class_sampler(np.concatenate(codes), np.concatenate(labels), n_classes, rank)


def train_reconstruction(g_cfg, cfg, dataset, workdir: str, quiet: bool = False, mesh=None,
                         stop_after: int | None = None, evaluate=None):
    """Train a class-conditional generator on ``dataset`` by the two phases of the module
    docstring in ``workdir``; returns ``(G, None)`` (no discriminator) and writes
    ``workdir/g_ema``. ``evaluate(G, step) -> dict`` (the learning curve) is called every
    ``cfg.eval_every`` steps of phase 1 with a :class:`SamplerGenerator` and once at the
    end with the finished generator; what it returns is logged in ``metrics.jsonl``."""
    from sage_jax.checkpoints import save_model
    from sage_jax.models import _config_dict
    from sage_jax.train.common import MetricsLog

    check_config(cfg)
    mesh = mesh or parallel.make_mesh()
    n_classes = dataset.num_classes
    c_dim = int(g_cfg.get("c_dim", 0) or 0)
    if c_dim and c_dim != n_classes:
        raise ValueError(f"model.generator.c_dim={c_dim} but the training data has {n_classes} classes")
    g_cfg = dict(_config_dict(g_cfg), c_dim=n_classes)
    key = jax.random.PRNGKey(cfg.seed)
    G = init_generator(g_cfg, jax.random.fold_in(key, 0))
    gm, noises, dim = G.module, G.variables["noises"], G.style_dim
    enc = PlainEncoder(int(cfg.encoder_width), dim)
    e_params = enc.init(jax.random.fold_in(key, 1), jnp.zeros((1, G.size, G.size, 3)))["params"]
    encode = jax.jit(lambda e, x: enc.apply({"params": e}, x))
    schedule = cfg.recon_schedule
    g_rate, e_rate = (scheduled_rate(float(r), schedule, int(cfg.steps), "gan.recon_schedule")
                      for r in (cfg.recon_lr, cfg.encoder_lr))
    tx = optax.multi_transform({"g": optax.adam(g_rate, b1=cfg.recon_b1, b2=0.99),
                                "e": optax.adam(e_rate)}, {"g": "g", "e": "e"})
    params = {"g": G.variables["params"], "e": e_params}
    state = {"params": params, "opt": tx.init(params), "step": jnp.zeros((), jnp.int32)}

    def reconstruct(p, x):
        w = enc.apply({"params": p["e"]}, x)
        return gm.apply({"params": p["g"], "noises": noises}, [w], input_is_latent=True)   # W -> W+ in G

    @jax.jit
    def update(state, x):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean(jnp.square(reconstruct(p, x) - x)))(state["params"])
        upd, opt = tx.update(grads, state["opt"], state["params"])
        return dict(state, params=optax.apply_updates(state["params"], upd), opt=opt), {"recon_mse": loss}

    def step_fn(state, real, labels, step):
        state, m = update(state, real)
        return dict(state, step=jnp.asarray(step + 1, jnp.int32)), m

    eval_every = int(cfg.eval_every or 0)

    def after_step(state, done):
        """The learning curve of phase 1 (the final point comes after phase 2): the
        synthesis network at codes of the class sampler of the current encoder's codes."""
        if evaluate is None or not eval_every or done % eval_every or done >= cfg.steps:
            return None
        p = parallel.to_host(state["params"])
        mus, bases = _sampler_of(encode, p["e"], dataset, n_classes, int(cfg.sampler_rank))
        return evaluate(SamplerGenerator(GeneratorModel(G.config, {"params": p["g"], "noises": noises}), mus, bases),
                        done)

    state, done = run_loop(workdir=workdir, state=state, step_fn=step_fn, dataset=dataset,
                           batch_size=cfg.batch_size, data_key=jax.random.fold_in(key, 3), mesh=mesh,
                           steps=cfg.steps, log_every=cfg.log_every, ckpt_every=cfg.ckpt_every, keep=cfg.keep,
                           desc="train-generator (reconstruction)", quiet=quiet, stop_after=stop_after,
                           after_step=after_step,
                           postfix=lambda m: {"mse": f"{m['recon_mse']:.4f}"})
    if done < cfg.steps:   # interrupted: the checkpoint holds the work; no model yet
        if stop_after is not None:
            return None, None
        from sage_jax.errors import RunStopped

        raise RunStopped(f"train-generator (reconstruction) stopped at step {done} of {cfg.steps}; the checkpoint "
                         f"in {workdir} is kept: run the same command again to resume.")
    p = parallel.to_host(state["params"])
    # every process fits the same mapping from the same codes (no collective); process 0 writes
    mus, bases = _sampler_of(encode, p["e"], dataset, n_classes, int(cfg.sampler_rank))
    G_trained = GeneratorModel(G.config, {"params": p["g"], "noises": noises})
    mp, err = fit_mapping(G_trained, mus, bases, int(cfg.mapping_steps), float(cfg.mapping_lr),
                          jax.random.fold_in(key, 4), quiet=quiet)
    G_out = GeneratorModel(G.config, {"params": {**p["g"], **mp}, "noises": noises})
    row = {"mapping_relative_error": err}
    if evaluate is not None and parallel.is_main():
        row.update(evaluate(G_out, int(cfg.steps)) or {})
    log = MetricsLog(workdir, int(cfg.steps))
    log.write(int(cfg.steps), row)
    log.close()
    extra = {"step": int(cfg.steps), "recipe": "reconstruction", "mapping_relative_error": err,
             "class_names": list(getattr(dataset, "class_names", [str(i) for i in range(n_classes)]))}
    save_model(os.path.join(workdir, "g_ema"), G_out, overwrite=True, extra=extra)
    if parallel.is_main():
        np.savez(os.path.join(workdir, "class_sampler.npz"), mean=mus, basis=bases)
    if cfg.n_sample and parallel.is_main():   # a picture of the result: sample i of class i mod C
        from sage_jax.images import make_grid, save_png, to_uint8

        n = int(cfg.n_sample)
        z = jax.random.normal(jax.random.fold_in(key, 2), (n, dim))
        save_png(os.path.join(workdir, "samples", f"{int(cfg.steps):07d}.png"),
                 make_grid(to_uint8(np.asarray(G_out(z, labels=np.arange(n) % n_classes)))))
    if not quiet:
        print(f"mapping fitted to the class sampler: relative RMS error {err:.3f}", flush=True)
    return G_out, None
