"""The selective scan, owned here: one input type, every implementation, and the explicit choice among them.

- ``ScanInputs`` (inputs.py): one direction's tensors, the input of every implementation.
- Implementations: ``selective_scan_ref`` / ``selective_scan_bidirectional_ref`` (reference.py, the
  spec), ``selective_scan_chunked`` (chunked.py, differentiable with a fast backward), the custom ops
  ``muse::selective_scan`` and ``muse::selective_scan_bidirectional`` (op.py: C++ kernel on CPU,
  Triton kernel of triton_scan.py on CUDA), ``selective_scan_script`` (torchscript_scan.py) and the
  ONNX translations of both ops (onnx_scan.py, used by the exporter).
- The choice (dispatch.py): ``scan(inputs, delta_softplus, impl)`` and ``scan_bidirectional(forward,
  backward, delta_softplus, impl)`` with ``impl`` one of ``SCAN_CHOICES``; the model carries its choice
  (``MuseModel.set_scan``).
"""

from .dispatch import (
    SCAN_CHOICES,
    default_scan,
    scan,
    scan_bidirectional,
    selective_scan_bidirectional_fn,
    selective_scan_fn,
)
from .inputs import ScanInputs
from .reference import selective_scan_bidirectional_ref, selective_scan_ref

__all__ = [
    "SCAN_CHOICES",
    "ScanInputs",
    "default_scan",
    "scan",
    "scan_bidirectional",
    "selective_scan_ref",
    "selective_scan_bidirectional_ref",
    "selective_scan_fn",
    "selective_scan_bidirectional_fn",
    "selective_scan",
    "selective_scan_bidirectional",
    "selective_scan_triton",
    "selective_scan_triton_bidirectional",
]


def __getattr__(name: str):
    # Lazy so that importing the ops neither loads the C++ library nor imports Triton.
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
