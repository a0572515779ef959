"""StyleGAN2 building blocks in Flax (NHWC), numerically matching rosinality's
stylegan2-pytorch (``model.py`` and ``op/``), the implementation pSp, AGE and SAGE use.

Parameters keep the reference's parametrisation (equalized learning rate: weights are
stored unscaled and multiplied by ``1/sqrt(fan_in)`` at run time, linear layers of the
mapping network by ``lr_mul`` as well) so that converted checkpoints and training
dynamics are the reference's. Only the layouts differ: linear weights are (in, out),
convolution weights HWIO.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any
SQRT2 = math.sqrt(2.0)


def wide_dtype(dtype: Dtype) -> Any:
    """The dtype of what is never rounded to a low-precision compute dtype (accumulation,
    modulation and demodulation, statistics, the RGB skip path, outputs): float32, or
    float64 when the compute dtype is float64 (a float64 network is float64 throughout)."""
    return jnp.promote_types(dtype, jnp.float32)


def accumulation_type(dtype: Dtype) -> Any:
    """``preferred_element_type`` of a convolution or matmul whose inputs are ``dtype``:
    float32 for a dtype narrower than float32 (bfloat16, float16: the inputs are rounded,
    the products accumulate and come out in float32), else None (float32 and float64
    accumulate in themselves; XLA refuses an accumulation type narrower than the inputs)."""
    return jnp.float32 if jnp.finfo(dtype).bits < 32 else None


# "smooth-skip": feature maps doubled by nearest neighbour, the RGB skip images bilinearly
UPSAMPLE_MODES = ("blur", "nearest", "bilinear", "smooth-skip")


def check_upsample_mode(mode: str) -> str:
    if mode not in UPSAMPLE_MODES:
        raise ValueError(f"upsample_mode must be one of {UPSAMPLE_MODES}, got {mode!r}")
    return mode


def upsample_nearest(x: jax.Array) -> jax.Array:
    """NHWC -> twice the height and width, each pixel repeated 2x2."""
    n, h, w, c = x.shape
    return jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, 2, w, 2, c)).reshape(n, 2 * h, 2 * w, c)


def upsample_bilinear(x: jax.Array) -> jax.Array:
    """NHWC -> twice the height and width by bilinear interpolation (pixel centres at
    half-pixel offsets, edges clamped): each output pixel 3/4 of its nearest input pixel
    and 1/4 of the next, per axis, so a smooth input stays smooth (nearest-neighbour
    doubling leaves 2x2 steps, which repeated doublings stack into 4-8 px tiles)."""
    n, h, w, c = x.shape
    return jax.image.resize(x, (n, 2 * h, 2 * w, c), "bilinear", antialias=False)


def upsample_features(x: jax.Array, mode: str) -> jax.Array:
    """Feature maps ``x`` doubled as ``mode`` says: bilinearly ("bilinear") or by nearest
    neighbour ("nearest", "smooth-skip"); "blur" is the transposed convolution's, done
    inside the convolution."""
    return upsample_bilinear(x) if mode == "bilinear" else upsample_nearest(x)


def make_kernel(taps: Sequence[float]) -> np.ndarray:
    """2-D FIR kernel from 1-D taps (outer product), normalised to sum 1, as
    ``make_kernel`` of the reference."""
    k = np.asarray(taps, dtype=np.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def _separable_taps(kernel: np.ndarray):
    """(taps_h, taps_w) with ``kernel == outer(taps_h, taps_w)``, or None."""
    u, sv, vt = np.linalg.svd(kernel.astype(np.float64))
    if sv.size > 1 and sv[1] > 1e-7 * sv[0]:
        return None
    th, tw = u[:, 0] * np.sqrt(sv[0]), vt[0] * np.sqrt(sv[0])
    if not np.allclose(np.outer(th, tw), kernel, rtol=1e-6, atol=1e-9):
        return None
    return th, tw


def _zero_insert(x: jax.Array, up: int, axis: int) -> jax.Array:
    """``up - 1`` zeros after every element along ``axis`` (the last ones kept, as the
    reference's reshape-and-pad upsampling does)."""
    if up == 1:
        return x
    zeros = jnp.zeros(x.shape + (up - 1,), x.dtype)
    y = jnp.concatenate([jnp.expand_dims(x, -1), zeros], axis=-1)  # (..., n, ..., up)
    y = jnp.moveaxis(y, -1, axis + 1)
    shape = list(x.shape)
    shape[axis] *= up
    return y.reshape(shape)


def _fir_1d(x: jax.Array, taps: np.ndarray, axis: int, down: int) -> jax.Array:
    """Valid correlation of ``x`` with ``taps`` along ``axis``, every ``down``-th output:
    a short sum of shifted slices, which XLA fuses into one elementwise loop."""
    n = x.shape[axis]
    out_len = (n - len(taps)) // down + 1
    acc = None
    for t, c in enumerate(taps):
        if c == 0:
            continue
        part = jax.lax.slice_in_dim(x, t, t + (out_len - 1) * down + 1, stride=down, axis=axis)
        term = part * jnp.asarray(c, x.dtype)
        acc = term if acc is None else acc + term
    return acc


def _pad_axis(x: jax.Array, axis: int, lo: int, hi: int) -> jax.Array:
    """Pad (positive) or crop (negative) ``axis`` by ``lo`` / ``hi``."""
    cfg = [(0, 0, 0)] * x.ndim
    cfg[axis] = (lo, hi, 0)
    return jax.lax.pad(x, jnp.zeros((), x.dtype), cfg)


def upfirdn2d(x: jax.Array, kernel: np.ndarray, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> jax.Array:
    """Upsample by zero insertion, pad, FIR-filter, downsample: ``upfirdn2d`` of the
    reference on NHWC input, the same ``pad`` on both spatial axes (negative crops).

    The filter is applied as a true convolution (kernel flipped). A separable kernel
    (all of StyleGAN2's blur kernels) runs as two 1-D passes of shifted slices, which
    XLA fuses into elementwise loops; any other kernel as a depthwise convolution.
    """
    kernel = np.asarray(kernel, dtype=np.float32)
    flipped = kernel[::-1, ::-1].copy()
    taps = _separable_taps(flipped)
    p0, p1 = pad
    if taps is not None:
        for axis, t in ((1, taps[0]), (2, taps[1])):
            y = _pad_axis(_zero_insert(x, up, axis), axis, p0, p1)
            x = _fir_1d(y, np.asarray(t, np.float32), axis, down)
        return x
    c = x.shape[-1]
    w = jnp.tile(jnp.asarray(flipped, dtype=x.dtype)[:, :, None, None], (1, 1, 1, c))  # HWIO, depthwise
    # lhs_dilation leaves (up - 1) fewer zeros at the end than the reference's
    # reshape-and-pad upsampling: add them to the high padding.
    padding = [(p0, p1 + up - 1), (p0, p1 + up - 1)]
    return jax.lax.conv_general_dilated(
        x, w,
        window_strides=(down, down),
        padding=padding,
        lhs_dilation=(up, up),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=c,
    )


def conv_transpose_stride2(x: jax.Array, w: jax.Array, preferred_element_type=None) -> jax.Array:
    """``conv_transpose2d(x, w, stride=2, padding=0)`` of the reference (NHWC input,
    ``w`` HWIO, output ``2H + k - 2`` per side), computed by phase decomposition: output
    pixel ``(2i + a, 2j + b)`` only sees the taps ``w[a::2, b::2]``, so the four phases
    are four ordinary convolutions of the undilated input with those sub-kernels
    (``k * k`` taps in all, no multiplication by inserted zeros), interleaved."""
    k = w.shape[0]
    n, h, wd, _ = x.shape
    out_h, out_w = h + (k + 1) // 2 - 1, wd + (k + 1) // 2 - 1   # phase 0 is the longest
    phases = []
    for a in range(2):
        row = []
        for b in range(2):
            sub = w[a::2, b::2][::-1, ::-1]   # correlation taps of this phase
            th, tw = sub.shape[:2]
            if th == 0 or tw == 0:            # k = 1: the odd phases get no tap
                row.append(jnp.zeros((n, out_h, out_w, w.shape[-1]), preferred_element_type or x.dtype))
                continue
            y = jax.lax.conv_general_dilated(
                x, sub, window_strides=(1, 1), padding=[(th - 1, th - 1), (tw - 1, tw - 1)],
                dimension_numbers=("NHWC", "HWIO", "NHWC"), preferred_element_type=preferred_element_type)
            y = jnp.pad(y, ((0, 0), (0, out_h - y.shape[1]), (0, out_w - y.shape[2]), (0, 0)))
            row.append(y)
        phases.append(jnp.stack(row, axis=3))    # (N, out_h, out_w, 2[b], C)
    y = jnp.stack(phases, axis=2)                # (N, out_h, 2[a], out_w, 2[b], C)
    y = y.reshape(n, 2 * out_h, 2 * out_w, w.shape[-1])
    return y[:, :2 * h + k - 2, :2 * wd + k - 2]


def fused_leaky_relu(x: jax.Array, bias: jax.Array | None = None, negative_slope: float = 0.2,
                     scale: float = SQRT2) -> jax.Array:
    """``leaky_relu(x + bias, 0.2) * sqrt(2)``, bias over the last (channel) axis.

    At the kink (``x + bias == 0`` exactly) the gradient is the negative slope's, as in
    PyTorch's ``leaky_relu`` backward and rosinality's fused CUDA kernel (``x > 0`` picks
    the identity branch)."""
    if bias is not None:
        x = x + bias.astype(x.dtype)
    return jnp.where(x > 0, x, x * negative_slope) * jnp.asarray(scale, x.dtype)


def pixel_norm(x: jax.Array, eps: float = 1e-8) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps)


class EqualLinear(nn.Module):
    """Equalized-lr linear layer; ``activation=True`` is the reference's fused_lrelu."""

    features: int
    use_bias: bool = True
    bias_init: float = 0.0
    lr_mul: float = 1.0
    activation: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        in_dim = x.shape[-1]
        weight = self.param(
            "weight",
            lambda k, s: jax.random.normal(k, s, jnp.float32) / self.lr_mul,
            (in_dim, self.features),
        )
        scale = self.lr_mul / math.sqrt(in_dim)
        wdt = wide_dtype(self.dtype)  # scale weights at >= float32
        x = x.astype(self.dtype)
        out = jnp.matmul(x, (weight.astype(wdt) * scale).astype(self.dtype),
                         preferred_element_type=accumulation_type(self.dtype))
        if self.use_bias:
            bias = self.param("bias", nn.initializers.constant(self.bias_init), (self.features,))
            bias = (bias.astype(wdt) * self.lr_mul).astype(out.dtype)
            if self.activation:
                return fused_leaky_relu(out, bias)
            return out + bias
        return fused_leaky_relu(out) if self.activation else out


class EqualConv2d(nn.Module):
    """Equalized-lr convolution; ``stride`` 2 with ``padding`` 0 after a blur downsamples."""

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    use_bias: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        in_ch = x.shape[-1]
        k = self.kernel_size
        weight = self.param("weight", nn.initializers.normal(1.0), (k, k, in_ch, self.features))
        scale = 1.0 / math.sqrt(in_ch * k * k)
        out = jax.lax.conv_general_dilated(
            x.astype(self.dtype), (weight.astype(wide_dtype(self.dtype)) * scale).astype(self.dtype),
            window_strides=(self.stride, self.stride),
            padding=[(self.padding, self.padding)] * 2,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            preferred_element_type=accumulation_type(self.dtype),
        )
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,))
            out = out + bias.astype(out.dtype)
        return out


class ModulatedConv2d(nn.Module):
    """Modulated (and optionally demodulated) convolution of StyleGAN2.

    Computed as modulate-input / shared-weight convolution / demodulate-output, which is
    algebraically the reference's per-sample grouped convolution but runs as one dense
    convolution over the batch. ``upsample`` is a stride-2 transposed convolution
    followed by the FIR blur, as in the reference (``upsample_mode="blur"``), or with
    ``upsample_mode="nearest"`` (not in the reference) nearest-neighbour doubling followed
    by the same-size convolution: no blur, so the finest textures survive at small sizes,
    or ``upsample_mode="bilinear"`` (not in the reference either) bilinear doubling
    followed by the same-size convolution: no 2x2 steps for later layers to stack into
    tiles.
    """

    features: int
    kernel_size: int
    demodulate: bool = True
    upsample: bool = False
    blur_kernel: tuple[float, ...] = (1, 3, 3, 1)
    eps: float = 1e-8
    upsample_mode: str = "blur"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, style):
        in_ch = x.shape[-1]
        k = self.kernel_size
        weight = self.param("weight", nn.initializers.normal(1.0), (k, k, in_ch, self.features))
        wide = wide_dtype(self.dtype)
        s = EqualLinear(in_ch, bias_init=1.0, name="modulation", dtype=wide)(style)
        w = weight.astype(wide) * (1.0 / math.sqrt(in_ch * k * k))  # (k, k, in, out)
        x = (x.astype(wide) * s[:, None, None, :]).astype(self.dtype)
        # a low-precision compute dtype multiplies in it but accumulates and returns
        # float32, so only the convolution inputs are rounded (bfloat16 images stay
        # within about half an 8-bit level of float32)
        acc = accumulation_type(self.dtype)
        check_upsample_mode(self.upsample_mode)
        if self.upsample and self.upsample_mode != "blur":
            x = upsample_features(x, self.upsample_mode)
        if self.upsample and self.upsample_mode == "blur":
            # conv_transpose2d(stride 2, padding 0), then the blur
            out = conv_transpose_stride2(x, w.astype(self.dtype), preferred_element_type=acc)
            factor = 2
            p = (len(self.blur_kernel) - factor) - (k - 1)
            pad = ((p + 1) // 2 + factor - 1, p // 2 + 1)
            out = upfirdn2d(out, make_kernel(self.blur_kernel) * factor**2, pad=pad)
        else:
            out = jax.lax.conv_general_dilated(
                x, w.astype(self.dtype),
                window_strides=(1, 1),
                padding=[(k // 2, k // 2)] * 2,
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                preferred_element_type=acc,
            )
        if self.demodulate:
            # sum over (k, k, in) of (w * s)^2, per sample and output channel
            wsq = jnp.sum(jnp.square(w), axis=(0, 1))  # (in, out)
            d = jax.lax.rsqrt(jnp.square(s) @ wsq + self.eps)  # (N, out)
            out = out * d[:, None, None, :].astype(out.dtype)
        return out


class NoiseInjection(nn.Module):
    """``image + weight * noise`` with one learned scalar."""

    @nn.compact
    def __call__(self, x, noise):
        weight = self.param("weight", nn.initializers.zeros, (1,))
        wide = wide_dtype(x.dtype)
        return x + (weight.astype(wide) * noise.astype(wide)).astype(x.dtype)


class StyledConv(nn.Module):
    features: int
    kernel_size: int = 3
    upsample: bool = False
    blur_kernel: tuple[float, ...] = (1, 3, 3, 1)
    upsample_mode: str = "blur"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, style, noise):
        out = ModulatedConv2d(self.features, self.kernel_size, upsample=self.upsample,
                              blur_kernel=self.blur_kernel, upsample_mode=self.upsample_mode,
                              dtype=self.dtype, name="conv")(x, style)
        out = NoiseInjection(name="noise")(out, noise)
        bias = self.param("activate_bias", nn.initializers.zeros, (self.features,))
        return fused_leaky_relu(out, bias)


class ToRGB(nn.Module):
    upsample: bool = True
    blur_kernel: tuple[float, ...] = (1, 3, 3, 1)
    upsample_mode: str = "blur"   # of the skip images: the FIR filter (reference), "nearest" or "bilinear"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, style, skip=None):
        out = ModulatedConv2d(3, 1, demodulate=False, dtype=self.dtype, name="conv")(x, style)
        bias = self.param("bias", nn.initializers.zeros, (3,))
        # The RGB skip path is cheap (3 channels) and sums every resolution's output:
        # keep it in float32 (float64 for a float64 network) whatever the compute dtype.
        wide = wide_dtype(self.dtype)
        out = out.astype(wide) + bias.astype(wide)
        if skip is not None and check_upsample_mode(self.upsample_mode) != "blur":
            skip = skip.astype(wide)
            out = out + (upsample_nearest(skip) if self.upsample_mode == "nearest" else upsample_bilinear(skip))
        elif skip is not None:
            factor = 2
            p = len(self.blur_kernel) - factor
            pad = ((p + 1) // 2 + factor - 1, p // 2)
            out = out + upfirdn2d(skip.astype(wide),
                                  make_kernel(self.blur_kernel) * factor**2, up=factor, pad=pad)
        return out


class ConvLayer(nn.Module):
    """Discriminator conv: optional blur + stride-2 downsampling, optional fused lrelu."""

    features: int
    kernel_size: int
    downsample: bool = False
    blur_kernel: tuple[float, ...] = (1, 3, 3, 1)
    use_bias: bool = True
    activate: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        if self.downsample:
            factor = 2
            p = (len(self.blur_kernel) - factor) + (k - 1)
            x = upfirdn2d(x, make_kernel(self.blur_kernel), pad=((p + 1) // 2, p // 2))
            stride, padding = 2, 0
        else:
            stride, padding = 1, k // 2
        out = EqualConv2d(self.features, k, stride=stride, padding=padding,
                          use_bias=self.use_bias and not self.activate, dtype=self.dtype,
                          name="conv")(x)
        if self.activate:
            bias = (self.param("activate_bias", nn.initializers.zeros, (self.features,))
                    if self.use_bias else None)
            out = fused_leaky_relu(out, bias)
        return out
