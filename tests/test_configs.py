import os

import jax
import numpy as np

from fixture_utils import ROOT, fixture
from sage_jax import checkpoints
from sage_jax.config import apply_overrides, load_config
from sage_jax.models import init_discriminator, init_generator


def _shapes(tree):
    return jax.tree_util.tree_map(lambda a: tuple(np.shape(a)), tree)


# The reference's tiny checkpoints (``Generator(32, 64, 2)``, channels {4: 32, 8: 32, 16: 16,
# 32: 16}): configs/tiny.py with these overrides (its own generator is wider, with 8 mapping layers)
REFERENCE_TINY = ["model.generator.channels=((4, 32), (8, 32), (16, 16), (32, 16))", "model.generator.n_mlp=2"]


def test_tiny_config_with_the_reference_overrides_is_the_architecture_of_the_tiny_checkpoints():
    cfg = apply_overrides(load_config(os.path.join(ROOT, "configs", "tiny.py")), REFERENCE_TINY)
    G = init_generator(cfg.model.generator, jax.random.PRNGKey(cfg.seed))
    D = init_discriminator(cfg.model.discriminator, jax.random.PRNGKey(1))
    ckpt = checkpoints.read_torch(fixture("tiny_rosinality_ckpt.pt"))
    G_ref = checkpoints.load_generator(ckpt["g_ema"])
    D_ref = checkpoints.load_discriminator(ckpt["d"])
    assert _shapes(G.variables) == _shapes(G_ref.variables)
    assert _shapes(D.variables) == _shapes(D_ref.variables)
    img = G(np.zeros((2, 64), np.float32))
    assert img.shape == (2, 32, 32, 3) and np.isfinite(np.asarray(img)).all()
    assert D(img).shape == (2, 1)


def test_init_is_a_function_of_the_key():
    cfg = load_config(os.path.join(ROOT, "configs", "tiny.py"))
    a = init_generator(cfg.model.generator, jax.random.PRNGKey(0))
    b = init_generator(cfg.model.generator, jax.random.PRNGKey(0))
    c = init_generator(cfg.model.generator, jax.random.PRNGKey(1))
    la, lb, lc = (jax.tree_util.tree_leaves(m.variables) for m in (a, b, c))
    assert all(np.array_equal(x, y) for x, y in zip(la, lb))
    assert not all(np.array_equal(x, y) for x, y in zip(la, lc))


def test_tiny_dictionary_section_fits_the_trainer():
    from sage_jax.train.dictionary import default_config

    cfg = load_config(os.path.join(ROOT, "configs", "tiny.py"))
    base = default_config()
    assert set(cfg.dictionary.keys()) == set(base.keys())
    base.update(cfg.dictionary)  # what `train-dictionary --config configs/tiny.py` does
    assert base.a_length == 8 and tuple(map(tuple, base.groups)) == ((0, 1, 2), (3, 4, 5), (6, 7))
    assert base.init == "pca"


# ----------------------------------------------------------------- every option, one place per default
SHIPPED = ("tiny", "flowers", "animal_faces", "nabirds", "vggfaces", "glyphs")


def _keys(section, prefix=""):
    """Every nested key of a ConfigDict, as dotted paths."""
    import ml_collections

    out = []
    for key in section.keys():
        if isinstance(section[key], ml_collections.ConfigDict):
            out += _keys(section[key], f"{prefix}{key}.")
        else:
            out.append(prefix + key)
    return out


def _has(config, path):
    node = config
    for part in path.split("."):
        if part not in node:
            return False
        node = node[part]
    return True


def test_every_shipped_config_has_every_key_of_the_module_defaults():
    """As its file builds it (no completion by load_config): every key of every section
    default, so every option can be set on the command line of every config."""
    from sage_jax.config import default_config, import_config, shipped_configs
    from sage_jax.train import dictionary, encoder, gan

    assert set(SHIPPED) <= set(shipped_configs())
    sections = {"gan": gan.default_config(), "psp": encoder.default_config(),
                "dictionary": dictionary.default_config()}
    wanted = list(dict.fromkeys(_keys(default_config())
                                + [f"{name}.{k}" for name, s in sections.items() for k in _keys(s)]))
    for name in shipped_configs():
        config = import_config(name)
        missing = [k for k in wanted if not _has(config, k)]
        assert not missing, f"configs/{name}.py lacks {missing}"


def test_options_missing_before_apply_to_the_256px_configs():
    from sage_jax.config import apply_overrides, import_config, load_config

    for load in (import_config, load_config):
        cfg = apply_overrides(load("flowers"), ["gan.ema_rampup=10", "gan.d_lr=0.001", "psp.restyle_iterations=2",
                                                "gan.recipe=reconstruction", "dictionary.init=pca"])
        assert (cfg.gan.ema_rampup, cfg.gan.d_lr, cfg.psp.restyle_iterations) == (10.0, 0.001, 2)
        assert (cfg.gan.recipe, cfg.dictionary.init) == ("reconstruction", "pca")


def test_tiny_config_is_the_one_the_shipped_model_was_trained_with():
    import json

    config = json.loads(load_config("tiny").to_json_best_effort())
    with open(os.path.join(ROOT, "sage_jax", "assets", "tiny_model", "config.json")) as f:
        trained = json.load(f)

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
        return out

    have, want = flat(config), flat(trained)
    assert set(want) <= set(have)
    assert {k: have[k] for k in want if have[k] != want[k]} == {}


def test_step_options_take_their_defaults_from_the_gan_section():
    from sage_jax.train import gan

    assert gan.StepOptions() == gan.StepOptions.from_config(gan.default_config())
    tiny = load_config("tiny")
    assert gan.StepOptions.from_config(tiny.gan).lr == tiny.gan.lr


def test_configs_load_by_name_from_any_folder(tmp_path, monkeypatch):
    import pytest

    from sage_jax.config import ConfigNotFound, UsageError, load_config as load

    monkeypatch.chdir(tmp_path)
    assert load("tiny").data.size == 32 and load("flowers").data.size == 256
    assert load(os.path.join(ROOT, "configs", "tiny.py")).to_dict() == load("tiny").to_dict()
    for bad in ("tinyy", "configs/tiny.py", "tiny.py"):   # not here: no such file, and not a name
        with pytest.raises(ConfigNotFound, match="animal_faces, flowers, glyphs, nabirds, tiny, vggfaces") as e:
            load(bad)
        assert isinstance(e.value, UsageError) and isinstance(e.value, FileNotFoundError)
    # a user's copy of a dataset config loads its shared part from beside it
    for name in ("flowers.py", "_full_size.py"):
        (tmp_path / name).write_text(open(os.path.join(ROOT, "configs", name)).read().replace("85", "7"))
    assert load(str(tmp_path / "flowers.py")).data.num_seen == 7


def test_an_unknown_config_name_is_a_usage_error(tmp_path, capsys):
    from sage_jax.cli import main

    assert main(["make-synthetic", "--config", "flower", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no shipped config named 'flower'" in err and "flowers" in err and "Traceback" not in err


def test_the_package_holds_the_shipped_configs():
    """``sage_jax/_configs`` is a symbolic link to the top-level ``configs/`` (so a wheel
    and an editable install both have them as ``sage_jax._configs``), and the package
    discovery of pyproject.toml finds it."""
    import tomllib

    link = os.path.join(ROOT, "sage_jax", "_configs")
    assert os.path.islink(link) and os.path.samefile(link, os.path.join(ROOT, "configs"))
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        tool = tomllib.load(f)["tool"]["setuptools"]
    assert tool["packages"]["find"]["include"] == ["sage_jax*"]
    assert os.path.isfile(os.path.join(ROOT, "configs", "__init__.py"))   # a package, so the wheel keeps it
    from sage_jax.config import shipped_config_dir

    assert os.path.samefile(shipped_config_dir(), os.path.join(ROOT, "configs"))
