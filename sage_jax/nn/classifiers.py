"""Classifiers for the downstream evaluation (NAS, few-shot classification): a small
ResNet, a small ViT, and the heads they share (linear, cosine).

Every classifier is ``backbone -> pooled embedding -> head``; the head is the submodule
named ``head``, so the backbone's parameters are everything else in the tree and a
new head for other classes is a fresh ``head`` subtree (``train/classifier.py``).

* ``features(x)`` -- the pooled embedding (N, D); ``__call__(x)`` -- the logits (N, C).
* Images NHWC in [-1, 1], any size the strides (ResNet: 2 ** (stages - 1)) or the
  patch size (ViT) divide. The ViT's position embedding fixes its ``image_size``.
* No BatchNorm anywhere: the ResNet normalises with GroupNorm and the ViT with
  LayerNorm, so a classifier's variables are ``{"params": ...}`` only. Fine-tuning on
  a few shots then has no running statistics to update, freeze or corrupt, and
  train and eval mode are the same function.

Heads (``head_type=`` on both networks; the submodule is always named ``head``):

* ``"linear"`` -- ``Dense(num_classes)``.
* ``"cosine"`` -- the cosine classifier of Gidaris & Komodakis (2018) that the thesis
  (seed 002, chapter 5.4.1) trains its feature extractor with: logits are
  ``scale * <f / |f|, w_c / |w_c|>``; ``scale`` is a learnable scalar initialised at
  ``cosine_scale`` (``learn_scale=False`` keeps it fixed).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


# Uniform initialisers: the truncated normal that Flax uses by default compiles slowly
# on CPU (seconds per distinct shape), and a classifier is re-initialised often here.
_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_in", "uniform")   # He (ReLU)
_DENSE_INIT = nn.initializers.xavier_uniform()                            # as big_vision's ViT


def _l2_normalize(x, axis=-1, eps=1e-8):
    return x * jnp.reciprocal(jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True) + eps))


class CosineHead(nn.Module):
    """(N, D) -> (N, num_classes): ``scale * cos(f, w_c)``."""

    num_classes: int
    scale: float = 10.0
    learn_scale: bool = True

    @nn.compact
    def __call__(self, f):
        w = self.param("kernel", nn.initializers.normal(stddev=1.0), (f.shape[-1], self.num_classes))
        s = self.param("scale", nn.initializers.constant(self.scale), ()) if self.learn_scale \
            else jnp.asarray(self.scale, f.dtype)
        return s * (_l2_normalize(f) @ _l2_normalize(w, axis=0))


def make_head(kind: str, num_classes: int, scale: float = 10.0, learn_scale: bool = True) -> nn.Module:
    if kind == "linear":
        return nn.Dense(num_classes, kernel_init=_DENSE_INIT)
    if kind == "cosine":
        return CosineHead(num_classes, scale, learn_scale)
    raise ValueError(f"unknown head {kind!r} (linear | cosine)")


def _groups(width: int, groups: int) -> int:
    g = min(groups, width)
    while width % g:
        g -= 1
    return g


class BasicBlock(nn.Module):
    """Pre-activation-free ResNet basic block (two 3x3 convs) with GroupNorm; a 1x1
    projection on the shortcut when the shape changes."""

    width: int
    stride: int = 1
    groups: int = 8

    @nn.compact
    def __call__(self, x):
        g = _groups(self.width, self.groups)
        y = nn.Conv(self.width, (3, 3), (self.stride, self.stride), use_bias=False, kernel_init=_CONV_INIT,
                    name="conv1")(x)
        y = nn.relu(nn.GroupNorm(num_groups=g, name="norm1")(y))
        y = nn.Conv(self.width, (3, 3), use_bias=False, kernel_init=_CONV_INIT, name="conv2")(y)
        y = nn.GroupNorm(num_groups=g, name="norm2", scale_init=nn.initializers.zeros)(y)
        if self.stride != 1 or x.shape[-1] != self.width:
            x = nn.Conv(self.width, (1, 1), (self.stride, self.stride), use_bias=False, kernel_init=_CONV_INIT,
                        name="proj")(x)
            x = nn.GroupNorm(num_groups=g, name="proj_norm")(x)
        return nn.relu(x + y)


class ResNet(nn.Module):
    """A small ResNet for small images (the thesis adapts ResNets to 84 px the same
    way: a 3x3 stride-1 stem and no max pooling). Stage ``i`` has ``blocks[i]`` basic
    blocks of width ``widths[i]``; every stage after the first halves the resolution.
    GroupNorm (``groups`` groups, fewer if a width needs it) instead of BatchNorm."""

    num_classes: int
    widths: Sequence[int] = (32, 64, 128)
    blocks: Sequence[int] = (1, 1, 1)
    groups: int = 8
    head_type: str = "linear"
    cosine_scale: float = 10.0
    learn_scale: bool = True

    def setup(self):
        if len(self.widths) != len(self.blocks):
            raise ValueError("widths and blocks must have the same length")
        self.stem = nn.Conv(self.widths[0], (3, 3), use_bias=False, kernel_init=_CONV_INIT)
        self.stem_norm = nn.GroupNorm(num_groups=_groups(self.widths[0], self.groups))
        layers = []
        for i, (w, n) in enumerate(zip(self.widths, self.blocks)):
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock(w, stride, self.groups))
        self.layers = layers
        self.head = make_head(self.head_type, self.num_classes, self.cosine_scale, self.learn_scale)

    def features(self, x):
        x = nn.relu(self.stem_norm(self.stem(x)))
        for layer in self.layers:
            x = layer(x)
        return jnp.mean(x, axis=(1, 2))

    def __call__(self, x):
        return self.head(self.features(x))


class _MLP(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        x = nn.gelu(nn.Dense(self.hidden, kernel_init=_DENSE_INIT, name="fc1")(x))
        return nn.Dense(d, kernel_init=_DENSE_INIT, name="fc2")(x)


class _EncoderBlock(nn.Module):
    heads: int
    mlp_ratio: float

    @nn.compact
    def __call__(self, x):
        y = nn.LayerNorm(name="ln1")(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads, kernel_init=_DENSE_INIT, name="attn")(y)
        y = nn.LayerNorm(name="ln2")(x)
        return x + _MLP(int(x.shape[-1] * self.mlp_ratio), name="mlp")(y)


class ViT(nn.Module):
    """A small Vision Transformer (Dosovitskiy et al.; the classifier SAGE's NAS uses,
    seed 000 section 4): ``patch`` x ``patch`` patch embedding, a learned position
    embedding, ``depth`` pre-LayerNorm blocks of ``width`` channels and ``heads``
    heads, a final LayerNorm and global average pooling over the tokens (big_vision's
    ``pool_type='gap'``; no class token). ``image_size`` (square) fixes the number of
    tokens of the position embedding."""

    num_classes: int
    image_size: int = 32
    patch: int = 4
    width: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 2.0
    head_type: str = "linear"
    cosine_scale: float = 10.0
    learn_scale: bool = True

    def setup(self):
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.image_size % self.patch:
            raise ValueError(f"image size {self.image_size} is not divisible by the patch size {self.patch}")
        self.embed = nn.Conv(self.width, (self.patch, self.patch), (self.patch, self.patch), padding="VALID",
                             kernel_init=nn.initializers.lecun_uniform())
        tokens = (self.image_size // self.patch) ** 2
        self.pos_embedding = self.param("pos_embedding", nn.initializers.normal(stddev=0.02), (1, tokens, self.width))
        self.blocks = [_EncoderBlock(self.heads, self.mlp_ratio) for _ in range(self.depth)]
        self.norm = nn.LayerNorm()
        self.head = make_head(self.head_type, self.num_classes, self.cosine_scale, self.learn_scale)

    def features(self, x):
        n, h, w, _ = x.shape
        if (h, w) != (self.image_size, self.image_size):
            raise ValueError(f"this ViT takes {self.image_size} px images (its position embedding), got {h}x{w}")
        x = self.embed(x).reshape(n, -1, self.width)
        x = x + self.pos_embedding
        for block in self.blocks:
            x = block(x)
        return jnp.mean(self.norm(x), axis=1)

    def __call__(self, x):
        return self.head(self.features(x))
