"""Flowers at 256 px (SAGE Sec. 4: 85 seen / 17 unseen classes).

Unpack the dataset in the originals' layout (`data/flowers/train/<class>_<i>.jpg`), then:

    sage-jax train-gan --config flowers --workdir runs/flowers/gan
    sage-jax train-encoder --config flowers --workdir runs/flowers/psp --generator runs/flowers/gan/g_ema
    # elsewhere: --config.data.root=/path/to/flowers

Costs: StyleGAN2 at 256 px is GPU work (rosinality's 800k steps take days on 8 GPUs);
nothing here trains it on a CPU.
"""

from sage_jax.config import load_sibling

full_size_config = load_sibling(__file__, "_full_size").full_size_config   # beside this file, wherever it is


def get_config(arg=None):
    del arg
    return full_size_config(root="data/flowers", split="train", n_seen=85, n_unseen=17)
