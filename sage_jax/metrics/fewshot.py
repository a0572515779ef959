"""Few-shot classification with a frozen feature extractor (thesis, seed 002, chapter
5.4.1 and 5.4.4), with and without generated images added to the support set.

Protocol: a feature extractor ``f`` is trained with a cosine classifier on the seen
(base) classes (:func:`train_cosine_classifier`). On the unseen classes, N-way K-shot
episodes are sampled: ``n_way`` classes, ``k`` support and ``n_query`` query images
per class (the thesis: 5-way, 1 and 5 shots, 15 queries, 10k episodes; 600 is the
common cheaper count). A class's weight is the mean of its support features after
L2 normalisation, eq. (5.1): ``w = 1/N sum_i f(z_i) / |f(z_i)|``; a query goes to the
class with the highest ``<w, f(q) / |f(q)|>``, i.e. the highest *average cosine
similarity* to the class's support images. Accuracy is averaged over episodes and
reported with the 95% interval ``1.96 * std / sqrt(episodes)`` (population std of the
per-episode accuracies).

With ``generated_by_class``, every episode is evaluated twice on the same classes,
support and queries: once with the real support only and once with the class's
generated images added to the support set (all of them, or ``n_generated`` drawn per
episode), so the comparison is paired; the per-episode difference is reported too.

Features are computed once for all images; episodes are sampled from one explicit
key and the centroid classification is vectorised over episodes with ``vmap``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sage_jax.train import classifier as tc


def _normalize(x, eps=1e-8):
    return x / jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True) + eps)


def class_weights(support, mask=None):
    """Eq. (5.1): the mean of the L2-normalised support features. ``support``
    (..., n, D); ``mask`` (..., n) selects the members (all by default)."""
    z = _normalize(support)
    if mask is None:
        return z.mean(axis=-2)
    m = mask.astype(z.dtype)[..., None]
    return (z * m).sum(axis=-2) / jnp.maximum(m.sum(axis=-2), 1.0)


def nearest_centroid_predict(weights, queries):
    """Class of each query: argmax over classes of ``<w_c, q / |q|>`` (the average
    cosine similarity to the class's support). ``weights`` (C, D), ``queries`` (Q, D)."""
    return jnp.argmax(_normalize(queries) @ weights.T, axis=-1)


def _features_by_class(feature_fn, by_class: Mapping, batch_size: int):
    keys = list(by_class)
    arrays = [np.asarray(by_class[k]) for k in keys]
    counts = np.array([len(a) for a in arrays])
    flat = np.concatenate(arrays)
    feats = []
    for s in range(0, len(flat), batch_size):
        feats.append(np.asarray(feature_fn(flat[s:s + batch_size]), np.float32))
    feats = np.concatenate(feats).reshape(len(flat), -1)
    # (C, max_n, D) padded, plus counts
    m = counts.max()
    out = np.zeros((len(keys), m, feats.shape[1]), np.float32)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    for i, (s, n) in enumerate(zip(starts, counts)):
        out[i, :n] = feats[s:s + n]
    return keys, out, counts


def _sample_within(key, counts, max_count, n):
    """(len(counts), n) distinct indices per row, uniform among ``counts[row]``."""
    u = jax.random.uniform(key, (counts.shape[0], max_count))
    u = jnp.where(jnp.arange(max_count)[None] < counts[:, None], u, 2.0)
    return jnp.argsort(u, axis=-1)[:, :n]


def _episode_accuracy(key, feats, counts, gen_feats, gen_counts, *, n_way, k, n_query, n_generated):
    """Accuracy of one episode without and with the generated support images."""
    n_classes, max_n, _ = feats.shape
    k_cls, k_img, k_gen = jax.random.split(key, 3)
    cls = jax.random.permutation(k_cls, n_classes)[:n_way]
    idx = _sample_within(k_img, counts[cls], max_n, k + n_query)          # (n_way, k + q)
    chosen = jnp.take_along_axis(feats[cls], idx[..., None], axis=1)     # (n_way, k + q, D)
    support, query = chosen[:, :k], chosen[:, k:].reshape(n_way * n_query, -1)
    truth = jnp.repeat(jnp.arange(n_way), n_query)
    w = class_weights(support)
    acc = jnp.mean(nearest_centroid_predict(w, query) == truth)
    if gen_feats is None:
        return acc, acc
    g = gen_feats[cls]                                                   # (n_way, G, D)
    gmax = g.shape[1]
    if n_generated is None:
        gmask = jnp.arange(gmax)[None] < gen_counts[cls][:, None]
    else:
        gi = _sample_within(k_gen, gen_counts[cls], gmax, n_generated)
        g = jnp.take_along_axis(g, gi[..., None], axis=1)
        gmask = jnp.ones(gi.shape, bool)
    both = jnp.concatenate([support, g], axis=1)
    mask = jnp.concatenate([jnp.ones(support.shape[:2], bool), gmask], axis=1)
    w_gen = class_weights(both, mask)
    acc_gen = jnp.mean(nearest_centroid_predict(w_gen, query) == truth)
    return acc, acc_gen


@functools.partial(jax.jit, static_argnames=("n_way", "k", "n_query", "n_generated"))
def _run_episodes(ep_keys, feats, counts, gen_feats, gen_counts, *, n_way, k, n_query, n_generated):
    """Every episode at once (vmap over the keys); one compilation per shape and
    protocol setting, reused across calls."""
    return jax.vmap(lambda kk: _episode_accuracy(kk, feats, counts, gen_feats, gen_counts, n_way=n_way, k=k,
                                                 n_query=n_query, n_generated=n_generated))(ep_keys)


def episode_summary(acc: np.ndarray) -> dict:
    """Mean accuracy over episodes with the usual 95% interval of few-shot papers,
    ``mean +- 1.96 std / sqrt(episodes)`` (``lo``, ``hi``; the episodes are the
    independent draws)."""
    acc = np.asarray(acc, np.float64)
    std = float(acc.std())
    mean, half = float(acc.mean()), float(1.96 * std / np.sqrt(len(acc)))
    return {"mean": mean, "ci95": half, "std": std, "value": mean, "lo": mean - half, "hi": mean + half}


def fewshot_classification(feature_fn: Callable, images_by_class: Mapping, *,
                           generated_by_class: Mapping | None = None, n_way: int = 5,
                           k_shots: Sequence[int] = (1, 5), n_query: int = 15, n_episodes: int = 600,
                           n_generated: int | None = None, key, batch_size: int = 256,
                           return_episodes: bool = False) -> dict:
    """N-way K-shot nearest-centroid accuracy of ``feature_fn`` on the unseen classes.

    ``feature_fn``: images (n, ...) -> features (n, D) (e.g. ``TrainedClassifier.
    features``). ``images_by_class``: class -> images of the unseen classes (support
    and queries are drawn from these; every class needs ``max(k_shots) + n_query``).
    ``generated_by_class`` (optional, same classes or a subset): class -> generated
    images, added to the support of their class in the paired second evaluation;
    ``n_generated`` draws that many per class and episode (None: all). ``key``:
    a ``jax.random`` key; episodes of shot count ``k`` use ``fold_in(key, k)``.

    Returns ``{k: {"real": {"mean", "ci95", "std"}, "with_generated": {...},
    "difference": {...}, "n_episodes", "n_way", "n_query"}}`` for each k in
    ``k_shots`` (accuracies in [0, 1]; "difference" is with_generated - real per
    episode). Without generated images only "real" is given. ``return_episodes``
    adds the per-episode accuracies (``"episodes"``: {"real": (E,), "with_generated": (E,)}).
    """
    keys, feats, counts = _features_by_class(feature_fn, images_by_class, batch_size)
    if n_way > len(keys):
        raise ValueError(f"{n_way}-way episodes need {n_way} classes, got {len(keys)}")
    need = max(k_shots) + n_query
    short = [str(c) for c, n in zip(keys, counts) if n < need]
    if short:
        raise ValueError(f"classes {short} have fewer than {need} images (max shots + queries)")
    gen_feats = gen_counts = None
    if generated_by_class is not None:
        unknown = set(generated_by_class) - set(keys)
        if unknown:
            raise ValueError(f"generated images for unknown classes {sorted(map(str, unknown))}")
        dim = feats.shape[-1]
        gk, gf, gc = _features_by_class(feature_fn, generated_by_class, batch_size) \
            if len(generated_by_class) else ([], np.zeros((0, 1, dim), np.float32), np.zeros(0, int))
        gen_feats = np.zeros((len(keys), max(gf.shape[1], 1), dim), np.float32)
        gen_counts = np.zeros(len(keys), np.int32)
        for c, f, n in zip(gk, gf, gc):
            i = keys.index(c)
            gen_feats[i, :n], gen_counts[i] = f[:n], n
        if n_generated is not None and n_generated > 0 and gen_counts.min() < n_generated:
            raise ValueError(f"n_generated={n_generated} but a class has only {gen_counts.min()} generated images")
        gen_feats, gen_counts = jnp.asarray(gen_feats), jnp.asarray(gen_counts)
    feats, counts = jnp.asarray(feats), jnp.asarray(counts)

    out = {}
    for k in k_shots:
        ep_keys = jax.random.split(jax.random.fold_in(key, int(k)), n_episodes)
        real, gen = (np.asarray(a) for a in _run_episodes(
            ep_keys, feats, counts, gen_feats, gen_counts, n_way=int(n_way), k=int(k), n_query=int(n_query),
            n_generated=None if n_generated is None else int(n_generated)))
        res = {"real": episode_summary(real), "n_episodes": int(n_episodes), "n_way": int(n_way),
               "n_query": int(n_query)}
        if generated_by_class is not None:
            res["with_generated"] = episode_summary(gen)
            res["difference"] = episode_summary(gen - real)
        if return_episodes:
            res["episodes"] = {"real": real} if generated_by_class is None else {"real": real, "with_generated": gen}
        out[int(k)] = res
    return out


def train_cosine_classifier(images, labels, *, key, model=None, num_classes: int | None = None,
                            **train_kw) -> tc.TrainedClassifier:
    """The thesis' feature extractor (5.4.1): a network trained with a cosine
    classifier head on the seen classes. ``model`` defaults to a small GroupNorm
    ResNet (``nn.classifiers.ResNet``) with a cosine head of learnable scale;
    ``train_kw`` go to :func:`sage_jax.train.classifier.pretrain` (the thesis trains
    90 epochs of SGD, momentum 0.9, weight decay 5e-4, lr 0.05 divided by 10 every
    30 epochs, with warm-up; pass ``optimizer="sgd"`` to get close). Use
    ``result.features`` as ``feature_fn``. ``batch_size`` is the global batch: with
    several processes each feeds its rows of it and every process gets the same
    extractor, so :func:`fewshot_classification` (local computations from one key) gives
    the same result on every process."""
    from sage_jax.nn.classifiers import ResNet

    n = num_classes if num_classes is not None else int(np.max(labels)) + 1
    if model is None:
        model = ResNet(n, head_type="cosine")
    elif model.head_type != "cosine":
        raise ValueError("train_cosine_classifier needs a model with head_type='cosine'")
    return tc.pretrain(model, images, labels, key=key, **train_kw)
