"""Reading PyTorch checkpoints without torch, converting them to Flax models, orbax I/O.

```python
from sage_jax import checkpoints
ckpt = checkpoints.read_torch("stylegan2.pt")          # nested dict of numpy arrays
G = checkpoints.load_generator(ckpt["g_ema"])           # GeneratorModel
D = checkpoints.load_discriminator(ckpt["d"])           # DiscriminatorModel
checkpoints.save_model("g_ema_jax", G)                  # orbax directory
G = checkpoints.load_generator("g_ema_jax")
```
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax.numpy as jnp

from sage_jax.checkpoints.orbax_io import read_model_dir, save_model
from sage_jax.checkpoints.stylegan2 import (convert_discriminator, convert_generator,
                                            discriminator_config_from_state_dict,
                                            generator_config_from_state_dict)
from sage_jax.checkpoints.torch_reader import CheckpointError, read_torch, read_torch_bytes
from sage_jax.models import DiscriminatorModel, GeneratorModel

__all__ = [
    "CheckpointError", "read_torch", "read_torch_bytes", "split_state_dict",
    "load_generator", "load_discriminator", "load_model", "save_model",
    "convert_generator", "convert_discriminator",
    "generator_config_from_state_dict", "discriminator_config_from_state_dict",
]

# Sub-models of a pSp / AGE / SAGE checkpoint's state_dict.
PSP_PREFIXES = ("encoder", "decoder", "ax")


def split_state_dict(state_dict: Mapping[str, Any], prefixes=PSP_PREFIXES) -> dict[str, dict]:
    """Split a combined state dict by top-level prefix: ``{'encoder': {...}, 'decoder':
    {...}, 'ax': {...}}`` with the prefix removed from the keys and arrays untouched
    (dtypes kept). Keys under any other prefix are an error naming them."""
    out: dict[str, dict] = {}
    unknown = []
    for key, value in state_dict.items():
        head, _, rest = key.partition(".")
        if head in prefixes and rest:
            out.setdefault(head, {})[rest] = value
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"state dict keys outside {list(prefixes)}: {unknown[:8]}")
    return out


def _resolve(src: Any, role: str) -> tuple[Any, str | None]:
    """Find the state dict for ``role`` ('generator' or 'discriminator') in what the
    user passed: a state dict, a whole checkpoint, a .pt path or a model directory."""
    if isinstance(src, (str, os.PathLike)):
        if os.path.isdir(src):
            return src, None
        src = read_torch(src)
    if not isinstance(src, Mapping):
        raise CheckpointError(f"expected a state dict, a checkpoint dict or a path; got {type(src).__name__}")
    if role == "generator":
        if "g_ema" in src and isinstance(src["g_ema"], Mapping):
            return src["g_ema"], None
        if "state_dict" in src and isinstance(src["state_dict"], Mapping):
            return src["state_dict"], "decoder."
        if any(k.startswith("decoder.") for k in src):
            return src, "decoder."
    else:
        if "d" in src and isinstance(src["d"], Mapping):
            return src["d"], None
    return src, None


def load_generator(src: Any, *, prefix: str | None = None, dtype: Any = jnp.float32) -> GeneratorModel:
    """A callable StyleGAN2 generator from a rosinality state dict (``ckpt['g_ema']``,
    ``ckpt['g']``), a whole rosinality or pSp/AGE/SAGE checkpoint (``g_ema`` or
    ``decoder.*`` is taken), a ``.pt`` path, or a directory written by :func:`save_model`."""
    sd, auto_prefix = _resolve(src, "generator")
    if isinstance(sd, (str, os.PathLike)):
        model = load_model(sd, dtype=dtype)
        if not isinstance(model, GeneratorModel):
            raise CheckpointError(f"{sd}: holds a {model.kind}, not a generator")
        return model
    cfg, variables = convert_generator(sd, prefix if prefix is not None else auto_prefix)
    return GeneratorModel(cfg, variables, dtype=dtype)


def load_discriminator(src: Any, *, prefix: str | None = None, dtype: Any = jnp.float32) -> DiscriminatorModel:
    """A callable StyleGAN2 discriminator from a rosinality ``d`` state dict, a whole
    rosinality checkpoint, a ``.pt`` path, or a directory written by :func:`save_model`."""
    sd, auto_prefix = _resolve(src, "discriminator")
    if isinstance(sd, (str, os.PathLike)):
        model = load_model(sd, dtype=dtype)
        if not isinstance(model, DiscriminatorModel):
            raise CheckpointError(f"{sd}: holds a {model.kind}, not a discriminator")
        return model
    cfg, variables = convert_discriminator(sd, prefix if prefix is not None else auto_prefix)
    return DiscriminatorModel(cfg, variables, dtype=dtype)


_KINDS = {"generator": GeneratorModel, "discriminator": DiscriminatorModel}


def load_model(path: str | os.PathLike, *, dtype: Any = jnp.float32):
    """Load a directory written by :func:`save_model` as the model kind it holds."""
    meta, variables = read_model_dir(path)
    cls = _KINDS.get(meta.get("kind"))
    if cls is None:
        raise CheckpointError(f"{path}: unknown model kind {meta.get('kind')!r}")
    return cls(meta["config"], variables, dtype=dtype)
