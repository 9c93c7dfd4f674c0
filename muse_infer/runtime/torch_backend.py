"""``TorchBackend``: a ``MuseModel`` run with PyTorch, behind the ``Backend`` interface.

Beyond the interface it takes uint8 clips (``submit_clips``): the clips are padded into one host
batch (pinned memory on a GPU), copied to the device without blocking (4x fewer bytes than float32
frames), normalised there with ``video.frames.normalise``'s float32 math bit for bit
(``normalise_pixels``), and the model's work is queued; the caller collects the embeddings later
(``PendingEmbeddings.result``), so it can prepare the next batch while the GPU computes this one.
On the CPU the same code runs synchronously.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import BackendError, CheckpointError, ConfigError, PretrainedWeightsError
from .backend import Backend
from .devices import SMALL_TEXT_BATCH, torch_threads

COMPILE_MODES = ("off", "compile", "cudagraphs")


class TorchBackend(Backend):
    """A ``MuseModel`` run with PyTorch in inference mode, in ``precision`` ("fp32", "bf16", "fp16").

    compile_backbone: "off" (default), "compile" (``torch.compile`` the CLIP image tower) or
    "cudagraphs" (the same with mode="reduce-overhead", CUDA graphs on a GPU). Off by default: whether
    they help is measured by benchmarks/gpu_check.sh, not assumed (docs/benchmarks.md). Each new batch
    shape compiles again (the last, smaller batch of a run, say).
    """

    name = "torch"

    def __init__(
        self,
        model,
        identity: dict,
        source: dict,
        device: str = "cpu",
        precision: str = "fp32",
        compile_backbone: str = "off",
    ):
        from ..model.precision import cast_for_inference

        config = model.config
        self.model, self.identity, self.source, self.device = model, identity, source, device
        self.precision = precision
        self.max_frames, self.framerate, self.slice_mode = (
            config.max_frames,
            config.framerate,
            config.slice_mode,
        )
        self.image_size, self.max_words, self.embed_dim = (
            config.image_size,
            config.max_words,
            config.embed_dim,
        )
        self.logit_scale = float(model.logit_scale.detach().float().cpu())
        self.preprocess = config.frame_preprocess
        cast_for_inference(model, precision)
        _compile_backbone(model, compile_backbone)
        self._pixel_constants = pixel_constants(device, self.preprocess["mean"], self.preprocess["std"])

    @property
    def asynchronous(self) -> bool:
        """True when ``submit_clips`` returns before the model has run (a CUDA device)."""
        return self.device.startswith("cuda")

    @classmethod
    def from_spec(cls, spec, compile_backbone: str = "off", text_only: bool = False) -> TorchBackend:
        """The model of ``spec`` (a ``ModelSpec`` resolved ``on_device``) with its weights loaded by
        ``muse_infer.load_model``; errors name the model and what to do. text_only: the text tower alone
        where it can be loaded alone (``loading.text``: no video tower, no open_clip import, only the
        text tensors read), else the whole model; its text embeddings are the same either way."""
        from ..loading.models import load_model
        from ..loading.text import load_text_model

        if compile_backbone not in COMPILE_MODES:
            raise BackendError(f"compile_backbone {compile_backbone!r} is not one of {COMPILE_MODES}")
        try:
            with torch_threads(1):  # a text tower's tensors are read or drawn by memory-bound copies
                muse = None
                if text_only:  # None for a tower it does not cover: the whole model below
                    muse = load_text_model(spec.ref, spec.clip_weights, spec.device, tokenizer=spec.tokenizer)
            if muse is None:
                muse = load_model(spec.ref, spec.device, spec.clip_weights, spec.tokenizer)
        except (CheckpointError, ConfigError, PretrainedWeightsError) as error:
            raise BackendError(f"cannot load model {spec.name!r}: {error}") from None
        backend = cls(muse, spec.identity, spec.source, spec.device, spec.precision, compile_backbone)
        backend.spec, backend.text_only = spec, not hasattr(muse, "backbone")
        return backend

    def encode_video(self, frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """frames (B, T, 3, H, W) float32, mask (B, T) -> (B, C) float32 L2-normalised."""
        import torch

        with torch.inference_mode():
            frames_t = torch.as_tensor(frames, dtype=torch.float32).to(self.device)
            mask_t = torch.as_tensor(mask, dtype=torch.long).to(self.device)
            return self.model.encode_video(frames_t, mask_t).float().cpu().numpy()

    def submit_clips(self, clips: Sequence[np.ndarray], max_frames: int) -> PendingEmbeddings:
        """Queue the embedding of uint8 clips, each (t_i, S, S, 3) with 1 <= t_i <= max_frames.

        The same embeddings as ``encode_video(*video.frames.clip_inputs(clips, max_frames))``, bit for
        bit in fp32. Returns at once on a GPU; ``.result()`` gives (B, C) float32 L2-normalised.
        """
        import torch

        from ..video.frames import clip_pixels

        pin = self.asynchronous
        size = clips[0].shape[1] if len(clips) else 0
        with torch.inference_mode():
            pixels = torch.empty((len(clips), max_frames, size, size, 3), dtype=torch.uint8, pin_memory=pin)
            mask = torch.empty((len(clips), max_frames), dtype=torch.long, pin_memory=pin)
            clip_pixels(clips, max_frames, out=(pixels.numpy(), mask.numpy()))
            pixels = pixels.to(self.device, non_blocking=pin)
            mask = mask.to(self.device, non_blocking=pin)
            frames = normalise_pixels(pixels, mask, self._pixel_constants)
            return PendingEmbeddings(self.model.encode_video(frames, mask))

    def encode_text_tokens(self, token_ids: np.ndarray) -> np.ndarray:
        """token_ids (N, L) int64 -> (N, C) float32 L2-normalised (a few queries on the CPU: one thread,
        ``devices.torch_threads``)."""
        import torch

        few = self.device == "cpu" and len(token_ids) <= SMALL_TEXT_BATCH
        with torch.inference_mode(), torch_threads(1 if few else None):
            ids = torch.as_tensor(token_ids, dtype=torch.long).to(self.device)
            return self.model.encode_text_tokens(ids).float().cpu().numpy()

    def tokenize(self, texts: list[str]) -> np.ndarray:
        """texts -> (N, max_words) int64 with the model's own tokenizer (``MuseModel.tokenizer``)."""
        return self.model.tokenizer(texts).numpy()


class PendingEmbeddings:
    """Embeddings being computed on the device; ``result()`` waits for them.

    On a GPU the copy back goes into pinned host memory without blocking, and an event marks its end.
    """

    def __init__(self, embeddings):
        import torch

        self._event = None
        if embeddings.is_cuda:
            self._host = torch.empty(embeddings.shape, dtype=torch.float32, pin_memory=True)
            self._host.copy_(embeddings, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record(torch.cuda.current_stream(embeddings.device))  # the copy's stream
        else:
            self._host = embeddings.float()

    def result(self) -> np.ndarray:
        """(B, C) float32 L2-normalised embeddings (waits for the device)."""
        if self._event is not None:
            self._event.synchronize()
        return self._host.numpy()


def pixel_constants(device: str, mean=None, std=None) -> tuple:
    """255, the model's mean and std (CLIP's by default) as float32 tensors on ``device`` (made once:
    creating them from Python numbers copies them to the device, a blocking copy)."""
    import torch

    from ..video.frames import CLIP_MEAN, CLIP_STD

    mean, std = CLIP_MEAN if mean is None else mean, CLIP_STD if std is None else std
    values = (torch.tensor(255.0), torch.tensor(tuple(mean)), torch.tensor(tuple(std)))
    return tuple(v.to(dtype=torch.float32, device=device) for v in values)


def normalise_pixels(pixels, mask, constants: tuple):
    """(B, T, S, S, 3) uint8, mask (B, T) -> (B, T, 3, S, S) float32 normalised, zero where mask is 0.

    ``video.frames.normalise``'s operations in its order, in float32: (pixel / 255 - mean) / std. The
    255 is a tensor on the device, not a Python number: CUDA divides by a host scalar as a multiply by
    its reciprocal, which can differ from the division in the last bit. ``constants``: ``pixel_constants``.
    """
    import torch

    scale, mean, std = constants
    normalised = (pixels.to(torch.float32) / scale - mean) / std  # (B, T, S, S, 3)
    real = mask.to(torch.bool)[:, :, None, None, None]
    normalised = torch.where(real, normalised, 0.0)
    return normalised.permute(0, 1, 4, 2, 3).contiguous()


def _compile_backbone(model, mode: str) -> None:
    """Replace the CLIP image tower's ``image_tokens`` by its ``torch.compile``d version (mode != "off")."""
    if mode == "off":
        return
    import torch

    options = {"compile": {}, "cudagraphs": {"mode": "reduce-overhead"}}[mode]
    backbone = model.backbone
    backbone.image_tokens = torch.compile(backbone.image_tokens, dynamic=False, **options)
    if backbone.kind != "openai":  # meanP's frame features skip image_tokens for these towers
        backbone.image_features = torch.compile(backbone.image_features, dynamic=False, **options)
