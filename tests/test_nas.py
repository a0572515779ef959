"""Naive Augmentation Score (metrics/nas.py) on tiny synthetic data: every variant is
returned; "generated" images that are genuinely informative (more real images of the
class) raise the accuracy over "standard", uninformative ones (noise, images of
another class) do not; same seeds, same numbers."""

import jax
import numpy as np
import pytest

from sage_jax.data import synthetic as syn
from sage_jax.metrics import nas
from sage_jax.nn.classifiers import ResNet
from sage_jax.train import classifier as tc

N_CLASSES = 5
SHOTS, EXTRA = 2, 20


@pytest.fixture(scope="module")
def data():
    # as many seen as unseen classes: pre-training and fine-tuning share one compiled step
    spec = syn.SyntheticSpec(num_seen=N_CLASSES, num_unseen=N_CLASSES, samples_per_class=50, image_size=16,
                             seed=0, oriented_fraction=0.0)
    seen = syn.generate(spec, "seen")
    pre = tc.pretrain(ResNet(N_CLASSES, widths=(8, 16, 32), blocks=(1, 1, 1)), seen["images"], seen["labels"],
                      key=jax.random.PRNGKey(0), steps=100, batch_size=16, lr=3e-3, warmup_steps=10)
    u = syn.generate(spec, "unseen")
    x, y = u["images"], u["labels"]
    by = {c: x[y == c] for c in range(N_CLASSES)}
    shots = {c: by[c][:SHOTS] for c in by}
    extra = {c: by[c][SHOTS:SHOTS + EXTRA] for c in by}     # real images = perfect "generated" ones
    test = {c: by[c][30:] for c in by}
    return pre, shots, extra, test


def _config(variants, steps=200):
    cfg = nas.default_nas_config()
    cfg.n_shots, cfg.n_generated = SHOTS, EXTRA
    cfg.variants = variants
    cfg.finetune.steps = steps
    cfg.finetune.batch_size = 16
    cfg.finetune.lr = 3e-3      # a barely pre-trained backbone: the whole network has to move
    return cfg


def _show(name, r):
    print(name, {k: (round(v["mean"], 3), round(v["std"], 3)) for k, v in r.items() if k not in ("protocol", "test_labels")})


def test_default_config_follows_the_papers():
    cfg = nas.default_nas_config()
    assert cfg.n_shots == 10 and cfg.n_generated == 100   # SAGE 4.4
    assert cfg.sgia.alpha == 0.5                          # SGIA 4.2
    assert tuple(cfg.variants) == ("standard", "augmented")


def test_informative_generated_images_beat_standard(data):
    pre, shots, extra, test = data
    r = nas.naive_augmentation_score(pre, shots, extra, test, config=_config(nas.VARIANTS), seeds=(0, 1))
    _show("real images as generated:", r)
    assert set(r) == set(nas.VARIANTS) | {"protocol", "test_labels"}
    for v in nas.VARIANTS:
        assert len(r[v]["per_seed"]) == 2 and all(0.0 <= a <= 1.0 for a in r[v]["per_seed"])
        # each seed's accuracy is the mean of its per-image correctness (kept for intervals)
        assert r[v]["correct"].shape == (2, N_CLASSES * 20)
        np.testing.assert_allclose(r[v]["correct"].mean(axis=1), r[v]["per_seed"])
        assert r[v]["std"] == pytest.approx(np.std(r[v]["per_seed"], ddof=1))
    p = r["protocol"]
    assert p["n_shots"] == SHOTS and p["n_generated"] == EXTRA and p["n_test"] == N_CLASSES * 20
    assert p["bridging_steps"] == [100, 100]
    assert r["augmented"]["mean"] > r["standard"]["mean"] + 0.03
    assert r["sgia_balanced"]["mean"] > r["standard"]["mean"]
    pytest.informative = r


def test_uninformative_generated_images_do_not_help(data):
    pre, shots, extra, test = data
    cfg = _config(("standard", "augmented"))
    noise = {c: np.asarray(jax.random.uniform(jax.random.PRNGKey(100 + c), (EXTRA, 16, 16, 3), minval=-1, maxval=1))
             for c in shots}
    wrong = {c: extra[(c + 1) % N_CLASSES] for c in shots}          # images of another class
    r_noise = nas.naive_augmentation_score(pre, shots, noise, test, config=cfg, seeds=(0,))
    r_wrong = nas.naive_augmentation_score(pre, shots, wrong, test, config=cfg, seeds=(0,))
    _show("noise as generated:", r_noise)
    _show("wrong class as generated:", r_wrong)
    assert r_noise["augmented"]["mean"] <= r_noise["standard"]["mean"]
    assert r_wrong["augmented"]["mean"] < r_wrong["standard"]["mean"] - 0.1
    # the standard variant never sees the generated images: same seeds, same numbers
    assert r_noise["standard"]["per_seed"] == r_wrong["standard"]["per_seed"]
    informative = getattr(pytest, "informative", None)
    if informative is not None:
        assert informative["standard"]["per_seed"][:1] == r_wrong["standard"]["per_seed"]


def test_pair_input_matches_dict_input_and_validation(data):
    pre, shots, extra, test = data
    cfg = _config(("standard", "sgia_balanced"), steps=4)

    def pair(d):
        return (np.concatenate([d[c] for c in sorted(d)]), np.concatenate([np.full(len(d[c]), c) for c in sorted(d)]))

    a = nas.naive_augmentation_score(pre, shots, extra, test, config=cfg, seeds=(3,))
    b = nas.naive_augmentation_score(pre, pair(shots), pair(extra), pair(test), config=cfg, seeds=(3,))
    for v in ("standard", "sgia_balanced"):
        assert a[v]["per_seed"] == b[v]["per_seed"]
        assert a[v]["std"] == 0.0
    with pytest.raises(ValueError):   # too few shots for the protocol
        nas.naive_augmentation_score(pre, {c: s[:1] for c, s in shots.items()}, extra, test, config=cfg)
    with pytest.raises(ValueError):   # classes differ
        nas.naive_augmentation_score(pre, shots, {c: extra[c] for c in range(3)}, test, config=cfg)
    bad = _config(("standard", "mixup"))
    with pytest.raises(ValueError):
        nas.naive_augmentation_score(pre, shots, extra, test, config=bad)
