"""generate, invert and sample pointed at a model directory from `sage-jax train`
(psp/, dictionary/, class_stats.npz, config.json), as `demo --model` is."""

import json
import os

import numpy as np
import pytest

from sage_jax import checkpoints
from sage_jax.cli import main
from tiny_models import make_class_folders, tiny_psp_file


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A model directory laid out as the pipeline's _bundle writes it, from the tiny test models."""
    root = tmp_path_factory.mktemp("modeldir")
    tiny_psp_file(root / "psp.pt")
    model = root / "model"
    model.mkdir()
    checkpoints.save_psp(str(model / "psp"), checkpoints.load_psp(root / "psp.pt"))
    checkpoints.save_model(str(model / "dictionary"), checkpoints.load_dictionary(root / "psp.pt"))
    (model / "config.json").write_text("{}")
    make_class_folders(root / "seen", n_classes=4, per_class=3)
    make_class_folders(root / "unseen", n_classes=2, per_class=2, seed=5)
    assert main(["embed", "--checkpoint", str(model / "psp"), "--dictionary", str(model / "dictionary"),
                 "--data", str(root / "seen"), "--out", str(model / "class_stats.npz"), "--quiet"]) == 0
    return root, model


def test_generate_from_a_model_directory(model_dir, tmp_path):
    root, model = model_dir
    common = ["--shots", str(root / "unseen"), "--n", "3", "--t-c", "2", "--t-a", "4", "--save-codes", "--quiet"]
    assert main(["generate", "--model", str(model), "--out", str(tmp_path / "a"), *common]) == 0
    meta = json.load(open(tmp_path / "a" / "generation.json"))
    assert meta["checkpoint"] == str(model / "psp") and meta["stats"] == str(model / "class_stats.npz")
    # --checkpoint MODELDIR is the same, and so are the parts named one by one
    assert main(["generate", "--checkpoint", str(model), "--out", str(tmp_path / "b"), *common]) == 0
    assert main(["generate", "--checkpoint", str(model / "psp"), "--dictionary", str(model / "dictionary"),
                 "--stats", str(model / "class_stats.npz"), "--out", str(tmp_path / "c"), *common]) == 0
    a = np.load(tmp_path / "a" / "codes.npy")
    assert a.shape == (2, 3, 18, 64)
    np.testing.assert_array_equal(a, np.load(tmp_path / "b" / "codes.npy"))
    np.testing.assert_array_equal(a, np.load(tmp_path / "c" / "codes.npy"))
    # an explicit flag wins over the model directory's file
    other = tmp_path / "other.npz"
    assert main(["embed", "--checkpoint", str(model), "--data", str(root / "seen"), "--out", str(other),
                 "--refine-steps", "1", "--quiet"]) == 0
    assert main(["generate", "--model", str(model), "--stats", str(other), "--out", str(tmp_path / "d"),
                 *common]) == 0
    assert json.load(open(tmp_path / "d" / "generation.json"))["stats"] == str(other)


def test_generate_takes_t_a_and_t_b_from_the_model_config(model_dir, tmp_path, capsys):
    """generation.t_A / t_B of the model's config.json are generate --model's defaults;
    without them the paper's 50 is capped at A's length with a note that adaptive editing
    is then off; an explicit flag wins."""
    import shutil

    root, model = model_dir
    mine = tmp_path / "model"
    shutil.copytree(model, mine)
    l = checkpoints.load_dictionary(str(mine / "dictionary")).a_length
    assert l > 2
    common = ["--shots", str(root / "unseen"), "--n", "2", "--t-c", "2", "--quiet"]

    def options(out, *extra):
        assert main(["generate", "--model", str(mine), "--out", str(tmp_path / out), *common, *extra]) == 0
        return json.load(open(tmp_path / out / "generation.json"))["options"]

    (mine / "config.json").write_text(json.dumps({"generation": {"t_A": 2, "t_B": 3}}))
    capsys.readouterr()
    o = options("a")
    assert o["t_A"] == 2 and o["t_B"] == [3] and o["retrieval_t_B"] == 3
    assert "adaptive editing is off" not in capsys.readouterr().out
    assert options("b", "--t-a", "1")["t_A"] == 1
    (mine / "config.json").write_text("{}")
    assert options("c")["t_A"] == l
    assert f"adaptive editing is off (the paper keeps 50 of 100: try --t-a {l // 2})" in capsys.readouterr().out


def test_invert_and_sample_from_a_model_directory(model_dir, tmp_path):
    root, model = model_dir
    inv = ["invert", "--images", str(root / "unseen"), "--no-recon", "--quiet"]
    assert main(inv + ["--checkpoint", str(model), "--out", str(tmp_path / "i1")]) == 0
    assert main(inv + ["--checkpoint", str(model / "psp"), "--out", str(tmp_path / "i2")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "i1" / "codes.npy"), np.load(tmp_path / "i2" / "codes.npy"))
    smp = ["sample", "--seeds", "0-1", "--quiet"]
    from sage_jax.checkpoints import psp_part

    for i, src in enumerate((model, model / "psp", psp_part(model / "psp", "decoder"))):
        assert main(smp + ["--checkpoint", str(src), "--out", str(tmp_path / f"s{i}"),
                           "--save-array", str(tmp_path / f"s{i}.npy")]) == 0
    ref = np.load(tmp_path / "s2.npy")
    assert ref.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(np.load(tmp_path / "s0.npy"), ref)
    np.testing.assert_array_equal(np.load(tmp_path / "s1.npy"), ref)


def test_a_directory_that_is_neither_is_a_clear_error(model_dir, tmp_path, capsys):
    root, model = model_dir
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["generate", "--model", str(empty), "--shots", str(root / "unseen"), "--out", str(tmp_path / "o")]) == 2
    assert "is not a model directory from 'sage-jax train'" in capsys.readouterr().err
    assert main(["generate", "--checkpoint", str(empty), "--stats", str(model / "class_stats.npz"),
                 "--shots", str(root / "unseen"), "--out", str(tmp_path / "o")]) == 2
    assert "neither a pSp directory" in capsys.readouterr().err
    assert main(["generate", "--shots", str(root / "unseen"), "--out", str(tmp_path / "o")]) == 2
    assert "or --model DIR" in capsys.readouterr().err
    assert main(["invert", "--checkpoint", str(empty), "--images", str(root / "unseen"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "neither a pSp directory" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "neither a generator directory" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o")


def test_model_flag_of_invert_embed_and_sample(model_dir, tmp_path, capsys):
    """--model DIR in invert, embed and sample: the same networks as --checkpoint DIR,
    embed takes the model's dictionary too (the model's statistics again, bit for bit),
    and invert says the inversion setting is the model's."""
    root, model = model_dir
    inv = ["invert", "--images", str(root / "unseen"), "--no-recon", "--quiet"]
    assert main(inv + ["--model", str(model), "--out", str(tmp_path / "i1")]) == 0
    assert "inversion: the encoder's codes (no refinement) (the model's setting" in capsys.readouterr().out
    assert main(inv + ["--checkpoint", str(model), "--out", str(tmp_path / "i2")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "i1" / "codes.npy"), np.load(tmp_path / "i2" / "codes.npy"))
    assert (tmp_path / "i1" / "skipped.txt").read_text() == ""   # always written
    assert main(["embed", "--model", str(model), "--data", str(root / "seen"), "--out", str(tmp_path / "s.npz"),
                 "--quiet"]) == 0
    assert "wrote class embeddings of 4 classes and back-projected code statistics" in capsys.readouterr().out
    with np.load(tmp_path / "s.npz", allow_pickle=True) as a, np.load(model / "class_stats.npz",
                                                                      allow_pickle=True) as b:
        for k in ("embeddings", "counts", "n_m2"):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    smp = ["sample", "--seeds", "0-1", "--quiet"]
    assert main(smp + ["--model", str(model), "--out", str(tmp_path / "a"), "--save-array", str(tmp_path / "a.npy")]) == 0
    assert main(smp + ["--checkpoint", str(model), "--out", str(tmp_path / "b"),
                       "--save-array", str(tmp_path / "b.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
