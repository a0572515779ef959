"""The shared image-reading policy: every bad kind of file is converted or skipped with
a count, through the library loader, folder datasets and the commands (invert,
build-dataset) end to end."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from sage_jax import images
from sage_jax.cli import main
from sage_jax.data import FolderDataset
from sage_jax.images import ImageReport, list_images, load_image, try_load_image

SKIPPED = {"empty": 1, "not an image": 1, "too large": 2, "truncated": 1}
CONVERTED = {"16-bit": 1, "CMYK": 1, "EXIF-rotated": 1, "grayscale+alpha": 1, "palette": 1}
READABLE = ["cmyk.jpg", "deep16.png", "exif_rot.jpg", "good.png", "la.png", "noext", "palette.png",
            "png_named.jpg"]


def _png_claiming(width, height):
    """A tiny PNG whose header declares width x height (a decompression bomb's header)."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    b = bytearray(buf.getvalue())
    b[16:24] = struct.pack(">II", width, height)
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))
    return bytes(b)


def write_bad_images(folder):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "good.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    Image.fromarray((np.arange(40 * 48).reshape(40, 48) * 30).astype(np.uint16)).save(folder / "deep16.png")
    Image.fromarray(rgb).convert("P").save(folder / "palette.png")
    Image.fromarray(rgb).convert("LA").save(folder / "la.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(rgb[:8, :16]).save(folder / "exif_rot.jpg", exif=exif, quality=95)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    (folder / "png_named.jpg").write_bytes(buf.getvalue())  # wrong extension, right content
    (folder / "noext").write_bytes(buf.getvalue())          # no extension: sniffed
    (folder / "empty.png").write_bytes(b"")
    jpg = (folder / "good.png").with_suffix(".tmp")
    Image.fromarray(rgb).save(jpg, "JPEG", quality=90)
    (folder / "truncated.jpg").write_bytes(jpg.read_bytes()[:400])
    jpg.unlink()
    (folder / "text.jpg").write_text("an image extension, text content")
    (folder / "bomb_108mp.png").write_bytes(_png_claiming(12000, 9000))     # Pillow only warns
    (folder / "bomb_400mp.png").write_bytes(_png_claiming(20000, 20000))    # Pillow refuses
    (folder / "notes.txt").write_text("not an image, not listed")
    return folder


def test_library_loader_converts_or_skips_each_kind(tmp_path):
    folder = write_bad_images(tmp_path / "imgs")
    files = list_images([folder])
    names = sorted(p.split("/")[-1] for p in files)
    assert "noext" in names and "notes.txt" not in names and len(names) == 13
    report = ImageReport()
    loaded = {p.split("/")[-1]: try_load_image(p, None, report, quiet=True) for p in files}
    assert sorted(n for n, x in loaded.items() if x is not None) == READABLE
    assert report.skipped_by_kind() == SKIPPED
    assert report.converted == CONVERTED
    assert loaded["exif_rot.jpg"].shape == (16, 8, 3)  # EXIF orientation applied
    assert loaded["deep16.png"].max() > 0.5 and loaded["deep16.png"].min() < -0.9  # rescaled, not clipped
    good = loaded["good.png"]
    assert np.abs(loaded["cmyk.jpg"] - good).mean() < 0.1  # CMYK -> RGB keeps the picture
    np.testing.assert_array_equal(loaded["png_named.jpg"], good)
    assert "1 empty, 1 not an image, 2 too large, 1 truncated" in report.summary()


def test_pixel_limit_is_ours_and_adjustable(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(tmp_path / "x.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 40 * 48 - 1)
    with pytest.raises(images.ImageError) as err:
        load_image(str(tmp_path / "x.png"))
    assert err.value.kind == "too large" and "pixel limit" in str(err.value)


def test_folder_dataset_counts_skips_and_conversions(tmp_path):
    write_bad_images(tmp_path / "data" / "a")
    write_bad_images(tmp_path / "data" / "b")
    ds = FolderDataset.from_folder(str(tmp_path / "data"), 16)
    assert len(ds) == 26
    x, y = ds.load_batch(range(len(ds)))
    assert x.shape == (26, 16, 16, 3) and (y == -1).sum() == 10
    assert ds.report.skipped_by_kind() == {k: 2 * v for k, v in SKIPPED.items()}
    assert len(ds.skipped) == 10


def test_invert_command_reports_the_counts(tmp_path, capsys):
    from tiny_models import tiny_psp_file

    tiny_psp_file(tmp_path / "psp.pt")
    folder = write_bad_images(tmp_path / "imgs")
    out = tmp_path / "out"
    assert main(["invert", "--checkpoint", str(tmp_path / "psp.pt"), "--images", str(folder),
                 "--out", str(out), "--no-recon", "--quiet"]) == 0
    stdout = capsys.readouterr().out
    assert ("5 image(s) skipped (1 empty, 1 not an image, 2 too large, 1 truncated); 5 converted "
            "(1 16-bit, 1 CMYK, 1 EXIF-rotated, 1 grayscale+alpha, 1 palette)") in stdout
    assert np.load(out / "codes.npy").shape[0] == len(READABLE)
    rows = [line.split("\t") for line in (out / "skipped.txt").read_text().splitlines()]
    assert sorted(r[1] for r in rows) == ["empty", "not an image", "too large", "too large", "truncated"]


def test_build_dataset_command_reports_the_counts(tmp_path, capsys):
    write_bad_images(tmp_path / "root" / "a")
    assert main(["build-dataset", "--root", str(tmp_path / "root"), "--data-dir", str(tmp_path / "tfds"),
                 "--name", "bad_kinds", "--size", "16"]) == 0
    stdout = capsys.readouterr().out
    assert "5 unreadable files skipped (1 empty, 1 not an image, 2 too large, 1 truncated)" in stdout
    assert "5 converted (1 16-bit, 1 CMYK, 1 EXIF-rotated, 1 grayscale+alpha, 1 palette)" in stdout
    assert "'train': 8" in stdout
