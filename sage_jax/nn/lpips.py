"""LPIPS (``lpips`` package 0.1.4, ``LPIPS(net='vgg', version='0.1')``) in Flax, NHWC.

    d = LPIPS()(a, b)          # a, b: (N, H, W, 3) in [-1, 1]  ->  (N,) distances

The pipeline of the reference:

1. scaling layer ``(x - shift) / scale`` with the package's constants (kept as the
   ``buffers`` collection, as the reference keeps them as buffers);
2. the torchvision VGG16 ``features`` trunk (3x3 convs, padding 1, ReLU, 2x2 / stride 2
   max pools between stages), tapped after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3;
3. per tap: features unit-normalised over channels, ``x / (sqrt(sum x^2) + 1e-10)``,
   squared difference of the two images, the linear head (a 1x1 conv to one channel,
   no bias), spatial mean;
4. the sum over the five taps.

The reference returns ``(N, 1, 1, 1)``; here the distance is ``(N,)``.

:class:`LPIPSModel` binds the module to converted variables (see
:func:`sage_jax.checkpoints.lpips.load_lpips`) and jits the call.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

# the package's ScalingLayer constants (for inputs in [-1, 1])
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10

# VGG16 conv widths per stage; the taps are the last ReLU of each stage
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
TAP_CHANNELS = tuple(s[-1] for s in VGG16_STAGES)


def vgg16_feature_indices() -> list[list[int]]:
    """Indices in torchvision's ``vgg16().features`` of every conv, per stage:
    ``[[0, 2], [5, 7], [10, 12, 14], [17, 19, 21], [24, 26, 28]]``."""
    out, idx = [], 0
    for s, stage in enumerate(VGG16_STAGES):
        if s:
            idx += 1  # the max pool
        convs = []
        for _ in stage:
            convs.append(idx)
            idx += 2  # conv + ReLU
        out.append(convs)
    return out


def conv_name(stage: int, j: int) -> str:
    """Our name of the ``j``-th conv of ``stage`` (both 0-based): ``conv1_1`` ..."""
    return f"conv{stage + 1}_{j + 1}"


def _constant(values):
    return lambda: jnp.asarray(values, jnp.float32)


def normalize_channels(x: jax.Array, eps: float = EPS) -> jax.Array:
    """``x / (||x||_2 over channels + eps)``. The norm's gradient stays finite where
    all channels are zero (a dead ReLU pixel), where the plain ``sqrt`` would give NaN."""
    s = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
    pos = s > 0
    norm = jnp.where(pos, jnp.sqrt(jnp.where(pos, s, 1.0)), 0.0)
    return x / (norm + eps)


class Conv3x3(nn.Module):
    """``nn.Conv2d(c_in, features, 3, padding=1)``: HWIO ``weight`` and ``bias``."""

    features: int
    dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        w = self.param("weight", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features))
        b = self.param("bias", nn.initializers.zeros, (self.features,))
        x = jax.lax.conv_general_dilated(
            x, w.astype(self.dtype), (1, 1), [(1, 1), (1, 1)],
            dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=self.precision)
        return x + b.astype(self.dtype)


class VGG16Features(nn.Module):
    """torchvision's VGG16 ``features`` (no BN), returning the five stage taps."""

    dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        taps = []
        for s, stage in enumerate(VGG16_STAGES):
            if s:
                x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
            for j, width in enumerate(stage):
                x = jax.nn.relu(Conv3x3(width, self.dtype, self.precision, name=conv_name(s, j))(x))
            taps.append(x)
        return taps


class LPIPS(nn.Module):
    """``LPIPS(net='vgg')``: ``(a, b)`` NHWC in [-1, 1] (or [0, 1] with
    ``normalize=True``, as the reference's flag) -> distances ``(N,)``.
    With ``per_layer=True`` the five per-tap terms ``(N, 5)`` are returned instead
    (their sum is the distance)."""

    dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, a, b, normalize: bool = False, per_layer: bool = False):
        if a.shape != b.shape or a.ndim != 4 or a.shape[-1] != 3:
            raise ValueError(f"LPIPS needs two (N, H, W, 3) batches of one shape, got {a.shape} and {b.shape}")
        dt = self.dtype
        a, b = jnp.asarray(a, dt), jnp.asarray(b, dt)
        if normalize:
            a, b = 2 * a - 1, 2 * b - 1
        shift = self.variable("buffers", "shift", _constant(SHIFT)).value.astype(dt)
        scale = self.variable("buffers", "scale", _constant(SCALE)).value.astype(dt)
        n = a.shape[0]
        x = (jnp.concatenate([a, b], axis=0) - shift) / scale  # one trunk pass for both
        feats = VGG16Features(dtype=dt, precision=self.precision, name="net")(x)
        terms = []
        for k, f in enumerate(feats):
            f = normalize_channels(f)
            d = jnp.square(f[:n] - f[n:])
            w = self.param(f"lin{k}", nn.initializers.constant(1.0 / f.shape[-1]), (1, 1, f.shape[-1], 1))
            v = jnp.einsum("nhwc,c->nhw", d, w[0, 0, :, 0].astype(dt), precision=self.precision)
            terms.append(jnp.mean(v, axis=(1, 2)))
        terms = jnp.stack(terms, axis=1)
        return terms if per_layer else jnp.sum(terms, axis=1)


@functools.partial(jax.jit, static_argnames=("module", "normalize", "per_layer"))
def _lpips(module, variables, a, b, *, normalize, per_layer):
    return module.apply(variables, a, b, normalize=normalize, per_layer=per_layer)


class LPIPSModel:
    """LPIPS bound to its variables (``{'params': ..., 'buffers': ...}``):
    ``lp(a, b) -> (N,)`` distances, jitted. ``a``, ``b``: NHWC in [-1, 1]
    (``normalize=True`` for [0, 1]). ``dtype`` is the compute dtype (float64 needs
    ``jax_enable_x64``)."""

    kind = "lpips"

    def __init__(self, variables: dict, dtype: Any = jnp.float32, precision: Any = None):
        self.dtype = jnp.dtype(dtype)
        self.module = LPIPS(dtype=self.dtype, precision=precision)
        self.variables = jax.tree_util.tree_map(jnp.asarray, variables)

    def __call__(self, a, b, *, normalize: bool = False, per_layer: bool = False) -> jax.Array:
        a = jnp.asarray(a, self.dtype)
        b = jnp.asarray(b, self.dtype)
        if a.ndim == 3:
            a = a[None]
        if b.ndim == 3:
            b = b[None]
        if a.shape != b.shape or a.ndim != 4 or a.shape[-1] != 3:
            raise ValueError(f"images must be two (N, H, W, 3) batches of one shape, got {a.shape} and {b.shape}")
        return _lpips(self.module, self.variables, a, b, normalize=normalize, per_layer=per_layer)

    def features(self, x, *, normalize: bool = False) -> list:
        """The five unit-normalised taps ``t_k`` of ``x`` (N, H, W, 3) in [-1, 1]:
        ``[(N, h_k, w_k, C_k)]``. With ``w_k = head_weights()[k]``,
        ``lp(a, b) == sum_k mean_hw sum_c w_kc (t_k(a) - t_k(b))^2``;
        :mod:`sage_jax.metrics.diversity` uses this to score all pairs of a set from
        one trunk pass per image."""
        x = jnp.asarray(x, self.dtype)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"images must be (N, H, W, 3), got {x.shape}")
        return _lpips_taps(self.dtype, self.variables, x, normalize=normalize)

    def head_weights(self) -> list:
        """The five linear heads' weights ``[(C_k,)]``."""
        return [self.variables["params"][f"lin{k}"][0, 0, :, 0] for k in range(len(TAP_CHANNELS))]

    def __repr__(self):
        return f"LPIPSModel(vgg16, {self.dtype.name})"


@functools.partial(jax.jit, static_argnames=("dtype", "normalize"))
def _lpips_taps(dtype, variables, x, *, normalize):
    if normalize:
        x = 2 * x - 1
    b = variables["buffers"]
    x = (x - b["shift"].astype(dtype)) / b["scale"].astype(dtype)
    taps = VGG16Features(dtype=dtype).apply({"params": variables["params"]["net"]}, x)
    return [normalize_channels(f) for f in taps]


def abstract_variables() -> dict:
    """Shapes of the variables, without allocating them."""
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), np.float32)
    return jax.eval_shape(lambda a, b: LPIPS().init(jax.random.PRNGKey(0), a, b), x, x)
