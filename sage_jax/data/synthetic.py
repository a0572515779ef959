"""The embedded default dataset: synthetic images whose generating factors are known.

Why it exists: with the factors known, category retention and
diversity of generated images can be measured exactly, which no public benchmark
allows, and every stage trains on 2 CPU cores at 32 px.

Categories and factors
----------------------
A category is fixed by its **category-relevant** factors:

* ``shape``   -- free family: circle, square, triangle, star, diamond (a 2:1 rhombus,
  not a rotated square), cross, ring, hexagon; oriented family: arrow, chevron.
* ``palette`` -- a named pair (primary, secondary) of saturated colours: red, orange,
  yellow, green, cyan, blue, purple, pink. The primary fills the shape, the secondary
  draws its texture.
* ``texture`` -- solid, stripes, dots, checker (drawn in the object's own frame, so it
  moves, scales and turns with the shape).
* ``orientation`` -- oriented family only: 0, 90, 180 or 270 degrees (see below).

Samples of a category vary in the **category-irrelevant** factors, with ranges shared
by every class:

* position ``(cx, cy)`` of the object's centre in [-0.3, 0.3]^2 (image coordinates
  [-1, 1], x to the right, y *up*);
* ``scale``: object radius in [0.40, 0.65] (the shapes fit in the unit disc of their
  frame, so every object stays inside the image);
* ``rotation`` in [0, 2 pi) (counter-clockwise) -- free family only;
* background brightness in [0.2, 0.8] and background hue ``tint`` in [-1, 1]
  (cool blue-grey ... warm yellow-grey);
* lighting: a linear brightness gradient over the whole scene, multiplier
  ``1 + 0.3 * (lx * x + ly * y)``, with ``(lx, ly)`` = strength in [0, 1] times a
  direction uniform on the circle.

The special factor (the paper's "puma" example, Fig. 1)
--------------------------------------------------------
**Rotation** is irrelevant for the free family (every image of "star-red-stripes" is
turned by a fresh uniform angle) but *defines* the class in the oriented family: an
oriented class fixes its rotation exactly (``arrow-blue-solid-r90`` always points up),
and two oriented classes with the same shape, palette and texture differ only by that
fixed orientation. The class list is built so that every unseen oriented class has
seen siblings that differ from it only by orientation. Editing rotation is therefore
harmless on a free class and changes the category of an oriented one: a global
dictionary learns rotation as an irrelevant direction (from the free family), while
the local (adaptive) statistics of an oriented class's neighbours contain none.

Factor vectors (labels for a regressor oracle)
----------------------------------------------
``FACTOR_NAMES`` gives the column order of the ``factors`` arrays, each about [-1, 1]:

    x, y        centre / 0.3
    scale       (radius - 0.525) / 0.125
    rot_sin, rot_cos
                sin(k theta), cos(k theta), where k is the class's rotational symmetry
                order (gcd of the shape's and the texture's orders: a square with
                stripes looks the same after 180 degrees, so k = 2 and the angle is
                only identifiable modulo 2 pi / k). For a class whose rotation is
                invisible (solid circle, solid ring: k = 0) both are 0. For an
                oriented class they are sin/cos of its fixed orientation (k = 1),
                constant within the class.
    bg_brightness  (brightness - 0.5) / 0.3
    bg_hue      tint
    light_x, light_y   the gradient vector (inside the unit disc)

``factor_mask`` (same shape, bool) is True where a column is an irrelevant factor that
is visible in that image: False for the rotation columns of oriented classes (there
rotation is category-relevant) and of k = 0 classes (invisible).

Seen / unseen split
-------------------
:func:`make_classes` draws the class list deterministically from ``spec.seed``: the
seen classes first cover every shape, palette, texture (and orientation) value, then
unseen classes are *new combinations* of values that seen classes use separately
(seen red star and blue circle, unseen red circle). Candidates with a seen neighbour
differing in a single factor are preferred (oriented: a seen sibling differing only by
orientation), and the code checks that every factor value of every unseen class
appears in some seen class (:func:`check_split`). Class order in the list: seen then
unseen, each sorted by name (the order folder tools use, so labels of
:func:`write_folder` output read back through ``FolderDataset`` match).

Rendering
---------
Pure and deterministic: the irrelevant factors of image ``i`` of class ``c`` come from
``fold_in(fold_in(fold_in(PRNGKey(seed), stream), crc32(class name)), i)``, so an
image depends on (seed, class, index) only, never on how many images are drawn or on
the other classes. The renderer is a jitted JAX function over factor vectors:
shapes are unions of convex polygons (plus radial limits for circle and ring),
evaluated as signed distances with a one-sample smooth edge, textures are filtered the
same way, on a ``supersample`` x finer grid that is box-averaged (2x by default).
Images: float32 NHWC in [-1, 1].
"""

from __future__ import annotations

import functools
import math
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

# --------------------------------------------------------------------------- factors

FREE_SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross", "ring", "hexagon")
ORIENTED_SHAPES = ("arrow", "chevron")
SHAPES = FREE_SHAPES + ORIENTED_SHAPES
TEXTURES = ("solid", "stripes", "dots", "checker")
ORIENTATIONS = (0, 90, 180, 270)  # degrees, counter-clockwise; 0 = pointing right

# name -> (primary, secondary) RGB in [0, 1]
PALETTES: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "red": ((0.90, 0.12, 0.10), (1.00, 0.88, 0.25)),
    "orange": ((1.00, 0.55, 0.05), (0.30, 0.10, 0.55)),
    "yellow": ((0.95, 0.90, 0.10), (0.10, 0.20, 0.75)),
    "green": ((0.10, 0.70, 0.20), (0.98, 0.98, 0.98)),
    "cyan": ((0.10, 0.80, 0.85), (0.60, 0.00, 0.20)),
    "blue": ((0.15, 0.30, 0.95), (0.98, 0.98, 0.98)),
    "purple": ((0.55, 0.15, 0.85), (0.95, 0.78, 0.10)),
    "pink": ((0.95, 0.30, 0.65), (0.08, 0.08, 0.08)),
}
PALETTE_NAMES = tuple(PALETTES)

# Rotational symmetry orders (0 = continuous symmetry: rotation invisible).
SHAPE_SYMMETRY = {"circle": 0, "square": 4, "triangle": 3, "star": 5, "diamond": 2, "cross": 4,
                  "ring": 0, "hexagon": 6, "arrow": 1, "chevron": 1}
TEXTURE_SYMMETRY = {"solid": 0, "stripes": 2, "dots": 4, "checker": 4}

FACTOR_NAMES = ("x", "y", "scale", "rot_sin", "rot_cos", "bg_brightness", "bg_hue", "light_x", "light_y")
factor_names = list(FACTOR_NAMES)  # the public list form
ROT_COLUMNS = (3, 4)

# Ranges of the irrelevant factors (shared by all classes).
POS_RANGE = 0.3
SCALE_RANGE = (0.40, 0.65)
BG_RANGE = (0.2, 0.8)
TINT = np.array([0.2, 0.03, -0.2], np.float32)  # bg *= 1 + tint * TINT
LIGHT = 0.3

# Keys of a scene (the raw, renderable description of a batch of images).
SCENE_KEYS = ("shape", "palette", "texture", "cx", "cy", "scale", "rotation",
              "bg_brightness", "bg_hue", "light_x", "light_y")

_STREAM_DATASET = 1  # generate()/write_folder()
_STREAM_SAMPLE = 2   # sample_class()
_SPLIT_SALT = 0x5A6E  # make_classes() rng
_TAIL_SALT = 0x7A11   # long-tail class order


@dataclass(frozen=True)
class SyntheticSpec:
    """Everything the dataset is a function of.

    ``imbalance_ratio`` > 1 makes the per-class counts of the *seen* split long-tailed
    (exponential profile from ``samples_per_class`` down to ``samples_per_class /
    imbalance_ratio``, in a seeded random class order); unseen classes always have
    ``samples_per_class`` images. ``oriented_fraction`` is the share of classes (of
    each split) drawn from the oriented family.
    """

    num_seen: int = 40
    num_unseen: int = 10
    samples_per_class: int = 100
    image_size: int = 32
    seed: int = 0
    imbalance_ratio: float = 1.0
    oriented_fraction: float = 0.25
    supersample: int = 2

    def __post_init__(self):
        s = self.image_size
        if s < 8 or s & (s - 1):
            raise ValueError(f"image_size must be a power of two >= 8, got {s}")
        if self.num_seen < 2 or self.num_unseen < 1:
            raise ValueError("need at least 2 seen and 1 unseen classes")
        if self.samples_per_class < 1:
            raise ValueError("samples_per_class must be >= 1")
        if not self.imbalance_ratio >= 1.0:
            raise ValueError(f"imbalance_ratio must be >= 1, got {self.imbalance_ratio}")
        if not 0.0 <= self.oriented_fraction <= 1.0:
            raise ValueError("oriented_fraction must be in [0, 1]")
        if self.supersample < 1:
            raise ValueError("supersample must be >= 1")


@dataclass(frozen=True)
class SyntheticClass:
    """One category: its relevant factor values, family and split."""

    name: str
    shape: str
    palette: str
    texture: str
    orientation: int | None  # degrees, oriented family only
    family: str              # "free" | "oriented"
    seen: bool
    index: int               # position in make_classes(spec)

    @property
    def factors(self) -> dict:
        """The category-relevant factor values."""
        d = {"shape": self.shape, "palette": self.palette, "texture": self.texture}
        if self.orientation is not None:
            d["orientation"] = self.orientation
        return d

    @property
    def rotation_order(self) -> int:
        """k such that the class looks the same after turning by 2 pi / k (0: any angle)."""
        return math.gcd(SHAPE_SYMMETRY[self.shape], TEXTURE_SYMMETRY[self.texture])


def _class_name(shape, palette, texture, orientation=None) -> str:
    name = f"{shape}-{palette}-{texture}"
    return name if orientation is None else f"{name}-r{orientation}"


# ------------------------------------------------------------------ class list / split

def _hamming(a: tuple, b: tuple) -> int:
    return sum(x != y for x, y in zip(a, b))


def _greedy_cover(rng, combos: list[tuple], n: int) -> list[tuple]:
    """``n`` combos in a seeded order, first ones chosen to cover every factor value."""
    order = [combos[i] for i in rng.permutation(len(combos))]
    uncovered = set()
    for c in combos:
        uncovered |= {(j, v) for j, v in enumerate(c)}
    chosen: list[tuple] = []
    while uncovered and len(chosen) < n:
        best = max(order, key=lambda c: sum((j, v) in uncovered for j, v in enumerate(c)))
        order.remove(best)
        chosen.append(best)
        uncovered -= {(j, v) for j, v in enumerate(best)}
    chosen += order[: n - len(chosen)]
    return chosen


def _pick_unseen(rng, candidates: list[tuple], n: int, key) -> list[tuple]:
    """The first ``n`` candidates in a seeded order, stably sorted by ``key`` (rank)."""
    order = [candidates[i] for i in rng.permutation(len(candidates))]
    order.sort(key=key)  # stable: seeded order within each rank
    return order[:n]


def make_classes(spec: SyntheticSpec) -> list[SyntheticClass]:
    """The class list of ``spec``: ``spec.num_seen`` seen classes then
    ``spec.num_unseen`` unseen ones, each group sorted by name. Deterministic in
    ``spec.seed`` (and the sizes); checks the unseen-composition property."""
    return list(_make_classes(spec.num_seen, spec.num_unseen, spec.oriented_fraction, spec.seed))


@functools.lru_cache(maxsize=64)
def _make_classes(num_seen, num_unseen, oriented_fraction, seed) -> tuple[SyntheticClass, ...]:
    rng = np.random.default_rng([seed, _SPLIT_SALT])
    n_or_seen = int(round(num_seen * oriented_fraction))
    n_or_unseen = int(round(num_unseen * oriented_fraction))
    if oriented_fraction > 0 and num_unseen >= 2:
        n_or_unseen = max(n_or_unseen, 1)
    if n_or_unseen and num_seen >= 6:
        # two sibling groups with complementary orientation pairs: the least that
        # gives an unseen oriented class a seen sibling and a seen orientation
        n_or_seen = max(n_or_seen, 4)
    else:
        n_or_unseen = 0
    n_free_seen, n_free_unseen = num_seen - n_or_seen, num_unseen - n_or_unseen
    free_all = [(s, p, t) for s in FREE_SHAPES for p in PALETTE_NAMES for t in TEXTURES]
    if n_free_seen + n_free_unseen > len(free_all) or n_free_seen < 0 or n_free_unseen < 0:
        raise ValueError(f"too many free classes for {len(free_all)} combinations")
    if n_or_seen + n_or_unseen > len(ORIENTED_SHAPES) * len(PALETTE_NAMES) * len(TEXTURES) * len(ORIENTATIONS):
        raise ValueError("too many oriented classes")

    # Free family: seen classes cover every shape / palette / texture value.
    free_seen = _greedy_cover(rng, free_all, n_free_seen)

    # Oriented family: seen classes come in sibling groups (same shape, palette,
    # texture; 2 or 3 orientations each), the first two groups covering all
    # orientations, so unseen oriented classes can be missing orientations of a group.
    bases = _greedy_cover(rng, [(s, p, t) for s in ORIENTED_SHAPES for p in PALETTE_NAMES for t in TEXTURES],
                          len(ORIENTED_SHAPES) * len(PALETTE_NAMES) * len(TEXTURES))
    or_seen: list[tuple] = []
    first = list(rng.permutation(ORIENTATIONS))
    for g, base in enumerate(bases):
        if len(or_seen) >= n_or_seen:
            break
        if g == 0:
            ors = first[:2]
        elif g == 1:
            ors = first[2:]
        else:
            ors = list(rng.choice(ORIENTATIONS, size=int(rng.integers(2, 4)), replace=False))
        for o in sorted(int(o) for o in ors)[: n_or_seen - len(or_seen)]:
            or_seen.append(base + (o,))

    seen_values = [set() for _ in range(4)]
    for c in free_seen + or_seen:
        for j, v in enumerate(c):
            seen_values[j].add(v)

    def covered(c):
        return all(v in seen_values[j] for j, v in enumerate(c))

    def neighbours(c, pool):
        return sum(_hamming(c, s) == 1 for s in pool)

    free_set = set(free_seen)
    free_cand = [c for c in free_all if c not in free_set and covered(c)]
    free_unseen = _pick_unseen(rng, free_cand, n_free_unseen,
                               key=lambda c: -min(neighbours(c, free_seen), 1))
    or_set = set(or_seen)
    or_cand = [(s, p, t, o) for s in ORIENTED_SHAPES for p in PALETTE_NAMES for t in TEXTURES
               for o in ORIENTATIONS if (s, p, t, o) not in or_set and covered((s, p, t, o))]
    # rank 0: a seen sibling differs only by orientation; 1: some one-factor neighbour
    or_unseen = _pick_unseen(
        rng, or_cand, n_or_unseen,
        key=lambda c: 0 if any(s[:3] == c[:3] for s in or_seen) else (1 if neighbours(c, or_seen) else 2))
    if len(free_unseen) < n_free_unseen or len(or_unseen) < n_or_unseen:
        raise ValueError("not enough unseen combinations whose values all appear in seen classes")

    def build(combos, seen, offset):
        out = []
        for c in combos:
            o = c[3] if len(c) == 4 else None
            out.append((_class_name(*c), c[0], c[1], c[2], o, "oriented" if o is not None else "free", seen))
        out.sort()
        return [SyntheticClass(*t, index=offset + i) for i, t in enumerate(out)]

    seen_cls = build(free_seen + or_seen, True, 0)
    unseen_cls = build(free_unseen + or_unseen, False, len(seen_cls))
    classes = tuple(seen_cls + unseen_cls)
    check_split(classes)
    return classes


def check_split(classes: Sequence[SyntheticClass]) -> None:
    """Raise AssertionError unless names are unique, no unseen class repeats a seen
    combination, and every factor value of every unseen class appears in some seen
    class (the unseen-composition property)."""
    names = [c.name for c in classes]
    if len(set(names)) != len(names):
        raise AssertionError("class names are not unique")
    seen = [c for c in classes if c.seen]
    seen_values: dict[str, set] = {}
    for c in seen:
        for k, v in c.factors.items():
            seen_values.setdefault(k, set()).add(v)
    seen_names = set(c.name for c in seen)
    for c in classes:
        if c.seen:
            continue
        if c.name in seen_names:
            raise AssertionError(f"unseen class {c.name} is also seen")
        for k, v in c.factors.items():
            if v not in seen_values.get(k, ()):
                raise AssertionError(f"unseen class {c.name}: {k}={v} appears in no seen class")


def split_classes(classes: Sequence[SyntheticClass], split: str) -> list[SyntheticClass]:
    """The classes of ``split`` ("seen", "unseen" or "all"), in list order."""
    if split == "all":
        return list(classes)
    if split not in ("seen", "unseen"):
        raise ValueError(f"split must be 'seen', 'unseen' or 'all', got {split!r}")
    return [c for c in classes if c.seen == (split == "seen")]


# ------------------------------------------------------------------------ counts

def long_tail_counts(num_classes: int, n_max: int, ratio: float) -> np.ndarray:
    """Exponential profile ``n_max * ratio ** (-i / (C - 1))``, rounded, >= 1: class 0
    has ``n_max`` images, class C-1 about ``n_max / ratio``; non-increasing."""
    if num_classes == 1:
        return np.array([n_max], np.int64)
    i = np.arange(num_classes)
    return np.maximum(1, np.round(n_max * float(ratio) ** (-i / (num_classes - 1)))).astype(np.int64)


def class_counts(spec: SyntheticSpec, split: str = "seen") -> np.ndarray:
    """Images per class of ``split`` (in list order). Seen classes follow the long
    tail when ``spec.imbalance_ratio`` > 1 (head classes chosen by a seeded
    permutation); unseen classes always have ``spec.samples_per_class``."""
    classes = make_classes(spec)
    seen = split_classes(classes, "seen")
    n_seen = np.full(len(seen), spec.samples_per_class, np.int64)
    if spec.imbalance_ratio > 1.0:
        profile = long_tail_counts(len(seen), spec.samples_per_class, spec.imbalance_ratio)
        rank = np.random.default_rng([spec.seed, _TAIL_SALT]).permutation(len(seen))
        n_seen = profile[rank]
    n_unseen = np.full(len(classes) - len(seen), spec.samples_per_class, np.int64)
    if split == "seen":
        return n_seen
    if split == "unseen":
        return n_unseen
    if split == "all":
        return np.concatenate([n_seen, n_unseen])
    raise ValueError(f"split must be 'seen', 'unseen' or 'all', got {split!r}")


# ------------------------------------------------------------------ shape geometry

_BIG = 1e6
_P, _E = 6, 6  # max convex pieces per shape, max half-planes per piece


def _regular(n, radius, phase_deg):
    a = np.deg2rad(phase_deg + 360.0 * np.arange(n) / n)
    return np.stack([radius * np.cos(a), radius * np.sin(a)], -1)


def _rect(x0, x1, y0, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)


def _halfplanes(poly) -> list[tuple[float, float, float]]:
    """Outward half-planes (nx, ny, d), n.p - d <= 0 inside, of a CCW convex polygon."""
    poly = np.asarray(poly, float)
    area = 0.5 * np.sum(poly[:, 0] * np.roll(poly[:, 1], -1) - np.roll(poly[:, 0], -1) * poly[:, 1])
    assert area > 0, "polygon must be counter-clockwise"
    return [_line(a, b) for a, b in zip(poly, np.roll(poly, -1, axis=0))]


def _line(a, b) -> tuple[float, float, float]:
    """Half-plane whose inside is left of the directed line a -> b (as a CCW edge)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    n = np.array([b[1] - a[1], a[0] - b[0]])
    n /= np.linalg.norm(n)
    return (n[0], n[1], float(n @ a))


def _shape_pieces() -> dict[str, tuple[list[list[tuple]], float, float]]:
    """shape -> (convex pieces as half-plane lists, outer radius, inner radius).
    Unit frame; every shape lies in the unit disc; oriented shapes point to +x."""
    pieces: dict = {}
    pieces["circle"] = ([[]], 0.85, -_BIG)
    pieces["ring"] = ([[]], 0.92, 0.52)
    pieces["square"] = ([_halfplanes(_rect(-0.68, 0.68, -0.68, 0.68))], _BIG, -_BIG)
    pieces["diamond"] = ([_halfplanes([[0.95, 0.0], [0.0, 0.5], [-0.95, 0.0], [0.0, -0.5]])], _BIG, -_BIG)
    pieces["triangle"] = ([_halfplanes(_regular(3, 1.0, 90.0))], _BIG, -_BIG)
    pieces["hexagon"] = ([_halfplanes(_regular(6, 0.9, 0.0))], _BIG, -_BIG)
    pieces["cross"] = ([_halfplanes(_rect(-0.9, 0.9, -0.3, 0.3)), _halfplanes(_rect(-0.3, 0.3, -0.9, 0.9))],
                       _BIG, -_BIG)
    # Five-pointed star (inner/outer radius 0.5, fatter than a pentagram so it reads
    # at 32 px) = inner pentagon + 5 tip triangles whose bases are pushed 0.15 into
    # the pentagon: the pieces overlap, so the union has no internal seams.
    rho = 0.5
    star = [_halfplanes(_regular(5, rho, 90.0 + 36.0))]
    for i in range(5):
        a = math.radians(90.0 + 72.0 * i)
        v1 = (rho * math.cos(a - math.radians(36)), rho * math.sin(a - math.radians(36)))
        v2 = (rho * math.cos(a + math.radians(36)), rho * math.sin(a + math.radians(36)))
        nx, ny, d = _line(v2, v1)
        star.append([_line(v1, (math.cos(a), math.sin(a))), _line((math.cos(a), math.sin(a)), v2),
                     (nx, ny, d + 0.15)])
    pieces["star"] = (star, _BIG, -_BIG)
    # Arrow: head triangle + shaft, overlapping by 0.2.
    pieces["arrow"] = ([_halfplanes([[0.95, 0.0], [0.1, 0.62], [0.1, -0.62]]),
                        _halfplanes(_rect(-0.9, 0.3, -0.2, 0.2))], _BIG, -_BIG)
    # Chevron ">" (apex A, notch D): two arms, each extended 0.15 past the axis into
    # the other arm and clipped by the other arm's outer edge.
    A, B, C, D, E, F = (0.85, 0.0), (-0.25, 0.9), (-0.75, 0.9), (0.2, 0.0), (-0.75, -0.9), (-0.25, -0.9)
    up = [_line(A, B), _line(B, C), _line(C, D), _line(F, A), (0.0, -1.0, 0.15)]
    lo = [_line(D, E), _line(E, F), _line(F, A), _line(A, B), (0.0, 1.0, 0.15)]
    pieces["chevron"] = ([up, lo], _BIG, -_BIG)
    return pieces


def _shape_tables():
    pieces = _shape_pieces()
    hp = np.zeros((len(SHAPES), _P, _E, 3), np.float32)
    hp[..., 2] = _BIG           # padding edge: n = 0, d = BIG -> value -BIG (no effect on max)
    hp[:, :, 0, 2] = -_BIG      # padding piece: first edge +BIG -> piece never wins the min
    r_out = np.zeros(len(SHAPES), np.float32)
    r_in = np.zeros(len(SHAPES), np.float32)
    for s, name in enumerate(SHAPES):
        plist, r_out[s], r_in[s] = pieces[name]
        assert len(plist) <= _P
        for p, edges in enumerate(plist):
            assert len(edges) <= _E
            hp[s, p, 0, 2] = _BIG
            for e, (nx, ny, d) in enumerate(edges):
                hp[s, p, e] = (nx, ny, d)
    return hp, r_out, r_in


_HP, _R_OUT, _R_IN = _shape_tables()
_COLORS = np.array([PALETTES[p] for p in PALETTE_NAMES], np.float32)  # (n_pal, 2, 3)

# texture geometry, object units
_STRIPE_PERIOD = 0.6
_DOT_SPACING, _DOT_RADIUS = 0.62, 0.19
_CHECK_CELL = 0.45


# ---------------------------------------------------------------------- renderer

def _edge(d, w):
    """Coverage of the region d <= 0 with a smooth edge one sample (w) wide."""
    return jnp.clip(0.5 - d / w, 0.0, 1.0)


@functools.partial(jax.jit, static_argnames=("size", "supersample"))
def _render_chunk(scene: dict, *, size: int, supersample: int):
    n = size * supersample
    coords = (jnp.arange(n, dtype=jnp.float32) + 0.5) / n * 2.0 - 1.0
    X = coords[None, None, :]
    Y = -coords[None, :, None]
    col = lambda v: v[:, None, None]  # noqa: E731
    shape, texture = scene["shape"], scene["texture"]
    r = col(scene["scale"])
    th = scene["rotation"]
    c, s = col(jnp.cos(th)), col(jnp.sin(th))
    qx, qy = X - col(scene["cx"]), Y - col(scene["cy"])
    px = (c * qx + s * qy) / r
    py = (-s * qx + c * qy) / r
    w = (2.0 / n) / r

    hp = jnp.asarray(_HP)[shape]  # (N, P, E, 3)
    f = None
    for p in range(_P):
        fp = None
        for e in range(_E):
            v = col(hp[:, p, e, 0]) * px + col(hp[:, p, e, 1]) * py - col(hp[:, p, e, 2])
            fp = v if fp is None else jnp.maximum(fp, v)
        f = fp if f is None else jnp.minimum(f, fp)
    rad = jnp.sqrt(px * px + py * py)
    f = jnp.maximum(f, jnp.maximum(rad - col(jnp.asarray(_R_OUT)[shape]), col(jnp.asarray(_R_IN)[shape]) - rad))
    cover = _edge(f, w)

    # textures: share of the secondary colour
    stripe = _edge(jnp.abs(px - _STRIPE_PERIOD * jnp.round(px / _STRIPE_PERIOD)) - _STRIPE_PERIOD / 4, w)
    dx = px - _DOT_SPACING * jnp.round(px / _DOT_SPACING)
    dy = py - _DOT_SPACING * jnp.round(py / _DOT_SPACING)
    dots = _edge(jnp.sqrt(dx * dx + dy * dy) - _DOT_RADIUS, w)
    per = 2 * _CHECK_CELL
    hx = 2 * _edge(jnp.abs(px - per * jnp.round(px / per)) - _CHECK_CELL / 2, w) - 1
    hy = 2 * _edge(jnp.abs(py - per * jnp.round(py / per)) - _CHECK_CELL / 2, w) - 1
    checker = 0.5 * (1 + hx * hy)
    t = col(texture)
    tex = jnp.where(t == 1, stripe, jnp.where(t == 2, dots, jnp.where(t == 3, checker, 0.0)))[..., None]

    colors = jnp.asarray(_COLORS)[scene["palette"]]  # (N, 2, 3)
    c1, c2 = colors[:, None, None, 0], colors[:, None, None, 1]
    obj = c1 + (c2 - c1) * tex
    bg = col(scene["bg_brightness"])[..., None] * (1.0 + col(scene["bg_hue"])[..., None] * jnp.asarray(TINT))
    img = bg + (obj - bg) * cover[..., None]
    light = 1.0 + LIGHT * (col(scene["light_x"]) * X + col(scene["light_y"]) * Y)
    img = jnp.clip(img * light[..., None], 0.0, 1.0)
    if supersample > 1:
        img = img.reshape(-1, size, supersample, size, supersample, 3).mean(axis=(2, 4))
    return img * 2.0 - 1.0


def _as_scene(scene: Mapping) -> dict:
    missing = [k for k in SCENE_KEYS if k not in scene]
    if missing:
        raise KeyError(f"scene misses {missing}")
    out = {}
    for k in SCENE_KEYS:
        dt = np.int32 if k in ("shape", "palette", "texture") else np.float32
        out[k] = np.asarray(scene[k], dt).reshape(-1)
    n = len(out["shape"])
    if any(len(v) != n for v in out.values()):
        raise ValueError("scene arrays have different lengths")
    return out


def render(scene_or_classes, factors=None, *, size: int = 32, supersample: int = 2,
           chunk: int = 128) -> np.ndarray:
    """Render images, float32 (N, size, size, 3) in [-1, 1].

    ``render(scene)``: ``scene`` maps each of ``SCENE_KEYS`` to an (N,) array of raw
    values (shape/palette/texture as indices into ``SHAPES``/``PALETTE_NAMES``/
    ``TEXTURES``; rotation in radians).
    ``render(classes, factors)``: one :class:`SyntheticClass` per image and an (N, F)
    normalised factor array (``FACTOR_NAMES`` order), decoded by
    :func:`decode_factors` -- e.g. to re-render an image with one factor edited.
    """
    if factors is not None:
        scene = decode_factors(scene_or_classes, factors)
    else:
        scene = _as_scene(scene_or_classes)
    n = len(scene["shape"])
    if n == 0:
        return np.zeros((0, size, size, 3), np.float32)
    chunk = max(1, min(chunk, n))
    out = np.empty((n, size, size, 3), np.float32)
    for start in range(0, n, chunk):
        part = {k: v[start:start + chunk] for k, v in scene.items()}
        m = len(part["shape"])
        if m < chunk:  # pad to the compiled chunk size
            part = {k: np.concatenate([v, np.repeat(v[-1:], chunk - m)]) for k, v in part.items()}
        out[start:start + m] = np.asarray(_render_chunk(part, size=size, supersample=supersample))[:m]
    return out


# ------------------------------------------------------------ factor sampling / codes

@jax.jit
def _uniforms(base_key, class_hash, index):
    def one(h, i):
        return jax.random.uniform(jax.random.fold_in(jax.random.fold_in(base_key, h), i), (8,))
    return jax.vmap(one)(class_hash, index)


def _class_hash(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def _to_key(key_or_seed):
    if isinstance(key_or_seed, (int, np.integer)):
        return jax.random.PRNGKey(int(key_or_seed))
    return key_or_seed


def sample_scene(base_key, classes: Sequence[SyntheticClass], index) -> dict:
    """Raw scene of images ``index[j]`` of classes ``classes[j]`` from ``base_key``:
    image j depends only on (base_key, classes[j].name, index[j])."""
    index = np.asarray(index, np.uint32).reshape(-1)
    if len(index) != len(classes):
        raise ValueError("one class per index")
    if len(index) == 0:
        return {k: np.zeros((0,), np.int32 if k in ("shape", "palette", "texture") else np.float32)
                for k in SCENE_KEYS}
    hashes = np.array([_class_hash(c.name) for c in classes], np.uint32)
    n = len(index)
    padded = max(64, 1 << (n - 1).bit_length())  # few distinct shapes to compile
    u = _uniforms(base_key, np.pad(hashes, (0, padded - n)), np.pad(index, (0, padded - n)))
    u = np.asarray(u, np.float64)[:n]
    orient = np.array([c.orientation is not None for c in classes])
    fixed = np.deg2rad([c.orientation or 0 for c in classes])
    strength, direction = u[:, 6], 2 * np.pi * u[:, 7]
    scene = {
        "shape": np.array([SHAPES.index(c.shape) for c in classes], np.int32),
        "palette": np.array([PALETTE_NAMES.index(c.palette) for c in classes], np.int32),
        "texture": np.array([TEXTURES.index(c.texture) for c in classes], np.int32),
        "cx": POS_RANGE * (2 * u[:, 0] - 1),
        "cy": POS_RANGE * (2 * u[:, 1] - 1),
        "scale": SCALE_RANGE[0] + (SCALE_RANGE[1] - SCALE_RANGE[0]) * u[:, 2],
        "rotation": np.where(orient, fixed, 2 * np.pi * u[:, 3]),
        "bg_brightness": BG_RANGE[0] + (BG_RANGE[1] - BG_RANGE[0]) * u[:, 4],
        "bg_hue": 2 * u[:, 5] - 1,
        "light_x": strength * np.cos(direction),
        "light_y": strength * np.sin(direction),
    }
    return {k: v.astype(np.int32 if k in ("shape", "palette", "texture") else np.float32)
            for k, v in scene.items()}


def encode_factors(scene: Mapping, classes: Sequence[SyntheticClass]) -> tuple[np.ndarray, np.ndarray]:
    """(factors (N, F) float32 about [-1, 1], factor_mask (N, F) bool) of a raw scene;
    see the module docstring for the columns and the mask."""
    n = len(classes)
    mid = 0.5 * (SCALE_RANGE[0] + SCALE_RANGE[1])
    half = 0.5 * (SCALE_RANGE[1] - SCALE_RANGE[0])
    bmid, bhalf = 0.5 * (BG_RANGE[0] + BG_RANGE[1]), 0.5 * (BG_RANGE[1] - BG_RANGE[0])
    k = np.array([c.rotation_order for c in classes], np.float64)
    orient = np.array([c.orientation is not None for c in classes])
    th = np.asarray(scene["rotation"], np.float64)
    kk = np.where(orient, 1.0, k)
    rs, rc = np.sin(kk * th), np.cos(kk * th)
    rs, rc = np.where(kk > 0, rs, 0.0), np.where(kk > 0, rc, 0.0)
    f = np.stack([
        np.asarray(scene["cx"]) / POS_RANGE, np.asarray(scene["cy"]) / POS_RANGE,
        (np.asarray(scene["scale"]) - mid) / half, rs, rc,
        (np.asarray(scene["bg_brightness"]) - bmid) / bhalf, np.asarray(scene["bg_hue"]),
        np.asarray(scene["light_x"]), np.asarray(scene["light_y"])], -1).astype(np.float32)
    mask = np.ones((n, len(FACTOR_NAMES)), bool)
    rot_ok = (~orient) & (k > 0)
    for j in ROT_COLUMNS:
        mask[:, j] = rot_ok
    return f.reshape(n, len(FACTOR_NAMES)), mask


def decode_factors(classes: Sequence[SyntheticClass], factors) -> dict:
    """Inverse of :func:`encode_factors` up to the class's symmetry: a raw scene for
    ``classes[j]`` with normalised factors ``factors[j]``. The rotation comes from the
    factor vector for every class (so an oriented class can be rendered turned, i.e.
    as a different category); for k = 0 classes it is 0."""
    f = np.asarray(factors, np.float64).reshape(len(classes), len(FACTOR_NAMES))
    k = np.array([1 if c.orientation is not None else c.rotation_order for c in classes], np.float64)
    th = np.where(k > 0, np.arctan2(f[:, 3], f[:, 4]) / np.maximum(k, 1), 0.0)
    mid = 0.5 * (SCALE_RANGE[0] + SCALE_RANGE[1])
    half = 0.5 * (SCALE_RANGE[1] - SCALE_RANGE[0])
    bmid, bhalf = 0.5 * (BG_RANGE[0] + BG_RANGE[1]), 0.5 * (BG_RANGE[1] - BG_RANGE[0])
    return _as_scene({
        "shape": [SHAPES.index(c.shape) for c in classes],
        "palette": [PALETTE_NAMES.index(c.palette) for c in classes],
        "texture": [TEXTURES.index(c.texture) for c in classes],
        "cx": f[:, 0] * POS_RANGE, "cy": f[:, 1] * POS_RANGE, "scale": mid + half * f[:, 2],
        "rotation": th, "bg_brightness": bmid + bhalf * f[:, 5], "bg_hue": f[:, 6],
        "light_x": f[:, 7], "light_y": f[:, 8]})


# ---------------------------------------------------------------------- datasets

def _dataset(spec, labels, class_list, index, base_key) -> dict:
    per_image = [class_list[l] for l in labels]
    scene = sample_scene(base_key, per_image, index)
    factors, mask = encode_factors(scene, per_image)
    return {
        "images": render(scene, size=spec.image_size, supersample=spec.supersample),
        "labels": np.asarray(labels, np.int32),
        "factors": factors,
        "factor_mask": mask,
        "class_names": [c.name for c in class_list],
        "class_ids": np.array([c.index for c in per_image], np.int32),
        "index": np.asarray(index, np.int32),
        "scene": scene,
    }


def _dataset_key(spec: SyntheticSpec):
    return jax.random.fold_in(jax.random.PRNGKey(spec.seed), _STREAM_DATASET)


def generate(spec: SyntheticSpec, split: str = "seen") -> dict:
    """The images of ``split`` ("seen", "unseen" or "all"), class by class.

    Returns a dict: ``images`` (N, S, S, 3) float32 in [-1, 1]; ``labels`` (N,) int32,
    the position of the class in ``class_names`` (the split's classes in list order);
    ``factors`` (N, F) float32 and ``factor_mask`` (N, F) bool (``FACTOR_NAMES``);
    ``class_names``; ``class_ids`` (N,) the index in ``make_classes(spec)``; ``index``
    (N,) the image's index within its class; ``scene`` the raw factors.
    """
    class_list = split_classes(make_classes(spec), split)
    counts = class_counts(spec, split)
    labels = np.repeat(np.arange(len(class_list)), counts)
    index = np.concatenate([np.arange(n) for n in counts])
    return _dataset(spec, labels, class_list, index, _dataset_key(spec))


def sample_class(spec: SyntheticSpec, class_index: int, n: int, key_or_seed) -> dict:
    """``n`` fresh images of class ``make_classes(spec)[class_index]`` (e.g. S_sample
    and S_real of an unseen class), drawn from ``key_or_seed`` (an int seed or a
    ``jax.random`` key) in a stream disjoint from :func:`generate`'s. Same dict as
    :func:`generate` with ``labels`` = ``class_ids`` = ``class_index``."""
    classes = make_classes(spec)
    cls = classes[class_index]
    base = jax.random.fold_in(_to_key(key_or_seed), _STREAM_SAMPLE)
    out = _dataset(spec, np.zeros(n, np.int64), [cls], np.arange(n), base)
    out["labels"] = np.full(n, class_index, np.int32)
    out["class_names"] = [c.name for c in classes]
    return out


def write_folder(spec: SyntheticSpec, root: str, split: str = "seen") -> list[str]:
    """Write the images of ``split`` as ``root/<class name>/<i:05d>.png`` (8-bit RGB;
    zero-padded so that sorted file names follow the image index) and
    ``root/factors.npz`` (relative paths, labels, factors, factor_mask, factor_names,
    class_names). Returns the written PNG paths. ``FolderDataset.from_folder(root,
    spec.image_size)`` reads it back with the same labels."""
    from sage_jax.images import save_png, to_uint8

    data = generate(spec, split)
    u8 = to_uint8(data["images"])
    paths, rel = [], []
    for img, label, i in zip(u8, data["labels"], data["index"]):
        r = os.path.join(data["class_names"][label], f"{int(i):05d}.png")
        p = os.path.join(root, r)
        save_png(p, img)
        paths.append(p)
        rel.append(r)
    np.savez(os.path.join(root, "factors.npz"), paths=np.array(rel), labels=data["labels"],
             factors=data["factors"], factor_mask=data["factor_mask"],
             factor_names=np.array(FACTOR_NAMES), class_names=np.array(data["class_names"]))
    return paths


__all__ = [
    "SyntheticSpec", "SyntheticClass", "make_classes", "check_split", "split_classes",
    "long_tail_counts", "class_counts", "render", "sample_scene", "encode_factors",
    "decode_factors", "generate", "sample_class", "write_folder", "factor_names",
    "FACTOR_NAMES", "SCENE_KEYS", "SHAPES", "FREE_SHAPES", "ORIENTED_SHAPES", "TEXTURES",
    "PALETTES", "PALETTE_NAMES", "ORIENTATIONS",
]
