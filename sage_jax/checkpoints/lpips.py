"""Conversion of LPIPS (VGG) weights to :class:`sage_jax.nn.lpips.LPIPSModel`.

Two sources are accepted:

- the ``lpips`` package's full ``LPIPS(net='vgg').state_dict()``:
  ``scaling_layer.shift`` / ``scaling_layer.scale`` (1, 3, 1, 1), the trunk as
  ``net.slice{1..5}.{i}.weight`` / ``.bias`` (``i`` = torchvision ``features`` index),
  and the heads ``lin{k}.model.1.weight`` (1, C, 1, 1) — the package registers the heads
  twice, so ``lins.{k}.model.1.weight`` appears as well; either or both may be given
  (both must then be equal) -> :func:`load_lpips`;
- a torchvision ``vgg16`` state dict (``features.{i}.weight`` / ``.bias``; the
  ``classifier.*`` keys are ignored) with the package's head file
  (``lpips/weights/v0.1/vgg.pth``: ``lin{k}.model.1.weight``) -> :func:`load_lpips_from_parts`.
  The scaling constants are then the package's.

Every key is consumed and every shape checked; anything missing or extra raises
:class:`CheckpointError` naming the key(s).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
import jax.numpy as jnp

from sage_jax.checkpoints._convert import StateDict, export, fill, strip_prefix
from sage_jax.checkpoints.torch_reader import CheckpointError, read_torch
from sage_jax.nn.lpips import (SCALE, SHIFT, TAP_CHANNELS, LPIPSModel, abstract_variables, conv_name,
                               vgg16_feature_indices)

P, B = ("params",), ("buffers",)


def _trunk_entries(key_of) -> list:
    """Entries for the 13 convs; ``key_of(stage, index)`` is the torch key prefix."""
    entries = []
    for s, convs in enumerate(vgg16_feature_indices()):
        for j, i in enumerate(convs):
            k, path = key_of(s, i), P + ("net", conv_name(s, j))
            entries += [(f"{k}.weight", path + ("weight",), "conv"), (f"{k}.bias", path + ("bias",), "id")]
    return entries


def _head_entries(prefix: str = "lin") -> list:
    sep = "." if prefix == "lins" else ""
    return [(f"{prefix}{sep}{k}.model.1.weight", P + (f"lin{k}",), "conv") for k in range(len(TAP_CHANNELS))]


def lpips_entries() -> list:
    """Entries ``(torch key, variable path, kind)`` of the lpips package's layout."""
    return ([("scaling_layer.shift", B + ("shift",), "rgb_bias"),
             ("scaling_layer.scale", B + ("scale",), "rgb_bias")]
            + _trunk_entries(lambda s, i: f"net.slice{s + 1}.{i}") + _head_entries("lin"))


def vgg16_entries() -> list:
    """Entries of a torchvision ``vgg16`` state dict's ``features``."""
    return _trunk_entries(lambda s, i: f"features.{i}")


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _resolve_heads(sd: StateDict, what: str) -> dict:
    """Head keys as ``lin{k}.model.1.weight``: ``lins.{k}.*`` duplicates are checked
    against ``lin{k}.*`` and dropped, or renamed when only they are present."""
    sd = dict(sd)
    for k in range(len(TAP_CHANNELS)):
        a, b = f"lin{k}.model.1.weight", f"lins.{k}.model.1.weight"
        if b not in sd:
            continue
        if a in sd:
            va, vb = np.asarray(sd[a]), np.asarray(sd[b])
            if va.shape != vb.shape or not np.array_equal(va, vb):
                raise CheckpointError(f"{what}: {a!r} and its duplicate {b!r} differ")
            del sd[b]
        else:
            sd[a] = sd.pop(b)
    return sd


def _as_state_dict(src: Any, what: str) -> dict:
    if isinstance(src, (str, os.PathLike)):
        src = read_torch(src)
    if not isinstance(src, Mapping):
        raise CheckpointError(f"{what}: expected a state dict (mapping of tensors), got {type(src).__name__}")
    if "state_dict" in src and isinstance(src["state_dict"], Mapping):
        src = src["state_dict"]
    return dict(src)


def convert_lpips(sd: StateDict, prefix: str | None = None) -> dict:
    """The lpips package's ``LPIPS(net='vgg')`` state dict -> our variables."""
    what = "LPIPS state dict"
    sd = _resolve_heads(strip_prefix(sd, prefix), what)
    return fill(sd, lpips_entries(), abstract_variables(), what)


def convert_lpips_parts(vgg16_sd: StateDict, heads_sd: StateDict) -> dict:
    """A torchvision ``vgg16`` state dict plus the lpips head file -> our variables."""
    abstract = abstract_variables()
    vgg16_sd = dict(vgg16_sd)
    trunk = fill(vgg16_sd, vgg16_entries(), abstract, "VGG16 state dict",
                 ignore=[k for k in vgg16_sd if k.startswith("classifier.")])
    what = "LPIPS heads state dict"
    heads = fill(_resolve_heads(heads_sd, what), _head_entries("lin"), abstract, what)
    buffers = {"buffers": {"shift": np.asarray(SHIFT, np.float32), "scale": np.asarray(SCALE, np.float32)}}
    return _merge(_merge(trunk, heads), buffers)


def load_lpips(state_dict: Any, *, prefix: str | None = None, dtype: Any = jnp.float32,
               precision: Any = None) -> LPIPSModel:
    """A callable LPIPS-VGG ``lp(a, b) -> (N,)`` from the lpips package's full state dict
    (or a ``.pt``/``.pth`` path holding it)."""
    sd = _as_state_dict(state_dict, "LPIPS state dict")
    return LPIPSModel(convert_lpips(sd, prefix), dtype=dtype, precision=precision)


def load_lpips_from_parts(vgg16_state_dict: Any, heads_state_dict: Any, *, dtype: Any = jnp.float32,
                          precision: Any = None) -> LPIPSModel:
    """A callable LPIPS-VGG from torchvision's ``vgg16`` weights and the lpips package's
    linear heads (``vgg.pth``); either may be a path."""
    vgg = _as_state_dict(vgg16_state_dict, "VGG16 state dict")
    heads = _as_state_dict(heads_state_dict, "LPIPS heads state dict")
    return LPIPSModel(convert_lpips_parts(vgg, heads), dtype=dtype, precision=precision)


def lpips_to_state_dict(variables: dict, duplicate_lins: bool = True) -> dict[str, np.ndarray]:
    """Our variables -> the lpips package's state dict (with the ``lins.{k}`` copies of
    the heads, as ``LPIPS.state_dict()`` has them, unless ``duplicate_lins=False``)."""
    if isinstance(variables, LPIPSModel):
        variables = variables.variables
    entries = lpips_entries()
    if duplicate_lins:
        entries += _head_entries("lins")
    return export(entries, variables)
