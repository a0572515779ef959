"""GAN and encoder training: metrics, checkpoints, exact resume, SIGTERM, devices,
config overrides, TensorBoard files."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fixture_utils import ROOT, fixture
from sage_jax import checkpoints
from sage_jax.config import apply_overrides, load_config, split_overrides
from sage_jax.data.loader import seen_dataset
from sage_jax.train.encoder import train_encoder
from sage_jax.train.gan import train_gan

TINY = os.path.join(ROOT, "configs", "tiny.py")


def tiny_cfg(**overrides):
    cfg = load_config(TINY)
    base = ["data.samples_per_class=4", "data.num_seen=8", "data.num_unseen=2", "gan.batch_size=8",
            "gan.log_every=1", "gan.ckpt_every=2", "gan.sample_every=4", "gan.n_sample=4",
            "psp.batch_size=8", "psp.log_every=1", "psp.ckpt_every=2", "psp.latent_avg_samples=64"]
    return apply_overrides(cfg, base + [f"{k}={v}" for k, v in overrides.items()])


# an 8 px StyleGAN2 for the tests of the (adversarial) GAN loop (logging, resume, devices, signals):
# the loop is the same at every size, and its four updates compile in a fraction of
# the tiny model's time (the tiny config itself trains in test_demo's pipeline test;
# test_conditional trains the class-conditional one at this size)
MICRO_GAN = {"data.size": 8, "model.generator.size": 8, "model.generator.style_dim": 8,
             "model.generator.channels": "((4, 8), (8, 8))", "gan.recipe": "adversarial"}


def micro_cfg(**overrides):
    return tiny_cfg(**{**MICRO_GAN, **overrides})


def _leaves(model):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(model.variables)]


@pytest.fixture(scope="module")
def data():
    return seen_dataset(tiny_cfg().data)


def test_gan_training_logs_samples_and_resumes_exactly(tmp_path):
    cfg = micro_cfg(**{"gan.steps": 6})
    data = seen_dataset(cfg.data)
    G1, D1 = train_gan(cfg.model.generator, cfg.model.discriminator, cfg.gan, data, str(tmp_path / "a"), quiet=True)
    log = [json.loads(l) for l in open(tmp_path / "a" / "metrics.jsonl")]
    assert [m["step"] for m in log] == [1, 2, 3, 4, 5, 6]
    assert {"d_loss", "g_loss", "r1", "path", "real_score", "fake_score"} <= set(log[0])
    # the loop's own timing: every logged interval (here one step) and its data wait
    assert all(m["interval_steps"] == 1 and m["interval_s"] > 0 and 0 <= m["data_wait_share"] <= 1 for m in log)
    # the TensorBoard files, read back by TensorBoard's own reader: every logged scalar
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    tb = EventAccumulator(str(tmp_path / "a" / "tensorboard"))
    tb.Reload()
    assert {"d_loss", "g_loss"} <= set(tb.Tags()["scalars"])
    assert [(e.step, e.value) for e in tb.Scalars("d_loss")] == \
        [(m["step"], pytest.approx(m["d_loss"], rel=1e-6)) for m in log]
    assert sorted(os.listdir(tmp_path / "a" / "samples")) == ["0000004.png", "0000006.png"]
    assert checkpoints.load_generator(tmp_path / "a" / "g_ema").size == 8
    # interrupted after 3 steps (checkpoint at 3 is the 'end' of that call), resumed to 6
    train_gan(cfg.model.generator, cfg.model.discriminator, cfg.gan, data, str(tmp_path / "b"), quiet=True,
              stop_after=3)
    G2, D2 = train_gan(cfg.model.generator, cfg.model.discriminator, cfg.gan, data, str(tmp_path / "b"), quiet=True)
    for a, b in zip(_leaves(G1) + _leaves(D1), _leaves(G2) + _leaves(D2)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert [json.loads(l)["step"] for l in open(tmp_path / "b" / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]


def test_gan_hflip_mirrors_the_drawn_images_and_resumes_exactly(tmp_path):
    """``data.hflip``: the real images whose drawn flip is set are mirrored (left-right),
    the others untouched; about half are drawn; the option changes training, and a run
    with it resumed from a checkpoint reaches the uninterrupted run's parameters."""
    from sage_jax.train.gan import flip_images, make_steps, init_state

    x = jnp.arange(2 * 3 * 4 * 1, dtype=jnp.float32).reshape(2, 3, 4, 1)
    out = np.asarray(flip_images(x, jnp.asarray([True, False])))
    np.testing.assert_array_equal(out[0], np.asarray(x)[0, :, ::-1])
    np.testing.assert_array_equal(out[1], np.asarray(x)[1])
    cfg = micro_cfg(**{"gan.steps": 4})
    G, D, _ = init_state(cfg.model.generator, cfg.model.discriminator, cfg.gan, jax.random.PRNGKey(0))
    share = float(np.mean(np.asarray(make_steps(G.module, D.module, cfg.gan).draw(jax.random.PRNGKey(3), 512)["flip"])))
    assert 0.43 < share < 0.57
    data = seen_dataset(cfg.data)
    args = (cfg.model.generator, cfg.model.discriminator, cfg.gan, data)
    G1, D1 = train_gan(*args, str(tmp_path / "a"), quiet=True, hflip=True)
    _, D0 = train_gan(*args, str(tmp_path / "c"), quiet=True, hflip=False)
    # the discriminator sees the real images: some of its Adam steps change sign
    assert max(np.abs(a - b).max() for a, b in zip(_leaves(D1), _leaves(D0))) > 1e-3
    train_gan(*args, str(tmp_path / "b"), quiet=True, stop_after=2, hflip=True)
    G2, D2 = train_gan(*args, str(tmp_path / "b"), quiet=True, hflip=True)
    for a, b in zip(_leaves(G1) + _leaves(D1), _leaves(G2) + _leaves(D2)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_encoder_training_resumes_exactly_and_inverts(tmp_path, data):
    cfg = tiny_cfg(**{"psp.steps": 4, "model.encoder.num_layers": 18})  # 18 layers: fewer units to compile
    G = checkpoints.load_generator(fixture("tiny_rosinality_ckpt.pt"))
    p1 = train_encoder(cfg.model.encoder, G, cfg.psp, data, str(tmp_path / "a"), quiet=True)
    train_encoder(cfg.model.encoder, G, cfg.psp, data, str(tmp_path / "b"), quiet=True, stop_after=2)
    p2 = train_encoder(cfg.model.encoder, G, cfg.psp, data, str(tmp_path / "b"), quiet=True)
    for a, b in zip(_leaves(p1.encoder), _leaves(p2.encoder)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    log = [json.loads(l) for l in open(tmp_path / "a" / "metrics.jsonl")]
    assert {"l2", "latent", "loss"} <= set(log[0]) and len(log) == 4
    psp = checkpoints.load_psp(tmp_path / "a" / "psp")
    x, _ = data.load_batch(range(3))
    raw, codes = psp.invert(x)
    assert codes.shape == (3, 8, 64) and np.isfinite(np.asarray(codes)).all()
    # BatchNorm statistics moved away from their initial values during training
    stats = jax.tree_util.tree_leaves(psp.encoder.variables["batch_stats"])
    assert any(np.abs(np.asarray(s) - np.round(np.asarray(s))).max() > 1e-4 for s in stats)


@pytest.mark.heavy
def test_gan_same_losses_on_1_and_8_devices(tmp_path):
    script = f"""
import json, sys, jax
sys.path.insert(0, {os.path.join(ROOT, 'tests')!r})
from test_train import micro_cfg
from sage_jax.data.loader import seen_dataset
from sage_jax.train.gan import train_gan
from sage_jax import parallel
cfg = micro_cfg(**{{"gan.steps": 2, "gan.sample_every": 0}})
ds = seen_dataset(cfg.data)
out = {{}}
for n in (1, 8):
    w = {str(tmp_path)!r} + f"/w{{n}}"
    train_gan(cfg.model.generator, cfg.model.discriminator, cfg.gan, ds, w, quiet=True,
              mesh=parallel.make_mesh(jax.devices()[:n]))
    out[n] = [json.loads(l) for l in open(w + "/metrics.jsonl")]
print(json.dumps({{"devices": jax.device_count(), "logs": out}}))
"""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["devices"] == 8
    for a, b in zip(result["logs"]["1"], result["logs"]["8"]):
        for k in ("d_loss", "g_loss", "r1", "path"):
            np.testing.assert_allclose(a[k], b[k], rtol=1e-4, err_msg=k)


@pytest.mark.heavy
def test_sigterm_saves_and_the_run_resumes(tmp_path):
    work = tmp_path / "w"
    cmd = [sys.executable, "-m", "sage_jax.cli", "train-gan", "--config", TINY, "--workdir", str(work), "--quiet",
           "--config.train.steps=100000", "--config.gan.ckpt_every=1000", "--config.gan.log_every=1",
           "--config.gan.batch_size=8", "--config.gan.sample_every=0", "--config.data.samples_per_class=4",
           "--config.data.num_seen=8", "--config.data.num_unseen=2",
           *[f"--config.{k}={v}" for k, v in MICRO_GAN.items()]]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = work / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert "stopped by SIGTERM" in err
    steps = [json.loads(l)["step"] for l in metrics.read_text().splitlines()]
    saved = sorted(int(d) for d in os.listdir(work / "checkpoints") if d.isdigit())
    assert saved and saved[-1] == steps[-1] < 100000
    # resuming continues from the saved step (finish early via an override)
    res = subprocess.run([c for c in cmd if not c.startswith("--config.train.steps=")]
                         + [f"--config.train.steps={saved[-1] + 2}"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    steps = [json.loads(l)["step"] for l in metrics.read_text().splitlines()]
    assert steps == list(range(1, saved[-1] + 3))


def test_config_overrides():
    cfg = load_config(TINY)
    apply_overrides(cfg, ["gan.steps=7", "gan.augment=true", "model.encoder.widths=(8, 8, 16, 32)",
                          "train.lr=0.5"], aliases={"train": "psp"})
    assert cfg.gan.steps == 7 and cfg.gan.augment is True and cfg.psp.lr == 0.5
    assert tuple(cfg.model.encoder.widths) == (8, 8, 16, 32)
    with pytest.raises(ValueError, match="did you mean steps"):
        apply_overrides(cfg, ["gan.stepz=3"])
    with pytest.raises(ValueError, match="cannot set gan.steps"):
        apply_overrides(cfg, ["gan.steps=many"])
    rest, ov = split_overrides(["train-gan", "--config", "x.py", "--config.gan.steps", "5", "--config.a.b=2"])
    assert rest == ["train-gan", "--config", "x.py"] and ov == ["gan.steps=5", "a.b=2"]
    for name in ("animal_faces", "flowers", "vggfaces", "nabirds"):
        c = load_config(os.path.join(ROOT, "configs", f"{name}.py"))
        assert c.data.size == 256 and c.model.generator.size == 256 and c.data.num_seen > c.data.num_unseen


def test_encoder_training_with_lpips_weights(tmp_path, data):
    import torch_pickle
    from fixture_utils import state_dict_from_manifest
    sd, _ = state_dict_from_manifest("lpips_vgg.json")
    (tmp_path / "lpips.pt").write_bytes(torch_pickle.dumps(sd))
    from sage_jax.cli import main
    assert main(["train-encoder", "--config", TINY, "--workdir", str(tmp_path / "w"), "--quiet",
                 "--generator", fixture("tiny_rosinality_ckpt.pt"), "--lpips", str(tmp_path / "lpips.pt"),
                 "--config.train.steps=2", "--config.psp.batch_size=4", "--config.psp.log_every=1",
                 "--config.psp.latent_avg_samples=64", "--config.data.samples_per_class=2",
                 "--config.data.num_seen=8", "--config.data.num_unseen=2", "--config.model.encoder.num_layers=18"]) == 0
    log = [json.loads(l) for l in open(tmp_path / "w" / "metrics.jsonl")]
    assert "lpips" in log[0] and log[0]["lpips"] > 0
    assert log[0]["loss"] > log[0]["l2"] + log[0]["latent"]  # the perceptual term is in the total


def test_discriminator_learning_rate_and_skipped_path_step(tmp_path):
    """``gan.d_lr`` scales only the discriminator's Adam step (the first step of Adam
    with beta1 = 0 moves every parameter by about lr * sign(grad), so doubling d_lr
    doubles D's move and leaves G's untouched), and ``path_regularize=0`` runs no
    path-length update at all (no 'path' metric; it used to run one with weight 0)."""
    import jax.numpy as jnp

    from sage_jax.train.gan import init_state, make_steps

    def first_moves(**over):
        cfg = micro_cfg(**over)
        G, D, s = init_state(cfg.model.generator, cfg.model.discriminator, cfg.gan, jax.random.PRNGKey(0))
        steps = make_steps(G.module, D.module, cfg.gan)
        real = jnp.asarray(seen_dataset(cfg.data).load_batch(range(8))[0])
        draws = steps.draw(jax.random.PRNGKey(1), 8)
        s1, _ = steps.d_step(s, real, draws["d"], draws["aug"])
        s2, _ = steps.g_step(s1, draws["g"], draws["aug"])
        d_move = [np.abs(np.asarray(a) - np.asarray(b)) for a, b in
                  zip(jax.tree_util.tree_leaves(s1["d"]), jax.tree_util.tree_leaves(s["d"]))]
        g_move = [np.asarray(a) - np.asarray(b) for a, b in
                  zip(jax.tree_util.tree_leaves(s2["g"]), jax.tree_util.tree_leaves(s1["g"]))]
        return d_move, g_move

    d_plain, g_plain = first_moves()
    d_fast, g_fast = first_moves(**{"gan.d_lr": 0.004})   # 2 x gan.lr (0.002)
    big = [(a > 1e-4) for a in d_plain]                    # parameters with a real gradient
    assert sum(int(m.sum()) for m in big) > 100
    ratio = np.concatenate([f[m] / p[m] for f, p, m in zip(d_fast, d_plain, big)])
    np.testing.assert_allclose(np.median(ratio), 2.0, rtol=0.02)
    # G's first update sees a different D, but its step size is still lr: same scale
    g_scale = [np.abs(np.concatenate([x.ravel() for x in g])).max() for g in (g_plain, g_fast)]
    np.testing.assert_allclose(g_scale[0], g_scale[1], rtol=0.05)

    cfg = micro_cfg(**{"gan.steps": 4, "gan.path_regularize": 0.0, "gan.g_reg_every": 2})
    train_gan(cfg.model.generator, cfg.model.discriminator, cfg.gan, seen_dataset(cfg.data), str(tmp_path), quiet=True)
    log = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    assert len(log) == 4 and not any("path" in m for m in log) and all("g_loss" in m for m in log)


def test_encoder_learning_rate_schedules():
    """``psp.lr_schedule``: constant (pSp) or cosine-decayed to 0 over the steps; anything
    else refused."""
    from sage_jax.train.encoder import _optimizer

    p = {"w": jnp.ones(3)}
    g = {"w": jnp.ones(3)}

    def update_at(tx, step):
        state = tx.init(p)
        for _ in range(step + 1):
            upd, state = tx.update(g, state, p)
        return float(jnp.abs(upd["w"]).max())

    assert update_at(_optimizer(0.1, "constant", 10), 10) == pytest.approx(0.1, rel=1e-3)
    assert update_at(_optimizer(0.1, "cosine", 10), 0) == pytest.approx(0.1, rel=1e-3)
    assert update_at(_optimizer(0.1, "cosine", 10), 5) == pytest.approx(0.05, rel=1e-3)
    assert update_at(_optimizer(0.1, "cosine", 10), 10) == 0.0
    with pytest.raises(ValueError, match="psp.lr_schedule"):
        _optimizer(0.1, "linear", 10)
