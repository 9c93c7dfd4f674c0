"""Every Python snippet of the README runs as written: in README order, in one fresh process, in a folder
where `muse-infer demo --videos videos` left the demo videos (what the README says they need).

The README's code blocks are its indented paragraphs. Each is either shell (its lines start with a
command: muse-infer, pip, python -m, ...) or Python (it compiles); anything else fails the test, so
no snippet is left out by being misread. Nothing in a snippet is substituted. The Ray snippet starts
a local Ray instance (~30-50 s here): it runs in a test of its own, marked slow.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SHELL_COMMANDS = (
    "muse-infer ",
    "pip ",
    "python3 -m venv ",
    "python -m ",
    "python -c ",
    "ruff ",
    "bash ",
    "MUSE_INFER_TOKEN=",
)
CLI = [sys.executable, "-c", "from muse_infer.cli import main; main()"]

# Runs the snippets given as JSON [[line, code], ...] on stdin, each in a namespace of its own; stops
# at the first that raises, naming its README line.
RUNNER = """
import json, sys, traceback
for line, code in json.load(sys.stdin):
    print(f"--- README line {line}", flush=True)
    try:
        exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__main__"})
    except BaseException:
        traceback.print_exc()
        sys.exit(f"the snippet at README line {line} failed")
print("--- all ran")
"""


def code_blocks() -> list[tuple[int, str]]:
    """(first line number, text without the 4-space indent) of each indented paragraph."""
    blocks, current, start = [], [], 0
    lines = README.read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        if line.startswith("    ") and (current or number == 1 or not lines[number - 2].strip()):
            current, start = current + [line[4:]], start or number
        else:
            if current:
                blocks.append((start, "\n".join(current)))
            current, start = [], 0
    if current:
        blocks.append((start, "\n".join(current)))
    return blocks


def is_shell(code: str) -> bool:
    commands = [line for line in code.splitlines() if line and not line[0].isspace()]
    return all(line.startswith(SHELL_COMMANDS) for line in commands)


def python_snippets() -> list[tuple[int, str]]:
    snippets = []
    for line, code in code_blocks():
        if is_shell(code):
            continue
        try:
            compile(code, f"README.md:{line}", "exec")
        except SyntaxError as error:
            raise AssertionError(f"README line {line}: neither shell nor Python ({error})\n{code}") from None
        snippets.append((line, code))
    return snippets


def test_every_code_block_is_shell_or_python():
    snippets = python_snippets()
    assert len(snippets) >= 6, snippets  # the SDK, Ray, moments, precision, vectors, scan snippets
    assert any("encode_folder_ray" in code for _, code in snippets)


def uses_ray(code: str) -> bool:
    return "ray_engine" in code


def run_snippets(snippets: list[tuple[int, str]], folder: Path) -> str:
    """Make the demo videos in ``folder`` as the README says, then run ``snippets`` there; stdout."""
    demo = subprocess.run(
        [*CLI, "demo", "--videos", "videos"], cwd=folder, capture_output=True, text=True, timeout=300
    )
    assert demo.returncode == 0, demo.stderr
    result = subprocess.run(
        [sys.executable, "-c", RUNNER],
        cwd=folder,
        input=json.dumps(snippets),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    assert result.stdout.count("--- README line") == len(snippets) and "--- all ran" in result.stdout
    return result.stdout


def test_python_snippets_run_as_written(tmp_path):
    snippets = [(line, code) for line, code in python_snippets() if not uses_ray(code)]
    assert len(snippets) >= 5
    run_snippets(snippets, tmp_path)
    assert (tmp_path / "emb.npy").is_file() and (tmp_path / "moments.npy").is_file()


@pytest.mark.slow
def test_the_ray_snippet_runs_as_written(tmp_path):
    snippets = [(line, code) for line, code in python_snippets() if uses_ray(code)]
    assert len(snippets) == 1
    run_snippets(snippets, tmp_path)
    assert (tmp_path / "emb_ray.npy").is_file()
