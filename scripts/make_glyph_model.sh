#!/usr/bin/env bash
# Rebuilds the glyph model shipped in sage_jax/assets/glyph_model from scratch: installs
# the fonts (scripts/install_fonts.sh; sudo unless root), renders the glyph dataset at
# 32 px (seed 0, a fifth of the typefaces held out), runs every stage of configs/glyphs.py
# (seed 0) and copies the bundle. Nothing is edited by hand; provenance.json inside the
# bundle records the stage times and the stage measures on the held-out typefaces.
#   scripts/make_glyph_model.sh [WORKDIR] [DATA]     (defaults runs/glyphs, data/glyphs32)
set -euo pipefail
cd "$(dirname "$0")/.."
workdir=${1:-runs/glyphs}
data=${2:-data/glyphs32}
bash scripts/install_fonts.sh
[ -f "$data/labels.json" ] || sage-jax make-glyphs --out "$data" --size 32 --seed 0 --held-out 0.2
sage-jax train --config glyphs --config.data.root="$data" --workdir "$workdir"
rm -rf sage_jax/assets/glyph_model
mkdir -p sage_jax/assets
cp -r "$workdir/model" sage_jax/assets/glyph_model
du -sh sage_jax/assets/glyph_model
