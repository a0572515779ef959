"""The SAGE method (paper Sec. 3.2.2) as pure jnp functions on arrays.

Notation: codes are raw encoder W+ codes (offsets from ``latent_avg``), shape (L, D);
``S`` seen classes; the dictionary ``A`` has one (D, l) matrix per edited layer, in
the order ``layers``; ``E = len(layers)``.

Everything here is jit- and vmap-friendly: shapes are static, selections are masks.
"""

from __future__ import annotations

import dataclasses
import flax.struct
import jax
import jax.numpy as jnp

PAIRWISE_EPS = 1e-6  # torch.nn.functional.pairwise_distance adds it to the difference


# ----------------------------------------------------------------- class statistics
def class_embeddings(sums: jax.Array, counts: jax.Array) -> jax.Array:
    """Eq. 5: the class embedding is the mean raw code of the class's images.
    ``sums`` (S, L, D) are per-class sums of codes, ``counts`` (S,)."""
    return sums / jnp.maximum(counts, 1)[:, None, None].astype(sums.dtype)


def accumulate_class_sums(sums, counts, codes, labels):
    """Add a batch of codes (N, L, D) with integer ``labels`` (N,) to running per-class
    sums (S, L, D) and counts (S,); labels < 0 are ignored (padding)."""
    valid = labels >= 0
    onehot = jax.nn.one_hot(jnp.where(valid, labels, 0), sums.shape[0], dtype=codes.dtype) * valid[:, None]
    return sums + jnp.einsum("ns,nld->sld", onehot, codes), counts + onehot.sum(0).astype(counts.dtype)


def pseudo_inverse(A: jax.Array) -> jax.Array:
    """pinv of every layer's dictionary: (E, D, l) -> (E, l, D)."""
    return jnp.linalg.pinv(A)


def back_project(A_pinv: jax.Array, dw: jax.Array) -> jax.Array:
    """Eq. 18: n_hat = pinv(A_layer) @ dw_layer for every edited layer.
    ``A_pinv`` (E, l, D), ``dw`` (..., E, D) -> (..., E, l)."""
    return jnp.einsum("eld,...ed->...el", A_pinv, dw)


@flax.struct.dataclass
class CodeMoments:
    """Per-class sufficient statistics of back-projected codes n_hat (Eq. 18-19):
    count (S,), mean (S, E, l), mean of |n| (S, E, l), centred scatter M2 (S, E, l, l).
    Pooling classes with :func:`pooled_statistics` is exact (Chan et al.'s merge), so
    only these, not every n_hat, need to be kept."""

    count: jax.Array
    mean: jax.Array
    mean_abs: jax.Array
    m2: jax.Array


def moments_from_codes(n: jax.Array, labels: jax.Array, num_classes: int) -> CodeMoments:
    """Per-class moments of codes ``n`` (N, E, l) with labels (N,) (negative: ignored)."""
    valid = labels >= 0
    onehot = jax.nn.one_hot(jnp.where(valid, labels, 0), num_classes, dtype=n.dtype) * valid[:, None]
    count = onehot.sum(0)
    safe = jnp.maximum(count, 1)[:, None, None]
    mean = jnp.einsum("ns,nel->sel", onehot, n) / safe
    mean_abs = jnp.einsum("ns,nel->sel", onehot, jnp.abs(n)) / safe
    centred = n[:, None] - mean[None]  # (N, S, E, l)
    m2 = jnp.einsum("ns,nsel,nsek->selk", onehot, centred, centred)
    return CodeMoments(count, mean, mean_abs, m2)


def merge_moments(a: CodeMoments, b: CodeMoments) -> CodeMoments:
    """Moments of the union of two sets of samples of the same classes (streaming)."""
    n = a.count + b.count
    safe = jnp.maximum(n, 1)
    wa, wb = (a.count / safe)[:, None, None], (b.count / safe)[:, None, None]
    delta = b.mean - a.mean
    m2 = a.m2 + b.m2 + jnp.einsum("sel,sek->selk", delta, delta) * (a.count * b.count / safe)[:, None, None, None]
    return CodeMoments(n, wa * a.mean + wb * b.mean, wa * a.mean_abs + wb * b.mean_abs, m2)


def pooled_statistics(m: CodeMoments, weights: jax.Array):
    """Eq. 19 and the Gaussian of Sec. 3.2.2 over the samples of the classes selected by
    ``weights`` (S,) (1 = selected): (mean (E, l), mean |n| (E, l), unbiased covariance
    (E, l, l)), pooling all their samples as the official ``calc_statis`` does."""
    cw = weights * m.count
    total = jnp.sum(cw)
    w = cw / jnp.maximum(total, 1)
    mean = jnp.einsum("s,sel->el", w, m.mean)
    mean_abs = jnp.einsum("s,sel->el", w, m.mean_abs)
    d = m.mean - mean[None]
    m2 = jnp.einsum("s,selk->elk", weights, m.m2) + jnp.einsum("s,sel,sek->elk", cw, d, d)
    cov = m2 / jnp.maximum(total - 1, 1)
    return mean, mean_abs, cov


# -------------------------------------------------------- class embedding mapping
def relevant_basis(embeddings: jax.Array, t_max: int | None = None) -> jax.Array:
    """Eq. 16: per layer, the right singular vectors of the (S, D) matrix of class
    embeddings, strongest first: (L, min(S, D), D) (or the first ``t_max``)."""
    _, _, vt = jnp.linalg.svd(jnp.swapaxes(embeddings, 0, 1), full_matrices=False)  # (L, r, D)
    return vt if t_max is None else vt[:, :t_max]


def map_embedding(codes: jax.Array, basis: jax.Array, t_B) -> jax.Array:
    """Eq. 17: e_hat = mean over the shots of B_f B_f^T w, B_f = the top ``t_B`` basis
    vectors of every layer. ``codes`` (K, L, D) or (L, D); ``t_B`` may be traced."""
    w = codes if codes.ndim == 3 else codes[None]
    keep = (jnp.arange(basis.shape[1]) < t_B).astype(basis.dtype)  # (r,)
    coeff = jnp.einsum("lrd,kld->klr", basis, w) * keep  # (K, L, r)
    return jnp.mean(jnp.einsum("klr,lrd->kld", coeff, basis), axis=0)


# -------------------------------------------------------------------- retrieval
def class_distances(query: jax.Array, embeddings: jax.Array, eps: float = PAIRWISE_EPS) -> jax.Array:
    """Sum over layers of the L2 distance between ``query`` (L, D) and every class
    embedding (S, L, D), as ``F.pairwise_distance`` computes it (eps added)."""
    return jnp.sum(jnp.linalg.norm(query[None] - embeddings + eps, axis=-1), axis=-1)


def similar_classes(query: jax.Array, embeddings: jax.Array, t_C: int) -> jax.Array:
    """The ``t_C`` seen classes nearest to ``query``, nearest first: (t_C,) indices."""
    _, idx = jax.lax.top_k(-class_distances(query, embeddings), t_C)
    return idx


# -------------------------------------------------------------- adaptive editing
def direction_mask(mean_abs: jax.Array, t_A: int | None) -> jax.Array:
    """Keep, per layer, the directions whose mean |n| is strictly above the ``t_A``-th
    largest (0-based index t_A of the descending order), i.e. the top ``t_A``
    (Sec. 3.2.2); ``None`` or ``t_A >= l`` keeps all. (E, l) float mask."""
    l = mean_abs.shape[-1]
    if t_A is None or t_A >= l:
        return jnp.ones_like(mean_abs)
    threshold = jax.lax.top_k(mean_abs, t_A + 1)[0][..., t_A]
    return (mean_abs > threshold[..., None]).astype(mean_abs.dtype)


def gaussian_factor(cov: jax.Array) -> jax.Array:
    """A square root of each (PSD, possibly singular) covariance: cov = F F^T."""
    evals, evecs = jnp.linalg.eigh(cov)
    return evecs * jnp.sqrt(jnp.clip(evals, 0.0))[..., None, :]


JITTER = 1e-5  # relative to the mean variance: added to a singular covariance's diagonal


def gaussian_factors(cov: jax.Array) -> jax.Array:
    """Square roots F (F F^T = cov, up to float32 rounding) of a batch of covariances
    (..., l, l), by Cholesky: about twenty times cheaper than an eigendecomposition on a
    CPU. A singular covariance (fewer pooled samples than directions) gets ``JITTER`` x
    its mean variance on the diagonal (a standard deviation of 0.3% of the typical one
    in every direction); should that factor still fail, the matrix takes
    :func:`gaussian_factor` (eigendecomposition, exact for singular covariances).

    The matrices are factored one at a time (``lax.map``), each fallback only when
    needed. Batched LAPACK calls would split the batch over XLA's CPU thread pool and
    wait for it; two such calls running side by side can take every pool thread while
    waiting and deadlock (seen with jaxlib 0.10.2 on a 2-core machine). One matrix per
    call runs inline."""
    l = cov.shape[-1]
    eye = jnp.eye(l, dtype=cov.dtype)
    tiny = jnp.finfo(cov.dtype).tiny

    def one(c):
        chol = jnp.linalg.cholesky(c)

        def jittered(c):
            scale = jnp.maximum(jnp.trace(c) / l, tiny)
            f = jnp.linalg.cholesky(c + JITTER * scale * eye)
            return jax.lax.cond(jnp.all(jnp.isfinite(f)), lambda _: f, gaussian_factor, c)

        return jax.lax.cond(jnp.all(jnp.isfinite(chol)), lambda _: chol, jittered, c)

    flat = cov.reshape(-1, l, l)
    return jax.lax.map(one, flat).reshape(cov.shape)


def gaussian_draws(mean: jax.Array, factor: jax.Array, z: jax.Array) -> jax.Array:
    """n ~ N(mean, F F^T) from standard normal ``z``: ``mean + F z`` for every edited
    layer. ``mean`` (..., E, l), ``factor`` (..., E, l, l), ``z`` (..., J, E, l) -> (..., J, E, l)
    (J samples per mean)."""
    return mean[..., None, :, :] + jnp.einsum("...elk,...jek->...jel", factor, z)


# -------------------------------------------------------------------- modes
@dataclasses.dataclass(frozen=True)
class Mode:
    """What a generation mode uses: class embedding mapping (Eq. 16-17) and adaptive
    editing (retrieval of t_C classes + top-t_A directions, Eq. 19)."""

    name: str
    mapping: bool
    adaptive: bool


MODES = {
    "sage": Mode("sage", mapping=True, adaptive=True),
    "sage-q": Mode("sage-q", mapping=True, adaptive=False),   # no adaptive editing
    "sage-i": Mode("sage-i", mapping=False, adaptive=True),   # no embedding mapping
    "age": Mode("age", mapping=False, adaptive=False),        # AGE: the shot's own code, global A
}


def get_mode(name: str) -> Mode:
    if name.lower() not in MODES:
        raise ValueError(f"unknown mode {name!r}; one of {sorted(MODES)}")
    return MODES[name.lower()]
