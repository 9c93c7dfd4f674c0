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
