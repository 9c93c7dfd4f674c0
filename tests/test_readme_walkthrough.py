"""The README's walk-through ("From an empty machine to a result you can open"), run as written: its
muse-infer commands, in a fresh folder, in order. (The set-up lines before them are what CI runs.)"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## From an empty machine to a result you can open"


def walkthrough_commands() -> list[list[str]]:
    text = README.read_text()
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", len(SECTION))]
    lines = re.findall(r"^    (muse-infer .+)$", section, flags=re.M)
    return [shlex.split(line) for line in lines]


def test_the_walkthrough_works_as_written(tmp_path):
    commands = walkthrough_commands()
    assert [c[1] for c in commands] == ["demo", "encode-videos", "search", "search"]
    outputs = []
    for command in commands:
        result = subprocess.run(
            [sys.executable, "-c", "from muse_infer.cli import main; main()", *command[1:]],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"{shlex.join(command)}\n{result.stdout}\n{result.stderr}"
        outputs.append(result)
    captions = dict(
        line.split("\t")[::-1]
        for line in (tmp_path / "demo_videos" / "captions.txt").read_text().splitlines()
    )
    query = commands[2][2]
    first_hit = outputs[2].stdout.splitlines()[1].split()[-1]
    assert Path(first_hit).is_absolute() and Path(first_hit).is_file()
    assert Path(first_hit).name == captions[query]  # the video the caption was written for
    assert "caution" in outputs[2].stderr
    page = tmp_path / "results.html"
    assert page.is_file() and captions[commands[3][2]] in page.read_text()
