"""selective_scan_chunked: the same values and gradients as selective_scan_ref, on awkward sizes.

Gradients are compared in float64 (where both implementations are exact up to rounding) and checked
against finite differences with torch.autograd.gradcheck; fp32/bf16 inputs are compared with tolerances
relative to the output's magnitude. Values in every dtype and layout: tests/test_scan_matrix.py.
"""

from __future__ import annotations

import pytest
import torch

from muse_infer.ops.chunked import selective_scan_chunked
from muse_infer.ops.reference import selective_scan_ref

ARG_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_args(batch, channels, length, dstate, groups=0, dtype=torch.float64, seed=0, optional=True):
    """Random scan arguments (leaf tensors requiring grad); groups=0: B, C (batch, N, L)."""
    g = torch.Generator().manual_seed(seed)
    bc_shape = (batch, dstate, length) if groups == 0 else (batch, groups, dstate, length)
    args = {
        "u": torch.randn(batch, channels, length, generator=g),
        "delta": torch.randn(batch, channels, length, generator=g) * 0.5 - 1,
        "A": -(torch.rand(channels, dstate, generator=g) * 4 + 0.1),
        "B": torch.randn(*bc_shape, generator=g),
        "C": torch.randn(*bc_shape, generator=g),
        "D": torch.randn(channels, generator=g) if optional else None,
        "z": torch.randn(batch, channels, length, generator=g) if optional else None,
        "delta_bias": torch.randn(channels, generator=g) * 0.5 if optional else None,
    }
    return {k: None if v is None else v.to(dtype).requires_grad_() for k, v in args.items()}


def run_both(args, chunk_size, softplus=True):
    ref = selective_scan_ref(**args, delta_softplus=softplus, return_last_state=True)
    new = selective_scan_chunked(
        **args, delta_softplus=softplus, return_last_state=True, chunk_size=chunk_size
    )
    return ref, new


def grads_of(outputs, args, weights):
    y, last = outputs
    loss = (y * weights[0]).sum() + (last * weights[1]).sum()
    leaves = [v for v in args.values() if v is not None]
    return torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize(
    "batch, channels, length, dstate, groups, chunk",
    [
        (2, 3, 37, 4, 0, 8),  # length not a multiple of the chunk
        (1, 5, 113, 3, 0, 16),
        (2, 4, 50, 2, 2, 7),  # grouped B/C
        (2, 4, 29, 5, 4, 64),  # one chunk longer than the sequence; groups == channels
        (3, 2, 1, 2, 0, 4),  # a single step
        (1, 3, 203, 16, 1, 1),  # chunk of one step; explicit single group
    ],
)
def test_values_and_gradients_match_reference_float64(batch, channels, length, dstate, groups, chunk):
    args = make_args(batch, channels, length, dstate, groups)
    ref, new = run_both(args, chunk)
    torch.testing.assert_close(new[0], ref[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(new[1], ref[1], rtol=1e-10, atol=1e-10)
    weights = (torch.randn_like(ref[0]), torch.randn_like(ref[1]))
    for name, g_new, g_ref in zip(
        [k for k, v in args.items() if v is not None],
        grads_of(new, args, weights),
        grads_of(ref, args, weights),
        strict=True,
    ):
        torch.testing.assert_close(g_new, g_ref, rtol=1e-9, atol=1e-9, msg=f"gradient of {name}")


def test_without_optional_arguments_and_softplus():
    args = make_args(2, 3, 41, 4, optional=False)
    args["delta"] = (torch.rand(2, 3, 41, dtype=torch.float64) * 0.2).requires_grad_()
    ref, new = run_both(args, chunk_size=10, softplus=False)
    torch.testing.assert_close(new[0], ref[0], rtol=1e-10, atol=1e-10)
    weights = (torch.randn_like(ref[0]), torch.zeros_like(ref[1]))
    for g_new, g_ref in zip(grads_of(new, args, weights), grads_of(ref, args, weights), strict=True):
        torch.testing.assert_close(g_new, g_ref, rtol=1e-9, atol=1e-9)


def test_gradcheck_against_finite_differences():
    args = make_args(1, 2, 11, 3, seed=3)
    names = [k for k, v in args.items() if v is not None]

    def fn(*tensors):
        return selective_scan_chunked(
            **dict(zip(names, tensors, strict=True)),
            delta_softplus=True,
            return_last_state=True,
            chunk_size=4,
        )

    assert torch.autograd.gradcheck(fn, tuple(args[n] for n in names))


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_low_precision_inputs_close_to_reference(dtype, tol):
    args = make_args(2, 6, 130, 16, dtype=dtype, seed=1)
    ref, new = run_both(args, chunk_size=64)
    assert new[0].dtype == dtype
    scale = ref[0].float().abs().max()
    assert (new[0].float() - ref[0].float()).abs().max() <= tol * scale
    weights = (torch.randn_like(ref[0]), torch.randn_like(ref[1]))
    for g_new, g_ref in zip(grads_of(new, args, weights), grads_of(ref, args, weights), strict=True):
        assert (g_new.float() - g_ref.float()).abs().max() <= tol * g_ref.float().abs().max() + 1e-6


def test_bad_chunk_size_is_refused():
    args = make_args(1, 2, 5, 2)
    with pytest.raises(ValueError, match="chunk_size"):
        selective_scan_chunked(**args, chunk_size=0)
