"""FID and KID on Inception features (paper section 4).

Protocol
--------
1. Features: the FID Inception-v3 of pytorch-fid 0.3.0
   (:func:`sage_jax.checkpoints.load_inception` on ``pt_inception-2015-12-05-6726825d.pth``),
   2048-d pool3 activations of images in [-1, 1] (NHWC, any size; resized inside to
   299x299 with PyTorch's non-antialiased bilinear interpolation, as pytorch-fid does).
   :func:`extract_features` runs it over a whole set in fixed-size batches.
   ``sage-jax evaluate`` feeds it :func:`network_input` of the uint8 images read from
   the folders (PIL, converted to RGB as pytorch-fid's ``Image.open(p).convert('RGB')``):
   ``u / 127.5 - 1``, which is pytorch-fid's ``ToTensor`` (``u / 255``) followed by its
   ``2 x - 1`` bit for bit in float32 (``tests/test_fid.py``). Two differences from
   pytorch-fid's folder path remain and are documented: every image is read at one
   size (``--size``, default the first real image's), so an image of another size is
   first resized to it (bilinear, antialiased) before the network's own resize to 299;
   and EXIF orientation is applied (pytorch-fid ignores it). Square folders of one size,
   as the paper's 256 px images, give the network pytorch-fid's input.
2. FID: each set is summarised by its mean and unbiased covariance
   (:func:`feature_statistics`, float64, as ``np.cov(rowvar=False)``); the score is the
   Frechet distance of the two Gaussians (:func:`frechet_distance`):
   ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))``. The statistics of a real
   set can be cached on disk (:func:`cached_statistics`). In the paper's setting the
   real set is the unseen classes' real images and the generated set 128 images per
   unseen class; FID is biased upwards for small sets, so only compare FIDs computed
   with the same numbers of images.
3. KID (:func:`kernel_inception_distance`): the unbiased MMD^2 with the cubic
   polynomial kernel ``k(x, y) = (x.y / d + 1)^3``, averaged over random subsets of
   both sets (as in Binkowski et al. 2018, clean-fid and stylegan2-ada-pytorch), with
   subsets drawn from an explicit key. It is unbiased, so it suits small sets better.

All functions here take and return arrays; the feature network is passed in as a
function. :func:`cached_statistics` is the one that touches the disk (its cache).
:func:`fid` and :func:`kid` wrap the two scores as dicts for ``sage-jax evaluate`` and the
class-wise evaluation; :func:`fid` takes cached statistics in place of features.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any, Callable, Mapping, NamedTuple

import jax
import numpy as np
from tqdm import tqdm


__all__ = ["Statistics", "feature_statistics", "frechet_distance", "kernel_inception_distance",
           "extract_features", "cached_statistics", "fid", "kid"]


class Statistics(NamedTuple):
    """Mean ``(d,)`` and unbiased covariance ``(d, d)`` (float64) of ``n`` feature vectors."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int


# --------------------------------------------------------------------------- statistics

def network_input(images_u8) -> np.ndarray:
    """The Inception input of uint8 images (N, H, W, 3): float32 in [-1, 1],
    ``u / 127.5 - 1`` (pytorch-fid: ``ToTensor`` then ``2 x - 1``, the same float32 values;
    the network resizes to 299 inside)."""
    return np.asarray(images_u8, np.float32) / np.float32(127.5) - np.float32(1.0)


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` of ``(N, d)`` features in float64: the mean and the unbiased
    covariance (``np.cov(features, rowvar=False)``, divided by ``N - 1``)."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"features must be (N, d), got shape {f.shape}")
    if f.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 feature vectors, got {f.shape[0]}")
    mu = f.mean(axis=0)
    fc = f - mu
    sigma = fc.T @ fc / (f.shape[0] - 1)
    return mu, sigma


def _psd_factor(sigma: np.ndarray, rcond: float | None) -> np.ndarray:
    """``L`` with ``L @ L.T == sigma`` from a symmetric eigendecomposition, keeping only
    eigenvalues above ``rcond * max(eigenvalue)`` (the numerical rank, as
    ``np.linalg.matrix_rank`` decides it); the rest are rounding noise of a
    positive semi-definite matrix and would otherwise enter through their square root."""
    w, v = np.linalg.eigh(sigma)
    if rcond is None:
        rcond = sigma.shape[0] * np.finfo(np.float64).eps
    keep = w > rcond * max(float(w.max(initial=0.0)), 0.0)
    return v[:, keep] * np.sqrt(w[keep])


def trace_sqrt_product(sigma1, sigma2, *, rcond: float | None = None) -> float:
    """``tr((sigma1 @ sigma2)^(1/2))`` for symmetric PSD ``sigma1``, ``sigma2``.

    With ``sigma_i = L_i L_i^T``, the non-zero eigenvalues of ``sigma1 sigma2`` are
    those of ``L1^T sigma2 L1 = (L1^T L2)(L1^T L2)^T``, i.e. the squared singular values
    of ``L1^T L2``; so the trace of the square root is the sum of those singular
    values (the nuclear norm). No matrix square root of a non-symmetric product, no
    complex intermediate results, and exact for rank-deficient covariances (fewer
    samples than dimensions), where ``scipy.linalg.sqrtm`` of the product can fail."""
    l1 = _psd_factor(sigma1, rcond)
    l2 = _psd_factor(sigma2, rcond)
    if l1.shape[1] == 0 or l2.shape[1] == 0:
        return 0.0
    return float(np.linalg.svd(l1.T @ l2, compute_uv=False).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2, *, eps: float = 0.0, rcond: float | None = None) -> float:
    """Frechet distance of ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` in float64:
    ``|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))``.

    The trace of the square root is computed by :func:`trace_sqrt_product` (eigh + SVD,
    numpy only), which is stable for singular and near-singular covariances, e.g. from
    fewer samples than feature dimensions (128 images vs 2048 features). pytorch-fid
    instead takes ``scipy.linalg.sqrtm(sigma1 @ sigma2)`` and, when that is not finite,
    retries with ``eps = 1e-6`` added to both diagonals inside the square root only
    (``sqrtm((sigma1 + eps I)(sigma2 + eps I))``, the traces unchanged); ``eps`` does the
    same here, for comparison with numbers made that way. It is not needed for
    stability (default 0). Both covariances are symmetrised first.
    The result is non-negative up to rounding (it is a squared Wasserstein-2 distance);
    it is returned as computed, not clipped.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
    s1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    s2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"shapes do not match: mu1 {mu1.shape}, sigma1 {s1.shape}, mu2 {mu2.shape}, "
                         f"sigma2 {s2.shape}")
    if not all(np.all(np.isfinite(a)) for a in (mu1, mu2, s1, s2)):
        raise ValueError("statistics contain NaN or inf")
    s1 = (s1 + s1.T) / 2
    s2 = (s2 + s2.T) / 2
    diff = mu1 - mu2
    if eps:
        tr_covmean = trace_sqrt_product(s1 + eps * np.eye(d), s2 + eps * np.eye(d), rcond=rcond)
    else:
        tr_covmean = trace_sqrt_product(s1, s2, rcond=rcond)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


# --------------------------------------------------------------------------- KID

def _generator(key) -> np.random.Generator:
    """A numpy Generator from an explicit key: an ``np.random.Generator`` is used as is
    (and advanced); a jax PRNG key (raw ``uint32`` or typed) seeds a new one with its
    key bits, so the same key gives the same draws, without compiling anything."""
    if isinstance(key, np.random.Generator):
        return key
    if isinstance(key, (jax.Array, np.ndarray)):
        if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
            key = jax.random.key_data(key)
        bits = np.asarray(key)
        if bits.dtype == np.uint32 and bits.size >= 1:
            return np.random.default_rng([int(b) for b in bits.ravel()])
    raise TypeError(f"key must be a jax PRNG key or an np.random.Generator (seeded by you), "
                    f"got {type(key).__name__}")


def _subset_indices(rng: np.random.Generator, n: int, m: int, num_subsets: int) -> np.ndarray:
    """``(num_subsets, m)`` indices into ``range(n)``, each row without repeats."""
    return np.stack([rng.choice(n, m, replace=False) for _ in range(num_subsets)])


def kernel_inception_distance(features1, features2, *, num_subsets: int = 100, subset_size: int = 1000,
                              key) -> tuple[float, float]:
    """KID: ``(mean, std)`` over ``num_subsets`` random subsets of the unbiased MMD^2
    between ``features1`` and ``features2`` (``(N1, d)``, ``(N2, d)``) with the kernel
    ``k(x, y) = (x.y / d + 1)^3``. Each subset takes ``m = min(N1, N2, subset_size)``
    rows of each set without replacement; per subset

        MMD^2_u = [sum_{i!=j} k(x_i, x_j) + sum_{i!=j} k(y_i, y_j)] / (m (m - 1))
                  - 2 sum_{i,j} k(x_i, y_j) / m^2,

    the estimator of clean-fid and stylegan2-ada-pytorch (their value is the mean).
    ``key``: a jax PRNG key (its bits seed numpy's generator) or an
    ``np.random.Generator``; the same key gives the same subsets (no global RNG).
    Float64 throughout."""
    f1 = np.asarray(features1, np.float64)
    f2 = np.asarray(features2, np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"features must be (N1, d) and (N2, d), got {f1.shape} and {f2.shape}")
    d = f1.shape[1]
    m = min(f1.shape[0], f2.shape[0], int(subset_size))
    if m < 2:
        raise ValueError("KID needs at least 2 feature vectors in each set")
    if num_subsets < 1:
        raise ValueError("num_subsets must be >= 1")
    rng = _generator(key)
    idx1 = _subset_indices(rng, f1.shape[0], m, num_subsets)
    idx2 = _subset_indices(rng, f2.shape[0], m, num_subsets)
    values = np.empty(num_subsets, np.float64)
    for s in range(num_subsets):
        x, y = f1[idx1[s]], f2[idx2[s]]
        kxx = (x @ x.T / d + 1.0) ** 3
        kyy = (y @ y.T / d + 1.0) ** 3
        kxy = (x @ y.T / d + 1.0) ** 3
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values[s] = within - 2.0 * kxy.sum() / (m * m)
    return float(values.mean()), float(values.std())


# --------------------------------------------------------------------------- features

def _chunks(images, batch_size: int):
    """Re-chunk an iterable of batches into batches of exactly ``batch_size`` (the last
    one possibly shorter)."""
    buf, held = [], 0
    for batch in images:
        b = np.asarray(batch)
        if b.ndim == 3:
            b = b[None]
        while b.shape[0]:
            take = min(batch_size - held, b.shape[0])
            buf.append(b[:take])
            held += take
            b = b[take:]
            if held == batch_size:
                yield np.concatenate(buf) if len(buf) > 1 else buf[0]
                buf, held = [], 0
    if held:
        yield np.concatenate(buf) if len(buf) > 1 else buf[0]


def extract_features(feature_fn: Callable, images, batch_size: int = 50, progress: bool = True,
                     desc: str = "features") -> np.ndarray:
    """``feature_fn`` (e.g. ``InceptionModel.features``) over a set of images, batched:
    ``images`` is an ``(N, H, W, C)`` array or an iterable of such batches (any sizes).
    Every call gets exactly ``batch_size`` images (``min(batch_size, N)`` for an array),
    the last batch padded with zeros and the padding's features dropped, so a jitted
    ``feature_fn`` compiles once. Returns ``(N, d)`` numpy features."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    total = None
    if hasattr(images, "shape") and hasattr(images, "ndim"):
        if images.ndim != 4:
            raise ValueError(f"an array of images must be (N, H, W, C), got {images.shape}")
        total = int(images.shape[0])
        if total == 0:
            raise ValueError("no images")
        batch_size = min(batch_size, total)
        source = (images[i:i + batch_size] for i in range(0, total, batch_size))
    else:
        source = images
    outs = []
    bar = tqdm(total=total, desc=desc, unit="img", disable=not progress, leave=False)
    try:
        for b in _chunks(source, batch_size):
            n = b.shape[0]
            if n < batch_size:
                pad = np.zeros((batch_size - n,) + b.shape[1:], b.dtype)
                b = np.concatenate([b, pad])
            f = np.asarray(feature_fn(b))
            if f.ndim != 2 or f.shape[0] != batch_size:
                raise ValueError(f"feature_fn must return (batch, d) features, got {f.shape}")
            outs.append(f[:n])
            bar.update(n)
    finally:
        bar.close()
    if not outs:
        raise ValueError("no images")
    return np.concatenate(outs)


# --------------------------------------------------------------------------- cache

def _file_stats(paths) -> list:
    out = []
    for p in paths:
        st = os.stat(p)
        out.append([os.path.abspath(os.fspath(p)), int(st.st_size), int(st.st_mtime_ns)])
    return out


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def cached_statistics(cache_dir: str | os.PathLike, key_parts: Mapping[str, Any],
                      compute_fn: Callable[[], Any]) -> Statistics:
    """Statistics of a (real) image set, cached as ``.npz`` in ``cache_dir``.

    ``key_parts`` identifies the set and how its features were made:

    * ``"network"`` (required): the feature network's fingerprint
      (``InceptionModel.fingerprint``);
    * ``"files"`` (optional): the image files; each enters the fingerprint with its
      absolute path, size and modification time (ns);
    * ``"name"`` (optional): a readable prefix of the cache file name;
    * anything else JSON-serialisable (image size, split, class list, ...).

    The cache file is named from ``key_parts`` (paths, not their stats); it stores
    ``mu``, ``sigma``, ``n`` and the fingerprint of all inputs. If the file is
    missing, unreadable or its fingerprint differs (a file changed, another network),
    ``compute_fn()`` is called: it returns the ``(N, d)`` features of the set, or a
    :class:`Statistics`. The new file is written atomically (temporary file in
    ``cache_dir``, then ``os.replace``).
    """
    if "network" not in key_parts or not key_parts["network"]:
        raise ValueError("key_parts must contain 'network', the feature network's fingerprint")
    parts = dict(key_parts)
    files = [os.path.abspath(os.fspath(p)) for p in parts.pop("files", [])]
    identity = _canonical({**parts, "files": files})
    fingerprint = hashlib.sha256(
        _canonical({**parts, "files": _file_stats(files)}).encode()).hexdigest()
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(parts.get("name", "stats")))
    path = os.path.join(os.fspath(cache_dir), f"{name}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}.npz")

    if os.path.isfile(path):
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["fingerprint"]) == fingerprint:
                    return Statistics(z["mu"].astype(np.float64), z["sigma"].astype(np.float64), int(z["n"]))
        except (OSError, KeyError, ValueError):
            pass  # unreadable: recompute and overwrite

    result = compute_fn()
    if isinstance(result, Statistics):
        stats = Statistics(np.asarray(result.mu, np.float64), np.asarray(result.sigma, np.float64), int(result.n))
    else:
        feats = np.asarray(result)
        mu, sigma = feature_statistics(feats)
        stats = Statistics(mu, sigma, int(feats.shape[0]))

    os.makedirs(cache_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".npz.tmp", dir=os.fspath(cache_dir))
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, mu=stats.mu, sigma=stats.sigma, n=np.int64(stats.n), fingerprint=np.str_(fingerprint),
                     key_parts=np.str_(identity))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return stats


# --------------------------------------------------------------------------- the scores as dicts

def _as_statistics(x) -> Statistics:
    if isinstance(x, Statistics):
        return x
    if isinstance(x, tuple) and len(x) == 2:
        mu, sigma = x
        return Statistics(np.asarray(mu, np.float64), np.asarray(sigma, np.float64), -1)
    f = np.asarray(x)
    mu, sigma = feature_statistics(f)
    return Statistics(mu, sigma, int(f.shape[0]))


def fid(real, generated, *, eps: float = 0.0) -> dict:
    """FID of two feature sets; either may be given as :class:`Statistics` or
    ``(mu, sigma)`` instead (e.g. cached real statistics)."""
    r, g = _as_statistics(real), _as_statistics(generated)
    return {"fid": frechet_distance(r.mu, r.sigma, g.mu, g.sigma, eps=eps)}


def kid(real, generated, *, key, num_subsets: int = 100, subset_size: int = 1000) -> dict:
    """KID of two feature sets (features, not statistics): mean and std over subsets."""
    mean, std = kernel_inception_distance(real, generated, num_subsets=num_subsets,
                                          subset_size=subset_size, key=key)
    return {"kid": mean, "kid_std": std}
