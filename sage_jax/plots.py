"""The report figures, drawn with matplotlib (Agg backend, no display needed): the PCA
of real and generated W+ codes (the paper's Fig. 5), the retention-vs-diversity plot of
the alpha sweep, and the per-class overview of shots and generated images. Each
function writes one PNG."""

from __future__ import annotations

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, (2, F) principal axes, the share of the variance each axis holds) of rows ``x``."""
    x = np.asarray(x, np.float64)
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    var = s ** 2
    return mean, vt[:2], var[:2] / max(var.sum(), 1e-30)


def plot_pca(panels, path: str, *, title: str = "", share=None, class_names=None) -> None:
    """Side-by-side scatter panels on shared axes: ``panels`` is a list of ``(panel
    title, [(points (N, 2), class index, kind), ...])`` with kind ``"real"`` (discs) or
    ``"generated"`` (crosses); a colour per class, named in the legend by
    ``class_names``. ``share``: the variance share of the two axes, for their labels."""
    plt = _pyplot()
    n_classes = 1 + max((c for _, series in panels for _, c, _ in series), default=0)
    colours = plt.get_cmap("tab10" if n_classes <= 10 else "tab20")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels) + 1.8, 4.6), squeeze=False,
                             sharex=True, sharey=True)
    for ax, (ptitle, series) in zip(axes[0], panels):
        for points, c, kind in series:
            p = np.asarray(points)
            if kind == "real":
                ax.scatter(p[:, 0], p[:, 1], s=22, color=colours(c), edgecolors="0.2", linewidths=0.5)
            else:
                ax.scatter(p[:, 0], p[:, 1], s=26, color=colours(c), marker="x", linewidths=1.1)
        ax.set_title(ptitle, fontsize=10)
        ax.set_xlabel("PC 1" + (f" ({share[0]:.0%} of variance)" if share is not None else ""))
        ax.grid(alpha=0.25)
    axes[0][0].set_ylabel("PC 2" + (f" ({share[1]:.0%} of variance)" if share is not None else ""))
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color="0.5", markeredgecolor="0.2", label="real"),
               Line2D([], [], marker="x", ls="", color="0.5", label="generated")]
    for c, name in enumerate(class_names or []):
        handles.append(Line2D([], [], marker="s", ls="", color=colours(c), label=name))
    axes[0][-1].legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8,
                       frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_classes(overview: dict, path: str, k: int, modes) -> None:
    """One figure of every class in ``overview`` (name -> {"shots": uint8 images, mode:
    uint8 images}): a row per class with its K shots, then each mode's images from them,
    so a reader sees at a glance whether the generated images are that class."""
    from sage_jax.images import make_grid

    plt = _pyplot()
    names = list(overview)
    modes = [m for m in modes if all(m in overview[c] for c in names)]
    fig, axes = plt.subplots(len(names), 1 + len(modes), figsize=(2.2 + 6.4 * len(modes), 1.75 * len(names)),
                             squeeze=False, gridspec_kw={"width_ratios": [1] + [3] * len(modes)})
    for r, name in enumerate(names):
        panels = [("shots", overview[name]["shots"], len(overview[name]["shots"]))]
        panels += [(f"{m.upper()}, {k}-shot", overview[name][m], 8) for m in modes]
        for c, (title, imgs, ncols) in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(make_grid(imgs, ncols=ncols), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=10)
        axes[r][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_sweep(rows, path: str) -> None:
    """Retention (y) against diversity (x), a line per mode through its alphas, one
    panel per shot count; ``rows``: dicts with mode, shots, alpha, retention, diversity
    (and, when given, ``retention_ci`` / ``diversity_ci``: 95% intervals ``{"lo", "hi"}``
    drawn as error bars)."""
    plt = _pyplot()
    shots = sorted({r["shots"] for r in rows})
    fig, axes = plt.subplots(1, len(shots), figsize=(5.2 * len(shots), 4.4), squeeze=False, sharey=True)
    for ax, k in zip(axes[0], shots):
        for m in dict.fromkeys(r["mode"] for r in rows):
            pts = sorted((r for r in rows if r["mode"] == m and r["shots"] == k), key=lambda r: r["alpha"])
            x = [r["diversity"] for r in pts]
            y = [r["retention"] for r in pts]
            line, = ax.plot(x, y, marker="o", label=m.upper())
            if pts and "retention_ci" in pts[0]:
                yerr = [[max(r["retention"] - r["retention_ci"]["lo"], 0.0) for r in pts],
                        [max(r["retention_ci"]["hi"] - r["retention"], 0.0) for r in pts]]
                xerr = [[max(r["diversity"] - r["diversity_ci"]["lo"], 0.0) for r in pts],
                        [max(r["diversity_ci"]["hi"] - r["diversity"], 0.0) for r in pts]]
                ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="none", ecolor=line.get_color(), alpha=0.35,
                            capsize=2, lw=1)
            for r in pts:
                ax.annotate(f"{r['alpha']:g}", (r["diversity"], r["retention"]), textcoords="offset points",
                            xytext=(4, 4), fontsize=7)
        ax.set_title(f"{k}-shot (labels: alpha; bars: 95% intervals)")
        ax.set_xlabel("diversity (oracle factor spread / real)")
        ax.grid(alpha=0.3)
        ax.set_ylim(0, 1.02)
    axes[0][0].set_ylabel("category retention (oracle accuracy)")
    axes[0][-1].legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
