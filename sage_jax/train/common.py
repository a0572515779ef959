"""What every training loop shares: orbax checkpoints with resume and save-on-SIGTERM,
``metrics.jsonl`` plus TensorBoard event files, random batch indices from a key
(in-memory datasets live in :mod:`sage_jax.data.arrays`).

What a run guarantees (tests in ``tests/test_run_safety.py``):

* killed at any moment (``kill -9`` included, even in the middle of a save), running
  the same command again resumes from the last committed checkpoint and reaches
  exactly the parameters of an uninterrupted run. Orbax writes a checkpoint into
  ``<step>.orbax-checkpoint-tmp`` and renames it when complete; a leftover temporary
  directory is never restored and is removed when the run restarts;
* a metric that becomes NaN or infinite stops the run with :class:`RunStopped` naming
  the first such step and the metrics, and nothing non-finite is ever saved: the last
  good checkpoint stays the latest;
* a checkpoint that cannot be written (a full disk, ...) stops the run with
  :class:`RunStopped` naming the step and the cause; the previous checkpoint is intact
  and the partial one is removed.

TensorBoard event files are written by tensorboardX (no TensorFlow needed).
"""

from __future__ import annotations

import errno
import glob
import json
import os
import shutil
import signal
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sage_jax.errors import RunStopped

SCHEDULES = ("constant", "cosine")


def scheduled_rate(lr: float, schedule: str, steps: int, name: str = "lr_schedule"):
    """A learning rate for optax: ``lr`` itself ("constant") or cosine-decayed to 0 over
    ``steps`` ("cosine"); anything else refused, naming the config key ``name``."""
    if schedule not in SCHEDULES:
        raise ValueError(f"{name} must be one of {SCHEDULES}, got {schedule!r}")
    return optax.cosine_decay_schedule(lr, steps) if schedule == "cosine" else lr


# ---------------------------------------------------------------------- metrics
class MetricsLog:
    """``WORKDIR/metrics.jsonl`` (one JSON object per logged step, with ``step``) and
    TensorBoard scalars in ``WORKDIR/tensorboard``. Opening it at a resumed step drops
    lines logged after that step by the interrupted run. In a multi-process run only
    process 0 writes (the others check the values and write nothing)."""

    def __init__(self, workdir: str, start_step: int = 0, tensorboard: bool = True):
        from sage_jax import parallel

        self.path = os.path.join(workdir, "metrics.jsonl")
        self.writer = parallel.is_main()
        self._f = self.tb = None
        if not self.writer:
            return
        if os.path.exists(self.path):
            with open(self.path) as f:
                keep = [ln for ln in f if ln.strip() and json.loads(ln).get("step", 0) <= start_step]
            with open(self.path, "w") as f:
                f.writelines(keep)
        self._f = open(self.path, "a")
        self.tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, metrics: dict) -> dict:
        from sage_jax import parallel

        m = {k: float(v) for k, v in parallel.to_host(dict(metrics)).items()}
        bad = [k for k, v in m.items() if not np.isfinite(v)]
        if bad:
            raise FloatingPointError(f"{', '.join(bad)} became non-finite at step {step}")
        if not self.writer:
            return m
        self._f.write(json.dumps({"step": int(step), **m}) + "\n")
        self._f.flush()
        if self.tb:
            for tag, v in m.items():
                self.tb.add_scalar(tag, v, int(step))
            self.tb.flush()
        return m

    def close(self):
        if self._f:
            self._f.close()
        if self.tb:
            self.tb.close()


# ------------------------------------------------------------------ checkpoints
def _abstract(tree, sharding=None):
    return jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(np.shape(a), np.dtype(a.dtype) if hasattr(a, "dtype") else np.asarray(a).dtype,
                                       sharding=sharding), tree)


class Checkpoints:
    """Orbax checkpoints in ``WORKDIR/checkpoints``: keep ``keep``, save every
    ``every`` steps, at the end, and when SIGTERM arrives (the loop calls
    :meth:`check_stop` once per step, then saves and returns).

    Several processes save and restore together (orbax's multi-process checkpointing:
    every process calls it, orbax commits the directory once). A SIGTERM to any one of
    them is seen by all at the same step through JAX's preemption sync point (the
    distributed runtime catches the signal); a single process catches it itself."""

    def __init__(self, workdir: str, keep: int = 3, every: int = 1000):
        import orbax.checkpoint as ocp

        from sage_jax import parallel

        self._ocp = ocp
        self.every = every
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self._multi = jax.process_count() > 1
        # A run killed while saving leaves '<step>.orbax-checkpoint-tmp*': never a
        # checkpoint (orbax only lists renamed ones); removed here to free the space.
        if parallel.is_main():
            for tmp in glob.glob(os.path.join(self.directory, "*.orbax-checkpoint-tmp*")):
                shutil.rmtree(tmp, ignore_errors=True)
        parallel.barrier("checkpoints-clean")
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True))
        self.stop_requested = False
        self._previous = None
        self._pending: int | None = None  # step of a save that may still be in flight
        self._committed: int | None = self.manager.latest_step()

    def __enter__(self):
        def handler(signum, frame):
            self.stop_requested = True

        if self._multi:   # jax.distributed's preemption notifier owns SIGTERM
            self._previous = None
            return self
        try:
            self._previous = signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            self._guard(self.manager.wait_until_finished)
        except RunStopped:
            if exc_type is None:
                raise
        finally:
            if self._previous is not None:
                signal.signal(signal.SIGTERM, self._previous)
        return False

    def _guard(self, fn, *args, **kwargs):
        """Run an orbax call; a failed (possibly earlier, asynchronous) save becomes a
        RunStopped naming the step, with the partial directory removed."""
        try:
            out = fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any failure to write is reported the same way
            step = self._pending
            self._pending = None
            for tmp in glob.glob(os.path.join(self.directory, "*.orbax-checkpoint-tmp*")):
                shutil.rmtree(tmp, ignore_errors=True)
            latest = self._latest_on_disk()
            cause = "the disk is full" if isinstance(e, OSError) and e.errno == errno.ENOSPC else "it failed"
            kept = (f"the previous checkpoint (step {latest}) is intact; " if latest is not None
                    else "no earlier checkpoint exists; ")
            raise RunStopped(
                f"could not write the checkpoint of step {step} in {self.directory}: {cause} "
                f"({type(e).__name__}: {e}). The partial checkpoint was removed; {kept}"
                "fix the cause and run the same command again to resume.") from None
        if self._pending is not None and self.manager.latest_step() == self._pending:
            self._committed = self._pending
        return out

    def _latest_on_disk(self) -> int | None:
        steps = [int(d) for d in os.listdir(self.directory) if d.isdigit()] if os.path.isdir(self.directory) else []
        return max(steps) if steps else None

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore(self, like, sharding=None) -> tuple[dict, int]:
        """(state, step) of the latest checkpoint, or (``like``, 0) when there is none;
        restored with ``sharding`` (e.g. replicated over the mesh) when given, whatever
        the number of processes and devices that saved it."""
        step = self.manager.latest_step()
        if step is None:
            return like, 0
        state = self.manager.restore(step, args=self._ocp.args.StandardRestore(_abstract(like, sharding)))
        return state, int(step)

    def check_stop(self, step: int) -> bool:
        """Whether to stop after ``step`` (SIGTERM arrived); with several processes
        every one of them answers the same at the same step (call it at every step)."""
        if self._multi:
            from jax.experimental import multihost_utils

            if multihost_utils.reached_preemption_sync_point(step):
                self.stop_requested = True
        return self.stop_requested

    def should_save(self, step: int, force: bool = False) -> bool:
        return force or self.stop_requested or step % self.every == 0

    def maybe_save(self, step: int, state, force: bool = False, mesh=None) -> bool:
        """Save ``state`` when :meth:`should_save`; with ``mesh``, leaves held by this
        process alone (a step counter made on the host) are first replicated over it,
        as a multi-process save needs global arrays."""
        if self.should_save(step, force):
            if mesh is not None and self._multi:
                from sage_jax import parallel

                state = parallel.replicate(state, mesh)
            self._guard(self.manager.save, step, args=self._ocp.args.StandardSave(state), force=True)
            self._pending = step
            return True
        return False


# ------------------------------------------------------------------- batches
def batch_indices(key, step: int, n: int, batch_size: int) -> np.ndarray:
    """The dataset indices of step ``step``: a function of the key and the step only,
    so a resumed run sees the same batches."""
    k = jax.random.fold_in(key, step)
    return np.asarray(jax.random.choice(k, n, (batch_size,), replace=batch_size > n))


# ------------------------------------------------------------------ the loop
@jax.jit
def first_bad(bad, step, m):
    """The first step whose metrics are not all finite (-1: none yet), kept on the
    device so that checking every step costs no host round trip."""
    ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree_util.tree_leaves(m)]))
    return jnp.where((bad < 0) & ~ok, step, bad)


def state_finite(state) -> bool:
    """Whether every floating-point leaf of ``state`` is finite, checked on the host
    (each device array's local copy; the state is replicated). It runs only before a
    checkpoint, whose save copies the state to the host anyway; as one jitted check it
    was one reduction per leaf (hundreds with the optimiser's moments), and compiling
    that took 15-20 s per model on a CPU."""
    for x in jax.tree_util.tree_leaves(state):
        local = x.addressable_data(0) if isinstance(x, jax.Array) else x
        a = np.asarray(local)
        if jnp.issubdtype(a.dtype, jnp.inexact) and not np.isfinite(a).all():
            return False
    return True


def run_loop(*, workdir: str, state, step_fn, dataset, batch_size: int, data_key, mesh, steps: int,
             log_every: int, ckpt_every: int, keep: int, desc: str, quiet: bool = False,
             stop_after: int | None = None, after_step=None, postfix=None):
    """The loop every trainer shares: restore the latest checkpoint (or start from
    ``state``), then for each step read the batch of :func:`batch_indices` (prefetched
    on a thread), call ``step_fn(state, images, labels, step) -> (state, metrics)``
    with the batch sharded over ``mesh``, log every ``log_every`` steps, call
    ``after_step(state, done)`` (a dict it returns is logged at that step), and checkpoint every ``ckpt_every`` steps, at the end
    and on SIGTERM (then return early). ``stop_after`` ends the run after that many
    steps of this call, as an interruption would. Returns ``(state, last step)``.

    ``batch_size`` is the global batch. With several processes every process computes
    the same indices, reads only its rows of them (:func:`sage_jax.parallel.process_rows`)
    and the global array is built from the processes' rows, so the examples of a step
    and their order are the same for any number of processes; only process 0 writes the
    log, and ``after_step`` runs on process 0 only (what it computes must not need the
    other processes)."""
    import concurrent.futures

    from tqdm import tqdm

    from sage_jax import parallel

    parallel.check_batch_size(batch_size, mesh)
    rows = parallel.process_rows(batch_size)
    main = parallel.is_main()
    if main:
        os.makedirs(workdir, exist_ok=True)
    parallel.barrier("workdir")

    def stop_if_not_finite(ckpt, done, saving):
        b = int(parallel.to_host(bad))
        finite_state = bool(state_finite(state)) if saving else True
        if b < 0 and finite_state:
            return
        names = [k for k, v in parallel.to_host(dict(metrics)).items() if not np.all(np.isfinite(v))]
        where = f"at step {b}" if b >= 0 else f"by step {done} (parameters)"
        ckpt._guard(ckpt.manager.wait_until_finished)  # the last good save, if in flight, completes
        latest = ckpt._latest_on_disk()
        raise RunStopped(
            f"{desc}: non-finite training values {where}" + (f" ({', '.join(names)} now NaN/Inf)" if names else "")
            + f"; stopped at step {done} without saving. The last good checkpoint "
            + (f"(step {latest}) is kept in {ckpt.directory}" if latest is not None else "does not exist")
            + "; lower the learning rate or check the data, then run again.")

    with Checkpoints(workdir, keep, ckpt_every) as ckpt:
        state, start = ckpt.restore(state, parallel.replicated(mesh))
        state = parallel.replicate(state, mesh)
        log = MetricsLog(workdir, start)
        if main and not quiet and start < steps:
            print(f"{desc}: {parallel.topology(batch_size)}", flush=True)
        end = steps if stop_after is None else min(steps, start + stop_after)
        done = start
        metrics: dict = {}
        bad = jnp.asarray(-1, jnp.int32)
        try:
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                def fetch(step):  # this process's rows of the step's global batch
                    return pool.submit(dataset.load_batch, batch_indices(data_key, step, len(dataset), batch_size)[rows])

                nxt = fetch(start) if start < end else None
                bar = tqdm(range(start, end), initial=start, total=steps, desc=desc, unit="step",
                           disable=quiet or not main)
                interval_start, interval_first, waited = time.perf_counter(), start, 0.0
                for step in bar:
                    t_wait = time.perf_counter()
                    x, y = nxt.result()
                    waited += time.perf_counter() - t_wait
                    if step + 1 < end:
                        nxt = fetch(step + 1)
                    x, y = parallel.shard_batch((x, y), mesh)
                    state, m = step_fn(state, x, y, step)
                    metrics.update(m)
                    done = step + 1
                    bad = first_bad(bad, done, m)
                    saving = ckpt.should_save(done, force=done == end)
                    if done % log_every == 0 or done == end or saving:
                        stop_if_not_finite(ckpt, done, saving)
                    if done % log_every == 0 or done == end:
                        jax.block_until_ready(state)  # the interval's wall time is its steps' real time
                        now = time.perf_counter()
                        timing = {"interval_s": now - interval_start, "interval_steps": done - interval_first,
                                  "data_wait_share": waited / max(now - interval_start, 1e-9)}
                        logged = log.write(done, {**metrics, **timing,
                                                  "skipped_images": len(getattr(dataset, "skipped", {}))})
                        interval_start, interval_first, waited = time.perf_counter(), done, 0.0
                        if postfix:
                            bar.set_postfix(**postfix(logged))
                    if after_step and main:
                        extra = after_step(state, done)
                        if extra:  # e.g. sample-quality measures: logged at this step too
                            log.write(done, extra)
                    ckpt.check_stop(done)
                    saved = ckpt.maybe_save(done, state, force=done == end, mesh=mesh)
                    if ckpt.stop_requested and saved:
                        who = f"process {jax.process_index()}: " if jax.process_count() > 1 else ""
                        print(f"{who}stopped by SIGTERM at step {done}; checkpoint saved", file=sys.stderr, flush=True)
                        break
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise RunStopped(f"{desc}: the disk is full ({e}); the last checkpoint in {ckpt.directory} is "
                                 "intact: free space and run the same command again to resume.") from None
            raise
        finally:
            log.close()
    return state, done
