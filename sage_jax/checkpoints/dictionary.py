"""Conversion of the AGE / SAGE attribute dictionary (``ax.*`` of a checkpoint: ``A`` and
``encoder{g}.fc{1..5}``). Groups are read off the weights: group ``g`` covers
``fc1.in_features / D`` consecutive layers after the previous group's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sage_jax.checkpoints._convert import StateDict, count, export, fill, get, strip_prefix
from sage_jax.checkpoints.torch_reader import CheckpointError
from sage_jax.models import build_dictionary
from sage_jax.nn.dictionary import edited_layers


def dictionary_config_from_state_dict(sd: StateDict) -> dict:
    A = get(sd, "A")
    if A.ndim != 3:
        raise CheckpointError(f"'A' must be (layers, D, A_length), got shape {A.shape}")
    n_edit, d, l = (int(s) for s in A.shape)
    n_groups = count(sd, r"encoder(\d+)\.fc1\.weight")
    if n_groups == 0:
        raise CheckpointError("no group encoders (encoder0.fc1.weight ...)")
    groups, start = [], 0
    for g in range(n_groups):
        in_features = int(get(sd, f"encoder{g}.fc1.weight").shape[1])
        if in_features % d:
            raise CheckpointError(f"encoder{g}.fc1.weight takes {in_features} inputs, not a multiple of D={d}")
        size = in_features // d
        groups.append(tuple(range(start, start + size)))
        start += size
    if start != n_edit:
        raise CheckpointError(f"the group encoders cover {start} layers but 'A' has {n_edit}")
    return dict(groups=tuple(groups), style_dim=d, a_length=l)


def _entries(cfg: dict):
    P = ("params",)
    entries = [("A", P + ("A",), "id")]
    for g in range(len(cfg["groups"])):
        for i in range(1, 6):
            entries += [(f"encoder{g}.fc{i}.weight", P + (f"encoder{g}", f"fc{i}", "kernel"), "linear"),
                        (f"encoder{g}.fc{i}.bias", P + (f"encoder{g}", f"fc{i}", "bias"), "id")]
    return entries


def convert_dictionary(sd: StateDict, prefix: str | None = None) -> tuple[dict, dict]:
    """``ax.*`` state dict -> (config, variables)."""
    sd = strip_prefix(sd, prefix)
    what = "dictionary state dict"
    try:
        cfg = dictionary_config_from_state_dict(sd)
    except CheckpointError as e:
        raise CheckpointError(f"{what}: {e}") from None
    module = build_dictionary(cfg)
    n_layers = max(edited_layers(cfg["groups"])) + 1
    abstract = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0),
                                                  jnp.zeros((1, n_layers, cfg["style_dim"]))))
    return cfg, fill(sd, _entries(cfg), abstract, what)


def dictionary_to_state_dict(cfg: dict, variables: dict) -> dict[str, np.ndarray]:
    """Our dictionary variables -> an ``ax.*`` state dict (without the prefix)."""
    return export(_entries(cfg), variables)
