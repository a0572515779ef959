"""Runs are never lost: kill -9 at a random step then resume gives the uninterrupted
parameters bit for bit; a save killed midway leaves the previous checkpoint intact and
used; a NaN/Inf loss stops the run with a message and saves nothing non-finite; a full
disk is a clear error with the previous checkpoint intact."""

import errno
import glob
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fixture_utils import ROOT
from sage_jax import parallel
from sage_jax.errors import RunStopped
from sage_jax.data.arrays import ArrayDataset
from sage_jax.train.common import Checkpoints, run_loop

TESTS = os.path.join(ROOT, "tests")


# ----------------------------------------------------------------- a toy run (no model)
def toy_run(workdir, steps=8, ckpt_every=2, log_every=1, nan_at=None, record=None, delay=0.0):
    """run_loop on a 3-parameter 'model' whose update depends on the batch and the step;
    ``nan_at``: the step (1-based) from which the update is NaN."""
    rng = np.random.default_rng(0)
    data = ArrayDataset(rng.normal(size=(16, 4, 4, 3)).astype(np.float32), np.arange(16) % 4)
    state = {"w": jnp.zeros(3, jnp.float32), "step": jnp.zeros((), jnp.int32)}

    def step_fn(state, x, y, step):
        if record is not None:
            record.append(step + 1)
        if delay:
            time.sleep(delay)
        upd = jnp.mean(x, axis=(0, 1, 2)) * 0.1 + 0.01 * (step + 1)
        if nan_at is not None and step + 1 >= nan_at:
            upd = upd * jnp.nan
        w = state["w"] * 0.9 + upd
        return {"w": w, "step": jnp.asarray(step + 1, jnp.int32)}, {"loss": jnp.sum(w * w)}

    return run_loop(workdir=str(workdir), state=state, step_fn=step_fn, dataset=data, batch_size=4,
                    data_key=jax.random.PRNGKey(0), mesh=parallel.make_mesh(), steps=steps,
                    log_every=log_every, ckpt_every=ckpt_every, keep=3, desc="toy", quiet=True)


def _steps_on_disk(workdir):
    d = os.path.join(str(workdir), "checkpoints")
    return sorted(int(n) for n in os.listdir(d) if n.isdigit())


def _tmp_dirs(workdir):
    return glob.glob(os.path.join(str(workdir), "checkpoints", "*.orbax-checkpoint-tmp*"))


def _restore(workdir):
    like = {"w": jnp.zeros(3, jnp.float32), "step": jnp.zeros((), jnp.int32)}
    with Checkpoints(str(workdir)) as c:
        state, step = c.restore(like)
    return np.asarray(state["w"]), step


# ------------------------------------------------------------------------ NaN / Inf
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    # saves at 2, 4, 6, 8; logs at 4, 8: the NaN from step 5 is caught at the save of 6
    with pytest.raises(RunStopped) as err:
        toy_run(tmp_path, steps=8, ckpt_every=2, log_every=4, nan_at=5)
    msg = str(err.value)
    assert "non-finite training values at step 5" in msg and "loss" in msg
    assert "stopped at step 6 without saving" in msg and "(step 4) is kept" in msg
    assert _steps_on_disk(tmp_path) == [2, 4]
    w, step = _restore(tmp_path)
    assert step == 4 and np.isfinite(w).all()
    logged = [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")]
    assert logged == [4]  # nothing non-finite logged either


@pytest.mark.heavy
def test_non_finite_loss_through_the_command(tiny_setup, tmp_path, capsys):
    from sage_jax.cli import main

    root = tiny_setup
    code = main(["train-dictionary", "--checkpoint", str(root / "psp.pt"), "--data", str(root / "seen"),
                 "--stats", str(root / "stats.npz"), "--workdir", str(tmp_path / "w"), "--steps", "6",
                 "--batch-size", "4", "--a-length", "8", "--ckpt-every", "2", "--log-every", "3",
                 "--lr", "1e38", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "non-finite training values at step" in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "w" / "dictionary")
    for step in _steps_on_disk(tmp_path / "w"):  # whatever was saved is finite
        assert step < 3


# ------------------------------------------------------------------------ full disk
def test_full_disk_is_a_clear_error_and_the_previous_checkpoint_survives(tmp_path, monkeypatch):
    from orbax.checkpoint._src.path import async_path

    real = async_path.write_text

    async def full(path, *args, **kwargs):
        if "4.orbax-checkpoint-tmp" in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return await real(path, *args, **kwargs)

    monkeypatch.setattr(async_path, "write_text", full)
    with pytest.raises(RunStopped) as err:
        toy_run(tmp_path, steps=8, ckpt_every=2)
    msg = str(err.value)
    assert "could not write the checkpoint of step 4" in msg and "the disk is full" in msg
    assert "previous checkpoint (step 2) is intact" in msg
    assert _steps_on_disk(tmp_path) == [2] and not _tmp_dirs(tmp_path)
    monkeypatch.setattr(async_path, "write_text", real)  # space freed: the same call resumes
    record = []
    state, done = toy_run(tmp_path, steps=8, ckpt_every=2, record=record)
    assert record[0] == 3 and done == 8
    ref, _ = toy_run(tmp_path / "ref", steps=8, ckpt_every=2)
    np.testing.assert_array_equal(np.asarray(state["w"]), np.asarray(ref["w"]))


def test_full_disk_while_logging_is_a_clear_error(tmp_path, monkeypatch):
    from sage_jax.train import common

    real = common.MetricsLog.write

    def write(self, step, metrics):
        if step == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.path)
        return real(self, step, metrics)

    monkeypatch.setattr(common.MetricsLog, "write", write)
    with pytest.raises(RunStopped, match="the disk is full"):
        toy_run(tmp_path, steps=8, ckpt_every=2)
    assert _steps_on_disk(tmp_path) == [2]


# ------------------------------------------------------------ a save killed midway
_KILL_DURING_SAVE = r"""
import os, signal, sys
sys.path.insert(0, {tests!r})
from orbax.checkpoint._src.path import async_path
from test_run_safety import toy_run
point, workdir = sys.argv[1], sys.argv[2]
if point == "after_tmp_dir":        # the temporary directory exists, nothing written in it yet
    real = async_path.mkdir
    async def hook(path, *a, **k):
        out = await real(path, *a, **k)
        if os.path.basename(str(path)).startswith("4.orbax-checkpoint-tmp"):
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    async_path.mkdir = hook
else:                               # every file written, the commit rename not done
    real = async_path.rename
    async def hook(src, dst):
        if os.path.basename(str(dst)) == "4":
            os.kill(os.getpid(), signal.SIGKILL)
        return await real(src, dst)
    async_path.rename = hook
toy_run(workdir, steps=8, ckpt_every=2)
print("not killed")
"""


@pytest.mark.parametrize("point", ["after_tmp_dir", "before_commit"])
def test_a_save_killed_midway_leaves_the_previous_checkpoint_used(tmp_path, point):
    work = tmp_path / "w"
    res = subprocess.run([sys.executable, "-c", _KILL_DURING_SAVE.format(tests=TESTS), point, str(work)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == -signal.SIGKILL, res.stdout + res.stderr[-2000:]
    assert _steps_on_disk(work) == [2] and _tmp_dirs(work)  # the partial step 4 is only a temp dir
    w, step = _restore(work)
    assert step == 2 and np.isfinite(w).all()
    record = []
    state, done = toy_run(work, steps=8, ckpt_every=2, record=record)  # the same run, again
    assert record[0] == 3 and done == 8 and not _tmp_dirs(work)
    ref, _ = toy_run(tmp_path / "ref", steps=8, ckpt_every=2)
    np.testing.assert_array_equal(np.asarray(state["w"]), np.asarray(ref["w"]))
    assert [json.loads(line)["step"] for line in open(work / "metrics.jsonl")] == list(range(1, 9))


# --------------------------------------------------- kill -9 at a random step, resume
_TOY_RUN = r"""
import sys
sys.path.insert(0, {tests!r})
from test_run_safety import toy_run
toy_run(sys.argv[1], steps=int(sys.argv[2]), ckpt_every=3, delay=0.05)
"""


@pytest.mark.parametrize("seed", [0, 1])
def test_kill_9_of_the_loop_at_a_random_step_then_resume_is_exact(tmp_path, seed):
    steps = 40
    target = int(np.random.default_rng(seed).integers(4, steps - 4))  # after the first checkpoint (3)
    work = tmp_path / "w"
    proc = subprocess.Popen([sys.executable, "-c", _TOY_RUN.format(tests=TESTS), str(work), str(steps)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = work / "metrics.jsonl"
    deadline, last = time.time() + 300, 0
    while time.time() < deadline and proc.poll() is None and last < target:
        if metrics.exists():
            lines = metrics.read_text().splitlines()
            last = json.loads(lines[-1])["step"] if lines and lines[-1].endswith("}") else last
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    saved = _steps_on_disk(work)
    assert saved and saved[-1] < steps
    record = []
    state, done = toy_run(work, steps=steps, ckpt_every=3, record=record)  # the same run, again
    assert record[0] == saved[-1] + 1 and done == steps
    ref, _ = toy_run(tmp_path / "ref", steps=steps, ckpt_every=3)
    np.testing.assert_array_equal(np.asarray(state["w"]), np.asarray(ref["w"]))
    assert [json.loads(line)["step"] for line in open(metrics)] == list(range(1, steps + 1))
    assert not _tmp_dirs(work)


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    from sage_jax.cli import main
    from tiny_models import make_class_folders, tiny_psp_file

    root = tmp_path_factory.mktemp("run_safety")
    tiny_psp_file(root / "psp.pt")
    make_class_folders(root / "seen", n_classes=6, per_class=4)
    assert main(["embed", "--checkpoint", str(root / "psp.pt"), "--data", str(root / "seen"),
                 "--out", str(root / "stats.npz"), "--quiet"]) == 0
    return root


def _dictionary_cmd(root, workdir, steps):
    return ["train-dictionary", "--checkpoint", str(root / "psp.pt"), "--data", str(root / "seen"),
            "--stats", str(root / "stats.npz"), "--workdir", str(workdir), "--steps", str(steps),
            "--batch-size", "4", "--a-length", "8", "--log-every", "1", "--ckpt-every", "4", "--quiet"]


@pytest.mark.heavy
def test_kill_9_at_a_random_step_then_resume_equals_an_uninterrupted_run(tiny_setup, tmp_path):
    from sage_jax import checkpoints
    from sage_jax.cli import main

    root, steps = tiny_setup, 40
    target = int(np.random.default_rng(20261122).integers(6, steps - 4))  # after the first checkpoint (4)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "sage_jax.cli", *_dictionary_cmd(root, killed, steps)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    metrics = killed / "metrics.jsonl"
    deadline = time.time() + 300
    last = 0
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists():
            lines = metrics.read_text().splitlines()
            last = json.loads(lines[-1])["step"] if lines and lines[-1].endswith("}") else last
            if last >= target:
                break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert 0 < _steps_on_disk(killed)[-1] < steps and last < steps
    assert main(_dictionary_cmd(root, killed, steps)) == 0          # resume: the same command
    assert main(_dictionary_cmd(root, tmp_path / "straight", steps)) == 0
    a = checkpoints.load_dictionary(killed / "dictionary")
    b = checkpoints.load_dictionary(tmp_path / "straight" / "dictionary")
    for x, y in zip(jax.tree_util.tree_leaves(a.variables), jax.tree_util.tree_leaves(b.variables)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))   # bit for bit
    assert [json.loads(line)["step"] for line in open(metrics)] == list(range(1, steps + 1))
    assert not _tmp_dirs(killed)


# ------------------------------------------------- a model save killed at any point
_KILLED_SAVE = r"""
import os, signal, sys
import jax
from sage_jax import checkpoints
from sage_jax.models import init_dictionary

path, point = sys.argv[1], sys.argv[2]
cfg = {"groups": [[0, 1], [2]], "style_dim": 8, "a_length": 4}
if point == "first":
    checkpoints.save_model(path, init_dictionary(cfg, jax.random.PRNGKey(0)))
    sys.exit(0)
import orbax.checkpoint as ocp
real_save, real_replace = ocp.StandardCheckpointer.save, os.replace

def save(self, target, *a, **k):
    if point == "orbax":   # killed while orbax writes the new variables
        os.makedirs(str(target) + ".orbax-checkpoint-tmp-1", exist_ok=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(self, target, *a, **k)

def replace(src, dst):
    if point == "commit" and str(dst).endswith("model.json"):   # new variables written, not yet named
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst)

ocp.StandardCheckpointer.save = save
os.replace = replace
checkpoints.save_model(path, init_dictionary(cfg, jax.random.PRNGKey(1)), overwrite=True)
"""


@pytest.mark.parametrize("point", ["orbax", "commit"])
def test_a_model_save_killed_midway_leaves_the_previous_model(tmp_path, point):
    """A model directory replaced by a save that is killed (while orbax writes, or with
    the new variables written but not yet named by model.json) still loads the
    previous model; the next save removes the leftovers."""
    from sage_jax import checkpoints
    from sage_jax.models import init_dictionary

    path = str(tmp_path / "dict")
    script = tmp_path / "save.py"
    script.write_text(_KILLED_SAVE)
    for p in ("first", point):
        res = subprocess.run([sys.executable, str(script), path, p], capture_output=True, text=True)
        assert res.returncode == (0 if p == "first" else -signal.SIGKILL), res.stderr[-2000:]
    cfg = {"groups": [[0, 1], [2]], "style_dim": 8, "a_length": 4}
    before = init_dictionary(cfg, jax.random.PRNGKey(0)).variables["params"]["A"]
    after = init_dictionary(cfg, jax.random.PRNGKey(1)).variables["params"]["A"]
    assert not np.array_equal(before, after)
    assert len(os.listdir(path)) > 2, "the killed save left something behind (it was killed after writing)"
    np.testing.assert_array_equal(checkpoints.load_dictionary(path).variables["params"]["A"], before)
    checkpoints.save_model(path, init_dictionary(cfg, jax.random.PRNGKey(1)), overwrite=True)
    np.testing.assert_array_equal(checkpoints.load_dictionary(path).variables["params"]["A"], after)
    assert sorted(os.listdir(path)) == ["model.json", "variables.3"]
