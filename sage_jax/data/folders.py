"""Image-folder datasets in the layouts the original repositories use.

* ``root/<class>/<image>``: one folder per class (any depth below the class folder).
* ``root/<class>_<sample>.jpg`` (AGE/SAGE's ``train``/``valid`` folders): the class is
  the file name up to the first underscore. Point ``root`` at ``.../train`` or pass
  ``split='train'`` with the dataset root.
* ``root/<image>`` otherwise: the folder is one class, named after it (e.g. the shots
  of one unseen class).

Unreadable images (truncated, not an image, ...) are skipped and counted; a run never
dies on one file. Images are returned as float32 NHWC in [-1, 1] at a fixed size.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import fnmatch
import os
from dataclasses import dataclass, field

import numpy as np

from tqdm import tqdm

from sage_jax.errors import EvaluationError
from sage_jax.images import IMAGE_EXTENSIONS, ImageReport, is_image_file, to_uint8, try_load_image


def _is_image(path: str) -> bool:
    return is_image_file(path)


def scan_folder(root: str, split: str | None = None,
                what: str = "dataset folder") -> tuple[list[str], list[int], list[str]]:
    """(paths, labels, class names) of an image folder, classes sorted by name.

    The one set of rules for every folder of classes (datasets, real and generated sets,
    the shots of ``sage-jax generate``):

    * a folder of class folders: ``root/<class>/...`` (any depth below), one class each;
    * images directly in ``root``: grouped by the name before the first underscore when
      every one is named ``<class>_<i>``, else the folder itself is one class, named
      after it.

    ``what`` names the folder in the messages: a file, a missing folder and a folder
    without images are refused saying what is read."""
    if split:
        root = os.path.join(root, split)
    if os.path.isfile(root):
        stem = os.path.splitext(os.path.basename(root))[0] or "myclass"
        raise ValueError(f"{what} {root} is a file; it must be a folder of images (one class) or a folder of "
                         f"class folders (one class each): e.g. mkdir -p images/{stem} && cp {root} images/{stem}/ "
                         f"then give images/{stem} (one class) or images (one class per folder)")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{what} {root} does not exist")
    entries = sorted(os.listdir(root))
    subdirs = [e for e in entries if os.path.isdir(os.path.join(root, e)) and not e.startswith(".")]
    flat = [e for e in entries if os.path.isfile(os.path.join(root, e)) and _is_image(os.path.join(root, e))]
    items: list[tuple[str, str]] = []
    if flat:
        by_name = all("_" in name for name in flat)
        itself = os.path.basename(os.path.normpath(os.path.abspath(root)))
        for name in flat:
            items.append((name.split("_")[0] if by_name else itself, os.path.join(root, name)))
    for d in subdirs:
        if d in ("train", "valid", "test") and not flat and split is None and len(subdirs) <= 3:
            raise ValueError(f"{root} holds {subdirs}: pass split='train' (or point at the split folder)")
        for dirpath, _, files in os.walk(os.path.join(root, d)):
            for f in sorted(files):
                if _is_image(os.path.join(dirpath, f)):
                    items.append((d, os.path.join(dirpath, f)))
    if not items:
        raise ValueError(f"{what} {root} has no images: no file in it or in its sub-folders is an image "
                         f"({' '.join(IMAGE_EXTENSIONS)}, or image content under another name); give a folder of "
                         f"images (one class) or a folder of class folders (one class each)")
    names = sorted({c for c, _ in items})
    index = {c: i for i, c in enumerate(names)}
    items.sort(key=lambda t: (index[t[0]], t[1]))
    return [p for _, p in items], [index[c] for c, _ in items], names


def class_files(root: str, split: str | None = None, what: str = "dataset folder") -> dict[str, list[str]]:
    """{class: its image files, sorted} of ``root`` (:func:`scan_folder`'s layouts), classes sorted."""
    paths, labels, names = scan_folder(root, split, what)
    out: dict[str, list[str]] = {name: [] for name in names}
    for p, label in zip(paths, labels):
        out[names[label]].append(p)
    return out


def read_first(files: list[str], size: int, k: int, report: ImageReport | None = None):
    """(images (n, size, size, 3) float32 in [-1, 1] or None, the files they came from):
    the first ``k`` readable images of ``files`` in their order (n <= k; unreadable
    files are skipped and counted in ``report``)."""
    report = report if report is not None else ImageReport()
    imgs, used = [], []
    for f in files:
        if len(imgs) == k:
            break
        img = try_load_image(f, size, report)
        if img is not None:
            imgs.append(img)
            used.append(f)
    return (np.stack(imgs) if imgs else None), used


@dataclass
class FolderDataset:
    """Paths and labels of an image folder, read in batches at ``size`` x ``size``."""

    paths: list[str]
    labels: list[int]
    class_names: list[str]
    size: int
    report: ImageReport = field(default_factory=ImageReport)  # skips and conversions

    @property
    def skipped(self) -> dict:
        """{path: reason} of the files skipped so far."""
        return {p: r for p, (_, r) in self.report.skipped.items()}

    @classmethod
    def from_folder(cls, root: str, size: int, split: str | None = None,
                    classes: list[str] | None = None) -> "FolderDataset":
        paths, labels, names = scan_folder(root, split)
        if classes is not None:
            keep = set(classes)
            missing = sorted(keep - set(names))
            if missing:
                raise ValueError(f"classes {missing[:5]} are not in {root}")
            new_index = {c: i for i, c in enumerate(classes)}
            pairs = [(p, new_index[names[l]]) for p, l in zip(paths, labels) if names[l] in keep]
            paths, labels, names = [p for p, _ in pairs], [l for _, l in pairs], list(classes)
        return cls(paths, labels, names, size)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def load(self, index: int) -> np.ndarray | None:
        """One image, or None (and a note in ``skipped``) when it cannot be read."""
        return try_load_image(self.paths[index], self.size, self.report)

    def load_batch(self, indices, pool: concurrent.futures.Executor | None = None):
        """(images (B, S, S, 3), labels (B,)) for ``indices``; unreadable images are
        replaced by zeros with label -1, so the batch shape never changes."""
        indices = list(indices)
        imgs = list(pool.map(self.load, indices)) if pool else [self.load(i) for i in indices]
        out = np.zeros((len(indices), self.size, self.size, 3), np.float32)
        labels = np.full((len(indices),), -1, np.int32)
        for j, (i, img) in enumerate(zip(indices, imgs)):
            if img is not None:
                out[j] = img
                labels[j] = self.labels[i]
        return out, labels

    def batches(self, batch_size: int, workers: int = 2, ahead: int = 2):
        """Every image once, in order, in fixed-size batches (the last padded with
        label -1), ``ahead`` batches read in advance on a thread pool."""
        order = list(range(len(self)))
        chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        queue: collections.deque = collections.deque()

        def finish(item):
            n, future = item
            imgs, labels = future.result()
            labels[n:] = -1
            return imgs, labels

        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            for chunk in chunks:
                padded = chunk + [chunk[-1]] * (batch_size - len(chunk))
                queue.append((len(chunk), pool.submit(self.load_batch, padded)))
                if len(queue) > ahead:
                    yield finish(queue.popleft())
            while queue:
                yield finish(queue.popleft())


@dataclasses.dataclass
class ClassImages:
    """Images of one folder, per class: uint8 (n, S, S, 3), their files, and the
    :class:`sage_jax.images.ImageReport` of what was skipped or converted."""

    images: dict
    files: dict
    report: object

    @property
    def classes(self) -> list:
        return sorted(self.images)

    def count(self) -> int:
        return int(sum(len(v) for v in self.images.values()))

    def as_float(self, name: str) -> np.ndarray:
        return self.images[name].astype(np.float32) / 127.5 - 1.0


def read_class_folder(root: str, size: int, pattern: str = "*", classes=None, progress: bool = False,
                      what: str = "images") -> ClassImages:
    """Images of ``root`` (class layouts of :func:`sage_jax.data.folders.scan_folder`)
    whose file names match ``pattern``, read at ``size`` x ``size`` with the shared
    image policy: unreadable files are skipped and counted, never fatal."""
    paths, labels, names = scan_folder(root)
    by_class: dict = {}
    for p, l in zip(paths, labels):
        if fnmatch.fnmatch(os.path.basename(p), pattern) and (classes is None or names[l] in classes):
            by_class.setdefault(names[l], []).append(p)
    if not by_class:
        raise EvaluationError(f"no images matching {pattern!r} in {root}")
    images, files, report = {}, {}, ImageReport()
    for name in tqdm(sorted(by_class), desc=f"reading {what}", unit="class", disable=not progress):
        ok, arrs = [], []
        for p in by_class[name]:
            x = try_load_image(p, size, report, quiet=not progress)
            if x is not None:
                arrs.append(to_uint8(x))
                ok.append(p)
        if arrs:
            images[name], files[name] = np.stack(arrs), ok
    return ClassImages(images, files, report)
