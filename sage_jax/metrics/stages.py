"""Stage-by-stage quality on the synthetic dataset: the benchmark measures the method only
when every stage under it has learnt (retention of edited images means little when the
generator cannot draw the classes or the inversion of the shot already lost its class).

The ground-truth oracles (trained on real images only) score each stage on its own:

* **generator** (:func:`generator_quality`): random samples ``G(z)`` with random noise:
  the share the oracle classifier assigns to one class with probability >= 0.9
  (``confident_share``; real images: about 0.97), how many of the seen classes such
  confident samples hit (``seen_classes_hit``), the mean max-probability, and a
  Frechet distance between the oracle's pooled features of the samples and of real
  seen images (``oracle_fid``: FID on the oracle's features, not Inception's), and how
  much of the small steps in smooth regions sit on an 8 px grid's lines
  (``tile_contrast``, against the real images' ``real_tile_contrast``: blocky
  upsampling artefacts, :func:`tile_contrast`); for a class-conditional generator, the
  share drawn as the class asked for (``label_agreement``);
* **inversion** (:func:`inversion_quality`): reconstructions ``G(E(x))`` of held-out
  real images (fresh draws, never trained on), seen and unseen classes: oracle
  retention of the class, and the mean squared error to the input (images in [-1, 1]).

* **dictionary** (:func:`dictionary_quality`): the share of the within-class variation of
  seen images' codes (``w - e_c``, the category-irrelevant part the edits are drawn from)
  that lies in the span of ``A``, per edited layer, against the share the best subspace
  of the same size holds (the top principal directions, ``pca_bound``). A random subspace
  of ``l`` of ``D`` directions holds about ``l / D``: a dictionary near that bound edits
  along the data's own variation, one near ``l / D`` along arbitrary directions.

When an editing result is poor, these tell whether the generator, the inversion, the
dictionary or the editing loses the class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

CONFIDENT = 0.9


FID_BOOT = 200  # bootstrap replicates of an FID (each one a matrix square root)


def at_size(images, size: int | None):
    """``images`` (N, H, W, 3) resized (bilinear) to ``size`` px when they are not."""
    images = np.asarray(images)
    if size is None or images.shape[1] == size:
        return images
    return np.asarray(jax.image.resize(images, (len(images), size, size, images.shape[3]), "bilinear"))


def class_probabilities(oracles, images, batch: int = 500, size: int | None = None) -> np.ndarray:
    """The oracle classifier's softmax (N, classes) for images in [-1, 1] (resized to
    ``size``, the oracles' input size, when given). Oracles with their own
    ``class_probabilities`` (the glyph oracles, which resize and read gray themselves)
    answer it."""
    from sage_jax.train.classifier import predict_jit as _predict

    if hasattr(oracles, "class_probabilities"):
        images = np.asarray(images)
        return (oracles.class_probabilities(images) if len(images)
                else np.zeros((0, len(oracles.class_names)), np.float32))
    images = at_size(images, size)
    out = [np.asarray(jax.nn.softmax(_predict(oracles.classifier, oracles.clf_params, jnp.asarray(images[i:i + batch]))))
           for i in range(0, len(images), batch)]
    return np.concatenate(out) if out else np.zeros((0, len(oracles.class_names)), np.float32)


def oracle_fid(oracles, images_a, images_b, batch: int = 500, size: int | None = None, key=None,
               n_boot: int = FID_BOOT):
    """Frechet distance between the oracle classifier's pooled features of two image
    sets (the glyph oracles': their ``fid_features``); with ``key``, ``(value, interval)``: the 95% bootstrap interval over both
    sets' images (:func:`sage_jax.metrics.uncertainty.fid_interval`)."""
    from sage_jax.metrics.fid import feature_statistics, frechet_distance
    from sage_jax.metrics.uncertainty import fid_interval

    features = getattr(oracles, "fid_features", None) or oracles.features   # the glyph oracles pool first

    def feats(x):
        x = at_size(x, size)
        return np.concatenate([features(x[i:i + batch]) for i in range(0, len(x), batch)]).astype(np.float64)

    fa, fb = feats(images_a), feats(images_b)
    if key is not None:
        iv = fid_interval([fa], [fb], key, n_boot)
        return iv["value"], iv
    mu1, s1 = feature_statistics(fa)
    mu2, s2 = feature_statistics(fb)
    return float(frechet_distance(mu1, s1, mu2, s2))


TILE = 8   # the grid of tile_contrast in the generator measures


def sample_quality(oracles, samples, seen_names: Sequence[str], real_seen=None, size: int | None = None,
                   key=None, intervals: bool = True, labels=None) -> dict:
    """Oracle scores of a set of generated samples (see the module docstring); ``size``:
    the oracles' input size, when the samples differ. With ``intervals`` the confident
    share carries its exact binomial interval (``confident_share_ci``) and the oracle FID
    its bootstrap interval (``oracle_fid_ci``, from ``key``, by default ``PRNGKey(0)``);
    without, every value is a number (a learning curve's point). ``labels`` (N,): the
    seen class each sample was asked for (a class-conditional generator's labels, indices
    into ``seen_names``) adds ``label_agreement``, the share of samples the oracle reads as
    the asked class (chance: 1 / the oracle's classes), with ``label_agreement_ci``."""
    from sage_jax.metrics.uncertainty import binomial_interval
    p = class_probabilities(oracles, samples, size=size)
    top = p.max(axis=1)
    cls = p.argmax(axis=1)
    confident = top >= CONFIDENT
    seen_oracle = np.asarray([oracles.class_names.index(n) for n in seen_names], int)   # seen_names' order
    seen_idx = set(seen_oracle.tolist())
    hit = sorted(set(cls[confident].tolist()) & seen_idx)
    out = {"samples": int(len(samples)), "confident_share": float(confident.mean()),
           "mean_max_prob": float(top.mean()), "seen_classes_hit": len(hit), "seen_classes": len(seen_idx),
           "confident_unseen_share": float((confident & ~np.isin(cls, seen_oracle)).mean())}
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(cls),) or (len(labels) and (labels.min() < 0 or labels.max() >= len(seen_names))):
            raise ValueError(f"labels must be one index into the {len(seen_names)} seen classes per sample "
                             f"({len(cls)}); got shape {labels.shape}")
        agree = cls == seen_oracle[labels]
        out["label_agreement"] = float(agree.mean())
        if intervals:
            out["label_agreement_ci"] = binomial_interval(int(agree.sum()), len(agree))
    if min(np.shape(samples)[1:3]) > TILE:   # undefined on images no larger than one tile
        out["tile_contrast"] = tile_contrast(samples, TILE)
        if real_seen is not None:
            out["real_tile_contrast"] = tile_contrast(real_seen, TILE)
    if intervals:
        out["confident_share_ci"] = binomial_interval(int(confident.sum()), len(confident))
    if real_seen is not None and intervals:
        key = jax.random.PRNGKey(0) if key is None else key
        out["oracle_fid"], out["oracle_fid_ci"] = oracle_fid(oracles, samples, real_seen, size=size, key=key)
    elif real_seen is not None:
        out["oracle_fid"] = oracle_fid(oracles, samples, real_seen, size=size)
    return out


def tile_contrast(images, tile: int = TILE, edge: float = 0.1) -> float:
    """How much of the images' small steps sit on the lines of a ``tile``-pixel grid: the
    mean absolute difference between neighbouring pixels (channel mean) across the grid's
    lines over the same mean everywhere else, counting only differences below ``edge``
    (images in [-1, 1]: the smooth parts, so that where the content's edges fall does not
    count). A generator that doubles its feature maps or skip images by nearest neighbour
    draws 2x2 steps that later layers stack into 4-8 px tiles in smooth regions: the
    synthetic tiny model with nearest upsampling 1.61 at 8 px against its data's 1.06
    (with smooth-skip 1.20); glyphs 1.13 (real), 1.23-1.29 (the glyph generators). NaN
    where it is undefined: images no larger than ``tile``, or no smooth steps on or off
    the grid."""
    x = np.asarray(images, np.float64)
    if x.ndim == 3:
        x = x[..., None]
    on = [0.0, 0]
    off = [0.0, 0]
    for ax in (1, 2):
        d = np.abs(np.diff(x, axis=ax)).mean(axis=-1)
        shape = [1, 1, 1]
        shape[ax] = -1
        grid = ((np.arange(d.shape[ax]) + 1) % tile == 0).reshape(shape)
        smooth = d < edge
        on[0] += float(d[smooth & grid].sum())
        on[1] += int((smooth & grid).sum())
        off[0] += float(d[smooth & ~grid].sum())
        off[1] += int((smooth & ~grid).sum())
    if not on[1] or not off[1] or off[0] == 0.0:
        return float("nan")
    return (on[0] / on[1]) / (off[0] / off[1])


def generator_samples(G, n: int, key, batch: int = 250, return_labels: bool = False):
    """``n`` random samples of generator model ``G`` (z ~ N(0, I), random noise; a
    class-conditional G gets uniformly drawn classes), all from ``key``. With
    ``return_labels``: ``(samples, labels)``, labels None for an unconditional G."""
    kz, kn, kc = jax.random.split(key, 3)
    z = jax.random.normal(kz, (n, G.style_dim))
    labels = np.asarray(jax.random.randint(kc, (n,), 0, G.c_dim)) if G.c_dim else None
    samples = np.concatenate([np.asarray(G(z[i:i + batch], noise="random", key=jax.random.fold_in(kn, i),
                                           labels=None if labels is None else labels[i:i + batch]))
                              for i in range(0, n, batch)])
    return (samples, labels) if return_labels else samples


def generator_quality(G, oracles, seen_names: Sequence[str], key, n: int = 1000, real_seen=None,
                      size: int | None = None, intervals: bool = True) -> dict:
    """:func:`sample_quality` of ``n`` random samples of ``G``; a class-conditional G whose
    classes are the seen classes (``c_dim == len(seen_names)``, in ``seen_names``' order)
    adds the share drawn as the class asked for (``label_agreement``)."""
    samples, labels = generator_samples(G, n, key, return_labels=True)
    if labels is not None and G.c_dim != len(seen_names):
        labels = None   # its classes are not the seen classes: nothing to agree with
    return sample_quality(oracles, samples, seen_names, real_seen, size=size,
                          key=jax.random.fold_in(key, 1), intervals=intervals, labels=labels)


def heldout_images(spec, classes, per_class: int, seed: int = 12345) -> tuple[np.ndarray, np.ndarray]:
    """Fresh real images (``sample_class``'s stream, disjoint from the training set's):
    ``per_class`` of each of ``classes`` (SyntheticClass list); returns (images, class
    indices in ``make_classes(spec)``)."""
    from sage_jax.data.synthetic import sample_class

    imgs, idx = [], []
    for c in classes:
        d = sample_class(spec, c.index, per_class, jax.random.fold_in(jax.random.PRNGKey(seed), c.index))
        imgs.append(d["images"])
        idx.append(np.full(per_class, c.index))
    return np.concatenate(imgs), np.concatenate(idx)


def _padded_map(fn, x, batch):
    """``fn`` over ``x`` in chunks of exactly ``batch`` (the last one padded), so a
    jitted ``fn`` compiles once."""
    out = []
    for i in range(0, len(x), batch):
        part = x[i:i + batch]
        pad = batch - len(part)
        if pad:
            part = np.concatenate([part, np.repeat(part[-1:], pad, axis=0)])
        out.append(np.asarray(fn(jnp.asarray(part)))[:batch - pad])
    return np.concatenate(out)


def inversion_quality(reconstruct: Callable, oracles, images, class_names: Sequence[str], batch: int = 32,
                      size: int | None = None) -> dict:
    """Oracle retention and MSE of ``reconstruct(images)`` (images -> images, both in
    [-1, 1]); ``class_names[i]`` is image i's class."""
    recon = _padded_map(reconstruct, np.asarray(images), batch)
    if recon.shape != images.shape:
        recon = np.asarray(jax.image.resize(recon, images.shape, "bilinear"))
    return {"images": int(len(images)), **reconstruction_scores(oracles, recon, images, class_names, size=size),
            "input_retention": reconstruction_scores(oracles, images, images, class_names, size=size)["retention"]}


def reconstruction_scores(oracles, recon, images, class_names: Sequence[str], size: int | None = None) -> dict:
    """Oracle retention (the share of ``recon`` classified as ``class_names``) and the
    MSE of ``recon`` to ``images`` (same shape, [-1, 1])."""
    target = np.array([oracles.class_names.index(n) for n in class_names])
    pred = class_probabilities(oracles, recon, size=size).argmax(axis=1)
    from sage_jax.metrics.uncertainty import binomial_interval

    ok = pred == target
    return {"retention": float(np.mean(ok)), "retention_ci": binomial_interval(int(ok.sum()), len(ok)),
            "mse": float(np.mean(np.square(recon - images)))}


def dictionary_quality(A, layers: Sequence[int], codes, labels, embeddings) -> dict:
    """How much of the within-class variation of ``codes`` (N, L, D) (raw codes of seen
    images, ``labels`` (N,) their classes) the dictionary ``A`` (E, D, l) spans on its
    edited ``layers``: ``captured_share`` (mean over layers of ``|P_A (w - e_c)|^2 /
    |w - e_c|^2`` summed over images), ``pca_bound`` (the same for the top ``l``
    principal directions of the deviations, the most any ``l`` directions hold) and
    ``random_share`` (``l / D``, what a random subspace holds on average)."""
    A = np.asarray(A, np.float64)
    dev = np.asarray(codes, np.float64) - np.asarray(embeddings, np.float64)[np.asarray(labels)]
    l, D = A.shape[-1], A.shape[1]
    captured, bound = [], []
    for e, layer in enumerate(layers):
        d = dev[:, int(layer)]
        total = float(np.sum(d * d))
        if total == 0.0:   # one image per class (or identical ones): no within-class variation to span
            captured.append(float("nan"))
            bound.append(float("nan"))
            continue
        q, _ = np.linalg.qr(A[e])
        captured.append(float(np.sum((d @ q) ** 2)) / total)
        s = np.linalg.svd(d, compute_uv=False) ** 2
        bound.append(float(np.sum(s[:l])) / total)
    if all(np.isnan(captured)):
        return {"captured_share": float("nan"), "pca_bound": float("nan"), "random_share": l / D,
                "images": int(dev.shape[0]), "note": "no within-class variation (one image per class?)"}
    return {"captured_share": float(np.nanmean(captured)), "pca_bound": float(np.nanmean(bound)),
            "random_share": l / D, "images": int(dev.shape[0])}
