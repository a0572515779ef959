"""Tiny configuration: 32 px StyleGAN2 with narrow channels, the embedded default.

Small enough that every stage trains on 2 CPU cores; the architecture is the one of the
reference's tiny checkpoints in ``shared/fixtures`` (``Generator(32, 64, 2)`` with the
channel table {4: 32, 8: 32, 16: 16, 32: 16}), so those files load into it.

Usage (Python)::

    from sage_jax.config import load_config
    from sage_jax.models import init_generator
    cfg = load_config("configs/tiny.py")
    G = init_generator(cfg.model.generator, jax.random.PRNGKey(cfg.seed))

Sections for data, training and the method are added with the issues that need them.
"""

import ml_collections


def get_config(arg=None):
    del arg
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.model = ml_collections.ConfigDict()
    g = config.model.generator = ml_collections.ConfigDict()
    g.size = 32            # 32 px is the natural size of the synthetic dataset (DESIGN.md)
    g.style_dim = 64       # 512 in config-f; 64 keeps the mapping cheap on CPU
    g.n_mlp = 2            # 8 in config-f; a small latent space needs little disentangling
    # (resolution, channels); config-f would be 512 everywhere at these resolutions
    g.channels = ((4, 32), (8, 32), (16, 16), (32, 16))
    g.blur_kernel = (1.0, 3.0, 3.0, 1.0)  # the reference's FIR filter
    g.lr_mlp = 0.01        # mapping-network learning-rate multiplier, as StyleGAN2

    d = config.model.discriminator = ml_collections.ConfigDict()
    d.size = g.get_ref("size")
    d.channels = g.get_ref("channels")
    d.blur_kernel = g.get_ref("blur_kernel")
    return config
