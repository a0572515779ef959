"""The shipped glyph model (sage_jax/assets/glyph_model, made by scripts/make_glyph_model.sh):
what it holds, and its demo from another folder reproducing the figures the README and
docs/glyphs.md report for it (same seed, same numbers)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from sage_jax.assets import GLYPH_DIR
from sage_jax.cli import main

# the README's glyph table (seed 0): retention of each mode and shot count
README_RETENTION = {("age", 1): 0.66, ("age", 3): 0.71, ("sage", 1): 0.71, ("sage", 3): 0.80}


def test_the_shipped_glyph_model_holds_what_the_demo_needs():
    cfg = json.load(open(os.path.join(GLYPH_DIR, "config.json")))
    assert cfg["data"]["name"] == "glyphs" and cfg["model"]["generator"]["upsample_mode"] == "smooth-skip"
    z = np.load(os.path.join(GLYPH_DIR, "heldout_unseen.npz"))
    assert len(z["class_names"]) == 78 and sorted(set(z["label"].tolist())) == list(range(78))
    assert np.bincount(z["label"]).min() >= 24 and z["gray"].dtype == np.uint8
    prov = json.load(open(os.path.join(GLYPH_DIR, "provenance.json")))
    q = prov["stage_quality"]
    assert {"generator", "inversion", "dictionary"} <= set(q)
    assert q["inversion"]["unseen"]["images"] == 780 and q["generator"]["samples"] == 1000
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(GLYPH_DIR) for f in fs)
    assert size < 20 * 2**20


@pytest.mark.heavy
def test_glyph_demo_reproduces_the_readme(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)        # the shipped model by name, from any folder
    assert main(["demo", "--model", "glyphs", "--out", "demo", "--quiet"]) == 0
    res = json.load(open(tmp_path / "demo" / "results.json"))
    got = {(r["mode"], r["shots"]): r["retention"] for r in res["rows"]}
    for k, v in README_RETENTION.items():
        assert got[k] == pytest.approx(v, abs=0.011), k
    assert res["target"]["reached"] is True
