"""The method commands as a newcomer meets them: the shipped model by name from any
folder, the model's own inversion setting, class names, and the messages for the
mistakes a new user makes (each with exit status 2, no traceback, what was wrong and
what to do). Cheap: most fail before any JAX compile; the rest use the shipped tiny
model at a few images."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fixture_utils import ROOT
from sage_jax.assets import ASSET_DIR
from sage_jax.cli import main


def _run(cwd, *args):
    """``sage-jax ARGS`` as a user runs it, from ``cwd``: (exit status, stdout, stderr)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "sage_jax.cli", *map(str, args)], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=600)
    return r.returncode, r.stdout, r.stderr


def _refused(result, *words):
    status, out, err = result
    assert status == 2, (status, out, err)
    assert "Traceback" not in err and "Traceback" not in out, err
    for w in words:
        assert w in err, f"{w!r} not in {err!r}"
    return err


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    """One unseen synthetic class (the tiny model's data), one image: shots/<class>/0.png."""
    from sage_jax.data.synthetic import SyntheticSpec, make_classes, sample_class
    from sage_jax.images import to_uint8

    root = tmp_path_factory.mktemp("shots")
    spec = SyntheticSpec(num_seen=40, num_unseen=10)
    cls = next(c for c in make_classes(spec) if not c.seen)
    img = to_uint8(sample_class(spec, cls.index, 2, 0)["images"])
    (root / "shots" / cls.name).mkdir(parents=True)
    Image.fromarray(img[0]).save(root / "shots" / cls.name / "0.png")
    Image.fromarray(img[1]).save(root / "one.png")
    return root


# ----------------------------------------------------------------------------- the messages
def test_shots_given_a_file_says_it_must_be_a_folder_and_how_to_make_one(shots, tmp_path):
    err = _refused(_run(tmp_path, "generate", "--model", "tiny", "--shots", shots / "one.png", "--out", "g"),
                   "--shots", "one.png is a file", "folder of images (one class)", "folder of class folders",
                   "mkdir -p images/one && cp")
    assert "does not exist" not in err
    assert not (tmp_path / "g").exists()


def test_an_empty_shots_folder_says_it_has_no_images_and_which_files_are_read(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    err = _refused(_run(tmp_path, "generate", "--model", "tiny", "--shots", "empty", "--out", "g"),
                   "--shots empty has no images", ".png", ".jpg", "folder of class folders")
    assert "readable image" not in err   # not a class named after the folder
    assert not (tmp_path / "g").exists()


@pytest.mark.parametrize("command", [["generate", "--stats", "s.npz", "--shots", "s"],
                                     ["invert", "--images", "s"], ["sample"]])
def test_a_text_file_as_checkpoint_is_not_a_pytorch_checkpoint(tmp_path, command):
    (tmp_path / "model.pt").write_text("hello\nworld\n")
    (tmp_path / "s").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "s" / "a.png")
    err = _refused(_run(tmp_path, *command, "--checkpoint", "model.pt", "--out", "o"),
                   "model.pt: not a PyTorch checkpoint", "torch.save", "give a .pt/.pth file")
    # the reader's detail stays, at the tail
    assert "reading it as a pickle failed: " in err.strip().splitlines()[-1]
    assert not (tmp_path / "o").exists()


def test_a_misspelt_option_names_the_subcommands_closest():
    from io import StringIO
    from contextlib import redirect_stderr

    for argv, want in ((["generate", "--kshot", "1"], "unknown option --kshot; did you mean --k-shot?"),
                       (["invert", "--imagse", "x"], "unknown option --imagse; did you mean --images?"),
                       (["sample", "--class_label", "3"], "unknown option --class_label; did you mean --class-label?"),
                       (["generate", "--model", "tiny", "--shots", "s", "--out", "o", "--refine-stpes=2"],
                        "unknown option --refine-stpes; did you mean --refine-steps?")):
        err = StringIO()
        with redirect_stderr(err):
            assert main(argv) == 2
        text = err.getvalue()
        assert text.startswith(f"sage-jax {argv[0]}: error: {want}"), text
        assert f"'sage-jax {argv[0]} --help'" in text and "usage: sage-jax [-h]" not in text
    # as a user runs it: exit status 2, no traceback
    _refused(_run(ROOT, "generate", "--kshot", "1"), "did you mean --k-shot?")


def test_k_shot_is_the_long_name_of_k():
    from sage_jax.cli import build_parser

    args = build_parser().parse_args(["generate", "--model", "tiny", "--shots", "s", "--out", "o", "--k-shot", "3"])
    assert args.k == 3


def test_an_unknown_model_name_says_what_is_accepted(tmp_path, capsys):
    for argv in (["generate", "--model", "tni", "--shots", ".", "--out", "o"],
                 ["invert", "--model", "tni", "--images", ".", "--out", "o"],
                 ["sample", "--model", "tni", "--out", "o"],
                 ["demo", "--model", "tni", "--out", "o"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "--model tni does not exist, and is not the name of a shipped model (did you mean tiny?)" in err
        assert "give 'tiny' or 'glyphs' (the models shipped with sage-jax) or the path of a model directory" in err
    assert main(["invert", "--images", ".", "--out", str(tmp_path / "o")]) == 2
    assert "give --model tiny (the model shipped with sage-jax) or --model DIR" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- the shipped model by name
def test_generate_with_the_shipped_model_from_any_folder_writes_skipped_txt(shots, tmp_path):
    """--model tiny from a folder that is not the repository; skipped.txt is always
    written (empty when every shot was read, else path, kind, reason); --quiet still
    says where the images went; the inversion line says it is the model's setting."""
    status, out, err = _run(tmp_path, "generate", "--model", "tiny", "--shots", shots / "shots", "--n", "2",
                            "--out", "g", "--quiet")
    assert status == 0, err
    assert "inversion: 25 refinement steps at lr 0.06 on MSE (the setting the model's class statistics were " \
           "made with" in out
    assert "wrote 2 sage images for each of 1 classes to g" in out
    assert (tmp_path / "g" / "skipped.txt").read_text() == ""
    meta = json.load(open(tmp_path / "g" / "generation.json"))
    assert meta["checkpoint"] == os.path.join(ASSET_DIR, "psp")
    assert meta["options"]["t_B"] == [40] and meta["options"]["t_A"] == 4   # the model config's, capped alike
    # a shot that cannot be read is listed
    bad = tmp_path / "bad"
    (bad / "cls").mkdir(parents=True)
    Image.open(next((shots / "shots").rglob("*.png"))).save(bad / "cls" / "1.png")
    (bad / "cls" / "0.png").write_bytes(b"not a png")
    assert main(["generate", "--model", "tiny", "--shots", str(bad), "--n", "1", "--out", str(tmp_path / "h"),
                 "--quiet"]) == 0
    lines = (tmp_path / "h" / "skipped.txt").read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith(str(bad / "cls" / "0.png") + "\t")


def test_invert_with_the_model_uses_its_inversion_setting(shots, tmp_path, capsys):
    """invert --model tiny refines as the model's statistics were made (25 steps at lr
    0.06), which reconstructs the shot better than the encoder alone; --refine-steps 0
    is the encoder alone; --checkpoint tiny is the encoder alone, with a note."""
    images = str(shots / "shots")

    def invert(out, *extra):
        assert main(["invert", "--images", images, "--out", str(tmp_path / out), "--quiet", *extra]) == 0
        printed = capsys.readouterr().out
        recon = np.asarray(Image.open(next((tmp_path / out / "recon").glob("*.png"))), np.float64)
        w = recon.shape[1] // 2
        return printed, json.load(open(tmp_path / out / "inversion.json")), np.mean((recon[:, :w] - recon[:, w:]) ** 2)

    printed, setting, refined = invert("m", "--model", "tiny")
    assert setting == {"refine_steps": 25, "refine_lr": 0.06, "lpips": False}
    assert "inversion: 25 refinement steps at lr 0.06 on MSE (the model's setting; --refine-steps 0 for the " \
           "encoder alone)" in printed
    assert f"to {tmp_path / 'm'}" in printed   # --quiet still says where
    printed, setting, encoder = invert("e", "--model", "tiny", "--refine-steps", "0")
    assert setting["refine_steps"] == 0 and "(as the flags ask; the model's setting is 25 refinement" in printed
    assert refined < 0.5 * encoder, (refined, encoder)
    printed, setting, _ = invert("c", "--checkpoint", "tiny")
    assert setting["refine_steps"] == 0
    assert "this model's statistics were made with 25 refinement steps at lr 0.06 on MSE: --model uses that" in printed


# ----------------------------------------------------------------------------- class names
def test_sample_takes_a_class_name_and_says_which_class_a_label_is(tmp_path, capsys):
    from sage_jax.statistics import ClassStatistics

    names = json.load(open(os.path.join(ASSET_DIR, "classes.json")))["seen_classes"]
    assert names == ClassStatistics.load(os.path.join(ASSET_DIR, "class_stats.npz")).class_names
    common = ["--model", "tiny", "--n", "2", "--quiet"]
    assert main(["sample", *common, "--class", names[5], "--out", str(tmp_path / "a"),
                 "--save-array", str(tmp_path / "a.npy")]) == 0
    out = capsys.readouterr().out
    assert f"class 5: {names[5]} (one of the generator's 40 classes" in out and "wrote 2 images" in out
    assert main(["sample", *common, "--class-label", "5", "--out", str(tmp_path / "b"),
                 "--save-array", str(tmp_path / "b.npy")]) == 0
    assert f"class 5: {names[5]}" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    # a wrong name lists the close ones
    stem = names[5].rsplit("-", 1)[0]
    assert main(["sample", *common, "--class", stem + "x", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert f"unknown class '{stem}x'; close: " in err and names[5] in err
    assert main(["sample", *common, "--class", names[5], "--class-label", "5", "--out", str(tmp_path / "c")]) == 2
    assert "give one of --class, --class-label and --labels" in capsys.readouterr().err
    assert main(["sample", *common, "--out", str(tmp_path / "c")]) == 2
    assert f"pass --class NAME (e.g. --class {names[0]})" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_class_names_of_a_model_without_classes_json(tmp_path):
    """Older models (no classes.json): the synthetic data config's seen classes, else the
    class statistics' names, else class_0..; write_class_names is what the pipeline and
    the shipped model use."""
    from sage_jax.statistics import model_class_names, write_class_names

    names, source = model_class_names(ASSET_DIR, 40)
    assert source.endswith("classes.json") and len(names) == 40
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text(open(os.path.join(ASSET_DIR, "config.json")).read())
    derived, source = model_class_names(str(old), 40)
    assert derived == names and "synthetic data" in source
    assert model_class_names(str(old), 7) == ([f"class_{i}" for i in range(7)], "no class names stored with the model")
    write_class_names(str(old), ["b", "a"])
    assert model_class_names(str(old), 2) == (["b", "a"], str(old / "classes.json"))


def test_the_pipeline_bundle_writes_classes_json(tmp_path):
    import ml_collections

    from sage_jax.inversion import InversionSetting
    from sage_jax.pipeline import _bundle

    work = tmp_path / "w"
    for d in ("psp/psp", "dictionary/dictionary"):
        (work / d).mkdir(parents=True)
    (work / "dictionary" / "class_stats.npz").write_bytes(b"")
    cfg = ml_collections.ConfigDict({"seed": 0})
    _bundle(cfg, str(work), str(work / "model"), {}, InversionSetting(), class_names=["z", "y"])
    assert json.load(open(work / "model" / "classes.json")) == {"seen_classes": ["z", "y"]}


# ----------------------------------------------------------------------------- one rule each
def test_shot_folders_follow_the_one_folder_scanner(tmp_path):
    """A folder of images is one class named after it; <class>_<i> files one class per
    prefix; a folder of folders one class each (sage_jax.data.folders.scan_folder)."""
    from sage_jax.data.folders import class_files

    img = Image.new("RGB", (8, 8))
    (tmp_path / "cat").mkdir()
    for n in ("a.png", "b.png"):
        img.save(tmp_path / "cat" / n)
    assert class_files(str(tmp_path / "cat")) == {"cat": [str(tmp_path / "cat" / n) for n in ("a.png", "b.png")]}
    (tmp_path / "flat").mkdir()
    for n in ("x_0.png", "x_1.png", "y_0.png"):
        img.save(tmp_path / "flat" / n)
    assert {k: len(v) for k, v in class_files(str(tmp_path / "flat")).items()} == {"x": 2, "y": 1}
    (tmp_path / "nested" / "p").mkdir(parents=True)
    (tmp_path / "nested" / "q").mkdir()
    img.save(tmp_path / "nested" / "p" / "0.png")
    img.save(tmp_path / "nested" / "q" / "0.png")
    assert sorted(class_files(str(tmp_path / "nested"))) == ["p", "q"]


def test_generate_and_the_demo_take_their_default_options_from_one_function():
    from sage_jax.demo import _options
    from sage_jax.generation import default_options

    notes = []
    opts = default_options("sage", 1, seen_classes=6, directions=6, a_length=8, generation={"t_B": 40, "t_A": 4},
                           note=lambda *n: notes.append(n))
    assert (opts.t_B, opts.retrieval_t_B, opts.t_C, opts.t_A) == ((6,), 6, 6, 4)
    assert notes == [("t_B", 40, 6), ("retrieval t_B", 40, 6), ("t_C", 30, 6)]
    given = default_options("age", 3, seen_classes=40, directions=40, a_length=8, t_B=[3, 5], t_C=9, t_A=2)
    assert (given.t_B, given.retrieval_t_B, given.t_C, given.t_A) == ((3, 5), 10, 9, 2)
    assert _options("sage", 3, 40, 8, 1.5, {"generation": {"t_B": 40, "t_A": 4}}) == \
        default_options("sage", 3, seen_classes=40, directions=40, a_length=8, generation={"t_B": 40, "t_A": 4},
                        alpha=1.5)
