"""The glyph oracles (sage_jax/metrics/glyph_oracles.py) on a tiny glyph dataset built from
matplotlib's bundled fonts (DejaVu Sans, Sans Mono, Serif and STIXGeneral, 4 faces each:
16 faces, 140 classes), trained for a few seconds on a few distinctive letters."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

from sage_jax.data import glyphs as G
from sage_jax.metrics import glyph_oracles as GO

LETTERS = "AHKRWЖЯЩΨΩ"      # distinctive at 32 px in every face (no pair among them looks alike)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("glyphs") / "mpl"
    G.build_glyph_dataset(str(out), [G.matplotlib_font_dir()], size=32, seed=0, held_out=0.3, processes=1,
                          progress=False)
    return str(out)


@pytest.fixture(scope="module")
def data(root):
    return GO.load_glyphs(root, classes=list(LETTERS))


@pytest.fixture(scope="module")
def oracles(data):
    train = data.subset(data.split == "train")
    return GO.train_glyph_oracles(train, key=jax.random.PRNGKey(0), steps=120, batch=32, widths=(16, 32, 64),
                                  heldout=data.subset(data.split == "heldout"), n_boot=200)


def _images(data, char, split=None):
    c = data.chars.index(char)
    m = data.labels == c
    if split is not None:
        m &= data.split == split
    return data.images[m]


# ------------------------------------------------------------------ labels

def test_attributes_are_read_from_labels_csv(root, data):
    faces = {f["face"]: f for f in json.load(open(os.path.join(root, "labels.json")))["faces"]}
    assert len(faces) == 16 and len(data) == 16 * len(LETTERS)
    assert len(data.class_names) == len(G.CLASS_CHARS) == 140 and data.chars == list(G.CLASS_CHARS)
    assert data.seen.sum() == 62 and data.seen[data.chars.index("A")] and not data.seen[data.chars.index("Ж")]
    for i in range(len(data)):
        f = faces[data.face[i]]
        assert data.attributes["weight"][i] == f["weight"] / 100
        assert data.attributes["width"][i] == f["width"]
        assert (data.attributes["italic"][i], data.attributes["monospace"][i]) == (f["italic"], f["monospace"])
        assert GO.SERIF_CATEGORIES[data.attributes["serif"][i]] == f["serif_name"]
        assert data.split[i] == f["split"] and data.family[i] == f["family"]
    at = {(str(face), data.chars[c]): i for i, (face, c) in enumerate(zip(data.face, data.labels))}
    i = at[("DejaVuSans-Bold", "Ж")]
    assert data.attributes["weight"][i] == 7.0 and data.attributes["italic"][i] == 0
    assert data.attributes["italic"][at[("DejaVuSerif-Italic", "A")]] == 1
    assert data.attributes["monospace"][at[("DejaVuSansMono", "A")]] == 1
    assert GO.SERIF_CATEGORIES[data.attributes["serif"][at[("DejaVuSerif", "A")]]] == "serif"
    # the image of a row is its PNG, white on black, in [-1, 1], gray repeated to 3 channels
    png = np.asarray(Image.open(os.path.join(root, "train", G.class_name("Ж"), "DejaVuSans-Bold.png")))
    assert data.images.shape[1:] == (32, 32, 3) and data.size == 32
    np.testing.assert_allclose(data.images[i], np.repeat((png / 127.5 - 1)[..., None], 3, -1), atol=1e-6)
    assert data.images.min() == -1.0 and data.images.max() == 1.0
    ho = GO.load_glyphs(root, split="heldout", classes=["Ж", G.class_name("A")])
    assert set(ho.split) == {"heldout"} and {ho.chars[c] for c in ho.labels} == {"Ж", "A"}


def test_shift_scale():
    x = -np.ones((2, 16, 16, 3), np.float32)
    x[:, 6:10, 6:10] = 1.0
    same = np.asarray(GO.shift_scale(jax.random.PRNGKey(0), x, 0.0, 0.0))
    np.testing.assert_allclose(same, x, atol=1e-6)
    moved = np.asarray(GO.shift_scale(jax.random.PRNGKey(0), x, 2.0, 0.1))
    assert not np.allclose(moved, x) and moved.min() >= -1.0 - 1e-6 and moved.max() <= 1.0 + 1e-6
    assert abs(moved[0].sum() - x[0].sum()) < 0.5 * (x[0] > 0).sum()   # moved and scaled a little, not lost


# ------------------------------------------------------------------ training, scores, files

def test_oracles_learn_and_round_trip(oracles, data, tmp_path):
    s = oracles.scores
    assert s["families"] == 1 and s["faces"] == 4 and s["images"] == 4 * len(LETTERS)
    acc = s["accuracy"]["overall"]
    assert acc["value"] >= 0.8 and acc["lo"] <= acc["value"] <= acc["hi"]
    assert s["accuracy"]["seen"]["value"] >= 0.7 and s["accuracy"]["unseen"]["value"] >= 0.7
    assert set(s["per_class"]) == {G.class_name(c) for c in LETTERS}     # classes with held-out images
    assert set(s["attribute_baselines"]) == set(s["attributes"]) == {
        "weight_mae", "width_mae", "italic_accuracy", "monospace_accuracy", "serif_accuracy"}
    assert oracles.meta["training"]["steps"] == 120 and oracles.meta["training"]["faces"] == 12
    train = data.subset(data.split == "train")
    assert np.mean(oracles.predict_class(train.images) == train.labels) >= 0.95
    p = oracles.predict_attributes(train.images)
    assert np.mean((p["italic"] > 0.5) == (train.attributes["italic"] == 1)) >= 0.8
    assert np.mean(np.abs(p["weight"] - train.attributes["weight"])) < 1.0     # label sd: 1.5

    oracles.save(str(tmp_path / "o"))
    back = GO.GlyphOracles.load(str(tmp_path / "o"))
    saved = json.load(open(tmp_path / "o" / "oracles.json"))
    assert saved["scores"]["accuracy"] == json.loads(json.dumps(s["accuracy"]))
    assert back.scores == json.loads(json.dumps(s)) and back.meta == json.loads(json.dumps(oracles.meta))
    x = data.images[:7]
    np.testing.assert_array_equal(back.outputs(x), oracles.outputs(x))
    np.testing.assert_array_equal(back.features(x), oracles.features(x))
    # the oracle FID's features: the last feature map averaged over its 4 x 4 positions
    f = oracles.features(x)
    assert f.shape == (7, 4 * 4 * 64) and oracles.fid_features(x).shape == (7, 64)
    np.testing.assert_allclose(oracles.fid_features(x), f.reshape(7, 4, 4, 64).mean(axis=(1, 2)), rtol=1e-6)
    assert not np.allclose(oracles.fid_features(x), f.reshape(7, 64, 16).mean(axis=2))   # channels last
    with pytest.raises(ValueError, match="glyph oracles"):
        json.dump({**saved, "kind": "other"}, open(tmp_path / "o" / "oracles.json", "w"))
        GO.GlyphOracles.load(str(tmp_path / "o"))


def test_inputs_are_read_as_gray_at_the_oracles_size(oracles, data):
    x = data.images[:5]
    out = oracles.outputs(x)
    np.testing.assert_allclose(oracles.outputs(x[..., 0]), out, atol=1e-5)     # (N, H, W)
    big = np.asarray(jax.image.resize(x, (5, 64, 64, 3), "bilinear"))
    assert np.mean(oracles.predict_class(big) == oracles.predict_class(x)) >= 0.8   # 64 px read at 32


def test_cluster_bootstrap_resamples_families():
    # 4 families, every image of a family right or every one wrong: the interval is wide;
    # the same outcomes spread evenly over the families: narrow
    fam = np.repeat(np.arange(4), 48)
    correct = np.repeat([1.0, 1.0, 0.0, 1.0], 48)[:, None]
    reps = GO._cluster_bootstrap(fam, correct, np.ones_like(correct), jax.random.PRNGKey(0), 500)[:, 0]
    assert reps.min() <= 0.5 and reps.max() == 1.0
    even = np.tile([1.0, 1.0, 0.0, 1.0], 48)[:, None]
    reps = GO._cluster_bootstrap(fam, even, np.ones_like(even), jax.random.PRNGKey(0), 500)[:, 0]
    np.testing.assert_allclose(reps, 0.75)


# ------------------------------------------------------------------ measures

def test_retention(oracles, data):
    zhe = _images(data, "Ж")
    r = oracles.retention(zhe, G.class_name("Ж"))
    assert r["value"] == 1.0 and r["lo"] < 1.0 == r["hi"]
    assert oracles.retention(zhe, data.chars.index("Ж")) == r
    other = oracles.retention(_images(data, "A"), G.class_name("Ж"))
    assert other["value"] <= 0.1
    assert oracles.retention(_images(data, "A"), G.class_name("A"))["value"] >= 0.9


def test_attribute_diversity(oracles, data):
    real = _images(data, "Ж")
    same = np.repeat(real[:1], 16, axis=0)
    d = oracles.attribute_diversity(same, real, n_boot=100)
    assert set(d) == set(GO.ATTRIBUTES) | {"overall"}
    assert all(v["value"] < 1e-3 for v in d.values())
    d = oracles.attribute_diversity(real, real, n_boot=100)
    assert all(abs(v["value"] - 1.0) < 1e-6 and v["lo"] <= 1.0 <= v["hi"] for v in d.values())
    # only the bold faces: weight varies much less than in the real set, italic as much or more
    bold = real[data.attributes["weight"][data.labels == data.chars.index("Ж")] == 7.0]
    d = oracles.attribute_diversity(bold, real, n_boot=100)
    assert d["weight"]["value"] < 0.5 < d["italic"]["value"]


def test_judge(oracles, root, data):
    letters = ["Ж", "Щ", "Ψ"]
    judge = GO.GlyphJudge.from_dataset(oracles, root, split="heldout", letters=letters)
    assert judge.letters == [G.class_name(c) for c in letters]
    real = {c: _images(data, c, "heldout") for c in letters}
    one = {c: np.repeat(x[:1], 4, axis=0) for c, x in real.items()}
    wrong = {"Ж": real["Щ"], "Щ": real["Ψ"], "Ψ": real["Ж"]}
    s = judge.evaluate(real, n_boot=100, method="copy")
    m = s["methods"]["copy"]
    for c in letters:
        pc = m["per_class"][G.class_name(c)]
        assert pc["retention"] == pc["real_retention"] == s["real"]["per_class"][G.class_name(c)]["retention"]
        assert abs(pc["diversity"] - 1.0) < 1e-6
    assert abs(m["diversity"]["value"] - 1.0) < 1e-6
    assert all(abs(a["diversity"]["value"] - 1.0) < 1e-6 for a in s["attributes"]["copy"].values())
    judge.add("one", "Ж", one["Ж"])
    for c in letters[1:]:
        judge.add("one", G.class_name(c), one[c])
    for c, x in wrong.items():
        judge.add("wrong", c, x)
    s = judge.summary(n_boot=100)
    assert s["methods"]["one"]["diversity"]["value"] < 1e-3
    assert all(a["diversity"]["value"] < 1e-3 and a["generated_std"] < 1e-3 < a["real_std"]
               for a in s["attributes"]["one"].values() if a["real_std"] > 1e-3)
    assert s["methods"]["wrong"]["retention"]["value"] <= 0.1 < s["real"]["retention"]["value"]
    assert s["letters"] == {G.class_name(c): c for c in letters}
    sub = judge.evaluate({"Ж": real["Ж"]}, n_boot=50, method="x")      # a subset of the letters
    assert list(sub["methods"]["x"]["per_class"]) == [G.class_name("Ж")]
    with pytest.raises(KeyError):
        judge.evaluate({"A": real["Ж"]}, n_boot=10)
