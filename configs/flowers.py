"""Flowers at 256 px (SAGE Sec. 4: 85 seen / 17 unseen classes).

Unpack the dataset in the originals' layout (`data/flowers/train/<class>_<i>.jpg`), then:

    sage-jax train-gan --config configs/flowers.py --workdir runs/flowers/gan
    sage-jax train-encoder --config configs/flowers.py --workdir runs/flowers/psp --generator runs/flowers/gan/g_ema
    # elsewhere: --config.data.root=/path/to/flowers

Costs: StyleGAN2 at 256 px is GPU work (rosinality's 800k steps take days on 8 GPUs);
nothing here trains it on a CPU.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _full_size import full_size_config  # noqa: E402


def get_config(arg=None):
    del arg
    return full_size_config(root="data/flowers", split="train", n_seen=85, n_unseen=17)
