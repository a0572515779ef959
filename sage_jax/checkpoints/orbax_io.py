"""Saving and loading converted models with orbax.

A saved model is a directory::

    DIR/model.json     {"format": "sage-jax-model", "version": 1, "kind": ..., "config": {...}}
    DIR/variables/     orbax checkpoint of the variables tree (params, noise buffers, ...)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil

import numpy as np

from sage_jax.checkpoints.torch_reader import CheckpointError

FORMAT = "sage-jax-model"
VERSION = 1


def save_model(path: str | os.PathLike, model, *, overwrite: bool = False, extra: dict | None = None) -> str:
    """Write ``model`` (any sage-jax model: generator, discriminator, encoder, dictionary) to ``path``.

    The directory is first written under a temporary name and renamed at the end, so an
    interrupted save never leaves a half-written model at ``path``.
    """
    import orbax.checkpoint as ocp

    with atomic_directory(path, overwrite) as tmp:
        meta = {"format": FORMAT, "version": VERSION, "kind": model.kind, "config": model.config}
        if extra:
            meta["extra"] = extra
        with open(os.path.join(tmp, "model.json"), "w") as f:
            json.dump(meta, f, indent=1)
        ckptr = ocp.StandardCheckpointer()
        ckptr.save(os.path.join(tmp, "variables"), _to_numpy(model.variables))
        ckptr.wait_until_finished()
    return os.path.abspath(os.fspath(path))


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = False):
    """Yield a temporary sibling of ``path`` to fill; it replaces ``path`` only when
    the block finishes, so an interrupted save never leaves a half-written
    directory (and a previous one stays intact until then)."""
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists (pass overwrite=True to replace it)")
    tmp = path + ".tmp-saving"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path + ".tmp-old"
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(path):
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


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
    try:
        variables = ocp.StandardCheckpointer().restore(os.path.join(path, "variables"))
    except Exception as e:  # orbax raises many types; report them as ours
        raise CheckpointError(f"{path}: cannot restore variables ({type(e).__name__}: {e})") from None
    return meta, _to_numpy(variables)


def _to_numpy(tree):
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree)
