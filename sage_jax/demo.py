"""``sage-jax demo``: the shipped tiny model generating the unseen synthetic classes,
with a visual report (``report.html``, opens without a server).

For every unseen class of the synthetic dataset it draws fresh real images (the shots
and a real reference set), generates images from 1 and 3 shots in AGE and SAGE modes,
and measures with the ground-truth oracles (trained on real images only):

* category retention: the oracle classifier's accuracy on the generated images;
* diversity: the spread of the oracle-regressed irrelevant factors (position, scale,
  rotation where it is irrelevant, background, lighting) relative to the same spread on
  real images of the class.

It also draws every unseen class in one figure (``classes.png``: the 3 shots, then AGE's
and SAGE's images from them) and the paper's Fig. 5: a PCA of the W+ codes of real and
generated images per class, for AGE and SAGE.

Before the method, each stage under it is measured on its own (fresh draws,
:mod:`sage_jax.metrics.stages`), with pictures: the generator (random samples: the share
the oracle calls one class with probability >= 0.9, the seen classes they hit, FID on the
oracle's features), the inversion (reconstructions of held-out real images of seen and
unseen classes: retention and MSE; made as the class statistics' codes were, refined
when they were) and the dictionary (the share of the seen codes' within-class variation
its directions span). Retention of edited images means little when the reconstruction of
the shot already lost the class.

The generation options are the paper's (t_C, t_A, alpha 1), with t_B from the model's
config (``generation.t_B``) when it sets one.

``report.html`` opens with the headline table (each mode's retention and diversity with
its 95% interval, then the paired SAGE - AGE differences), then a sortable row per unseen
class and mode (the class's name, a real image of it, its figures with their intervals
given its shots), each stage's measures, the provenance (package version and git commit,
the model directory and its ``config.json`` hash, the seeds and keys, the JAX version,
devices and processes, the date; also in ``metrics.json``) and only then the pictures.
"""

from __future__ import annotations

import html
import json
import os
import time

import jax
import numpy as np
from tqdm import tqdm

from sage_jax.assets import ASSET_DIR  # noqa: F401  (also sage_jax.demo.ASSET_DIR)

MODES = ("age", "sage")
SHOTS = (1, 3)
PCA_CLASSES = 6   # unseen classes drawn in the PCA figure
PCA_REAL = 12     # real images per class in it
# held-out real images per class for the inversion's measure: fewer of the 40 seen classes
# than of the 10 unseen (refined inversion costs an optimisation per image; 'sage-jax train'
# measures 10 of each in quality.json)
STAGE_HELDOUT = {"seen": 3, "unseen": 10}


def load_bundle(path: str = ASSET_DIR):
    """(psp, dictionary, class statistics, oracles, config dict) of a model directory
    written by ``sage-jax train``."""
    from sage_jax import checkpoints
    from sage_jax.metrics.oracles import Oracles
    from sage_jax.statistics import ClassStatistics

    if not os.path.isdir(path):
        raise FileNotFoundError(f"no model at {path}: make it with 'sage-jax train --config tiny "
                                f"--workdir runs/tiny' and pass --model runs/tiny/model")
    psp = checkpoints.load_psp(os.path.join(path, "psp"))
    dictionary = checkpoints.load_dictionary(os.path.join(path, "dictionary"))
    stats = ClassStatistics.load(os.path.join(path, "class_stats.npz"))
    oracles = Oracles.load(os.path.join(path, "oracles"))
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    return psp, dictionary, stats, oracles, config


def _spec(config):
    """The synthetic dataset a model directory's ``config.json`` was trained on."""
    from sage_jax.data.synthetic import SyntheticSpec

    d = config["data"]
    return SyntheticSpec(num_seen=d["num_seen"], num_unseen=d["num_unseen"], samples_per_class=d["samples_per_class"],
                         image_size=d["size"], imbalance_ratio=d["imbalance_ratio"])


def _options(mode: str, shots: int, n_seen: int, a_length: int, alpha: float, config: dict):
    """The paper's settings (t_B 10 and t_A 50 unless the model's config says otherwise,
    t_C 30 at 1 shot and 20 at 3), capped by the model's seen classes and dictionary
    length: :func:`sage_jax.generation.default_options`, as ``sage-jax generate``."""
    from sage_jax.generation import default_options

    return default_options(mode, shots, seen_classes=n_seen, directions=n_seen, a_length=a_length,
                           generation=config.get("generation"), alpha=alpha)


def run_demo(out: str, model: str = ASSET_DIR, n: int = 16, n_real: int = 32, seed: int = 0,
             quiet: bool = False) -> dict:
    from sage_jax.data.synthetic import make_classes, sample_class
    from sage_jax.generation import SageGenerator
    from sage_jax.images import make_grid, save_png, to_uint8
    from sage_jax.inversion import CachedInverter
    from sage_jax.plots import pca_2d, plot_classes, plot_pca

    t0 = time.perf_counter()
    psp, dictionary, stats, oracles, config = load_bundle(model)
    spec = _spec(config)
    classes = make_classes(spec)
    unseen = [c for c in classes if not c.seen]
    gen = SageGenerator(psp, dictionary, stats)
    S, l = stats.num_classes, dictionary.a_length
    os.makedirs(out, exist_ok=True)
    img_dir = os.path.join(out, "images")
    os.makedirs(img_dir, exist_ok=True)
    key = jax.random.PRNGKey(seed)

    # every unseen class's draw first, so that every image the demo inverts (shots, the PCA
    # figure's real images, the stage measure's held-out images) is inverted in one call:
    # one compiled shape for the refinement, each image once
    draws = [sample_class(spec, cls.index, max(SHOTS) + n_real, seed * 1000 + cls.index) for cls in unseen]
    encode = CachedInverter(gen.inverter)
    wanted = [d["images"][:max(SHOTS)] for d in draws]
    wanted += [d["images"][max(SHOTS):max(SHOTS) + PCA_REAL] for d in draws[:PCA_CLASSES]]
    stage = _stage_measures(psp, gen, oracles, spec, classes, out, key, encode=encode,
                            prefetch=np.concatenate(wanted))

    from sage_jax.metrics.oracles import GroundTruthSets

    gt = GroundTruthSets(oracles)
    real_spread_all = []
    pca_series = {m: [] for m in MODES}
    rows = []
    overview = {}   # class -> shots and each mode's images at the largest shot count, for classes.png
    for ci, cls in enumerate(tqdm(unseen, desc="unseen classes", unit="class", disable=quiet)):
        oracle_index = oracles.class_names.index(cls.name)
        draw = draws[ci]
        shots, real = draw["images"][:max(SHOTS)], draw["images"][max(SHOTS):]
        mask = draw["factor_mask"][max(SHOTS):].all(axis=0)  # factors visible for this class
        real_spread_all.append(oracles.spread(real, mask))
        gt.add_real(cls.name, real, oracle_index, mask)
        shot_u8 = to_uint8(shots)
        save_png(os.path.join(img_dir, f"{cls.name}_shots.png"), make_grid(shot_u8, ncols=len(shot_u8)))
        save_png(os.path.join(img_dir, f"{cls.name}_real.png"), to_uint8(real[0]))   # the per-class table's thumbnail
        # the real codes only for the classes the PCA figure draws (refined inversion is not free)
        real_codes = (np.asarray(encode(real[:PCA_REAL])).reshape(PCA_REAL, -1) if ci < PCA_CLASSES
                      else None)
        shot_codes = encode(shots)   # once per class: the first k shots' codes are its first k rows
        row = {"name": cls.name, "shots": f"images/{cls.name}_shots.png", "thumb": f"images/{cls.name}_real.png",
               "grids": {}}
        for mode in MODES:
            for k in SHOTS:
                opts = _options(mode, k, S, l, 1.0, config)
                raw = shot_codes[:k]
                codes = gen.codes(jax.random.fold_in(key, ci * 10 + k), raw[None], n, opts)[0]
                imgs = np.concatenate(list(gen.decode(codes)))
                gt.add(f"{mode}-{k}shot", cls.name, imgs)
                name = f"images/{cls.name}_{mode}_{k}shot.png"
                save_png(os.path.join(out, name), make_grid(to_uint8(imgs), ncols=8))
                row["grids"][f"{mode}-{k}"] = name
                if k == 1 and real_codes is not None:
                    pca_series[mode].append((ci, real_codes, np.asarray(codes).reshape(n, -1)))
                if k == max(SHOTS):
                    overview.setdefault(cls.name, {"shots": shot_u8})[mode] = to_uint8(imgs)
        rows.append(row)
    plot_classes(overview, os.path.join(out, "classes.png"), k=max(SHOTS), modes=MODES)

    # PCA of W+ codes, real vs generated (paper Fig. 5), 1-shot, shared axes per mode
    allc = np.concatenate([r for m in MODES for _, r, g in pca_series[m]] + [g for m in MODES for _, r, g in pca_series[m]])
    mean, axes, share = pca_2d(allc)
    panels = []
    for mode in MODES:
        series = []
        for ci, r, g in pca_series[mode]:
            series.append(((r - mean) @ axes.T, ci, "real"))
            series.append(((g - mean) @ axes.T, ci, "generated"))
        panels.append((f"{mode.upper()}, 1 shot", series))
    plot_pca(panels, os.path.join(out, "pca.png"), title="PCA of W+ codes of unseen classes: real vs generated",
             share=share, class_names=[unseen[ci].name for ci, _, _ in pca_series[MODES[0]]])

    # every mode edits from the same shots with the same key: SAGE and AGE are paired
    pairs = [(f"sage-{k}shot", f"age-{k}shot") for k in SHOTS]
    scores = gt.summary(jax.random.fold_in(key, 99), pairs=pairs)
    real_spread = dict(zip([r["name"] for r in rows], real_spread_all))
    per_class = {"real": {c: {**v, "diversity": 1.0, "factor_spread": float(real_spread[c])}
                          for c, v in scores["real"]["per_class"].items()}}
    per_class.update({name: v["per_class"] for name, v in scores["methods"].items()})
    table = {"real": {"retention": scores["real"]["retention"]["value"],
                      "retention_ci": scores["real"]["retention"], "diversity": 1.0,
                      "factor_spread": float(np.mean(real_spread_all))}}
    for name, v in scores["methods"].items():
        table[name] = {"retention": v["retention"]["value"], "retention_ci": v["retention"],
                       "diversity": v["diversity"]["value"], "diversity_ci": v["diversity"]}
    summary = {"metrics": table, "differences": scores["differences"],
               "per_class": per_class,
               "intervals": dict(scores["bootstrap"], method="bootstrap over classes and images (figures); "
                                 "exact binomial (shares of independent samples)"),
               "stages": stage, "oracles": oracles.scores, "classes": [r["name"] for r in rows],
               "images_per_class": n, "real_images_per_class": n_real,
               "provenance": provenance(model, seed, n_real=n_real, n_boot=scores["bootstrap"]["replicates"]),
               "seconds": time.perf_counter() - t0}
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(summary, f, indent=1)
    _write_html(out, summary, rows)
    print(f"report: {os.path.join(out, 'report.html')} ({summary['seconds']:.0f} s)")   # also when quiet
    if not quiet:
        from sage_jax.metrics import uncertainty as u

        g, inv = stage["generator"], stage["inversion"]
        print("  (95% intervals in brackets)")
        print(f"  generator: {u.fmt(g['confident_share_ci'])} of random samples confident (>= 0.9), "
              f"{g['seen_classes_hit']}/{g['seen_classes']} seen classes hit, "
              f"oracle FID {u.fmt(g['oracle_fid_ci'], 1)}")
        for split in ("seen", "unseen"):
            print(f"  inversion, {split}: retention {u.fmt(inv[split]['retention_ci'])}, MSE {inv[split]['mse']:.4f}")
        dq = stage["dictionary"]
        print(f"  dictionary: {dq['captured_share']:.2f} of the seen codes' within-class variation in span(A) "
              f"(best {dq['pca_bound']:.2f}, random {dq['random_share']:.2f})")
        for k, v in table.items():
            div = f"{v['diversity']:.2f}" if k == "real" else u.fmt(v["diversity_ci"])
            print(f"  {k:>12}: retention {u.fmt(v['retention_ci'])}, diversity {div}")
        for k, d in summary["differences"].items():
            print(f"  {k}: retention {u.fmt(d['retention'])}, diversity {u.fmt(d['diversity'])}"
                  + _verdict(d["retention"]))
    return summary


def provenance(model: str, seed: int, n_real: int | None = None, n_boot: int | None = None) -> dict:
    """What made a demo's figures: the package (version, git commit), the model (its
    directory and a hash of its ``config.json``), the seeds and keys, the JAX runtime
    (version, devices, processes) and the date."""
    import datetime
    import hashlib
    import platform

    with open(os.path.join(model, "config.json"), "rb") as f:
        config_sha = hashlib.sha256(f.read()).hexdigest()[:12]
    devices = jax.devices()
    platforms = sorted({d.platform for d in devices})
    real = f"{max(SHOTS)} shots + {n_real} real images" if n_real is not None else "shots and real images"
    return {
        "package_version": package_version(),
        "git_commit": git_commit(),
        "model": os.path.abspath(model),
        "config_sha256": config_sha,
        "seed": int(seed),
        "keys": {
            "base key": f"jax.random.PRNGKey({seed})",
            "real images per unseen class": f"{real}: sample_class(spec, class index, n, seed={seed} * 1000 + class index)",
            "generation (every mode, so SAGE and AGE are paired)": "fold_in(base key, 10 * unseen-class position + shots)",
            "bootstrap intervals": f"fold_in(base key, 99), {n_boot} replicates; per class fold_in(that key, 1 + class position)",
            "stage measures": "generator samples fold_in(base key, 7); held-out images seeded by randint(base key)",
        },
        "jax_version": jax.__version__,
        "jaxlib_version": _dist_version("jaxlib"),
        "device_platform": ",".join(platforms),
        "device_count": len(devices),
        "process_count": jax.process_count(),
        "python_version": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _dist_version(name: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def package_version() -> str:
    """The installed ``sage-jax`` distribution's version, or "unknown"."""
    return _dist_version("sage-jax")


def git_commit(where: str | None = None) -> str:
    """``git rev-parse HEAD`` of the checkout the package sits in (``where``: its folder
    by default), with ``-dirty`` when ``git status --porcelain`` lists anything (or
    fails); "unknown" when the package is not a tracked part of a git checkout (an
    installed copy, or no git)."""
    import subprocess

    if where is None:
        import sage_jax

        where = os.path.dirname(os.path.abspath(sage_jax.__file__))

    def git(*args):
        return subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=30)

    try:
        head = git("rev-parse", "HEAD")
        # a copy installed into site-packages inside some other checkout is not that checkout's
        tracked = git("ls-files", "--error-unmatch", "--", "__init__.py")
        if head.returncode or tracked.returncode:
            return "unknown"
        status = git("status", "--porcelain")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if status.returncode or status.stdout.strip() else "")


def _iv(iv, digits: int = 2) -> str:
    """``value <small>[lo, hi]</small>`` of an interval ``{"value", "lo", "hi"}``."""
    return (f"{iv['value']:.{digits}f} <small>[{iv['lo']:.{digits}f}, {iv['hi']:.{digits}f}]</small>")


def _iv_html(d, name, digits=3) -> str:
    """``value [lo, hi]`` of ``d[name]`` with its ``name + '_ci'`` interval, when there is one."""
    iv = d.get(f"{name}_ci")
    if iv is None:
        return f"{d[name]:.{digits}f}"
    return f"{d[name]:.{digits}f} <small>[{iv['lo']:.{digits}f}, {iv['hi']:.{digits}f}]</small>"


def _mode_label(name: str) -> str:
    """``sage-3shot`` -> ``SAGE, 3 shots``."""
    if name == "real":
        return "real images"
    mode, _, k = name.rpartition("-")
    k = k.replace("shot", "")
    return f"{mode.upper()}, {k} shot{'s' if k != '1' else ''}"


def _headline_html(summary) -> list:
    """The headline: each mode's category retention and diversity with their 95%
    intervals, then the paired SAGE - AGE differences."""
    t = summary["metrics"]
    out = ["<h2 id='headline'>Category retention and diversity (95% intervals)</h2>",
           "<table id='headline-table'><thead><tr><th>images</th><th>category retention</th><th>diversity</th>"
           "</tr></thead><tbody>"]
    for k, v in t.items():
        div = (_iv(v["diversity_ci"], 3) if "diversity_ci" in v
               else f"{v['diversity']:.3f} <small>(the reference)</small>")
        out.append(f"<tr data-mode='{html.escape(k)}'><td>{html.escape(_mode_label(k))}</td>"
                   f"<td>{_iv(v['retention_ci'], 3)}</td><td>{div}</td></tr>")
    out.append("</tbody></table>")
    diffs = summary.get("differences", {})
    if diffs:
        from sage_jax.metrics.uncertainty import excludes_zero

        out.append("<h3>Paired differences (same shots, same keys)</h3><table id='differences-table'>"
                   "<thead><tr><th></th><th>retention</th><th>diversity</th></tr></thead><tbody>")
        for k, d in diffs.items():
            cells = []
            for m in ("retention", "diversity"):
                iv = d[m]
                verdict = "" if excludes_zero(iv) else " (no difference shown)"
                cells.append(f"{iv['value']:+.3f} <small>[{iv['lo']:+.3f}, {iv['hi']:+.3f}]</small>{verdict}")
            out.append(f"<tr><td>{html.escape(k)}</td><td>{cells[0]}</td><td>{cells[1]}</td></tr>")
        out.append("</tbody></table>")
    b = summary.get("intervals", {})
    out.append("<p class='note'>Category retention: the share of generated images an oracle classifier (trained on "
               "real images only) assigns to the class they were made for. Diversity: the spread of the "
               "oracle-regressed category-irrelevant factors (position, scale, background, lighting; rotation "
               "where it is irrelevant) relative to real images of the class (1.0 = as diverse as real data). "
               f"{summary['images_per_class']} generated images per class, mode and shot count. Brackets: 95% "
               f"intervals, a bootstrap over classes and their images ({b.get('replicates', '?')} replicates). "
               "A difference is shown only where its interval excludes 0.</p>")
    return out


def _per_class_html(summary, rows) -> list:
    """A row per unseen class and mode: the class's name and a real image of it, its
    retention and diversity with their 95% intervals given its shots; sortable."""
    per = summary["per_class"]
    thumbs = {r["name"]: r.get("thumb") for r in rows}
    out = ["<h2 id='per-class'>Per class</h2>",
           "<p class='note'>Every unseen class in every mode. Intervals given the class's shots: exact binomial "
           "for retention, a bootstrap over the class's images for diversity. Click a column heading to sort.</p>",
           "<table id='per-class-table' class='sortable'><thead><tr><th>class</th><th>a real image</th>"
           "<th>images</th><th>retention</th><th>diversity</th></tr></thead><tbody>"]
    for c in summary["classes"]:
        for mode, figures in per.items():
            v = figures[c]
            thumb = f"<img class='thumb' src='{thumbs[c]}' alt='{html.escape(c)}'>" if thumbs.get(c) else ""
            if mode == "real":
                div, div_v = "1.000 <small>(the reference)</small>", 1.0
            else:
                div, div_v = _iv(v["diversity_ci"], 3), v["diversity"]
            out.append(f"<tr data-class='{html.escape(c)}' data-mode='{html.escape(mode)}'>"
                       f"<td>{html.escape(c)}</td><td class='thumb'>{thumb}</td><td data-v='{html.escape(mode)}'>"
                       f"{html.escape(_mode_label(mode))}</td>"
                       f"<td data-v='{v['retention']:.6f}'>{_iv(v['retention_ci'], 3)}</td>"
                       f"<td data-v='{div_v:.6f}'>{div}</td></tr>")
    out.append("</tbody></table>")
    return out


PROVENANCE_LABELS = (("package_version", "sage-jax version"), ("git_commit", "git commit"),
                     ("model", "model directory"), ("config_sha256", "model config.json sha256 (first 12)"),
                     ("seed", "seed"), ("jax_version", "jax"), ("jaxlib_version", "jaxlib"),
                     ("device_platform", "device platform"), ("device_count", "devices"),
                     ("process_count", "processes"), ("python_version", "python"), ("date", "date (UTC)"))


def _provenance_html(p) -> list:
    out = ["<h2 id='provenance'>Provenance</h2><table id='provenance-table'>"]
    for field, label in PROVENANCE_LABELS:
        out.append(f"<tr><th>{html.escape(label)}</th><td data-field='{field}'>{html.escape(str(p[field]))}</td></tr>")
    for what, how in p["keys"].items():
        out.append(f"<tr><th>key: {html.escape(what)}</th><td>{html.escape(how)}</td></tr>")
    out.append("</table>")
    return out


def _verdict(iv) -> str:
    """What a difference's interval allows one to say."""
    from sage_jax.metrics.uncertainty import excludes_zero

    if not excludes_zero(iv):
        return " (retention: no difference shown)"
    return " (retention: " + ("higher" if iv["lo"] > 0 else "lower") + ", the interval excludes 0)"


def _stage_measures(psp, gen, oracles, spec, classes, out, key, n_samples: int = 1000, per_class=None,
                    encode=None, prefetch=None):
    """The generator's, the inversion's and the dictionary's measures on fresh draws, with
    pictures (``samples.png``: 64 random samples; ``reconstructions.png``: unseen real
    images above their reconstructions). The inversion is the one the method uses
    (``gen.encode``: the encoder, refined when the class statistics were); ``encode``: a
    CachedInverter of it to share, ``prefetch``: more images to invert in the same call."""
    from sage_jax.images import make_grid, save_png, to_uint8
    from sage_jax.inversion import CachedInverter
    from sage_jax.metrics import stages

    per_class = per_class or STAGE_HELDOUT
    stats = gen.stats
    seen = [c for c in classes if c.seen]
    unseen = [c for c in classes if not c.seen]
    seed = int(np.asarray(jax.random.randint(key, (), 0, 2**30)))
    real_seen, _ = stages.heldout_images(spec, seen, max(1, n_samples // len(seen)), seed=seed + 1)
    samples = stages.generator_samples(psp.decoder, n_samples, jax.random.fold_in(key, 7))
    g_quality = stages.sample_quality(oracles, samples, [c.name for c in seen], real_seen=real_seen)
    save_png(os.path.join(out, "samples.png"), make_grid(to_uint8(samples[:64]), ncols=16))

    encode = encode or CachedInverter(gen.inverter)   # the seen images' codes serve the dictionary's measure too
    held = {split: stages.heldout_images(spec, group, per_class[split], seed=seed + 2)[0]
            for split, group in (("seen", seen), ("unseen", unseen))}
    encode(np.concatenate([held["seen"], held["unseen"]] + ([] if prefetch is None else [prefetch])))

    def reconstruct(x):
        return psp.decoder(psp.absolute_codes(encode(x)), input_is_latent=True)

    inv = {}
    for split, group in (("seen", seen), ("unseen", unseen)):
        n = per_class[split]
        images = held[split]
        names = [c.name for c in group for _ in range(n)]
        inv[split] = stages.inversion_quality(reconstruct, oracles, images, names)
        if split == "seen":
            labels = np.asarray([stats.class_names.index(c) for c in names])
            dict_quality = stages.dictionary_quality(gen.dictionary.A, gen.dictionary.edited_layers, encode(images),
                                                     labels, stats.embeddings)
        if split == "unseen":
            pick = images[::n][:16]
            recon = stages._padded_map(reconstruct, pick, 32)
            save_png(os.path.join(out, "reconstructions.png"),
                     make_grid(to_uint8(np.concatenate([pick, recon])), ncols=len(pick)))
    return {"generator": g_quality, "inversion": inv, "dictionary": dict_quality}


_SORT_JS = """<script>
(function () {
  var heads = document.querySelectorAll('table.sortable thead th');
  for (var n = 0; n < heads.length; n++) {
    (function (th) {
      th.style.cursor = 'pointer';
      th.addEventListener('click', function () {
        var table = th.parentNode;
        while (table.tagName !== 'TABLE') { table = table.parentNode; }
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows), i = th.cellIndex;
        var asc = th.getAttribute('data-dir') !== 'asc';
        th.setAttribute('data-dir', asc ? 'asc' : 'desc');
        function key(r) {
          var v = r.cells[i].getAttribute('data-v');
          if (v === null) { return r.cells[i].textContent; }
          return isNaN(parseFloat(v)) ? v : parseFloat(v);
        }
        rows.sort(function (a, b) { var x = key(a), y = key(b); return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1); });
        for (var j = 0; j < rows.length; j++) { body.appendChild(rows[j]); }
      });
    })(heads[n]);
  }
})();
</script>"""


def _write_html(out, summary, rows):
    """``report.html``: a one-line title, the headline table, the per-class table, each
    stage's measures, the provenance, then the pictures."""
    o = summary["oracles"]
    p = summary.get("provenance", {})
    lines = ["<!doctype html><html><head><meta charset='utf-8'><title>sage-jax demo</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
             "table{border-collapse:collapse}td,th{padding:3px 10px;text-align:right}"
             "th{background:#eee}tbody tr:nth-child(even){background:#f7f7f7}"
             "td:first-child,th:first-child{text-align:left}small{color:#555}.note{color:#333;font-size:90%}"
             "#provenance-table td,#stages-table td:nth-child(2){text-align:left}"
             "img{image-rendering:pixelated}img.thumb{width:32px;height:32px;vertical-align:middle}td.thumb{text-align:center}"
             ".grid img{width:100%}</style></head><body>",
             "<h1>sage-jax demo: few-shot generation of unseen classes</h1>",
             f"<p>Model {html.escape(os.path.basename(os.path.normpath(p.get('model', ''))) or 'model')} "
             f"generates {len(summary['classes'])} synthetic classes it never saw, from 1 and 3 real shots, with "
             "AGE and SAGE, measured by oracles trained on real images only.</p>"]
    lines += _headline_html(summary)
    lines += _per_class_html(summary, rows)
    st = summary.get("stages")
    if st:
        g, inv = st["generator"], st["inversion"]
        lines += ["<h2 id='stages'>Each stage on its own</h2><table id='stages-table'>",
                  "<tr><th>stage</th><th>measure</th><th>value</th><th>real images</th></tr>",
                  f"<tr><td>generator</td><td>random samples the oracle calls one class (p &ge; 0.9)</td>"
                  f"<td>{_iv_html(g, 'confident_share')}</td><td>about 0.97</td></tr>",
                  f"<tr><td>generator</td><td>seen classes hit by such samples</td>"
                  f"<td>{g['seen_classes_hit']} / {g['seen_classes']}</td><td>{g['seen_classes']}</td></tr>",
                  f"<tr><td>generator</td><td>FID on the oracle's features (vs real seen images)</td>"
                  f"<td>{_iv_html(g, 'oracle_fid', 1)}</td><td>0</td></tr>"]
        for split in ("seen", "unseen"):
            v = inv[split]
            lines.append(f"<tr><td>inversion, {split} classes</td><td>retention of reconstructions / MSE</td>"
                         f"<td>{_iv_html(v, 'retention')} / {v['mse']:.4f}</td>"
                         f"<td>{v['input_retention']:.3f} / 0</td></tr>")
        dq = st.get("dictionary")
        if dq:
            lines.append(f"<tr><td>dictionary</td><td>within-class variation of seen codes in span(A) "
                         f"(best {dq['pca_bound']:.2f}, random {dq['random_share']:.2f})</td>"
                         f"<td>{dq['captured_share']:.3f}</td><td></td></tr>")
        lines.append("</table>")
    lines.append(f"<p class='note'>Oracles on held-out real images: classifier accuracy "
                 f"{o.get('classifier_heldout_accuracy', 0):.3f}, factor regressor mean absolute error "
                 f"{o.get('regressor_heldout_mae', 0):.3f} (factors scaled to about [-1, 1]).</p>")
    if p:
        lines += _provenance_html(p)
    lines += ["<h2 id='pictures'>Pictures</h2>",
              "<h3>Every unseen class</h3><p>Its shots, then each mode's images from them:</p>"
              "<img src='classes.png' style='width:100%'>"]
    if st:
        lines += ["<h3>Random samples of the generator</h3><img src='samples.png' style='width:100%'>",
                  "<h3>Held-out real images of unseen classes (top) and their reconstructions (bottom)</h3>"
                  "<img src='reconstructions.png' style='width:100%'>"]
    lines.append("<h3>Real vs generated latent codes</h3><img src='pca.png' style='max-width:100%'>")
    lines.append("<h3>Each class's images</h3>")
    for r in rows:
        lines.append(f"<h4>{html.escape(r['name'])}</h4><p>shots: <img src='{r['shots']}' height='64'></p><table><tr>")
        for key in r["grids"]:
            lines.append(f"<th>{html.escape(key.replace('-', ', ').upper())}-shot</th>")
        lines.append("</tr><tr>")
        for key, src in r["grids"].items():
            lines.append(f"<td class='grid'><img src='{src}'></td>")
        lines.append("</tr></table>")
    lines.append(_SORT_JS)
    lines.append("</body></html>")
    with open(os.path.join(out, "report.html"), "w") as f:
        f.write("\n".join(lines))


SWEEP_MODES = ("age", "sage-q", "sage-i", "sage")
SWEEP_ALPHAS = (0.5, 1.0, 1.5, 2.0, 3.0)


def run_alpha_sweep(out: str, model: str = ASSET_DIR, alphas=SWEEP_ALPHAS, modes=SWEEP_MODES, shots=SHOTS,
                    n: int = 16, n_real: int = 32, seed: int = 0, quiet: bool = False) -> dict:
    """Retention and diversity of every mode over an ``alphas`` sweep (the edit strength
    trades one for the other, so methods compare on the whole curve), for each
    shot count, on every unseen synthetic class: ``sweep.json``, ``sweep.md`` (a table) and
    ``sweep.png`` (retention vs diversity, a line per mode, a panel per shot count).

    Every mode and alpha edits from the same shots with the same key, so the curves differ
    only by the method."""
    from sage_jax.data.synthetic import make_classes, sample_class
    from sage_jax.generation import SageGenerator
    from sage_jax.plots import plot_sweep

    t0 = time.perf_counter()
    psp, dictionary, stats, oracles, config = load_bundle(model)
    spec = _spec(config)
    unseen = [c for c in make_classes(spec) if not c.seen]
    gen = SageGenerator(psp, dictionary, stats)
    S, l = stats.num_classes, dictionary.a_length
    key = jax.random.PRNGKey(seed)
    from sage_jax.metrics.oracles import GroundTruthSets

    gt = GroundTruthSets(oracles)
    for ci, cls in enumerate(tqdm(unseen, desc="alpha sweep: unseen classes", unit="class", disable=quiet)):
        oracle_index = oracles.class_names.index(cls.name)
        draw = sample_class(spec, cls.index, max(shots) + n_real, seed * 1000 + cls.index)
        shots_img, real = draw["images"][:max(shots)], draw["images"][max(shots):]
        mask = draw["factor_mask"][max(shots):].all(axis=0)
        gt.add_real(cls.name, real, oracle_index, mask)
        for k in shots:
            raw = gen.encode(shots_img[:k])
            for mode in modes:
                for a in alphas:
                    opts = _options(mode, k, S, l, float(a), config)
                    codes = gen.codes(jax.random.fold_in(key, ci * 10 + k), raw[None], n, opts)[0]
                    imgs = np.concatenate(list(gen.decode(codes)))
                    gt.add(_cell(mode, k, a), cls.name, imgs)
    # paired (same shots, same key): SAGE against AGE at every shot count and alpha
    pairs = [(_cell("sage", k, a), _cell(base, k, a)) for k in shots for a in alphas
             for base in ("age", "sage-q", "sage-i") if "sage" in modes and base in modes]
    scores = gt.summary(jax.random.fold_in(key, 99), pairs=pairs)
    rows = []
    for m in modes:
        for k in shots:
            for a in alphas:
                v = scores["methods"][_cell(m, k, a)]
                rows.append({"mode": m, "shots": k, "alpha": float(a),
                             "retention": v["retention"]["value"], "retention_ci": v["retention"],
                             "diversity": v["diversity"]["value"], "diversity_ci": v["diversity"]})
    result = {"rows": rows, "differences": scores["differences"], "classes": [c.name for c in unseen],
              "images_per_class": n, "model": model, "intervals": scores["bootstrap"],
              "seconds": time.perf_counter() - t0}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "sweep.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(out, "sweep.md"), "w") as f:
        f.write(sweep_table(rows) + "\n" + difference_table(scores["differences"]))
    plot_sweep(rows, os.path.join(out, "sweep.png"))
    if not quiet:
        print(sweep_table(rows))
        print(difference_table(scores["differences"]))
    print(f"wrote {out}/sweep.json, sweep.md, sweep.png ({result['seconds']:.0f} s)")   # also when quiet
    return result


def _cell(mode, k, a) -> str:
    return f"{mode}-{k}shot-alpha{float(a):g}"


def difference_table(differences) -> str:
    """Markdown: each paired difference with its 95% interval, and whether it excludes 0."""
    from sage_jax.metrics.uncertainty import excludes_zero, fmt

    lines = ["| difference (paired) | retention | diversity |", "| --- | --- | --- |"]
    for name, d in differences.items():
        cells = [fmt(d[k]) + (" *" if excludes_zero(d[k]) else "") for k in ("retention", "diversity")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n(95% bootstrap intervals over classes and images; * the interval excludes 0)\n"


def sweep_table(rows) -> str:
    """Markdown: a row per mode and shot count, retention / diversity per alpha (each
    with its 95% interval)."""
    alphas = sorted({r["alpha"] for r in rows})
    lines = ["| mode | shots | " + " | ".join(f"alpha {a:g}" for a in alphas) + " |",
             "| --- | --- | " + " | ".join("---" for _ in alphas) + " |"]
    for k in sorted({r["shots"] for r in rows}):
        for m in dict.fromkeys(r["mode"] for r in rows):
            cells = {r["alpha"]: r for r in rows if r["mode"] == m and r["shots"] == k}
            lines.append(f"| {m.upper()} | {k} | " + " | ".join(_sweep_cell(cells[a]) for a in alphas) + " |")
    return "\n".join(lines) + "\n\n(each cell: category retention / diversity, 95% intervals in brackets)\n"


def _sweep_cell(r) -> str:
    from sage_jax.metrics.uncertainty import fmt

    if "retention_ci" not in r:
        return f"{r['retention']:.2f} / {r['diversity']:.2f}"
    return f"{fmt(r['retention_ci'])} / {fmt(r['diversity_ci'])}"
