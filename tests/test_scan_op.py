"""torch.ops.muse.selective_scan* on CPU beyond the matrix (test_scan_matrix.py), and the scan choice.

Here: each option alone, long sequences and memories, grouped B/C, mixed dtypes, bit-identical results
across layouts, every instruction-set build, extreme values, empty sequences, argument errors, the op
registrations, the refusal of gradients, the choice among implementations (muse_infer/ops/dispatch.py)
and the op without its C++ library.

Acceptance (flash-attention's rule): against a float64 oracle run on the same (rounded) inputs, the op's
error is at most twice the error of selective_scan_ref run on those inputs, plus a small floor.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from muse_infer.errors import ScanChoiceError
from muse_infer.ops import ScanInputs, dispatch, torchscript_scan
from muse_infer.ops import op as scan_op
from muse_infer.ops.inputs import SCAN_FIELDS
from muse_infer.ops.op import SCHEMAS, op_available, selective_scan, selective_scan_bidirectional
from muse_infer.ops.reference import selective_scan_bidirectional_ref, selective_scan_ref

needs_kernel = pytest.mark.skipif(not op_available("cpu"), reason="muse_infer._C is not built")
LOW_PRECISION = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-3}  # floors, x max|y|


def make_inputs(batch, channels, length, dstate, *, groups=0, softplus=True, dtype=torch.float32, seed=0):
    """Random scan arguments; groups=0 gives B, C of shape (batch, N, L), else (batch, groups, N, L)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    bc_shape = (batch, dstate, length) if groups == 0 else (batch, groups, dstate, length)
    # Without softplus delta is used as is: keep it positive so that the state decays as in a real model.
    delta = (
        randn(batch, channels, length) * 0.5 - 1
        if softplus
        else torch.rand(batch, channels, length, generator=g) * 0.2
    )
    args = dict(
        u=randn(batch, channels, length),
        delta=delta,
        A=-(torch.rand(channels, dstate, generator=g) * 4 + 0.1),
        B=randn(*bc_shape),
        C=randn(*bc_shape),
        D=randn(channels),
        z=randn(batch, channels, length),
        delta_bias=randn(channels) * 0.5 if softplus else torch.rand(channels, generator=g) * 0.1,
    )
    return {k: v.to(dtype) for k, v in args.items()}


def scan_loop64(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """An independent float64 oracle: the recurrence written out step by step, per (batch, channel)."""
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    batch, channels, length = u.shape
    B, C = (t.unsqueeze(1) if t.dim() == 3 else t for t in (B, C))  # (batch, G, N, L)
    group_of = torch.arange(channels) // (channels // B.shape[1])
    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None]
    if delta_softplus:
        delta = torch.where(delta > 20, delta, torch.log1p(torch.exp(delta)))
    decay = torch.exp(delta[..., None] * A[:, None, :])  # (batch, Di, L, N), one call: exp is slow per step
    h = torch.zeros(batch, channels, A.shape[1], dtype=torch.float64)
    y = torch.zeros(batch, channels, length, dtype=torch.float64)
    for t in range(length):
        h = decay[:, :, t] * h + (delta[:, :, t] * u[:, :, t])[..., None] * B[:, group_of, :, t]
        y[:, :, t] = (h * C[:, group_of, :, t]).sum(-1)
    if D is not None:
        y = y + D.double()[:, None] * u
    if z is not None:
        z = z.double()
        y = y * z * torch.sigmoid(z)
    return y, h


def assert_close_to_oracle(args, softplus, *, check_state=False, floor=None):
    """Op vs reference, both against the float64 oracle on the same inputs (see module docstring).

    ``floor``: the absolute slack, relative to max |oracle| (default: LOW_PRECISION of the dtype).
    """
    dtype = args["u"].dtype
    got = selective_scan(**args, delta_softplus=softplus, return_last_state=True)
    ref = selective_scan_ref(**args, delta_softplus=softplus, return_last_state=True)
    oracle = scan_loop64(**args, delta_softplus=softplus)
    for name, g, r, o in zip(("y", "last_state"), got, ref, oracle, strict=True):
        if name == "last_state" and not check_state:
            continue
        assert g.dtype == dtype and g.shape == o.shape, name
        err_op = (g.double() - o).abs().max().item() if o.numel() else 0.0
        err_ref = (r.double() - o).abs().max().item() if o.numel() else 0.0
        slack = (floor or LOW_PRECISION[dtype]) * max(1.0, o.abs().max().item() if o.numel() else 0.0)
        assert err_op <= 2 * err_ref + slack, f"{name}: op error {err_op:.3g}, reference error {err_ref:.3g}"


@needs_kernel
@pytest.mark.parametrize("option", ["D", "z", "delta_bias", "softplus"])
def test_each_option_alone(option):
    args = make_inputs(2, 37, 113, 16, softplus=option == "softplus", seed=3)
    for name in ("D", "z", "delta_bias"):
        if name != option:
            args[name] = None
    assert_close_to_oracle(args, softplus=option == "softplus")


@needs_kernel
def test_long_sequence_muse_length():
    assert_close_to_oracle(make_inputs(1, 20, 3060, 16, seed=4), softplus=True, check_state=True)


@needs_kernel
def test_no_bias_over_a_long_memory():
    """Mamba's step sizes (1e-3..1e-1) and A = -(1..16): the state remembers ~100s of steps, so a
    systematic error of 1e-7 per step in exp or softplus grows ~100x. With a floor of 1e-7 instead of
    1e-5 this caught a log1p that lost the digits of small steps (10x the reference's error)."""
    args = make_inputs(1, 32, 3060, 16, seed=20)
    args["A"] = -torch.arange(1.0, 17.0).repeat(32, 1)
    args["delta"] = args["delta"] * 0.1 - 3  # softplus of ~-3 + bias: steps of 1e-3..5e-2
    assert_close_to_oracle(args, softplus=True, check_state=True, floor=1e-7)


@needs_kernel
@pytest.mark.parametrize(("channels", "groups"), [(21, 3), (48, 2), (37, 1)])
def test_grouped_B_C(channels, groups):
    assert_close_to_oracle(
        make_inputs(2, channels, 113, 16, groups=groups, seed=5), softplus=True, check_state=True
    )


@needs_kernel
def test_mixed_dtypes_compute_in_float32_and_return_u_dtype():
    args = make_inputs(1, 37, 113, 16, seed=7)
    args["u"] = args["u"].bfloat16()
    y = selective_scan(**args, delta_softplus=True)
    assert y.dtype == torch.bfloat16
    expected = selective_scan_ref(**args, delta_softplus=True)
    torch.testing.assert_close(y, expected, atol=2e-2, rtol=2e-2)


def _non_contiguous(args):
    """The layouts a model produces, and worse: every tensor a view with foreign strides."""
    batch, channels, length = args["u"].shape
    out = dict(args)
    # u, z: halves of one (batch, 2 Di, L) projection (batch stride 2 Di L).
    out["u"], out["z"] = torch.cat([args["u"], args["z"]], dim=1).chunk(2, dim=1)
    # delta: (batch, L, Di) memory seen as (batch, Di, L): channel stride 1, time stride Di.
    out["delta"] = args["delta"].transpose(1, 2).contiguous().transpose(1, 2)
    # B, C: every other time step of a twice longer tensor; A transposed; D, delta_bias strided.
    out["B"] = torch.stack([args["B"], args["B"]], dim=-1).flatten(-2)[..., ::2]
    out["C"] = args["C"].transpose(-1, -2).contiguous().transpose(-1, -2)
    out["A"] = args["A"].t().contiguous().t()
    out["D"] = torch.stack([args["D"], args["D"]], dim=-1)[:, 0]
    out["delta_bias"] = torch.stack([args["delta_bias"], args["delta_bias"]], dim=-1)[:, 1]
    assert out["delta"].stride(1) == 1 and out["B"].stride(-1) == 2 and out["C"].stride(-1) != 1
    return out


@needs_kernel
def test_strides_do_not_change_a_single_bit():
    """Any layout gives the very numbers of the contiguous one (the matrix checks accuracy per layout)."""
    args = make_inputs(1, 40, 272, 17, seed=8)
    strided = _non_contiguous(args)
    assert_close_to_oracle(strided, softplus=True, check_state=True)
    torch.testing.assert_close(
        selective_scan(**strided, delta_softplus=True),
        selective_scan(**args, delta_softplus=True),
        rtol=0,
        atol=0,
    )


@needs_kernel
@pytest.mark.parametrize("isa", ["avx512", "avx2", "baseline"])
def test_every_instruction_set_build(isa, monkeypatch):
    monkeypatch.setenv("MUSE_SCAN_CPU_ISA", isa)
    if scan_op.cpu_kernel_isa() != isa:
        pytest.skip(f"this CPU cannot run the {isa} build")
    assert_close_to_oracle(make_inputs(2, 37, 113, 16, seed=9), softplus=True, check_state=True)
    assert_close_to_oracle(_non_contiguous(make_inputs(1, 21, 50, 17, groups=3, seed=10)), softplus=True)


@needs_kernel
@pytest.mark.parametrize("isa", ["avx512", "avx2", "baseline"])
def test_extreme_values_stay_finite(isa, monkeypatch):
    monkeypatch.setenv("MUSE_SCAN_CPU_ISA", isa)
    args = make_inputs(1, 37, 50, 16, seed=19)
    args["z"] = args["z"] * 200  # silu's exp overflows fp32 below z = -88
    args["delta"] = args["delta"] * 100  # softplus of +-100s: the identity, or 0
    y = selective_scan(**args, delta_softplus=True)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, selective_scan_ref(**args, delta_softplus=True), rtol=1e-4, atol=1e-4)


@needs_kernel
def test_empty_sequence():
    args = make_inputs(2, 5, 0, 16)
    y, state = selective_scan(**args, delta_softplus=True, return_last_state=True)
    assert y.shape == (2, 5, 0)
    assert state.shape == (2, 5, 16) and not state.any()


@needs_kernel
def test_shapes_are_checked_with_the_argument_name():
    args = make_inputs(1, 5, 7, 16)
    with pytest.raises(RuntimeError, match="D must have shape"):
        selective_scan(**{**args, "D": torch.zeros(6)})
    with pytest.raises(RuntimeError, match="C must have shape"):
        selective_scan(**{**args, "C": args["C"][:, :8]})
    with pytest.raises(RuntimeError, match="groups, which does not divide"):
        selective_scan(**{**args, "B": torch.zeros(1, 2, 16, 7), "C": torch.zeros(1, 2, 16, 7)})
    with pytest.raises(RuntimeError, match="u has dtype Double"):
        selective_scan(**{**args, "u": args["u"].double()})


@needs_kernel
def test_cpu_kernel_is_registered_from_the_cpp_file():
    dump = torch._C._dispatch_dump("muse::selective_scan")
    cpu_lines = [line for line in dump.splitlines() if line.startswith("CPU:")]
    assert len(cpu_lines) == 1 and "csrc/selective_scan.cpp" in cpu_lines[0], dump
    assert "Meta:" in dump and "CUDA:" in dump and "Autograd" in dump


@needs_kernel
def test_cpp_and_python_schemas_agree():
    for name, schema in SCHEMAS.items():
        assert str(getattr(torch.ops.muse, name).default._schema) == f"muse::{name}{schema}"


# Bidirectional ----------------------------------------------------------------------------------------


def _flip_time(args):
    return {
        k: v.flip(-1) if k in ("u", "delta", "z", "B", "C") and v is not None else v for k, v in args.items()
    }


def _direction(args):
    return tuple(args[k] for k in SCAN_FIELDS)


def assert_bidirectional_close(forward, backward, softplus=True):
    """Same rule as assert_close_to_oracle, for scan(forward) + flip(scan(flip(backward)))."""
    got = selective_scan_bidirectional(_direction(forward), _direction(backward), softplus)
    ref = selective_scan_bidirectional_ref(_direction(forward), _direction(backward), softplus)
    oracle = scan_loop64(**forward, delta_softplus=softplus)[0] + scan_loop64(
        **_flip_time(backward), delta_softplus=softplus
    )[0].flip(-1)
    assert got.dtype == forward["u"].dtype and got.shape == oracle.shape
    err_op, err_ref = ((t.double() - oracle).abs().max().item() for t in (got, ref))
    floor = LOW_PRECISION[got.dtype] * max(1.0, oracle.abs().max().item())
    assert err_op <= 2 * err_ref + floor, f"op error {err_op:.3g}, reference error {err_ref:.3g}"


@needs_kernel
def test_bidirectional_with_grouped_B_C():
    forward = make_inputs(1, 21, 50, 17, groups=3, seed=12)
    backward = make_inputs(1, 21, 50, 17, groups=7, seed=13)
    assert_bidirectional_close(forward, backward)


@needs_kernel
@pytest.mark.parametrize("isa", ["avx512", "avx2", "baseline"])
def test_bidirectional_every_build_and_layout(isa, monkeypatch):
    monkeypatch.setenv("MUSE_SCAN_CPU_ISA", isa)
    if scan_op.cpu_kernel_isa() != isa:
        pytest.skip(f"this CPU cannot run the {isa} build")
    forward = _non_contiguous(make_inputs(1, 64, 3060 // 20, 16, seed=14))
    backward = make_inputs(1, 64, 3060 // 20, 16, seed=15)
    assert_bidirectional_close(forward, _non_contiguous(backward))
    plain = {k: v for k, v in make_inputs(1, 40, 37, 17, softplus=False, seed=16).items()}
    for args in (plain, backward):
        args.update(D=None, z=None, delta_bias=None)
    assert_bidirectional_close(plain, _flip_time(plain), softplus=False)


@needs_kernel
def test_bidirectional_checks_its_arguments():
    forward, backward = make_inputs(1, 5, 7, 16), make_inputs(1, 5, 7, 16)
    with pytest.raises(ValueError, match="z for both directions or for neither"):
        selective_scan_bidirectional(_direction(forward), _direction({**backward, "z": None}))
    with pytest.raises(RuntimeError, match="z for both directions or for neither"):
        torch.ops.muse.selective_scan_bidirectional(
            *_direction(forward), *_direction({**backward, "z": None})
        )
    with pytest.raises(RuntimeError, match="directions must agree"):
        selective_scan_bidirectional(_direction(forward), _direction(make_inputs(1, 5, 8, 16)))
    with pytest.raises(RuntimeError, match="no backward"):
        selective_scan_bidirectional(
            _direction({**forward, "u": forward["u"].requires_grad_(True)}), _direction(backward)
        )


# Threads: the kernel shares (batch, block of channels) items among the calling thread and torch's
# OpenMP team or helper threads of its own (csrc/parallel_items.h); each output is computed by one item
# with the same arithmetic whichever thread takes it, so the result must not depend on the thread
# count or on the way, to the bit.


def _on_threads(threads, fn):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


@needs_kernel
@pytest.mark.parametrize("way", ["openmp", "helpers", "auto"])
@pytest.mark.parametrize("groups", [0, 7], ids=["plain", "grouped"])
def test_same_bits_on_any_number_of_threads(groups, way, monkeypatch):
    monkeypatch.setenv("MUSE_SCAN_CPU_THREADS", way)
    # 3 x 13 blocks of 16 channels (the last one of 11) x 500 steps: enough work for 5 threads.
    args = _non_contiguous(make_inputs(3, 203, 500, 16, groups=groups, seed=21))
    backward = make_inputs(3, 203, 500, 16, groups=groups, seed=22)

    def run():
        y, state = selective_scan(**args, delta_softplus=True, return_last_state=True)
        both = selective_scan_bidirectional(_direction(args), _direction(backward), True)
        return y, state, both

    one = _on_threads(1, run)
    from muse_infer import _C

    counter = "helper_calls" if way == "helpers" else "openmp_calls"
    before = _C.threading_stats()[counter]
    for threads in (2, 4):
        for _ in range(5):  # threads join when they get a core: repeat to vary who takes which item
            for got, want in zip(_on_threads(threads, run), one, strict=True):
                assert torch.equal(got, want), f"{threads} threads"
    if way != "auto":  # 2 x 5 calls of each op, all on several threads, all the forced way
        assert _C.threading_stats()[counter] - before == 20


@needs_kernel
def test_helper_threads_after_fork(monkeypatch):
    """A child of fork() has none of the parent's helper threads (nor their locks): the op still works.
    (Not the OpenMP team: libgomp's threads do not survive fork, torch's own ops hang there too.)"""
    monkeypatch.setenv("MUSE_SCAN_CPU_THREADS", "helpers")
    args = make_inputs(2, 64, 500, 16, seed=23)
    want = _on_threads(2, lambda: selective_scan(**args, delta_softplus=True))  # the parent's helpers
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 if the result is the same
        y = _on_threads(2, lambda: selective_scan(**args, delta_softplus=True))
        # One thread for torch.equal: libgomp's own threads do not survive fork (torch's ops hang).
        os._exit(0 if _on_threads(1, lambda: torch.equal(y, want)) else 1)
    deadline = time.monotonic() + 60
    while (waited := os.waitpid(pid, os.WNOHANG)) == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    if waited == (0, 0):
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung")
    assert os.waitstatus_to_exitcode(waited[1]) == 0


def test_gradients_are_refused_before_the_kernel_runs():
    args = make_inputs(1, 5, 7, 16)
    args["u"].requires_grad_(True)
    with pytest.raises(RuntimeError, match="no backward.*selective_scan_ref"):
        selective_scan(**args)
    with pytest.raises(RuntimeError, match="no backward"):
        torch.ops.muse.selective_scan(*args.values())  # the registered autograd kernel refuses too
    with pytest.raises(RuntimeError, match="no backward"):
        torch.ops.muse.selective_scan_with_state(*args.values())
    with torch.no_grad():
        assert selective_scan(**args).shape == (1, 5, 7)


# The choice (muse_infer/ops/dispatch.py) ---------------------------------------------------------------


@pytest.fixture
def calls(monkeypatch):
    """Records which one-direction implementation ran, and whether the fused bidirectional op did."""
    seen = []

    def spy(name, real):
        return lambda *args, **kwargs: seen.append(name) or real(*args, **kwargs)

    monkeypatch.setattr(dispatch, "selective_scan_ref", spy("ref", selective_scan_ref))
    monkeypatch.setattr(dispatch, "selective_scan_chunked", spy("chunked", dispatch.selective_scan_chunked))
    monkeypatch.setattr(scan_op, "selective_scan", spy("op", scan_op.selective_scan))
    monkeypatch.setattr(scan_op, "selective_scan_bidirectional", spy("fused", selective_scan_bidirectional))
    monkeypatch.setattr(
        torchscript_scan, "selective_scan_scripted", spy("script", torchscript_scan.selective_scan_scripted)
    )
    return seen


def _scan(args, impl):
    return dispatch.scan(ScanInputs(**args), delta_softplus=True, impl=impl)


@pytest.mark.parametrize(
    ("impl", "expected"),
    [
        ("ref", "ref"),
        ("op", "op"),
        ("chunked", "chunked"),
        ("script", "script"),
        ("auto", "op"),
        ("AUTO", "op"),
    ],
)
def test_each_choice_runs_its_implementation(impl, expected, calls):
    if impl.lower() == "auto" and not op_available("cpu"):
        expected = "ref"
    y = _scan(make_inputs(1, 5, 7, 16), impl)
    assert calls == [expected]
    torch.testing.assert_close(y, selective_scan_ref(**make_inputs(1, 5, 7, 16), delta_softplus=True))


def test_no_choice_means_the_process_default(calls, monkeypatch):
    monkeypatch.setattr(dispatch, "_ENVIRONMENT_CHOICE", None)  # as when MUSE_SCAN is not set
    assert dispatch.default_scan() == "auto"
    _scan(make_inputs(1, 5, 7, 16), None)
    assert calls == ["op" if op_available("cpu") else "ref"]


def test_auto_uses_the_chunked_scan_when_grads_are_needed(calls):
    args = make_inputs(1, 5, 7, 16)
    args["delta"].requires_grad_(True)
    _scan(args, "auto").sum().backward()
    assert calls == ["chunked"]
    # the gradient is the reference's
    expected_delta = args["delta"].detach().clone().requires_grad_(True)
    selective_scan_ref(**(args | {"delta": expected_delta}), delta_softplus=True).sum().backward()
    torch.testing.assert_close(args["delta"].grad, expected_delta.grad, rtol=1e-4, atol=1e-5)


def test_auto_keeps_float64_on_the_reference(calls):
    assert _scan(make_inputs(1, 5, 7, 16, dtype=torch.float64), "auto").dtype == torch.float64
    assert calls == ["ref"]


def test_unknown_choice_is_a_clear_error():
    with pytest.raises(ScanChoiceError, match="scan='fast' is not a scan choice; use one of auto, op, ref"):
        _scan(make_inputs(1, 5, 7, 16), "fast")


def test_the_choice_is_logged_once(monkeypatch, caplog):
    monkeypatch.setattr(dispatch, "_announced", set())
    with caplog.at_level(logging.DEBUG, logger=dispatch.__name__):
        for _ in range(3):
            _scan(make_inputs(1, 5, 7, 16), "ref")
    assert [r.getMessage() for r in caplog.records] == ["selective scan on cpu uses selective_scan_ref"]


@pytest.mark.parametrize("impl", ["auto", "op", "ref", "chunked", "script"])
def test_bidirectional_fuses_only_with_the_op(impl, calls):
    forward, backward = (
        ScanInputs(**make_inputs(1, 5, 7, 16, seed=1)),
        ScanInputs(**make_inputs(1, 5, 7, 16, seed=2)),
    )
    y = dispatch.scan_bidirectional(forward, backward, True, impl=impl)
    fused = impl == "op" or (impl == "auto" and op_available("cpu"))
    one = {"auto": "ref", "op": "op"}.get(impl, impl)
    assert calls == (["fused"] if fused else [one, one])
    torch.testing.assert_close(y, selective_scan_bidirectional_ref(forward, backward, True))


def test_bidirectional_with_grads_composes_chunked_scans(calls):
    forward, backward = (
        ScanInputs(**make_inputs(1, 5, 7, 16, seed=1)),
        ScanInputs(**make_inputs(1, 5, 7, 16, seed=2)),
    )
    forward.delta.requires_grad_(True)
    dispatch.selective_scan_bidirectional_fn(forward, backward, True).sum().backward()
    assert calls == ["chunked", "chunked"] and forward.delta.grad is not None


def test_muse_scan_is_read_once_at_import():
    """MUSE_SCAN sets the default of every block built after the import; changing it later does nothing."""
    code = """
import os
import muse_infer.ops as ops
from muse_infer.model.bimamba import BiMamba
os.environ["MUSE_SCAN"] = "op"
print(ops.default_scan(), BiMamba(8).scan_impl)
"""
    env = {**os.environ, "MUSE_SCAN": " Ref"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ref", "ref"]


def test_a_bad_muse_scan_is_a_clear_error_when_a_model_is_built(monkeypatch):
    from muse_infer.model.bimamba import BiMamba

    monkeypatch.setattr(dispatch, "_ENVIRONMENT_CHOICE", "fast")  # as if MUSE_SCAN=fast at import
    with pytest.raises(ScanChoiceError, match="MUSE_SCAN='fast' is not a scan choice; use one of auto, op"):
        BiMamba(8)


def test_without_the_cpp_library_the_op_still_runs_on_the_reference():
    code = """
import sys, torch
sys.modules["muse_infer._C"] = None  # as if the extension had not been built
from muse_infer.ops import op
from muse_infer.ops.dispatch import selective_scan_fn
from muse_infer.ops.reference import selective_scan_bidirectional_ref, selective_scan_ref
assert not op.op_available("cpu") and op.cpu_kernel_isa() is None
args = [torch.randn(1, 4, 9), torch.rand(1, 4, 9), -torch.rand(4, 3), torch.randn(1, 3, 9), torch.randn(1, 3, 9)]
torch.testing.assert_close(op.selective_scan(*args), selective_scan_ref(*args), rtol=0, atol=0)
torch.testing.assert_close(selective_scan_fn(*args), selective_scan_ref(*args), rtol=0, atol=0)
torch.testing.assert_close(op.selective_scan_bidirectional(args, args), selective_scan_bidirectional_ref(args, args))
torch.library.opcheck(torch.ops.muse.selective_scan.default, args, test_utils=("test_schema", "test_faketensor"))
from muse_infer.ops.conv import conv_op_applies, depthwise_conv_time_major, depthwise_conv_time_major_ref
x, w, b = torch.randn(2, 9, 4), torch.randn(4, 3), torch.randn(4)
assert not conv_op_applies(x, w, b)
expected = depthwise_conv_time_major_ref(x, w, b, True, True)
torch.testing.assert_close(depthwise_conv_time_major(x, w, b, True, True), expected, rtol=0, atol=0)
torch.testing.assert_close(torch.ops.muse.depthwise_conv_time_major(x, w, b, True, True), expected, rtol=0, atol=0)
print(torch._C._dispatch_dump("muse::selective_scan"))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    cpu_line = next(line for line in result.stdout.splitlines() if line.startswith("CPU:"))
    assert "csrc" not in cpu_line


def test_softplus_oracle_matches_torch():
    x = torch.linspace(-30, 30, 101, dtype=torch.float64)
    torch.testing.assert_close(torch.where(x > 20, x, torch.log1p(torch.exp(x))), F.softplus(x))
