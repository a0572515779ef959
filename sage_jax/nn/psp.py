"""pSp encoders in Flax (NHWC), matching ``models/encoders/psp_encoders.py`` and
``helpers.py`` of pixel2style2pixel as shipped in AGE and SAGE.

The IR / IR-SE backbone (ArcFace ResNet units), the ``GradualStyleEncoder`` with its FPN
and style heads, and the two simpler encoders. BatchNorm always runs in inference mode
with the stored running statistics (``batch_stats`` collection), as the reference does
in ``eval()``.

Widths and input size are attributes: the reference is ``widths=(64, 128, 256, 512)``,
``style_dim=512`` at 256 px; the tiny configuration uses a narrow encoder at 32 px. The
number of stride-2 convolutions of each style head follows from the input size (for
256 px: 4, 5 and 6 for the coarse, middle and fine heads). ``input_nc`` is 3 for pSp;
6 for an iterative (ReStyle) encoder, which sees the image beside the current
reconstruction (:func:`sage_jax.models.encode_images`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sage_jax.nn.layers import EqualLinear, accumulation_type

Dtype = Any

# units per stage of the IR backbones (ArcFace ResNets). pSp's ``get_blocks`` has 50,
# 100 and 152; 18 and 34 (InsightFace's iresnet18/34 unit counts, the same IR units) are
# additions of ours for small models and fast experiments.
UNITS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}
BN_EPS = 1e-5


def backbone_units(num_layers: int, widths: Sequence[int] = (64, 128, 256, 512)):
    """(in_channels, depth, stride) of every unit, as ``get_blocks`` of the reference:
    each stage starts with a stride-2 unit."""
    if num_layers not in UNITS:
        raise ValueError(f"num_layers must be one of {sorted(UNITS)}, got {num_layers}")
    units, in_ch = [], widths[0]
    for depth, n in zip(widths, UNITS[num_layers]):
        units.append((in_ch, depth, 2))
        units += [(depth, depth, 1)] * (n - 1)
        in_ch = depth
    return units


def stage_ends(num_layers: int) -> tuple[int, int, int]:
    """Indices of the last unit of stages 2, 3 and 4: the FPN's c1, c2, c3. For depth
    50 these are the reference's hard-coded 6, 20 and 23."""
    n = np.cumsum(UNITS[num_layers]) - 1
    return int(n[1]), int(n[2]), int(n[3])


def align_corners_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation weights of ``F.interpolate(mode='bilinear',
    align_corners=True)`` along one axis."""
    m = np.zeros((n_out, n_in), np.float64)
    if n_in == 1 or n_out == 1:
        m[:, 0] = 1.0
        return m
    pos = np.arange(n_out, dtype=np.float64) * (n_in - 1) / (n_out - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = pos - lo
    m[np.arange(n_out), lo] += 1 - frac
    m[np.arange(n_out), hi] += frac
    return m


def upsample_bilinear_align_corners(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Bilinear resize with ``align_corners=True`` (NHWC), as two small matmuls."""
    mh = jnp.asarray(align_corners_matrix(size[0], x.shape[1]), x.dtype)
    mw = jnp.asarray(align_corners_matrix(size[1], x.shape[2]), x.dtype)
    return jnp.einsum("oh,nhwc,pw->nopc", mh, x, mw)


def _check_input(x, size: int, channels: int) -> None:
    if x.ndim != 4 or x.shape[1:] != (size, size, channels):
        raise ValueError(f"encoder expects (N, {size}, {size}, {channels}) inputs, got {x.shape}")


def _out_dtype(dtype) -> Any:
    """Heads and outputs run in float32, or float64 when the whole encoder does."""
    return jnp.promote_types(dtype, jnp.float32)


class Conv(nn.Module):
    """Plain ``nn.Conv2d`` (OIHW weights become HWIO ``weight``)."""

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    use_bias: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        fan_in = x.shape[-1] * k * k
        w = self.param("weight", nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
                       (k, k, x.shape[-1], self.features))
        out = jax.lax.conv_general_dilated(
            x.astype(self.dtype), w.astype(self.dtype), (self.stride, self.stride),
            [(self.padding, self.padding)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC"),
            preferred_element_type=accumulation_type(self.dtype))  # bfloat16: float32 sums
        if self.use_bias:
            bound = 1 / math.sqrt(fan_in)  # PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            b = self.param("bias", lambda k, s: jax.random.uniform(k, s, jnp.float32, -bound, bound),
                           (self.features,))
            out = out + b.astype(out.dtype)
        return out


class BatchNorm(nn.Module):
    """``nn.BatchNorm2d``. Inference (the default): running statistics from
    ``batch_stats``. ``train=True``: batch statistics, and the running ones updated
    as PyTorch does (momentum 0.1, unbiased variance); ``batch_stats`` must then be
    mutable."""

    eps: float = BN_EPS
    momentum: float = 0.1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        c = x.shape[-1]
        scale = self.param("weight", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        ra_mean = self.variable("batch_stats", "running_mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "running_var", lambda: jnp.ones((c,), jnp.float32))
        # statistics in float32, or float64 when the encoder computes in float64
        dt = _out_dtype(x.dtype)
        if train and not self.is_initializing():
            xf = x.astype(dt)
            mean = jnp.mean(xf, axis=(0, 1, 2))
            var = jnp.mean(jnp.square(xf - mean), axis=(0, 1, 2))
            n = x.shape[0] * x.shape[1] * x.shape[2]
            m = self.momentum
            ra_mean.value = ((1 - m) * ra_mean.value + m * mean).astype(ra_mean.value.dtype)
            ra_var.value = ((1 - m) * ra_var.value + m * var * n / max(n - 1, 1)).astype(ra_var.value.dtype)
        else:
            mean, var = ra_mean.value, ra_var.value
        mul = scale.astype(dt) * jax.lax.rsqrt(var.astype(dt) + self.eps)
        return x * mul.astype(x.dtype) + (bias.astype(dt) - mean.astype(dt) * mul).astype(x.dtype)


class PReLU(nn.Module):
    @nn.compact
    def __call__(self, x):
        a = self.param("weight", nn.initializers.constant(0.25), (x.shape[-1],))
        return jnp.where(x > 0, x, x * a.astype(x.dtype))  # PyTorch's gradient at 0


class SEModule(nn.Module):
    reduction: int = 16
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = Conv(c // self.reduction, 1, dtype=self.dtype, name="fc1")(s)
        s = jax.nn.relu(s)
        s = Conv(c, 1, dtype=self.dtype, name="fc2")(s)
        return x * jax.nn.sigmoid(s)


class BottleneckIR(nn.Module):
    """ArcFace IR unit (``bottleneck_IR`` / ``bottleneck_IR_SE`` with ``se=True``)."""

    depth: int
    stride: int
    se: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        if x.shape[-1] == self.depth:
            shortcut = x[:, ::self.stride, ::self.stride]  # MaxPool2d(1, stride)
        else:
            shortcut = Conv(self.depth, 1, stride=self.stride, dtype=self.dtype, name="shortcut_conv")(x)
            shortcut = BatchNorm(dtype=self.dtype, name="shortcut_bn")(shortcut, train)
        r = BatchNorm(dtype=self.dtype, name="bn1")(x, train)
        r = Conv(self.depth, 3, padding=1, dtype=self.dtype, name="conv1")(r)
        r = PReLU(name="prelu")(r)
        r = Conv(self.depth, 3, stride=self.stride, padding=1, dtype=self.dtype, name="conv2")(r)
        r = BatchNorm(dtype=self.dtype, name="bn2")(r, train)
        if self.se:
            r = SEModule(dtype=self.dtype, name="se")(r)
        return r + shortcut


class Backbone(nn.Module):
    """Input layer (conv, BN, PReLU) and the IR units; returns every unit's output
    listed in ``taps`` (and the last)."""

    num_layers: int = 50
    mode: str = "ir_se"
    widths: tuple[int, ...] = (64, 128, 256, 512)
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, taps: Sequence[int] = (), train: bool = False):
        if self.mode not in ("ir", "ir_se"):
            raise ValueError(f"mode must be 'ir' or 'ir_se', got {self.mode!r}")
        if self.mode == "ir_se" and min(self.widths) < SEModule.reduction:
            raise ValueError(f"ir_se units squeeze channels by {SEModule.reduction}: widths must be at least "
                             f"{SEModule.reduction}, got {tuple(self.widths)} (or use mode='ir')")
        x = Conv(self.widths[0], 3, padding=1, dtype=self.dtype, name="input_conv")(x.astype(self.dtype))
        x = BatchNorm(dtype=self.dtype, name="input_bn")(x, train)
        x = PReLU(name="input_prelu")(x)
        feats = {}
        for i, (_, depth, stride) in enumerate(backbone_units(self.num_layers, self.widths)):
            x = BottleneckIR(depth, stride, se=self.mode == "ir_se", dtype=self.dtype, name=f"body_{i}")(x, train)
            if i in taps:
                feats[i] = x
        return x, feats


class GradualStyleBlock(nn.Module):
    """Stride-2 convs + LeakyReLU(0.01) down to 1x1, then an equalized linear."""

    out_c: int
    n_convs: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        for j in range(self.n_convs):
            x = Conv(self.out_c, 3, stride=2, padding=1, use_bias=True, dtype=self.dtype, name=f"convs_{2 * j}")(x)
            x = jnp.where(x > 0, x, 0.01 * x)
        if x.shape[1:3] != (1, 1):
            raise ValueError(f"style head ends at {x.shape[1:3]}, not 1x1: input size does not fit")
        x = x.reshape(x.shape[0], self.out_c)
        dt = _out_dtype(self.dtype)
        return EqualLinear(self.out_c, lr_mul=1.0, dtype=dt, name="linear")(x.astype(dt))


class GradualStyleEncoder(nn.Module):
    """pSp's ``GradualStyleEncoder``: images (N, S, S, 3) in [-1, 1] -> raw W+ codes
    (N, n_styles, style_dim), before ``latent_avg`` is added."""

    num_layers: int = 50
    mode: str = "ir_se"
    input_size: int = 256
    n_styles: int = 18
    style_dim: int = 512
    widths: tuple[int, ...] = (64, 128, 256, 512)
    coarse_ind: int = 3
    middle_ind: int = 7
    input_nc: int = 3   # 6: an iterative (ReStyle) encoder, fed the image and the current reconstruction
    dtype: Dtype = jnp.float32

    def head_convs(self) -> tuple[int, int, int]:
        """Stride-2 convs of the coarse, middle and fine heads (4, 5, 6 at 256 px)."""
        s = int(math.log2(self.input_size))
        if 2 ** s != self.input_size or s < 5:
            raise ValueError(f"input_size must be a power of two >= 32, got {self.input_size}")
        return s - 4, s - 3, s - 2

    @nn.compact
    def __call__(self, x, train: bool = False):
        _check_input(x, self.input_size, self.input_nc)
        i1, i2, i3 = stage_ends(self.num_layers)
        _, f = Backbone(self.num_layers, self.mode, self.widths, self.dtype, name="backbone")(
            x, taps=(i1, i2, i3), train=train)
        c1, c2, c3 = f[i1], f[i2], f[i3]
        nc, nm, nf = self.head_convs()
        top = self.widths[3]

        def head(i, n, feat):
            return GradualStyleBlock(self.style_dim, n, dtype=self.dtype, name=f"styles_{i}")(feat)

        latents = [head(j, nc, c3) for j in range(min(self.coarse_ind, self.n_styles))]
        p2 = upsample_bilinear_align_corners(c3, c2.shape[1:3]) + \
            Conv(top, 1, use_bias=True, dtype=self.dtype, name="latlayer1")(c2)
        latents += [head(j, nm, p2) for j in range(self.coarse_ind, min(self.middle_ind, self.n_styles))]
        p1 = upsample_bilinear_align_corners(p2, c1.shape[1:3]) + \
            Conv(top, 1, use_bias=True, dtype=self.dtype, name="latlayer2")(c1)
        latents += [head(j, nf, p1) for j in range(self.middle_ind, self.n_styles)]
        return jnp.stack(latents, axis=1).astype(_out_dtype(self.dtype))


class BackboneEncoderUsingLastLayerIntoW(nn.Module):
    """pSp's simplest encoder: global average pool of the last map -> one W code (N, D)."""

    num_layers: int = 50
    mode: str = "ir_se"
    input_size: int = 256
    style_dim: int = 512
    widths: tuple[int, ...] = (64, 128, 256, 512)
    input_nc: int = 3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        _check_input(x, self.input_size, self.input_nc)
        x, _ = Backbone(self.num_layers, self.mode, self.widths, self.dtype, name="backbone")(x, train=train)
        dt = _out_dtype(self.dtype)
        x = jnp.mean(x.astype(dt), axis=(1, 2))
        return EqualLinear(self.style_dim, lr_mul=1.0, dtype=dt, name="linear")(x)


def adaptive_avg_pool(x: jax.Array, out: int) -> jax.Array:
    """``AdaptiveAvgPool2d(out)`` on NHWC (bins as PyTorch computes them)."""
    n, h, w, c = x.shape

    def bins(size):
        return [(int(math.floor(i * size / out)), int(math.ceil((i + 1) * size / out))) for i in range(out)]

    rows = [jnp.stack([jnp.mean(x[:, a:b, p:q], axis=(1, 2)) for p, q in bins(w)], axis=1) for a, b in bins(h)]
    return jnp.stack(rows, axis=1)


class BackboneEncoderUsingLastLayerIntoWPlus(nn.Module):
    """pSp's second simple encoder: BN, 7x7 adaptive pool, linear, equalized linear to
    ``n_styles`` codes (N, n_styles, D)."""

    num_layers: int = 50
    mode: str = "ir_se"
    input_size: int = 256
    n_styles: int = 18
    style_dim: int = 512
    widths: tuple[int, ...] = (64, 128, 256, 512)
    input_nc: int = 3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        _check_input(x, self.input_size, self.input_nc)
        x, _ = Backbone(self.num_layers, self.mode, self.widths, self.dtype, name="backbone")(x, train=train)
        dt = _out_dtype(self.dtype)
        x = BatchNorm(dtype=self.dtype, name="output_bn")(x, train).astype(dt)
        x = adaptive_avg_pool(x, 7)
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)  # NCHW flatten, as Flatten()
        x = nn.Dense(self.style_dim, dtype=dt, name="output_linear")(x)
        x = EqualLinear(self.style_dim * self.n_styles, lr_mul=1.0, dtype=dt, name="linear")(x)
        return x.reshape(-1, self.n_styles, self.style_dim)


ENCODERS = {
    "GradualStyleEncoder": GradualStyleEncoder,
    "BackboneEncoderUsingLastLayerIntoW": BackboneEncoderUsingLastLayerIntoW,
    "BackboneEncoderUsingLastLayerIntoWPlus": BackboneEncoderUsingLastLayerIntoWPlus,
}
