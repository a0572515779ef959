"""``sage-jax launch``: the processes it starts, their output, and stopping all of them
when one fails (with a stand-in for Python, so no JAX process is started); the commands
that run on process 0 alone or refuse several processes; joining from flags and the
environment."""

import io
import os
import stat
import sys
import time

import pytest

from sage_jax import parallel
from sage_jax.cli import launch as L

FAKE = """#!/bin/sh
# stands in for python: prints what it was given, then acts by process id
echo "rank $JAX_PROCESS_ID of $JAX_NUM_PROCESSES at $JAX_COORDINATOR_ADDRESS: $* ($XLA_FLAGS)"
if [ "$JAX_PROCESS_ID" = "1" ] && [ -n "$FAIL" ]; then exit 3; fi
if [ "$JAX_PROCESS_ID" = "0" ] && [ -n "$FAIL" ]; then sleep 60; fi
echo done
"""


@pytest.fixture
def fake_python(tmp_path, monkeypatch):
    exe = tmp_path / "python"
    exe.write_text(FAKE)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(sys, "executable", str(exe))
    return exe


def test_launch_starts_every_process_and_prefixes_their_output(fake_python, monkeypatch):
    monkeypatch.delenv("FAIL", raising=False)
    out = io.StringIO()
    assert L.launch(["train", "--config", "tiny"], 2, devices_per_process=3, port=12345, out=out) == 0
    lines = out.getvalue().splitlines()
    for r in range(2):
        assert f"[p{r}] rank {r} of 2 at 127.0.0.1:12345: -m sage_jax.cli train --config tiny " \
               f"(--xla_force_host_platform_device_count=3)" in lines
        assert f"[p{r}] done" in lines


def test_launch_stops_the_others_when_one_fails(fake_python, monkeypatch):
    monkeypatch.setenv("FAIL", "1")
    out = io.StringIO()
    t0 = time.monotonic()
    assert L.launch(["train"], 2, out=out, grace_s=5) == 3
    assert time.monotonic() - t0 < 30, "process 0 (sleeping 60 s) was not stopped"
    assert "[launch] process 1 exited with status 3; stopping the others" in out.getvalue()
    assert "[p0] done" not in out.getvalue()


def test_launch_refuses_nonsense(fake_python):
    with pytest.raises(ValueError, match="no command"):
        L.launch([], 2)
    with pytest.raises(ValueError, match="--processes must be >= 1"):
        L.launch(["train"], 0)
    with pytest.raises(ValueError, match="cannot launch itself"):
        L.launch(["launch"], 2)


def test_initialize_needs_the_whole_setting(monkeypatch):
    for k in parallel.COORDINATOR_ENV + ("SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "SLURM_PROCID"):
        monkeypatch.delenv(k, raising=False)
    assert parallel.initialize() is False                      # nothing set: one process
    assert parallel.initialize(num_processes=1) is False       # one process, no coordinator
    with pytest.raises(ValueError, match="needs all three"):
        parallel.initialize(num_processes=2, process_id=0)
    with pytest.raises(ValueError, match=r"process id 2 is not in \[0, 2\)"):
        parallel.initialize("localhost:1", 2, 2)
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES='two' is not an integer"):
        parallel.initialize()


def test_batch_size_that_does_not_split_is_refused_with_sizes_that_would():
    import jax

    mesh = parallel.make_mesh(jax.devices()[:1] * 1)
    parallel.check_batch_size(5, mesh)   # one device: anything goes

    class FourDevices:
        class devices:
            size = 4

    with pytest.raises(ValueError, match=r"batch_size 6 \(the global batch\) does not split over the 4 devices "
                                         r"\(4 devices\): use a multiple of 4, e.g. 4 or 8"):
        parallel.check_batch_size(6, FourDevices)
    with pytest.raises(ValueError, match="e.g. 4$"):
        parallel.check_batch_size(3, FourDevices)


def test_process_shares_cover_the_items_once():
    assert parallel.process_share(7) == range(0, 7)   # one process: everything
    assert parallel.process_rows(8) == slice(0, 8)


@pytest.mark.heavy
def test_data_commands_run_on_process_0_and_the_demo_refuses(tmp_path):
    import multiprocess as mp

    cfg = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "tiny.py")
    mp.run_cli(["make-synthetic", "--config", cfg, "--split", "unseen", "--out", str(tmp_path / "syn"),
                "--config.data.samples_per_class=2"], 2, 1, str(tmp_path))
    assert (tmp_path / "syn" / "factors.npz").exists()
    assert "wrote" in open(tmp_path / "p0.log").read()
    procs = mp.start(["-m", "sage_jax.cli", "demo", "--out", str(tmp_path / "demo")], 2, 1, str(tmp_path))
    assert [p.wait(timeout=300) for p in procs] == [2, 2]
    assert "'demo' runs as one process" in open(tmp_path / "p0.log").read()
    assert not (tmp_path / "demo").exists()
