"""The synthetic ground-truth dataset (sage_jax.data.synthetic)."""

import dataclasses
import os
import time

import jax
import numpy as np
import pytest
from PIL import Image

from sage_jax.data import synthetic as S
from sage_jax.data.folders import FolderDataset
from sage_jax.images import to_uint8

SMALL = S.SyntheticSpec(num_seen=12, num_unseen=4, samples_per_class=6, seed=3)
IRRELEVANT = ("x", "y", "scale", "bg_brightness", "bg_hue", "light_x", "light_y")


@pytest.fixture(scope="module")
def seen():
    return S.generate(S.SyntheticSpec(num_seen=16, num_unseen=4, samples_per_class=30, seed=1), "seen")


def test_determinism():
    a, b = S.generate(SMALL, "seen"), S.generate(SMALL, "seen")
    for k in ("images", "labels", "factors", "factor_mask"):
        np.testing.assert_array_equal(a[k], b[k])
    assert a["class_names"] == b["class_names"]
    other = S.generate(dataclasses.replace(SMALL, seed=4), "seen")
    assert other["class_names"] != a["class_names"] or not np.array_equal(other["images"], a["images"])
    # Same classes, other seed: the images still differ.
    c1 = S.make_classes(SMALL)[0]
    x = S.render(S.sample_scene(jax.random.PRNGKey(0), [c1] * 4, np.arange(4)))
    y = S.render(S.sample_scene(jax.random.PRNGKey(1), [c1] * 4, np.arange(4)))
    assert np.abs(x - y).mean() > 0.02
    # An image depends on (seed, class, index) only: fewer samples give a prefix.
    fewer = S.generate(dataclasses.replace(SMALL, samples_per_class=2), "seen")
    keep = a["index"] < 2
    np.testing.assert_array_equal(fewer["images"], a["images"][keep])


def test_shapes_ranges_dtypes():
    d = S.generate(SMALL, "unseen")
    n = SMALL.num_unseen * SMALL.samples_per_class
    assert d["images"].shape == (n, 32, 32, 3) and d["images"].dtype == np.float32
    assert d["images"].min() >= -1.0 and d["images"].max() <= 1.0
    assert d["images"].std() > 0.2
    assert d["labels"].shape == (n,) and d["labels"].dtype == np.int32
    assert sorted(set(d["labels"].tolist())) == list(range(SMALL.num_unseen))
    assert d["factors"].shape == (n, len(S.factor_names)) and d["factors"].dtype == np.float32
    assert np.all(np.abs(d["factors"]) <= 1.0 + 1e-5)
    assert d["factor_mask"].shape == d["factors"].shape and d["factor_mask"].dtype == bool
    assert len(d["class_names"]) == SMALL.num_unseen
    classes = S.make_classes(SMALL)
    assert [classes[i].name for i in d["class_ids"]] == [d["class_names"][l] for l in d["labels"]]
    assert all(not classes[i].seen for i in d["class_ids"])
    small = S.generate(dataclasses.replace(SMALL, image_size=16, num_unseen=1, samples_per_class=2), "unseen")
    assert small["images"].shape == (2, 16, 16, 3)
    with pytest.raises(ValueError):
        S.SyntheticSpec(image_size=24)


@pytest.mark.parametrize("seed,num_seen,num_unseen", [(0, 40, 10), (1, 12, 4), (7, 85, 17), (5, 6, 3)])
def test_unseen_composition(seed, num_seen, num_unseen):
    spec = S.SyntheticSpec(num_seen=num_seen, num_unseen=num_unseen, seed=seed)
    classes = S.make_classes(spec)
    assert classes == S.make_classes(spec)
    seen = [c for c in classes if c.seen]
    unseen = [c for c in classes if not c.seen]
    assert len(seen) == num_seen and len(unseen) == num_unseen
    assert [c.index for c in classes] == list(range(len(classes)))
    assert len({c.name for c in classes}) == len(classes)
    values = {}
    for c in seen:
        for k, v in c.factors.items():
            values.setdefault(k, set()).add(v)
    if sum(c.family == "free" for c in seen) >= len(S.FREE_SHAPES):
        assert values["shape"] >= set(S.FREE_SHAPES)  # seen classes cover every free shape
    if num_seen >= len(S.PALETTE_NAMES):
        assert values["palette"] == set(S.PALETTE_NAMES) and values["texture"] == set(S.TEXTURES)
    seen_factors = [c.factors for c in seen]
    for c in unseen:
        assert c.factors not in seen_factors  # a new combination ...
        for k, v in c.factors.items():        # ... of values seen classes use
            assert v in values[k], (c.name, k, v)
        # a genuinely similar seen class: differs in exactly one factor
        assert any(sum(c.factors[k] != s.factors.get(k) for k in c.factors) == 1 for s in seen), c.name
        if c.family == "oriented":  # a seen sibling differs only by its orientation
            assert any(s.family == "oriented" and (s.shape, s.palette, s.texture) == (c.shape, c.palette, c.texture)
                       for s in seen), c.name
    assert any(c.family == "oriented" for c in unseen) and any(c.family == "oriented" for c in seen)
    # the in-code check fails on a split that breaks the property
    bad = list(classes)
    i = next(j for j, c in enumerate(bad) if not c.seen and c.family == "free")
    bad[i] = dataclasses.replace(bad[i], palette="nope", name="circle-nope-solid")
    with pytest.raises(AssertionError):
        S.check_split(bad)


def test_long_tail_counts():
    profile = S.long_tail_counts(20, 100, 10.0)
    assert profile[0] == 100 and profile[-1] == 10
    assert np.all(np.diff(profile) <= 0)
    r = np.log(profile[:-1] / profile[1:])  # exponential: constant log-ratio between neighbours
    assert np.allclose(r, np.log(10) / 19, atol=0.06)
    spec = S.SyntheticSpec(num_seen=20, num_unseen=4, samples_per_class=60, imbalance_ratio=10.0)
    counts = S.class_counts(spec, "seen")
    assert counts.max() == 60 and counts.min() == 6
    np.testing.assert_array_equal(np.sort(counts)[::-1], S.long_tail_counts(20, 60, 10.0))
    assert not np.all(np.diff(counts) <= 0)  # head classes are drawn, not the first names
    np.testing.assert_array_equal(S.class_counts(spec, "unseen"), [60] * 4)
    d = S.generate(spec, "seen")
    np.testing.assert_array_equal(np.bincount(d["labels"], minlength=20), counts)
    uniform = S.class_counts(dataclasses.replace(spec, imbalance_ratio=1.0), "seen")
    np.testing.assert_array_equal(uniform, [60] * 20)


def test_factors_vary_within_class_relevant_constant(seen):
    names = list(S.FACTOR_NAMES)
    classes = {c.name: c for c in S.make_classes(S.SyntheticSpec(num_seen=16, num_unseen=4, seed=1))}
    n_oriented = n_free_rot = 0
    for label, name in enumerate(seen["class_names"]):
        m = seen["labels"] == label
        f, sc, imgs = seen["factors"][m], {k: v[m] for k, v in seen["scene"].items()}, seen["images"][m]
        for k in IRRELEVANT:  # shared irrelevant factors vary in every class
            assert f[:, names.index(k)].std() > 0.2, (name, k)
        for k in ("shape", "palette", "texture"):  # relevant factors are constant
            assert len(set(sc[k].tolist())) == 1, (name, k)
        assert np.abs(imgs - imgs.mean(0)).mean() > 0.05
        cls = classes[name]
        rot = f[:, [names.index("rot_sin"), names.index("rot_cos")]]
        if cls.family == "oriented":  # the special factor: fixed by the class
            n_oriented += 1
            assert np.ptp(sc["rotation"]) == 0 and np.ptp(rot, axis=0).max() == 0
            assert np.isclose(sc["rotation"][0], np.deg2rad(cls.orientation))
            assert not seen["factor_mask"][m][:, 3:5].any()
        else:  # ... and irrelevant elsewhere
            assert sc["rotation"].std() > 1.0, name
            if cls.rotation_order > 0:
                n_free_rot += 1
                assert rot.std(0).min() > 0.3, name
                assert seen["factor_mask"][m][:, 3:5].all()
            else:
                assert np.all(rot == 0) and not seen["factor_mask"][m][:, 3:5].any()
    assert n_oriented >= 2 and n_free_rot >= 5


def test_editing_rotation_changes_oriented_class_only():
    spec = S.SyntheticSpec(num_seen=40, num_unseen=10, seed=0)
    classes = S.make_classes(spec)
    arrow = next(c for c in classes if c.family == "oriented" and c.orientation == 0)
    twin = dataclasses.replace(arrow, orientation=90, name=arrow.name[:-2] + "r90")
    scene = S.sample_scene(jax.random.PRNGKey(0), [arrow] * 3, np.arange(3))
    f, _ = S.encode_factors(scene, [arrow] * 3)
    np.testing.assert_allclose(S.render([arrow] * 3, f), S.render(scene), atol=1e-4)  # decode round trip
    edited = f.copy()
    edited[:, 3], edited[:, 4] = 1.0, 0.0  # rotation -> 90 degrees
    turned = S.render([arrow] * 3, edited)
    assert np.abs(turned - S.render(scene)).mean() > 0.02  # the arrow left its class ...
    np.testing.assert_allclose(turned, S.render([twin] * 3, edited), atol=1e-5)  # ... for its sibling
    # on a free class with k-fold symmetry, turning by 2 pi / k changes nothing
    sq = next(c for c in classes if c.family == "free" and c.rotation_order >= 2)
    sc = S.sample_scene(jax.random.PRNGKey(1), [sq] * 3, np.arange(3))
    sc2 = dict(sc, rotation=sc["rotation"] + 2 * np.pi / sq.rotation_order)
    np.testing.assert_allclose(S.render(sc), S.render(sc2), atol=0.02)
    np.testing.assert_allclose(S.encode_factors(sc, [sq] * 3)[0], S.encode_factors(sc2, [sq] * 3)[0], atol=1e-5)


def test_sample_class():
    classes = S.make_classes(SMALL)
    j = next(c.index for c in classes if not c.seen)
    a = S.sample_class(SMALL, j, 5, 11)
    b = S.sample_class(SMALL, j, 5, jax.random.PRNGKey(11))
    np.testing.assert_array_equal(a["images"], b["images"])
    assert a["images"].shape == (5, 32, 32, 3) and np.all(a["labels"] == j)
    c = S.sample_class(SMALL, j, 5, 12)
    assert np.abs(a["images"] - c["images"]).mean() > 0.02
    gen = S.generate(SMALL, "unseen")
    first = gen["images"][gen["class_ids"] == j][:5]
    assert np.abs(a["images"] - first).mean() > 0.02  # a stream disjoint from generate's


def test_write_folder(tmp_path):
    spec = dataclasses.replace(SMALL, samples_per_class=3)
    paths = S.write_folder(spec, str(tmp_path), "unseen")
    d = S.generate(spec, "unseen")
    assert sorted(os.listdir(tmp_path)) == sorted(d["class_names"] + ["factors.npz"])
    assert len(paths) == len(d["images"])
    for p, img, label, i in zip(paths, d["images"], d["labels"], d["index"]):
        assert p == os.path.join(str(tmp_path), d["class_names"][label], f"{i:05d}.png")
        with Image.open(p) as im:
            assert im.mode == "RGB" and im.size == (32, 32)
            np.testing.assert_array_equal(np.asarray(im), to_uint8(img))
    ds = FolderDataset.from_folder(str(tmp_path), 32)
    assert ds.class_names == d["class_names"]
    np.testing.assert_array_equal(ds.labels, d["labels"])
    meta = np.load(tmp_path / "factors.npz")
    np.testing.assert_array_equal(meta["factors"], d["factors"])


def _features(images):
    """Untrained features: a colour histogram of the saturated (object) pixels and the
    translation-invariant amplitude spectrum of the object mask (backgrounds are grey)."""
    x = (images + 1) / 2
    obj = (x.max(-1) - x.min(-1) > 0.35).astype(np.float32)
    q = np.clip((x * 6).astype(int), 0, 5)
    code = (q[..., 0] * 6 + q[..., 1]) * 6 + q[..., 2]
    hist = np.stack([np.bincount(c.ravel(), weights=w.ravel(), minlength=216) for c, w in zip(code, obj)])
    hist /= hist.sum(1, keepdims=True) + 1e-6
    amp = np.abs(np.fft.fft2(obj - obj.mean((1, 2), keepdims=True)))[:, :8, :8].reshape(len(x), -1)
    amp /= np.linalg.norm(amp, axis=1, keepdims=True) + 1e-6
    return np.concatenate([np.sqrt(hist), amp], 1)


def test_classes_are_distinguishable(seen):
    feats = _features(seen["images"])
    train, test = seen["index"] < 20, seen["index"] >= 20
    n_cls = len(seen["class_names"])
    means = np.stack([feats[train & (seen["labels"] == c)].mean(0) for c in range(n_cls)])
    dist = ((feats[test][:, None] - means[None]) ** 2).sum(-1)
    acc = (dist.argmin(1) == seen["labels"][test]).mean()
    print(f"nearest-class-mean accuracy {acc:.2f} (chance {1 / n_cls:.2f})")
    assert acc > 0.6 and acc > 8.0 / n_cls


def test_speed():
    spec = S.SyntheticSpec(num_seen=40, num_unseen=10, samples_per_class=100, seed=0)
    S.generate(dataclasses.replace(spec, num_seen=2, num_unseen=1, samples_per_class=1))  # compile
    t = time.perf_counter()
    d = S.generate(spec, "seen")
    dt = time.perf_counter() - t
    print(f"synthetic: {len(d['images'])} images at 32 px in {dt:.2f} s = {len(d['images']) / dt:.0f} images/s")
    assert len(d["images"]) == 4000
