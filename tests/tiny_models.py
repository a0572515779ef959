"""Small complete models and datasets the tests make for themselves."""

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

import torch_pickle
from fixture_utils import fixture
from sage_jax import checkpoints
from sage_jax.models import init_encoder

TINY_ENCODER = dict(kind="GradualStyleEncoder", num_layers=50, mode="ir_se", input_size=32,
                    n_styles=18, style_dim=64, widths=(16, 16, 32, 64))


def tiny_psp_file(path, encoder_cfg=TINY_ENCODER, seed=0, with_ax=True):
    """A complete AGE-layout .pt: a narrow random encoder, the tiny fixture decoder and,
    with ``with_ax``, the fixture's ax.A plus random group encoders."""
    age = checkpoints.read_torch(fixture("tiny_age_layout_ckpt.pt"))
    E = init_encoder(encoder_cfg, jax.random.PRNGKey(seed))
    rng = np.random.default_rng(seed)
    stats = jax.tree_util.tree_map(lambda a: np.asarray(a) + rng.uniform(0.1, 0.5, np.shape(a)),
                                   E.variables["batch_stats"])
    E.variables = dict(E.variables, batch_stats=jax.tree_util.tree_map(jnp.asarray, stats))
    enc_sd = checkpoints.encoder_to_state_dict(E.config, E.variables)
    sd = {f"encoder.{k}": v for k, v in enc_sd.items()}
    sd.update({k: v for k, v in age["state_dict"].items() if k.startswith("decoder.")})
    if with_ax:
        from sage_jax.models import init_dictionary
        D = init_dictionary({"groups": [[0, 1, 2], [3, 4, 5]], "style_dim": 64, "a_length": 8},
                            jax.random.PRNGKey(seed + 1))
        ax = checkpoints.dictionary_to_state_dict(D.config, D.variables)
        ax["A"] = np.asarray(age["state_dict"]["ax.A"])
        sd.update({f"ax.{k}": v for k, v in ax.items()})
    ckpt = {"state_dict": sd, "opts": dict(age["opts"]), "latent_avg": age["latent_avg"]}
    path.write_bytes(torch_pickle.dumps(ckpt))
    return E, ckpt


def make_class_folders(root, n_classes=6, per_class=4, size=32, seed=0, layout="folders"):
    """Coloured-shape images, one colour per class, in ``root/<class>/`` folders or as
    ``root/<class>_<i>.png`` files."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    for c in range(n_classes):
        colour = rng.integers(0, 255, 3)
        for i in range(per_class):
            cy, cx, r = rng.integers(8, size - 8, 2).tolist() + [int(rng.integers(4, 8))]
            img = np.full((size, size, 3), 30, np.uint8)
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = colour
            name = f"class{c:02d}"
            if layout == "folders":
                (root / name).mkdir(exist_ok=True)
                Image.fromarray(img).save(root / name / f"{i}.png")
            else:
                Image.fromarray(img).save(root / f"{name}_{i}.png")
    return root
