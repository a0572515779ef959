"""Thin entry point: `python scripts/sample.py ARGS` is `sage-jax sample ARGS`."""

import sys

from sage_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["sample", *sys.argv[1:]]))
