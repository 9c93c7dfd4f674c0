"""Search by an uploaded image or short clip (``POST /api/search``): the body, its limits, its decoding.

- The body is the file itself (any ``Content-Type``, e.g. ``curl --data-binary @clip.mp4``), or a
  ``multipart/form-data`` form whose first file field holds it (an HTML form, ``requests``' files=).
- Size: a ``Content-Length`` above the limit is refused at once, and a body is read only up to the
  limit, so a larger one (chunked, or lying about its length) is refused after ``limit`` bytes:
  ``UploadError(413)``.
- No URL is ever fetched: a body, form field or ``url`` parameter that is a URL is refused
  (``UploadError(400)``) before anything is decoded; and the decoder only reads the saved bytes
  (images by PIL; videos by FFmpeg restricted to plain demuxers and the file protocol,
  ``video.examples.read_upload``).
- Not media: a file whose first bytes are no image's and no video container's is refused unread (400).
- Decoding runs in a process of its own (``python -m muse_infer.video.examples``), with its memory
  capped, killed after ``timeout`` seconds (400: "could not be decoded in time"), from a private
  temporary folder removed afterwards.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict

import numpy as np

from ..video.examples import SNIFF_BYTES, upload_kind
from ..video.frames import FrameSettings

MAX_UPLOAD_BYTES = 32 << 20  # 32 MiB: a photo, or a short clip
UPLOAD_TIMEOUT_S = 30.0
_URL = re.compile(rb"^\s*[a-zA-Z][a-zA-Z0-9+.-]{1,15}://", re.ASCII)
_URL_TEXT = re.compile(r"^\s*[a-zA-Z][a-zA-Z0-9+.-]{1,15}://")


class UploadError(Exception):
    """An upload refused: ``status`` (400, 413) and the message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def url_refusal(what: str) -> UploadError:
    return UploadError(
        400, f"{what} is a URL: this service never fetches a URL it is given; upload the file itself"
    )


async def read_body(request, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes (``UploadError(413)`` beyond, without reading on)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(limit: int) -> UploadError:
    return UploadError(
        413, f"the upload is larger than {limit // (1 << 20)} MiB: send a photo or a short clip"
    )


def uploaded_file(body: bytes, content_type: str) -> bytes:
    """The file in a request body: the body, or the first file field of a multipart form. Refuses an
    empty body, a URL (never fetched) and anything that is neither an image nor a video container."""
    kind = content_type.lower()
    if kind.startswith("multipart/form-data"):
        body = _form_file(body, content_type)
    elif kind.startswith("application/x-www-form-urlencoded"):
        _refuse_url_fields(body)
    if not body.strip():
        raise UploadError(400, "no file in the request: POST the image or clip as the body")
    if _URL.match(body[:2048]):
        raise url_refusal("the body")
    if upload_kind(body[:SNIFF_BYTES]) is None:
        raise UploadError(
            400,
            "not an image (JPEG, PNG, WebP, BMP, TIFF) or a video (MP4/MOV, WebM/MKV, AVI, GIF, MPEG-TS, Ogg): "
            "upload a photo or a short clip",
        )
    return body


def _form_file(body: bytes, content_type: str) -> bytes:
    """The first file of a multipart/form-data body (the standard library parses it)."""
    from email.parser import BytesParser
    from email.policy import HTTP

    header = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    message = BytesParser(policy=HTTP).parsebytes(header + body)
    if not message.is_multipart():
        raise UploadError(400, "a multipart/form-data body without parts: send the file as a form field")
    fields = list(message.iter_parts())
    for part in fields:
        if part.get_filename() is None:
            value = part.get_payload(decode=True) or b""
            if _URL.match(value[:2048]):
                raise url_refusal(f"the form field {part.get_param('name', header='content-disposition')!r}")
    for part in fields:
        if part.get_filename() is not None:
            return part.get_payload(decode=True) or b""
    raise UploadError(400, "the form holds no file: send the image or clip as a file field")


def _refuse_url_fields(body: bytes) -> None:
    """A URL-encoded form is no file; one naming a URL is refused as such (the URL never fetched)."""
    from urllib.parse import parse_qsl

    for name, value in parse_qsl(body[:65536].decode("latin-1"), keep_blank_values=True):
        if name.lower() in ("url", "uri", "src", "href") or _URL_TEXT.match(value):
            raise url_refusal(f"the form field {name!r}")
    raise UploadError(400, "a URL-encoded form holds no file: POST the image or clip as the body")


def refuse_url_parameters(params) -> None:
    """``UploadError(400)`` when a query parameter asks for a URL (``url=``) or holds one."""
    for name, value in params.multi_items():
        if name.lower() in ("url", "uri", "src", "href") or _URL_TEXT.match(value):
            raise url_refusal(f"the parameter {name!r}")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_upload(data: bytes, settings: FrameSettings, timeout: float = UPLOAD_TIMEOUT_S) -> np.ndarray:
    """The clip (t, S, S, 3) uint8 of an uploaded file, decoded in a process of its own (see the module
    docstring). Raises ``UploadError(400)`` when it cannot be read, or not within ``timeout`` seconds."""
    with tempfile.TemporaryDirectory(prefix="muse-upload-") as folder:
        path = os.path.join(folder, "upload")
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "muse_infer.video.examples", str(os.getpid()), path]
        command.append(repr(asdict(settings)))
        try:
            done = subprocess.run(command, capture_output=True, timeout=timeout, env=env, cwd=folder)
        except subprocess.TimeoutExpired:
            raise UploadError(400, f"the file could not be decoded within {timeout:g} s") from None
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = lines[-1] if done.returncode == 3 and lines else "the decoder failed on it"
        raise UploadError(400, f"cannot read the upload: {reason[:300]}")
    try:
        clip = np.load(io.BytesIO(done.stdout), allow_pickle=False)
    except (ValueError, OSError, EOFError):
        raise UploadError(400, "cannot read the upload: the decoder gave no frames") from None
    size = settings.size
    if clip.dtype != np.uint8 or clip.ndim != 4 or clip.shape[1:] != (size, size, 3) or not len(clip):
        raise UploadError(400, "cannot read the upload: the decoder gave no frames")
    return clip[: settings.max_frames]
