"""``demo``: a shipped model (tiny: the unseen synthetic classes; glyphs: the unseen
letters of held-out typefaces) with report.html; ``glyph-benchmark``: every method over
the alpha sweep on a glyph model."""

from __future__ import annotations

import os

from sage_jax.errors import UsageError


def cmd_demo(args) -> int:
    from sage_jax.assets import model_path
    from sage_jax.demo import ASSET_DIR, run_demo
    from sage_jax.glyph_demo import is_glyph_model, run_glyph_demo

    try:
        model = model_path(args.model) if args.model else ASSET_DIR
        if is_glyph_model(model):
            run_glyph_demo(args.out, model, n=args.n, seed=args.seed, quiet=args.quiet)
        else:
            run_demo(args.out, model=model, n=args.n, seed=args.seed, quiet=args.quiet)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    return 0


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"expected comma-separated numbers, got {text!r}") from None


def cmd_glyph_benchmark(args) -> int:
    from sage_jax.assets import model_path
    from sage_jax.glyph_demo import is_glyph_model, run_glyph_benchmark

    try:
        model = model_path(args.model)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    if not is_glyph_model(model):
        raise UsageError(f"{model} is not a glyph model (its config.json has data.name != 'glyphs'): train one "
                         f"with 'sage-jax train --config glyphs', or use --model glyphs")
    if args.data and not os.path.isfile(os.path.join(args.data, "labels.json")):
        raise UsageError(f"--data {args.data} is not a glyph dataset folder (no labels.json): make it with "
                         f"'sage-jax make-glyphs --out {args.data}'")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in ("age", "sage-q", "sage-i", "sage")]
    if bad:
        raise UsageError(f"--modes: unknown {bad}; choose from age, sage-q, sage-i, sage")
    shots = [int(x) for x in _floats(args.shots)]
    try:
        run_glyph_benchmark(args.out, model, data=args.data, modes=modes, alphas=_floats(args.alphas), shots=shots,
                            n=args.n, seed=args.seed, quiet=args.quiet,
                            letters=list(args.letters) if args.letters else None)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    return 0


# ----------------------------------------------------------------------------- arguments
def register(sub) -> None:
    """Adds this module's subcommands to ``sub`` (the ``sage-jax`` subparsers)."""
    s = sub.add_parser("demo", help="a shipped model on its unseen classes (tiny: synthetic; glyphs: letters of "
                                    "held-out typefaces), with report.html")
    s.add_argument("--out", default="demo", help="report directory (default ./demo)")
    s.add_argument("--model", default=None, help="'tiny' (default), 'glyphs' or a model directory from "
                                                 "'sage-jax train'")
    s.add_argument("--n", type=int, default=16, help="images per class, mode and shot count (default 16)")
    s.add_argument("--seed", type=int, default=0, help="random seed")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("glyph-benchmark", help="every method over the alpha sweep at 1 and 3 shots on the unseen "
                                               "letters of held-out typefaces (a glyph model)")
    s.add_argument("--model", default="glyphs", help="'glyphs' (the shipped glyph model, default) or a model "
                                                      "directory from 'sage-jax train --config glyphs'")
    s.add_argument("--data", default=None, help="the glyph dataset folder (make-glyphs) for every held-out face "
                                                "(default: the 40 per letter kept in the model directory)")
    s.add_argument("--out", default="glyph_benchmark", help="output directory (default ./glyph_benchmark)")
    s.add_argument("--modes", default="age,sage-q,sage-i,sage", help="comma-separated (default all four)")
    s.add_argument("--alphas", default="0.5,1,1.5,2,3", help="edit strengths (default 0.5,1,1.5,2,3)")
    s.add_argument("--shots", default="1,3", help="shot counts (default 1,3)")
    s.add_argument("--n", type=int, default=16, help="images per letter and cell (default 16)")
    s.add_argument("--letters", default=None, help="a subset of the unseen letters, as characters (e.g. ЖЯλ)")
    s.add_argument("--seed", type=int, default=0, help="random seed of the shots and the edits")
    s.add_argument("--quiet", action="store_true", help="no progress bar or tables")
    s.set_defaults(func=cmd_glyph_benchmark)
