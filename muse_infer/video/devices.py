"""Where a video is decoded: on the CPU (FFmpeg's software decoders) or on an NVIDIA GPU (NVDEC).

``decoder`` is "cpu" (the default) or "cuda" / "cuda:N" (GPU N; "cuda" is GPU 0 as CUDA numbers
them). On a GPU, FFmpeg's own NVDEC support decodes (``av.open(..., hwaccel=...)``, in the FFmpeg
PyAV bundles): the same readers, the same sampling, the same packets skipped, only the decoding
moves. The frames are the CPU's, bit for bit, by construction:

- H.264 and HEVC decoding is exact (the standards define every output sample), so NVDEC's planes
  are the software decoder's planes;
- NVDEC hands back semi-planar frames (NV12: chroma interleaved), which FFmpeg's RGB conversion
  treats differently from planar YUV 4:2:0 (measured: up to 43 levels apart on grainy video).
  ``planar`` rearranges them into the planar format the software decoder gives (a lossless copy)
  before the one RGB conversion every reader uses.

``benchmarks/gpu_decode.py`` checks both on a GPU (frames equal to the CPU's) and measures the CPU
time a video saves. A codec NVDEC cannot decode (no hardware support in FFmpeg, or not on this GPU)
is decoded on the CPU by FFmpeg itself (``allow_software_fallback``); a file whose device opening
fails while the file itself opens is read on the CPU and counted (``DecodeStats.device_fallbacks``).

The device is opened on CUDA's primary context, shared with whatever else the process runs there
(torch), and one opening is kept for the life of the process (``_keep_device``): opening a CUDA
context for every file would cost more than decoding it. Only PyAV is imported, inside the functions.
"""

from __future__ import annotations

import logging
import os
import re

from .pixels import reformat

DECODER_PATTERN = re.compile(r"cpu|cuda(:\d+)?")
DECODER_HELP = "cpu, cuda or cuda:N (N: the GPU's number)"

# What NVDEC's downloaded frames come as -> the planar format FFmpeg's software decoders give.
SEMI_PLANAR_TO_PLANAR = {
    "nv12": "yuv420p",
    "p010le": "yuv420p10le",
    "p016le": "yuv420p16le",
    "nv16": "yuv422p",
    "p210le": "yuv422p10le",
    "p216le": "yuv422p16le",
    "nv24": "yuv444p",
    "p410le": "yuv444p10le",
    "p416le": "yuv444p16le",
}

_kept: dict = {}  # decoder -> an opened device kept for the process's life (see _keep_device)
_warned: set = set()  # decoders whose failure this process has said once
logger = logging.getLogger(__name__)


def check_decoder_name(decoder: str) -> str:
    """``decoder`` if it is a decoder's name (``DECODER_PATTERN``), else ValueError naming it."""
    if not isinstance(decoder, str) or not DECODER_PATTERN.fullmatch(decoder):
        raise ValueError(f"decoder must be {DECODER_HELP}, got {decoder!r}")
    return decoder


def on_device(decoder: str) -> bool:
    """Whether ``decoder`` decodes on a GPU."""
    return decoder != "cpu"


def hwaccel(decoder: str):
    """The ``av.open(hwaccel=...)`` setting for ``decoder``: None on the CPU, else NVDEC on the GPU
    (frames downloaded to memory; codecs it cannot decode are decoded in software)."""
    if not on_device(check_decoder_name(decoder)):
        return None
    from av.codec.hwaccel import HWAccel

    index = decoder.partition(":")[2] or None
    _keep_device(decoder, index)
    return HWAccel("cuda", device=index, allow_software_fallback=True, options={"primary_ctx": "1"})


def _keep_device(decoder: str, index: str | None) -> None:
    """Open the device once and keep it: each file's opening then retains CUDA's primary context
    instead of creating it (the context lives while one opening holds it)."""
    if decoder in _kept:
        return
    import av
    from av.codec.hwaccel import HWAccel

    setting = HWAccel("cuda", device=index, allow_software_fallback=True, options={"primary_ctx": "1"})
    _kept[decoder] = setting.create(av.Codec("h264", "r"))


def check_decoder(decoder: str) -> None:
    """Raise ``BackendError`` saying what to do when ``decoder`` cannot decode on this machine
    (checked before a run starts: a GPU decoder that is not there is the run's fault, not a file's)."""
    from ..errors import BackendError

    try:
        check_decoder_name(decoder)
    except ValueError as error:
        raise BackendError(f"--decoder: {error}") from None
    if not on_device(decoder):
        return
    import av
    from av.codec.hwaccel import hwdevices_available

    if "cuda" not in hwdevices_available():
        raise BackendError(
            f"--decoder {decoder}: this FFmpeg (PyAV {av.__version__}) was built without NVDEC; "
            "install PyAV's wheel from PyPI, or leave --decoder out to decode on the CPU"
        )
    try:
        hwaccel(decoder)
    except (av.FFmpegError, OSError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise BackendError(
            f"--decoder {decoder}: no NVIDIA GPU could be opened for decoding (FFmpeg: {reason}); it needs "
            "an NVIDIA GPU with its driver (nvidia-smi lists it); leave --decoder out to decode on the CPU"
        ) from None


def note_fallback(decoder: str, path, error: Exception) -> None:
    """Say once a process that ``decoder`` failed to open for a file that then opened on the CPU (a
    decode worker's later files that fall back are only counted)."""
    from ..filenames import display_name

    if decoder not in _warned:
        _warned.add(decoder)
        logger.warning(
            "--decoder %s could not open the GPU decoder for %s (%s): this process decodes such files on "
            "the CPU (the same frames); nvidia-smi shows whether the GPU is busy or gone",
            decoder,
            display_name(os.fspath(path)),
            error,
        )


def planar(frame):
    """A frame NVDEC decoded (semi-planar) as the planar frame the software decoder gives; any other
    frame as it is. The copy is lossless: the same samples, rearranged."""
    target = SEMI_PLANAR_TO_PLANAR.get(frame.format.name)
    return frame if target is None else reformat(frame, format=target)
