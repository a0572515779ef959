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
