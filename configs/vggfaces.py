"""VGGFaces at 256 px (SAGE Sec. 4: 1802 seen / 572 unseen classes).

Unpack the dataset in the originals' layout (`data/vggfaces/train/<class>_<i>.jpg`), then:

    sage-jax train-gan --config vggfaces --workdir runs/vggfaces/gan
    sage-jax train-encoder --config vggfaces --workdir runs/vggfaces/psp --generator runs/vggfaces/gan/g_ema
    # elsewhere: --config.data.root=/path/to/vggfaces

Costs: StyleGAN2 at 256 px is GPU work (rosinality's 800k steps take days on 8 GPUs);
nothing here trains it on a CPU.
"""

from sage_jax.config import load_sibling

full_size_config = load_sibling(__file__, "_full_size").full_size_config   # beside this file, wherever it is


def get_config(arg=None):
    del arg
    return full_size_config(root="data/vggfaces", split="train", n_seen=1802, n_unseen=572)
