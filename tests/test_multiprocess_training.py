"""Training as several processes (JAX's multi-controller runtime, CPU collectives on
localhost).

What is compared, and why so:

* Where every example lands: ``run_loop`` as 2 processes x 2 devices and as 1 process x
  4 devices puts the same example at every position of every global batch, each
  process reading only its own rows (exact: the "images" are their indices).
* The product's training commands (GAN, both recipes, and encoder) as 2 processes x 1
  device against 1 process x 2 devices: bit for bit. Each device computes the same
  partial sums in both layouts; a collective then adds two of them, and a + b is the
  same whatever the algorithm. With 4 devices the collectives add four partial sums in
  an order of their own (XLA's in-process all-reduce and gloo's differ, and gloo's
  differs between 1 x 4 and 2 x 2 for some fused all-reduces although the compiled
  programs are identical), so 2 x 2 against 1 x 4 agree only to float32 summation
  order, and a tolerance could not see a duplicated batch (the mean of a batch and of
  the batch twice are the same number): the exact checks above are what can fail.
* 2 x 2 against itself: kill -9 of one process then a resume, and a SIGTERM to one
  process then a resume, give the uninterrupted run's parameters bit for bit; a
  checkpoint saved by 2 x 2 restores on 1 x 4 to the same parameters, and back.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import numpy as np
import pytest

import multiprocess as mp
from fixture_utils import fixture

pytestmark = pytest.mark.heavy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny.py")
STEPS = 16
DATA = ["--config.data.samples_per_class=4", "--config.data.num_seen=8", "--config.data.num_unseen=2"]
MICRO = ["--config.data.size=8", "--config.model.generator.size=8", "--config.model.generator.style_dim=8",
         "--config.model.generator.channels=((4, 8), (8, 8))"]
GAN = ["train-gan", "--config", TINY, "--config.gan.recipe=adversarial", "--config.gan.batch_size=8",
       "--config.gan.log_every=1", "--config.gan.ckpt_every=4", "--config.gan.sample_every=0",
       "--config.gan.eval_every=0", "--config.gan.d_reg_every=2", "--config.gan.g_reg_every=2", *MICRO, *DATA]
TIMING = ("interval_s", "interval_steps", "data_wait_share")


def gan(workdir, steps=STEPS):
    return [*GAN, f"--config.gan.steps={steps}", "--workdir", str(workdir)]


def run(args, processes, devices, cwd, distributed=True):
    os.makedirs(cwd, exist_ok=True)
    mp.run_cli(args, processes, devices, str(cwd), distributed=distributed)


def variables(model_dir):
    from sage_jax.checkpoints.orbax_io import read_model_dir

    meta, v = read_model_dir(model_dir)
    meta = {k: x for k, x in meta.items() if k != "variables"}
    return meta, v


def flat(tree, prefix=""):
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(flat(v, f"{prefix}/{k}"))
        return out
    return {prefix: np.asarray(tree)}


def assert_same_model(a, b):
    """Two model directories hold the same description and bit-identical variables."""
    ma, va = variables(a)
    mb, vb = variables(b)
    assert ma == mb
    fa, fb = flat(va), flat(vb)
    assert fa.keys() == fb.keys()
    differing = [k for k in fa if not np.array_equal(fa[k], fb[k])]
    assert not differing, f"{len(differing)} of {len(fa)} arrays differ, e.g. {differing[:3]}"


def metrics(workdir):
    return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


def files(workdir):
    """The run's files, relative, without the orbax internals of the saved models and checkpoints."""
    out = set()
    for root, dirs, fs in os.walk(workdir):
        rel = os.path.relpath(root, workdir)
        if rel.startswith(("checkpoints", "tensorboard")) or "variables." in rel:
            continue
        out.update(os.path.normpath(os.path.join(rel, f)) for f in fs)
    return out


def checkpoint_steps(workdir):
    return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


def test_every_example_lands_where_one_process_puts_it(tmp_path):
    """run_loop as 2 x 2 and as 1 x 4: the same example at every position of every
    global batch, and each process read only its half of each batch."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mp_scripts", "loop_placement.py")
    steps, batch = 6, 8
    for name, procs, devs in (("2x2", 2, 2), ("1x4", 1, 4)):
        os.makedirs(tmp_path / name)
        mp.run([script, str(tmp_path / name), str(steps), str(batch)], procs, devs, str(tmp_path / name))
    a, b = np.load(tmp_path / "2x2" / "seen.npy"), np.load(tmp_path / "1x4" / "seen.npy")
    assert a.shape == (steps, batch) and a.min() >= 1
    np.testing.assert_array_equal(a, b)
    one = [json.loads(line) for line in open(tmp_path / "1x4" / "p0.loads")]
    halves = [[json.loads(line) for line in open(tmp_path / "2x2" / f"p{i}.loads")] for i in range(2)]
    assert len(one) == len(halves[0]) == len(halves[1]) == steps
    for whole, first, second in zip(one, *halves):
        assert first + second == whole and len(first) == len(second) == batch // 2
    np.testing.assert_array_equal(a - 1, np.asarray(one))
    assert [m["step"] for m in metrics(tmp_path / "2x2" / "w")] == list(range(1, steps + 1))


RECON = ["train-gan", "--config", TINY, "--config.gan.recipe=reconstruction", "--config.gan.steps=4",
         "--config.gan.batch_size=8", "--config.gan.log_every=1", "--config.gan.ckpt_every=2",
         "--config.gan.eval_every=0", "--config.gan.mapping_steps=5", "--config.gan.n_sample=4", *MICRO, *DATA]
ENCODER = ["train-encoder", "--config", TINY, "--generator", fixture("tiny_rosinality_ckpt.pt"),
           "--config.psp.steps=3", "--config.psp.batch_size=8", "--config.psp.log_every=1",
           "--config.psp.ckpt_every=2", "--config.psp.latent_avg_samples=64",
           "--config.model.encoder.num_layers=18", "--config.model.encoder.mode=ir",
           "--config.model.encoder.widths=(8, 8, 8, 8)", *DATA]


def _pair(args, tmp_path):
    """``args`` as 2 processes x 1 device (a) and as 1 process x 2 devices (b)."""
    run([*args, "--workdir", str(tmp_path / "a" / "w")], 2, 1, tmp_path / "a")
    run([*args, "--workdir", str(tmp_path / "b" / "w")], 1, 2, tmp_path / "b", distributed=False)
    return tmp_path / "a" / "w", tmp_path / "b" / "w"


def _same_run(a, b, steps):
    ma, mb = metrics(a), metrics(b)
    assert [m["step"] for m in ma] == steps, "each step logged once"
    for x, y in zip(ma, mb):
        assert {k: v for k, v in x.items() if k not in TIMING} == {k: v for k, v in y.items() if k not in TIMING}
    assert files(a) == files(b)


def test_gan_two_processes_train_as_one(tmp_path):
    a, b = _pair(gan(None, 6)[:-2], tmp_path)
    for model in ("g_ema", "d"):
        assert_same_model(a / model, b / model)
        assert sorted(os.listdir(a / model)) == ["model.json", "variables.1"]   # one save, committed once
    _same_run(a, b, list(range(1, 7)))
    assert files(a) == {"config.json", "metrics.jsonl", "g_ema/model.json", "d/model.json"}
    assert checkpoint_steps(a) == checkpoint_steps(b) == [4, 6]
    log = open(tmp_path / "a" / "p0.log").read()
    assert "2 processes x 1 cpu device (2 in all); global batch 8: 4 per process, 4 per device" in log
    assert "training StyleGAN2" not in open(tmp_path / "a" / "p1.log").read(), "process 1 prints nothing"


def test_reconstruction_recipe_two_processes_train_as_one(tmp_path):
    a, b = _pair(RECON, tmp_path)
    assert_same_model(a / "g_ema", b / "g_ema")
    _same_run(a, b, [1, 2, 3, 4, 4])   # + the fitted mapping's row
    x, y = np.load(a / "class_sampler.npz"), np.load(b / "class_sampler.npz")
    for k in x.files:
        np.testing.assert_array_equal(x[k], y[k])


def test_encoder_two_processes_train_as_one(tmp_path):
    from sage_jax.checkpoints import psp_part

    a, b = _pair(ENCODER, tmp_path)
    for part in ("encoder", "decoder"):
        assert_same_model(psp_part(a / "psp", part), psp_part(b / "psp", part))
    _same_run(a, b, [1, 2, 3])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The adversarial GAN stage, STEPS steps, as 2 processes x 2 devices."""
    root = tmp_path_factory.mktemp("mp")
    run(gan(root / "w"), 2, 2, root)
    return root / "w"


def _from_checkpoint(src, dst, step):
    """A copy of a run's workdir holding only its checkpoint of ``step`` (and no models)."""
    shutil.copytree(src, dst)
    for s in checkpoint_steps(dst):
        if s != step:
            shutil.rmtree(dst / "checkpoints" / str(s))
    for model in ("g_ema", "d"):
        shutil.rmtree(dst / model, ignore_errors=True)


def test_checkpoints_move_between_layouts(reference, tmp_path):
    """A checkpoint of 2 x 2 restored on 1 x 4 (nothing left to train: the models are
    written from the restored state) is the 2 x 2 run's final state, and a 1 x 4 run's
    checkpoint restored on 2 x 2 is that run's."""
    _from_checkpoint(reference, tmp_path / "a" / "w", STEPS)
    run(gan(tmp_path / "a" / "w"), 1, 4, tmp_path / "a")
    for model in ("g_ema", "d"):
        assert_same_model(tmp_path / "a" / "w" / model, reference / model)
    run(gan(tmp_path / "b" / "w", 4), 1, 4, tmp_path / "b", distributed=False)
    _from_checkpoint(tmp_path / "b" / "w", tmp_path / "c" / "w", 4)
    run(gan(tmp_path / "c" / "w", 4), 2, 2, tmp_path / "c")
    for model in ("g_ema", "d"):
        assert_same_model(tmp_path / "c" / "w" / model, tmp_path / "b" / "w" / model)


def _wait_for(predicate, procs, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if any(p.poll() is not None for p in procs):
            raise AssertionError("a process ended early")
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_sigterm_to_one_process_then_kill_9_of_one_then_resume(reference, tmp_path):
    """A SIGTERM to process 1 alone: both processes stop after the same step with a
    checkpoint of it (JAX's preemption sync point). The same command resumes; kill -9 of
    process 1 once a later checkpoint is committed (process 0 next, as a launcher or the
    cluster does when a task dies); the command again, to the end: the uninterrupted
    run's parameters, every step logged once."""
    work = tmp_path / "w"
    long = 400   # long enough to be stopped mid-run; finished with STEPS (the rate is constant)
    procs = mp.start(["-m", "sage_jax.cli", *gan(work, long)], 2, 2, str(tmp_path), distributed=True)
    _wait_for(lambda: (work / "metrics.jsonl").exists() and (work / "metrics.jsonl").read_text().count("\n") >= 2,
              procs)
    procs[1].send_signal(signal.SIGTERM)
    mp.wait(procs, 300, str(tmp_path))
    logs = [open(tmp_path / f"p{i}.log").read() for i in range(2)]
    stops = [[int(line.rsplit("step ", 1)[1].split(";")[0]) for line in log.splitlines()
              if "stopped by SIGTERM at step" in line] for log in logs]
    assert len(stops[0]) == len(stops[1]) == 1 and stops[0] == stops[1], stops
    step = stops[0][0]
    assert 2 <= step < STEPS - 4, step
    assert max(checkpoint_steps(work)) == step
    assert metrics(work)[-1]["step"] == step
    for model in ("g_ema", "d"):   # the models of the stopped run, at its step
        shutil.rmtree(work / model)

    procs = mp.start(["-m", "sage_jax.cli", *gan(work, long)], 2, 2, str(tmp_path), distributed=True)
    try:
        _wait_for(lambda: max(checkpoint_steps(work)) > step, procs)
        procs[1].send_signal(signal.SIGKILL)
        procs[0].send_signal(signal.SIGKILL)
    finally:
        for p in procs:
            p.wait(timeout=60)
    assert [p.returncode for p in procs] == [-signal.SIGKILL] * 2
    assert not (work / "g_ema").exists()
    assert step < max(checkpoint_steps(work)) < STEPS, checkpoint_steps(work)

    run(gan(work), 2, 2, tmp_path)
    for model in ("g_ema", "d"):
        assert_same_model(work / model, reference / model)
    assert [m["step"] for m in metrics(work)] == list(range(1, STEPS + 1))
