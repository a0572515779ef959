"""TFDS datasets without TensorFlow: image folders and Oxford Flowers 102 as array_record.

TFDS (4.9.10) builds and reads a dataset without TensorFlow when the builder stores
images as raw ``tfds.features.Tensor(shape=(S, S, 3), dtype=np.uint8)`` (not
``tfds.features.Image``, whose encoder needs TensorFlow), writes
``file_format='array_record'`` and is read back with ``builder.as_data_source()``
(random access, no tf.data). Images are decoded, converted to RGB and resized once, at
build time, by the same code as :class:`~sage_jax.data.folders.FolderDataset`
(:func:`sage_jax.images.load_image`), so a record holds exactly the uint8 pixels that
``FolderDataset`` would produce. Each example is
``{"image": uint8 (S, S, 3), "label": int64, "file_name": bytes}``; examples keep the
order of the source (``disable_shuffling``), classes sorted by name. One caveat,
worked around in :class:`RawImageBuilder`: tfds 4.9.10 looks up ``importlib_resources``
(not installed on Python >= 3.9) for builders defined inside a package.

Bad files never stop a build: unreadable ones (truncated, not an image, empty) and
ones smaller than ``min_side`` pixels are skipped; grayscale, RGBA, palette, CMYK and
16-bit images are converted to 8-bit RGB. Both are counted in the build's metadata
(``builder.info.metadata``: ``num_skipped``, ``skipped`` {split: [[file, reason]]},
``skipped_by_kind`` {kind: count}, ``conversions`` {"CMYK" / "16-bit" / "EXIF-rotated"...: count},
``converted`` {PIL mode: count}) and the skips are logged.

Usage::

    build_folder_dataset("data/animal_faces", "~/tfds", "animal_faces_128", size=128)
    sources, class_names = open_folder_dataset("~/tfds", "animal_faces_128")
    images, labels = read_batch(sources["train"], range(16))   # float32 [-1, 1]

    build_flowers102("~/downloads/flowers102", "~/tfds", size=128)  # manual files
    sources, names = open_folder_dataset("~/tfds", "oxford_flowers102_raw")

Why not TFDS's own ``oxford_flowers102`` builder: checked with tfds 4.9.10 and no
TensorFlow installed, (1) its ``_generate_examples`` reads ``imagelabels.mat`` and
``setid.mat`` through ``tf.io.gfile.GFile`` and fails with ``ModuleNotFoundError:
No module named 'tensorflow'``; (2) it has no manual-download mode (its
``_split_generators`` downloads the three files from robots.ox.ac.uk); (3) it stores
``tfds.features.Image()`` (the original JPEGs at their original sizes) which
``as_dataset`` decodes with TensorFlow. :class:`Flowers102Images` reads the same
three files from a directory the user gives and keeps the official builder's splits
(train = ``trnid``, validation = ``valid``, test = ``tstid``), 0-based labels, class
names and file names; only the images differ (raw uint8 at a fixed size). The paper's
Flowers split (85 seen / 17 unseen classes) uses all 8189 images: read
``split="train+validation+test"`` and split classes in label order
(``seen_unseen_split(names, "flowers", order="given")``).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import os
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import utils as tfds_utils

from sage_jax.data.folders import scan_folder
from sage_jax.images import ImageError, ImageReport, load_image, to_uint8

log = logging.getLogger(__name__)

VERSION = "1.0.0"
# Images with a side below this many pixels are skipped: upscaled, they are noise.
DEFAULT_MIN_SIDE = 8
_SPLIT_DIRS = ("train", "valid", "test")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class _Item:
    key: str
    file_name: str  # relative to the split's root; stored in the record
    label: int
    path: str | None  # None: listed by the annotations but absent


def _convert(path: str, size: int, min_side: int, report: ImageReport | None = None) -> tuple[np.ndarray, str]:
    """(uint8 (size, size, 3), original PIL mode); raises ImageError."""
    from sage_jax.images import _pillow

    Image = _pillow()  # the shared policy: our pixel limit replaces Pillow's bomb warning

    mode = "?"
    try:  # header only: size and mode, to refuse tiny images and count conversions
        with Image.open(path) as im:
            (w, h), mode = im.size, im.mode
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        pass  # load_image below names the problem
    else:
        if min(w, h) < min_side:
            raise ImageError(f"{path}: {w}x{h} is smaller than min_side={min_side}", "too small")
    # load_image returns k / 127.5 - 1 for uint8 k; to_uint8 recovers k exactly.
    return to_uint8(load_image(path, size, report)), mode


def _chunks(iterable, n):
    it = iter(iterable)
    while chunk := list(itertools.islice(it, n)):
        yield chunk


class RawImageBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the builders here: raw uint8 images at ``size``, ClassLabel, file name.

    Subclasses implement :meth:`_items_by_split`. Not registered with TFDS: builders
    are made per dataset name by :func:`build_folder_dataset` / :func:`build_flowers102`
    and read back with :func:`open_folder_dataset`.
    """

    RELEASE_NOTES = {VERSION: "Raw uint8 images resized at build time, array_record."}
    VERSION = tfds.core.Version(VERSION)

    # TFDS 4.9.10's ``DatasetBuilder.code_path`` evaluates ``importlib_resources.abc``
    # (a backport it requires only on Python < 3.9, so usually not installed) for any
    # builder defined inside a package, and fails. It only locates a checksums file of
    # downloads; these builders download nothing.
    @tfds_utils.classproperty
    @classmethod
    def code_path(cls):
        return None

    def __init__(self, *, size: int, class_names: list[str], source: str,
                 min_side: int = DEFAULT_MIN_SIDE, workers: int | None = None, **kwargs):
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        self._size = int(size)
        self._class_names = list(class_names)
        self._source = source
        self._min_side = int(min_side)
        self._workers = workers or min(4, os.cpu_count() or 1)
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"Images of {self._source}, RGB uint8 resized to {self._size}x{self._size}.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(self._size, self._size, 3), dtype=np.uint8),
                "label": tfds.features.ClassLabel(names=self._class_names),
                "file_name": tfds.features.Text(),
            }),
            supervised_keys=("image", "label"),
            disable_shuffling=True,  # keep the source order (classes sorted)
            metadata=tfds.core.MetadataDict(),
        )

    def _items_by_split(self, dl_manager) -> dict[str, list[_Item]]:
        raise NotImplementedError

    def _split_generators(self, dl_manager):
        items = self._items_by_split(dl_manager)
        self.info.metadata.update(source=self._source, size=self._size, min_side=self._min_side,
                                  num_skipped=0, skipped={}, skipped_by_kind={}, converted={})
        return {split: self._generate_examples(split, its) for split, its in items.items()}

    def _generate_examples(self, split: str, items: list[_Item]):
        meta = self.info.metadata
        skipped = meta["skipped"].setdefault(split, [])
        converted = meta["converted"]
        report = ImageReport()  # conversions by kind, EXIF rotations included

        def work(item: _Item):
            if item.path is None:
                return None, (f"{item.file_name}: listed in the annotations but missing", "missing")
            try:
                return _convert(item.path, self._size, self._min_side, report), None
            except ImageError as e:
                return None, (str(e), e.kind)
            except Exception as e:  # noqa: BLE001 - a build never dies on one file
                return None, (f"{item.path}: {type(e).__name__}: {e}", "unreadable")

        n_ok = 0
        with concurrent.futures.ThreadPoolExecutor(self._workers) as pool:
            # Bounded chunks: decoding runs ahead of the writer by at most one chunk.
            for chunk in _chunks(items, 64 * self._workers):
                for item, (result, why) in zip(chunk, pool.map(work, chunk)):
                    if result is None:
                        reason, kind = why
                        skipped.append([item.file_name, reason])
                        meta["num_skipped"] += 1
                        by_kind = meta.setdefault("skipped_by_kind", {})
                        by_kind[kind] = by_kind.get(kind, 0) + 1
                        log.warning("skipped: %s", reason)
                        continue
                    image, mode = result
                    if mode != "RGB":
                        converted[mode] = converted.get(mode, 0) + 1
                    n_ok += 1
                    yield item.key, {"image": image, "label": item.label, "file_name": item.file_name}
        conversions = meta.setdefault("conversions", {})
        for k, v in report.converted.items():
            conversions[k] = conversions.get(k, 0) + v
        if n_ok == 0:
            raise ValueError(f"{self.name}: no readable image in split {split!r} of {self._source} "
                             f"({len(items)} files, all skipped; first: {skipped[:1]})")
        if skipped:
            log.warning("%s/%s: %d of %d files skipped", self.name, split, len(skipped), len(items))


class FolderImages(RawImageBuilder, skip_registration=True):
    """An image folder: ``root/<class>/<image>``, or ``root/{train,valid,test}/...`` in
    either layout of :func:`~sage_jax.data.folders.scan_folder` (one split per folder;
    otherwise a single ``train`` split). Class names: the sorted union over splits."""

    def __init__(self, *, root: str, size: int, **kwargs):
        self._root = os.path.abspath(os.path.expanduser(root))
        self._listing = _scan_splits(self._root)
        names = sorted({n for _, (_, _, split_names) in self._listing.values() for n in split_names})
        super().__init__(size=size, class_names=names, source=self._root, **kwargs)

    def _items_by_split(self, dl_manager):
        index = {c: i for i, c in enumerate(self._class_names)}
        out = {}
        for split, (split_root, (paths, labels, names)) in self._listing.items():
            out[split] = []
            for p, l in zip(paths, labels):
                rel = os.path.relpath(p, split_root).replace(os.sep, "/")
                out[split].append(_Item(rel, rel, index[names[l]], p))
        return out


def _scan_splits(root: str) -> dict[str, tuple[str, tuple[list[str], list[int], list[str]]]]:
    """{split: (split root, scan_folder result)}."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    subdirs = {e for e in os.listdir(root) if not e.startswith(".") and os.path.isdir(os.path.join(root, e))}
    if subdirs and subdirs <= set(_SPLIT_DIRS):
        return {s: (os.path.join(root, s), scan_folder(root, s)) for s in _SPLIT_DIRS if s in subdirs}
    return {"train": (root, scan_folder(root))}


# --------------------------------------------------------------------------------------
# Oxford Flowers 102 from the manual download files.

FLOWERS102_FILES = ("102flowers.tgz", "imagelabels.mat", "setid.mat")
FLOWERS102_SPLITS = {"train": "trnid", "validation": "valid", "test": "tstid"}
_FLOWERS_IMAGE_RE = re.compile(r"(?:.*/)?(image_(\d{5})\.jpg)")

FLOWERS102_INSTRUCTIONS = """\
Download from https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ into one directory:
  102flowers.tgz   (the images, jpg/image_00001.jpg ...; or that jpg/ folder extracted)
  imagelabels.mat  (labels: 1..102 for each image)
  setid.mat        (trnid, valid, tstid: image ids of the three splits)
"""


def _flowers102_class_names() -> list[str]:
    """TFDS's 102 class names (label order), or ``flower_001`` ... if unavailable."""
    try:
        from tensorflow_datasets.datasets.oxford_flowers102 import oxford_flowers102_dataset_builder as m

        names = list(m._NAMES)
        if len(names) == 102:
            return names
    except (ImportError, AttributeError):
        pass
    return [f"flower_{i:03d}" for i in range(1, 103)]


def read_flowers102_annotations(manual_dir: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(labels, ids): ``labels[id - 1]`` is the 0-based class of ``image_<id>.jpg``;
    ``ids[split]`` the sorted image ids of ``train`` / ``validation`` / ``test``."""
    import scipy.io

    manual_dir = os.path.expanduser(manual_dir)
    missing = [f for f in FLOWERS102_FILES[1:] if not os.path.isfile(os.path.join(manual_dir, f))]
    if missing:
        raise FileNotFoundError(f"{manual_dir} lacks {missing}.\n{FLOWERS102_INSTRUCTIONS}")
    try:
        labels = scipy.io.loadmat(os.path.join(manual_dir, "imagelabels.mat"))["labels"]
        setid = scipy.io.loadmat(os.path.join(manual_dir, "setid.mat"))
    except (ValueError, KeyError, OSError, TypeError) as e:
        raise ValueError(f"{manual_dir}: cannot read imagelabels.mat / setid.mat ({type(e).__name__}: {e})") from None
    labels = np.asarray(labels).astype(np.int64).ravel()
    if labels.size == 0 or labels.min() < 1 or labels.max() > 102:
        raise ValueError(f"{manual_dir}/imagelabels.mat: labels must be in 1..102")
    ids = {}
    for split, key in FLOWERS102_SPLITS.items():
        if key not in setid:
            raise ValueError(f"{manual_dir}/setid.mat has no {key!r} (keys: {sorted(k for k in setid if not k.startswith('__'))})")
        a = np.unique(np.asarray(setid[key]).astype(np.int64).ravel())
        if a.size and (a.min() < 1 or a.max() > labels.size):
            raise ValueError(f"{manual_dir}/setid.mat: {key} ids must be in 1..{labels.size}")
        ids[split] = a
    return labels - 1, ids


def _flowers102_images(manual_dir: str, scratch: str) -> str:
    """The folder holding ``image_XXXXX.jpg``: ``manual_dir/jpg`` when extracted,
    otherwise the JPEGs of ``102flowers.tgz`` written to ``scratch/jpg``."""
    jpg = os.path.join(manual_dir, "jpg")
    if os.path.isdir(jpg):
        return jpg
    archive = os.path.join(manual_dir, FLOWERS102_FILES[0])
    if not os.path.isfile(archive):
        raise FileNotFoundError(f"{manual_dir} has neither {FLOWERS102_FILES[0]} nor jpg/.\n{FLOWERS102_INSTRUCTIONS}")
    out = os.path.join(scratch, "jpg")
    os.makedirs(out, exist_ok=True)
    try:
        # "r:*": the official .tgz is in fact an uncompressed tar; accept both.
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                m = _FLOWERS_IMAGE_RE.fullmatch(member.name)
                if not (m and member.isfile()):
                    continue  # only image_XXXXX.jpg, written by base name: no path traversal
                src = tar.extractfile(member)
                with src, open(os.path.join(out, m.group(1)), "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except (tarfile.TarError, EOFError, OSError) as e:
        # A damaged archive: keep what was extracted; the missing images are skipped.
        log.warning("%s: archive read stopped early (%s: %s)", archive, type(e).__name__, e)
    return out


class Flowers102Images(RawImageBuilder, skip_registration=True):
    """Oxford Flowers 102 from the manual files, splits and labels as TFDS's own."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = FLOWERS102_INSTRUCTIONS

    def __init__(self, *, manual_dir: str, images_dir: str, size: int, **kwargs):
        self._manual_dir = os.path.abspath(os.path.expanduser(manual_dir))
        self._images_dir = images_dir
        super().__init__(size=size, class_names=_flowers102_class_names(), source=self._manual_dir, **kwargs)

    def _items_by_split(self, dl_manager):
        labels, ids = read_flowers102_annotations(self._manual_dir)
        out = {}
        for split, split_ids in ids.items():
            items = []
            for i in split_ids.tolist():
                name = f"image_{i:05d}.jpg"
                path = os.path.join(self._images_dir, name)
                items.append(_Item(name, name, int(labels[i - 1]), path if os.path.isfile(path) else None))
            out[split] = items
        return out


# --------------------------------------------------------------------------------------
# Building and opening.

_CLASSES: dict[tuple[type, str], type] = {}


def _named(base: type, name: str) -> type:
    """A subclass of ``base`` whose TFDS name (and data directory) is ``name``."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"dataset name must be snake_case ([a-z][a-z0-9_]*), got {name!r}")
    key = (base, name)
    if key not in _CLASSES:
        camel = "".join(p.capitalize() for p in name.split("_")) or "Dataset"
        _CLASSES[key] = type(camel, (base,), {"name": name, "__module__": __name__}, skip_registration=True)
    return _CLASSES[key]


def _version_dirs(data_dir: str, name: str) -> list[str]:
    base = os.path.join(data_dir, name)
    if not os.path.isdir(base):
        return []
    found = []
    for v in os.listdir(base):
        if re.fullmatch(r"\d+\.\d+\.\d+", v) and os.path.isfile(os.path.join(base, v, "dataset_info.json")):
            found.append(v)
    found.sort(key=lambda v: tuple(int(x) for x in v.split(".")))
    return [os.path.join(base, v) for v in found]


def _existing(data_dir: str, name: str, size: int, source: str, overwrite: bool):
    """A read-only builder of a matching earlier build, or None (deleting a stale one
    when ``overwrite``)."""
    prepared = os.path.join(data_dir, name, VERSION)
    if not os.path.isfile(os.path.join(prepared, "dataset_info.json")):
        return None
    old = tfds.builder_from_directory(prepared)
    old_size = old.info.features["image"].shape[0]
    old_source = (old.info.metadata or {}).get("source")
    if not overwrite:
        if old_size == size and old_source == source:
            log.info("reusing %s (%s, %dpx)", prepared, source, size)
            return old
        raise ValueError(f"{prepared} already holds {name} built from {old_source} at {old_size}px, "
                         f"not {source} at {size}px: pass overwrite=True or choose another name")
    shutil.rmtree(prepared)
    return None


def _prepare(builder: RawImageBuilder) -> RawImageBuilder:
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=getattr(builder, "_manual_dir", None)))
    meta = builder.info.metadata
    splits = {s: builder.info.splits[s].num_examples for s in builder.info.splits}
    log.info("built %s: %s examples, %d skipped, converted %s",
             builder.name, splits, meta["num_skipped"], meta["converted"])
    return builder


def build_folder_dataset(root: str, data_dir: str, name: str, size: int, *,
                         min_side: int = DEFAULT_MIN_SIDE, workers: int | None = None,
                         overwrite: bool = False):
    """Build the image folder ``root`` as TFDS dataset ``name`` in ``data_dir``
    (``data_dir/name/1.0.0``), images resized to ``size`` x ``size``.

    An earlier build of the same name, size and source is reused; a different one is
    an error unless ``overwrite``. Returns a prepared TFDS builder (read-only when
    reused): ``builder.as_data_source()`` reads it, ``builder.info.metadata`` holds
    the skip and conversion counts.
    """
    data_dir = os.path.abspath(os.path.expanduser(data_dir))
    root = os.path.abspath(os.path.expanduser(root))
    cls = _named(FolderImages, name)
    existing = _existing(data_dir, name, size, root, overwrite)
    if existing is not None:
        return existing
    return _prepare(cls(root=root, size=size, data_dir=data_dir, min_side=min_side, workers=workers))


def build_flowers102(manual_dir: str, data_dir: str, size: int, *, name: str = "oxford_flowers102_raw",
                     min_side: int = DEFAULT_MIN_SIDE, workers: int | None = None,
                     overwrite: bool = False):
    """Build Oxford Flowers 102 from ``manual_dir`` (see :data:`FLOWERS102_INSTRUCTIONS`)
    as ``data_dir/name/1.0.0`` with splits ``train``, ``validation``, ``test``. The
    archive is extracted to a scratch folder inside ``data_dir``, removed afterwards.
    Reuse and return value as :func:`build_folder_dataset`."""
    data_dir = os.path.abspath(os.path.expanduser(data_dir))
    manual_dir = os.path.abspath(os.path.expanduser(manual_dir))
    cls = _named(Flowers102Images, name)
    existing = _existing(data_dir, name, size, manual_dir, overwrite)
    if existing is not None:
        return existing
    read_flowers102_annotations(manual_dir)  # fail on bad annotations before extracting
    os.makedirs(data_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".flowers102-", dir=data_dir) as scratch:
        images_dir = _flowers102_images(manual_dir, scratch)
        return _prepare(cls(manual_dir=manual_dir, images_dir=images_dir, size=size,
                            data_dir=data_dir, min_side=min_side, workers=workers))


def open_folder_dataset(data_dir: str, name: str, version: str | None = None):
    """``({split: data source}, class names)`` of a dataset built here (the newest
    version unless ``version``). A data source is a random-access sequence of
    ``{"image": uint8 (S, S, 3), "label": int64, "file_name": bytes}``."""
    data_dir = os.path.abspath(os.path.expanduser(data_dir))
    dirs = _version_dirs(data_dir, name)
    if version is not None:
        dirs = [d for d in dirs if os.path.basename(d) == version]
    if not dirs:
        raise FileNotFoundError(f"no built dataset {name!r}{' version ' + version if version else ''} in "
                                f"{data_dir} (build it with build_folder_dataset / build_flowers102)")
    builder = tfds.builder_from_directory(dirs[-1])
    return builder.as_data_source(), list(builder.info.features["label"].names)


def read_batch(source, indices) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 (B, S, S, 3) in [-1, 1], labels int32 (B,)) of records
    ``indices`` of a data source, the layout of ``FolderDataset.load_batch``."""
    indices = [int(i) for i in indices]
    records = source.__getitems__(indices) if hasattr(source, "__getitems__") else [source[i] for i in indices]
    images = np.stack([r["image"] for r in records]).astype(np.float32) / 127.5 - 1.0
    labels = np.asarray([r["label"] for r in records], np.int32)
    return images, labels
