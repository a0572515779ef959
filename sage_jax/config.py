"""Loading ml_collections configs from ``configs/*.py`` files."""

from __future__ import annotations

import importlib.util
import os

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
