"""Tiny configuration: the embedded default (``--config tiny``). 32 px synthetic
ground-truth data, a narrow StyleGAN2, a narrow pSp encoder, a small dictionary; every
stage trains on 2 CPU cores. The shipped model (``sage_jax/assets/tiny_model``) was
trained with it.

    sage-jax train --config tiny --workdir runs/tiny      # every stage, resumable
    sage-jax train-gan --config tiny --workdir runs/tiny/gan
    sage-jax train-encoder --config tiny --workdir runs/tiny/psp \\
        --generator runs/tiny/gan/g_ema
    # any value: --config.gan.steps=200 (or --config.train.steps=200 for the command's own section)

Starts from :func:`sage_jax.config.default_config` (every key, each at its module's
default) and sets what differs for this size, with the reason beside each value.

The generator is trained by the reconstruction recipe (gan.recipe; no discriminator:
the adversarial GAN did not learn this data at this size), with 32 channels at every
resolution, nearest-neighbour upsampling and 8 mapping layers. The reference's tiny
checkpoints in ``shared/fixtures`` (``Generator(32, 64, 2)``, channels {4: 32, 8: 32,
16: 16, 32: 16}) load into this config with ``--config.model.generator.n_mlp=2`` and
those channels (tests/test_configs.py).
"""

from sage_jax.config import default_config


def get_config(arg=None):
    del arg
    config = default_config()

    # ---------------------------------------------------------------- data
    # the default data: the synthetic dataset at 32 px, its natural size
    config.data.samples_per_class = 400  # the synthetic data gives any number; 400 trains better than 100
    # data.hflip stays off: a mirrored arrow or chevron is another synthetic class

    # ---------------------------------------------------------------- models
    g = config.model.generator
    g.size = 32            # the data's size (32 px is the natural size of the synthetic dataset)
    g.style_dim = 64       # 512 in config-f; 64 keeps the mapping cheap on CPU
    g.channels = ((4, 32), (8, 32), (16, 32), (32, 32))  # config-f: 512 (reference tiny: 16 at 16-32 px)
    # feature maps doubled by nearest neighbour (learns faster than the reference's "blur" in
    # the reconstruction recipe), RGB skip images bilinearly: "nearest" everywhere stacks 2x2
    # steps into 4-8 px tiles in smooth backgrounds (tile contrast 3.44 against the real
    # images' 1.05 after 2,000 steps; docs/glyphs.md)
    g.upsample_mode = "smooth-skip"
    # the discriminator follows the generator (size, channels, blur kernel, c_dim)

    e = config.model.encoder
    e.input_size = 32      # head depths follow: 1, 2, 3 stride-2 convs (4, 5, 6 at 256 px)
    e.style_dim = 64       # the generator's
    e.widths = (16, 16, 32, 64)  # pSp: (64, 128, 256, 512); IR-SE50 unit counts at narrow widths
    # n_styles stays 18: SAGE's encoder always emits 18 codes; the generator uses the first 8

    # ---------------------------------------------------------------- GAN training
    t = config.gan
    t.steps = 20000        # rosinality: 800k at 256 px (adversarial); here the reconstruction recipe's phase 1
    t.log_every = 50       # short CPU runs: frequent logs, checkpoints and sample grids
    t.ckpt_every = 500
    t.sample_every = 500
    t.recipe = "reconstruction"  # the adversarial GAN did not learn this data at this size
    t.recon_schedule = "cosine"  # both phase-1 rates decay to 0 over gan.steps: measured better than constant
    t.eval_every = 2500    # the learning curve: oracle confidence of random samples (synthetic data; ~25 s each)

    # ---------------------------------------------------------------- encoder training
    p = config.psp
    p.steps = 5000
    p.batch_size = 16
    p.lr = 1e-3            # pSp: 1e-4 (too slow for this small encoder in a few thousand steps)
    p.lr_schedule = "cosine"  # decays to 0 over psp.steps (pSp: constant)
    p.latent_lambda = 1.0  # latent regression on generated images: fast for a small encoder
    p.generated_fraction = 0.5  # half of each batch generated, for the latent regression
    p.latent_avg_samples = 10000  # pSp: 1e5; the 64-d mapping's mean settles with fewer
    p.log_every = 50
    p.ckpt_every = 500
    # restyle_iterations stays 0: 2 passes cost twice the time per step for a few points

    # ---------------------------------------------------------------- dictionary (SAGE Sec. 3.2.1)
    t = config.dictionary
    t.groups = ((0, 1, 2), (3, 4, 5), (6, 7))  # every one of the 8 layers at 32 px, as the paper's
                           # (0-2, 3-6, 7-17) covers all 18 at 1024 px; the official (0-2, 3-5)
                           # would leave the colour layers 6-7 unedited
    t.a_length = 8         # 100 in the official checkpoints; 8 is the tiny AGE-layout file's A
    t.steps = 2000         # 15k in the paper; the tiny latent space is learnt much sooner
    t.batch_size = 16
    t.init = "pca"         # A from the principal directions of the codes' within-class deviations
                           # ("random": N(0, 1), the originals; at this size it stays a random subspace)

    # ---------------------------------------------------------------- generation (the model's defaults)
    gen = config.generation
    gen.t_B = 40           # embedding mapping: every singular direction of the 40 class embeddings
                           # (the paper's 10 keeps too few here)
    gen.t_A = 4            # adaptive editing keeps the top half of A's 8 directions, as the paper's
                           # 50 of 100 (its 50 capped at 8 keeps all: adaptive editing off)

    # ---------------------------------------------------------------- inversion
    # How images become W+ codes for the class statistics (recorded there, and required of
    # the shots at generation): the encoder's codes (refine_steps 0, as pSp/AGE/SAGE), or
    # refined by Adam on reconstruction MSE (sage_jax/inversion.py; none of the originals has it).
    # Here 25 steps at lr 0.06: the encoder alone keeps about half of the unseen images'
    # classes; 25 steps reach 0.98 seen / 0.96 unseen.
    inv = config.inversion
    inv.refine_steps = 25
    inv.refine_lr = 0.06

    # ---------------------------------------------------------------- class statistics
    config.statistics.samples_per_class = 100  # refined codes cost an optimisation each; a class's
                                               # moments settle long before its 400 images

    # quality (stage measures) and oracles: the defaults (synthetic data only)
    return config
