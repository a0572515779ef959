import os

import jax
import numpy as np

from fixture_utils import ROOT, fixture
from sage_jax import checkpoints
from sage_jax.config import apply_overrides, load_config
from sage_jax.models import init_discriminator, init_generator


def _shapes(tree):
    return jax.tree_util.tree_map(lambda a: tuple(np.shape(a)), tree)


# The reference's tiny checkpoints (``Generator(32, 64, 2)``, channels {4: 32, 8: 32, 16: 16,
# 32: 16}): configs/tiny.py with these overrides (its own generator is wider, with 8 mapping layers)
REFERENCE_TINY = ["model.generator.channels=((4, 32), (8, 32), (16, 16), (32, 16))", "model.generator.n_mlp=2"]


def test_tiny_config_with_the_reference_overrides_is_the_architecture_of_the_tiny_checkpoints():
    cfg = apply_overrides(load_config(os.path.join(ROOT, "configs", "tiny.py")), REFERENCE_TINY)
    G = init_generator(cfg.model.generator, jax.random.PRNGKey(cfg.seed))
    D = init_discriminator(cfg.model.discriminator, jax.random.PRNGKey(1))
    ckpt = checkpoints.read_torch(fixture("tiny_rosinality_ckpt.pt"))
    G_ref = checkpoints.load_generator(ckpt["g_ema"])
    D_ref = checkpoints.load_discriminator(ckpt["d"])
    assert _shapes(G.variables) == _shapes(G_ref.variables)
    assert _shapes(D.variables) == _shapes(D_ref.variables)
    img = G(np.zeros((2, 64), np.float32))
    assert img.shape == (2, 32, 32, 3) and np.isfinite(np.asarray(img)).all()
    assert D(img).shape == (2, 1)


def test_init_is_a_function_of_the_key():
    cfg = load_config(os.path.join(ROOT, "configs", "tiny.py"))
    a = init_generator(cfg.model.generator, jax.random.PRNGKey(0))
    b = init_generator(cfg.model.generator, jax.random.PRNGKey(0))
    c = init_generator(cfg.model.generator, jax.random.PRNGKey(1))
    la, lb, lc = (jax.tree_util.tree_leaves(m.variables) for m in (a, b, c))
    assert all(np.array_equal(x, y) for x, y in zip(la, lb))
    assert not all(np.array_equal(x, y) for x, y in zip(la, lc))


def test_tiny_dictionary_section_fits_the_trainer():
    from sage_jax.train.dictionary import default_config

    cfg = load_config(os.path.join(ROOT, "configs", "tiny.py"))
    base = default_config()
    assert set(cfg.dictionary.keys()) == set(base.keys())
    base.update(cfg.dictionary)  # what `train-dictionary --config configs/tiny.py` does
    assert base.a_length == 8 and tuple(map(tuple, base.groups)) == ((0, 1, 2), (3, 4, 5), (6, 7))
    assert base.init == "pca"
