"""``python -m sage_jax.cli`` is ``sage-jax``."""

import sys

from sage_jax.cli import main

sys.exit(main())
