"""Reading PyTorch checkpoints without torch, converting them to Flax models, orbax I/O.

```python
from sage_jax import checkpoints
ckpt = checkpoints.read_torch("stylegan2.pt")          # nested dict of numpy arrays
G = checkpoints.load_generator(ckpt["g_ema"])           # GeneratorModel
D = checkpoints.load_discriminator(ckpt["d"])           # DiscriminatorModel
checkpoints.save_model("g_ema_jax", G)                  # orbax directory
G = checkpoints.load_generator("g_ema_jax")
inception = checkpoints.load_inception("pt_inception-2015-12-05-6726825d.pth")  # FID network
```
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from sage_jax.checkpoints.dictionary import (convert_dictionary, dictionary_config_from_state_dict,
                                             dictionary_to_state_dict)
from sage_jax.checkpoints.inception import convert_inception, inception_to_state_dict, load_inception
from sage_jax.checkpoints.orbax_io import commit_versioned, contents_dir, read_model_dir, save_model
from sage_jax.checkpoints.psp import (convert_encoder, encoder_config_from_state_dict,
                                      encoder_to_state_dict, psp_config_from_opts)
from sage_jax.checkpoints.stylegan2 import (convert_discriminator, convert_generator,
                                            discriminator_config_from_state_dict,
                                            discriminator_to_state_dict,
                                            generator_config_from_state_dict,
                                            generator_to_state_dict)
from sage_jax.checkpoints.torch_reader import CheckpointError, read_torch, read_torch_bytes
from sage_jax.models import (DictionaryModel, DiscriminatorModel, EncoderModel, GeneratorModel,
                             PSPModel)

__all__ = [
    "CheckpointError", "read_torch", "read_torch_bytes", "split_state_dict",
    "load_generator", "load_discriminator", "load_encoder", "load_psp", "load_model",
    "save_model", "save_psp", "convert_generator", "convert_discriminator", "convert_encoder",
    "generator_config_from_state_dict", "discriminator_config_from_state_dict",
    "encoder_config_from_state_dict", "psp_config_from_opts",
    "generator_to_state_dict", "discriminator_to_state_dict", "encoder_to_state_dict",
    "load_dictionary", "convert_dictionary", "dictionary_config_from_state_dict",
    "dictionary_to_state_dict",
    "load_inception", "convert_inception", "inception_to_state_dict",
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
    elif role == "dictionary":
        if "state_dict" in src and isinstance(src["state_dict"], Mapping):
            return src["state_dict"], "ax."
        if any(k.startswith("ax.") for k in src):
            return src, "ax."
    elif role == "encoder":
        if "state_dict" in src and isinstance(src["state_dict"], Mapping):
            return src["state_dict"], "encoder."
        if any(k.startswith("encoder.") for k in src):
            return src, "encoder."
    else:
        if "d" in src and isinstance(src["d"], Mapping):
            return src["d"], None
    return src, None


def _load_saved(path, cls, dtype: Any = jnp.float32):
    """A model directory that must hold a ``cls``."""
    model = load_model(path, dtype=dtype)
    if not isinstance(model, cls):
        raise CheckpointError(f"{path}: holds a {model.kind}, not a {cls.kind}")
    return model


def load_generator(src: Any, *, prefix: str | None = None, dtype: Any = jnp.float32) -> GeneratorModel:
    """A callable StyleGAN2 generator from a rosinality state dict (``ckpt['g_ema']``,
    ``ckpt['g']``), a whole rosinality or pSp/AGE/SAGE checkpoint (``g_ema`` or
    ``decoder.*`` is taken), a ``.pt`` path, or a directory written by :func:`save_model`."""
    sd, auto_prefix = _resolve(src, "generator")
    if isinstance(sd, (str, os.PathLike)):
        return _load_saved(sd, GeneratorModel, dtype)
    cfg, variables = convert_generator(sd, prefix if prefix is not None else auto_prefix)
    return GeneratorModel(cfg, variables, dtype=dtype)


def load_discriminator(src: Any, *, prefix: str | None = None, dtype: Any = jnp.float32) -> DiscriminatorModel:
    """A callable StyleGAN2 discriminator from a rosinality ``d`` state dict, a whole
    rosinality checkpoint, a ``.pt`` path, or a directory written by :func:`save_model`."""
    sd, auto_prefix = _resolve(src, "discriminator")
    if isinstance(sd, (str, os.PathLike)):
        return _load_saved(sd, DiscriminatorModel, dtype)
    cfg, variables = convert_discriminator(sd, prefix if prefix is not None else auto_prefix)
    return DiscriminatorModel(cfg, variables, dtype=dtype)


def load_encoder(src: Any, *, prefix: str | None = None, input_size: int | None = None,
                 dtype: Any = jnp.float32) -> EncoderModel:
    """A callable pSp encoder ``E(images) -> raw codes (N, n_styles, D)`` from an encoder
    state dict, a whole pSp/AGE/SAGE checkpoint (``encoder.*`` is taken), a ``.pt`` path
    or a model directory. ``input_size`` is needed only for the two simple encoders,
    whose weights do not fix it (default 256)."""
    sd, auto_prefix = _resolve(src, "encoder")
    if isinstance(sd, (str, os.PathLike)):
        return _load_saved(sd, EncoderModel, dtype)
    cfg, variables = convert_encoder(sd, prefix if prefix is not None else auto_prefix, input_size)
    return EncoderModel(cfg, variables, dtype=dtype)


def load_dictionary(src: Any, *, prefix: str | None = None) -> DictionaryModel:
    """The AGE/SAGE attribute dictionary from an ``ax.*`` state dict, a whole AGE/SAGE
    checkpoint, a ``.pt`` path, or a model directory (a trained one from
    ``sage-jax train-dictionary``)."""
    sd, auto_prefix = _resolve(src, "dictionary")
    if isinstance(sd, (str, os.PathLike)):
        return _load_saved(sd, DictionaryModel)
    if not any(k == "A" or k.startswith("ax.") for k in sd):
        raise CheckpointError("this checkpoint has no attribute dictionary (no ax.A): train one with "
                              "'sage-jax train-dictionary' or use an AGE/SAGE checkpoint")
    cfg, variables = convert_dictionary(sd, prefix if prefix is not None else auto_prefix)
    return DictionaryModel(cfg, variables)


def release_memory() -> None:
    """Hand memory freed while converting weights back to the system (glibc keeps it
    otherwise: loading a 300 M-parameter pSp model left twice its size resident)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc


def load_psp(src: Any, *, with_encoder: bool = True, dtype: Any = jnp.float32) -> PSPModel:
    """Encoder, decoder and ``latent_avg`` of a pSp / AGE / SAGE checkpoint (a dict from
    :func:`read_torch`, a ``.pt`` path, or a directory written by :func:`save_psp`).

    ``opts`` becomes ``model.config``; ``ax.*`` is kept as arrays in ``model.ax``.
    ``with_encoder=False`` loads only the decoder side (for files without a full encoder).
    """
    model = _load_psp(src, with_encoder=with_encoder, dtype=dtype)
    release_memory()
    return model


def _load_psp(src: Any, *, with_encoder: bool = True, dtype: Any = jnp.float32) -> PSPModel:
    """The work of :func:`load_psp`."""
    if isinstance(src, (str, os.PathLike)) and os.path.isdir(src):
        return _load_psp_dir(src, with_encoder, dtype)
    ckpt = read_torch(src) if isinstance(src, (str, os.PathLike)) else src
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("state_dict"), Mapping):
        raise CheckpointError("not a pSp/AGE/SAGE checkpoint: no 'state_dict' entry")
    parts = split_state_dict(ckpt["state_dict"])
    if "decoder" not in parts:
        raise CheckpointError("checkpoint has no decoder.* weights")
    decoder = load_generator(parts["decoder"], dtype=dtype)
    encoder = None
    if with_encoder:
        if "encoder" not in parts:
            raise CheckpointError("checkpoint has no encoder.* weights (use with_encoder=False)")
        encoder = load_encoder(parts["encoder"], dtype=dtype)
    opts = ckpt.get("opts") or {}
    if not isinstance(opts, Mapping):
        raise CheckpointError("'opts' is not a dict")
    config = psp_config_from_opts(opts, n_latent=decoder.n_latent)
    if config["output_size"] != decoder.size:
        raise CheckpointError(f"opts say output_size {config['output_size']} but the decoder makes "
                              f"{decoder.size} px images")
    config["opts"] = {k: v for k, v in opts.items() if isinstance(v, (str, int, float, bool, type(None)))}
    latent_avg = ckpt.get("latent_avg")
    if latent_avg is not None and not isinstance(latent_avg, np.ndarray):
        raise CheckpointError("'latent_avg' is not an array")
    return PSPModel(encoder, decoder, latent_avg, config, ax=parts.get("ax"))


def save_psp(path: str | os.PathLike, model: PSPModel, *, overwrite: bool = False) -> str:
    """Write a :class:`PSPModel` as a directory: ``psp.json``, which names the
    ``parts.N/`` holding ``decoder/`` and ``encoder/`` model directories,
    ``latent_avg.npy`` and ``ax.npz``. Every process of a multi-process run calls it;
    replacing a saved model is atomic (see :func:`commit_versioned`)."""
    from sage_jax import parallel

    def fill(target):
        save_model(os.path.join(target, "decoder"), model.decoder)
        if model.encoder is not None:
            save_model(os.path.join(target, "encoder"), model.encoder)
        if parallel.is_main():
            if model.latent_avg is not None:
                np.save(os.path.join(target, "latent_avg.npy"), np.asarray(model.latent_avg))
            if model.ax:
                np.savez(os.path.join(target, "ax.npz"), **{k: np.asarray(v) for k, v in model.ax.items()})

    return commit_versioned(path, "psp.json", "parts", {"format": "sage-jax-psp", "version": 2, "config": model.config},
                            fill, overwrite)


def psp_part(path: str | os.PathLike, part: str = "decoder") -> str:
    """The model directory of ``part`` ("decoder" or "encoder") inside a pSp directory
    written by :func:`save_psp` (any format version)."""
    meta_file = os.path.join(path, "psp.json")
    try:
        with open(meta_file) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable sage-jax pSp directory ({e})") from None
    return os.path.join(contents_dir(os.fspath(path), meta, "parts"), part)


def _load_psp_dir(path, with_encoder, dtype) -> PSPModel:
    meta_file = os.path.join(path, "psp.json")
    if not os.path.isfile(meta_file):
        raise CheckpointError(f"{path}: not a sage-jax pSp directory (no psp.json)")
    with open(meta_file) as f:
        meta = json.load(f)
    if meta.get("version", 1) > 2:
        raise CheckpointError(f"{meta_file}: written by a newer sage-jax (format version {meta['version']})")
    path = contents_dir(path, meta, "parts")
    decoder = load_generator(os.path.join(path, "decoder"), dtype=dtype)
    encoder = None
    if with_encoder:
        if not os.path.isdir(os.path.join(path, "encoder")):
            raise CheckpointError(f"{path}: saved without an encoder (use with_encoder=False)")
        encoder = load_encoder(os.path.join(path, "encoder"), dtype=dtype)
    avg_file = os.path.join(path, "latent_avg.npy")
    latent_avg = np.load(avg_file) if os.path.exists(avg_file) else None
    ax_file = os.path.join(path, "ax.npz")
    ax = dict(np.load(ax_file)) if os.path.exists(ax_file) else None
    return PSPModel(encoder, decoder, latent_avg, meta["config"], ax=ax)


_KINDS = {"generator": GeneratorModel, "discriminator": DiscriminatorModel, "encoder": EncoderModel,
          "dictionary": DictionaryModel}


def load_model(path: str | os.PathLike, *, dtype: Any = jnp.float32):
    """Load a directory written by :func:`save_model` as the model kind it holds."""
    meta, variables = read_model_dir(path)
    cls = _KINDS.get(meta.get("kind"))
    if cls is None:
        raise CheckpointError(f"{path}: unknown model kind {meta.get('kind')!r}")
    return cls(meta["config"], variables, dtype=dtype)
