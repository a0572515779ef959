"""How fast can a fresh discriminator tell real images from a frozen generator's samples?

    python experiments/discriminator_probe.py [--generator DIR] [--steps 1500] [--lr 0.002] \\
        [--beta1 0] [--small-cnn] [--config.model.discriminator.blur_kernel='(1.0,)']

A GAN's generator learns only as fast as its discriminator can see what is wrong. This
trains a fresh discriminator (the config's ``model.discriminator``, or with
``--small-cnn`` the oracles' plain CNN as a yardstick) with the non-saturating logistic
loss on real seen synthetic images against 4,000 samples of ``--generator`` (default: the
shipped model's decoder), Adam as the GAN uses it (beta1 0, beta2 0.99), and prints the
held-out accuracy (500 real, 500 generated images) every ``--every`` steps. On the
shipped generator the tiny config's discriminator needs about 1,000 steps to pass 90%,
the same network without the blur before its stride-2 convolutions about 250, and the
plain CNN under 250 (experiments/README.md).
"""

import argparse
import os
import sys

def main(argv=None) -> int:
    from sage_jax.config import parse_with_config
    from sage_jax.demo import ASSET_DIR

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from sage_jax.checkpoints import psp_part

    p.add_argument("--generator", default=psp_part(os.path.join(ASSET_DIR, "psp")), help="generator directory")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--every", type=int, default=250, help="held-out accuracy every this many steps")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.002)
    p.add_argument("--beta1", type=float, default=0.0)
    p.add_argument("--small-cnn", action="store_true", help="the oracles' SmallCNN instead of the discriminator")
    p.add_argument("--max-images", dest="max_images", type=int, default=4000,
                   help="real images (a random subset of the seen training set) and as many samples")
    p.add_argument("--seed", type=int, default=0)
    a, cfg = parse_with_config(p, sys.argv[1:] if argv is None else argv)
    if a.max_images < 20 or a.steps < 1 or a.every < 1 or a.batch < 4 or a.batch % 4 or a.lr <= 0 or not 0 <= a.beta1 < 1:
        p.error("--max-images >= 20; --steps, --every >= 1; --batch a multiple of 4; --lr > 0; 0 <= --beta1 < 1")

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from sage_jax import checkpoints
    from sage_jax.data.loader import seen_dataset
    from sage_jax.metrics.stages import generator_samples
    from sage_jax.models import init_discriminator
    from sage_jax.nn.classifier import SmallCNN

    G = checkpoints.load_generator(a.generator)
    real = seen_dataset(cfg.data, G.size).images
    key = jax.random.PRNGKey(a.seed)
    if len(real) > a.max_images:   # a fixed random subset of the training images
        pick = jax.random.permutation(jax.random.fold_in(key, 20_000), len(real))[:a.max_images]
        real = real[np.sort(np.asarray(pick))]
    n = len(real)
    # random samples (a class-conditional generator draws uniformly drawn classes)
    fake = generator_samples(G, n, key)
    held = min(500, n // 5)
    if a.small_cnn:
        module = SmallCNN(1)
        params = module.init(jax.random.fold_in(key, 1), real[:2])["params"]
        what = "SmallCNN (the oracles' network)"
    else:
        D = init_discriminator(cfg.model.discriminator, jax.random.fold_in(key, 1))
        module, params = D.module, D.variables["params"]
        what = f"discriminator {dict(cfg.model.discriminator.channels)}, blur {tuple(cfg.model.discriminator.blur_kernel)}"
    tx = optax.adam(a.lr, b1=a.beta1, b2=0.99)
    opt = tx.init(params)

    def logits(p, x):
        return module.apply({"params": p}, x)

    @jax.jit
    def step(p, opt, r, f):
        def loss(p):
            return jnp.mean(jax.nn.softplus(-logits(p, r))) + jnp.mean(jax.nn.softplus(logits(p, f)))

        value, grads = jax.value_and_grad(loss)(p)
        upd, opt = tx.update(grads, opt, p)
        return optax.apply_updates(p, upd), opt, value

    @jax.jit
    def accuracy(p, r, f):
        return (jnp.mean(logits(p, r) > 0) + jnp.mean(logits(p, f) < 0)) / 2

    print(f"{what}; lr {a.lr}, beta1 {a.beta1}; generator {a.generator}", flush=True)
    rng = np.random.default_rng(a.seed)
    for i in range(1, a.steps + 1):
        ri, fi = rng.choice(n - held, a.batch, replace=False), rng.choice(n - held, a.batch, replace=False)
        params, opt, value = step(params, opt, real[ri], fake[fi])
        if i % a.every == 0 or i == a.steps:
            acc = float(accuracy(params, real[n - held:], fake[n - held:]))
            print(f"step {i}: loss {float(value):.3f}, held-out accuracy {acc:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
