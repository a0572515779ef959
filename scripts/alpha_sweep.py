"""Retention vs diversity of AGE, SAGE-Q, SAGE-I and SAGE over an alpha sweep, 1 and 3
shots, on the unseen synthetic classes (the shipped model by default):

    python scripts/alpha_sweep.py --out runs/sweep [--model DIR] [--alphas 0.5,1,1.5,2,3] [--n 16]

writes sweep.json, sweep.md (the table) and sweep.png (a line per mode)."""

import argparse
import sys

from sage_jax.demo import ASSET_DIR, SWEEP_ALPHAS, SWEEP_MODES, run_alpha_sweep


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--model", default=ASSET_DIR, help="model directory written by 'sage-jax train'")
    p.add_argument("--alphas", default=",".join(f"{a:g}" for a in SWEEP_ALPHAS), help="edit strengths, comma-separated")
    p.add_argument("--modes", default=",".join(SWEEP_MODES), help="modes, comma-separated")
    p.add_argument("--shots", default="1,3", help="shot counts, comma-separated")
    p.add_argument("--n", type=int, default=16, help="generated images per class, mode, shot count and alpha")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    try:
        alphas = [float(x) for x in a.alphas.split(",")]
        shots = [int(x) for x in a.shots.split(",")]
    except ValueError as e:
        p.error(f"--alphas and --shots take comma-separated numbers ({e})")
    if min(alphas) < 0 or min(shots) < 1 or a.n < 1:
        p.error("alphas must be >= 0, shots and --n >= 1")
    run_alpha_sweep(a.out, a.model, alphas, a.modes.split(","), shots, n=a.n, seed=a.seed, quiet=a.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
