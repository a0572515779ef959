"""Shared 256 px settings of the four paper datasets (loaded by their configs).

Starts from :func:`sage_jax.config.default_config` (every key, each at its module's
default: rosinality's StyleGAN2 training, pSp's encoder training, the official SAGE
dictionary options, StyleGAN2 config-f and pSp's encoder at 256 px) and sets only what
a paper dataset at 256 px needs.
"""

from sage_jax.config import default_config


def full_size_config(root: str, split: str, n_seen: int, n_unseen: int):
    config = default_config()

    data = config.data
    data.name = "folder"        # the originals' layout: root/train/<class>_<i>.jpg
    data.root = root            # where the user unpacked the dataset (override on the command line)
    data.split = split
    data.size = 256             # SAGE/AGE work at 256 px
    data.num_seen = n_seen      # SAGE Sec. 4: seen / unseen classes
    data.num_unseen = n_unseen
    data.samples_per_class = 0  # use every image (the default 100 is the synthetic dataset's)
    data.hflip = True           # mirror real images at random in GAN training, as rosinality's loader

    # model: the defaults are SAGE's 256 px networks (StyleGAN2 config-f, pSp's GradualStyleEncoder)

    config.gan.augment = True   # few images per class: DiffAugment

    # psp: the defaults are pSp's training options

    t = config.dictionary
    t.log_every = 50            # a 15k-step run: fewer log lines and checkpoints than the
    t.ckpt_every = 1000         # command's defaults (10 and 500)
    return config
