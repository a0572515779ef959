"""Conversion of pSp encoder state dicts (``encoder.*`` of pSp / AGE / SAGE checkpoints)
and reading of the checkpoints' ``opts``.

The encoder type, backbone depth, IR or IR-SE units, widths, number of styles, style
dimension and (for the ``GradualStyleEncoder``) the input size are read off the tensor
shapes. Every key is consumed, every shape checked.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from sage_jax.checkpoints._convert import StateDict, count, export, fill, get, linear, strip_prefix
from sage_jax.checkpoints.torch_reader import CheckpointError
from sage_jax.models import build_encoder
from sage_jax.nn.psp import UNITS, backbone_units

_DEPTH_BY_UNITS = {sum(v): k for k, v in UNITS.items()}


def _conv(key, path, bias=False):
    e = [(f"{key}.weight", path + ("weight",), "conv")]
    if bias:
        e.append((f"{key}.bias", path + ("bias",), "id"))
    return e


def _bn(key, path):
    P, B = ("params",), ("batch_stats",)
    return [(f"{key}.weight", P + path + ("weight",), "id"), (f"{key}.bias", P + path + ("bias",), "id"),
            (f"{key}.running_mean", B + path + ("running_mean",), "id"),
            (f"{key}.running_var", B + path + ("running_var",), "id")], [f"{key}.num_batches_tracked"]


def encoder_config_from_state_dict(sd: StateDict, input_size: int | None = None) -> dict:
    """Encoder type and constructor arguments read off an ``encoder.*`` state dict."""
    n_units = count(sd, r"body\.(\d+)\.res_layer\.1\.weight")
    if n_units == 0:
        raise CheckpointError(f"no backbone units (body.N.*): not a complete encoder; it has only "
                              f"{sorted(sd)[:6]}")
    if n_units not in _DEPTH_BY_UNITS:
        raise CheckpointError(f"{n_units} backbone units match no IR depth (" + ", ".join(
                              f"{d}: {sum(u)}" for d, u in sorted(UNITS.items())) + ")")
    num_layers = _DEPTH_BY_UNITS[n_units]
    mode = "ir_se" if "body.0.res_layer.5.fc1.weight" in sd else "ir"
    starts = [0, *itertools.accumulate(UNITS[num_layers][:-1])]
    widths = tuple(int(get(sd, f"body.{i}.res_layer.1.weight").shape[0]) for i in starts)
    in_nc = int(get(sd, "input_layer.0.weight").shape[1])
    cfg = dict(num_layers=num_layers, mode=mode, widths=widths)
    if in_nc != 3:
        raise CheckpointError(f"encoders with {in_nc} input channels are not supported (only RGB)")
    if "styles.0.linear.weight" in sd:
        n_styles = count(sd, r"styles\.(\d+)\.linear\.weight")
        convs = [count(sd, rf"styles\.{j}\.convs\.(\d+)\.weight", step=2) for j in range(n_styles)]
        size = 2 ** (convs[0] + 4)  # the first (coarse) head: log2(size) - 4 convs
        if input_size is not None and input_size != size:
            raise CheckpointError(f"the style heads fit {size} px inputs, not {input_size}")
        coarse = sum(1 for c in convs if c == convs[0])
        middle = coarse + sum(1 for c in convs[coarse:] if c == convs[0] + 1)
        cfg.update(kind="GradualStyleEncoder", input_size=size, n_styles=n_styles,
                   style_dim=int(get(sd, "styles.0.linear.weight").shape[0]),
                   coarse_ind=coarse, middle_ind=middle)
        want = [math.log2(size) - 4] * coarse + [math.log2(size) - 3] * (middle - coarse) + \
            [math.log2(size) - 2] * (n_styles - middle)
        if convs != want:
            raise CheckpointError(f"style heads with {convs} convolutions fit no input size")
    elif "output_layer_2.0.weight" in sd:
        out = get(sd, "linear.weight").shape[0]
        style_dim = int(get(sd, "output_layer_2.3.weight").shape[0])
        cfg.update(kind="BackboneEncoderUsingLastLayerIntoWPlus", input_size=input_size or 256,
                   style_dim=style_dim, n_styles=int(out) // style_dim)
    elif "linear.weight" in sd:
        cfg.update(kind="BackboneEncoderUsingLastLayerIntoW", input_size=input_size or 256,
                   style_dim=int(get(sd, "linear.weight").shape[0]))
    else:
        raise CheckpointError("no style heads and no output layer: not a pSp encoder")
    return cfg


def _encoder_entries(cfg: dict) -> tuple[list, list]:
    P = ("params",)
    bb = ("backbone",)
    entries, ignore = [], []

    def add_bn(key, path):
        e, i = _bn(key, path)
        entries.extend(e)
        ignore.extend(i)

    entries += _conv("input_layer.0", P + bb + ("input_conv",))
    add_bn("input_layer.1", bb + ("input_bn",))
    entries.append(("input_layer.2.weight", P + bb + ("input_prelu", "weight"), "id"))
    for i, (in_ch, depth, _) in enumerate(backbone_units(cfg["num_layers"], cfg["widths"])):
        k, p = f"body.{i}", bb + (f"body_{i}",)
        if in_ch != depth:
            entries += _conv(f"{k}.shortcut_layer.0", P + p + ("shortcut_conv",))
            add_bn(f"{k}.shortcut_layer.1", p + ("shortcut_bn",))
        add_bn(f"{k}.res_layer.0", p + ("bn1",))
        entries += _conv(f"{k}.res_layer.1", P + p + ("conv1",))
        entries.append((f"{k}.res_layer.2.weight", P + p + ("prelu", "weight"), "id"))
        entries += _conv(f"{k}.res_layer.3", P + p + ("conv2",))
        add_bn(f"{k}.res_layer.4", p + ("bn2",))
        if cfg["mode"] == "ir_se":
            entries += _conv(f"{k}.res_layer.5.fc1", P + p + ("se", "fc1"))
            entries += _conv(f"{k}.res_layer.5.fc2", P + p + ("se", "fc2"))
    kind = cfg["kind"]
    if kind == "GradualStyleEncoder":
        s = int(math.log2(cfg["input_size"]))
        for j in range(cfg["n_styles"]):
            n = s - 4 if j < cfg["coarse_ind"] else (s - 3 if j < cfg["middle_ind"] else s - 2)
            for c in range(n):
                entries += _conv(f"styles.{j}.convs.{2 * c}", P + (f"styles_{j}", f"convs_{2 * c}"), bias=True)
            entries += linear(f"styles.{j}.linear", P + (f"styles_{j}", "linear"))
        entries += _conv("latlayer1", P + ("latlayer1",), bias=True)
        entries += _conv("latlayer2", P + ("latlayer2",), bias=True)
    elif kind == "BackboneEncoderUsingLastLayerIntoWPlus":
        add_bn("output_layer_2.0", ("output_bn",))
        entries += [("output_layer_2.3.weight", P + ("output_linear", "kernel"), "linear"),
                    ("output_layer_2.3.bias", P + ("output_linear", "bias"), "id")]
        entries += linear("linear", P + ("linear",))
    else:
        entries += linear("linear", P + ("linear",))
    return entries, ignore


def convert_encoder(sd: StateDict, prefix: str | None = None, input_size: int | None = None) -> tuple[dict, dict]:
    """pSp encoder state dict -> (config, variables with ``params`` and ``batch_stats``)."""
    sd = strip_prefix(sd, prefix)
    what = "encoder state dict"
    try:
        cfg = encoder_config_from_state_dict(sd, input_size)
    except CheckpointError as e:
        raise CheckpointError(f"{what}: {e}") from None
    entries, ignore = _encoder_entries(cfg)
    module = build_encoder(cfg)
    size = cfg["input_size"]
    abstract = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3))))
    variables = fill(sd, entries, abstract, what, ignore=[k for k in ignore if k in sd])
    return cfg, variables


def encoder_to_state_dict(cfg: dict, variables: dict) -> dict[str, np.ndarray]:
    """Our encoder variables -> a pSp encoder state dict (inverse of :func:`convert_encoder`)."""
    entries, counters = _encoder_entries(cfg)
    return export(entries, variables, {k: np.array(0, np.int64) for k in counters})


def psp_config_from_opts(opts: dict | None, n_latent: int | None = None) -> dict:
    """The parts of a pSp/AGE/SAGE ``opts`` the models need, with the reference defaults."""
    opts = dict(opts or {})
    out = {
        "output_size": int(opts.get("output_size", 1024)),
        "encoder_type": str(opts.get("encoder_type", "GradualStyleEncoder")),
        "start_from_latent_avg": bool(opts.get("start_from_latent_avg", True)),
        "A_length": int(opts["A_length"]) if "A_length" in opts else None,
        "input_nc": int(opts.get("input_nc", 3)),
    }
    out["n_latent"] = n_latent if n_latent is not None else 2 * int(math.log2(out["output_size"])) - 2
    return out

