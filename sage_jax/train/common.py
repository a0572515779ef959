"""What every training loop shares: orbax checkpoints with resume and save-on-SIGTERM,
``metrics.jsonl`` plus TensorBoard event files, random batch indices from a key,
in-memory datasets.

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

TensorBoard files are written by a small dependency-free writer (TFRecord framing with
masked CRC-32C, ``Event``/``Summary`` protobufs encoded by hand): TensorBoard reads
them, and no TensorFlow is needed to write them.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import shutil
import signal
import socket
import struct
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


# ------------------------------------------------------------------ TensorBoard
def _crc32c_table():
    poly = 0x82F63B78
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, wire: int, payload: bytes) -> bytes:
    return _varint((num << 3) | wire) + payload


def _event(wall_time: float, step: int, *, summary: bytes | None = None, file_version: str | None = None) -> bytes:
    msg = _field(1, 1, struct.pack("<d", wall_time)) + _field(2, 0, _varint(step))
    if file_version is not None:
        v = file_version.encode()
        msg += _field(3, 2, _varint(len(v)) + v)
    if summary is not None:
        msg += _field(5, 2, _varint(len(summary)) + summary)
    return msg


def _scalar_summary(tag: str, value: float) -> bytes:
    t = tag.encode()
    val = _field(1, 2, _varint(len(t)) + t) + _field(2, 5, struct.pack("<f", value))
    return _field(1, 2, _varint(len(val)) + val)


class TensorBoardWriter:
    """Scalars to ``logdir/events.out.tfevents.*`` in TensorBoard's format."""

    def __init__(self, logdir: str):
        os.makedirs(logdir, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        self.path = os.path.join(logdir, name)
        self._f = open(self.path, "ab")
        self._write(_event(time.time(), 0, file_version="brain.Event:2"))

    def _write(self, record: bytes) -> None:
        header = struct.pack("<Q", len(record))
        self._f.write(header + struct.pack("<I", _masked_crc(header)) + record +
                      struct.pack("<I", _masked_crc(record)))

    def scalars(self, step: int, values: dict) -> None:
        for tag, v in values.items():
            self._write(_event(time.time(), step, summary=_scalar_summary(tag, float(v))))
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def read_tensorboard_scalars(path: str) -> list[tuple[int, str, float]]:
    """(step, tag, value) of the scalar events of a file (checks both CRCs)."""
    out = []
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        header = data[pos:pos + 8]
        (n,) = struct.unpack("<Q", header)
        if struct.unpack("<I", data[pos + 8:pos + 12])[0] != _masked_crc(header):
            raise ValueError("bad length CRC")
        rec = data[pos + 12:pos + 12 + n]
        if struct.unpack("<I", data[pos + 12 + n:pos + 16 + n])[0] != _masked_crc(rec):
            raise ValueError("bad record CRC")
        pos += 16 + n
        out.extend(_decode_event(rec))
    return out


def _read_varint(b: bytes, i: int) -> tuple[int, int]:
    shift = n = 0
    while True:
        c = b[i]
        n |= (c & 0x7F) << shift
        i += 1
        if not c & 0x80:
            return n, i
        shift += 7


def _fields(b: bytes):
    i = 0
    while i < len(b):
        key, i = _read_varint(b, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _read_varint(b, i)
        elif wire == 1:
            v, i = b[i:i + 8], i + 8
        elif wire == 5:
            v, i = b[i:i + 4], i + 4
        elif wire == 2:
            n, i = _read_varint(b, i)
            v, i = b[i:i + n], i + n
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield num, v


def _decode_event(rec: bytes):
    step, summary = 0, None
    for num, v in _fields(rec):
        if num == 2:
            step = v
        elif num == 5:
            summary = v
    if summary is None:
        return []
    out = []
    for num, v in _fields(summary):
        if num == 1:
            tag, value = None, None
            for n2, v2 in _fields(v):
                if n2 == 1:
                    tag = v2.decode()
                elif n2 == 2:
                    value = struct.unpack("<f", v2)[0]
            out.append((step, tag, value))
    return out


# ---------------------------------------------------------------------- metrics
class MetricsLog:
    """``WORKDIR/metrics.jsonl`` (one JSON object per logged step, with ``step``) and
    TensorBoard scalars in ``WORKDIR/tensorboard``. Opening it at a resumed step drops
    lines logged after that step by the interrupted run."""

    def __init__(self, workdir: str, start_step: int = 0, tensorboard: bool = True):
        self.path = os.path.join(workdir, "metrics.jsonl")
        if os.path.exists(self.path):
            with open(self.path) as f:
                keep = [ln for ln in f if ln.strip() and json.loads(ln).get("step", 0) <= start_step]
            with open(self.path, "w") as f:
                f.writelines(keep)
        self._f = open(self.path, "a")
        self.tb = TensorBoardWriter(os.path.join(workdir, "tensorboard")) if tensorboard else None

    def write(self, step: int, metrics: dict) -> dict:
        m = {k: float(v) for k, v in metrics.items()}
        bad = [k for k, v in m.items() if not np.isfinite(v)]
        if bad:
            raise FloatingPointError(f"{', '.join(bad)} became non-finite at step {step}")
        self._f.write(json.dumps({"step": int(step), **m}) + "\n")
        self._f.flush()
        if self.tb:
            self.tb.scalars(step, m)
        return m

    def close(self):
        self._f.close()
        if self.tb:
            self.tb.close()


# ------------------------------------------------------------------ checkpoints
def _abstract(tree):
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype), tree)


class Checkpoints:
    """Orbax checkpoints in ``WORKDIR/checkpoints``: keep ``keep``, save every
    ``every`` steps, at the end, and when SIGTERM arrives (the loop asks
    :attr:`stop_requested` and then saves and returns)."""

    def __init__(self, workdir: str, keep: int = 3, every: int = 1000):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.every = every
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        # A run killed while saving leaves '<step>.orbax-checkpoint-tmp*': never a
        # checkpoint (orbax only lists renamed ones); removed here to free the space.
        for tmp in glob.glob(os.path.join(self.directory, "*.orbax-checkpoint-tmp*")):
            shutil.rmtree(tmp, ignore_errors=True)
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

    def restore(self, like) -> tuple[dict, int]:
        """(state, step) of the latest checkpoint, or (``like``, 0) when there is none."""
        step = self.manager.latest_step()
        if step is None:
            return like, 0
        state = self.manager.restore(step, args=self._ocp.args.StandardRestore(_abstract(like)))
        return state, int(step)

    def should_save(self, step: int, force: bool = False) -> bool:
        return force or self.stop_requested or step % self.every == 0

    def maybe_save(self, step: int, state, force: bool = False) -> bool:
        if self.should_save(step, force):
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


class ArrayDataset:
    """Images (N, S, S, 3) in [-1, 1] and labels in memory, with the FolderDataset
    ``load_batch`` interface."""

    def __init__(self, images, labels, class_names=None):
        self.images = np.asarray(images, np.float32)
        self.labels_array = np.asarray(labels, np.int32)
        self.class_names = list(class_names) if class_names is not None else \
            [str(i) for i in range(int(self.labels_array.max()) + 1)]
        self.size = self.images.shape[1]
        self.skipped: dict = {}

    def __len__(self):
        return len(self.images)

    @property
    def num_classes(self):
        return len(self.class_names)

    def load_batch(self, indices, pool=None):
        idx = np.asarray(list(indices))
        return self.images[idx], self.labels_array[idx]

    def batches(self, batch_size: int, **_):
        """Every image once, in order, in fixed-size batches (the last padded with
        label -1), as ``FolderDataset.batches``."""
        return ordered_batches(self, batch_size)


def ordered_batches(dataset, batch_size: int):
    n = len(dataset)
    for start in range(0, n, batch_size):
        idx = list(range(start, min(start + batch_size, n)))
        k = len(idx)
        imgs, labels = dataset.load_batch(idx + [idx[-1]] * (batch_size - k))
        labels = np.array(labels)
        labels[k:] = -1
        yield imgs, labels


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
    steps of this call, as an interruption would. Returns ``(state, last step)``."""
    import concurrent.futures

    from tqdm import tqdm

    from sage_jax import parallel

    parallel.check_batch_size(batch_size, mesh)
    os.makedirs(workdir, exist_ok=True)

    def stop_if_not_finite(ckpt, done, saving):
        b = int(bad)
        finite_state = bool(state_finite(state)) if saving else True
        if b < 0 and finite_state:
            return
        names = [k for k, v in metrics.items() if not np.all(np.isfinite(np.asarray(v)))]
        where = f"at step {b}" if b >= 0 else f"by step {done} (parameters)"
        ckpt._guard(ckpt.manager.wait_until_finished)  # the last good save, if in flight, completes
        latest = ckpt._latest_on_disk()
        raise RunStopped(
            f"{desc}: non-finite training values {where}" + (f" ({', '.join(names)} now NaN/Inf)" if names else "")
            + f"; stopped at step {done} without saving. The last good checkpoint "
            + (f"(step {latest}) is kept in {ckpt.directory}" if latest is not None else "does not exist")
            + "; lower the learning rate or check the data, then run again.")

    with Checkpoints(workdir, keep, ckpt_every) as ckpt:
        state, start = ckpt.restore(state)
        state = parallel.replicate(state, mesh)
        log = MetricsLog(workdir, start)
        end = steps if stop_after is None else min(steps, start + stop_after)
        done = start
        metrics: dict = {}
        bad = jnp.asarray(-1, jnp.int32)
        try:
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                def fetch(step):
                    return pool.submit(dataset.load_batch, batch_indices(data_key, step, len(dataset), batch_size))

                nxt = fetch(start) if start < end else None
                bar = tqdm(range(start, end), initial=start, total=steps, desc=desc, unit="step", disable=quiet)
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
                    if after_step:
                        extra = after_step(state, done)
                        if extra:  # e.g. sample-quality measures: logged at this step too
                            log.write(done, extra)
                    saved = ckpt.maybe_save(done, state, force=done == end)
                    if ckpt.stop_requested and saved:
                        print(f"stopped by SIGTERM at step {done}; checkpoint saved", flush=True)
                        break
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise RunStopped(f"{desc}: the disk is full ({e}); the last checkpoint in {ckpt.directory} is "
                                 "intact: free space and run the same command again to resume.") from None
            raise
        finally:
            log.close()
    return state, done
