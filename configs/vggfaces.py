"""VGGFaces at 256 px (SAGE Sec. 4: 1802 seen / 572 unseen classes).

Unpack the dataset in the originals' layout (`data/vggfaces/train/<class>_<i>.jpg`), then:

    sage-jax train-gan --config configs/vggfaces.py --workdir runs/vggfaces/gan
    sage-jax train-encoder --config configs/vggfaces.py --workdir runs/vggfaces/psp --generator runs/vggfaces/gan/g_ema
    # elsewhere: --config.data.root=/path/to/vggfaces

Costs: StyleGAN2 at 256 px is GPU work (rosinality's 800k steps take days on 8 GPUs);
nothing here trains it on a CPU.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _full_size import full_size_config  # noqa: E402


def get_config(arg=None):
    del arg
    return full_size_config(root="data/vggfaces", split="train", n_seen=1802, n_unseen=572)
