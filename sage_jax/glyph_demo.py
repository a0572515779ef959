"""Few-shot generation of unseen letters by a model trained on font glyphs
(``configs/glyphs.py``): the glyph benchmark (``sage-jax glyph-benchmark``) and the glyph
model's demo (``sage-jax demo --model glyphs``).

For every unseen letter (Greek and Cyrillic letters not drawn like a Latin one) the shots
are images of that letter from typefaces of the **held-out families** (never seen by the
generator, the encoder, the dictionary or the oracles), drawn with a JAX key; the letter's
other held-out faces are its real images. Each method (AGE, SAGE-Q, SAGE-I, SAGE) edits the
shots' codes at each edit strength alpha and shot count, all from the same shots with the
same key (paired), and the glyph oracles (:mod:`sage_jax.metrics.glyph_oracles`) judge
the images:

* **retention**: the character classifier's accuracy on the generated images of the
  letter, beside its accuracy on the real held-out images of the same letter (some letters
  are ambiguous in many faces);
* **diversity**: the spread of the predicted attributes (weight, width, italic,
  monospace, serif) of the generated images over that of the real images of the letter,
  overall and per attribute (1.0: varies the attribute as much as real typefaces do).

Every figure has a 95% interval (bootstrap over letters and images; paired differences on
the same bootstrap draws). The real images come from the dataset (``data``: a
``make-glyphs`` folder) or, without it, from the model directory's
``heldout_unseen.npz`` (written by ``sage-jax train`` for glyph models: up to 40 held-out
faces of each unseen letter), so the demo runs without the fonts.
"""

from __future__ import annotations

import html
import json
import os
import time

import jax
import numpy as np
from tqdm import tqdm

HELDOUT_FILE = "heldout_unseen.npz"
BUNDLED_FACES = 40          # held-out faces per unseen letter kept in a model directory
DEMO_MODES = ("age", "sage")
DEMO_REAL = 24              # real images per letter in the demo (the benchmark: every held-out face)
DEMO_BOOT = 500             # bootstrap replicates in the demo (the benchmark: 1000)
PICTURE_LETTERS = 8         # letters in letters.png
TARGET = {"shots": 3, "retention": 0.7, "diversity": 0.4}   # SAGE's target (docs/glyphs.md)


# ----------------------------------------------------------------------------- inputs
def bundle_heldout_letters(data_cfg, model_dir: str, n: int = BUNDLED_FACES, key=None) -> str:
    """Write ``model_dir/heldout_unseen.npz``: images of ``n`` held-out faces (drawn with
    ``key``) of every unseen letter of the config's glyph dataset, uint8, with each
    image's class and face."""
    from sage_jax.data.loader import heldout_dataset

    ds = heldout_dataset(data_cfg, "unseen")
    key = jax.random.PRNGKey(0) if key is None else key
    rows = []
    for c in range(ds.num_classes):
        r = np.flatnonzero(ds.labels_array == c)
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, c), len(r)))
        rows.append(np.sort(r[perm[:n]]))
    rows = np.concatenate(rows)
    path = os.path.join(model_dir, HELDOUT_FILE)
    np.savez_compressed(path, gray=ds.gray[rows], label=ds.labels_array[rows],
                        class_names=np.asarray(ds.class_names),
                        chars=np.asarray([c["char"] for c in ds.classes]),
                        face=np.asarray([ds.faces[f]["face"] for f in ds.face_index[rows]]))
    return path


def load_letters(model: str, data: str | None = None) -> dict[str, np.ndarray]:
    """{unseen class name: held-out real images (N, S, S, 3) in [-1, 1]}: every held-out
    face of the ``data`` folder, or the model directory's bundled ones."""
    from sage_jax.data.glyph_data import load_glyph_folder, to_rgb

    if data:
        ds = load_glyph_folder(data, "heldout", "unseen")
        gray, label, names = ds.gray, ds.labels_array, ds.class_names
    else:
        path = os.path.join(model, HELDOUT_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{model} has no {HELDOUT_FILE} (a glyph model from 'sage-jax train "
                                    f"--config glyphs' has): pass --data DIR, the glyph dataset it was trained on")
        z = np.load(path)
        gray, label, names = z["gray"], z["label"], [str(x) for x in z["class_names"]]
    return {name: to_rgb(gray[label == c]) for c, name in enumerate(names) if np.any(label == c)}


def load_glyph_bundle(model: str):
    """(psp, dictionary, class statistics, glyph oracles, config dict) of a glyph model
    directory."""
    from sage_jax import checkpoints
    from sage_jax.metrics.glyph_oracles import GlyphOracles
    from sage_jax.statistics import ClassStatistics

    with open(os.path.join(model, "config.json")) as f:
        config = json.load(f)
    if config.get("data", {}).get("name") != "glyphs":
        raise ValueError(f"{model} was not trained on the glyphs (data.name={config.get('data', {}).get('name')!r})")
    psp = checkpoints.load_psp(os.path.join(model, "psp"))
    dictionary = checkpoints.load_dictionary(os.path.join(model, "dictionary"))
    stats = ClassStatistics.load(os.path.join(model, "class_stats.npz"))
    oracles = GlyphOracles.load(os.path.join(model, "oracles"))
    return psp, dictionary, stats, oracles, config


def is_glyph_model(model: str) -> bool:
    try:
        with open(os.path.join(model, "config.json")) as f:
            return json.load(f).get("data", {}).get("name") == "glyphs"
    except (OSError, ValueError):
        return False


# ----------------------------------------------------------------------------- benchmark
def run_glyph_benchmark(out: str, model: str, data: str | None = None, modes=None, alphas=None, shots=(1, 3),
                        n: int = 16, seed: int = 0, letters=None, quiet: bool = False, title: str = "benchmark",
                        n_boot: int | None = None, max_real: int | None = None) -> dict:
    """Every mode at every alpha and shot count on every unseen letter (``letters``: a
    subset, names or characters): ``results.json``, ``results.md`` (the tables),
    ``sweep.png`` (retention against diversity), ``letters.png`` (shots and each mode's
    images), ``report.html``. ``max_real``: at most that many real images of each letter
    (default: every held-out face but the shots); ``n_boot``: bootstrap replicates
    (default 1000). Returns the results."""
    from sage_jax.demo import SWEEP_ALPHAS, SWEEP_MODES, _cell, _options, difference_table, sweep_table
    from sage_jax.generation import SageGenerator
    from sage_jax.images import make_grid, save_png, to_uint8
    from sage_jax.inversion import CachedInverter
    from sage_jax.metrics.glyph_oracles import GlyphJudge, class_name_of
    from sage_jax.metrics.stages import reconstruction_scores
    from sage_jax.plots import plot_classes, plot_sweep

    t0 = time.perf_counter()
    modes = tuple(modes or SWEEP_MODES)
    alphas = tuple(float(a) for a in (alphas or SWEEP_ALPHAS))
    shots = tuple(int(k) for k in shots)
    psp, dictionary, stats, oracles, config = load_glyph_bundle(model)
    real_all = load_letters(model, data)
    if letters:
        names = [class_name_of(oracles, x) for x in letters]
        missing = [x for x in names if x not in real_all]
        if missing:
            raise ValueError(f"no held-out images of {missing}")
        real_all = {x: real_all[x] for x in names}
    K = max(shots)
    short = [x for x, v in real_all.items() if len(v) < K + 2]
    if short:
        raise ValueError(f"letters with fewer than {K + 2} held-out faces: {short}")
    gen = SageGenerator(psp, dictionary, stats)
    S, l = stats.num_classes, dictionary.a_length
    key = jax.random.PRNGKey(seed)
    os.makedirs(out, exist_ok=True)

    # shots: K held-out faces of each letter, drawn with the key; the letter's other faces are its real images
    shot_imgs, real = {}, {}
    for ci, (name, imgs) in enumerate(real_all.items()):
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, 1000 + ci), len(imgs)))
        shot_imgs[name], real[name] = imgs[perm[:K]], imgs[perm[K:K + max_real] if max_real else perm[K:]]
    encode = CachedInverter(gen.inverter)
    all_shots = np.concatenate(list(shot_imgs.values()))
    shot_codes = np.asarray(encode(all_shots))
    recon = np.concatenate(list(gen.decode(shot_codes)))
    shot_names = [x for x in shot_imgs for _ in range(K)]
    inversion = {"shots": reconstruction_scores(oracles, recon, all_shots, shot_names),
                 "input_retention": reconstruction_scores(oracles, all_shots, all_shots, shot_names)["retention"]}

    judge = GlyphJudge(oracles, real)
    overview = {}
    names = list(real)
    raw = shot_codes.reshape(len(names), K, *shot_codes.shape[1:])   # (letters, K, L, D)
    cells = [(k, mode, a) for k in shots for mode in modes for a in alphas]
    # every letter of a cell edited in one call and decoded in full chunks; every mode and
    # alpha from the same key at a shot count (paired)
    for k, mode, a in tqdm(cells, desc=f"glyph {title}: methods x alphas x shots", unit="cell", disable=quiet):
        opts = _options(mode, k, S, l, a, config)
        codes = gen.codes(jax.random.fold_in(key, k), raw[:, :k], n, opts)          # (letters, n, L, D)
        imgs = np.concatenate(list(gen.decode(np.asarray(codes).reshape(-1, *codes.shape[2:]))))
        judge.add_many(_cell(mode, k, a), {name: imgs[ci * n:(ci + 1) * n] for ci, name in enumerate(names)})
        for ci, name in enumerate(names):
            mine = imgs[ci * n:(ci + 1) * n]
            if k == K and a == 1.0 and ci < PICTURE_LETTERS:
                overview.setdefault(oracles.chars[oracles.class_names.index(name)],
                                    {"shots": to_uint8(shot_imgs[name])})[mode] = to_uint8(mine[:8])
    pairs = [(_cell("sage", k, a), _cell(base, k, a)) for k in shots for a in alphas
             for base in ("age", "sage-q", "sage-i") if "sage" in modes and base in modes]
    scores = judge.summary(jax.random.fold_in(key, 99), n_boot=n_boot, pairs=pairs)

    rows = []
    for m in modes:
        for k in shots:
            for a in alphas:
                c = _cell(m, k, a)
                v = scores["methods"][c]
                rows.append({"mode": m, "shots": k, "alpha": a,
                             "retention": v["retention"]["value"], "retention_ci": v["retention"],
                             "diversity": v["diversity"]["value"], "diversity_ci": v["diversity"],
                             "attributes": {att: r["diversity"] for att, r in scores["attributes"][c].items()}})
    real_ret = scores["real"]["retention"]
    target = _target(rows, real_ret)
    per_letter = {x: {"char": scores["letters"][x], "real_retention": scores["real"]["per_class"][x]["retention"],
                      **{c: {"retention": v["per_class"][x]["retention"], "diversity": v["per_class"][x]["diversity"]}
                         for c, v in scores["methods"].items()}}
                  for x in real}
    result = {"rows": rows, "differences": scores["differences"], "real_retention": real_ret,
              "target": target, "inversion": inversion, "per_letter": per_letter,
              "letters": [scores["letters"][x] for x in real], "images_per_letter": n,
              "real_images_per_letter": {x: int(len(v)) for x, v in real.items()},
              "oracles": oracles.scores.get("accuracy", {}), "model": os.path.abspath(model),
              "data": os.path.abspath(data) if data else f"{model}/{HELDOUT_FILE}", "seed": seed,
              "intervals": scores["bootstrap"], "seconds": 0.0}

    plot_sweep(rows, os.path.join(out, "sweep.png"))
    plot_classes(overview, os.path.join(out, "letters.png"), k=K, modes=modes)
    save_png(os.path.join(out, "shot_reconstructions.png"),
             make_grid(to_uint8(np.concatenate([all_shots[::K][:16], recon[::K][:16]])), ncols=min(16, len(real))))
    md = results_markdown(result, sweep_table, difference_table)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(md)
    result["seconds"] = time.perf_counter() - t0
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(result, f, indent=1)
    _write_html(out, result, md, title)
    if not quiet:
        print(md)
    print(f"report: {os.path.join(out, 'report.html')} ({result['seconds']:.0f} s)")   # also when quiet
    return result


def _target(rows, real_ret) -> dict:
    """SAGE at ``TARGET['shots']`` shots: the alpha with the highest retention among those
    with diversity >= the target's; reached when retention >= 0.7, or within 0.05 of the
    real images' own retention."""
    cand = [r for r in rows if r["mode"] == "sage" and r["shots"] == TARGET["shots"]]
    ok = [r for r in cand if r["diversity"] >= TARGET["diversity"]]
    if not cand:
        return {"measured": False}
    best = max(ok, key=lambda r: r["retention"]) if ok else max(cand, key=lambda r: r["diversity"])
    need = min(TARGET["retention"], real_ret["value"] - 0.05)
    return {"measured": True, "alpha": best["alpha"], "retention": best["retention_ci"],
            "diversity": best["diversity_ci"], "real_retention": real_ret,
            "reached": bool(ok) and best["retention"] >= need,
            "rule": f"SAGE {TARGET['shots']}-shot retention >= {TARGET['retention']} (or within 0.05 of real "
                    f"images' own) at diversity >= {TARGET['diversity']}"}


def results_markdown(result, sweep_table, difference_table) -> str:
    from sage_jax.metrics.uncertainty import fmt

    rows = result["rows"]
    lines = [f"Unseen letters: {len(result['letters'])} ({''.join(result['letters'])}), shots and real images from "
             f"held-out typefaces; {result['images_per_letter']} images per letter and cell.", "",
             f"Real held-out images' own retention (the oracle's accuracy on them): {fmt(result['real_retention'])}",
             f"Inversion of the shots: retention {fmt(result['inversion']['shots']['retention_ci'])} "
             f"(the shots themselves {result['inversion']['input_retention']:.2f}), "
             f"MSE {result['inversion']['shots']['mse']:.4f}", "", sweep_table(rows), difference_table(result["differences"]),
             "Diversity per attribute (generated spread / real spread, 95% intervals):", "",
             "| mode | shots | alpha | weight | width | italic | monospace | serif |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        a = r["attributes"]
        lines.append(f"| {r['mode'].upper()} | {r['shots']} | {r['alpha']:g} | "
                     + " | ".join(fmt(a[x]) for x in ("weight", "width", "italic", "monospace", "serif")) + " |")
    t = result["target"]
    if t.get("measured"):
        lines += ["", f"Target ({t['rule']}): alpha {t['alpha']:g}, retention {fmt(t['retention'])}, "
                  f"diversity {fmt(t['diversity'])}: {'reached' if t['reached'] else 'not reached'}."]
    return "\n".join(lines) + "\n"


def _write_html(out, result, md, title):
    import re

    def md_table_to_html(block):
        rows = [r.strip().strip("|").split("|") for r in block if not re.match(r"^\|\s*-", r)]
        head = "".join(f"<th>{html.escape(c.strip())}</th>" for c in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r) + "</tr>" for r in rows[1:])
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    parts, block = [], []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            block.append(line)
            continue
        if block:
            parts.append(md_table_to_html(block))
            block = []
        if line.strip():
            parts.append(f"<p>{html.escape(line)}</p>")
    letters = sorted(result["per_letter"].items(), key=lambda kv: kv[1]["real_retention"])
    cells = [c for c in next(iter(result["per_letter"].values())) if c not in ("char", "real_retention")]
    per = ["<h2>Per letter</h2><table><thead><tr><th>letter</th><th>real retention</th>"
           + "".join(f"<th>{html.escape(c)}<br>retention / diversity</th>" for c in cells) + "</tr></thead><tbody>"]
    for name, v in letters:
        per.append(f"<tr><td>{html.escape(v['char'])} <small>{html.escape(name)}</small></td>"
                   f"<td>{v['real_retention']:.2f}</td>"
                   + "".join(f"<td>{v[c]['retention']:.2f} / {v[c]['diversity']:.2f}</td>" for c in cells) + "</tr>")
    per.append("</tbody></table>")
    doc = ["<!doctype html><html><head><meta charset='utf-8'><title>sage-jax glyphs</title>",
           "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse}"
           "td,th{padding:3px 8px;text-align:right;font-size:90%}th{background:#eee}"
           "tbody tr:nth-child(even){background:#f7f7f7}img{image-rendering:pixelated;max-width:100%}</style>"
           "</head><body>",
           f"<h1>sage-jax glyph {html.escape(title)}: unseen letters from held-out typefaces</h1>",
           *parts,
           "<h2>Pictures</h2><p>Each letter's shots, then each mode's images from them (alpha 1):</p>"
           "<img src='letters.png'>",
           "<p>Retention against diversity over the alphas:</p><img src='sweep.png'>",
           "<p>Shots (top) and their reconstructions (bottom):</p><img src='shot_reconstructions.png' width='800'>",
           *per, f"<p><small>model {html.escape(result['model'])}; real images {html.escape(result['data'])}; "
           f"seed {result['seed']}; {result['intervals']['replicates']} bootstrap replicates</small></p>",
           "</body></html>"]
    with open(os.path.join(out, "report.html"), "w") as f:
        f.write("\n".join(doc))


def run_glyph_demo(out: str, model: str, n: int = 16, seed: int = 0, quiet: bool = False, data=None) -> dict:
    """The glyph model's demo: AGE and SAGE at alpha 1 from 1 and 3 shots on every unseen
    letter (:func:`run_glyph_benchmark` with the demo's settings: 24 real images per
    letter, 500 bootstrap replicates, so that it runs within a minute on 2 CPU cores),
    plus the stage measures ``sage-jax train`` recorded in the model's ``provenance.json``."""
    res = run_glyph_benchmark(out, model, data=data, modes=DEMO_MODES, alphas=(1.0,), shots=(1, 3), n=n,
                              seed=seed, quiet=True, title="demo", n_boot=DEMO_BOOT, max_real=DEMO_REAL)
    prov = os.path.join(model, "provenance.json")
    stages = json.load(open(prov)).get("stage_quality", {}) if os.path.exists(prov) else {}
    res["stages"] = stages
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    if not quiet:
        from sage_jax.metrics.uncertainty import fmt

        print(f"  {len(res['letters'])} unseen letters, shots from held-out typefaces (95% intervals in brackets)")
        print(f"  real held-out images' retention {fmt(res['real_retention'])}")
        for r in res["rows"]:
            print(f"  {r['mode'].upper():>5} {r['shots']}-shot: retention {fmt(r['retention_ci'])}, "
                  f"diversity {fmt(r['diversity_ci'])}")
        for name, d in res["differences"].items():
            print(f"  {name}: retention {fmt(d['retention'])}, diversity {fmt(d['diversity'])}")
    return res
