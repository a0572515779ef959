"""The generator's learning curve from a GAN stage's ``metrics.jsonl``: the oracle
measures of random samples (``quality/*``, logged every ``gan.eval_every`` steps by
``sage-jax train`` on the synthetic data, or by ``experiments/gan_experiment.py``) against
the step and the training minutes spent to reach it.

    python scripts/learning_curve.py runs/tiny/gan --out docs/learning_curve.png
    python scripts/learning_curve.py runs/adv/base runs/adv/r1 --labels defaults,"R1 0.0128" \
        --classes 62 --classes-target 62 --out curves.png     # several runs on the same axes

Prints the table (step, minutes, confident share, seen classes hit, oracle FID) and
draws it with matplotlib: what each minute of training buys.
"""

import argparse
import json
import os
import sys


def read_curve(workdir: str) -> list[dict]:
    """The rows of ``workdir/metrics.jsonl`` carrying ``quality/confident_share``, each
    with ``minutes``: the sum of the logged intervals up to its step."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: give a GAN stage's directory (e.g. runs/tiny/gan)")
    seconds, rows = 0.0, []
    for line in open(path):
        m = json.loads(line)
        seconds += float(m.get("interval_s", 0.0))
        if "quality/confident_share" in m:
            rows.append({"step": int(m["step"]), "minutes": seconds / 60,
                         **{k.split("/", 1)[1]: v for k, v in m.items() if k.startswith("quality/")}})
    if not rows:
        raise ValueError(f"{path} holds no quality/confident_share rows: train with gan.eval_every > 0 "
                         "on the synthetic data")
    return rows


def plot_curve(rows, path: str, title: str = "", labels=None, classes: int = 40,
               classes_target: int | None = None) -> None:
    """Draws one run's rows, or several runs' (a list of row lists, named by ``labels``)
    on the same axes: confident share and seen classes hit against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = rows if rows and isinstance(rows[0], list) else [rows]
    labels = list(labels) if labels else [None] * len(runs)
    if len(labels) != len(runs):
        raise ValueError(f"{len(labels)} labels for {len(runs)} runs")
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.6) if len(runs) > 1 else (10, 3.8))
    if title:
        fig.suptitle(title)
    for i, (run, name) in enumerate(zip(runs, labels)):
        steps = [r["step"] for r in run]
        a.plot(steps, [r["confident_share"] for r in run], marker="o", ms=3, color=f"C{i}",
               label=name or "samples called one class (p >= 0.9)")
        b.plot(steps, [r["seen_classes_hit"] for r in run], marker="o", ms=3, color=f"C{i}",
               label=name or "seen classes hit")
    real = [r["real_confident_share"] for run in runs for r in run if "real_confident_share" in r]
    a.axhline(0.8, color="gray", ls="--", lw=1, label="target 0.80" + (f" (real images {real[0]:.2f})" if real else ""))
    a.set_ylim(0, 1)
    a.set_ylabel("confident share")
    target = round(classes * 0.95) if classes_target is None else classes_target
    b.axhline(target, color="gray", ls="--", lw=1, label=f"target {target} of {classes}")
    b.set_ylim(0, classes + 1)
    b.set_ylabel(f"seen classes hit (of {classes})")
    for ax in (a, b):
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    if len(runs) > 1:   # one legend, under both panels
        handles, names = a.get_legend_handles_labels()
        fig.legend(handles, names, loc="lower center", ncol=min(len(names), 3), fontsize=8)
        fig.tight_layout(rect=(0, 0.06 * ((len(names) + 2) // 3), 1, 1))
    else:
        steps = [r["step"] for r in runs[0]]
        for ax in (a, b):
            ax.legend(loc="lower right", fontsize=8)
            top = ax.secondary_xaxis("top", functions=(lambda s: s, lambda s: s))
            top.set_xticks(steps[::2], [f"{r['minutes']:.0f}" for r in runs[0][::2]])
            top.set_xlabel("minutes of training")
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workdir", nargs="+", help="a GAN stage's directory (holds metrics.jsonl); several: "
                   "their curves on the same axes")
    p.add_argument("--labels", default="", help="comma-separated names of the runs, in order "
                   "(default: the folders' names)")
    p.add_argument("--classes", type=int, default=40, help="seen classes (40 synthetic, 62 glyphs)")
    p.add_argument("--classes-target", type=int, default=None,
                   help="the classes-hit target line (default 95%% of --classes)")
    p.add_argument("--out", default=None, help="PNG to write (default FIRST_WORKDIR/learning_curve.png)")
    p.add_argument("--title", default="", help="figure title")
    p.add_argument("--max-step", type=int, default=0, help="leave out rows after this step (0: every row)")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    labels = [x.strip() for x in a.labels.split(",")] if a.labels else [
        os.path.basename(os.path.normpath(w)) for w in a.workdir]
    if len(labels) != len(a.workdir):
        p.error(f"--labels names {len(labels)} runs; {len(a.workdir)} folders given")
    if a.classes < 1:
        p.error("--classes must be at least 1")
    runs = []
    for workdir, label in zip(a.workdir, labels):
        try:
            rows = read_curve(workdir)
        except (FileNotFoundError, ValueError) as e:
            p.error(str(e))
        if a.max_step > 0:
            rows = [r for r in rows if r["step"] <= a.max_step]
            if not rows:
                p.error(f"{workdir} has no rows up to step {a.max_step}")
        runs.append(rows)
        if len(a.workdir) > 1:
            print(f"\n{label} ({workdir})")
        print("| step | minutes | confident share | seen classes hit | oracle FID |")
        print("| --- | --- | --- | --- | --- |")
        for r in rows:
            fid = r.get("oracle_fid")
            print(f"| {r['step']} | {r['minutes']:.1f} | {r['confident_share']:.3f} | {int(r['seen_classes_hit'])} | "
                  + (f"{fid:.1f}" if fid is not None else "") + " |")
    out = a.out or os.path.join(a.workdir[0], "learning_curve.png")
    if len(runs) == 1:
        plot_curve(runs[0], out, a.title, classes=a.classes, classes_target=a.classes_target)
    else:
        plot_curve(runs, out, a.title, labels=labels, classes=a.classes, classes_target=a.classes_target)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
