"""Per-class quality of a class-conditional generator, by class group (the Softlabel-GAN
issue: does a generator trained on long-tailed classes neglect its small classes?).

Protocol (``sage-jax evaluate --conditional LABEL=DIR --metrics classwise``):

* **Groups.** The generator's classes are ranked by their number of training images
  (recorded with the model by ``sage-jax train-gan``; ties broken by class index):
  the top third is **head**, the bottom third **tail**, the rest **middle**
  (``fraction``, default 1/3, of the classes each, at least one class).
* **Images.** ``n_per_class`` images per class, z ~ N(0, I) and random noise from the
  key (class k's from ``fold_in(key, k)``, so every model and run draws the same z),
  the one-hot label of the class, no truncation.
* **FID per group.** The Frechet distance between the features of the group's
  generated images (pooled over its classes) and those of the real reference images of
  the same classes (a balanced folder: for the synthetic data, ``sage-jax make-synthetic
  --split seen`` writes 100 images per class, mostly never seen by the tail classes'
  training), on the ground-truth oracle classifier's pooled features (not Inception:
  numbers are comparable between models here, not with published FIDs). Also the mean
  over the group's classes of the per-class FID (intra-FID); per-class covariances from
  100 images in 128 dimensions are rank-deficient, which the Frechet distance of
  :mod:`sage_jax.metrics.fid` handles exactly, but they are noisy: read them as a
  ranking, not as absolute numbers.
* **Category retention** per group: the share of a class's generated images that the
  oracle assigns to that class, averaged over the group's classes; beside it the same
  measure on the real reference images (the oracle's own accuracy).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Callable, Sequence

import numpy as np

GROUPS = ("head", "middle", "tail")


def class_groups(counts: Sequence[int], fraction: float = 1.0 / 3.0) -> dict[str, np.ndarray]:
    """Class indices (sorted) of the head / middle / tail groups: the ``fraction`` of
    classes with the most training images, the ``fraction`` with the fewest, the rest."""
    counts = np.asarray(counts)
    c = len(counts)
    if c < 2 or not 0.0 < fraction <= 0.5:
        raise ValueError(f"need >= 2 classes and 0 < fraction <= 0.5, got {c} classes and {fraction}")
    k = max(1, int(round(c * fraction)))
    order = np.lexsort((np.arange(c), -counts))  # most images first, then by index
    return {"head": np.sort(order[:k]), "middle": np.sort(order[k:c - k]), "tail": np.sort(order[c - k:])}


def generate_for_class(G, class_index: int, n: int, key, batch: int = 100) -> np.ndarray:
    """``n`` images (n, S, S, 3) of class ``class_index`` (one-hot label) from ``G``;
    z and noise from ``fold_in(key, class_index)``."""
    import jax

    batch = min(batch, n)
    k = jax.random.fold_in(key, class_index)
    z = np.asarray(jax.random.normal(jax.random.fold_in(k, 0), (n, G.style_dim)))
    out = []
    for start in range(0, n, batch):
        m = min(batch, n - start)
        zb = np.concatenate([z[start:start + m], np.zeros((batch - m, G.style_dim), np.float32)])
        imgs = G(zb, labels=np.full(batch, class_index), noise="random", key=jax.random.fold_in(k, 1 + start))
        out.append(np.asarray(imgs)[:m])
    return np.concatenate(out)


def _fid(a, b) -> float:
    from sage_jax.metrics.fid import fid

    return float(fid(np.asarray(a, np.float64), np.asarray(b, np.float64))["fid"])


def classwise_quality(generate: Callable[[int], np.ndarray], real: Sequence[np.ndarray], counts: Sequence[int],
                      feature_fn: Callable, predict_fn: Callable, oracle_index: Sequence[int], *,
                      fraction: float = 1.0 / 3.0, class_names: Sequence[str] | None = None) -> dict:
    """Group FID, mean per-class FID and category retention of a conditional generator.
    With several processes each generates and measures its share of the classes
    (class ``k``'s images depend on ``k`` only) and every process returns the whole.

    ``generate(k)`` -> generated images of class k; ``real[k]`` real reference images of
    class k; ``counts[k]`` its training images; ``feature_fn`` / ``predict_fn`` the
    oracle's features (N, F) and predicted class (N,); ``oracle_index[k]`` the oracle's
    index of class k. Returns ``{"groups": {head, middle, tail: {...}}, "all": {...},
    "per_class": [...]}``.
    """
    from sage_jax import parallel

    c = len(counts)
    if len(real) != c or len(oracle_index) != c:
        raise ValueError("one real image set, count and oracle index per class")
    names = list(class_names) if class_names is not None else [str(k) for k in range(c)]
    mine = []   # several processes: each generates and measures its share of the classes
    for k in parallel.process_share(c):
        g = np.asarray(generate(k), np.float32)
        r = np.asarray(real[k], np.float32)
        gf, rf = np.asarray(feature_fn(g), np.float64), np.asarray(feature_fn(r), np.float64)
        mine.append((gf, rf, {"class": names[k], "train_images": int(counts[k]), "fid": _fid(rf, gf),
                              "retention": float(np.mean(np.asarray(predict_fn(g)) == oracle_index[k])),
                              "real_retention": float(np.mean(np.asarray(predict_fn(r)) == oracle_index[k]))}))
    everything = [row for share in parallel.allgather_objects(mine) for row in share]   # in class order
    gen_feats = [gf for gf, _, _ in everything]
    real_feats = [rf for _, rf, _ in everything]
    per_class = [m for _, _, m in everything]
    groups = class_groups(counts, fraction)

    def summary(idx):
        idx = list(idx)
        return {"classes": [names[k] for k in idx], "n_classes": len(idx),
                "train_images_per_class": float(np.mean([counts[k] for k in idx])),
                "fid": _fid(np.concatenate([real_feats[k] for k in idx]), np.concatenate([gen_feats[k] for k in idx])),
                "mean_class_fid": float(np.mean([per_class[k]["fid"] for k in idx])),
                "retention": float(np.mean([per_class[k]["retention"] for k in idx])),
                "real_retention": float(np.mean([per_class[k]["real_retention"] for k in idx]))}

    return {"groups": {name: summary(groups[name]) for name in GROUPS if len(groups[name])},
            "all": summary(range(c)), "per_class": per_class, "fraction": fraction}


# ----------------------------------------------------------------------------- the command
@dataclasses.dataclass
class ClasswiseOptions:
    n_per_class: int = 100
    fraction: float = 1.0 / 3.0
    oracles: str | None = None
    seed: int = 0
    progress: bool = True


def parse_conditional(specs) -> list[tuple[str, str]]:
    """``["hard=runs/hard/g_ema", ...]`` -> [(label, dir)], labels unique."""
    out, seen = [], set()
    for s in specs:
        label, _, d = s.rpartition("=") if "=" in s else ("", "", s)
        d = d.rstrip("/")
        label = label or os.path.basename(os.path.dirname(d)) or d
        if label in seen:
            raise ValueError(f"two --conditional generators are labelled {label!r}: name them LABEL=DIR")
        seen.add(label)
        out.append((label, d))
    return out


def load_conditional(path: str):
    """(GeneratorModel, class names, training counts, training metadata) of a model
    directory written by conditional ``train-gan``."""
    from sage_jax import checkpoints

    meta_file = os.path.join(path, "model.json")
    if not os.path.isfile(meta_file):
        raise ValueError(f"{path}: not a sage-jax model directory (no model.json)")
    G = checkpoints.load_generator(path)
    if not G.c_dim:
        raise ValueError(f"{path}: an unconditional generator; classwise needs a class-conditional one "
                         f"(train-gan --config.gan.conditional=true)")
    with open(meta_file) as f:
        extra = json.load(f).get("extra") or {}
    names, counts = extra.get("class_names"), extra.get("class_counts")
    if not names or not counts or len(names) != G.c_dim or len(counts) != G.c_dim:
        raise ValueError(f"{path}: model.json records no class names and training counts for its {G.c_dim} "
                         f"classes (written by sage-jax train-gan for conditional runs)")
    return G, list(names), list(counts), extra


def run_classwise(real_root: str, conditional_specs, out: str, options: ClasswiseOptions | None = None) -> dict:
    """Evaluate each conditional generator against the real images of its classes in
    ``real_root`` (the synthetic dataset with its ``factors.npz``, so the oracles know
    the classes); writes ``out/classwise.json`` and ``out/classwise.md``."""
    import jax

    from sage_jax.data.folders import read_class_folder
    from sage_jax.metrics.oracles import synthetic_ground_truth

    o = options or ClasswiseOptions()
    t0 = time.perf_counter()
    specs = parse_conditional(conditional_specs)
    if not specs:
        raise ValueError("give at least one --conditional LABEL=DIR")
    if o.n_per_class < 2:
        raise ValueError("--per-class must be at least 2 (a covariance needs 2 images)")
    gt = synthetic_ground_truth(real_root, o.oracles)
    if gt is None:
        raise ValueError("classwise needs the synthetic dataset's ground truth: --real written by 'sage-jax "
                         "make-synthetic --split seen' (with factors.npz) and oracles that know its classes")
    oracles = gt[0]
    models = [(label, *load_conditional(d)) for label, d in specs]
    size = models[0][1].size
    needed = sorted({n for _, _, names, _, _ in models for n in names})
    missing = [n for n in needed if n not in oracles.class_names]
    if missing:
        raise ValueError(f"the oracles do not know classes {missing[:5]}")
    real = read_class_folder(real_root, size, classes=set(needed), progress=o.progress, what="real images")
    absent = [n for n in needed if n not in real.images]
    if absent:
        raise ValueError(f"{real_root} has no images of classes {absent[:5]}")
    key = jax.random.PRNGKey(o.seed)
    results = {"real": os.path.abspath(real_root), "n_per_class": o.n_per_class, "fraction": o.fraction,
               "feature_network": "oracle", "oracles": oracles.scores, "seed": o.seed, "models": {}}
    for label, G, names, counts, extra in models:
        res = classwise_quality(
            lambda k, G=G: generate_for_class(G, k, o.n_per_class, key),
            [real.as_float(n) for n in names], counts, oracles.features, oracles.predict_class,
            [oracles.class_names.index(n) for n in names], fraction=o.fraction, class_names=names)
        res.update(dir=os.path.abspath(dict(specs)[label]), labels=extra.get("labels"), step=extra.get("step"),
                   label_summary=extra.get("label_summary"), balance=extra.get("balance"),
                   fake_labels=extra.get("fake_labels"))
        results["models"][label] = res
    results["seconds"] = time.perf_counter() - t0
    from sage_jax import parallel

    if parallel.is_main():   # several processes: each measured its share of the classes; process 0 writes
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "classwise.json"), "w") as f:
            json.dump(results, f, indent=1)
        with open(os.path.join(out, "classwise.md"), "w") as f:
            f.write(classwise_table(results) + "\n")
    parallel.barrier("classwise-written")
    return results


def classwise_table(results: dict) -> str:
    """Markdown: one row per model and class group."""
    lines = ["Per-class-group quality of conditional generators (FID on the oracle's features, "
             f"{results['n_per_class']} generated images per class; retention = oracle accuracy)", "",
             "| Model | real labels | steps | group | classes | train images / class | FID (↓) | "
             "mean per-class FID (↓) | retention (↑) | real retention |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, m in results["models"].items():
        for g in (*GROUPS, "all"):
            s = m["all"] if g == "all" else m["groups"].get(g)
            if s is None:
                continue
            lines.append(f"| {label} | {m.get('labels') or '-'} | {m.get('step') or '-'} | {g} | {s['n_classes']} | "
                         f"{s['train_images_per_class']:.1f} | {s['fid']:.2f} | {s['mean_class_fid']:.2f} | "
                         f"{100 * s['retention']:.1f}% | {100 * s['real_retention']:.1f}% |")
    return "\n".join(lines)
