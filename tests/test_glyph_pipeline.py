"""The whole pipeline on font glyphs (``sage-jax train --config glyphs``), its stage
measures on held-out typefaces, the glyph model's demo and ``sage-jax glyph-benchmark``,
on a glyph dataset made from matplotlib's bundled fonts (16 faces in 4 typefaces, half
of the typefaces held out) with every stage a few steps long: what is checked is that
every stage runs, measures on the right images and writes what users read, not the
figures (docs/glyphs.md has those)."""

from __future__ import annotations

import contextlib
import io
import json
import os

import numpy as np
import pytest

from sage_jax.cli import main
from sage_jax.data import glyphs as G

pytestmark = pytest.mark.heavy

FEW_STEPS = ["--config.data.held_out=0.5","--config.gan.steps=4", "--config.gan.eval_every=2", "--config.gan.mapping_steps=20",
             "--config.gan.ckpt_every=4", "--config.gan.sample_every=4",
             "--config.psp.steps=4", "--config.psp.latent_avg_samples=64", "--config.psp.ckpt_every=4",
             "--config.dictionary.steps=4", "--config.oracles.steps=4", "--config.oracles.batch_size=16",
             "--config.quality.samples=40", "--config.quality.heldout_per_class=1",
             "--config.statistics.samples_per_class=2", "--config.inversion.refine_steps=1"]


def _run(argv):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    return rc, buf.getvalue()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("glyphs") / "mpl"
    G.build_glyph_dataset(str(out), [G.matplotlib_font_dir()], size=32, seed=0, held_out=0.5, processes=1,
                          progress=False)
    return str(out)


@pytest.fixture(scope="module")
def trained(root, tmp_path_factory):
    work = tmp_path_factory.mktemp("run") / "glyphs"
    rc, printed = _run(["train", "--config", "glyphs", f"--config.data.root={root}", "--workdir", str(work),
                        "--quiet", *FEW_STEPS])
    assert rc == 0, printed
    return work


def test_glyph_data_of_a_dataset_is_load_glyphs(root):
    """The pipeline reads the glyphs through the loader (folder or TFDS): the same images,
    classes and attributes as the oracles' own reader of labels.csv."""
    from sage_jax.data.loader import glyph_dataset
    from sage_jax.config import load_config
    from sage_jax.metrics.glyph_oracles import glyph_data, load_glyphs

    cfg = load_config("glyphs")
    cfg.data.root = root
    cfg.data.held_out = 0.5
    for split in ("train", "heldout"):
        a = glyph_data(glyph_dataset(cfg.data, split, "all"))
        b = load_glyphs(root, split=split)
        order_a = np.lexsort((a.labels, a.face))
        order_b = np.lexsort((b.labels, b.face))
        assert a.class_names == b.class_names and a.chars == b.chars and (a.seen == b.seen).all()
        np.testing.assert_array_equal(a.images[order_a], b.images[order_b])
        np.testing.assert_array_equal(a.labels[order_a], b.labels[order_b])
        np.testing.assert_array_equal(a.family[order_a], b.family[order_b])
        for k in a.attributes:
            np.testing.assert_array_equal(a.attributes[k][order_a], b.attributes[k][order_b])


def test_every_stage_is_measured_on_held_out_typefaces(trained, root):
    q = json.load(open(trained / "quality.json"))
    g = q["generator"]
    assert g["samples"] == 40 and g["seen_classes"] == 62
    for k in ("confident_share", "real_confident_share", "tile_contrast", "real_tile_contrast", "oracle_fid"):
        assert np.isfinite(g[k]), k
    assert g["confident_share_ci"]["lo"] <= g["confident_share"] <= g["confident_share_ci"]["hi"]
    inv = q["inversion"]
    assert inv["setting"].startswith("1 refinement step")
    # one held-out face's image of every seen and every unseen letter
    assert inv["seen"]["images"] == 62 and inv["unseen"]["images"] == 78
    for split in ("seen", "unseen"):
        assert 0 <= inv[split]["retention"] <= 1 and 0 <= inv[split]["input_retention"] <= 1
    d = q["dictionary"]
    assert 0 < d["captured_share"] <= d["pca_bound"] + 1e-9 <= 1 + 1e-9
    # the learning curve: the glyph oracles' reading of random samples every eval_every steps
    curve = [json.loads(x) for x in open(trained / "gan" / "metrics.jsonl")]
    steps = [r["step"] for r in curve if "quality/confident_share" in r]
    assert steps == [2, 4]
    # the oracles were trained on the training typefaces and scored on the held-out ones
    meta = json.load(open(trained / "oracles" / "oracles.json"))
    labels = json.load(open(os.path.join(root, "labels.json")))
    train_faces = {f["face"] for f in labels["faces"] if f["split"] == "train"}
    assert meta["training"]["faces"] == len(train_faces) and meta["scores"]["faces"] == 16 - len(train_faces)


def test_model_bundles_held_out_unseen_letters_only(trained, root):
    model = trained / "model"
    assert (model / "oracles" / "oracles.json").exists()
    z = np.load(model / "heldout_unseen.npz")
    labels = json.load(open(os.path.join(root, "labels.json")))
    heldout = {f["face"] for f in labels["faces"] if f["split"] == "heldout"}
    assert set(z["face"].tolist()) <= heldout and len(set(z["face"].tolist())) == len(heldout)
    unseen = [c["name"] for c in labels["classes"] if not c["seen"]]
    assert [str(x) for x in z["class_names"]] == unseen
    assert sorted(set(z["label"].tolist())) == list(range(78))
    assert z["gray"].dtype == np.uint8 and z["gray"].shape[1:] == (32, 32)
    # the bundle is the dataset's own pixels
    from sage_jax.data.glyph_data import load_glyph_folder

    ds = load_glyph_folder(root, "heldout", "unseen")
    face_names = np.asarray([ds.faces[f]["face"] for f in ds.face_index])
    i = 5
    match = (ds.labels_array == z["label"][i]) & (face_names == z["face"][i])
    np.testing.assert_array_equal(ds.gray[match][0], z["gray"][i])


def test_glyph_demo_and_benchmark(trained, root, tmp_path):
    model = trained / "model"
    rc, printed = _run(["demo", "--model", str(model), "--out", str(tmp_path / "demo"), "--n", "4"])
    assert rc == 0, printed
    res = json.load(open(tmp_path / "demo" / "results.json"))
    assert {(r["mode"], r["shots"], r["alpha"]) for r in res["rows"]} == {
        (m, k, 1.0) for m in ("age", "sage") for k in (1, 3)}
    assert set(res["differences"]) == {"sage-1shot-alpha1 - age-1shot-alpha1", "sage-3shot-alpha1 - age-3shot-alpha1"}
    assert len(res["letters"]) == 78 and "stages" in res and "generator" in res["stages"]
    for r in res["rows"]:
        assert r["retention_ci"]["lo"] <= r["retention"] <= r["retention_ci"]["hi"]
        assert set(r["attributes"]) == {"weight", "width", "italic", "monospace", "serif"}
    for f in ("report.html", "letters.png", "sweep.png", "results.md", "shot_reconstructions.png"):
        assert (tmp_path / "demo" / f).stat().st_size > 0, f
    assert "real held-out images' retention" in printed

    # the benchmark on the dataset's every held-out face, two letters, two alphas, every mode
    out = tmp_path / "bench"
    rc, printed = _run(["glyph-benchmark", "--model", str(model), "--data", root, "--out", str(out),
                        "--alphas", "1,2", "--shots", "1", "--n", "3", "--letters", "ЖЯ", "--quiet"])
    assert rc == 0, printed
    res = json.load(open(out / "results.json"))
    assert res["letters"] == ["Ж", "Я"]
    assert len(res["rows"]) == 4 * 2 and {r["mode"] for r in res["rows"]} == {"age", "sage-q", "sage-i", "sage"}
    assert len(res["differences"]) == 3 * 2
    labels = json.load(open(os.path.join(root, "labels.json")))
    n_held = sum(f["split"] == "heldout" for f in labels["faces"])
    assert res["real_images_per_letter"] == {"cyrillic_upper_zhe": n_held - 1, "cyrillic_upper_ya": n_held - 1}
    md = open(out / "results.md").read()
    assert "| SAGE-Q | 1 |" in md and "weight" in md


def test_glyph_benchmark_refuses_bad_input(trained, tmp_path, capsys):
    model = str(trained / "model")
    assert main(["glyph-benchmark", "--model", model, "--modes", "sage,magic", "--out", str(tmp_path)]) == 2
    assert "unknown ['magic']" in capsys.readouterr().err
    assert main(["glyph-benchmark", "--model", model, "--data", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "not a glyph dataset folder" in capsys.readouterr().err
    assert main(["glyph-benchmark", "--model", "tiny", "--out", str(tmp_path)]) == 2
    assert "not a glyph model" in capsys.readouterr().err
    # more shots than the letter has held-out faces
    assert main(["glyph-benchmark", "--model", model, "--shots", "40", "--letters", "Ж", "--out", str(tmp_path)]) == 2
    assert "fewer than 42 held-out faces" in capsys.readouterr().err
