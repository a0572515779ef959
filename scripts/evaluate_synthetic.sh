#!/usr/bin/env bash
# The evaluation of README.md's "Evaluation" section, reproduced with one command: the
# shipped tiny model generates 128 images per unseen synthetic class (1-shot, SAGE and
# AGE), then `sage-jax evaluate` scores both against the real images with FID (on the
# oracle's features: no Inception weights here), KID, NAS with SGIA's options,
# few-shot classification and the ground-truth measures. Everything is a function of
# the seeds; about 18 min on 2 CPU cores (95% intervals included).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/eval_synthetic}
model=sage_jax/assets/tiny_model
rm -rf "$out"
mkdir -p "$out"
sage-jax make-synthetic --config configs/tiny.py --split unseen --out "$out/real"
sage-jax make-synthetic --config configs/tiny.py --split seen --out "$out/seen"
for mode in sage age; do
  sage-jax generate --model $model \
      --shots "$out/real" --k 1 --n 128 --mode $mode --out "$out/gen_$mode" --quiet
done
sage-jax evaluate --real "$out/real" --generated sage="$out/gen_sage" --generated age="$out/gen_age" \
    --seen "$out/seen" --metrics fid,kid,nas,fewshot,gt --sgia-alpha 0.5 --bridging \
    --dataset synthetic --cache-dir "$out/cache" --out "$out/eval"
