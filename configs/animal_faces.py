"""Animal Faces at 256 px (SAGE Sec. 4: 119 seen / 30 unseen classes).

Unpack the dataset in the originals' layout (`data/animal_faces/train/<class>_<i>.jpg`), then:

    sage-jax train-gan --config configs/animal_faces.py --workdir runs/animal_faces/gan
    sage-jax train-encoder --config configs/animal_faces.py --workdir runs/animal_faces/psp --generator runs/animal_faces/gan/g_ema
    # elsewhere: --config.data.root=/path/to/animal_faces

Costs: StyleGAN2 at 256 px is GPU work (rosinality's 800k steps take days on 8 GPUs);
nothing here trains it on a CPU.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _full_size import full_size_config  # noqa: E402


def get_config(arg=None):
    del arg
    return full_size_config(root="data/animal_faces", split="train", n_seen=119, n_unseen=30)
