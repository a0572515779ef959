"""``sage-jax`` end to end on the tiny reference checkpoint."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

import torch_pickle
from fixture_utils import fixture
from sage_jax import checkpoints
from sage_jax.cli import main, parse_seeds

TINY = fixture("tiny_rosinality_ckpt.pt")


def test_parse_seeds():
    assert parse_seeds("0-3,7,10-11") == [0, 1, 2, 3, 7, 10, 11]
    with pytest.raises(Exception, match="backwards"):
        parse_seeds("5-2")
    with pytest.raises(Exception, match="cannot read seeds"):
        parse_seeds("a-b")


def test_sample_from_seeds_matches_the_api_and_ignores_batch_size(tmp_path):
    out = tmp_path / "s"
    arr = tmp_path / "s.npy"
    assert main(["sample", "--checkpoint", TINY, "--seeds", "3-7", "--batch-size", "2",
                 "--out", str(out), "--save-array", str(arr), "--quiet"]) == 0
    pngs = sorted(p for p in os.listdir(out) if p.startswith("seed"))
    assert pngs == [f"seed{s:06d}.png" for s in range(3, 8)]
    assert Image.open(out / "grid.png").size[0] > 32
    images = np.load(arr)
    assert images.shape == (5, 32, 32, 3) and images.dtype == np.float32
    G = checkpoints.load_generator(TINY)
    z = np.stack([np.asarray(jax.random.normal(jax.random.PRNGKey(s), (64,))) for s in range(3, 8)])
    np.testing.assert_allclose(images, np.asarray(G(z)), atol=1e-5)
    # the PNG is the quantised array
    png = np.asarray(Image.open(out / "seed000004.png"))
    want = np.clip((images[1] + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(png, want)
    # another batch size gives the same images
    arr2 = tmp_path / "s2.npy"
    assert main(["sample", "--checkpoint", TINY, "--seeds", "3-7", "--batch-size", "5",
                 "--out", str(tmp_path / "s2"), "--save-array", str(arr2), "--quiet"]) == 0
    np.testing.assert_allclose(np.load(arr2), images, atol=1e-5)


def test_sample_random_noise_and_truncation_are_seeded(tmp_path):
    # the tiny g_ema has zero noise strengths: give them some so noise shows
    g_ema = {k: (np.full_like(v, 0.5) if k.endswith("noise.weight") else v)
             for k, v in checkpoints.read_torch(TINY)["g_ema"].items()}
    ckpt = tmp_path / "noisy.pt"
    ckpt.write_bytes(torch_pickle.dumps({"g_ema": g_ema}))

    def run(name, *extra):
        arr = tmp_path / f"{name}.npy"
        assert main(["sample", "--checkpoint", str(ckpt), "--n", "3", "--out", str(tmp_path / name),
                     "--save-array", str(arr), "--quiet", *extra]) == 0
        return np.load(arr)

    stored = run("stored")
    r1, r2 = run("r1", "--noise", "random"), run("r2", "--noise", "random")
    np.testing.assert_array_equal(r1, r2)
    assert np.abs(r1 - stored).max() > 1e-3
    t0 = run("t0", "--truncation", "0")
    np.testing.assert_allclose(t0[0], t0[2], atol=1e-5)


def test_sample_from_wplus_latents_and_converted_dir(tmp_path):
    G = checkpoints.load_generator(TINY)
    wplus = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (3, G.n_latent, 64)), np.float32)
    np.save(tmp_path / "w.npy", wplus)
    model_dir = tmp_path / "g_ema"
    assert main(["convert", "--checkpoint", TINY, "--out", str(model_dir)]) == 0
    arr = tmp_path / "o.npy"
    assert main(["sample", "--checkpoint", str(model_dir), "--latents", str(tmp_path / "w.npy"),
                 "--input-is-latent", "--out", str(tmp_path / "o"), "--save-array", str(arr),
                 "--quiet"]) == 0
    np.testing.assert_allclose(np.load(arr), np.asarray(G(wplus, input_is_latent=True)), atol=1e-5)
    assert sorted(os.listdir(tmp_path / "o"))[0] == "grid.png"


def test_convert_discriminator_and_inspect(tmp_path, capsys):
    assert main(["convert", "--checkpoint", TINY, "--which", "d", "--out", str(tmp_path / "d")]) == 0
    assert checkpoints.load_model(tmp_path / "d").kind == "discriminator"
    assert main(["inspect", fixture("tiny_age_layout_ckpt.pt")]) == 0
    out = capsys.readouterr().out
    assert "latent_avg: float32 [8, 64]" in out and "encoder (2 tensors)" in out


def test_cli_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["sample", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    assert main(["sample", "--checkpoint", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "bad.pt" in capsys.readouterr().err
    np.save(tmp_path / "w.npy", np.zeros((2, 8, 64), np.float32))
    assert main(["sample", "--checkpoint", TINY, "--latents", str(tmp_path / "w.npy"),
                 "--out", str(tmp_path / "y")]) == 2
    assert "--input-is-latent" in capsys.readouterr().err


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "sage_jax.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "sample" in r.stdout and "convert" in r.stdout


def test_compilation_cache_setting(tmp_path, monkeypatch):
    """The CLI's persistent compilation cache: a directory from the argument or
    SAGE_JAX_COMPILATION_CACHE, 'off' disables it, an unwritable place is skipped."""
    import jax

    from sage_jax.parallel import enable_compilation_cache

    from sage_jax.parallel import CACHE_MAX_BYTES

    before = jax.config.jax_compilation_cache_dir
    before_max = jax.config.jax_compilation_cache_max_size
    try:
        # JAX's default, no size limit, is also no file lock: the CLI sets a limit
        jax.config.update("jax_compilation_cache_max_size", -1)
        assert enable_compilation_cache(str(tmp_path / "c")) == str(tmp_path / "c")
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "c") and (tmp_path / "c").is_dir()
        assert jax.config.jax_compilation_cache_max_size == CACHE_MAX_BYTES
        import filelock  # noqa: F401  (JAX needs it for the lock; a dependency of ours)
        monkeypatch.setenv("SAGE_JAX_COMPILATION_CACHE", "off")
        assert enable_compilation_cache() is None
        (tmp_path / "file").write_text("x")
        monkeypatch.setenv("SAGE_JAX_COMPILATION_CACHE", str(tmp_path / "file" / "sub"))
        assert enable_compilation_cache() is None
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
        jax.config.update("jax_compilation_cache_max_size", before_max)



def test_training_commands_default_to_the_shipped_tiny_config():
    """Every command with --config takes the shipped ``tiny`` by default, a name that
    resolves from any folder (not a path relative to the repository)."""
    from sage_jax.cli import build_parser
    from sage_jax.config import resolve_config

    parser = build_parser()
    for argv in (["train", "--workdir", "w"], ["train-gan", "--workdir", "w"],
                 ["train-encoder", "--workdir", "w", "--generator", "g"], ["make-synthetic", "--out", "o"]):
        args, _ = parser.parse_known_args(argv)
        assert args.config == "tiny", argv
        assert os.path.isfile(resolve_config(args.config))


def test_the_config_help_names_every_shipped_config(capsys):
    from sage_jax.config import shipped_configs

    for command in ("train", "train-gan", "train-encoder"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = " ".join(capsys.readouterr().out.split())
        missing = [name for name in shipped_configs() if name not in out]
        assert not missing, f"'sage-jax {command} --help' does not name the shipped configs {missing}"
