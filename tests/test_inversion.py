"""Refinement of encoder codes by optimisation (sage_jax.inversion), the inversion
setting recorded in the class statistics and enforced on the shots, and the commands'
--refine-steps / --refine-lr flags."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sage_jax import checkpoints
from sage_jax.cli import main
from sage_jax.inversion import (CachedInverter, InversionSetting, Inverter, code_offset, reconstruction_mse,
                                refine_codes)
from sage_jax.statistics import ClassStatistics
from tiny_models import make_class_folders, tiny_psp_file


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("inversion")
    tiny_psp_file(root / "psp.pt")
    psp = checkpoints.load_psp(root / "psp.pt")
    # targets the decoder can make: images of codes near latent_avg
    rng = np.random.default_rng(0)
    w = rng.normal(scale=0.5, size=(4, psp.n_latent, psp.decoder.style_dim)).astype(np.float32)
    images = np.asarray(psp.decoder(psp.absolute_codes(w), input_is_latent=True))
    make_class_folders(root / "seen", n_classes=4, per_class=3)
    make_class_folders(root / "unseen", n_classes=2, per_class=2, seed=5)
    return root, psp, images


def test_refined_codes_reconstruct_better_and_deterministically(setup):
    _, psp, images = setup
    raw = psp.encoder(images)
    before = reconstruction_mse(psp, images, raw)
    refined = refine_codes(psp.decoder, code_offset(psp), images, raw, 30, 0.05)
    after = reconstruction_mse(psp, images, refined)
    assert np.all(after < 0.7 * before), (before, after)           # every image, not just on average
    # the styles the decoder does not use stay as the encoder gave them
    n = psp.n_latent
    np.testing.assert_array_equal(np.asarray(refined[:, n:]), np.asarray(raw[:, n:]))
    assert float(jnp.abs(refined[:, :n] - raw[:, :n]).max()) > 1e-3
    # same inputs, same codes; and images do not interact (another chunking, same codes)
    again = refine_codes(psp.decoder, code_offset(psp), images, raw, 30, 0.05)
    np.testing.assert_array_equal(np.asarray(again), np.asarray(refined))
    chunked = refine_codes(psp.decoder, code_offset(psp), images, raw, 30, 0.05, chunk=3)
    np.testing.assert_allclose(np.asarray(chunked), np.asarray(refined), rtol=1e-5, atol=1e-5)
    # more steps fit better
    longer = reconstruction_mse(psp, images, refine_codes(psp.decoder, code_offset(psp), images, raw, 60, 0.05))
    assert longer.mean() < after.mean()


def test_refinement_is_adam_on_each_images_mse(setup):
    """The steps are optax.adam's on the summed per-image MSE, whatever the loop form."""
    import optax

    _, psp, images = setup
    raw = psp.encoder(images)
    n, lr = psp.n_latent, 0.05
    avg = jnp.asarray(code_offset(psp))[:n]

    def loss(c):
        recon = psp.decoder(c + avg, input_is_latent=True)
        return jnp.sum(jnp.mean(jnp.square(recon - images), axis=(1, 2, 3)))

    tx = optax.adam(lr)
    c = raw[:, :n]
    state = tx.init(c)
    for _ in range(4):
        updates, state = tx.update(jax.grad(loss)(c), state, c)
        c = optax.apply_updates(c, updates)
    ours = refine_codes(psp.decoder, code_offset(psp), images, raw, 4, lr)[:, :n]
    step = float(jnp.abs(c - raw[:, :n]).max())
    assert step > 1e-2
    np.testing.assert_allclose(np.asarray(ours), np.asarray(c), rtol=0, atol=1e-4 * step)


def test_cached_inverter_refines_each_image_once(setup):
    root, psp, images = setup
    inv = Inverter(psp, InversionSetting(3, 0.05))
    calls = []

    class Counting:   # counts the images the wrapped Inverter is asked to invert
        setting, n_styles, style_dim, input_size, variables = (inv.setting, inv.n_styles, inv.style_dim,
                                                               inv.input_size, inv.variables)

        def __call__(self, x):
            calls.append(len(x))
            return inv(x)

    x = np.asarray(jax.image.resize(images, (len(images), psp.encoder.input_size, psp.encoder.input_size, 3),
                                    "bilinear"))
    cached = CachedInverter(Counting())
    first = cached(x)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(inv(x)))
    again = cached(x[::-1])          # the same images in another order: from the cache
    np.testing.assert_array_equal(np.asarray(again), np.asarray(first)[::-1])
    assert calls == [len(x)] and cached.hits == len(x)
    cached(np.concatenate([x[:1], x[:1] + 0.01]))   # one new image: inverted (with its batch)
    assert calls == [len(x), 2]
    assert cached.setting == inv.setting and cached.n_styles == psp.encoder.n_styles


def test_zero_steps_are_the_encoders_codes_exactly(setup):
    _, psp, images = setup
    raw = psp.encoder(images)
    assert refine_codes(psp.decoder, code_offset(psp), images, raw, 0) is raw
    np.testing.assert_array_equal(np.asarray(Inverter(psp)(images)), np.asarray(raw))
    np.testing.assert_array_equal(np.asarray(Inverter(psp, InversionSetting(0, 0.5))(images)), np.asarray(raw))
    with pytest.raises(ValueError, match="whole number >= 0"):
        refine_codes(psp.decoder, code_offset(psp), images, raw, -1)
    with pytest.raises(ValueError, match="positive"):
        InversionSetting(3, 0.0)


def test_settings_compare_and_round_trip():
    assert InversionSetting(0, 0.5) == InversionSetting() and InversionSetting(0, 0.5, True) == InversionSetting()
    assert InversionSetting(5, 0.02) != InversionSetting(5, 0.03) != InversionSetting()
    assert InversionSetting.from_dict(InversionSetting(7, 0.04, True).as_dict()) == InversionSetting(7, 0.04, True)
    assert InversionSetting.from_dict(None) == InversionSetting.from_dict({}) == InversionSetting()
    with pytest.raises(ValueError, match="unknown inversion setting"):
        InversionSetting.from_dict({"refine_step": 3})


def test_statistics_record_the_setting_and_old_files_load_as_steps_0(tmp_path):
    stats = ClassStatistics(["a", "b"], np.array([2, 3]), np.zeros((2, 18, 8), np.float32), "abc",
                            inversion=InversionSetting(12, 0.03))
    path = str(tmp_path / "s.npz")
    stats.save(path)
    assert ClassStatistics.load(path).inversion == InversionSetting(12, 0.03)
    # a file written before the setting existed: its meta has no "inversion"
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["meta"]))
    del meta["inversion"]
    arrays["meta"] = np.asarray(json.dumps(meta))
    old = str(tmp_path / "old.npz")
    np.savez(old, **arrays)
    loaded = ClassStatistics.load(old)
    assert loaded.inversion == InversionSetting() and loaded.inversion.refine_steps == 0


def test_generator_refuses_shots_encoded_another_way(setup, tmp_path):
    from sage_jax.generation import SageGenerator

    root, psp, _ = setup
    assert main(["embed", "--checkpoint", str(root / "psp.pt"), "--data", str(root / "seen"), "--out",
                 str(tmp_path / "s.npz"), "--refine-steps", "2", "--refine-lr", "0.03", "--quiet"]) == 0
    stats = ClassStatistics.load(str(tmp_path / "s.npz"))
    assert stats.inversion == InversionSetting(2, 0.03) and stats.moments is not None
    d = checkpoints.load_dictionary(root / "psp.pt")
    gen = SageGenerator(psp, d, stats)                       # default: the statistics' own setting
    assert gen.inverter.setting == InversionSetting(2, 0.03)
    with pytest.raises(ValueError, match=r"2 refinement steps at lr 0.03.*pass --refine-steps 2 --refine-lr 0.03"):
        SageGenerator(psp, d, stats, inversion=InversionSetting())
    with pytest.raises(ValueError, match="--refine-steps 2 --refine-lr 0.03"):
        SageGenerator(psp, d, stats, inversion=Inverter(psp, InversionSetting(2, 0.05)))


def test_commands_refine_and_refuse_mismatches(setup, tmp_path, capsys):
    root, psp, _ = setup
    ckpt = str(root / "psp.pt")
    stats = str(tmp_path / "s.npz")
    # impossible values are refused before any work (nothing written)
    for cmd in (["invert", "--checkpoint", ckpt, "--images", str(root / "unseen"), "--out", str(tmp_path / "i")],
                ["embed", "--checkpoint", ckpt, "--data", str(root / "seen"), "--out", stats]):
        assert main(cmd + ["--refine-steps", "-3"]) == 2
        assert "--refine-steps must be 0" in capsys.readouterr().err
        assert main(cmd + ["--refine-steps", "3", "--refine-lr", "-1"]) == 2
        assert "--refine-lr must be a positive number" in capsys.readouterr().err
    assert not (tmp_path / "i").exists() and not (tmp_path / "s.npz").exists()
    # invert: refined codes reconstruct the inputs better than the encoder's
    base = ["invert", "--checkpoint", ckpt, "--images", str(root / "unseen"), "--no-recon", "--quiet"]
    assert main(base + ["--out", str(tmp_path / "i0")]) == 0
    assert main(base + ["--out", str(tmp_path / "i1"), "--refine-steps", "25", "--refine-lr", "0.05"]) == 0
    assert json.load(open(tmp_path / "i1" / "inversion.json"))["refine_steps"] == 25
    from sage_jax.images import load_image

    files = open(tmp_path / "i0" / "files.txt").read().split()
    x = np.stack([load_image(f, 32) for f in files])
    mse = [reconstruction_mse(psp, x, np.load(tmp_path / d / "offsets.npy")).mean() for d in ("i0", "i1")]
    assert mse[1] < mse[0]
    # embed with one setting; generate follows it by default and refuses another
    assert main(["embed", "--checkpoint", ckpt, "--data", str(root / "seen"), "--out", stats,
                 "--refine-steps", "2", "--quiet"]) == 0
    gen = ["generate", "--checkpoint", ckpt, "--stats", stats, "--shots", str(root / "unseen"), "--n", "2",
           "--t-c", "2", "--t-a", "4", "--quiet"]
    assert main(gen + ["--out", str(tmp_path / "bad"), "--refine-steps", "0"]) == 2
    err = capsys.readouterr().err
    assert "2 refinement steps" in err and "the encoder's codes" in err and "--refine-steps 2" in err
    assert not (tmp_path / "bad").exists()
    assert main(gen + ["--out", str(tmp_path / "g")]) == 0
    assert json.load(open(tmp_path / "g" / "generation.json"))["inversion"]["refine_steps"] == 2
    # train-dictionary refuses another setting than its --stats too
    assert main(["train-dictionary", "--checkpoint", ckpt, "--data", str(root / "seen"), "--stats", stats,
                 "--workdir", str(tmp_path / "w"), "--steps", "1", "--a-length", "4", "--refine-steps", "5",
                 "--quiet"]) == 2
    assert "--refine-steps 2" in capsys.readouterr().err
    # LPIPS weights without refinement have no use
    assert main(["embed", "--checkpoint", ckpt, "--data", str(root / "seen"), "--out", str(tmp_path / "x.npz"),
                 "--refine-steps", "0", "--lpips", ckpt]) == 2
    assert "give --refine-steps N" in capsys.readouterr().err


def test_pipeline_reads_the_inversion_section_and_records_it():
    import ml_collections

    from sage_jax.pipeline import _config_json, inversion_setting

    cfg = ml_collections.ConfigDict({"seed": 0})
    assert inversion_setting(cfg) == InversionSetting()            # configs without the section
    cfg.inversion = ml_collections.ConfigDict({"refine_steps": 40, "refine_lr": 0.03})
    setting = inversion_setting(cfg)
    assert setting == InversionSetting(40, 0.03)
    assert json.loads(_config_json(cfg, setting))["inversion"] == {"refine_steps": 40, "refine_lr": 0.03,
                                                                   "lpips": False}
    cfg.inversion.refine_steps = -1
    with pytest.raises(ValueError, match="config 'inversion' section: refine steps must be"):
        inversion_setting(cfg)
