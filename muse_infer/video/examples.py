"""Query examples: a file given to search by ("more like this file"), read as the model's clip.

A video is read as any video is (``reader.read_clip``: the same frames, so a video's example vector is
bit for bit its row in an index made with the same model and settings). An image (JPEG, PNG, WebP,
BMP, TIFF, recognised by its first bytes, not its name) is one frame: turned upright by its EXIF
orientation, fitted to the model (``frames.fit_frame``) and given as a one-frame clip (1, S, S, 3).

``kind_of`` reads the first bytes only; ``read_example`` never follows a URL or a reference inside a
file (PIL reads the bytes it is given; FFmpeg opens only this file), and refuses images of more than
``MAX_IMAGE_PIXELS`` (decompression bombs). Errors are ``VideoDecodeError`` naming the file.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from ..errors import VideoDecodeError
from .frames import FrameSettings, fit_frame

MAX_IMAGE_PIXELS = 50_000_000  # 50 megapixels: a phone photo is 12-48
SNIFF_BYTES = 32
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")


def image_format(head: bytes) -> str | None:
    """The image format of a file starting with ``head`` (its first bytes), or None (not an image
    this module reads: a video, or anything else). GIF is read as a video (it may be animated)."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head.startswith(b"BM") and len(head) >= 14:
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    return None


# Containers an uploaded example may be (``upload_kind``), by their first bytes, and the FFmpeg demuxers
# allowed to open one (``read_upload``): none that reads other files or URLs (playlists, concat, ...).
SAFE_DEMUXERS = "mov,mp4,matroska,webm,avi,gif,mpegts,mpeg,ogg,flv,asf"


def upload_kind(head: bytes) -> str | None:
    """ "image", "video" or None (neither: refused unread) for a file starting with ``head`` (>= 16 bytes
    for a sure answer): the image formats of ``image_format``; MP4/MOV/3GP, Matroska/WebM, AVI, GIF,
    MPEG-TS/PS, Ogg, FLV, ASF/WMV by their signatures."""
    if image_format(head):
        return "image"
    box = head[4:8]
    videos = (
        box in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"),
        head.startswith(b"\x1aE\xdf\xa3"),  # EBML: Matroska, WebM
        head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"),
        head[:6] in (b"GIF87a", b"GIF89a"),
        head.startswith(b"\x00\x00\x01\xba"),  # MPEG program stream
        head.startswith(b"OggS") or head.startswith(b"FLV\x01"),
        head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"),  # ASF
    )
    return "video" if any(videos) else None


def read_upload(path: str | os.PathLike, settings: FrameSettings) -> np.ndarray:
    """The clip of a file a client uploaded (``web.app``): like ``read_example``, but only a file whose
    first bytes are an image's or a video container's (``upload_kind``), and a video only when FFmpeg,
    restricted to ``SAFE_DEMUXERS`` and the file protocol, recognises it. Raises ``VideoDecodeError``."""
    import av

    with open(path, "rb") as handle:
        kind = upload_kind(handle.read(SNIFF_BYTES))
    if kind is None:
        raise VideoDecodeError(path, "not an image (JPEG, PNG, WebP, BMP, TIFF) or a video")
    if kind == "image":
        return read_image_clip(path, settings.size, settings.fit)
    try:
        with av.open(
            os.fspath(path), options={"format_whitelist": SAFE_DEMUXERS, "protocol_whitelist": "file"}
        ):
            pass
    except (av.FFmpegError, OSError) as error:  # the reason without the file's (temporary) name
        reason = getattr(error, "strerror", None) or "unreadable"
        raise VideoDecodeError(path, f"not a video this service reads ({reason})") from None
    from .reader import read_clip

    return read_clip(path, settings)


def kind_of(path: str | os.PathLike) -> str:
    """ "image" or "video" (anything else is tried as a video: FFmpeg says whether it is one)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except FileNotFoundError:
        raise VideoDecodeError(path, "file not found") from None
    except IsADirectoryError:
        raise VideoDecodeError(path, "is a directory (give an image or a video file)") from None
    except OSError as error:
        raise VideoDecodeError(path, f"cannot read it ({error.strerror})") from None
    if not head:
        raise VideoDecodeError(path, "empty file (0 bytes)")
    return "image" if image_format(head) else "video"


def read_image_clip(path: str | os.PathLike, size: int, fit=None) -> np.ndarray:
    """An image as a one-frame clip (1, size, size, 3) uint8: upright (EXIF), RGB, fitted to ``size``
    by ``fit`` (the model's resize mode and interpolation: ``FrameSettings.fit``; None: CLIP's)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path, formats=IMAGE_FORMATS) as image:
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise VideoDecodeError(
                        path, f"image of {width}x{height} pixels: more than {MAX_IMAGE_PIXELS:,} pixels"
                    )
                rgb = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombWarning) as error:
            raise VideoDecodeError(path, f"unreadable image ({_one_line(error)})") from None
        except Image.DecompressionBombError:
            raise VideoDecodeError(path, "image too large to decode safely") from None
    if rgb.ndim != 3 or not rgb.size:
        raise VideoDecodeError(path, "unreadable image (no pixels)")
    return (fit(rgb) if fit is not None else fit_frame(rgb, size))[None]


def read_example(path: str | os.PathLike, settings: FrameSettings) -> np.ndarray:
    """The clip of a query example: a video's (``reader.read_clip``), or an image's one frame
    (``read_image_clip``). (t, S, S, 3) uint8. Raises ``VideoDecodeError`` naming the file."""
    from .reader import read_clip

    if kind_of(path) == "image":
        return read_image_clip(path, settings.size, settings.fit)
    try:
        return read_clip(path, settings)
    except VideoDecodeError as error:
        if error.reason.startswith("not a readable video container"):
            raise VideoDecodeError(
                path, "neither an image (JPEG, PNG, WebP, BMP, TIFF) nor a video FFmpeg can read"
            ) from None
        raise


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:200] or type(error).__name__


def _worker_main(argv: list[str]) -> int:
    """``python -m muse_infer.video.examples PARENT_PID PATH SETTINGS``: decode an uploaded file
    (``read_upload``) in a process of its own, and write its clip to stdout as a .npy; on failure the
    reason on stderr (one line) and exit status 3. Memory is capped (``UPLOAD_MEMORY_BYTES``), and the
    process dies with its parent (the service kills it after its timeout)."""
    import ast
    import resource
    import sys

    from .pool import _die_with_parent

    _die_with_parent(int(argv[0]))
    limit = UPLOAD_MEMORY_BYTES
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ValueError, OSError):  # a platform without the limit: the timeout still holds
        pass
    settings = FrameSettings(**ast.literal_eval(argv[2]))
    try:
        clip = read_upload(argv[1], settings)
    except VideoDecodeError as error:
        sys.stderr.write(error.reason + "\n")
        return 3
    except MemoryError:
        sys.stderr.write("too large to decode\n")
        return 3
    np.save(sys.stdout.buffer, clip, allow_pickle=False)
    return 0


UPLOAD_MEMORY_BYTES = 3 << 30  # address space of an upload's decoding process


if __name__ == "__main__":
    import sys

    sys.exit(_worker_main(sys.argv[1:]))
