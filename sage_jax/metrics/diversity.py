"""LPIPS diversity (SAGE paper, section 4.2): the mean pairwise LPIPS distance between
the generated images of one unseen class, averaged over the unseen classes. Higher is
more diverse.

Protocols (``protocol``):

* ``"official"`` (the default; what the paper's tables report): exactly the official
  script (``tools/metric_tools.py``, ``LPIPS(root)``): each image as the uint8 its PNG
  holds, resized by ``cv2.resize(img, (32, 32))`` (OpenCV's INTER_LINEAR on uint8, no
  antialiasing; an exact 2x shrink runs as a rounded 2x2 mean), mapped to [-1, 1] by
  ``lpips.im2tensor`` and then again by ``normalize=True``, so the network sees
  ``u / 63.75 - 3``, in [-3, 1]; per class the mean over all pairs, then the mean over
  classes;
* ``"clean"``: an antialiased bilinear resize to 32 x 32 and the network fed [-1, 1], as
  LPIPS is meant to be used; not the paper's (on the reference fixture it reads 50%
  above the official value at 64 px and 6% above at 256 px);
* ``"full"``: full resolution, [-1, 1].

The mean over all unordered pairs is computed exactly without scoring every pair.
LPIPS is ``d(a, b) = sum_k mean_hw sum_c w_kc (t_k(a) - t_k(b))^2`` (``t_k`` the
unit-normalised VGG taps, ``w_k`` the linear heads), linear in the squared
differences, and for any values ``mean_{i<j} (x_i - x_j)^2 = 2 var(x)`` with the
unbiased variance. So the mean pairwise LPIPS of ``n`` images is
``2 sum_k mean_hw sum_c w_kc var_i(t_k(x_i))``: one trunk pass per image instead of
``n (n - 1) / 2`` pair evaluations, streamed over batches with shifted sums (no
per-image features are kept). ``tests/test_diversity.py`` checks it against the
explicit pair loop and against the official script's numbers.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from sage_jax.images import to_uint8

PROTOCOLS = ("official", "clean", "full")
SIZE = 32  # the official script's resize


def resize(images, size: int | None) -> jax.Array:
    """Bilinear resize of (N, H, W, 3) images to ``size`` x ``size`` (antialiased when
    shrinking); ``None`` keeps them as they are."""
    images = jnp.asarray(images, jnp.float32)
    if size is None or images.shape[1:3] == (size, size):
        return images
    return jax.image.resize(images, (images.shape[0], size, size, images.shape[-1]), "linear")


def as_uint8(images) -> np.ndarray:
    """uint8 images as they are, float images in [-1, 1] as the PNG writer rounds them
    (:func:`sage_jax.images.to_uint8`), so both give what the PNG on disk holds."""
    a = np.asarray(images)
    return a if a.dtype == np.uint8 else to_uint8(a)


def official_resize(images_u8, size: int = SIZE) -> np.ndarray:
    """``cv2.resize(img, (size, size))`` of every uint8 (N, H, W, 3) image: OpenCV's own
    INTER_LINEAR, bit for bit what the official script computes."""
    import cv2

    a = np.asarray(images_u8)
    if a.dtype != np.uint8 or a.ndim != 4:
        raise ValueError(f"the official protocol resizes uint8 (N, H, W, 3) images, got {a.dtype} {a.shape}")
    if a.shape[1:3] == (size, size):
        return a.copy()
    return np.stack([cv2.resize(np.ascontiguousarray(x), (size, size)) for x in a])


def network_input(images, protocol: str = "official") -> np.ndarray:
    """What the LPIPS network is fed under ``protocol``: float32 (N, h, w, 3)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"LPIPS protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if protocol == "official":
        # lpips.im2tensor: float32 of (u / 127.5 - 1) (numpy, float64); normalize=True: 2 x - 1
        # in float32. The network sees u / 63.75 - 3.
        x = (official_resize(as_uint8(images)).astype(np.float64) / 127.5 - 1.0).astype(np.float32)
        return np.float32(2.0) * x - np.float32(1.0)
    a = np.asarray(images)
    x = a.astype(np.float32) / 127.5 - 1.0 if a.dtype == np.uint8 else a.astype(np.float32)
    return np.asarray(resize(x, SIZE)) if protocol == "clean" else x


@jax.jit
def _accumulate(acc, taps, ref, valid):
    """Add a batch's shifted sums (``valid``: (B,) mask of real rows)."""
    out = []
    for (s1, s2), t, r in zip(acc, taps, ref):
        d = (t - r[None]) * valid[:, None, None, None]
        out.append((s1 + d.sum(0), s2 + jnp.square(d).sum(0)))
    return out


def mean_pairwise_lpips(lpips_model, images, *, protocol: str = "official", batch_size: int = 64) -> float:
    """Mean LPIPS over all unordered pairs of ``images`` (N >= 2, NHWC: uint8, or floats
    in [-1, 1]) under ``protocol`` (:data:`PROTOCOLS`)."""
    n = len(images)
    if n < 2:
        raise ValueError(f"LPIPS diversity needs at least 2 images, got {n}")
    weights = lpips_model.head_weights()
    acc, ref = None, None
    for i in range(0, n, batch_size):
        x = jnp.asarray(network_input(images[i:i + batch_size], protocol))
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


@jax.jit
def _gram_terms(taps, weights):
    """Per tap: ``q_i = mean_hw sum_c w_c t_ic^2`` (n,) and ``G_ij = mean_hw sum_c
    t_ic w_c t_jc`` (n, n), so that ``d(i, j) = sum_k q_i + q_j - 2 G_ij``."""
    d = 0.0
    for t, w in zip(taps, weights):
        n, h, wd, c = t.shape
        flat = t.reshape(n, h * wd, c)
        q = jnp.einsum("npc,c->n", jnp.square(flat), w) / (h * wd)
        g = jnp.einsum("npc,c,mpc->nm", flat, w, flat) / (h * wd)
        d = d + q[:, None] + q[None, :] - 2.0 * g
    return d


def pairwise_lpips(lpips_model, images, *, protocol: str = "official", batch_size: int = 64) -> np.ndarray:
    """The (n, n) matrix of LPIPS distances between all ``images`` under ``protocol``,
    from one trunk pass per image (the weighted Gram matrix of the taps; the diagonal is
    0). It keeps every image's taps: about 0.5 MB per image at 32 x 32 (the official and
    clean protocols). Used for the bootstrap intervals, which resample images."""
    n = len(images)
    taps = None
    for i in range(0, n, batch_size):
        t = lpips_model.features(jnp.asarray(network_input(images[i:i + batch_size], protocol)))
        t = [np.asarray(x) for x in t]
        taps = t if taps is None else [np.concatenate([a, b]) for a, b in zip(taps, t)]
    d = np.asarray(_gram_terms([jnp.asarray(t) for t in taps], lpips_model.head_weights()), np.float64)
    d = (d + d.T) / 2
    np.fill_diagonal(d, 0.0)
    return d


def _mean_pairs(d, idx) -> float:
    """Mean LPIPS over the pairs of distinct images of the (possibly repeated) images
    ``idx``, each pair weighted by how often its two images were drawn. A repeated
    image's pair with itself is not a pair of two images: counted at distance 0 it would
    pull a replicate down by about 1/n (20% at 5 images)."""
    counts = np.bincount(np.asarray(idx), minlength=len(d)).astype(np.float64)
    pairs = counts.sum() ** 2 - np.sum(counts ** 2)
    if pairs <= 0:
        return float("nan")
    return float(counts @ d @ counts / pairs)


def lpips_diversity(lpips_model, images_by_class: Mapping[str, np.ndarray], *, protocol: str = "official",
                    batch_size: int = 64, progress: bool = False, key=None, n_boot: int | None = None,
                    matrices: dict | None = None) -> dict:
    """The paper's LPIPS diversity: ``{"lpips": mean over classes, "per_class": {...},
    "protocol": protocol}``; images uint8 (as read from the PNGs) or floats in [-1, 1].

    With ``key`` also ``"lpips_ci"``: the 95% bootstrap interval over classes and images
    (:mod:`sage_jax.metrics.uncertainty`), from every class's pair matrix
    (:func:`pairwise_lpips`; kept in ``matrices``, a dict to fill, for paired
    differences, :func:`lpips_difference`). At full resolution the pair matrices are not
    kept and the interval resamples classes only."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"LPIPS protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if key is not None and protocol != "full":
        from sage_jax.metrics import uncertainty as u

        names = sorted(images_by_class)
        mats = matrices if matrices is not None else {}
        for name in tqdm(names, desc="LPIPS diversity", unit="class", disable=not progress):
            if len(images_by_class[name]) < 2:
                raise ValueError(f"LPIPS diversity needs at least 2 images, got {len(images_by_class[name])}")
            mats[name] = pairwise_lpips(lpips_model, images_by_class[name], protocol=protocol, batch_size=batch_size)
        per = {name: _mean_pairs(mats[name], np.arange(len(mats[name]))) for name in names}
        n_boot = u.N_BOOT if n_boot is None else n_boot
        boot = u.ClassBootstrap({"generated": [len(mats[c]) for c in names]}, key, n_boot)
        stat = u.class_mean(lambda c, idx: _mean_pairs(mats[names[c]], idx["generated"]))
        return {"lpips": float(np.mean(list(per.values()))), "per_class": per, "protocol": protocol,
                "lpips_ci": boot.estimate(stat)}
    if not images_by_class:
        raise ValueError("no classes to score")
    per = {}
    for name in tqdm(sorted(images_by_class), desc="LPIPS diversity", unit="class", disable=not progress):
        per[name] = mean_pairwise_lpips(lpips_model, images_by_class[name], protocol=protocol, batch_size=batch_size)
    out = {"lpips": float(np.mean(list(per.values()))), "per_class": per, "protocol": protocol}
    if key is not None:  # full resolution: classes resampled, each class's figure as it is
        from sage_jax.metrics import uncertainty as u

        names = sorted(per)
        boot = u.ClassBootstrap({"generated": [1] * len(names)}, key, u.N_BOOT if n_boot is None else n_boot)
        out["lpips_ci"] = boot.estimate(u.class_mean(lambda c, idx: per[names[c]]))
    return out


def lpips_difference(matrices_a: dict, matrices_b: dict, key, n_boot: int | None = None) -> dict:
    """LPIPS diversity of ``a`` minus ``b`` on the same resampled classes and images
    (paired: image ``j`` of a class made from the same draws in both)."""
    from sage_jax.metrics import uncertainty as u

    names = sorted(matrices_a)
    sizes = [len(matrices_a[c]) for c in names]
    if sorted(matrices_b) != names or sizes != [len(matrices_b[c]) for c in names]:
        raise ValueError("a paired LPIPS difference needs the same classes and images per class in both sets")
    boot = u.ClassBootstrap({"generated": sizes}, key, u.N_BOOT if n_boot is None else n_boot)
    return boot.difference(u.class_mean(lambda c, idx: _mean_pairs(matrices_a[names[c]], idx["generated"])),
                           u.class_mean(lambda c, idx: _mean_pairs(matrices_b[names[c]], idx["generated"])))
