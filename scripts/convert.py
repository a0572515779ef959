"""Thin entry point: `python scripts/convert.py ARGS` is `sage-jax convert ARGS`."""

import sys

from sage_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
