"""Datasets from a config's ``data`` section (``configs/*.py``).

``data.name``: ``synthetic`` (the embedded ground-truth set, generated in memory),
``folder`` (``root/<class>/<image>`` or ``root/<split>/<class>_<i>.jpg``), ``tfds``
(a dataset built by ``sage-jax build-dataset`` into ``data.data_dir`` as
``data.tfds_name``), ``glyphs`` (the font-glyph dataset of ``sage-jax make-glyphs``:
the folder ``data.root``, or its TFDS build in ``data.data_dir`` when that is set).
Training uses the seen classes only: for folders, the paper's split (``num_seen`` /
``num_unseen``, classes in name order, as the originals split by class index); for
glyphs, the 62 Latin classes of the training typefaces.

The unseen classes and held-out images, for the measures and the demo:
:func:`unseen_dataset` (synthetic and glyphs) and :func:`heldout_dataset` (glyphs:
the held-out typefaces' images).
"""

from __future__ import annotations

import numpy as np

from sage_jax.data.folders import FolderDataset, scan_folder


class TFDSDataset:
    """A built TFDS data source with the ``load_batch`` interface (random access)."""

    def __init__(self, data_dir: str, name: str, split: str = "train"):
        from sage_jax.data.tfds_data import open_folder_dataset

        sources, self.class_names = open_folder_dataset(data_dir, name)
        if split not in sources:
            raise ValueError(f"dataset {name!r} has splits {sorted(sources)}, not {split!r}")
        self.source = sources[split]
        self.skipped: dict = {}
        first = self.source[0]["image"]
        self.size = int(first.shape[0])

    def __len__(self):
        return len(self.source)

    @property
    def num_classes(self):
        return len(self.class_names)

    def load_batch(self, indices, pool=None):
        from sage_jax.data.tfds_data import read_batch

        return read_batch(self.source, indices)

    def batches(self, batch_size: int, **_):
        from sage_jax.data.arrays import ordered_batches

        return ordered_batches(self, batch_size)


class PerClassSubset:
    """The first ``n`` images of each class of ``dataset`` (in the dataset's order), with
    the ``load_batch`` / ``batches`` interface. For work that needs a sample of every
    class, not every image: the class statistics when codes are refined by optimisation
    (``statistics.samples_per_class`` of the configs). Needs the dataset's labels
    (``labels_array`` of an in-memory dataset, ``labels`` of a folder dataset)."""

    def __init__(self, dataset, n: int):
        labels = getattr(dataset, "labels_array", None)
        if labels is None:
            labels = getattr(dataset, "labels", None)
        if labels is None:
            raise ValueError(f"{type(dataset).__name__} does not list its labels: a per-class subset needs them")
        if isinstance(n, bool) or int(n) != n or n < 1:
            raise ValueError(f"images per class must be a whole number >= 1, got {n!r}")
        labels = np.asarray(labels)
        keep = [np.flatnonzero(labels == c)[:int(n)] for c in range(dataset.num_classes)]
        self.dataset = dataset
        self.indices = np.sort(np.concatenate(keep)).astype(np.int64)
        self.labels_array = labels[self.indices]
        self.class_names = list(dataset.class_names)
        self.size = dataset.size
        self.skipped = getattr(dataset, "skipped", {})

    def __len__(self):
        return len(self.indices)

    @property
    def num_classes(self):
        return len(self.class_names)

    def load_batch(self, indices, pool=None):
        return self.dataset.load_batch(self.indices[np.asarray(list(indices), np.int64)], pool)

    def batches(self, batch_size: int, **_):
        from sage_jax.data.arrays import ordered_batches

        return ordered_batches(self, batch_size)


def seen_dataset(data_cfg, size: int | None = None):
    """The seen-class training images of ``data_cfg`` at ``size`` (default
    ``data_cfg.size``)."""
    size = size or data_cfg.size
    if data_cfg.name == "synthetic":
        from sage_jax.data.synthetic import generate
        from sage_jax.data.arrays import ArrayDataset

        d = generate(synthetic_spec(data_cfg, size), "seen")
        return ArrayDataset(d["images"], d["labels"], d["class_names"])
    if data_cfg.name == "folder":
        from sage_jax.data.splits import seen_unseen_split

        if not data_cfg.root:
            raise ValueError("data.root is empty: pass --config.data.root=/path/to/dataset")
        classes = None
        if data_cfg.get("num_seen"):
            _, _, names = scan_folder(data_cfg.root, data_cfg.split or None)
            classes, _ = seen_unseen_split(names, n_seen=data_cfg.num_seen,
                                           n_unseen=data_cfg.get("num_unseen") or None)
        return FolderDataset.from_folder(data_cfg.root, size, split=data_cfg.split or None, classes=classes)
    if data_cfg.name == "tfds":
        ds = TFDSDataset(data_cfg.data_dir, data_cfg.tfds_name, data_cfg.split or "train")
        if ds.size != size:
            raise ValueError(f"{data_cfg.tfds_name} was built at {ds.size} px, the model needs {size}")
        return ds
    if data_cfg.name == "glyphs":
        return glyph_dataset(data_cfg, "train", "seen", size, per_class=int(data_cfg.samples_per_class))
    raise ValueError(f"unknown data.name {data_cfg.name!r} (synthetic, folder, tfds, glyphs)")


def glyph_dataset(data_cfg, split: str = "train", classes="seen", size: int | None = None, per_class: int = 0):
    """A :class:`~sage_jax.data.glyph_data.GlyphDataset` of the glyph dataset of
    ``data_cfg``: the TFDS build in ``data.data_dir`` (named ``data.tfds_name`` or
    ``glyphs``) if set, else the folder ``data.root``. ``split``: ``train`` (the
    training typefaces), ``heldout`` or ``all``; ``classes``: ``seen`` (the 62 Latin
    letters and digits), ``unseen`` (the 78 Greek and Cyrillic), ``all`` or class
    indices; ``per_class`` > 0: the first that many faces of each class. The build must
    have ``size`` (default ``data.size``) and ``data.held_out``, and the classes
    ``data.num_seen`` / ``data.num_unseen`` (62 / 78)."""
    from sage_jax.data.glyph_data import check_build, load_glyph_folder, load_glyph_tfds

    size = size or data_cfg.size
    if data_cfg.get("data_dir"):
        ds = load_glyph_tfds(data_cfg.data_dir, data_cfg.get("tfds_name") or "glyphs", split, classes, per_class)
    elif data_cfg.get("root"):
        ds = load_glyph_folder(data_cfg.root, split, classes, per_class)
    else:
        raise ValueError("data.root is empty: make the glyph dataset with sage-jax make-glyphs --out data/glyphs32 "
                         "and pass --config.data.root=data/glyphs32 (or a TFDS build: --config.data.data_dir)")
    check_build(ds, size, data_cfg.get("held_out"))
    table_seen = sum(c["seen"] for c in ds.classes) if classes == "seen" else None
    if table_seen is not None and data_cfg.get("num_seen") and table_seen != data_cfg.num_seen:
        raise ValueError(f"the glyph dataset {ds.source} has {table_seen} seen classes, the config "
                         f"data.num_seen={data_cfg.num_seen}")
    if classes == "unseen" and data_cfg.get("num_unseen") and ds.num_classes != data_cfg.num_unseen:
        raise ValueError(f"the glyph dataset {ds.source} has {ds.num_classes} unseen classes, the config "
                         f"data.num_unseen={data_cfg.num_unseen}")
    return ds


def unseen_dataset(data_cfg, size: int | None = None, split: str = "heldout"):
    """The unseen classes' images, labels 0..n-1 in the order of the dataset's unseen
    classes. Synthetic: ``generate(spec, "unseen")`` (an ``ArrayDataset``); glyphs: the
    78 Greek and Cyrillic classes of the faces of ``split`` (``heldout``: typefaces
    never trained on, the strictest; ``train`` or ``all``), a ``GlyphDataset`` whose
    ``sample(label, n, seed)`` draws the shots of a class and its real images."""
    size = size or data_cfg.size
    if data_cfg.name == "synthetic":
        from sage_jax.data.arrays import ArrayDataset
        from sage_jax.data.synthetic import generate

        d = generate(synthetic_spec(data_cfg, size), "unseen")
        return ArrayDataset(d["images"], d["labels"], d["class_names"])
    if data_cfg.name == "glyphs":
        return glyph_dataset(data_cfg, split, "unseen", size)
    raise ValueError(f"unseen classes of data.name={data_cfg.name!r}: synthetic or glyphs only")


def heldout_dataset(data_cfg, classes: str = "seen", size: int | None = None):
    """Glyphs: the images of the held-out typefaces, of the seen or unseen classes
    (labels are positions among those classes): real images never trained on, for the
    inversion's measures (as the synthetic data's fresh draws, ``metrics.stages.heldout_images``).
    ``GlyphDataset.per_class(n, seed)`` takes ``n`` of each class."""
    if data_cfg.name != "glyphs":
        raise ValueError(f"held-out typefaces are the glyph dataset's (data.name=glyphs), not {data_cfg.name!r}")
    return glyph_dataset(data_cfg, "heldout", classes, size)


def synthetic_spec(data_cfg, size: int | None = None):
    from sage_jax.data.synthetic import SyntheticSpec

    return SyntheticSpec(num_seen=data_cfg.num_seen, num_unseen=data_cfg.num_unseen,
                         samples_per_class=data_cfg.samples_per_class, image_size=size or data_cfg.size,
                         seed=int(data_cfg.get("seed", 0)), imbalance_ratio=data_cfg.imbalance_ratio)
