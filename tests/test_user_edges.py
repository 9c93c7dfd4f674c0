"""What a new user runs into: empty and all-bad folders, files that are not ours, refused runs that
must leave nothing behind, search mistakes, blank queries, cautions, -v on every command, progress in
a log file, the --json summary and absolute paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from video_factory import make_video  # noqa: E402

CLI = [sys.executable, "-c", "from muse_infer.cli import main; main()"]
TINY = ["--model", "tiny", "--device", "cpu", "--frames", "2", "--workers", "0"]


def run(*args, check_rc=None) -> subprocess.CompletedProcess:
    result = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=300)
    if check_rc is not None:
        assert result.returncode == check_rc, f"rc {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result


def error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def listing(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("edges") / "videos"
    root.mkdir()
    for i in range(3):
        make_video(root / f"clip_{i}.mp4", 6 + i, 4)
    return root


@pytest.fixture(scope="module")
def demo_index(videos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo_index") / "emb.npy"
    run("encode-videos", videos, "--out", out, "--model", "demo", "--workers", "0", "-q", check_rc=0)
    return out


# --- encode-videos ------------------------------------------------------------------------------


@pytest.mark.parametrize("content", ["nothing", "not videos"])
def test_a_folder_without_videos_is_an_error_that_writes_nothing(tmp_path, content):
    root = tmp_path / "videos"
    root.mkdir()
    if content == "not videos":
        (root / "notes.txt").write_text("hello")
    result = run("encode-videos", root, "--out", tmp_path / "out" / "emb.npy", *TINY, check_rc=2)
    assert "no video files in this folder" in error_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["videos"]  # no index, no .parts, no out/


def test_a_folder_of_only_bad_files_gives_an_empty_index(tmp_path):
    root, out = tmp_path / "videos", tmp_path / "emb.npy"
    root.mkdir()
    (root / "a.mp4").write_text("not a video")
    (root / "b.mkv").write_bytes(b"")
    for _ in range(2):  # the same on a rerun
        result = run("encode-videos", root, "--out", out, *TINY, "-q", check_rc=1)
        assert "encoded 0 of 2 videos" in result.stderr and "skipped 2" in result.stderr
        assert np.load(out).shape == (0, 64)
        assert not Path(f"{out}.parts").exists()
    search = run("search", "a cat", "--index", out, check_rc=0)
    assert "(the index is empty)" in search.stdout


@pytest.mark.parametrize("foreign", ["emb.npy", "emb.json", "emb.failures.jsonl"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_files_not_written_by_muse_infer_are_never_replaced(videos, tmp_path, foreign, overwrite):
    (tmp_path / foreign).write_text("my own notes")
    before = listing(tmp_path)
    extra = ["--overwrite"] if overwrite else []
    result = run("encode-videos", videos, "--out", tmp_path / "emb.npy", *TINY, *extra, check_rc=2)
    line = error_line(result)
    assert "was not written by muse-infer" in line and "choose another --out" in line
    assert listing(tmp_path) == before


def test_overwrite_replaces_an_index_of_ours(videos, tmp_path):
    out = tmp_path / "emb.npy"
    run("encode-videos", videos, "--out", out, *TINY, "-q", check_rc=0)
    run("encode-videos", videos, "--out", out, *TINY, "--frames", "3", "-q", check_rc=2)  # other settings
    run("encode-videos", videos, "--out", out, *TINY, "--frames", "3", "--overwrite", "-q", check_rc=0)
    assert json.loads(out.with_suffix(".json").read_text())["settings"]["max_frames"] == 3


def test_refused_runs_leave_nothing_behind(videos, tmp_path):
    out = tmp_path / "emb.npy"
    run("encode-videos", videos, "--out", out, *TINY, "-q", check_rc=0)
    before = listing(tmp_path)
    result = run("encode-videos", videos, "--out", out, *TINY, "--frames", "3", check_rc=2)
    assert "different settings" in error_line(result)
    assert listing(tmp_path) == before and not Path(f"{out}.parts").exists()  # no lock left
    for bad_model in (["--model", "no-such-model"], ["--model", "tiny", "--device", "cuda:7"]):
        target = tmp_path / "new" / "emb.npy"
        run("encode-videos", videos, "--out", target, *bad_model, check_rc=2)
        assert not target.parent.exists()  # no empty folder for a run that never started


def test_json_summary_and_dropped_rows(videos, tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    for name in ("clip_0.mp4", "clip_1.mp4", "clip_2.mp4"):
        (root / name).write_bytes((videos / name).read_bytes())
    (root / "junk.mp4").write_text("junk")
    out = tmp_path / "emb.npy"
    first = json.loads(run("encode-videos", root, "--out", out, *TINY, "--json", "-q", check_rc=1).stdout)
    assert (first["videos"], first["encoded"], first["encoded_now"], first["already_done"]) == (4, 3, 3, 0)
    assert first["skipped"] == [{"path": "junk.mp4", "reason": first["skipped"][0]["reason"]}]
    assert "not a readable video" in first["skipped"][0]["reason"]
    assert set(first["files"]) >= {
        str(out),
        str(out.with_suffix(".json")),
        str(out.with_suffix(".rows.parquet")),
    }
    (root / "clip_1.mp4").unlink()
    (root / "junk.mp4").unlink()
    result = run("encode-videos", root, "--out", out, *TINY, "--json", "-q", check_rc=0)
    second = json.loads(result.stdout)
    assert second["dropped"] == [{"path": "clip_1.mp4", "why": "deleted"}]
    assert (second["encoded"], second["already_done"], second["exit_code"]) == (2, 2, 0)
    assert "1 rows of the earlier index dropped (1 deleted)" in result.stderr


def test_progress_in_a_log_file_is_plain_lines(videos, tmp_path):
    result = run("encode-videos", videos, "--out", tmp_path / "emb.npy", *TINY, check_rc=0)
    assert "\r" not in result.stderr
    assert "loading model tiny" in result.stderr
    assert "encoding: 3/3 videos" in result.stderr  # the closing line of the progress


def test_progress_lines_say_rate_and_time_left():
    from muse_infer.progress import duration_text, progress_line

    line = progress_line("encoding", 40, 230, "video", {"failed": 2}, 20.0)
    assert line == "encoding: 40/230 videos, 2 failed, 2 videos/s, about 1 min 35 s left"
    assert duration_text(7322) == "2 h 02 min"


@pytest.mark.parametrize("command", ["encode-videos", "search", "index info", "models", "eval"])
def test_every_command_takes_verbose_after_its_name(command):
    from click.testing import CliRunner

    from muse_infer.cli import main

    result = CliRunner().invoke(main, [*command.split(), "--help"])
    assert result.exit_code == 0 and "-v, --verbose" in result.output


def test_verbose_encode_and_search_say_what_they_do(videos, demo_index, tmp_path):
    encode = run("encode-videos", videos, "--out", tmp_path / "emb.npy", *TINY, "-q", "-v", check_rc=0)
    assert "INFO" in encode.stderr and "3 files under" in encode.stderr and "model tiny" in encode.stderr
    search = run("search", "a cat", "--index", demo_index, "-v", check_rc=0)
    assert "searching 3 rows: exact scan" in search.stderr


# --- search -------------------------------------------------------------------------------------


def test_search_index_mistakes_are_named(demo_index, tmp_path):
    typo = run("search", "a cat", "--index", tmp_path / "nope.npy", check_rc=2)
    assert "no such index (check the path" in error_line(typo)
    noise = tmp_path / "noise.npy"
    noise.write_bytes(os.urandom(4096))
    line = error_line(run("search", "a cat", "--index", noise, check_rc=2))
    assert "not a muse-infer index" in line and "pickle" not in line
    unfinished = tmp_path / "half.npy"
    Path(f"{unfinished}.parts").mkdir()
    assert "run the same encode-videos command again" in error_line(
        run("search", "a cat", "--index", unfinished, check_rc=2)
    )


@pytest.mark.parametrize("queries", [[""], ["  "], ["a cat", "\t"]])
def test_blank_queries_are_refused(demo_index, queries):
    line = error_line(run("search", *queries, "--index", demo_index, check_rc=2))
    assert "is empty" in line and f"query {len(queries)}" in line


def test_blank_queries_are_refused_by_the_sdk():
    from muse_infer import TextEncoder
    from muse_infer.errors import QueryError

    encoder = TextEncoder("tiny", device="cpu")
    with pytest.raises(QueryError, match="query 2"):
        encoder.encode(["a dog", " "])
    with pytest.raises(QueryError):
        encoder.encode([None])


def test_demo_and_random_weight_indexes_carry_a_caution(demo_index, videos, tmp_path):
    demo = run("search", "a red square", "--index", demo_index, check_rc=0)
    assert "caution:" in demo.stderr and "synthetic" in demo.stderr
    random_index = tmp_path / "emb.npy"
    run("encode-videos", videos, "--out", random_index, *TINY, "-q", check_rc=0)
    assert "random CLIP weights" in run("search", "a cat", "--index", random_index, check_rc=0).stderr


def test_absolute_paths(demo_index, videos):
    text = run("search", "a cat", "--index", demo_index, "--absolute", "--top-k", "3", check_rc=0).stdout
    printed = [line.split()[-1] for line in text.splitlines()[1:]]
    assert sorted(printed) == sorted(str(p) for p in videos.glob("*.mp4"))
    rows = json.loads(run("search", "a cat", "--index", demo_index, "--json", check_rc=0).stdout)
    assert all(Path(row["absolute_path"]) == videos / row["path"] for row in rows)


def test_a_moved_model_file_gets_the_right_hint(tmp_path):
    from muse_infer.cli.search import _moved_hint

    gone = str(tmp_path / "gone.safetensors")
    assert "--model with its new location" in _moved_hint({"model": gone, "clip_weights": None}, None, None)
    hint = _moved_hint({"model": "ViT-B-32", "clip_weights": gone}, None, None)
    assert "--clip-weights with their new location" in hint
    assert _moved_hint({"model": "ViT-B-32", "clip_weights": gone}, None, "elsewhere.bin") == ""


@pytest.mark.parametrize("group", [[], ["index"]])
def test_a_group_without_a_command_shows_help_and_one_error_line(group):
    result = run(*group, check_rc=2)
    assert "Commands:" in result.stdout
    assert "no command given" in error_line(result)


def test_an_unwritable_output_is_an_error_line(videos):
    result = run("encode-videos", videos, "--out", "/proc/muse/emb.npy", *TINY, check_rc=2)
    line = error_line(result)
    assert "/proc/muse" in line and "choose another --out" in line


class FakeTerminal:
    """A stream that says it is a terminal and keeps what is written."""

    def __init__(self):
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True


def test_the_bar_shows_decoding_before_the_first_batch_is_counted(videos):
    from muse_infer import VideoEncoder
    from muse_infer.progress import TerminalBar, progress_bar

    terminal = FakeTerminal()
    bar = progress_bar(3, "encoding", stream=terminal)
    assert isinstance(bar, TerminalBar)
    bar.bar.mininterval = 0  # draw every change (the default draws at most 10 a second)
    bar.status(decoded=2)
    assert "encoding" in terminal.text and "0/3" in terminal.text and "decoded=2" in terminal.text
    bar.close()
    calls = []
    encoder = VideoEncoder("tiny", device="cpu", max_frames=2)
    groups = encoder.encode_groups(sorted(videos.glob("*.mp4")), 8, 0, on_decoded=lambda: calls.append(1))
    assert sum(len(g) for g in groups) == 3 and len(calls) == 3  # each video, before its batch
