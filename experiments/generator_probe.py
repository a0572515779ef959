"""Can a generator architecture draw the synthetic data at all? An autoencoder test without
GAN dynamics.

    python experiments/generator_probe.py [--steps 3000] [--lr 1e-3] \\
        [--config.model.generator.channels='((4,64),(8,64),(16,64),(32,64))'] [--out probe.png]

A fresh generator of the config's ``model.generator`` is trained as the decoder of an
autoencoder, jointly with a fresh pSp encoder (``model.encoder``), on MSE to real seen
images, W+ codes in between (no mapping network, no discriminator). Every ``--every``
steps it prints the training MSE and, on 10 held-out images per seen and unseen class,
the oracles' retention and the MSE of the reconstructions. A generator that cannot
reconstruct here, with direct supervision, will not learn the data in a GAN of the same
length either. The tiny config's reaches retention 0.28 / 0.30 (seen / unseen) at 3,000
steps (experiments/README.md). ``--out`` writes held-out unseen
images above their reconstructions.

``--free-codes``: no encoder; instead one learned W code per training image (generative
latent optimisation, 10 images per seen class, codes at Adam 0.01), so only the
generator's own ability to draw the data is tested; the retention and MSE it reports are
of those training images' reconstructions. ``--code-lr`` sets the codes' Adam rate,
``--b1`` the generator's Adam beta1 (0 as in StyleGAN2 training). ``--plain-width W``
replaces the generator by a plain convolutional decoder (linear layer to a 4x4xW map,
nearest upsampling, two 3x3 convolutions per resolution; no modulation) as a yardstick:
with ``--lr 2e-3 --b1 0.9 --code-lr 0.1`` for 2,000 steps, W=64 (242k parameters)
reaches training retention 0.85 where the tiny generator (58k synthesis parameters)
reaches 0.34, and W=16 (28k parameters) 0.54 (experiments/README.md).
``--per-class`` sets how many training images per seen class get a code (10).

Random samples need more than a decoder: ``--fit-mapping STEPS`` then fits a fresh mapping
network (the config's ``n_mlp`` layers, z -> w) to the learned codes with a GAN in W (a
3-layer MLP discriminator on whitened codes, R1 10, batch 256), and scores 1,000 samples
``G(z)`` with the oracles (``--out x.png``: 64 of them in ``x_samples.png``), beside the
same measure on the training codes themselves (the ceiling). ``--code-noise S``: each code
is normalised to unit RMS and, in training, N(0, S^2) noise is added, so the generator
must draw the same image in a neighbourhood of every code.
In encoder mode, ``--single-code`` averages the encoder's codes over the layers into one W
per image (what a sample ``G(z)`` gets), and ``--fit-mapping`` then fits the mapping to
those codes of all training images. ``--plain-encoder W`` replaces the pSp encoder by a
plain CNN (two 3x3 convolutions per halving, widths W, 2W, 4W, 4W; no normalisation),
``--enc-lr`` sets the encoder's Adam rate (default ``--lr``), ``--b1`` the generator's.
The samples and the codes are drawn with the generator's stored noise, as in training.
``--samplers`` (with ``--single-code``): after training, render 1,000 codes from each of
several samplers of the training codes (the codes, Gaussians, per-class PCA of rank
4 / 8 / 16, interpolation within a class) and score them: where the decoder draws well.
``--conditional``: the mapping reads the class label too (StyleGAN2-ADA's label embedding;
the codes' classes are known), the W discriminator sees it, and the samples cycle
through the seen classes; the synthesis network never sees a label.
"""

import argparse
import os
import sys
import time

def _plain_decoder(width: int, size: int):
    """The yardstick for ``--plain-width``: code -> linear -> 4x4xW, then per doubling
    nearest upsampling and two 3x3 convolutions with leaky ReLU (width W, halved at the
    last resolution), a 1x1 convolution to RGB. No modulation, no constant input."""
    import flax.linen as nn

    from sage_jax.nn.layers import upsample_nearest

    class PlainDecoder(nn.Module):
        @nn.compact
        def __call__(self, code):
            x = nn.Dense(4 * 4 * width)(code).reshape(-1, 4, 4, width)
            res = 4
            while res < size:
                res *= 2
                ch = width if res < size else width // 2
                x = upsample_nearest(x)
                x = nn.leaky_relu(nn.Conv(ch, (3, 3))(x), 0.2)
                x = nn.leaky_relu(nn.Conv(ch, (3, 3))(x), 0.2)
            return nn.Conv(3, (1, 1))(x)

    return PlainDecoder()


def _fit_mapping(G, gparams, codes, steps: int, key, judge, batch: int = 256, every: int = 1000, out: str = "",
                 labels=None):
    """Fit a fresh mapping network z -> w to ``codes`` (N, D) with a GAN in W and print the
    oracles' scores of 1,000 samples ``G(z)`` every ``every`` steps (see the docstring);
    ``out``: a PNG of 64 of the last samples. ``labels`` (N,) class indices: a
    class-conditional mapping (``G.c_dim`` classes) and discriminator; samples cycle
    through the classes."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from sage_jax.images import make_grid, save_png, to_uint8
    from sage_jax.metrics.stages import sample_quality
    from sage_jax.nn.stylegan2 import Generator

    gm, noises, n_latent, dim = G.module, G.variables["noises"], G.n_latent, codes.shape[1]
    lr_mul = float(G.config.get("lr_mlp", 0.01))
    mp = {k: v for k, v in G.variables["params"].items() if k.startswith("style_")}   # fresh mapping
    syn = {k: v for k, v in gparams.items() if not k.startswith("style_")}
    mu, sd = codes.mean(0), codes.std(0) + 1e-6
    real = jnp.asarray((codes - mu) / sd)
    n_cls = G.c_dim
    onehot = jax.nn.one_hot(jnp.asarray(labels if labels is not None else np.zeros(len(codes), int)), max(n_cls, 1))

    class WDisc(nn.Module):
        @nn.compact
        def __call__(self, w, y):
            if n_cls:
                w = jnp.concatenate([w, y], axis=-1)
            for _ in range(3):
                w = nn.leaky_relu(nn.Dense(256)(w), 0.2)
            return nn.Dense(1)(w)[:, 0]

    disc = WDisc()
    dp = disc.init(jax.random.fold_in(key, 0), jnp.zeros((1, dim)), onehot[:1])
    # Adam's step on a weight stored divided by lr_mul: scale the rate so the effective
    # rate is 1e-3 whatever the config's multiplier
    gtx, dtx = optax.adam(1e-3 / lr_mul, b1=0.5, b2=0.99), optax.adam(5e-4, b1=0.5, b2=0.99)
    go, do = gtx.init(mp), dtx.init(dp)

    def mapping(mp, z, y):
        return gm.apply({"params": {**syn, **mp}, "noises": noises}, z, y if n_cls else None, method=Generator.mapping)

    def white(w):
        return (w - mu) / sd

    @jax.jit
    def step(mp, dp, go, do, k):
        k1, k2 = jax.random.split(k)
        pick = jax.random.randint(k1, (batch,), 0, len(codes))
        r, y = real[pick], onehot[pick]   # fakes get the real batch's classes
        z = jax.random.normal(k2, (batch, dim))
        fake = white(mapping(mp, z, y))

        def d_loss(dp):
            lr_, lf = disc.apply(dp, r, y), disc.apply(dp, jax.lax.stop_gradient(fake), y)
            grad = jax.grad(lambda x: disc.apply(dp, x, y).sum())(r)
            return (jnp.mean(jax.nn.softplus(-lr_)) + jnp.mean(jax.nn.softplus(lf))
                    + 5.0 * jnp.mean(jnp.sum(grad ** 2, axis=1)))

        ld, gd = jax.value_and_grad(d_loss)(dp)
        u, do = dtx.update(gd, do, dp)
        dp = optax.apply_updates(dp, u)
        lg, gg = jax.value_and_grad(lambda mp: jnp.mean(jax.nn.softplus(-disc.apply(dp, white(mapping(mp, z, y)), y))))(mp)
        u, go = gtx.update(gg, go, mp)
        return optax.apply_updates(mp, u), dp, go, do, ld, lg

    @jax.jit
    def render(mp, w):
        return gm.apply({"params": {**syn, **mp}, "noises": noises}, [jnp.broadcast_to(w[:, None], (len(w), n_latent, dim))],
                        input_is_latent=True)

    def score(ws, what, last=False):
        s = np.concatenate([np.asarray(render(mp, ws[i:i + 250]))
                            for i in range(0, len(ws), 250)])
        q = sample_quality(judge.oracles, s, judge.seen_names, judge.real_seen, size=judge.size)
        if out and last:
            save_png(out, make_grid(to_uint8(s[:64]), ncols=8))
        print(f"{what}: confident share {q['confident_share']:.3f}, seen classes hit {q['seen_classes_hit']}, "
              f"oracle FID {q['oracle_fid']:.1f}", flush=True)

    spread = (np.arange(1000) * len(codes)) // 1000   # 1,000 codes spread over every class
    score(jnp.asarray(codes)[spread], "the training codes themselves")
    z_eval = jax.random.normal(jax.random.fold_in(key, 1), (1000, dim))
    y_eval = jax.nn.one_hot(jnp.arange(1000) % max(n_cls, 1), max(n_cls, 1))
    for i in range(1, steps + 1):
        mp, dp, go, do, ld, lg = step(mp, dp, go, do, jax.random.fold_in(key, 10_000 + i))
        if i % every == 0 or i == steps:
            score(mapping(mp, z_eval, y_eval), f"fit-mapping step {i} (D loss {float(ld):.2f}): G(z)", last=i == steps)


def _score_samplers(codes, labels, render, judge, key, out: str = ""):
    """``--samplers``: where around its codes does the decoder draw well? Scores 1,000
    renders each of the codes themselves, one Gaussian fitted to all codes, one per class
    (covariance shrunk 10% toward its mean variance), per-class PCA samplers of rank
    4 / 8 / 16 (what ``gan.recipe="reconstruction"`` fits its mapping to) and random
    interpolations between two codes of one class; classes in turn. ``out``: a PNG of 64
    rank-4 samples."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from sage_jax.images import make_grid, save_png, to_uint8
    from sage_jax.metrics.stages import sample_quality
    from sage_jax.train.reconstruction import class_sampler, sampler_target

    n_cls, dim = int(labels.max()) + 1, codes.shape[1]
    rng = np.random.default_rng(int(jax.random.randint(key, (), 0, 2**31 - 1)))
    ys = np.arange(1000) % n_cls

    def score(ws, what, save=""):
        s = np.concatenate([np.asarray(render(jnp.asarray(ws[i:i + 250], jnp.float32))) for i in range(0, len(ws), 250)])
        q = sample_quality(judge.oracles, s, judge.seen_names, judge.real_seen, size=judge.size)
        if save:
            save_png(save, make_grid(to_uint8(s[:64]), ncols=8))
        print(f"sampler {what}: confident share {q['confident_share']:.3f}, seen classes hit {q['seen_classes_hit']}, "
              f"oracle FID {q['oracle_fid']:.1f}", flush=True)

    score(codes[(np.arange(1000) * len(codes)) // 1000], "the codes themselves")
    x = codes - codes.mean(0)
    chol = np.linalg.cholesky(x.T @ x / len(x) + 1e-6 * np.eye(dim))
    score(codes.mean(0) + rng.standard_normal((1000, dim)) @ chol.T, "one Gaussian")
    mus = np.stack([codes[labels == c].mean(0) for c in range(n_cls)])
    chols = []
    for c in range(n_cls):
        x = codes[labels == c] - mus[c]
        cov = x.T @ x / len(x)
        chols.append(np.linalg.cholesky(0.9 * cov + 0.1 * np.trace(cov) / dim * np.eye(dim) + 1e-8 * np.eye(dim)))
    score(np.stack([mus[y] + chols[y] @ rng.standard_normal(dim) for y in ys]), "a Gaussian per class")
    z = jax.random.normal(jax.random.fold_in(key, 1), (1000, dim))
    for rank in (4, 8, 16):
        m, b = class_sampler(codes, labels, n_cls, rank)
        score(np.asarray(sampler_target(jnp.asarray(m), jnp.asarray(b), z, jnp.asarray(ys))),
              f"per-class PCA rank {rank}", save=out if rank == 4 else "")
    pairs = np.stack([rng.choice(np.flatnonzero(labels == y), 2, replace=False) for y in ys])
    t = rng.uniform(0, 1, (1000, 1))
    score(t * codes[pairs[:, 0]] + (1 - t) * codes[pairs[:, 1]], "between two codes of a class")


def _plain_encoder(width: int, n_latent: int, dim: int):
    """``--plain-encoder``: per halving two 3x3 convolutions (the second of stride 2) with
    leaky ReLU, widths W, 2W, 4W, 4W, then a 256-unit layer and n_latent codes of dim."""
    import flax.linen as nn

    class PlainEncoder(nn.Module):
        @nn.compact
        def __call__(self, x):
            for c in (width, 2 * width, 4 * width, 4 * width):
                x = nn.leaky_relu(nn.Conv(c, (3, 3))(x), 0.2)
                x = nn.leaky_relu(nn.Conv(c, (3, 3), strides=2)(x), 0.2)
            x = nn.leaky_relu(nn.Dense(256)(x.reshape(x.shape[0], -1)), 0.2)
            return nn.Dense(n_latent * dim)(x).reshape(-1, n_latent, dim)

    return PlainEncoder()


class _Stateless:
    """A flax module without batch statistics behind the encoder's ``apply`` signature."""

    def __init__(self, module):
        self.module = module

    def apply(self, variables, x, train=False, mutable=None):
        out = self.module.apply({"params": variables["params"]}, x)
        return (out, {"batch_stats": variables["batch_stats"]}) if mutable else out


def main(argv=None) -> int:
    from sage_jax.config import parse_with_config
    from sage_jax.demo import ASSET_DIR

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--oracles", default=os.path.join(ASSET_DIR, "oracles"), help="oracle directory")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--every", type=int, default=500)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--b1", type=float, default=0.0, help="--free-codes: Adam beta1 of the generator (StyleGAN2: 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="", help="PNG of held-out unseen images and their reconstructions")
    p.add_argument("--free-codes", action="store_true", help="a learned W code per training image, no encoder")
    p.add_argument("--code-lr", type=float, default=0.01, help="--free-codes: Adam rate of the codes")
    p.add_argument("--per-class", type=int, default=10, help="--free-codes: training images per seen class")
    p.add_argument("--code-noise", type=float, default=0.0,
                   help="--free-codes: > 0: unit-RMS codes with N(0, S^2) noise in training")
    p.add_argument("--fit-mapping", type=int, default=0, metavar="STEPS",
                   help="--free-codes or --single-code: fit a mapping network to the codes (GAN in W), score G(z)")
    p.add_argument("--conditional", action="store_true",
                   help="--fit-mapping: a class-conditional mapping (the codes' classes are known)")
    p.add_argument("--samplers", action="store_true",
                   help="--single-code: after training, score samplers of the codes (Gaussians, per-class PCA, interpolation)")
    p.add_argument("--single-code", action="store_true", help="encoder mode: one W per image (codes averaged)")
    p.add_argument("--plain-encoder", type=int, default=0, help="encoder mode: a plain CNN encoder of this width")
    p.add_argument("--enc-lr", type=float, default=0.0, help="encoder mode: the encoder's Adam rate (default --lr)")
    p.add_argument("--plain-width", type=int, default=0,
                   help="--free-codes: a plain convolutional decoder of this width instead of the generator (yardstick)")
    a, cfg = parse_with_config(p, sys.argv[1:] if argv is None else argv)
    if a.steps < 1 or a.every < 1 or a.batch < 2 or a.lr <= 0 or a.code_lr <= 0 or not 0 <= a.b1 < 1:
        p.error("--steps, --every >= 1, --batch >= 2, --lr, --code-lr > 0, 0 <= --b1 < 1")
    if a.plain_width and (not a.free_codes or a.plain_width < 2 or a.plain_width % 2):
        p.error("--plain-width needs --free-codes and an even width >= 2")
    if (a.code_noise or a.per_class != 10) and not a.free_codes:
        p.error("--code-noise and --per-class need --free-codes")
    if a.free_codes and (a.single_code or a.plain_encoder or a.enc_lr):
        p.error("--single-code, --plain-encoder and --enc-lr are for the encoder mode (no --free-codes)")
    if a.conditional and not a.fit_mapping:
        p.error("--conditional needs --fit-mapping")
    if a.fit_mapping and not (a.free_codes or a.single_code):
        p.error("--fit-mapping needs --free-codes or --single-code (one W per image)")
    if a.samplers and not a.single_code:
        p.error("--samplers needs --single-code (one W per image)")
    if a.fit_mapping and a.plain_width:
        p.error("--fit-mapping needs the generator (no --plain-width)")
    if a.per_class < 1 or a.code_noise < 0 or a.fit_mapping < 0 or a.plain_encoder < 0 or a.enc_lr < 0:
        p.error("--per-class >= 1; --code-noise, --fit-mapping, --plain-encoder, --enc-lr >= 0")

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from sage_jax.data.loader import seen_dataset
    from sage_jax.images import make_grid, save_png, to_uint8
    from sage_jax.metrics.stages import heldout_images, inversion_quality, reconstruction_scores
    from sage_jax.models import init_encoder, init_generator
    from sage_jax.pipeline import _StageJudge

    cfg.model.encoder.input_size = cfg.model.generator.size
    if a.conditional:   # only the mapping network reads the label
        cfg.model.generator.c_dim = int(cfg.data.num_seen)
    key = jax.random.PRNGKey(a.seed)
    G = init_generator(cfg.model.generator, jax.random.fold_in(key, 0))
    E = init_encoder(cfg.model.encoder, jax.random.fold_in(key, 1))
    gm, em, noises, n_latent = G.module, E.module, G.variables["noises"], G.n_latent
    data = seen_dataset(cfg.data, G.size)
    images = data.images
    if a.free_codes:   # 10 images per seen class, each with its own W code
        pick = np.concatenate([np.flatnonzero(data.labels_array == c)[:a.per_class] for c in range(data.num_classes)])
        images, code_names = images[pick], [data.class_names[c] for c in data.labels_array[pick]]
        codes = 0.1 * jax.random.normal(jax.random.fold_in(key, 2), (len(images), 1, G.style_dim))
        if a.plain_width:
            plain = _plain_decoder(a.plain_width, G.size)
            params = {"g": plain.init(jax.random.fold_in(key, 3), codes[:1, 0])["params"], "c": codes}
        else:
            params = {"g": G.variables["params"], "c": codes}
        used = {k: v for k, v in params["g"].items() if not k.startswith("style_")}  # no mapping network here
        n_params = sum(int(np.size(v)) for v in jax.tree_util.tree_leaves(used))
        print(f"{'plain decoder' if a.plain_width else 'synthesis network'}: {n_params} parameters", flush=True)
        tx = optax.multi_transform({"g": optax.adam(a.lr, b1=a.b1, b2=0.99), "c": optax.adam(a.code_lr)},
                                   {"g": "g", "c": "c"})
    else:
        if a.plain_encoder:
            plain_enc = _plain_encoder(a.plain_encoder, n_latent, G.style_dim)
            E_params, E_stats = plain_enc.init(jax.random.fold_in(key, 1), images[:1])["params"], {}
            em = _Stateless(plain_enc)
        else:
            E_params, E_stats = E.variables["params"], E.variables["batch_stats"]
        params = {"g": G.variables["params"], "e": E_params}
        if a.enc_lr or a.b1:
            tx = optax.multi_transform({"g": optax.adam(a.lr, b1=a.b1, b2=0.99),
                                        "e": optax.adam(a.enc_lr or a.lr)}, {"g": "g", "e": "e"})
        else:   # the original recipe: one Adam for both
            tx = optax.adam(a.lr)
    stats = E_stats if not a.free_codes else E.variables["batch_stats"]
    opt = tx.init(params)

    def unit(c):   # --code-noise: codes normalised to unit RMS
        return c / jnp.sqrt(jnp.mean(jnp.square(c), -1, keepdims=True) + 1e-8) if a.code_noise > 0 else c

    def forward(p, stats, x, train, noise_key=None):
        if a.free_codes:   # x: indices of the training images
            c = unit(p["c"][x])
            if train and a.code_noise > 0:
                c = c + a.code_noise * jax.random.normal(noise_key, c.shape)
            if a.plain_width:
                return plain.apply({"params": p["g"]}, c[:, 0]), stats
            return gm.apply({"params": p["g"], "noises": noises}, [jnp.broadcast_to(c, (c.shape[0], n_latent, c.shape[2]))],
                            input_is_latent=True), stats
        if train:
            codes, upd = em.apply({"params": p["e"], "batch_stats": stats}, x, train=True, mutable=["batch_stats"])
            stats = upd["batch_stats"]
        else:
            codes = em.apply({"params": p["e"], "batch_stats": stats}, x, train=False)
        codes = codes[:, :n_latent]
        if a.single_code:
            codes = jnp.broadcast_to(codes.mean(1, keepdims=True), codes.shape)
        return gm.apply({"params": p["g"], "noises": noises}, [codes], input_is_latent=True), stats

    @jax.jit
    def step(p, opt, stats, x, target, noise_key):
        def loss(p):
            r, new = forward(p, stats, x, True, noise_key)
            return jnp.mean(jnp.square(r - target)), new

        (value, new), grads = jax.value_and_grad(loss, has_aux=True)(p)
        upd, opt = tx.update(grads, opt, p)
        return optax.apply_updates(p, upd), opt, new, value

    reconstruct = jax.jit(lambda p, stats, x: forward(p, stats, x, False)[0])
    judge = _StageJudge(cfg, a.oracles)
    held = {}
    if a.free_codes:   # the training images themselves, reconstructed from their codes
        held["training"] = (images, code_names)
    else:
        for split, classes in (("seen", judge.seen), ("unseen", judge.unseen)):
            x, _ = heldout_images(judge.spec, classes, 10)
            held[split] = (x, [c.name for c in classes for _ in range(10)])
    rng = np.random.default_rng(a.seed)
    t0 = time.perf_counter()
    for i in range(1, a.steps + 1):
        idx = rng.choice(len(images), a.batch, replace=False)
        x = jnp.asarray(idx) if a.free_codes else jnp.asarray(images[idx])
        params, opt, stats, value = step(params, opt, stats, x, jnp.asarray(images[idx]),
                                         jax.random.fold_in(jax.random.fold_in(key, 4), i))
        if i % a.every == 0 or i == a.steps:
            if a.free_codes:
                recon = np.concatenate([np.asarray(reconstruct(params, stats, jnp.arange(j, min(j + 100, len(images)))))
                                        for j in range(0, len(images), 100)])
                scores = {"training": reconstruction_scores(judge.oracles, recon, images, code_names, size=judge.size)}
            else:
                scores = {split: inversion_quality(lambda x: reconstruct(params, stats, x), judge.oracles, x, names,
                                                   size=judge.size)
                          for split, (x, names) in held.items()}
            print(f"[{time.perf_counter() - t0:.0f} s] step {i}: train MSE {float(value):.4f}; " + ", ".join(
                f"{s} retention {q['retention']:.3f} MSE {q['mse']:.4f}" for s, q in scores.items()), flush=True)
    if a.single_code and (a.samplers or a.fit_mapping):   # the encoder's one W of every training image
        enc = jax.jit(lambda x: em.apply({"params": params["e"], "batch_stats": stats}, x, train=False)[:, :n_latent].mean(1))
        enc_codes = np.concatenate([np.asarray(enc(jnp.asarray(images[j:j + 250]))) for j in range(0, len(images), 250)])
    if a.samplers:
        render = jax.jit(lambda w: gm.apply({"params": params["g"], "noises": noises}, [w], input_is_latent=True))
        _score_samplers(enc_codes, data.labels_array, render, judge, jax.random.fold_in(key, 6),
                        out=a.out[:-4] + "_pca4.png" if a.out.endswith(".png") else "")
    if a.fit_mapping:
        if a.free_codes:
            codes, code_labels = np.asarray(unit(params["c"][:, 0])), data.labels_array[pick]
        else:
            codes, code_labels = enc_codes, data.labels_array
        _fit_mapping(G, params["g"], codes, a.fit_mapping, jax.random.fold_in(key, 5), judge,
                     out=a.out[:-4] + "_samples.png" if a.out.endswith(".png") else "",
                     labels=code_labels if a.conditional else None)
    if a.out:
        if a.free_codes:
            pos = np.arange(0, len(images), max(1, len(images) // 20))
            x, r = images[pos], np.asarray(reconstruct(params, stats, jnp.asarray(pos)))
        else:
            x = held["unseen"][0][::5]
            r = np.asarray(reconstruct(params, stats, jnp.asarray(x)))
        save_png(a.out, make_grid(to_uint8(np.concatenate([x, r])), ncols=len(x)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
