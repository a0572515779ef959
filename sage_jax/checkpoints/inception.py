"""Conversion of the FID Inception weights to :class:`sage_jax.nn.inception.InceptionModel`.

The source is the state dict of pytorch-fid's weights file
``pt_inception-2015-12-05-6726825d.pth`` (released at
https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth):
torchvision ``inception_v3(num_classes=1008, aux_logits=False)`` names, every conv a
``BasicConv2d``::

    {block}.conv.weight                  (O, I, kh, kw)   -> params  {block}/kernel (HWIO)
    {block}.bn.weight / .bn.bias         (O,)             -> params  {block}/scale, bias
    {block}.bn.running_mean / _var       (O,)             -> batch_stats {block}/mean, var
    {block}.bn.num_batches_tracked       ()               -> checked, dropped (optional)
    fc.weight (1008, 2048), fc.bias      (1008,)          -> checked, dropped (optional)

with ``{block}`` e.g. ``Conv2d_1a_3x3`` or ``Mixed_6b.branch7x7dbl_3``. The required
keys are read off the Flax module itself, so the list cannot drift from the network.
Every key is consumed and every shape checked; a missing, unexpected or mis-shaped
key raises :class:`CheckpointError` naming it. ``AuxLogits.*`` (torchvision's
auxiliary head, absent from the FID file) is an unexpected key.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from sage_jax.checkpoints._convert import StateDict, export, fill, strip_prefix
from sage_jax.checkpoints.torch_reader import CheckpointError, read_torch
from sage_jax.nn.inception import FEATURE_DIM, InceptionModel, abstract_variables

WHAT = "FID Inception state dict"
FC_CLASSES = 1008

# our leaf name -> (torch suffix, collection, kind)
_LEAVES = {
    ("params", "kernel"): ("conv.weight", "conv"),
    ("params", "scale"): ("bn.weight", "id"),
    ("params", "bias"): ("bn.bias", "id"),
    ("batch_stats", "mean"): ("bn.running_mean", "id"),
    ("batch_stats", "var"): ("bn.running_var", "id"),
}


def inception_entries(abstract: Mapping | None = None) -> list:
    """Entries ``(torch key, variable path, kind)`` for every conv / BN tensor, in the
    order of the module's variables."""
    abstract = abstract_variables() if abstract is None else abstract
    entries = []
    for path, _ in jax.tree_util.tree_flatten_with_path(abstract)[0]:
        names = tuple(p.key for p in path)
        collection, *blocks, leaf = names
        suffix, kind = _LEAVES[(collection, leaf)]
        entries.append((".".join(blocks) + "." + suffix, names, kind))
    return entries


def _optional_keys(sd: StateDict, entries) -> list[str]:
    """The keys accepted but not used (BN counters, the 1008-class ``fc``), checked."""
    bn_prefixes = {k[: -len("bn.weight")] for k, _, _ in entries if k.endswith(".bn.weight")}
    ok = []
    for key in sd:
        if key.endswith(".bn.num_batches_tracked") and key[: -len("bn.num_batches_tracked")] in bn_prefixes:
            v = np.asarray(sd[key])
            if v.shape not in ((), (1,)) or v.dtype.kind not in "iu":
                raise CheckpointError(f"{WHAT}: key {key!r} should be an integer counter, got "
                                      f"{v.dtype} of shape {v.shape}")
            ok.append(key)
        elif key in ("fc.weight", "fc.bias"):
            want = (FC_CLASSES, FEATURE_DIM) if key == "fc.weight" else (FC_CLASSES,)
            shape = tuple(np.shape(sd[key]))
            if shape != want:
                raise CheckpointError(f"{WHAT}: key {key!r} has shape {shape}, expected {want} "
                                      f"(the FID Inception's 1008-class head)")
            ok.append(key)
    return ok


def convert_inception(sd: StateDict, prefix: str | None = None) -> dict:
    """The FID weights file's state dict -> our variables ``{'params', 'batch_stats'}``."""
    sd = strip_prefix(sd, prefix)
    abstract = abstract_variables()
    entries = inception_entries(abstract)
    return fill(sd, entries, abstract, WHAT, ignore=_optional_keys(sd, entries))


def _as_state_dict(src: Any) -> dict:
    if isinstance(src, (str, os.PathLike)):
        src = read_torch(src)
    if not isinstance(src, Mapping):
        raise CheckpointError(f"{WHAT}: expected a state dict (mapping of tensors) or a path, "
                              f"got {type(src).__name__}")
    if "state_dict" in src and isinstance(src["state_dict"], Mapping):
        src = src["state_dict"]
    return dict(src)


def load_inception(path_or_state_dict: Any, *, prefix: str | None = None,
                   dtype: Any = jnp.float32) -> InceptionModel:
    """The FID Inception ``model.features(images) -> (N, 2048)`` from
    ``pt_inception-2015-12-05-6726825d.pth`` (a path, read without torch) or its state
    dict. ``dtype=jnp.float64`` needs ``jax_enable_x64``."""
    sd = _as_state_dict(path_or_state_dict)
    return InceptionModel(convert_inception(sd, prefix), dtype=dtype)


def inception_to_state_dict(variables: Any) -> dict[str, np.ndarray]:
    """Our variables -> the weights file's layout (float32, with zero BN counters;
    without ``fc``, which is not kept)."""
    if isinstance(variables, InceptionModel):
        variables = variables.variables
    entries = inception_entries()
    counters = {k[: -len("weight")] + "num_batches_tracked": np.array(0, np.int64)
                for k, _, _ in entries if k.endswith(".bn.weight")}
    return export(entries, variables, counters)
