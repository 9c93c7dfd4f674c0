#!/usr/bin/env bash
# The one GPU check: run from the repository root on a lent GPU machine, it fills docs/benchmarks.md's
# GPU section in one call (docs/gpu.md has the exact device command and the wheels to carry):
#
#     bash benchmarks/gpu_check.sh              # results under $OUT if set, else ./out
#     bash benchmarks/gpu_check.sh --dry-run    # no GPU: every step's code on tiny CPU inputs, CUDA parts skipped
#
# Steps, each under `timeout` (a failed or timed-out step does not stop the next); the whole check
# stops starting steps at GPU_CHECK_BUDGET_S (540 s) so that the report always comes out:
#   1. environment: GPU, clocks, python / torch / triton versions, which optional packages import
#   2. wheels: installs .whl/*.whl (open_clip_torch, ftfy, wcwidth, av: what the machine's image lacks)
#      into a temporary folder put on PYTHONPATH, when the folder was carried
#   3. pytest -m gpu: the scan matrix's GPU cases, the Triton scan, the op, precision
#   4. bench_encoder.py: ViT-B-32 video encoder videos/s, fp32 / bf16 / fp16 and bf16 autocast, batch 8
#      and 64, uint8 path vs host-normalised floats, peak memory, syncs a call
#   5. bench_scan.py: the Triton scan at the MUSE shape and at batch 16, fp32 and bf16, GB/s against a
#      device copy, and mamba-ssm's selective_scan_fn when it imports
#   6. bench_end_to_end.py: 256 generated videos, every core but one decoding: decode-only, model-only
#      and end-to-end videos/s, and which bounds
#   6b. gpu_decode.py: NVDEC (--decoder cuda) against the CPU decoder: frames equal, CPU s a video
#   7. bench_train.py: up to 300 training steps (60 s) of ViT-B-32 on the synthetic benchmark, bf16 autocast
#   8. bench_encoder.py --compile: torch.compile and CUDA graphs on the backbone, bf16, batch 64
#   9. bench_triton_bidir.py: the Triton kernel's launch shapes (what is left of the time)
#  10. gpu_report.py: $OUT/gpu_check.json and $OUT/gpu_table.md
# Files under $OUT (the device tool returns at most 8): gpu_check.log, gpu_tests.xml, gpu_check.json,
# gpu_table.md. Nothing is installed for good (the wheels go into the check's temporary folder); the
# checkout goes on PYTHONPATH.
set -u
cd "$(dirname "$0")/.." || exit 1
DRY_RUN=0
if [ "${1:-}" = "--dry-run" ]; then DRY_RUN=1; fi
OUT="${OUT:-./out}"
mkdir -p "$OUT"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/muse_gpu_check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET  # compiled kernels, whatever the caller's shell had
PY="${PYTHON:-python3}"
BUDGET_S="${GPU_CHECK_BUDGET_S:-540}"  # the device tool allows 600 s a command
REPORT_S=20
LOG="$OUT/gpu_check.log"
: >"$LOG"
: >"$WORK/steps.tsv"

# run_step NAME SECONDS COMMAND...: run it under timeout, log its output, record its outcome. A step
# never runs past the whole check's budget (BUDGET_S, minus what the report needs), so the report
# always comes out.
run_step() {
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS rc verdict left=$((BUDGET_S - REPORT_S - SECONDS))
    if [ "$left" -lt 10 ]; then
        skip_step "$name" "the check's ${BUDGET_S}s budget is spent"
        return
    fi
    if [ "$limit" -gt "$left" ]; then limit=$left; fi
    echo "===== $name (limit ${limit}s): $*" | tee -a "$LOG"
    timeout --kill-after=5 "$limit" "$@" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    if [ "$rc" -eq 0 ]; then
        verdict="ok"
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        verdict="timed out after ${limit}s"
    else
        verdict="failed (exit $rc)"
    fi
    printf '%s\t%s\t%s\n' "$name" "$verdict" "$((SECONDS - start))" >>"$WORK/steps.tsv"
    echo "===== $name: $verdict" | tee -a "$LOG"
}

# skip_step NAME WHY: record a step that does not run here.
skip_step() {
    echo "===== $1: skipped ($2)" | tee -a "$LOG"
    printf '%s\tskipped: %s\t0\n' "$1" "$2" >>"$WORK/steps.tsv"
}

NO_CUDA="dry run: needs a CUDA GPU"

if [ "$DRY_RUN" -eq 0 ]; then
    run_step environment 30 bash -c "
        nvidia-smi -L
        nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total,temperature.gpu --format=csv
        nproc
        $PY -c 'import sys, torch, triton; print(\"python\", sys.version.split()[0], \"| torch\", torch.__version__, \"| triton\", triton.__version__, \"| cuda\", torch.version.cuda, \"|\", torch.cuda.get_device_name() if torch.cuda.is_available() else \"no GPU visible to torch\")'
    "
else
    skip_step environment "$NO_CUDA"
fi

if [ "$DRY_RUN" -eq 1 ]; then
    skip_step wheels "dry run: the carried wheels are for the lent machine's Python"
elif ls .whl/*.whl >/dev/null 2>&1; then
    run_step wheels 60 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$WORK/site" .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:$WORK/site"  # after the checkout: the carried wheels never shadow it
else
    skip_step wheels "no .whl/ folder carried (docs/gpu.md says which wheels the lent machine needs)"
fi
run_step imports 30 "$PY" -c "
import importlib
for name in ('open_clip', 'av', 'onnxruntime', 'triton', 'mamba_ssm', 'causal_conv1d', 'muse_infer._C'):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, '__version__', 'imported'))
    except Exception as error:
        print(name, 'NOT importable:', type(error).__name__, str(error)[:120])
"

if [ "$DRY_RUN" -eq 0 ]; then
    TEST_FILES=()
    for file in tests/test_scan_matrix.py tests/test_triton_scan.py tests/test_scan_op.py tests/test_precision.py \
        tests/test_gpu_decoder.py; do
        if [ -f "$file" ]; then TEST_FILES+=("$file"); else echo "missing $file: not run" | tee -a "$LOG"; fi
    done
    run_step "pytest -m gpu" 180 "$PY" -m pytest -m gpu -q -rfEs -p no:cacheprovider --durations=8 \
        --junitxml "$WORK/gpu_tests.xml" "${TEST_FILES[@]}"
    cp "$WORK/gpu_tests.xml" "$OUT/gpu_tests.xml" 2>/dev/null
    run_step bench_encoder 100 "$PY" benchmarks/bench_encoder.py --device cuda --batch 8 64 --repeats 10 \
        --budget-s 80 --json "$WORK/encoder.json"
    run_step bench_scan 60 "$PY" benchmarks/bench_scan.py --device cuda --shapes 1,512,3060,16 16,512,3060,16 \
        --dtypes float32 bfloat16 --ref-repeats 1 --json "$WORK/scan.json"
    run_step bench_end_to_end 80 "$PY" benchmarks/bench_end_to_end.py --videos 256 --json "$WORK/e2e.json"
    run_step gpu_decode 90 "$PY" benchmarks/gpu_decode.py --videos 2 --repeats 3 --json "$WORK/decode.json"
    run_step bench_train 90 "$PY" benchmarks/bench_train.py --steps 300 --batch 32 --budget-s 60 \
        --json "$WORK/train.json"
    run_step "bench_encoder --compile" 100 "$PY" benchmarks/bench_encoder.py --device cuda --batch 64 \
        --variants fp32 bf16 --compile --repeats 10 --budget-s 85 --json "$WORK/compile.json"
    run_step bench_triton_bidir 45 "$PY" benchmarks/bench_triton_bidir.py --budget-s 30 \
        --markdown "$WORK/triton_bidir.md"
else
    skip_step "pytest -m gpu" "$NO_CUDA"
    run_step bench_encoder 60 "$PY" benchmarks/bench_encoder.py --dry-run --json "$WORK/encoder.json"
    skip_step bench_scan "$NO_CUDA"
    run_step bench_end_to_end 60 "$PY" benchmarks/bench_end_to_end.py --dry-run --json "$WORK/e2e.json"
    run_step gpu_decode 60 "$PY" benchmarks/gpu_decode.py --dry-run --json "$WORK/decode.json"
    run_step bench_train 60 "$PY" benchmarks/bench_train.py --dry-run --json "$WORK/train.json"
    skip_step "bench_encoder --compile" "$NO_CUDA"
    skip_step bench_triton_bidir "$NO_CUDA"
fi

REPORT_FLAG=""
if [ "$DRY_RUN" -eq 1 ]; then REPORT_FLAG="--dry-run"; fi
timeout "$REPORT_S" "$PY" benchmarks/gpu_report.py "$WORK" "$OUT" $REPORT_FLAG 2>&1 | tee -a "$LOG"
echo "results in $OUT: $(ls "$OUT" | tr '\n' ' ')"
