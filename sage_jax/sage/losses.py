"""Dictionary-learning losses of AGE / SAGE (paper Sec. 3.2.1, Eq. 9-14)."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp


def reconstruction_loss(images, targets) -> jax.Array:
    """L_rec (Eq. 9): mean squared error between generated and real images."""
    return jnp.mean(jnp.square(images - targets))


def sparse_loss(codes: Sequence[jax.Array], theta0: float = 0.5, theta1: float = -1.0,
                norm: float = 32.0) -> jax.Array:
    """L_sparse (Eq. 10, in the official code's form): for every group code n,
    ``sum(sigmoid(theta0 * |n| + theta1)) / norm``, summed over groups. The official
    code divides by a fixed 32."""
    return sum(jnp.sum(jax.nn.sigmoid(theta0 * jnp.abs(n) + theta1)) / norm for n in codes)


def orthogonal_loss(A: jax.Array, class_embeddings: jax.Array, layers: Sequence[int],
                    form: str = "l1") -> jax.Array:
    """L_orth (Eq. 13) between the dictionary ``A`` (n_edit, D, l) and the class
    embeddings ``B`` (S, L, D) on the edited ``layers``.

    ``form="l1"`` is the official code's ``sum|A_layer^T B_layer| / (l * S * n_edit)``;
    ``form="frobenius"`` the paper's ``||B^T A||_F^2`` (summed over layers).
    """
    B = class_embeddings[:, jnp.asarray(layers)]  # (S, E, D)
    prod = jnp.einsum("edl,sed->els", A, B)  # (E, l, S)
    if form == "l1":
        e, l, s = prod.shape
        return jnp.sum(jnp.abs(prod)) / (l * s * e)
    if form == "frobenius":
        return jnp.sum(jnp.square(prod))
    raise ValueError(f"orthogonal loss form must be 'l1' or 'frobenius', got {form!r}")
