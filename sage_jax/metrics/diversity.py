"""LPIPS diversity (SAGE paper, section 4.2): the mean pairwise LPIPS distance between
the generated images of one unseen class, averaged over the unseen classes. Higher is
more diverse.

Protocols (``size``):

* ``32`` (the official evaluation code): every image is first resized to 32 x 32;
* ``None``: full resolution.

The mean over all unordered pairs is computed exactly without scoring every pair.
LPIPS is ``d(a, b) = sum_k mean_hw sum_c w_kc (t_k(a) - t_k(b))^2`` (``t_k`` the
unit-normalised VGG taps, ``w_k`` the linear heads), linear in the squared
differences, and for any values ``mean_{i<j} (x_i - x_j)^2 = 2 var(x)`` with the
unbiased variance. So the mean pairwise LPIPS of ``n`` images is
``2 sum_k mean_hw sum_c w_kc var_i(t_k(x_i))``: one trunk pass per image instead of
``n (n - 1) / 2`` pair evaluations, streamed over batches with shifted sums (no
per-image features are kept). ``tests/test_diversity.py`` checks it against the
explicit pair loop.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

PROTOCOLS = {"32": 32, "full": None}


def resize(images, size: int | None) -> jax.Array:
    """Bilinear resize of (N, H, W, 3) images to ``size`` x ``size`` (antialiased when
    shrinking); ``None`` keeps them as they are."""
    images = jnp.asarray(images, jnp.float32)
    if size is None or images.shape[1:3] == (size, size):
        return images
    return jax.image.resize(images, (images.shape[0], size, size, images.shape[-1]), "linear")


@jax.jit
def _accumulate(acc, taps, ref, valid):
    """Add a batch's shifted sums (``valid``: (B,) mask of real rows)."""
    out = []
    for (s1, s2), t, r in zip(acc, taps, ref):
        d = (t - r[None]) * valid[:, None, None, None]
        out.append((s1 + d.sum(0), s2 + jnp.square(d).sum(0)))
    return out


def mean_pairwise_lpips(lpips_model, images, *, size: int | None = 32, batch_size: int = 64) -> float:
    """Mean LPIPS over all unordered pairs of ``images`` (N >= 2, NHWC in [-1, 1]),
    after resizing to ``size`` (``None``: full resolution)."""
    n = len(images)
    if n < 2:
        raise ValueError(f"LPIPS diversity needs at least 2 images, got {n}")
    weights = lpips_model.head_weights()
    acc, ref = None, None
    for i in range(0, n, batch_size):
        x = resize(np.asarray(images[i:i + batch_size]), size)
        b = x.shape[0]
        if b < batch_size and n > batch_size:  # pad: one compiled shape
            x = jnp.concatenate([x, jnp.zeros((batch_size - b,) + x.shape[1:], x.dtype)])
        taps = lpips_model.features(x)
        if ref is None:
            ref = [t[0] for t in taps]  # shift: the first image's taps (numerically stable sums)
            acc = [(jnp.zeros_like(r), jnp.zeros_like(r)) for r in ref]
        valid = (jnp.arange(x.shape[0]) < b).astype(jnp.float32)
        acc = _accumulate(acc, taps, ref, valid)
    total = 0.0
    for (s1, s2), w in zip(acc, weights):
        var = (s2 - jnp.square(s1) / n) / (n - 1)
        total += float(2.0 * jnp.mean(jnp.einsum("hwc,c->hw", var, w)))
    return total


def lpips_diversity(lpips_model, images_by_class: Mapping[str, np.ndarray], *, size: int | None = 32,
                    batch_size: int = 64, progress: bool = False) -> dict:
    """The paper's LPIPS diversity: ``{"lpips": mean over classes, "per_class": {...},
    "protocol": "32x32" or "full"}``."""
    if not images_by_class:
        raise ValueError("no classes to score")
    per = {}
    for name in tqdm(sorted(images_by_class), desc="LPIPS diversity", unit="class", disable=not progress):
        per[name] = mean_pairwise_lpips(lpips_model, images_by_class[name], size=size, batch_size=batch_size)
    return {"lpips": float(np.mean(list(per.values()))), "per_class": per,
            "protocol": f"{size}x{size}" if size else "full"}
