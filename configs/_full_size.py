"""Shared 256 px settings of the four paper datasets (imported by their configs)."""

import ml_collections


def full_size_config(root: str, split: str, n_seen: int, n_unseen: int) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    data = config.data = ml_collections.ConfigDict()
    data.name = "folder"        # the originals' layout: root/train/<class>_<i>.jpg
    data.root = root            # where the user unpacked the dataset (override on the command line)
    data.data_dir = ""          # tfds: where `sage-jax build-dataset` wrote it
    data.tfds_name = ""         # tfds: the built dataset's name
    data.split = split
    data.size = 256             # SAGE/AGE work at 256 px
    data.num_seen = n_seen      # SAGE Sec. 4: seen / unseen classes
    data.num_unseen = n_unseen
    data.samples_per_class = 0  # use every image
    data.imbalance_ratio = 1.0
    data.hflip = True           # mirror real images at random in GAN training, as rosinality's loader

    config.model = ml_collections.ConfigDict()
    g = config.model.generator = ml_collections.ConfigDict()
    g.size = 256
    g.style_dim = 512           # config-f
    g.n_mlp = 8
    g.channels = ((4, 512), (8, 512), (16, 512), (32, 512), (64, 512), (128, 256), (256, 128))
    g.blur_kernel = (1.0, 3.0, 3.0, 1.0)
    g.lr_mlp = 0.01
    g.c_dim = 0                 # > 0 (or gan.conditional=True): class-conditional, see configs/tiny.py
    d = config.model.discriminator = ml_collections.ConfigDict()
    d.size = 256
    d.channels = g.get_ref("channels")
    d.blur_kernel = g.get_ref("blur_kernel")
    d.c_dim = g.get_ref("c_dim")
    e = config.model.encoder = ml_collections.ConfigDict()
    e.kind = "GradualStyleEncoder"   # pSp's encoder, as AGE/SAGE
    e.num_layers = 50
    e.mode = "ir_se"
    e.input_size = 256
    e.n_styles = 18
    e.style_dim = 512
    e.widths = (64, 128, 256, 512)

    t = config.gan = ml_collections.ConfigDict()   # rosinality train.py defaults
    t.steps = 800000
    t.batch_size = 16
    t.lr = 0.002
    t.r1 = 10.0
    t.d_reg_every = 16
    t.path_regularize = 2.0
    t.path_batch_shrink = 2
    t.g_reg_every = 4
    t.mixing = 0.9
    t.ema = 0.5 ** (32 / (10 * 1000))
    t.augment = True             # few images per class: DiffAugment
    # class-conditional / Softlabel-GAN options (documented in configs/tiny.py and the README)
    t.conditional = False
    t.labels = "hard"
    t.soft_temperature = 1.0
    t.soft_mix = 0.0
    t.soft_labels_file = ""
    t.soft_classifier_steps = 200
    t.soft_folds = 2
    t.fake_labels = "uniform"
    t.balance = False
    t.seed = config.get_ref("seed")
    t.log_every = 100
    t.ckpt_every = 5000
    t.keep = 3
    t.sample_every = 5000
    t.n_sample = 16

    p = config.psp = ml_collections.ConfigDict()   # pSp training defaults
    p.steps = 500000
    p.batch_size = 8
    p.lr = 1e-4
    p.l2_lambda = 1.0
    p.lpips_lambda = 0.8
    p.w_norm_lambda = 0.0
    p.latent_lambda = 0.0
    p.generated_fraction = 0.0
    p.latent_avg_samples = 100000   # pSp: decoder.mean_latent(int(1e5))
    p.seed = config.get_ref("seed")
    p.log_every = 100
    p.ckpt_every = 5000
    p.keep = 3

    t = config.dictionary = ml_collections.ConfigDict()   # AGE/SAGE official training options
    t.groups = ((0, 1, 2), (3, 4, 5))
    t.a_length = 100
    t.steps = 15000
    t.batch_size = 8
    t.lr = 1e-4
    t.lambda_orth = 5e-4
    t.lambda_sparse = 5e-3
    t.orth_form = "l1"
    t.sparse_norm = 32.0
    t.seed = config.get_ref("seed")
    t.log_every = 50
    t.ckpt_every = 1000
    t.keep = 3
    return config
