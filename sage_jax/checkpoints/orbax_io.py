"""Saving and loading converted models with orbax.

A saved model is a directory::

    DIR/model.json       {"format": "sage-jax-model", "version": 2, "kind": ..., "config": {...},
                          "extra": {...}, "variables": "variables.N"}
    DIR/variables.N/     orbax checkpoint of the variables tree (params, noise buffers, ...)

``model.json`` names the variables it describes. A save writes a new ``variables.N``
(orbax's own save: every process of a multi-process run takes part, orbax writes under
a temporary name and commits it when complete), then process 0 replaces ``model.json``
(a new file renamed over the old one) and removes what the old one named. A save killed
at any moment leaves the previous model whole: ``model.json`` names either the old
variables or the new ones, never a half-written directory. Version 1 directories (the
variables in ``DIR/variables/``) are still read.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np

from sage_jax.checkpoints.torch_reader import CheckpointError

FORMAT = "sage-jax-model"
VERSION = 2


def save_model(path: str | os.PathLike, model, *, overwrite: bool = False, extra: dict | None = None) -> str:
    """Write ``model`` (any sage-jax model: generator, discriminator, encoder, dictionary) to ``path``.

    Every process of a multi-process run calls it (with the same model); only process 0
    writes ``model.json``. Replacing an existing model (``overwrite``) is atomic: an
    interrupted save keeps the previous one readable.
    """
    import orbax.checkpoint as ocp

    meta = {"format": FORMAT, "version": VERSION, "kind": model.kind, "config": model.config}
    if extra:
        meta["extra"] = extra
    variables = _to_numpy(model.variables)

    def fill(target):
        ckptr = ocp.StandardCheckpointer()
        ckptr.save(target, variables)
        ckptr.wait_until_finished()

    return commit_versioned(path, "model.json", "variables", meta, fill, overwrite)


def commit_versioned(path, descriptor: str, prefix: str, meta: dict, fill, overwrite: bool = False) -> str:
    """Write a directory whose ``descriptor`` file (JSON: ``meta`` plus
    ``{prefix: "<prefix>.N"}``) names the sub-directory holding its contents.

    ``fill(target)`` writes the contents into ``path/<prefix>.N``, a new name; it is
    called by every process (saves inside it may be collective). Then process 0 writes
    the descriptor under a temporary name and renames it over the old one, the commit,
    and removes everything else in ``path`` (the previous contents, leftovers of
    interrupted saves). Every process returns after the commit."""
    from sage_jax import parallel

    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists (pass overwrite=True to replace it)")
    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(f"{path} exists and is not a directory")
    main = parallel.is_main()
    parallel.barrier(f"save-checked:{path}")   # every process looked before any creates it
    if main:
        os.makedirs(path, exist_ok=True)
    parallel.barrier(f"save-begin:{path}")
    version = int(parallel.broadcast(np.int32(_next_version(path, prefix))))
    name = f"{prefix}.{version}"
    fill(os.path.join(path, name))
    parallel.barrier(f"save-filled:{path}")
    if main:
        tmp = os.path.join(path, f".{descriptor}.tmp")
        with open(tmp, "w") as f:
            json.dump({**meta, prefix: name}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(path, descriptor))   # the commit
        for entry in os.listdir(path):
            if entry not in (descriptor, name):
                p = os.path.join(path, entry)
                shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.remove(p)
    parallel.barrier(f"save-committed:{path}")
    return path


def _next_version(path: str, prefix: str) -> int:
    """1 + the highest ``<prefix>.N`` in ``path`` (complete or not)."""
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)")
    found = [int(m.group(1)) for m in (pattern.match(e) for e in os.listdir(path)) if m]
    return max(found, default=0) + 1


def contents_dir(path: str, meta: dict, prefix: str) -> str:
    """The sub-directory a descriptor ``meta`` names (``path`` itself for version 1)."""
    name = meta.get(prefix)
    if name is None:
        return path
    if not isinstance(name, str) or os.sep in name or not name.startswith(prefix + "."):
        raise CheckpointError(f"{path}: the description names {name!r} as its {prefix}")
    return os.path.join(path, name)


def read_model_dir(path: str | os.PathLike) -> tuple[dict, dict]:
    """(metadata, variables as numpy) of a directory written by :func:`save_model`."""
    import orbax.checkpoint as ocp

    path = os.path.abspath(os.fspath(path))
    meta_file = os.path.join(path, "model.json")
    if not os.path.isfile(meta_file):
        raise CheckpointError(f"{path}: not a sage-jax model directory (no model.json)")
    try:
        with open(meta_file) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{meta_file}: unreadable ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_file}: not a sage-jax model description")
    if meta.get("version", 0) > VERSION:
        raise CheckpointError(f"{meta_file}: written by a newer sage-jax (format version {meta['version']})")
    where = meta.get("variables", "variables")
    if not isinstance(where, str) or os.sep in where or not where.startswith("variables"):
        raise CheckpointError(f"{meta_file}: names {where!r} as its variables")
    if not os.path.isdir(os.path.join(path, where)):
        raise CheckpointError(f"{path}: the variables {meta_file} names ({where}) are missing")
    try:
        variables = ocp.StandardCheckpointer().restore(os.path.join(path, where))
    except Exception as e:  # orbax raises many types; report them as ours
        raise CheckpointError(f"{path}: cannot restore variables ({type(e).__name__}: {e})") from None
    return meta, _to_numpy(variables)


def _to_numpy(tree):
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree)
