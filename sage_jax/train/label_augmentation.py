"""Labels of the real training images for a class-conditional GAN: hard (one-hot) or
Softlabel-GAN's label augmentation (Katsumata et al., WACV 2024, seed ``003``).

Softlabel-GAN conditions the projection discriminator on a pretrained classifier's
class probabilities for each real image instead of its hard label, so similar classes
share features and small classes borrow from large ones. Generated images keep one-hot
labels. The official code (BigGAN + DiffAugment ``color,translation,cutout``) feeds
the classifier's softmax as the label of every real image (temperature 1, no mixing
with the hard label); temperature and mixing are options here:

    soft = mix * onehot(y) + (1 - mix) * softmax(logits / T)

Soft labels are computed ONCE before training, from a classifier behind
:func:`classifier_logits` (a ``logits_fn(images) -> (N, C)``; for now a SmallCNN
trained here with K-fold cross-fitting, so no image is labelled by a classifier that
saw it: a classifier scoring its own training images is near one-hot and would make
the soft labels hard), or from a user file (``.npy`` (N, C), aligned with the dataset's
order, validated by :func:`check_soft_labels`).

Class-balanced reweighting (:func:`class_balanced_weights`) weights each real image's
term of the discriminator's real loss by ``N / (C * n_class)`` (mean weight 1 over the
dataset): a reweighting, not a resampling; batches are drawn uniformly as always.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

LogitsFn = Callable[[np.ndarray], np.ndarray]


def soft_labels(logits, hard_labels, temperature: float = 1.0, mix: float = 0.0) -> np.ndarray:
    """``mix * onehot(hard) + (1 - mix) * softmax(logits / T)``, (N, C) float32 rows
    summing to 1. ``T = 0`` is the classifier's argmax as a one-hot row."""
    logits = np.asarray(logits, np.float64)
    hard = np.asarray(hard_labels)
    if logits.ndim != 2 or hard.shape != (logits.shape[0],):
        raise ValueError(f"logits (N, C) and hard labels (N,) expected, got {logits.shape} and {hard.shape}")
    if temperature < 0 or not 0.0 <= mix <= 1.0:
        raise ValueError(f"need temperature >= 0 and mix in [0, 1], got {temperature}, {mix}")
    c = logits.shape[1]
    if temperature == 0:
        probs = np.eye(c)[logits.argmax(axis=1)]
    else:
        probs = np.asarray(jax.nn.softmax(jnp.asarray(logits / temperature), axis=-1), np.float64)
    out = mix * np.eye(c)[hard] + (1.0 - mix) * probs
    return (out / out.sum(axis=1, keepdims=True)).astype(np.float32)


def check_soft_labels(labels, n: int, num_classes: int, what: str = "soft labels") -> np.ndarray:
    """Validate user-given soft labels: shape (n, num_classes), finite, non-negative,
    rows summing to 1 (within 1e-3). Returns them as float32."""
    arr = np.asarray(labels)
    if arr.shape != (n, num_classes):
        raise ValueError(f"{what}: expected shape ({n}, {num_classes}) (one row per training image, in the "
                         f"dataset's order), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{what}: expected floating-point probabilities, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what}: non-finite values")
    if arr.min() < 0:
        raise ValueError(f"{what}: negative probabilities (row {int(np.argmin(arr.min(axis=1)))})")
    sums = arr.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-3)
    if len(bad):
        raise ValueError(f"{what}: rows must sum to 1; row {bad[0]} sums to {sums[bad[0]]:.4f} "
                         f"({len(bad)} rows off)")
    return arr.astype(np.float32)


def load_soft_labels(path: str, n: int, num_classes: int) -> np.ndarray:
    """A user's soft labels from ``path`` (.npy, (n, num_classes)), validated."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read soft labels {path}: {e}") from None
    return check_soft_labels(arr, n, num_classes, what=f"soft labels {path}")


def class_balanced_weights(hard_labels, num_classes: int) -> np.ndarray:
    """Per-class weights ``N / (C * n_c)``, C the number of classes that have images
    (the others get 0): weighting each real image by its class's weight makes every
    class count equally, with mean weight 1 over the dataset."""
    counts = np.bincount(np.asarray(hard_labels), minlength=num_classes).astype(np.float64)
    n, present = counts.sum(), max(int(np.count_nonzero(counts)), 1)
    w = np.where(counts > 0, n / (present * np.maximum(counts, 1)), 0.0)
    return w.astype(np.float32)


def class_prior(hard_labels, num_classes: int, kind: str) -> np.ndarray:
    """Class distribution the generator's (one-hot) fake labels are drawn from:
    ``"data"`` (training frequencies) or ``"uniform"``."""
    if kind == "uniform":
        return np.full(num_classes, 1.0 / num_classes, np.float32)
    if kind == "data":
        counts = np.bincount(np.asarray(hard_labels), minlength=num_classes).astype(np.float64)
        return (counts / counts.sum()).astype(np.float32)
    raise ValueError(f"fake label prior must be 'data' or 'uniform', got {kind!r}")


# ------------------------------------------------------------------ the classifier
def train_smallcnn_logits(images, labels, num_classes: int, *, key, steps: int = 200,
                          batch: int = 64, widths=(16, 32, 64)) -> LogitsFn:
    """A SmallCNN trained on ``images`` (the oracles' recipe at half their widths: the
    labeller is deliberately smaller than the evaluation's oracle), as a ``logits_fn``.

    ``batch`` is the global batch over every device of every process
    (:func:`sage_jax.train.classifier.fit_small_classifier`), capped at the number of
    images; a batch that does not split over the devices is rounded up to the next size
    that does (the sampler draws with replacement when it exceeds the images). So the
    labeller's batches depend on the device count only for a set smaller than
    ``batch`` that the device count does not divide. Every process gets the same
    parameters and scores the images itself."""
    from sage_jax import parallel
    from sage_jax.train.classifier import fit_small_classifier as _train
    from sage_jax.train.classifier import predict_jit as _predict
    from sage_jax.nn.classifier import SmallCNN

    module = SmallCNN(num_classes, widths=tuple(widths))
    mesh = parallel.make_mesh()
    d = mesh.devices.size
    b = -(-min(batch, len(images)) // d) * d
    params = _train(module, np.asarray(images, np.float32), np.asarray(labels, np.int32),
                    lambda logits, y: optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(),
                    steps, b, key, mesh=mesh, name="the labeller's batch")

    def logits_fn(x, chunk=256):
        return np.concatenate([np.asarray(_predict(module, params, jnp.asarray(x[i:i + chunk])))
                               for i in range(0, len(x), chunk)])

    return logits_fn


def classifier_logits(images, labels, num_classes: int, *, key, steps: int = 200, folds: int = 2,
                      batch: int = 64, train_fn=train_smallcnn_logits) -> np.ndarray:
    """Logits (N, C) of a classifier for every training image, cross-fitted over
    ``folds`` folds (fold k is scored by a classifier trained on the others; ``folds=1``:
    one classifier trained on everything scores everything). ``train_fn(images, labels,
    C, key=, steps=, batch=) -> logits_fn`` is the switch for another classifier."""
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels)
    n = len(images)
    if folds <= 1:
        return np.asarray(train_fn(images, labels, num_classes, key=key, steps=steps, batch=batch)(images))
    fold = np.asarray(jax.random.permutation(jax.random.fold_in(key, 0), n)) % folds
    out = np.zeros((n, num_classes), np.float32)
    for k in range(folds):
        train, test = fold != k, fold == k
        fn = train_fn(images[train], labels[train], num_classes, key=jax.random.fold_in(key, k + 1),
                      steps=steps, batch=batch)
        out[test] = fn(images[test])
    return out


def soft_label_summary(vectors, hard_labels) -> dict:
    """How soft the labels are: mean probability of the true class, mean max
    probability, mean entropy (nats), share of rows whose argmax is the true class."""
    v = np.asarray(vectors, np.float64)
    hard = np.asarray(hard_labels)
    ent = -np.sum(np.where(v > 0, v * np.log(np.maximum(v, 1e-30)), 0.0), axis=1)
    return {"true_class_prob": float(v[np.arange(len(v)), hard].mean()), "max_prob": float(v.max(1).mean()),
            "entropy": float(ent.mean()), "argmax_is_true": float(np.mean(v.argmax(1) == hard))}


def real_label_vectors(cfg, dataset, key) -> tuple[np.ndarray, dict]:
    """The (N, C) label vector of every training image of ``dataset`` (in its order) for
    the options of a ``gan`` config section, and a summary for the logs."""
    hard = np.asarray(dataset_labels(dataset))
    c = dataset.num_classes
    kind = cfg.labels
    if kind == "hard":
        vectors = np.eye(c, dtype=np.float32)[hard]
    elif kind == "soft":
        if cfg.soft_labels_file:
            vectors = load_soft_labels(cfg.soft_labels_file, len(dataset), c)
        else:
            images = dataset_images(dataset)
            logits = classifier_logits(images, hard, c, key=key, steps=int(cfg.soft_classifier_steps),
                                       folds=int(cfg.soft_folds))
            vectors = soft_labels(logits, hard, float(cfg.soft_temperature), float(cfg.soft_mix))
    else:
        raise ValueError(f"gan.labels must be 'hard' or 'soft', got {kind!r}")
    return vectors, dict(soft_label_summary(vectors, hard), kind=kind)


def dataset_labels(dataset) -> np.ndarray:
    """Hard labels of every image of a ``load_batch`` dataset, in order."""
    if hasattr(dataset, "labels_array"):
        return np.asarray(dataset.labels_array)
    if hasattr(dataset, "labels"):
        return np.asarray(dataset.labels)
    return np.concatenate([dataset.load_batch(range(i, min(i + 256, len(dataset))))[1]
                           for i in range(0, len(dataset), 256)])


def dataset_images(dataset) -> np.ndarray:
    if hasattr(dataset, "images"):
        return np.asarray(dataset.images, np.float32)
    return np.concatenate([dataset.load_batch(range(i, min(i + 256, len(dataset))))[0]
                           for i in range(0, len(dataset), 256)]).astype(np.float32)


class LabelledDataset:
    """A ``load_batch`` dataset whose labels are rows of ``vectors`` (N, C) and, when
    ``weights`` (N,) are given, one more column: the per-image real-loss weight."""

    def __init__(self, dataset, vectors, weights=None):
        self.dataset = dataset
        table = np.asarray(vectors, np.float32)
        if weights is not None:
            table = np.concatenate([table, np.asarray(weights, np.float32)[:, None]], axis=1)
        self.table = table
        self.skipped = getattr(dataset, "skipped", {})

    def __len__(self):
        return len(self.dataset)

    @property
    def num_classes(self):
        return self.dataset.num_classes

    def load_batch(self, indices, pool=None):
        idx = np.asarray(list(indices))
        images, _ = self.dataset.load_batch(idx)
        return images, self.table[idx]
