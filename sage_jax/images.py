"""Image conversion and writing: float [-1, 1] NHWC <-> uint8, PNG files, grids."""

from __future__ import annotations

import math
import os

import numpy as np


def to_uint8(images) -> np.ndarray:
    """[-1, 1] floats -> uint8, as torchvision's ``save_image(normalize, range=(-1, 1))``."""
    x = (np.asarray(images, dtype=np.float32) + 1.0) * 0.5
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def make_grid(images_u8: np.ndarray, ncols: int | None = None, pad: int = 2, fill: int = 255) -> np.ndarray:
    """Tile (N, H, W, C) uint8 images into one image, ``ncols`` per row."""
    n, h, w, c = images_u8.shape
    if n == 0:
        raise ValueError("no images to tile")
    ncols = ncols or max(1, math.ceil(math.sqrt(n)))
    nrows = math.ceil(n / ncols)
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), fill, np.uint8)
    for i in range(n):
        r, col = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y:y + h, x:x + w] = images_u8[i]
    return grid


def save_png(path: str, image_u8: np.ndarray) -> None:
    from PIL import Image

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(image_u8).save(path)
