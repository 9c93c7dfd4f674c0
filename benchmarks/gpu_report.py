"""Merge the outputs of benchmarks/gpu_check.sh's steps into gpu_check.json and gpu_table.md.

    python benchmarks/gpu_report.py WORK_DIR OUT_DIR [--dry-run]

WORK_DIR holds what the steps wrote: ``steps.tsv`` (name, outcome, seconds a line), ``gpu_tests.xml``
(JUnit), ``encoder.json``, ``compile.json``, ``scan.json``, ``e2e.json``, ``decode.json``, ``train.json``,
``triton_bidir.md``; any may be missing (a step skipped, failed or timed out), and the report says so.
OUT_DIR gets ``gpu_check.json`` (everything, for the record) and ``gpu_table.md`` (the tables that
docs/benchmarks.md's GPU section takes, in its column order). Standard library only.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

JSON_STEPS = ("encoder", "compile", "scan", "e2e", "decode", "train")


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        return {"missing": f"{path.name}: {type(error).__name__}"}


def junit_summary(path: Path) -> dict:
    """Counts and failing test names of a JUnit file; {"missing": ...} when there is none."""
    if not path.exists():
        return {"missing": path.name}
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as error:
        return {"missing": f"{path.name}: {error}"}
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    bad = []
    for case in suite.iter("testcase"):
        for tag in ("failure", "error"):
            element = case.find(tag)
            if element is not None:
                message = (element.get("message") or "").splitlines()[:1]
                bad.append(f"{case.get('classname')}::{case.get('name')}: {' '.join(message)[:200]}")
    return {**counts, "not_passed": bad}


def table(rows: list[dict], columns: list[tuple[str, str]]) -> list[str]:
    """Markdown rows: ``columns`` is (key, header); a missing key is an empty cell."""
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + " --- |" * len(columns)]
    for row in rows:
        cells = [_cell(row.get(key, "")) for key, _ in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "/")


def setup_line(data: dict) -> list[str]:
    setup = data.get("setup") or {}
    return [", ".join(f"{k}: {v}" for k, v in setup.items()), ""] if setup else []


def encoder_section(data: dict, title: str) -> list[str]:
    if "rows" not in data:
        return [f"## {title}", "", f"not measured ({data.get('missing', 'no output')})", ""]
    columns = [
        ("variant", "variant"), ("batch", "batch"), ("videos_per_s", "videos/s"),
        ("ms_per_batch", "ms a batch"), ("median_s", "median s (CPU)"), ("peak_gib", "peak GiB"),
        ("syncs_per_call", "syncs a call"), ("first_call_s", "first call s"),
        ("min_cosine_vs_fp32", "min cosine vs fp32"), ("max_abs_error_vs_fp32", "max abs err vs fp32"),
        ("error", "error"), ("skipped", "skipped"),
    ]  # fmt: skip
    return [f"## {title}", "", *setup_line(data), *table(data["rows"], columns), ""]


def scan_section(data: dict) -> list[str]:
    if "rows" not in data:
        return [
            "## Selective scan (bench_scan.py)",
            "",
            f"not measured ({data.get('missing', 'no output')})",
            "",
        ]
    columns = [("shape", "batch, Di, L, N"), ("dtype", "dtype"), ("impl", "implementation"), ("ms", "ms")]
    columns += [("GBps", "GB/s"), ("vs_ref", "x ref")]
    rows = [{**r, "shape": ", ".join(map(str, r.get("shape", [])))} for r in data["rows"]]
    return ["## Selective scan (bench_scan.py)", "", *setup_line(data), *table(rows, columns), ""]


def decode_section(data: dict) -> list[str]:
    title = "## Decoding on the GPU against the CPU (gpu_decode.py)"
    if "rows" not in data:
        return [
            title,
            "",
            f"not measured ({data.get('unavailable') or data.get('missing', 'no output')})",
            "",
        ]
    columns = [
        ("videos", "videos"), ("sampling", "sampling"), ("cpu_s_cpu_decoder", "CPU s a video, CPU decoder"),
        ("cpu_s_gpu_decoder", "CPU s a video, NVDEC"), ("cpu_saved_x", "x"),
        ("wall_s_cpu_decoder", "wall s, CPU"), ("wall_s_gpu_decoder", "wall s, NVDEC"),
        ("cores_for_180_per_s_cpu", "cores for 180 videos/s, CPU"),
        ("cores_for_180_per_s_gpu", "cores for 180 videos/s, NVDEC"), ("frames_equal", "frames equal"),
        ("max_abs_difference", "max abs diff"), ("device_fallbacks", "fallbacks"),
    ]  # fmt: skip
    return [title, "", *setup_line(data), *table(data["rows"], columns), ""]


def flat_section(data: dict, title: str) -> list[str]:
    """A two-column table of a result's top-level numbers (e2e, train)."""
    if "missing" in data:
        return [f"## {title}", "", f"not measured ({data['missing']})", ""]
    rows = [{"what": k, "value": v} for k, v in data.items() if k != "setup"]
    return [f"## {title}", "", *setup_line(data), *table(rows, [("what", "what"), ("value", "value")]), ""]


def report(work: Path, out: Path, dry_run: bool) -> dict:
    steps = [line.split("\t") for line in _lines(work / "steps.tsv")]
    results = {name: read_json(work / f"{name}.json") for name in JSON_STEPS}
    results["gpu_tests"] = junit_summary(work / "gpu_tests.xml")
    results["steps"] = [{"step": s[0], "outcome": s[1], "seconds": s[2]} for s in steps if len(s) == 3]
    results["dry_run"] = dry_run
    lines = ["# GPU check", ""]
    if dry_run:
        lines += ["**DRY RUN on a machine without a GPU: the figures below are CPU smoke-test numbers of the", "tiny model, not GPU measurements.**", ""]  # fmt: skip
    lines += table(results["steps"], [("step", "step"), ("outcome", "outcome"), ("seconds", "took s")])
    tests = results["gpu_tests"]
    lines += ["", "## GPU tests (pytest -m gpu)", ""]
    if "missing" in tests:
        lines += [f"not run ({tests['missing']})"]
    else:
        lines += [", ".join(f"{k}: {tests[k]}" for k in ("tests", "failures", "errors", "skipped"))]
        lines += [f"- {name}" for name in tests["not_passed"]]
    lines += [""]
    lines += encoder_section(results["encoder"], "Video encoder, model only (bench_encoder.py)")
    lines += encoder_section(results["compile"], "Backbone compilation (bench_encoder.py --compile)")
    lines += scan_section(results["scan"])
    lines += flat_section(results["e2e"], "End to end (bench_end_to_end.py)")
    lines += decode_section(results["decode"])
    lines += flat_section(results["train"], "Training (bench_train.py)")
    bidir = work / "triton_bidir.md"
    if bidir.exists():
        lines += ["## Triton launch shapes (bench_triton_bidir.py)", "", bidir.read_text(), ""]
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "gpu_table.md").write_text("\n".join(lines) + "\n")
    return results


def _lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return []


if __name__ == "__main__":
    report(Path(sys.argv[1]), Path(sys.argv[2]), "--dry-run" in sys.argv[3:])
    print((Path(sys.argv[2]) / "gpu_table.md").read_text())
