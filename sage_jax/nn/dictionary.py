"""The category-irrelevant attribute dictionary of AGE / SAGE (``Ax`` in ``models/age.py``).

Layers of W+ are split into groups. Each group has an MLP encoder that maps the group's
offsets ``dw = w - e_c`` (flattened) to a sparse code ``n`` of length ``A_length``
(``3D -> 2D -> 2D -> D -> l -> l`` for a group of three layers, LeakyReLU(0.2) between),
and each layer of the group has its own ``D x l`` matrix ``A_layer``: the edited offset
of that layer is ``A_layer @ n``. The official code uses the groups {0-2} and {3-5} and
leaves layers 6+ untouched; the paper uses {0-2}, {3-6}, {7-17}. Any grouping works.

Parameters: ``A`` (n_edited_layers, D, l), rows in the order of ``edited_layers``, and
``encoder{g}/fc{1..5}`` Dense layers (kernel (in, out)).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

OFFICIAL_GROUPS = ((0, 1, 2), (3, 4, 5))
PAPER_GROUPS = ((0, 1, 2), (3, 4, 5, 6), tuple(range(7, 18)))


def edited_layers(groups: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """All layers the dictionary edits, in group order."""
    return tuple(i for g in groups for i in g)


def check_groups(groups: Sequence[Sequence[int]], n_layers: int | None = None) -> None:
    layers = edited_layers(groups)
    if not groups or any(len(g) == 0 for g in groups):
        raise ValueError(f"groups must be non-empty lists of layer indices, got {groups}")
    if len(set(layers)) != len(layers):
        raise ValueError(f"a layer appears in two groups: {groups}")
    if min(layers) < 0 or (n_layers is not None and max(layers) >= n_layers):
        raise ValueError(f"group layers {sorted(layers)} do not fit codes with {n_layers} layers")


class GroupEncoder(nn.Module):
    """MLP of the official ``EqualLinear`` (a misnomer there: plain ``nn.Linear`` layers)."""

    style_dim: int
    a_length: int

    @nn.compact
    def __call__(self, x):  # x: (N, g, D)
        d = self.style_dim
        out = x.reshape(x.shape[0], -1)
        sizes = (2 * d, 2 * d, d, self.a_length, self.a_length)
        for i, size in enumerate(sizes):
            out = nn.Dense(size, name=f"fc{i + 1}", kernel_init=_torch_linear_init, bias_init=_torch_bias_init(out.shape[-1]))(out)
            if i < len(sizes) - 1:
                out = jnp.where(out > 0, out, 0.2 * out)
        return out


def _torch_linear_init(key, shape, dtype=jnp.float32):
    bound = 1.0 / jnp.sqrt(shape[0])
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def _torch_bias_init(fan_in):
    def init(key, shape, dtype=jnp.float32):
        bound = 1.0 / jnp.sqrt(fan_in)
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class AttributeDictionary(nn.Module):
    """``dw (N, L, D) -> (edited offsets (N, n_edited, D), [code of each group (N, l)])``.

    ``dw`` are W+ offsets from the class embedding; only the layers in ``groups`` are
    read. The edited offsets are in the order of :func:`edited_layers`.
    """

    groups: tuple[tuple[int, ...], ...] = OFFICIAL_GROUPS
    style_dim: int = 512
    a_length: int = 100

    @nn.compact
    def __call__(self, dw):
        check_groups(self.groups, dw.shape[1])
        n_edit = len(edited_layers(self.groups))
        A = self.param("A", nn.initializers.normal(1.0), (n_edit, self.style_dim, self.a_length))
        outs, codes, row = [], [], 0
        for g, layers in enumerate(self.groups):
            x = dw[:, jnp.asarray(layers)]
            n = GroupEncoder(self.style_dim, self.a_length, name=f"encoder{g}")(x)
            codes.append(n)
            a = A[row:row + len(layers)]  # (g, D, l)
            outs.append(jnp.einsum("gdl,nl->ngd", a, n))
            row += len(layers)
        return jnp.concatenate(outs, axis=1), codes
