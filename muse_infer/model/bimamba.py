"""BiMamba ("v2" of Vision Mamba) and the residual block MUSE stacks; the scan comes from ops."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import ScanInputs, default_scan, scan, scan_bidirectional
from ..ops.conv import depthwise_conv_time_major
from ..ops.dispatch import check_scan_choice, graph_being_recorded

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

    def scan_inputs(self, x: torch.Tensor, z: torch.Tensor | None, reverse: bool = False) -> ScanInputs:
        """x, z (B, L, Di) time-major, natural time order, any row stride (in_proj's two halves)
        -> this direction's scan inputs, in natural time order (z None: an ungated scan).

        The (B, Di, L) tensors of the result are views of time-major memory (channel stride 1): u,
        delta and z as the projections wrote them, B and C as columns of x_proj's output. The scan
        reads any strides (ops.ScanInputs), so no layout copy is made.

        ``reverse``: the backward direction, whose causal conv runs over the time-reversed sequence.
        Read back in natural order that conv is anti-causal (step t sees x[t .. t+K-1]) with the kernel
        flipped; x_proj and dt_proj act per step, so nothing else changes, and the scan reads the
        inputs from the last step to the first (``ops.scan_bidirectional``).
        """
        u = self.conv_time_major(x, reverse, silu=True)  # (B, L, Di)
        x_dbl = self.x_proj(u)  # (B, L, R + 2N)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, self.dt_proj.weight)  # (B, L, Di); the bias goes in the scan
        return ScanInputs(
            u=u.transpose(1, 2),
            delta=delta.transpose(1, 2),
            A=-torch.exp(self.A_log.float()),
            B=B.transpose(1, 2),
            C=C.transpose(1, 2),
            D=self.D.float(),
            z=None if z is None else z.transpose(1, 2),
            delta_bias=self.dt_proj.bias.float(),
        )

    def conv_time_major(self, x: torch.Tensor, reverse: bool, silu: bool = False) -> torch.Tensor:
        """``self.conv1d`` over time on time-major x: (B, L, Di) any row stride -> (B, L, Di), then
        SiLU when ``silu``.

        Causal (y[t] sees x[t-K+1 .. t]), or anti-causal with the kernel flipped when ``reverse``
        (y[t] sees x[t .. t+K-1]): ``ops.conv.depthwise_conv_time_major`` (the C++ op in eager
        inference on CPU, else torch ops). Equal to ``conv_reference`` (the module on (B, Di, L)) up to
        float rounding; tests/test_head_fast_paths.py checks it.

        Why not the module: it wants (B, Di, L), one transposing copy of x a direction, and its
        depthwise kernel ran 5x slower than even the torch-ops form on one CPU thread (docs/benchmarks.md).
        """
        conv = self.conv1d
        return depthwise_conv_time_major(x, conv.weight[:, 0, :], conv.bias, reverse, silu)

    def conv_reference(self, x: torch.Tensor, reverse: bool) -> torch.Tensor:
        """The depthwise conv as the module computes it, (B, Di, L) -> (B, Di, L): the reference.

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
        """hidden (B, L, C) -> (B, L, C)."""
        return self.out_proj(self.mix(hidden).transpose(1, 2))

    def mix(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (B, L, C) -> y (B, Di, L), the sum of both directions' scans before ``out_proj``.

        Everything stays time-major (B, L, *), as the projections write it; the scan reads its inputs
        as strided views (``ScanDirection.scan_inputs``) and writes y (B, Di, L), which out_proj reads
        transposed (a matmul operand in either order costs the same). in_proj runs as two matmuls, one
        for x and one for z (its weight's two halves): the same work, and x comes out contiguous, which
        the conv reads 2.4x faster than every other row of a (B, L, 2*Di) tensor.
        """
        weight_x, weight_z = self.in_proj.weight.chunk(2, dim=0)
        bias_x, bias_z = (None, None) if self.in_proj.bias is None else self.in_proj.bias.chunk(2)
        x, z = F.linear(hidden, weight_x, bias_x), F.linear(hidden, weight_z, bias_z)  # (B, L, Di) each
        forward = self.forward_scan.scan_inputs(x, z)
        backward = self.backward_scan.scan_inputs(x, z, reverse=True)
        return scan_bidirectional(forward, backward, delta_softplus=True, impl=self.scan_impl)

    def mix_rows(self, hidden: torch.Tensor, rows: slice) -> torch.Tensor:
        """``mix(hidden)[..., rows]`` computing only what those steps need: (B, L, C), a slice of
        steps (non-negative step) -> y (B, Di, R), R the slice's length (>= 1).

        Steps p of ``rows``, first p0, last p1. The forward scan at p reads steps 0..p only, so it runs
        on the first p1 + 1 steps; the backward one reads steps p..L-1, so it runs from L-1 down to p0,
        as a forward scan over the time-reversed x (one flipped copy of x; its causal conv on the
        reversed sequence is the anti-causal one read back). z gates both directions alike (the backward
        direction reads z reversed: z[p] at step p), so y[p] = (y_fwd[p] + y_bwd[p]) * silu(z[p]) with
        both scans ungated, and z is computed for the R rows only. The MUSE head needs the last block's
        output at its class tokens alone (12 of 3060 steps): ``ResMambaBlock.forward_rows``.
        """
        length = hidden.shape[1]
        steps = range(length)[rows]
        if len(steps) == 0 or steps.step < 1:
            raise ValueError(f"rows must select at least one step in order, got {rows} of {length}")
        first, last = steps[0], steps[-1]
        weight_x, weight_z = self.in_proj.weight.chunk(2, dim=0)
        bias_x, bias_z = (None, None) if self.in_proj.bias is None else self.in_proj.bias.chunk(2)
        x = F.linear(hidden, weight_x, bias_x)  # (B, L, Di): the backward scan reads it all
        z = F.linear(hidden[:, rows], weight_z, bias_z)  # (B, R, Di)
        forward = self.forward_scan.scan_inputs(x[:, : last + 1], None)
        y_forward = scan(forward, delta_softplus=True, impl=self.scan_impl)[..., rows]  # (B, Di, R)
        reversed_x = x[:, first:].flip(1)  # (B, L - p0, Di): step L-1 first
        backward = self.backward_scan.scan_inputs(reversed_x, None)
        y_backward = scan(backward, delta_softplus=True, impl=self.scan_impl)  # step p at L-1-p
        at = torch.arange(length - 1 - first, length - 2 - last, -steps.step, device=x.device)
        y_backward = y_backward.index_select(-1, at)
        wide = torch.promote_types(y_forward.dtype, torch.float32)
        y = (y_forward.to(wide) + y_backward.to(wide)) * F.silu(z.to(wide)).transpose(1, 2)
        return y.to(y_forward.dtype)


def set_scan(module: nn.Module, choice: str) -> None:
    """Make every BiMamba inside ``module`` (itself included) use the scan ``choice`` (ops.SCAN_CHOICES)."""
    choice = check_scan_choice(choice)
    for block in module.modules():
        if isinstance(block, BiMamba):
            block.scan_impl = choice


class ResMambaBlock(nn.Module):
    """x + G(Dropout(BiMamba(LayerNorm(x)))), G a zero-initialised Linear: a fresh block is the identity.

    Inference shortcut: where the dropout is the identity and no gradient is needed, BiMamba's out_proj
    and G are two linear maps in a row, so they run as one, ``G.weight @ out_proj.weight`` (computed
    once and kept until either weight changes): one (C, Di) matmul a token instead of two. Equal up to
    float rounding; traced and exported graphs keep the two modules (``fuses_projections``).
    """

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

        self._fused = None  # (key, G.weight @ out_proj.weight): see fused_output_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, S, C) -> (B, S, C)."""
        normed = self.layer_norm1(x)
        if self.fuses_projections(x):
            y = self.mamba.mix(normed)  # (B, Di, S)
            out = F.linear(y.transpose(1, 2), self.fused_output_weight(), self.temporal_fc.bias)
            return out.add_(x)  # in place: no gradient here, and one (B, S, C) allocation fewer
        return x + self.temporal_fc(self.proj_drop(self.mamba(normed)))

    def forward_rows(self, x: torch.Tensor, rows: slice) -> torch.Tensor:
        """``forward(x)[:, rows]``: x (B, S, C), a slice of steps (non-negative step) -> (B, R, C).

        In inference (``takes_inference_shortcuts``) only what those rows need is computed
        (``BiMamba.mix_rows``): the MUSE head reads its last block at the class tokens alone, so the z
        half of in_proj, out_proj and G run on R rows and most of the forward scan is skipped.
        Otherwise the whole block runs and is sliced (what a traced graph or a gradient sees).
        """
        if not self.takes_inference_shortcuts(x):
            return self(x)[:, rows]
        y = self.mamba.mix_rows(self.layer_norm1(x), rows)  # (B, Di, R)
        return x[:, rows] + self.temporal_fc(self.mamba.out_proj(y.transpose(1, 2)))

    def takes_inference_shortcuts(self, x: torch.Tensor) -> bool:
        """Whether the inference-only paths may run: dropout is the identity (eval mode or rate 0), no
        gradient is needed, and no tracer or compiler is recording (an exported graph holds the
        modules' own ops)."""
        if self.training and self.proj_drop.p > 0:
            return False
        if graph_being_recorded():
            return False
        weights = (self.temporal_fc.weight, self.temporal_fc.bias, self.mamba.out_proj.weight)
        return not (torch.is_grad_enabled() and (x.requires_grad or any(w.requires_grad for w in weights)))

    def fuses_projections(self, x: torch.Tensor) -> bool:
        """Whether ``forward`` runs out_proj and G as one matmul: ``takes_inference_shortcuts`` and the
        weights track versions (not inference tensors), so that the kept product can follow them."""
        weights = (self.temporal_fc.weight, self.temporal_fc.bias, self.mamba.out_proj.weight)
        return self.takes_inference_shortcuts(x) and not any(w.is_inference() for w in weights)

    def fused_output_weight(self) -> torch.Tensor:
        """G.weight @ out_proj.weight (C, Di) in the weights' dtype, multiplied in float32 or wider and
        rounded once; recomputed when either weight is changed in place (version counter) or replaced
        (storage, dtype, device)."""
        g, out = self.temporal_fc.weight, self.mamba.out_proj.weight
        key = (g._version, out._version, g.data_ptr(), out.data_ptr(), g.dtype, out.dtype, g.device)
        cached = self._fused  # one read: another thread may replace it meanwhile
        if cached is None or cached[0] != key:
            wide = torch.promote_types(g.dtype, torch.float32)
            with torch.no_grad():
                fused = (g.to(wide) @ out.to(wide)).to(g.dtype)
            cached = self._fused = (key, fused)
        return cached[1]
