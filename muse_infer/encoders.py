"""SDK encoders: ``VideoEncoder`` (files -> embeddings) and ``TextEncoder`` (strings -> embeddings).

Both give L2-normalised float32 numpy arrays (N, C), whatever backend runs the model::

    encoder = VideoEncoder("ViT-B-32", device="cuda")
    videos = encoder.encode(["a.mp4", "b.mkv"], batch_size=8)      # (2, 512)
    texts = TextEncoder(encoder.backend).encode(["a dog", "a cat"])  # (2, 512), same model
    scores = texts @ videos.T                                        # cosine similarities

Videos are decoded in worker processes while the model runs (see ``muse_infer.video.pool``); the
workers send uint8 clips and the frames are normalised here, next to the model. Each ``encode`` call
starts its workers afresh, so pass many paths a call; ``workers=0`` decodes in the calling process
(no per-file timeout then).
A video's embedding does not depend on the other videos of its batch beyond float rounding
(measured: identical on the tiny model, <= 1e-7 apart for ViT-B-32 on CPU between batch sizes 1 and 5).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import VideoDecodeError
from .runtime import Backend, load_backend
from .video.frames import FrameSettings, clip_inputs
from .video.pool import Decoded, DecodePool, decode_inline

ON_ERROR = ("raise", "skip")


def _backend_from(model, device: str, backend: str, clip_weights) -> Backend:
    # An already loaded backend can be shared by a VideoEncoder and a TextEncoder.
    if isinstance(model, (str, os.PathLike)):
        return load_backend(model, backend=backend, device=device, clip_weights=clip_weights)
    return model


def default_workers() -> int:
    """Decode processes by default: one core is left to the model, at most 8 decoders."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


@dataclass
class VideoResult:
    """One input video: its embedding (C,) float32, or why it failed (``error``)."""

    index: int
    path: str
    embedding: np.ndarray | None = None
    error: str | None = None


class TextEncoder:
    """Encodes text queries with a MUSE model's text tower.

    model: a name or file ``muse_infer.load_model`` accepts, or a loaded backend (e.g.
    ``VideoEncoder.backend``) to share one model. backend: "torch", or "onnx" / "torchscript" / "pt2" for an export directory.
    """

    def __init__(
        self,
        model: str | os.PathLike | Backend,
        device: str = "auto",
        backend: str = "torch",
        clip_weights: str | os.PathLike | None = None,
    ):
        self.backend = _backend_from(model, device, backend, clip_weights)

    @property
    def identity(self) -> dict:
        return self.backend.identity

    @property
    def embed_dim(self) -> int:
        return self.backend.embed_dim

    @classmethod
    def for_index(cls, index, device: str = "auto", backend: str = "torch") -> TextEncoder:
        """The text encoder of the model an ``EmbeddingIndex`` was built with (read from its sidecar)."""
        source = index.model_source
        encoder = cls(
            source["model"], device=device, backend=backend, clip_weights=source.get("clip_weights")
        )
        index.check_model(encoder.identity)
        return encoder

    def encode(self, texts: str | Sequence[str], batch_size: int = 256) -> np.ndarray:
        """texts (a string or N strings) -> (N, C) float32 L2-normalised embeddings."""
        from .tokenizer import tokenize

        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        ids = tokenize(texts, self.backend.max_words).numpy()  # (N, max_words)
        parts = [
            self.backend.encode_text_tokens(ids[start : start + batch_size])
            for start in range(0, len(ids), batch_size)
        ]
        return np.concatenate(parts).astype(np.float32, copy=False)


class VideoEncoder:
    """Encodes video files with a MUSE model's video tower.

    model: a name or file ``muse_infer.load_model`` accepts, or a loaded backend. max_frames: frames
    sampled a video (default: the model's, 12). Frames are sampled at the model's frame rate (1 a
    second) and slice mode, as CLIP4Clip does (``muse_infer.video``).
    """

    def __init__(
        self,
        model: str | os.PathLike | Backend,
        device: str = "auto",
        backend: str = "torch",
        clip_weights: str | os.PathLike | None = None,
        max_frames: int | None = None,
    ):
        self.backend = _backend_from(model, device, backend, clip_weights)
        if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
            raise ValueError(f"max_frames must be a positive integer, got {max_frames!r}")
        b = self.backend
        self.frame_settings = FrameSettings(
            max_frames or b.max_frames, b.framerate, b.slice_mode, b.image_size
        )

    @property
    def identity(self) -> dict:
        return self.backend.identity

    @property
    def embed_dim(self) -> int:
        return self.backend.embed_dim

    @property
    def settings(self) -> dict:
        """Frame sampling settings that, with the model identity, determine every embedding."""
        return self.frame_settings.to_dict()

    def encode(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        batch_size: int = 8,
        workers: int | None = None,
        timeout: float = 120.0,
        on_error: str = "raise",
    ) -> np.ndarray:
        """Embeddings (N, C) float32, L2-normalised, one row per path in order.

        workers: decoding processes (default ``default_workers()``; 0 decodes in this process, without
        the per-file ``timeout`` in seconds). on_error: "raise" raises ``VideoDecodeError`` naming the
        first file that cannot be read; "skip" leaves that file's row NaN (use ``encode_iter`` for the
        reasons).
        """
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        embeddings = np.full((len(paths), self.embed_dim), np.nan, dtype=np.float32)
        for result in self.encode_iter(paths, batch_size, workers, timeout):
            if result.error is None:
                embeddings[result.index] = result.embedding
            elif on_error == "raise":
                raise VideoDecodeError(result.path, result.error)
        return embeddings

    def encode_iter(
        self,
        paths: Sequence[str | os.PathLike],
        batch_size: int = 8,
        workers: int | None = None,
        timeout: float = 120.0,
    ) -> Iterator[VideoResult]:
        """``VideoResult`` for every path, in input order, with failures instead of exceptions."""
        for group in self.encode_groups(paths, batch_size, workers, timeout):
            yield from group

    def encode_groups(
        self,
        paths: Sequence[str | os.PathLike],
        batch_size: int = 8,
        workers: int | None = None,
        timeout: float = 120.0,
    ) -> Iterator[list[VideoResult]]:
        """Results in input order, grouped by model batch: each group ends with a batch's last video.

        A group holds ``batch_size`` decoded videos (fewer at the end) plus the failures met before
        the last of them. Batch composition depends only on the input list and ``batch_size``, so a
        caller that resumes after a whole group re-forms exactly the batches of an uninterrupted run.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if timeout is None or not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        paths = [os.fspath(p) for p in paths]
        workers = default_workers() if workers is None else workers
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        if workers == 0:
            decoded = decode_inline(paths, self.frame_settings)
        else:
            decoded = DecodePool(
                self.frame_settings, workers, timeout, prefetch=2 * batch_size + workers
            ).imap(paths)
        yield from self._batched(decoded, batch_size)

    def encode_decoded(self, decoded: Iterable[Decoded], batch_size: int = 8) -> Iterator[list[VideoResult]]:
        """``encode_groups`` for clips decoded elsewhere (by a Ray task, say): the same batches and results.

        decoded: ``muse_infer.video.pool.Decoded`` items in order, each a (t, S, S, 3) uint8 clip or a
        failure reason; failures pass through as ``VideoResult.error``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return self._batched(iter(decoded), batch_size)

    def _batched(self, decoded, batch_size: int) -> Iterator[list[VideoResult]]:
        pending: list = []  # Decoded items in order, failures included
        ready = 0  # how many of them have frames
        try:
            for item in decoded:
                pending.append(item)
                ready += item.error is None
                if ready == batch_size:
                    yield self._run_batch(pending)
                    pending, ready = [], 0
            if pending:
                yield self._run_batch(pending)
        finally:
            if hasattr(decoded, "close"):
                decoded.close()  # stops the decode workers when the caller stops early

    def _run_batch(self, items: list) -> list[VideoResult]:
        """Embed the decoded items of ``items`` in one model call; failures pass through."""
        good = [item for item in items if item.error is None]
        embeddings = {}
        if good:
            frames, masks = clip_inputs([item.pixels for item in good], self.frame_settings.max_frames)
            for item, row in zip(good, self.backend.encode_video(frames, masks), strict=True):
                embeddings[item.index] = row
        results = []
        for item in items:
            row = embeddings.get(item.index)
            if item.error is None and not np.all(np.isfinite(row)):
                results.append(
                    VideoResult(item.index, item.path, error="the model gave a non-finite embedding")
                )
            elif item.error is None:
                results.append(VideoResult(item.index, item.path, embedding=row.astype(np.float32)))
            else:
                results.append(VideoResult(item.index, item.path, error=item.error))
        return results
