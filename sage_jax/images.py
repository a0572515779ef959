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


class ImageError(Exception):
    """An image file that cannot be read or converted; the message names the file."""


# Refuse images larger than this many pixels (decompression bombs).
MAX_PIXELS = 100_000_000


def _to_rgb_array(img) -> np.ndarray:
    """Any PIL mode -> (H, W, 3) uint8. 16/32-bit and float images are rescaled, alpha
    and palettes dropped as ``Image.convert('RGB')`` does."""
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        if img.mode == "F":
            lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
            a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        elif img.mode.startswith("I;16") or a.max() > 255:
            a = a / 65535.0 * 255.0
        a = np.clip(np.nan_to_num(a) + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=-1)
    if img.mode == "CMYK" or img.mode not in ("RGB",):
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)


def load_image(path: str, size: int | None = None) -> np.ndarray:
    """Read an image file as float32 (H, W, 3) in [-1, 1], RGB, EXIF orientation
    applied, optionally resized (bilinear, antialiased) to ``size`` x ``size`` as the
    pSp transforms do. Raises :class:`ImageError` naming the file when it cannot."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_PIXELS:
                raise ImageError(f"{path}: {img.width}x{img.height} exceeds the {MAX_PIXELS} pixel limit")
            img.load()
            img = ImageOps.exif_transpose(img)
            arr = _to_rgb_array(img)
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageError(f"{path}: empty image")
    if size is not None and arr.shape[:2] != (size, size):
        arr = np.asarray(Image.fromarray(arr).resize((size, size), Image.BILINEAR))
    return arr.astype(np.float32) / 127.5 - 1.0


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def list_images(paths) -> list[str]:
    """Files given directly, plus image files (by extension) found in given folders,
    sorted, folders walked recursively."""
    out: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            for root, _, files in os.walk(p):
                out += [os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
        elif os.path.exists(p):
            out.append(p)
        else:
            raise FileNotFoundError(f"{p} does not exist")
    return sorted(out)
