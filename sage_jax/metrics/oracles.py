"""Ground-truth measures on the synthetic dataset (:mod:`sage_jax.data.synthetic`: its
generating factors are known, so what generated images keep of a class and how much they
vary can be measured instead of estimated).

Two small oracles trained on real images only: a classifier of all categories (seen
and unseen) and a regressor of the category-irrelevant factors. On generated images of
an unseen class:

* **category retention** = the classifier's accuracy (the share of images it assigns
  to the class they were generated for);
* **diversity** = the spread of the regressed irrelevant factors (mean over the visible
  factors of their standard deviation) relative to the same spread on real images of
  the class (1.0 = as diverse as the real data).

Both oracles are reported with their accuracy / error on held-out real images, so the
measures can be trusted as far as the oracles can.
"""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sage_jax import parallel
from sage_jax.assets import ASSET_DIR
from sage_jax.nn.classifier import SmallCNN
from sage_jax.train.classifier import fit_small_classifier as _train
from sage_jax.train.classifier import predict_jit as _predict


class Oracles:
    """The trained classifier and factor regressor, with their held-out scores."""

    def __init__(self, n_classes, n_factors, clf_params, reg_params, class_names, factor_names, scores):
        self.classifier = SmallCNN(n_classes)
        self.regressor = SmallCNN(n_factors)
        self.clf_params, self.reg_params = clf_params, reg_params
        self.class_names, self.factor_names = list(class_names), list(factor_names)
        self.scores = dict(scores)

    def predict_class(self, images) -> np.ndarray:
        return np.asarray(_predict(self.classifier, self.clf_params, jnp.asarray(images))).argmax(-1)

    def predict_factors(self, images) -> np.ndarray:
        return np.asarray(_predict(self.regressor, self.reg_params, jnp.asarray(images)))

    def features(self, images) -> np.ndarray:
        """The classifier's pooled embedding (N, widths[-1]): a feature space for FID
        on the synthetic data, where no Inception weights are needed."""
        return np.asarray(_features(self.classifier, self.clf_params, jnp.asarray(images)))

    def fingerprint(self) -> str:
        """A hash of the classifier's weights (keys cached feature statistics)."""
        import hashlib

        h = hashlib.sha256()
        for leaf in jax.tree_util.tree_leaves(self.clf_params):
            h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
        return h.hexdigest()[:16]

    def spread(self, images, mask=None) -> float:
        """Mean standard deviation of the regressed irrelevant factors (``mask``: the
        factor columns to use, e.g. without the rotation of an oriented class)."""
        from sage_jax.metrics.uncertainty import spread

        return spread(self.predict_factors(images), mask)

    def save(self, path: str) -> None:
        """``path/oracles.npz`` and ``path/oracles.json``, written by process 0 only (on
        any other this does nothing). No collective inside, so a caller may call it on
        process 0 alone; before another process reads the files, every process passes a
        ``parallel.barrier``."""
        flat = {}
        for name, params in (("clf", self.clf_params), ("reg", self.reg_params)):
            for k, v in jax.tree_util.tree_flatten_with_path(parallel.to_host(params))[0]:
                flat[name + "/" + "/".join(str(getattr(p, "key", p)) for p in k)] = np.asarray(v)
        if parallel.is_main():
            os.makedirs(path, exist_ok=True)
            np.savez(os.path.join(path, "oracles.npz"), **flat)
            with open(os.path.join(path, "oracles.json"), "w") as f:
                json.dump({"class_names": self.class_names, "factor_names": self.factor_names,
                           "scores": self.scores}, f, indent=1)

    @classmethod
    def load(cls, path: str) -> "Oracles":
        with open(os.path.join(path, "oracles.json")) as f:
            meta = json.load(f)
        data = np.load(os.path.join(path, "oracles.npz"))
        trees = {"clf": {}, "reg": {}}
        for key in data.files:
            name, *parts = key.split("/")
            node = trees[name]
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = jnp.asarray(data[key])
        return cls(len(meta["class_names"]), len(meta["factor_names"]), trees["clf"], trees["reg"],
                   meta["class_names"], meta["factor_names"], meta["scores"])


class GroundTruthSets:
    """Per-image oracle outputs of real and generated images, class by class, and the
    ground-truth measures from them with 95% intervals (:mod:`sage_jax.metrics.uncertainty`).

    ``add_real(name, images, oracle_index, mask)`` once per class, then
    ``add(method, name, images)`` for every method and class. Methods compared in
    ``summary(pairs=...)`` must have been made from the same shots with the same keys,
    image ``j`` of one matching image ``j`` of the other (the demo, the sweep and
    ``generate`` with one seed all do)."""

    def __init__(self, oracles: "Oracles"):
        self.oracles = oracles
        self.classes: list[str] = []
        self.real: dict[str, tuple] = {}
        self.masks: dict = {}
        self.index: dict[str, int] = {}
        self.gen: dict[str, dict[str, tuple]] = {}

    def _outputs(self, images, oracle_index):
        return self.oracles.predict_class(images) == oracle_index, self.oracles.predict_factors(images)

    def add_real(self, name: str, images, oracle_index: int, mask=None) -> None:
        self.classes.append(name)
        self.index[name] = int(oracle_index)
        self.masks[name] = mask
        self.real[name] = self._outputs(images, oracle_index)

    def add(self, method: str, name: str, images) -> None:
        self.gen.setdefault(method, {})[name] = self._outputs(images, self.index[name])

    def _sizes(self, method):
        return [len(self.gen[method][c][0]) for c in self.classes]

    def summary(self, key, n_boot: int | None = None, pairs=()) -> dict:
        """``{"real": {"retention", "per_class"}, "methods": {m: {"retention", "diversity", "per_class"}},
        "differences": {"a - b": {"retention", "diversity"}}}``; every figure an interval
        ``{"value", "lo", "hi"}``.

        ``per_class[c]``: the class's ``retention``, ``diversity`` and ``real_retention``,
        each with its interval given the class's shots (``*_ci``): exact binomial for the
        retentions (the images of one class are independent draws given its shots), a
        bootstrap over the class's generated and real images for the diversity
        (bias-corrected, as the overall figure's)."""
        from sage_jax.metrics import uncertainty as u

        n_boot = u.N_BOOT if n_boot is None else n_boot
        cl = self.classes
        real_correct = [self.real[c][0] for c in cl]
        real_f = [self.real[c][1] for c in cl]
        masks = [self.masks[c] for c in cl]
        real_n = [len(x) for x in real_correct]
        plans: dict[tuple, u.ClassBootstrap] = {}
        real_caches: dict[tuple, dict] = {}   # per plan: the real images' resampled spreads, shared by the methods

        def plan(sizes):
            if tuple(sizes) not in plans:  # one plan per shape: same key, same classes drawn
                plans[tuple(sizes)] = u.ClassBootstrap({"generated": sizes, "real": real_n}, key, n_boot)
                real_caches[tuple(sizes)] = {}
            return plans[tuple(sizes)]

        real_plan = plan(real_n)
        within: dict[tuple, u.ClassBootstrap] = {}

        def class_plan(i, n_gen):   # class i's images alone: one plan per class and size, shared by the methods
            if (i, n_gen) not in within:
                within[(i, n_gen)] = u.ClassBootstrap({"generated": [n_gen], "real": [real_n[i]]},
                                                      jax.random.fold_in(key, 1 + i), n_boot)
            return within[(i, n_gen)]

        def class_figures(i, correct_i, factors_i):
            div = u.diversity_stat([factors_i], [real_f[i]], [masks[i]])
            return {"retention": float(np.mean(correct_i)),
                    "retention_ci": u.binomial_interval(int(np.sum(correct_i)), len(correct_i)),
                    "diversity": u.spread(factors_i, masks[i]) / max(u.spread(real_f[i], masks[i]), 1e-6),
                    "diversity_ci": class_plan(i, len(correct_i)).estimate(div, bias_correct=True),
                    "real_retention": float(np.mean(real_correct[i])),
                    "real_retention_ci": u.binomial_interval(int(np.sum(real_correct[i])), real_n[i])}

        out = {"real": {"retention": real_plan.estimate(u.retention_stat(real_correct, part="real")),
                        "per_class": {c: {"retention": float(np.mean(real_correct[i])),
                                          "retention_ci": u.binomial_interval(int(np.sum(real_correct[i])), real_n[i])}
                                      for i, c in enumerate(cl)}},
               "methods": {}, "differences": {}, "bootstrap": {"replicates": n_boot, "level": u.LEVEL}}
        stats = {}
        for m in self.gen:
            correct = [self.gen[m][c][0] for c in cl]
            factors = [self.gen[m][c][1] for c in cl]
            b = plan(self._sizes(m))
            stats[m] = (u.retention_stat(correct),
                        u.diversity_stat(factors, real_f, masks, real_cache=real_caches[tuple(self._sizes(m))]))
            per_class = {c: class_figures(i, correct[i], factors[i]) for i, c in enumerate(cl)}
            # a spread shrinks when a resample repeats images (its variance by about (n - 1) / n):
            # diversity's replicates are bias-corrected, as FID's
            out["methods"][m] = {"retention": b.estimate(stats[m][0]),
                                 "diversity": b.estimate(stats[m][1], bias_correct=True), "per_class": per_class}
        for a, b_ in pairs:
            if a not in stats or b_ not in stats:
                continue
            if self._sizes(a) != self._sizes(b_):
                raise ValueError(f"{a} and {b_} have different numbers of images per class: not paired")
            b = plan(self._sizes(a))
            out["differences"][f"{a} - {b_}"] = {"retention": b.difference(stats[a][0], stats[b_][0]),
                                                 "diversity": b.difference(stats[a][1], stats[b_][1],
                                                                           bias_correct=True)}
        return out


@functools.partial(jax.jit, static_argnums=0)
def _features(module, params, x):
    return module.apply({"params": params}, x, method=SmallCNN.features)


def train_oracles(images, labels, factors, factor_mask, class_names, factor_names, *, key,
                  steps: int = 1500, batch: int = 64, holdout: float = 0.2, quiet: bool = True,
                  mesh=None) -> Oracles:
    """Train both oracles on real images (a random ``holdout`` share kept for scoring).

    ``batch`` is the global batch, sharded over ``mesh`` (default: every device of every
    process; a ``batch`` that does not split over them is refused). Every process holds
    the images, trains on its rows of the same global batches and gets the same
    parameters; the held-out scoring is repeated on each (a small local computation)."""
    mesh = mesh if mesh is not None else parallel.make_mesh()
    parallel.check_batch_size(batch, mesh, "oracles.batch_size")
    n = len(images)
    perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, 0), n))
    n_test = int(n * holdout)
    test, train = perm[:n_test], perm[n_test:]
    k_clf, k_reg = jax.random.fold_in(key, 1), jax.random.fold_in(key, 2)
    n_classes, n_f = len(class_names), factors.shape[1]
    clf = _train(SmallCNN(n_classes), images[train], labels[train].astype(np.int32),
                 lambda logits, y: optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(),
                 steps, batch, k_clf, quiet=quiet, desc="oracle: classifier", mesh=mesh,
                 name="oracles.batch_size")
    both = np.concatenate([factors, factor_mask.astype(np.float32)], axis=1)
    reg = _train(SmallCNN(n_f), images[train], both[train],
                 lambda out, t: jnp.sum(jnp.square(out - t[:, :n_f]) * t[:, n_f:]) / jnp.maximum(t[:, n_f:].sum(), 1),
                 steps, batch, k_reg, quiet=quiet, desc="oracle: regressor", mesh=mesh,
                 name="oracles.batch_size")
    o = Oracles(n_classes, n_f, clf, reg, class_names, factor_names, {})
    pred = o.predict_class(images[test])
    fac = o.predict_factors(images[test])
    m = factor_mask[test]
    err = np.abs(fac - factors[test])
    o.scores = {"classifier_heldout_accuracy": float(np.mean(pred == labels[test])),
                "regressor_heldout_mae": float((err * m).sum() / max(m.sum(), 1)),
                "regressor_heldout_mae_per_factor": {
                    name: float((err[:, j] * m[:, j]).sum() / max(m[:, j].sum(), 1))
                    for j, name in enumerate(factor_names)},
                "heldout_images": int(n_test)}
    return o


def synthetic_ground_truth(real_root: str, oracles_dir: str | None):
    """(Oracles, per-class factor masks) when ``real_root`` holds the synthetic dataset
    (a ``factors.npz`` from :func:`sage_jax.data.synthetic.write_folder`) and oracles
    that know its classes are found; else None."""
    path = os.path.join(real_root, "factors.npz")
    if not os.path.exists(path):
        return None
    if oracles_dir is None:
        oracles_dir = os.path.join(ASSET_DIR, "oracles")
    if not os.path.exists(os.path.join(oracles_dir, "oracles.json")):
        return None
    oracles = Oracles.load(oracles_dir)
    f = np.load(path)
    names = [str(n) for n in f["class_names"]]
    masks = {}
    for j, n in enumerate(names):
        rows = f["factor_mask"][f["labels"] == j]
        if len(rows):
            masks[n] = rows.all(axis=0)
    if not set(masks) <= set(oracles.class_names):
        return None
    return oracles, masks
