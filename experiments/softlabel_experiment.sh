#!/usr/bin/env bash
# Softlabel-GAN on the imbalanced synthetic data: a hard-label and a soft-label
# class-conditional StyleGAN2, same seed, same steps, evaluated per class group.
#
#   bash experiments/softlabel_experiment.sh [OUT] [STEPS]      # default runs/softlabel 3000 (the README run)
#   PYTHON=/path/to/venv/bin/python bash experiments/softlabel_experiment.sh   # another interpreter
#
# Both GANs train at once (two processes), same seed, so they see the same batches and z.
# The README's run (3000 steps): both trainings together took 102 min wall-clock on 2 CPU
# cores, most of it at low priority beside benchmarks; the evaluation 1.5 min.
#
# Setting: configs/tiny.py, 40 seen classes with a long tail of 100 -> 10 images (imbalance
# ratio 10, 1579 images), DiffAugment on (the paper's setting), fake classes uniform, soft
# labels = plain softmax (T = 1, mix = 0, as the paper) of a 2-fold cross-fitted SmallCNN.
# Evaluation: head / middle / tail thirds by training count, FID on the ground-truth
# oracle's features against a balanced set of real seen images (100 per class) and the
# oracle's category retention (sage_jax/metrics/classwise.py).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/softlabel}
STEPS=${2:-3000}
PY=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
CLI="$PY -m sage_jax.cli"
COMMON=(--config configs/tiny.py --quiet
        --config.data.imbalance_ratio=10 --config.gan.conditional=true --config.gan.augment=true
        --config.gan.steps="$STEPS" --config.gan.ckpt_every=250 --config.gan.sample_every=500
        # the setting it was measured with: the adversarial GAN of the earlier tiny config
        --config.gan.recipe=adversarial --config.data.samples_per_class=100 --config.model.generator.n_mlp=2
        --config.model.generator.upsample_mode=blur
        "--config.model.generator.channels=((4, 32), (8, 32), (16, 16), (32, 16))")
mkdir -p "$OUT"
start=$(date +%s)
$CLI train-gan "${COMMON[@]}" --workdir "$OUT/hard" --config.gan.labels=hard > "$OUT/hard.log" 2>&1 &
p1=$!
$CLI train-gan "${COMMON[@]}" --workdir "$OUT/soft" --config.gan.labels=soft > "$OUT/soft.log" 2>&1 &
p2=$!
wait $p1 $p2
echo "training: $(( $(date +%s) - start )) s"
[ -d "$OUT/real_seen" ] || $CLI make-synthetic --config configs/tiny.py --split seen --out "$OUT/real_seen"
$CLI evaluate --real "$OUT/real_seen" --conditional hard="$OUT/hard/g_ema" --conditional soft="$OUT/soft/g_ema" \
    --metrics classwise --out "$OUT/eval" --quiet
echo "total: $(( $(date +%s) - start )) s"
