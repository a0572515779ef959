"""The glyph dataset built from the whole installed font set (scripts/install_fonts.sh;
CI installs it), as ``sage-jax make-glyphs`` builds it: the filters at work on real
packages, the family split and the attribute labels of faces whose design is known, and
the shipped glyph model's held-out letters against the split.

Skipped when the packages are not installed, except in CI (``CI`` set), where a missing
package is a failure: the test must run there."""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from sage_jax.data import glyphs as G

pytestmark = pytest.mark.heavy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = os.path.join(ROOT, "scripts", "font_packages.txt")


def _missing_packages() -> list[str]:
    wanted = [line.split("#")[0].strip() for line in open(PACKAGES)]
    wanted = [p for p in wanted if p]
    if not shutil.which("dpkg-query"):
        return wanted
    missing = []
    for p in wanted:
        r = subprocess.run(["dpkg-query", "-W", "-f", "${db:Status-Status}", p], capture_output=True, text=True)
        if r.stdout.strip() != "installed":
            missing.append(p)
    return missing


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    missing = _missing_packages()
    if missing:
        msg = f"font packages not installed ({len(missing)}: {' '.join(missing[:5])} ...): scripts/install_fonts.sh"
        if os.environ.get("CI"):
            pytest.fail("CI must install the fonts before the tests: " + msg)
        pytest.skip(msg)
    out = tmp_path_factory.mktemp("full") / "glyphs32"
    return G.build_glyph_dataset(str(out), None, size=32, seed=0, held_out=0.2, processes=2, progress=False,
                                 write_images=False)


def test_counts_and_packages(report):
    c = report["counts"]
    # the survey: about 700 covering faces, about 580 after near-duplicates, ~99 families;
    # measured here: 739 covering, 544 kept in 83 families (docs/glyphs.md)
    assert 650 <= c["after_coverage"] <= 800
    assert c["after_coverage"] > c["after_faint"] > c["after_duplicates"] >= 480
    assert c["families"] >= 70
    assert (c["seen_classes"], c["unseen_classes"], c["classes"]) == (62, 78, 140)
    assert c["images"] == 140 * c["after_duplicates"]
    # the build records the version of every package that holds a face it used (42 of the 45:
    # fonts-stix and fonts-hack hold only near-duplicates, fonts-symbola a symbol font)
    wanted = {line.split("#")[0].strip() for line in open(PACKAGES)} - {""}
    assert set(report["packages"]) <= wanted and len(report["packages"]) >= 38
    assert all(v for v in report["packages"].values())


def test_filters_drop_what_the_survey_found(report):
    f = report["filtered"]
    symbol = {x["face"] for x in f["symbol"]}
    assert "D050000L" in symbol                             # URW Dingbats: symbols at ASCII codes
    faint = f["faint"]
    assert len(faint) >= 40 and all(x["median_ink"] < 0.03 for x in faint)
    assert all(("Thin" in x["face"] or "Light" in x["face"] or "Hairline" in x["face"]
                or x["median_ink"] < 0.03) for x in faint)
    # near-duplicates: one design under two names keeps one (Liberation Sans = Arimo metrics and outlines)
    kept_files = {(x["path"], x["font_index"]) for x in report["faces"]}
    assert not {(x["path"], x["index"]) for x in f["duplicate"]} & kept_files
    assert {x["kept_path"] for x in f["duplicate"]} <= {p for p, _ in kept_files}
    pairs = [x["face"] + " " + x["kept"] for x in f["duplicate"]]
    assert any("Liberation" in p and "Arimo" in p for p in pairs) or any("LiberationSans" in p for p in pairs)
    # empty glyphs are seen and the face dropped (EB Garamond's empty Greek, Play's ς)
    assert f["empty_glyphs"] and all(x["empty"] >= 1 for x in f["empty_glyphs"])
    # look-alikes: measured on this set, never an unseen class
    unseen = {c for c in G.UNSEEN_CHARS}
    assert len(report["lookalikes"]) >= 30 and not set(report["lookalikes"]) & unseen


def test_family_split(report):
    faces = report["faces"]
    by_group = collections.defaultdict(set)
    by_family = collections.defaultdict(set)
    for x in faces:
        by_group[x["group"]].add(x["split"])
        by_family[x["family"]].add(x["split"])
    assert all(len(s) == 1 for s in by_group.values())
    assert all(len(s) == 1 for s in by_family.values())
    held = sum(x["split"] == "heldout" for x in faces) / len(faces)
    assert 0.12 <= held <= 0.28


def test_attribute_labels_of_known_faces(report):
    faces = {x["face"]: x for x in report["faces"]}
    weights = collections.Counter(x["weight"] for x in report["faces"])
    assert set(weights) <= set(range(100, 1000, 50)) and len(weights) >= 8   # evenly covered 100-900
    from fontTools.ttLib import TTFont

    for x in report["faces"]:     # the labels are the font files' own OS/2 and post tables
        font = TTFont(x["path"], fontNumber=x["font_index"], lazy=True)
        os2, post = font["OS/2"], font["post"]
        w = int(os2.usWeightClass)
        assert x["weight"] == (w * 100 if 1 <= w <= 9 else w), x["face"]
        assert x["width"] == int(os2.usWidthClass), x["face"]
        if os2.fsSelection & 1 or abs(float(post.italicAngle)) > 0.5:
            assert x["italic"] == 1, x["face"]
        if post.isFixedPitch:
            assert x["monospace"] == 1, x["face"]
        font.close()
        if "italic" in x["style"].lower():
            assert x["italic"] == 1, x["face"]
    known = {"DejaVuSans-Bold": dict(weight=700, italic=0, monospace=0, serif_name="sans"),
             "DejaVuSansMono": dict(weight=400, italic=0, monospace=1, serif_name="mono"),
             "DejaVuSerif-Italic": dict(weight=400, italic=1, monospace=0, serif_name="serif")}
    present = {k: v for k, v in known.items() if k in faces}
    assert present, "none of the DejaVu reference faces kept"
    for name, want in present.items():
        assert {k: faces[name][k] for k in want} == want, name
    # Noto Sans's grid: 4 widths of one design, the condensed ones labelled so
    noto = [x for x in report["faces"] if x["family"].startswith("Noto Sans") and "Display" not in x["family"]
            and "Mono" not in x["family"]]
    assert {x["width"] for x in noto} >= {3, 5}


def test_shipped_glyph_model_holds_held_out_faces_only(report):
    from sage_jax.assets import GLYPH_DIR

    z = np.load(os.path.join(GLYPH_DIR, "heldout_unseen.npz"))
    split = {x["face"]: x["split"] for x in report["faces"]}
    faces = set(z["face"].tolist())
    assert faces and all(split.get(f) == "heldout" for f in faces), sorted(f for f in faces if split.get(f) != "heldout")
    cfg = json.load(open(os.path.join(GLYPH_DIR, "config.json")))
    assert cfg["data"]["held_out"] == report["held_out"] and cfg["data"]["name"] == "glyphs"
