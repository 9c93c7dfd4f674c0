"""Selective-scan ops: the reference (the spec), the custom op, the Triton kernel, and the dispatch."""

from .dispatch import selective_scan_fn
from .reference import selective_scan_ref

__all__ = ["selective_scan_ref", "selective_scan_fn", "selective_scan", "selective_scan_triton"]


def __getattr__(name: str):
    # Lazy so that `import muse_infer` neither loads the C++ library nor imports Triton.
    if name == "selective_scan":
        from .op import selective_scan

        return selective_scan
    if name == "selective_scan_triton":
        from .triton_scan import selective_scan_triton

        return selective_scan_triton
    raise AttributeError(name)
