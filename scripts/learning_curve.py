"""The generator's learning curve from a GAN stage's ``metrics.jsonl``: the oracle
measures of random samples (``quality/*``, logged every ``gan.eval_every`` steps by
``sage-jax train`` on the synthetic data, or by ``experiments/gan_experiment.py``) against
the step and the training minutes spent to reach it.

    python scripts/learning_curve.py runs/tiny/gan --out docs/learning_curve.png

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


def plot_curve(rows: list[dict], path: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(steps, [r["confident_share"] for r in rows], marker="o", label="samples called one class (p >= 0.9)")
    a.axhline(0.8, color="gray", ls="--", lw=1, label="target 0.80 (real images 0.97)")
    a.set_ylim(0, 1)
    a.set_ylabel("confident share")
    b.plot(steps, [r["seen_classes_hit"] for r in rows], marker="o", color="C1", label="seen classes hit")
    b.axhline(38, color="gray", ls="--", lw=1, label="target 38 of 40")
    b.set_ylim(0, 41)
    b.set_ylabel("seen classes hit (of 40)")
    for ax in (a, b):
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        top = ax.secondary_xaxis("top", functions=(lambda s: s, lambda s: s))
        top.set_xticks(steps[::2], [f"{r['minutes']:.0f}" for r in rows[::2]])
        top.set_xlabel("minutes of training")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workdir", help="a GAN stage's directory (holds metrics.jsonl)")
    p.add_argument("--out", default=None, help="PNG to write (default WORKDIR/learning_curve.png)")
    p.add_argument("--title", default="", help="figure title")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        rows = read_curve(a.workdir)
    except (FileNotFoundError, ValueError) as e:
        p.error(str(e))
    print("| step | minutes | confident share | seen classes hit | oracle FID |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        fid = r.get("oracle_fid")
        print(f"| {r['step']} | {r['minutes']:.1f} | {r['confident_share']:.3f} | {int(r['seen_classes_hit'])} | "
              + (f"{fid:.1f}" if fid is not None else "") + " |")
    out = a.out or os.path.join(a.workdir, "learning_curve.png")
    plot_curve(rows, out, a.title)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
