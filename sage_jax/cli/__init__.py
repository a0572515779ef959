"""The ``sage-jax`` command: ``main`` parses the arguments and runs one subcommand.

Each module here holds a group of subcommands, their arguments (``register``) beside
their implementations (``cmd_*``):

* ``checkpoints``: ``inspect``, ``convert``;
* ``sampling``: ``sample``;
* ``inversion``: ``invert``, ``embed``;
* ``dictionary``: ``train-dictionary``;
* ``generate``: ``generate``;
* ``data``: ``build-dataset``, ``make-synthetic``;
* ``evaluation``: ``evaluate``;
* ``demo``: ``demo``;
* ``training``: ``train``, ``train-gan``, ``train-encoder``;
* ``launch``: ``launch`` (a command as several processes of this machine).

Every command but ``launch`` takes ``--coordinator``, ``--num-processes`` and
``--process-id`` (or reads them from the environment, :func:`sage_jax.parallel.initialize`)
and joins the other processes of a multi-process run before it computes anything;
only process 0 prints to standard output (errors go to standard error from every one).

``common`` holds what the method commands share (where the model is, the refinement
flags). ``--model`` takes a shipped model's name (``tiny``) or a path in every command
that has it: ``main`` resolves it before the command runs. An option the command does
not have is refused naming the closest of its own options.

A new subcommand goes into the module of its group (or a new module added to
``GROUPS``): a ``cmd_<name>(args) -> int`` and its ``sub.add_parser`` block in that
module's ``register``. Every import of the library happens inside the command that
needs it, so ``sage-jax --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from sage_jax.cli import (checkpoints, data, demo, dictionary, evaluation, generate, inversion, launch, sampling,
                          training)
from sage_jax.cli.sampling import parse_seeds
from sage_jax.errors import UsageError

__all__ = ["GROUPS", "UsageError", "build_parser", "main", "parse_seeds"]

# in the order 'sage-jax --help' lists them
GROUPS = (checkpoints, sampling, inversion, dictionary, generate, data, evaluation, demo, training, launch)
# with several processes: run by process 0 alone, the others waiting for its exit status
# (data preparation, a checkpoint's description, a few samples: nothing worth sharing)
ON_PROCESS_0 = ("build-dataset", "make-synthetic", "inspect", "sample")
# with several processes: refused (a look at the shipped model on one machine)
ONE_PROCESS_ONLY = ("demo", "glyph-benchmark")
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
    for name, command in sub.choices.items():
        if name != "launch":
            _distributed_flags(command)
    return p


def _on_process_0(args) -> int:
    """Run the command on process 0; every process returns its exit status (or raises
    its error)."""
    import numpy as np

    from sage_jax import parallel

    status, error = 0, None
    if parallel.is_main():
        try:
            status = args.func(args)
        except Exception as e:  # noqa: BLE001 - re-raised below, after the others are told
            status, error = 2, e
    status = int(parallel.broadcast(np.int32(status)))
    if error is not None:
        raise error
    if status and not parallel.is_main():
        print(f"sage-jax {args.command}: process 0 failed (exit status {status})", file=sys.stderr)
    return status


def _unknown_option(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """The message for the first ``--option`` of ``argv`` its subcommand does not have
    (neither exactly nor as an unambiguous prefix), with the closest of the
    subcommand's own options; None when every option is known (argparse reports the
    rest, with the subcommand's usage)."""
    import difflib

    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    if sub is None or not argv or argv[0] not in sub.choices or argv[0] == "launch":
        return None
    command, own = argv[0], sub.choices[argv[0]]
    options = [o for o in own._option_string_actions if o.startswith("--")]
    for token in argv[1:]:
        if token == "--":
            break
        if not token.startswith("--") or len(token) < 3:
            continue
        name = token.split("=", 1)[0]
        if name in options or any(o.startswith(name) for o in options):   # ambiguous prefixes: argparse says so
            continue
        close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        return (f"sage-jax {command}: error: unknown option {name}{hint} "
                f"('sage-jax {command} --help' lists its options)")
    return None


def _distributed_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("several processes (default: from the environment, see 'sage-jax launch')")
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="address of process 0's coordinator (else JAX_COORDINATOR_ADDRESS, or SLURM's)")
    g.add_argument("--num-processes", type=int, default=None, metavar="N",
                   help="how many processes take part (else JAX_NUM_PROCESSES, or SLURM's)")
    g.add_argument("--process-id", type=int, default=None, metavar="I",
                   help="this process's id in [0, N) (else JAX_PROCESS_ID, or SLURM's)")


def main(argv: Sequence[str] | None = None) -> int:
    from sage_jax.checkpoints.torch_reader import CheckpointError
    from sage_jax.config import split_overrides
    from sage_jax.errors import RunStopped

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        # 'launch' passes its command's overrides on untouched
        rest, overrides = (argv, []) if argv[:1] == ["launch"] else split_overrides(argv)
    except ValueError as e:
        parser.error(str(e))
    unknown = _unknown_option(parser, rest)
    if unknown:
        print(unknown, file=sys.stderr)
        return 2
    args = parser.parse_args(rest)
    args.overrides = overrides
    if overrides and args.command not in TAKES_OVERRIDES:
        parser.error(f"--config.* overrides apply to {', '.join(TAKES_OVERRIDES[:-1])} and {TAKES_OVERRIDES[-1]}, "
                     f"not {args.command}")
    from sage_jax import parallel

    parallel.enable_compilation_cache()
    try:
        if isinstance(getattr(args, "model", None), str):   # a shipped model's name or a path, from any folder
            from sage_jax.assets import model_path

            args.model = model_path(args.model, "--model")
        if args.command != "launch":
            if parallel.initialize(args.coordinator, args.num_processes, args.process_id):
                # connect the processes now, while they start together: gloo gives up on a
                # first collective whose processes arrive more than 30 s apart
                parallel.barrier("start")
            if not parallel.is_main():
                sys.stdout = open(os.devnull, "w")  # process 0 speaks for all
            import jax

            if jax.process_count() > 1:
                if args.command in ONE_PROCESS_ONLY:
                    raise UsageError(f"'{args.command}' runs as one process: start it without 'sage-jax launch', "
                                     "srun or --num-processes")
                if args.command in ON_PROCESS_0:
                    return _on_process_0(args)
        return args.func(args)
    except (UsageError, CheckpointError, RunStopped, FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"sage-jax {args.command}: error: {e}", file=sys.stderr)
        return 2
