"""Byte-mutated videos of several containers through `encode-videos`: no crash, no hang, no file lost
or duplicated, every failure reason in plain words, and a rerun that changes nothing.

The default run mutates 48 files; `pytest -m slow` runs 1,000.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from video_factory import make_video  # noqa: E402

CLI = [sys.executable, "-m", "muse_infer.cli"]
OPTIONS = ["--model", "tiny", "--device", "cpu", "--frames", "2", "--batch-size", "4", "--workers", "2"]
OPTIONS += ["--timeout", "20", "-q"]
BASES = {  # container -> codec
    "mp4": "libx264",
    "mkv": "libx264",
    "webm": "libvpx-vp9",
    "avi": "mpeg4",
    "mov": "libx264",
}
# A failure reason must not be a Python exception's name or a traceback.
EXCEPTION_NAME = re.compile(r"\b[A-Z][A-Za-z]*(Error|Exception)\b|Traceback|NoneType")


def base_videos(folder: Path) -> list[Path]:
    paths = []
    for number, (container, codec) in enumerate(BASES.items()):
        path = folder / f"base_{number}.{container}"
        make_video(path, 30, 10, size=(48, 64), codec=codec, keyframe_interval=10)
        paths.append(path)
    return paths


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One of: flipped bytes, a zeroed range, a cut, a duplicated range, a damaged header."""
    buffer = bytearray(data)
    kind = rng.integers(5)
    if kind == 0:  # flip a few random bytes
        for position in rng.integers(0, len(buffer), size=rng.integers(1, 64)):
            buffer[position] ^= int(rng.integers(1, 256))
    elif kind == 1:  # zero a range
        start = int(rng.integers(0, len(buffer)))
        buffer[start : start + int(rng.integers(1, 4096))] = bytes(min(4096, len(buffer)))[
            : len(buffer[start:])
        ]
    elif kind == 2:  # cut the file anywhere
        buffer = buffer[: int(rng.integers(0, len(buffer)))]
    elif kind == 3:  # duplicate a range in place
        start = int(rng.integers(0, len(buffer)))
        piece = buffer[start : start + int(rng.integers(1, 2048))]
        buffer[start:start] = piece
    else:  # damage the first bytes (headers, box sizes, EBML ids)
        for position in range(min(len(buffer), 64)):
            if rng.random() < 0.2:
                buffer[position] = int(rng.integers(0, 256))
    return bytes(buffer)


def mutated_corpus(root: Path, count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    bases = base_videos(root.parent)
    names = []
    for number in range(count):
        base = bases[number % len(bases)]
        name = f"m{number:04d}{base.suffix}"
        (root / name).write_bytes(mutate(base.read_bytes(), rng))
        names.append(name)
    return names


def run(root: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, "encode-videos", str(root), "--out", str(out), *OPTIONS],
        capture_output=True,
        text=True,
        timeout=3600,
    )


def indexed_paths(out: Path) -> list[str]:
    return pq.read_table(out.with_suffix(".rows.parquet")).column("path").to_pylist()


def check_mutated(tmp_path: Path, count: int) -> None:
    root = tmp_path / "videos"
    root.mkdir()
    names = mutated_corpus(root, count)
    out = tmp_path / "emb.npy"
    first = run(root, out)
    assert first.returncode in (0, 1), first.stderr  # 1: some files skipped, index written
    assert "Traceback" not in first.stderr
    failures = [json.loads(line) for line in out.with_suffix(".failures.jsonl").read_text().splitlines()]
    indexed = indexed_paths(out)
    failed = [f["path"] for f in failures]
    assert sorted(indexed + failed) == sorted(names)  # none lost, none twice
    assert len(set(indexed)) == len(indexed)
    for failure in failures:
        assert failure["reason"] and not EXCEPTION_NAME.search(failure["reason"]), failure
        assert "timed out" not in failure["reason"], failure  # no decode hung
    embeddings = np.load(out)
    assert embeddings.shape[0] == len(indexed) and np.isfinite(embeddings).all()
    before = {
        p.name: p.read_bytes() for p in (out, out.with_suffix(".json"), out.with_suffix(".failures.jsonl"))
    }

    second = run(root, out)  # nothing changed: the same index, no file decoded again
    assert second.returncode == first.returncode, second.stderr
    after = {
        p.name: p.read_bytes() for p in (out, out.with_suffix(".json"), out.with_suffix(".failures.jsonl"))
    }
    assert np.array_equal(np.load(out), embeddings)
    assert after[out.with_suffix(".failures.jsonl").name] == before[out.with_suffix(".failures.jsonl").name]
    assert after[out.with_suffix(".json").name] == before[out.with_suffix(".json").name]
    assert indexed_paths(out) == indexed
    assert not os.path.exists(f"{out}.parts")


def test_mutated_videos_fail_cleanly(tmp_path):
    check_mutated(tmp_path, 48)


@pytest.mark.slow
def test_a_thousand_mutated_videos_fail_cleanly(tmp_path):
    check_mutated(tmp_path, 1000)
