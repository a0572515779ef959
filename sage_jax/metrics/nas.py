"""Naive Augmentation Score (NAS): how much generated images help a downstream
classifier of the unseen classes (SAGE, seed 000, section 4.4 and Table 2; the score
comes from [57]), with SGIA's balancing sampler and bridging transfer (seed 001,
sections 3.2-3.3) as further variants.

Protocol (SAGE section 4.4): a classifier pre-trained on the seen classes (SAGE: a
ViT) is fine-tuned on the unseen classes and its accuracy measured on held-out real
test images of those classes.

* ``standard``   -- fine-tuned on the shots only (|C_sample| = 10 real images per class).
* ``augmented``  -- fine-tuned on the shots plus 100 generated images per class,
  mixed plainly (uniform sampling over the union), as SAGE does.
* ``sgia_balanced`` -- fine-tuned on SGIA's balancing sampler, eq. (2): every batch
  slot holds a real shot with probability 1 - alpha, else a generated image of the
  same class (alpha = 0.5, SGIA section 4.2).
* ``sgia_bridging`` -- SGIA's bridging transfer, eq. (3): first the balanced mix,
  then the real shots only.

Every variant starts from the same pre-trained classifier and, for a given seed, uses
the same key (same new-head initialisation, same augmentation stream), so per-seed
differences between variants come from the data only. The score of a variant is the
test accuracy (all test images of all classes, a C-way classification), reported as
mean and standard deviation over ``seeds`` (sample std, ``ddof=1``; 0 for one seed).

SGIA's own fine-tuning hyper-parameters (section 4.1: SGD, lr 0.01 on all layers,
weight decay 1e-5, batch 16, cosine annealing with warm restarts T_0 = 1, T_mult = 2,
128 epochs, horizontal flip + RandomResizedCrop(scale=(0.5, 1)) at 224 px; K = 32
frames per generated sequence) target ImageNet-pre-trained CNNs at 224 px; the
defaults here are set for small networks on small images (AdamW, a few hundred
steps), and every value is in :func:`default_nas_config`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from sage_jax import parallel
from sage_jax.train import classifier as tc

VARIANTS = ("standard", "augmented", "sgia_balanced", "sgia_bridging")


def default_nas_config() -> ml_collections.ConfigDict:
    """The NAS protocol's settings; the paper's values where the paper gives one."""
    c = ml_collections.ConfigDict()
    c.n_shots = 10          # SAGE 4.4: |C_sample| = 10 real images per unseen class
    c.n_generated = 100     # SAGE 4.4: 100 generated images per unseen class
    c.n_test = -1           # test images per class used (-1: all given)
    c.variants = ("standard", "augmented")  # add "sgia_balanced", "sgia_bridging" (SGIA)

    # The pre-trained classifier (built by the caller: train.classifier.make_classifier
    # and pretrain on the seen classes). SAGE 4.4 pre-trains a ViT; this one is sized
    # for 32 px images on CPU. kind="resnet" gives the GroupNorm ResNet instead.
    m = c.model = ml_collections.ConfigDict()
    m.kind = "vit"
    m.head_type = "linear"
    m.image_size = 32
    m.patch = 4             # 8 x 8 tokens at 32 px
    m.width = 64
    m.depth = 4
    m.heads = 4
    m.mlp_ratio = 2.0
    p = c.pretrain = ml_collections.ConfigDict()
    p.steps = 3000
    p.batch_size = 64
    p.lr = 1e-3
    p.weight_decay = 1e-4
    p.warmup_steps = 200
    p.optimizer = "adamw"
    p.flip = False          # see finetune.flip
    p.crop_pad = -1

    f = c.finetune = ml_collections.ConfigDict()
    f.steps = 300           # per fine-tuning (bridging: per stage, see sgia.*_steps)
    f.batch_size = 32       # SGIA 4.1: 16; must be divisible by the device count
    f.lr = 1e-3             # AdamW; SGIA 4.1 uses SGD at 0.01 (optimizer="sgd")
    f.weight_decay = 1e-4   # SGIA 4.1: 1e-5 with SGD
    f.warmup_steps = 20
    f.optimizer = "adamw"   # adamw | sgd (momentum 0.9)
    f.train_backbone = True  # SAGE fine-tunes the whole ViT; False = linear probe
    f.flip = False          # SGIA 4.1 flips; the synthetic data's oriented classes do not allow it
    f.crop_pad = -1         # random shift of up to this many pixels (-1: image size // 8)

    s = c.sgia = ml_collections.ConfigDict()
    s.alpha = 0.5           # SGIA 4.2: "alpha was set to 0.5"
    # Bridging's two stages share the budget of one fine-tuning by default, so that
    # every variant takes finetune.steps steps (with 2x the steps, bridging also wins
    # with pure-noise "generated" images on the tiny test: the gain would be the budget).
    s.stage1_steps = -1     # bridging stage 1 (balanced mix); -1: finetune.steps - finetune.steps // 2
    s.stage2_steps = -1     # bridging stage 2 (real only); -1: finetune.steps // 2
    return c


def _as_class_dict(data, name) -> dict:
    """dict class -> (n, H, W, 3) array, from a mapping or an (images, labels) pair."""
    if isinstance(data, Mapping):
        return {k: np.asarray(v, np.float32) for k, v in data.items()}
    if isinstance(data, (tuple, list)) and len(data) == 2:
        images, labels = np.asarray(data[0], np.float32), np.asarray(data[1])
        return {int(c): images[labels == c] for c in np.unique(labels)}
    raise TypeError(f"{name}: expected a dict class -> images or an (images, labels) pair")


def _take(arrays: dict, classes, n: int, name: str):
    xs, ys = [], []
    for i, c in enumerate(classes):
        a = arrays[c]
        if n >= 0:
            if len(a) < n:
                raise ValueError(f"{name}: class {c!r} has {len(a)} images, the protocol needs {n}")
            a = a[:n]
        xs.append(a)
        ys.append(np.full(len(a), i, np.int32))
    return np.concatenate(xs), np.concatenate(ys)


def naive_augmentation_score(pretrained: tc.TrainedClassifier, shots, generated, test, *,
                             config: ml_collections.ConfigDict | None = None,
                             seeds: Sequence[int] = (0, 1, 2), mesh=None, progress: bool = False) -> dict:
    """NAS of one set of generated images (module docstring for the protocol).

    ``shots``, ``generated``, ``test``: per-class images, each either a dict
    ``class -> (n, H, W, 3)`` float array in [-1, 1] or an ``(images, labels)`` pair
    (then the classes are the distinct labels). The three must have the same classes;
    the class order (label ``i`` of the new head) is ``shots``'s key order (sorted
    labels for a pair). The first ``config.n_shots`` shots and ``config.n_generated``
    generated images of each class are used (an error if fewer are given), and
    ``config.n_test`` test images (-1: all).

    ``config.finetune.batch_size`` is the global batch over ``mesh`` (default every
    device of every process), refused unless it splits over the devices. With several
    processes each fine-tuning feeds each process's rows of the same global batches
    (:mod:`sage_jax.train.classifier`) and every process gets the same classifier; the
    test predictions are repeated on every process (local, cheap) and the result is
    the same on all of them.

    Returns ``{variant: {"mean", "std", "per_seed", "correct"}}`` for each of
    ``config.variants`` (accuracies in [0, 1]; ``correct``: (seeds, test images) bool,
    whether each seed's classifier got each test image right, for intervals and paired
    differences), ``"test_labels"`` (the test images' class indices) and ``"protocol"``: ``classes``,
    ``seeds``, ``n_shots``, ``n_generated``, ``n_test`` (total), ``alpha`` and the
    fine-tuning settings.
    """
    cfg = config if config is not None else default_nas_config()
    variants = tuple(cfg.variants)
    unknown = set(variants) - set(VARIANTS)
    if unknown or not variants:
        raise ValueError(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")
    shots, generated, test = (_as_class_dict(d, n) for d, n in
                              ((shots, "shots"), (generated, "generated"), (test, "test")))
    classes = list(shots)
    for name, d in (("generated", generated), ("test", test)):
        if set(d) != set(classes):
            raise ValueError(f"{name} has classes {sorted(map(str, d))}, shots has {sorted(map(str, classes))}")
    xs, ys = _take(shots, classes, cfg.n_shots, "shots")
    xg, yg = _take(generated, classes, cfg.n_generated, "generated")
    xt, yt = _take(test, classes, cfg.n_test, "test")
    n = len(classes)

    f = cfg.finetune
    mesh = mesh if mesh is not None else parallel.make_mesh()
    parallel.check_batch_size(f.batch_size, mesh, "the NAS finetune.batch_size")
    kw = dict(batch_size=f.batch_size, lr=f.lr, weight_decay=f.weight_decay, warmup_steps=f.warmup_steps,
              optimizer=f.optimizer, train_backbone=f.train_backbone, flip=f.flip, crop_pad=f.crop_pad, mesh=mesh)
    s1 = cfg.sgia.stage1_steps if cfg.sgia.stage1_steps >= 0 else f.steps - f.steps // 2
    s2 = cfg.sgia.stage2_steps if cfg.sgia.stage2_steps >= 0 else f.steps // 2
    mixed = tc.ArraySampler(np.concatenate([xs, xg]), np.concatenate([ys, yg]),
                            np.concatenate([np.zeros(len(xs), bool), np.ones(len(xg), bool)]))

    scores = {v: [] for v in variants}
    correct = {v: [] for v in variants}
    bar = tqdm(total=len(seeds) * len(variants), desc="NAS fine-tunings", unit="run",
               disable=not progress or not parallel.is_main())
    for seed in seeds:
        key = jax.random.PRNGKey(int(seed))
        for v in variants:
            bar.update(1)
            if v == "standard":
                clf = tc.finetune(pretrained, (xs, ys), key=key, num_classes=n, steps=f.steps, **kw)
            elif v == "augmented":
                clf = tc.finetune(pretrained, mixed, key=key, num_classes=n, steps=f.steps, **kw)
            elif v == "sgia_balanced":
                clf = tc.finetune(pretrained, tc.BalancedSampler(xs, ys, xg, yg, cfg.sgia.alpha), key=key,
                                  num_classes=n, steps=f.steps, **kw)
            else:
                clf, _ = tc.bridging_finetune(pretrained, (xs, ys), (xg, yg), key=key, alpha=cfg.sgia.alpha,
                                              stage1_steps=s1, stage2_steps=s2, num_classes=n, **kw)
            ok = clf.predict(xt) == yt
            correct[v].append(ok)
            scores[v].append(float(np.mean(ok)))
    bar.close()

    out = {}
    for v, acc in scores.items():
        a = np.asarray(acc, np.float64)
        out[v] = {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
                  "per_seed": [float(x) for x in a], "correct": np.stack(correct[v])}
    out["test_labels"] = yt
    out["protocol"] = {"classes": [str(c) for c in classes], "seeds": [int(s) for s in seeds],
                       "n_shots": int(len(xs) // n), "n_generated": int(len(xg) // n), "n_test": int(len(xt)),
                       "alpha": float(cfg.sgia.alpha), "finetune": {k: f[k] for k in f},
                       "bridging_steps": [int(s1), int(s2)]}
    return out
