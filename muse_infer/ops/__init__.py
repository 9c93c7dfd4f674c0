"""Selective-scan ops: the reference (the spec), the custom op, the Triton kernel, and the dispatch."""

from .dispatch import selective_scan_bidirectional_fn, selective_scan_fn
from .reference import selective_scan_ref

__all__ = [
    "selective_scan_ref",
    "selective_scan_fn",
    "selective_scan_bidirectional_fn",
    "selective_scan",
    "selective_scan_bidirectional",
    "selective_scan_triton",
    "selective_scan_triton_bidirectional",
]


def __getattr__(name: str):
    # Lazy so that `import muse_infer` neither loads the C++ library nor imports Triton.
    if name == "selective_scan":
        from .op import selective_scan

        return selective_scan
    if name == "selective_scan_bidirectional":
        from .op import selective_scan_bidirectional

        return selective_scan_bidirectional
    if name in ("selective_scan_triton", "selective_scan_triton_bidirectional"):
        from . import triton_scan

        return getattr(triton_scan, name)
    raise AttributeError(name)
