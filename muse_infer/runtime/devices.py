"""Device names: "auto", "cpu", "cuda", "cuda:N", checked with clear errors; batch sizes and CPU threads
for a device."""

from __future__ import annotations

from contextlib import contextmanager

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


SMALL_TEXT_BATCH = 16  # queries at most this many are encoded on one thread on the CPU


@contextmanager
def torch_threads(count: int | None):
    """Inside: torch's CPU ops run on ``count`` threads (None: unchanged), restored after.

    Why: a search encodes one or a few queries, a few dozen tokens each; split across cores, each op
    waits at its barrier for the slowest thread, and on a busy machine that thread has lost its core
    (one query took seconds instead of a tenth). One thread is also the fastest on an idle machine.
    """
    if count is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
