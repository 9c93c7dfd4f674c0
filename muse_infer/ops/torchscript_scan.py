"""The selective scan as a TorchScript function: what a traced graph embeds when no custom op may appear.

``selective_scan_script`` is ``selective_scan_ref``'s math written so that ``torch.jit.script`` compiles
it; ``scripted_scan()`` compiles it once. A model whose scan choice is "script"
(``model.set_scan("script")``, see ``muse_infer.ops.dispatch``) calls the compiled function, so
``torch.jit.trace`` records it as a call into TorchScript code and the saved file loads with bare torch
(export/torchscript_export.py writes ``video_encoder.portable.pt`` this way). Both directions of a
BiMamba block are two calls, the backward one on time-flipped inputs.
"""

from __future__ import annotations

import functools
import warnings
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .inputs import ScanInputs


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
    """``selective_scan_ref`` in TorchScript (fp32 arithmetic; B, C (batch, N, L) only).

    u, delta, z: (batch, Di, L); A: (Di, N); B, C: (batch, N, L); D, delta_bias: (Di,) -> y (batch, Di, L)
    in u's dtype.
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


@functools.cache
def scripted_scan() -> torch.jit.ScriptFunction:
    """``selective_scan_script`` compiled by ``torch.jit.script`` (once, on first use)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated", category=FutureWarning)
        return torch.jit.script(selective_scan_script)


def selective_scan_scripted(inputs: ScanInputs, delta_softplus: bool = False) -> Tensor:
    """One direction through the compiled ``selective_scan_script``; y (batch, Di, L) in u's dtype.

    Raises ValueError for grouped B/C (4-D), which this formulation does not take.
    """
    if inputs.B.dim() != 3 or inputs.C.dim() != 3:
        raise ValueError(
            "the TorchScript scan takes B and C as (batch, N, L), not grouped (batch, groups, N, L); "
            'use the scan choice "ref" or "op" for grouped B/C'
        )
    return scripted_scan()(*inputs, delta_softplus)
