"""ml_collections configs: loading ``configs/*.py`` and command-line overrides.

``--config.SECTION.KEY=VALUE`` sets any value (the type follows the existing value;
tuples and lists are read as Python literals). Unknown keys are refused with the
closest valid names.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import os
from typing import Sequence

import ml_collections


def load_config(path: str | os.PathLike, arg: str | None = None) -> ml_collections.ConfigDict:
    """Import ``path`` and return its ``get_config(arg)``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"_sage_jax_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"{path} has no get_config()")
    return module.get_config(arg) if arg is not None else module.get_config()


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


# the checkout's tiny config, the default of the scripts run from a checkout
CHECKOUT_TINY_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "tiny.py")


def parse_with_config(parser, argv: Sequence[str], default: str = CHECKOUT_TINY_CONFIG):
    """``parser``'s arguments plus ``--config FILE`` (default ``default``) and any
    ``--config.X=Y`` overrides: returns ``(args, config)``; a missing file or a bad
    override ends in ``parser.error`` before any work."""
    rest, overrides = split_overrides(list(argv))
    parser.add_argument("--config", default=default, help=f"config file (default {os.path.relpath(default)})")
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
