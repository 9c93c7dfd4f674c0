"""selective_scan_ref against an independent float64 loop written here, on awkward sizes."""

import itertools
import math

import pytest
import torch

from muse_infer.ops import selective_scan_ref


def loop_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, softplus=False):
    """Element by element in float64: no broadcasting tricks shared with the code under test."""
    batch, channels, length = u.shape
    state_size = A.shape[1]
    grouped = B.dim() == 4
    per_group = channels // B.shape[1] if grouped else channels
    y = torch.zeros(batch, channels, length, dtype=torch.float64)
    last = torch.zeros(batch, channels, state_size, dtype=torch.float64)
    for b, d in itertools.product(range(batch), range(channels)):
        g = d // per_group
        h = [0.0] * state_size
        for t in range(length):
            dt = float(delta[b, d, t]) + (float(delta_bias[d]) if delta_bias is not None else 0.0)
            if softplus:
                dt = math.log1p(math.exp(dt)) if dt <= 20 else dt
            out = 0.0
            for n in range(state_size):
                b_val = float(B[b, g, n, t] if grouped else B[b, n, t])
                c_val = float(C[b, g, n, t] if grouped else C[b, n, t])
                h[n] = math.exp(dt * float(A[d, n])) * h[n] + dt * b_val * float(u[b, d, t])
                out += c_val * h[n]
            if D is not None:
                out += float(D[d]) * float(u[b, d, t])
            if z is not None:
                zt = float(z[b, d, t])
                out *= zt / (1 + math.exp(-zt))
            y[b, d, t] = out
        last[b, d] = torch.tensor(h, dtype=torch.float64)
    return y, last


def random_inputs(batch, channels, state, length, groups=None, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    bc_shape = (batch, groups, state, length) if groups else (batch, state, length)
    return dict(
        u=torch.randn(batch, channels, length, generator=g).to(dtype),
        delta=(0.5 * torch.randn(batch, channels, length, generator=g)).to(dtype),
        A=-torch.rand(channels, state, generator=g) * 2 - 0.1,
        B=torch.randn(*bc_shape, generator=g).to(dtype),
        C=torch.randn(*bc_shape, generator=g).to(dtype),
        D=torch.randn(channels, generator=g),
        z=torch.randn(batch, channels, length, generator=g).to(dtype),
        delta_bias=0.3 * torch.randn(channels, generator=g),
    )


@pytest.mark.parametrize("length", [1, 7, 113, 2**5 + 16])
@pytest.mark.parametrize("channels,state", [(3, 16), (5, 7)])
def test_matches_loop_fp32(length, channels, state):
    x = random_inputs(2, channels, state, length)
    y, last = selective_scan_ref(**x, delta_softplus=True, return_last_state=True)
    expected, expected_last = loop_scan(**x, softplus=True)
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last.double(), expected_last, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("use_D,use_z,use_bias,softplus", list(itertools.product([False, True], repeat=4)))
def test_optional_arguments(use_D, use_z, use_bias, softplus):
    x = random_inputs(1, 6, 5, 9, seed=1)
    x["D"] = x["D"] if use_D else None
    x["z"] = x["z"] if use_z else None
    x["delta_bias"] = x["delta_bias"] if use_bias else None
    if not softplus:
        x["delta"] = x["delta"].abs()  # a step size must be positive without softplus
    y = selective_scan_ref(**x, delta_softplus=softplus)
    expected, _ = loop_scan(**x, softplus=softplus)
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-5)


def test_grouped_B_C():
    x = random_inputs(2, 6, 4, 11, groups=3, seed=2)
    y = selective_scan_ref(**x, delta_softplus=True)
    expected, _ = loop_scan(**x, softplus=True)
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs(dtype):
    x = random_inputs(2, 5, 16, 33, dtype=dtype, seed=3)
    y = selective_scan_ref(**x, delta_softplus=True)
    assert y.dtype == dtype
    expected, _ = loop_scan(**x, softplus=True)  # the same rounded inputs, float64 math
    # fp32 math on low-precision inputs: only the output rounding differs from float64.
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(y.double(), expected, rtol=2 * eps, atol=2 * eps * expected.abs().max().item())


def test_non_contiguous_inputs():
    x = random_inputs(2, 5, 4, 13, seed=4)
    flipped = {
        k: v.transpose(-1, -2).contiguous().transpose(-1, -2) if v.dim() == 3 else v for k, v in x.items()
    }
    assert not flipped["u"].is_contiguous()
    sliced_u = torch.randn(2, 10, 13)[:, ::2]
    x_sliced = dict(x, u=sliced_u)
    torch.testing.assert_close(selective_scan_ref(**flipped), selective_scan_ref(**x))
    expected, _ = loop_scan(**x_sliced)
    torch.testing.assert_close(selective_scan_ref(**x_sliced).double(), expected, rtol=1e-5, atol=1e-5)


def test_empty_length_and_single_channel():
    x = random_inputs(1, 1, 1, 1, seed=5)
    expected, _ = loop_scan(**x, softplus=True)
    torch.testing.assert_close(selective_scan_ref(**x, delta_softplus=True).double(), expected)
    empty = random_inputs(1, 3, 4, 0)
    y, last = selective_scan_ref(**empty, return_last_state=True)
    assert y.shape == (1, 3, 0) and torch.equal(last, torch.zeros(1, 3, 4))


def test_gradcheck_float64():
    x = random_inputs(1, 3, 4, 6, seed=6)
    x = {k: v.double().requires_grad_() for k, v in x.items()}

    def scan(u, delta, A, B, C, D, z, delta_bias):
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True)

    assert torch.autograd.gradcheck(scan, tuple(x.values()))
