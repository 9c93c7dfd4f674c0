"""``muse::selective_scan`` written in standard ONNX ops, for ``torch.onnx.export``'s translation table.

The recurrence (MUSE_ARCHITECTURE.md, "Selective scan") becomes one ONNX ``Scan`` over time whose
carried value is the state h (batch, N, Di). Per step the body computes
    h = exp(delta_t * A) * h + (delta u)_t * B_t;   y_t = C_t @ h
on (batch, N, Di) tensors; softplus, delta * u, the D skip and the silu gate are whole-tensor ops
outside the loop. Per-step outputs leave the loop as Scan outputs, never by Concat (O(L^2) copies).

Measured alternatives (scan alone, Di 512, N 16, L 3060, 1 thread, CPU ms a call, on the busy 2-core
development machine; the C++ op took 10-20 at batch 1 and 100-130 at batch 8 in the same runs):
- this form: 92 at batch 1, 534 at batch 8;
- dA = exp(delta A) precomputed outside the loop, Di last: 104 at batch 1; the (L, batch, N, Di)
  tensors it writes and reads (100 MB a video each) cost more than the per-step Exp;
- the same with N last: 141-165 at batch 1, 784 at batch 8 (broadcasts over rows of 16 are slow);
- a chunked scan (all chunks at once, a pass over chunk boundaries, the chunks again from their true
  start states): fewer, larger ops but twice the arithmetic, 187-206 at batch 1.
"""

from __future__ import annotations

from onnxscript import FLOAT, graph, script
from onnxscript import opset18 as op

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


def selective_scan_onnx(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Translation of ``muse::selective_scan`` (traced by the exporter, so None and bools are Python).

    u, delta, z: (batch, Di, L); A: (Di, N); B, C: (batch, N, L); D, delta_bias: (Di,).
    Computed in fp32, as the op: inputs of any float type are cast to it, y is cast back to u's type
    (an fp16 export; the casts of an fp32 one are no-ops). Returns y (batch, Di, L). B/C with groups
    (4-D) are not supported: MUSE never uses them.
    """
    _check_rank(B, 3, "B")
    _check_rank(C, 3, "C")
    u_in = u
    u, delta, A, B, C, D, z, delta_bias = (
        None if x is None else op.Cast(x, to=FLOAT.dtype) for x in (u, delta, A, B, C, D, z, delta_bias)
    )
    if delta_bias is not None:
        delta = op.Add(delta, op.Unsqueeze(delta_bias, [1]))
    if delta_softplus:
        delta = op.Softplus(delta)
    delta_t = op.Unsqueeze(op.Transpose(delta, perm=[2, 0, 1]), [2])  # (L, batch, 1, Di)
    du_t = op.Unsqueeze(op.Transpose(op.Mul(delta, u), perm=[2, 0, 1]), [2])  # (L, batch, 1, Di)
    B_t = op.Unsqueeze(op.Transpose(B, perm=[2, 0, 1]), [3])  # (L, batch, N, 1)
    C_t = op.Unsqueeze(op.Transpose(C, perm=[2, 0, 1]), [2])  # (L, batch, 1, N)
    y = scan_recurrence(delta_t, op.Transpose(A, perm=[1, 0]), du_t, B_t, C_t)  # (L, batch, 1, Di)
    y = op.Transpose(op.Squeeze(y, [2]), perm=[1, 2, 0])  # (batch, Di, L)
    if D is not None:
        y = op.Add(y, op.Mul(op.Unsqueeze(D, [1]), u))
    if z is not None:
        y = op.Mul(y, op.Mul(z, op.Sigmoid(z)))
    return op.CastLike(y, u_in)


def _check_rank(value, rank: int, name: str) -> None:
    shape = getattr(value, "shape", None)
    if shape is not None and len(shape) != rank:
        raise NotImplementedError(
            f"selective_scan ONNX translation: {name} must be {rank}-D (batch, N, L), got rank {len(shape)}"
        )
