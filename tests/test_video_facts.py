"""Video facts (duration, shown width and height, frame rate, codec) noted by the readers while the
video is open, carried through decode workers and chunk records into the index's row records, kept
when a run grows an index, and absent (null) for results saved before facts existed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from video_factory import make_video  # noqa: E402

from muse_infer.video.facts import VideoFacts  # noqa: E402
from muse_infer.video.frames import FrameSettings  # noqa: E402

FACTS = ("duration_s", "width", "height", "fps", "codec")


@pytest.mark.parametrize(
    "name, frames, fps, size, options, expected",
    [
        ("a.mp4", 30, 10.0, (48, 64), {}, (3.0, 64, 48, 10.0, "h264")),
        ("b.webm", 13, 5.0, (40, 40), {}, (2.6, 40, 40, 5.0, "vp9")),
        ("c.avi", 24, 8.0, (32, 48), {}, (3.0, 48, 32, 8.0, "mpeg4")),
        ("turned.mp4", 20, 10.0, (48, 64), {"rotation": 90}, (2.0, 64, 48, 10.0, "h264")),
        ("odd.mkv", 12, 4.0, (31, 45), {"pix_fmt": "yuv444p"}, (3.0, 45, 31, 4.0, "h264")),
    ],
)
def test_readers_note_the_facts_of_the_video_they_open(tmp_path, name, frames, fps, size, options, expected):
    from muse_infer.video.reader import read_clip
    from muse_infer.video.window_reader import read_windows
    from muse_infer.video.windows import WindowSettings

    path = make_video(tmp_path / name, frames, fps, size=size, **options)
    facts = VideoFacts()
    read_clip(path, FrameSettings(max_frames=4, size=16), facts=facts)
    duration, width, height, rate, codec = expected
    assert facts.duration_s == pytest.approx(duration, abs=1e-6)
    assert (facts.width, facts.height, facts.codec) == (width, height, codec)
    assert facts.fps == pytest.approx(rate)
    windowed = VideoFacts()
    list(read_windows(path, FrameSettings(max_frames=2, size=16), WindowSettings(1.0, 1.0), facts=windowed))
    assert windowed == facts
    assert json.loads(json.dumps(facts.to_dict())) == facts.to_dict()  # plain JSON values


def rows_facts(npy) -> list[tuple]:
    from muse_infer.index import EmbeddingIndex

    rows = EmbeddingIndex.load(npy).rows
    return list(
        zip(rows.column("path").to_pylist(), *(rows.column(n).to_pylist() for n in FACTS), strict=True)
    )


@pytest.mark.parametrize("workers", [0, 1])
def test_the_encode_job_records_the_facts_in_the_rows(tmp_path, workers):
    from muse_infer import VideoEncoder
    from muse_infer.jobs.encode import encode_folder
    from muse_infer.video.windows import WindowSettings

    root = tmp_path / "videos"
    root.mkdir()
    make_video(root / "a.mp4", 30, 10.0, size=(48, 64))
    make_video(root / "b.webm", 20, 5.0, size=(40, 40))
    encoder = VideoEncoder("tiny", device="cpu", clip_weights="random")
    common = {"workers": workers, "progress": False, "thumbnails": False}
    encode_folder(root, tmp_path / "emb.npy", encoder, **common)
    want = [("a.mp4", 3.0, 64, 48, 10.0, "h264"), ("b.webm", 4.0, 40, 40, 5.0, "vp9")]
    assert rows_facts(tmp_path / "emb.npy") == want
    encode_folder(root, tmp_path / "moments.npy", encoder, windows=WindowSettings(2.0, 1.0), **common)
    moments = rows_facts(tmp_path / "moments.npy")
    assert len(moments) > 2 and set(moments) == set(want)  # each window carries its video's facts
    make_video(root / "c.avi", 16, 8.0, size=(32, 48))  # the index grows: earlier rows keep their facts
    encode_folder(root, tmp_path / "emb.npy", encoder, **common)
    assert rows_facts(tmp_path / "emb.npy") == [*want, ("c.avi", 2.0, 48, 32, 8.0, "mpeg4")]


def test_work_saved_before_facts_existed_gives_rows_without_them(tmp_path):
    from muse_infer.jobs.work import ChunkStore, Entry

    store = ChunkStore(tmp_path)
    entries = [Entry("a.mp4", 10, 20), Entry("b.mp4", 11, 21)]
    store.write_chunk(
        0,
        np.ones((2, 4), np.float32),
        {"done": [["a.mp4", 10, 20], ["b.mp4", 11, 21]], "failed": [], "precision": "fp32"},
    )  # a chunk as written before facts: no "facts" key
    known = store.load()
    assert [known[e.path].facts for e in entries] == [None, None]
    from muse_infer.encoders import VideoResult

    store.write([VideoResult(0, "a.mp4", np.ones(4, np.float32), facts={"duration_s": 2.0})], entries, "fp32")
    assert store.load()["a.mp4"].facts == {"duration_s": 2.0} and store.load()["b.mp4"].facts is None
