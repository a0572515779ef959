"""Helpers shared by the state-dict converters: key bookkeeping and layout transforms."""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from sage_jax.checkpoints.torch_reader import CheckpointError

StateDict = Mapping[str, Any]

# How a reference tensor becomes ours: (reference shape -> our shape, value transform,
# and back: our value -> reference value).
_KINDS = {
    "id": (lambda s: tuple(s), lambda a: a, lambda a: a),
    # Linear weight (out, in) -> (in, out)
    "linear": (lambda s: (s[1], s[0]), lambda a: a.T, lambda a: a.T),
    # Conv weight OIHW -> HWIO
    "conv": (lambda s: (s[2], s[3], s[1], s[0]), lambda a: a.transpose(2, 3, 1, 0),
             lambda a: a.transpose(3, 2, 0, 1)),
    # Modulated conv weight (1, O, I, k, k) -> (k, k, I, O)
    "modconv": (lambda s: (s[3], s[4], s[2], s[1]), lambda a: a[0].transpose(2, 3, 1, 0),
                lambda a: a.transpose(3, 2, 0, 1)[None]),
    # (1, C, H, W) -> (1, H, W, C): constant input, noise buffers
    "nchw": (lambda s: (s[0], s[2], s[3], s[1]), lambda a: a.transpose(0, 2, 3, 1),
             lambda a: a.transpose(0, 3, 1, 2)),
    # ToRGB bias (1, 3, 1, 1) -> (3,)
    "rgb_bias": (lambda s: (s[1],), lambda a: a.reshape(-1), lambda a: a.reshape(1, -1, 1, 1)),
}


def strip_prefix(sd: StateDict, prefix: str | None) -> dict[str, Any]:
    if not prefix:
        return dict(sd)
    out = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    if not out:
        raise CheckpointError(f"no key starts with {prefix!r}")
    return out


def get(sd: StateDict, key: str) -> np.ndarray:
    if key not in sd:
        raise CheckpointError(f"missing key {key!r}")
    return np.asarray(sd[key])


def count(sd: StateDict, pattern: str, step: int = 1) -> int:
    """How many keys match ``pattern`` (its group 1 an index); the indices must run
    from their minimum in steps of ``step`` without gaps."""
    rx = re.compile(pattern)
    idx = {int(m.group(1)) for k in sd for m in [rx.fullmatch(k)] if m}
    n = len(idx)
    lo = min(idx, default=0)
    if idx != set(range(lo, lo + step * n, step)):
        raise CheckpointError(f"keys matching {pattern!r} are not numbered consecutively: {sorted(idx)}")
    return n


def fill(sd: StateDict, entries, abstract, what: str, ignore=()) -> dict:
    """Move every entry ``(torch_key, collection/path..., kind)`` into a variables tree
    shaped like ``abstract`` (from ``jax.eval_shape``), checking keys and shapes."""
    expected = {e[0] for e in entries} | set(ignore)
    missing = sorted(k for k in expected if k not in sd)
    extra = sorted(k for k in sd if k not in expected)
    if missing:
        raise CheckpointError(f"{what}: missing key(s) {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    if extra:
        raise CheckpointError(f"{what}: unexpected key(s) {extra[:8]}{' ...' if len(extra) > 8 else ''}")
    out: dict = {}
    for key, path, kind in entries:
        node = abstract
        for p in path:
            node = node[p]
        to_shape, transform, _ = _KINDS[kind]
        arr = np.asarray(sd[key])
        try:
            ours = to_shape(arr.shape)
        except IndexError:
            ours = None
        if ours != tuple(node.shape):
            raise CheckpointError(
                f"{what}: key {key!r} has shape {tuple(arr.shape)}, which does not fit the "
                f"architecture read from the other keys"
            )
        if not np.issubdtype(arr.dtype, np.floating) and arr.dtype.kind != "V":
            raise CheckpointError(f"{what}: key {key!r} has non-float dtype {arr.dtype}")
        d = out
        for p in path[:-1]:
            d = d.setdefault(p, {})
        d[path[-1]] = np.asarray(transform(arr.astype(np.float32)), dtype=np.float32)
    return out


def export(entries, variables, extra: Mapping[str, Any] | None = None, dtype=np.float32) -> dict[str, np.ndarray]:
    """The inverse of :func:`fill`: our variables -> a reference-layout state dict
    (``dtype``, float32 unless asked), plus ``extra`` constant entries (blur kernels, BN
    counters)."""
    out: dict[str, np.ndarray] = {}
    for key, path, kind in entries:
        node = variables
        for p in path:
            node = node[p]
        out[key] = np.ascontiguousarray(_KINDS[kind][2](np.asarray(node, dtype)))
    for key, value in (extra or {}).items():
        out[key] = np.asarray(value)
    return out


def linear(key, path):
    return [(f"{key}.weight", path + ("weight",), "linear"), (f"{key}.bias", path + ("bias",), "id")]


