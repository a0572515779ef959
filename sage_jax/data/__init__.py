"""Datasets: image folders in the layouts of the original repositories."""

from sage_jax.data.folders import FolderDataset, scan_folder

__all__ = ["FolderDataset", "scan_folder"]
