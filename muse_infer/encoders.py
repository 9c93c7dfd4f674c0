"""SDK encoders: ``VideoEncoder`` (files -> embeddings) and ``TextEncoder`` (strings -> embeddings).

Both give L2-normalised float32 numpy arrays (N, C), whatever backend runs the model::

    encoder = VideoEncoder("ViT-B-32", device="cuda")
    videos = encoder.encode(["a.mp4", "b.mkv"], batch_size=8)      # (2, 512)
    texts = TextEncoder(encoder.backend).encode(["a dog", "a cat"])  # (2, 512), same model
    scores = texts @ videos.T                                        # cosine similarities

Videos are decoded in worker processes while the model runs (see ``muse_infer.video.pool``); the
workers send uint8 clips. The torch backend takes them as uint8 and normalises them on its device
(``TorchBackend.submit_clips``); on a GPU the next batch is prepared while the current one computes.
Exported backends get float32 frames normalised here (``video.frames.clip_inputs``): the same numbers.
Each ``encode`` call starts its workers afresh, so pass many paths a call; ``workers=0`` decodes in
the calling process (no per-file timeout then).

``precision`` ("auto": bf16 on a GPU and on a CPU with native bf16, fp32 elsewhere; or "fp32",
"bf16", "fp16") is what the model computes in; embeddings are float32 either way, and bf16 ones lie
within cosine 0.999 of fp32 ones (``muse_infer.runtime.precision``).
A video's embedding does not depend on the other videos of its batch beyond float rounding
(measured: identical on the tiny model, <= 1e-7 apart for ViT-B-32 on CPU between batch sizes 1 and 5).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .errors import BackendError, QueryError, VideoDecodeError
from .progress import progress_bar
from .runtime import Backend, ModelSpec
from .runtime.devices import default_batch_size
from .video.devices import check_decoder
from .video.frames import FrameSettings
from .video.windows import WindowSettings

if TYPE_CHECKING:
    from .video.pool import Decoded

ON_ERROR = ("raise", "skip", "nan")
logger = logging.getLogger(__name__)


SPEC_DEFAULTS = {
    "device": "auto",
    "backend": "torch",
    "clip_weights": None,
    "precision": "auto",
    "max_frames": None,
    "sampling": "exact",
    "tokenizer": None,
    "decoder": "cpu",
}


def _loaded(model, text_only: bool = False, **choices) -> Backend:
    """The backend an encoder runs: ``model`` itself when it is a loaded ``Backend`` (shared by a
    VideoEncoder and a TextEncoder), else the one its ``ModelSpec`` loads (a spec given as is, or
    resolved from a name or file and ``choices``; ``text_only``: the text tower alone where it can)."""
    if isinstance(model, Backend):
        precision = choices.get("precision")
        if precision not in (None, "auto", model.precision):
            raise BackendError(
                f"precision {precision!r} given with a backend loaded in {model.precision}: load another "
                "backend (load_backend(..., precision=...)) or leave precision='auto'"
            )
        return model
    return encoder_spec(model, **choices).load(text_only=text_only)


def encoder_spec(model: str | os.PathLike | ModelSpec, **choices) -> ModelSpec:
    """``model`` as a ``ModelSpec``: a spec as is (then ``choices`` must be left at their defaults:
    a spec holds them), or resolved from a name or file with ``choices`` (device, backend,
    clip_weights, precision, max_frames, sampling, decoder)."""
    if isinstance(model, ModelSpec):
        given = sorted(k for k, v in choices.items() if v != SPEC_DEFAULTS.get(k))
        if given:
            raise ValueError(f"{', '.join(given)} given with a ModelSpec: set them in the spec instead")
        return model
    return ModelSpec.resolve(model, **choices)


def default_workers(device: str = "cpu") -> int:
    """Decode processes by default: every core but one for the model; at most 8 on the CPU (where the
    model needs cores too), at most 32 when a GPU runs the model (one core feeds it)."""
    cap = 32 if str(device).startswith("cuda") else 8
    return max(1, min(cap, (os.cpu_count() or 2) - 1))


@dataclass
class VideoResult:
    """One input video: its embedding (C,) float32, or why it failed (``error``).

    Encoded as moments (``encode_moment_groups``): ``embedding`` is (n, C), a row per window, and
    ``spans`` the n windows' (start_s, end_s). ``facts``: the video's duration, size, frame rate and
    codec as the decoder saw them (``video.facts.VideoFacts.to_dict``; None when not known).
    """

    index: int
    path: str
    embedding: np.ndarray | None = None
    error: str | None = None
    spans: list[tuple[float, float]] | None = None
    facts: dict | None = None


class TextEncoder:
    """Encodes text queries with a MUSE model's text tower.

    model: a name or file ``muse_infer.load_model`` accepts, or a loaded backend (e.g.
    ``VideoEncoder.backend``) to share one model. backend: "torch", or "onnx" / "torchscript" / "pt2" for an export directory.
    precision: "auto" (bf16 on a GPU and on a CPU with native bf16, fp32 elsewhere), "fp32", "bf16"
    or "fp16". tokenizer: the folder of the text tower's Hugging Face tokenizer files, for models
    whose tokenizer open_clip does not bundle (SigLIP's, xlm-roberta's); None: the Hugging Face cache
    (``muse_infer.tokenizer``).
    """

    def __init__(
        self,
        model: str | os.PathLike | ModelSpec | Backend,
        device: str = "auto",
        backend: str = "torch",
        clip_weights: str | os.PathLike | None = None,
        precision: str = "auto",
        tokenizer: str | os.PathLike | None = None,
    ):
        self.backend = _loaded(
            model,
            True,
            device=device,
            backend=backend,
            clip_weights=clip_weights,
            precision=precision,
            tokenizer=tokenizer,
        )  # the text tower alone when it is loaded here: a search starts in a second, not several

    @property
    def spec(self) -> ModelSpec | None:
        """The ``ModelSpec`` the model was loaded from, resolved on its device (None: a hand-built backend)."""
        return self.backend.spec

    @property
    def identity(self) -> dict:
        return self.backend.identity

    @property
    def embed_dim(self) -> int:
        return self.backend.embed_dim

    @classmethod
    def for_index(
        cls,
        index,
        device: str = "auto",
        backend: str = "torch",
        precision: str = "auto",
        model: str | os.PathLike | None = None,
        clip_weights: str | os.PathLike | None = None,
        tokenizer: str | os.PathLike | None = None,
    ) -> TextEncoder:
        """The text encoder of the model an ``EmbeddingIndex`` was built with (read from its sidecar).

        model, clip_weights: another reference to the same model (a moved checkpoint, say); the index's
        recorded CLIP weights are kept unless ``clip_weights`` is given (``ModelSpec.for_index``). The
        model is checked to be the index's before its weights load (``ModelMismatchError``). Any
        precision searches any index: precision is not part of the model identity.
        """
        spec = ModelSpec.for_index(
            index.model_source,
            model,
            clip_weights,
            device=device,
            backend=backend,
            precision=precision,
            tokenizer=tokenizer,
        )
        index.check_model(spec.identity, given=spec.name if model is not None else None)
        return cls(spec)

    def encode(self, texts: str | Sequence[str], batch_size: int = 256) -> np.ndarray:
        """texts (a string or N strings) -> (N, C) float32 L2-normalised embeddings."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        for number, text in enumerate(texts, 1):
            if not isinstance(text, str) or not text.strip():
                raise QueryError(
                    f"query {number} ({text!r}) is empty or not text: give the words to search for"
                )
        if not texts:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        ids = self.backend.tokenize(texts)  # (N, max_words), the model's tokenizer
        parts = [
            self.backend.encode_text_tokens(ids[start : start + batch_size])
            for start in range(0, len(ids), batch_size)
        ]
        return np.concatenate(parts).astype(np.float32, copy=False)


class VideoEncoder:
    """Encodes video files with a MUSE model's video tower.

    model: a name or file ``muse_infer.load_model`` accepts, or a loaded backend. max_frames: frames
    sampled a video (default: the model's, 12). Frames are sampled at the model's frame rate (1 a
    second) and slice mode, as CLIP4Clip does (``muse_infer.video``). precision: "auto" (bf16 on a
    GPU and on a CPU with native bf16, fp32 elsewhere), "fp32", "bf16" or "fp16". sampling: "exact" (the frame shown at each
    sample time) or "keyframes" (the keyframe nearest it, decoding nothing else: several times cheaper
    to decode; ``muse_infer.video.keyframes``); part of ``settings``, as the index records them.
    tokenizer: the folder of the text tower's Hugging Face tokenizer files (``TextEncoder``), recorded
    in the spec's source so that an index made with it is searched with it. decoder: where videos are
    decoded, "cpu" or "cuda" / "cuda:N" (NVDEC; the same frames: ``muse_infer.video.devices``).
    """

    def __init__(
        self,
        model: str | os.PathLike | ModelSpec | Backend,
        device: str = "auto",
        backend: str = "torch",
        clip_weights: str | os.PathLike | None = None,
        max_frames: int | None = None,
        precision: str = "auto",
        sampling: str = "exact",
        tokenizer: str | os.PathLike | None = None,
        decoder: str = "cpu",
    ):
        if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
            raise ValueError(f"max_frames must be a positive integer, got {max_frames!r}")
        if isinstance(model, Backend):
            self.backend = _loaded(model, precision=precision)
            spec = self.backend.spec
            if spec is not None:
                frames = max_frames or spec.max_frames
                spec = dataclasses.replace(spec, max_frames=frames, sampling=sampling, decoder=decoder)
            if self.backend.text_only:  # a text encoder's: its model is loaded whole now, once
                self.backend = spec.load()
        else:
            choices = dict(device=device, backend=backend, clip_weights=clip_weights, precision=precision)
            choices |= dict(max_frames=max_frames, sampling=sampling, tokenizer=tokenizer, decoder=decoder)
            spec = encoder_spec(model, **choices).on_device()
            self.backend = spec.load()
        self.spec: ModelSpec | None = spec  # None: a hand-built backend
        b = self.backend
        frames = max_frames or (spec.max_frames if spec is not None else None) or b.max_frames
        sampling = spec.sampling if spec is not None else sampling
        decoder = spec.decoder if spec is not None else decoder
        self.frame_settings = FrameSettings(
            frames, b.framerate, b.slice_mode, b.image_size, sampling, **b.preprocess, decoder=decoder
        )
        check_decoder(decoder)  # a GPU decoder that is not there is said now, not by every file

    @property
    def identity(self) -> dict:
        return self.backend.identity

    @property
    def embed_dim(self) -> int:
        return self.backend.embed_dim

    @classmethod
    def for_index(
        cls,
        index,
        device: str = "auto",
        backend: str = "torch",
        precision: str = "auto",
        model: str | os.PathLike | None = None,
        clip_weights: str | os.PathLike | None = None,
        tokenizer: str | os.PathLike | None = None,
    ) -> VideoEncoder:
        """The video encoder of the model an ``EmbeddingIndex`` was built with, sampling frames as the
        index's rows were (its recorded ``max_frames``), to encode query examples (``search --like``).

        model, clip_weights, tokenizer: as ``TextEncoder.for_index`` (checked against the index before
        loading).
        """
        frames = (index.settings or {}).get("max_frames")
        spec = ModelSpec.for_index(
            index.model_source,
            model,
            clip_weights,
            device=device,
            backend=backend,
            precision=precision,
            max_frames=frames if isinstance(frames, int) and frames > 0 else None,
            tokenizer=tokenizer,
        )
        index.check_model(spec.identity, given=spec.name if model is not None else None)
        return cls(spec)

    def encode_example(self, path: str | os.PathLike) -> np.ndarray:
        """A query example (``search --like``) -> its embedding (C,) float32, L2-normalised: a video as
        ``encode`` encodes it (the same vector), an image as a one-frame clip (``video.examples``).
        Decoded in this process; raises ``VideoDecodeError`` naming the file."""
        from .video.examples import read_example

        clip = read_example(path, self.frame_settings)
        return self.encode_clip(clip)

    def encode_clip(self, clip: np.ndarray) -> np.ndarray:
        """One uint8 clip (t, S, S, 3) (1 <= t <= max_frames) -> its embedding (C,) float32."""
        embedding = np.asarray(self.submit([clip]).result(), dtype=np.float32)[0]
        if not np.all(np.isfinite(embedding)):
            raise BackendError("the model gave a non-finite embedding for the example")
        return embedding

    @property
    def settings(self) -> dict:
        """Frame sampling settings that, with the model identity, determine every embedding."""
        return self.frame_settings.to_dict()

    @property
    def default_batch_size(self) -> int:
        """Videos a model call when ``batch_size`` is None: the spec's, else 8 on the CPU, 64 on a GPU."""
        if self.spec is not None and self.spec.batch_size is not None:
            return self.spec.batch_size
        return default_batch_size(self.backend.device)

    def encode(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        batch_size: int | None = None,
        workers: int | None = None,
        timeout: float = 120.0,
        on_error: str = "raise",
        progress: bool = False,
    ) -> np.ndarray:
        """Embeddings (N, C) float32, L2-normalised, one row per readable path, in input order.

        batch_size: videos a model call (default ``default_batch_size``). workers: decoding processes
        (default ``default_workers(device)``; 0 decodes in this process, without the per-file
        ``timeout`` in seconds). on_error, for a file that cannot be read as a video: "raise" raises
        ``VideoDecodeError`` naming it (the default); "skip" leaves its row out (M <= N rows) and logs
        a warning with the reason; "nan" keeps a NaN row in its place (N rows). ``encode_iter`` gives
        each path's result with its reason. progress: a progress bar (videos, rate, time left) on stderr.
        """
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        embeddings = np.full((len(paths), self.embed_dim), np.nan, dtype=np.float32)
        readable = np.ones(len(paths), dtype=bool)
        with progress_bar(len(paths), "encoding", enabled=progress) as bar:
            for result in self.encode_iter(paths, batch_size, workers, timeout):
                bar.update(1)
                if result.error is None:
                    embeddings[result.index] = result.embedding
                elif on_error == "raise":
                    raise VideoDecodeError(result.path, result.error)
                else:
                    readable[result.index] = False
                    logger.warning("skipped %s: %s", result.path, result.error)
        return embeddings[readable] if on_error == "skip" else embeddings

    def encode_iter(
        self,
        paths: Sequence[str | os.PathLike],
        batch_size: int | None = None,
        workers: int | None = None,
        timeout: float = 120.0,
    ) -> Iterator[VideoResult]:
        """``VideoResult`` for every path, in input order, with failures instead of exceptions."""
        for group in self.encode_groups(paths, batch_size, workers, timeout):
            yield from group

    def encode_groups(
        self,
        paths: Sequence[str | os.PathLike],
        batch_size: int | None = None,
        workers: int | None = None,
        timeout: float = 120.0,
        on_decoded: Callable[[], None] | None = None,
    ) -> Iterator[list[VideoResult]]:
        """Results in input order, grouped by model batch: each group ends with a batch's last video.

        A group holds ``batch_size`` decoded videos (fewer at the end) plus the failures met before
        the last of them. Batch composition depends only on the input list and ``batch_size``, so a
        caller that resumes after a whole group re-forms exactly the batches of an uninterrupted run.
        When the backend computes asynchronously (a GPU), a group is yielded once the next batch has
        been queued, so the device always has work. on_decoded: called as each video is decoded (or
        fails), for progress between model batches.
        """
        batch_size, workers = self._check_run(batch_size, workers, timeout)
        paths = [os.fspath(p) for p in paths]
        decoded = _decoded(paths, self.frame_settings, workers, timeout, 2 * batch_size + workers)
        ahead = 1 if self.backend.asynchronous else 0
        on_item = None if on_decoded is None else (lambda _item: on_decoded())
        yield from self._batched(_observed(decoded, on_item), batch_size, ahead)

    def encode_moment_groups(
        self,
        paths: Sequence[str | os.PathLike],
        windows: WindowSettings,
        batch_size: int | None = None,
        workers: int | None = None,
        timeout: float = 120.0,
        on_moments: Callable[[int], None] | None = None,
    ) -> Iterator[list[VideoResult]]:
        """Each video's moments: ``VideoResult.embedding`` (n, C), a row per window of ``spans``.

        Every video is decoded once for all its windows (``video.window_reader``); a model batch holds
        ``batch_size`` windows, of one video or several, and a group ends with the videos completed by
        a batch. ``timeout``: seconds a decode may go without producing a window (``video.pool``).
        on_moments: called with the change in the count of moments (rows to come) for progress between
        batches: +1 as each window is read, minus the windows already read of a video that then fails.
        """
        batch_size, workers = self._check_run(batch_size, workers, timeout)
        paths = [os.fspath(p) for p in paths]
        decoded = _decoded(paths, self.frame_settings, workers, timeout, batch_size + workers, windows)
        ahead = 1 if self.backend.asynchronous else 0
        on_item = None if on_moments is None else _MomentCount(on_moments)
        yield from _MomentBatcher(self, batch_size, ahead).run(_observed(decoded, on_item))

    def _check_run(self, batch_size: int | None, workers: int | None, timeout: float) -> tuple[int, int]:
        batch_size = self.default_batch_size if batch_size is None else batch_size
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if timeout is None or not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if workers is None:
            workers = default_workers(self.backend.device)
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        return batch_size, workers

    def submit(self, clips: list[np.ndarray]):
        """Start embedding uint8 clips (t, S, S, 3); returns an object whose ``result()`` is (n, C)."""
        return self.backend.submit_clips(clips, self.frame_settings.max_frames)

    def encode_decoded(
        self, decoded: Iterable[Decoded], batch_size: int | None = None
    ) -> Iterator[list[VideoResult]]:
        """``encode_groups`` for clips decoded elsewhere (by a Ray task, say): the same batches and results.

        decoded: ``muse_infer.video.pool.Decoded`` items in order, each a (t, S, S, 3) uint8 clip or a
        failure reason; failures pass through as ``VideoResult.error``.
        """
        batch_size = self.default_batch_size if batch_size is None else batch_size
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        ahead = 1 if self.backend.asynchronous else 0
        return self._batched(iter(decoded), batch_size, ahead)

    def _batched(self, decoded, batch_size: int, ahead: int = 0) -> Iterator[list[VideoResult]]:
        """Group ``decoded`` into model batches; ``ahead``: batches queued before the oldest is collected."""
        pending: list = []  # Decoded items in order, failures included
        ready = 0  # how many of them have frames
        in_flight: list[_Batch] = []
        try:
            for item in decoded:
                pending.append(item)
                ready += item.error is None
                if ready == batch_size:
                    in_flight.append(self._start_batch(pending))
                    pending, ready = [], 0
                    if len(in_flight) > ahead:
                        yield in_flight.pop(0).results()
            if pending:
                in_flight.append(self._start_batch(pending))
            while in_flight:
                yield in_flight.pop(0).results()
        finally:
            if hasattr(decoded, "close"):
                decoded.close()  # stops the decode workers when the caller stops early

    def _start_batch(self, items: list) -> _Batch:
        """Start embedding the decoded items of ``items`` in one model call; failures pass through.

        uint8 clips go to a backend that normalises on its device (``submit_clips``); other backends
        get float32 frames normalised here.
        """
        good = [item for item in items if item.error is None]
        if not good:
            return _Batch(items, good, None)
        return _Batch(items, good, self.submit([item.pixels for item in good]))


def _decoded(
    paths: list[str],
    settings: FrameSettings,
    workers: int,
    timeout: float,
    prefetch: int,
    windows: WindowSettings | None = None,
) -> Iterator[Decoded]:
    """The videos decoded in input order (``video.pool``): in this process when ``workers`` is 0, else
    by that many decode workers, at most ``prefetch`` videos ahead. Imported here, not with this
    module: the pool and the readers cost a text search's start-up ~50 ms it does not need."""
    from .video.pool import DecodePool, decode_inline

    if workers == 0:
        return decode_inline(paths, settings, windows)
    return DecodePool(settings, workers, timeout, prefetch, windows=windows).imap(paths)


@dataclass
class _Batch:
    """A model batch started: its decoded items (failures too), those with frames, the pending rows."""

    items: list
    good: list
    pending: object | None  # has .result() -> (len(good), C) float32

    def results(self) -> list[VideoResult]:
        """Wait for the embeddings; one ``VideoResult`` an item, in order."""
        embeddings = {}
        if self.pending is not None:
            for item, row in zip(self.good, self.pending.result(), strict=True):
                embeddings[item.index] = row
        results = []
        for item in self.items:
            row = embeddings.get(item.index)
            if item.error is None and not np.all(np.isfinite(row)):
                results.append(
                    VideoResult(item.index, item.path, error="the model gave a non-finite embedding")
                )
            elif item.error is None:
                embedding = row.astype(np.float32)
                results.append(VideoResult(item.index, item.path, embedding=embedding, facts=item.facts))
            else:
                results.append(VideoResult(item.index, item.path, error=item.error))
        return results


@dataclass
class _MomentVideo:
    """A video being encoded as moments: its windows' spans, their rows as they come, how it ended."""

    index: int
    path: str
    spans: list = field(default_factory=list)  # (start_s, end_s) a window
    rows: list = field(default_factory=list)  # its embedding (C,) once computed, else None
    final: bool = False
    error: str | None = None
    facts: dict | None = None

    def complete(self) -> bool:
        return self.final and (self.error is not None or all(row is not None for row in self.rows))

    def result(self) -> VideoResult:
        if self.error is not None:
            return VideoResult(self.index, self.path, error=self.error)
        embedding = np.stack(self.rows).astype(np.float32)
        if not np.all(np.isfinite(embedding)):
            return VideoResult(self.index, self.path, error="the model gave a non-finite embedding")
        spans = list(self.spans)
        return VideoResult(self.index, self.path, embedding=embedding, spans=spans, facts=self.facts)


class _MomentBatcher:
    """Windows of videos (``Decoded`` parts in order) into model batches of ``batch_size`` windows;
    a group of ``VideoResult``s (in input order) after each batch, of the videos it completed."""

    def __init__(self, encoder: VideoEncoder, batch_size: int, ahead: int):
        self.encoder, self.batch_size, self.ahead = encoder, batch_size, ahead
        self.videos: list[_MomentVideo] = []  # not yet handed out, in order
        self.queue: list = []  # (video, slot, pixels) waiting for a batch
        self.in_flight: list = []  # (entries [(video, slot)], pending)

    def run(self, decoded) -> Iterator[list[VideoResult]]:
        try:
            for item in decoded:
                if self._take(item):
                    yield from self._collect(keep=self.ahead)
            if self.queue:
                self._start()
            yield from self._collect(keep=0)
            if self.videos:  # failures after the last batch
                yield [video.result() for video in self.videos]
                self.videos = []
        finally:
            if hasattr(decoded, "close"):
                decoded.close()  # stops the decode workers when the caller stops early

    def _take(self, item: Decoded) -> bool:
        """Add one decoded item; True when it filled a batch (which is then started)."""
        if not self.videos or self.videos[-1].index != item.index:
            self.videos.append(_MomentVideo(item.index, item.path))
        video = self.videos[-1]
        if item.final:
            video.final, video.error, video.facts = True, item.error, item.facts
            if item.error is not None:  # its windows already queued are not worth computing
                self.queue = [entry for entry in self.queue if entry[0] is not video]
            return False
        video.spans.append(item.span)
        video.rows.append(None)
        self.queue.append((video, len(video.rows) - 1, item.pixels))
        if len(self.queue) < self.batch_size:
            return False
        self._start()
        return True

    def _start(self) -> None:
        entries = [(video, slot) for video, slot, _ in self.queue]
        self.in_flight.append((entries, self.encoder.submit([pixels for _, _, pixels in self.queue])))
        self.queue = []

    def _collect(self, keep: int) -> Iterator[list[VideoResult]]:
        """Wait for batches until ``keep`` are in flight; yield the videos they completed."""
        while len(self.in_flight) > keep:
            entries, pending = self.in_flight.pop(0)
            for (video, slot), row in zip(entries, pending.result(), strict=True):
                video.rows[slot] = row
            group = []
            while self.videos and self.videos[0].complete():
                group.append(self.videos.pop(0).result())
            if group:
                yield group


class _observed:
    """``items`` (decoded clips) calling ``on_item(item)`` as each one arrives; ``close()`` closes them."""

    def __init__(self, items, on_item: Callable[[Decoded], None] | None):
        self.items, self.on_item = iter(items), on_item

    def __iter__(self):
        return self

    def __next__(self):
        item = next(self.items)
        if self.on_item is not None:
            self.on_item(item)
        return item


class _MomentCount:
    """Decoded windows -> changes in the count of moments: +1 a window; when a video fails, minus the
    windows it had sent (they make no rows); 0 for a video's last item otherwise (progress moves)."""

    def __init__(self, report: Callable[[int], None]):
        self.report, self.sent = report, {}  # windows sent so far, by video index

    def __call__(self, item: Decoded) -> None:
        if not item.final:
            self.sent[item.index] = self.sent.get(item.index, 0) + 1
            self.report(1)
            return
        sent = self.sent.pop(item.index, 0)
        self.report(-sent if item.error is not None else 0)

    def close(self) -> None:
        if hasattr(self.items, "close"):
            self.items.close()
