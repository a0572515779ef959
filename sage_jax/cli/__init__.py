"""The ``sage-jax`` command: ``main`` parses the arguments and runs one subcommand.

Each module here holds a group of subcommands, their arguments (``register``) beside
their implementations (``cmd_*``):

* ``checkpoints``: ``inspect``, ``convert``;
* ``method``: ``sample``, ``invert``, ``embed``, ``train-dictionary``, ``generate``;
* ``data``: ``build-dataset``, ``make-synthetic``;
* ``evaluation``: ``evaluate``;
* ``demo``: ``demo``;
* ``training``: ``train``, ``train-gan``, ``train-encoder``.

A new subcommand goes into the module of its group (or a new module added to
``GROUPS``): a ``cmd_<name>(args) -> int`` and its ``sub.add_parser`` block in that
module's ``register``. Every import of the library happens inside the command that
needs it, so ``sage-jax --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from sage_jax.cli import checkpoints, data, demo, evaluation, method, training
from sage_jax.cli.method import parse_seeds
from sage_jax.errors import UsageError

__all__ = ["GROUPS", "UsageError", "build_parser", "main", "parse_seeds"]

# in the order 'sage-jax --help' lists them
GROUPS = (checkpoints, method, data, evaluation, demo, training)
# the commands that take --config.SECTION.KEY=VALUE overrides
TAKES_OVERRIDES = ("train", "train-gan", "train-encoder", "make-synthetic")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sage-jax",
        description="SAGE few-shot image generation with StyleGAN2 latent editing, in JAX.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for group in GROUPS:
        group.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from sage_jax.checkpoints.torch_reader import CheckpointError
    from sage_jax.config import split_overrides
    from sage_jax.errors import RunStopped

    parser = build_parser()
    try:
        rest, overrides = split_overrides(sys.argv[1:] if argv is None else argv)
    except ValueError as e:
        parser.error(str(e))
    args = parser.parse_args(rest)
    args.overrides = overrides
    if overrides and args.command not in TAKES_OVERRIDES:
        parser.error(f"--config.* overrides apply to {', '.join(TAKES_OVERRIDES[:-1])} and {TAKES_OVERRIDES[-1]}, "
                     f"not {args.command}")
    from sage_jax.parallel import enable_compilation_cache

    enable_compilation_cache()
    try:
        return args.func(args)
    except (UsageError, CheckpointError, RunStopped, FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"sage-jax {args.command}: error: {e}", file=sys.stderr)
        return 2
