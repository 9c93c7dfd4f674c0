"""``muse::selective_scan`` written in standard ONNX ops, for ``torch.onnx.export``'s translation table.

The recurrence (MUSE_ARCHITECTURE.md, "Selective scan") becomes one ONNX ``Scan`` over time whose
carried value is the state h (batch, Di, N). Everything that does not depend on h is computed outside
the loop with whole-tensor ops (softplus, dA = exp(delta * A), dBu = delta * u * B, the D skip and the
silu gate), so the loop body is three ops: h = dA_t * h + dBu_t; y_t = h @ C_t.
Per-step outputs leave the loop as Scan outputs, never by Concat (which would copy O(L^2) data).
"""

from __future__ import annotations

from onnxscript import FLOAT, graph, script
from onnxscript import opset18 as op

OPSET = 18


@script()
def scan_recurrence(dA: FLOAT, dBu: FLOAT, C: FLOAT) -> FLOAT:
    """dA, dBu (L, batch, Di, N); C (L, batch, N, 1) -> y (L, batch, Di, 1), h starting at zero."""

    @graph()
    def step(h_prev, dA_t, dBu_t, c_t):
        h = dA_t * h_prev + dBu_t  # (batch, Di, N)
        y_t = op.MatMul(h, c_t)  # (batch, Di, 1)
        return h, y_t

    h0 = op.ConstantOfShape(op.Shape(dA, start=1))  # zeros (batch, Di, N)
    h_last, y = op.Scan(h0, dA, dBu, C, body=step, num_scan_inputs=3)
    return y


def selective_scan_onnx(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Translation of ``muse::selective_scan`` (traced by the exporter, so None and bools are Python).

    u, delta, z: (batch, Di, L); A: (Di, N); B, C: (batch, N, L); D, delta_bias: (Di,).
    Returns y (batch, Di, L), fp32. B/C with groups (4-D) are not supported: MUSE never uses them.
    """
    _check_rank(B, 3, "B")
    _check_rank(C, 3, "C")
    if delta_bias is not None:
        delta = op.Add(delta, op.Unsqueeze(delta_bias, [1]))
    if delta_softplus:
        delta = op.Softplus(delta)
    delta_t = op.Unsqueeze(op.Transpose(delta, perm=[2, 0, 1]), [3])  # (L, batch, Di, 1)
    du_t = op.Unsqueeze(op.Transpose(op.Mul(delta, u), perm=[2, 0, 1]), [3])  # (L, batch, Di, 1)
    B_t = op.Unsqueeze(op.Transpose(B, perm=[2, 0, 1]), [2])  # (L, batch, 1, N)
    C_t = op.Unsqueeze(op.Transpose(C, perm=[2, 0, 1]), [3])  # (L, batch, N, 1)
    dA = op.Exp(op.Mul(delta_t, A))  # (L, batch, Di, N)
    dBu = op.Mul(du_t, B_t)  # (L, batch, Di, N)
    y = scan_recurrence(dA, dBu, C_t)  # (L, batch, Di, 1)
    y = op.Transpose(op.Squeeze(y, [3]), perm=[1, 2, 0])  # (batch, Di, L)
    if D is not None:
        y = op.Add(y, op.Mul(op.Unsqueeze(D, [1]), u))
    if z is not None:
        y = op.Mul(y, op.Mul(z, op.Sigmoid(z)))
    return y


def _check_rank(value, rank: int, name: str) -> None:
    shape = getattr(value, "shape", None)
    if shape is not None and len(shape) != rank:
        raise NotImplementedError(
            f"selective_scan ONNX translation: {name} must be {rank}-D (batch, N, L), got rank {len(shape)}"
        )
