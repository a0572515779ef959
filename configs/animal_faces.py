"""Animal Faces at 256 px (SAGE Sec. 4: 119 seen / 30 unseen classes).

Unpack the dataset in the originals' layout (`data/animal_faces/train/<class>_<i>.jpg`), then:

    sage-jax train-gan --config animal_faces --workdir runs/animal_faces/gan
    sage-jax train-encoder --config animal_faces --workdir runs/animal_faces/psp --generator runs/animal_faces/gan/g_ema
    # elsewhere: --config.data.root=/path/to/animal_faces

Costs: StyleGAN2 at 256 px is GPU work (rosinality's 800k steps take days on 8 GPUs);
nothing here trains it on a CPU.
"""

from sage_jax.config import load_sibling

full_size_config = load_sibling(__file__, "_full_size").full_size_config   # beside this file, wherever it is


def get_config(arg=None):
    del arg
    return full_size_config(root="data/animal_faces", split="train", n_seen=119, n_unseen=30)
