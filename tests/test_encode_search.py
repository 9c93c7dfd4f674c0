"""SDK encoders, the embedding index, `muse-infer encode-videos` (bad inputs, kill -9 and resume) and `search`.

Videos are generated here with PyAV (several codecs and containers, odd sizes, portrait, rotated,
0.5 s, 1 frame, 70 s at 0.5 fps) next to broken files of every kind the command must survive. The
tiny model with random seeded weights is enough to test the mechanics.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from muse_infer.data.writer import write_video

sys.path.insert(0, str(Path(__file__).parent))
from conftest import hang_env  # noqa: E402
from video_factory import make_video  # noqa: E402

FRAMES = 4
HANG = "hang.mp4"
CLI_ENV = hang_env(f"{HANG}=120")  # this file's decode "hangs" (tests/hooks/sitecustomize.py)
CLI = [sys.executable, "-c", "from muse_infer.cli import main; main()"]  # the `muse-infer` script
CLI_OPTIONS = ["--model", "tiny", "--device", "cpu", "--frames", str(FRAMES), "--batch-size", "2"]
CLI_OPTIONS += ["--chunk-size", "2", "--workers", "1", "--timeout", "4", "-q"]


def noise_video(path: Path, seed: int, frames: int, fps: float, size=(48, 64), codec=None) -> None:
    rng = np.random.default_rng(seed)
    write_video(path, rng.integers(0, 256, (frames, *size, 3), dtype=np.uint8), fps=fps, codec=codec)


def audio_only(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def garbage_packets(path: Path) -> None:
    """A valid container whose video packets are noise: it opens, and decodes to no frames."""
    from fractions import Fraction

    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(8):
            packet = av.Packet(rng.integers(0, 256, 400, dtype=np.uint8).tobytes())
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, i, i, Fraction(1, 10)
            packet.is_keyframe = True
            container.mux(packet)


def truncated_copy(source: Path, target: Path) -> None:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])


def build_corpus(root: Path) -> tuple[list[str], dict[str, str]]:
    """Good videos (relative paths) and bad files (relative path -> expected reason fragment)."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "folder.mp4").mkdir()  # a folder with a video extension is walked, not read
    noise_video(root / "a.mp4", 1, 20, 10)
    noise_video(root / "b_portrait.mov", 2, 12, 6, size=(64, 36))
    make_video(root / "c_odd.webm", 8, 4, size=(33, 47))
    noise_video(root / "d.avi", 4, 10, 5, codec="mpeg4")
    noise_video(root / "e_half_second.mkv", 5, 5, 10)
    noise_video(root / "f_one_frame.mp4", 6, 1, 25)
    noise_video(root / "g_70s.mp4", 7, 35, 0.5, size=(24, 32))
    make_video(root / "sub" / "h_rotated.mp4", 6, 3, size=(48, 64), rotation=90)
    noise_video(root / "sub" / "deeper" / "i.webm", 9, 6, 3)
    noise_video(root / "folder.mp4" / "inner.mp4", 10, 6, 3)
    noise_video(root / "K_UPPER.MP4", 11, 6, 3)
    noise_video(root / HANG, 12, 6, 3)
    good = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != HANG)
    (root / "empty.mp4").write_bytes(b"")
    truncated_copy(root / "a.mp4", root / "truncated.mp4")
    noise_video(root / "long.mkv", 13, 60, 10)
    truncated_copy(root / "long.mkv", root / "truncated.mkv")
    (root / "long.mkv").unlink()
    (root / "text.mp4").write_text("this is not a video\n")
    audio_only(root / "sub" / "audio_only.mp4")
    garbage_packets(root / "no_frames.mkv")
    (root / "broken_link.mp4").symlink_to(root / "does-not-exist.mp4")
    os.mkfifo(root / "fifo.mp4")
    (root / "unreadable.mp4").write_text("secret")
    (root / "unreadable.mp4").chmod(0)  # as root still readable, then it fails as "not a container"
    (root / "notes.txt").write_text("not a video extension: never looked at")
    bad = {
        "empty.mp4": "empty file",
        "truncated.mp4": "",
        "truncated.mkv": "truncated",
        "text.mp4": "not a readable video container",
        "sub/audio_only.mp4": "no video stream",
        "no_frames.mkv": "no decodable video frames",
        "broken_link.mp4": "file not found",
        "fifo.mp4": "not a regular file",
        "unreadable.mp4": "",
        HANG: "timed out",
    }
    return good, bad


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[str], dict[str, str]]:
    root = tmp_path_factory.mktemp("corpus") / "videos"
    root.mkdir()
    good, bad = build_corpus(root)
    return root, good, bad


@pytest.fixture(scope="module")
def video_encoder():
    from muse_infer import VideoEncoder

    return VideoEncoder("tiny", device="cpu", max_frames=FRAMES)


def run_cli(*args, env=None, check_rc=None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **CLI_ENV, **(env or {})}
    result = subprocess.run(
        [*CLI, *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=300,
    )
    if check_rc is not None:
        assert result.returncode == check_rc, f"rc {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def invoke(*args, check_rc=None):
    """The command line in this process (quicker than a subprocess): exit status and output."""
    from click.testing import CliRunner

    from muse_infer.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    if check_rc is not None:
        assert result.exit_code == check_rc, f"rc {result.exit_code}\n{result.output}"
    uncaught = result.exception is not None and not isinstance(result.exception, SystemExit)
    assert not uncaught, f"uncaught {result.exception!r}"
    return result


def load_pair(npy: Path) -> tuple[np.ndarray, dict]:
    """The rows and the sidecar, with the paths of the rows file (Parquet) as sidecar["paths"]."""
    import pyarrow.parquet as pq

    sidecar = json.loads(npy.with_suffix(".json").read_text())
    sidecar["paths"] = pq.read_table(npy.with_suffix(".rows.parquet")).column("path").to_pylist()
    return np.load(npy), sidecar


def read_failures(npy: Path) -> dict[str, str]:
    lines = npy.with_suffix(".failures.jsonl").read_text().splitlines()
    return {record["path"]: record["reason"] for record in map(json.loads, lines)}


@pytest.fixture(scope="module")
def clean_index(corpus, tmp_path_factory) -> Path:
    """One uninterrupted CLI run over the corpus: the reference for resumed runs."""
    root, _, _ = corpus
    out = tmp_path_factory.mktemp("clean") / "emb.npy"
    result = run_cli("encode-videos", root, "--out", out, *CLI_OPTIONS, check_rc=1)
    assert "Traceback" not in result.stderr
    assert "skipped 10" in result.stderr and "emb.failures.jsonl" in result.stderr
    return out


# --- SDK -------------------------------------------------------------------------------------


def test_video_encoder_rows_do_not_depend_on_batching(corpus, video_encoder):
    root, good, _ = corpus
    paths = [root / p for p in good[:5]]
    one_by_one = video_encoder.encode(paths, batch_size=1, workers=0)
    batched = video_encoder.encode(paths, batch_size=4, workers=1)
    assert one_by_one.shape == (5, video_encoder.embed_dim) and one_by_one.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(one_by_one, batched, atol=1e-6, rtol=0)


def test_video_encoder_on_error(corpus, video_encoder):
    from muse_infer.video import VideoDecodeError

    root, good, _ = corpus
    paths = [root / good[0], root / "text.mp4", root / good[1]]
    with pytest.raises(VideoDecodeError, match="text.mp4"):
        video_encoder.encode(paths, workers=0)
    rows = video_encoder.encode(paths, workers=0, on_error="nan")
    assert np.isnan(rows[1]).all() and np.isfinite(rows[[0, 2]]).all()
    kept = video_encoder.encode(paths, workers=0, on_error="skip", progress=True)
    assert kept.shape == (2, video_encoder.embed_dim) and np.array_equal(kept, rows[[0, 2]])
    results = list(video_encoder.encode_iter(paths, workers=0))
    assert [r.index for r in results] == [0, 1, 2] and "not a readable video" in results[1].error


def test_text_encoder_shares_the_model(video_encoder):
    from muse_infer import TextEncoder

    encoder = TextEncoder(video_encoder.backend)
    rows = encoder.encode(["a dog", "a cat"])
    assert rows.shape == (2, video_encoder.embed_dim) and rows.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(encoder.encode("a cat")[0], rows[1], atol=1e-6, rtol=0)
    assert encoder.identity == video_encoder.identity


def test_unknown_backend_is_a_clear_error():
    from muse_infer import TextEncoder
    from muse_infer.runtime import BackendError

    with pytest.raises(BackendError, match="export"):  # ONNX runs an export directory, not a name
        TextEncoder("tiny", backend="onnx")
    with pytest.raises(BackendError, match="not one of"):
        TextEncoder("tiny", backend="tensorflow")


def test_decode_pool_cuts_off_a_hanging_decode(corpus, monkeypatch):
    from muse_infer.video import FrameSettings, clip_inputs, load_video
    from muse_infer.video.pool import DecodePool

    root, good, _ = corpus
    for name, value in hang_env("a.mp4=60").items():
        monkeypatch.setenv(name, value)
    others = [p for p in good if p != "a.mp4"]
    paths = [str(root / "a.mp4"), str(root / others[0]), str(root / "text.mp4"), str(root / others[1])]
    started = time.monotonic()
    results = list(DecodePool(FrameSettings(max_frames=2), workers=2, timeout=2).imap(paths))
    assert time.monotonic() - started < 40
    assert [r.index for r in results] == [0, 1, 2, 3]
    assert "timed out after 2 s" in results[0].error
    assert results[1].error is None and results[1].pixels.shape == (2, 224, 224, 3)
    assert results[1].pixels.dtype == np.uint8  # workers ship uint8; the model side normalises:
    frames, mask = clip_inputs([results[1].pixels], max_frames=2)
    expected_frames, expected_mask = load_video(paths[1], max_frames=2)
    np.testing.assert_array_equal(frames[0], expected_frames.numpy())  # the very same bits
    np.testing.assert_array_equal(mask[0], expected_mask.numpy())
    assert "not a readable video container" in results[2].error
    assert results[3].error is None


def test_identity_of_a_checkpoint_ignores_its_location(tmp_path):
    from muse_infer import load_model
    from muse_infer.loading.checkpoint import save_checkpoint
    from muse_infer.loading.identity import model_identity, same_model

    model = load_model("tiny")
    first, second = tmp_path / "a.safetensors", tmp_path / "moved" / "b.safetensors"
    save_checkpoint(model, first)
    second.parent.mkdir()
    shutil.copy(first, second)
    a, b = model_identity(first, model.config), model_identity(second, model.config)
    assert a["kind"] == "checkpoint" and same_model(a, b)
    assert not same_model(a, model_identity("tiny", model.config))
    assert "backend" not in a


# --- encode-videos ---------------------------------------------------------------------------


def test_encode_videos_skips_every_bad_file(corpus, clean_index, video_encoder):
    root, good, bad = corpus
    embeddings, sidecar = load_pair(clean_index)
    assert sidecar["paths"] == good  # every good video, sorted, none of the bad ones
    assert embeddings.shape == (len(good), video_encoder.embed_dim) and embeddings.dtype == np.float32
    assert sidecar["dim"] == video_encoder.embed_dim and sidecar["model"] == video_encoder.identity
    assert sidecar["settings"]["max_frames"] == FRAMES
    failures = read_failures(clean_index)
    assert set(failures) == set(bad)
    for path, fragment in bad.items():
        assert fragment in failures[path], (path, failures[path])
    assert not Path(str(clean_index) + ".parts").exists()
    expected = video_encoder.encode([root / p for p in good[:3]], workers=0)
    np.testing.assert_allclose(embeddings[:3], expected, atol=1e-6, rtol=0)


def wait_for_chunks(parts: Path, count: int, process: subprocess.Popen, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while len(list(parts.glob("chunk-*.npz"))) < count:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no work chunk appeared"
        time.sleep(0.05)


def kill_hard(process: subprocess.Popen) -> None:
    """kill -9 the run, then check that none of its decode workers outlives it."""
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 10
    while True:
        try:
            os.killpg(process.pid, 0)  # any process left in the run's session?
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, "decode workers survived the kill"
        time.sleep(0.1)


def start_cli(*args) -> subprocess.Popen:
    return subprocess.Popen(
        [*CLI, *map(str, args)],
        env={**os.environ, **CLI_ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def test_kill_and_resume_equals_a_clean_run(corpus, clean_index, tmp_path):
    root, _, _ = corpus
    out = tmp_path / "emb.npy"
    parts = Path(str(out) + ".parts")
    command = ["encode-videos", root, "--out", out, *CLI_OPTIONS]
    process = start_cli(*command)  # killed once some chunks are saved
    wait_for_chunks(parts, 2, process)
    kill_hard(process)
    seed = int(os.environ.get("MUSE_TEST_KILL_SEED", random.randrange(1000)))
    delay = random.Random(seed).uniform(0.5, 8.0)
    process = start_cli(*command)  # killed at a random moment
    time.sleep(delay)
    if process.poll() is None:
        kill_hard(process)
    result = run_cli(*command)
    assert result.returncode == 1, f"kill seed {seed}, delay {delay:.1f} s\n{result.stderr}"
    expected, expected_sidecar = load_pair(clean_index)
    embeddings, sidecar = load_pair(out)
    assert sidecar["paths"] == expected_sidecar["paths"], f"kill seed {seed}"
    np.testing.assert_allclose(embeddings, expected, atol=1e-6, rtol=0)
    # Same batches as the clean run, hence the same bits (see muse_infer.jobs.encode).
    np.testing.assert_array_equal(embeddings, expected)
    assert read_failures(out) == read_failures(clean_index)
    assert not parts.exists()


def test_sigterm_saves_like_ctrl_c_and_the_rerun_equals_a_clean_run(corpus, clean_index, tmp_path):
    """SIGTERM (job schedulers, containers) to the command alone, as `kill` sends it: exit 130, the
    finished batches kept, a message saying so; the same command then gives the clean run's index."""
    root, _, _ = corpus
    out = tmp_path / "emb.npy"
    parts = Path(str(out) + ".parts")
    command = [*CLI, "encode-videos", str(root), "--out", str(out), *map(str, CLI_OPTIONS)]
    process = subprocess.Popen(
        command, env={**os.environ, **CLI_ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for_chunks(parts, 1, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "finished videos are saved" in stderr and "Traceback" not in stderr
    assert parts.is_dir() and not out.exists()
    result = run_cli("encode-videos", root, "--out", out, *CLI_OPTIONS)
    assert result.returncode == 1, result.stderr
    assert "already done" in result.stderr
    embeddings, sidecar = load_pair(out)
    expected, expected_sidecar = load_pair(clean_index)
    assert sidecar["paths"] == expected_sidecar["paths"]
    np.testing.assert_array_equal(embeddings, expected)
    assert read_failures(out) == read_failures(clean_index)
    assert not parts.exists()


def test_interrupted_before_anything_was_saved_says_so(tmp_path):
    root, out = tmp_path / "videos", tmp_path / "emb.npy"
    root.mkdir()
    noise_video(root / HANG, 1, 4, 2)  # its decode "hangs" (CLI_ENV): nothing can be saved
    process = subprocess.Popen(
        [*CLI, "encode-videos", str(root), "--out", str(out), *map(str, CLI_OPTIONS[:-3]), "--timeout", "60"],
        env={**os.environ, **CLI_ENV},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (Path(str(out) + ".parts") / "job.json").exists():  # the job has started
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "before any video was saved" in stderr and "are saved" not in stderr


def test_rerun_adds_new_files_and_redoes_changed_ones(tmp_path, video_encoder):
    from muse_infer.jobs.encode import encode_folder

    root, out = tmp_path / "videos", tmp_path / "emb.npy"
    root.mkdir()
    for seed, name in enumerate(["a.mp4", "c.mp4", "e.mkv", "g.webm"]):
        noise_video(root / name, seed, 4, 2)
    (root / "bad.mp4").write_text("not a video")
    summary = encode_folder(root, out, video_encoder, batch_size=2, workers=0, progress=False)
    assert summary.exit_code == 1 and summary.encoded == 4
    before, _ = load_pair(out)
    noise_video(root / "b_added.mp4", 21, 4, 2)  # sorts between existing files
    (root / "e.mkv").unlink()
    noise_video(root / "c.mp4", 22, 6, 3)  # replaced by another video
    summary = encode_folder(root, out, video_encoder, batch_size=2, workers=0, progress=False)
    assert (summary.reused, summary.encoded_now, len(summary.failures)) == (2, 2, 1)
    assert summary.dropped == [
        {"path": "c.mp4", "why": "changed (encoded again)"},
        {"path": "e.mkv", "why": "deleted"},
    ]
    assert "2 rows of the earlier index dropped (1 changed (encoded again), 1 deleted)" in summary.line()
    after, sidecar = load_pair(out)
    # Unchanged files keep their order; new and changed ones follow, sorted (muse_infer.jobs.encode).
    assert sidecar["paths"] == ["a.mp4", "g.webm", "b_added.mp4", "c.mp4"]
    np.testing.assert_array_equal(after[[0, 1]], before[[0, 3]])
    fresh = video_encoder.encode([root / "b_added.mp4", root / "c.mp4"], workers=0)
    np.testing.assert_allclose(after[[2, 3]], fresh, atol=1e-6, rtol=0)
    assert "bad.mp4" in read_failures(out)
    (root / "bad.mp4").unlink()  # nothing left to fail: exit status 0
    assert encode_folder(root, out, video_encoder, workers=0, progress=False).exit_code == 0


def test_encode_videos_refuses_an_index_made_with_other_settings(corpus, clean_index, tmp_path):
    root, _, _ = corpus
    out = tmp_path / "emb.npy"
    for suffix in (".npy", ".json", ".failures.jsonl"):
        shutil.copy(clean_index.with_suffix(suffix), out.with_suffix(suffix))
    options = [o if o != str(FRAMES) else "3" for o in CLI_OPTIONS]
    result = invoke("encode-videos", root, "--out", out, *options, check_rc=2)
    assert "--overwrite" in result.output and "settings" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["encode-videos", "/no/such/folder", "--out", "x.npy"], "not a folder"),
        (["encode-videos", ".", "--out", "x.txt", "--model", "tiny"], "must end with .npy"),
        (["encode-videos", "VIDEOS", "--out", "x.npy", "--model", "no-such-model"], "cannot load model"),
    ],
)
def test_encode_videos_usage_errors(args, message, tmp_path, corpus):
    args = [a.replace("x.", f"{tmp_path}/x.").replace("VIDEOS", str(corpus[0])) for a in args]
    result = invoke(*args, check_rc=2)
    assert message in result.output


# --- search ----------------------------------------------------------------------------------


def test_search_json_matches_the_sdk(clean_index):
    from muse_infer import EmbeddingIndex, TextEncoder

    queries = ["a dog on a beach", "static noise"]
    result = run_cli("search", *queries, "--index", clean_index, "--top-k", "4", "--json", check_rc=0)
    rows = json.loads(result.stdout)
    assert [r["query"] for r in rows] == [queries[0]] * 4 + [queries[1]] * 4
    index = EmbeddingIndex.load(clean_index)
    encoder = TextEncoder.for_index(index, device="cpu")
    for query in queries:
        listed = [r for r in rows if r["query"] == query]
        assert [r["rank"] for r in listed] == [1, 2, 3, 4]
        scores = [r["score"] for r in listed]
        assert scores == sorted(scores, reverse=True)
        sdk = index.search(query, top_k=4, text_encoder=encoder)
        assert [h.path for h in sdk] == [r["path"] for r in listed]
        assert [h.score for h in sdk] == scores  # each query is encoded alone: the same bits
    text = invoke("search", queries[0], "--index", clean_index, "--top-k", "2", check_rc=0).stdout
    assert text.splitlines()[0] == queries[0] and len(text.splitlines()) == 3


def test_search_by_vector_breaks_ties_by_row_order(clean_index):
    from muse_infer import EmbeddingIndex

    index = EmbeddingIndex.load(clean_index)
    hits = index.search(index.embeddings[3], top_k=len(index) + 5)
    assert hits[0].path == index.paths[3] and abs(hits[0].score - 1) < 1e-5
    assert len(hits) == len(index)
    tie = np.zeros(index.dim, np.float32)
    tie[0] = 1.0
    same = EmbeddingIndex(np.tile(tie, (len(index), 1)), index.metadata, index.rows)  # all rows equal
    assert [h.path for h in same.search(tie, top_k=4)] == index.paths[:4]


def test_search_refuses_another_model(clean_index):
    result = invoke("search", "a cat", "--index", clean_index, "--model", "tiny-meanP", check_rc=2)
    assert "built with tiny" in result.output


def broken_copies(clean_index: Path, folder: Path) -> dict[str, tuple[Path, str]]:
    """Index files broken in each way a user may meet: name -> (path to pass, expected message)."""
    import hashlib

    import pyarrow.parquet as pq

    cases = {}
    for name in ("no_sidecar", "truncated", "garbled_sidecar", "fewer_paths", "other_rows", "no_npy"):
        target = folder / name / "emb.npy"
        target.parent.mkdir()
        for suffix in (".npy", ".json", ".rows.parquet"):
            shutil.copy(clean_index.with_suffix(suffix), target.with_suffix(suffix))
        cases[name] = target
    cases["no_sidecar"].with_suffix(".json").unlink()
    data = cases["truncated"].read_bytes()
    cases["truncated"].write_bytes(data[: len(data) - 100])
    cases["garbled_sidecar"].with_suffix(".json").write_text('{"format": "muse-infer-ind')
    rows_file = cases["fewer_paths"].with_suffix(".rows.parquet")  # metadata of one row fewer, hash updated
    pq.write_table(pq.read_table(rows_file).slice(0, len(np.load(clean_index)) - 1), rows_file)
    sidecar = json.loads(cases["fewer_paths"].with_suffix(".json").read_text())
    sidecar["rows_sha256"] = hashlib.sha256(rows_file.read_bytes()).hexdigest()
    cases["fewer_paths"].with_suffix(".json").write_text(json.dumps(sidecar))
    rows = np.load(cases["other_rows"])
    np.save(cases["other_rows"], rows[::-1].copy())
    cases["no_npy"].unlink()
    messages = {
        "no_sidecar": "not a muse-infer index",
        "truncated": "truncated",
        "garbled_sidecar": "truncated sidecar",
        "fewer_paths": "lists",
        "other_rows": "does not match its sidecar",
        "no_npy": "embeddings file not found",
    }
    return {name: (cases[name], messages[name]) for name in cases}


def test_broken_indexes_give_clear_errors(clean_index, tmp_path):
    from muse_infer import EmbeddingIndex
    from muse_infer.index import IndexFileError

    cases = broken_copies(clean_index, tmp_path)
    for path, message in cases.values():
        with pytest.raises(IndexFileError, match=message):
            EmbeddingIndex.load(path)
    for path, message in cases.values():  # the same errors through the command line
        assert message in invoke("search", "a cat", "--index", path, check_rc=2).output
    result = invoke("search", "a cat", "--index", tmp_path / "missing.npy", check_rc=2)
    assert "no such index" in result.output


def test_every_command_has_help_with_an_example():
    for command in ("encode-videos", "search"):
        result = invoke(command, "--help", check_rc=0)
        assert "Example:" in result.output and "muse-infer " + command in result.output
    assert "Exit status" in invoke("encode-videos", "--help").output
