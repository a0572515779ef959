#!/usr/bin/env bash
# Rebuilds the model shipped in sage_jax/assets/tiny_model from scratch: every stage of
# configs/tiny.py (seed 0) on 2 CPU cores, then copies the bundle. Nothing is edited by
# hand; provenance.json inside the bundle records the stage times.
set -euo pipefail
cd "$(dirname "$0")/.."
workdir=${1:-runs/tiny}
sage-jax train --config configs/tiny.py --workdir "$workdir"
rm -rf sage_jax/assets/tiny_model
mkdir -p sage_jax/assets
cp -r "$workdir/model" sage_jax/assets/tiny_model
du -sh sage_jax/assets/tiny_model
