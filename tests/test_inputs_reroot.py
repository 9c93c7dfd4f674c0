"""`encode-videos` given files and folders (paths relative to their common folder; a later run grows the
index, keeping rows outside what it covers), and `index reroot` for an index whose videos moved."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from video_factory import make_video  # noqa: E402

CLI = [sys.executable, "-c", "from muse_infer.cli import main; main()"]
TINY = ["--model", "tiny", "--clip-weights", "random", "--device", "cpu", "--frames", "2", "--workers", "0"]


def run(*args, check_rc=None) -> subprocess.CompletedProcess:
    result = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=300)
    if check_rc is not None:
        assert result.returncode == check_rc, f"rc {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result


def index_paths(out: Path) -> list[str]:
    from muse_infer import EmbeddingIndex

    return list(EmbeddingIndex.load(out).paths)


@pytest.fixture
def library(tmp_path) -> Path:
    root = tmp_path / "library"
    for relative, seed in [
        ("a.mp4", 3),
        ("b.webm", 4),
        ("trips/c.mp4", 5),
        ("trips/d.mkv", 6),
        ("other/e.mp4", 7),
    ]:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        make_video(root / relative, seed, 3)
    return root


def test_files_and_folders_are_encoded_relative_to_their_common_folder(library, tmp_path):
    out = tmp_path / "x.npy"
    run(
        "encode-videos",
        library / "a.mp4",
        library / "b.webm",
        library / "trips",
        "--out",
        out,
        *TINY,
        "-q",
        check_rc=0,
    )
    assert index_paths(out) == ["a.mp4", "b.webm", "trips/c.mp4", "trips/d.mkv"]
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["root"] == str(library.resolve())
    hits = json.loads(run("search", "a cat", "--index", out, "--json", check_rc=0).stdout)
    assert all(Path(hit["absolute_path"]).is_file() for hit in hits)


def test_two_files_of_one_folder(library, tmp_path):
    out = tmp_path / "two.npy"
    run(
        "encode-videos",
        library / "trips/c.mp4",
        library / "trips/d.mkv",
        "--out",
        out,
        *TINY,
        "-q",
        check_rc=0,
    )
    assert index_paths(out) == ["c.mp4", "d.mkv"]


def test_a_later_run_grows_the_index_and_keeps_rows_outside_what_it_covers(library, tmp_path):
    out = tmp_path / "grown.npy"
    run("encode-videos", library, "--out", out, *TINY, "-q", check_rc=0)
    before = index_paths(out)
    (library / "trips" / "c.mp4").unlink()  # deleted inside what the next run covers
    make_video(library / "trips" / "f.mp4", 9, 3)
    (library / "a.mp4").unlink()  # deleted outside it: the next run does not look there
    result = run("encode-videos", library / "trips", "--out", out, *TINY, "--json", check_rc=0)
    summary = json.loads(result.stdout)
    assert summary["encoded_now"] == 1 and [d["path"] for d in summary["dropped"]] == ["trips/c.mp4"]
    after = index_paths(out)
    assert after == [p for p in before if p != "trips/c.mp4"] + ["trips/f.mp4"]
    assert "a.mp4" in after  # kept: outside this run's inputs


def test_inputs_outside_the_indexs_folder_and_missing_inputs_are_named(library, tmp_path):
    out = tmp_path / "x.npy"
    run("encode-videos", library / "trips", "--out", out, *TINY, "-q", check_rc=0)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    make_video(elsewhere / "z.mp4", 2, 3)
    result = run("encode-videos", elsewhere / "z.mp4", "--out", out, *TINY, check_rc=2)
    assert "is not inside" in result.stderr and "index reroot" in result.stderr
    result = run("encode-videos", library / "nope.mp4", "--out", tmp_path / "y.npy", *TINY, check_rc=2)
    assert "nope.mp4: no such file" in result.stderr


def copy_moved(library: Path, new: Path) -> None:
    """The library copied elsewhere (new modification times, as cp gives) and the original gone."""
    shutil.copytree(library, new, copy_function=shutil.copyfile)
    for path in new.rglob("*.*"):
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 5_000_000_000))
    shutil.rmtree(library)


def test_reroot_makes_a_moved_indexs_paths_open_and_nothing_is_encoded_again(library, tmp_path):
    out = tmp_path / "emb.npy"
    run("encode-videos", library, "--out", out, *TINY, "-q", check_rc=0)
    thumbs = sorted((p.stat().st_mtime_ns, p.read_bytes()) for p in (tmp_path / "emb.thumbs").iterdir())
    new = tmp_path / "moved" / "videos"
    copy_moved(library, new)
    stale = json.loads(run("search", "a cat", "--index", out, "--json", check_rc=0).stdout)
    assert not any(Path(hit["absolute_path"]).exists() for hit in stale)
    result = run("index", "reroot", out, new, check_rc=0)
    assert "5 videos checked" in result.stderr and "5 with a new modification time" in result.stderr
    hits = json.loads(run("search", "a cat", "--index", out, "--json", check_rc=0).stdout)
    assert all(Path(hit["absolute_path"]).is_file() for hit in hits)
    assert all(hit["absolute_path"].startswith(str(new.resolve())) for hit in hits)
    again = run("encode-videos", new, "--out", out, *TINY, "--json", check_rc=0)
    summary = json.loads(again.stdout)
    assert summary["encoded_now"] == 0 and summary["already_done"] == 5 and not summary["dropped"]
    assert "loading model" not in again.stderr
    kept = sorted((p.stat().st_mtime_ns, p.read_bytes()) for p in (tmp_path / "emb.thumbs").iterdir())
    assert kept == thumbs  # the keyframes renamed to the new times, not made again


def test_reroot_refuses_missing_or_resized_videos_unless_allowed(library, tmp_path):
    out = tmp_path / "emb.npy"
    run("encode-videos", library, "--out", out, *TINY, "-q", check_rc=0)
    sidecar = out.with_suffix(".json").read_bytes()
    new = tmp_path / "moved"
    copy_moved(library, new)
    (new / "b.webm").unlink()
    (new / "trips" / "d.mkv").write_bytes(b"not the same")
    result = run("index", "reroot", out, new, check_rc=2)
    assert "1 of its videos are not there (b.webm)" in result.stderr
    assert "1 have another size (trips/d.mkv)" in result.stderr
    assert out.with_suffix(".json").read_bytes() == sidecar  # nothing changed
    run("index", "reroot", out, new, "--allow-missing", check_rc=0)
    assert json.loads(out.with_suffix(".json").read_text())["root"] == str(new.resolve())
    result = run("index", "reroot", out, tmp_path / "no-such-folder", check_rc=2)
    assert "not a folder" in result.stderr
