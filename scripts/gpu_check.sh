#!/usr/bin/env bash
# One prepared check for a machine with an NVIDIA GPU, after
#   pip install -e '.[dev]' && pip install -U "jax[cuda12]"
# in the project's environment (the checkout must sit beside shared/, as for the tests):
#
#   scripts/gpu_check.sh                 # parity on the GPU, then the benchmarks; < 8 min
#   scripts/gpu_check.sh --cpu-smoke     # no GPU needed: two parity tests, the rest skipped
#   scripts/gpu_check.sh --out DIR       # where the logs and JSON go (default: a new temp dir)
#
# Sections, each under its own time limit, each reported in the one table printed at the end:
#   1. parity   the parity tests against ../shared/fixtures on the default device, in float32
#               with JAX_DEFAULT_MATMUL_PRECISION=highest (so TF32 does not stand in for
#               float32 on the GPU); the largest error of all comparisons, relative to its
#               output's own scale, from SAGE_JAX_PARITY_LOG
#   2. quick    scripts/benchmark.py --quick --json     (every section, small sizes)
#   3. bf16     scripts/benchmark.py --only bf16         (bfloat16 vs float32 at 256 px, full reps)
#   4. training scripts/benchmark.py --only training --train 256 (256 px GAN steps/s)
# Without a GPU (JAX sees only a CPU) sections 2-4 print "skipped: no GPU" (--cpu-bench runs
# them anyway, slowly: about 10 min for --quick alone on 2 cores), and the parity section
# runs on the CPU (several minutes), or, with --cpu-smoke, only two of its tests (CI runs
# this: tests/test_gpu_check.py). Exit status: 0 when every section that ran passed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

SMOKE=0
CPU_BENCH=0
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-smoke) SMOKE=1 ;;
    --cpu-bench) CPU_BENCH=1 ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$OUT" ] || OUT=$(mktemp -d -t sage-jax-gpu-check-XXXXXX)
mkdir -p "$OUT"
PY=${PYTHON:-python}

if [ "$SMOKE" = 1 ]; then
  export JAX_PLATFORMS=cpu
else
  # the tests default to the CPU (tests/conftest.py); here the default device is wanted
  export JAX_PLATFORMS=${JAX_PLATFORMS:-}
fi
export JAX_DEFAULT_MATMUL_PRECISION=highest
BACKEND=$("$PY" -c "import jax; print(jax.default_backend())" 2>"$OUT/backend.err") || {
  echo "gpu_check.sh: cannot import jax:"; cat "$OUT/backend.err"; exit 2; }
DEVICES=$("$PY" -c "import jax; print(', '.join(str(d) for d in jax.devices()))" 2>/dev/null)
echo "backend: $BACKEND ($DEVICES); logs in $OUT"
HAVE_GPU=0
case "$BACKEND" in gpu|cuda) HAVE_GPU=1 ;; esac
# time limits per section, seconds: 8 min in all on a GPU; a CPU takes its time
if [ "$HAVE_GPU" = 1 ]; then F=1; else F=10; fi
T_PARITY=${GPU_CHECK_PARITY_S:-$((210 * F))}
T_QUICK=${GPU_CHECK_QUICK_S:-$((150 * F))}
T_BF16=${GPU_CHECK_BF16_S:-$((50 * F))}
T_TRAIN=${GPU_CHECK_TRAIN_S:-$((70 * F))}
T0=$(date +%s)

STATUS_FILE="$OUT/sections.tsv"
: >"$STATUS_FILE"
record() {  # name status seconds note
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$STATUS_FILE"
  echo "== $1: $2 (${3} s) $4"
}

run_section() {  # name limit_s command...
  local name=$1 limit=$2; shift 2
  local t=$(date +%s)
  echo "== $name: $*"
  timeout --signal=TERM --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  local dt=$(( $(date +%s) - t ))
  if [ $rc = 0 ]; then record "$name" ok "$dt" ""
  elif [ $rc = 124 ] || [ $rc = 137 ]; then record "$name" "TIMEOUT" "$dt" "over ${limit} s, see $OUT/$name.log"
  else record "$name" "FAILED" "$dt" "exit $rc, see $OUT/$name.log"; tail -n 15 "$OUT/$name.log"
  fi
  return $rc
}

# ---- 1. parity
PARITY_TESTS=(tests/test_stylegan2_parity.py tests/test_psp.py::test_ir_se50_codes_match_reference_in_float64
  tests/test_psp.py::test_ir_se50_float32_backbone_agrees_with_float64_where_conditioned
  tests/test_lpips.py tests/test_fid.py::test_parity_pool3_float32 tests/test_fid.py::test_parity_frechet_distance
  tests/test_sage.py::test_dictionary_outputs_and_losses_match_reference
  tests/test_sage.py::test_back_projection_and_mapping_and_retrieval
  tests/test_sage.py::test_local_statistics_and_edited_codes tests/test_fusion.py tests/test_dtypes.py)
if [ "$SMOKE" = 1 ]; then
  PARITY_TESTS=(tests/test_stylegan2_parity.py::test_g256_mapping_and_mean_latent
    tests/test_sage.py::test_back_projection_and_mapping_and_retrieval)
fi
export SAGE_JAX_PARITY_LOG="$OUT/parity.jsonl"
: >"$SAGE_JAX_PARITY_LOG"
run_section parity "$T_PARITY" "$PY" -m pytest -q -p no:cacheprovider -m "not heavy" "${PARITY_TESTS[@]}"
unset SAGE_JAX_PARITY_LOG

# ---- 2-4. benchmarks
if [ "$SMOKE" = 0 ] && { [ "$HAVE_GPU" = 1 ] || [ "$CPU_BENCH" = 1 ]; }; then
  run_section quick "$T_QUICK" "$PY" scripts/benchmark.py --quick --json "$OUT/quick.json"
  run_section bf16 "$T_BF16" "$PY" scripts/benchmark.py --only bf16 --json "$OUT/bf16.json"
  run_section training "$T_TRAIN" "$PY" scripts/benchmark.py --only training --train 256 --train-steps 10 \
    --train-no-warm --json "$OUT/training.json"
else
  for s in quick bf16 training; do record "$s" "skipped: no GPU" 0 "(backend $BACKEND; --cpu-bench runs it here)"; done
fi
TOTAL=$(( $(date +%s) - T0 ))

# ---- the table
"$PY" - "$OUT" "$TOTAL" "$BACKEND" <<'EOF'
import json, os, sys
sys.path.insert(0, "scripts")
out, total, backend = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = []
for line in open(os.path.join(out, "sections.tsv")):
    name, status, secs, note = line.rstrip("\n").split("\t")
    rows.append((name, status, f"{secs} s", note))
    if name == "parity" and status == "ok":
        log = [json.loads(l) for l in open(os.path.join(out, "parity.jsonl")) if l.strip()]
        if log:
            worst = max(log, key=lambda r: r["rel"] / r["tol"])
            rows.append(("parity, worst of %d comparisons" % len(log),
                         f"{worst['rel']:.2g} of scale", f"bound {worst['tol']:g}", worst["what"]))
        summary = [l.strip() for l in open(os.path.join(out, "parity.log")) if " passed" in l or " failed" in l]
        if summary:
            rows.append(("parity, tests", summary[-1].strip("= "), "", ""))
    path = os.path.join(out, f"{name}.json")
    if status == "ok" and os.path.exists(path):
        from benchmark import _target_table
        for fig, measured, target, met in _target_table(json.load(open(path))):
            rows.append((f"{name}: {fig}", measured, target, met))
rows.append(("total", f"{total} s", "< 480 s" if backend in ("gpu", "cuda") else "-",
             ("yes" if total < 480 else "NO") if backend in ("gpu", "cuda") else "-"))
head = ("section / figure", "result", "time / target", "note / met")
w = [max(len(str(r[i])) for r in rows + [head]) for i in range(4)]
fmt = lambda r: "  ".join(str(c).ljust(n) for c, n in zip(r, w)).rstrip()
print("\n" + fmt(head))
print(fmt(tuple("-" * n for n in w)))
for r in rows:
    print(fmt(r))
EOF

if grep -qP '\t(FAILED|TIMEOUT)\t' "$STATUS_FILE"; then exit 1; fi
exit 0
