"""Device names: "auto", "cpu", "cuda", "cuda:N", checked with clear errors."""

from __future__ import annotations

from ..errors import BackendError


def resolve_device(device: str | None) -> str:
    """ "auto" -> "cuda" when a GPU is visible, else "cpu"; other names are checked, with clear errors."""
    import torch

    device = device or "auto"
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise BackendError(
            f"device {device!r} is not a torch device name (e.g. cpu, cuda, cuda:1, auto)"
        ) from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise BackendError(f"device {device!r} requested but no CUDA GPU is visible; use --device cpu")
    return str(parsed)


CPU_BATCH_SIZE = 8
GPU_BATCH_SIZE = 64


def default_batch_size(device: str) -> int:
    """Videos a model call by default: 8 on the CPU, 64 on a GPU (a resolved device name).

    On a GPU a bigger batch amortises the per-call launches; 64 ViT-B-32 videos (768 frames) is the
    issue's target batch, measured by benchmarks/gpu_check.sh with its peak memory (docs/benchmarks.md).
    """
    return GPU_BATCH_SIZE if str(device).startswith("cuda") else CPU_BATCH_SIZE
