"""Few-shot classification (metrics/fewshot.py): eq. (5.1) of the thesis on a case
worked by hand, perfect accuracy on separated clusters, the 95% interval, the
vectorised episodes against a loop, determinism, generated support images that help
(real images of the class) or hurt (another class's), and a cosine-classifier feature
extractor trained on seen classes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sage_jax.data import synthetic as syn
from sage_jax.metrics import fewshot as fs


def flat(x):
    return np.asarray(x, np.float32).reshape(len(x), -1)


def test_class_weights_and_prediction_by_hand():
    # class A: (10, 0) and (0, 0.1) -> normalised (1, 0), (0, 1) -> w_A = (0.5, 0.5)
    # class B: (-3, 0) -> w_B = (-1, 0)
    support = jnp.array([[[10.0, 0.0], [0.0, 0.1]], [[-3.0, 0.0], [-3.0, 0.0]]])
    w = fs.class_weights(support)
    np.testing.assert_allclose(np.asarray(w), [[0.5, 0.5], [-1.0, 0.0]], atol=1e-6)
    # mask: only the first member of A
    np.testing.assert_allclose(np.asarray(fs.class_weights(support, jnp.array([[True, False], [True, True]]))),
                               [[1.0, 0.0], [-1.0, 0.0]], atol=1e-6)
    queries = jnp.array([[1.0, -0.1], [-0.2, 1.0], [-1.0, 0.3], [-1.0, 1.2]])
    # scores <w, q/|q|>: q4 = (-1, 1.2)/1.562: A 0.064, B 0.640 -> B; q2: A 0.392, B 0.196 -> A
    np.testing.assert_array_equal(np.asarray(fs.nearest_centroid_predict(w, queries)), [0, 0, 1, 1])
    # the weights are not renormalised (average cosine similarity, not cosine to the mean):
    # A's two members at 90 degrees give |w_A| = 0.707 < 1, so a query at 100 degrees from
    # B's single member (score cos 100 = -0.17) ... still loses to A at 45 degrees (0.707)
    q = jnp.array([[np.cos(np.radians(80.0)), np.sin(np.radians(80.0))]])
    assert int(fs.nearest_centroid_predict(w, q)[0]) == 0


@pytest.fixture(scope="module")
def clusters():
    key = jax.random.PRNGKey(0)
    centres = 5.0 * np.eye(6, 8, dtype=np.float32)
    return {f"c{i}": centres[i] + 0.05 * np.asarray(jax.random.normal(jax.random.fold_in(key, i), (30, 8)))
            for i in range(6)}


def test_separated_clusters_are_classified_perfectly(clusters):
    r = fs.fewshot_classification(flat, clusters, n_way=5, k_shots=(1, 5), n_query=15, n_episodes=50,
                                  key=jax.random.PRNGKey(1))
    for k in (1, 5):
        assert r[k]["real"]["mean"] == 1.0 and r[k]["real"]["ci95"] == 0.0
        assert r[k]["n_episodes"] == 50 and r[k]["n_way"] == 5 and r[k]["n_query"] == 15
        assert "with_generated" not in r[k]


@pytest.fixture(scope="module")
def unseen():
    spec = syn.SyntheticSpec(num_seen=6, num_unseen=6, samples_per_class=45, image_size=16, seed=1,
                             oriented_fraction=0.0)
    u = syn.generate(spec, "unseen")
    by = {n: u["images"][u["labels"] == i] for i, n in enumerate(u["class_names"])}
    real = {c: v[:25] for c, v in by.items()}          # support + queries
    extra = {c: v[25:] for c, v in by.items()}         # 20 more real images per class
    return spec, real, extra


def test_interval_formula_and_vectorised_episodes(unseen):
    _, real, _ = unseen
    key = jax.random.PRNGKey(2)
    r = fs.fewshot_classification(flat, real, k_shots=(1,), n_episodes=64, key=key, return_episodes=True)
    ep = r[1]["episodes"]["real"]
    assert ep.shape == (64,) and 0.2 < ep.mean() < 1.0 and ep.std() > 0
    assert r[1]["real"]["mean"] == pytest.approx(ep.mean())
    assert r[1]["real"]["ci95"] == pytest.approx(1.96 * ep.std() / np.sqrt(64))
    # the vmapped episodes are the episodes one at a time
    keys_, feats, counts = fs._features_by_class(flat, real, 256)
    ep_keys = jax.random.split(jax.random.fold_in(key, 1), 64)
    for i in (0, 17, 63):
        acc, _ = fs._episode_accuracy(ep_keys[i], jnp.asarray(feats), jnp.asarray(counts), None, None,
                                      n_way=5, k=1, n_query=15, n_generated=None)
        assert float(acc) == pytest.approx(float(ep[i]))


def test_same_key_same_result(unseen):
    _, real, extra = unseen
    a = fs.fewshot_classification(flat, real, generated_by_class=extra, n_episodes=300, key=jax.random.PRNGKey(3))
    b = fs.fewshot_classification(flat, real, generated_by_class=extra, n_episodes=300, key=jax.random.PRNGKey(3))
    c = fs.fewshot_classification(flat, real, generated_by_class=extra, n_episodes=300, key=jax.random.PRNGKey(4))
    assert a == b
    assert a[1]["real"]["mean"] != c[1]["real"]["mean"]


def test_generated_support_images(unseen):
    _, real, extra = unseen
    names = list(real)
    wrong = {c: extra[names[(i + 1) % len(names)]] for i, c in enumerate(names)}
    key = jax.random.PRNGKey(5)
    good = fs.fewshot_classification(flat, real, generated_by_class=extra, n_episodes=300, key=key)
    bad = fs.fewshot_classification(flat, real, generated_by_class=wrong, n_episodes=300, key=key)
    some = fs.fewshot_classification(flat, real, generated_by_class=extra, n_generated=5, n_episodes=300, key=key)
    for k in (1, 5):
        print(k, "real", round(good[k]["real"]["mean"], 3), "+real-as-generated",
              round(good[k]["with_generated"]["mean"], 3), "+5 of them", round(some[k]["with_generated"]["mean"], 3),
              "+wrong class", round(bad[k]["with_generated"]["mean"], 3))
        # paired: the same episodes without generated images give the same numbers
        assert good[k]["real"] == bad[k]["real"] == some[k]["real"]
        d = good[k]["difference"]
        assert d["mean"] > 0.02 and d["mean"] > 2 * d["ci95"]
        assert good[k]["with_generated"]["mean"] == pytest.approx(good[k]["real"]["mean"] + d["mean"])
        assert bad[k]["difference"]["mean"] < -0.05
    with pytest.raises(ValueError):
        fs.fewshot_classification(flat, real, generated_by_class=extra, n_generated=50, n_episodes=5, key=key)
    with pytest.raises(ValueError):
        fs.fewshot_classification(flat, {c: v[:10] for c, v in real.items()}, n_episodes=5, key=key)


def test_cosine_classifier_features(unseen):
    spec, real, _ = unseen
    from sage_jax.nn.classifiers import ResNet

    seen = syn.generate(spec, "seen")
    clf = fs.train_cosine_classifier(seen["images"], seen["labels"], key=jax.random.PRNGKey(6),
                                     model=ResNet(6, widths=(8, 16, 32), blocks=(1, 1, 1), head_type="cosine"),
                                     steps=100, batch_size=16, lr=3e-3, warmup_steps=10)
    assert "scale" in clf.params["head"]
    r = fs.fewshot_classification(clf.features, real, n_episodes=200, key=jax.random.PRNGKey(7))
    print("cosine-classifier features:", {k: round(v["real"]["mean"], 3) for k, v in r.items()})
    assert r[1]["real"]["mean"] > 0.35 and r[5]["real"]["mean"] > r[1]["real"]["mean"]
