"""The stage probes for finding a tiny-model setting: experiments/gan_experiment.py
(with experiments/collapse_probe.py on its generator)
(the GAN stage judged by existing oracles), experiments/discriminator_probe.py (how fast a
fresh discriminator separates real from generated images), experiments/generator_probe.py
(a generator as an autoencoder's decoder) and experiments/encoder_experiment.py (the
encoder stage against a finished generator). Each is run for a few steps at a small
size: what it writes must be well formed and in range, and bad arguments are refused
before any work.

Not part of the product's suite (``pyproject.toml``'s ``testpaths`` is ``tests``): run
``python -m pytest -q experiments/tests``."""

import importlib.util
import json
import os
import re

import numpy as np
import pytest



ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPERIMENTS = os.path.join(ROOT, "experiments")


def _script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXPERIMENTS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MICRO = ["--config.data.size=8", "--config.model.generator.size=8", "--config.model.generator.style_dim=8",
         "--config.model.generator.channels=((4, 8), (8, 8))", "--config.gan.batch_size=8",
         "--config.data.samples_per_class=4", "--config.gan.recipe=adversarial"]


def test_gan_experiment_writes_the_learning_curve_and_pictures(tmp_path, capsys):
    work = tmp_path / "run"
    assert _script("gan_experiment").main(
        ["--workdir", str(work), "--samples", "16", "--config.gan.steps=2", "--config.gan.eval_every=2",
         "--config.gan.sample_every=0", "--config.gan.path_regularize=0", *MICRO]) == 0
    curve = json.load(open(work / "curve.json"))
    assert [row["step"] for row in curve] == [2]
    assert 0 <= curve[0]["confident_share"] <= 1 and 0 <= curve[0]["seen_classes_hit"] <= 40
    assert curve[0]["oracle_fid"] >= 0
    assert (work / "eval_000002.png").stat().st_size > 0
    assert "confident share" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        _script("gan_experiment").main(["--workdir", str(work), "--oracles", str(tmp_path)])
    # the collapse probe on the run's generator
    probe = _script("collapse_probe")
    r = probe.probe(str(work / "g_ema"), n=8)
    assert r["w_spread"] > 0 and 0 < r["image_spread"] < 2 and len(r["w_top5_share"]) == 5
    assert abs(sum(probe.probe(str(work / "g_ema"), n=8, widen=1.0)["w_top5_share"])
               - sum(r["w_top5_share"])) < 1e-9      # the shares do not depend on the widening
    assert probe.main([str(work / "g_ema"), "--n", "8"]) == 0
    assert "image spread across z" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        probe.main([str(work / "g_ema"), "--n", "1"])


def test_discriminator_probe_reports_held_out_accuracy(capsys):
    assert _script("discriminator_probe").main(["--steps", "2", "--every", "1", "--small-cnn"]) == 0
    acc = [float(a) for a in re.findall(r"held-out accuracy ([0-9.]+)", capsys.readouterr().out)]
    assert len(acc) == 2 and all(0 <= a <= 1 for a in acc)
    with pytest.raises(SystemExit):
        _script("discriminator_probe").main(["--batch", "6"])
    with pytest.raises(SystemExit):   # an unknown config key, refused by the shared parser
        _script("discriminator_probe").main(["--config.gan.stepz=1"])
    assert "did you mean steps" in capsys.readouterr().err


def test_generator_probe_reports_reconstruction_quality(tmp_path, capsys):
    out = tmp_path / "probe.png"
    assert _script("generator_probe").main(
        ["--steps", "2", "--every", "2", "--batch", "4", "--out", str(out),
         "--config.model.generator.channels=((4, 8), (8, 8), (16, 8), (32, 8))",
         "--config.model.generator.style_dim=16", "--config.model.encoder.style_dim=16",
         "--config.model.encoder.num_layers=18", "--config.model.encoder.mode=ir",
         "--config.model.encoder.widths=(8, 8, 8, 16)", "--config.data.samples_per_class=4"]) == 0
    line = capsys.readouterr().out
    ret = [float(r) for r in re.findall(r"retention ([0-9.]+)", line)]
    mse = [float(m) for m in re.findall(r"MSE ([0-9.]+)", line)]
    assert len(ret) == 2 and all(0 <= r <= 1 for r in ret) and len(mse) == 3 and all(m > 0 for m in mse)
    assert out.stat().st_size > 0
    # the generator alone, with a learned code per training image (10 per seen class)
    assert _script("generator_probe").main(
        ["--free-codes", "--steps", "2", "--every", "2", "--batch", "4",
         "--config.model.generator.channels=((4, 8), (8, 8), (16, 8), (32, 8))",
         "--config.model.generator.style_dim=16", "--config.model.encoder.style_dim=16",
         "--config.model.encoder.num_layers=18", "--config.model.encoder.mode=ir",
         "--config.model.encoder.widths=(8, 8, 8, 16)", "--config.data.samples_per_class=10"]) == 0
    line = capsys.readouterr().out
    assert re.search(r"training retention ([0-9.]+) MSE ([0-9.]+)", line) and "unseen" not in line
    # the plain-decoder yardstick in place of the generator
    assert _script("generator_probe").main(
        ["--free-codes", "--plain-width", "8", "--b1", "0.9", "--code-lr", "0.1", "--steps", "2", "--every", "2",
         "--batch", "4", "--config.model.generator.style_dim=16", "--config.data.samples_per_class=10"]) == 0
    line = capsys.readouterr().out
    assert "plain decoder: " in line and re.search(r"training retention ([0-9.]+) MSE ([0-9.]+)", line)
    # noisy codes and a class-conditional mapping network fitted to them: G(z) scored beside the codes
    assert _script("generator_probe").main(
        ["--free-codes", "--per-class", "2", "--code-noise", "0.3", "--fit-mapping", "2", "--conditional", "--steps", "2",
         "--every", "2", "--batch", "4", "--config.model.generator.channels=((4, 8), (8, 8), (16, 8), (32, 8))",
         "--config.model.generator.style_dim=16", "--config.data.samples_per_class=4"]) == 0
    line = capsys.readouterr().out
    shares = [float(v) for v in re.findall(r"confident share ([0-9.]+)", line)]
    assert "training codes themselves" in line and "fit-mapping step 2" in line
    assert len(shares) == 2 and all(0 <= v <= 1 for v in shares)
    # the same from an encoder's one-W codes (a plain CNN encoder at its own rate)
    assert _script("generator_probe").main(
        ["--single-code", "--plain-encoder", "4", "--enc-lr", "1e-3", "--b1", "0.9", "--fit-mapping", "2",
         "--samplers", "--out", str(tmp_path / "enc.png"),
         "--steps", "2", "--every", "2", "--batch", "4", "--config.model.generator.channels=((4, 8), (8, 8), (16, 8), (32, 8))",
         "--config.model.generator.style_dim=16", "--config.data.samples_per_class=4"]) == 0
    line = capsys.readouterr().out
    assert "fit-mapping step 2" in line and len(re.findall(r"unseen retention ([0-9.]+)", line)) == 1
    assert (tmp_path / "enc_samples.png").stat().st_size > 0   # 64 of the fitted mapping's last samples
    samplers = re.findall(r"sampler (.+?): confident share ([0-9.]+), seen classes hit (\d+)", line)
    assert [name for name, _, _ in samplers] == [
        "the codes themselves", "one Gaussian", "a Gaussian per class", "per-class PCA rank 4", "per-class PCA rank 8",
        "per-class PCA rank 16", "between two codes of a class"]
    assert all(0 <= float(v) <= 1 and 0 <= int(n) <= 40 for _, v, n in samplers)
    assert (tmp_path / "enc_pca4.png").stat().st_size > 0
    for bad in (["--fit-mapping", "5"], ["--free-codes", "--code-noise", "-1"], ["--free-codes", "--single-code"],
                ["--free-codes", "--conditional"], ["--samplers"], ["--free-codes", "--samplers"],
                ["--free-codes", "--plain-width", "8", "--fit-mapping", "5"], ["--free-codes", "--per-class", "0"]):
        with pytest.raises(SystemExit):
            _script("generator_probe").main(bad)
    with pytest.raises(SystemExit):
        _script("generator_probe").main(["--lr", "0"])
    with pytest.raises(SystemExit):   # the yardstick replaces the generator only in free-code mode
        _script("generator_probe").main(["--plain-width", "16"])
    with pytest.raises(SystemExit):
        _script("generator_probe").main(["--free-codes", "--b1", "1"])


def test_encoder_experiment_judges_a_restyle_encoder_and_the_recipe_encoder(tmp_path, capsys):
    from sage_jax.demo import ASSET_DIR

    small = ["--config.model.encoder.num_layers=18", "--config.psp.batch_size=4", "--config.psp.steps=2",
             "--config.psp.latent_avg_samples=64", "--config.data.samples_per_class=4",
             "--config.quality.heldout_per_class=2"]
    script = _script("encoder_experiment")
    assert script.main(["--workdir", str(tmp_path / "enc"), "--generator", os.path.join(ASSET_DIR, "psp"),
                        "--refine", "0,2", "--per-class", "--config.psp.restyle_iterations=2",
                        "--extra-classes", "3", "--extra-per-class", "2", *small]) == 0
    out = capsys.readouterr().out
    # 40 seen classes x 4 images, plus 3 more combinations x 2 images
    assert "training on 166 images of 43 combinations (3 beyond the seen classes)" in out
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [(r["refine"], r["restyle_iterations"], r["extra_classes"]) for r in rows] == [(0, 2, 3), (2, 2, 3)]
    for r in rows:
        assert r["seen"]["images"] == 80 and r["unseen"]["images"] == 20
        assert all(0 <= r[s]["retention"] <= 1 and 0 < r[s]["mse"] < 4 for s in ("seen", "unseen"))
        assert sum(c["kept"] for c in r["unseen_classes"].values()) == round(20 * r["unseen"]["retention"])
    assert rows[1]["unseen"]["mse"] < rows[0]["unseen"]["mse"]    # 2 refinement steps fit better
    # the reconstruction recipe's plain encoder, read from a GAN stage's checkpoint
    gan = tmp_path / "gan"
    assert _script("gan_experiment").main(
        ["--workdir", str(gan), "--samples", "16", "--config.gan.steps=2", "--config.gan.eval_every=0",
         "--config.gan.sample_every=0", "--config.gan.mapping_steps=2", "--config.gan.n_sample=0",
         *[m for m in MICRO if "recipe" not in m], "--config.gan.recipe=reconstruction"]) == 0
    capsys.readouterr()
    assert script.main(["--recipe-encoder", str(gan), *[m for m in MICRO if "recipe" not in m],
                        "--config.quality.heldout_per_class=2"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["checkpoint_step"] == 2 and 0 <= row["unseen"]["retention"] <= 1
    with pytest.raises(SystemExit):
        script.main(["--refine", "x", "--workdir", str(tmp_path), "--generator", str(tmp_path)])
    with pytest.raises(SystemExit):
        script.main(["--refine", "0"])    # neither a run nor --recipe-encoder
    with pytest.raises(SystemExit):
        script.main(["--workdir", str(tmp_path), "--generator", str(tmp_path), "--extra-classes", "-1"])


def test_encoder_experiments_extra_classes_are_neither_seen_nor_unseen():
    from sage_jax.config import apply_overrides, load_config
    from sage_jax.data.loader import seen_dataset, synthetic_spec
    from sage_jax.data.synthetic import make_classes

    script = _script("encoder_experiment")
    cfg = apply_overrides(load_config(os.path.join(ROOT, "configs", "tiny.py")), ["data.samples_per_class=1"])
    data = seen_dataset(cfg.data)
    standard = {c.name for c in make_classes(synthetic_spec(cfg.data))}
    ds = script._with_extra_classes(cfg, data, 462, 1)    # 512 combinations - 50 classes: every other one
    extra = ds.class_names[40:]
    assert len(set(extra)) == 462 and not set(extra) & standard
    assert ds.images.shape == (40 + 462, 32, 32, 3) and np.abs(ds.images).max() <= 1
    assert list(np.bincount(ds.labels_array)) == [1] * 502
    with pytest.raises(SystemExit, match="only 462 combinations"):
        script._with_extra_classes(cfg, data, 463, 1)
