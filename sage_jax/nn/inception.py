"""The FID Inception-v3 of pytorch-fid 0.3.0 in Flax, NHWC.

    feats = FIDInceptionV3().apply(variables, images)   # (N, H, W, 3) in [-1, 1] -> (N, 2048)

This is ``pytorch_fid.inception.InceptionV3([3])`` (``resize_input=True``,
``normalize_input=True``, ``use_fid_inception=True``): torchvision's Inception-v3 trunk
with the weights of the TensorFlow FID graph (``pt_inception-2015-12-05-6726825d.pth``)
and the blocks patched to behave like that graph:

* ``Mixed_5b/c/d`` (FIDInceptionA), ``Mixed_6b..e`` (FIDInceptionC) and ``Mixed_7b``
  (FIDInceptionE_1): the pool branch is a 3x3 / stride 1 average pool with padding 1
  that does **not** count the padded zeros (``count_include_pad=False``);
* ``Mixed_7c`` (FIDInceptionE_2): that pool branch is a 3x3 / stride 1 **max** pool;
* ``Mixed_6a`` / ``Mixed_7a`` (torchvision's InceptionB / InceptionD, unpatched):
  3x3 / stride 2 max pools without padding, as are the two pools of the stem.

Every convolution is torchvision's ``BasicConv2d``: conv without bias, BatchNorm with
``eps=0.001`` (running statistics, inference only), ReLU.

Input: the reference takes [0, 1] images, resizes them to 299x299 with
``F.interpolate(mode='bilinear', align_corners=False)`` (no antialiasing, also when
shrinking) and maps them to [-1, 1] with ``2x - 1``. Here images are in [-1, 1]
(project convention). Bilinear interpolation is affine with weights summing to one, so
resizing ``2x - 1`` equals ``2 * resize(x) - 1``: the same function. The resize is an
explicit pair of interpolation matrices (:func:`bilinear_matrix`), not
``jax.image.resize``, which antialiases when downsampling.

Output: the 2048-d global average of ``Mixed_7c`` (pool3), as float32 (or the
compute dtype when it is float64). The reference's ``fc`` layer (1008 classes) is not
part of the FID network; the converter checks and drops it.

:class:`InceptionModel` binds the module to converted variables (see
:func:`sage_jax.checkpoints.inception.load_inception`) and jits ``features``.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

BN_EPS = 1e-3
INPUT_SIZE = 299
FEATURE_DIM = 2048


def bilinear_matrix(out_size: int, in_size: int) -> np.ndarray:
    """``(out_size, in_size)`` float64 matrix of PyTorch's 1-D bilinear interpolation
    with ``align_corners=False`` and no antialiasing (``F.interpolate(size=...)``):
    source coordinate ``(i + 0.5) * in/out - 0.5``, clamped below at 0; the two
    neighbours ``floor`` and ``min(floor + 1, in - 1)``."""
    scale = in_size / out_size
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5
    src = np.maximum(src, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    w1 = src - i0
    m = np.zeros((out_size, in_size), np.float64)
    rows = np.arange(out_size)
    np.add.at(m, (rows, i0), 1.0 - w1)
    np.add.at(m, (rows, i1), w1)
    return m


def resize_bilinear(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """``F.interpolate(x, size, mode='bilinear', align_corners=False)`` for NHWC ``x``."""
    h, w = x.shape[1], x.shape[2]
    if (h, w) == tuple(size):
        return x  # the matrices would be the identity
    mh = jnp.asarray(bilinear_matrix(size[0], h), x.dtype)
    mw = jnp.asarray(bilinear_matrix(size[1], w), x.dtype)
    hp = jax.lax.Precision.HIGHEST
    x = jnp.einsum("oh,nhwc->nowc", mh, x, precision=hp)
    return jnp.einsum("pw,nowc->nopc", mw, x, precision=hp)


def max_pool(x: jax.Array, stride: int, padding: int = 0) -> jax.Array:
    """3x3 max pool (``F.max_pool2d``: padding counts as -inf, floor output size)."""
    pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    return jax.lax.reduce_window(x, jnp.array(-jnp.inf, x.dtype), jax.lax.max, (1, 3, 3, 1),
                                 (1, stride, stride, 1), pad)


def avg_pool_exclude_pad(x: jax.Array) -> jax.Array:
    """3x3 / stride 1 / padding 1 average pool with ``count_include_pad=False``: each
    window's sum divided by the number of its pixels inside the image."""
    pad = ((0, 0), (1, 1), (1, 1), (0, 0))
    s = jax.lax.reduce_window(x, jnp.array(0, x.dtype), jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pad)

    def counts(n):
        i = np.arange(n)
        return np.minimum(i + 1, n - 1) - np.maximum(i - 1, 0) + 1

    c = np.outer(counts(x.shape[1]), counts(x.shape[2])).astype(np.float64)
    return s / jnp.asarray(c[None, :, :, None], x.dtype)


class BasicConv2d(nn.Module):
    """torchvision's ``BasicConv2d``: ``Conv2d(bias=False)`` -> ``BatchNorm2d(eps=0.001)``
    (inference) -> ReLU. Params ``kernel`` (HWIO), ``scale``, ``bias``; batch_stats
    ``mean``, ``var``."""

    features: int
    kernel: tuple[int, int]
    stride: int = 1
    padding: tuple[int, int] = (0, 0)
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kh, kw = self.kernel
        c = self.features
        w = self.param("kernel", nn.initializers.lecun_normal(), (kh, kw, x.shape[-1], c))
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32)).value
        var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32)).value
        dt = self.dtype
        ph, pw = self.padding
        y = jax.lax.conv_general_dilated(
            x.astype(dt), w.astype(dt), (self.stride, self.stride), [(ph, ph), (pw, pw)],
            dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=jax.lax.Precision.HIGHEST)
        mul = scale.astype(dt) * jax.lax.rsqrt(var.astype(dt) + BN_EPS)
        return jax.nn.relu(y * mul + (bias.astype(dt) - mean.astype(dt) * mul))


def _same(k: tuple[int, int]) -> tuple[int, int]:
    return (k[0] // 2, k[1] // 2)


class _Block(nn.Module):
    dtype: Dtype = jnp.float32

    def conv(self, name, features, kernel, stride=1, padding=None):
        """A stride-1 conv keeps the size (padding ``k // 2``) unless told otherwise."""
        kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        if padding is None:
            padding = _same(kernel) if stride == 1 else (0, 0)
        return BasicConv2d(features, kernel, stride, padding, self.dtype, name=name)


class FIDInceptionA(_Block):
    """``Mixed_5b/c/d``: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg pool (no pad count) -> 1x1."""

    pool_features: int = 32

    @nn.compact
    def __call__(self, x):
        b1 = self.conv("branch1x1", 64, 1)(x)
        b5 = self.conv("branch5x5_2", 64, 5)(self.conv("branch5x5_1", 48, 1)(x))
        b3 = self.conv("branch3x3dbl_1", 64, 1)(x)
        b3 = self.conv("branch3x3dbl_3", 96, 3)(self.conv("branch3x3dbl_2", 96, 3)(b3))
        bp = self.conv("branch_pool", self.pool_features, 1)(avg_pool_exclude_pad(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_Block):
    """``Mixed_6a`` (grid reduction 35 -> 17): 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | max pool 3x3/2."""

    @nn.compact
    def __call__(self, x):
        b3 = self.conv("branch3x3", 384, 3, stride=2)(x)
        bd = self.conv("branch3x3dbl_1", 64, 1)(x)
        bd = self.conv("branch3x3dbl_2", 96, 3)(bd)
        bd = self.conv("branch3x3dbl_3", 96, 3, stride=2)(bd)
        return jnp.concatenate([b3, bd, max_pool(x, 2)], axis=-1)


class FIDInceptionC(_Block):
    """``Mixed_6b..e``: factorised 7x7 branches (1x7 / 7x1), avg pool (no pad count)."""

    channels_7x7: int = 128

    @nn.compact
    def __call__(self, x):
        c7 = self.channels_7x7
        b1 = self.conv("branch1x1", 192, 1)(x)
        b7 = self.conv("branch7x7_1", c7, 1)(x)
        b7 = self.conv("branch7x7_2", c7, (1, 7))(b7)
        b7 = self.conv("branch7x7_3", 192, (7, 1))(b7)
        bd = self.conv("branch7x7dbl_1", c7, 1)(x)
        bd = self.conv("branch7x7dbl_2", c7, (7, 1))(bd)
        bd = self.conv("branch7x7dbl_3", c7, (1, 7))(bd)
        bd = self.conv("branch7x7dbl_4", c7, (7, 1))(bd)
        bd = self.conv("branch7x7dbl_5", 192, (1, 7))(bd)
        bp = self.conv("branch_pool", 192, 1)(avg_pool_exclude_pad(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_Block):
    """``Mixed_7a`` (grid reduction 17 -> 8): 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 | max pool 3x3/2."""

    @nn.compact
    def __call__(self, x):
        b3 = self.conv("branch3x3_2", 320, 3, stride=2)(self.conv("branch3x3_1", 192, 1)(x))
        b7 = self.conv("branch7x7x3_1", 192, 1)(x)
        b7 = self.conv("branch7x7x3_2", 192, (1, 7))(b7)
        b7 = self.conv("branch7x7x3_3", 192, (7, 1))(b7)
        b7 = self.conv("branch7x7x3_4", 192, 3, stride=2)(b7)
        return jnp.concatenate([b3, b7, max_pool(x, 2)], axis=-1)


class FIDInceptionE(_Block):
    """``Mixed_7b`` (``pool='avg'``, FIDInceptionE_1: average pool without counting the
    padding) and ``Mixed_7c`` (``pool='max'``, FIDInceptionE_2: 3x3 / stride 1 max pool)."""

    pool: str = "avg"

    @nn.compact
    def __call__(self, x):
        b1 = self.conv("branch1x1", 320, 1)(x)
        b3 = self.conv("branch3x3_1", 384, 1)(x)
        b3 = jnp.concatenate([self.conv("branch3x3_2a", 384, (1, 3))(b3),
                              self.conv("branch3x3_2b", 384, (3, 1))(b3)], axis=-1)
        bd = self.conv("branch3x3dbl_1", 448, 1)(x)
        bd = self.conv("branch3x3dbl_2", 384, 3)(bd)
        bd = jnp.concatenate([self.conv("branch3x3dbl_3a", 384, (1, 3))(bd),
                              self.conv("branch3x3dbl_3b", 384, (3, 1))(bd)], axis=-1)
        if self.pool == "avg":
            p = avg_pool_exclude_pad(x)
        elif self.pool == "max":
            p = max_pool(x, 1, padding=1)
        else:
            raise ValueError(f"pool must be 'avg' or 'max', got {self.pool!r}")
        bp = self.conv("branch_pool", 192, 1)(p)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
    """pytorch-fid's ``InceptionV3([3])``: NHWC images in [-1, 1], any size, resized to
    299x299 inside (``resize=False`` skips that: the input must then be 299-ish and is
    used as is) -> (N, 2048) pool3 features."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, resize: bool = True):
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"FID Inception needs (N, H, W, 3) images, got {x.shape}")
        dt = self.dtype
        x = jnp.asarray(x, dt)
        if resize:
            x = resize_bilinear(x, (INPUT_SIZE, INPUT_SIZE))

        def conv(name, features, kernel, stride=1, padding=(0, 0)):
            return BasicConv2d(features, (kernel, kernel), stride, padding, dt, name=name)

        # block 0: to the first max pool
        x = conv("Conv2d_1a_3x3", 32, 3, stride=2)(x)
        x = conv("Conv2d_2a_3x3", 32, 3)(x)
        x = conv("Conv2d_2b_3x3", 64, 3, padding=(1, 1))(x)
        x = max_pool(x, 2)
        # block 1: to the second max pool
        x = conv("Conv2d_3b_1x1", 80, 1)(x)
        x = conv("Conv2d_4a_3x3", 192, 3)(x)
        x = max_pool(x, 2)
        # block 2: to the aux classifier's input
        x = FIDInceptionA(dt, pool_features=32, name="Mixed_5b")(x)
        x = FIDInceptionA(dt, pool_features=64, name="Mixed_5c")(x)
        x = FIDInceptionA(dt, pool_features=64, name="Mixed_5d")(x)
        x = InceptionB(dt, name="Mixed_6a")(x)
        x = FIDInceptionC(dt, channels_7x7=128, name="Mixed_6b")(x)
        x = FIDInceptionC(dt, channels_7x7=160, name="Mixed_6c")(x)
        x = FIDInceptionC(dt, channels_7x7=160, name="Mixed_6d")(x)
        x = FIDInceptionC(dt, channels_7x7=192, name="Mixed_6e")(x)
        # block 3: to the final average pool
        x = InceptionD(dt, name="Mixed_7a")(x)
        x = FIDInceptionE(dt, pool="avg", name="Mixed_7b")(x)
        x = FIDInceptionE(dt, pool="max", name="Mixed_7c")(x)
        return jnp.mean(x, axis=(1, 2))


@functools.partial(jax.jit, static_argnames=("module", "resize"))
def _features(module, variables, images, *, resize):
    out = module.apply(variables, images, resize=resize)
    return out if out.dtype == jnp.float64 else out.astype(jnp.float32)


def variables_fingerprint(variables) -> str:
    """sha256 (hex) of every variable's path, shape, dtype and bytes, in sorted order:
    identifies the feature network in cached statistics."""
    h = hashlib.sha256(b"sage-jax FIDInceptionV3 v1")
    leaves = jax.tree_util.tree_flatten_with_path(variables)[0]
    for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}|{a.shape}|{a.dtype.str}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


class InceptionModel:
    """The FID Inception bound to its variables (``{'params': ..., 'batch_stats': ...}``).

    ``model.features(images) -> (N, 2048)`` float32 (float64 with ``dtype=jnp.float64``,
    which needs ``jax_enable_x64``), jitted: one compilation per input shape.
    ``images``: NHWC (or one HWC image) in [-1, 1], any height and width.
    ``model.fingerprint``: a hash of the weights, for caches of statistics.
    """

    kind = "fid_inception_v3"
    feature_dim = FEATURE_DIM

    def __init__(self, variables: dict, dtype: Any = jnp.float32):
        self.dtype = jnp.dtype(dtype)
        self.module = FIDInceptionV3(dtype=self.dtype)
        self.variables = jax.tree_util.tree_map(jnp.asarray, variables)
        self._fingerprint = None

    def features(self, images, *, resize: bool = True) -> jax.Array:
        x = jnp.asarray(images, self.dtype)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"images must be (N, H, W, 3), got {x.shape}")
        return _features(self.module, self.variables, x, resize=resize)

    __call__ = features

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = f"{self.kind}:{variables_fingerprint(self.variables)}"
        return self._fingerprint

    def __repr__(self):
        return f"InceptionModel(pytorch-fid InceptionV3 pool3, {self.dtype.name})"


@functools.lru_cache(maxsize=1)
def abstract_variables() -> dict:
    """Shapes of the variables, without allocating them (computed once; do not mutate)."""
    x = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), np.float32)
    return jax.eval_shape(lambda a: FIDInceptionV3().init(jax.random.PRNGKey(0), a), x)
