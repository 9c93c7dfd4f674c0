"""benchmarks/gpu_check.sh --dry-run: the GPU check's steps run on a CPU-only machine, so that the script
and the benchmarks it calls do not rot between lent GPU machines. CUDA-only steps say they are skipped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_exercises_every_benchmark_and_writes_the_report(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    result = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.log", "gpu_table.md"]
    report = json.loads((out / "gpu_check.json").read_text())
    outcomes = {step["step"]: step["outcome"] for step in report["steps"]}
    for step in ("bench_encoder", "bench_end_to_end", "gpu_decode", "bench_train", "imports"):
        assert outcomes[step] == "ok", (step, outcomes)
    for step in ("environment", "pytest -m gpu", "bench_scan", "bench_encoder --compile"):
        assert outcomes[step].startswith("skipped: dry run"), (step, outcomes)
    rows = {row["variant"]: row for row in report["encoder"]["rows"]}
    assert set(rows) == {"fp32", "bf16", "bf16+float"}
    assert all(row["min_cosine_vs_fp32"] >= 0.999 for row in rows.values())
    assert report["e2e"]["all_rows_finite"] and report["e2e"]["bound"] in ("decode", "model")
    assert report["train"]["steps_per_s"] > 0 and report["train"]["loss_first"] > 0
    assert {row["sampling"] for row in report["decode"]["rows"]} == {"exact", "keyframes"}
    assert all(row["frames_equal"] and row["cpu_s_gpu_decoder"] > 0 for row in report["decode"]["rows"])
    table = (out / "gpu_table.md").read_text()
    assert "DRY RUN" in table and "| bf16+float | 2 |" in table
    assert "## Decoding on the GPU against the CPU" in table
    assert not list(tmp_path.glob("muse_gpu_check.*"))  # the work folder is removed
