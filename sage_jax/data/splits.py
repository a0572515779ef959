"""Seen/unseen class splits and the per-class shot split of the evaluation.

SAGE (like AGE) trains on the *seen* classes of a dataset and evaluates few-shot
generation on the *unseen* ones (paper section 4.1): Animal Faces 119/30, Flowers
85/17, VGGFaces 1802/572, NABirds 444/111. For evaluation, the images of each unseen
class are split into S_sample (the K shots the generator is conditioned on) and S_real
(the rest, the real images FID and LPIPS compare against).

Everything here is deterministic: a split is a function of the class names (or image
names) and an explicit ``seed``; no global RNG is touched. A whole protocol (classes,
shots) is stored as a small JSON file with :func:`save_split` / :func:`load_split`, so
the exact split behind a reported number can be kept beside it.

Example::

    paths, labels, names = scan_folder(root)
    seen, unseen = seen_unseen_split(names, dataset="animal_faces")
    rel = [os.path.relpath(p, root) for p in paths]
    by_class = {c: [r for r, l in zip(rel, labels) if names[l] == c] for c in unseen}
    sample, real = shot_split(by_class, k_sample=3, seed=0)
    save_split("animal_faces_split.json", Split(seen, unseen, sample, real))
"""

from __future__ import annotations

import json
import os
import tempfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

# (number of seen classes, number of unseen classes), paper section 4.1.
PAPER_SPLITS: dict[str, tuple[int, int]] = {
    "animal_faces": (119, 30),
    "flowers": (85, 17),
    "vggfaces": (1802, 572),
    "nabirds": (444, 111),
}

_DISPLAY_NAMES = {
    "animal_faces": "Animal Faces",
    "flowers": "Flowers",
    "vggfaces": "VGGFaces",
    "nabirds": "NABirds",
}

ORDERS = ("sorted", "random", "given")

SPLIT_FORMAT = "sage_jax.split/1"


def _dataset_key(dataset: str) -> str:
    key = dataset.strip().lower().replace("-", "_").replace(" ", "_")
    if key not in PAPER_SPLITS:
        raise ValueError(f"unknown dataset {dataset!r}: the paper's splits are for {sorted(PAPER_SPLITS)}")
    return key


def _check_seed(seed) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def seen_unseen_split(
    class_names: Sequence[str],
    dataset: str | None = None,
    n_seen: int | None = None,
    n_unseen: int | None = None,
    seed: int = 0,
    order: str = "sorted",
) -> tuple[list[str], list[str]]:
    """Split ``class_names`` into (seen, unseen) class names.

    Args:
      class_names: the dataset's class names (unique).
      dataset: one of :data:`PAPER_SPLITS` ("animal_faces", "flowers", "vggfaces",
        "nabirds"; spaces, hyphens and case are tolerated): use the paper's counts.
        The number of classes must then match the paper's exactly.
      n_seen, n_unseen: explicit counts, when ``dataset`` is not given (one may be
        omitted: it is the rest). They must add up to the number of classes; select
        a subset of the classes beforehand to use fewer.
      seed: seed of ``order="random"`` (``np.random.default_rng(seed)``).
      order: ``"sorted"``: the first ``n_seen`` class names in sorted order are the
        seen classes, the way the original code splits by class index when the class
        index follows the sorted folder names. ``"given"``: the first ``n_seen`` in the
        order given (for datasets whose class index is not the name order, such as
        TFDS ``oxford_flowers102`` whose names are in label order). ``"random"``: a
        permutation of the sorted names drawn from ``seed`` (independent of the order
        given); each group is returned sorted.

    Returns:
      (seen_names, unseen_names), lists of names.
    """
    names = [str(c) for c in class_names]
    if len(set(names)) != len(names):
        dup = sorted({c for c in names if names.count(c) > 1})
        raise ValueError(f"class names are not unique: {dup[:5]}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    seed = _check_seed(seed)
    total = len(names)

    if dataset is not None:
        key = _dataset_key(dataset)
        paper_seen, paper_unseen = PAPER_SPLITS[key]
        for given, paper, what in ((n_seen, paper_seen, "n_seen"), (n_unseen, paper_unseen, "n_unseen")):
            if given is not None and given != paper:
                raise ValueError(f"{what}={given} contradicts the paper's {_DISPLAY_NAMES[key]} split "
                                 f"{paper_seen}/{paper_unseen}")
        if total != paper_seen + paper_unseen:
            raise ValueError(f"{_DISPLAY_NAMES[key]} has {paper_seen + paper_unseen} classes, got {total} "
                             f"(the paper's split is {paper_seen} seen / {paper_unseen} unseen)")
        n_seen, n_unseen = paper_seen, paper_unseen
    else:
        if n_seen is None and n_unseen is None:
            raise ValueError("give dataset= (one of the paper's) or n_seen= / n_unseen=")
        if n_seen is None:
            n_seen = total - n_unseen
        if n_unseen is None:
            n_unseen = total - n_seen
        if n_seen + n_unseen != total:
            raise ValueError(f"n_seen + n_unseen = {n_seen} + {n_unseen} = {n_seen + n_unseen}, "
                             f"but there are {total} classes")
    if n_seen < 1 or n_unseen < 1:
        raise ValueError(f"need at least one seen and one unseen class, got {n_seen} seen / {n_unseen} unseen "
                         f"of {total} classes")

    if order == "given":
        return names[:n_seen], names[n_seen:]
    ordered = sorted(names)
    if order == "sorted":
        return ordered[:n_seen], ordered[n_seen:]
    perm = np.random.default_rng(seed).permutation(total)
    shuffled = [ordered[i] for i in perm]
    return sorted(shuffled[:n_seen]), sorted(shuffled[n_seen:])


def _class_rng(seed: int, class_name: str) -> np.random.Generator:
    # One stream per class, derived from (seed, crc32 of the name): a class's split does
    # not depend on which other classes are split with it, or in which order.
    return np.random.default_rng([seed, zlib.crc32(class_name.encode("utf-8"))])


def shot_split(
    paths_by_class: Mapping[str, Sequence],
    k_sample: int,
    seed: int = 0,
) -> tuple[dict[str, list], dict[str, list]]:
    """Split each class's images into S_sample (``k_sample`` shots) and S_real (the rest).

    ``paths_by_class`` maps a class name to its image identifiers (paths, preferably
    relative to the dataset root so that the split is portable, or indices). Within a
    class the identifiers are sorted first, so the result depends only on the set of
    images, the class name and ``seed``, not on listing order. Returns
    ``(sample, real)``, two dicts class -> sorted list; every image of a class is in
    exactly one of them.
    """
    if isinstance(k_sample, bool) or not isinstance(k_sample, (int, np.integer)) or k_sample < 1:
        raise ValueError(f"k_sample must be a positive integer, got {k_sample!r}")
    k_sample = int(k_sample)
    seed = _check_seed(seed)
    sample: dict[str, list] = {}
    real: dict[str, list] = {}
    for name in sorted(paths_by_class):
        items = list(paths_by_class[name])
        if len(set(items)) != len(items):
            raise ValueError(f"class {name!r} lists the same image more than once")
        if len(items) < k_sample + 1:
            raise ValueError(f"class {name!r} has {len(items)} images; k_sample={k_sample} needs at least "
                             f"{k_sample + 1} ({k_sample} shots and at least one real image)")
        items = sorted(items)
        perm = _class_rng(seed, str(name)).permutation(len(items))
        chosen = set(perm[:k_sample].tolist())
        sample[name] = [items[i] for i in range(len(items)) if i in chosen]
        real[name] = [items[i] for i in range(len(items)) if i not in chosen]
    return sample, real


@dataclass
class Split:
    """A stored evaluation protocol: class split and (optionally) shot split.

    ``sample`` and ``real`` map unseen class names to S_sample and S_real; ``meta``
    is free-form JSON-compatible provenance (dataset, seed, k_sample, ...).
    """

    seen: list[str]
    unseen: list[str]
    sample: dict[str, list] = field(default_factory=dict)
    real: dict[str, list] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.seen, self.unseen = list(self.seen), list(self.unseen)
        self.sample = {str(k): list(v) for k, v in self.sample.items()}
        self.real = {str(k): list(v) for k, v in self.real.items()}
        self.validate()

    def validate(self) -> None:
        overlap = set(self.seen) & set(self.unseen)
        if overlap:
            raise ValueError(f"classes both seen and unseen: {sorted(overlap)[:5]}")
        for what, names in (("seen", self.seen), ("unseen", self.unseen)):
            if len(set(names)) != len(names):
                raise ValueError(f"{what} class names are not unique")
        unseen = set(self.unseen)
        for what, table in (("sample", self.sample), ("real", self.real)):
            extra = sorted(set(table) - unseen)
            if extra:
                raise ValueError(f"{what} lists classes that are not unseen: {extra[:5]}")
        for name in set(self.sample) & set(self.real):
            both = set(self.sample[name]) & set(self.real[name])
            if both:
                raise ValueError(f"class {name!r}: images in both S_sample and S_real: {sorted(both)[:3]}")

    def to_json(self) -> dict:
        return {"format": SPLIT_FORMAT, "seen": self.seen, "unseen": self.unseen,
                "sample": self.sample, "real": self.real, "meta": self.meta}

    @classmethod
    def from_json(cls, obj: dict) -> "Split":
        if not isinstance(obj, dict) or obj.get("format") != SPLIT_FORMAT:
            got = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
            raise ValueError(f"not a {SPLIT_FORMAT} split file (format: {got!r})")
        return cls(obj["seen"], obj["unseen"], obj.get("sample", {}), obj.get("real", {}), obj.get("meta", {}))


def save_split(path: str, split: Split) -> None:
    """Write ``split`` as JSON (atomically: a crash never leaves half a file)."""
    text = json.dumps(split.to_json(), indent=1, ensure_ascii=False)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".split-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_split(path: str) -> Split:
    """Read a split written by :func:`save_split`."""
    with open(path, encoding="utf-8") as f:
        try:
            obj = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
    try:
        return Split.from_json(obj)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: {e}") from None
