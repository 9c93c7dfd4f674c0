"""The ``muse::`` scan ops written in standard ONNX ops, for ``torch.onnx.export``'s translation table.

The recurrence (``reference.selective_scan_ref``) becomes an ONNX ``Scan`` over time whose carried value
is the state h (batch, N, Di). Per step the body computes
    h = exp(delta_t * A) * h + (delta u)_t * B_t;   y_t = C_t @ h
on (batch, N, Di) tensors; softplus, delta * u, the D skip and the silu gate are whole-tensor ops
outside the loop. Per-step outputs leave the loop as Scan outputs, never by Concat (O(L^2) copies).

``muse::selective_scan_bidirectional`` is ONE Scan carrying both directions' states: the forward
inputs are scanned from step 0 up, the backward ones with ``scan_input_directions`` = 1 (from step
L-1 down) and its per-step outputs stored with ``scan_output_directions`` = 1 (each at its own step),
so no flipped copy is ever made. One loop of L iterations instead of two halves the Scan's per-iteration
overhead (onnxruntime runs the body as a subgraph, with a fixed cost per iteration).

Every translation reads its arguments as ``ScanInputs`` (one direction's tensors, as the ops take them).

Measured alternatives for one direction (scan alone, Di 512, N 16, L 3060, 1 thread, CPU ms a call, on
the busy 2-core development machine; the C++ op took 10-20 at batch 1 and 100-130 at batch 8 in the
same runs):
- this form: 92 at batch 1, 534 at batch 8;
- dA = exp(delta A) precomputed outside the loop, Di last: 104 at batch 1; the (L, batch, N, Di)
  tensors it writes and reads (100 MB a video each) cost more than the per-step Exp;
- the same with N last: 141-165 at batch 1, 784 at batch 8 (broadcasts over rows of 16 are slow);
- a chunked scan (all chunks at once, a pass over chunk boundaries, the chunks again from their true
  start states): fewer, larger ops but twice the arithmetic, 187-206 at batch 1.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from onnxscript import FLOAT, graph, script
from onnxscript import opset18 as op

from .inputs import ScanInputs

OPSET = 18


@script()
def scan_recurrence(delta: FLOAT, A_t: FLOAT, du: FLOAT, B: FLOAT, C: FLOAT) -> FLOAT:
    """delta, du (L, batch, 1, Di); A_t (N, Di); B (L, batch, N, 1); C (L, batch, 1, N)
    -> y (L, batch, 1, Di), the state h (batch, N, Di) starting at zero."""

    @graph()
    def step(h_prev, delta_t, du_t, b_t, c_t):
        h = op.Exp(delta_t * A_t) * h_prev + du_t * b_t  # (batch, N, Di)
        y_t = op.MatMul(c_t, h)  # (batch, 1, Di)
        return h, y_t

    state_shape = op.Concat(op.Shape(delta, start=1, end=2), op.Shape(A_t), axis=0)  # [batch, N, Di]
    h0 = op.ConstantOfShape(state_shape)
    h_last, y = op.Scan(h0, delta, du, B, C, body=step, num_scan_inputs=4)
    return y


@script()
def scan_recurrence_bidirectional(
    delta: FLOAT,
    A_t: FLOAT,
    du: FLOAT,
    B: FLOAT,
    C: FLOAT,
    delta_b: FLOAT,
    A_b_t: FLOAT,
    du_b: FLOAT,
    B_b: FLOAT,
    C_b: FLOAT,
) -> tuple[FLOAT, FLOAT]:
    """Both directions in one Scan; shapes as in ``scan_recurrence`` for each. Returns (y, y_b), each
    (L, batch, 1, Di) in natural time order; the backward state runs from step L-1 down to 0."""

    @graph()
    def step(h_prev, h_b_prev, delta_t, du_t, b_t, c_t, delta_b_t, du_b_t, b_b_t, c_b_t):
        h = op.Exp(delta_t * A_t) * h_prev + du_t * b_t  # (batch, N, Di)
        h_b = op.Exp(delta_b_t * A_b_t) * h_b_prev + du_b_t * b_b_t
        return h, h_b, op.MatMul(c_t, h), op.MatMul(c_b_t, h_b)  # states, then y_t, y_b_t (batch, 1, Di)

    state_shape = op.Concat(op.Shape(delta, start=1, end=2), op.Shape(A_t), axis=0)  # [batch, N, Di]
    h0 = op.ConstantOfShape(state_shape)
    h_last, h_b_last, y, y_b = op.Scan(
        h0,
        h0,
        delta,
        du,
        B,
        C,
        delta_b,
        du_b,
        B_b,
        C_b,
        body=step,
        num_scan_inputs=8,
        scan_input_directions=[0, 0, 0, 0, 1, 1, 1, 1],
        scan_output_directions=[0, 1],
    )
    return y, y_b


class _TimeMajor(NamedTuple):
    """One direction's Scan inputs: delta, du (L, batch, 1, Di); A_t (N, Di); B (L, batch, N, 1); C (L, batch, 1, N)."""

    delta: object
    A_t: object
    du: object
    B: object
    C: object


def _time_major(inputs: ScanInputs, delta_softplus: bool) -> _TimeMajor:
    """Bias, softplus and delta * u on whole tensors, then every per-step input laid out time first."""
    _check_rank(inputs.B, 3, "B")
    _check_rank(inputs.C, 3, "C")
    delta = inputs.delta
    if inputs.delta_bias is not None:
        delta = op.Add(delta, op.Unsqueeze(inputs.delta_bias, [1]))
    if delta_softplus:
        delta = op.Softplus(delta)
    return _TimeMajor(
        delta=op.Unsqueeze(op.Transpose(delta, perm=[2, 0, 1]), [2]),
        A_t=op.Transpose(inputs.A, perm=[1, 0]),
        du=op.Unsqueeze(op.Transpose(op.Mul(delta, inputs.u), perm=[2, 0, 1]), [2]),
        B=op.Unsqueeze(op.Transpose(inputs.B, perm=[2, 0, 1]), [3]),
        C=op.Unsqueeze(op.Transpose(inputs.C, perm=[2, 0, 1]), [2]),
    )


def _finish(y_time_major, inputs: ScanInputs):
    """(L, batch, 1, Di) scan output -> (batch, Di, L), plus the D skip, times silu(z)."""
    y = op.Transpose(op.Squeeze(y_time_major, [2]), perm=[1, 2, 0])
    if inputs.D is not None:
        y = op.Add(y, op.Mul(op.Unsqueeze(inputs.D, [1]), inputs.u))
    if inputs.z is not None:
        y = op.Mul(y, op.Mul(inputs.z, op.Sigmoid(inputs.z)))
    return y


def selective_scan_onnx(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Translation of ``muse::selective_scan`` (traced by the exporter, so None and bools are Python).

    u, delta, z: (batch, Di, L); A: (Di, N); B, C: (batch, N, L); D, delta_bias: (Di,).
    Returns y (batch, Di, L), fp32. B/C with groups (4-D) are not supported: MUSE never uses them.
    """
    inputs = ScanInputs(u, delta, A, B, C, D, z, delta_bias)
    return _finish(scan_recurrence(*_time_major(inputs, delta_softplus)), inputs)


def selective_scan_bidirectional_onnx(
    u, delta, A, B, C, D, z, delta_bias,
    u_b, delta_b, A_b, B_b, C_b, D_b, z_b, delta_bias_b,
    delta_softplus=False,
):  # fmt: skip
    """Translation of ``muse::selective_scan_bidirectional``: one Scan, the backward direction read and
    written with direction 1. Arguments as the op's (two directions, natural time order); y (batch, Di, L)."""
    forward = ScanInputs(u, delta, A, B, C, D, z, delta_bias)
    backward = ScanInputs(u_b, delta_b, A_b, B_b, C_b, D_b, z_b, delta_bias_b)
    y, y_b = scan_recurrence_bidirectional(
        *_time_major(forward, delta_softplus), *_time_major(backward, delta_softplus)
    )
    return op.Add(_finish(y, forward), _finish(y_b, backward))


def translation_table() -> dict:
    """``custom_translation_table`` for ``torch.onnx.export``: every ``muse::`` scan op -> its translation.

    Needs the ops registered (``import muse_infer.ops.op``).
    """
    from . import op as _registered  # noqa: F401  (defines torch.ops.muse.*)

    return {
        torch.ops.muse.selective_scan.default: selective_scan_onnx,
        torch.ops.muse.selective_scan_bidirectional.default: selective_scan_bidirectional_onnx,
    }


def _check_rank(value, rank: int, name: str) -> None:
    shape = getattr(value, "shape", None)
    if shape is not None and len(shape) != rank:
        raise NotImplementedError(
            f"selective_scan ONNX translation: {name} must be {rank}-D (batch, N, L), got rank {len(shape)}"
        )
