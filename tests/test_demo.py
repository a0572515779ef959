"""`sage-jax train` (the whole pipeline, a few steps per stage) and `sage-jax demo`,
on a model the test trains, and the demo on the shipped model."""

import datetime
import hashlib
import importlib.metadata
import json
import os
import re
import subprocess

import jax
import pytest

from fixture_utils import ROOT
from sage_jax.cli import main
from sage_jax.demo import ASSET_DIR

TINY = os.path.join(ROOT, "configs", "tiny.py")
FAST = ["--config.gan.steps=4", "--config.gan.batch_size=8", "--config.psp.steps=4", "--config.psp.batch_size=8",
        "--config.psp.latent_avg_samples=64", "--config.dictionary.steps=4", "--config.dictionary.batch_size=8",
        "--config.oracles.steps=30", "--config.data.samples_per_class=6", "--config.gan.mapping_steps=20",
        # an 18-layer encoder backbone (the tiny config has 50): the same code, fewer units to compile
        "--config.model.encoder.num_layers=18",
        # refined codes as the tiny config makes them, with fewer steps, of 3 images per class
        "--config.inversion.refine_steps=2", "--config.statistics.samples_per_class=3"]


def _check_report(out, n, model=ASSET_DIR):
    assert os.path.exists(out / "report.html") and os.path.exists(out / "pca.png")
    assert os.path.exists(out / "classes.png")   # every unseen class: shots, SAGE's and AGE's images
    summary = json.load(open(out / "metrics.json"))
    metrics = summary["metrics"]
    assert set(metrics) == {"real", "age-1shot", "age-3shot", "sage-1shot", "sage-3shot"}
    for v in metrics.values():
        assert 0.0 <= v["retention"] <= 1.0 and v["diversity"] >= 0.0
        assert v["retention_ci"]["lo"] <= v["retention"] <= v["retention_ci"]["hi"]
        if "diversity_ci" in v:
            assert v["diversity_ci"]["lo"] <= v["diversity"] <= v["diversity_ci"]["hi"]
    # paired SAGE - AGE differences at each shot count, with intervals; per-class figures
    assert set(summary["differences"]) == {"sage-1shot - age-1shot", "sage-3shot - age-3shot"}
    for d in summary["differences"].values():
        for k in ("retention", "diversity"):
            assert d[k]["lo"] <= d[k]["value"] <= d[k]["hi"]
    assert set(summary["per_class"]["sage-1shot"]) == set(summary["classes"])
    html = (out / "report.html").read_text()
    assert "AGE" in html and "SAGE" in html and "category retention" in html
    _check_layout(html)
    _check_per_class(html, summary, out)
    _check_provenance(html, summary["provenance"], model)
    for cls in summary["classes"]:
        for mode in ("age", "sage"):
            for k in (1, 3):
                assert (out / "images" / f"{cls}_{mode}_{k}shot.png").exists()
    assert summary["images_per_class"] == n
    # each stage measured on its own, with its pictures
    st = summary["stages"]
    assert 0.0 <= st["generator"]["confident_share"] <= 1.0 and st["generator"]["seen_classes"] > 0
    assert st["generator"]["oracle_fid"] >= 0.0
    ci = st["generator"]["confident_share_ci"]
    assert ci["lo"] <= st["generator"]["confident_share"] <= ci["hi"]
    assert st["generator"]["oracle_fid_ci"]["lo"] <= st["generator"]["oracle_fid"] <= st["generator"]["oracle_fid_ci"]["hi"]
    for split in ("seen", "unseen"):
        assert 0.0 <= st["inversion"][split]["retention"] <= 1.0 and st["inversion"][split]["mse"] > 0.0
    assert 0.0 < st["dictionary"]["captured_share"] <= st["dictionary"]["pca_bound"] + 0.05
    assert "dictionary" in html
    assert (out / "samples.png").exists() and (out / "reconstructions.png").exists()
    assert "Each stage on its own" in html
    return summary


def _check_layout(html):
    """A one-line title and description, then the headline table (the first table), before
    any picture; then the per-class table, the stages, the provenance and the pictures."""
    body = html[html.index("<body>"):]
    before = body[:body.index("<table")]
    assert "id='headline-table'" in body[body.index("<table"):body.index("<table") + 40]
    assert "<img" not in before and before.count("<p") == 1 and before.count("<h1") == 1
    headline = body.index("id='headline-table'")
    first_picture = body.index("<img")
    assert headline < first_picture
    # the headline's figures, each with its interval: a row per mode
    table = body[headline:body.index("</table>", headline)]
    assert len(re.findall(r"<tr data-mode=", table)) == 5 and len(re.findall(r"<small>\[", table)) == 9
    order = [body.index(m) for m in ("id='headline-table'", "Paired differences", "id='per-class-table'",
                                     "id='stages-table'", "id='provenance-table'", "id='pictures'", "classes.png",
                                     "samples.png", "pca.png")]
    assert order == sorted(order)


def _check_per_class(html, summary, out):
    """A row for every mode and every unseen class, with the class's name, a real image
    of it, and each figure with its interval (also in metrics.json)."""
    modes = set(summary["metrics"])
    assert set(summary["per_class"]) == modes
    rows = re.findall(r"<tr data-class='([^']+)' data-mode='([^']+)'>(.*?)</tr>", html)
    assert sorted((c, m) for c, m, _ in rows) == sorted((c, m) for c in summary["classes"] for m in modes)
    for cls, mode, cells in rows:
        v = summary["per_class"][mode][cls]
        assert cells.startswith(f"<td>{cls}</td><td class='thumb'><img class='thumb' src='images/{cls}_real.png'")
        assert (out / "images" / f"{cls}_real.png").exists()
        assert f"data-v='{v['retention']:.6f}'>{v['retention']:.3f} <small>[" in cells
        assert v["retention_ci"]["lo"] <= v["retention"] <= v["retention_ci"]["hi"]
        if mode != "real":
            assert f"data-v='{v['diversity']:.6f}'>{v['diversity']:.3f} <small>[" in cells
            assert v["diversity_ci"]["lo"] <= v["diversity"] <= v["diversity_ci"]["hi"]
            assert v["real_retention_ci"]["lo"] <= v["real_retention"] <= v["real_retention_ci"]["hi"]
        assert len(re.findall(r"<small>\[", cells)) == (1 if mode == "real" else 2)
    assert "class='sortable'" in html and "addEventListener('click'" in html


def _git(*args):
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


def _check_provenance(html, p, model):
    """Real values: what the test itself finds for each, and the same in the report."""
    assert p["jax_version"] == jax.__version__
    with open(os.path.join(model, "config.json"), "rb") as f:
        assert p["config_sha256"] == hashlib.sha256(f.read()).hexdigest()[:12]
    assert p["package_version"] == importlib.metadata.version("sage-jax")
    head = _git("rev-parse", "HEAD")
    if head.returncode == 0 and not _git("ls-files", "--error-unmatch", "sage_jax/__init__.py").returncode:
        assert p["git_commit"] in (head.stdout.strip(), head.stdout.strip() + "-dirty")
    else:
        assert p["git_commit"] == "unknown"
    assert p["model"] == os.path.abspath(model)
    assert p["seed"] == 0 and p["keys"]["base key"] == "jax.random.PRNGKey(0)"
    assert p["device_platform"] == jax.devices()[0].platform and p["device_count"] == len(jax.devices())
    assert p["process_count"] == jax.process_count()
    age = datetime.datetime.now(datetime.timezone.utc) - datetime.datetime.fromisoformat(p["date"])
    assert datetime.timedelta(0) <= age < datetime.timedelta(hours=1)
    for field in ("package_version", "git_commit", "model", "config_sha256", "seed", "jax_version",
                  "device_platform", "device_count", "process_count", "date"):
        assert f"<td data-field='{field}'>{p[field]}</td>" in html, field


def test_git_commit_of_a_checkout_clean_dirty_and_of_an_untracked_copy(tmp_path):
    """The provenance's commit: the checkout's HEAD, '-dirty' once anything changed,
    "unknown" outside a checkout and for a copy git does not track."""
    from sage_jax.demo import git_commit

    pkg = tmp_path / "repo" / "pkg"
    pkg.mkdir(parents=True)
    assert git_commit(str(pkg)) == "unknown"   # not a checkout (tmp_path is outside any)
    (pkg / "__init__.py").write_text("")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(git + ["init", "-q"], cwd=tmp_path / "repo", check=True)
    assert git_commit(str(pkg)) == "unknown"   # in a checkout, but not tracked (an installed copy)
    subprocess.run(git + ["add", "pkg/__init__.py"], cwd=tmp_path / "repo", check=True)
    subprocess.run(git + ["commit", "-q", "-m", "x"], cwd=tmp_path / "repo", check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path / "repo", capture_output=True, text=True,
                          check=True).stdout.strip()
    assert git_commit(str(pkg)) == head
    (pkg / "__init__.py").write_text("x = 1\n")
    assert git_commit(str(pkg)) == head + "-dirty"


def test_train_pipeline_then_demo(tmp_path):
    work = tmp_path / "run"
    assert main(["train", "--config", TINY, "--workdir", str(work), "--quiet", *FAST]) == 0
    model = work / "model"
    assert sorted(os.listdir(model)) == ["class_stats.npz", "classes.json", "config.json", "dictionary", "oracles",
                                         "provenance.json", "psp"]
    times = json.load(open(work / "stage_seconds.json"))
    assert set(times) == {"gan", "encoder", "embed", "dictionary", "oracles"}
    # every stage measured on its own: the generator's learning curve and final quality,
    # the inversion on held-out seen and unseen images; in quality.json, the stages'
    # metrics.jsonl and the model's provenance
    quality = json.load(open(work / "quality.json"))
    assert set(quality) == {"generator", "inversion", "dictionary"}
    dq = quality["dictionary"]   # the tiny config starts A from the codes' principal directions
    assert dq["images"] == 120 and dq["captured_share"] == pytest.approx(dq["pca_bound"], abs=0.05)
    assert dq["captured_share"] > dq["random_share"]
    assert quality["generator"]["samples"] == 1000 and quality["generator"]["seen_classes"] == 40
    assert set(quality["inversion"]) == {"seen", "unseen", "setting"}
    assert quality["inversion"]["setting"] == "2 refinement steps at lr 0.06 on MSE"
    # the statistics: of 3 images per class, made with the config's inversion setting
    from sage_jax.inversion import InversionSetting
    from sage_jax.statistics import ClassStatistics
    stats = ClassStatistics.load(str(model / "class_stats.npz"))
    assert stats.counts.tolist() == [3] * 40 and stats.inversion == InversionSetting(2, 0.06)
    assert stats.moments is not None
    assert quality["inversion"]["unseen"]["images"] == 100
    assert json.load(open(model / "provenance.json"))["stage_quality"] == quality
    gan_log = [json.loads(l) for l in open(work / "gan" / "metrics.jsonl")]
    assert [r["step"] for r in gan_log if "quality/confident_share" in r] == [4]
    assert gan_log[-1]["final/generator/confident_share"] == quality["generator"]["confident_share"]
    psp_log = [json.loads(l) for l in open(work / "psp" / "metrics.jsonl")]
    assert psp_log[-1]["final/inversion/unseen/mse"] == quality["inversion"]["unseen"]["mse"]
    # running again resumes: every stage is complete, so none runs (no stage adds time)
    assert main(["train", "--config", TINY, "--workdir", str(work), "--quiet", *FAST]) == 0
    assert json.load(open(work / "stage_seconds.json")) == times
    # statistics of another number of images per class: they and the dictionary are redone, nothing before
    assert main(["train", "--config", TINY, "--workdir", str(work), "--quiet", *FAST,
                 "--config.statistics.samples_per_class=2"]) == 0
    assert ClassStatistics.load(str(model / "class_stats.npz")).counts.tolist() == [2] * 40
    redone = json.load(open(work / "stage_seconds.json"))
    assert all(redone[k] == times[k] for k in ("oracles", "gan", "encoder"))
    assert redone["embed"] > times["embed"] and redone["dictionary"] > times["dictionary"]
    times = redone
    # asking for more GAN steps continues that stage from its checkpoint
    assert main(["train", "--config", TINY, "--workdir", str(work), "--quiet", *FAST, "--config.gan.steps=6"]) == 0
    steps = [json.loads(l)["step"] for l in open(work / "gan" / "metrics.jsonl")]
    assert steps[-1] == 6
    # ... and every later stage was redone from the new generator
    after = json.load(open(work / "stage_seconds.json"))
    assert all(after[k] > times[k] for k in ("gan", "encoder", "embed", "dictionary"))
    assert after["oracles"] == times["oracles"]  # the oracles see real images only
    out = tmp_path / "demo"
    assert main(["demo", "--model", str(model), "--out", str(out), "--n", "4", "--quiet"]) == 0
    _check_report(out, 4, model=str(model))


def test_demo_refuses_a_missing_model(tmp_path, capsys):
    assert main(["demo", "--model", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "sage-jax train" in capsys.readouterr().err


def test_demo_on_the_shipped_model(tmp_path, capsys):
    assert os.path.isdir(ASSET_DIR), "the shipped model is missing (scripts/make_tiny_model.sh makes it)"
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    # --quiet: no progress and no table, but where the report is
    assert f"report: {out / 'report.html'}" in capsys.readouterr().out
    summary = _check_report(out, 16)
    m = summary["metrics"]
    assert summary["oracles"]["classifier_heldout_accuracy"] > 0.9
    assert m["real"]["retention"] > 0.9
    # the target: SAGE at 3 shots keeps the unseen classes (retention >= 0.6) with diversity
    # >= 0.3. Measured with the shipped model (smooth-skip upsampling): SAGE 3-shot 0.61 /
    # 0.79, AGE 1-shot 0.45 / 0.72 (the nearest-neighbour model before it: 0.72 / 0.72 and
    # 0.53 / 0.66; the one before that 0.38 / 0.17 and 0.37 / 0.15; chance is 1 / 50)
    assert m["sage-3shot"]["retention"] >= 0.6 and m["sage-3shot"]["diversity"] >= 0.3
    assert m["age-1shot"]["retention"] > 0.4 and m["sage-1shot"]["diversity"] > 0.3
    # A regression guard on the demo's deterministic figures, not a finding: SAGE 1-shot
    # measured 0.57 / 0.68 against AGE 0.45 / 0.72, but the paired interval of the retention
    # difference, 0.12 [-0.01, 0.25], includes 0 (with 64 images per class it does not:
    # 0.09 [0.00, 0.18])
    assert m["sage-1shot"]["retention"] > m["age-1shot"]["retention"] + 0.04
    assert m["sage-1shot"]["diversity"] > m["age-1shot"]["diversity"] - 0.1
    # a finding (its interval excludes 0): at 3 shots SAGE's images are less diverse than
    # AGE's (-0.24 [-0.29, -0.19]); their retentions do not differ here (-0.03 [-0.19, 0.12])
    d3 = summary["differences"]["sage-3shot - age-3shot"]
    assert d3["diversity"]["hi"] < 0 and d3["retention"]["lo"] < 0 < d3["retention"]["hi"]
    # the stages under the method (measured 0.825 confident, 39 classes, tile contrast 1.20
    # against the real images' 1.08; the inversion, the encoder refined 25 steps, 0.99 seen
    # / 0.95 unseen at MSE 0.0048 / 0.0069; the dictionary holds 0.77 of the within-class
    # variation, random directions 0.125)
    st = summary["stages"]
    assert st["generator"]["confident_share"] >= 0.8 and st["generator"]["seen_classes_hit"] >= 38
    assert st["inversion"]["seen"]["retention"] >= 0.95 and st["inversion"]["unseen"]["retention"] >= 0.9
    assert st["inversion"]["seen"]["mse"] <= 0.015 and st["inversion"]["unseen"]["mse"] <= 0.015
    assert st["dictionary"]["captured_share"] > 0.6
    assert st["generator"]["tile_contrast"] < 1.4     # the nearest-neighbour model: 1.61


def test_alpha_sweep_on_the_shipped_model_reports_intervals_and_paired_differences(tmp_path):
    """The sweep end to end at a small size (4 images per class, where a resample repeats
    images often): every figure holds its 95% interval, SAGE against AGE is paired, and
    sweep.md / sweep.png are written (the plot once crashed on an interval that missed
    its value)."""
    from sage_jax.demo import run_alpha_sweep

    r = run_alpha_sweep(str(tmp_path), modes=("age", "sage"), alphas=(1.0,), shots=(1,), n=4, quiet=True)
    assert len(r["rows"]) == 2
    for row in r["rows"]:
        for k in ("retention", "diversity"):
            assert row[f"{k}_ci"]["lo"] <= row[k] <= row[f"{k}_ci"]["hi"], (row["mode"], k)
    d = r["differences"]["sage-1shot-alpha1 - age-1shot-alpha1"]
    assert d["retention"]["lo"] <= d["retention"]["value"] <= d["retention"]["hi"]
    assert (tmp_path / "sweep.png").exists()
    md = (tmp_path / "sweep.md").read_text()
    assert "| SAGE | 1 |" in md and "sage-1shot-alpha1 - age-1shot-alpha1" in md
