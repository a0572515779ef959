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
