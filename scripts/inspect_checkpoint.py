"""Thin entry point: `python scripts/inspect_checkpoint.py ARGS` is `sage-jax inspect ARGS`."""

import sys

from sage_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["inspect", *sys.argv[1:]]))
