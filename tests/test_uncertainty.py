"""The 95% intervals: the exact binomial interval, the two-level bootstrap (its coverage
on data with a known answer), paired differences, and the ground-truth summary."""

import jax
import numpy as np
import pytest

from sage_jax.metrics import uncertainty as u


def test_binomial_interval_known_values():
    # Clopper-Pearson closed forms: k = 0 -> [0, 1 - (a/2)^(1/n)], k = n -> [(a/2)^(1/n), 1]
    iv = u.binomial_interval(0, 10)
    assert iv["lo"] == 0.0 and iv["hi"] == pytest.approx(1 - 0.025 ** (1 / 10), rel=1e-9)
    iv = u.binomial_interval(10, 10)
    assert iv["hi"] == 1.0 and iv["lo"] == pytest.approx(0.025 ** (1 / 10), rel=1e-9)
    iv = u.binomial_interval(5, 10)  # tables: 0.1871, 0.8129
    assert iv["value"] == 0.5 and iv["lo"] == pytest.approx(0.18709, abs=1e-4) and iv["hi"] == pytest.approx(0.81291, abs=1e-4)
    with pytest.raises(ValueError):
        u.binomial_interval(3, 2)


def test_bootstrap_covers_the_truth_about_95_percent_of_the_time():
    """Retention of 10 classes x 16 images whose per-class rates vary around 0.6: over
    200 simulated data sets, the interval holds the true mean rate 88-99% of the time
    (a class-only or image-only bootstrap would not: see the second half)."""
    rng = np.random.default_rng(0)
    hits = hits_images_only = 0
    trials = 200
    for t in range(trials):
        rates = np.clip(rng.normal(0.6, 0.15, 10), 0, 1)
        correct = [rng.random(16) < r for r in rates]
        boot = u.ClassBootstrap({"generated": [16] * 10}, jax.random.PRNGKey(t), n_boot=300)
        iv = boot.estimate(u.retention_stat(correct))
        hits += iv["lo"] <= 0.6 <= iv["hi"]
        # images only (as if the classes were fixed): too narrow for a new draw of classes
        pooled = np.concatenate(correct)
        b = u.binomial_interval(int(pooled.sum()), len(pooled))
        hits_images_only += b["lo"] <= 0.6 <= b["hi"]
    assert 0.88 <= hits / trials <= 0.99, hits / trials
    assert hits_images_only / trials < hits / trials


def test_paired_difference_and_determinism():
    rng = np.random.default_rng(1)
    a = [rng.random(16) < 0.7 for _ in range(8)]
    boot = u.ClassBootstrap({"generated": [16] * 8}, jax.random.PRNGKey(0), n_boot=400)
    same = boot.difference(u.retention_stat(a), u.retention_stat(a))
    assert same == {"value": 0.0, "lo": 0.0, "hi": 0.0} and not u.excludes_zero(same)
    # b: a with 3 images of every class turned wrong: always lower, paired
    b = [x.copy() for x in a]
    for x in b:
        x[:3] = False
    d = boot.difference(u.retention_stat(a), u.retention_stat(b))
    assert d["lo"] > 0 and u.excludes_zero(d)
    # the same key gives the same interval; another key another one
    again = u.ClassBootstrap({"generated": [16] * 8}, jax.random.PRNGKey(0), n_boot=400)
    assert again.estimate(u.retention_stat(a)) == boot.estimate(u.retention_stat(a))
    other = u.ClassBootstrap({"generated": [16] * 8}, jax.random.PRNGKey(1), n_boot=400)
    assert other.estimate(u.retention_stat(a)) != boot.estimate(u.retention_stat(a))


def test_fid_interval_holds_the_value_and_widens_with_fewer_images():
    rng = np.random.default_rng(2)
    real = [rng.normal(0, 1, (200, 4)) for _ in range(3)]
    gen = [rng.normal(0.3, 1, (200, 4)) for _ in range(3)]
    iv = u.fid_interval(gen, real, jax.random.PRNGKey(0), n_boot=100)
    assert iv["lo"] <= iv["value"] <= iv["hi"] and iv["value"] > 0
    small = u.fid_interval([g[:20] for g in gen], [r[:20] for r in real], jax.random.PRNGKey(0), n_boot=100)
    assert small["hi"] - small["lo"] > iv["hi"] - iv["lo"]
    d = u.fid_difference(gen, real, real, jax.random.PRNGKey(0), n_boot=100)  # shifted vs real itself
    assert d["lo"] > 0


def test_fmt():
    assert u.fmt({"value": 0.612, "lo": 0.55, "hi": 0.671}) == "0.61 [0.55, 0.67]"
    assert u.fmt({"value": 0.5, "lo": 0.25, "hi": 0.75}, 1, pct=True) == "50.0% [25.0%, 75.0%]"


def test_diversity_interval_holds_its_value_with_few_images():
    """A resample repeats images, which shrinks a spread (by about (n - 1) / n in
    variance: at 4 images per class the sweep's plain percentile interval, [0.20, 0.29],
    missed its value 0.31). The replicates here average well below the value; the
    bias-corrected interval, which the ground-truth summary uses, holds it."""
    rng = np.random.default_rng(3)
    gen = [rng.normal(0, 1, (4, 3)) for _ in range(10)]
    real = [rng.normal(0, 1, (16, 3)) for _ in range(10)]
    masks = [None] * 10
    boot = u.ClassBootstrap({"generated": [4] * 10, "real": [16] * 10}, jax.random.PRNGKey(0), n_boot=400)
    stat = u.diversity_stat(gen, real, masks)
    plain = boot.estimate(stat)
    corrected = boot.estimate(stat, bias_correct=True)
    assert boot.replicates(stat).mean() < 0.95 * plain["value"]   # sqrt(3/4): about 0.87
    assert corrected["lo"] <= corrected["value"] <= corrected["hi"]
    assert corrected["hi"] - corrected["lo"] == pytest.approx(plain["hi"] - plain["lo"])


def test_vectorised_replicates_are_the_loops():
    """Retention and diversity replicates computed class by class over every draw at
    once (``stat.vec``) are the per-replicate loop's numbers, and so are their paired
    differences."""
    rng = np.random.default_rng(0)
    sizes_g, sizes_r = [5, 8, 3, 6], [7, 4, 9, 5]
    correct = [rng.random(n) < 0.6 for n in sizes_g]
    gen = [rng.normal(size=(n, 3)) for n in sizes_g]
    gen_b = [g * 0.5 for g in gen]
    real = [rng.normal(size=(n, 3)) for n in sizes_r]
    masks = [np.array([True, False, True]), [0, 2], None, [1]]
    boot = u.ClassBootstrap({"generated": sizes_g, "real": sizes_r}, jax.random.PRNGKey(3), 300)
    for stat in (u.retention_stat(correct), u.diversity_stat(gen, real, masks)):
        loop = np.asarray([stat(p) for p in boot.plans])
        np.testing.assert_allclose(boot.replicates(stat), loop, rtol=1e-12, atol=1e-12)
        assert np.std(loop) > 0.01
    a, b = u.diversity_stat(gen, real, masks), u.diversity_stat(gen_b, real, masks)
    d = boot.difference(a, b)
    loop = [a(p) - b(p) for p in boot.plans]
    assert d == u.percentile_interval(a(boot.identity) - b(boot.identity), loop)
    # the real images' spreads shared between methods (one cache per plan): the same figures
    cache = {}
    a_c, b_c = (u.diversity_stat(g, real, masks, real_cache=cache) for g in (gen, gen_b))
    assert boot.difference(a_c, b_c) == d and set(cache) == set(range(4))
    np.testing.assert_array_equal(boot.replicates(a_c), boot.replicates(a))
    # the same cache used with another plan's draws: that plan's figures, not the first's
    other = u.ClassBootstrap({"generated": [len(x) for x in gen], "real": [len(x) for x in real]},
                             jax.random.PRNGKey(5), boot.n_boot)
    np.testing.assert_array_equal(other.replicates(a_c), other.replicates(a))
    np.testing.assert_array_equal(boot.replicates(a_c), boot.replicates(a))
