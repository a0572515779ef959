"""ml_collections configs: their defaults, loading them by name or path, and
command-line overrides.

Defaults: :func:`default_config` is every key a run reads, each section from the module
that reads it (``gan``: :func:`sage_jax.train.gan.default_config`, ``psp``:
:func:`sage_jax.train.encoder.default_config`, ``dictionary``:
:func:`sage_jax.train.dictionary.default_config`; ``data``, ``model``, ``generation``,
``inversion``, ``oracles`` take their values from the defaults of the code that reads
them; ``statistics`` and ``quality``, read only by ``sage_jax.pipeline``, are written
there). The shipped configs (``configs/*.py``) start
from it and override what their setting needs, so each default is written once and
every shipped config has every key. :func:`load_config` also adds the keys a config
file lacks (an older or hand-written one), so the trainers read keys without fallbacks.

Names: ``load_config("tiny")`` (a name without ``/`` or ``.py`` that is not a file) is
the shipped ``tiny.py``: from the package ``sage_jax._configs``, a symbolic link to the
repository's top-level ``configs/`` folder (a wheel copies the files; an editable
install reads the clone's folder), else the ``configs/`` folder beside the package.
A path loads that file.

``--config.SECTION.KEY=VALUE`` sets any value (the type follows the existing value;
tuples and lists are read as Python literals). Unknown keys are refused with the
closest valid names.

Why not ``ml_collections.config_flags``: it defines the config as an absl flag of the
global ``absl.flags.FLAGS``, parsed once per process by ``absl.app.run``. The command
line here is argparse with subcommands: each subcommand has its own ``--config``
default and help, ``--config.train.KEY`` is an alias of the command's own section
(:func:`apply_overrides` ``aliases``), ``sage-jax launch`` passes a command's overrides
on to its processes untouched, and errors are the command's usage errors (exit status
2, closest valid key names). config_flags supports none of that without a second,
global flag parser beside argparse, so the override parser stays (about 60 lines:
:func:`split_overrides`, :func:`apply_overrides`).
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import os
from typing import Sequence

import ml_collections

from sage_jax.errors import UsageError


# ------------------------------------------------------------------ defaults
def default_config() -> ml_collections.ConfigDict:
    """Every key a run reads, at its default: the trainers' sections from their modules,
    the other sections from the defaults of the code that reads them (the synthetic
    dataset's :class:`~sage_jax.data.synthetic.SyntheticSpec`, the networks' constructor
    arguments, :class:`~sage_jax.generation.SampleOptions`,
    :class:`~sage_jax.inversion.InversionSetting`,
    :func:`~sage_jax.metrics.oracles.train_oracles`), so no value is written twice. Not a
    run of its own: the data defaults are the synthetic dataset at its natural 32 px, the
    networks SAGE's 256 px StyleGAN2 config-f and pSp encoder; ``configs/*.py`` override
    what their setting needs."""
    import dataclasses
    import inspect

    from sage_jax.data.glyphs import build_glyph_dataset
    from sage_jax.data.synthetic import SyntheticSpec
    from sage_jax.generation import SampleOptions
    from sage_jax.inversion import InversionSetting
    from sage_jax.metrics.oracles import train_oracles
    from sage_jax.nn.psp import GradualStyleEncoder
    from sage_jax.nn.stylegan2 import Discriminator, Generator, default_channels
    from sage_jax.train import dictionary, encoder, gan

    def field(cls, name):
        return cls.__dataclass_fields__[name].default

    config = ml_collections.ConfigDict()
    config.seed = 0                 # every trainer's seed follows it (a reference)

    spec = SyntheticSpec()
    data = config.data = ml_collections.ConfigDict()
    data.name = "synthetic"         # synthetic | folder | tfds | glyphs
    data.root = ""                  # folder datasets: <class>/<image> or <class>_<i>.jpg; glyphs: make-glyphs --out
    data.data_dir = ""              # tfds: where `sage-jax build-dataset` wrote it; glyphs: make-glyphs --tfds
                                    # (when set, read instead of root)
    data.tfds_name = ""             # tfds: the built dataset's name (glyphs: "" means glyphs)
    data.split = ""                 # sub-folder of root (e.g. train), or the tfds split (glyphs: unused)
    data.size = spec.image_size     # 32 px is the natural size of the synthetic dataset
    data.num_seen = spec.num_seen   # synthetic: seen classes; folder: how many classes are seen (0: all);
                                    # glyphs: checked against the dataset's (62)
    data.num_unseen = spec.num_unseen   # synthetic: unseen classes (new combinations of seen factor values);
                                        # glyphs: checked (78)
    data.samples_per_class = spec.samples_per_class  # synthetic: images per class; folder: 0 uses every image;
                                                     # glyphs: 0 every training face, n > 0 the first n
    data.imbalance_ratio = spec.imbalance_ratio      # > 1: long-tailed seen classes (Softlabel-GAN experiments)
    # glyphs: the share of faces held out (make-glyphs --held-out), checked against the build
    data.held_out = inspect.signature(build_glyph_dataset).parameters["held_out"].default
    data.hflip = False              # adversarial GAN: mirror real images at random (rosinality's loader does)

    config.model = ml_collections.ConfigDict()
    g = config.model.generator = ml_collections.ConfigDict()
    g.size = 256                    # SAGE/AGE work at 256 px
    for name in ("style_dim", "n_mlp", "blur_kernel", "lr_mlp", "upsample_mode", "c_dim"):
        g[name] = field(Generator, name)
    g.channels = default_channels(g.size)   # config-f's channel table, resolution -> channels
    d = config.model.discriminator = ml_collections.ConfigDict()
    d.size = g.get_ref("size")
    d.channels = g.get_ref("channels")
    d.blur_kernel = g.get_ref("blur_kernel")
    d.c_dim = g.get_ref("c_dim")    # > 0: projection discriminator (Miyato & Koyama 2018)
    d.stddev_group = field(Discriminator, "stddev_group")   # minibatch-stddev group size (StyleGAN2: 4)
    e = config.model.encoder = ml_collections.ConfigDict()
    e.kind = "GradualStyleEncoder"  # pSp's encoder, as AGE/SAGE
    for name in ("num_layers", "mode", "input_size", "n_styles", "style_dim", "widths"):
        e[name] = field(GradualStyleEncoder, name)

    config.gan = gan.default_config()
    config.psp = encoder.default_config()
    config.dictionary = dictionary.default_config()
    for section in (config.gan, config.psp, config.dictionary):
        section.seed = config.get_ref("seed")

    gen = config.generation = ml_collections.ConfigDict()   # the model's generation defaults
    gen.t_B = field(SampleOptions, "retrieval_t_B")
    gen.t_A = field(SampleOptions, "t_A")
    inv = config.inversion = ml_collections.ConfigDict()
    for f in dataclasses.fields(InversionSetting):   # 0 refinement steps: the encoder's codes
        inv[f.name] = f.default
    st = config.statistics = ml_collections.ConfigDict()
    st.samples_per_class = 0        # 0: every training image; > 0: the first n of each class
    q = config.quality = ml_collections.ConfigDict()   # stage measures (synthetic data only)
    q.samples = 1000                # random generator samples scored by the oracles
    q.heldout_per_class = 10        # fresh real images per class for the inversion's measures
    q.seed = 2024
    o = config.oracles = ml_collections.ConfigDict()   # ground-truth oracles (synthetic data only)
    oracle_args = inspect.signature(train_oracles).parameters
    o.steps = oracle_args["steps"].default
    o.batch_size = oracle_args["batch"].default
    return config


def add_missing(config: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Add to ``config`` (in place) every key of ``defaults`` it lacks, walking nested
    sections; the values it has stay as they are."""
    for key in defaults.keys():
        value = defaults[key]
        if key not in config:
            config[key] = value
        elif isinstance(value, ml_collections.ConfigDict) and isinstance(config[key], ml_collections.ConfigDict):
            add_missing(config[key], value)
    return config


# ------------------------------------------------------------------ loading
DEFAULT_CONFIG = "tiny"   # the commands' --config default
CONFIG_HELP = "a shipped config by name (tiny, glyphs, flowers, animal_faces, nabirds, vggfaces) or a path"


def shipped_config_dir() -> str:
    """The folder of the shipped configs: the package ``sage_jax._configs`` (a wheel's
    copy of the repository's ``configs/``, or, installed editable, the clone's folder),
    else the clone's top-level ``configs/`` beside the package."""
    try:
        spec = importlib.util.find_spec("sage_jax._configs")
    except ImportError:
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        if os.path.isfile(os.path.join(folder, "tiny.py")):
            return folder
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def shipped_configs() -> dict[str, str]:
    """{name: path} of the shipped configs (``_*.py`` are their shared parts)."""
    folder = shipped_config_dir()
    names = sorted(f[:-3] for f in os.listdir(folder) if f.endswith(".py") and not f.startswith("_")) \
        if os.path.isdir(folder) else []
    return {n: os.path.join(folder, n + ".py") for n in names}


class ConfigNotFound(UsageError, FileNotFoundError):
    """Neither a config file nor a shipped config's name."""


def resolve_config(name_or_path: str | os.PathLike) -> str:
    """The file of ``name_or_path``: an existing file as it is; a name (no ``/``, no
    ``.py``) as the shipped config of that name; else :class:`ConfigNotFound`, which
    lists the shipped names."""
    path = os.fspath(name_or_path)
    if os.path.isfile(path):
        return path
    shipped = shipped_configs()
    names = ", ".join(shipped) or "none found"
    if "/" not in path and os.sep not in path and not path.endswith(".py"):
        if path in shipped:
            return shipped[path]
        raise ConfigNotFound(f"no shipped config named {path!r} (shipped: {names}); or give a config file's path")
    raise ConfigNotFound(f"config file {path} does not exist (or name a shipped config: {names})")


def _import_file(path: str, what: str):
    spec = importlib.util.spec_from_file_location(f"_sage_jax_{what}_{abs(hash(os.path.abspath(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_sibling(config_file: str, name: str):
    """The module ``name`` (e.g. ``"_full_size"``) from the folder of ``config_file``
    (a config's ``__file__``): how a config imports its shared parts wherever it is
    loaded from (the clone, an installed wheel, a user's copy of both files)."""
    return _import_file(os.path.join(os.path.dirname(os.path.abspath(config_file)), name + ".py"), "config_part")


def import_config(name_or_path: str | os.PathLike, arg: str | None = None) -> ml_collections.ConfigDict:
    """``get_config(arg)`` of the config file (or shipped name) as the file builds it,
    without :func:`load_config`'s completion."""
    path = resolve_config(name_or_path)
    module = _import_file(path, "config")
    if not hasattr(module, "get_config"):
        raise ValueError(f"{path} has no get_config()")
    return module.get_config(arg) if arg is not None else module.get_config()


def load_config(name_or_path: str | os.PathLike, arg: str | None = None) -> ml_collections.ConfigDict:
    """The config of a file or of a shipped config's name (``"tiny"``, see
    :func:`resolve_config`): its ``get_config(arg)``, with every key of
    :func:`default_config` it lacks added at its default (a section it lacks follows
    its ``seed``)."""
    config = import_config(name_or_path, arg)
    defaults = default_config()
    if isinstance(config.get("seed"), int):
        defaults.seed = config.seed
    return add_missing(config, defaults)


def _coerce(text: str, current):
    if isinstance(current, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true/false, got {text!r}")
    if isinstance(current, int) and not isinstance(current, bool):
        return int(text)
    if isinstance(current, float):
        return float(text)
    if isinstance(current, (tuple, list)):
        value = ast.literal_eval(text)
        if not isinstance(value, (tuple, list)):
            value = (value,)
        return type(current)(value)
    if current is None:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    return text


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str],
                    aliases: dict[str, str] | None = None) -> ml_collections.ConfigDict:
    """Apply ``KEY.PATH=VALUE`` strings (``--config.`` already stripped) in order.
    ``aliases`` maps a first path component to another (``train`` -> ``gan``)."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} needs the form --config.section.key=value")
        path, text = item.split("=", 1)
        parts = path.split(".")
        if aliases and parts[0] in aliases:
            parts[0] = aliases[parts[0]]
        node = config
        for i, part in enumerate(parts):
            keys = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            if part not in keys:
                where = ".".join(parts[:i]) or "the config"
                close = difflib.get_close_matches(part, keys, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else f"; valid: {', '.join(sorted(keys))}"
                raise ValueError(f"unknown config key {'.'.join(parts[:i + 1])!r} in {where}{hint}")
            if i < len(parts) - 1:
                node = node[part]
        current = node[parts[-1]]
        if isinstance(current, ml_collections.ConfigDict):
            raise ValueError(f"{path} is a section, not a value")
        try:
            node[parts[-1]] = _coerce(text, current)
        except (ValueError, SyntaxError, TypeError) as e:
            raise ValueError(f"cannot set {path}={text!r}: {e}") from None
    return config


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate ``--config.X=Y`` (and ``--config.X Y``) items from the other arguments."""
    rest, overrides = [], []
    argv = list(argv)
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--config."):
            body = a[len("--config."):]
            if "=" not in body:
                if i + 1 >= len(argv):
                    raise ValueError(f"{a} needs a value")
                body = f"{body}={argv[i + 1]}"
                i += 1
            overrides.append(body)
        else:
            rest.append(a)
        i += 1
    return rest, overrides


def parse_with_config(parser, argv: Sequence[str], default: str = DEFAULT_CONFIG):
    """``parser``'s arguments plus ``--config NAME_OR_FILE`` (default ``default``) and any
    ``--config.X=Y`` overrides: returns ``(args, config)``; an unknown config or a bad
    override ends in ``parser.error`` before any work."""
    rest, overrides = split_overrides(list(argv))
    parser.add_argument("--config", default=default, help=f"{CONFIG_HELP} (default {default})")
    args = parser.parse_args(rest)
    try:
        return args, apply_overrides(load_config(args.config), overrides)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))


# ------------------------------------------------------------------ validation
_POSITIVE_INTS = ("steps", "batch_size", "log_every", "ckpt_every", "keep", "a_length",
                  "latent_avg_samples", "n_sample")
_POSITIVE_FLOATS = ("lr",)


def check_section(section: ml_collections.ConfigDict, name: str) -> None:
    """Refuse values no run can use (a zero interval divides by zero mid-run, a zero or
    negative batch or learning rate trains nothing), naming each one."""
    import math

    problems = []
    for key in _POSITIVE_INTS:
        if key in section:
            v = section[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                problems.append(f"{name}.{key}={v!r} must be a positive integer")
    def number(v):
        return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)

    for key in _POSITIVE_FLOATS:
        if key in section and not (number(section[key]) and section[key] > 0):
            problems.append(f"{name}.{key}={section[key]!r} must be a positive number")
    if "d_lr" in section and not (number(section.d_lr) and section.d_lr >= 0):   # 0: the discriminator uses lr
        problems.append(f"{name}.d_lr={section.d_lr!r} must be 0 (use lr) or a positive number")
    for key, what in (("sample_every", "0 (never)"), ("restyle_iterations", "0 (a pSp encoder, one pass)")):
        v = section.get(key, 0)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            problems.append(f"{name}.{key}={v!r} must be {what} or a positive integer")
    if name == "dictionary" and section.get("init", "random") not in ("random", "pca"):
        problems.append(f"dictionary.init={section.init!r} must be 'random' (as the originals) or 'pca'")
    if problems:
        raise ValueError("; ".join(problems))


def check_generator(g: ml_collections.ConfigDict, name: str = "model.generator") -> None:
    """The resolution must be one the architecture can make: a power of two >= 4 with a
    channel count for every resolution from 4 up to it."""
    size = g.size
    if isinstance(size, bool) or not isinstance(size, int) or size < 4 or size & (size - 1):
        raise ValueError(f"{name}.size={size!r}: a StyleGAN2 makes power-of-two resolutions >= 4 (32, 64, 256, ...)")
    channels = dict((int(r), int(c)) for r, c in g.channels) if g.get("channels") is not None else None
    if channels is not None:
        missing = [r for r in (2 ** i for i in range(2, size.bit_length())) if r not in channels]
        if missing:
            raise ValueError(f"{name}.size={size} needs channel counts for resolutions {missing} "
                             f"(model.generator.channels has {sorted(channels)}): the architecture cannot make "
                             f"{size} px images")


def check_keys(values: dict | ml_collections.ConfigDict, valid, where: str) -> None:
    """Refuse keys that ``valid`` does not have, with the closest valid names."""
    valid = list(valid)
    for key in values:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; valid: {', '.join(sorted(valid))}"
            raise ValueError(f"unknown key {key!r} in {where}{hint}")
