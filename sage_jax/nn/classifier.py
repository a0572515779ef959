"""Small convolutional networks for the synthetic data's oracles (a classifier of the
categories, a regressor of the category-irrelevant factors) and few-shot feature
extractors: conv-BN-free blocks with GroupNorm, global average pooling, a linear head."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class SmallCNN(nn.Module):
    """(N, S, S, 3) in [-1, 1] -> (N, outputs). ``features(x)`` gives the pooled
    embedding (N, widths[-1]); with ``pool="flatten"`` the last feature map flattened
    instead, (N, (S / 2 ** len(widths)) ** 2 * widths[-1]): where a part of the image
    is kept, which a character needs (b d p q; global pooling loses it)."""

    outputs: int
    widths: Sequence[int] = (32, 64, 128)
    pool: str = "mean"

    def setup(self):
        self.convs = [(nn.Conv(w, (3, 3), name=f"conv{i}a"), nn.Conv(w, (3, 3), name=f"conv{i}b"),
                       nn.GroupNorm(num_groups=8, name=f"norm{i}")) for i, w in enumerate(self.widths)]
        self.head = nn.Dense(self.outputs, name="head")

    def features(self, x):
        for a, b, norm in self.convs:
            x = nn.gelu(a(x))
            x = nn.gelu(norm(b(x)))
            x = nn.avg_pool(x, (2, 2), (2, 2))
        if self.pool == "flatten":
            return x.reshape(x.shape[0], -1)
        if self.pool != "mean":
            raise ValueError(f"unknown pool {self.pool!r} (mean | flatten)")
        return jnp.mean(x, axis=(1, 2))

    def __call__(self, x):
        return self.head(self.features(x))
