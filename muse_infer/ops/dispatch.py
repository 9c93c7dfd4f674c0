"""The one function models call for a selective scan: picks the fast op, the chunked scan or the reference.

Choice (made per call, logged once at debug level per choice):
- ``MUSE_SCAN=ref`` forces the reference, ``MUSE_SCAN=op`` forces ``torch.ops.muse.selective_scan``
  (which refuses gradients), ``MUSE_SCAN=chunked`` forces ``selective_scan_chunked``;
- otherwise (auto): when gradients are needed, ``selective_scan_chunked`` (same function as the
  reference, with a backward pass fast enough to train with; the op has no backward); else the op
  when it has a fast kernel for the inputs' device and takes their dtype (float32/16, bfloat16; float64
  stays with the reference, which computes in float64), else the reference.
"""

from __future__ import annotations

import logging
import os

import torch

from .chunked import selective_scan_chunked
from .reference import selective_scan_ref

logger = logging.getLogger(__name__)
_announced: set[str] = set()
SCAN_CHOICES = ("auto", "ref", "op", "chunked")
OP_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_IMPL_NAMES = {"op": "muse::selective_scan", "ref": "selective_scan_ref", "chunked": "selective_scan_chunked"}


def selective_scan_fn(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
) -> torch.Tensor:
    """Selective scan through the best available implementation; same semantics as selective_scan_ref.

    Shapes: u, delta, z (batch, Di, L); A (Di, N); B, C (batch, N, L); D, delta_bias (Di,).
    Returns y (batch, Di, L) in u's dtype.
    """
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    chosen = _chosen_impl(u, needs_grad=_needs_grad(args))
    if chosen == "op":
        from .op import selective_scan

        return selective_scan(*args)
    if chosen == "chunked":
        return selective_scan_chunked(*args)
    return selective_scan_ref(*args)


def selective_scan_bidirectional_fn(forward, backward, delta_softplus: bool = False) -> torch.Tensor:
    """Both scans of a BiMamba block, chosen like selective_scan_fn: the fused op, else two scans.

    ``forward``, ``backward``: (u, delta, A, B, C[, D, z, delta_bias]) each, shapes as above, every tensor
    in natural time order; the backward scan runs from the last step to the first (see
    ``muse_infer.ops.op.selective_scan_bidirectional``). Returns y (batch, Di, L) in forward u's dtype.
    """
    from .op import selective_scan_bidirectional, selective_scan_bidirectional_ref

    forward, backward = tuple(forward), tuple(backward)
    chosen = _chosen_impl(forward[0], needs_grad=_needs_grad((*forward, *backward)))
    if chosen == "op":
        return selective_scan_bidirectional(forward, backward, delta_softplus)
    if chosen == "chunked":
        return selective_scan_bidirectional_ref(
            forward, backward, delta_softplus, scan=selective_scan_chunked
        )
    return selective_scan_bidirectional_ref(forward, backward, delta_softplus)


def _needs_grad(args) -> bool:
    return torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args)


def _chosen_impl(u: torch.Tensor, needs_grad: bool) -> str:
    wanted = os.environ.get("MUSE_SCAN", "auto").lower()
    if wanted not in SCAN_CHOICES:
        raise ValueError(f"MUSE_SCAN={wanted!r} is not one of {SCAN_CHOICES}")
    if wanted == "auto":
        from .op import op_available

        op_fits = u.dtype in OP_DTYPES and op_available(u.device.type)
        wanted = "chunked" if needs_grad else "op" if op_fits else "ref"
    key = f"{wanted}:{u.device.type}"
    if key not in _announced:
        _announced.add(key)
        logger.debug("selective scan on %s uses %s", u.device.type, _IMPL_NAMES[wanted])
    return wanted
