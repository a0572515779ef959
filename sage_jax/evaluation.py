"""``sage-jax evaluate``: the evaluation protocol of the SAGE paper (section 4) on image
folders, for any method's output (ours, or images another method made).

Inputs (one folder per class, ``<class>/<image>``, or the ``<class>_<i>.jpg`` layout):

* ``--real``: real images of the unseen classes. FID and KID compare the generated
  images with all of them; NAS fine-tunes on the first ``nas_shots`` (sorted) images
  of each class (S_sample, or the images of ``--shots``) and tests on the rest (S_real).
* ``--generated [LABEL=]DIR``, repeatable: one method's images of those classes. If
  ``DIR/generation.json`` exists (written by ``sage-jax generate``) it gives the
  setting (K-shot), the mode (only ``<mode>_NNNN.png`` are read, not fused variants)
  and the shots each class was generated from, which must lie in S_sample: a shot
  among the test images would leak the test set into NAS, and is refused.
* ``--seen``: real images of the seen classes, to pre-train the NAS classifier and the
  few-shot feature extractor.

Metrics (``--metrics``): ``fid`` (and ``kid``) on Inception-v3 pool3 features, or, on
the synthetic dataset without Inception weights, on the ground-truth oracle's features
(reported as such: not comparable with published FIDs); ``lpips``: the paper's
diversity, mean pairwise LPIPS within each class, averaged over classes; ``nas``: the
Naive Augmentation Score with "Standard" (shots only) in the same run, and SGIA's
balanced sampler and bridging fine-tuning as options; ``fewshot``: nearest-centroid
N-way episodes on features of a cosine classifier trained on the seen classes, with
and without the generated images in the support set; ``gt``: on the synthetic dataset
(``--real`` written by ``sage-jax make-synthetic``, so a ``factors.npz`` is beside the
images) the demo's category retention and diversity measured by the oracles, added to
any ``--metrics`` whenever the data allow it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np

from sage_jax.data.folders import ClassImages, read_class_folder
from sage_jax.errors import EvaluationError
from sage_jax.metrics.oracles import synthetic_ground_truth

ALL_METRICS = ("fid", "kid", "lpips", "nas", "fewshot", "gt")
DEFAULT_METRICS = ("fid", "lpips", "nas", "fewshot")

INCEPTION_HELP = ("pytorch-fid's Inception weights, pt_inception-2015-12-05-6726825d.pth (from the pytorch-fid "
                  "GitHub release 'fid_weights'); pass --inception FILE")
LPIPS_HELP = ("LPIPS weights: --lpips FILE (a state dict of the lpips package's LPIPS(net='vgg')) or --lpips-vgg "
              "vgg16-397923af.pth (torchvision) with --lpips-heads vgg.pth (lpips/weights/v0.1/vgg.pth)")


# ----------------------------------------------------------------------------- inputs
def parse_generated(specs) -> list:
    """``["sage=out/sage", "out/age"]`` -> [(label, dir)], labels unique."""
    out, seen = [], set()
    for s in specs:
        label, _, d = s.rpartition("=") if "=" in s else ("", "", s)
        d = d.rstrip("/")
        label = label or os.path.basename(d) or d
        if label in seen:
            raise EvaluationError(f"two --generated sets are labelled {label!r}: name them LABEL=DIR")
        if not os.path.isdir(d):
            raise EvaluationError(f"--generated {s}: {d} is not a folder")
        seen.add(label)
        out.append((label, d))
    return out


def generation_info(directory: str) -> dict:
    """``generation.json`` of a ``sage-jax generate`` output folder, or {}."""
    path = os.path.join(directory, "generation.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def nas_split(real: ClassImages, n_shots: int, shots: ClassImages | None = None) -> tuple[dict, dict]:
    """(S_sample, S_real) per class as index arrays into ``real``: the images of
    ``shots`` if given (matched by file name; they are then not in ``real``), else the
    first ``n_shots`` sorted files of each class."""
    sample, test = {}, {}
    for name in real.classes:
        n = len(real.files[name])
        if shots is not None:
            sample[name] = None
            test[name] = np.arange(n)
            continue
        if n <= n_shots:
            raise EvaluationError(f"class {name!r} has {n} readable real images: NAS needs more than "
                                  f"{n_shots} ({n_shots} shots plus test images)")
        sample[name], test[name] = np.arange(n_shots), np.arange(n_shots, n)
    return sample, test


def check_no_leak(label: str, info: dict, real: ClassImages, test_index: dict) -> None:
    """Refuse a generated set made from a shot that is among the test images."""
    test_files = {os.path.realpath(real.files[c][i]) for c in test_index for i in test_index[c]}
    for cls, sources in (info.get("classes") or {}).items():
        for src in sources:
            if os.path.realpath(src) in test_files:
                raise EvaluationError(
                    f"--generated {label}: class {cls!r} was generated from {src}, which is a NAS test image "
                    f"(S_real). Generate from S_sample (the first --nas-shots sorted images of each class, or "
                    f"--shots DIR) or leave 'nas' out of --metrics.")


# ----------------------------------------------------------------------------- networks
# ----------------------------------------------------------------------------- metrics
def _pooled(sets: ClassImages, classes) -> np.ndarray:
    return np.concatenate([sets.images[c] for c in classes])


def _feature_fn(network):
    """(N, S, S, 3) uint8 -> (N, F) features in batches."""
    import jax.numpy as jnp

    def fn(u8, batch=64):
        out = []
        for i in range(0, len(u8), batch):
            x = jnp.asarray(u8[i:i + batch], jnp.float32) / 127.5 - 1.0
            out.append(np.asarray(network(x), np.float64))
        return np.concatenate(out)

    return fn


def ground_truth(oracles, masks, real: ClassImages, sets: dict, classes, key, n_boot: int) -> dict:
    """Category retention and relative diversity (the demo's measures) of every set in
    ``sets`` (label -> ClassImages), with 95% intervals, and the paired differences of
    every two sets with as many images per class (:func:`paired_labels`)."""
    from sage_jax.metrics.oracles import GroundTruthSets

    gts = GroundTruthSets(oracles)
    for c in classes:
        gts.add_real(c, real.as_float(c), oracles.class_names.index(c), masks[c])
        for label, g in sets.items():
            gts.add(label, c, g.as_float(c))
    return gts.summary(key, n_boot, pairs=paired_labels(sets, classes))


def paired_labels(sets: dict, classes) -> list:
    """Every two generated sets with the same number of images in every class: compared
    image by image (paired), which is right when both were generated from the same shots
    with the same seed (``generate --seed``; ``scripts/evaluate_synthetic.sh`` does)."""
    labels = list(sets)
    return [(a, b) for i, a in enumerate(labels) for b in labels[i + 1:]
            if all(len(sets[a].images[c]) == len(sets[b].images[c]) for c in classes)]


# ----------------------------------------------------------------------------- tables
def _fmt(v, pct=False, ci=None):
    """A figure, with its 95% interval ``ci`` (``{"lo", "hi"}``) when there is one."""
    if v is None:
        return "-"
    if isinstance(v, dict) and "ci" in v and ci is None:
        ci = v["ci"]
    if isinstance(v, dict) and "mean" in v:
        seeds = f" (± {100 * v['std']:.2f} over seeds)" if pct and "std" in v and "per_seed" in v else ""
        if ci is not None:
            return _fmt(v["mean"], pct, ci) + seeds
        return f"{100 * v['mean']:.2f}% ± {100 * v['std']:.2f}" if pct else f"{v['mean']:.4f} ± {v['std']:.4f}"
    if ci is not None:
        if pct:
            return f"{100 * v:.2f}% [{100 * ci['lo']:.2f}, {100 * ci['hi']:.2f}]"
        d = 4 if abs(v) < 10 else 2
        return f"{v:.{d}f} [{ci['lo']:.{d}f}, {ci['hi']:.{d}f}]"
    return f"{100 * v:.2f}%" if pct else (f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}")


def _differences(results) -> list:
    """The paired differences, each with its 95% interval; * where it excludes 0."""
    from sage_jax.metrics.uncertainty import excludes_zero

    diffs = results.get("differences") or {}
    out = []
    names = {"fid": "FID", "lpips": "LPIPS", "nas": "NAS accuracy", "fewshot": "few-shot accuracy",
             "gt": "ground truth"}
    for metric, group in diffs.items():
        if not group:
            continue
        pct = metric in ("nas", "fewshot")
        if metric == "gt":
            rows = [(f"{k} (retention)", v["retention"]) for k, v in group.items()]
            rows += [(f"{k} (diversity)", v["diversity"]) for k, v in group.items()]
        else:
            rows = list(group.items())
        out += [f"Paired differences: {names.get(metric, metric)} (95% intervals; * the interval excludes 0)", "",
                "| Comparison | Difference |", "| --- | --- |"]
        for k, iv in rows:
            val = iv.get("value", iv.get("mean"))
            star = " *" if excludes_zero(iv) else ""
            out.append(f"| {k} | {_fmt(val, pct, iv)}{star} |")
        out.append("")
    return out


def tables(results: dict) -> str:
    """Markdown tables in the layout of the paper's Tables 1, 2 and 4 (+ few-shot, ground
    truth and the paired differences); every figure with its 95% interval."""
    methods = results["methods"]
    out = []
    name = results.get("dataset", "dataset")
    if any(k in results["metrics"] for k in ("fid", "lpips")):
        fid_note = "" if results.get("fid_network") in (None, "inception") else " (oracle features)"
        proto = next((m.get("lpips_protocol") for m in methods.values() if m.get("lpips_protocol")), None)
        lp_note = f" ({proto} protocol)" if proto and proto != "official" else ""
        out += [f"Table 1 layout: quality and diversity on {name} (95% intervals in brackets)", "",
                f"| Method | Settings | FID{fid_note} (↓) | LPIPS{lp_note} (↑) |", "| --- | --- | --- | --- |"]
        for label, m in methods.items():
            out.append(f"| {label} | {m['setting']} | {_fmt(m.get('fid'), ci=m.get('fid_ci'))} | "
                       f"{_fmt(m.get('lpips'), ci=m.get('lpips_ci'))} |")
        if "kid" in results["metrics"]:
            out += ["", "| Method | KID (↓) |", "| --- | --- |"]
            out += [f"| {label} | {_fmt(m['kid']['mean'], ci=m.get('kid_ci')) if m.get('kid') else '-'} |"
                    for label, m in methods.items()]
        out.append("")
    if "nas" in results["metrics"]:
        std = results["standard"]["nas"]
        out += [f"Table 2 layout: Naive Augmentation Score on {name} (mean over seeds, 95% interval over the "
                "test images)", "", f"| Method | {name} |", "| --- | --- |"]
        for label, m in methods.items():
            for variant, v in m["nas"].items():
                suffix = "" if variant == "augmented" else f" ({variant})"
                out.append(f"| {label}{suffix} | {_fmt(v, pct=True)} |")
        out.append(f"| Standard | {_fmt(std, pct=True)} |")
        out += ["", "Table 4 layout: accuracy, quality and diversity", "",
                "| Method | Accuracy | FID (↓) | LPIPS (↑) |", "| --- | --- | --- | --- |",
                f"| Standard | {_fmt(std, pct=True)} | - | - |"]
        for label, m in methods.items():
            out.append(f"| {label} | {_fmt(m['nas'].get('augmented'), pct=True)} | "
                       f"{_fmt(m.get('fid'), ci=m.get('fid_ci'))} | {_fmt(m.get('lpips'), ci=m.get('lpips_ci'))} |")
        out.append("")
    if "fewshot" in results["metrics"]:
        base = results["standard"]["fewshot"]
        ks = sorted(base, key=int)

        def cell(v):
            return f"{100 * v['mean']:.2f}% [{100 * (v['mean'] - v['ci95']):.2f}, {100 * (v['mean'] + v['ci95']):.2f}]"

        out += [f"Few-shot classification ({results['fewshot_ways']}-way, nearest centroid, 95% intervals over "
                "episodes)", "", "| Support set | " + " | ".join(f"{k}-shot" for k in ks) + " |",
                "| --- | " + " | ".join("---" for _ in ks) + " |",
                "| real shots only | " + " | ".join(cell(base[k]) for k in ks) + " |"]
        for label, m in methods.items():
            f = m["fewshot"]
            out.append(f"| + {label} | " + " | ".join(cell(f[k]) for k in ks) + " |")
        out.append("")
    if "gt" in results["metrics"]:
        rg = results["real_ground_truth"]
        out += ["Ground truth (synthetic data, oracles trained on real images; 95% intervals)", "",
                "| Method | category retention | diversity |", "| --- | --- | --- |",
                f"| real | {_fmt(rg['retention'], ci=rg.get('retention_ci'))} | 1.000 |"]
        for label, m in methods.items():
            g = m["gt"]
            out.append(f"| {label} | {_fmt(g['retention'], ci=g.get('retention_ci'))} | "
                       f"{_fmt(g['diversity'], ci=g.get('diversity_ci'))} |")
        out.append("")
    out += _differences(results)
    return "\n".join(out)


# ----------------------------------------------------------------------------- driver
@dataclasses.dataclass
class EvalOptions:
    """Everything ``sage-jax evaluate`` takes besides the folders."""

    metrics: tuple = DEFAULT_METRICS
    size: int | None = None            # image size to read at (default: the first real image's)
    glob: str | None = None            # generated file pattern (default: from generation.json, else "*")
    setting: str | None = None         # "1-shot" ... (default: from generation.json)
    dataset: str | None = None         # name in the tables (default: the real folder's name)
    inception: str | None = None       # pt_inception-2015-12-05-*.pth
    lpips: str | None = None
    lpips_vgg: str | None = None
    lpips_heads: str | None = None
    lpips_protocol: str = "official"   # the official script's (the paper's); "clean" / "full": metrics.diversity
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    oracles: str | None = None
    cache_dir: str | None = None
    nas_shots: int = 10
    nas_generated: int = 100
    nas_seeds: int = 3
    nas_steps: int | None = None
    sgia_alpha: float | None = None    # SGIA balanced sampler (each slot generated w.p. alpha)
    bridging: bool = False
    classifier: str = "vit"
    flip: bool = False                 # horizontal flips in classifier training (off: they change synthetic classes)
    classifier_size: int = 64
    pretrain_steps: int | None = None
    fewshot_ways: int = 5
    fewshot_shots: tuple = (1, 5)
    fewshot_queries: int = 15
    fewshot_episodes: int = 600
    bootstrap: int = 1000              # replicates of the 95% intervals (retention, diversity, LPIPS, NAS)
    fid_bootstrap: int = 200           # ... of FID and KID (each replicate a matrix square root / 10 KID subsets)
    seed: int = 0
    progress: bool = True


def _default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    return os.path.join(base, "sage-jax", "fid_stats")


def _lpips_model(o: EvalOptions):
    from sage_jax.checkpoints.lpips import load_lpips, load_lpips_from_parts

    if o.lpips:
        return load_lpips(o.lpips)
    return load_lpips_from_parts(o.lpips_vgg, o.lpips_heads)


def check_inputs(o: EvalOptions, real_root: str, generated, seen_root: str | None) -> None:
    """Refuse, before any work, what cannot be computed."""
    unknown = sorted(set(o.metrics) - set(ALL_METRICS))
    if unknown:
        raise EvaluationError(f"unknown metrics {unknown}: choose from {', '.join(ALL_METRICS)}")
    if not o.metrics:
        raise EvaluationError("no metrics asked for")
    if not os.path.isdir(real_root):
        raise EvaluationError(f"--real {real_root} is not a folder")
    if not generated:
        raise EvaluationError("give at least one --generated folder")
    has_gt = synthetic_ground_truth(real_root, o.oracles) is not None
    if ("fid" in o.metrics or "kid" in o.metrics) and not o.inception and not has_gt:
        raise EvaluationError(f"FID/KID need {INCEPTION_HELP} (on the synthetic dataset the oracle's features "
                              f"are used without it)")
    for p in (o.inception, o.lpips, o.lpips_vgg, o.lpips_heads, o.oracles):
        if p and not os.path.exists(p):
            raise EvaluationError(f"{p} does not exist")
    if "lpips" in o.metrics and not (o.lpips or (o.lpips_vgg and o.lpips_heads)):
        raise EvaluationError(f"'lpips' needs {LPIPS_HELP}")
    if ("nas" in o.metrics or "fewshot" in o.metrics) and not seen_root:
        raise EvaluationError("'nas' and 'fewshot' need --seen DIR: real images of the seen classes, to pre-train "
                              "the classifier")
    if seen_root and not os.path.isdir(seen_root):
        raise EvaluationError(f"--seen {seen_root} is not a folder")
    if "gt" in o.metrics and not has_gt:
        raise EvaluationError("'gt' needs the synthetic dataset: --real written by 'sage-jax make-synthetic' "
                              "(with its factors.npz) and oracles that know its classes (--oracles DIR)")
    if o.sgia_alpha is not None and not 0.0 <= o.sgia_alpha <= 1.0:
        raise EvaluationError(f"--sgia-alpha must lie in [0, 1], got {o.sgia_alpha}")
    if o.fewshot_ways < 2 or min(o.fewshot_shots) < 1 or o.fewshot_queries < 1 or o.fewshot_episodes < 1:
        raise EvaluationError("few-shot episodes need at least 2 ways, 1 shot, 1 query and 1 episode")


def _first_image_size(root: str) -> int:
    from sage_jax.data.folders import scan_folder
    from sage_jax.images import ImageError, load_image

    for p in scan_folder(root)[0]:
        try:
            return int(load_image(p).shape[0])
        except ImageError:
            continue
    raise EvaluationError(f"no readable image in {root}")


def run_evaluation(real_root: str, generated_specs, out: str, options: EvalOptions | None = None,
                   seen_root: str | None = None, shots_root: str | None = None) -> dict:
    """Evaluate every ``--generated`` set against ``real_root``; writes
    ``out/metrics.json`` (after every metric, with ``"complete": false`` until the
    last) and ``out/tables.md``, and returns the results.

    Several processes (``sage-jax launch``): every process calls it with the same
    arguments and computes the same results (the same keys; the classifiers of NAS and
    few-shot train on every device of every process, :mod:`sage_jax.train.classifier`),
    and every process returns them; only process 0 writes ``out`` (metrics.json,
    tables.md, samples.png). It starts once every process is here (a barrier: the
    generated folders are complete, ``sage-jax generate`` returns on every process only
    once all its images and its summary are written) and returns once process 0 has
    written the last file."""
    import jax

    from sage_jax import parallel

    o = dataclasses.replace(options or EvalOptions())
    o.metrics = tuple(dict.fromkeys(o.metrics))
    generated = parse_generated(generated_specs)
    check_inputs(o, real_root, generated, seen_root)
    if "gt" not in o.metrics and synthetic_ground_truth(real_root, o.oracles) is not None:
        o.metrics += ("gt",)  # the synthetic dataset: the ground-truth measures come too
    t0 = time.perf_counter()
    size = o.size or _first_image_size(real_root)
    real = read_class_folder(real_root, size, progress=o.progress, what="real images")
    gt = synthetic_ground_truth(real_root, o.oracles)
    sets, infos = {}, {}
    for label, d in generated:
        info = generation_info(d)
        mode = (info.get("options") or {}).get("mode")
        pattern = o.glob or (f"{mode}_[0-9]*.png" if mode else "*")
        g = read_class_folder(d, size, pattern, progress=o.progress, what=f"{label} images")
        missing = sorted(set(g.classes) - set(real.classes))
        if missing:
            raise EvaluationError(f"--generated {label}: classes {missing[:5]} have no real images in {real_root}")
        setting = o.setting or (f"{info['k']}-shot" if "k" in info else "-")
        sets[label], infos[label] = g, dict(info, setting=setting, dir=os.path.abspath(d), pattern=pattern)
    classes = sorted(set.intersection(*(set(g.classes) for g in sets.values())))
    if not classes:
        raise EvaluationError("the generated sets share no class")
    shots = read_class_folder(shots_root, size, classes=classes, what="shots") if shots_root else None
    sample_idx = test_idx = None
    if "nas" in o.metrics:
        sample_idx, test_idx = nas_split(real, o.nas_shots, shots)
        for label, g in sets.items():
            check_no_leak(label, infos[label], real, {c: test_idx[c] for c in classes})
            fewest = min(len(g.images[c]) for c in classes)
            if fewest < o.nas_generated:
                raise EvaluationError(f"--generated {label}: {fewest} images in some class; NAS adds "
                                      f"--nas-generated {o.nas_generated} per class (generate more, or lower it)")
        if shots is not None:
            short = [c for c in classes if c not in shots.images or len(shots.images[c]) < o.nas_shots]
            if short:
                raise EvaluationError(f"--shots has fewer than --nas-shots {o.nas_shots} images for {short[:5]}")

    if "fewshot" in o.metrics:
        need = max(o.fewshot_shots) + o.fewshot_queries
        short = [c for c in classes if len(real.images[c]) < need]
        if len(classes) < o.fewshot_ways or short:
            raise EvaluationError(f"few-shot episodes ({o.fewshot_ways}-way, up to {max(o.fewshot_shots)} shots, "
                                  f"{o.fewshot_queries} queries) need {o.fewshot_ways} classes with {need} real "
                                  f"images each; {len(classes)} classes, too few images in {short[:5]}")

    parallel.barrier("evaluate: start")   # every process past the checks (the first collective connects them)
    key = jax.random.PRNGKey(o.seed)
    results = {"dataset": o.dataset or os.path.basename(os.path.abspath(real_root)), "metrics": list(o.metrics),
               "classes": classes, "image_size": size, "real": os.path.abspath(real_root),
               "real_images": int(sum(len(real.images[c]) for c in classes)),
               "images_read": {"real": real.report.as_dict(), **{k: v.report.as_dict() for k, v in sets.items()}},
               "methods": {label: {"setting": infos[label]["setting"], "dir": infos[label]["dir"],
                                   "pattern": infos[label]["pattern"],
                                   "images": int(sum(len(sets[label].images[c]) for c in classes))}
                           for label in sets},
               "standard": {}, "complete": False}
    methods = results["methods"]
    writes = parallel.is_main()   # process 0 writes the summary; the others compute the same and keep quiet
    if writes:
        os.makedirs(out, exist_ok=True)

    def save():  # after every stage: a failure later loses nothing computed so far
        results["seconds"] = time.perf_counter() - t0
        if not writes:
            return
        tmp = os.path.join(out, ".metrics.json.tmp")
        with open(tmp, "w") as f:
            json.dump(results, f, indent=1)
        os.replace(tmp, os.path.join(out, "metrics.json"))

    if "fid" in o.metrics or "kid" in o.metrics:
        _fid_kid(o, real, sets, classes, gt, results, jax.random.fold_in(key, 1))
        save()
    if "lpips" in o.metrics:
        from sage_jax.metrics.diversity import lpips_diversity

        from sage_jax.metrics.diversity import lpips_difference

        lp = _lpips_model(o)
        lk = jax.random.fold_in(key, 5)
        mats = {}
        for label, g in sets.items():
            mats[label] = {}
            d = lpips_diversity(lp, {c: g.images[c] for c in classes}, protocol=o.lpips_protocol,
                                progress=o.progress, key=lk, n_boot=o.bootstrap, matrices=mats[label])
            methods[label].update(lpips=d["lpips"], lpips_ci=d["lpips_ci"], lpips_per_class=d["per_class"],
                                  lpips_protocol=d["protocol"])
        if o.lpips_protocol != "full":
            results.setdefault("differences", {})["lpips"] = {
                f"{a} - {b}": lpips_difference(mats[a], mats[b], lk, o.bootstrap)
                for a, b in paired_labels(sets, classes)}
        save()
    if "nas" in o.metrics or "fewshot" in o.metrics:
        seen = read_class_folder(seen_root, min(o.classifier_size, size), progress=o.progress,
                                 what="seen images")
        results["images_read"]["seen"] = seen.report.as_dict()
        if "nas" in o.metrics:
            _nas(o, seen, real, shots, sets, classes, sample_idx, test_idx, results, jax.random.fold_in(key, 2))
            save()
        if "fewshot" in o.metrics:
            _fewshot(o, seen, real, sets, classes, results, jax.random.fold_in(key, 3))
            save()
    if "gt" in o.metrics:
        oracles, masks = gt
        s = ground_truth(oracles, masks, real, sets, classes, jax.random.fold_in(key, 4), o.bootstrap)
        for label in sets:
            v = s["methods"][label]
            methods[label]["gt"] = {"retention": v["retention"]["value"], "diversity": v["diversity"]["value"],
                                    "retention_ci": v["retention"], "diversity_ci": v["diversity"],
                                    "per_class": v["per_class"]}
        results["real_ground_truth"] = {"retention": s["real"]["retention"]["value"],
                                        "retention_ci": s["real"]["retention"], "oracles": oracles.scores}
        results.setdefault("differences", {})["gt"] = s["differences"]

    results["complete"] = True
    save()
    if writes:
        with open(os.path.join(out, "tables.md"), "w") as f:
            f.write(tables(results) + "\n")
        _overview(real, sets, classes, os.path.join(out, "samples.png"))
    parallel.barrier("evaluate: written")
    return results


def _fid_kid(o, real, sets, classes, gt, results, key):
    import jax

    from sage_jax.metrics import fid as fidm

    if o.inception:
        from sage_jax.checkpoints.inception import load_inception

        net = load_inception(o.inception)
        feature_fn, fingerprint = net.features, getattr(net, "fingerprint", None) or os.path.abspath(o.inception)
        results["fid_network"] = "inception"
    else:
        oracles = gt[0]
        feature_fn = oracles.features
        fingerprint = "oracle:" + oracles.fingerprint()
        results["fid_network"] = "oracle"

    from sage_jax.metrics import uncertainty as u

    def features(u8, desc):
        return fidm.extract_features(lambda x: feature_fn(fidm.network_input(x)), u8,
                                     batch_size=50, progress=o.progress, desc=desc)

    def per_class(feats, src):
        ends = np.cumsum([len(src.images[c]) for c in classes])[:-1]
        return np.split(feats, ends)

    real_u8 = _pooled(real, classes)
    real_files = [p for c in classes for p in real.files[c]]
    # the real features themselves are needed for the intervals (the cache keeps only statistics)
    real_feats = features(real_u8, "real features") if (o.fid_bootstrap or "kid" in o.metrics) else None
    stats = fidm.cached_statistics(o.cache_dir or _default_cache_dir(),
                                   {"network": str(fingerprint), "files": real_files, "size": real_u8.shape[1],
                                    "name": results["dataset"]},
                                   lambda: real_feats if real_feats is not None else features(real_u8, "real features"))
    real_pc = per_class(real_feats, real) if real_feats is not None else None
    gen_pc = {}
    fk = jax.random.fold_in(key, 6)
    for i, (label, g) in enumerate(sets.items()):
        gf = features(_pooled(g, classes), f"{label} features")
        gen_pc[label] = per_class(gf, g)
        m = results["methods"][label]
        if "fid" in o.metrics:
            m["fid"] = fidm.fid(stats, gf)["fid"]
            if o.fid_bootstrap:
                m["fid_ci"] = dict(u.fid_interval(gen_pc[label], real_pc, fk, o.fid_bootstrap), value=m["fid"])
        if "kid" in o.metrics:
            k = fidm.kid(real_feats, gf, key=jax.random.fold_in(key, i), num_subsets=o.kid_subsets,
                         subset_size=o.kid_subset_size)
            m["kid"] = {"mean": k["kid"], "std": k["kid_std"]}
            if o.fid_bootstrap:
                m["kid_ci"] = dict(u.kid_interval(gen_pc[label], real_pc, fk, o.fid_bootstrap,
                                                  subset_size=o.kid_subset_size), value=k["kid"])
    if "fid" in o.metrics and o.fid_bootstrap:
        results.setdefault("differences", {})["fid"] = {
            f"{a} - {b}": u.fid_difference(gen_pc[a], gen_pc[b], real_pc, fk, o.fid_bootstrap)
            for a, b in paired_labels(sets, classes)}


def _overview(real, sets, classes, path, n_classes=6, per_row=8):
    """A picture: for a few classes, a row of real images and a row per method."""
    from sage_jax.images import make_grid, save_png

    rows = []
    for c in classes[:n_classes]:
        for imgs in [real.images[c]] + [g.images[c] for g in sets.values()]:
            row = imgs[:per_row]
            if len(row) < per_row:
                row = np.concatenate([row, np.full((per_row - len(row),) + row.shape[1:], 255, np.uint8)])
            rows.append(row)
    save_png(path, make_grid(np.concatenate(rows), ncols=per_row))


# ----------------------------------------------------------------------------- classifiers
def _at(u8: np.ndarray, size: int) -> np.ndarray:
    """uint8 images -> float32 [-1, 1] at ``size`` (bilinear, antialiased)."""
    import jax

    x = u8.astype(np.float32) / 127.5 - 1.0
    if x.shape[1] != size:
        x = np.asarray(jax.image.resize(x, (x.shape[0], size, size, 3), "linear"))
    return x


def classifier_model(kind: str, num_classes: int, size: int, head: str = "linear"):
    """The NAS / few-shot classifier: the ViT of ``default_nas_config().model`` (the
    paper's choice) at ``size`` px with 8 x 8 patches' worth of tokens, or a ResNet."""
    from sage_jax.metrics.nas import default_nas_config
    from sage_jax.train.classifier import make_classifier

    if kind == "vit":
        cfg = dict(default_nas_config().model, image_size=size, patch=max(size // 8, 1), head_type=head)
    elif kind == "resnet":
        cfg = {"kind": "resnet", "head_type": head}
    else:
        raise EvaluationError(f"unknown classifier {kind!r} (vit, resnet)")
    return make_classifier(cfg, num_classes)


def pretrain_on_seen(o: EvalOptions, seen: ClassImages, key, head: str = "linear"):
    """A classifier of the seen classes, trained from scratch in this run."""
    from sage_jax.train.classifier import pretrain

    size = seen.images[seen.classes[0]].shape[1]
    x = np.concatenate([_at(seen.images[c], size) for c in seen.classes])
    y = np.concatenate([np.full(len(seen.images[c]), i, np.int32) for i, c in enumerate(seen.classes)])
    model = classifier_model(o.classifier, len(seen.classes), size, head)
    return pretrain(model, x, y, key=key, steps=o.pretrain_steps or 2000, flip=o.flip, progress=o.progress)


def _nas(o, seen, real, shots, sets, classes, sample_idx, test_idx, results, key):
    import jax

    from sage_jax.metrics.nas import default_nas_config, naive_augmentation_score

    size = seen.images[seen.classes[0]].shape[1]
    clf = pretrain_on_seen(o, seen, jax.random.fold_in(key, 0))
    results["nas_pretrain"] = {"classifier": o.classifier, "size": size, "seen_classes": len(seen.classes),
                               "final_loss": float(clf.losses[-1]) if len(clf.losses) else None}
    cfg = default_nas_config()
    cfg.n_shots, cfg.n_generated = o.nas_shots, o.nas_generated
    if o.nas_steps:
        cfg.finetune.steps = o.nas_steps
    cfg.finetune.flip = o.flip
    if o.sgia_alpha is not None:
        cfg.sgia.alpha = o.sgia_alpha
    extra = (("sgia_balanced",) if o.sgia_alpha is not None else ()) + (("sgia_bridging",) if o.bridging else ())
    shot_x = {c: _at(shots.images[c] if shots is not None else real.images[c][sample_idx[c]], size)
              for c in classes}
    test_x = {c: _at(real.images[c][test_idx[c]], size) for c in classes}
    seeds = tuple(range(o.seed, o.seed + o.nas_seeds))
    correct = {}   # (label, variant) -> (seeds, test images): the intervals and paired differences
    labels = None
    for i, (label, g) in enumerate(sets.items()):
        cfg.variants = (("standard",) if i == 0 else ()) + ("augmented",) + extra
        r = naive_augmentation_score(clf, shot_x, {c: _at(g.images[c], size) for c in classes}, test_x,
                                     config=cfg, seeds=seeds, progress=o.progress)
        labels = r.pop("test_labels")
        for v in cfg.variants:
            correct[("Standard" if v == "standard" else label, v)] = r[v].pop("correct")
        if i == 0:
            results["standard"]["nas"] = r.pop("standard")
            results["nas_protocol"] = r["protocol"]
        results["methods"][label]["nas"] = {v: r[v] for v in cfg.variants if v != "standard"}
    _nas_intervals(o, results, correct, labels, jax.random.fold_in(key, 7))


def _nas_intervals(o, results, correct, labels, key):
    """95% intervals of every NAS accuracy (the mean over seeds of each test image's
    correctness, bootstrapped over the test classes and their images) and the paired
    differences on the same test images: each method against Standard, and every two
    methods."""
    from sage_jax.metrics import uncertainty as u

    cls = np.unique(labels)
    rows = [np.flatnonzero(labels == c) for c in cls]
    boot = u.ClassBootstrap({"test": [len(r) for r in rows]}, key, o.bootstrap)

    def stat(c_seeds):
        per_image = c_seeds.mean(axis=0)  # over seeds
        return u.class_mean(lambda c, idx: float(per_image[rows[c]][idx["test"]].mean()))

    stats = {k: stat(v) for k, v in correct.items()}
    results["standard"]["nas"]["ci"] = boot.estimate(stats[("Standard", "standard")])
    for (label, v), s in stats.items():
        if label != "Standard":
            results["methods"][label]["nas"][v]["ci"] = boot.estimate(s)
    diffs = {}
    for (label, v), s in stats.items():
        if label != "Standard":
            diffs[f"{label} ({v}) - Standard"] = boot.difference(s, stats[("Standard", "standard")])
    keys = [k for k in stats if k[0] != "Standard"]
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            if a[1] == b[1]:
                diffs[f"{a[0]} - {b[0]} ({a[1]})"] = boot.difference(stats[a], stats[b])
    results.setdefault("differences", {})["nas"] = diffs


def _fewshot(o, seen, real, sets, classes, results, key):
    import jax

    from sage_jax.metrics.fewshot import fewshot_classification

    size = seen.images[seen.classes[0]].shape[1]
    extractor = pretrain_on_seen(o, seen, jax.random.fold_in(key, 0), head="cosine")
    real_x = {c: _at(real.images[c], size) for c in classes}
    results["fewshot_ways"] = o.fewshot_ways
    results["fewshot_protocol"] = {"ways": o.fewshot_ways, "shots": list(o.fewshot_shots),
                                   "queries": o.fewshot_queries, "episodes": o.fewshot_episodes,
                                   "extractor": f"{o.classifier} with a cosine head, trained on the seen classes"}
    episodes = {}
    for i, (label, g) in enumerate(sets.items()):
        r = fewshot_classification(extractor.features, real_x,
                                   generated_by_class={c: _at(g.images[c], size) for c in classes},
                                   n_way=o.fewshot_ways, k_shots=o.fewshot_shots, n_query=o.fewshot_queries,
                                   n_episodes=o.fewshot_episodes, key=jax.random.fold_in(key, 1),
                                   return_episodes=True)
        # every set runs the same episodes (same key): differences between sets are paired by episode
        episodes[label] = {k: v.pop("episodes")["with_generated"] for k, v in r.items()}
        if i == 0:
            results["standard"]["fewshot"] = {str(k): v["real"] for k, v in r.items()}
        results["methods"][label]["fewshot"] = {str(k): dict(v["with_generated"], difference=v["difference"])
                                                for k, v in r.items()}
    from sage_jax.metrics.fewshot import episode_summary

    labels = list(sets)
    results.setdefault("differences", {})["fewshot"] = {
        f"{a} - {b} ({k}-shot)": episode_summary(episodes[a][k] - episodes[b][k])
        for i, a in enumerate(labels) for b in labels[i + 1:] for k in episodes[a]}
