"""The font-glyph dataset (sage_jax/data/glyphs.py) on matplotlib's bundled fonts only:
DejaVu Sans, Sans Mono and Serif (4 faces each) and STIXGeneral (4) cover the 140
classes; Computer Modern (cm*) covers Latin only; Last Resort covers everything with
boxes. Faces with one change (a character left out of the cmap, a glyph emptied) are
written with fontTools into a temporary folder."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil

import numpy as np
import pytest

from sage_jax.data import glyphs as G

MPL = G.matplotlib_font_dir()
DEJAVU = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSansMono.ttf",
          "DejaVuSerif.ttf"]


def _face(name: str) -> G.FaceInfo:
    (face,) = G.read_faces(os.path.join(MPL, name))
    return face


@pytest.fixture(scope="module")
def mpl_faces():
    faces, bad = G.scan_faces(G.find_font_files([MPL]), progress=False)
    assert not bad
    return faces


@pytest.fixture(scope="module")
def mpl_filtered(mpl_faces):
    return G.filter_faces(mpl_faces, progress=False)


# ------------------------------------------------------------------ classes

def test_classes():
    assert len(G.SEEN_CHARS) == 62 and len(G.GREEK_CHARS) == 49 and len(G.CYRILLIC_CHARS) == 64
    assert len(G.UNSEEN_CHARS) == len(G.GREEK_CHARS) + len(G.CYRILLIC_CHARS) - len(G.LOOKALIKES) == 78
    assert G.CLASS_CHARS == G.SEEN_CHARS + G.UNSEEN_CHARS
    for c, like in G.LOOKALIKES.items():
        assert c not in G.CLASS_CHARS
        assert G.CANDIDATE_CHARS.index(like) < G.CANDIDATE_CHARS.index(c)   # an earlier character
    names = [G.class_name(c) for c in G.CLASS_CHARS]
    assert len({n.lower() for n in names}) == len(names)          # distinct on case-insensitive file systems
    assert all(re.fullmatch(r"[a-z0-9_]+", n) for n in names)
    assert (G.class_name("A"), G.class_name("a"), G.class_name("0")) == ("latin_upper_a", "latin_lower_a", "digit_0")
    assert G.class_name("Ж") == "cyrillic_upper_zhe" and G.class_name("ξ") == "greek_lower_xi"
    assert G.class_name("ς") == "greek_lower_final_sigma"


def test_lookalikes_are_measured(mpl_faces):
    """measure_lookalikes on the three DejaVu designs finds the Cyrillic and Greek letters
    drawn as Latin ones, and not the letters kept as classes."""
    faces = [f for f in mpl_faces if f.name in ("DejaVuSans", "DejaVuSerif", "DejaVuSansMono")]
    imgs, _, errors = G.render_faces(faces, G.CANDIDATE_CHARS, 32, progress=False)
    assert not errors and len(faces) == 3
    found = G.measure_lookalikes(imgs)["lookalikes"]
    for c in "АВЕОаеорсхΑΒΟο":
        assert found[c] in G.SEEN_CHARS
    assert found["Г"] == "Γ"
    for c in "ЖШЮλξΓΔжюя":
        assert c not in found


# ------------------------------------------------------------------ metadata and coverage

def test_attributes_match_the_font_files():
    sans, bold, oblique = _face("DejaVuSans.ttf"), _face("DejaVuSans-Bold.ttf"), _face("DejaVuSans-Oblique.ttf")
    mono, serif = _face("DejaVuSansMono.ttf"), _face("DejaVuSerif.ttf")
    assert (sans.family, sans.weight, sans.italic, sans.monospace, sans.serif) == ("DejaVu Sans", 400, 0, 0, "sans")
    assert bold.weight == 700 and bold.italic == 0
    assert oblique.italic == 1 and oblique.weight == 400
    assert mono.monospace == 1 and mono.serif == "mono" and mono.family == "DejaVu Sans Mono"
    assert serif.serif == "serif" and serif.monospace == 0
    assert sans.width == 5
    assert _face("STIXGeneral.ttf").serif == "serif"          # PANOSE not set: from the family name
    assert _face("cmtt10.ttf").monospace == 1                 # equal advance widths


def test_serif_rules():
    assert G.serif_category("Whatever", 11, 0) == "sans"
    assert G.serif_category("Whatever", 2, 0) == "serif"
    assert G.serif_category("Whatever", 2, 1) == "mono"
    assert G.serif_category("CMU Sans Serif", 0, 0) == "sans"
    assert G.serif_category("Nimbus Roman", 0, 0) == "serif"
    assert G.serif_category("Zapfino", 0, 0) == "other"


def test_coverage_is_read_from_the_cmap(mpl_faces, mpl_filtered):
    kept = {f.name for f in mpl_filtered.faces}
    assert {"DejaVuSans", "DejaVuSans-Bold", "DejaVuSansMono", "DejaVuSerif", "STIXGeneral-Regular"} <= kept
    lacking = {d["face"]: d for d in mpl_filtered.dropped["coverage"]}
    assert "Cmr10" in lacking and lacking["Cmr10"]["missing"] == len(G.UNSEEN_CHARS)
    assert lacking["Cmr10"]["missing_chars"].startswith("ΓΔ")
    assert all(not G.missing_chars(f) for f in mpl_filtered.faces)
    assert G.missing_chars(_face("cmr10.ttf"), G.SEEN_CHARS) == ""


def _edited_copy(tmp_path, src: str, dst: str, *, drop_from_cmap: str = "", empty: str = ""):
    """A copy of a matplotlib font with characters taken out of its cmap, or their
    glyphs emptied (no contours)."""
    from fontTools.ttLib import TTFont
    from fontTools.ttLib.tables._g_l_y_f import Glyph

    font = TTFont(os.path.join(MPL, src))
    cmap = font.getBestCmap()
    for c in empty:
        font["glyf"][cmap[ord(c)]] = Glyph()
    for table in font["cmap"].tables:
        for c in drop_from_cmap:
            table.cmap.pop(ord(c), None)
    path = os.path.join(tmp_path, dst)
    font.save(path)
    return path


def test_missing_character_and_empty_glyph_drop_the_face(tmp_path):
    _edited_copy(tmp_path, "DejaVuSans.ttf", "NoZhe.ttf", drop_from_cmap="Ж")
    _edited_copy(tmp_path, "DejaVuSerif.ttf", "EmptyXi.ttf", empty="ξ")
    shutil.copy(os.path.join(MPL, "DejaVuSansMono.ttf"), tmp_path)
    faces, _ = G.scan_faces(G.find_font_files([str(tmp_path)]), progress=False)
    res = G.filter_faces(faces, progress=False)
    assert [f.name for f in res.faces] == ["DejaVuSansMono"]
    (cov,) = res.dropped["coverage"]
    assert cov["face"] == "DejaVuSans" and cov["missing_chars"] == "Ж"
    (emp,) = res.dropped["empty_glyphs"]
    assert emp["face"] == "DejaVuSerif" and emp["empty_chars"] == "ξ"


# ------------------------------------------------------------------ filters

def test_near_duplicate_copy_keeps_one(tmp_path):
    for name in ("DejaVuSans.ttf", "DejaVuSerif.ttf"):
        shutil.copy(os.path.join(MPL, name), tmp_path)
    os.makedirs(tmp_path / "again")
    shutil.copy(os.path.join(MPL, "DejaVuSans.ttf"), tmp_path / "again" / "Copy.ttf")
    faces, _ = G.scan_faces(G.find_font_files([str(tmp_path)]), progress=False)
    assert len(faces) == 3
    res = G.filter_faces(faces, progress=False)
    assert sorted(f.name for f in res.faces) == ["DejaVuSans", "DejaVuSerif"]
    (dup,) = res.dropped["duplicate"]
    assert dup["face"] == dup["kept"] == "DejaVuSans" and dup["distance"] == 0.0
    assert dup["path"].endswith("Copy.ttf") and dup["kept_path"].endswith("DejaVuSans.ttf")  # name order, then path


def _renamed_copy(tmp_path, src: str, dst: str, *, family: str | None = None, style: str | None = None,
                  ps: str | None = None, weight: int | None = None) -> str:
    """A copy of a matplotlib font under other names (family, style, PostScript) or
    with another OS/2 weight class; the glyphs are the same."""
    from fontTools.ttLib import TTFont

    font = TTFont(os.path.join(MPL, src))
    names = font["name"]
    for rec in list(names.names):
        if family is not None and rec.nameID in (1, 16):
            names.setName(family, rec.nameID, rec.platformID, rec.platEncID, rec.langID)
        if style is not None and rec.nameID in (2, 17):
            names.setName(style, rec.nameID, rec.platformID, rec.platEncID, rec.langID)
        if ps is not None and rec.nameID in (4, 6):
            names.setName(ps, rec.nameID, rec.platformID, rec.platEncID, rec.langID)
    if weight is not None:
        font["OS/2"].usWeightClass = weight
    path = os.path.join(tmp_path, dst)
    font.save(path)
    return path


def test_near_duplicates_are_one_design_under_two_names_not_neighbouring_weights(tmp_path):
    """A renamed copy (another family name, the same labels) goes; a face as close but
    with another weight label stays (a neighbouring weight is a label value, not a
    copy); so do the Regular and Bold of one family however loose the threshold."""
    shutil.copy(os.path.join(MPL, "DejaVuSans.ttf"), tmp_path)
    shutil.copy(os.path.join(MPL, "DejaVuSans-Bold.ttf"), tmp_path)
    _renamed_copy(tmp_path, "DejaVuSans.ttf", "VeraSans.ttf", family="Vera Sans", ps="VeraSans")
    _renamed_copy(tmp_path, "DejaVuSans.ttf", "DejaVuSansMedium.ttf", style="Medium", ps="DejaVuSans-Medium",
                  weight=500)
    faces, _ = G.scan_faces(G.find_font_files([str(tmp_path)]), progress=False)
    by_name = {f.name: f for f in faces}
    assert by_name["VeraSans"].family == "Vera Sans" and by_name["DejaVuSans-Medium"].weight == 500
    res = G.filter_faces(faces, progress=False)
    assert sorted(f.name for f in res.faces) == ["DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Medium"]
    (dup,) = res.dropped["duplicate"]
    assert (dup["face"], dup["kept"], dup["kept_family"], dup["distance"]) == ("VeraSans", "DejaVuSans",
                                                                             "DejaVu Sans", 0.0)
    # Regular and Bold: far apart at 32 px, and different weights: kept even at a threshold that joins them
    imgs, _, _ = G.render_faces([by_name["DejaVuSans"], by_name["DejaVuSans-Bold"]], G.SEEN_CHARS, 32,
                                progress=False)
    d = float(G.pairwise_rms(imgs)[0, 1])
    assert d > G.DUPLICATE_RMS
    loose = G.filter_faces(faces, progress=False, duplicate=d + 0.01)
    assert {f.name for f in loose.faces} == {f.name for f in res.faces}
    assert G.near_duplicates(imgs, d + 0.01) == [(1, 0, pytest.approx(d, abs=1e-6))]   # without labels: one goes
    assert G.near_duplicates(imgs, d + 0.01, keys=[G.duplicate_key(by_name[n]) for n in
                                                   ("DejaVuSans", "DejaVuSans-Bold")]) == []


def test_faces_and_split_do_not_depend_on_the_build_size(tmp_path, mpl_faces):
    """The filters look at 32 px at every build size: with the faint threshold between
    a face's ink at 32 px and at 64 px, a 64 px build still keeps the faces (and the
    split) of the 32 px build."""
    fonts = tmp_path / "fonts"
    os.makedirs(fonts)
    for name in DEJAVU + ["STIXGeneral.ttf", "STIXGeneralItalic.ttf"]:
        shutil.copy(os.path.join(MPL, name), fonts)
    faces, _ = G.scan_faces(G.find_font_files([str(fonts)]), progress=False)
    ink = {}
    for size in (32, 64):
        imgs, _, _ = G.render_faces(faces, G.CLASS_CHARS, size, progress=False)
        ink[size] = np.median(G.ink_share(imgs), axis=1)
    # the faintest face whose ink differs between the sizes; the threshold between its two inks
    k = next(i for i in np.argsort(ink[32]) if abs(ink[32][i] - ink[64][i]) > 1e-3)
    faint = float(ink[32][k] + ink[64][k]) / 2          # one side at 32 px, the other at 64 px
    assert (ink[32][k] < faint) != (ink[64][k] < faint)
    tables = {}
    for size in (32, 64):
        out = tmp_path / f"g{size}"
        report = G.build_glyph_dataset(str(out), [str(fonts)], size=size, held_out=0.3, processes=1,
                                       progress=False, filters={"faint": faint})
        assert report["thresholds"]["faint_median_ink_32px"] == faint
        labels = json.load(open(out / "labels.json"))
        assert labels["size"] == size and labels["held_out"] == 0.3 and labels["seed"] == 0
        tables[size] = [(f["name"], f["split"], f["group"]) for f in labels["faces"]]
        from PIL import Image

        assert Image.open(out / labels["images"][0][0]).size == (size, size)
    assert tables[32] == tables[64]
    assert {s for _, s, _ in tables[32]} == {"train", "heldout"}
    assert (faces[k].name in {n for n, _, _ in tables[64]}) == (ink[32][k] >= faint)   # chosen at 32 px


def test_design_links_join_one_design_under_two_names():
    sans, serif = _face("DejaVuSans.ttf"), _face("DejaVuSerif.ttf")
    renamed = G.FaceInfo(**{**sans.record(), "family": "Vera Sans"})
    faces = [sans, serif, renamed]
    imgs, _, _ = G.render_faces(faces, G.SEEN_CHARS, 32, progress=False)
    d = G.pairwise_rms(imgs)
    (link,) = G.design_links(faces, d, G.LINK_RMS)
    assert link["groups"] == ["DejaVu Sans", "Vera Sans"] and link["distance"] == 0.0
    comp = G.split_groups(["DejaVu Sans", "DejaVu Serif", "Vera Sans"], [link])
    assert comp["Vera Sans"] == comp["DejaVu Sans"] != comp["DejaVu Serif"]


def test_near_duplicates_leader_order():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (1, 4, 8, 8)).astype(np.uint8)
    b = rng.integers(0, 256, (1, 4, 8, 8)).astype(np.uint8)
    near_a = np.clip(a.astype(int) + 3, 0, 255).astype(np.uint8)
    out = G.near_duplicates(np.concatenate([a, b, near_a]), 0.08)
    assert [(i, j) for i, j, _ in out] == [(2, 0)]


def test_faint_filter(mpl_faces):
    faces = [f for f in mpl_faces if f.name in ("DejaVuSans", "DejaVuSans-Bold")]
    imgs, _, _ = G.render_faces(faces, G.CLASS_CHARS, 32, progress=False)
    ink = {f.name: float(np.median(G.ink_share(im))) for f, im in zip(faces, imgs)}
    assert 0.03 < ink["DejaVuSans"] < ink["DejaVuSans-Bold"] < 0.2
    res = G.filter_faces(faces, progress=False, faint=(ink["DejaVuSans"] + ink["DejaVuSans-Bold"]) / 2)
    assert [f.name for f in res.faces] == ["DejaVuSans-Bold"]
    (faint,) = res.dropped["faint"]
    assert faint["face"] == "DejaVuSans" and faint["median_ink"] == pytest.approx(ink["DejaVuSans"], abs=1e-4)
    assert not G.filter_faces(faces, progress=False).dropped["faint"]


def test_symbol_faces(mpl_faces):
    last = next(f for f in mpl_faces if f.family.startswith("Last Resort"))
    assert G.is_symbol_face(last) == "symbol family name"
    assert G.is_symbol_face(next(f for f in mpl_faces if f.name == "Cmsy10"))
    assert G.is_symbol_face(_face("DejaVuSans.ttf")) is None
    # seen from the glyphs alone: Last Resort draws a box for every letter
    faces = [last] + [f for f in mpl_faces if f.name in ("DejaVuSans", "DejaVuSerif", "DejaVuSerif-Italic",
                                                          "STIXGeneral-Italic")]
    imgs, _, _ = G.render_faces(faces, G.SEEN_CHARS, 32, progress=False)
    ident = G.glyph_identity(imgs, [G.family_group(f.family) for f in faces])
    assert ident[0] < G.SYMBOL_IDENTITY < 0.5 < ident[1:].min()


def test_small_caps_by_name():
    face = _face("DejaVuSans.ttf")
    assert not G.is_small_caps(face)
    for family, name in (("EB Garamond SC", "EBGaramondSC12-Regular"), ("Go Smallcaps", "GoSmallcaps")):
        assert G.is_small_caps(G.FaceInfo(**{**face.record(), "family": family, "name": name}))


# ------------------------------------------------------------------ rendering

def test_glyphs_never_touch_the_border(mpl_filtered):
    imgs = mpl_filtered.images
    assert imgs.shape == (len(mpl_filtered.faces), 140, 32, 32) and imgs.dtype == np.uint8
    border = np.concatenate([imgs[..., 0, :], imgs[..., -1, :], imgs[..., :, 0], imgs[..., :, -1]], -1)
    assert border.max() == 0
    assert (imgs.max(axis=(2, 3)) == 255).mean() > 0.9        # white glyphs on black


def test_shrink_to_fit():
    """At 1.3 em the wide letters overflow 24 px: they are drawn smaller, not cut."""
    face = _face("DejaVuSerif-Bold.ttf")
    imgs, shrunk = G.render_face(face.path, face.index, "ЖШMWao", 24, em=1.3)
    assert shrunk[:4].all() and not shrunk[4:].any()
    assert imgs[:, 0].max() == imgs[:, -1].max() == imgs[:, :, 0].max() == imgs[:, :, -1].max() == 0
    ink = imgs.astype(bool)
    assert ink.any(axis=1).sum(axis=1)[:4].max() >= 22 - 1   # the widest still fills the box
    # the ink box is centred
    for im in imgs:
        rows, cols = np.nonzero(im.any(1))[0], np.nonzero(im.any(0))[0]
        assert abs(rows[0] - (23 - rows[-1])) <= 1 and abs(cols[0] - (23 - cols[-1])) <= 1


def test_two_processes_draw_the_same(mpl_faces):
    faces = [f for f in mpl_faces if f.name in ("DejaVuSans", "DejaVuSerif-Italic", "STIXGeneral-Bold")]
    one, s1, e1 = G.render_faces(faces, "AжΩ", 32, progress=False)
    two, s2, e2 = G.render_faces(faces, "AжΩ", 32, processes=2, progress=False)
    assert np.array_equal(one, two) and np.array_equal(s1, s2) and e1 == e2 == {}


# ------------------------------------------------------------------ split

def test_family_split_keeps_families_together_and_is_deterministic(mpl_filtered):
    faces = mpl_filtered.faces
    groups = {G.family_group(f.family) for f in faces}
    assert groups == {"DejaVu Sans", "DejaVu Sans Mono", "DejaVu Serif", "STIXGeneral"}
    sizes = {g: sum(G.family_group(f.family) == g for f in faces) for g in groups}
    split = G.split_families(groups, 0.25, seed=0, sizes=sizes)
    assert split == G.split_families(sorted(groups, reverse=True), 0.25, seed=0, sizes=sizes)
    assert set(split.values()) == {"train", "heldout"}
    records = G.face_table(faces, split)
    for g in groups:
        assert len({r["split"] for r in records if r["group"] == g}) == 1


def test_split_shares_and_seed():
    names = [f"Family {i}" for i in range(200)]
    sizes = {n: 1 + i % 7 for i, n in enumerate(names)}
    sizes["Family 0"] = 150                                   # larger than half the budget: trains
    total = sum(sizes.values())
    split = G.split_families(names, 0.2, seed=0, sizes=sizes)
    held = sum(sizes[n] for n in names if split[n] == "heldout")
    assert 0.18 * total <= held <= 0.2 * total
    assert split["Family 0"] == "train"
    assert split != G.split_families(names, 0.2, seed=1, sizes=sizes)
    assert split == G.split_families(list(reversed(names)), 0.2, seed=0, sizes=dict(sizes))


def test_family_groups_and_links():
    assert G.family_group("Noto Sans Display") == "Noto Sans"
    assert G.family_group("Liberation Sans Narrow") == "Liberation Sans"
    assert G.family_group("EB Garamond SC") == "EB Garamond"
    assert G.family_group("Arimo") == "Liberation Sans"
    assert G.family_group("Noto Sans Mono") == "Noto Sans Mono"
    links = [{"groups": ["A", "B"]}, {"groups": ["C", "B"]}]
    assert G.split_groups(["A", "B", "C", "D"], links) == {"A": "A", "B": "A", "C": "A", "D": "D"}


# ------------------------------------------------------------------ the folder

def test_build_writes_folders_labels_and_report(tmp_path):
    fonts = tmp_path / "fonts"
    os.makedirs(fonts)
    for name in DEJAVU + ["cmr10.ttf", "LastResortHE-Regular.ttf"]:
        shutil.copy(os.path.join(MPL, name), fonts)
    out = tmp_path / "glyphs"
    report = G.build_glyph_dataset(str(out), [str(fonts)], size=32, seed=0, held_out=0.4, processes=1,
                                   progress=False)
    c = report["counts"]
    assert (c["faces_found"], c["after_duplicates"], c["classes"], c["unseen_classes"]) == (7, 5, 140, 78)
    assert {d["face"] for d in report["filtered"]["coverage"]} == {"Cmr10"}
    assert {d["face"] for d in report["filtered"]["symbol"]} == {"LastResortHE-Regular"}
    assert c["train_faces"] + c["heldout_faces"] == 5 and c["heldout_faces"] >= 1
    labels = json.load(open(out / "labels.json"))
    assert [cl["name"] for cl in labels["classes"]] == [G.class_name(ch) for ch in G.CLASS_CHARS]
    rows = list(csv.DictReader(open(out / "labels.csv")))
    assert len(rows) == len(labels["images"]) == 5 * 140
    for r in rows:
        assert os.path.isfile(out / r["path"])
        assert r["path"] == f"{r['split']}/{r['class_name']}/{r['face']}.png"
    by_face = {r["face"]: r for r in rows}
    assert by_face["DejaVuSans-Bold"]["weight"] == "700" and by_face["DejaVuSans-Oblique"]["italic"] == "1"
    assert by_face["DejaVuSansMono"]["monospace"] == "1"
    assert by_face["DejaVuSerif"]["serif"] == str(G.SERIF_CATEGORIES.index("serif"))
    from PIL import Image

    im = Image.open(out / rows[0]["path"])
    assert im.mode == "L" and im.size == (32, 32)
    assert json.load(open(out / "report.json"))["counts"] == c


# ------------------------------------------------------------------ sage-jax make-glyphs, TFDS, the loader

MPL_SET = DEJAVU + ["DejaVuSerif-Bold.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf", "cmr10.ttf"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """make-glyphs on a few of matplotlib's fonts (8 faces covering the classes, in 4
    typefaces), with its TFDS build; (folder, tfds data_dir, printed output)."""
    import contextlib
    import io

    from sage_jax.cli import main

    tmp = tmp_path_factory.mktemp("glyphs")
    fonts = tmp / "fonts"
    os.makedirs(fonts)
    for name in MPL_SET:
        shutil.copy(os.path.join(MPL, name), fonts)
    out, data_dir = tmp / "glyphs32", tmp / "tfds"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["make-glyphs", "--out", str(out), "--fonts", str(fonts), "--held-out", "0.3", "--quiet",
                   "--processes", "1", "--tfds", str(data_dir)])
    assert rc == 0
    return out, data_dir, buf.getvalue()


def test_make_glyphs_writes_the_dataset_and_says_what(built):
    out, _, printed = built
    report = json.load(open(out / "report.json"))
    c = report["counts"]
    assert (c["font_files"], c["after_coverage"], c["after_duplicates"]) == (9, 8, 8)
    assert c["train_faces"] + c["heldout_faces"] == 8 and c["heldout_faces"] >= 1 and c["train_faces"] >= 1
    assert (c["classes"], c["seen_classes"], c["unseen_classes"], c["images"]) == (140, 62, 78, 8 * 140)
    assert {d["face"] for d in report["filtered"]["coverage"]} == {"Cmr10"}
    rows = list(csv.DictReader(open(out / "labels.csv")))
    assert len(rows) == 8 * 140 and all(os.path.isfile(out / r["path"]) for r in rows)
    assert sorted(os.listdir(out)) == ["heldout", "labels.csv", "labels.json", "report.json", "train"]
    for s in ("train", "heldout"):
        assert len(os.listdir(out / s)) == 140
    # what it prints: where, faces / families / classes / images per split, the filters
    assert f"to {out}: 8 faces of {c['families']} families" in printed
    assert f"train: {c['train_faces']} faces" in printed and f"{c['train_faces'] * 140} images" in printed
    assert f"held-out: {c['heldout_faces']} face" in printed and "62 seen, 78 unseen" in printed
    assert "1 coverage" in printed and "report.json" in printed
    assert f"--config glyphs --config.data.root={out}" in printed
    assert "TFDS dataset glyphs 1.0.0" in printed


def test_make_glyphs_errors(tmp_path, capsys, built):
    from sage_jax.cli import main

    empty = tmp_path / "nofonts"
    os.makedirs(empty)
    cases = [
        (["--fonts", str(empty)], "no font files"),
        (["--fonts", str(tmp_path / "missing")], "does not exist"),
    ]
    one = tmp_path / "one"
    os.makedirs(one)
    for name in ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf"):   # one typeface: no split
        shutil.copy(os.path.join(MPL, name), one)
    cases.append((["--fonts", str(one)], "at least two typefaces"))
    for extra, message in cases:
        assert main(["make-glyphs", "--out", str(tmp_path / "o"), "--quiet", *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "scripts/install_fonts.sh" in err and "--fonts" in err
        assert "Traceback" not in err
        assert not os.path.exists(tmp_path / "o" / "labels.json")
    # an earlier build is not overwritten without --overwrite; a folder of other files never
    assert main(["make-glyphs", "--out", str(built[0]), "--fonts", str(one)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert main(["make-glyphs", "--out", str(tmp_path / "other"), "--fonts", str(one), "--overwrite"]) == 2
    assert "not empty" in capsys.readouterr().err and (tmp_path / "other" / "notes.txt").exists()
    assert main(["make-glyphs", "--out", str(tmp_path / "o"), "--held-out", "1.5"]) == 2


def test_tfds_build_holds_the_labels_of_labels_csv(built):
    from PIL import Image

    from sage_jax.data.glyph_data import build_glyph_tfds, open_glyph_tfds

    out, data_dir, _ = built
    rows = {r["path"]: r for r in csv.DictReader(open(out / "labels.csv"))}
    builder, sources = open_glyph_tfds(str(data_dir))
    assert set(sources) == {"train", "heldout"}
    feats = builder.info.features
    assert feats["image"].shape == (32, 32, 1) and feats["label"].names == [G.class_name(c) for c in G.CLASS_CHARS]
    assert list(feats["serif"].names) == list(G.SERIF_CATEGORIES)
    seen = set()
    for split, src in sources.items():
        for k in range(len(src)):
            rec = src[k]
            path = rec["file_name"].decode() if isinstance(rec["file_name"], bytes) else rec["file_name"]
            r = rows[path]
            assert r["split"] == split
            assert int(rec["label"]) == int(r["class_index"]) and int(rec["face_index"]) == int(r["face_index"])
            assert bool(rec["seen"]) == (r["seen"] == "1") == (int(rec["label"]) < 62)
            for a in ("weight", "width", "italic", "monospace", "serif"):
                assert int(rec[a]) == int(r[a]), (path, a)
            if k % 97 == 0:
                np.testing.assert_array_equal(rec["image"][..., 0], np.asarray(Image.open(out / path)))
            seen.add(path)
    assert seen == set(rows)
    # the same folder: reused; another labels.json: refused without overwrite
    assert build_glyph_tfds(str(out), str(data_dir)).info.metadata["labels_sha256"] == \
        builder.info.metadata["labels_sha256"]
    other = out.parent / "other"
    shutil.copytree(out, other)
    labels = json.load(open(other / "labels.json"))
    labels["seed"] = 7
    json.dump(labels, open(other / "labels.json", "w"))
    from sage_jax.data.glyph_data import GlyphDataError

    with pytest.raises(GlyphDataError, match="overwrite"):
        build_glyph_tfds(str(other), str(data_dir))


def _glyph_config(root="", data_dir="", *overrides):
    from sage_jax.config import apply_overrides, load_config

    return apply_overrides(load_config("glyphs"), [f"data.root={root}", f"data.data_dir={data_dir}", "data.held_out=0.3",
                                                   *overrides])


def test_loader_gives_the_seen_classes_of_the_training_faces(built):
    from sage_jax.data.loader import PerClassSubset, heldout_dataset, seen_dataset, unseen_dataset

    out, data_dir, _ = built
    labels = json.load(open(out / "labels.json"))
    train_faces = {f["index"] for f in labels["faces"] if f["split"] == "train"}
    cfg = _glyph_config(str(out))
    ds = seen_dataset(cfg.data)
    assert ds.num_classes == 62 and ds.class_names == [G.class_name(c) for c in G.SEEN_CHARS]
    assert len(ds) == 62 * len(train_faces)
    assert set(ds.face_index.tolist()) == train_faces and (ds.class_index < 62).all()
    np.testing.assert_array_equal(ds.labels_array, ds.class_index)     # the seen classes come first
    x, y = ds.load_batch([0, len(ds) - 1])
    assert x.shape == (2, 32, 32, 3) and x.dtype == np.float32 and x.min() == -1.0 and x.max() <= 1.0
    assert (x[..., 0] == x[..., 1]).all() and (x[..., 1] == x[..., 2]).all()     # gray in every channel
    from PIL import Image

    row = next(p for p, c, f in labels["images"] if c == ds.class_index[0] and f == ds.face_index[0])
    np.testing.assert_allclose(x[0, ..., 0], np.asarray(Image.open(out / row), np.float32) / 127.5 - 1)
    attrs = ds.attributes()
    assert set(attrs) == {"weight", "width", "italic", "monospace", "serif"} and len(attrs["weight"]) == len(ds)
    assert len(PerClassSubset(ds, 1)) == 62
    # the same from the TFDS build
    tf = seen_dataset(_glyph_config("", str(data_dir)).data)
    np.testing.assert_array_equal(tf.gray, ds.gray)
    np.testing.assert_array_equal(tf.labels_array, ds.labels_array)
    np.testing.assert_array_equal(tf.face_index, ds.face_index)
    # unseen classes and held-out faces
    un = unseen_dataset(cfg.data)
    assert un.num_classes == 78 and (un.class_index >= 62).all()
    assert {labels["faces"][f]["split"] for f in un.face_index} == {"heldout"}
    n = len(set(un.face_index.tolist()))
    shots = un.sample(5, n, seed=0)
    assert shots.shape == (n, 32, 32, 3) and np.array_equal(shots, un.sample(5, n, seed=0))
    with pytest.raises(ValueError, match="greek_upper_pi"):                # more shots than faces
        un.sample(5, n + 1)
    held = heldout_dataset(cfg.data, "seen")
    assert held.num_classes == 62 and not set(held.face_index.tolist()) & train_faces
    imgs, ys = held.per_class(1, seed=3)
    assert imgs.shape == (62, 32, 32, 3) and ys.tolist() == list(range(62))
    assert len(seen_dataset(_glyph_config(str(out), "", "data.samples_per_class=1").data)) == 62


def test_loader_refuses_another_size_split_or_no_dataset(built, tmp_path):
    from sage_jax.data.loader import seen_dataset

    out, _, _ = built
    with pytest.raises(ValueError, match="built at 32 px, the model needs 64"):
        seen_dataset(_glyph_config(str(out)).data, size=64)
    with pytest.raises(ValueError, match="make-glyphs --held-out 0.2"):   # built with 0.3, the config says 0.2
        seen_dataset(_glyph_config(str(out), "", "data.held_out=0.2").data)
    with pytest.raises(ValueError, match="make-glyphs --out"):
        seen_dataset(_glyph_config(str(tmp_path / "none")).data)
    with pytest.raises(ValueError, match="data.num_seen=60"):
        seen_dataset(_glyph_config(str(out), "", "data.num_seen=60").data)
