"""Tiny configuration: 32 px StyleGAN2 with narrow channels, the embedded default.

Small enough that every stage trains on 2 CPU cores; the architecture is the one of the
reference's tiny checkpoints in ``shared/fixtures`` (``Generator(32, 64, 2)`` with the
channel table {4: 32, 8: 32, 16: 16, 32: 16}), so those files load into it.

Usage (Python)::

    from sage_jax.config import load_config
    from sage_jax.models import init_generator
    cfg = load_config("configs/tiny.py")
    G = init_generator(cfg.model.generator, jax.random.PRNGKey(cfg.seed))

Sections for data and GAN/encoder training are added with the issues that need them.
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

    # Dictionary learning (SAGE Sec. 3.2.1; `sage-jax train-dictionary --config configs/tiny.py`).
    t = config.dictionary = ml_collections.ConfigDict()
    t.groups = ((0, 1, 2), (3, 4, 5))  # the official grouping; the paper's is (0-2, 3-6, 7-17)
    t.a_length = 8         # 100 in the official checkpoints; 8 is the tiny AGE-layout file's A
    t.steps = 2000         # 15k in the paper; the tiny latent space is learnt much sooner
    t.batch_size = 16
    t.lr = 1e-4            # Adam, as the paper
    t.lambda_orth = 5e-4   # official orthogonal_lambda
    t.lambda_sparse = 5e-3 # official sparse_lambda
    t.orth_form = "l1"     # the official code's L1 form ("frobenius": the paper's Eq. 13)
    t.sparse_norm = 32.0
    t.seed = 0
    t.log_every = 10
    t.ckpt_every = 500
    t.keep = 3
    return config
