"""The downstream classifiers (nn/classifiers.py) and their training
(train/classifier.py): shapes, the cosine head, pre-training that learns, the SGIA
balancing sampler, bridging's real-only second stage, frozen backbones, determinism.

Small on purpose (16 px synthetic images, narrow networks, tens of steps): the whole
file shares two compilations of the train step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sage_jax.data import synthetic as syn
from sage_jax.nn.classifiers import CosineHead, ResNet, ViT
from sage_jax.train import classifier as tc

SMALL = dict(widths=(8, 16, 32), blocks=(1, 1, 1))


@pytest.fixture(scope="module")
def seen():
    spec = syn.SyntheticSpec(num_seen=5, num_unseen=2, samples_per_class=50, image_size=16, seed=3,
                             oriented_fraction=0.0)
    d = syn.generate(spec, "seen")
    perm = np.asarray(jax.random.permutation(jax.random.PRNGKey(7), len(d["labels"])))
    tr, te = perm[:200], perm[200:]
    return d["images"][tr], d["labels"][tr], d["images"][te], d["labels"][te]


@pytest.fixture(scope="module")
def pretrained(seen):
    x, y, _, _ = seen
    return tc.pretrain(ResNet(5, **SMALL), x, y, key=jax.random.PRNGKey(0), steps=120, batch_size=32,
                       lr=3e-3, warmup_steps=10)


def _shapes(m, x):
    """Variables, logits and features shapes by abstract evaluation (no compilation)."""
    v = jax.eval_shape(m.init, jax.random.PRNGKey(0), x)
    logits = jax.eval_shape(m.apply, v, x)
    feats = jax.eval_shape(lambda v, x: m.apply(v, x, method=m.features), v, x)
    return v, logits.shape, feats.shape


def test_shapes_and_no_batch_stats():
    for size in (16, 32):
        x = jax.ShapeDtypeStruct((3, size, size, 3), jnp.float32)
        v, logits, feats = _shapes(ResNet(7, **SMALL), x)
        assert set(v) == {"params"}  # GroupNorm: nothing but params
        assert "head" in v["params"] and v["params"]["head"]["kernel"].shape == (32, 7)
        assert logits == (3, 7) and feats == (3, 32)
    v, logits, feats = _shapes(ResNet(2, widths=(8, 16), blocks=(2, 1), head_type="cosine"),
                               jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32))
    assert logits == (1, 2) and feats == (1, 16) and "scale" in v["params"]["head"]
    vit = ViT(4, image_size=16, patch=4, width=24, depth=2, heads=3)
    x = jax.ShapeDtypeStruct((2, 16, 16, 3), jnp.float32)
    v, logits, feats = _shapes(vit, x)
    assert set(v) == {"params"} and "head" in v["params"]
    assert v["params"]["pos_embedding"].shape == (1, 16, 24)
    assert logits == (2, 4) and feats == (2, 24)
    with pytest.raises(ValueError):
        jax.eval_shape(vit.apply, v, jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32))
    with pytest.raises(ValueError):
        _shapes(ViT(4, image_size=18, patch=4), jax.ShapeDtypeStruct((2, 18, 18, 3), jnp.float32))
    # a real forward pass of the ViT (the ResNet's runs in the training tests)
    params = jax.jit(vit.init)(jax.random.PRNGKey(0), jnp.zeros((2, 16, 16, 3)))
    out = np.asarray(jax.jit(vit.apply)(params, jnp.ones((2, 16, 16, 3))))
    assert out.shape == (2, 4) and np.isfinite(out).all()


def test_cosine_head_is_scaled_cosine():
    f = jax.random.normal(jax.random.PRNGKey(1), (5, 6))
    head = CosineHead(3, scale=7.0)
    v = head.init(jax.random.PRNGKey(2), f)
    w = np.asarray(v["params"]["kernel"])
    fn = np.asarray(f) / np.linalg.norm(np.asarray(f), axis=1, keepdims=True)
    wn = w / np.linalg.norm(w, axis=0, keepdims=True)
    np.testing.assert_allclose(np.asarray(head.apply(v, f)), 7.0 * fn @ wn, rtol=1e-5, atol=1e-5)
    assert float(v["params"]["scale"]) == 7.0
    fixed = CosineHead(3, scale=5.0, learn_scale=False)
    assert "scale" not in fixed.init(jax.random.PRNGKey(2), f)["params"]
    # the logits do not depend on the feature norm
    np.testing.assert_allclose(np.asarray(head.apply(v, 10 * f)), np.asarray(head.apply(v, f)), rtol=1e-4)


def test_pretraining_learns(seen, pretrained):
    _, _, xt, yt = seen
    acc = pretrained.accuracy(xt, yt)
    print(f"held-out accuracy {acc:.3f} (chance 0.2), loss {pretrained.losses[:5].mean():.3f} -> "
          f"{pretrained.losses[-10:].mean():.3f}")
    assert acc > 0.6
    assert pretrained.losses[-10:].mean() < 0.6 * pretrained.losses[:5].mean()


def test_same_key_same_training(seen, pretrained):
    x, y, _, _ = seen
    runs = [tc.pretrain(ResNet(5, **SMALL), x, y, key=jax.random.PRNGKey(k), steps=12, batch_size=32, lr=3e-3,
                        warmup_steps=10) for k in (0, 0, 1)]
    np.testing.assert_array_equal(runs[0].losses, runs[1].losses)
    for a, b in zip(jax.tree_util.tree_leaves(runs[0].params), jax.tree_util.tree_leaves(runs[1].params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(runs[0].losses, runs[2].losses)
    # the first steps of the fixture's longer run are the same batches, but a different
    # schedule (cosine over 120 steps), so only the first loss (before any update) agrees
    assert runs[0].losses[0] == pretrained.losses[0]


def _binomial_ok(count, n, p, z=4.5):
    return abs(count - n * p) <= z * np.sqrt(n * p * (1 - p)) + 1e-9


def test_balanced_sampler_real_share():
    real_labels = np.repeat(np.arange(3), [5, 10, 15])  # imbalanced on purpose
    gen_labels = np.repeat(np.arange(3), 20)
    key = jax.random.PRNGKey(4)
    for alpha in (0.0, 0.3, 0.5, 1.0):
        s = tc.BalancedSampler(np.zeros((30, 4, 4, 3)), real_labels, np.ones((60, 4, 4, 3)), gen_labels, alpha)
        plan = s.plan(key, 100, 40)                    # 4000 slots
        gen = s.is_generated[plan]
        if alpha == 0.0:
            assert not gen.any()
        elif alpha == 1.0:
            assert gen.all()
        else:
            assert _binomial_ok(int((~gen).sum()), gen.size, 1 - alpha), (alpha, (~gen).mean())
        # the class mixture is the real one (SGIA draws the real image i first)
        share = np.bincount(s.labels[plan].ravel(), minlength=3) / plan.size
        for c, p in enumerate((5 / 30, 10 / 30, 15 / 30)):
            assert _binomial_ok(share[c] * plan.size, plan.size, p)
    # keys decide everything
    s = tc.BalancedSampler(np.zeros((30, 4, 4, 3)), real_labels, np.ones((60, 4, 4, 3)), gen_labels, 0.5)
    np.testing.assert_array_equal(s.plan(key, 5, 8), s.plan(key, 5, 8))
    assert not np.array_equal(s.plan(key, 5, 8), s.plan(jax.random.PRNGKey(5), 5, 8))
    # balanced_batches yields the same thing
    batches = list(tc.balanced_batches(np.zeros((30, 4, 4, 3)), real_labels, np.ones((60, 4, 4, 3)), gen_labels,
                                       alpha=0.5, batch_size=8, key=key, steps=5))
    plan = s.plan(key, 5, 8)
    for (imgs, labels, is_gen), idx in zip(batches, plan):
        np.testing.assert_array_equal(is_gen, s.is_generated[idx])
        np.testing.assert_array_equal(imgs[:, 0, 0, 0] == 1.0, is_gen)
        np.testing.assert_array_equal(labels, s.labels[idx])


def test_bridging_second_stage_sees_no_generated_image(seen, pretrained):
    x, y, _, _ = seen
    real = (x[:40], y[:40])
    marker = np.full((30, 16, 16, 3), 0.77, np.float32)       # generated images nobody can mistake
    generated = (marker, np.full(30, 4, np.int32))              # all with one (wrong) label
    seen_batches = {1: [], 2: []}

    def hook(stage, step, images, labels, is_generated):
        seen_batches[stage].append((images.copy(), labels.copy(), is_generated.copy()))

    final, bridge = tc.bridging_finetune(pretrained, real, generated, key=jax.random.PRNGKey(1), alpha=0.5,
                                         stage1_steps=10, stage2_steps=10, num_classes=5, on_batch=hook,
                                         batch_size=16, lr=1e-3, warmup_steps=2)
    assert len(seen_batches[1]) == 10 and len(seen_batches[2]) == 10
    stage1_markers = sum(int(np.all(im == 0.77, axis=(1, 2, 3)).sum()) for im, _, _ in seen_batches[1])
    assert stage1_markers > 0 and any(g.any() for _, _, g in seen_batches[1])
    for im, lab, g in seen_batches[2]:
        assert not g.any()
        assert not np.all(im == 0.77, axis=(1, 2, 3)).any()  # by content, not only by flag
    # stage 2 continued from stage 1 (same head shape), and moved
    assert final.num_classes == bridge.num_classes == 5
    assert not np.allclose(np.asarray(final.params["head"]["kernel"]), np.asarray(bridge.params["head"]["kernel"]))


def test_frozen_backbone_only_moves_the_head(seen, pretrained):
    x, y, _, _ = seen
    out = tc.finetune(pretrained, (x[:40], y[:40] % 3), key=jax.random.PRNGKey(2), num_classes=3,
                      train_backbone=False, steps=5, batch_size=16, warmup_steps=1)
    assert out.num_classes == 3
    for name, sub in pretrained.params.items():
        if name == "head":
            continue
        for a, b in zip(jax.tree_util.tree_leaves(sub), jax.tree_util.tree_leaves(out.params[name])):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert out.params["head"]["kernel"].shape == (32, 3)


def test_save_load_and_make_classifier(tmp_path, seen, pretrained):
    _, _, xt, _ = seen
    tc.save_classifier(pretrained, str(tmp_path / "clf"))
    back = tc.load_classifier(str(tmp_path / "clf"))
    assert back.model == pretrained.model
    np.testing.assert_array_equal(back.logits(xt[:8]), pretrained.logits(xt[:8]))
    from sage_jax.metrics.nas import default_nas_config

    vit = tc.make_classifier(default_nas_config().model, 7)
    assert isinstance(vit, ViT) and vit.num_classes == 7 and vit.patch == 4
    res = tc.make_classifier({"kind": "resnet", "widths": [8, 16], "blocks": [1, 2], "head_type": "cosine"}, 3)
    assert isinstance(res, ResNet) and res.blocks == (1, 2) and res.head_type == "cosine"
    with pytest.raises(ValueError):
        tc.make_classifier({"kind": "mlp"}, 3)


_DEVICES_SCRIPT = """
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=" + sys.argv[1]
os.environ["JAX_PLATFORMS"] = "cpu"
import jax, numpy as np
from sage_jax.nn.classifiers import ResNet
from sage_jax.train import classifier as tc
x = np.asarray(jax.random.uniform(jax.random.PRNGKey(0), (64, 16, 16, 3), minval=-1, maxval=1))
y = np.arange(64) % 4
clf = tc.pretrain(ResNet(4, widths=(8, 16), blocks=(1, 1)), x, y, key=jax.random.PRNGKey(1), steps=8, batch_size=8)
assert len(jax.devices()) == int(sys.argv[1])
print(repr(clf.losses.tolist()))
"""


@pytest.mark.heavy
def test_same_losses_on_one_and_eight_devices(tmp_path):
    """Data parallelism changes where the work runs, not what is computed: the batch
    sharded over 8 (CPU) devices, params replicated, gives the 1-device losses."""
    import ast
    import os
    import subprocess
    import sys

    script = tmp_path / "devices.py"
    script.write_text(_DEVICES_SCRIPT)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = root
    losses = {}
    for n in (1, 8):
        out = subprocess.run([sys.executable, str(script), str(n)], capture_output=True, text=True, env=env,
                             cwd=root, check=True)
        losses[n] = np.array(ast.literal_eval(out.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(losses[8], losses[1], rtol=1e-5)
