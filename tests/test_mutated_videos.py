"""Byte-mutated videos of several containers through `encode-videos`: no crash, no hang, no file lost
or duplicated, every failure reason in plain words, and a rerun that changes nothing.

Names and tags are hostile too: names that are not UTF-8 (Latin-1 ``\\xe9``, a raw ``\\xff``),
NFC/NFD twins (two files whose names differ only by Unicode normalisation), a newline in a name, and
bases whose tags hold bytes that are not UTF-8; the first eight files (one of each kind of name, both
tagged bases) and every twelfth are intact copies, which must be indexed.

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
from video_factory import make_video, make_video_with_bad_tags  # noqa: E402

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
    for container in ("mp4", "mkv"):  # tags (title, comment) holding bytes that are not UTF-8
        paths.append(Path(make_video_with_bad_tags(folder / f"tagged.{container}", 30, 10)))
    return paths


def hostile_name(number: int, suffix: str) -> str:
    """The name of file ``number``: plain, or (as the str os.listdir gives) not UTF-8, or one of a pair
    of NFC/NFD twins (numbers 8k+3 and 8k+4 share the stem), or holding a newline."""
    stem = f"m{number:04d}"
    kind = number % 8
    if kind == 1:
        return os.fsdecode(stem.encode() + b"-caf\xe9" + suffix.encode())  # Latin-1
    if kind == 2:
        return os.fsdecode(stem.encode() + b"-\xff" + suffix.encode())  # a raw byte
    if kind == 3:
        return f"{stem}-caf\u00e9{suffix}"  # NFC
    if kind == 4:
        return f"m{number - 1:04d}-cafe\u0301{suffix}"  # NFD: number - 1's twin
    if kind == 5:
        return f"{stem}-two\nlines{suffix}"
    return stem + suffix


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


def mutated_corpus(root: Path, count: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(every file's name, the names of the intact copies), names as os.listdir gives them."""
    rng = np.random.default_rng(seed)
    bases = base_videos(root.parent)
    names, intact = [], []
    for number in range(count):
        base = bases[(number - (number % 8 == 4)) % len(bases)]  # a twin: its pair's container
        name = hostile_name(number, base.suffix)
        data = base.read_bytes()
        if number < 8 or number % 12 == 0:  # one of each kind of name (tagged bases: 5, 6), then a few
            intact.append(name)
        else:
            data = mutate(data, rng)
        (root / name).write_bytes(data)
        names.append(name)
    assert len(set(names)) == count == len(os.listdir(root))  # twins are two files
    return names, intact


def run(root: Path, out: Path) -> subprocess.CompletedProcess:
    # strict stdout, as on a desktop's UTF-8 locale: printing a name that is not UTF-8 would fail there
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    return subprocess.run(
        [*CLI, "encode-videos", str(root), "--out", str(out), *OPTIONS, "--json"],
        capture_output=True,
        text=True,
        timeout=3600,
        env=env,
    )


def indexed_paths(out: Path) -> list[str]:
    """The rows' exact names: ``path``, or the bytes in ``path_bytes`` where the name is not UTF-8."""
    table = pq.read_table(out.with_suffix(".rows.parquet"))
    texts, raw = table.column("path").to_pylist(), table.column("path_bytes").to_pylist()
    return [text if data is None else os.fsdecode(data) for text, data in zip(texts, raw, strict=True)]


def check_mutated(tmp_path: Path, count: int) -> None:
    root = tmp_path / "videos"
    root.mkdir()
    names, intact = mutated_corpus(root, count)
    out = tmp_path / "emb.npy"
    first = run(root, out)
    assert first.returncode in (0, 1), first.stderr  # 1: some files skipped, index written
    assert "Traceback" not in first.stderr
    summary = json.loads(first.stdout)  # valid JSON on a strict UTF-8 stdout
    failures = [json.loads(line) for line in out.with_suffix(".failures.jsonl").read_text().splitlines()]
    indexed = indexed_paths(out)
    failed = [f["path"] for f in failures]
    assert sorted(indexed + failed) == sorted(names)  # none lost, none twice
    assert len(set(indexed)) == len(indexed)
    assert set(intact) <= set(indexed), sorted(set(intact) - set(indexed))  # odd names, bad tags: encoded
    assert sorted(s["path"] for s in summary["skipped"]) == sorted(failed)
    for failure in failures:
        assert failure["reason"] and not EXCEPTION_NAME.search(failure["reason"]), failure
        assert "timed out" not in failure["reason"], failure  # no decode hung
    embeddings = np.load(out)
    assert embeddings.shape[0] == len(indexed) and np.isfinite(embeddings).all()
    files = (
        out,
        out.with_suffix(".json"),
        out.with_suffix(".rows.parquet"),
        out.with_suffix(".failures.jsonl"),
    )
    before = {p.name: p.read_bytes() for p in files}

    second = run(root, out)  # nothing changed: the same index, no file decoded again
    assert second.returncode == first.returncode, second.stderr
    assert json.loads(second.stdout)["encoded_now"] == 0
    after = {p.name: p.read_bytes() for p in files}
    assert after == before
    assert np.array_equal(np.load(out), embeddings)
    assert indexed_paths(out) == indexed
    assert not os.path.exists(f"{out}.parts")


def test_mutated_videos_fail_cleanly(tmp_path):
    check_mutated(tmp_path, 48)


@pytest.mark.slow
def test_a_thousand_mutated_videos_fail_cleanly(tmp_path):
    check_mutated(tmp_path, 1000)
