"""Configs and arguments: unknown keys are refused with the closest valid names and
impossible values before any work starts: no workdir, no output, no file written."""

import os

import pytest

from fixture_utils import ROOT, fixture
from sage_jax.cli import main

TINY = os.path.join(ROOT, "configs", "tiny.py")


@pytest.mark.parametrize("command", ["train-gan", "train"])
@pytest.mark.parametrize("override,expected", [
    ("gan.stepz=5", "unknown config key 'gan.stepz' in gan; did you mean steps?"),
    ("modle.generator.size=64", "unknown config key 'modle'"),
    ("gan.steps=0", "gan.steps=0 must be a positive integer"),
    ("gan.batch_size=-8", "gan.batch_size=-8 must be a positive integer"),
    ("gan.log_every=0", "gan.log_every=0 must be a positive integer"),
    ("gan.ckpt_every=0", "gan.ckpt_every=0 must be a positive integer"),
    ("gan.lr=0.0", "gan.lr=0.0 must be a positive number"),
    ("gan.lr=nan", "gan.lr=nan must be a positive number"),
    ("gan.d_lr=-0.001", "gan.d_lr=-0.001 must be 0 (use lr) or a positive number"),
    ("model.generator.size=64", "model.generator.size=64 needs channel counts for resolutions [64]"),
    ("model.generator.size=48", "power-of-two resolutions"),
])
def test_training_configs_are_checked_before_any_work(tmp_path, capsys, command, override, expected):
    work = tmp_path / "w"
    assert main([command, "--config", TINY, "--workdir", str(work), "--quiet", f"--config.{override}"]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert not work.exists()


@pytest.mark.parametrize("command", ["train-encoder", "train"])
@pytest.mark.parametrize("value,expected", [
    ("-1", "psp.restyle_iterations=-1 must be 0 (a pSp encoder, one pass) or a positive integer"),
    ("1.5", "cannot set psp.restyle_iterations='1.5'"),   # the config's type (int) refuses it
])
def test_restyle_iterations_are_checked_before_any_work(tmp_path, capsys, command, value, expected):
    work = tmp_path / "w"
    args = [command, "--config", TINY, "--workdir", str(work), "--quiet", f"--config.psp.restyle_iterations={value}"]
    if command == "train-encoder":
        args += ["--generator", fixture("tiny_rosinality_ckpt.pt")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err and not work.exists()


def test_encoder_that_cannot_drive_the_generator_is_refused(tmp_path, capsys):
    work = tmp_path / "w"
    base = ["train-encoder", "--config", TINY, "--workdir", str(work), "--quiet",
            "--generator", fixture("tiny_rosinality_ckpt.pt")]
    assert main(base + ["--config.model.encoder.n_styles=4"]) == 2
    assert "needs style_dim 64 and n_styles >= 8" in capsys.readouterr().err
    assert main(base + ["--config.model.encoder.style_dim=32"]) == 2
    assert "a 32 px generator with style_dim 64" in capsys.readouterr().err
    assert not work.exists()


def test_train_dictionary_refuses_bad_configs_before_reading_anything(tmp_path, capsys):
    from tiny_models import tiny_psp_file

    cfg = tmp_path / "dict_config.py"
    cfg.write_text("import ml_collections\n"
                   "def get_config():\n"
                   "    c = ml_collections.ConfigDict()\n"
                   "    c.dictionary = ml_collections.ConfigDict({'a_lenght': 8, 'steps': 10})\n"
                   "    return c\n")
    work = tmp_path / "w"
    base = ["train-dictionary", "--data", str(tmp_path / "no_data"), "--stats", str(tmp_path / "no_stats.npz"),
            "--workdir", str(work), "--quiet"]
    # the checkpoint does not even need to exist: the config is refused first
    assert main(base + ["--checkpoint", str(tmp_path / "none.pt"), "--config", str(cfg)]) == 2
    assert "unknown key 'a_lenght'" in (err := capsys.readouterr().err) and "did you mean a_length" in err
    assert main(base + ["--checkpoint", str(tmp_path / "none.pt"), "--steps", "0"]) == 2
    assert "dictionary.steps=0 must be a positive integer" in capsys.readouterr().err
    assert main(base + ["--checkpoint", str(tmp_path / "none.pt"), "--a-length", "0"]) == 2
    assert "dictionary.a_length=0 must be a positive integer" in capsys.readouterr().err
    # paper groups reach layer 17: fine for an 18-style encoder; a 6-style one cannot
    tiny_psp_file(tmp_path / "psp.pt", encoder_cfg=dict(
        kind="GradualStyleEncoder", num_layers=50, mode="ir_se", input_size=32, n_styles=6, style_dim=64,
        widths=(16, 16, 32, 64)), with_ax=False)
    assert main(base + ["--checkpoint", str(tmp_path / "psp.pt"), "--groups", "paper"]) == 2
    assert "must use layers 0..5" in capsys.readouterr().err
    assert not work.exists()
