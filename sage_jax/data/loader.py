"""Datasets from a config's ``data`` section (``configs/*.py``).

``data.name``: ``synthetic`` (the embedded ground-truth set, generated in memory),
``folder`` (``root/<class>/<image>`` or ``root/<split>/<class>_<i>.jpg``), ``tfds``
(a dataset built by ``sage-jax build-dataset`` into ``data.data_dir`` as
``data.tfds_name``). Training uses the seen classes only: for folders, the paper's
split (``num_seen`` / ``num_unseen``, classes in name order, as the originals split by
class index).
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
    raise ValueError(f"unknown data.name {data_cfg.name!r} (synthetic, folder, tfds)")


def synthetic_spec(data_cfg, size: int | None = None):
    from sage_jax.data.synthetic import SyntheticSpec

    return SyntheticSpec(num_seen=data_cfg.num_seen, num_unseen=data_cfg.num_unseen,
                         samples_per_class=data_cfg.samples_per_class, image_size=size or data_cfg.size,
                         seed=int(data_cfg.get("seed", 0)), imbalance_ratio=data_cfg.imbalance_ratio)
