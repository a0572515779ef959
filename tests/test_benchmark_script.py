"""scripts/benchmark.py's training section and exit status, without real training runs
(the 2-process training path itself is tested in tests/test_multiprocess_training.py):
a failed run shows its reason (the exception line, not a cut-off header) with the whole
stderr tail kept in the JSON; a section that does not finish makes the script exit
non-zero after printing what did finish; ``training_speed`` reads only the rows of
``metrics.jsonl`` that carry the loop's timing (the reconstruction recipe's final row
has none: that was the KeyError 'interval_s')."""

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import benchmark

LAUNCH_OUTPUT = """\
[p1] [Gloo] Rank 1 is connected to 1 peer ranks. Expected number of connected peer ranks is : 1
[p0] [Gloo] Rank 0 is connected to 1 peer ranks. Expected number of connected peer ranks is : 1
[p0] training the pSp encoder for a 32 px generator on 64 images in /tmp/w
[p1] Traceback (most recent call last):
[p1]   File "sage_jax/train/encoder.py", line 195, in train_encoder
[p1]     raise ValueError(
[p1] ValueError: real (7) and generated (8) parts of the batch must be positive multiples of the 2 devices
[launch] process 1 exited with status 1; stopping the others
[p0] stopped by SIGTERM at step 3; checkpoint saved
"""
REASON = "ValueError: real (7) and generated (8) parts of the batch must be positive multiples of the 2 devices"


def test_failure_reason_is_the_failed_process_exception_line():
    assert benchmark.failure_reason(LAUNCH_OUTPUT) == "process 1: " + REASON
    # argparse's and UsageError's line; a multi-line exception message; progress bars and
    # warnings are not reasons; a process killed without a word
    assert benchmark.failure_reason(
        "usage: sage-jax ...\nsage-jax train-gan: error: gan.n_sample=0 must be a positive integer\n"
        "[launch] process 0 exited with status 2; stopping the others\n"
    ) == "sage-jax train-gan: error: gan.n_sample=0 must be a positive integer"
    assert benchmark.failure_reason(
        'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n    f()\n'
        "RuntimeError: first line\nsecond line\n\nx.py:3: UserWarning: noise\n"
    ) == "RuntimeError: first line / second line"
    assert benchmark.failure_reason("[launch] process 0 exited with status -9; stopping the others\n") == (
        "process 0: killed by signal 9 (SIGKILL: most likely the kernel's out-of-memory killer)")


def test_failed_subprocess_shows_the_exception_and_keeps_the_tail():
    code = "import sys\nprint('x' * 5000, file=sys.stderr)\nraise KeyError('interval_s')"
    with pytest.raises(benchmark.SubprocessFailed) as e:
        benchmark._subprocess_json(code)
    assert e.value.reason == "KeyError: 'interval_s'"
    record = e.value.record()
    assert record["error"] == "KeyError: 'interval_s' (exit status 1)"
    assert "Traceback (most recent call last)" in record["stderr_tail"] and len(record["stderr_tail"]) == 4000


def test_training_section_table_shows_the_reason_of_a_failed_run(monkeypatch):
    """The in-process configs' runs (the old 'did not finish: benchmark subprocess
    failed, exit status 1:' row) and the launch runs both show the exception line."""
    real = benchmark._subprocess_json
    failing = ("import sys\nsys.stderr.write('W0000 00:00:00 absl noise\\nTraceback (most recent call last):\\n"
               "  File \"benchmark.py\", line 600, in training_speed\\n    sec = ...\\nKeyError: \\'interval_s\\'\\n')\n"
               "sys.exit(1)")
    monkeypatch.setattr(benchmark, "_subprocess_json", lambda code, env=None: real(failing, env))
    rows = benchmark.bench_training(["tiny"], [1], steps=16, warm=False)
    assert rows[0]["error"] == "KeyError: 'interval_s' (exit status 1)"

    script = f"import sys\nsys.stdout.write({LAUNCH_OUTPUT!r})\nsys.exit(1)"
    monkeypatch.setattr(benchmark, "_stage_command", lambda *a, **k: [sys.executable, "-c", script])
    procs = benchmark.bench_training_processes(["encoder"], [1, 2], steps=16)
    assert [r["processes"] for r in procs] == [1, 2]
    for r in procs:
        assert r["error"] == f"process 1: {REASON} (exit status 1)"
        assert r["stderr_tail"] == LAUNCH_OUTPUT
    table = benchmark._target_table({"training": rows, "training_processes": procs})
    measured = [t[1] for t in table]
    assert "did not finish: KeyError: 'interval_s' (exit status 1)" in measured
    assert f"did not finish: process 1: {REASON} (exit status 1)" in measured
    assert all(t[3] == "NO" for t in table)
    assert benchmark._incomplete({"training_processes": procs}) == ["training"]


def test_launch_run_that_stops_early_is_not_a_figure(monkeypatch, tmp_path):
    """Exit status 0 but fewer steps than asked (a SIGTERM stops a run with a checkpoint)."""
    rows = [{"step": 16, "interval_s": 9.0, "interval_steps": 16, "data_wait_share": 0.0}]
    script = ("import json, os, sys\nw = sys.argv[sys.argv.index('--workdir') + 1]\nos.makedirs(w)\n"
              "json.dump({'psp': {'batch_size': 16}}, open(os.path.join(w, 'config.json'), 'w'))\n"
              f"open(os.path.join(w, 'metrics.jsonl'), 'w').write({json.dumps(rows[0])!r} + '\\n')\n"
              "print('[p0] stopped by SIGTERM at step 20; checkpoint saved')\n")

    def command(stage, processes, workdir, steps, log_every, extra=()):
        return [sys.executable, "-c", script, "--workdir", workdir]

    monkeypatch.setattr(benchmark, "_stage_command", command)
    with pytest.raises(benchmark.SubprocessFailed, match="stopped at step 16 of 32: .*stopped by SIGTERM at step 20"):
        benchmark.process_run("encoder", 2, steps=16)


def test_stage_command_is_a_launch_of_the_tiny_config():
    cmd = benchmark._stage_command("encoder", 2, "/w", 64, 16)
    i = cmd.index("--")
    assert cmd[cmd.index("-m") + 1:cmd.index("-m") + 3] == ["sage_jax.cli", "launch"]
    assert cmd[cmd.index("--processes") + 1] == "2" and cmd[cmd.index("--devices-per-process") + 1] == "1"
    assert cmd[i + 1] == "train-encoder" and "--generator" in cmd
    assert {"--config.psp.steps=80", "--config.psp.log_every=16", "--config.data.samples_per_class=8",
            "--config.data.num_seen=8"} <= set(cmd)
    gan = benchmark._stage_command("gan-adversarial", 1, "/w", 64, 16)
    assert "--config.gan.recipe=adversarial" in gan and "--config.gan.steps=80" in gan


def test_exit_status_is_nonzero_when_a_section_does_not_finish(monkeypatch, capsys, tmp_path):
    def boom():
        raise RuntimeError("boom")

    monkeypatch.setattr(benchmark, "bench_editing", boom)
    monkeypatch.setattr(benchmark, "bench_refine", lambda: {
        "images": 64, "steps": 20, "python_loop_ms_per_image_step": 1.0, "while_loop_ms_per_image_step": 10.0,
        "speedup": 10.0})
    out = tmp_path / "r.json"
    assert benchmark.main(["--only", "editing", "refine", "--json", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "refinement, tiny model" in printed                        # the section after it still ran
    assert "section editing" in printed and "did not finish: RuntimeError: boom" in printed   # in the table
    results = json.loads(out.read_text())
    assert results["incomplete_sections"] == ["editing"] and "boom" in results["failed"]["editing"]["traceback"]
    assert benchmark.main(["--only", "refine"]) == 0


def test_exit_status_is_nonzero_when_a_training_run_does_not_finish(monkeypatch, capsys):
    def runs(stages, counts, steps, repeats):
        assert (stages, counts) == (list(benchmark.STAGES), [1, 2])   # the default training section
        return [{"config": "tiny", "stage": "encoder", "processes": 2, "devices_per_process": 1,
                 "error": "process 1: ValueError: no (exit status 1)"}]

    monkeypatch.setattr(benchmark, "bench_training_processes", runs)
    assert benchmark.main(["--only", "training"]) == 1
    assert "did not finish: process 1: ValueError: no (exit status 1)" in capsys.readouterr().out


def test_training_speed_skips_rows_without_timing(monkeypatch):
    """The reconstruction recipe's last row (the mapping fit) and a learning-curve row
    have no interval_s; the first interval (compilation) is left out."""
    from sage_jax.train import gan

    seen = {}

    def fake_train_gan(g_cfg, d_cfg, cfg, data, workdir, quiet=False):
        seen["recipe"], seen["steps"], seen["log_every"] = cfg.recipe, cfg.steps, cfg.log_every
        rows = [{"step": 16, "interval_s": 50.0, "interval_steps": 16, "data_wait_share": 0.0, "recon_mse": 1.0},
                {"step": 32, "interval_s": 2.0, "interval_steps": 16, "data_wait_share": 0.1, "recon_mse": 0.5},
                {"step": 32, "oracle_confidence": 0.2},
                {"step": 48, "interval_s": 2.0, "interval_steps": 16, "data_wait_share": 0.3, "recon_mse": 0.4},
                {"step": 48, "mapping_relative_error": 0.3}]
        with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)

    monkeypatch.setattr(gan, "train_gan", fake_train_gan)
    r = benchmark.training_speed("tiny", steps=32, recipe="reconstruction")
    assert (seen["recipe"], seen["steps"], seen["log_every"]) == ("reconstruction", 48, 16)
    assert r["steps"] == 32 and r["batch"] == 16
    assert r["images_per_s"] == pytest.approx(32 * 16 / 4.0) and r["data_wait_share"] == pytest.approx(0.2)
    assert r["first_interval_s"] == 50.0

    with pytest.raises(ValueError, match="no timed interval after the first"):
        benchmark.interval_throughput([{"step": 16, "interval_s": 5.0, "interval_steps": 16, "data_wait_share": 0},
                                       {"step": 16, "mapping_relative_error": 0.3}], 16)
