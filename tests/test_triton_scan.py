"""selective_scan_triton and selective_scan_triton_bidirectional against selective_scan_ref, beyond the matrix.

tests/test_scan_matrix.py runs the kernels through the common matrix (dtypes, layouts, awkward sizes,
both directions). Here: what is particular to them: each option alone, N not a power of two, grouped
B/C (also with the other direction plain), parameters in low precision with grouped strided inputs,
launch configs, argument errors, and the MUSE size on a GPU.

Interpreter half (CPU; the default run): every interpreter case runs in ONE subprocess with
TRITON_INTERPRET=1 (tests/triton_interpreter.py says why), and each test below checks one case's
numbers. A pytest process that was itself started with TRITON_INTERPRET=1 runs the cases in-process.

GPU half (marker ``gpu``): the compiled kernel on CUDA at the MUSE size and at awkward sizes; run it
with ``pytest -m gpu tests/test_triton_scan.py`` on a machine with a GPU (never with TRITON_INTERPRET).

Acceptance (flash-attention's rule): max |kernel - float64 reference| <= 2 x max |reference run in
the same low precision - float64 reference| + 1e-5 x max(1, max |y|).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import traceback
import zlib
from pathlib import Path

import pytest
import torch
from triton_interpreter import INTERPRETED, run_worker, speed_up_interpreter

from muse_infer.ops.reference import selective_scan_ref

FLOOR = 1e-5


@dataclasses.dataclass(frozen=True)
class Case:
    """One parity check. layout "strided": every tensor a non-contiguous view, as BiMamba makes them."""

    id: str
    batch: int
    Di: int
    N: int
    L: int
    dtype: str = "float32"  # u, delta, z, B, C
    params_low: bool = False  # A, D, delta_bias in `dtype` too (else float32)
    D: bool = True
    z: bool = True
    bias: bool = True
    softplus: bool = True
    groups_B: int | None = None
    groups_C: int | None = None
    layout: str = "contiguous"
    last_state: bool = True
    config: tuple | None = None  # ScanConfig fields
    bidirectional: bool = False


INTERPRETER_CASES = [
    Case("L7-Di37-N5", 2, 37, 5, 7),
    Case("D-only", 2, 5, 5, 7, z=False, bias=False, softplus=False),
    Case("z-only", 1, 5, 16, 7, D=False, bias=False, softplus=False),
    Case("bias-no-softplus", 1, 5, 5, 33, D=False, z=False, softplus=False),
    Case("softplus-no-bias", 1, 5, 16, 33, bias=False),
    Case("grouped-2", 2, 32, 16, 33, groups_B=2, groups_C=2),
    Case("grouped-B3-plain-C", 1, 9, 5, 7, groups_B=3),
    Case("bf16-params-N5", 1, 5, 5, 7, dtype="bfloat16", params_low=True),
    Case("strided-grouped-bf16", 1, 32, 16, 33, dtype="bfloat16", groups_B=4, groups_C=2, layout="strided"),
    Case("config-bd4-bl8", 1, 37, 16, 33, config=(4, 8)),
    Case("config-bd16-bl32-w2", 1, 37, 16, 33, config=(16, 32, 2)),
    Case("bidir-N5", 2, 37, 5, 33, bidirectional=True),
    Case(
        "bidir-bf16-strided-grouped",
        1,
        10,
        5,
        7,
        dtype="bfloat16",
        groups_B=2,
        layout="strided",
        bidirectional=True,
    ),
]


# --- inputs and references ---------------------------------------------------------------------------


def make_inputs(case: Case, device: str, seed: int) -> dict:
    """Random inputs of `case`: Mamba-like delta/A ranges, some softplus inputs above its threshold 20.

    Each tensor is drawn as a base tensor, cast to its dtype on `device`, then viewed: strided cases
    keep their strides in every dtype.
    """
    g = torch.Generator().manual_seed(seed)
    batch, Di, N, L = case.batch, case.Di, case.N, case.L
    low = getattr(torch, case.dtype)
    param_dtype = low if case.params_low else torch.float32
    strided = case.layout == "strided"

    def draw(shape, dtype, view=None, values=None):
        base = torch.randn(*shape, generator=g) if values is None else values
        base = base.to(device=device, dtype=dtype)
        return view(base) if view is not None else base

    if strided:
        u = draw((batch, Di, 2 * L), low, lambda t: t[..., ::2])  # stride 2 along L
        delta = draw((batch, L, Di), low, lambda t: t.transpose(1, 2))  # channel-last, as dt_proj gives
        z = draw((batch, L, 2 * Di), low, lambda t: t[..., Di:].transpose(1, 2)) if case.z else None
    else:
        u, delta = draw((batch, Di, L), low), draw((batch, Di, L), low)
        z = draw((batch, Di, L), low) if case.z else None
    if case.softplus:
        delta.mul_(0.5)
        delta[:, ::3, L // 2] = 30.0  # softplus(x) = x above 20
    else:
        delta.abs_().mul_(0.3)  # no softplus: keep delta >= 0 so the state does not blow up

    A_values = -torch.exp(torch.empty(N, Di).uniform_(math.log(0.1), math.log(16.0), generator=g))
    A = draw(None, param_dtype, lambda t: t.t() if strided else t.t().contiguous(), A_values)

    def bc(groups):
        if not strided:
            return draw((batch, N, L) if groups is None else (batch, groups, N, L), low)
        # from x_proj's (batch, L, R + 2N) output: N is the fast axis
        if groups is None:
            return draw((batch, L, 3 * N), low, lambda t: t[..., N : 2 * N].permute(0, 2, 1))
        return draw((batch, L, groups, 3 * N), low, lambda t: t[..., N : 2 * N].permute(0, 2, 3, 1))

    B, C = bc(case.groups_B), bc(case.groups_C)
    every_other = (lambda t: t[::2]) if strided else None
    D = draw((2 * Di,) if strided else (Di,), param_dtype, every_other) if case.D else None
    # Mamba's dt bias is softplus^-1 of 1e-3..1e-1 (about -7..-2); without softplus keep delta >= 0.
    low_bias, high_bias = (-6.0, 1.0) if case.softplus else (0.0, 0.5)
    bias_values = torch.empty(2 * Di if strided else Di).uniform_(low_bias, high_bias, generator=g)
    delta_bias = draw(None, param_dtype, every_other, bias_values) if case.bias else None
    return dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias)


def ref_args(inputs: dict, case: Case, dtype=None) -> tuple:
    keys = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
    values = [inputs[k] if (inputs[k] is None or dtype is None) else inputs[k].to(dtype) for k in keys]
    return (*values, case.softplus)


def flip_time(inputs: dict) -> dict:
    return {
        k: (v.flip(-1) if k in ("u", "delta", "B", "C", "z") and v is not None else v)
        for k, v in inputs.items()
    }


def reference(case: Case, fwd: dict, bwd: dict | None, dtype=None):
    """(y, last_state or None) by selective_scan_ref, in float64 (dtype) or as given (dtype None)."""
    if case.bidirectional:
        y_f = selective_scan_ref(*ref_args(fwd, case, dtype))
        y_b = selective_scan_ref(*ref_args(flip_time(bwd), case, dtype)).flip(-1)
        return y_f + y_b, None
    if case.last_state:
        return selective_scan_ref(*ref_args(fwd, case, dtype), return_last_state=True)
    return selective_scan_ref(*ref_args(fwd, case, dtype)), None


def run_kernel(case: Case, fwd: dict, bwd: dict | None):
    from muse_infer.ops.inputs import ScanInputs
    from muse_infer.ops.triton_scan import (
        ScanConfig,
        selective_scan_triton,
        selective_scan_triton_bidirectional,
    )

    config = ScanConfig(*case.config) if case.config else None
    if case.bidirectional:
        out = selective_scan_triton_bidirectional(
            ScanInputs(**fwd), ScanInputs(**bwd), case.softplus, config=config
        )
        return out, None
    out = selective_scan_triton(*ref_args(fwd, case), return_last_state=case.last_state, config=config)
    return out if case.last_state else (out, None)


def _poison_allocator(like: torch.Tensor) -> None:
    """Leave a NaN-filled block of y's size in the CUDA caching allocator: y is allocated next and
    likely gets it, so an output element the kernel forgets to write shows up as NaN."""
    block = torch.full(like.shape, float("nan"), dtype=like.dtype, device=like.device)
    del block


def measure(case: Case, device: str, seed: int = 0) -> dict:
    """Errors of the kernel and of the same-precision reference against the float64 reference."""
    fwd = make_inputs(case, device, seed)
    bwd = make_inputs(case, device, seed + 1) if case.bidirectional else None
    if device == "cuda":
        _poison_allocator(fwd["u"])
    y, state = run_kernel(case, fwd, bwd)
    y64, state64 = reference(case, fwd, bwd, torch.float64)
    y_low, state_low = reference(case, fwd, bwd)
    result = {"dtype": str(y.dtype), "shape": list(y.shape), "finite": bool(torch.isfinite(y).all())}
    pairs = [("y", y, y64, y_low)] + ([("state", state, state64, state_low)] if state is not None else [])
    for name, got, exact, low in pairs:
        result[name] = {
            "err": (got.double() - exact).abs().max().item() if got.numel() else 0.0,
            "ref_err": (low.double() - exact).abs().max().item() if got.numel() else 0.0,
            "scale": exact.abs().max().item() if got.numel() else 0.0,
            "dtype_ok": got.dtype == fwd["u"].dtype,
        }
    return result


def assert_close_enough(result: dict) -> None:
    assert result["finite"], "non-finite output"
    for name in ("y", "state"):
        if name not in result:
            continue
        r = result[name]
        assert r["dtype_ok"], f"{name} has the wrong dtype"
        bound = 2 * r["ref_err"] + FLOOR * max(1.0, r["scale"])
        assert r["err"] <= bound, (
            f"{name}: kernel error {r['err']:.3g} > bound {bound:.3g} "
            f"(reference in the same precision: {r['ref_err']:.3g}, max |{name}| {r['scale']:.3g})"
        )


# --- interpreter half ------------------------------------------------------------------------------------


def run_interpreter_cases() -> dict:
    """All interpreter cases in this (TRITON_INTERPRET=1) process: {case id: result or error}."""
    speed_up_interpreter()
    results = {}
    for case in INTERPRETER_CASES:
        try:
            results[case.id] = measure(case, "cpu")
        except Exception:  # reported by the case's own test
            results[case.id] = {"error": traceback.format_exc()}
    return results


@pytest.fixture(scope="module")
def interpreter_results() -> dict:
    return run_interpreter_cases() if INTERPRETED else run_worker(__file__)


@pytest.mark.parametrize("case", INTERPRETER_CASES, ids=lambda c: c.id)
def test_interpreter_matches_reference(case, interpreter_results):
    result = interpreter_results[case.id]
    if "error" in result:
        pytest.fail(result["error"])
    assert_close_enough(result)


# --- argument checks and small things (no kernel runs) ----------------------------------------------------


def _good():
    return dict(
        u=torch.randn(2, 4, 5),
        delta=torch.randn(2, 4, 5),
        A=-torch.rand(4, 3),
        B=torch.randn(2, 3, 5),
        C=torch.randn(2, 3, 5),
    )


BAD_ARGUMENTS = {
    "u-rank": (dict(u=torch.randn(4, 5)), ValueError, "u must be"),
    "delta-shape": (dict(delta=torch.randn(2, 4, 6)), ValueError, "delta has shape"),
    "A-shape": (dict(A=torch.randn(5, 3)), ValueError, "A must be"),
    "B-shape": (dict(B=torch.randn(2, 3, 6)), ValueError, "B must be"),
    "C-groups": (dict(C=torch.randn(2, 3, 3, 5)), ValueError, "does not divide"),
    "D-shape": (dict(D=torch.randn(5)), ValueError, "D must be"),
    "float64": (dict(u=torch.randn(2, 4, 5, dtype=torch.float64)), TypeError, "float64"),
    "int-z": (dict(z=torch.ones(2, 4, 5, dtype=torch.int32)), TypeError, "z has dtype"),
    "not-tensor": (dict(delta_bias=[0.0] * 4), TypeError, "delta_bias must be a torch.Tensor"),
    "no-states": (
        dict(A=torch.randn(4, 0), B=torch.randn(2, 0, 5), C=torch.randn(2, 0, 5)),
        ValueError,
        "N = 0",
    ),
}


@pytest.mark.parametrize("name", list(BAD_ARGUMENTS))
def test_bad_arguments_raise_clear_errors(name):
    from muse_infer.ops.triton_scan import selective_scan_triton

    change, error, message = BAD_ARGUMENTS[name]
    with pytest.raises(error, match=message):
        selective_scan_triton(**{**_good(), **change})


def test_bad_config_and_mismatched_directions():
    from muse_infer.ops.inputs import ScanInputs
    from muse_infer.ops.triton_scan import ScanConfig, selective_scan_triton_bidirectional

    with pytest.raises(ValueError, match="power of two"):
        selective_scan_triton_bidirectional(
            ScanInputs(**_good()), ScanInputs(**_good()), config=ScanConfig(6, 16)
        )
    with pytest.raises(ValueError, match="both directions or for neither"):
        selective_scan_triton_bidirectional(ScanInputs(**_good(), D=torch.ones(4)), ScanInputs(**_good()))
    other = {**_good(), "u": torch.randn(2, 4, 6), "delta": torch.randn(2, 4, 6)}
    with pytest.raises(ValueError):
        selective_scan_triton_bidirectional(ScanInputs(**_good()), ScanInputs(**other))


@pytest.mark.skipif(INTERPRETED, reason="CPU tensors run when TRITON_INTERPRET=1")
def test_cpu_tensors_without_interpreter_say_what_to_do():
    from muse_infer.ops.triton_scan import selective_scan_triton

    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        selective_scan_triton(**_good())


def test_empty_sequence_launches_nothing():
    from muse_infer.ops.triton_scan import selective_scan_triton

    args = {k: v[..., :0] if k in ("u", "delta", "B", "C") else v for k, v in _good().items()}
    y, state = selective_scan_triton(**args, return_last_state=True)
    assert y.shape == (2, 4, 0) and state.shape == (2, 4, 3) and not state.any()


# --- GPU half --------------------------------------------------------------------------------------------

GPU_CASES = [
    Case(f"{dtype}-b{batch}-Di{Di}-L{L}", batch, Di, 16, L, dtype=dtype)
    for batch, Di, L in [(2, 512, 3060), (16, 512, 3060), (3, 37, 113), (2, 100, 272)]
    for dtype in ("float32", "bfloat16", "float16")
] + [
    Case(
        "strided-grouped-bf16-MUSE",
        2,
        512,
        16,
        3060,
        dtype="bfloat16",
        groups_B=4,
        groups_C=2,
        layout="strided",
    ),
    Case("no-options-fp32-L272", 2, 100, 16, 272, D=False, z=False, bias=False, softplus=False),
    Case("N5-fp32-L113", 2, 37, 5, 113),
    Case("bidir-fp32-MUSE", 2, 512, 16, 3060, bidirectional=True),
    Case("bidir-bf16-MUSE", 2, 512, 16, 3060, dtype="bfloat16", bidirectional=True),
    Case("bidir-fp16-strided-L113", 3, 37, 16, 113, dtype="float16", layout="strided", bidirectional=True),
]


# The launch shapes benchmarks/bench_triton_bidir.py sweeps, at strides that specialise like the MUSE
# shape's (L not a multiple of 16), so the benchmark finds them compiled in Triton's cache.
def _candidate_configs() -> list[tuple]:
    from muse_infer.ops.triton_scan import CANDIDATE_CONFIGS

    return [dataclasses.astuple(c) for c in CANDIDATE_CONFIGS]


GPU_CONFIG_CASES = [
    Case(f"config-d{c[0]}-l{c[1]}-w{c[2]}", 2, 64, 16, 1012, config=c) for c in _candidate_configs()
]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.skipif(INTERPRETED, reason="TRITON_INTERPRET=1: no compiled kernels in this process")
@pytest.mark.parametrize("case", GPU_CASES + GPU_CONFIG_CASES, ids=lambda c: c.id)
def test_gpu_matches_reference(case):
    assert_close_enough(measure(case, "cuda", seed=zlib.crc32(case.id.encode()) % 1000))


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--worker":
    if not INTERPRETED:
        sys.exit("run the worker with TRITON_INTERPRET=1")
    Path(sys.argv[2]).write_text(json.dumps(run_interpreter_cases()))
