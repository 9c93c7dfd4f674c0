"""File names of any bytes, end to end (issue 19): names that are not UTF-8 (Latin-1 ``caf\\xe9``, a raw
``\\xff``), NFC/NFD twins, a newline in a name, a folder whose own name is not UTF-8, and tags holding
bytes that are not UTF-8, among good videos.

Every good video is encoded; each is found by ``search --json`` (valid JSON on a strict UTF-8 stdout)
with an ``absolute_path`` that ``open`` opens; served by row by ``serve``'s app; listed and shown on the
``--html`` page as text; a rerun changes no byte; a new odd-named file grows the index; moments too.
Then the guards: one file's fault (a vanished file, a link loop, an unreadable folder, an unusable
row, a thumbnail that fails) fails that file alone, an index that does not read back as written keeps
the work, and the pieces that carry names (the work directory's chunks, the Ray engine's plan, merged
and upgraded indexes, faiss files and shot detection in folders whose names are not UTF-8) keep them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote_to_bytes

import numpy as np
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from video_factory import make_video_with_bad_tags  # noqa: E402

from muse_infer.data.writer import write_video  # noqa: E402
from muse_infer.errors import JobError  # noqa: E402
from muse_infer.filenames import display_name, from_stored, is_utf8, stored_name, with_display  # noqa: E402
from muse_infer.index import (  # noqa: E402
    EmbeddingIndex,
    IndexFiles,
    build_ann,
    merge_indexes,
    upgrade_index,
    write_index,
)

CLI = [sys.executable, "-m", "muse_infer.cli"]
MODEL = ["--model", "tiny", "--clip-weights", "random", "--device", "cpu", "--frames", "2"]
OPTIONS = [*MODEL, "--batch-size", "4", "--workers", "1", "-q"]
# Latin-1, a raw byte, NFC and NFD twins, a newline, a folder not UTF-8, tags not UTF-8 (+ a Latin-1 name)
GOOD = [
    "plain.mp4",
    os.fsdecode(b"caf\xe9.mp4"),
    os.fsdecode(b"\xff.mp4"),
    "caf\u00e9.mp4",
    "cafe\u0301.mp4",
    "two\nlines.mp4",
    os.fsdecode(b"sub\xe9/clip.mkv"),
    os.fsdecode(b"tagg\xe9d.mov"),
]
BAD = os.fsdecode(b"broken\xe9.mp4")
EXCEPTION_NAME = re.compile(r"\b[A-Z][A-Za-z]*(Error|Exception)\b|Traceback")


def strict_env() -> dict:
    """A desktop's UTF-8 locale: stdout refuses what is not UTF-8 (a C locale would let it through)."""
    return {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}


def cli(*args, rc: int | tuple = 0) -> subprocess.CompletedProcess:
    result = subprocess.run([*CLI, *map(str, args)], capture_output=True, env=strict_env(), timeout=600)
    stderr = result.stderr.decode("utf-8", "backslashreplace")
    assert result.returncode in (rc if isinstance(rc, tuple) else (rc,)), stderr
    assert "Traceback" not in stderr, stderr
    return result


def invoke(*args, rc: int = 0) -> str:
    """The command line in this process (no interpreter to start): its stdout."""
    from click.testing import CliRunner

    from muse_infer.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == rc, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.stdout


def make_videos(root: Path, names: list[str], start: int = 0) -> None:
    """Each name a different good video: noise of its own seed (so each embedding differs clearly),
    or a .mov of numbered frames whose tags are not UTF-8."""
    for number, name in enumerate(names, start):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".mov"):
            make_video_with_bad_tags(path, 8 + 3 * number, 10)
            continue
        frames = np.random.default_rng(number).integers(0, 256, (8 + 3 * number, 48, 64, 3), dtype=np.uint8)
        write_video(path, frames, 10, codec="libx264")


def exact_rows(out: Path) -> list[str]:
    """The rows' exact names read straight from the Parquet file (``path``, or ``path_bytes``)."""
    table = pq.read_table(out.with_suffix(".rows.parquet"))
    texts, raw = table.column("path").to_pylist(), table.column("path_bytes").to_pylist()
    return [text if data is None else os.fsdecode(data) for text, data in zip(texts, raw, strict=True)]


def index_files(out: Path) -> dict[str, bytes]:
    suffixes = (".npy", ".json", ".rows.parquet", ".failures.jsonl")
    return {suffix: out.with_suffix(suffix).read_bytes() for suffix in suffixes}


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    """The odd-named folder (its own name not UTF-8) encoded once by the command line."""
    base = tmp_path_factory.mktemp("names")
    root = base / os.fsdecode(b"vid\xe9os")
    root.mkdir()
    make_videos(root, GOOD)
    (root / BAD).write_bytes(b"\x00\x00\x00\x18ftypmp42 this is no video")
    assert sorted(os.listdir(root)) == sorted({BAD, *(name.split("/")[0] for name in GOOD)})
    out = base / "emb.npy"
    result = cli("encode-videos", root, "--out", out, *OPTIONS, "--json", rc=1)
    return SimpleNamespace(root=root, out=out, summary=json.loads(result.stdout), base=base)


# --- the names ------------------------------------------------------------------------------------


def test_names_are_stored_losslessly_and_shown_as_text():
    rng = np.random.default_rng(0)
    names = [os.fsdecode(bytes(rng.integers(1, 256, rng.integers(1, 40)).tolist())) for _ in range(500)]
    names = [name.replace("/", "_") for name in names] + GOOD + ["caf\\xe9.mp4"]  # a literal backslash
    for name in names:
        text, data = stored_name(name)
        assert from_stored(text, data) == name and os.fsdecode(os.fsencode(name)) == name
        assert (data is None) == is_utf8(name) and text.encode("utf-8")  # the text column is UTF-8
        shown = display_name(name)
        assert shown.encode("utf-8") and not re.search("[\x00-\x1f\x7f-\x9f]", shown)
    assert display_name(GOOD[1]) == "caf\\xe9.mp4" and display_name("two\nlines") == "two\\nlines"
    assert display_name("caf\u00e9") != display_name("cafe\u0301")  # twins stay apart
    assert with_display({"path": "a.mp4", "reason": "x"}) == {"path": "a.mp4", "reason": "x"}
    assert list(with_display({"path": GOOD[2], "reason": "x"})) == ["path", "display_path", "reason"]


def test_every_good_video_is_encoded_and_every_name_kept(encoded):
    summary, out = encoded.summary, encoded.out
    assert summary["encoded"] == len(GOOD) and summary["videos"] == len(GOOD) + 1
    assert summary["skipped"] == [
        {"path": BAD, "display_path": "broken\\xe9.mp4", "reason": summary["skipped"][0]["reason"]}
    ]
    assert not EXCEPTION_NAME.search(summary["skipped"][0]["reason"])
    assert exact_rows(out) == sorted(GOOD)  # the twins are two rows
    table = pq.read_table(out.with_suffix(".rows.parquet"))
    assert sum(value is not None for value in table.column("path_bytes").to_pylist()) == 4
    failures = out.with_suffix(".failures.jsonl").read_bytes()
    assert failures.isascii() and [json.loads(line)["path"] for line in failures.splitlines()] == [BAD]
    sidecar = json.loads(out.with_suffix(".json").read_bytes().decode("ascii"))
    assert sidecar["root"] == str(encoded.root) and os.path.isdir(sidecar["root"])
    assert len(os.listdir(out.with_suffix(".thumbs"))) == 3 * len(GOOD)
    assert not Path(f"{out}.parts").exists()


def test_search_json_paths_open(encoded):
    result = cli("search", "a cat", "--index", encoded.out, "--top-k", len(GOOD), "--json")
    assert result.stdout.isascii()  # strict UTF-8 at the byte level; names as \udcXX escapes
    hits = json.loads(result.stdout)
    assert sorted(hit["path"] for hit in hits) == sorted(GOOD)
    for hit in hits:
        with open(hit["absolute_path"], "rb") as handle:  # the file to open, as Python's os takes it
            assert handle.read() == (encoded.root / hit["path"]).read_bytes()
        assert os.path.relpath(hit["absolute_path"], encoded.root) == hit["path"]
        assert hit.get("display_path", hit["path"]) == display_name(hit["path"])
        assert hit["display_absolute_path"] == display_name(hit["absolute_path"])  # the root is not UTF-8
    index = EmbeddingIndex.load(encoded.out)
    for row in range(len(index)):  # each video found by its own vector: the rows are distinct
        best = index.search(np.asarray(index.embeddings[row]), top_k=1)[0]
        assert (best.row, best.path) == (row, sorted(GOOD)[row])


def test_listing_and_html_page_show_names_as_text(encoded):
    page = encoded.base / "results.html"
    args = ("search", "a cat", "--index", encoded.out, "--top-k", len(GOOD), "--absolute", "--html", page)
    listing = cli(*args).stdout.decode("utf-8")
    shown = [line.split(maxsplit=2)[2] for line in listing.splitlines()[1:]]
    assert sorted(shown) == sorted(display_name(str(encoded.root / name)) for name in GOOD)
    html = page.read_bytes().decode("utf-8")
    assert "caf\\xe9.mp4" in html and "\\xff.mp4" in html and "two\\nlines.mp4" in html
    links = re.findall(r'<p class="path"[^>]*><a href="([^"#]+)', html)
    assert len(links) == len(GOOD)
    opened = {os.fsdecode(unquote_to_bytes(link)) for link in links}  # a link's bytes are the name's
    assert {os.path.relpath(encoded.root / name, encoded.base) for name in GOOD} == opened
    similar = re.findall(r'<ol class="similar"[^>]*>.*?</ol>', html)  # "more like this": the others
    assert len(similar) == len(GOOD)
    for listed in similar:
        names = {os.fsdecode(unquote_to_bytes(link)) for link in re.findall(r'<a href="([^"#]+)', listed)}
        assert len(names) == 5 and names < opened
    images = re.findall(r'<img class="keyframe" src="([^"]+)"', html)
    assert len(images) == 3 * len(GOOD) and all(
        (encoded.base / unquote_to_bytes(i).decode()).is_file() for i in images
    )


def test_served_by_row(encoded):
    pytest.importorskip("starlette", reason='needs the web extra: pip install "muse-infer[web]"')
    from starlette.testclient import TestClient

    from muse_infer.video.thumbnails import ThumbnailStore
    from muse_infer.web.app import create_app

    class VectorEncoder:  # the query: row 3's own vector, so row 3 ranks first
        def encode(self, texts):
            return np.asarray(index.embeddings[3])[None]

    index = EmbeddingIndex.load(encoded.out)
    store = ThumbnailStore(IndexFiles.of(encoded.out).thumbs)
    client = TestClient(create_app(index, VectorEncoder(), index.root, thumbnails=store))
    response = client.get(f"/api/search?q=anything&k={len(GOOD)}")
    assert response.status_code == 200 and response.content.isascii()
    results = json.loads(response.content)["results"]
    assert results[0]["row"] == 3 and results[0]["path"] == sorted(GOOD)[3]
    assert sorted(r["path"] for r in results) == sorted(GOOD)
    for result in results:
        assert result.get("display_path", result["path"]) == display_name(result["path"])
        video = client.get(result["media"])
        assert video.status_code == 200 and video.content == (encoded.root / result["path"]).read_bytes()
        thumbnail = client.get(result["thumbnails"][0])
        assert thumbnail.status_code == 200 and thumbnail.content[:2] == b"\xff\xd8"  # a JPEG
    assert client.get("/api/info").json()["rows"] == len(GOOD)


def test_rerun_changes_nothing_and_a_new_odd_name_grows_the_index(encoded, tmp_path):
    root = tmp_path / os.fsdecode(b"copy\xff")
    shutil.copytree(encoded.root, root)
    out = tmp_path / "emb.npy"
    first = json.loads(invoke("encode-videos", root, "--out", out, *OPTIONS, "--json", rc=1))
    before, rows = index_files(out), np.load(out)
    again = json.loads(invoke("encode-videos", root, "--out", out, *OPTIONS, "--json", rc=1))
    assert again["encoded_now"] == 0 and again["already_done"] == first["encoded"] == len(GOOD)
    assert index_files(out) == before  # every byte: rows, names, sidecar, failures
    new = os.fsdecode(b"new\xe8\xff.mp4")
    make_videos(root, [new], start=len(GOOD))
    grown = json.loads(invoke("encode-videos", root, "--out", out, *OPTIONS, "--json", rc=1))
    assert grown["encoded_now"] == 1 and grown["dropped"] == []
    assert exact_rows(out) == [*sorted(GOOD), new]  # earlier rows keep their numbers
    assert np.array_equal(np.load(out)[: len(GOOD)], rows)
    assert len(os.listdir(out.with_suffix(".thumbs"))) == 3 * (len(GOOD) + 1)


def test_moments_of_odd_names(tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    names = [os.fsdecode(b"caf\xe9.mp4"), "caf\u00e9.mp4", "cafe\u0301.mp4"]
    make_videos(root, names, start=10)  # 38-44 frames at 10 fps: 3 windows of 2 s each
    out = tmp_path / "moments.npy"
    window = ["--window", "2", "--stride", "1", "--no-thumbnails"]  # thumbnails: tested above
    invoke("encode-videos", root, "--out", out, *OPTIONS, *window)
    before = index_files(out)
    rows = exact_rows(out)
    assert sorted(set(rows)) == sorted(names) and len(rows) >= 3 * len(names)
    assert [path for path in dict.fromkeys(rows)] == sorted(names)  # a video's windows are consecutive
    hits = json.loads(cli("search", "a cat", "--index", out, "--per-video", "2", "--json").stdout)
    assert {hit["path"] for hit in hits} == set(names)
    assert all(hit["start_s"] < hit["end_s"] and os.path.isfile(hit["absolute_path"]) for hit in hits)
    index = EmbeddingIndex.load(out)
    assert [index.video_row_count(name) for name in names] == [rows.count(name) for name in names]
    invoke("encode-videos", root, "--out", out, *OPTIONS, *window)
    assert index_files(out) == before


# --- the index format -----------------------------------------------------------------------------


def test_sdk_indexes_keep_odd_names_through_merge_and_upgrade(tmp_path):
    literal = "caf\\xe9.mp4"  # looks like GOOD[1]'s display text: a different file all the same
    names = [*GOOD, literal]
    rows = np.random.default_rng(1).normal(size=(len(names), 8)).astype(np.float32)
    part = [tmp_path / os.fsdecode(b"part\xe90"), tmp_path / "part1"]
    for folder in part:
        folder.mkdir()
        write_index(folder / "emb.npy", rows, names, root=folder)
        assert list(EmbeddingIndex.load(folder / "emb.npy").paths) == names
    build_ann(part[0] / "emb.npy", kind="hnsw", threads=1)  # faiss, in a folder whose name is not UTF-8
    with_ann = EmbeddingIndex.load(part[0] / "emb.npy", ann=True)
    assert with_ann.search_method == "hnsw" and with_ann.search(rows[1], top_k=1)[0].path == names[1]
    merged = merge_indexes(tmp_path / "all.npy", [p / "emb.npy" for p in part])
    index = EmbeddingIndex.load(merged)
    prefixes = [os.fsdecode(b"part\xe90/"), "part1/"]
    assert list(index.paths) == [prefix + name for prefix in prefixes for name in names]
    root = os.fsencode(index.root)
    assert all(os.fsencode(index.absolute_path(row)).startswith(root) for row in range(len(index)))
    with pytest.raises(Exception, match="more than one of the shards"):
        merge_indexes(tmp_path / "twice.npy", [part[1] / "emb.npy", part[1] / "emb.npy"])

    # format 1 kept names in the sidecar's JSON (\udcXX escapes): such an index opens, and upgrades
    v1 = tmp_path / "v1.npy"
    np.save(v1, rows)
    from muse_infer.index.legacy import embeddings_sha256

    sidecar = {"format": "muse-infer-index", "format_version": 1, "count": len(names), "dim": 8}
    sidecar |= {"paths": names, "file_stats": [[1, 2]] * len(names), "model": {"name": "m"}}
    sidecar |= {"model_source": None, "settings": None, "embeddings_sha256": embeddings_sha256(rows)}
    v1.with_suffix(".json").write_text(json.dumps(sidecar))
    assert list(EmbeddingIndex.load(v1).paths) == names
    assert upgrade_index(v1) and list(EmbeddingIndex.load(v1).paths) == names


# --- one file's fault fails that file alone -------------------------------------------------------


def finish(out: Path, results: dict, dim: int = 4):
    """The job's assembly on synthetic results (path -> embedding)."""
    from muse_infer.jobs.assemble import finish_index
    from muse_infer.jobs.work import Entry, Known

    entries = [Entry(path, 10, 20) for path in sorted(results)]
    known = {path: Known(10, 20, embedding=row) for path, row in results.items()}
    job = {"root": "/videos", "model": {"name": "m"}, "settings": {}}
    return finish_index(out, entries, known, job, {"model": "m"}, "torch", dim)


def test_an_unusable_row_fails_its_file_alone(tmp_path):
    good = np.array([1, 0, 0, 0], np.float32)
    results = {
        "a.mp4": good,
        GOOD[1]: np.array([np.nan, 0, 0, 0], np.float32),
        "c.mp4": np.zeros(4, np.float32),
    }
    results["d.mp4"] = np.ones(5, np.float32)  # a damaged work file's row
    finished = finish(tmp_path / "emb.npy", results)
    assert finished.rows == 1 and list(EmbeddingIndex.load(tmp_path / "emb.npy").paths) == ["a.mp4"]
    reasons = {failure["path"]: failure["reason"] for failure in finished.failures}
    assert set(reasons) == {GOOD[1], "c.mp4", "d.mp4"}
    assert "non-finite" in reasons[GOOD[1]] and "all-zero" in reasons["c.mp4"] and "shape" in reasons["d.mp4"]
    assert not any(EXCEPTION_NAME.search(reason) for reason in reasons.values())


def test_an_index_that_does_not_read_back_keeps_the_work(tmp_path, monkeypatch):
    import muse_infer.index.store as store

    written = store.write_index_files

    def damaging_write(out, *args):
        written(out, *args)
        out.with_suffix(".failures.jsonl").write_text('{"path": "lost.mp4"}\n')  # not what was written

    monkeypatch.setattr(store, "write_index_files", damaging_write)
    with pytest.raises(
        JobError, match="does not read back as written .the failures file differs.*run the same"
    ):
        finish(tmp_path / "emb.npy", {"a.mp4": np.ones(4, np.float32)})

    def full_disk(out, *args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "write_index_files", full_disk)
    with pytest.raises(JobError, match=r"could not write the index .*No space left on device.*emb.npy.parts"):
        finish(tmp_path / "emb.npy", {"a.mp4": np.ones(4, np.float32)})


def test_vanished_files_link_loops_and_unreadable_folders_fail_alone(tmp_path, monkeypatch):
    from muse_infer import VideoEncoder
    from muse_infer.jobs import encode, work

    root = tmp_path / "videos"
    make_videos(root, ["keep.mp4", os.fsdecode(b"gone\xe9.mp4"), "sub/inner.mp4"])
    (root / "loop.mp4").symlink_to(root / "loop.mp4")
    walk = work.os.walk

    def walk_then_lose_a_file(top, onerror=None):  # the file goes between the walk and its decoding
        for folder, subfolders, names in walk(top, onerror=onerror):
            if folder.endswith("sub") and onerror is not None:
                onerror(PermissionError(13, "Permission denied", folder))
                continue
            yield folder, subfolders, names
        (root / os.fsdecode(b"gone\xe9.mp4")).unlink(missing_ok=True)

    monkeypatch.setattr(work.os, "walk", walk_then_lose_a_file)
    encoder = VideoEncoder("tiny", device="cpu", max_frames=2)
    out = tmp_path / "emb.npy"
    summary = encode.encode_folder(root, out, encoder, workers=0, progress=False, thumbnails=False)
    reasons = {failure["path"]: failure["reason"] for failure in summary.failures}
    assert list(EmbeddingIndex.load(out).paths) == ["keep.mp4"]
    assert reasons == {
        os.fsdecode(b"gone\xe9.mp4"): "file not found",
        "loop.mp4": "cannot examine the file (Too many levels of symbolic links)",
        "sub/": "folder not readable (Permission denied)",
    }


def test_a_thumbnail_that_fails_in_an_odd_way_fails_alone(tmp_path, monkeypatch, caplog):
    from muse_infer.video import thumbnails

    make_videos(tmp_path, ["a.mp4", "b.mp4"])
    real = thumbnails.thumbnail_jpegs

    def odd(path, *args):
        if str(path).endswith("a.mp4"):
            raise IndexError("list index out of range")  # a bug in a decoder path, say
        return real(path, *args)

    monkeypatch.setattr(thumbnails, "thumbnail_jpegs", odd)
    store = thumbnails.ThumbnailStore(tmp_path / "emb.thumbs")
    sources = [thumbnails.ThumbnailSource(name, 1, 1) for name in ("a.mp4", "b.mp4")]
    with caplog.at_level(logging.WARNING):
        summary = thumbnails.sync_thumbnails(store, tmp_path, sources, threads=2)
    assert (summary.made, summary.failed) == (1, 1) and store.has(sources[1])
    assert "no thumbnails for a.mp4: decoding its keyframes failed (list index out of range)" in caplog.text
    assert not EXCEPTION_NAME.search(caplog.text)


def test_shot_detection_reads_an_odd_name(tmp_path):
    pytest.importorskip("scenedetect", reason="needs the scenes extra")
    path = tmp_path / os.fsdecode(b"cut\xe9.mp4")
    make_videos(tmp_path, [path.name])
    code = "import sys, os; from muse_infer.video.shots import find_shot_cuts; "
    code += "print(find_shot_cuts(os.fsdecode(sys.argv[1].encode('utf-8', 'surrogateescape')), 3.0))"
    # in a child: before the fix OpenCV crashed the whole process (signal 11) on such a name
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr[-2000:]


def test_the_ray_engines_plan_takes_odd_names(tmp_path):
    from muse_infer.jobs.shards import plan_work
    from muse_infer.jobs.work import Entry

    todo = [Entry(name, 10, 20) for name in sorted(GOOD)]
    plan, resumed = plan_work(tmp_path, todo, 3, set())  # the digest of a name not UTF-8 failed here
    assert not resumed and [e.path for s in plan.shards for e in s.entries] == sorted(GOOD)
    again, resumed = plan_work(tmp_path, todo, 3, set())  # plan.json (ASCII JSON) read back exactly
    assert resumed and again == plan


def test_work_chunks_keep_odd_names_and_older_rows_files_still_open(tmp_path):
    from muse_infer.encoders import VideoResult
    from muse_infer.index.store import file_sha256, rows_path, sidecar_path, sidecar_text
    from muse_infer.jobs.work import ChunkStore, Entry

    store = ChunkStore(tmp_path)  # a run killed mid-way resumes from these records
    entries = [Entry(name, 10 + n, 20 + n) for n, name in enumerate(sorted(GOOD))]
    results = [VideoResult(n, entry.path, np.full(4, n + 1, np.float32)) for n, entry in enumerate(entries)]
    results[2] = VideoResult(2, entries[2].path, None, error="not a readable video container")
    store.write(results, entries, "fp32")
    with np.load(store.chunks()[0]) as chunk:
        assert bytes(chunk["records"]).isascii()
    known = store.load()
    assert sorted(known) == sorted(GOOD) and all(known[e.path].matches(e) for e in entries)
    assert known[entries[2].path].reason == "not a readable video container"

    # an index written before path_bytes existed (UTF-8 names only) opens as it did
    out = tmp_path / "old.npy"
    names = ["a.mp4", "caf\u00e9.mp4", "cafe\u0301.mp4"]
    write_index(out, np.eye(3, 4, dtype=np.float32), names)
    table = pq.read_table(rows_path(out))
    pq.write_table(table.drop_columns(["path_bytes"]), rows_path(out), compression="zstd")
    sidecar = json.loads(sidecar_path(out).read_text())
    sidecar_path(out).write_text(sidecar_text(sidecar | {"rows_sha256": file_sha256(rows_path(out))}))
    old = EmbeddingIndex.load(out)
    assert "path_bytes" not in old.rows.column_names and list(old.paths) == names
    assert old.search(np.eye(3, 4, dtype=np.float32)[2], top_k=1)[0].path == "cafe\u0301.mp4"


def test_fast_paths_match_their_reference():
    """The Arrow fast paths (all names UTF-8) give what the name-by-name reference gives."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from muse_infer.index.embedding_index import PathColumn
    from muse_infer.index.store import exact_paths, path_arrays

    rng = np.random.default_rng(2)
    alphabet = list("abcé\u0301\n/._-") + ["\u00e9", "\U0001f600"]
    for count in (0, 1, 7, 1000):
        names = ["".join(rng.choice(alphabet, rng.integers(1, 12))) for _ in range(count)]
        texts, raw = path_arrays(names)  # fast: one Arrow call
        pairs = [stored_name(name) for name in names]  # reference: name by name
        assert texts.to_pylist() == [t for t, _ in pairs] and raw.to_pylist() == [r for _, r in pairs]
        prefix = "sub/\u00e9/"
        joined = pc.binary_join_element_wise(prefix, texts, "")  # merged_rows' fast path
        assert joined.to_pylist() == path_arrays(prefix + n for n in names)[0].to_pylist()
        chunked = pa.chunked_array([texts[: count // 2], texts[count // 2 :]], pa.string())
        fast = PathColumn(chunked).counts()  # value_counts a chunk
        odd = {0: os.fsdecode(b"x\xe9")} if count else {}
        slow = PathColumn(chunked, odd).counts()  # counted name by name
        reference: dict[str, int] = {}
        for row, name in enumerate(names):
            reference[odd.get(row, name)] = reference.get(odd.get(row, name), 0) + 1
        assert slow == reference and fast == {n: names.count(n) for n in set(names)}
        assert exact_paths(raw) == {}
