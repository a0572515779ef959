"""scripts/learning_curve.py: the generator's learning curve read from a GAN stage's
metrics.jsonl (the quality rows with the minutes spent to reach them), printed and
drawn; a folder without such rows is refused."""

import importlib.util
import json
import os

import pytest

from fixture_utils import ROOT


def _script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_learning_curve_reads_the_quality_rows_with_their_minutes_and_draws_them(tmp_path, capsys):
    rows = [{"step": 50, "recon_mse": 0.1, "interval_s": 30.0},
            {"step": 100, "recon_mse": 0.05, "interval_s": 30.0},
            {"step": 100, "quality/confident_share": 0.4, "quality/seen_classes_hit": 20.0, "quality/oracle_fid": 30.0},
            {"step": 150, "recon_mse": 0.04, "interval_s": 60.0},
            {"step": 150, "quality/confident_share": 0.7, "quality/seen_classes_hit": 37.0, "quality/oracle_fid": 9.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    mod = _script("learning_curve")
    curve = mod.read_curve(str(tmp_path))
    assert [(r["step"], r["minutes"], r["confident_share"]) for r in curve] == [(100, 1.0, 0.4), (150, 2.0, 0.7)]
    assert mod.main([str(tmp_path), "--out", str(tmp_path / "c.png")]) == 0
    assert "| 150 | 2.0 | 0.700 | 37 | 9.0 |" in capsys.readouterr().out
    assert (tmp_path / "c.png").stat().st_size > 0
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.jsonl").write_text(json.dumps(rows[0]) + "\n")
    for bad in (tmp_path / "nothing", tmp_path / "empty"):
        with pytest.raises(SystemExit):
            mod.main([str(bad)])


def test_several_runs_are_drawn_on_the_same_axes_under_their_labels(tmp_path, capsys):
    for name, share in (("a", 0.1), ("b", 0.6)):
        (tmp_path / name).mkdir()
        rows = [{"step": 250, "interval_s": 60.0},
                {"step": 250, "quality/confident_share": share, "quality/seen_classes_hit": 5.0,
                 "quality/real_confident_share": 0.7}]
        (tmp_path / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    mod = _script("learning_curve")
    out = tmp_path / "curves.png"
    assert mod.main([str(tmp_path / "a"), str(tmp_path / "b"), "--labels", "defaults,R1 small",
                     "--classes", "62", "--classes-target", "62", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "defaults (" in text and "R1 small (" in text
    assert "| 250 | 1.0 | 0.100 | 5 |" in text and "| 250 | 1.0 | 0.600 | 5 |" in text
    assert out.stat().st_size > 0
    assert mod.main([str(tmp_path / "a"), "--max-step", "250", "--out", str(out)]) == 0
    with pytest.raises(SystemExit):    # no row up to step 100
        mod.main([str(tmp_path / "a"), "--max-step", "100", "--out", str(out)])
    with pytest.raises(SystemExit):    # two folders, one label
        mod.main([str(tmp_path / "a"), str(tmp_path / "b"), "--labels", "one"])
