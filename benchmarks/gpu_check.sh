#!/usr/bin/env bash
# The one GPU check of the selective scan, run from the repository root on the lent GPU machine:
#
#     bash benchmarks/gpu_check.sh        # results under $OUT if set, else ./out
#
# Steps, each under `timeout` and recorded; a failed step does not stop the next (7.5 min at most):
#   1. environment: nvidia-smi -L, the GPU's clocks, python / torch / triton versions
#   2. pytest -m gpu on tests/test_scan_matrix.py, tests/test_triton_scan.py and tests/test_scan_op.py (those present)
#   3. python benchmarks/bench_scan.py --device cuda --json $OUT/scan_gpu.json  (the op's benchmark;
#      its CPU half is skipped: without muse_infer._C the CPU op there is only the reference)
#   4. python benchmarks/bench_triton_bidir.py                           (launch shapes, BiMamba)
#   5. $OUT/gpu_table.md: each step's outcome, the test summary, both benchmarks' numbers
# Files under $OUT: gpu_check.log, gpu_tests.xml, scan_gpu.json, triton_scan_gpu.json,
# triton_scan_gpu.md, gpu_table.md.
# Nothing is installed: the checkout goes on PYTHONPATH. muse_infer._C is not built there, so the
# op comes from op.py's Python definition; pytest is part of that machine's image (KINDS.md).
set -u
cd "$(dirname "$0")/.." || exit 1
OUT="${OUT:-./out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET  # compiled kernels, whatever the caller's shell had
PY="${PYTHON:-python3}"
LOG="$OUT/gpu_check.log"
: >"$LOG"
STEPS=()

# run_step NAME SECONDS COMMAND...: run it under timeout, log its output, record its outcome.
run_step() {
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS rc verdict
    echo "===== $name (limit ${limit}s): $*" | tee -a "$LOG"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    if [ "$rc" -eq 0 ]; then
        verdict="ok"
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        verdict="timed out after ${limit}s"
    else
        verdict="failed (exit $rc)"
    fi
    STEPS+=("| $name | $verdict | $((SECONDS - start)) s |")
    echo "===== $name: $verdict" | tee -a "$LOG"
}

run_step environment 20 bash -c "
    nvidia-smi -L
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total,temperature.gpu --format=csv
    $PY -c 'import sys, torch, triton; print(\"python\", sys.version.split()[0], \"| torch\", torch.__version__, \"| triton\", triton.__version__, \"| cuda\", torch.version.cuda, \"|\", torch.cuda.get_device_name() if torch.cuda.is_available() else \"no GPU visible to torch\")'
"

TEST_FILES=()
for file in tests/test_scan_matrix.py tests/test_triton_scan.py tests/test_scan_op.py; do
    if [ -f "$file" ]; then TEST_FILES+=("$file"); else echo "missing $file: not run" | tee -a "$LOG"; fi
done
run_step "pytest -m gpu" 240 "$PY" -m pytest -m gpu -q -rfEs -p no:cacheprovider --durations=8 \
    --junitxml "$OUT/gpu_tests.xml" "${TEST_FILES[@]}"

if [ -f benchmarks/bench_scan.py ]; then
    run_step bench_scan 75 "$PY" benchmarks/bench_scan.py --device cuda --json "$OUT/scan_gpu.json"
else
    STEPS+=("| bench_scan | missing benchmarks/bench_scan.py | |")
fi

run_step bench_triton_bidir 100 "$PY" benchmarks/bench_triton_bidir.py --budget-s 70 \
    --json "$OUT/triton_scan_gpu.json" --markdown "$OUT/triton_scan_gpu.md"

printf '%s\n' "${STEPS[@]}" >"$OUT/.steps"
timeout 20 "$PY" - "$OUT" <<'EOF' 2>&1 | tee -a "$LOG"
"""Write gpu_table.md from the steps' outcomes, the JUnit summary and the benchmarks' outputs."""
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

out = Path(sys.argv[1])
lines = ["# GPU check of the selective scan", "", "| step | outcome | took |", "| --- | --- | ---: |"]
lines += (out / ".steps").read_text().splitlines()
(out / ".steps").unlink()

junit = out / "gpu_tests.xml"
if junit.exists():
    try:
        root = ET.parse(junit).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        lines += ["", "## GPU tests", "", ", ".join(f"{k}: {v}" for k, v in counts.items())]
        for case in suite.iter("testcase"):
            for tag in ("failure", "error"):
                bad = case.find(tag)
                if bad is not None:
                    message = (bad.get("message") or "").splitlines()[0][:200] if bad.get("message") else ""
                    lines.append(f"- {tag}: {case.get('classname')}::{case.get('name')}: {message}")
    except Exception as error:  # the table must still come out
        lines += ["", f"(could not read {junit.name}: {error!r})"]


def table(rows):
    keys = list(dict.fromkeys(k for row in rows for k in row))
    def cell(value):
        return f"{value:.4g}" if isinstance(value, float) else str(value)
    body = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    body += ["| " + " | ".join(cell(row.get(k, "")) for k in keys) + " |" for row in rows]
    return body


scan = out / "scan_gpu.json"
if scan.exists():
    lines += ["", "## benchmarks/bench_scan.py", ""]
    try:
        data = json.loads(scan.read_text())
        rows = data if isinstance(data, list) else next(
            (v for v in data.values() if isinstance(v, list) and v and isinstance(v[0], dict)), None
        ) if isinstance(data, dict) else None
        if rows and all(isinstance(r, dict) for r in rows):
            if isinstance(data, dict):
                setup = {k: v for k, v in data.items() if not isinstance(v, (list, dict))}
                setup.update({k: v for k, v in (data.get("setup") or {}).items() if not isinstance(v, (list, dict))})
                lines += [", ".join(f"{k}: {v}" for k, v in setup.items()), ""]
            lines += table(rows)
        else:
            lines += ["```json", json.dumps(data, indent=1)[:4000], "```"]
    except Exception as error:
        lines += [f"(could not read {scan.name}: {error!r})"]

triton_md = out / "triton_scan_gpu.md"
if triton_md.exists():
    lines += ["", "## benchmarks/bench_triton_bidir.py", "", triton_md.read_text()]

(out / "gpu_table.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
echo "results in $OUT: $(ls "$OUT" | tr '\n' ' ')"
