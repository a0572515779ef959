"""Conversion of rosinality StyleGAN2 state dicts to Flax variables.

Works on ``g_ema``, ``g`` and ``d`` of a rosinality training checkpoint and on the
``decoder.*`` part of pSp, AGE and SAGE checkpoints. The architecture (size, style
dimension, depth of the mapping network, channel table, blur kernel) is read off the
tensor shapes. Every key of the state dict must be consumed and every shape must be the
one the architecture implies: a missing, extra or mis-shaped key is a
:class:`CheckpointError` that names it.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from sage_jax.checkpoints._convert import StateDict, count, export, fill, get, linear, strip_prefix
from sage_jax.checkpoints.torch_reader import CheckpointError
from sage_jax.nn.layers import make_kernel
from sage_jax.nn.stylegan2 import Discriminator, Generator


def _blur_taps(sd: StateDict, key: str, factor_sq: float) -> tuple[float, ...]:
    """Recover the 1-D blur taps from a stored 2-D kernel and check they rebuild it."""
    k = np.asarray(sd[key], dtype=np.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise CheckpointError(f"{key}: blur kernel of shape {k.shape} is not square")
    taps = k.sum(axis=1)
    rebuilt = make_kernel(taps) * factor_sq
    if not np.allclose(rebuilt, k, rtol=1e-5, atol=1e-7):
        raise CheckpointError(f"{key}: blur kernel is not separable")
    taps = taps / np.min(np.abs(taps[taps != 0]))
    return tuple(float(np.round(t)) if abs(t - np.round(t)) < 1e-4 else float(t) for t in taps)


def _modconv(key, path):
    return [(f"{key}.weight", path + ("weight",), "modconv"),
            *linear(f"{key}.modulation", path + ("modulation",))]


def generator_config_from_state_dict(sd: StateDict) -> dict:
    """Architecture of a rosinality ``Generator`` read off its state dict."""
    w1 = get(sd, "style.1.weight")
    style_dim = int(w1.shape[1])
    n_mlp = count(sd, r"style\.(\d+)\.weight")
    n_rgbs = count(sd, r"to_rgbs\.(\d+)\.conv\.weight")
    log_size = n_rgbs + 2
    channels = [(4, int(get(sd, "input.input").shape[1]))]
    for j in range(n_rgbs):
        channels.append((2 ** (j + 3), int(get(sd, f"convs.{2 * j}.conv.weight").shape[1])))
    blur = (1.0, 3.0, 3.0, 1.0)
    if "convs.0.conv.blur.kernel" in sd:
        blur = _blur_taps(sd, "convs.0.conv.blur.kernel", 4.0)
    return dict(size=2 ** log_size, style_dim=style_dim, n_mlp=n_mlp,
                channels=tuple(channels), blur_kernel=blur)


def _generator_entries(cfg: dict) -> tuple[list, list]:
    P, N = ("params",), ("noises",)
    entries = []
    for i in range(1, cfg["n_mlp"] + 1):
        entries += linear(f"style.{i}", P + (f"style_{i}",))
    entries.append(("input.input", P + ("input",), "nchw"))
    n_layers = 2 * int(math.log2(cfg["size"])) - 3

    def styled(key, path):
        return [*_modconv(f"{key}.conv", path + ("conv",)),
                (f"{key}.noise.weight", path + ("noise", "weight"), "id"),
                (f"{key}.activate.bias", path + ("activate_bias",), "id")]

    def rgb(key, path):
        return [*_modconv(f"{key}.conv", path + ("conv",)), (f"{key}.bias", path + ("bias",), "rgb_bias")]

    entries += styled("conv1", P + ("conv1",))
    entries += rgb("to_rgb1", P + ("to_rgb1",))
    kernels = []
    for j in range(n_layers - 1):
        entries += styled(f"convs.{j}", P + (f"convs_{j}",))
        if j % 2 == 0:
            kernels.append(f"convs.{j}.conv.blur.kernel")
    for j in range((n_layers - 1) // 2):
        entries += rgb(f"to_rgbs.{j}", P + (f"to_rgbs_{j}",))
        kernels.append(f"to_rgbs.{j}.upsample.kernel")
    for i in range(n_layers):
        entries.append((f"noises.noise_{i}", N + (f"noise_{i}",), "nchw"))
    return entries, kernels


def _check_kernels(sd: StateDict, keys, taps, factor_sq, what):
    want = make_kernel(taps) * factor_sq
    for k in keys:
        if k in sd and (np.shape(sd[k]) != want.shape or not np.allclose(sd[k], want, rtol=1e-5, atol=1e-7)):
            raise CheckpointError(f"{what}: key {k!r} holds a blur kernel other than {taps}")


def convert_generator(sd: StateDict, prefix: str | None = None) -> tuple[dict, dict]:
    """rosinality ``Generator`` state dict -> (config, variables).

    ``prefix`` selects a sub-dict, e.g. ``'decoder.'`` for pSp/AGE/SAGE checkpoints.
    ``variables`` has ``params`` and ``noises`` (the stored noise buffers).
    """
    sd = strip_prefix(sd, prefix)
    what = "generator state dict"
    try:
        cfg = generator_config_from_state_dict(sd)
    except CheckpointError as e:
        raise CheckpointError(f"{what}: {e}") from None
    entries, kernels = _generator_entries(cfg)
    _check_kernels(sd, [k for k in kernels if ".conv.blur." in k], cfg["blur_kernel"], 4.0, what)
    _check_kernels(sd, [k for k in kernels if ".upsample." in k], cfg["blur_kernel"], 4.0, what)
    module = Generator(**cfg)
    abstract = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), jnp.zeros((1, cfg["style_dim"]))))
    variables = fill(sd, entries, abstract, what, ignore=kernels)
    return cfg, variables


def discriminator_config_from_state_dict(sd: StateDict) -> dict:
    n_blocks = count(sd, r"convs\.(\d+)\.conv1\.0\.weight")
    log_size = n_blocks + 2
    size = 2 ** log_size
    channels = {size: int(get(sd, "convs.0.0.weight").shape[0])}
    for j in range(n_blocks):
        channels[2 ** (log_size - 1 - j)] = int(get(sd, f"convs.{j + 1}.conv2.1.weight").shape[0])
    blur = (1.0, 3.0, 3.0, 1.0)
    if "convs.1.conv2.0.kernel" in sd:
        blur = _blur_taps(sd, "convs.1.conv2.0.kernel", 1.0)
    return dict(size=size, channels=tuple(sorted(channels.items())), blur_kernel=blur)


def _discriminator_entries(cfg: dict) -> tuple[list, list]:
    P = ("params",)
    n_blocks = int(math.log2(cfg["size"])) - 2
    entries = [("convs.0.0.weight", P + ("convs_0", "conv", "weight"), "conv"),
               ("convs.0.1.bias", P + ("convs_0", "activate_bias"), "id")]
    kernels = []
    for j in range(1, n_blocks + 1):
        b, p = f"convs.{j}", P + (f"convs_{j}",)
        entries += [
            (f"{b}.conv1.0.weight", p + ("conv1", "conv", "weight"), "conv"),
            (f"{b}.conv1.1.bias", p + ("conv1", "activate_bias"), "id"),
            (f"{b}.conv2.1.weight", p + ("conv2", "conv", "weight"), "conv"),
            (f"{b}.conv2.2.bias", p + ("conv2", "activate_bias"), "id"),
            (f"{b}.skip.1.weight", p + ("skip", "conv", "weight"), "conv"),
        ]
        kernels += [f"{b}.conv2.0.kernel", f"{b}.skip.0.kernel"]
    entries += [("final_conv.0.weight", P + ("final_conv", "conv", "weight"), "conv"),
                ("final_conv.1.bias", P + ("final_conv", "activate_bias"), "id"),
                *linear("final_linear.0", P + ("final_linear_0",)),
                *linear("final_linear.1", P + ("final_linear_1",))]
    return entries, kernels


def convert_discriminator(sd: StateDict, prefix: str | None = None) -> tuple[dict, dict]:
    """rosinality ``Discriminator`` state dict -> (config, variables)."""
    sd = strip_prefix(sd, prefix)
    what = "discriminator state dict"
    try:
        cfg = discriminator_config_from_state_dict(sd)
    except CheckpointError as e:
        raise CheckpointError(f"{what}: {e}") from None
    entries, kernels = _discriminator_entries(cfg)
    _check_kernels(sd, kernels, cfg["blur_kernel"], 1.0, what)
    module = Discriminator(**cfg)
    abstract = jax.eval_shape(
        lambda: module.init(jax.random.PRNGKey(0), jnp.zeros((1, cfg["size"], cfg["size"], 3))))
    variables = fill(sd, entries, abstract, what, ignore=kernels)
    return cfg, variables


def _blur_entries(keys, taps, factor_sq) -> dict:
    k = make_kernel(taps) * factor_sq
    return {key: k.astype(np.float32) for key in keys}


def generator_to_state_dict(cfg: dict, variables: dict, dtype=np.float32) -> dict[str, np.ndarray]:
    """Our generator variables -> a rosinality ``Generator`` state dict (the inverse of
    :func:`convert_generator`, blur kernels included), e.g. to save with torch. Any tree
    shaped like the parameters maps the same way (gradients, Adam moments), in ``dtype``."""
    if cfg.get("c_dim"):
        raise CheckpointError("a class-conditional generator (c_dim > 0) has no rosinality state-dict layout")
    if cfg.get("upsample_mode", "blur") != "blur":
        raise CheckpointError(f"a generator with upsample_mode={cfg['upsample_mode']!r} has no rosinality "
                              "state-dict layout (the reference always upsamples with the FIR blur)")
    entries, kernels = _generator_entries(cfg)
    return export(entries, variables, _blur_entries(kernels, cfg["blur_kernel"], 4.0), dtype)


def discriminator_to_state_dict(cfg: dict, variables: dict, dtype=np.float32) -> dict[str, np.ndarray]:
    """Our discriminator variables -> a rosinality ``Discriminator`` state dict."""
    if cfg.get("c_dim"):
        raise CheckpointError("a projection discriminator (c_dim > 0) has no rosinality state-dict layout")
    entries, kernels = _discriminator_entries(cfg)
    return export(entries, variables, _blur_entries(kernels, cfg["blur_kernel"], 1.0), dtype)
