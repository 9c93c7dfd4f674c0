"""The selective scan as a Triton kernel: the GPU twin of ``selective_scan_ref``.

Two entry points, plain functions (``muse::selective_scan`` registers the first as its CUDA kernel):

- ``selective_scan_triton``: exactly ``selective_scan_ref``'s arguments, semantics and shapes.
- ``selective_scan_triton_bidirectional``: both directions of a BiMamba block in one launch, the backward
  one read from its natural-order inputs in reverse, so no ``flip`` is ever materialised.

CUDA tensors run the compiled kernel. CPU tensors run only when the process started with
``TRITON_INTERPRET=1`` (Triton reads it when its own library and these kernels are decorated, i.e. at
import), through Triton's interpreter: slow, for tests on small sizes (tests/test_triton_scan.py runs
those in a subprocess so that its GPU tests stay compiled).

Kernel design, for the MUSE shape (batch 16, Di 512, L 3060, N 16). The floor there: reading u,
delta, z, B, C once and writing y once is 0.40 GB in fp32 (0.20 GB in bf16), 134 us (67 us) at the
~3 TB/s an H100 of this workplace copies at; the 401 M exp of exp(delta A) need 108 us of the SFUs
(16 a cycle per SM at 1.75 GHz), plus ~5 more per (step, channel) for softplus and silu.

- One program, a single warp, per (block of BLOCK_D channels, batch row). The state h (N, BLOCK_D)
  stays in fp32 registers for the whole sequence, read in chunks of BLOCK_L steps: every input
  element is read once and y written once. No second pass, no state written back per chunk.
- A chunk's tensors are (BLOCK_L, BLOCK_N, BLOCK_D). With one warp, Triton's default layout puts the
  lanes on D, then on N, and leaves time wholly inside each thread, so the recurrence along time
  (``tl.associative_scan`` over axis 0) lowers to a sequential chain in registers, no shuffles: one
  mul + one fma a step (the scan's unused product-of-decays output is dead code). Four of the N
  states sit in each thread (BLOCK_D = 8 lanes on D, 4 on N for N = 16): y's sum over N costs two
  shuffle rounds, against four with one state a thread, and 1024 warps at the MUSE shape keep ~2 on
  each scheduler. (Time across lanes instead, as mamba's CUDA kernel has it, would need a
  cross-lane scan and a carry select per element in Triton.) See _choose_config.
- The carried state is folded into the chunk's first step (b_0 = a_0 h + b_0): the scan yields the
  states themselves. With time inside the thread, the first-step and last-step tests are
  compile-time constants per register and cost nothing.
- The next chunk's loads are issued before this chunk's arithmetic (a prefetch): with ~2 warps a
  scheduler there is little else to hide memory latency behind. Triton's own pipelining
  (``tl.range(num_stages=2)``) went through shared memory here and cost more instructions.
- exp(delta A) is one exp2 with A pre-scaled by log2(e); delta_bias + softplus, the D skip and the
  silu(z) gate are fused. Padded steps, channels and states get delta = 0 and A = B = C = 0, so the
  state passes through them unchanged and they add nothing.

Read off the sm_90 build (compiled on a CPU machine with Triton 3.6, the GPU machine's, and 3.8;
not yet timed): the loop costs ~14.2-15.3 SASS instructions a (step, state, channel), 1.25 of them
SFU, with 244-252 registers and no spills at BLOCK_L 16 (32 spills); the reverse direction costs
the same. So issue, not memory, should bound it: near 190 us at the MUSE shape in fp32 by that count.
benchmarks/bench_triton_bidir.py sweeps the launch shapes on the GPU.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .inputs import ScanInputs, check_same_options

__all__ = ["selective_scan_triton", "selective_scan_triton_bidirectional", "ScanInputs", "ScanConfig"]

LOG2E = tl.constexpr(1.4426950408889634)  # a constexpr: @triton.jit reads no plain globals
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _combine(a_prev, b_prev, a_next, b_next):
    # Composition of the affine maps h -> a_prev h + b_prev, then h -> a_next h + b_next.
    return a_prev * a_next, a_next * b_prev + b_next


@triton.jit
def _softplus(x):
    # torch's softplus (threshold 20). log1p(w) by Kahan's trick, log(v) * w / (v - 1) with v = 1 + w:
    # plain log(1 + w) loses most digits for small w, and delta_bias puts x near -7 at initialisation.
    w = tl.exp(tl.where(x > 20.0, 0.0, x))  # no overflow, and NaN stays NaN (minimum would drop it)
    v = 1.0 + w
    log1p_w = tl.where(v == 1.0, w, tl.log(v) * (w / (v - 1.0)))
    return tl.where(x > 20.0, x, log1p_w)


@triton.jit
def _to_dtype(x, dtype: tl.constexpr):
    """fp32 -> dtype, rounding to nearest even. For bfloat16 the rounding is done on the bits here:
    Triton's interpreter truncates that cast (and its "rtne" mode mis-carries), and the rounded value
    is exact in bfloat16, so the GPU's own conversion gives the same result."""
    if dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        x = bits.to(tl.float32, bitcast=True)
    return x.to(dtype)


@triton.jit
def _chunk_steps(chunk, L, offs_l, BLOCK_L: tl.constexpr, REVERSE: tl.constexpr):
    """Time steps of a chunk (BL,), in scan order. The backward direction reads each chunk from its
    last step down (L-1, L-2, ...), so a forward scan over the tile runs backward in time; its last
    chunk reaches below 0. (Triton 3.6 lowers associative_scan(reverse=True) with ~15 shuffles an
    element even when the axis lies inside each thread; descending loads touch the same lines.)"""
    if REVERSE:
        return L - 1 - chunk * BLOCK_L - offs_l
    else:
        return chunk * BLOCK_L + offs_l


@triton.jit
def _load_chunk(
    t, L, mask_d, mask_n, u_row, dt_row, z_row, B_row, C_row, s_ul, s_tl, s_zl, s_Bl, s_Cl,
    HAS_Z: tl.constexpr,
):  # fmt: skip
    """u, delta, z (BL, BD) and B, C (BL, BN) at steps t, in fp32; 0 outside the data.

    Converted here, before the loop carries them (prefetch): Triton 3.6 otherwise moves the layout
    conversion of delta above its bf16 -> fp32 extension and then runs softplus in the layout
    replicated over the lanes on N (4x the work). With the extension on both the prologue and the
    loop's prefetch, it finds two and leaves the conversion after softplus.
    """
    mask_t = (t >= 0) & (t < L)  # (BL,)
    mask_td = mask_t[:, None] & mask_d[None, :]  # (BL, BD)
    mask_tn = mask_t[:, None] & mask_n[None, :]  # (BL, BN)
    u = tl.load(u_row + t[:, None] * s_ul, mask=mask_td, other=0.0).to(tl.float32)
    dt = tl.load(dt_row + t[:, None] * s_tl, mask=mask_td, other=0.0).to(tl.float32)
    if HAS_Z:
        z = tl.load(z_row + t[:, None] * s_zl, mask=mask_td, other=0.0).to(tl.float32)
    else:
        z = u  # unused
    Bt = tl.load(B_row + t[:, None] * s_Bl, mask=mask_tn, other=0.0).to(tl.float32)
    Ct = tl.load(C_row + t[:, None] * s_Cl, mask=mask_tn, other=0.0).to(tl.float32)
    return u, dt, z, Bt, Ct


@triton.jit
def _scan_direction(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, y_ptr, state_ptr,
    pid_b, d0, Di, L, N, per_group_B, per_group_C,
    s_ub, s_ud, s_ul, s_tb, s_td, s_tl, s_zb, s_zd, s_zl,
    s_Bb, s_Bg, s_Bn, s_Bl, s_Cb, s_Cg, s_Cn, s_Cl, s_Ad, s_An,
    s_yb, s_yd, s_yl, s_hb, s_hd, s_hn,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    REVERSE: tl.constexpr, ACCUMULATE: tl.constexpr, STORE_STATE: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
):  # fmt: skip
    """One direction of the scan for channels d0 .. d0 + BLOCK_D - 1 of batch row pid_b."""
    offs_d = d0 + tl.arange(0, BLOCK_D)  # (BD,)
    offs_n = tl.arange(0, BLOCK_N)  # (BN,)
    offs_l = tl.arange(0, BLOCK_L)  # (BL,)
    mask_d = offs_d < Di
    mask_n = offs_n < N
    mask_nd = mask_n[:, None] & mask_d[None, :]  # (BN, BD)
    A = tl.load(A_ptr + offs_d[None, :] * s_Ad + offs_n[:, None] * s_An, mask=mask_nd, other=0.0)
    A = A.to(tl.float32) * LOG2E  # (BN, BD): exp(delta A) = exp2(delta A log2 e)
    if HAS_D:
        skip = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)  # (BD,)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)  # (BD,)
    u_row = u_ptr + pid_b * s_ub + offs_d[None, :] * s_ud  # (1, BD)
    dt_row = dt_ptr + pid_b * s_tb + offs_d[None, :] * s_td
    z_row = z_ptr + pid_b * s_zb + offs_d[None, :] * s_zd
    y_row = y_ptr + pid_b * s_yb + offs_d[None, :] * s_yd
    # Every channel of the block reads the same B/C rows: the caller keeps a block inside one group.
    B_row = B_ptr + pid_b * s_Bb + (d0 // per_group_B) * s_Bg + offs_n[None, :] * s_Bn  # (1, BN)
    C_row = C_ptr + pid_b * s_Cb + (d0 // per_group_C) * s_Cg + offs_n[None, :] * s_Cn
    is_first = (offs_l == 0)[:, None, None]  # (BL, 1, 1): the step a chunk starts from
    is_last = (offs_l == BLOCK_L - 1)[:, None, None]

    h = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    u_nx, dt_nx, z_nx, B_nx, C_nx = _load_chunk(
        _chunk_steps(0, L, offs_l, BLOCK_L, REVERSE), L, mask_d, mask_n,
        u_row, dt_row, z_row, B_row, C_row, s_ul, s_tl, s_zl, s_Bl, s_Cl, HAS_Z,
    )  # fmt: skip
    for chunk in range(tl.cdiv(L, BLOCK_L)):
        t = _chunk_steps(chunk, L, offs_l, BLOCK_L, REVERSE)  # (BL,)
        # The loads of chunk + 1 are issued before chunk's arithmetic, so their latency hides behind
        # it (a warp has few neighbours to switch to); past the end they are fully masked.
        u, dt, z, Bt, Ct = u_nx, dt_nx, z_nx, B_nx, C_nx
        u_nx, dt_nx, z_nx, B_nx, C_nx = _load_chunk(
            _chunk_steps(chunk + 1, L, offs_l, BLOCK_L, REVERSE), L, mask_d, mask_n,
            u_row, dt_row, z_row, B_row, C_row, s_ul, s_tl, s_zl, s_Bl, s_Cl, HAS_Z,
        )  # fmt: skip
        mask_td = ((t >= 0) & (t < L))[:, None] & mask_d[None, :]  # (BL, BD)
        if HAS_BIAS:
            dt = dt + bias[None, :]
        if SOFTPLUS:
            dt = _softplus(dt)
        dt = tl.where(mask_td, dt, 0.0)  # padding: decay exp(0) = 1 and drive 0 keep the state as is

        decay = tl.exp2(dt[:, None, :] * A[None, :, :])  # (BL, BN, BD)
        drive = (dt * u)[:, None, :] * Bt[:, :, None]  # (BL, BN, BD)
        drive = tl.where(is_first, decay * h[None, :, :] + drive, drive)  # carry in
        _, states = tl.associative_scan((decay, drive), axis=0, combine_fn=_combine)
        y = tl.sum(states * Ct[:, :, None], axis=1)  # (BL, BD)
        h = tl.sum(tl.where(is_last, states, 0.0), axis=0)  # (BN, BD): carry out

        if HAS_D:
            y += skip[None, :] * u
        if HAS_Z:
            y *= z / (1.0 + tl.exp(-z))  # silu(z)
        if ACCUMULATE:
            # Two directions add into one zeroed fp32 buffer: 0 + a + b == 0 + b + a exactly, so the
            # result does not depend on which direction lands first.
            tl.atomic_add(y_row + t[:, None] * s_yl, y, mask=mask_td, sem="relaxed")
        else:
            tl.store(y_row + t[:, None] * s_yl, _to_dtype(y, y_ptr.dtype.element_ty), mask=mask_td)
    if STORE_STATE:
        state_ptrs = state_ptr + pid_b * s_hb + offs_d[None, :] * s_hd + offs_n[:, None] * s_hn
        tl.store(state_ptrs, _to_dtype(h, state_ptr.dtype.element_ty), mask=mask_nd)


@triton.jit
def _selective_scan_kernel(
    y_ptr, state_ptr, Di, L, N, s_yb, s_yd, s_yl, s_hb, s_hd, s_hn,
    # forward direction (scanned 0 .. L-1)
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, per_group_B, per_group_C,
    s_ub, s_ud, s_ul, s_tb, s_td, s_tl, s_zb, s_zd, s_zl,
    s_Bb, s_Bg, s_Bn, s_Bl, s_Cb, s_Cg, s_Cn, s_Cl, s_Ad, s_An,
    # backward direction (scanned L-1 .. 0); read only when BIDIRECTIONAL
    ub_ptr, dtb_ptr, Ab_ptr, Bb_ptr, Cb_ptr, Db_ptr, zb_ptr, biasb_ptr, per_group_Bb, per_group_Cb,
    s_ubb, s_ubd, s_ubl, s_tbb, s_tbd, s_tbl, s_zbb, s_zbd, s_zbl,
    s_Bbb, s_Bbg, s_Bbn, s_Bbl, s_Cbb, s_Cbg, s_Cbn, s_Cbl, s_Abd, s_Abn,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    STORE_STATE: tl.constexpr, BIDIRECTIONAL: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
):  # fmt: skip
    """Grid (cdiv(Di, BLOCK_D), batch, 1 or 2 directions); see _scan_direction."""
    d0 = tl.program_id(0) * BLOCK_D
    pid_b = tl.program_id(1).to(tl.int64)  # batch offsets in int64: batch * Di * L may pass 2**31
    if tl.program_id(2) == 0:
        _scan_direction(
            u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, y_ptr, state_ptr,
            pid_b, d0, Di, L, N, per_group_B, per_group_C,
            s_ub, s_ud, s_ul, s_tb, s_td, s_tl, s_zb, s_zd, s_zl,
            s_Bb, s_Bg, s_Bn, s_Bl, s_Cb, s_Cg, s_Cn, s_Cl, s_Ad, s_An,
            s_yb, s_yd, s_yl, s_hb, s_hd, s_hn,
            HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, False, BIDIRECTIONAL, STORE_STATE,
            BLOCK_D, BLOCK_N, BLOCK_L,
        )  # fmt: skip
    elif BIDIRECTIONAL:
        _scan_direction(
            ub_ptr, dtb_ptr, Ab_ptr, Bb_ptr, Cb_ptr, Db_ptr, zb_ptr, biasb_ptr, y_ptr, state_ptr,
            pid_b, d0, Di, L, N, per_group_Bb, per_group_Cb,
            s_ubb, s_ubd, s_ubl, s_tbb, s_tbd, s_tbl, s_zbb, s_zbd, s_zbl,
            s_Bbb, s_Bbg, s_Bbn, s_Bbl, s_Cbb, s_Cbg, s_Cbn, s_Cbl, s_Abd, s_Abn,
            s_yb, s_yd, s_yl, s_hb, s_hd, s_hn,
            HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, True, True, False,
            BLOCK_D, BLOCK_N, BLOCK_L,
        )  # fmt: skip


@dataclass(frozen=True)
class ScanConfig:
    """Launch shape: channels and time steps a program, warps a program (powers of two).

    num_warps > 1 makes Triton spread warps over the state axis, so y's sum over N goes through
    shared memory: it works, but the default is 1.
    """

    block_d: int
    block_l: int
    num_warps: int = 1


# Launch shapes worth timing against each other on a GPU (benchmarks/bench_triton_bidir.py sweeps
# them; tests/test_triton_scan.py checks each on the GPU). The default for N = 16 is the first.
# (16, 16) and (8, 32) are left out: both spill registers in the sm_90 build.
CANDIDATE_CONFIGS = (
    ScanConfig(8, 16),
    ScanConfig(8, 8),
    ScanConfig(16, 8),
    ScanConfig(4, 16),
    ScanConfig(8, 16, num_warps=2),
)


def _choose_config(n_states: int, per_group: int) -> ScanConfig:
    """Lanes: BLOCK_D on channels x (32 / BLOCK_D) on states, 4 states per thread (see module doc).

    Fewer states a thread put more lanes on N and more shuffles into y's sum over N (BLOCK_D 4: 18
    instructions an element against 14.5); more make fewer, fatter warps (BLOCK_D 16: 12.4, but one
    warp a scheduler at the MUSE shape). 16 steps a chunk: the prefetch then runs a whole chunk of
    arithmetic ahead, and the registers (~250) still hold; 32 steps spill, and so do 16 once BLOCK_D
    reaches 16 (N <= 8), whose (step, channel) tiles are twice as wide: those get 8 steps.
    """
    block_n = triton.next_power_of_2(n_states)
    lanes_on_n = min(32, max(1, block_n // 4))
    block_d = 32 // lanes_on_n
    # A block must sit inside one group of B/C (per_group is 0 when there are no groups).
    while per_group and per_group % block_d:
        block_d //= 2
    return ScanConfig(block_d=block_d, block_l=16 if block_d <= 8 else 8, num_warps=1)


def selective_scan_triton(
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
    *,
    config: ScanConfig | None = None,
):
    """Selective scan in Triton; the same semantics, shapes and result dtype as ``selective_scan_ref``.

    Shapes:
        u, delta, z: (batch, Di, L); A: (Di, N);
        B, C: (batch, N, L) or (batch, groups, N, L) with Di divisible by groups;
        D, delta_bias: (Di,).
    Any strides; dtypes float32, float16 or bfloat16 (each tensor its own); fp32 arithmetic inside.
    Returns y (batch, Di, L) in u's dtype, or (y, last_state (batch, Di, N) in u's dtype) when
    ``return_last_state``. Not differentiable. ``config`` overrides the launch shape (benchmarks).
    """
    _check_direction("", u, delta, A, B, C, D, z, delta_bias)
    batch, channels, length = u.shape
    n_states = A.shape[1]
    y = torch.empty((batch, channels, length), dtype=u.dtype, device=u.device)
    state = u.new_zeros((batch, channels, n_states)) if return_last_state else None
    if y.numel():
        direction = _direction_args(u, delta, A, B, C, D, z, delta_bias)
        _launch(y, state, direction, None, delta_softplus, config)
    return (y, state) if return_last_state else y


def selective_scan_triton_bidirectional(
    forward: ScanInputs,
    backward: ScanInputs,
    delta_softplus: bool = False,
    *,
    config: ScanConfig | None = None,
) -> torch.Tensor:
    """Both scans of a BiMamba block in one launch; the backward one reads its inputs back to front.

    Both directions' inputs are in natural time order. With ``scan`` = ``selective_scan_ref`` and
    ``flip`` = flip along the last (time) axis, the result is, up to fp32 rounding,

        scan(*forward, delta_softplus=delta_softplus)
        + flip(scan(flip(u_b), flip(delta_b), A_b, flip(B_b), flip(C_b), D_b, flip(z_b), delta_bias_b,
                    delta_softplus=delta_softplus))

    where ``u_b, delta_b, ...`` are the fields of ``backward``: the backward state runs from step
    L-1 down to 0 and its output lands at the step it was computed for. In a BiMamba block the
    backward inputs are then computed without flipping x and z (e.g. an anti-causal conv).
    Each direction may have its own strides, dtypes and B/C groups; both share batch, Di, N, L and
    device. D, z and delta_bias must be given for both directions or for neither. The directions
    add in fp32 and round once to forward.u's dtype (the reference rounds each direction, then
    their sum). Returns y (batch, Di, L) in forward.u's dtype. Not differentiable.
    """
    forward, backward = ScanInputs.of(forward), ScanInputs.of(backward)
    _check_direction("", *forward)
    _check_direction("_b", *backward)
    if backward.u.shape != forward.u.shape or backward.A.shape != forward.A.shape:
        raise ValueError(
            f"the two directions must agree: u {tuple(forward.u.shape)} vs u_b {tuple(backward.u.shape)}, "
            f"A {tuple(forward.A.shape)} vs A_b {tuple(backward.A.shape)}"
        )
    if backward.u.device != forward.u.device:
        raise ValueError(f"forward inputs are on {forward.u.device}, backward ones on {backward.u.device}")
    check_same_options(forward, backward)
    u = forward.u
    # fp32 accumulator: both directions atomically add into it; zeroed because neither goes first.
    acc = torch.zeros(u.shape, dtype=torch.float32, device=u.device)
    if acc.numel():
        _launch(acc, None, _direction_args(*forward), _direction_args(*backward), delta_softplus, config)
    return acc if u.dtype == torch.float32 else acc.to(u.dtype)


def _check_direction(suffix, u, delta, A, B, C, D, z, delta_bias) -> None:
    """Clear errors for wrong ranks, shapes, dtypes or devices (names carry the direction suffix)."""

    def name(base):
        return base + suffix

    tensors = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z, "delta_bias": delta_bias}
    for key, tensor in tensors.items():
        if tensor is None:
            continue
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name(key)} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.dtype not in _FLOAT_DTYPES:
            raise TypeError(
                f"{name(key)} has dtype {tensor.dtype}; the Triton scan takes float32, float16 or "
                "bfloat16 (use selective_scan_ref for float64)"
            )
        if tensor.device != u.device:
            raise ValueError(f"{name(key)} is on {tensor.device} but {name('u')} is on {u.device}")
    if u.dim() != 3:
        raise ValueError(f"{name('u')} must be (batch, Di, L), got shape {tuple(u.shape)}")
    batch, channels, length = u.shape
    for key in ("delta", "z"):
        if tensors[key] is not None and tensors[key].shape != u.shape:
            raise ValueError(f"{name(key)} has shape {tuple(tensors[key].shape)}, expected {tuple(u.shape)}")
    if A.dim() != 2 or A.shape[0] != channels:
        raise ValueError(f"{name('A')} must be (Di={channels}, N), got shape {tuple(A.shape)}")
    n_states = A.shape[1]
    if n_states < 1:
        raise ValueError(f"{name('A')} has N = 0 states")
    for key in ("B", "C"):
        BC = tensors[key]
        if BC.dim() == 3 and BC.shape == (batch, n_states, length):
            continue
        if BC.dim() == 4 and BC.shape[0] == batch and BC.shape[2:] == (n_states, length):
            groups = BC.shape[1]
            if groups >= 1 and channels % groups == 0:
                continue
            raise ValueError(f"{name(key)} has {groups} groups, which does not divide Di={channels}")
        raise ValueError(
            f"{name(key)} must be (batch, N, L) = {(batch, n_states, length)} or (batch, groups, N, L), "
            f"got shape {tuple(BC.shape)}"
        )
    for key in ("D", "delta_bias"):
        if tensors[key] is not None and tensors[key].shape != (channels,):
            raise ValueError(f"{name(key)} must be (Di,) = ({channels},), got {tuple(tensors[key].shape)}")


@dataclass
class _Direction:
    """Kernel arguments of one direction: pointers (tensors), B/C group sizes and strides."""

    tensors: tuple  # u, delta, A, B, C, D, z, delta_bias (absent ones replaced by u)
    per_group_B: int
    per_group_C: int
    strides: tuple  # u, delta, z (b, d, l); B, C (b, g, n, l); A (d, n)
    flags: tuple  # has D, has z, has delta_bias


def _direction_args(u, delta, A, B, C, D, z, delta_bias) -> _Direction:
    channels = u.shape[1]

    def grouped(BC):  # (batch, N, L) -> (batch, 1, N, L) as a view: groups are the general case
        return BC.unsqueeze(1) if BC.dim() == 3 else BC

    B4, C4 = grouped(B), grouped(C)
    # The tiny per-channel vectors are made contiguous: the kernel indexes them with stride 1.
    D = D.contiguous() if D is not None else None
    delta_bias = delta_bias.contiguous() if delta_bias is not None else None
    z_strides = z.stride() if z is not None else (0, 0, 0)
    return _Direction(
        tensors=(u, delta, A, B4, C4, _or(D, u), _or(z, u), _or(delta_bias, u)),
        per_group_B=channels // B4.shape[1],
        per_group_C=channels // C4.shape[1],
        strides=(*u.stride(), *delta.stride(), *z_strides, *B4.stride(), *C4.stride(), *A.stride()),
        flags=(D is not None, z is not None, delta_bias is not None),
    )


def _or(tensor, fallback):
    return fallback if tensor is None else tensor


def _launch(y, state, forward: _Direction, backward: _Direction | None, softplus, config):
    """Grid (channel blocks, batch, directions); y and state are written (added into, with two).

    Returns what Triton's launch returns (the compiled kernel on a GPU: registers, spills).
    """
    batch, channels, length = y.shape
    n_states = forward.tensors[2].shape[1]
    per_group = _block_divisor(forward, backward, channels)
    config = config or _choose_config(n_states, per_group)
    _check_config(config, per_group)
    if batch > 65535:
        raise ValueError(f"batch {batch} exceeds the grid's 65535 rows; split the batch")
    kernel = _kernel_for(y.device)
    other = backward if backward is not None else forward
    state_args = (state, *state.stride()) if state is not None else (y, 0, 0, 0)
    grid = (triton.cdiv(channels, config.block_d), batch, 2 if backward is not None else 1)
    # Triton launches on the current device: make it y's.
    with torch.cuda.device(y.device) if y.is_cuda else contextlib.nullcontext():
        return kernel[grid](
            y, state_args[0], channels, length, n_states, *y.stride(), *state_args[1:],
            *forward.tensors, forward.per_group_B, forward.per_group_C, *forward.strides,
            *other.tensors, other.per_group_B, other.per_group_C, *other.strides,
            HAS_D=forward.flags[0], HAS_Z=forward.flags[1], HAS_BIAS=forward.flags[2],
            SOFTPLUS=bool(softplus), STORE_STATE=state is not None, BIDIRECTIONAL=backward is not None,
            BLOCK_D=config.block_d, BLOCK_N=triton.next_power_of_2(n_states), BLOCK_L=config.block_l,
            num_warps=config.num_warps,
        )  # fmt: skip


def _check_config(config: ScanConfig, per_group: int) -> None:
    for key in ("block_d", "block_l", "num_warps"):
        value = getattr(config, key)
        if value < 1 or value & (value - 1):
            raise ValueError(f"ScanConfig.{key}={value} must be a power of two")
    if per_group and per_group % config.block_d:
        raise ValueError(f"block_d={config.block_d} must divide the channels per B/C group ({per_group})")


def _block_divisor(forward: _Direction, backward: _Direction | None, channels: int) -> int:
    """What every channel block must divide so it sits in one B/C group; 0 when nothing is grouped."""
    sizes = [forward.per_group_B, forward.per_group_C]
    if backward is not None:
        sizes += [backward.per_group_B, backward.per_group_C]
    return math.gcd(*(size for size in sizes if size != channels))


def _is_interpreted(kernel) -> bool:
    return type(kernel).__name__ == "InterpretedFunction"


def _kernel_for(device: torch.device):
    """The kernel, after checking that it can run on `device`."""
    if device.type == "cpu" and not _is_interpreted(_selective_scan_kernel):
        raise RuntimeError(
            "selective_scan_triton got CPU tensors: Triton kernels run on CUDA tensors, or on CPU tensors "
            "when TRITON_INTERPRET=1 is set before triton is first imported (slow; for tests). On CPU use "
            "selective_scan_ref or torch.ops.muse.selective_scan."
        )
    if device.type not in ("cpu", "cuda"):
        raise RuntimeError(f"selective_scan_triton runs on CUDA tensors, got device {device}")
    return _selective_scan_kernel
