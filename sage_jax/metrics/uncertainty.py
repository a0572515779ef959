"""95% intervals for the figures the demo, the alpha sweep and ``evaluate`` report.

* An accuracy over independent trials (a classifier's accuracy on a fixed test set, a
  share of confident samples) gets the exact binomial (Clopper-Pearson) interval,
  :func:`binomial_interval`.
* Anything computed from generated images of several classes (category retention,
  diversity, LPIPS diversity, FID, KID) gets a seeded two-level bootstrap (diversity, FID
  and KID bias-corrected: a resample repeats images, which shrinks a spread and raises
  FID and KID; LPIPS averages over pairs of distinct images instead),
  :class:`ClassBootstrap`: each replicate draws the classes with replacement and then,
  within every drawn class, its images with replacement, and recomputes the figure; the
  interval is the 2.5 and 97.5 percentiles of the replicates. Images of one class are not
  independent draws of the method (they share the shots), so resampling classes too is
  what makes the interval honest about how the figure would move on other classes.
* A comparison of two methods is paired: both were made from the same shots with the
  same keys, so image ``j`` of class ``c`` of one method and of the other share their
  draws. :meth:`ClassBootstrap.difference` applies the same resampling plan to both and
  reports the interval of the difference; an ordering is a finding only when that
  interval excludes zero (:func:`excludes_zero`).

The randomness comes from an explicit JAX key: the same key gives the same intervals.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

LEVEL = 0.95
N_BOOT = 1000


def rng_from_key(key) -> np.random.Generator:
    """A numpy generator seeded from a JAX key (its raw key data)."""
    import jax

    data = np.asarray(jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
                      else key, np.uint32).ravel()
    return np.random.default_rng([int(x) for x in data])


def interval(value: float, lo: float, hi: float) -> dict:
    return {"value": float(value), "lo": float(lo), "hi": float(hi)}


def binomial_interval(k: int, n: int, level: float = LEVEL) -> dict:
    """The exact (Clopper-Pearson) interval of a proportion ``k / n``."""
    from scipy.stats import beta

    k, n = int(k), int(n)
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"a proportion needs 0 <= k <= n and n > 0, got k={k}, n={n}")
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return interval(k / n, lo, hi)


def percentile_interval(value: float, replicates, level: float = LEVEL, bias_correct: bool = False,
                        floor: float | None = None) -> dict:
    """The ``level`` percentile interval of bootstrap ``replicates``. ``bias_correct``:
    shift the replicates by their mean bias (``mean(replicates) - value``) first, for a
    figure that resampling itself moves (FID and KID rise when a resample repeats
    images); ``floor``: clip the bounds from below (0 for a distance)."""
    r = np.asarray(replicates, np.float64)
    r = r[np.isfinite(r)]
    if not len(r):
        return interval(value, np.nan, np.nan)
    if bias_correct:
        r = r - (r.mean() - value)
    a = 100 * (1 - level) / 2
    lo, hi = np.percentile(r, [a, 100 - a])
    if floor is not None:
        lo, hi = max(lo, floor), max(hi, floor)
    return interval(value, lo, hi)


def excludes_zero(iv: Mapping) -> bool:
    """Whether an interval of a difference lies wholly on one side of zero."""
    return bool(iv["lo"] > 0 or iv["hi"] < 0)


def fmt(iv, digits: int = 2, pct: bool = False) -> str:
    """``0.61 [0.55, 0.67]`` (``pct``: as percentages)."""
    if iv is None:
        return "-"
    s = 100.0 if pct else 1.0
    unit = "%" if pct else ""
    return f"{s * iv['value']:.{digits}f}{unit} [{s * iv['lo']:.{digits}f}{unit}, {s * iv['hi']:.{digits}f}{unit}]"


class ClassBootstrap:
    """A seeded resampling plan over classes and the images of each class.

    ``sizes``: for each named part (e.g. ``"generated"``, ``"real"``) the number of images
    of every class, in one class order. Replicate ``b`` draws ``C`` classes with
    replacement and, for each drawn class and each part, as many images as it has, with
    replacement. A statistic sees, per drawn class, ``(class index, {part: indices})``.
    """

    def __init__(self, sizes: Mapping[str, Sequence[int]], key, n_boot: int = N_BOOT):
        parts = {k: [int(n) for n in v] for k, v in sizes.items()}
        counts = {len(v) for v in parts.values()}
        if len(counts) != 1 or not next(iter(counts)):
            raise ValueError(f"every part needs the same, non-zero number of classes, got {sizes}")
        self.num_classes = counts.pop()
        self.n_boot = int(n_boot)
        rng = rng_from_key(key)
        self.plans = []
        for _ in range(self.n_boot):
            chosen = rng.integers(0, self.num_classes, self.num_classes)
            self.plans.append([(int(c), {p: rng.integers(0, n[c], n[c]) for p, n in parts.items()})
                               for c in chosen])
        self.identity = [(c, {p: np.arange(n[c]) for p, n in parts.items()}) for c in range(self.num_classes)]
        self._draws = None

    def class_draws(self) -> dict:
        """Every replicate's draws grouped by class: ``{class: (replicates, positions,
        {part: indices (draws, n_c)})}``, so a per-class statistic is computed for all of
        a class's draws at once (:func:`class_mean` with ``vec``)."""
        if self._draws is None:
            by_class: dict[int, list] = {}
            for b, plan in enumerate(self.plans):
                for j, (c, idx) in enumerate(plan):
                    by_class.setdefault(c, []).append((b, j, idx))
            self._draws = {c: (np.asarray([d[0] for d in ds]), np.asarray([d[1] for d in ds]),
                               {p: np.stack([d[2][p] for d in ds]) for p in ds[0][2]})
                           for c, ds in by_class.items()}
        return self._draws

    def replicates(self, stat: Callable) -> np.ndarray:
        """``stat(plan)`` for every replicate; ``plan`` a list of (class, {part: indices}).
        A statistic of :func:`class_mean` with a vectorised form (``stat.vec``) is
        computed class by class over every replicate at once: the same numbers, without
        a Python call per class and replicate."""
        vec = getattr(stat, "vec", None)
        if vec is None:
            return np.asarray([stat(p) for p in self.plans], np.float64)
        out = np.zeros((self.n_boot, self.num_classes), np.float64)
        for c, (bs, js, idx) in self.class_draws().items():
            out[bs, js] = vec(c, idx)
        return out.mean(axis=1)

    def estimate(self, stat: Callable, bias_correct: bool = False, floor: float | None = None) -> dict:
        """The figure on the data as they are, with its interval."""
        return percentile_interval(stat(self.identity), self.replicates(stat), bias_correct=bias_correct,
                                   floor=floor)

    def difference(self, stat_a: Callable, stat_b: Callable, bias_correct: bool = False) -> dict:
        """``stat_a - stat_b``, both on the same resampled classes and images (paired)."""
        value = stat_a(self.identity) - stat_b(self.identity)
        if getattr(stat_a, "vec", None) is not None and getattr(stat_b, "vec", None) is not None:
            reps = self.replicates(stat_a) - self.replicates(stat_b)
        else:
            reps = [stat_a(p) - stat_b(p) for p in self.plans]
        return percentile_interval(value, reps, bias_correct=bias_correct)


def class_mean(per_class: Callable, vec: Callable | None = None) -> Callable:
    """A statistic that is the mean over the drawn classes of ``per_class(c, idx)``.
    ``vec(c, idx)``: the same per-class figure for many draws at once (``idx[part]``
    (draws, n_c) -> (draws,)), which :meth:`ClassBootstrap.replicates` uses."""
    def stat(plan):
        return float(np.mean([per_class(c, idx) for c, idx in plan]))

    stat.vec = vec
    return stat


def retention_stat(correct: Sequence[np.ndarray], part: str = "generated") -> Callable:
    """Category retention: per class the share of images the oracle assigns to it
    (``correct[c]``: a bool per image), averaged over classes."""
    return class_mean(lambda c, idx: float(np.mean(correct[c][idx[part]])),
                      vec=lambda c, idx: np.asarray(correct[c], np.float64)[idx[part]].mean(axis=1))


def spread(factors: np.ndarray, mask) -> float:
    """Mean over the visible factors of their standard deviation (the oracle's spread)."""
    sd = np.asarray(factors).std(axis=0)
    return float(sd[mask].mean() if mask is not None else sd.mean())


def _spreads(factors: np.ndarray, idx: np.ndarray, mask) -> np.ndarray:
    """:func:`spread` of ``factors[idx[d]]`` for every row ``d`` of ``idx`` (draws, n)."""
    sd = np.asarray(factors)[idx].std(axis=1)          # (draws, factors)
    return sd[:, mask].mean(axis=1) if mask is not None else sd.mean(axis=1)


def diversity_stat(gen_factors: Sequence[np.ndarray], real_factors: Sequence[np.ndarray],
                   masks: Sequence, part: str = "generated", real_cache: dict | None = None) -> Callable:
    """Diversity: per class the spread of the generated images' regressed factors over
    that of the real images' (both resampled), averaged over classes.

    ``real_cache``: a dict shared by the statistics of several methods against the same
    real images and masks: the real images' resampled spreads are computed once per
    bootstrap plan for all of them. An entry holds the index array it was computed from
    and is used only for that same array (a plan's draws), so a cache shared across plans
    recomputes rather than mixes them."""
    def real_spreads(c, idx):
        if real_cache is None:
            return _spreads(real_factors[c], idx["real"], masks[c])
        hit = real_cache.get(c)
        if hit is None or hit[0] is not idx["real"]:
            hit = real_cache[c] = (idx["real"], _spreads(real_factors[c], idx["real"], masks[c]))
        return hit[1]

    return class_mean(lambda c, idx: spread(gen_factors[c][idx[part]], masks[c])
                      / max(spread(real_factors[c][idx["real"]], masks[c]), 1e-6),
                      vec=lambda c, idx: _spreads(gen_factors[c], idx[part], masks[c])
                      / np.maximum(real_spreads(c, idx), 1e-6))


def _fd(a, b):
    from sage_jax.metrics.fid import feature_statistics, frechet_distance

    mu1, s1 = feature_statistics(a)
    mu2, s2 = feature_statistics(b)
    return float(frechet_distance(mu1, s1, mu2, s2))


def _pool(features: Sequence[np.ndarray], plan, part: str) -> np.ndarray:
    return np.concatenate([features[c][idx[part]] for c, idx in plan])


def fid_interval(gen: Sequence[np.ndarray], real: Sequence[np.ndarray], key, n_boot: int = 200,
                 boot: ClassBootstrap | None = None) -> dict:
    """FID of the pooled features ``gen`` against ``real`` (both lists of per-class
    (n_c, d) arrays, one class order; a single array each for unlabelled sets), with the
    bootstrap interval over classes and the images of both sets. ``boot``: a plan to
    share (for a paired difference, see :func:`fid_difference`)."""
    boot = boot or ClassBootstrap({"generated": [len(x) for x in gen], "real": [len(x) for x in real]}, key, n_boot)
    stat = lambda plan: _fd(_pool(gen, plan, "generated"), _pool(real, plan, "real"))  # noqa: E731
    return boot.estimate(stat, bias_correct=True, floor=0.0)


def fid_difference(gen_a, gen_b, real, key, n_boot: int = 200) -> dict:
    """FID(a) - FID(b), both against ``real`` on the same resampled classes and images."""
    boot = ClassBootstrap({"generated": [len(x) for x in gen_a], "real": [len(x) for x in real]}, key, n_boot)
    if [len(x) for x in gen_a] != [len(x) for x in gen_b]:
        raise ValueError("a paired FID difference needs the same number of images per class in both sets")
    return boot.difference(lambda p: _fd(_pool(gen_a, p, "generated"), _pool(real, p, "real")),
                           lambda p: _fd(_pool(gen_b, p, "generated"), _pool(real, p, "real")), bias_correct=True)


def kid_interval(gen, real, key, n_boot: int = 100, num_subsets: int = 10, subset_size: int = 1000) -> dict:
    """KID with the bootstrap interval over classes and the images of both sets (each
    replicate's KID from ``num_subsets`` subsets)."""
    import jax

    from sage_jax.metrics.fid import kernel_inception_distance

    boot = ClassBootstrap({"generated": [len(x) for x in gen], "real": [len(x) for x in real]}, key, n_boot)
    kk = jax.random.fold_in(key, 1)

    def stat(plan):
        return kernel_inception_distance(_pool(real, plan, "real"), _pool(gen, plan, "generated"), key=kk,
                                         num_subsets=num_subsets, subset_size=subset_size)[0]

    return boot.estimate(stat, bias_correct=True)
