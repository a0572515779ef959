"""A plain convolutional image -> W encoder: the reconstruction recipe's training partner
(:mod:`sage_jax.train.reconstruction`). Not a pSp encoder; it is discarded once the
generator is trained."""

from __future__ import annotations

import flax.linen as nn
import jax


class PlainEncoder(nn.Module):
    """Per halving two 3x3 convolutions (the second of stride 2) with leaky ReLU, widths
    W, 2W, 4W, 4W; a 256-unit layer; one code of ``style_dim`` per image. No
    normalisation layers, so training and inference compute the same function."""

    width: int
    style_dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.width
        for c in (w, 2 * w, 4 * w, 4 * w):
            x = nn.leaky_relu(nn.Conv(c, (3, 3))(x), 0.2)
            x = nn.leaky_relu(nn.Conv(c, (3, 3), strides=2)(x), 0.2)
        x = nn.leaky_relu(nn.Dense(256)(x.reshape(x.shape[0], -1)), 0.2)
        return nn.Dense(self.style_dim)(x)
