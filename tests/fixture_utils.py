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


def output_scale(ref) -> float:
    """The scale a parity error is measured against: the output's own size, ``max|ref|``,
    except where ``std(ref)`` is above 1 (the encoder's codes, Inception features), where
    it is ``std(ref)``. That is ``min(max|ref|, max(1, std(ref)))``: never larger than the
    fixtures' README bound ``max(1, std(ref))``, and without its floor at 1, so a small
    output (a gradient of 1e-5, an R1 penalty of 5e-5, an LPIPS distance of 1e-2) is
    compared at its own scale, not to an absolute 1e-4 it would meet even when wrong."""
    ref = np.asarray(ref, dtype=np.float64)
    if not ref.size:
        return 0.0
    return min(float(np.max(np.abs(ref))), max(1.0, float(np.std(ref))))


def assert_close(ours, ref, what: str = "", tol: float = 1e-4, scale: float | None = None):
    """Parity: ``max|ours - ref| <= tol * scale``, the scale being :func:`output_scale`
    of the reference unless given. Returns the absolute error.

    With ``SAGE_JAX_PARITY_LOG=FILE`` every comparison appends one JSON line (what, error,
    scale, bound, max|ref|, std(ref)): the measured table of the README comes from it."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != reference {ref.shape}"
    err = float(np.max(np.abs(ours - ref))) if ref.size else 0.0
    s = output_scale(ref) if scale is None else float(scale)
    assert s > 0, f"{what}: the reference is all zeros, give a scale"
    bound = tol * s
    log = os.environ.get("SAGE_JAX_PARITY_LOG")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps({"what": what, "err": err, "scale": s, "rel": err / s, "tol": tol,
                                "max_ref": float(np.max(np.abs(ref))), "std_ref": float(np.std(ref)),
                                "test": os.environ.get("PYTEST_CURRENT_TEST", "")}) + "\n")
    assert err <= bound, f"{what}: max abs error {err:.3g} > {bound:.3g} ({tol:g} of the output's scale {s:.3g})"
    return err


def nchw_to_nhwc(a):
    return np.transpose(np.asarray(a), (0, 2, 3, 1))
