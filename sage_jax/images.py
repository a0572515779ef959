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


def write_images(chunks, out_dir: str, prefix: str, *, start: int = 0, on_chunk=None, digits: int = 4) -> int:
    """Write image chunks as they come (an iterable of (n, H, W, 3) floats in [-1, 1],
    e.g. :meth:`SageGenerator.decode`) to ``out_dir/{prefix}_{j:04d}.png``, so memory
    holds one chunk at a time however many images there are. ``on_chunk(first_index,
    uint8_chunk)`` is called after each chunk is written. Returns the images written."""
    os.makedirs(out_dir, exist_ok=True)
    j = start
    for chunk in chunks:
        u8 = to_uint8(chunk)
        first = j
        for im in u8:
            save_png(os.path.join(out_dir, f"{prefix}_{j:0{digits}d}.png"), im)
            j += 1
        if on_chunk is not None:
            on_chunk(first, u8)
    return j - start


class ImageError(Exception):
    """An image file that cannot be read or converted; the message names the file and
    ``kind`` says why in one word (``empty``, ``not an image``, ``truncated``, ``too
    large``, ``too small``, ``unreadable``)."""

    def __init__(self, message: str, kind: str = "unreadable"):
        super().__init__(message)
        self.kind = kind


# The image-reading policy every command shares (invert, embed, train-dictionary,
# generate, build-dataset, folder datasets in training):
#   * the format is sniffed from the content, never trusted from the extension;
#   * images over MAX_PIXELS pixels are refused from their header, before decoding
#     (decompression bombs); Pillow's own bomb warning is replaced by this check;
#   * EXIF orientation is applied; CMYK, 16/32-bit, float, palette, grey, LA/RGBA
#     images are converted to 8-bit RGB;
#   * an empty, truncated, unidentifiable or oversized file is skipped, never fatal,
#     and every skip and conversion is counted in an ImageReport the command prints.
MAX_PIXELS = 100_000_000  # 10000 x 10000; Pillow warns from 89M and refuses from 179M


def _pillow():
    import warnings

    from PIL import Image

    # Our MAX_PIXELS check refuses these with a clean skip; re-added on every call
    # (idempotent) because test runners and callers may reset the filters.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    return Image


class ImageReport:
    """Counts what a command did with the image files it read: skips (path, kind,
    reason) and conversions (``CMYK``, ``16-bit``, ``palette``, ``EXIF-rotated``, ...).
    Thread-safe; ``summary()`` is the line commands print."""

    def __init__(self):
        import threading

        self._lock = threading.Lock()
        self.skipped: dict[str, tuple[str, str]] = {}  # path -> (kind, reason)
        self.converted: dict[str, int] = {}

    def skip(self, path: str, error: "ImageError") -> bool:
        """Record a skip; True the first time ``path`` is skipped."""
        with self._lock:
            if path in self.skipped:
                return False
            self.skipped[path] = (getattr(error, "kind", "unreadable"), str(error))
            return True

    def convert(self, what: str) -> None:
        with self._lock:
            self.converted[what] = self.converted.get(what, 0) + 1

    def state(self) -> tuple[dict, dict]:
        """(skipped, converted) as plain dicts: what another process needs to :meth:`merge`."""
        with self._lock:
            return dict(self.skipped), dict(self.converted)

    def merge(self, skipped: dict, converted: dict) -> None:
        """Add another report's skips (a path skipped in both counts once) and
        conversions (e.g. another process's, from its :meth:`state`)."""
        with self._lock:
            for path, why in skipped.items():
                self.skipped.setdefault(path, tuple(why))
            for what, n in converted.items():
                self.converted[what] = self.converted.get(what, 0) + int(n)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def skipped_by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for kind, _ in self.skipped.values():
            out[kind] = out.get(kind, 0) + 1
        return dict(sorted(out.items()))

    def summary(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in self.skipped_by_kind().items())
        conv = ", ".join(f"{n} {k}" for k, n in sorted(self.converted.items()))
        return (f"{self.num_skipped} image(s) skipped" + (f" ({kinds})" if kinds else "") +
                f"; {sum(self.converted.values())} converted" + (f" ({conv})" if conv else ""))

    def as_dict(self) -> dict:
        return {"num_skipped": self.num_skipped, "skipped_by_kind": self.skipped_by_kind(),
                "converted": dict(sorted(self.converted.items())),
                "skipped": [[p, k, r] for p, (k, r) in self.skipped.items()]}

    def write_skipped(self, path: str) -> None:
        with open(path, "w") as f:
            f.write("".join(f"{p}\t{k}\t{r}\n" for p, (k, r) in self.skipped.items()))


_MODE_NAMES = {"CMYK": "CMYK", "P": "palette", "PA": "palette", "L": "grayscale", "LA": "grayscale+alpha",
               "RGBA": "RGBA", "1": "1-bit", "YCbCr": "YCbCr", "LAB": "LAB", "HSV": "HSV",
               "I": "32-bit", "F": "float", "RGBX": "RGBX", "La": "grayscale+alpha", "RGBa": "RGBA"}


def _to_rgb_array(img) -> np.ndarray:
    """Any PIL mode -> (H, W, 3) uint8. 16/32-bit and float images are rescaled, alpha
    and palettes dropped as ``Image.convert('RGB')`` does."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        if img.mode == "F":
            lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
            a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        elif img.mode.startswith("I;16") or a.max() > 255:
            a = a / 65535.0 * 255.0
        a = np.clip(np.nan_to_num(a) + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=-1)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)


def _conversion(raw_mode: str, tile_mode: str) -> str | None:
    if raw_mode.startswith("I;16") or ";16" in tile_mode:  # Pillow reads 48-bit RGB PNGs as RGB
        return "16-bit"
    return _MODE_NAMES.get(raw_mode, raw_mode) if raw_mode != "RGB" else None


def load_image(path: str, size: int | None = None, report: ImageReport | None = None) -> np.ndarray:
    """Read an image file as float32 (H, W, 3) in [-1, 1], RGB, EXIF orientation
    applied, optionally resized (bilinear, antialiased) to ``size`` x ``size`` as the
    pSp transforms do. Raises :class:`ImageError` naming the file when it cannot;
    conversions are counted in ``report`` (skips are the caller's to record, see
    :func:`try_load_image`)."""
    Image = _pillow()
    from PIL import ImageOps, UnidentifiedImageError

    try:
        if os.path.getsize(path) == 0:
            raise ImageError(f"{path}: empty file (0 bytes)", "empty")
        with Image.open(path) as img:  # the format comes from the content, not the name
            if img.width * img.height > MAX_PIXELS:
                raise ImageError(f"{path}: {img.width}x{img.height} exceeds the {MAX_PIXELS} pixel limit",
                                 "too large")
            raw_mode = img.mode
            tile_mode = str(img.tile[0][3][0]) if img.tile and isinstance(img.tile[0][3], tuple) and \
                img.tile[0][3] else ""
            img.load()
            orientation = img.getexif().get(0x0112, 1) if hasattr(img, "getexif") else 1
            img = ImageOps.exif_transpose(img)
            arr = _to_rgb_array(img)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path}: {e}", "too large") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image (content matches no known image format)", "not an image") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        text = str(e).lower()
        kind = "truncated" if ("truncated" in text or "broken data stream" in text or isinstance(e, EOFError)
                               or "premature end" in text) else "unreadable"
        raise ImageError(f"{path}: cannot read image ({type(e).__name__}: {e})", kind) from None
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageError(f"{path}: empty image", "empty")
    if report is not None:
        what = _conversion(raw_mode, tile_mode)
        if what:
            report.convert(what)
        if orientation not in (1, None):
            report.convert("EXIF-rotated")
    if size is not None and arr.shape[:2] != (size, size):
        arr = np.asarray(Image.fromarray(arr).resize((size, size), Image.BILINEAR))
    return arr.astype(np.float32) / 127.5 - 1.0


def try_load_image(path: str, size: int | None, report: ImageReport, quiet: bool = False) -> np.ndarray | None:
    """:func:`load_image`, or None with the skip recorded in ``report`` (and printed
    once to stderr unless ``quiet``)."""
    import sys

    try:
        return load_image(path, size, report)
    except ImageError as e:
        if report.skip(path, e) and not quiet:
            print(f"skipped: {e}", file=sys.stderr)
        return None


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
          b"P1", b"P2", b"P3", b"P4", b"P5", b"P6")


def is_image_file(path: str) -> bool:
    """An image extension, or (for any other name) content that starts like an image:
    a PNG saved as ``photo.dat`` is read, a ``README`` is not listed. Files with an
    image extension but other content are listed and then skipped as ``not an image``."""
    name = os.path.basename(path)
    if name.startswith("."):
        return False
    if name.lower().endswith(IMAGE_EXTENSIONS):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def list_images(paths) -> list[str]:
    """Files given directly, plus image files (:func:`is_image_file`) found in given
    folders, sorted, folders walked recursively."""
    out: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            for root, _, files in os.walk(p):
                out += [os.path.join(root, f) for f in files if is_image_file(os.path.join(root, f))]
        elif os.path.exists(p):
            out.append(p)
        else:
            raise FileNotFoundError(f"{p} does not exist")
    return sorted(out)
