"""The two encoders as separate nn.Modules with plain tensor signatures, and the scan choice for export.

``VideoEncoderModule`` and ``TextEncoderModule`` wrap a MuseModel's ``encode_video`` and
``encode_text_tokens`` so each can be exported alone. The context managers set the model's scan choice
(``MuseModel.set_scan``) for the export and restore it after, deciding what the blocks' selective
scans become in the exported graph:

- ``scan_as_op(model)``: each block's two scans are one ``torch.ops.muse.selective_scan_bidirectional``
  node, which the ONNX exporter translates (muse_infer/ops/onnx_scan.py) and TorchScript and
  torch.export keep as a ``muse::`` call.
- ``scan_as_script(model)``: every scan calls ``selective_scan_script`` (muse_infer/ops/torchscript_scan.py),
  a ``torch.jit.script`` function that a traced graph embeds, so the TorchScript file needs nothing but
  torch.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from muse_infer.errors import MuseError


class ExportError(MuseError, RuntimeError):
    """An export that cannot be written or does not verify; the message names the file or argument."""


class ExportVerificationError(ExportError):
    """Exported files whose results differ from the eager model's by more than the tolerance."""


# open_clip CLIP attributes that only the text tower (or only the similarity) uses; "text" is the whole
# text tower of CustomTextCLIP (SigLIP's, Hugging Face towers).
TEXT_TOWER = frozenset(
    {
        "transformer",
        "token_embedding",
        "positional_embedding",
        "ln_final",
        "text_projection",
        "attn_mask",
        "text",
    }
)
SIMILARITY = frozenset({"logit_scale", "logit_bias"})


class VideoEncoderModule(nn.Module):
    """frames (B, T, 3, H, W) float32 preprocessed, mask (B, T) float32 (1 = real) -> (B, C) L2-normalised.

    Holds a view of the model without the text tower (weights shared, not copied), so a saved
    TorchScript file carries only the video weights.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = _with_clip(model, TEXT_TOWER | SIMILARITY)

    def forward(self, frames: Tensor, mask: Tensor) -> Tensor:
        return self.model.encode_video(frames, mask)


class TextEncoderModule(nn.Module):
    """token ids (B, L) int64, CLIP4Clip-tokenised -> (B, C) L2-normalised.

    Holds a view of the model without the video tower, pyramid and blocks (weights shared).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        text_only = _with_clip(model, frozenset({"visual"}) | SIMILARITY)
        self.model = _without(text_only, frozenset({"pyramid", "blocks"}))

    def forward(self, ids: Tensor) -> Tensor:
        return self.model.encode_text_tokens(ids)


def _with_clip(model: nn.Module, drop: frozenset[str]) -> nn.Module:
    """A shallow copy of a MuseModel whose ``backbone.clip`` lacks the attributes in ``drop``."""
    backbone = _without(model.backbone, frozenset())
    backbone._modules["clip"] = _without(model.backbone.clip, drop)
    view = _without(model, frozenset())
    view._modules["backbone"] = backbone
    return view


def _without(module: nn.Module, drop: frozenset[str]) -> nn.Module:
    """A shallow copy of ``module`` (same parameter tensors) without the submodules, parameters and
    buffers named in ``drop``; the original is untouched."""
    clone = copy.copy(module)
    clone._modules = {k: v for k, v in module._modules.items() if k not in drop}
    clone._parameters = {k: v for k, v in module._parameters.items() if k not in drop}
    clone._buffers = {k: v for k, v in module._buffers.items() if k not in drop}
    clone._non_persistent_buffers_set = set(module._non_persistent_buffers_set) - drop
    return clone


@contextlib.contextmanager
def scan_as_op(model: nn.Module) -> Iterator[None]:
    """Within: no gradients, and ``model``'s scans go through the custom ops (scan choice "op").

    "op" rather than "auto": the op's node goes into the graph even where, without a fast kernel, "auto"
    would pick the reference (whose Python loop would unroll into the graph).
    """
    try:
        import muse_infer.ops.op  # noqa: F401  (registers the ops and their fake kernels)
    except ImportError as error:
        raise ExportError(
            "exporting needs the muse::selective_scan ops (muse_infer/ops/op.py and its C++ library); "
            f"install the package with `pip install --no-build-isolation -e .` ({error})"
        ) from None
    with _scan_choice(model, "op"):
        yield


@contextlib.contextmanager
def scan_as_script(model: nn.Module) -> Iterator[None]:
    """Within: no gradients, and ``model``'s scans call ``selective_scan_script`` (scan choice "script")."""
    with _scan_choice(model, "script"):
        yield


@contextlib.contextmanager
def _scan_choice(model: nn.Module, choice: str) -> Iterator[None]:
    previous = model.set_scan(choice)
    try:
        with torch.no_grad():
            yield
    finally:
        model.set_scan(previous)


EXPORT_BATCH = 2  # the example batch for torch.export; 1 would let it specialise the batch dimension
MAX_EXPORT_BATCH = 4096


def dynamic_batch(args: tuple[Tensor, ...]) -> tuple[dict, ...]:
    """torch.export ``dynamic_shapes`` making dimension 0 of every input one shared dynamic batch size."""
    batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
    return tuple({0: batch} for _ in args)


def example_video_inputs(config, batch: int, seed: int = 0, real_frames: list[int] | None = None):
    """Random preprocessed frames (batch, T, 3, H, W) float32 and mask (batch, T) float32.

    T and H, W are the config's max_frames and image_size. ``real_frames[i]`` frames of video i are
    real (default: the last video has about half), the padded ones zero, as the video loader returns.
    """
    generator = torch.Generator().manual_seed(seed)
    frames_per_video, size = config.max_frames, config.image_size
    frames = torch.randn(batch, frames_per_video, 3, size, size, generator=generator)
    if real_frames is None:
        real_frames = [frames_per_video] * (batch - 1) + [max(1, frames_per_video // 2)]
    mask = torch.zeros(batch, frames_per_video)
    for row, count in enumerate(real_frames):
        mask[row, :count] = 1.0
    frames[mask == 0] = 0.0
    return frames, mask


def example_text_inputs(config, batch: int, seed: int = 0, vocab_size: int | None = None):
    """Random token ids (batch, max_words) int64. CLIP's BPE (``config.tokenizer`` None): CLIP4Clip's
    layout, start, words, end, zero padding. A Hugging Face tokenizer's: random ids in [5, vocab_size)
    (above the usual special tokens) filling the row; vocab_size: the text tower's (``ClipBackbone.
    text_vocab_size``), else the config's."""
    generator = torch.Generator().manual_seed(seed)
    length = config.max_words
    if config.tokenizer is not None:
        vocab = vocab_size or int(config.clip["text_cfg"].get("vocab_size", 1000))
        return (torch.randint(5, vocab, (batch, length), generator=generator),)
    start, end = 49406, 49407  # open_clip's SimpleTokenizer sot/eot ids
    ids = torch.zeros(batch, length, dtype=torch.long)
    for row in range(batch):
        words = int(torch.randint(1, length - 1, (1,), generator=generator))
        ids[row, 0] = start
        ids[row, 1 : words + 1] = torch.randint(1, start, (words,), generator=generator)
        ids[row, words + 1] = end
    return (ids,)


def op_library_path() -> str:
    """Path of the C++ library that registers the ``muse::`` scan ops (muse_infer/_C.so).

    ``torch.ops.load_library(op_library_path())`` is the loading step for TorchScript files that call
    the op, in Python; a libtorch C++ program dlopens the same file.
    """
    import importlib.util

    spec = importlib.util.find_spec("muse_infer._C")
    if spec is None or not spec.origin:
        raise ExportError(
            "the C++ library muse_infer/_C.so is not built; install with `pip install --no-build-isolation -e .`"
        )
    return spec.origin
