"""A differentiable selective scan in plain PyTorch that is fast enough to train with on a CPU.

``selective_scan_ref`` is the specification, but its backward pass is unusable for training: autograd
records several ops a time step and each step's slice backward materialises a gradient of the full
(batch, Di, N, L) size, so one backward pass at MUSE's L = 3060 takes many minutes. This module computes
the same function with a hand-written backward (an ``autograd.Function``):

- The sequence is cut into chunks of ``chunk_size`` steps. The forward pass keeps only the inputs and
  each chunk's starting state (batch, Di, N); the backward pass recomputes one chunk's states at a time,
  as Mamba's CUDA kernel does. Memory kept for backward: O(batch * Di * L + batch * Di * N * L / chunk).
- Inputs are laid out time-first, so one time step is a contiguous (batch, Di, N) block and the
  recurrence ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t`` is one fused op a step. A chunk's
  tensors (chunk x batch x Di x N) are small enough to stay in cache (the default 64 steps: 2 MB at
  batch 8, Di 64), which is what makes this fast: large elementwise passes are memory-bound on a CPU.
- The gradient of the states (the adjoint, ``g_t = C_t dy_t + exp(delta_{t+1} A) g_{t+1}``) is the same
  kind of recurrence run backwards in time; everything else is elementwise or a small batched matmul.

Why not the "masked K x K matmul per chunk" form used for Mamba-2: there the decay is one scalar a
step; in Mamba-1 (MUSE) it differs per state n (``A`` is (Di, N)), so the K x K decay matrix exists per
(batch, Di, N) and costs K times the work of the recurrence itself.

Numbers (1 CPU thread, batch 8, Di 64, N 16, L 3060, fp32): forward 0.08 s, backward 0.23 s of CPU
time; the reference's backward did not finish in 10 minutes. Everything is computed in fp32 (float64
stays float64) and returned in ``u``'s dtype, as the reference does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .reference import _expand_groups

DEFAULT_CHUNK = 64


def selective_scan_chunked(
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
    chunk_size: int = DEFAULT_CHUNK,
):
    """Selective scan with ``selective_scan_ref``'s signature and semantics; differentiable, fast backward.

    Shapes: u, delta, z (batch, Di, L); A (Di, N); B, C (batch, N, L) or (batch, groups, N, L);
    D, delta_bias (Di,). Returns y (batch, Di, L) in u's dtype, or (y, last_state (batch, Di, N)).
    ``chunk_size``: time steps whose states are recomputed together in the backward pass (memory vs speed).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    out_dtype = u.dtype
    compute = torch.float64 if u.dtype == torch.float64 else torch.float32
    u, delta, A = u.to(compute), delta.to(compute), A.to(compute)
    channels = u.shape[1]
    B, C = _per_channel_or_shared(B.to(compute), channels), _per_channel_or_shared(C.to(compute), channels)
    if delta_bias is not None:
        delta = delta + delta_bias.to(compute)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    y, last_state = _ChunkedScan.apply(u, delta, A, B, C, chunk_size)
    if D is not None:
        y = y + D.to(compute)[:, None] * u
    if z is not None:
        y = y * F.silu(z.to(compute))
    y = y.to(out_dtype)
    return (y, last_state.to(out_dtype)) if return_last_state else y


def _per_channel_or_shared(BC: torch.Tensor, channels: int) -> torch.Tensor:
    """(batch, N, L) or (batch, G, N, L) -> (batch, 1, N, L) when shared by all channels, else (batch, Di, N, L)."""
    if BC.dim() == 3:
        return BC.unsqueeze(1)
    if BC.shape[1] == 1:
        return BC
    return _expand_groups(BC, channels)


class _ChunkedScan(torch.autograd.Function):
    """Core recurrence: (u, delta (softplus'd), A, B, C (b, g, n, L), g in {1, Di}) -> y (b, Di, L), h_L."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, chunk_size):
        seq = _TimeFirst(u, delta, A, B, C, chunk_size)
        y = u.new_empty(seq.length, *u.shape[:2])  # (L, b, d)
        state = u.new_zeros(*u.shape[:2], A.shape[1])  # (b, d, n)
        starts = []
        for chunk in seq.chunks:
            starts.append(state)
            states = seq.states(chunk, state)  # (k + 1, b, d, n), states[0] = the chunk's start
            y[chunk] = _contract_state(states[1:], seq.C[chunk])
            state = states[-1].clone()
        ctx.save_for_backward(u, delta, A, B, C, *starts)
        ctx.chunk_size = chunk_size
        return y.permute(1, 2, 0), state

    @staticmethod
    def backward(ctx, grad_y, grad_last):
        u, delta, A, B, C, *starts = ctx.saved_tensors
        seq = _TimeFirst(u, delta, A, B, C, ctx.chunk_size)
        grad_y = torch.zeros_like(u) if grad_y is None else grad_y
        grads = _Grads(seq, grad_y.permute(2, 0, 1).contiguous())
        # carry: the gradient reaching the state just before the chunk being processed, from later steps
        carry = u.new_zeros(*u.shape[:2], A.shape[1])
        if grad_last is not None:
            carry = carry + grad_last
        for chunk, start in zip(reversed(seq.chunks), reversed(starts), strict=True):
            carry = grads.add_chunk(chunk, start, carry)
        return (*grads.results(), None)


class _TimeFirst:
    """Inputs laid out time-first (contiguous per step) and one chunk's recomputation, with reused buffers."""

    def __init__(self, u, delta, A, B, C, chunk_size: int):
        self.A = A  # (d, n)
        self.delta = delta.permute(2, 0, 1).contiguous()  # (L, b, d)
        self.u = u.permute(2, 0, 1).contiguous()  # (L, b, d)
        self.delta_u = self.delta * self.u  # (L, b, d)
        self.B = B.permute(3, 0, 1, 2).contiguous()  # (L, b, g, n)
        self.C = C.permute(3, 0, 1, 2).contiguous()  # (L, b, g, n)
        self.length = u.shape[2]
        self.chunks = [slice(s, min(s + chunk_size, self.length)) for s in range(0, self.length, chunk_size)]
        steps = min(chunk_size, self.length)
        self.decay = u.new_empty(steps, *u.shape[:2], A.shape[1])  # (k, b, d, n)
        self.drive = torch.empty_like(self.decay)
        self._states = u.new_empty(steps + 1, *u.shape[:2], A.shape[1])

    def states(self, chunk: slice, start: torch.Tensor) -> torch.Tensor:
        """(k + 1, b, d, n): the chunk's start state, then h_t for each of its k steps. Fills self.decay."""
        k = chunk.stop - chunk.start
        decay, drive, states = self.decay[:k], self.drive[:k], self._states[: k + 1]
        torch.mul(self.delta[chunk].unsqueeze(-1), self.A, out=decay).exp_()  # exp(delta_t A)
        torch.mul(self.delta_u[chunk].unsqueeze(-1), self.B[chunk], out=drive)  # delta_t B_t u_t
        states[0] = start
        for t in range(k):  # one fused op a step, on a contiguous (b, d, n) slice
            torch.addcmul(drive[t], decay[t], states[t], out=states[t + 1])
        return states


def _contract_state(states: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """sum_n C_t[n] h_t[n]: states (k, b, d, n), C (k, b, g, n) -> (k, b, d)."""
    if C.shape[2] == 1:
        k, b, d, n = states.shape
        return torch.bmm(states.reshape(k * b, d, n), C.reshape(k * b, n, 1)).view(k, b, d)
    return (states * C).sum(-1)


def _sum_channels(a: torch.Tensor, x: torch.Tensor, shared: bool) -> torch.Tensor:
    """a (k, b, d), x (k, b, d, n) -> a * x summed over d when ``shared`` (k, b, 1, n), else (k, b, d, n)."""
    if not shared:
        return a.unsqueeze(-1) * x
    k, b, d, n = x.shape
    return torch.bmm(a.reshape(k * b, 1, d), x.reshape(k * b, d, n)).view(k, b, 1, n)


class _Grads:
    """Gradient accumulators (time-first) and the backward pass of one chunk."""

    def __init__(self, seq: _TimeFirst, grad_y: torch.Tensor):
        self.seq, self.grad_y = seq, grad_y  # grad_y (L, b, d)
        self.u, self.delta = torch.empty_like(seq.u), torch.empty_like(seq.delta)
        self.B, self.C = torch.empty_like(seq.B), torch.empty_like(seq.C)
        self.A = torch.zeros_like(seq.A)
        self._adjoint = torch.empty_like(seq.decay)
        self._work = torch.empty_like(seq.decay)

    def add_chunk(self, chunk: slice, start: torch.Tensor, carry: torch.Tensor) -> torch.Tensor:
        """Write one chunk's gradients; return the gradient reaching the state before the chunk."""
        seq, k = self.seq, chunk.stop - chunk.start
        states = seq.states(chunk, start)  # (k + 1, b, d, n), recomputed
        decay, grad_y = seq.decay[:k], self.grad_y[chunk]  # (k, b, d, n), (k, b, d)
        shared = seq.C.shape[2] == 1
        # Adjoint g_t = dLoss/dh_t, backwards in time: g_t = C_t gy_t + decay_{t+1} g_{t+1}.
        adjoint = self._adjoint[:k]
        torch.mul(seq.C[chunk], grad_y.unsqueeze(-1), out=adjoint)  # C_t gy_t
        adjoint[k - 1] += carry
        for t in range(k - 2, -1, -1):
            adjoint[t].addcmul_(decay[t + 1], adjoint[t + 1])
        self.C[chunk] = _sum_channels(grad_y, states[1:], shared)  # dy_t / dC_t = h_t
        self.B[chunk] = _sum_channels(seq.delta_u[chunk], adjoint, shared)  # dh_t / dB_t = delta_t u_t
        grad_delta_u = _contract_state(adjoint, seq.B[chunk])  # (k, b, d)
        log_decay = torch.mul(adjoint, states[:-1], out=self._work[:k]).mul_(decay)  # dLoss/d(delta_t A)
        delta = seq.delta[chunk]
        self.delta[chunk] = (log_decay * seq.A).sum(-1) + grad_delta_u * seq.u[chunk]
        self.A += (log_decay * delta.unsqueeze(-1)).sum((0, 1))
        self.u[chunk] = grad_delta_u * delta
        return decay[0] * adjoint[0]

    def results(self) -> tuple[torch.Tensor, ...]:
        """Gradients of (u, delta, A, B, C) in the caller's layouts."""
        return (
            self.u.permute(1, 2, 0),
            self.delta.permute(1, 2, 0),
            self.A,
            self.B.permute(1, 2, 3, 0),
            self.C.permute(1, 2, 3, 0),
        )
