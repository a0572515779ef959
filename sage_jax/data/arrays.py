"""In-memory datasets: images and labels held as arrays, with the ``load_batch`` /
``batches`` interface of :class:`sage_jax.data.folders.FolderDataset`."""

from __future__ import annotations

import numpy as np


class ArrayDataset:
    """Images (N, S, S, 3) in [-1, 1] and labels in memory, with the FolderDataset
    ``load_batch`` interface."""

    def __init__(self, images, labels, class_names=None):
        self.images = np.asarray(images, np.float32)
        self.labels_array = np.asarray(labels, np.int32)
        self.class_names = list(class_names) if class_names is not None else \
            [str(i) for i in range(int(self.labels_array.max()) + 1)]
        self.size = self.images.shape[1]
        self.skipped: dict = {}

    def __len__(self):
        return len(self.images)

    @property
    def num_classes(self):
        return len(self.class_names)

    def load_batch(self, indices, pool=None):
        idx = np.asarray(list(indices))
        return self.images[idx], self.labels_array[idx]

    def batches(self, batch_size: int, **_):
        """Every image once, in order, in fixed-size batches (the last padded with
        label -1), as ``FolderDataset.batches``."""
        return ordered_batches(self, batch_size)


def ordered_batches(dataset, batch_size: int):
    n = len(dataset)
    for start in range(0, n, batch_size):
        idx = list(range(start, min(start + batch_size, n)))
        k = len(idx)
        imgs, labels = dataset.load_batch(idx + [idx[-1]] * (batch_size - k))
        labels = np.array(labels)
        labels[k:] = -1
        yield imgs, labels
