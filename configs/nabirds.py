"""NABirds at 256 px (SAGE Sec. 4: 444 seen / 111 unseen classes).

Unpack the dataset in the originals' layout (`data/nabirds/train/<class>_<i>.jpg`), then:

    sage-jax train-gan --config configs/nabirds.py --workdir runs/nabirds/gan
    sage-jax train-encoder --config configs/nabirds.py --workdir runs/nabirds/psp --generator runs/nabirds/gan/g_ema
    # elsewhere: --config.data.root=/path/to/nabirds

Costs: StyleGAN2 at 256 px is GPU work (rosinality's 800k steps take days on 8 GPUs);
nothing here trains it on a CPU.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _full_size import full_size_config  # noqa: E402


def get_config(arg=None):
    del arg
    return full_size_config(root="data/nabirds", split="train", n_seen=444, n_unseen=111)
