"""StyleGAN2 generator and discriminator (rosinality's stylegan2-pytorch layout) in Flax.

The channel table is a constructor argument (``channels``: pairs ``(resolution,
channels)``), so the config-f networks and the narrow networks of the tiny
configuration are the same code. Images are NHWC in [-1, 1].

Weight names follow the reference's ``state_dict`` one to one (``convs.3.conv.weight``
is ``params/convs_3/conv/weight``), see :mod:`sage_jax.checkpoints.stylegan2`.

Class-conditional variants (``c_dim > 0``; ``c_dim = 0``, the default, is the
unconditional network above, parameter for parameter): the generator's mapping embeds
a label vector as StyleGAN2-ADA does (an equalized linear ``embed`` to ``style_dim``,
the 2nd-moment normalisation of z and of the embedding, concatenated, then the MLP),
and the discriminator is a projection discriminator (Miyato & Koyama 2018):
``logit = psi(phi(x)) + <embed(y), phi(x)>``. Labels are probability vectors (N,
c_dim), so one-hot and soft labels (Softlabel-GAN) go through one linear path.

``upsample_mode="nearest"`` (not in the reference; default ``"blur"``) doubles feature
maps and skip images by nearest neighbour instead of the transposed convolution and FIR
blur: same parameters, another function. At 32 px the tiny generator learns the
synthetic textures faster with it (free-code probe: retention 0.70 against 0.46 after
2,000 steps; README, "Where the shipped model stands").
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from sage_jax.nn.layers import (ConvLayer, EqualLinear, StyledConv, ToRGB, check_upsample_mode, pixel_norm,
                                wide_dtype)

Dtype = Any
BLUR = (1.0, 3.0, 3.0, 1.0)


def default_channels(size: int, channel_multiplier: int = 2) -> tuple[tuple[int, int], ...]:
    """The reference channel table up to ``size`` (config-f for ``channel_multiplier=2``)."""
    table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier,
             128: 128 * channel_multiplier, 256: 64 * channel_multiplier,
             512: 32 * channel_multiplier, 1024: 16 * channel_multiplier}
    return tuple((r, c) for r, c in table.items() if r <= size)


def n_latent_for(size: int) -> int:
    """Number of W+ entries: ``2 * log2(size) - 2``."""
    return 2 * int(math.log2(size)) - 2


def noise_shapes(size: int) -> list[tuple[int, int]]:
    """Spatial size of each noise input, in the reference's order (``noise_0`` first)."""
    log_size = int(math.log2(size))
    return [(2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2)) for i in range(2 * log_size - 3)]


def truncate(styles: Sequence[jax.Array], truncation, truncation_latent) -> list[jax.Array]:
    """The truncation trick: ``t_lat + truncation * (style - t_lat)`` for each style."""
    return [truncation_latent + truncation * (s - truncation_latent) for s in styles]


def mix_styles(styles: Sequence[jax.Array], n_latent: int, inject_index=None,
               key: jax.Array | None = None) -> jax.Array:
    """Broadcast W codes to W+ (N, n_latent, D); with two styles, entries before
    ``inject_index`` come from the first, the rest from the second (style mixing).
    ``inject_index=None`` with two styles draws it from ``key`` in [1, n_latent)."""
    if len(styles) == 1:
        s = styles[0]
        return s if s.ndim == 3 else jnp.broadcast_to(s[:, None, :], (s.shape[0], n_latent, s.shape[-1]))
    if len(styles) != 2:
        raise ValueError(f"give one or two styles, got {len(styles)}")
    a, b = styles
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError("style mixing takes two (N, D) codes")
    if inject_index is None:
        if key is None:
            raise ValueError("style mixing without inject_index needs a key")
        inject_index = jax.random.randint(key, (), 1, n_latent)
    first = (jnp.arange(n_latent) < inject_index)[None, :, None]
    return jnp.where(first, a[:, None, :], b[:, None, :])


class Generator(nn.Module):
    """StyleGAN2 generator.

    ``__call__`` follows the reference's ``forward``: ``styles`` is a list of one code
    (z or W (N, D), or W+ (N, n_latent, D)) or two codes for style mixing. Noise is
    ``noise`` (a list of NHWC arrays, one per layer), else the stored buffers
    (``randomize_noise=False``), else fresh normal noise from the ``'noise'`` rng.
    """

    size: int
    style_dim: int = 512
    n_mlp: int = 8
    channels: tuple[tuple[int, int], ...] | None = None
    blur_kernel: tuple[float, ...] = BLUR
    lr_mlp: float = 0.01
    c_dim: int = 0           # > 0: class-conditional (label vectors of this length)
    upsample_mode: str = "blur"  # "blur": the reference's; "nearest": nearest-neighbour doubling, no blur
    dtype: Dtype = jnp.float32

    @property
    def log_size(self) -> int:
        return int(math.log2(self.size))

    @property
    def n_latent(self) -> int:
        return n_latent_for(self.size)

    @property
    def num_layers(self) -> int:
        return 2 * self.log_size - 3

    def channel_table(self) -> dict[int, int]:
        return dict(self.channels if self.channels is not None else default_channels(self.size))

    def setup(self):
        if self.size < 8 or 2 ** self.log_size != self.size:
            raise ValueError(f"size must be a power of two >= 8, got {self.size}")
        ch = self.channel_table()
        missing = [2 ** i for i in range(2, self.log_size + 1) if 2 ** i not in ch]
        if missing:
            raise ValueError(f"channel table has no entry for resolutions {missing}")
        # the mapping runs in float32 (float64 for a float64 generator) whatever the
        # compute dtype: it is a few small matmuls, and W codes are what SAGE edits
        wide = wide_dtype(self.dtype)
        if self.c_dim:
            # StyleGAN2-ADA MappingNetwork.embed: FullyConnectedLayer(c_dim, w_dim), lr 1
            self.embed = EqualLinear(self.style_dim, dtype=wide, name="embed")
        self.style_layers = [
            EqualLinear(self.style_dim, lr_mul=self.lr_mlp, activation=True, dtype=wide, name=f"style_{i + 1}")
            for i in range(self.n_mlp)
        ]
        self.input = self.param("input", nn.initializers.normal(1.0), (1, 4, 4, ch[4]))
        up = check_upsample_mode(self.upsample_mode)
        self.conv1 = StyledConv(ch[4], 3, blur_kernel=self.blur_kernel, dtype=self.dtype)
        self.to_rgb1 = ToRGB(upsample=False, blur_kernel=self.blur_kernel, dtype=self.dtype)
        convs, to_rgbs = [], []
        for j, i in enumerate(range(3, self.log_size + 1)):
            out_ch = ch[2 ** i]
            convs.append(StyledConv(out_ch, 3, upsample=True, blur_kernel=self.blur_kernel, upsample_mode=up,
                                    dtype=self.dtype, name=f"convs_{2 * j}"))
            convs.append(StyledConv(out_ch, 3, blur_kernel=self.blur_kernel, dtype=self.dtype,
                                    name=f"convs_{2 * j + 1}"))
            to_rgbs.append(ToRGB(blur_kernel=self.blur_kernel, upsample_mode=up, dtype=self.dtype,
                                 name=f"to_rgbs_{j}"))
        self.convs = convs
        self.to_rgbs = to_rgbs
        self.noises = [
            self.variable("noises", f"noise_{i}",
                          lambda s=s: jax.random.normal(self.make_rng("params"), (1, *s, 1)))
            for i, s in enumerate(noise_shapes(self.size))
        ]

    def label_embedding(self, labels):
        """The conditional mapping's label embedding (N, c_dim) -> (N, D), before its
        normalisation; linear in the label vector (bias included, weights sum to 1)."""
        if not self.c_dim:
            raise ValueError("an unconditional generator (c_dim=0) has no label embedding")
        return self.embed(jnp.asarray(labels, wide_dtype(self.dtype)))

    def mapping(self, z, labels=None):
        """The mapping network (``g.style``): z (N, D) -> w (N, D). Conditional
        (``c_dim > 0``): ``labels`` (N, c_dim) probability vectors; the MLP reads
        ``concat(normalize(z), normalize(embed(labels)))`` (StyleGAN2-ADA)."""
        x = pixel_norm(z.astype(wide_dtype(self.dtype)))
        if self.c_dim:
            if labels is None:
                raise ValueError(f"this generator is class-conditional (c_dim={self.c_dim}): give labels")
            x = jnp.concatenate([x, pixel_norm(self.label_embedding(labels))], axis=-1)
        elif labels is not None:
            raise ValueError("labels given to an unconditional generator (c_dim=0)")
        for layer in self.style_layers:
            x = layer(x)
        return x

    def stored_noise(self) -> list[jax.Array]:
        return [v.value for v in self.noises]

    def random_noise(self, batch: int) -> list[jax.Array]:
        key = self.make_rng("noise")
        keys = jax.random.split(key, self.num_layers)
        return [jax.random.normal(k, (batch, *s, 1)) for k, s in zip(keys, noise_shapes(self.size))]

    def synthesis(self, latent, noise):
        """W+ codes (N, n_latent, D) and a list of noise maps -> images (N, H, W, 3)."""
        if latent.ndim != 3 or latent.shape[1] < self.n_latent:
            raise ValueError(f"W+ codes must be (N, >={self.n_latent}, D), got {latent.shape}")
        latent = latent.astype(wide_dtype(self.dtype))
        batch = latent.shape[0]
        out = jnp.broadcast_to(self.input.astype(self.dtype), (batch, *self.input.shape[1:]))
        out = self.conv1(out, latent[:, 0], noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        i = 1
        for j, to_rgb in enumerate(self.to_rgbs):
            out = self.convs[2 * j](out, latent[:, i], noise[2 * j + 1])
            out = self.convs[2 * j + 1](out, latent[:, i + 1], noise[2 * j + 2])
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2
        return skip.astype(wide_dtype(self.dtype))

    def __call__(self, styles, *, input_is_latent: bool = False, noise=None,
                 randomize_noise: bool = False, truncation=1.0, truncation_latent=None,
                 inject_index=None, return_latents: bool = False, labels=None):
        if not isinstance(styles, (list, tuple)):
            styles = [styles]
        wide = wide_dtype(self.dtype)
        styles = [jnp.asarray(s, wide) for s in styles]
        if not input_is_latent:
            styles = [self.mapping(s, labels) for s in styles]
        if noise is None:
            noise = self.random_noise(styles[0].shape[0]) if randomize_noise else self.stored_noise()
        if len(noise) != self.num_layers:
            raise ValueError(f"expected {self.num_layers} noise maps, got {len(noise)}")
        if truncation_latent is not None and not (isinstance(truncation, (int, float)) and truncation >= 1):
            styles = truncate(styles, jnp.asarray(truncation, wide), jnp.asarray(truncation_latent, wide))
        mix_key = self.make_rng("noise") if (len(styles) == 2 and inject_index is None) else None
        latent = mix_styles(styles, self.n_latent, inject_index, mix_key)
        image = self.synthesis(latent, noise)
        return (image, latent) if return_latents else image


class ResBlock(nn.Module):
    features: int
    blur_kernel: tuple[float, ...] = BLUR
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        in_ch = x.shape[-1]
        out = ConvLayer(in_ch, 3, dtype=self.dtype, name="conv1")(x)
        out = ConvLayer(self.features, 3, downsample=True, blur_kernel=self.blur_kernel,
                        dtype=self.dtype, name="conv2")(out)
        skip = ConvLayer(self.features, 1, downsample=True, blur_kernel=self.blur_kernel,
                         activate=False, use_bias=False, dtype=self.dtype, name="skip")(x)
        return (out + skip) * (1.0 / math.sqrt(2.0))


def minibatch_stddev(x: jax.Array, group_size: int = 4, n_feat: int = 1, eps: float = 1e-8) -> jax.Array:
    """Append the minibatch standard deviation as ``n_feat`` extra channels.

    As in the reference, sample ``i`` is grouped with the samples ``i mod (N / group)``
    (``view(group, -1, ...)``), ``group = min(N, group_size)``. The statistics are
    computed in float32 (float64 for a float64 network), never in bfloat16.
    """
    n, h, w, c = x.shape
    group = min(n, group_size)
    if n % group:
        raise ValueError(f"batch {n} is not divisible by the stddev group size {group}")
    y = x.astype(wide_dtype(x.dtype)).reshape(group, n // group, h, w, n_feat, c // n_feat)
    y = jnp.sqrt(jnp.var(y, axis=0) + eps)  # (M, h, w, F, C/F)
    y = jnp.mean(y, axis=(1, 2, 4))  # (M, F)
    y = jnp.tile(y, (group, 1))  # (N, F), row i = stats of i mod M
    y = jnp.broadcast_to(y[:, None, None, :], (n, h, w, n_feat)).astype(x.dtype)
    return jnp.concatenate([x, y], axis=-1)


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator; images (N, H, W, 3) -> logits (N, 1).

    ``c_dim > 0``: a projection discriminator, ``labels`` (N, c_dim) probability
    vectors; ``logit = final_linear_1(phi) + <embed(labels), phi>`` with ``phi`` the
    output of ``final_linear_0`` and ``embed`` a bias-free equalized linear, so the
    logit is linear (affine) in the label vector.
    """

    size: int
    channels: tuple[tuple[int, int], ...] | None = None
    blur_kernel: tuple[float, ...] = BLUR
    stddev_group: int = 4
    stddev_feat: int = 1
    c_dim: int = 0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, labels=None):
        ch = dict(self.channels if self.channels is not None else default_channels(self.size))
        log_size = int(math.log2(self.size))
        if x.shape[1:3] != (self.size, self.size):
            raise ValueError(f"discriminator expects {self.size}x{self.size} images, got {x.shape}")
        out = ConvLayer(ch[self.size], 1, dtype=self.dtype, name="convs_0")(x.astype(self.dtype))
        for j, i in enumerate(range(log_size, 2, -1)):
            out = ResBlock(ch[2 ** (i - 1)], blur_kernel=self.blur_kernel, dtype=self.dtype,
                           name=f"convs_{j + 1}")(out)
        out = minibatch_stddev(out, self.stddev_group, self.stddev_feat)
        out = ConvLayer(ch[4], 3, dtype=self.dtype, name="final_conv")(out)
        # flatten in the reference's NCHW order so final_linear weights keep their meaning
        out = jnp.transpose(out, (0, 3, 1, 2)).reshape(out.shape[0], -1)
        phi = EqualLinear(ch[4], activation=True, dtype=self.dtype, name="final_linear_0")(out)
        out = EqualLinear(1, dtype=self.dtype, name="final_linear_1")(phi)
        if self.c_dim:
            if labels is None:
                raise ValueError(f"this discriminator is class-conditional (c_dim={self.c_dim}): give labels")
            emb = EqualLinear(ch[4], use_bias=False, dtype=self.dtype, name="embed")(
                jnp.asarray(labels, wide_dtype(self.dtype)))
            out = out + jnp.sum(emb * phi, axis=-1, keepdims=True)
        elif labels is not None:
            raise ValueError("labels given to an unconditional discriminator (c_dim=0)")
        return out.astype(wide_dtype(self.dtype))
