"""Every selective-scan implementation through one matrix, against the float64 reference.

Axes:
- implementation: "ref" (selective_scan_ref), "chunked" (selective_scan_chunked), "op" (the custom op:
  the C++ kernel on CPU, Triton on CUDA) and "script" (the TorchScript formulation), each called through
  ``muse_infer.ops.dispatch`` as the model calls them; "triton" (the Triton kernels on CPU tensors under
  TRITON_INTERPRET=1, all in one subprocess: tests/triton_interpreter.py); "onnx" (the ONNX translations
  of the ops, exported with every dimension dynamic and run by onnxruntime).
  Each one-direction and bidirectional: both directions of a BiMamba block, natural time order; "op"
  is the fused muse::selective_scan_bidirectional, "triton" its Triton kernel, "onnx" its one-Scan
  translation; ref, chunked and script compose scan(forward) + flip(scan(flip(backward))).
- device: cpu; cuda (marker ``gpu``: skipped without a GPU).
- dtype: float32, bfloat16, float16 where the implementation takes them; float64 for ref and chunked.
  A, D, delta_bias stay float32 (as in the model) or take the low dtype too (``low_params``).
- layout: contiguous; strided (every tensor a view of every other element of a twice larger buffer);
  time_major (channels-last style: (batch, L, Di + 3) memory seen as (batch, Di, L), A column-major).
- size (batch, Di, L, N): batch {1, 3} x Di {3, 17, 64} x L {1, 113, 203} x N {1, 16}; options: D, z,
  delta_bias and softplus all on, or all off.

Default run: the matrix sampled. Every cell (implementation, direction, device, dtype, layout) takes two
sizes by rotation through the 36 (so every size comes up), one case in five with the options off;
Triton interpreter cells one small size (Di <= 17, L <= 113), ONNX cells three. ``-m slow`` adds the
full cross of sizes (Triton: of the small ones; larger sizes take minutes each in the interpreter).

Acceptance (flash-attention's rule): against the float64 reference on the same (rounded) inputs, the
error of an implementation is at most twice the error of the plain PyTorch reference run on those inputs
in their own dtype (``selective_scan_ref``: fp32 arithmetic, result rounded to the dtype), plus a floor
of ``FLOOR[dtype] x max(1, max |y|)``.

Checks that are not a cell of this matrix stay with their implementation: test_scan_op.py (instruction
set builds, long memory, grouped B/C, extreme values, errors, registrations, the refusal of gradients),
test_triton_scan.py (launch configs, grouped B/C, argument errors, the MUSE size on GPU),
test_scan_chunked.py (gradients), test_reference_scan.py (the reference against a loop).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import sys
import traceback
import warnings
import zlib
from pathlib import Path

import pytest
import torch
from triton_interpreter import INTERPRETED, run_worker, speed_up_interpreter

from muse_infer.ops import ScanInputs, dispatch, selective_scan_bidirectional_ref, selective_scan_ref
from muse_infer.ops.inputs import SCAN_FIELDS
from muse_infer.ops.op import op_available

DTYPES = {
    "ref": ("float64", "float32", "bfloat16", "float16"),
    "chunked": ("float64", "float32", "bfloat16", "float16"),
    "op": ("float32", "bfloat16", "float16"),
    "script": ("float32", "bfloat16", "float16"),
    "triton": ("float32", "bfloat16", "float16"),
    "onnx": ("float32",),
}
DEVICES = {
    "ref": ("cpu", "cuda"),
    "chunked": ("cpu", "cuda"),
    "op": ("cpu", "cuda"),
    "script": ("cpu", "cuda"),
}
DEVICES |= {"triton": ("cpu",), "onnx": ("cpu",)}  # triton on cuda is what "op" runs there
LAYOUTS = ("contiguous", "strided", "time_major")
FLOOR = {"float64": 1e-10, "float32": 1e-5, "bfloat16": 1e-5, "float16": 1e-5}
SIZES = [  # (batch, Di, L, N)
    (batch, di, length, n)
    for batch, di, length, n in itertools.product((1, 3), (3, 17, 64), (1, 113, 203), (1, 16))
]
SMALL_SIZES = [s for s in SIZES if s[1] <= 17 and s[2] <= 113]  # for the Triton interpreter
OPCHECK_UTILS = ("test_schema", "test_faketensor", "test_aot_dispatch_dynamic")  # no backward to check


@dataclasses.dataclass(frozen=True)
class Case:
    """One cell of the matrix at one size."""

    impl: str
    bidirectional: bool
    device: str
    dtype: str
    layout: str
    size: tuple  # (batch, Di, L, N)
    options: bool = True  # D, z, delta_bias, softplus
    low_params: bool = False  # A, D, delta_bias in `dtype` too (else float32; float64 for float64)

    @property
    def id(self) -> str:
        batch, di, length, n = self.size
        parts = [self.impl, "bi" if self.bidirectional else "one", self.device, self.dtype, self.layout]
        parts.append(f"b{batch}d{di}l{length}n{n}")
        if not self.options:
            parts.append("plain")
        if self.low_params:
            parts.append("lowparams")
        return "-".join(parts)


def cells() -> list[tuple]:
    """(impl, bidirectional, device, dtype, layout) for every cell of the matrix."""
    return [
        (impl, bidirectional, device, dtype, layout)
        for impl in DTYPES
        for bidirectional in (False, True)
        for device in DEVICES[impl]
        for dtype in DTYPES[impl]
        for layout in (LAYOUTS if impl != "onnx" else ("contiguous",))
    ]


def default_cases() -> list[Case]:
    """Two sizes a cell (Triton: one small size, ONNX: three), rotating through the sizes."""
    cases = []
    for index, (impl, bidirectional, device, dtype, layout) in enumerate(cells()):
        count, pool = {"triton": (1, SMALL_SIZES), "onnx": (3, SIZES)}.get(impl, (2, SIZES))
        for k in range(count):
            size = pool[(index * 7 + k * 13) % len(pool)]
            options = (index + k) % 5 != 4
            low_params = dtype in ("bfloat16", "float16") and k % 2 == 1
            cases.append(Case(impl, bidirectional, device, dtype, layout, size, options, low_params))
    return cases


def slow_cases() -> list[Case]:
    """Every cell at every size (Triton: every small size), options on, less the default run's cases."""
    done = {case.id for case in default_cases()}
    every = [
        Case(*cell, size=size) for cell in cells() for size in (SMALL_SIZES if cell[0] == "triton" else SIZES)
    ]
    return [case for case in every if case.id not in done]


def as_param(case: Case):
    marks = [pytest.mark.gpu] if case.device == "cuda" else []
    if case.impl == "op" and case.device == "cpu":
        marks.append(pytest.mark.skipif(not op_available("cpu"), reason="muse_infer._C is not built"))
    return pytest.param(case, id=case.id, marks=marks)


# --- inputs --------------------------------------------------------------------------------------------


def make_inputs(case: Case, seed: int) -> ScanInputs:
    """Random inputs for ``case``: Mamba-like ranges, softplus inputs above its threshold 20 included.

    Drawn in float64 on the CPU, rounded to the case's dtypes, moved to its device, laid out."""
    batch, di, length, n = case.size
    g = torch.Generator().manual_seed(seed)
    u, z = (torch.randn(batch, di, length, generator=g, dtype=torch.float64) for _ in range(2))
    B, C = (torch.randn(batch, n, length, generator=g, dtype=torch.float64) for _ in range(2))
    A = -torch.exp(torch.empty(di, n, dtype=torch.float64).uniform_(-2.3, 2.77, generator=g))  # -(0.1..16)
    D = torch.randn(di, generator=g, dtype=torch.float64)
    if case.options:
        delta = 0.5 * torch.randn(batch, di, length, generator=g, dtype=torch.float64)
        delta[:, ::3, length // 2] = 30.0  # softplus(x) = x above 20
        bias = torch.empty(di, dtype=torch.float64).uniform_(-6.0, 1.0, generator=g)  # ~Mamba's dt bias
    else:  # no softplus: keep delta >= 0 so that the state decays
        delta = 0.3 * torch.randn(batch, di, length, generator=g, dtype=torch.float64).abs()
        D = z = bias = None
    low = getattr(torch, case.dtype)
    params = low if case.low_params or case.dtype == "float64" else torch.float32
    values = ScanInputs(u, delta, A, B, C, D, z, bias)
    return ScanInputs(
        *(
            None
            if t is None
            else arrange(t.to(case.device, params if name in ("A", "D", "delta_bias") else low), case.layout)
            for name, t in zip(SCAN_FIELDS, values, strict=True)
        )
    )


def arrange(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The values of ``t`` in ``layout`` (see the module docstring), as a view with those strides."""
    if layout == "contiguous":
        return t.contiguous()
    if layout == "strided":
        buffer = t.new_zeros([2 * s for s in t.shape])
        view = buffer[tuple(slice(None, None, 2) for _ in t.shape)]
        view.copy_(t)
        return view
    if t.dim() == 3:  # time_major: (batch, L, X + 3) memory seen as (batch, X, L)
        batch, channels, length = t.shape
        buffer = t.new_zeros(batch, length, channels + 3)
        buffer[..., :channels] = t.transpose(1, 2)
        return buffer[..., :channels].transpose(1, 2)
    if t.dim() == 2:
        return t.t().contiguous().t()
    return t


# --- running a case ------------------------------------------------------------------------------------


def run_case(case: Case, forward: ScanInputs, backward: ScanInputs | None) -> torch.Tensor:
    softplus = case.options
    if case.impl == "triton":
        from muse_infer.ops.triton_scan import selective_scan_triton, selective_scan_triton_bidirectional

        if backward is not None:
            return selective_scan_triton_bidirectional(forward, backward, softplus)
        return selective_scan_triton(*forward, delta_softplus=softplus)
    if case.impl == "onnx":
        return run_onnx(case, forward, backward)
    with torch.no_grad():
        if backward is not None:
            return dispatch.scan_bidirectional(forward, backward, softplus, impl=case.impl)
        return dispatch.scan(forward, softplus, impl=case.impl)


class OpCall(torch.nn.Module):
    """One ``muse::`` scan op call, for exporting its ONNX translation; absent arguments are None."""

    def __init__(self, bidirectional: bool, softplus: bool):
        super().__init__()
        self.bidirectional, self.softplus = bidirectional, softplus

    def forward(
        self, u, delta, A, B, C, D, z, delta_bias, u_b, delta_b, A_b, B_b, C_b, D_b, z_b, delta_bias_b
    ):
        forward = (u, delta, A, B, C, D, z, delta_bias)
        if not self.bidirectional:
            return torch.ops.muse.selective_scan(*forward, self.softplus)
        backward = (u_b, delta_b, A_b, B_b, C_b, D_b, z_b, delta_bias_b)
        return torch.ops.muse.selective_scan_bidirectional(*forward, *backward, self.softplus)


ONNX_NAMES = [*SCAN_FIELDS, *(f"{name}_b" for name in SCAN_FIELDS)]


@functools.cache
def onnx_session(bidirectional: bool, options: bool):
    """An onnxruntime session of the op's translation, every dimension dynamic (exported once)."""
    import onnxruntime as ort

    from muse_infer.ops.onnx_scan import OPSET, translation_table

    example = Case("onnx", bidirectional, "cpu", "float32", "contiguous", (2, 5, 7, 3), options)
    forward, backward = make_inputs(example, 0), make_inputs(example, 1) if bidirectional else None
    args = (*forward, *(backward if backward is not None else (None,) * 8))
    batch, di, length, n = (torch.export.Dim(name) for name in ("batch", "Di", "L", "N"))
    dims = {
        "u": {0: batch, 1: di, 2: length},
        "A": {0: di, 1: n},
        "B": {0: batch, 1: n, 2: length},
        "D": {0: di},
    }
    dims |= {"delta": dims["u"], "z": dims["u"], "C": dims["B"], "delta_bias": dims["D"]}
    shapes = [
        None if a is None else dims[name.removesuffix("_b")] for name, a in zip(ONNX_NAMES, args, strict=True)
    ]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            OpCall(bidirectional, options),
            args,
            dynamo=True,
            opset_version=OPSET,
            input_names=[name for name, a in zip(ONNX_NAMES, args, strict=True) if a is not None],
            dynamic_shapes=shapes,
            custom_translation_table=translation_table(),
            verbose=False,
        )
    model = program.model_proto.SerializeToString()
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def run_onnx(case: Case, forward: ScanInputs, backward: ScanInputs | None) -> torch.Tensor:
    session = onnx_session(case.bidirectional, case.options)
    args = (*forward, *(backward if backward is not None else (None,) * 8))
    feeds = {name: a.numpy() for name, a in zip(ONNX_NAMES, args, strict=True) if a is not None}
    return torch.from_numpy(session.run(None, feeds)[0])


def reference(forward: ScanInputs, backward: ScanInputs | None, softplus: bool, dtype=None) -> torch.Tensor:
    """selective_scan_ref (composed for two directions) on the inputs, cast to ``dtype`` first if given."""
    if dtype is not None:
        forward = forward.cast(dtype)
        backward = backward.cast(dtype) if backward is not None else None
    if backward is not None:
        return selective_scan_bidirectional_ref(forward, backward, softplus)
    return selective_scan_ref(*forward, delta_softplus=softplus)


def measure(case: Case) -> dict:
    """The case's error and the same-precision reference's, both against the float64 reference."""
    seed = zlib.crc32(case.id.encode()) % 100_000
    forward = make_inputs(case, seed)
    backward = make_inputs(case, seed + 1) if case.bidirectional else None
    y = run_case(case, forward, backward)
    exact = reference(forward, backward, case.options, torch.float64).to(y.device)
    same_precision = reference(forward, backward, case.options)
    return {
        "err": (y.double() - exact).abs().max().item(),
        "ref_err": (same_precision.double() - exact).abs().max().item(),
        "scale": exact.abs().max().item(),
        "dtype": str(y.dtype).removeprefix("torch."),
        "shape": list(y.shape),
        "finite": bool(torch.isfinite(y).all()),
    }


def measure_or_error(case: Case) -> dict:
    try:
        return measure(case)
    except Exception:  # reported by the case's own test
        return {"error": traceback.format_exc()}


def assert_acceptable(case: Case, result: dict) -> None:
    if "error" in result:
        pytest.fail(result["error"])
    expected_dtype = "float32" if case.impl == "onnx" else case.dtype
    assert result["finite"], "non-finite output"
    assert result["dtype"] == expected_dtype and result["shape"] == list(case.size[:3])
    bound = 2 * result["ref_err"] + FLOOR[case.dtype] * max(1.0, result["scale"])
    assert result["err"] <= bound, (
        f"error {result['err']:.3g} > bound {bound:.3g} (the reference in {case.dtype}: "
        f"{result['ref_err']:.3g}, max |y| {result['scale']:.3g})"
    )


# --- the matrix ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def triton_results(request) -> dict:
    """Results of every collected Triton case, measured in one TRITON_INTERPRET=1 subprocess."""
    cases = [
        item.callspec.params["case"]
        for item in request.session.items
        if isinstance(getattr(item, "callspec", None) and item.callspec.params.get("case"), Case)
        and item.callspec.params["case"].impl == "triton"
    ]
    if INTERPRETED:
        return {case.id: measure_or_error(case) for case in cases}
    timeout_s = 300 + 5 * len(cases)  # ~0.5 s a small case on a quiet machine
    return run_worker(__file__, [dataclasses.asdict(case) for case in cases], timeout_s)


def check(case: Case, request) -> None:
    if case.impl == "triton":
        assert_acceptable(case, request.getfixturevalue("triton_results")[case.id])
    else:
        assert_acceptable(case, measure(case))


@pytest.mark.parametrize("case", [as_param(c) for c in default_cases()])
def test_matrix(case, request):
    check(case, request)


@pytest.mark.slow
@pytest.mark.parametrize("case", [as_param(c) for c in slow_cases()])
def test_matrix_full_sweep(case, request):
    check(case, request)


def test_the_sample_covers_every_axis_value():
    cases = default_cases()
    for axis, values in [
        ("impl", DTYPES),
        ("layout", LAYOUTS),
        ("size", SIZES),
        ("options", (True, False)),
        ("bidirectional", (True, False)),
    ]:
        assert {getattr(c, axis) for c in cases} >= set(values), axis
    assert {(c.impl, c.dtype) for c in cases} == {(i, d) for i in DTYPES for d in DTYPES[i]}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts_keep_the_values_and_change_the_strides(layout):
    t = torch.randn(2, 5, 7)
    view = arrange(t, layout)
    assert torch.equal(view, t)
    assert view.is_contiguous() == (layout == "contiguous")
    if layout == "time_major":
        assert view.stride(1) == 1


# --- opcheck ---------------------------------------------------------------------------------------------


def opcheck_args(name: str, device: str, dtype: str, layout: str) -> tuple:
    """Arguments of one op call: grouped B/C (3 groups) for the single-direction ops."""
    case = Case("op", name.endswith("bidirectional"), device, dtype, layout, (2, 21, 37, 16))
    forward = make_inputs(case, 11)
    if case.bidirectional:
        return (*forward, *make_inputs(case, 12), True)
    g = torch.Generator().manual_seed(13)
    grouped = [
        arrange(torch.randn(2, 3, 16, 37, generator=g).to(device, getattr(torch, dtype)), layout)
        for _ in "BC"
    ]
    return (*forward._replace(B=grouped[0], C=grouped[1]), True)


OPS = ("selective_scan", "selective_scan_with_state", "selective_scan_bidirectional")


def opcheck_params(variants):
    params = []
    for name, (device, dtype, layout) in itertools.product(OPS, variants):
        marks = [pytest.mark.gpu] if device == "cuda" else []
        if device == "cpu":
            marks.append(pytest.mark.skipif(not op_available("cpu"), reason="muse_infer._C is not built"))
        params.append(
            pytest.param(name, device, dtype, layout, marks=marks, id=f"{name}-{device}-{dtype}-{layout}")
        )
    return params


@pytest.mark.parametrize(
    ("name", "device", "dtype", "layout"),
    opcheck_params([("cpu", "float32", "strided"), ("cuda", "bfloat16", "time_major")]),
)
def test_opcheck(name, device, dtype, layout):
    torch.library.opcheck(
        getattr(torch.ops.muse, name).default,
        opcheck_args(name, device, dtype, layout),
        test_utils=OPCHECK_UTILS,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "device", "dtype", "layout"),
    opcheck_params([("cpu", d, la) for d in ("bfloat16", "float16") for la in ("contiguous", "time_major")]),
)
def test_opcheck_more_dtypes_and_layouts(name, device, dtype, layout):
    torch.library.opcheck(
        getattr(torch.ops.muse, name).default,
        opcheck_args(name, device, dtype, layout),
        test_utils=OPCHECK_UTILS,
    )


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    if not INTERPRETED:
        sys.exit("run the worker with TRITON_INTERPRET=1")
    speed_up_interpreter()
    worker_cases = [
        Case(**{**c, "size": tuple(c["size"])}) for c in json.loads(Path(sys.argv[3]).read_text())
    ]
    Path(sys.argv[2]).write_text(json.dumps({c.id: measure_or_error(c) for c in worker_cases}))
