"""Small dependency-free plots (PIL): scatter plots with a legend, for reports."""

from __future__ import annotations

import colorsys

import numpy as np


def palette(n: int) -> list[tuple[int, int, int]]:
    """``n`` well-separated colours."""
    return [tuple(int(255 * c) for c in colorsys.hsv_to_rgb(i / max(n, 1), 0.75, 0.85)) for i in range(n)]


def scatter(panels, size: int = 360, title: str = "") -> np.ndarray:
    """Side-by-side scatter panels as one RGB image.

    ``panels``: list of ``(panel title, [(points (N, 2), colour, marker, label), ...])``
    with marker ``"o"`` (filled disc) or ``"x"`` (cross). All panels share the axes'
    scale, so they compare directly."""
    from PIL import Image, ImageDraw

    pts = np.concatenate([p for _, series in panels for p, *_ in series if len(p)]) if panels else np.zeros((1, 2))
    lo, hi = pts.min(0), pts.max(0)
    span = np.maximum(hi - lo, 1e-6)
    pad, top = 24, 40 if title else 24
    w = len(panels) * size + (len(panels) + 1) * pad
    h = size + top + pad + 60
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((pad, 10), title, fill="black")
    legend = {}
    for k, (ptitle, series) in enumerate(panels):
        x0 = pad + k * (size + pad)
        draw.rectangle([x0, top, x0 + size, top + size], outline=(160, 160, 160))
        draw.text((x0 + 4, top + 4), ptitle, fill="black")
        for points, colour, marker, label in series:
            legend.setdefault(label, (colour, marker))
            for x, y in np.asarray(points):
                u = x0 + 10 + (x - lo[0]) / span[0] * (size - 20)
                v = top + size - 10 - (y - lo[1]) / span[1] * (size - 20)
                if marker == "x":
                    draw.line([u - 3, v - 3, u + 3, v + 3], fill=colour, width=1)
                    draw.line([u - 3, v + 3, u + 3, v - 3], fill=colour, width=1)
                else:
                    draw.ellipse([u - 3, v - 3, u + 3, v + 3], fill=colour, outline=(40, 40, 40))
    y = top + size + 10
    x = pad
    for label, (colour, marker) in legend.items():
        if marker == "x":
            draw.line([x, y, x + 6, y + 6], fill=colour)
            draw.line([x, y + 6, x + 6, y], fill=colour)
        else:
            draw.ellipse([x, y, x + 6, y + 6], fill=colour)
        draw.text((x + 10, y - 3), label, fill="black")
        x += 10 + 7 * len(label) + 16
        if x > w - 150:
            x, y = pad, y + 16
    return np.asarray(img)


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, (2, F) principal axes) of rows ``x``."""
    mean = x.mean(0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    return mean, vt[:2]
