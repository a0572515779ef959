"""Can a generator architecture draw the synthetic data at all? An autoencoder test without
GAN dynamics.

    python scripts/generator_probe.py [--steps 3000] [--lr 1e-3] \\
        [--config.model.generator.channels='((4,64),(8,64),(16,64),(32,64))'] [--out probe.png]

A fresh generator of the config's ``model.generator`` is trained as the decoder of an
autoencoder, jointly with a fresh pSp encoder (``model.encoder``), on MSE to real seen
images, W+ codes in between (no mapping network, no discriminator). Every ``--every``
steps it prints the training MSE and, on 10 held-out images per seen and unseen class,
the oracles' retention and the MSE of the reconstructions. A generator that cannot
reconstruct here, with direct supervision, will not learn the data in a GAN of the same
length either. The tiny config's reaches retention 0.28 / 0.30 (seen / unseen) at 3,000
steps (README, "Where the shipped model stands"). ``--out`` writes held-out unseen
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
reaches 0.34, and W=16 (28k parameters) 0.54 (README, "Where the shipped model stands").
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
    p.add_argument("--plain-width", type=int, default=0,
                   help="--free-codes: a plain convolutional decoder of this width instead of the generator (yardstick)")
    a, cfg = parse_with_config(p, sys.argv[1:] if argv is None else argv)
    if a.steps < 1 or a.every < 1 or a.batch < 2 or a.lr <= 0 or a.code_lr <= 0 or not 0 <= a.b1 < 1:
        p.error("--steps, --every >= 1, --batch >= 2, --lr, --code-lr > 0, 0 <= --b1 < 1")
    if a.plain_width and (not a.free_codes or a.plain_width < 2 or a.plain_width % 2):
        p.error("--plain-width needs --free-codes and an even width >= 2")

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from sage_jax.data.loader import seen_dataset
    from sage_jax.images import make_grid, save_png, to_uint8
    from sage_jax.metrics.stages import heldout_images, inversion_quality, reconstruction_scores
    from sage_jax.models import init_encoder, init_generator
    from sage_jax.train.pipeline import _StageJudge

    cfg.model.encoder.input_size = cfg.model.generator.size
    key = jax.random.PRNGKey(a.seed)
    G = init_generator(cfg.model.generator, jax.random.fold_in(key, 0))
    E = init_encoder(cfg.model.encoder, jax.random.fold_in(key, 1))
    gm, em, noises, n_latent = G.module, E.module, G.variables["noises"], G.n_latent
    data = seen_dataset(cfg.data, G.size)
    images = data.images
    if a.free_codes:   # 10 images per seen class, each with its own W code
        pick = np.concatenate([np.flatnonzero(data.labels_array == c)[:10] for c in range(data.num_classes)])
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
        params = {"g": G.variables["params"], "e": E.variables["params"]}
        tx = optax.adam(a.lr)
    stats = E.variables["batch_stats"]
    opt = tx.init(params)

    def forward(p, stats, x, train):
        if a.free_codes:   # x: indices of the training images
            c = p["c"][x]
            if a.plain_width:
                return plain.apply({"params": p["g"]}, c[:, 0]), stats
            return gm.apply({"params": p["g"], "noises": noises}, [jnp.broadcast_to(c, (c.shape[0], n_latent, c.shape[2]))],
                            input_is_latent=True), stats
        if train:
            codes, upd = em.apply({"params": p["e"], "batch_stats": stats}, x, train=True, mutable=["batch_stats"])
            stats = upd["batch_stats"]
        else:
            codes = em.apply({"params": p["e"], "batch_stats": stats}, x, train=False)
        return gm.apply({"params": p["g"], "noises": noises}, [codes[:, :n_latent]], input_is_latent=True), stats

    @jax.jit
    def step(p, opt, stats, x, target):
        def loss(p):
            r, new = forward(p, stats, x, True)
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
        params, opt, stats, value = step(params, opt, stats, x, jnp.asarray(images[idx]))
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
