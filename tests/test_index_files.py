"""``IndexFiles``, the one place that names an index's files; growing an index reads the previous
one once; the one reader of the failures file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from video_factory import make_video  # noqa: E402

from muse_infer.index import IndexFiles, read_failures  # noqa: E402


def test_every_file_of_an_index_is_named_by_index_files(tmp_path):
    files = IndexFiles.of(tmp_path / "emb.npy")
    assert IndexFiles.of(tmp_path / "emb.json") == files  # the sidecar names the same index
    names = [files.npy, files.sidecar, files.rows, files.failures, files.ann, files.ann_meta, files.thumbs]
    assert [p.name for p in names] == [
        "emb.npy", "emb.json", "emb.rows.parquet", "emb.failures.jsonl", "emb.ann.faiss", "emb.ann.json",
        "emb.thumbs",
    ]  # fmt: skip
    assert files.work.name == "emb.npy.parts" and files.trash(7).name == ".emb.npy.trash-7"


def test_an_encoded_index_has_exactly_the_files_index_files_names(tmp_path):
    from muse_infer.jobs.encode import encode_folder
    from muse_infer.runtime.spec import ModelSpec

    root = tmp_path / "videos"
    root.mkdir()
    for i in range(2):
        make_video(root / f"v{i}.mp4", 4 + i, 2)
    (root / "bad.mp4").write_text("no video")
    out = tmp_path / "out" / "emb.npy"
    spec = ModelSpec.resolve("tiny", clip_weights="random", device="cpu", max_frames=2)
    summary = encode_folder(root, out, spec, workers=0, progress=False)
    files = IndexFiles.of(out)
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(p.name for p in files.existing())
    assert summary.to_dict()["files"] == [str(p) for p in files.existing()]


def test_growing_an_index_reads_the_previous_one_once(tmp_path, monkeypatch):
    """A run that grows an index opens the earlier index once (when the job opens), and the new one
    once (to check what was written), which also serves the ANN refresh."""
    from muse_infer.index import build_ann
    from muse_infer.index import embedding_index as module
    from muse_infer.jobs.encode import encode_folder
    from muse_infer.runtime.spec import ModelSpec

    root = tmp_path / "videos"
    root.mkdir()
    for i in range(3):
        make_video(root / f"v{i}.mp4", 4 + i, 2)
    out = tmp_path / "emb.npy"
    spec = ModelSpec.resolve("tiny", clip_weights="random", device="cpu", max_frames=2)
    encode_folder(root, out, spec, workers=0, progress=False)
    build_ann(out, kind="flat")
    make_video(root / "v9.mp4", 5, 2)
    opened = []
    load = module.EmbeddingIndex.load.__func__

    def counting_load(cls, path, *args, **kwargs):
        index = load(cls, path, *args, **kwargs)
        opened.append(index.content_id)
        return index

    monkeypatch.setattr(module.EmbeddingIndex, "load", classmethod(counting_load))
    before = json.loads(IndexFiles.of(out).sidecar.read_text())["content_id"]
    summary = encode_folder(root, out, spec, workers=0, progress=False)
    after = json.loads(IndexFiles.of(out).sidecar.read_text())["content_id"]
    assert summary.encoded_now == 1 and summary.reused == 3
    assert opened == [before, after], opened  # the earlier index once, the written one once


def test_the_failures_file_is_read_by_one_reader_that_skips_damage(tmp_path):
    files = IndexFiles.of(tmp_path / "emb.npy")
    assert read_failures(files.npy) == []
    good = {"path": "caf\udce9.mp4", "reason": "truncated", "size": 3, "mtime_ns": 4}
    lines = [json.dumps(good), "{not json", json.dumps(["a list"]), json.dumps({"reason": "no path"}), ""]
    files.failures.write_text("\n".join(lines))
    assert read_failures(files.npy) == [good]
