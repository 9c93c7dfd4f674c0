"""Search by example: a video file (encoded as videos are), an image (a one-frame clip through the video
tower), a row of the index (no model), several queries a call; with the packaged demo model, copies of
the indexed videos at another size and in another container find their original first, and a keyframe
image finds its video in the top 3."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from web_corpus import HOSTILE_NAME, ODD_NAME  # noqa: E402

from muse_infer.errors import VideoDecodeError  # noqa: E402
from muse_infer.index import EmbeddingIndex, RowQuery  # noqa: E402

CONTAINERS = [(".webm", "libvpx-vp9"), (".mkv", "libx264"), (".avi", "mpeg4"), (".mov", "libx264")]


def invoke(*args, expect: int = 0):
    from click.testing import CliRunner

    from muse_infer.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == expect, result.output
    return result


def decoded_frames(path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


@pytest.fixture(scope="module")
def copies(demo_corpus, tmp_path_factory):
    """Each indexed video re-encoded at another size (0.6x or 1.4x) into another container, outside the
    index's folder; and each video's first frame (its keyframe) as a JPEG."""
    from PIL import Image

    from muse_infer.data.writer import write_video

    folder = tmp_path_factory.mktemp("copies")
    made = {}
    for number, name in enumerate(sorted(demo_corpus.captions)):
        frames = decoded_frames(demo_corpus.root / name)
        side = int(frames.shape[1] * (0.6 if number % 2 else 1.4)) // 2 * 2
        resized = np.stack(
            [np.asarray(Image.fromarray(f).resize((side, side), Image.BICUBIC)) for f in frames]
        )
        extension, codec = CONTAINERS[number % len(CONTAINERS)]
        copy = folder / f"copy_{number}{extension}"
        write_video(copy, resized, 2.0, codec=codec)
        image = folder / f"key_{number}.jpg"
        Image.fromarray(frames[0]).save(image, quality=90)
        made[name] = (copy, image)
    return made


def test_copies_at_another_size_and_container_find_their_original_first(demo_corpus, copies):
    names = sorted(copies)
    args = [a for name in names for a in ("--like", copies[name][0])]
    out = json.loads(invoke("search", *args, "--index", demo_corpus.index, "--top-k", 3, "--json").stdout)
    for name in names:
        found = [r for r in out if r["like"] == str(copies[name][0])]
        assert [r["rank"] for r in found] == [1, 2, 3] and found[0]["query_type"] == "like"
        assert found[0]["path"] == name, (name, [(r["path"], r["score"]) for r in found])
        assert found[0]["score"] > found[1]["score"]


def test_a_keyframe_image_finds_its_video_in_the_top_three(demo_corpus, copies):
    names = sorted(copies)
    args = [a for name in names for a in ("--like", copies[name][1])]
    out = json.loads(invoke("search", *args, "--index", demo_corpus.index, "--top-k", 3, "--json").stdout)
    for name in names:
        top = [r["path"] for r in out if r["like"] == str(copies[name][1])]
        assert name in top, (name, top)


def test_the_sdk_takes_files_rows_and_text_in_one_call(demo_corpus, copies):
    from muse_infer import TextEncoder, VideoEncoder

    index = EmbeddingIndex.load(demo_corpus.index)
    video = VideoEncoder.for_index(index, device="cpu")
    text = TextEncoder(video.backend)
    copy, image = copies["clip_1.mp4"]
    caption = demo_corpus.captions[ODD_NAME]
    queries = [caption, copy, image, RowQuery(index.paths.index(HOSTILE_NAME))]
    hits = index.search_batch(queries, 3, text_encoder=text, video_encoder=video)
    assert [h[0].path for h in hits] == [ODD_NAME, "clip_1.mp4", hits[2][0].path, HOSTILE_NAME]
    assert hits[3][0].score == pytest.approx(1.0, abs=1e-6)
    # each as it would be alone; a video example is the vector encode() gives the same file
    assert index.search(copy, 3, video_encoder=video) == hits[1]
    assert index.search(queries[3], 3) == hits[3]
    np.testing.assert_array_equal(video.encode_example(copy), video.encode([copy], workers=0)[0])
    row = index.paths.index("clip_2.mp4")
    np.testing.assert_array_equal(
        video.encode_example(demo_corpus.root / "clip_2.mp4"), index.embeddings[row]
    )
    with pytest.raises(ValueError, match="video_encoder="):
        index.search(copy)
    with pytest.raises(ValueError, match="text_encoder="):
        index.search(caption)


def test_like_row_needs_no_model(demo_corpus, monkeypatch):
    from muse_infer.runtime.spec import ModelSpec

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(ModelSpec, "load", refuse)
    row = EmbeddingIndex.load(demo_corpus.index).paths.index("clip_3.mp4")
    out = json.loads(invoke("search", "--like-row", row, "--index", demo_corpus.index, "--json").stdout)
    assert out[0]["path"] == "clip_3.mp4" and out[0]["like_row"] == row and out[0]["query_type"] == "like_row"
    assert out[0]["score"] == pytest.approx(1.0, abs=1e-6) and len(out) == 7
    listing = invoke("search", "--like-row", row, "--index", demo_corpus.index, "--top-k", 2).output
    assert f"like row {row}" in listing and "clip_3.mp4" in listing


def test_bad_examples_get_one_clear_line(demo_corpus, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("a dog on a beach\n" * 20)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    cases = [
        (["--like", tmp_path / "missing.mp4"], "missing.mp4: file not found"),
        (["--like", empty], "empty file"),
        (["--like", text], "neither an image"),
        (["--like-row", 7], "--like-row 7: the index has rows 0 to 6"),
        ([], "give a text QUERY, --like FILE or --like-row N"),
    ]
    for args, message in cases:
        result = invoke("search", *args, "--index", demo_corpus.index, expect=2)
        assert message in result.output and "Traceback" not in result.output, result.output


def test_images_are_one_upright_frame_in_any_of_the_formats(tmp_path):
    from PIL import Image

    from muse_infer.video.examples import MAX_IMAGE_PIXELS, kind_of, read_example, read_image_clip
    from muse_infer.video.frames import FrameSettings, fit_frame

    rng = np.random.default_rng(0)
    picture = rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)
    picture[:, :25] = 255  # a left half that shows where "left" went
    for extension in ("png", "webp", "bmp", "tiff"):
        path = tmp_path / f"p.{extension}"
        Image.fromarray(picture).save(path, lossless=True) if extension == "webp" else Image.fromarray(
            picture
        ).save(path)
        clip = read_example(path, FrameSettings(size=16))
        assert clip.shape == (1, 16, 16, 3) and kind_of(path) == "image"
        np.testing.assert_array_equal(clip[0], fit_frame(picture, 16))
    smooth = np.zeros((30, 50, 3), np.uint8)
    smooth[..., 0] = np.linspace(0, 255, 50, dtype=np.uint8)[None, :]
    smooth[..., 1] = np.linspace(0, 255, 30, dtype=np.uint8)[:, None]
    smooth[:, :25, 2] = 255  # a left half that shows where "left" went
    turned = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: shown turned 90 degrees clockwise
    Image.fromarray(smooth).save(turned, exif=exif, quality=100)
    shown = read_image_clip(turned, 30)[0].astype(int)
    upright = fit_frame(np.ascontiguousarray(np.rot90(smooth, k=-1)), 30).astype(int)
    as_stored = fit_frame(smooth, 30).astype(int)
    assert np.abs(shown - upright).mean() < 4 < np.abs(shown - as_stored).mean()  # turned, then JPEG's loss
    assert shown[:8, :, 2].mean() > 200  # the left (blue) half is on top once turned clockwise
    huge = tmp_path / "huge.png"
    Image.new("L", (MAX_IMAGE_PIXELS // 1000 + 1, 1000)).save(huge)
    with pytest.raises(VideoDecodeError, match="more than"):
        read_image_clip(huge, 16)
