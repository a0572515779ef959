"""Class-conditional StyleGAN2 and Softlabel-GAN: c_dim=0 unchanged, label embedding and
projection discriminator, soft labels, conditional training (deterministic, resumable),
class-balanced weights, the imbalanced synthetic data, the classwise evaluation and
sampling a class from the command line."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from fixture_utils import fixture
from sage_jax import checkpoints
from sage_jax.data import synthetic as S
from sage_jax.metrics import classwise as CW
from sage_jax.models import init_discriminator, init_generator
from sage_jax.nn.stylegan2 import Generator
from sage_jax.train import label_augmentation as LA

SMALL_G = dict(size=8, style_dim=8, n_mlp=2, channels=((4, 8), (8, 8)))
SMALL_D = dict(size=8, channels=((4, 8), (8, 8)))


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


@pytest.fixture(scope="module")
def cond():
    G = init_generator(dict(SMALL_G, c_dim=3), jax.random.PRNGKey(0))
    D = init_discriminator(dict(SMALL_D, c_dim=3), jax.random.PRNGKey(1))
    return G, D


# ------------------------------------------------------------------ c_dim = 0
def test_c_dim_zero_is_the_unconditional_network():
    G0 = init_generator(SMALL_G, jax.random.PRNGKey(0))
    Gz = init_generator(dict(SMALL_G, c_dim=0), jax.random.PRNGKey(0))
    assert "c_dim" not in G0.config and Gz.config == G0.config and G0.c_dim == 0
    assert jax.tree_util.tree_structure(G0.variables) == jax.tree_util.tree_structure(Gz.variables)
    assert "embed" not in G0.variables["params"]
    for a, b in zip(_leaves(G0.variables), _leaves(Gz.variables)):
        np.testing.assert_array_equal(a, b)
    z = jax.random.normal(jax.random.PRNGKey(2), (2, 8))
    np.testing.assert_array_equal(np.asarray(G0(z)), np.asarray(Gz(z)))
    with pytest.raises(ValueError, match="unconditional"):
        G0(z, labels=np.array([0, 1]))
    D0 = init_discriminator(dict(SMALL_D, c_dim=0), jax.random.PRNGKey(1))
    assert "embed" not in D0.variables["params"] and "c_dim" not in D0.config


def test_fixture_checkpoint_still_converts_unconditional():
    sd = checkpoints.read_torch(fixture("tiny_rosinality_ckpt.pt"))["g_ema"]
    G = checkpoints.load_generator(sd)
    assert G.c_dim == 0 and "c_dim" not in G.config
    # the converted variables are exactly the exported state dict, round trip
    back = checkpoints.generator_to_state_dict(G.config, G.variables)
    for k, v in back.items():
        np.testing.assert_array_equal(np.asarray(v, np.float32), np.asarray(sd[k], np.float32), err_msg=k)


# ------------------------------------------------------------------ generator
def test_conditional_generator_shapes_and_labels_change_output(cond, tmp_path):
    G, _ = cond
    assert G.c_dim == 3 and G.variables["params"]["embed"]["weight"].shape == (3, 8)
    assert G.variables["params"]["style_1"]["weight"].shape == (16, 8)  # z and embedding concatenated
    z = jax.random.normal(jax.random.PRNGKey(3), (2, 8))
    a = np.asarray(G(z, labels=np.array([0, 0])))
    b = np.asarray(G(z, labels=np.array([0, 2])))
    assert a.shape == (2, 8, 8, 3)
    np.testing.assert_array_equal(a[0], b[0])
    assert np.abs(a[1] - b[1]).max() > 1e-3
    with pytest.raises(ValueError, match="class-conditional"):
        G(z)
    with pytest.raises(ValueError, match="probability"):
        G(z, labels=np.array([[0.5, 0.6, 0.0], [1.0, 0.0, 0.0]], np.float32))
    # W / W+ inputs need no labels; save / load keeps c_dim
    w = G.mapping(z, np.array([1, 2]))
    img = np.asarray(G(w, input_is_latent=True))
    np.testing.assert_allclose(img, np.asarray(G(z, labels=np.array([1, 2]))), atol=1e-5)
    checkpoints.save_model(tmp_path / "g", G)
    G2 = checkpoints.load_generator(tmp_path / "g")
    assert G2.c_dim == 3
    np.testing.assert_array_equal(np.asarray(G2(z, labels=np.array([1, 2]))), np.asarray(G(z, labels=np.array([1, 2]))))
    assert G.mean_latent(6, jax.random.PRNGKey(0)).shape == (1, 8)
    with pytest.raises(checkpoints.CheckpointError, match="conditional"):
        checkpoints.generator_to_state_dict(G.config, G.variables)


def test_onehot_and_soft_labels_share_one_path(cond):
    G, _ = cond
    z = jax.random.normal(jax.random.PRNGKey(4), (3, 8))
    hard = np.asarray(G(z, labels=np.array([0, 1, 2])))
    soft = np.asarray(G(z, labels=np.eye(3, dtype=np.float32)))
    np.testing.assert_array_equal(hard, soft)
    emb = lambda y: np.asarray(G.module.apply(G.variables, jnp.asarray(y, jnp.float32),  # noqa: E731
                                              method=Generator.label_embedding))
    e = emb(np.eye(3))
    np.testing.assert_allclose(emb([[0.5, 0.5, 0.0]])[0], (e[0] + e[1]) / 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(emb([[0.2, 0.3, 0.5]])[0], 0.2 * e[0] + 0.3 * e[1] + 0.5 * e[2], rtol=1e-5, atol=1e-6)
    mixed = np.asarray(G(z, labels=np.full((3, 3), 1 / 3, np.float32)))
    assert np.isfinite(mixed).all() and np.abs(mixed - hard).max() > 1e-4


# ------------------------------------------------------------------ discriminator
def test_projection_discriminator_is_linear_in_the_label(cond):
    _, D = cond
    x = jax.random.uniform(jax.random.PRNGKey(5), (4, 8, 8, 3), minval=-1, maxval=1)

    def f(y):
        return np.asarray(D.module.apply(D.variables, x, jnp.asarray(y, jnp.float32)), np.float64)

    y1 = np.asarray(jax.random.normal(jax.random.PRNGKey(6), (4, 3)))
    y2 = np.asarray(jax.random.normal(jax.random.PRNGKey(7), (4, 3)))
    zero = f(np.zeros((4, 3)))
    np.testing.assert_allclose(f(y1 + 2 * y2) - zero, (f(y1) - zero) + 2 * (f(y2) - zero), rtol=1e-4, atol=1e-4)
    # soft label = mixture of the one-hot logits; psi(phi(x)) is the zero-label logit
    onehot = [f(np.tile(np.eye(3)[k], (4, 1))) for k in range(3)]
    p = np.array([0.2, 0.7, 0.1])
    np.testing.assert_allclose(f(np.tile(p, (4, 1))), sum(p[k] * onehot[k] for k in range(3)), rtol=1e-4, atol=1e-5)
    assert np.abs(onehot[0] - onehot[1]).max() > 1e-4
    np.testing.assert_allclose(np.asarray(D(x, np.array([1, 1, 1, 1]))), onehot[1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="class-conditional"):
        D(x)


# ------------------------------------------------------------------ soft labels
def test_soft_labels_properties():
    logits = np.asarray(jax.random.normal(jax.random.PRNGKey(8), (6, 4))) * 3
    hard = np.array([0, 1, 2, 3, 0, 1])
    s = LA.soft_labels(logits, hard, 1.0, 0.0)
    np.testing.assert_allclose(s.sum(1), 1, atol=1e-6)
    np.testing.assert_allclose(s, np.asarray(jax.nn.softmax(logits)), atol=1e-6)
    np.testing.assert_array_equal(LA.soft_labels(logits, hard, 1.0, 1.0), np.eye(4)[hard])
    argmax = np.eye(4)[logits.argmax(1)]
    np.testing.assert_allclose(LA.soft_labels(logits, hard, 1e-4, 0.0), argmax, atol=1e-6)
    np.testing.assert_array_equal(LA.soft_labels(logits, hard, 0.0, 0.0), argmax)
    m = LA.soft_labels(logits, hard, 2.0, 0.3)
    np.testing.assert_allclose(m, 0.3 * np.eye(4)[hard] + 0.7 * np.asarray(jax.nn.softmax(logits / 2)), atol=1e-6)
    hot = LA.soft_labels(logits, hard, 10.0, 0.0)  # higher temperature: softer
    assert LA.soft_label_summary(hot, hard)["entropy"] > LA.soft_label_summary(s, hard)["entropy"]
    with pytest.raises(ValueError):
        LA.soft_labels(logits, hard, 1.0, 1.5)


def test_soft_label_file_validation(tmp_path):
    good = np.full((5, 3), 1 / 3, np.float32)
    np.save(tmp_path / "ok.npy", good)
    np.testing.assert_array_equal(LA.load_soft_labels(str(tmp_path / "ok.npy"), 5, 3), good)
    bad = {"shape": np.full((4, 3), 1 / 3), "negative": np.array([[1.2, -0.2, 0.0]] * 5),
           "sum": np.full((5, 3), 0.5), "finite": np.array([[np.nan, 0.5, 0.5]] * 5),
           "dtype": np.eye(3, dtype=np.int64)[[0, 1, 2, 0, 1]]}
    for what, arr in bad.items():
        with pytest.raises(ValueError, match={"shape": "expected shape", "negative": "negative", "sum": "sum to 1",
                                              "finite": "non-finite", "dtype": "floating"}[what]):
            LA.check_soft_labels(arr, 5, 3)
    with pytest.raises(ValueError, match="cannot read"):
        LA.load_soft_labels(str(tmp_path / "missing.npy"), 5, 3)


def test_cross_fitting_never_scores_an_image_with_its_own_classifier():
    images = np.arange(20, dtype=np.float32)[:, None, None, None] * np.ones((1, 2, 2, 3), np.float32)
    labels = np.arange(20) % 2
    seen_by = []

    def train_fn(x, y, c, *, key, steps, batch):
        trained = set(x[:, 0, 0, 0].astype(int))
        seen_by.append(trained)
        return lambda q: np.array([[1.0, 0.0] if int(v) in trained else [0.0, 1.0] for v in q[:, 0, 0, 0]])

    logits = LA.classifier_logits(images, labels, 2, key=jax.random.PRNGKey(0), folds=2, train_fn=train_fn)
    assert len(seen_by) == 2 and seen_by[0].isdisjoint(seen_by[1]) and len(seen_by[0] | seen_by[1]) == 20
    np.testing.assert_array_equal(logits, np.tile([0.0, 1.0], (20, 1)))  # never its own training image


def test_class_balanced_weights_and_prior():
    hard = np.array([0] * 8 + [1] * 2 + [2] * 2)
    w = LA.class_balanced_weights(hard, 4)
    per_image = w[hard]
    assert per_image.mean() == pytest.approx(1.0)
    totals = np.bincount(hard, weights=per_image, minlength=4)
    np.testing.assert_allclose(totals[:3], totals[0])  # every class weighs the same
    assert w[3] == 0 and w[1] == pytest.approx(12 / (3 * 2))
    np.testing.assert_allclose(LA.class_prior(hard, 4, "data"), [8 / 12, 2 / 12, 2 / 12, 0])
    np.testing.assert_allclose(LA.class_prior(hard, 4, "uniform"), [0.25] * 4)


# ------------------------------------------------------------------ training
def _cond_cfg(**overrides):
    from test_train import micro_cfg

    base = {"data.num_seen": 6, "data.samples_per_class": 4, "data.imbalance_ratio": 4.0,
            "gan.conditional": True, "gan.sample_every": 0}
    return micro_cfg(**{**base, **overrides})


def test_conditional_training_is_deterministic_and_resumes_exactly(tmp_path):
    from sage_jax.data.loader import seen_dataset
    from sage_jax.train.gan import train_gan

    cfg = _cond_cfg(**{"gan.steps": 4, "gan.labels": "soft", "gan.balance": True,
                       "gan.soft_labels_file": str(tmp_path / "soft.npy")})
    ds = seen_dataset(cfg.data)
    assert ds.num_classes == 6 and len(ds) < 24  # long-tailed
    hard = np.asarray(ds.labels_array)
    soft = LA.soft_labels(np.asarray(jax.random.normal(jax.random.PRNGKey(9), (len(ds), 6))), hard, 1.0, 0.5)
    np.save(tmp_path / "soft.npy", soft)
    G1, D1 = train_gan(cfg.model.generator, cfg.model.discriminator, cfg.gan, ds, str(tmp_path / "a"), quiet=True)
    assert G1.c_dim == 6 and D1.c_dim == 6
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "real_labels.npy"), soft)
    meta = json.load(open(tmp_path / "a" / "g_ema" / "model.json"))
    assert meta["config"]["c_dim"] == 6 and meta["extra"]["labels"] == "soft"
    np.testing.assert_array_equal(meta["extra"]["class_counts"], np.bincount(hard, minlength=6))
    assert meta["extra"]["class_names"] == ds.class_names
    log = [json.loads(l) for l in open(tmp_path / "a" / "metrics.jsonl")]
    assert [m["step"] for m in log] == [1, 2, 3, 4] and all(np.isfinite(m["d_loss"]) for m in log)
    # interrupted after 2 steps and resumed: the same parameters as the uninterrupted run
    train_gan(cfg.model.generator, cfg.model.discriminator, cfg.gan, ds, str(tmp_path / "b"), quiet=True, stop_after=2)
    G2, D2 = train_gan(cfg.model.generator, cfg.model.discriminator, cfg.gan, ds, str(tmp_path / "b"), quiet=True)
    for a, b in zip(_leaves(G1.variables) + _leaves(D1.variables), _leaves(G2.variables) + _leaves(D2.variables)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # hard labels from the same seed: a different run (the labels reach the discriminator)
    cfg_h = _cond_cfg(**{"gan.steps": 1, "gan.labels": "hard", "gan.balance": True})
    train_gan(cfg_h.model.generator, cfg_h.model.discriminator, cfg_h.gan, ds, str(tmp_path / "h"), quiet=True)
    first = json.loads(open(tmp_path / "h" / "metrics.jsonl").readline())
    assert first["d_loss"] != log[0]["d_loss"]
    np.testing.assert_array_equal(np.load(tmp_path / "h" / "real_labels.npy"), np.eye(6)[hard])


# ------------------------------------------------------------------ imbalanced synthetic data
def test_imbalanced_synthetic_split():
    for ratio in (2.0, 10.0, 25.0):
        spec = S.SyntheticSpec(num_seen=12, num_unseen=3, samples_per_class=50, image_size=8, imbalance_ratio=ratio)
        counts = S.class_counts(spec, "seen")
        assert counts.max() == 50 and abs(counts.max() / counts.min() - ratio) <= ratio * 0.5 / counts.min() + 1e-9
        assert np.all(np.diff(np.sort(counts)[::-1]) <= 0) and len(set(counts.tolist())) > 2
        np.testing.assert_array_equal(counts, S.class_counts(spec, "seen"))  # deterministic
        np.testing.assert_array_equal(S.class_counts(spec, "unseen"), [50] * 3)
    spec = S.SyntheticSpec(num_seen=8, num_unseen=2, samples_per_class=6, image_size=8, imbalance_ratio=3.0)
    a, b = S.generate(spec, "seen"), S.generate(spec, "seen")
    np.testing.assert_array_equal(a["images"], b["images"])
    flat = S.generate(dataclasses.replace(spec, imbalance_ratio=1.0), "seen")
    assert S.make_classes(spec) == S.make_classes(dataclasses.replace(spec, imbalance_ratio=1.0))
    # each seen class keeps the first n_c images of its balanced version; unseen unaffected
    for c in range(8):
        mine, full = a["images"][a["labels"] == c], flat["images"][flat["labels"] == c]
        np.testing.assert_array_equal(mine, full[: len(mine)])
    np.testing.assert_array_equal(S.generate(spec, "unseen")["images"],
                                  S.generate(dataclasses.replace(spec, imbalance_ratio=1.0), "unseen")["images"])


# ------------------------------------------------------------------ classwise evaluation
def test_class_groups():
    g = CW.class_groups([5, 50, 10, 40, 20, 30])
    np.testing.assert_array_equal(g["head"], [1, 3])
    np.testing.assert_array_equal(g["tail"], [0, 2])
    np.testing.assert_array_equal(g["middle"], [4, 5])
    g = CW.class_groups([7, 7, 7])  # ties: by index
    assert list(g["head"]) == [0] and list(g["tail"]) == [2]


def test_classwise_quality_separates_good_and_bad_classes():
    rng = np.random.default_rng(0)
    real = [rng.normal(k, 1.0, (40, 2, 2, 3)).astype(np.float32) for k in range(6)]
    counts = [60, 50, 40, 30, 20, 10]

    def generate(k):  # head classes perfect copies of the distribution, tail classes collapsed and wrong
        return rng.normal(k, 1.0, (40, 2, 2, 3)) if k < 2 else np.full((40, 2, 2, 3), k + 3.0)

    feature_fn = lambda x: np.asarray(x).reshape(len(x), -1)[:, :4]  # noqa: E731
    predict_fn = lambda x: np.clip(np.round(np.asarray(x).mean(axis=(1, 2, 3))), 0, 9).astype(int)  # noqa: E731
    res = CW.classwise_quality(generate, real, counts, feature_fn, predict_fn, list(range(6)))
    h, t = res["groups"]["head"], res["groups"]["tail"]
    assert h["classes"] == ["0", "1"] and t["classes"] == ["4", "5"]
    assert h["fid"] < 1.0 < t["fid"] and h["mean_class_fid"] < t["mean_class_fid"]
    assert h["retention"] > 0.5 and t["retention"] == 0.0 and t["real_retention"] > 0.5
    assert h["train_images_per_class"] == 55.0 and len(res["per_class"]) == 6


def test_evaluate_classwise_and_sample_class_cli(tmp_path):
    from sage_jax.cli import main
    from sage_jax.demo import ASSET_DIR

    spec = S.SyntheticSpec(samples_per_class=2)  # the tiny classes the shipped oracles know
    S.write_folder(spec, str(tmp_path / "real"), "seen")
    names = [c.name for c in S.split_classes(S.make_classes(spec), "seen")][:4]
    G = init_generator(dict(size=32, style_dim=8, n_mlp=1, channels=((4, 8), (8, 8), (16, 8), (32, 8)), c_dim=4),
                       jax.random.PRNGKey(0))
    checkpoints.save_model(tmp_path / "g", G, extra={"class_names": names, "class_counts": [9, 5, 3, 1]})
    out = tmp_path / "eval"
    assert main(["evaluate", "--real", str(tmp_path / "real"), "--conditional", f"a={tmp_path / 'g'}",
                 "--conditional", f"b={tmp_path / 'g'}", "--metrics", "classwise", "--per-class", "3",
                 "--out", str(out), "--oracles", os.path.join(ASSET_DIR, "oracles"), "--quiet"]) == 0
    res = json.load(open(out / "classwise.json"))
    assert set(res["models"]) == {"a", "b"}
    assert res["models"]["a"]["groups"]["head"]["classes"] == [names[0]]
    assert res["models"]["a"]["groups"]["tail"]["classes"] == [names[3]]
    assert res["models"]["a"]["groups"]["head"]["fid"] == res["models"]["b"]["groups"]["head"]["fid"]
    assert "| a |" in open(out / "classwise.md").read()
    assert main(["evaluate", "--real", str(tmp_path / "real"), "--metrics", "classwise", "--out", str(out)]) == 2
    # sampling: a class label, a labels file, and the errors
    arr = tmp_path / "s.npy"
    assert main(["sample", "--checkpoint", str(tmp_path / "g"), "--class-label", "2", "--seeds", "0-2",
                 "--save-array", str(arr), "--out", str(tmp_path / "s"), "--quiet"]) == 0
    z = jax.vmap(lambda s: jax.random.normal(jax.random.PRNGKey(s), (8,)))(jnp.arange(3))
    np.testing.assert_allclose(np.load(arr), np.asarray(G(z, labels=np.array([2, 2, 2]))), atol=1e-5)
    np.save(tmp_path / "labels.npy", np.array([2, 2, 2]))
    assert main(["sample", "--checkpoint", str(tmp_path / "g"), "--labels", str(tmp_path / "labels.npy"),
                 "--seeds", "0-2", "--save-array", str(tmp_path / "s2.npy"), "--out", str(tmp_path / "s2"),
                 "--quiet"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "s2.npy"), np.load(arr))
    for extra in ([], ["--class-label", "4"], ["--labels", str(tmp_path / "missing.npy")]):
        assert main(["sample", "--checkpoint", str(tmp_path / "g"), "--n", "2", "--out", str(tmp_path / "x"),
                     "--quiet", *extra]) == 2


@pytest.mark.heavy
def test_encoder_trains_on_a_conditional_generator(tmp_path):
    """Inversion training draws classes for its generated images; W+ decoding needs no labels."""
    from test_train import tiny_cfg
    from sage_jax.data.loader import seen_dataset
    from sage_jax.train.encoder import train_encoder

    cfg = tiny_cfg(**{"psp.steps": 1, "model.encoder.num_layers": 18})
    G = init_generator(dict(cfg.model.generator.to_dict(), c_dim=8), jax.random.PRNGKey(0))
    ds = seen_dataset(cfg.data)
    psp = train_encoder(cfg.model.encoder, G, cfg.psp, ds, str(tmp_path / "w"), quiet=True)
    assert psp.decoder.c_dim == 8
    x, _ = ds.load_batch(range(2))
    assert np.isfinite(np.asarray(psp.reconstruct(x))).all()


def test_train_pipeline_with_a_conditional_generator(tmp_path):
    """`sage-jax train` with gan.conditional (soft labels): every later stage (encoder,
    class embeddings, dictionary, oracles, the model bundle) runs on the conditional
    generator, and `generate` and `sample --class-label` use what it wrote."""
    from test_demo import FAST, TINY
    from sage_jax.cli import main

    # a 16 px generator (6 W+ layers: the dictionary's groups edit layers 0-5) and a
    # narrow encoder (FAST makes it 18 layers deep): the pipeline is the same at every size
    small = ["--config.data.num_seen=6", "--config.data.num_unseen=2", "--config.data.imbalance_ratio=3",
             "--config.model.generator.size=16", "--config.model.generator.style_dim=8",
             "--config.model.generator.channels=((4, 8), (8, 8), (16, 8))",
             "--config.model.encoder.style_dim=8"]
    cond = ["--config.gan.recipe=adversarial", "--config.gan.conditional=true", "--config.gan.labels=soft",
            "--config.gan.soft_classifier_steps=5"]
    work = tmp_path / "run"
    assert main(["train", "--config", TINY, "--workdir", str(work), "--quiet", *FAST, *small, *cond]) == 0
    model = work / "model"
    psp = checkpoints.load_psp(str(model / "psp"))
    assert psp.decoder.c_dim == 6 and psp.decoder.size == 16
    probs = np.load(work / "gan" / "real_labels.npy")   # soft labels of the real images
    assert probs.shape[1] == 6 and np.allclose(probs.sum(1), 1, atol=1e-5) and (probs.max(1) < 1).all()
    shots = tmp_path / "unseen"
    assert main(["make-synthetic", "--config", TINY, "--split", "unseen", "--out", str(shots),
                 "--config.data.num_seen=6", "--config.data.num_unseen=2", "--config.data.samples_per_class=6"]) == 0
    out = tmp_path / "gen"
    assert main(["generate", "--checkpoint", str(model / "psp"), "--dictionary", str(model / "dictionary"),
                 "--stats", str(model / "class_stats.npz"), "--shots", str(shots), "--k", "1", "--n", "3",
                 "--t-c", "3", "--t-a", "4", "--save-codes", "--out", str(out), "--quiet"]) == 0
    classes = sorted(d for d in os.listdir(shots) if os.path.isdir(shots / d))
    assert len(classes) == 2
    for c in classes:
        imgs = [f for f in os.listdir(out / c) if f.startswith("sage_")]
        assert len(imgs) == 3
        assert np.asarray(Image.open(out / c / imgs[0])).shape == (16, 16, 3)
    assert np.isfinite(np.load(out / "codes.npy")).all()
    arr = tmp_path / "s.npy"
    assert main(["sample", "--checkpoint", str(work / "gan" / "g_ema"), "--class-label", "5", "--seeds", "0-1",
                 "--save-array", str(arr), "--out", str(tmp_path / "s"), "--quiet"]) == 0
    assert np.load(arr).shape == (2, 16, 16, 3)
