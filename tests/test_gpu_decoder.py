"""Decoding on the GPU (``--decoder cuda``, ``muse_infer.video.devices``): the same frames as the CPU.

On any machine: NVDEC's semi-planar frames (simulated here: the CPU's frames rearranged as NVDEC
hands them back) give the CPU decoder's RGB bit for bit; a GPU that fails to open for a file reads
it on the CPU; a machine without a GPU decoder is told so before anything is written; the choice
never enters an index's settings. On a GPU (``gpu`` marker): the readers decode on NVDEC and give
the CPU's frames, exact and keyframe sampling.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import av
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from video_factory import make_video  # noqa: E402

from muse_infer.errors import BackendError, VideoDecodeError  # noqa: E402
from muse_infer.runtime.spec import ModelSpec  # noqa: E402
from muse_infer.video import devices, reader  # noqa: E402
from muse_infer.video.cursor import DecodeStats  # noqa: E402
from muse_infer.video.frames import FrameSettings  # noqa: E402


def _nvdec_opens() -> bool:
    try:
        devices.check_decoder("cuda")
        return True
    except BackendError:
        return False


def _noise_video(path, size, pix_fmt="yuv420p", codec=None, frames=9):
    return make_video(path, frames, 10, size=size, codec=codec, index_colour=False, pix_fmt=pix_fmt)


SEMI_PLANAR_CASES = [  # (name, size, written pix_fmt, codec, what NVDEC gives for it)
    ("even 4:2:0", (48, 64), "yuv420p", None, "nv12"),
    ("awkward 4:2:0", (38, 70), "yuv420p", None, "nv12"),
    ("odd 4:2:0 (vp9)", (49, 65), "yuv420p", "libvpx-vp9", "nv12"),
    ("10-bit 4:2:0", (48, 64), "yuv420p10le", None, "p010le"),
    ("4:4:4", (36, 52), "yuv444p", None, "nv24"),
]


@pytest.mark.parametrize(
    "name, size, pix_fmt, codec, semi", SEMI_PLANAR_CASES, ids=[c[0] for c in SEMI_PLANAR_CASES]
)
def test_nvdec_frames_made_planar_give_the_cpu_decoders_rgb_bit_for_bit(
    tmp_path, name, size, pix_fmt, codec, semi
):
    suffix = ".webm" if codec == "libvpx-vp9" else ".mp4"
    path = _noise_video(tmp_path / f"v{suffix}", size, pix_fmt, codec)
    compared = 0
    with av.open(path) as container:
        for frame in container.decode(video=0):
            as_nvdec = frame.reformat(format=semi)  # what NVDEC hands back: the same samples, interleaved
            cpu_rgb = reader._upright(frame)
            assert np.array_equal(reader._upright(devices.planar(as_nvdec)), cpu_rgb), (name, frame.pts)
            compared += 1
    assert compared == 9


def test_planar_leaves_planar_frames_alone(tmp_path):
    path = _noise_video(tmp_path / "v.mp4", (48, 64))
    with av.open(path) as container:
        frame = next(container.decode(video=0))
    assert devices.planar(frame) is frame


@pytest.mark.parametrize("sampling", ["exact", "keyframes"])
def test_a_gpu_that_fails_to_open_for_a_file_reads_it_on_the_cpu(tmp_path, monkeypatch, caplog, sampling):
    path = make_video(tmp_path / "v.mp4", 60, 10, size=(48, 64), keyframe_interval=10)
    expected = reader.read_clip(path, FrameSettings(max_frames=4, size=32, sampling=sampling))

    def device_fails(decoder):
        raise RuntimeError("the GPU is gone")

    monkeypatch.setattr(devices, "hwaccel", device_fails)
    monkeypatch.setattr(devices, "_warned", set())
    stats = DecodeStats()
    settings = FrameSettings(max_frames=4, size=32, sampling=sampling, decoder="cuda")
    clip = reader.read_clip(path, settings, stats)
    assert np.array_equal(clip, expected)
    assert stats.device_fallbacks >= 1
    said = [r.getMessage() for r in caplog.records if "could not open the GPU decoder" in r.getMessage()]
    assert len(said) == 1 and "v.mp4" in said[0] and "the GPU is gone" in said[0]  # once a process
    with pytest.raises(VideoDecodeError, match="file not found"):  # the file's own fault stays its own
        reader.read_clip(tmp_path / "missing.mp4", settings, DecodeStats())


def test_the_decoder_is_checked_by_name_everywhere_it_is_given():
    for bad in ("gpu", "cuda:", "cuda:x", "CUDA", "", None):
        with pytest.raises(ValueError, match="decoder must be cpu, cuda or cuda:N"):
            FrameSettings(decoder=bad)
        with pytest.raises(BackendError, match="decoder must be"):
            ModelSpec.resolve("tiny", decoder=bad)
    for good in ("cpu", "cuda", "cuda:0", "cuda:12"):
        assert FrameSettings(decoder=good).decoder == good


def test_the_decoder_is_not_part_of_an_index_settings_and_reaches_decode_workers():
    cpu, gpu = ModelSpec.resolve("tiny"), ModelSpec.resolve("tiny", decoder="cuda:1")
    assert cpu.settings == gpu.settings  # either may resume or grow the other's index
    assert gpu.frame_settings.decoder == "cuda:1" and "decoder" not in gpu.settings
    # the decode pool's workers rebuild their settings from this form (video.pool)
    settings = gpu.frame_settings
    assert FrameSettings(**ast.literal_eval(repr(asdict(settings)))) == settings


@pytest.mark.skipif(_nvdec_opens(), reason="this machine has a GPU decoder")
def test_no_gpu_decoder_is_said_before_anything_is_written(tmp_path):
    from muse_infer import VideoEncoder

    videos = tmp_path / "videos"
    videos.mkdir()
    make_video(videos / "a.mp4", 10, 10, size=(48, 64))
    out = tmp_path / "emb.npy"
    command = [sys.executable, "-m", "muse_infer", "encode-videos", str(videos), "--out", str(out)]
    command += ["--model", "tiny", "--frames", "2", "-q"]
    first = subprocess.run(command, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    again = subprocess.run(command + ["--decoder", "cuda", "--overwrite"], capture_output=True, text=True)
    assert again.returncode == 2
    assert "--decoder cuda: no NVIDIA GPU could be opened for decoding" in again.stderr
    assert "leave --decoder out to decode on the CPU" in again.stderr
    assert "Traceback" not in again.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    with pytest.raises(BackendError, match="no NVIDIA GPU could be opened"):
        VideoEncoder("tiny", decoder="cuda")


def test_a_decoder_that_is_no_decoder_is_a_usage_error(tmp_path):
    command = [
        sys.executable,
        "-m",
        "muse_infer",
        "encode-videos",
        str(tmp_path),
        "--out",
        str(tmp_path / "e.npy"),
    ]
    result = subprocess.run(command + ["--decoder", "nvdec"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "Invalid value for '--decoder': 'nvdec': give cpu, cuda or cuda:N" in result.stderr
    assert not (tmp_path / "e.npy").exists()


def test_the_ray_engine_refuses_a_gpu_decoder_naming_the_local_engine(tmp_path):
    pytest.importorskip("ray")
    from muse_infer.errors import RayEngineError
    from muse_infer.jobs.ray_engine import encode_folder_ray

    make_video(tmp_path / "a.mp4", 10, 10, size=(48, 64))
    with pytest.raises(RayEngineError, match="decode on the GPU with the local engine"):
        encode_folder_ray(tmp_path, tmp_path / "emb.npy", ModelSpec.resolve("tiny", decoder="cuda"))
    assert not (tmp_path / "emb.npy").exists() and not list(tmp_path.glob("*.parts"))


# --- on a GPU ------------------------------------------------------------------------------------


def _gpu_corpus(folder: Path) -> list[str]:
    return [
        make_video(folder / "board.mp4", 75, 25, size=(90, 160), keyframe_interval=25),
        make_video(folder / "noise.mp4", 40, 10, size=(48, 64), index_colour=False, keyframe_interval=8),
        make_video(folder / "bframes.mp4", 60, 30, size=(72, 128), keyframe_interval=20, options={"bf": "3"}),
        make_video(folder / "rotated.mp4", 30, 10, size=(64, 48), rotation=90),
        make_video(folder / "vfr.mp4", 5, 10, size=(48, 64), timestamps=[0, 0.1, 0.35, 0.4, 1.2]),
        make_video(folder / "ten_bit.mp4", 20, 10, size=(48, 64), index_colour=False, pix_fmt="yuv420p10le"),
    ]


@pytest.mark.gpu
@pytest.mark.parametrize("sampling", ["exact", "keyframes"])
def test_nvdec_reads_the_cpu_frames_bit_for_bit(tmp_path, sampling):
    if not _nvdec_opens():
        pytest.skip("PyAV's FFmpeg cannot open NVDEC here")
    for path in _gpu_corpus(tmp_path):
        cpu = reader.read_clip(path, FrameSettings(max_frames=6, size=48, sampling=sampling))
        stats = DecodeStats()
        gpu = reader.read_clip(
            path, FrameSettings(max_frames=6, size=48, sampling=sampling, decoder="cuda"), stats
        )
        assert stats.device_fallbacks == 0, path
        assert np.array_equal(gpu, cpu), (path, int(np.abs(gpu.astype(int) - cpu).max()))


@pytest.mark.gpu
def test_nvdec_really_decodes_on_the_gpu(tmp_path):
    if not _nvdec_opens():
        pytest.skip("PyAV's FFmpeg cannot open NVDEC here")
    path = make_video(tmp_path / "v.mp4", 20, 10, size=(48, 64))
    with reader._open(path, decoder="cuda") as container:
        stream = container.streams.video[0]
        frame = next(container.decode(stream))
        assert stream.codec_context.is_hwaccel and frame.format.name in devices.SEMI_PLANAR_TO_PLANAR


@pytest.mark.gpu
def test_an_index_decoded_on_the_gpu_is_the_cpu_decoders_index(tmp_path):
    if not _nvdec_opens():
        pytest.skip("PyAV's FFmpeg cannot open NVDEC here")
    videos = tmp_path / "videos"
    videos.mkdir()
    _gpu_corpus(videos)
    indexes = {}
    for decoder in ("cpu", "cuda"):
        out = tmp_path / decoder / "emb.npy"
        command = [sys.executable, "-m", "muse_infer", "encode-videos", str(videos), "--out", str(out)]
        command += ["--model", "tiny", "--device", "cpu", "--decoder", decoder, "--no-thumbnails", "-q"]
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        indexes[decoder] = np.load(out)
    assert indexes["cpu"].shape[0] == 6 and np.array_equal(indexes["cuda"], indexes["cpu"])
