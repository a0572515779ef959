"""Datasets from a config's ``data`` section (``configs/*.py``)."""

from __future__ import annotations

from sage_jax.data.folders import FolderDataset, scan_folder


def seen_dataset(data_cfg, size: int | None = None):
    """The seen-class training images of ``data_cfg`` at ``size`` (default
    ``data_cfg.size``): an in-memory dataset for ``synthetic``, a FolderDataset for
    ``folder`` (the first ``num_seen`` classes in name order, as the originals split
    by class index, when ``num_seen`` is set)."""
    size = size or data_cfg.size
    if data_cfg.name == "synthetic":
        from sage_jax.data.synthetic import SyntheticSpec, generate
        from sage_jax.train.common import ArrayDataset

        d = generate(synthetic_spec(data_cfg, size), "seen")
        return ArrayDataset(d["images"], d["labels"], d["class_names"])
    if data_cfg.name == "folder":
        if not data_cfg.root:
            raise ValueError("data.root is empty: pass --config.data.root=/path/to/dataset")
        classes = None
        if data_cfg.get("num_seen"):
            _, _, names = scan_folder(data_cfg.root, data_cfg.split or None)
            expected = data_cfg.num_seen + data_cfg.get("num_unseen", 0)
            if data_cfg.get("num_unseen") and len(names) != expected:
                raise ValueError(f"{data_cfg.root} has {len(names)} classes, the config expects "
                                 f"{data_cfg.num_seen} seen + {data_cfg.num_unseen} unseen = {expected}")
            classes = names[: data_cfg.num_seen]
        return FolderDataset.from_folder(data_cfg.root, size, split=data_cfg.split or None, classes=classes)
    raise ValueError(f"unknown data.name {data_cfg.name!r} (synthetic, folder)")


def synthetic_spec(data_cfg, size: int | None = None):
    from sage_jax.data.synthetic import SyntheticSpec

    return SyntheticSpec(num_seen=data_cfg.num_seen, num_unseen=data_cfg.num_unseen,
                         samples_per_class=data_cfg.samples_per_class, image_size=size or data_cfg.size,
                         seed=data_cfg.get("seed", 0) if "seed" in data_cfg else 0,
                         imbalance_ratio=data_cfg.imbalance_ratio)
