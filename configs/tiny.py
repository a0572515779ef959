"""Tiny configuration: the embedded default. 32 px synthetic ground-truth data, a narrow
StyleGAN2, a narrow pSp encoder, a small dictionary; every stage trains on 2 CPU cores.

    sage-jax train --config configs/tiny.py --workdir runs/tiny      # every stage, resumable
    sage-jax train-gan --config configs/tiny.py --workdir runs/tiny/gan
    sage-jax train-encoder --config configs/tiny.py --workdir runs/tiny/psp \\
        --generator runs/tiny/gan/g_ema
    # any value: --config.gan.steps=200 (or --config.train.steps=200 for the command's own section)

The generator is trained by the reconstruction recipe (gan.recipe; no discriminator:
the adversarial GAN does not learn this data at this size, README "Where the shipped
model stands"), with 32 channels at every resolution, nearest-neighbour upsampling and 8
mapping layers. The reference's tiny checkpoints in ``shared/fixtures`` (``Generator(32,
64, 2)``, channels {4: 32, 8: 32, 16: 16, 32: 16}) load into this config with
``--config.model.generator.n_mlp=2`` and those channels (tests/test_configs.py).
"""

import ml_collections


def get_config(arg=None):
    del arg
    config = ml_collections.ConfigDict()
    config.seed = 0

    # ---------------------------------------------------------------- data
    data = config.data = ml_collections.ConfigDict()
    data.name = "synthetic"     # synthetic | folder | tfds
    data.root = ""              # folder datasets: <class>/<image> or <class>_<i>.jpg
    data.data_dir = ""          # tfds: where `sage-jax build-dataset` wrote it
    data.tfds_name = ""         # tfds: the built dataset's name
    data.split = ""             # sub-folder of root (e.g. train)
    data.size = 32              # 32 px is the natural size of the synthetic dataset (DESIGN.md)
    data.num_seen = 40          # synthetic: seen classes (train everything on these)
    data.num_unseen = 10        # synthetic: unseen classes (new combinations of seen factor values)
    data.samples_per_class = 400  # the synthetic data gives any number; 400 trains better than 100 (README)
    data.imbalance_ratio = 1.0  # > 1: long-tailed seen classes (Softlabel-GAN experiments)
    data.hflip = False          # adversarial GAN: mirror real images at random (rosinality's loader does);
                                # off: a mirrored arrow or chevron is another synthetic class

    # ---------------------------------------------------------------- models
    config.model = ml_collections.ConfigDict()
    g = config.model.generator = ml_collections.ConfigDict()
    g.size = 32
    g.style_dim = 64       # 512 in config-f; 64 keeps the mapping cheap on CPU
    g.n_mlp = 8            # as config-f (the reference's tiny checkpoints: 2)
    g.channels = ((4, 32), (8, 32), (16, 32), (32, 32))  # config-f: 512 (reference tiny: 16 at 16-32 px)
    g.blur_kernel = (1.0, 3.0, 3.0, 1.0)  # the reference's FIR filter
    g.lr_mlp = 0.01        # mapping-network learning-rate multiplier, as StyleGAN2
    g.upsample_mode = "nearest"  # "blur": the reference's transposed conv + FIR blur; "nearest": no blur
    g.c_dim = 0            # 0: unconditional (default); > 0: class-conditional, label vectors of
                           # this length (gan.conditional=True sets it to the number of seen classes)

    d = config.model.discriminator = ml_collections.ConfigDict()
    d.size = g.get_ref("size")
    d.channels = g.get_ref("channels")
    d.blur_kernel = g.get_ref("blur_kernel")
    d.c_dim = g.get_ref("c_dim")  # > 0: projection discriminator (Miyato & Koyama 2018)

    e = config.model.encoder = ml_collections.ConfigDict()
    e.kind = "GradualStyleEncoder"
    e.num_layers = 50      # IR-SE50 unit counts, as pSp, at narrow widths
    e.mode = "ir_se"
    e.input_size = 32      # head depths follow: 1, 2, 3 stride-2 convs (4, 5, 6 at 256 px)
    e.n_styles = 18        # SAGE's encoder always emits 18 codes; the generator uses the first 8
    e.style_dim = 64
    e.widths = (16, 16, 32, 64)  # pSp: (64, 128, 256, 512)

    # ---------------------------------------------------------------- GAN training
    t = config.gan = ml_collections.ConfigDict()
    t.steps = 20000        # rosinality: 800k at 256 px (adversarial); the reconstruction recipe's phase 1
    t.batch_size = 16
    t.lr = 0.002           # rosinality default
    t.d_lr = 0.0           # > 0: the discriminator's own rate (two time-scale updates); 0: lr, as rosinality
    t.r1 = 10.0            # rosinality default R1 weight
    t.d_reg_every = 16     # lazy R1 interval (StyleGAN2)
    t.path_regularize = 2.0
    t.path_batch_shrink = 2
    t.g_reg_every = 4      # lazy path-length interval (StyleGAN2)
    t.mixing = 0.9         # style-mixing probability
    t.ema = 0.5 ** (32 / (10 * 1000))  # rosinality's accum
    t.ema_rampup = 0.0     # > 0: EMA half-life min(that of ema, ema_rampup * step) (StyleGAN2-ADA: 0.05)
    t.augment = False      # the synthetic set is large enough; turn on for few images
    # Class-conditional training and Softlabel-GAN (Katsumata et al., WACV 2024), see
    # sage_jax/train/label_augmentation.py. The paper's setting: labels="soft" with the
    # classifier's plain softmax (soft_temperature=1, soft_mix=0), DiffAugment
    # color,translation,cutout (augment=True), no class-balanced reweighting.
    t.conditional = False  # class-conditional G (label embedding in the mapping) + projection D
    t.labels = "hard"      # real images' labels: "hard" (one-hot) | "soft" (classifier probabilities)
    t.soft_temperature = 1.0   # softmax(logits / T); paper: 1
    t.soft_mix = 0.0       # mix * onehot + (1 - mix) * soft; paper: 0 (pure soft labels)
    t.soft_labels_file = ""    # optional (N, C) .npy of probabilities in the dataset's order
    t.soft_classifier_steps = 200  # SmallCNN steps per fold (no file given)
    t.soft_folds = 2       # cross-fitting: each image is scored by a classifier that never saw it
    t.fake_labels = "uniform"  # generated images' one-hot classes: "uniform" (paper's BigGAN code) | "data" frequencies
    t.balance = False      # class-balanced weights N / (C n_c) on the D's real loss (not in the paper)
    t.seed = config.get_ref("seed")
    t.log_every = 50
    t.ckpt_every = 500
    t.keep = 3
    t.sample_every = 500
    t.n_sample = 16
    # The reconstruction recipe (sage_jax/train/reconstruction.py; not in the reference): no
    # discriminator; the synthesis network learns by reconstruction beside a plain encoder,
    # then a class-conditional mapping is fitted to a per-class sampler of the codes.
    # Measured best with model.generator.upsample_mode="nearest", n_mlp=8 (README).
    t.recipe = "reconstruction"  # "adversarial" (StyleGAN2, as rosinality) | "reconstruction"
    t.recon_lr = 0.01
    t.recon_b1 = 0.9
    t.recon_schedule = "cosine"    # "constant" | "cosine": both phase-1 rates decay to 0 over gan.steps
    t.encoder_width = 32
    t.encoder_lr = 1e-3
    t.sampler_rank = 4     # principal directions per class
    t.mapping_steps = 20000
    t.mapping_lr = 1e-2
    t.eval_every = 2500    # the learning curve: oracle confidence of random samples (synthetic data; ~25 s each)

    # ---------------------------------------------------------------- encoder training
    p = config.psp = ml_collections.ConfigDict()
    p.steps = 5000
    p.batch_size = 16
    p.lr = 1e-3            # pSp: 1e-4 (too slow for this small encoder in a few thousand steps)
    p.lr_schedule = "cosine"  # decays to 0 over psp.steps (pSp: constant)
    p.l2_lambda = 1.0      # pSp default
    p.lpips_lambda = 0.8   # pSp default; used only with LPIPS weights
    p.w_norm_lambda = 0.0  # pSp default
    p.latent_lambda = 1.0  # latent regression on generated images: fast for a small encoder
    p.generated_fraction = 0.5
    p.restyle_iterations = 0  # > 0: an iterative (ReStyle) encoder with this many passes; 2 passes
                              # cost twice the time per step for a few points (README), so 0 here
    p.latent_avg_samples = 10000
    p.seed = config.get_ref("seed")
    p.log_every = 50
    p.ckpt_every = 500
    p.keep = 3

    # ---------------------------------------------------------------- dictionary (SAGE Sec. 3.2.1)
    t = config.dictionary = ml_collections.ConfigDict()
    t.groups = ((0, 1, 2), (3, 4, 5), (6, 7))  # every one of the 8 layers at 32 px, as the paper's
                           # (0-2, 3-6, 7-17) covers all 18 at 1024 px; the official (0-2, 3-5)
                           # leaves the colour layers 6-7 unedited (README "How the dictionary stage was set")
    t.a_length = 8         # 100 in the official checkpoints; 8 is the tiny AGE-layout file's A
    t.steps = 2000         # 15k in the paper; the tiny latent space is learnt much sooner
    t.batch_size = 16
    t.lr = 1e-4            # Adam, as the paper
    t.lambda_orth = 5e-4   # official orthogonal_lambda
    t.lambda_sparse = 5e-3 # official sparse_lambda
    t.orth_form = "l1"     # the official code's L1 form ("frobenius": the paper's Eq. 13)
    t.sparse_norm = 32.0
    t.seed = config.get_ref("seed")
    t.log_every = 10
    t.ckpt_every = 500
    t.keep = 3
    t.init = "pca"         # A from the principal directions of the codes' within-class deviations
                           # ("random": N(0, 1), the originals; at this size it stays a random
                           # subspace, README "How the dictionary stage was set")

    # ---------------------------------------------------------------- generation (the model's defaults)
    gen = config.generation = ml_collections.ConfigDict()
    gen.t_B = 40           # embedding mapping: every singular direction of the 40 class embeddings
                           # (the paper's 10 keeps too few here, README "The method over the edit strength")
    gen.t_A = 4            # adaptive editing keeps the top half of A's 8 directions, as the paper's
                           # 50 of 100 (its 50 capped at 8 keeps all: adaptive editing off, README
                           # "The adaptive editing's t_A")

    # ---------------------------------------------------------------- inversion
    # How images become W+ codes for the class statistics (recorded there, and required of
    # the shots at generation): the encoder's codes (refine_steps 0, as pSp/AGE/SAGE), or
    # refined by Adam on reconstruction MSE (sage_jax/inversion.py; none of the originals has it).
    # Tiny: 25 steps at lr 0.06 (README "Refined inversions": the encoder alone keeps about half
    # of the unseen images' classes; 25 steps reach 0.98 seen / 0.96 unseen).
    inv = config.inversion = ml_collections.ConfigDict()
    inv.refine_steps = 25
    inv.refine_lr = 0.06

    # ---------------------------------------------------------------- class statistics
    st = config.statistics = ml_collections.ConfigDict()
    st.samples_per_class = 100  # 0: every training image; refined codes cost an optimisation each

    # ---------------------------------------------------------------- stage measures (synthetic data only)
    q = config.quality = ml_collections.ConfigDict()
    q.samples = 1000           # random generator samples scored by the oracles
    q.heldout_per_class = 10   # fresh real images per class for the inversion's measures
    q.seed = 2024

    # ---------------------------------------------------------------- oracles (synthetic data only)
    o = config.oracles = ml_collections.ConfigDict()
    o.steps = 1500         # small CNNs on real images of all 50 classes; ~99% held-out accuracy
    o.batch_size = 64
    return config
