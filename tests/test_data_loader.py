"""Datasets from configs: synthetic, folder (seen classes only), TFDS via build-dataset."""

import os

import numpy as np
import pytest

from fixture_utils import ROOT
from tiny_models import make_class_folders
from sage_jax.cli import main
from sage_jax.config import apply_overrides, load_config
from sage_jax.data.loader import PerClassSubset, seen_dataset

TINY = os.path.join(ROOT, "configs", "tiny.py")


def test_synthetic_seen_classes():
    cfg = apply_overrides(load_config(TINY), ["data.samples_per_class=3", "data.num_seen=8", "data.num_unseen=2"])
    ds = seen_dataset(cfg.data)
    assert len(ds) == 24 and ds.num_classes == 8
    x, y = ds.load_batch([0, 5, 23])
    assert x.shape == (3, 32, 32, 3) and x.dtype == np.float32 and -1 <= x.min() and x.max() <= 1
    assert list(y) == [0, 1, 7]


def test_per_class_subset_takes_the_first_images_of_each_class(tmp_path):
    cfg = apply_overrides(load_config(TINY), ["data.samples_per_class=4", "data.num_seen=3", "data.num_unseen=1"])
    ds = seen_dataset(cfg.data)
    labels = ds.labels_array
    sub = PerClassSubset(ds, 2)
    assert len(sub) == 6 and sub.num_classes == 3 and sub.class_names == ds.class_names
    want = np.sort(np.concatenate([np.flatnonzero(labels == c)[:2] for c in range(3)]))
    np.testing.assert_array_equal(sub.indices, want)
    x, y = sub.load_batch(range(6))
    x_all, y_all = ds.load_batch(want)
    np.testing.assert_array_equal(x, x_all)
    np.testing.assert_array_equal(y, y_all)
    assert np.bincount(y, minlength=3).tolist() == [2, 2, 2]
    # ordered batches, the last padded with label -1, as every dataset's
    batches = list(sub.batches(4))
    assert len(batches) == 2 and batches[1][1].tolist() == [y[4], y[5], -1, -1]
    # more than a class has: all of it
    assert len(PerClassSubset(ds, 10)) == len(ds)
    # a folder dataset (labels from its file list)
    make_class_folders(tmp_path / "d", n_classes=3, per_class=3)
    folder = seen_dataset(apply_overrides(load_config(TINY), ["data.name=folder", f"data.root={tmp_path / 'd'}",
                                                              "data.num_seen=2", "data.num_unseen=1"]).data)
    assert np.bincount(PerClassSubset(folder, 1).load_batch(range(2))[1]).tolist() == [1, 1]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="whole number"):
            PerClassSubset(ds, bad)

    class NoLabels:
        num_classes, class_names, size = 1, ["a"], 32

    with pytest.raises(ValueError, match="labels"):
        PerClassSubset(NoLabels(), 1)


def test_folder_uses_the_seen_classes_of_the_split(tmp_path):
    make_class_folders(tmp_path / "d", n_classes=5, per_class=2)
    (tmp_path / "d" / "class01" / "broken.png").write_bytes(b"nope")
    cfg = apply_overrides(load_config(TINY), ["data.name=folder", f"data.root={tmp_path / 'd'}",
                                              "data.num_seen=3", "data.num_unseen=2"])
    ds = seen_dataset(cfg.data)
    assert ds.class_names == ["class00", "class01", "class02"] and len(ds) == 7
    x, y = ds.load_batch(range(len(ds)))
    assert (y == -1).sum() == 1 and len(ds.skipped) == 1  # the broken file: skipped, counted
    bad = apply_overrides(load_config(TINY), ["data.name=folder", f"data.root={tmp_path / 'd'}",
                                              "data.num_seen=3", "data.num_unseen=3"])
    with pytest.raises(ValueError):
        seen_dataset(bad.data)


def test_build_dataset_then_train_from_tfds(tmp_path):
    make_class_folders(tmp_path / "imgs", n_classes=3, per_class=4)
    assert main(["build-dataset", "--root", str(tmp_path / "imgs"), "--data-dir", str(tmp_path / "tfds"),
                 "--name", "mini", "--size", "32"]) == 0
    cfg = apply_overrides(load_config(TINY), ["data.name=tfds", f"data.data_dir={tmp_path / 'tfds'}",
                                              "data.tfds_name=mini", "data.split=train"])
    ds = seen_dataset(cfg.data)
    assert len(ds) == 12 and ds.class_names == ["class00", "class01", "class02"]
    x, y = ds.load_batch([0, 11])
    assert x.shape == (2, 32, 32, 3) and list(y) == [0, 2]
    with pytest.raises(ValueError, match="built at 32"):
        seen_dataset(cfg.data, size=64)
