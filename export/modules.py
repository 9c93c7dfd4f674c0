"""The two encoders as separate nn.Modules with plain tensor signatures, and the scan routing for export.

``VideoEncoderModule`` and ``TextEncoderModule`` wrap a MuseModel's ``encode_video`` and
``encode_text_tokens`` so each can be exported alone. The context managers decide what the model's
selective scans become in the exported graph:

- ``scan_as_op()``: every scan calls ``torch.ops.muse.selective_scan`` (one graph node per scan), which
  the ONNX exporter translates (export/scan_onnx.py) and TorchScript keeps as a ``muse::`` call.
- ``scan_as_script()``: every scan calls ``selective_scan_script``, a ``torch.jit.script`` function that
  a traced graph embeds, so the TorchScript file needs nothing but torch.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
from collections.abc import Iterator
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from muse_infer.errors import MuseError


class ExportError(MuseError, RuntimeError):
    """An export that cannot be written or does not verify; the message names the file or argument."""


class ExportVerificationError(ExportError):
    """Exported files whose results differ from the eager model's by more than the tolerance."""


# open_clip CLIP attributes that only the text tower (or only the similarity) uses.
TEXT_TOWER = frozenset(
    {"transformer", "token_embedding", "positional_embedding", "ln_final", "text_projection", "attn_mask"}
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
def scan_as_op() -> Iterator[None]:
    """Within: no gradients, and the model's scans go through ``torch.ops.muse.selective_scan``.

    The dispatch (muse_infer/ops/dispatch.py) reads MUSE_SCAN at every call; "op" makes it call the op
    even where it would otherwise pick the reference (whose Python loop would unroll into the graph).
    """
    try:
        import muse_infer.ops.op  # noqa: F401  (registers the op and its fake kernel)
    except ImportError as error:
        raise ExportError(
            "exporting needs the muse::selective_scan op (muse_infer/ops/op.py and its C++ library); "
            f"install the package with `pip install --no-build-isolation -e .` ({error})"
        ) from None
    with _environment("MUSE_SCAN", "op"), torch.no_grad():
        yield


@contextlib.contextmanager
def scan_as_script() -> Iterator[None]:
    """Within: no gradients, and the BiMamba blocks call ``selective_scan_script`` for every scan."""
    from muse_infer.model import bimamba

    original = bimamba.selective_scan_fn
    bimamba.selective_scan_fn = scripted_scan()
    try:
        with torch.no_grad():
            yield
    finally:
        bimamba.selective_scan_fn = original


@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


@functools.cache
def scripted_scan() -> torch.jit.ScriptFunction:
    """``selective_scan_script`` compiled by ``torch.jit.script`` (once, on first use)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated", category=FutureWarning)
        return torch.jit.script(selective_scan_script)


def selective_scan_script(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Optional[Tensor] = None,  # noqa: UP045 (TorchScript reads typing.Optional)
    z: Optional[Tensor] = None,  # noqa: UP045 (TorchScript reads typing.Optional)
    delta_bias: Optional[Tensor] = None,  # noqa: UP045 (TorchScript reads typing.Optional)
    delta_softplus: bool = False,
) -> Tensor:
    """``selective_scan_ref`` in TorchScript (fp32; B, C (batch, N, L) only), for the portable files.

    u, delta, z: (batch, Di, L); A: (Di, N); B, C: (batch, N, L); D, delta_bias: (Di,) -> y (batch, Di, L).
    """
    out_dtype = u.dtype
    u, delta, A = u.float(), delta.float(), A.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float().unsqueeze(1)
    if delta_softplus:
        delta = F.softplus(delta)
    # Time-major and contiguous, so each step reads one block; one addcmul a step (the interpreter's
    # cost is per op), the readout by C as one matmul after the loop.
    delta_t = delta.permute(2, 0, 1).contiguous()  # (L, batch, Di)
    decay = torch.exp(delta_t.unsqueeze(3) * A)  # (L, batch, Di, N)
    drive = (delta_t * u.permute(2, 0, 1)).unsqueeze(3) * B.float().permute(2, 0, 1).unsqueeze(
        2
    )  # (L, batch, Di, N)
    states = torch.empty_like(decay)
    h = torch.zeros_like(decay[0])  # (batch, Di, N)
    for t in range(decay.shape[0]):
        h = torch.addcmul(drive[t], decay[t], h)
        states[t] = h
    readout = C.float().permute(2, 0, 1).unsqueeze(3)  # (L, batch, N, 1)
    y = torch.matmul(states, readout).squeeze(3).permute(1, 2, 0)  # (batch, Di, L)
    if D is not None:
        y = y + D.float().unsqueeze(1) * u
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(out_dtype)


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


def example_text_inputs(config, batch: int, seed: int = 0):
    """Random CLIP4Clip-style token ids (batch, max_words) int64: start, words, end, zero padding."""
    start, end = 49406, 49407  # open_clip's SimpleTokenizer sot/eot ids
    generator = torch.Generator().manual_seed(seed)
    length = config.max_words
    ids = torch.zeros(batch, length, dtype=torch.long)
    for row in range(batch):
        words = int(torch.randint(1, length - 1, (1,), generator=generator))
        ids[row, 0] = start
        ids[row, 1 : words + 1] = torch.randint(1, start, (words,), generator=generator)
        ids[row, words + 1] = end
    return (ids,)


def op_library_path() -> str:
    """Path of the C++ library that registers ``muse::selective_scan`` (muse_infer/_C.so).

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
