"""``demo``: the shipped tiny model on the unseen synthetic classes, with report.html."""

from __future__ import annotations



from sage_jax.errors import UsageError


def cmd_demo(args) -> int:
    from sage_jax.demo import ASSET_DIR, run_demo

    try:
        run_demo(args.out, model=args.model or ASSET_DIR, n=args.n, seed=args.seed, quiet=args.quiet)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    return 0


# ----------------------------------------------------------------------------- arguments
def register(sub) -> None:
    """Adds this module's subcommands to ``sub`` (the ``sage-jax`` subparsers)."""
    s = sub.add_parser("demo", help="the shipped tiny model on the unseen synthetic classes, with report.html")
    s.add_argument("--out", default="demo", help="report directory (default ./demo)")
    s.add_argument("--model", default=None, help="a model directory from 'sage-jax train' (default: the shipped one)")
    s.add_argument("--n", type=int, default=16, help="images per class, mode and shot count (default 16)")
    s.add_argument("--seed", type=int, default=0, help="random seed")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_demo)
