"""Files shipped inside the package: the tiny model ``sage-jax train --config
configs/tiny.py`` makes (``scripts/make_tiny_model.sh`` rebuilds it)."""

import os

ASSET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny_model")
