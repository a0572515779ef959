"""A built glyph dataset (:mod:`sage_jax.data.glyphs`, ``sage-jax make-glyphs``) read
back: as images in memory (:class:`GlyphDataset`, from the folder or from its TFDS
build) and as the TFDS dataset ``glyphs`` (:func:`build_glyph_tfds`).

Images: the folder's PNGs are grayscale, a white glyph (255) on black (0). The networks
take RGB, so :meth:`GlyphDataset.load_batch` repeats the gray value in the three
channels, scaled to [-1, 1] (``k / 127.5 - 1``: the glyph at +1, the background at -1);
a generated image goes back to gray as the mean of its channels. In memory the images
stay uint8 and one channel (27 MB for the 62 seen classes of the training faces at
32 px).

Labels: ``labels`` are positions in ``class_names``, the classes asked for (the 62 seen
ones for training, in the dataset's class order); ``class_index`` keeps the dataset's
index (0-61 seen, 62-139 unseen, ``labels.json``), ``face_index`` the face, and
:meth:`GlyphDataset.attributes` the face's weight, width, italic, monospace and serif
style of every image.

TFDS (``build_glyph_tfds``, ``sage-jax make-glyphs --tfds DATA_DIR``): the builder
reads the rendered folder (``labels.json`` and the PNGs; nothing is drawn again) into
``DATA_DIR/glyphs/1.0.0`` (array_record, read without TensorFlow like
:mod:`sage_jax.data.tfds_data`). Splits ``train`` and ``heldout`` (the faces of the
training and held-out typefaces; both hold every class, seen and unseen: a record's
``seen`` and its ``label`` < 62 tell them apart). Features: ``image`` uint8 (S, S, 1),
``label`` (ClassLabel of the 140 class names), ``seen`` (bool), ``face_index``,
``weight``, ``width``, ``italic``, ``monospace``, ``serif`` (ClassLabel of
``SERIF_CATEGORIES``), ``file_name`` (the PNG's path in the folder). The builder's
metadata holds the class and face tables and the sha256 of ``labels.json``: a build
of the same folder is reused, of another (or a rebuilt one) refused without
``overwrite``.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import json
import os
import re
import shutil

import numpy as np

from sage_jax.data.glyphs import SERIF_CATEGORIES

TFDS_NAME = "glyphs"
TFDS_VERSION = "1.0.0"
SPLITS = ("train", "heldout")
ATTRIBUTES = ("weight", "width", "italic", "monospace", "serif")
MAKE_HINT = "make it with: sage-jax make-glyphs --out {root} (docs/glyphs.md)"


class GlyphDataError(ValueError):
    """A glyph dataset that is missing, of another size or split, or asked for
    something it does not hold."""


def to_rgb(gray) -> np.ndarray:
    """uint8 gray images (..., S, S) -> float32 (..., S, S, 3) in [-1, 1], the gray
    value in every channel."""
    x = np.asarray(gray, np.float32) / 127.5 - 1.0
    return np.repeat(x[..., None], 3, axis=-1)


def read_labels(root: str) -> dict:
    """``labels.json`` of a built glyph folder (the class and face tables, the images)."""
    path = os.path.join(root, "labels.json")
    if not os.path.isfile(path):
        what = "does not exist" if not os.path.exists(root) else "has no labels.json (not a glyph dataset)"
        raise GlyphDataError(f"glyph dataset {root} {what}; {MAKE_HINT.format(root=root)}")
    with open(path) as f:
        return json.load(f)


def _class_ids(classes, table) -> list[int]:
    if isinstance(classes, str):
        if classes not in ("seen", "unseen", "all"):
            raise GlyphDataError(f"classes must be 'seen', 'unseen', 'all' or class indices, not {classes!r}")
        return [c["index"] for c in table if classes == "all" or c["seen"] == (classes == "seen")]
    ids = [int(i) for i in classes]
    bad = [i for i in ids if not 0 <= i < len(table)]
    if bad:
        raise GlyphDataError(f"class indices {bad} are not in 0..{len(table) - 1}")
    return ids


def _splits(split: str) -> tuple[str, ...]:
    if split == "all":
        return SPLITS
    if split not in SPLITS:
        raise GlyphDataError(f"split must be 'train', 'heldout' or 'all', not {split!r}")
    return (split,)


def _select(faces, class_index, face_index, split: str, class_ids, per_class: int) -> np.ndarray:
    """Row numbers of the images of ``split`` and ``class_ids``, class by class (in
    ``class_ids``' order), faces in face order; the first ``per_class`` faces of each
    class when > 0."""
    splits = _splits(split)
    face_ok = np.array([f["split"] in splits for f in faces], bool)
    keep = face_ok[face_index]
    rows = []
    for c in class_ids:
        r = np.flatnonzero(keep & (class_index == c))
        r = r[np.argsort(face_index[r], kind="stable")]
        rows.append(r[:per_class] if per_class > 0 else r)
    return np.concatenate(rows) if rows else np.zeros(0, np.int64)


class GlyphDataset:
    """Glyph images in memory with the ``load_batch`` / ``batches`` interface of the
    other datasets: images float32 (B, S, S, 3) in [-1, 1] (gray in every channel),
    labels int32, positions in ``class_names``."""

    def __init__(self, gray, class_index, face_index, classes: list[dict], faces: list[dict], class_ids,
                 source: str = "", split: str = "train", build: dict | None = None):
        self.gray = np.asarray(gray, np.uint8)
        self.class_index = np.asarray(class_index, np.int64)
        self.face_index = np.asarray(face_index, np.int64)
        self.class_ids = [int(c) for c in class_ids]
        pos = {c: i for i, c in enumerate(self.class_ids)}
        self.labels_array = np.asarray([pos[int(c)] for c in self.class_index], np.int32)
        self.classes = [classes[c] for c in self.class_ids]
        self.class_names = [c["name"] for c in self.classes]
        self.faces = faces
        self.source = source
        self.split = split
        self.build = dict(build or {})   # what the build says of itself: size, held_out, seed
        self.size = int(self.gray.shape[1]) if self.gray.ndim == 3 else 0
        self.skipped: dict = {}

    def __len__(self):
        return len(self.gray)

    @property
    def num_classes(self):
        return len(self.class_names)

    def load_batch(self, indices, pool=None):
        idx = np.asarray(list(indices), np.int64)
        return to_rgb(self.gray[idx]), self.labels_array[idx]

    def batches(self, batch_size: int, **_):
        from sage_jax.data.arrays import ordered_batches

        return ordered_batches(self, batch_size)

    def attributes(self) -> dict[str, np.ndarray]:
        """{attribute: value of every image}: weight (100-900), width (1-9), italic,
        monospace (0/1), serif (index in ``SERIF_CATEGORIES``), from its face."""
        return {a: np.asarray([self.faces[f][a] for f in self.face_index], np.int32) for a in ATTRIBUTES}

    def sample(self, label: int, n: int, seed: int = 0) -> np.ndarray:
        """``n`` images (float32 (n, S, S, 3), [-1, 1]) of class ``label`` (a position in
        ``class_names``) from ``n`` different faces, drawn with ``seed``: the shots of
        an unseen class, or its real images."""
        rows = np.flatnonzero(self.labels_array == label)
        if n > len(rows):
            raise GlyphDataError(f"class {self.class_names[label]} has images of {len(rows)} faces here, not {n}")
        pick = np.random.default_rng([int(seed), int(self.class_ids[label])]).choice(rows, n, replace=False)
        return to_rgb(self.gray[np.sort(pick)])

    def per_class(self, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(images, labels): :meth:`sample` of ``n`` images of every class, class by class."""
        imgs = [self.sample(c, n, seed) for c in range(self.num_classes)]
        return np.concatenate(imgs), np.repeat(np.arange(self.num_classes, dtype=np.int32), n)


# --------------------------------------------------------------------------- from the folder

def _read_png(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


def load_glyph_folder(root: str, split: str = "train", classes="seen", per_class: int = 0,
                      workers: int = 4) -> GlyphDataset:
    """The images of ``split`` (``train``, ``heldout`` or ``all``) and ``classes``
    (``seen``, ``unseen``, ``all`` or a list of class indices) of the glyph folder
    ``root``; ``per_class`` > 0: the first that many faces of each class."""
    labels = read_labels(root)
    table, faces = labels["classes"], labels["faces"]
    class_ids = _class_ids(classes, table)
    paths = [p for p, _, _ in labels["images"]]
    class_index = np.asarray([c for _, c, _ in labels["images"]], np.int64)
    face_index = np.asarray([f for _, _, f in labels["images"]], np.int64)
    rows = _select(faces, class_index, face_index, split, class_ids, per_class)
    size = int(labels["size"])
    gray = np.zeros((len(rows), size, size), np.uint8)
    files = [os.path.join(root, paths[r]) for r in rows]
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for k, im in enumerate(pool.map(_read_png, files, chunksize=64)):
            if im.shape != (size, size):
                raise GlyphDataError(f"{files[k]} is {im.shape[1]}x{im.shape[0]}, the dataset {size}x{size}")
            gray[k] = im
    return GlyphDataset(gray, class_index[rows], face_index[rows], table, faces, class_ids,
                        source=os.path.abspath(root), split=split, build=_build_info(labels))


# --------------------------------------------------------------------------- TFDS

def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def _builder_base():
    """The TFDS builder class (tensorflow_datasets imported only when a TFDS build is
    made or read)."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core import utils as tfds_utils

    class GlyphImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """The rendered glyph folder ``root`` as records (see the module docstring)."""

        VERSION = tfds.core.Version(TFDS_VERSION)
        RELEASE_NOTES = {TFDS_VERSION: "Glyph images of a sage-jax make-glyphs folder, array_record."}

        # as tfds_data.RawImageBuilder: tfds 4.9.10 looks up importlib_resources for
        # builders defined inside a package; it only locates a download checksums file
        @tfds_utils.classproperty
        @classmethod
        def code_path(cls):
            return None

        def __init__(self, *, root: str, **kwargs):
            self._root = os.path.abspath(os.path.expanduser(root))
            self._labels = read_labels(self._root)
            self._digest = _sha256(os.path.join(self._root, "labels.json"))
            kwargs.setdefault("file_format", "array_record")
            super().__init__(**kwargs)

        def _info(self):
            s = int(self._labels["size"])
            return tfds.core.DatasetInfo(
                builder=self,
                description=f"Font glyphs of {self._root}: uint8 {s}x{s}x1, white glyph on black.",
                features=tfds.features.FeaturesDict({
                    "image": tfds.features.Tensor(shape=(s, s, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(names=[c["name"] for c in self._labels["classes"]]),
                    "seen": tfds.features.Tensor(shape=(), dtype=np.bool_),
                    "face_index": tfds.features.Tensor(shape=(), dtype=np.int64),
                    "weight": tfds.features.Tensor(shape=(), dtype=np.int64),
                    "width": tfds.features.Tensor(shape=(), dtype=np.int64),
                    "italic": tfds.features.Tensor(shape=(), dtype=np.bool_),
                    "monospace": tfds.features.Tensor(shape=(), dtype=np.bool_),
                    "serif": tfds.features.ClassLabel(names=list(SERIF_CATEGORIES)),
                    "file_name": tfds.features.Text(),
                }),
                supervised_keys=("image", "label"),
                disable_shuffling=True,   # the folder's order: face by face, the classes in index order
                metadata=tfds.core.MetadataDict(),
            )

        def _split_generators(self, dl_manager):
            lab = self._labels
            self.info.metadata.update(
                source=self._root, labels_sha256=self._digest, size=int(lab["size"]),
                held_out=lab.get("held_out"), seed=lab.get("seed"), classes=lab["classes"],
                faces=[{k: v for k, v in f.items() if k not in ("path", "font_index")} for f in lab["faces"]])
            return {s: self._generate_examples(s) for s in SPLITS}

        def _generate_examples(self, split):
            lab = self._labels
            classes, faces = lab["classes"], lab["faces"]
            for path, c, fi in lab["images"]:
                face = faces[fi]
                if face["split"] != split:
                    continue
                im = _read_png(os.path.join(self._root, path))
                yield path, {"image": im[..., None], "label": int(c), "seen": bool(classes[c]["seen"]),
                             "face_index": int(fi), "weight": int(face["weight"]), "width": int(face["width"]),
                             "italic": bool(face["italic"]), "monospace": bool(face["monospace"]),
                             "serif": int(face["serif"]), "file_name": path}

    return GlyphImages


def _tfds_dir(data_dir: str, name: str) -> str:
    return os.path.join(data_dir, name, TFDS_VERSION)


def build_glyph_tfds(root: str, data_dir: str, name: str = TFDS_NAME, overwrite: bool = False,
                     progress: bool = True):
    """Build the glyph folder ``root`` as TFDS dataset ``name`` in ``data_dir``
    (``data_dir/name/1.0.0``). A build of the same folder (same ``labels.json``) is
    reused; of another one refused unless ``overwrite``. Returns the prepared builder."""
    import tensorflow_datasets as tfds

    from sage_jax.data.tfds_data import _named

    if not re.fullmatch(r"[a-z][a-z0-9_]*", name or ""):
        raise GlyphDataError(f"dataset name must be snake_case ([a-z][a-z0-9_]*), got {name!r}")
    data_dir = os.path.abspath(os.path.expanduser(data_dir))
    root = os.path.abspath(os.path.expanduser(root))
    digest = _sha256(os.path.join(root, "labels.json")) if os.path.isfile(os.path.join(root, "labels.json")) \
        else None
    prepared = _tfds_dir(data_dir, name)
    if os.path.isfile(os.path.join(prepared, "dataset_info.json")):
        old = tfds.builder_from_directory(prepared)
        meta = old.info.metadata or {}
        if meta.get("labels_sha256") == digest and digest is not None and not overwrite:
            return old
        if not overwrite:
            raise GlyphDataError(f"{prepared} already holds {name} built from {meta.get('source')} "
                                 f"({meta.get('size')} px, another labels.json): pass overwrite (--overwrite) "
                                 f"or another name")
        shutil.rmtree(prepared)
    builder = _named(_builder_base(), name)(root=root, data_dir=data_dir)
    if not progress:
        tfds.disable_progress_bar()
    builder.download_and_prepare()
    return builder


def open_glyph_tfds(data_dir: str, name: str = TFDS_NAME):
    """(builder, {split: data source}) of a TFDS glyph build."""
    import tensorflow_datasets as tfds

    data_dir = os.path.abspath(os.path.expanduser(data_dir))
    prepared = _tfds_dir(data_dir, name)
    if not os.path.isfile(os.path.join(prepared, "dataset_info.json")):
        raise GlyphDataError(f"no TFDS glyph dataset {name!r} in {data_dir}; build it with: sage-jax make-glyphs "
                             f"--out DIR --tfds {data_dir}")
    builder = tfds.builder_from_directory(prepared)
    return builder, builder.as_data_source()


def load_glyph_tfds(data_dir: str, name: str = TFDS_NAME, split: str = "train", classes="seen",
                    per_class: int = 0, chunk: int = 1024) -> GlyphDataset:
    """As :func:`load_glyph_folder`, from a TFDS build."""
    builder, sources = open_glyph_tfds(data_dir, name)
    meta = builder.info.metadata or {}
    table, faces = meta["classes"], meta["faces"]
    class_ids = _class_ids(classes, table)
    size = int(builder.info.features["image"].shape[0])
    recs = {"gray": [], "class": [], "face": []}
    for s in _splits(split):
        src = sources[s]
        for start in range(0, len(src), chunk):
            idx = list(range(start, min(start + chunk, len(src))))
            batch = src.__getitems__(idx) if hasattr(src, "__getitems__") else [src[i] for i in idx]
            for r in batch:
                if int(r["label"]) in class_ids:
                    recs["gray"].append(np.asarray(r["image"])[..., 0])
                    recs["class"].append(int(r["label"]))
                    recs["face"].append(int(r["face_index"]))
    gray = np.stack(recs["gray"]) if recs["gray"] else np.zeros((0, size, size), np.uint8)
    class_index, face_index = np.asarray(recs["class"], np.int64), np.asarray(recs["face"], np.int64)
    rows = _select(faces, class_index, face_index, "all", class_ids, per_class)
    return GlyphDataset(gray[rows], class_index[rows], face_index[rows], table, faces, class_ids,
                        source=_tfds_dir(os.path.abspath(os.path.expanduser(data_dir)), name), split=split,
                        build=_build_info(meta))


def _build_info(labels_or_meta) -> dict:
    return {k: labels_or_meta.get(k) for k in ("size", "held_out", "seed")}


def check_build(ds: GlyphDataset, size: int | None = None, held_out: float | None = None) -> None:
    """Refuse a build of another size or held-out share than the config asks for."""
    where = ds.source
    built = int(ds.build.get("size") or ds.size or 0)
    if size and built and built != int(size):
        raise GlyphDataError(f"the glyph dataset {where} was built at {built} px, the model needs {size}: "
                             f"make it with sage-jax make-glyphs --size {size} (or set data.size)")
    share = ds.build.get("held_out")
    if held_out is not None and share is not None and abs(float(share) - float(held_out)) > 1e-9:
        raise GlyphDataError(f"the glyph dataset {where} holds out {share} of its faces, the config "
                             f"data.held_out={held_out}: make it with sage-jax make-glyphs --held-out {held_out} "
                             f"(or set data.held_out={share})")
