"""Helpers to read ``../shared/fixtures``: paths, and state dicts built from the
weight-formula manifests (``*.json``), as the fixtures' README specifies."""

from __future__ import annotations

import json
import os
import zlib

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.environ.get("SAGE_JAX_FIXTURES", os.path.join(ROOT, "..", "shared", "fixtures"))


def fixture(name: str) -> str:
    path = os.path.join(FIXTURES, name)
    if not os.path.exists(path):
        pytest.fail(f"fixture {path} is missing: the checkout must sit beside shared/")
    return path


def unit_stream(name: str, numel: int) -> np.ndarray:
    """The manifest's deterministic unit-variance stream for tensor ``name``."""
    seed = np.uint64(zlib.crc32(name.encode("utf-8")) & 0xFFFFFFFF)
    with np.errstate(over="ignore"):
        x = (seed << np.uint64(32)) + np.arange(numel, dtype=np.uint64)
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (2.0 * ((z >> np.uint64(40)).astype(np.float64) / 2.0**24) - 1.0) * np.sqrt(3.0)
    return u


def state_dict_from_manifest(json_name: str) -> tuple[dict, dict]:
    """(state_dict of numpy arrays, meta) for a ``*.json`` weight manifest."""
    with open(fixture(json_name)) as f:
        manifest = json.load(f)
    sd = {}
    for name, spec in manifest["tensors"].items():
        shape = tuple(spec["shape"])
        dtype = np.dtype(spec.get("dtype", "float32"))
        if spec["rule"] == "keep":
            sd[name] = np.asarray(spec["value"], dtype=dtype).reshape(shape)
        elif spec["rule"] == "formula":
            numel = int(np.prod(shape, dtype=np.int64))
            u = unit_stream(name, numel)
            sd[name] = (spec["mean"] + spec["std"] * u).astype(np.float32).astype(dtype).reshape(shape)
        else:
            raise ValueError(f"unknown rule {spec['rule']!r} for {name}")
    return sd, manifest.get("meta", {})


def assert_close(ours, ref, what: str = "", tol: float = 1e-4):
    """The fixtures' criterion: max|ours - ref| <= tol * max(1, std(ref))."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != reference {ref.shape}"
    err = float(np.max(np.abs(ours - ref))) if ref.size else 0.0
    bound = tol * max(1.0, float(np.std(ref)))
    assert err <= bound, f"{what}: max abs error {err:.3g} > {bound:.3g}"
    return err


def nchw_to_nhwc(a):
    return np.transpose(np.asarray(a), (0, 2, 3, 1))
