"""One code path from one CPU to many accelerators: a 1-D ``data`` mesh over every
device, batches sharded along it, parameters replicated.

Test the multi-device path on CPU with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``. For several hosts call
:func:`initialize` first (``jax.distributed.initialize()``); each process then feeds
its share of the global batch.
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


def initialize() -> None:
    """``jax.distributed.initialize()`` when launched as one of several processes
    (``JAX_COORDINATOR_ADDRESS`` or a cluster environment); a no-op otherwise."""
    if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("SLURM_NTASKS", "1") not in ("", "1"):
        jax.distributed.initialize()


def make_mesh(devices=None) -> Mesh:
    devices = np.asarray(devices if devices is not None else jax.devices())
    return Mesh(devices.reshape(-1), (DATA,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA))


def replicate(tree, mesh: Mesh):
    """Place every leaf of ``tree`` on every device of ``mesh``."""
    return jax.device_put(tree, replicated(mesh))


def shard_batch(batch, mesh: Mesh):
    """Place this process's part of a batch (leading axis divisible by the local device
    count) on the mesh, split along the data axis."""
    sharding = data_sharded(mesh)

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(sharding, x)

    return jax.tree_util.tree_map(put, batch)


def check_batch_size(global_batch: int, mesh: Mesh) -> None:
    n = mesh.devices.size
    if global_batch % n:
        raise ValueError(f"batch size {global_batch} is not divisible by the {n} devices")
