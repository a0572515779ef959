"""The reconstruction recipe of the generator (``gan.recipe="reconstruction"``): the class
sampler, the mapping's regression, the training loop (learning, exact resume, the saved
conditional generator) and its refusals."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sage_jax import checkpoints
from sage_jax.data.loader import seen_dataset
from sage_jax.models import init_generator
from sage_jax.train.gan import train_gan
from sage_jax.train.reconstruction import check_config, class_sampler, fit_mapping, sampler_target
from test_train import micro_cfg

RECIPE = {"gan.recipe": "reconstruction", "gan.recon_lr": 0.01, "gan.encoder_width": 4,
          "gan.mapping_steps": 50, "gan.n_sample": 4}


def test_class_sampler_finds_each_class_mean_and_spread():
    rng = np.random.default_rng(0)
    d = 6
    direction = np.eye(d)[2]
    # class 0: spread 3 along axis 2 about mean 5; class 1: only two codes
    c0 = 5.0 + 3.0 * rng.standard_normal((400, 1)) * direction + 0.01 * rng.standard_normal((400, d))
    c1 = np.stack([np.full(d, -1.0), np.full(d, 1.0)])
    codes = np.concatenate([c0, c1]).astype(np.float32)
    labels = np.array([0] * 400 + [1] * 2)
    mus, bases = class_sampler(codes, labels, 2, rank=3)
    np.testing.assert_allclose(mus[0], codes[:400].mean(0), atol=1e-5)
    np.testing.assert_allclose(mus[1], 0.0, atol=1e-6)
    top = bases[0, :, 0]
    assert abs(abs(top[2]) - 3.0) < 0.3 and np.abs(np.delete(top, 2)).max() < 0.05
    assert np.abs(bases[0, :, 1:]).max() < 0.05          # the other directions are noise
    # two codes span one direction (of length |c - mean| = sqrt(d)); the rest is zero
    assert np.isclose(np.linalg.norm(bases[1, :, 0]), np.sqrt(d), rtol=1e-5)
    assert np.abs(bases[1, :, 1:]).max() < 1e-6
    with pytest.raises(ValueError, match="class 2 has no training image"):
        class_sampler(codes, labels, 3, rank=2)


def test_sampler_target_is_mean_plus_basis_times_normalised_z():
    mus = jnp.asarray([[1.0, 2.0], [3.0, 4.0]])
    bases = jnp.asarray([[[1.0], [0.0]], [[0.0], [2.0]]])
    z = jnp.asarray([[3.0, 4.0], [3.0, 4.0]])   # pixel norm: z / rms(z) = z / sqrt(12.5)
    t = np.asarray(sampler_target(mus, bases, z, jnp.asarray([0, 1])))
    s = 3.0 / np.sqrt(12.5)
    np.testing.assert_allclose(t, [[1.0 + s, 2.0], [3.0, 4.0 + 2 * s]], rtol=1e-5)


def test_fit_mapping_learns_the_class_sampler():
    cfg = micro_cfg(**{"model.generator.c_dim": 3})
    G = init_generator(cfg.model.generator, jax.random.PRNGKey(0))
    rng = np.random.default_rng(1)
    mus = rng.standard_normal((3, G.style_dim)).astype(np.float32) * 2
    bases = rng.standard_normal((3, G.style_dim, 2)).astype(np.float32) * 0.5

    def error(mp):
        z = jax.random.normal(jax.random.PRNGKey(9), (512, G.style_dim))
        y = jnp.arange(512) % 3
        w = G.module.apply({"params": {**G.variables["params"], **mp}, "noises": G.variables["noises"]}, z,
                           jax.nn.one_hot(y, 3), method=type(G.module).mapping)
        t = sampler_target(jnp.asarray(mus), jnp.asarray(bases), z, y)
        return float(jnp.sqrt(jnp.mean(jnp.square(w - t))) / jnp.sqrt(jnp.mean(jnp.square(t - mus[y]))))

    before = error({k: v for k, v in G.variables["params"].items() if k.startswith("style_") or k == "embed"})
    mp, err = fit_mapping(G, mus, bases, 3000, 1e-2, jax.random.PRNGKey(2))
    assert before > 2.0          # a random mapping is nowhere near the class means
    assert err < 0.45 and abs(error(mp) - err) < 0.1, (before, err, error(mp))   # 0.32 here


def test_reconstruction_recipe_learns_resumes_exactly_and_saves_a_conditional_generator(tmp_path):
    cfg = micro_cfg(**RECIPE, **{"gan.steps": 30, "gan.log_every": 1, "gan.ckpt_every": 10})
    data = seen_dataset(cfg.data)
    G1, D1 = train_gan(cfg.model.generator, cfg.model.discriminator, cfg.gan, data, str(tmp_path / "a"), quiet=True)
    assert D1 is None and G1.c_dim == data.num_classes == 8
    log = [json.loads(line) for line in open(tmp_path / "a" / "metrics.jsonl")]
    mse = [m["recon_mse"] for m in log if "recon_mse" in m]
    assert len(mse) == 30 and np.mean(mse[-5:]) < 0.7 * np.mean(mse[:5]), mse   # it learns the images
    assert "mapping_relative_error" in log[-1]
    saved = checkpoints.load_generator(str(tmp_path / "a" / "g_ema"))
    assert saved.c_dim == 8
    for a, b in zip(jax.tree_util.tree_leaves(saved.variables), jax.tree_util.tree_leaves(G1.variables)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert (tmp_path / "a" / "samples" / "0000030.png").exists()
    assert (tmp_path / "a" / "class_sampler.npz").exists()
    # interrupted after 12 steps and resumed: the same generator, bit for bit
    assert train_gan(cfg.model.generator, cfg.model.discriminator, cfg.gan, data, str(tmp_path / "b"), quiet=True,
                     stop_after=12) == (None, None)
    assert not (tmp_path / "b" / "g_ema").exists()
    G2, _ = train_gan(cfg.model.generator, cfg.model.discriminator, cfg.gan, data, str(tmp_path / "b"), quiet=True)
    for a, b in zip(jax.tree_util.tree_leaves(G1.variables), jax.tree_util.tree_leaves(G2.variables)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    labels = np.arange(4) % 8
    z = jax.random.normal(jax.random.PRNGKey(3), (4, G1.style_dim))
    assert np.asarray(G1(z, labels=labels)).shape == (4, 8, 8, 3)


def test_bad_recipe_settings_are_refused_before_work(tmp_path):
    data = seen_dataset(micro_cfg().data)
    cfg = micro_cfg(**{"gan.recipe": "vae"})
    with pytest.raises(ValueError, match="gan.recipe must be one of"):
        train_gan(cfg.model.generator, cfg.model.discriminator, cfg.gan, data, str(tmp_path / "x"), quiet=True)
    for key, value in (("gan.recon_lr", 0.0), ("gan.sampler_rank", 0), ("gan.recon_b1", 1.0),
                       ("gan.recon_schedule", "linear")):
        cfg = micro_cfg(**{**RECIPE, key: value})
        with pytest.raises(ValueError, match=key.split(".")[1]):
            check_config(cfg.gan)
        with pytest.raises(ValueError, match=key.split(".")[1]):
            train_gan(cfg.model.generator, cfg.model.discriminator, cfg.gan, data, str(tmp_path / "y"), quiet=True)
        assert not (tmp_path / "y").exists()
    cfg = micro_cfg(**RECIPE, **{"model.generator.c_dim": 3})
    with pytest.raises(ValueError, match="c_dim=3 but the training data has 8 classes"):
        train_gan(cfg.model.generator, cfg.model.discriminator, cfg.gan, data, str(tmp_path / "z"), quiet=True)


def test_the_recipe_logs_a_learning_curve_of_phase_1_and_of_the_finished_generator(tmp_path):
    from sage_jax.metrics.stages import generator_samples
    from sage_jax.train.reconstruction import SamplerGenerator

    cfg = micro_cfg(**RECIPE, **{"gan.steps": 20, "gan.eval_every": 10, "gan.ckpt_every": 10})
    data = seen_dataset(cfg.data)
    seen = []

    def evaluate(G, step):
        x = generator_samples(G, 6, jax.random.PRNGKey(0), batch=4)
        seen.append((step, type(G).__name__, x.shape))
        return {"quality/mean_pixel": float(np.mean(x))}

    G, _ = train_gan(cfg.model.generator, cfg.model.discriminator, cfg.gan, data, str(tmp_path), quiet=True,
                     evaluate=evaluate)
    assert seen == [(10, "SamplerGenerator", (6, 8, 8, 3)), (20, "GeneratorModel", (6, 8, 8, 3))]
    logged = {m["step"]: m for m in map(json.loads, open(tmp_path / "metrics.jsonl")) if "quality/mean_pixel" in m}
    assert sorted(logged) == [10, 20]
    # the phase-1 generator draws at the sampler's codes: z = 0 gives the decoder at the class means
    sampler = np.load(tmp_path / "class_sampler.npz")
    sg = SamplerGenerator(G, sampler["mean"], sampler["basis"])
    np.testing.assert_allclose(np.asarray(sg(np.zeros((3, G.style_dim)), labels=np.array([0, 1, 5]))),
                               np.asarray(G(sampler["mean"][[0, 1, 5]], input_is_latent=True)), rtol=1e-5, atol=1e-6)
