"""The font-glyph dataset: characters rendered from installed font faces.

Each image is one character of one font face, a white glyph (ink 255) on black (0),
grayscale uint8, ``size`` x ``size`` (32 or 64), the glyph's ink box centred, drawn at
0.7 em (font size ``round(0.7 * size)`` pixels per em) and drawn smaller, if need
be, until the ink box leaves a ``margin`` of black all round (nothing is cut).

Classes: the 62 Latin letters and digits are the seen classes; the Greek and Cyrillic
letters that are not drawn like a Latin letter or an earlier Greek letter in most faces
(:data:`LOOKALIKES`, measured with :func:`measure_lookalikes`) are the unseen ones.
A face is used only if its character map (fontTools ``getBestCmap``, read before
drawing: Pillow draws .notdef boxes for missing characters) holds every class.

Faces are filtered (:func:`filter_faces`) and every face dropped is recorded with the
reason: unreadable, symbol (symbol cmap, pictorial PANOSE or a symbol family name; or,
after drawing, glyphs that do not look like the letters they stand for), small caps,
coverage, unrenderable, empty glyphs (a class drawn with no ink: the face is dropped),
faint (median ink share under 3%), near-duplicate (RMS pixel distance under 0.08 at
32 px over the seen classes to a face kept earlier in name order). The faces left are
split into ``train`` and ``heldout`` by split group (:func:`family_group`, joined by
:func:`design_links` where two groups share a design; :func:`split_families`), so a
held-out face is a typeface never trained on. :func:`build_glyph_dataset` writes
``<out>/<split>/<class_name>/<face>.png``, ``labels.json``, ``labels.csv`` and
``report.json``. docs/glyphs.md has the measured numbers.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import time
import unicodedata
from dataclasses import dataclass

import numpy as np

from tqdm import tqdm

# --------------------------------------------------------------------------- classes

LATIN_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
LATIN_LOWER = "abcdefghijklmnopqrstuvwxyz"
DIGITS = "0123456789"
SEEN_CHARS = LATIN_UPPER + LATIN_LOWER + DIGITS
# the 49 basic Greek letters (U+0391..U+03A9 without the unassigned U+03A2, U+03B1..U+03C9
# with the final sigma) and the 64 Cyrillic letters U+0410..U+044F (no Ё/ё)
GREEK_CHARS = "".join(chr(c) for c in range(0x391, 0x3AA) if c != 0x3A2) + \
    "".join(chr(c) for c in range(0x3B1, 0x3CA))
CYRILLIC_CHARS = "".join(chr(c) for c in range(0x410, 0x450))
CANDIDATE_CHARS = SEEN_CHARS + GREEK_CHARS + CYRILLIC_CHARS

# A Greek or Cyrillic letter -> the Latin or earlier Greek/Cyrillic character it is drawn
# like: measure_lookalikes(threshold=LOOKALIKE_THRESHOLD) on the 441 faces of the 45
# Debian packages (scripts/font_packages.txt) that cover all 175 candidates and pass every
# filter, at 32 px. For each candidate and each character before it, the RMS pixel
# distance (pixels in [0, 1]) between the two glyphs of a face, median over faces; under
# the threshold, the candidate is no class. 34 medians are 0.000 (the same glyph), Ф~Φ
# 0.035; the next are п~n 0.066, к~κ 0.067, К~K 0.078, then distinct letters mix in
# (э~з 0.085, Θ~O 0.097): docs/glyphs.md. Fixed here so the classes do not depend on the
# fonts installed.
LOOKALIKE_THRESHOLD = 0.05
LOOKALIKES: dict[str, str] = {
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N",
    "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X", "ο": "o", "А": "A", "В": "B", "Г": "Γ",
    "Е": "E", "М": "M", "Н": "H", "О": "O", "П": "Π", "Р": "P", "С": "C", "Т": "T", "Ф": "Φ",
    "Х": "X", "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x",
}

UNSEEN_CHARS = "".join(c for c in GREEK_CHARS + CYRILLIC_CHARS if c not in LOOKALIKES)
CLASS_CHARS = SEEN_CHARS + UNSEEN_CHARS

SERIF_CATEGORIES = ("sans", "serif", "mono", "other")

DEFAULT_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts")
FONT_EXTENSIONS = (".ttf", ".otf", ".ttc", ".otc")

EM = 0.7
MARGIN = 1
ANALYSIS_SIZE = 32          # the size the symbol and near-duplicate filters look at
FAINT_INK = 0.03            # median ink share (mean pixel / 255) under this: faint
DUPLICATE_RMS = 0.08        # RMS pixel distance (pixels in [0, 1]) under this: near-duplicate
LINK_RMS = 0.08             # two family groups with faces this close share a side of the split
SYMBOL_IDENTITY = 0.25      # glyph_identity under this: symbol face
EMPTY_INK = 1.0             # a glyph with less than one pixel's worth of ink is empty

_SYMBOL_NAME = re.compile(r"dingbat|d050000l|symbol|wingding|webding|\bmsam|\bmsbm|esint|\bcmsy|\bcmex|ornament|emoji|last ?resort",
                          re.IGNORECASE)


def class_name(char: str) -> str:
    """A file-system-safe folder name for a class, unique also on case-insensitive file
    systems: ``latin_upper_a``, ``latin_lower_a``, ``digit_0``, ``greek_upper_xi``,
    ``greek_lower_final_sigma``, ``cyrillic_lower_zhe``."""
    if char in DIGITS:
        return f"digit_{char}"
    name = unicodedata.name(char)      # e.g. "CYRILLIC CAPITAL LETTER ZHE", "GREEK SMALL LETTER FINAL SIGMA"
    m = re.fullmatch(r"(LATIN|GREEK|CYRILLIC) (CAPITAL|SMALL) LETTER (.+)", name)
    if not m:
        return f"U+{ord(char):04X}"
    script, case, letter = m.groups()
    slug = re.sub(r"[^a-z0-9]+", "_", letter.lower()).strip("_")
    return f"{script.lower()}_{'upper' if case == 'CAPITAL' else 'lower'}_{slug}"


def script_of(char: str) -> str:
    if char in DIGITS:
        return "digit"
    return unicodedata.name(char).split()[0].lower()


def class_table(chars: str = CLASS_CHARS) -> list[dict]:
    """One record per class: index, name, character, code point, script, seen."""
    return [{"index": i, "name": class_name(c), "char": c, "codepoint": f"U+{ord(c):04X}",
             "script": script_of(c), "seen": c in SEEN_CHARS} for i, c in enumerate(chars)]


# --------------------------------------------------------------------------- faces

@dataclass
class FaceInfo:
    """One face of a font file and the attributes read from it with fontTools."""

    path: str
    index: int              # the face's number in a collection (.ttc), 0 otherwise
    name: str               # PostScript name (name ID 6), or the file name and index
    family: str             # typographic family (name ID 16, else 1)
    style: str              # typographic subfamily (name ID 17, else 2)
    weight: int             # OS/2 usWeightClass (100-900; 1-9 read as 100-900)
    width: int              # OS/2 usWidthClass (1-9, 5 normal, 2/3/4 condensed)
    italic: int             # 1 if italic or oblique (fsSelection bit 0 or 9, macStyle, italic angle)
    monospace: int          # 1 if post.isFixedPitch or every seen character has one advance width
    serif: str              # one of SERIF_CATEGORIES
    panose_family: int      # OS/2 panose.bFamilyType (5: pictorial)
    panose_serif: int       # OS/2 panose.bSerifStyle (0/1: not given)
    symbol_cmap: bool       # the font has a (3, 0) symbol cmap subtable
    chars: frozenset = dataclasses.field(default_factory=frozenset, repr=False)  # the cmap's characters

    @property
    def key(self) -> str:
        return f"{self.path}#{self.index}" if self.index else self.path

    def record(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("chars")
        return d


def matplotlib_font_dir() -> str:
    """matplotlib's bundled TrueType fonts (DejaVu, STIX, Computer Modern)."""
    import matplotlib

    return os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf")


def find_font_files(dirs=None) -> list[str]:
    """TrueType/OpenType files (and collections) under ``dirs`` (default: the
    fontconfig system directories), sorted. Type 1 (.pfb/.t1), bitmap (.pcf) and web
    (.woff) files are not read: fontTools reads no character map from Type 1, and the
    URW base35 faces also come as .otf."""
    dirs = list(dirs) if dirs else [d for d in DEFAULT_FONT_DIRS if os.path.isdir(d)]
    out = []
    for root in dirs:
        if os.path.isfile(root):
            out.append(os.path.abspath(root))
            continue
        for d, _, files in os.walk(root, followlinks=True):
            out.extend(os.path.join(d, f) for f in files if f.lower().endswith(FONT_EXTENSIONS))
    return sorted(set(out))


_SANS_NAME = re.compile(r"\bsans\b|gothic|grotesk|\bgo\b|roboto(?! slab)|\binter\b|manrope|cantarell|jura|"
                        r"comfortaa|biolinum|bright|osifont|damase|tuffy|\bplay\b|lato|carlito|arimo|cupola",
                        re.IGNORECASE)
_SERIF_NAME = re.compile(r"serif|roman|garamond|times|caslon|bookman|libertine|gentium|vollkorn|stix|slab|"
                         r"berenis|c059|p052|old standard|concrete|caliban|tinos|century|palatino|schoolbook",
                         re.IGNORECASE)


def serif_category(family: str, panose_serif: int, monospace: int) -> str:
    """``mono`` for a monospaced face (PANOSE is unreliable for them: Liberation Mono says
    'thin serif', FreeMono 'rounded'); else PANOSE bSerifStyle 2-10 -> ``serif`` (square
    and slab serifs included), 11-15 -> ``sans`` (normal, obtuse, perpendicular, flared,
    rounded); else the family name (``Sans`` before ``Serif``, then known names);
    else ``other``."""
    if monospace:
        return "mono"
    if 2 <= panose_serif <= 10:
        return "serif"
    if 11 <= panose_serif <= 15:
        return "sans"
    if _SANS_NAME.search(family):
        return "sans"
    if _SERIF_NAME.search(family):
        return "serif"
    return "other"


def _name(names, *ids) -> str:
    for i in ids:
        rec = names.getName(i, 3, 1, 0x409) or names.getName(i, 1, 0, 0) or names.getName(i, 3, 1) \
            or names.getName(i, 1, 0)
        if rec is None:
            rec = next((r for r in names.names if r.nameID == i), None)
        if rec is not None:
            try:
                s = rec.toUnicode().strip()
            except UnicodeDecodeError:
                continue
            if s:
                return s
    return ""


def _face_info(font, path: str, index: int) -> FaceInfo:
    names = font["name"]
    family = _name(names, 16, 1) or os.path.splitext(os.path.basename(path))[0]
    style = _name(names, 17, 2) or "Regular"
    ps = _name(names, 6) or f"{os.path.splitext(os.path.basename(path))[0]}-{index}"
    os2 = font["OS/2"] if "OS/2" in font else None
    weight = int(os2.usWeightClass) if os2 is not None else 400
    if 1 <= weight <= 9:
        weight *= 100
    width = int(os2.usWidthClass) if os2 is not None else 5
    post = font["post"] if "post" in font else None
    head = font["head"]
    italic = bool(head.macStyle & 2) or (post is not None and abs(float(post.italicAngle)) > 0.5)
    if os2 is not None:
        italic = italic or bool(os2.fsSelection & 1) or bool(os2.fsSelection & (1 << 9))
    cmap = font.getBestCmap() or {}
    mono = bool(post is not None and post.isFixedPitch)
    if not mono and "hmtx" in font:
        hmtx = font["hmtx"].metrics
        widths = {hmtx[cmap[ord(c)]][0] for c in SEEN_CHARS if ord(c) in cmap and cmap[ord(c)] in hmtx}
        mono = len(widths) == 1
    panose = getattr(os2, "panose", None) if os2 is not None else None
    pan_family = int(panose.bFamilyType) if panose is not None else 0
    pan_serif = int(panose.bSerifStyle) if panose is not None else 0
    symbol_cmap = any(t.platformID == 3 and t.platEncID == 0 for t in font["cmap"].tables) if "cmap" in font \
        else False
    return FaceInfo(path=path, index=index, name=ps, family=family, style=style, weight=weight, width=width,
                    italic=int(italic), monospace=int(mono), serif=serif_category(family, pan_serif, int(mono)),
                    panose_family=pan_family, panose_serif=pan_serif, symbol_cmap=symbol_cmap,
                    chars=frozenset(chr(c) for c in cmap))


def read_faces(path: str) -> list[FaceInfo]:
    """Every face of a font file (several for a collection)."""
    from fontTools.ttLib import TTCollection, TTFont

    if path.lower().endswith((".ttc", ".otc")):
        coll = TTCollection(path, lazy=True)
        try:
            return [_face_info(f, path, i) for i, f in enumerate(coll.fonts)]
        finally:
            coll.close()
    font = TTFont(path, lazy=True)
    try:
        return [_face_info(font, path, 0)]
    finally:
        font.close()


def scan_faces(paths, progress: bool = True) -> tuple[list[FaceInfo], list[dict]]:
    """(faces, unreadable files) of ``paths``; a file fontTools cannot read is recorded
    with its error, never raised."""
    import logging

    logging.getLogger("fontTools").setLevel(logging.ERROR)   # "timestamp seems very low" etc.
    faces, bad = [], []
    for p in tqdm(paths, desc="font metadata", unit="file", disable=not progress):
        try:
            faces.extend(read_faces(p))
        except Exception as e:  # noqa: BLE001 - a broken font file is recorded, not fatal
            bad.append({"path": p, "reason": f"{type(e).__name__}: {e}"})
    return faces, bad


def missing_chars(face: FaceInfo, chars: str = CLASS_CHARS) -> str:
    """The characters of ``chars`` the face's character map lacks."""
    return "".join(c for c in chars if c not in face.chars)


def is_symbol_face(face: FaceInfo) -> str | None:
    """Why a face is a symbol font from its metadata (symbol cmap, pictorial PANOSE,
    a symbol family name), or None."""
    if face.symbol_cmap:
        return "symbol cmap (platform 3, encoding 0)"
    if face.panose_family == 5:
        return "PANOSE family type 5 (pictorial)"
    if _SYMBOL_NAME.search(face.family) or _SYMBOL_NAME.search(face.name):
        return "symbol family name"
    return None


# --------------------------------------------------------------------------- rendering

def load_font(path: str, index: int, px: int):
    from PIL import ImageFont

    return ImageFont.truetype(path, size=px, index=index, layout_engine=ImageFont.Layout.BASIC)


def _ink_box(font, char: str) -> np.ndarray | None:
    """The glyph drawn in white on black, cropped to its ink (None: no ink)."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = font.getbbox(char, anchor="ls")
    pad = 2
    w, h = max(right - left, 1) + 2 * pad, max(bottom - top, 1) + 2 * pad
    im = Image.new("L", (w, h), 0)
    ImageDraw.Draw(im).text((pad - left, pad - top), char, fill=255, font=font, anchor="ls")
    a = np.asarray(im)
    rows, cols = np.nonzero(a.any(axis=1))[0], np.nonzero(a.any(axis=0))[0]
    if rows.size == 0:
        return None
    return a[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def render_glyph(fonts, char: str, size: int, em: float = EM, margin: int = MARGIN) -> tuple[np.ndarray, int]:
    """(image, font size used) of ``char``: (size, size) uint8, white on black, the ink
    box centred. ``fonts`` is a callable ``px -> ImageFont`` (e.g. a cached
    :func:`load_font`). Drawn at ``round(em * size)`` px per em and shrunk until the ink
    fits inside a ``margin``-pixel black border. An empty glyph gives zeros."""
    px = max(1, round(em * size))
    inner = size - 2 * margin
    out = np.zeros((size, size), np.uint8)
    while True:
        g = _ink_box(fonts(px), char)
        if g is None:
            return out, px
        h, w = g.shape
        if max(h, w) <= inner or px == 1:
            break
        px = max(1, min(px - 1, int(px * inner / max(h, w))))
    g = g[:inner, :inner]
    h, w = g.shape
    y, x = (size - h) // 2, (size - w) // 2
    out[y:y + h, x:x + w] = g
    return out, px


def render_face(path: str, index: int, chars: str, size: int, em: float = EM,
                margin: int = MARGIN) -> tuple[np.ndarray, np.ndarray]:
    """(images (len(chars), size, size) uint8, shrunk (len(chars),) bool) of one face."""
    cache: dict = {}

    def fonts(px):
        if px not in cache:
            cache[px] = load_font(path, index, px)
        return cache[px]

    base = max(1, round(em * size))
    imgs = np.zeros((len(chars), size, size), np.uint8)
    shrunk = np.zeros(len(chars), bool)
    for i, c in enumerate(chars):
        imgs[i], px = render_glyph(fonts, c, size, em, margin)
        shrunk[i] = px < base
    return imgs, shrunk


def _render_job(args):
    """render_face, with a face Pillow/FreeType cannot draw (e.g. a bitmap-only font
    with no strike at the size) returned as its error message."""
    try:
        return render_face(*args)
    except OSError as e:
        return f"{type(e).__name__}: {e}"


def _mp_context():
    """fork (no re-import of ``__main__``) unless JAX's threads are running, then spawn."""
    import sys

    if "jax" in sys.modules or "fork" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    return multiprocessing.get_context("fork")


def render_faces(faces, chars: str, size: int, em: float = EM, margin: int = MARGIN, processes: int = 1,
                 progress: bool = True) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """(images (F, C, size, size) uint8, shrunk (F, C) bool, errors {face number:
    message}) of every face, in order (a face that cannot be drawn: zeros and its
    error); over ``processes`` processes when more than one."""
    jobs = [(f.path, f.index, chars, size, em, margin) for f in faces]
    imgs = np.zeros((len(jobs), len(chars), size, size), np.uint8)
    shrunk = np.zeros((len(jobs), len(chars)), bool)
    errors: dict[int, str] = {}
    bar = tqdm(total=len(jobs), desc=f"render {size}px", unit="face", disable=not progress)
    if processes > 1 and len(jobs) > 1:
        ctx = _mp_context()
        with concurrent.futures.ProcessPoolExecutor(processes, mp_context=ctx) as pool:
            results = pool.map(_render_job, jobs, chunksize=4)
            for i, r in enumerate(results):
                _store(i, r, imgs, shrunk, errors)
                bar.update()
    else:
        for i, job in enumerate(jobs):
            _store(i, _render_job(job), imgs, shrunk, errors)
            bar.update()
    bar.close()
    return imgs, shrunk, errors


def _store(i, result, imgs, shrunk, errors):
    if isinstance(result, str):
        errors[i] = result
    else:
        imgs[i], shrunk[i] = result


def ink_share(images) -> np.ndarray:
    """Mean pixel / 255 of each image (the last two axes)."""
    return np.asarray(images, np.float32).mean(axis=(-2, -1)) / 255.0


# --------------------------------------------------------------------------- filters

def _flat(images) -> np.ndarray:
    a = np.asarray(images, np.float32) / 255.0
    return a.reshape(a.shape[0], -1)


def pairwise_rms(a, b=None) -> np.ndarray:
    """RMS pixel distance (pixels in [0, 1]) between the rows of ``a`` (N, ...) and
    ``b`` (M, ...) uint8 images (or stacks of them), (N, M)."""
    x = _flat(a)
    y = x if b is None else _flat(b)
    d2 = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    return np.sqrt(np.maximum(d2, 0.0) / x.shape[1])


def near_duplicates(images, threshold: float = DUPLICATE_RMS, distances=None, keys=None) -> list[tuple[int, int, float]]:
    """(dropped, kept, distance) for faces (rows of ``images``, (F, C, S, S) uint8, in
    the order of preference) within ``threshold`` RMS of a face kept before them: each
    face is kept unless it is that close to an earlier kept face (leader clustering:
    one face per cluster, the first). ``distances``: their pairwise_rms, if at hand.
    ``keys``: one per face; a face is compared only with kept faces of an equal key
    (:func:`duplicate_key`: the same labels), so two faces that differ in a label are
    never duplicates of each other however close they are."""
    d = pairwise_rms(images) if distances is None else distances
    keys = list(keys) if keys is not None else [None] * len(d)
    kept: dict = {}
    out = []
    for i in range(len(d)):
        same = kept.setdefault(keys[i], [])
        if same:
            j = int(np.argmin(d[i, same]))
            if d[i, same[j]] < threshold:
                out.append((i, same[j], float(d[i, same[j]])))
                continue
        same.append(i)
    return out


def duplicate_key(face: FaceInfo) -> tuple:
    """The labels a face carries (weight, width, italic, monospace, serif style): a
    near-duplicate must carry the same ones. Neighbouring weights, widths and styles of
    one family (Noto Sans Regular and Medium, 0.075 at 32 px) are as close as one design
    under two names (Liberation Sans and Arimo, 0.055), but they are other values of the
    labels the dataset is for, so they stay."""
    return (face.weight, face.width, face.italic, face.monospace, face.serif)


def normalized_glyphs(images, n: int = 16) -> np.ndarray:
    """Each glyph (..., S, S) uint8 cropped to its ink, padded square, resized to
    (n, n) and scaled to a maximum of 1: size and weight no longer count, shape does."""
    from PIL import Image

    imgs = np.asarray(images)
    flat = imgs.reshape(-1, *imgs.shape[-2:])
    out = np.zeros((len(flat), n, n), np.float32)
    for k, g in enumerate(flat):
        rows, cols = np.nonzero(g.any(axis=1))[0], np.nonzero(g.any(axis=0))[0]
        if rows.size == 0:
            continue
        g = g[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        h, w = g.shape
        m = max(h, w)
        sq = np.zeros((m, m), np.uint8)
        sq[(m - h) // 2:(m - h) // 2 + h, (m - w) // 2:(m - w) // 2 + w] = g
        a = np.asarray(Image.fromarray(sq).resize((n, n), Image.BILINEAR), np.float32)
        out[k] = a / max(float(a.max()), 1.0)
    return out.reshape(*imgs.shape[:-2], n, n)


def glyph_identity(images, groups, neighbours: int = 3) -> np.ndarray:
    """Per face, the share of its glyphs (images (F, C, S, S), the same C classes for
    every face) whose nearest glyph in another face is the same class's, the best of the
    ``neighbours`` nearest faces of other family groups, on :func:`normalized_glyphs`.
    A face drawing symbols at the letters' code points scores near 1/C: on the 743
    Debian faces covering every candidate plus URW Dingbats, cmsy10, cmex10 and Last
    Resort, the symbol faces score under 0.12 and text faces over 0.39 (thin italics,
    Cupola, Caslon Italic and Zapf Chancery the lowest). 1.0 for a face with no other group."""
    norm = normalized_glyphs(images) * 255.0
    F, C = norm.shape[:2]
    d = pairwise_rms(norm)
    groups = np.asarray(list(groups))
    out = np.ones(F)
    for f in range(F):
        df = np.where(groups == groups[f], np.inf, d[f])
        near = [g for g in np.argsort(df, kind="stable")[:neighbours] if np.isfinite(df[g])]
        if near:
            out[f] = max(float((pairwise_rms(norm[f], norm[g]).argmin(1) == np.arange(C)).mean()) for g in near)
    return out


# Families that are one design under two names (a derived or metric-compatible copy),
# joined for the split even where no pair of faces comes within LINK_RMS at 32 px.
FAMILY_ALIASES = {
    "Arimo": "Liberation Sans", "Tinos": "Liberation Serif", "Cousine": "Liberation Mono",
    "Open Sans": "Noto Sans", "Noto Mono": "Noto Sans Mono", "Hack": "DejaVu Sans Mono",
    "Carlito": "Lato", "FreeMono": "Nimbus Mono PS", "FreeSans": "Nimbus Sans", "FreeSerif": "Nimbus Roman",
    "STIX": "STIXGeneral", "CMU Classical Serif": "CMU Serif", "Gentium Book Plus": "Gentium Plus",
}

_GROUP_WORDS = re.compile(r"\b(display|text|condensed|semicondensed|demi|narrow|sc|smallcaps|medium|thin|light|"
                          r"minus|extra|upright|italic|sample|jp|o|pro|math|2y)\b", re.IGNORECASE)


def family_group(family: str) -> str:
    """The family with width, optical-size and companion words dropped, and known
    aliases (:data:`FAMILY_ALIASES`) followed, so related families fall on one side of
    the split: ``Noto Sans Display`` -> ``Noto Sans``, ``Liberation Sans Narrow`` ->
    ``Liberation Sans``, ``EB Garamond SC`` -> ``EB Garamond``, ``Go Medium`` -> ``Go``,
    ``Unifont-JP`` -> ``Unifont``, ``Arimo`` -> ``Liberation Sans``. Sans, Serif and Mono
    stay (other designs)."""
    g = re.sub(r"[-_]", " ", family)
    prev = None
    while prev != g:
        prev = g
        g = re.sub(r"\s+", " ", _GROUP_WORDS.sub(" ", g)).strip()
    g = g or family
    return FAMILY_ALIASES.get(g, g)


def design_links(faces, distances, threshold: float = LINK_RMS) -> list[dict]:
    """The pairs of family groups (:func:`family_group`) with a face of one within
    ``threshold`` RMS (``distances``, (F, F) over the seen classes at 32 px) of a face
    of the other, the closest pair of faces each: one design under two names (Liberation
    Sans and Arimo, Open Sans and Noto Sans, Hack and DejaVu Sans Mono, FreeSerif and
    Nimbus Roman), which must not straddle the split."""
    groups = [family_group(f.family) for f in faces]
    best: dict = {}
    rows, cols = np.nonzero(np.asarray(distances) < threshold)
    for i, j in zip(rows, cols):
        if i < j and groups[i] != groups[j]:
            key = tuple(sorted((groups[i], groups[j])))
            d = float(distances[i, j])
            if key not in best or d < best[key]["distance"]:
                best[key] = {"groups": list(key), "faces": [faces[i].name, faces[j].name], "distance": round(d, 4)}
    return [best[k] for k in sorted(best)]


def split_groups(groups, links=()) -> dict[str, str]:
    """{family group: split group}: the connected components of the groups joined by
    ``links`` (records of :func:`design_links`), each named by its first group in sorted
    order."""
    parent = {g: g for g in groups}

    def root(g):
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    for ln in links:
        a, b = ln["groups"]
        if a in parent and b in parent:
            ra, rb = root(a), root(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    return {g: root(g) for g in parent}


def split_families(groups, held_out: float = 0.2, seed: int = 0, sizes=None) -> dict[str, str]:
    """``{group: 'train' | 'heldout'}``. The held-out budget is ``held_out`` of the
    faces (``sizes[group]`` faces a group, 1 if not given). Groups are ordered by
    SHA-256 of ``"{seed}:{name}"`` and taken into ``heldout`` in that order while the
    budget allows; a group larger than half the budget always trains (so the held-out
    faces come from several typefaces, not one big family). At least one group is held
    out and one trained on when there are two. The same names and seed give the same
    split on any machine."""
    groups = sorted(set(groups))
    sizes = sizes or {}
    total = sum(sizes.get(g, 1) for g in groups)
    budget = held_out * total
    order = sorted(groups, key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
    out = {g: "train" for g in groups}
    taken = 0
    for g in order:
        n = sizes.get(g, 1)
        if n <= max(1.0, 0.5 * budget) and taken + n <= budget + 1e-9:
            out[g] = "heldout"
            taken += n
    if len(groups) >= 2:
        if "heldout" not in out.values():
            out[min(order, key=lambda g: sizes.get(g, 1))] = "heldout"
        if "train" not in out.values():
            out[order[-1]] = "train"
    return out


def measure_lookalikes(images, chars: str = CANDIDATE_CHARS, threshold: float = LOOKALIKE_THRESHOLD,
                       first: int = len(SEEN_CHARS)) -> dict:
    """Which of ``chars[first:]`` are drawn like a character before them. ``images``:
    (F, len(chars), S, S) uint8 of F faces. For each candidate and each earlier
    character, the RMS distance between the two glyphs of a face, then the median over
    faces; a candidate whose smallest median is under ``threshold`` is a look-alike of
    that character. Returns ``{"lookalikes": {char: like}, "nearest": {char: (like,
    median distance, share of faces under the threshold)}}``."""
    imgs = np.asarray(images)
    F = imgs.shape[0]
    per_face = np.stack([pairwise_rms(imgs[f]) for f in range(F)])      # (F, C, C)
    med = np.median(per_face, axis=0)
    nearest, looks = {}, {}
    for i in range(first, len(chars)):
        j = int(np.argmin(med[i, :i]))
        share = float((per_face[:, i, j] < threshold).mean())
        nearest[chars[i]] = (chars[j], float(med[i, j]), share)
        if med[i, j] < threshold:
            looks[chars[i]] = chars[j]
    return {"lookalikes": looks, "nearest": nearest}


_SMALL_CAPS = re.compile(r"\bSC\d*\b|small ?caps", re.IGNORECASE)


def is_small_caps(face: FaceInfo) -> bool:
    """Small-caps faces (EB Garamond SC, Go Smallcaps) draw the lowercase classes as
    capitals; read from the names."""
    return bool(_SMALL_CAPS.search(face.family) or _SMALL_CAPS.search(face.style)
                or re.search(r"SC\d*(-|$)|smallcaps", face.name, re.IGNORECASE))


def _face_order(face: FaceInfo):
    return (face.family.lower(), face.style.lower(), face.name, face.path, face.index)


@dataclass
class FilterResult:
    """The faces kept (in name order), their images (F, C, size, size) at the asked
    size, and every face dropped: ``dropped[reason]`` is a list of records."""

    faces: list
    images: np.ndarray
    dropped: dict
    counts: dict
    shrunk: np.ndarray
    seconds: dict
    links: list = dataclasses.field(default_factory=list)
    selected: list = dataclasses.field(default_factory=list)   # the faces chosen at 32 px (the split's)


def _drop_record(face: FaceInfo, **extra) -> dict:
    return {"face": face.name, "family": face.family, "style": face.style, "path": face.path,
            "index": face.index, **extra}


def filter_faces(faces, chars: str = CLASS_CHARS, size: int = ANALYSIS_SIZE, processes: int = 1,
                 progress: bool = True, faint: float = FAINT_INK, duplicate: float = DUPLICATE_RMS,
                 symbol: float = SYMBOL_IDENTITY, link: float = LINK_RMS) -> FilterResult:
    """Drop, in this order (a face is recorded under the first reason only): symbol
    faces from metadata (:func:`is_symbol_face`), small caps (:func:`is_small_caps`),
    faces whose cmap lacks a character of ``chars`` (``coverage``), faces FreeType cannot
    draw (``unrenderable``), faces with a glyph of ``chars`` drawn without ink
    (``empty_glyphs``: the whole face), faces whose seen glyphs do not look like
    letters (``symbol``, :func:`glyph_identity` under ``symbol``), faces whose median
    ink share over ``chars`` is under ``faint`` (``faint``), and faces within
    ``duplicate`` RMS over the seen classes of a face with the same labels
    (:func:`duplicate_key`) kept before them in (family, style, name, path) order
    (``duplicate``, :func:`near_duplicates`). Every filter looks at 32 px
    (``ANALYSIS_SIZE``), whatever ``size``: the faces chosen (``selected``), and so the
    split, are the same at every build size. Then the chosen faces are drawn at
    ``size`` (``images``); one FreeType cannot draw there is dropped (``unrenderable``)
    and missing from ``faces``, not from ``selected``.
    ``links``: the family groups with faces within ``link`` of each other
    (:func:`design_links`), measured before the duplicates go."""
    seen_idx = [i for i, c in enumerate(chars) if c in SEEN_CHARS]
    dropped: dict[str, list] = {k: [] for k in ("symbol", "small_caps", "coverage", "unrenderable", "empty_glyphs",
                                                "faint", "duplicate")}
    counts = {"faces_found": len(faces)}
    seconds = {}
    faces = sorted(faces, key=_face_order)
    keep = []
    for f in faces:
        why = is_symbol_face(f)
        if why:
            dropped["symbol"].append(_drop_record(f, reason=why))
        elif is_small_caps(f):
            dropped["small_caps"].append(_drop_record(f, reason="small-caps face (lowercase drawn as capitals)"))
        else:
            keep.append(f)
    counts["after_symbol_metadata"] = len(keep)
    faces, keep = keep, []
    for f in faces:
        miss = missing_chars(f, chars)
        if miss:
            dropped["coverage"].append(_drop_record(f, missing=len(miss), missing_chars=miss[:40]))
        else:
            keep.append(f)
    counts["after_coverage"] = len(keep)
    faces = keep

    t = time.time()
    imgs, shrunk, errors = render_faces(faces, chars, ANALYSIS_SIZE, processes=processes, progress=progress)
    seconds[f"render_{ANALYSIS_SIZE}px"] = round(time.time() - t, 2)
    ink_px = imgs.astype(np.float32).sum(axis=(2, 3)) / 255.0
    ok = []
    for i, f in enumerate(faces):
        if i in errors:
            dropped["unrenderable"].append(_drop_record(f, reason=errors[i]))
        elif (ink_px[i] < EMPTY_INK).any():
            empty = "".join(chars[j] for j in np.nonzero(ink_px[i] < EMPTY_INK)[0])
            dropped["empty_glyphs"].append(_drop_record(f, empty=len(empty), empty_chars=empty))
        else:
            ok.append(i)
    counts["after_empty_glyphs"] = len(ok)

    if ok and seen_idx:
        t = time.time()
        ident = glyph_identity(imgs[ok][:, seen_idx], [family_group(faces[i].family) for i in ok])
        seconds["symbol_check"] = round(time.time() - t, 2)
        for i, s in zip(list(ok), ident):
            if s < symbol:
                ok.remove(i)
                dropped["symbol"].append(_drop_record(faces[i], reason="glyphs unlike letters", identity=round(s, 3)))
    counts["after_symbol_glyphs"] = len(ok)

    med_ink = np.median(ink_share(imgs[ok]), axis=1) if ok else np.zeros(0)
    sel = []
    for k, i in enumerate(ok):
        if med_ink[k] < faint:
            dropped["faint"].append(_drop_record(faces[i], median_ink=round(float(med_ink[k]), 4)))
        else:
            sel.append(i)
    counts["after_faint"] = len(sel)
    ok = sel

    t = time.time()
    dist = pairwise_rms(imgs[ok][:, seen_idx]) if ok else np.zeros((0, 0))
    dups = near_duplicates(None, duplicate, distances=dist, keys=[duplicate_key(faces[i]) for i in ok]) if ok else []
    links = design_links([faces[i] for i in ok], dist, link)
    seconds["duplicates"] = round(time.time() - t, 2)
    gone = set()
    for a, b, d in dups:
        gone.add(a)
        dropped["duplicate"].append(_drop_record(faces[ok[a]], kept=faces[ok[b]].name, kept_path=faces[ok[b]].path,
                                                 kept_family=faces[ok[b]].family, distance=round(d, 4)))
    ok = [i for k, i in enumerate(ok) if k not in gone]
    counts["after_duplicates"] = len(ok)
    selected = [faces[i] for i in ok]

    if size == ANALYSIS_SIZE:
        return FilterResult(faces=selected, images=imgs[ok], dropped=dropped, counts=counts, shrunk=shrunk[ok],
                            seconds=seconds, links=links, selected=selected)
    # the faces are chosen at 32 px; only they are drawn at the build size
    t = time.time()
    big, big_shrunk, big_errors = render_faces(selected, chars, size, processes=processes, progress=progress)
    seconds[f"render_{size}px"] = round(time.time() - t, 2)
    for k in sorted(big_errors):   # drawable at 32 px but not at size (a bitmap font without the strike)
        dropped["unrenderable"].append(_drop_record(selected[k], reason=f"at {size} px: {big_errors[k]}"))
    keep = [k for k in range(len(selected)) if k not in big_errors]
    counts[f"drawn_{size}px"] = len(keep)
    return FilterResult(faces=[selected[k] for k in keep], images=big[keep], dropped=dropped, counts=counts,
                        shrunk=big_shrunk[keep], seconds=seconds, links=links, selected=selected)


# --------------------------------------------------------------------------- dataset

def face_slug(face: FaceInfo) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", face.name).strip("_") or "face"


def face_table(faces, splits: dict | None = None, components: dict | None = None) -> list[dict]:
    """One record per face: index, file stem (unique), family, split group, split and
    the attribute labels (weight, width, italic, monospace, serif id and name).
    ``splits``: {family group: split}; ``components``: {family group: split group}."""
    out, used = [], set()
    for i, f in enumerate(faces):
        stem = face_slug(f)
        if stem in used:
            stem = f"{stem}-{i}"
        used.add(stem)
        fam_group = family_group(f.family)
        group = (components or {}).get(fam_group, fam_group)
        out.append({"index": i, "face": stem, "name": f.name, "family": f.family, "style": f.style,
                    "group": group, "split": (splits or {}).get(fam_group, "train"), "weight": f.weight,
                    "width": f.width, "italic": f.italic, "monospace": f.monospace,
                    "serif": SERIF_CATEGORIES.index(f.serif), "serif_name": f.serif,
                    "path": f.path, "font_index": f.index})
    return out


LABEL_COLUMNS = ("path", "split", "class_index", "class_name", "codepoint", "seen", "face_index", "face",
                 "family", "weight", "width", "italic", "monospace", "serif")


def label_rows(face_records, chars: str = CLASS_CHARS) -> list[dict]:
    """One row per image (every face x every class), LABEL_COLUMNS; ``path`` relative
    to the dataset folder: ``<split>/<class_name>/<face>.png``."""
    classes = class_table(chars)
    rows = []
    for fr in face_records:
        for c in classes:
            rows.append({"path": f"{fr['split']}/{c['name']}/{fr['face']}.png", "split": fr["split"],
                         "class_index": c["index"], "class_name": c["name"], "codepoint": c["codepoint"],
                         "seen": int(c["seen"]), "face_index": fr["index"], "face": fr["face"],
                         "family": fr["family"], "weight": fr["weight"], "width": fr["width"],
                         "italic": fr["italic"], "monospace": fr["monospace"], "serif": fr["serif"]})
    return rows


def package_versions(paths) -> dict:
    """{Debian package: version} of the packages owning ``paths`` (``dpkg-query``),
    {} without dpkg or for files no package owns."""
    if not shutil.which("dpkg-query") or not paths:
        return {}
    owners = set()
    paths = sorted(set(paths))
    for k in range(0, len(paths), 200):
        r = subprocess.run(["dpkg-query", "-S", *paths[k:k + 200]], capture_output=True, text=True)
        for line in r.stdout.splitlines():
            if ": " in line:
                owners.update(p.strip().split(":")[0] for p in line.split(": ", 1)[0].split(","))
    if not owners:
        return {}
    r = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\t${Version}\n", *sorted(owners)],
                       capture_output=True, text=True)
    return dict(line.split("\t", 1) for line in r.stdout.splitlines() if "\t" in line)


def _software() -> dict:
    import PIL
    import fontTools
    from PIL import features

    return {"pillow": PIL.__version__, "freetype": features.version("freetype2"), "fonttools": fontTools.version,
            "numpy": np.__version__}


class GlyphFontsError(ValueError):
    """No font files, or too few faces left after the filters for a split."""


def build_glyph_dataset(out: str, font_dirs=None, size: int = 32, seed: int = 0, held_out: float = 0.2,
                        processes: int = 2, progress: bool = True, chars: str = CLASS_CHARS,
                        write_images: bool = True, filters: dict | None = None) -> dict:
    """Find the faces under ``font_dirs`` (default: the system font folders), filter
    them (:func:`filter_faces`; ``filters``: its thresholds, e.g. ``{"faint": 0.03}``),
    split them by family group (:func:`split_families`) and write
    ``out/<split>/<class_name>/<face>.png`` (white on black, ``size`` px),
    ``labels.json``, ``labels.csv`` and ``report.json``. The faces and the split are
    chosen at 32 px whatever ``size``. A folder that holds an earlier build
    (``labels.json``) has its ``train`` and ``heldout`` folders replaced. Raises
    :class:`GlyphFontsError` when there is no font file, or when the faces left fall in
    fewer than two split groups (no train and held-out split), before writing anything.
    Returns the report."""
    t0 = time.time()
    dirs = list(font_dirs) if font_dirs else [d for d in DEFAULT_FONT_DIRS if os.path.isdir(d)]
    missing = [d for d in dirs if not os.path.exists(d)]
    if missing:
        raise GlyphFontsError(f"font folder {', '.join(missing)} does not exist")
    files = find_font_files(dirs)
    if not files:
        where = ", ".join(dirs) if dirs else f"{', '.join(DEFAULT_FONT_DIRS)} (they do not exist)"
        raise GlyphFontsError(f"no font files ({', '.join(FONT_EXTENSIONS)}) under {where}")
    faces, unreadable = scan_faces(files, progress=progress)
    seconds = {"metadata": round(time.time() - t0, 2)}
    thresholds = {"faint": FAINT_INK, "duplicate": DUPLICATE_RMS, "symbol": SYMBOL_IDENTITY, "link": LINK_RMS,
                  **(filters or {})}
    res = filter_faces(faces, chars, size=size, processes=processes, progress=progress, **thresholds)
    seconds.update(res.seconds)
    # the split is decided on the faces chosen at 32 px (res.selected), so it is the same at every size
    component = split_groups(sorted({family_group(f.family) for f in res.selected}), res.links)
    sizes: dict[str, int] = {}
    for f in res.selected:
        g = component[family_group(f.family)]
        sizes[g] = sizes.get(g, 0) + 1
    if len(sizes) < 2:
        why = ", ".join(f"{len(v)} {k}" for k, v in res.dropped.items() if v)
        raise GlyphFontsError(f"{len(res.selected)} of the {len(faces)} font faces found in {len(files)} files "
                              f"pass the filters ({why or 'none dropped'}), "
                              f"{len(sizes)} typeface{'s' if len(sizes) != 1 else ''} (split group): a train and a "
                              f"held-out split need faces of at least two typefaces that cover the "
                              f"{len(chars)} classes")
    splits = split_families(sizes, held_out=held_out, seed=seed, sizes=sizes)
    records = face_table(res.faces, {g: splits[c] for g, c in component.items()}, component)
    rows = label_rows(records, chars)
    classes = class_table(chars)

    if os.path.isfile(os.path.join(out, "labels.json")):   # an earlier build: its images go
        for split in ("train", "heldout"):
            shutil.rmtree(os.path.join(out, split), ignore_errors=True)
    os.makedirs(out, exist_ok=True)
    if write_images:
        from PIL import Image

        t = time.time()
        for split in ("train", "heldout"):
            for c in classes:
                os.makedirs(os.path.join(out, split, c["name"]), exist_ok=True)
        for fr, imgs in tqdm(zip(records, res.images), total=len(records), desc="write", unit="face",
                             disable=not progress):
            for c, im in zip(classes, imgs):
                Image.fromarray(im).save(os.path.join(out, fr["split"], c["name"], f"{fr['face']}.png"))
        seconds["write"] = round(time.time() - t, 2)

    with open(os.path.join(out, "labels.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=LABEL_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    with open(os.path.join(out, "labels.json"), "w") as fh:
        json.dump({"size": size, "held_out": held_out, "seed": seed, "classes": classes, "serif_categories": list(SERIF_CATEGORIES),
                   "faces": records, "images": [[r["path"], r["class_index"], r["face_index"]] for r in rows],
                   "images_columns": ["path", "class_index", "face_index"]}, fh, ensure_ascii=False)

    by_split = {s: [r for r in records if r["split"] == s] for s in ("train", "heldout")}
    counts = {"font_files": len(files), "unreadable_files": len(unreadable), **res.counts,
              "families": len({f.family for f in res.faces}), "split_groups": len(sizes),
              "classes": len(chars), "seen_classes": sum(c["seen"] for c in classes),
              "unseen_classes": sum(not c["seen"] for c in classes), "images": len(rows),
              "glyphs_shrunk": int(res.shrunk.sum())}
    for s, recs in by_split.items():
        counts[f"{s}_faces"] = len(recs)
        counts[f"{s}_families"] = len({r["family"] for r in recs})
        counts[f"{s}_groups"] = len({r["group"] for r in recs})
    seconds["total"] = round(time.time() - t0, 2)
    report = {
        "size": size, "em": EM, "margin": MARGIN, "colours": "white glyph (255) on black (0)",
        "seed": seed, "held_out": held_out, "font_dirs": list(font_dirs) if font_dirs else
        [d for d in DEFAULT_FONT_DIRS if os.path.isdir(d)],
        "thresholds": {"faint_median_ink_32px": thresholds["faint"], "duplicate_rms_32px": thresholds["duplicate"],
                       "duplicate_same_labels": ["weight", "width", "italic", "monospace", "serif"],
                       "link_rms_32px": thresholds["link"], "symbol_identity": thresholds["symbol"],
                       "empty_ink_pixels": EMPTY_INK,
                       "lookalike_median_rms": LOOKALIKE_THRESHOLD},
        "counts": counts, "seconds": seconds, "software": _software(),
        "packages": package_versions([f.path for f in res.faces]),
        "lookalikes": {c: like for c, like in LOOKALIKES.items()},
        "groups": {g: {"split": splits[g], "faces": n,
                       "families": sorted({f.family for f in res.faces if component[family_group(f.family)] == g})}
                   for g, n in sorted(sizes.items())},
        "links": res.links,
        "filtered": {"unreadable_files": unreadable, **res.dropped},
        "shrunk_glyphs": {records[i]["face"]: "".join(chars[j] for j in np.nonzero(res.shrunk[i])[0])
                          for i in range(len(records)) if res.shrunk[i].any()},
        "faces": records,
    }
    with open(os.path.join(out, "report.json"), "w") as fh:
        json.dump(report, fh, indent=1, ensure_ascii=False)
    return report


def glyph_grid(images, path: str | None = None, pad: int = 1) -> np.ndarray:
    """Tile (rows, cols, S, S) uint8 glyphs into one grayscale image (grey separators);
    written as a PNG when ``path`` is given."""
    from sage_jax.images import make_grid, save_png

    imgs = np.asarray(images)
    rows, cols = imgs.shape[:2]
    grid = make_grid(imgs.reshape(rows * cols, *imgs.shape[2:], 1), ncols=cols, pad=pad, fill=128)[..., 0]
    if path:
        save_png(path, grid)
    return grid
