"""One code path from one CPU to many accelerators and many processes: a 1-D ``data``
mesh over every device of every process, batches sharded along it, parameters
replicated.

Several processes (JAX's multi-controller runtime): :func:`initialize` joins them
(every ``sage-jax`` command calls it); a batch size is the global batch, of which each
process reads its rows (:func:`process_rows`) and :func:`shard_batch` builds the global
array; independent work (classes, images) is split by index (:func:`process_share`);
process 0 writes (:func:`is_main`), the others wait at a :func:`barrier` where they read
what it wrote.

Test the multi-device path on CPU with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``, and several processes with
``sage-jax launch --processes 2 --devices-per-process 2 -- COMMAND``.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA = "data"


CACHE_ENV = "SAGE_JAX_COMPILATION_CACHE"
# A size limit is what makes JAX take its file lock around every cache read and write
# (jax._src.lru_cache: without one, a process can read an entry another is still
# writing). Least recently used entries are evicted beyond it. (The test workers'
# crashes once put down to such torn reads were a worker running out of memory
# mappings, see tests/conftest.py.)
CACHE_MAX_BYTES = 8 * 2**30


def enable_compilation_cache(path: str | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache, so a second run of the same command
    loads its compiled executables instead of compiling them again.

    The directory is ``path``, else ``$SAGE_JAX_COMPILATION_CACHE``, else
    ``$JAX_COMPILATION_CACHE_DIR`` (JAX's own setting, left as it is), else
    ``$XDG_CACHE_HOME/sage-jax/xla-lru`` (``~/.cache/sage-jax/xla-lru``; "lru": written
    with the size limit and lock below, which a directory written without them cannot take).
    ``SAGE_JAX_COMPILATION_CACHE=off`` disables it. Returns the directory used, or None.
    Executables that compile in under half a second are not stored."""
    setting = path or os.environ.get(CACHE_ENV, "")
    if setting.lower() in ("0", "off", "no", "false", "none"):
        return None
    if not setting and os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    if not setting:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        setting = os.path.join(base, "sage-jax", "xla-lru")
    try:
        os.makedirs(setting, exist_ok=True)
    except OSError:
        return None  # an unwritable cache is no reason to fail: compile as usual
    jax.config.update("jax_compilation_cache_dir", setting)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    if jax.config.jax_compilation_cache_max_size == -1:
        jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
    return setting


COORDINATOR_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
    """Join the other processes of a multi-process run (``jax.distributed.initialize``),
    or do nothing when this is the only one. Returns whether it joined.

    Where the setting comes from, the first that applies:

    * the arguments (the command-line flags ``--coordinator HOST:PORT --num-processes N
      --process-id I``);
    * ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (what
      ``sage-jax launch`` sets for the processes it starts);
    * SLURM's environment, when the job step has more than one task (``srun``): JAX
      reads the coordinator, the process count and this process's rank from it.

    Call it before anything touches a device. One process (``num_processes`` 1, no
    cluster environment, no coordinator) never starts the distributed runtime."""
    env = os.environ
    coordinator = coordinator or env.get("JAX_COORDINATOR_ADDRESS") or None
    num_processes = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
    process_id = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
    if jax.distributed.is_initialized():
        return True
    if coordinator or num_processes is not None or process_id is not None:
        if num_processes is None or (num_processes > 1 and (coordinator is None or process_id is None)):
            raise ValueError("a multi-process run needs all three of the coordinator address (HOST:PORT), the "
                             "number of processes and this process's id: pass --coordinator, --num-processes and "
                             "--process-id, or set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID")
        if num_processes < 1 or not 0 <= (process_id or 0) < num_processes:
            raise ValueError(f"process id {process_id} is not in [0, {num_processes}) processes")
        if num_processes == 1 and coordinator is None:
            return False
        # one process with a coordinator joins too: a one-process run of a
        # multi-process job, whose collectives are then those of the multi-process
        # runtime (on CPU, gloo: the same summation order as any split of its devices)
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id)
        return True
    if env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", "1")) not in ("", "1") and env.get("SLURM_PROCID"):
        jax.distributed.initialize()   # JAX's SLURM cluster detection
        return True
    return False


def _env_int(name: str) -> int | None:
    v = os.environ.get(name, "")
    if not v:
        return None
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"{name}={v!r} is not an integer") from None


def is_main() -> bool:
    """Whether this is the process that writes (process 0; the only one of a
    single-process run)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier ``name`` (nothing with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def broadcast(value):
    """Process 0's ``value`` (an array or a tree of them), on every process."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return multihost_utils.broadcast_one_to_all(value)


def process_rows(n: int, what: str = "batch") -> slice:
    """This process's contiguous share of ``n`` rows that split evenly over the
    processes (the rows of a global batch: process ``p`` of ``P`` reads rows
    ``[p n/P, (p+1) n/P)``, which land on its own devices)."""
    p, count = jax.process_index(), jax.process_count()
    if n % count:
        raise ValueError(f"a {what} of {n} does not split over {count} processes")
    k = n // count
    return slice(p * k, (p + 1) * k)


def process_share(n: int) -> range:
    """This process's share of ``n`` independent work items (classes, images, files):
    a contiguous block, the first ``n % P`` processes taking one more."""
    p, count = jax.process_index(), jax.process_count()
    base, extra = divmod(n, count)
    start = p * base + min(p, extra)
    return range(start, start + base + (p < extra))


def topology(global_batch: int | None = None) -> str:
    """One line for the log: processes, devices each, and the global batch with each
    process's and each device's share."""
    procs, local, total = jax.process_count(), jax.local_device_count(), jax.device_count()
    line = f"{procs} process{'es' if procs > 1 else ''} x {local} {jax.default_backend()} device{'s' if local > 1 else ''}" \
        f" ({total} in all)"
    if global_batch:
        line += (f"; global batch {global_batch}: {global_batch // procs} per process, "
                 f"{global_batch // total} per device")
    return line


def make_mesh(devices=None) -> Mesh:
    devices = np.asarray(devices if devices is not None else jax.devices())
    return Mesh(devices.reshape(-1), (DATA,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA))


def replicate(tree, mesh: Mesh):
    """Place every leaf of ``tree`` on every device of ``mesh``. With several processes
    each must pass the same values; arrays already spanning the mesh are re-placed by
    XLA, host values are built from this process's copy (``jax.device_put`` of a host
    value onto a mesh with one device per process made arrays whose shards could not
    be listed, which orbax's save needs)."""
    if jax.process_count() == 1:
        return jax.device_put(tree, replicated(mesh))
    rep = replicated(mesh)

    def put(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return jax.device_put(x, rep)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, rep, lambda index: host[index])

    return jax.tree_util.tree_map(put, tree)


def shard_batch(batch, mesh: Mesh):
    """Place this process's rows of a global batch (each leaf's leading axis: the
    global batch divided by the process count, from :func:`process_rows`) on the mesh,
    split along the data axis. The global array holds every process's rows in process
    order; with one process it is the batch itself."""
    sharding = data_sharded(mesh)

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(sharding, x, (x.shape[0] * jax.process_count(),) + x.shape[1:])

    return jax.tree_util.tree_map(put, batch)


def to_host(tree):
    """numpy copies of a tree of arrays: a replicated array's local copy (every process
    holds all of it), a sharded one gathered from every process."""
    def get(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return np.asarray(x)
        if x.sharding.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree_util.tree_map(get, tree)


def local_rows(x) -> np.ndarray:
    """This process's rows of an array sharded along its first axis (what it passed to
    :func:`shard_batch`), in order."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable and jax.process_count() == 1:
        return np.asarray(x)
    shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
    return np.concatenate([np.asarray(s.data) for s in shards])


def check_batch_size(global_batch: int, mesh: Mesh, name: str = "batch_size") -> None:
    """Refuse a global batch that does not split evenly over the mesh's devices, saying
    which sizes would."""
    n = mesh.devices.size
    if global_batch < 1 or global_batch % n:
        below = (global_batch // n) * n
        options = " or ".join(str(b) for b in (below, below + n) if b > 0)
        procs = jax.process_count()
        where = f"{procs} processes x {n // procs} devices" if procs > 1 else f"{n} device{'s' if n > 1 else ''}"
        raise ValueError(f"{name} {global_batch} (the global batch) does not split over the {n} devices "
                         f"({where}): use a multiple of {n}, e.g. {options}")


# ---- inference
# Inference (generate, invert, the class statistics) splits independent work items
# (classes, images, batches) over the processes by their index, and each process runs its
# items on its own devices, one fixed-shape piece of work per device: an item's numbers
# do not depend on how many processes or devices there are, nor on which one computed it.


def process_shares(n: int) -> list[range]:
    """Every process's :func:`process_share` of ``n`` items, in process order."""
    count = jax.process_count()
    base, extra = divmod(n, count)
    starts = [p * base + min(p, extra) for p in range(count + 1)]
    return [range(starts[p], starts[p + 1]) for p in range(count)]


def local_mesh() -> Mesh:
    """A 1-D ``data`` mesh over this process's own devices (``jax.local_devices()``):
    work placed on it needs no other process."""
    return Mesh(np.asarray(jax.local_devices()), (DATA,))


def put_local(rows, mesh: Mesh | None = None):
    """``rows`` (a numpy array whose leading axis is a multiple of the local device
    count) split along that axis over :func:`local_mesh`: device ``k`` holds rows
    ``[k m, (k+1) m)``. A jitted call on it runs on every local device at once."""
    mesh = mesh or local_mesh()
    return jax.device_put(np.asarray(rows), data_sharded(mesh))


def allgather_objects(obj) -> list:
    """Every process's ``obj`` (anything picklable: names, reports, small arrays), in
    process order, on every process (a collective; ``[obj]`` with one process)."""
    if jax.process_count() == 1:
        return [obj]
    import pickle

    from jax.experimental import multihost_utils

    data = np.frombuffer(pickle.dumps(obj), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.asarray(len(data), np.int32))).reshape(-1)
    buf = np.zeros(max(int(sizes.max()), 1), np.uint8)
    buf[:len(data)] = data
    everything = np.asarray(multihost_utils.process_allgather(buf))
    return [pickle.loads(everything[p, :int(sizes[p])].tobytes()) for p in range(len(sizes))]


def gather_rows(rows) -> np.ndarray:
    """Every process's ``rows`` (a numpy array; the leading axis may differ between
    processes, the rest and the dtype may not) concatenated in process order, on every
    process (a collective; ``rows`` itself with one process). The rows travel as their
    bytes, so any dtype arrives exactly (JAX would narrow float64 and int64)."""
    rows = np.ascontiguousarray(rows)
    if jax.process_count() == 1:
        return rows
    from jax.experimental import multihost_utils

    counts = np.asarray(multihost_utils.process_allgather(np.asarray(len(rows), np.int32))).reshape(-1)
    most = int(counts.max())
    width = int(np.prod(rows.shape[1:], dtype=np.int64)) * rows.dtype.itemsize
    if most == 0 or width == 0:
        return np.zeros((int(counts.sum()),) + rows.shape[1:], rows.dtype)
    padded = np.zeros((most, width), np.uint8)
    padded[:len(rows)] = rows.reshape(len(rows), -1).view(np.uint8).reshape(len(rows), width)
    everything = np.asarray(multihost_utils.process_allgather(padded))
    flat = np.concatenate([everything[p, :int(counts[p])] for p in range(len(counts))])
    return np.ascontiguousarray(flat).view(rows.dtype).reshape((len(flat),) + rows.shape[1:])
