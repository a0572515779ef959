"""StyleGAN2 training as rosinality's ``train.py`` does it, in one jitted, data-parallel
code path (``tests/test_gan_step_parity.py`` replays two iterations of the reference's
own ``train()`` against it).

Per iteration: a discriminator update with the non-saturating logistic loss; every
``d_reg_every`` steps a lazy R1 update (``r1/2 * ||grad D(x)||^2 * d_reg_every``); a
generator update; every ``g_reg_every`` steps a path-length update
(``path_regularize * g_reg_every * (|J^T y| - a)^2`` on a batch shrunk by
``path_batch_shrink``, where ``a`` is the running mean updated with this batch's mean
and not detached, as ``g_path_regularize``; skipped when ``path_regularize`` is 0);
style mixing with probability ``mixing``; then, once per iteration after every G
update, the EMA copy of the generator (``accumulate``, ``accum = 0.5 ** (32 / (10 *
1000))``). Adam with the lazy-regularisation corrections of the paper (lr * c,
betas ** c, c = every / (every + 1)); the discriminator's rate is ``d_lr`` when set (two
time-scale updates), else ``lr``. Optional differentiable augmentation (colour,
translation, cutout; Zhao et al. 2020) of real and fake images for small datasets, and
optional horizontal flips of the real images (``data.hflip``, as the reference's loader).

Randomness: every random input of step ``s`` is drawn by :func:`draw_step` from
``fold_in(key, s)`` (the updates take them as arguments), and batches come from
:func:`sage_jax.train.common.batch_indices`, so an interrupted run resumed from its
checkpoint reaches exactly the parameters of an uninterrupted one.

Class-conditional training (``conditional=True`` or ``model.generator.c_dim > 0``):
the generator's mapping takes a label vector and the discriminator is a projection
discriminator (:mod:`sage_jax.nn.stylegan2`). Real images are labelled once before
training by :func:`sage_jax.train.label_augmentation.real_label_vectors`: one-hot
(``labels="hard"``) or Softlabel-GAN's classifier probabilities (``labels="soft"``);
fake images get one-hot labels drawn from ``fake_labels`` ("uniform", or "data": the
training class frequencies); ``balance`` weights the real term of the D loss per class
(``N / (C n_c)``). R1 is taken on D(x, y) with the real labels, unweighted. With the
defaults (unconditional) every computation is the one above, bit for bit.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from sage_jax import parallel
from sage_jax.images import make_grid, save_png, to_uint8
from sage_jax.models import DiscriminatorModel, GeneratorModel, init_discriminator, init_generator
from sage_jax.nn.stylegan2 import Generator, mix_styles, noise_shapes
from sage_jax.train.common import run_loop

EMA_ACCUM = 0.5 ** (32 / (10 * 1000))


def default_config() -> ml_collections.ConfigDict:
    """The ``gan`` section's defaults, the one place of each (``configs/*.py`` start from
    it through :func:`sage_jax.config.default_config`; :class:`StepOptions`, this module,
    :mod:`~sage_jax.train.reconstruction` and :mod:`~sage_jax.train.label_augmentation`
    read the keys without fallbacks). The adversarial options are rosinality's
    ``train.py`` defaults."""
    c = ml_collections.ConfigDict()
    c.steps = 800000           # rosinality's iterations (256 px, days on 8 GPUs)
    c.batch_size = 16
    c.lr = 0.002
    c.d_lr = 0.0               # > 0: the discriminator's own rate (two time-scale updates); 0: lr, as rosinality
    c.r1 = 10.0                # R1 weight
    c.d_reg_every = 16         # lazy R1 interval (StyleGAN2)
    c.path_regularize = 2.0
    c.path_batch_shrink = 2
    c.g_reg_every = 4          # lazy path-length interval (StyleGAN2)
    c.mixing = 0.9             # style-mixing probability
    c.ema = EMA_ACCUM          # rosinality's accum
    c.ema_rampup = 0.0         # > 0: EMA half-life min(that of ema, ema_rampup * step) (StyleGAN2-ADA: 0.05)
    c.augment = False          # differentiable augmentation (colour, translation, cutout), for few images
    # Class-conditional training and Softlabel-GAN (Katsumata et al., WACV 2024), see
    # sage_jax/train/label_augmentation.py. The paper's setting: labels="soft" with the
    # classifier's plain softmax (soft_temperature=1, soft_mix=0), DiffAugment
    # color,translation,cutout (augment=True), no class-balanced reweighting.
    c.conditional = False      # class-conditional G (label embedding in the mapping) + projection D
    c.labels = "hard"          # real images' labels: "hard" (one-hot) | "soft" (classifier probabilities)
    c.soft_temperature = 1.0   # softmax(logits / T); the paper: 1
    c.soft_mix = 0.0           # mix * onehot + (1 - mix) * soft; the paper: 0 (pure soft labels)
    c.soft_labels_file = ""    # optional (N, C) .npy of probabilities in the dataset's order
    c.soft_classifier_steps = 200  # SmallCNN steps per fold (no file given)
    c.soft_folds = 2           # cross-fitting: each image is scored by a classifier that never saw it
    c.fake_labels = "uniform"  # generated images' one-hot classes: "uniform" (BigGAN-PyTorch, the paper's
                               # code base) | "data" (training frequencies, as StyleGAN2-ADA)
    c.balance = False          # class-balanced weights N / (C n_c) on the D's real loss (not in the paper)
    c.seed = 0
    c.log_every = 100
    c.ckpt_every = 5000
    c.keep = 3                 # checkpoints kept
    c.sample_every = 5000      # a grid of EMA samples (0: never)
    c.n_sample = 16
    # The reconstruction recipe (sage_jax/train/reconstruction.py; not in the reference): no
    # discriminator; the synthesis network learns by reconstruction beside a plain encoder,
    # then a class-conditional mapping is fitted to a per-class sampler of the codes.
    c.recipe = "adversarial"   # "adversarial" (StyleGAN2, as rosinality) | "reconstruction"
    c.recon_lr = 0.01          # the generator's Adam rate
    c.recon_b1 = 0.9           #   and beta1
    c.recon_schedule = "constant"  # "constant" | "cosine": both phase-1 rates decay to 0 over gan.steps
    c.encoder_width = 32       # its plain encoder's base width
    c.encoder_lr = 1e-3        #   and Adam rate
    c.sampler_rank = 4         # principal directions per class of the class sampler
    c.mapping_steps = 20000    # regression steps of the conditional mapping
    c.mapping_lr = 1e-2        #   and its (cosine-decayed) Adam rate
    c.eval_every = 0           # > 0: call train_gan's ``evaluate`` (the learning curve) every this many steps
    return c


# -------------------------------------------------------------------- pieces
def diff_augment(key, x):
    """DiffAugment 'color,translation,cutout' on NHWC images in [-1, 1]."""
    n = x.shape[0]
    k = jax.random.split(key, 7)
    x = x + (jax.random.uniform(k[0], (n, 1, 1, 1)) - 0.5)
    mean = x.mean(axis=-1, keepdims=True)
    x = (x - mean) * (jax.random.uniform(k[1], (n, 1, 1, 1)) * 2) + mean
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    x = (x - mean) * (jax.random.uniform(k[2], (n, 1, 1, 1)) + 0.5) + mean
    h, w = x.shape[1:3]
    sy, sx = int(h * 0.125 + 0.5), int(w * 0.125 + 0.5)
    ty = jax.random.randint(k[3], (n,), -sy, sy + 1)
    tx = jax.random.randint(k[4], (n,), -sx, sx + 1)
    yy = jnp.clip(jnp.arange(h)[None, :] + ty[:, None], -1, h)  # -1 / h: padding (zero)
    xx = jnp.clip(jnp.arange(w)[None, :] + tx[:, None], -1, w)
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    x = padded[jnp.arange(n)[:, None, None], yy[:, :, None] + 1, xx[:, None, :] + 1]
    ch, cw = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
    cy = jax.random.randint(k[5], (n,), 0, h + (1 - ch % 2))
    cx = jax.random.randint(k[6], (n,), 0, w + (1 - cw % 2))
    ys = jnp.arange(h)[None, :, None] - (cy[:, None, None] - ch // 2)
    xs = jnp.arange(w)[None, None, :] - (cx[:, None, None] - cw // 2)
    keep = ~((ys >= 0) & (ys < ch) & (xs >= 0) & (xs < cw))
    return x * keep[..., None]


def _adam(lr, every):
    c = every / (every + 1) if every else 1.0
    return optax.adam(lr * c, b1=0.0 ** c, b2=0.99 ** c)


def draw_pass(key, g_module, batch: int, mixing: float, prior=None) -> dict:
    """The random inputs of one generator pass, as rosinality's ``train.py`` draws them:
    ``z1`` and ``z2`` (N, style_dim), whether the pass mixes (``mix``, one decision per
    batch with probability ``mixing``, as ``mixing_noise``), the ``inject_index`` in
    [1, n_latent) (``Generator.forward``'s ``random.randint(1, n_latent - 1)``), one fresh
    noise map per layer (N, H, W, 1) (``randomize_noise=True``), and for a conditional
    generator one-hot fake ``labels`` drawn from the class distribution ``prior``."""
    kz1, kz2, kmix, kinj, kn, kl = jax.random.split(key, 6)
    d = g_module.style_dim
    keys = jax.random.split(kn, g_module.num_layers)
    return {
        "z1": jax.random.normal(kz1, (batch, d)),
        "z2": jax.random.normal(kz2, (batch, d)),
        "mix": jax.random.uniform(kmix) < mixing,
        "inject_index": jax.random.randint(kinj, (), 1, g_module.n_latent),
        "noise": [jax.random.normal(k, (batch, h, w, 1)) for k, (h, w) in zip(keys, noise_shapes(g_module.size))],
        "labels": _fake_labels(kl, prior, batch) if g_module.c_dim else None,
    }


def draw_step(key, g_module, opts: "StepOptions", batch: int, prior=None) -> dict:
    """Every random input of one training iteration, drawn in one place apart from the
    updates that use them (a test replaces this dict with a reference's recorded draws):
    the generator passes of the D step (``"d"``), the G step (``"g"``) and the
    path-length step (``"path"``, on ``batch // path_batch_shrink`` codes, with the
    ``path_noise`` (N, H, W, 3) that multiplies the images before its division by
    sqrt(H W)), the horizontal-flip decision of each real image (``"flip"``, used when
    the data section's ``hflip`` is on) and the keys of the differentiable augmentation."""
    kd, kg, kp, kpn, kf, ka = jax.random.split(key, 6)
    b_path = max(1, batch // opts.path_batch_shrink)
    path = draw_pass(kp, g_module, b_path, opts.mixing, prior)
    path["path_noise"] = jax.random.normal(kpn, (b_path, g_module.size, g_module.size, 3))
    aug = jax.random.split(ka, 4)
    return {"d": draw_pass(kd, g_module, batch, opts.mixing, prior),
            "g": draw_pass(kg, g_module, batch, opts.mixing, prior),
            "path": path,
            "flip": jax.random.bernoulli(kf, 0.5, (batch,)),
            "aug": {"d_fake": aug[0], "d_real": aug[1], "r1": aug[2], "g": aug[3]}}


def latents_of(g_module, g_params, noises, draw) -> jax.Array:
    """W+ codes of a pass's draws: ``mapping(z1)`` broadcast to every layer, or, when
    the pass mixes, ``mapping(z1)`` before ``inject_index`` and ``mapping(z2)`` from it on
    (rosinality's ``Generator.forward`` with two styles)."""
    variables = {"params": g_params, "noises": noises}
    labels = draw.get("labels")
    w1 = g_module.apply(variables, draw["z1"], labels, method=Generator.mapping)
    w2 = g_module.apply(variables, draw["z2"], labels, method=Generator.mapping)
    n = g_module.n_latent
    mixed = mix_styles([w1, w2], n, draw["inject_index"])
    plain = mix_styles([w1], n)
    return jnp.where(draw["mix"], mixed, plain)


def _synth(g_module, g_params, noises, latents, noise):
    """Images of W+ codes with the pass's noise maps (training uses random noise)."""
    return g_module.apply({"params": g_params, "noises": noises}, latents, list(noise), method=Generator.synthesis)


def _d_apply(d_module, d_params, x, labels=None):
    return d_module.apply({"params": d_params}, x, labels)


def _fake_labels(key, prior, batch):
    """One-hot labels (batch, C) drawn from the class distribution ``prior``."""
    idx = jax.random.categorical(key, jnp.log(prior), shape=(batch,))
    return jax.nn.one_hot(idx, prior.shape[0], dtype=jnp.float32)


def flip_images(images, flip):
    """Mirror the images (N, H, W, C) whose ``flip`` (N,) is set, as the reference's
    ``RandomHorizontalFlip``; ``flip=None`` leaves them as they are."""
    if flip is None:
        return images
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)


_DEFAULTS = default_config()


@dataclasses.dataclass(frozen=True)
class StepOptions:
    """The training options the compiled updates depend on (hashable, so the jitted
    functions are built once per model and options, also across resumed runs). Made
    from a ``gan`` section by :meth:`from_config`; the field defaults are those of
    :func:`default_config`, read from it, not repeated."""

    lr: float = _DEFAULTS.lr
    r1: float = _DEFAULTS.r1
    d_reg_every: int = _DEFAULTS.d_reg_every
    path_regularize: float = _DEFAULTS.path_regularize
    path_batch_shrink: int = _DEFAULTS.path_batch_shrink
    g_reg_every: int = _DEFAULTS.g_reg_every
    mixing: float = _DEFAULTS.mixing
    ema: float = _DEFAULTS.ema
    augment: bool = _DEFAULTS.augment
    ema_rampup: float = _DEFAULTS.ema_rampup
    d_lr: float = _DEFAULTS.d_lr

    @classmethod
    def from_config(cls, cfg):
        """The options of a ``gan`` section (which has every key: configs start from
        :func:`default_config`, and :func:`sage_jax.config.load_config` completes them)."""
        return cls(**{f.name: cfg[f.name] for f in dataclasses.fields(cls)})

    def ema_beta(self, step):
        """The EMA decay at (0-based) ``step``. With ``ema_rampup`` r > 0 the half-life
        (in steps) is min(that of ``ema``, r * (step + 1)), StyleGAN2-ADA's ramp-up: a short
        run's EMA is not dominated by the random initialisation."""
        if not self.ema_rampup:
            return self.ema
        half_life = math.log(0.5) / math.log(self.ema)
        h = jnp.minimum(half_life, self.ema_rampup * (jnp.asarray(step, jnp.float32) + 1.0))
        return jnp.power(0.5, 1.0 / jnp.maximum(h, 1e-8))


def _optimizers(opts: StepOptions):
    """(G's, D's) Adam with the lazy-regularisation corrections; D at ``d_lr`` when set."""
    return _adam(opts.lr, opts.g_reg_every), _adam(opts.d_lr or opts.lr, opts.d_reg_every)


class GanSteps(NamedTuple):
    """The jitted pieces of one training iteration. ``draw(key, batch, prior)`` makes
    every random input (:func:`draw_step`); the updates take their share of it:
    ``d_step(s, real, draws["d"], draws["aug"], flip)``, ``d_reg_step(s, real,
    draws["aug"], flip)``, ``g_step(s, draws["g"], draws["aug"])``, ``g_reg_step(s,
    draws["path"])``, then ``ema_step(s)``, once per iteration after them all (as
    ``accumulate`` in rosinality's loop)."""

    draw: Callable
    d_step: Callable
    d_reg_step: Callable
    g_step: Callable
    g_reg_step: Callable
    ema_step: Callable
    g_tx: optax.GradientTransformation
    d_tx: optax.GradientTransformation


def make_steps(g_module, d_module, cfg) -> GanSteps:
    """The jitted pieces of an iteration: the draw, D, lazy R1, G, lazy path length, EMA."""
    return _make_steps(g_module, d_module, StepOptions.from_config(cfg))


@functools.lru_cache(maxsize=8)
def _make_steps(g_module, d_module, cfg: StepOptions) -> GanSteps:
    g_tx, d_tx = _optimizers(cfg)
    augment = (lambda k, x: diff_augment(k, x)) if cfg.augment else (lambda k, x: x)
    c_dim = g_module.c_dim

    def real_labels(y):
        """Label vectors (N, C) and per-image real-loss weights (N,) or None."""
        if not c_dim:
            return None, None
        return y[:, :c_dim], (y[:, c_dim] if y.shape[1] > c_dim else None)

    @functools.partial(jax.jit, static_argnums=1)
    def draw(key, batch, prior=None):
        return draw_step(key, g_module, cfg, batch, prior)

    @jax.jit
    def d_step(s, real, dr, aug, flip=None, y=None):
        real = flip_images(real, flip)
        fl = dr["labels"]
        ry, weight = real_labels(y)
        lat = latents_of(g_module, s["g"], s["noises"], dr)
        fake = jax.lax.stop_gradient(_synth(g_module, s["g"], s["noises"], lat, dr["noise"]))

        def loss(dp):
            fake_pred = _d_apply(d_module, dp, augment(aug["d_fake"], fake), fl)
            real_pred = _d_apply(d_module, dp, augment(aug["d_real"], real), ry)
            real_term = jax.nn.softplus(-real_pred)
            if weight is not None:
                real_term = real_term * weight[:, None]
            l = jnp.mean(jax.nn.softplus(fake_pred)) + jnp.mean(real_term)
            return l, (jnp.mean(real_pred), jnp.mean(fake_pred))

        (l, (rs, fs)), grads = jax.value_and_grad(loss, has_aux=True)(s["d"])
        upd, d_opt = d_tx.update(grads, s["d_opt"], s["d"])
        return dict(s, d=optax.apply_updates(s["d"], upd), d_opt=d_opt), \
            {"d_loss": l, "real_score": rs, "fake_score": fs}

    @jax.jit
    def d_reg_step(s, real, aug, flip=None, y=None):
        real = flip_images(real, flip)
        ry, _ = real_labels(y)

        def loss(dp):
            def total(x):
                return jnp.sum(_d_apply(d_module, dp, augment(aug["r1"], x), ry))

            grad = jax.grad(total)(real)
            r1 = jnp.mean(jnp.sum(jnp.square(grad).reshape(grad.shape[0], -1), axis=1))
            return cfg.r1 / 2 * r1 * cfg.d_reg_every, r1

        (_, r1), grads = jax.value_and_grad(loss, has_aux=True)(s["d"])
        upd, d_opt = d_tx.update(grads, s["d_opt"], s["d"])
        return dict(s, d=optax.apply_updates(s["d"], upd), d_opt=d_opt), {"r1": r1}

    @jax.jit
    def g_step(s, dr, aug):
        fl = dr["labels"]

        def loss(gp):
            lat = latents_of(g_module, gp, s["noises"], dr)
            fake = _synth(g_module, gp, s["noises"], lat, dr["noise"])
            return jnp.mean(jax.nn.softplus(-_d_apply(d_module, s["d"], augment(aug["g"], fake), fl)))

        l, grads = jax.value_and_grad(loss)(s["g"])
        upd, g_opt = g_tx.update(grads, s["g_opt"], s["g"])
        return dict(s, g=optax.apply_updates(s["g"], upd), g_opt=g_opt), {"g_loss": l}

    @jax.jit
    def g_reg_step(s, dr):
        def loss(gp):
            lat = latents_of(g_module, gp, s["noises"], dr)
            img, vjp = jax.vjp(lambda l: _synth(g_module, gp, s["noises"], l, dr["noise"]), lat)
            y = dr["path_noise"].astype(img.dtype) / math.sqrt(img.shape[1] * img.shape[2])
            (g_lat,) = vjp(y)
            lengths = jnp.sqrt(jnp.mean(jnp.sum(jnp.square(g_lat), axis=2), axis=1))
            # g_path_regularize: the running mean is updated with this batch's mean, and the
            # penalty's gradient flows through that batch mean too (path_mean not detached)
            mean = s["mean_path_length"] + 0.01 * (jnp.mean(lengths) - s["mean_path_length"])
            penalty = jnp.mean(jnp.square(lengths - mean))
            return cfg.path_regularize * cfg.g_reg_every * penalty, (penalty, mean, jnp.mean(lengths))

        (_, (pen, mean, plen)), grads = jax.value_and_grad(loss, has_aux=True)(s["g"])
        upd, g_opt = g_tx.update(grads, s["g_opt"], s["g"])
        return dict(s, g=optax.apply_updates(s["g"], upd), g_opt=g_opt,
                    mean_path_length=jax.lax.stop_gradient(mean)), {"path": pen, "path_length": plen}

    @jax.jit
    def ema_step(s):
        """``accumulate(g_ema, generator, beta)``: once per iteration, after every G update
        of it (the path-length step included)."""
        beta = cfg.ema_beta(s["step"])
        ema = jax.tree_util.tree_map(lambda e, p: beta * e + (1 - beta) * p, s["g_ema"], s["g"])
        return dict(s, g_ema=ema)

    return GanSteps(draw, d_step, d_reg_step, g_step, g_reg_step, ema_step, g_tx, d_tx)


def run_iteration(steps: GanSteps, opts: StepOptions, state, real, draws, step: int, labels=None,
                  hflip: bool = False, observe=None):
    """One iteration of rosinality's loop at (0-based) ``step`` with the random inputs
    ``draws`` (:func:`draw_step`): the D step, the lazy R1 step (``step % d_reg_every ==
    0``), the G step, the lazy path-length step (``step % g_reg_every == 0``, unless
    ``path_regularize`` is 0), then the EMA. Returns (state with ``step + 1``, metrics).
    ``observe(name, state, metrics)``, when given, sees the state after each of them
    ('d', 'r1', 'g', 'path', 'ema'). ``labels``: the real images' label vectors of a
    conditional GAN; ``hflip``: mirror the real images by ``draws["flip"]``."""
    flip = draws["flip"] if hflip else None
    y = () if labels is None else (labels,)
    seen = observe or (lambda name, s, m: None)
    metrics = {}
    state, m = steps.d_step(state, real, draws["d"], draws["aug"], flip, *y)
    metrics.update(m)
    seen("d", state, m)
    if step % opts.d_reg_every == 0:
        state, m = steps.d_reg_step(state, real, draws["aug"], flip, *y)
        metrics.update(m)
        seen("r1", state, m)
    state, m = steps.g_step(state, draws["g"], draws["aug"])
    metrics.update(m)
    seen("g", state, m)
    if opts.path_regularize and step % opts.g_reg_every == 0:
        state, m = steps.g_reg_step(state, draws["path"])
        metrics.update(m)
        seen("path", state, m)
    state = steps.ema_step(state)
    seen("ema", state, {})
    return dict(state, step=jnp.asarray(step + 1, jnp.int32)), metrics


def init_state(g_cfg, d_cfg, cfg, key):
    G = init_generator(g_cfg, jax.random.fold_in(key, 0))
    D = init_discriminator(d_cfg, jax.random.fold_in(key, 1))
    g_tx, d_tx = _optimizers(StepOptions.from_config(cfg))
    g = G.variables["params"]
    return G, D, {
        "g": g, "g_ema": jax.tree_util.tree_map(jnp.array, g), "d": D.variables["params"],
        "noises": G.variables["noises"], "g_opt": g_tx.init(g), "d_opt": d_tx.init(D.variables["params"]),
        "mean_path_length": jnp.zeros((), jnp.float32), "step": jnp.zeros((), jnp.int32),
    }


def train_gan(g_cfg, d_cfg, cfg, dataset, workdir: str, quiet: bool = False, mesh=None,
              stop_after: int | None = None, evaluate=None, hflip: bool = False):
    """Train (or resume) a StyleGAN2 on ``dataset`` (``load_batch`` interface, images
    at ``g_cfg.size``) in ``workdir``; returns (G_ema, D) models, also written to
    ``workdir/g_ema`` and ``workdir/d``. ``cfg.recipe = "reconstruction"`` trains the
    generator without a discriminator instead (:mod:`sage_jax.train.reconstruction`;
    returns ``(G, None)``). ``stop_after`` ends the run (with a checkpoint)
    after that many steps of this call, as an interruption would. ``evaluate(G_ema, step)
    -> dict`` is called every ``cfg.eval_every`` steps (and at the end) with the EMA
    generator; what it returns is logged in ``metrics.jsonl`` (the learning curve).
    ``hflip`` mirrors each real image with probability 0.5 (the data section's
    ``hflip``; rosinality's loader does it), drawn from the step's key, so a resumed run
    stays exact; the reconstruction recipe, which learns one code per image, never flips."""
    from sage_jax.checkpoints import save_model
    from sage_jax.train import reconstruction

    recipe = cfg.recipe
    if recipe not in reconstruction.RECIPES:
        raise ValueError(f"gan.recipe must be one of {reconstruction.RECIPES}, got {recipe!r}")
    if recipe == "reconstruction":
        return reconstruction.train_reconstruction(g_cfg, cfg, dataset, workdir, quiet=quiet, mesh=mesh,
                                                   stop_after=stop_after, evaluate=evaluate)
    mesh = mesh or parallel.make_mesh()
    key = jax.random.PRNGKey(cfg.seed)
    extra: dict = {}
    prior = sample_labels = None
    g_cfg, d_cfg, c_dim = _conditional_configs(g_cfg, d_cfg, cfg, dataset)
    if c_dim:
        dataset, prior, extra = _labelled_dataset(cfg, dataset, workdir, jax.random.fold_in(key, 5), quiet)
        prior = jnp.asarray(prior)
        sample_labels = np.arange(cfg.n_sample) % c_dim
    G, D, state = init_state(g_cfg, d_cfg, cfg, key)
    steps = make_steps(G.module, D.module, cfg)
    sample_z = jax.random.normal(jax.random.fold_in(key, 2), (cfg.n_sample, G.style_dim))
    data_key, step_key = jax.random.fold_in(key, 3), jax.random.fold_in(key, 4)

    opts = StepOptions.from_config(cfg)

    def step_fn(state, real, labels, step):
        draws = steps.draw(jax.random.fold_in(step_key, step), cfg.batch_size, prior)
        return run_iteration(steps, opts, state, real, draws, step, labels if c_dim else None, hflip)

    eval_every = int(cfg.eval_every or 0)

    def after_step(state, done):
        if cfg.sample_every and (done % cfg.sample_every == 0 or done == cfg.steps):
            _save_samples(G, state, sample_z, os.path.join(workdir, "samples", f"{done:07d}.png"), sample_labels)
        if evaluate is not None and eval_every and (done % eval_every == 0 or done == cfg.steps):
            model = GeneratorModel(G.config, parallel.to_host({"params": state["g_ema"], "noises": state["noises"]}))
            return evaluate(model, done)
        return None

    state, _ = run_loop(workdir=workdir, state=state, step_fn=step_fn, dataset=dataset, batch_size=cfg.batch_size,
                        data_key=data_key, mesh=mesh, steps=cfg.steps, log_every=cfg.log_every,
                        ckpt_every=cfg.ckpt_every, keep=cfg.keep, desc="train-gan", quiet=quiet,
                        stop_after=stop_after, after_step=after_step,
                        postfix=lambda m: {"d": f"{m['d_loss']:.3f}", "g": f"{m['g_loss']:.3f}"})
    host = parallel.to_host(state)
    G_ema = GeneratorModel(G.config, {"params": host["g_ema"], "noises": host["noises"]})
    D_out = DiscriminatorModel(D.config, {"params": host["d"]})
    save_model(os.path.join(workdir, "g_ema"), G_ema, overwrite=True, extra={"step": int(host["step"]), **extra})
    save_model(os.path.join(workdir, "d"), D_out, overwrite=True, extra={"step": int(host["step"]), **extra})
    return G_ema, D_out


def _conditional_configs(g_cfg, d_cfg, cfg, dataset):
    """(generator config, discriminator config, c_dim): ``c_dim`` is
    ``model.generator.c_dim``, or the dataset's class count when ``gan.conditional``
    is set and c_dim is 0; unconditional configs are returned untouched."""
    from sage_jax.models import _config_dict

    c_dim = int(g_cfg.get("c_dim", 0) or 0)
    if not (cfg.conditional or c_dim):
        return g_cfg, d_cfg, 0
    n_classes = dataset.num_classes
    c_dim = c_dim or n_classes
    if c_dim != n_classes:
        raise ValueError(f"model.generator.c_dim={c_dim} but the training data has {n_classes} classes")
    return dict(_config_dict(g_cfg), c_dim=c_dim), dict(_config_dict(d_cfg), c_dim=c_dim), c_dim


def _labelled_dataset(cfg, dataset, workdir, key, quiet):
    """The dataset with label vectors (and balance weights) as its labels, the fake-label
    prior, and what to record with the models. The real labels are computed once and
    kept in ``workdir/real_labels.npy``, which a resumed run reuses."""
    import json

    from sage_jax.train import label_augmentation as la

    hard = la.dataset_labels(dataset)
    c = dataset.num_classes
    path = os.path.join(workdir, "real_labels.npy")
    if os.path.exists(path):
        vectors = la.check_soft_labels(np.load(path), len(dataset), c, what=path)
        summary = dict(la.soft_label_summary(vectors, hard), kind=cfg.labels)
    else:
        # computed by every process alike (the labeller's training is data-parallel);
        # written by process 0
        vectors, summary = la.real_label_vectors(cfg, dataset, key)
        if parallel.is_main():
            os.makedirs(workdir, exist_ok=True)
            np.save(path + ".tmp.npy", vectors)
            os.replace(path + ".tmp.npy", path)
            with open(os.path.join(workdir, "real_labels.json"), "w") as f:
                json.dump(summary, f, indent=1)
        parallel.barrier("real-labels")
    if not quiet:
        print(f"real labels ({summary['kind']}): true-class probability {summary['true_class_prob']:.3f}, "
              f"max probability {summary['max_prob']:.3f}, entropy {summary['entropy']:.3f} nats")
    weights = la.class_balanced_weights(hard, c)[hard] if cfg.balance else None
    prior = la.class_prior(hard, c, cfg.fake_labels)
    counts = np.bincount(hard, minlength=c)
    extra = {"class_names": list(getattr(dataset, "class_names", [str(i) for i in range(c)])),
             "class_counts": [int(n) for n in counts], "labels": summary["kind"],
             "label_summary": summary, "balance": bool(cfg.balance),
             "fake_labels": cfg.fake_labels}
    return la.LabelledDataset(dataset, vectors, weights), prior, extra


def _save_samples(G, state, z, path, labels=None):
    model = GeneratorModel(G.config, parallel.to_host({"params": state["g_ema"], "noises": state["noises"]}))
    save_png(path, make_grid(to_uint8(np.asarray(model(z, labels=labels)))))
