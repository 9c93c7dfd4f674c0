"""The selective scan's math, written once, in plain PyTorch.

This is the specification every fast kernel is tested against and the fallback when no kernel is
available. It follows Mamba-1's ``selective_scan_ref`` semantics. ``selective_scan_bidirectional_ref``
is the meaning of a BiMamba block's two scans, which ``muse::selective_scan_bidirectional`` fuses.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .inputs import ScanInputs


def selective_scan_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
):
    """Selective scan, computed in fp32 (float64 stays float64), returned in ``u``'s dtype.

    Shapes:
        u, delta, z: (batch, Di, L); A: (Di, N);
        B, C: (batch, N, L) or (batch, groups, N, L) with Di divisible by groups;
        D, delta_bias: (Di,).

    Recurrence, for every (batch, channel) pair, state h (batch, Di, N) starting at zero:
        delta = softplus(delta + delta_bias)      (when delta_softplus)
        h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t
        y_t = sum_n C_t[n] h_t[n] + D u_t,   then   y_t *= silu(z_t)   (when z is given)

    Returns y (batch, Di, L), or (y, last_state (batch, Di, N)) when ``return_last_state``.
    Differentiable in every tensor argument.
    """
    out_dtype = u.dtype
    compute = torch.float64 if u.dtype == torch.float64 else torch.float32
    u = u.to(compute)
    delta = delta.to(compute)
    A = A.to(compute)
    batch, channels, length = u.shape
    B = _expand_groups(B.to(compute), channels)  # (batch, Di, N, L)
    C = _expand_groups(C.to(compute), channels)  # (batch, Di, N, L)
    if delta_bias is not None:
        delta = delta + delta_bias.to(compute)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)

    decay = torch.exp(delta.unsqueeze(2) * A[None, :, :, None])  # (batch, Di, N, L)
    drive = (delta * u).unsqueeze(2) * B  # (batch, Di, N, L)
    h = u.new_zeros(batch, channels, A.shape[1])
    ys = []
    for t in range(length):
        h = decay[..., t] * h + drive[..., t]
        ys.append((h * C[..., t]).sum(-1))  # (batch, Di)
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(batch, channels, 0)
    if D is not None:
        y = y + D.to(compute)[:, None] * u
    if z is not None:
        y = y * F.silu(z.to(compute))
    y = y.to(out_dtype)
    return (y, h.to(out_dtype)) if return_last_state else y


def selective_scan_bidirectional_ref(
    forward,
    backward,
    delta_softplus: bool = False,
    scan: Callable[[ScanInputs, bool], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Both scans of a BiMamba block in plain PyTorch: scan(forward) + flip(scan(flip(backward))).

    ``forward``, ``backward``: ``ScanInputs`` (or sequences (u, delta, A, B, C[, D, z, delta_bias])),
    every tensor in natural time order; the backward scan runs from step L-1 down to 0 and each of its
    outputs lands at its own step. ``scan(inputs, delta_softplus) -> y``: the one-direction scan to
    compose (default: ``selective_scan_ref``). Returns y (batch, Di, L) in forward u's dtype.
    """
    forward, backward = ScanInputs.of(forward), ScanInputs.of(backward)
    scan = scan or _reference_direction
    y_forward = scan(forward, delta_softplus)
    return y_forward + scan(backward.flip_time(), delta_softplus).flip(-1).to(y_forward.dtype)


def _reference_direction(inputs: ScanInputs, delta_softplus: bool) -> torch.Tensor:
    return selective_scan_ref(*inputs, delta_softplus=delta_softplus)


def _expand_groups(BC: torch.Tensor, channels: int) -> torch.Tensor:
    """(batch, N, L) or (batch, G, N, L) -> (batch, Di, N, L), channel d using group d // (Di/G)."""
    if BC.dim() == 3:
        return BC.unsqueeze(1).expand(-1, channels, -1, -1)
    groups = BC.shape[1]
    if channels % groups:
        raise ValueError(f"B/C have {groups} groups, which does not divide Di={channels}")
    return BC.repeat_interleave(channels // groups, dim=1)
