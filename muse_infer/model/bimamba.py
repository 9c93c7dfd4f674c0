"""BiMamba ("v2" of Vision Mamba) and the residual block MUSE stacks; the scan comes from ops."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import ScanInputs, default_scan, scan_bidirectional
from ..ops.dispatch import check_scan_choice

# Mamba's initialisation of the step size: dt log-uniform in [DT_MIN, DT_MAX], floored.
DT_MIN, DT_MAX, DT_FLOOR = 1e-3, 1e-1, 1e-4


class ScanDirection(nn.Module):
    """The per-direction parameters of a Mamba-1 mixer: causal conv, x_proj, dt_proj, A_log, D."""

    def __init__(self, d_inner: int, d_state: int, d_conv: int, dt_rank: int):
        super().__init__()
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1, bias=True)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
        self.A_log = nn.Parameter(
            torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1)
        )
        self.D = nn.Parameter(torch.ones(d_inner))
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        self.dt_rank, self.d_state = dt_rank, d_state
        self._init_dt()

    @torch.no_grad()
    def _init_dt(self) -> None:
        nn.init.uniform_(self.dt_proj.weight, -(self.dt_rank**-0.5), self.dt_rank**-0.5)
        dt = torch.exp(
            torch.rand(self.dt_proj.out_features) * (math.log(DT_MAX) - math.log(DT_MIN)) + math.log(DT_MIN)
        ).clamp(min=DT_FLOOR)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus

    def scan_inputs(self, x: torch.Tensor, z: torch.Tensor, reverse: bool = False) -> ScanInputs:
        """x, z (B, Di, L) in natural time order -> this direction's scan inputs, in natural time order.

        ``reverse``: the backward direction, whose causal conv runs over the time-reversed sequence.
        Read back in natural order that conv is anti-causal (step t sees x[t .. t+K-1]) with the kernel
        flipped; x_proj and dt_proj act per step, so nothing else changes, and the scan reads the
        inputs from the last step to the first (``ops.scan_bidirectional``).
        """
        x = F.silu(self._conv(x, reverse))
        x_dbl = self.x_proj(x.transpose(1, 2))  # (B, L, R + 2N)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = (dt @ self.dt_proj.weight.t()).transpose(1, 2)  # (B, Di, L); bias goes in the scan
        return ScanInputs(
            u=x,
            delta=delta,
            A=-torch.exp(self.A_log.float()),
            B=B.transpose(1, 2),
            C=C.transpose(1, 2),
            D=self.D.float(),
            z=z,
            delta_bias=self.dt_proj.bias.float(),
        )

    def _conv(self, x: torch.Tensor, reverse: bool) -> torch.Tensor:
        """Depthwise conv, (B, Di, L) -> (B, Di, L): causal, or anti-causal when ``reverse``.

        flip(conv_causal(flip(x), w))[t] = sum_k w[k] x[t + K-1 - k] = sum_j flip(w)[j] x[t + j]:
        the conv with the flipped kernel over x padded by K-1 on the right (the last L outputs of the
        conv padded by K-1 on both sides). tests/test_model.py checks the identity.
        """
        length = x.shape[-1]
        if not reverse:
            return self.conv1d(x)[..., :length]  # causal: drop the right padding
        conv = self.conv1d
        weight = conv.weight.flip(-1)
        return F.conv1d(x, weight, conv.bias, padding=conv.padding, groups=conv.groups)[..., -length:]


class BiMamba(nn.Module):
    """Bidirectional Mamba-1 mixer, Vim's "v2": shared in/out projections, separate backward parameters.

    (B, L, C) -> (B, L, C). The backward direction is Vim's scan of the time-reversed x and z, reversed
    back and added to the forward one (not divided by 2, as the authors run it). Both directions are
    computed in natural time order and go to ``ops.scan_bidirectional`` together: with the "op" choice
    one ``muse::selective_scan_bidirectional`` call, no flipped copies; otherwise
    scan(forward) + flip(scan(flip(backward))).
    Vim names the backward parameters ``conv1d_b``, ``x_proj_b``, ``A_b_log``...; here each direction is
    one ``ScanDirection`` (``forward_scan.*``, ``backward_scan.*``); loading/convert.py maps the names.

    ``scan``: the scan implementation, one of ``ops.SCAN_CHOICES`` (None: ``ops.default_scan()``); a
    plain attribute, ``scan_impl``, not part of the state dict. ``set_scan`` changes it in a whole model.
    """

    def __init__(
        self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 1, scan: str | None = None
    ):
        super().__init__()
        d_inner = expand * d_model
        dt_rank = math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.forward_scan = ScanDirection(d_inner, d_state, d_conv, dt_rank)
        self.backward_scan = ScanDirection(d_inner, d_state, d_conv, dt_rank)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        self.scan_impl = default_scan() if scan is None else check_scan_choice(scan)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        xz = self.in_proj(hidden).transpose(1, 2)  # (B, 2*Di, L)
        x, z = xz.chunk(2, dim=1)
        forward = self.forward_scan.scan_inputs(x, z)
        backward = self.backward_scan.scan_inputs(x, z, reverse=True)
        y = scan_bidirectional(forward, backward, delta_softplus=True, impl=self.scan_impl)  # (B, Di, L)
        return self.out_proj(y.transpose(1, 2))


def set_scan(module: nn.Module, choice: str) -> None:
    """Make every BiMamba inside ``module`` (itself included) use the scan ``choice`` (ops.SCAN_CHOICES)."""
    choice = check_scan_choice(choice)
    for block in module.modules():
        if isinstance(block, BiMamba):
            block.scan_impl = choice


class ResMambaBlock(nn.Module):
    """x + G(Dropout(BiMamba(LayerNorm(x)))), G a zero-initialised Linear: a fresh block is the identity."""

    def __init__(
        self,
        d_model: int,
        drop_rate: float,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 1,
        scan: str | None = None,
    ):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(d_model)
        self.mamba = BiMamba(d_model, d_state, d_conv, expand, scan)
        self.proj_drop = nn.Dropout(drop_rate)
        self.temporal_fc = nn.Linear(d_model, d_model)
        nn.init.zeros_(self.temporal_fc.weight)
        nn.init.zeros_(self.temporal_fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, S, C) -> (B, S, C)."""
        return x + self.temporal_fc(self.proj_drop(self.mamba(self.layer_norm1(x))))
