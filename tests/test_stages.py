"""Stage measures (sage_jax.metrics.stages) with the shipped model's oracles: real images
score as real, images without the data's shapes do not, and a reconstruction that
loses the class is caught."""

import os

import jax
import numpy as np
import pytest

from sage_jax.data.synthetic import SyntheticSpec, generate, make_classes
from sage_jax.demo import ASSET_DIR
from sage_jax.metrics import stages
from sage_jax.metrics.oracles import Oracles


@pytest.fixture(scope="module")
def oracles():
    return Oracles.load(os.path.join(ASSET_DIR, "oracles"))


@pytest.fixture(scope="module")
def seen():
    return [c for c in make_classes(SyntheticSpec()) if c.seen]


def test_real_images_are_confident_and_cover_the_seen_classes(oracles, seen):
    imgs, idx = stages.heldout_images(SyntheticSpec(), seen, 5)
    real, _ = stages.heldout_images(SyntheticSpec(), seen, 5, seed=7)
    q = stages.sample_quality(oracles, imgs, [c.name for c in seen], real_seen=real)
    assert q["samples"] == 200 and q["seen_classes"] == 40
    assert q["confident_share"] > 0.9 and q["seen_classes_hit"] >= 39
    assert q["confident_unseen_share"] < 0.05
    assert q["oracle_fid"] < 20.0
    # 95% intervals: exact binomial for the share, bootstrap for the FID; both hold the value
    for k in ("confident_share", "oracle_fid"):
        assert q[f"{k}_ci"]["lo"] <= q[k] <= q[f"{k}_ci"]["hi"]
    # a learning curve's point: the same figures, numbers only (metrics.jsonl takes floats)
    p = stages.sample_quality(oracles, imgs, [c.name for c in seen], real_seen=real, intervals=False)
    assert all(isinstance(v, (int, float)) for v in p.values())
    assert p["oracle_fid"] == q["oracle_fid"] and p["confident_share"] == q["confident_share"]
    assert np.isfinite(p["tile_contrast"]) and np.isfinite(p["real_tile_contrast"])
    # images no larger than the tile grid (8 px): no tile contrast rather than a NaN, which
    # would stop a training run that logs the learning curve (metrics.jsonl refuses NaN)
    small = np.asarray(jax.image.resize(imgs, (len(imgs), 8, 8, 3), "linear"))
    p = stages.sample_quality(oracles, small, [c.name for c in seen], real_seen=small, size=32, intervals=False)
    assert "tile_contrast" not in p and "real_tile_contrast" not in p and np.isfinite(p["oracle_fid"])


def test_shapeless_images_are_not_confident(oracles, seen):
    # real images blurred to 4 x 4: right colours and positions, no shapes. The oracle is
    # still confident on 41% of them (it never saw a blurred image), but confidently
    # wrong: they hit only 13 of the 40 classes, and their features are far from real ones
    imgs, _ = stages.heldout_images(SyntheticSpec(), seen, 5)
    names = [c.name for c in seen]
    blurred = np.asarray(jax.image.resize(jax.image.resize(imgs, (len(imgs), 4, 4, 3), "linear"), imgs.shape, "linear"))
    q = stages.sample_quality(oracles, blurred, names, real_seen=imgs)
    assert q["seen_classes_hit"] <= 20 and q["oracle_fid"] > 45.0
    noise = np.asarray(jax.random.uniform(jax.random.PRNGKey(0), imgs.shape, minval=-1, maxval=1))
    q = stages.sample_quality(oracles, noise, names, real_seen=imgs)
    assert q["seen_classes_hit"] <= 10 and q["oracle_fid"] > 100.0


def test_inversion_quality_sees_a_reconstruction_that_loses_the_class(oracles, seen):
    imgs, idx = stages.heldout_images(SyntheticSpec(), seen[:10], 4)
    names = [make_classes(SyntheticSpec())[i].name for i in idx]
    exact = stages.inversion_quality(lambda x: x, oracles, imgs, names)
    assert exact["retention"] > 0.95 and exact["mse"] == 0.0 and exact["input_retention"] == exact["retention"]
    shifted = stages.inversion_quality(lambda x: np.roll(np.asarray(x), 4, axis=0), oracles, imgs, names)
    assert shifted["retention"] < 0.2 and shifted["mse"] > 0.05


def test_heldout_images_are_fresh_draws(seen):
    imgs, idx = stages.heldout_images(SyntheticSpec(), seen[:2], 3)
    train = generate(SyntheticSpec(), "seen")["images"]
    assert imgs.shape == (6, 32, 32, 3) and list(idx) == [seen[0].index] * 3 + [seen[1].index] * 3
    # no held-out image is an image of the training set
    d = np.abs(imgs[:, None] - train[None, :400]).reshape(6, 400, -1).max(-1)
    assert d.min() > 0.05
    again, _ = stages.heldout_images(SyntheticSpec(), seen[:2], 3)
    np.testing.assert_array_equal(imgs, again)


def test_label_agreement_reads_which_class_each_sample_was_asked_for(oracles, seen):
    """A class-conditional generator's samples: the share the oracle reads as the class
    asked for. Real images with their own labels agree; the same images with the labels
    shifted by one class do not, though every other figure stays the same."""
    imgs, _ = stages.heldout_images(SyntheticSpec(), seen, 5)
    # the seen classes in another order than the oracle's: a label is an index into
    # seen_names, not into the oracle's classes
    names = [c.name for c in seen][::-1]
    asked = np.asarray([names.index(c.name) for c in seen]).repeat(5)
    right = stages.sample_quality(oracles, imgs, names, labels=asked)
    wrong = stages.sample_quality(oracles, imgs, names, labels=(asked + 1) % len(names))
    assert right["label_agreement"] > 0.9 and wrong["label_agreement"] < 0.05
    assert right["label_agreement_ci"]["lo"] <= right["label_agreement"] <= right["label_agreement_ci"]["hi"]
    assert right["confident_share"] == wrong["confident_share"]
    assert "label_agreement" not in stages.sample_quality(oracles, imgs, names, intervals=False)
    with pytest.raises(ValueError, match="seen classes"):
        stages.sample_quality(oracles, imgs, names, labels=asked[:-1])


def test_generator_quality_of_a_class_conditional_generator_has_label_agreement(oracles, seen):
    """generator_quality asks a conditional G for random seen classes and scores the
    agreement; an unconditional G has none. Tiny random generators: the figure exists and
    is a share, whatever its value."""
    from sage_jax.models import init_generator

    names = [c.name for c in seen]
    for c_dim, has in ((len(names), True), (0, False), (3, False)):   # 3: not the seen classes
        G = init_generator(dict(size=8, style_dim=8, n_mlp=1, channels=((4, 8), (8, 8)), c_dim=c_dim),
                           jax.random.PRNGKey(0))
        q = stages.generator_quality(G, oracles, names, jax.random.PRNGKey(1), n=12, size=32, intervals=False)
        assert ("label_agreement" in q) == has
        if has:
            assert 0.0 <= q["label_agreement"] <= 1.0
