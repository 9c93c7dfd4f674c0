"""The pyramid's 3x3 convolutions by Winograd's F(2x2, 3x3) (muse_infer/ops/winograd.py) against their
twins: the op (``muse::conv3x3_winograd``, C++ transforms around torch.bmm) against the torch-ops
reference ``conv3x3_winograd_ref`` and both against the module's convolution, measured from the float64
convolution of the same values; awkward sizes (odd, one pixel, channels not a multiple of a vector),
fp32 and bf16, token layouts (contiguous, after the class token, channels not contiguous), every
instruction-set build; opcheck and the schema; where the model takes it; the kept transformed weight.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from muse_infer.model.precision import cast_for_inference
from muse_infer.model.pyramid import MultiScaleGenerator
from muse_infer.ops import op as ops_op
from muse_infer.ops.op import op_available
from muse_infer.ops.winograd import conv3x3_winograd_ref, winograd_applies, winograd_dtypes, winograd_weight

needs_kernel = pytest.mark.skipif(not op_available("cpu"), reason="muse_infer._C is not built")
# Against the float64 truth, relative to the module's own error (see WINOGRAD_ERROR_FACTOR in
# test_head_fast_paths.py): bf16 rounds U, V and M (measured up to 2.3x); fp32 was below the module.
ERROR_FACTOR = {torch.float32: 2, torch.bfloat16: 3}
FLOOR = {torch.float32: 1e-6, torch.bfloat16: 1e-6}
SIZES = [
    (2, 7, 7, 24, 24),
    (3, 5, 6, 17, 33),
    (1, 1, 1, 8, 5),
    (2, 14, 14, 40, 24),
    (1, 2, 9, 3, 70),
    (4, 3, 3, 16, 16),
]


def tokens(n, height, width, channels, dtype, layout, seed=0):
    """(N, H, W, C) tokens: contiguous, the patch part of (N, 1 + H*W, C) tokens, or channel-major memory."""
    g = torch.Generator().manual_seed(seed)
    if layout == "after_class_token":
        return (
            torch.randn(n, 1 + height * width, channels, generator=g)
            .to(dtype)[:, 1:]
            .unflatten(1, (height, width))
        )
    x = torch.randn(n, height, width, channels, generator=g).to(dtype)
    return x.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1) if layout == "channel_major" else x


def conv_case(n, height, width, ci, co, dtype, layout, seed=0):
    g = torch.Generator().manual_seed(seed + 1)
    weight = (torch.randn(co, ci, 3, 3, generator=g) / (3 * ci**0.5)).to(dtype)
    bias = torch.randn(co, generator=g).to(dtype)
    return tokens(n, height, width, ci, dtype, layout, seed), weight, bias


def module_conv(x, weight, bias):
    """nn.Conv2d's computation on the tokens' channels-last view, as (N, H, W, Co)."""
    return F.conv2d(x.permute(0, 3, 1, 2), weight, bias, padding=1).permute(0, 2, 3, 1)


def assert_within_the_module_error(ours, x, weight, bias, dtype):
    truth = module_conv(x.double(), weight.double(), bias.double())
    module_error = (module_conv(x, weight, bias).double() - truth).abs().max().item()
    ours_error = (ours.double() - truth).abs().max().item()
    floor = FLOOR[dtype] * max(1.0, truth.abs().max().item())
    assert ours_error <= ERROR_FACTOR[dtype] * module_error + floor, (ours_error, module_error)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("size", SIZES)
def test_reference_is_the_convolution(dtype, size):
    x, weight, bias = conv_case(*size, dtype, "contiguous", seed=1)
    with torch.no_grad():
        ours = conv3x3_winograd_ref(x, winograd_weight(weight), bias)
    assert ours.shape == (*size[:3], size[4]) and ours.dtype == dtype and ours.is_contiguous()
    assert_within_the_module_error(ours, x, weight, bias, dtype)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "after_class_token", "channel_major"])
@pytest.mark.parametrize("size", SIZES)
def test_op_matches_its_reference_and_the_convolution(dtype, layout, size):
    """bf16: the op's rounding points are the reference's, so the bits are equal; fp32 differs only in
    the order of the transforms' additions."""
    x, weight, bias = conv_case(*size, dtype, layout, seed=2)
    U = winograd_weight(weight)
    with torch.no_grad():
        ours = torch.ops.muse.conv3x3_winograd(x, U, bias)
        reference = conv3x3_winograd_ref(x, U, bias)
    assert ours.shape == reference.shape and ours.dtype == dtype and ours.is_contiguous()
    tolerance = {"rtol": 0, "atol": 0} if dtype == torch.bfloat16 else {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(ours, reference, **tolerance)
    assert_within_the_module_error(ours, x, weight, bias, dtype)


@needs_kernel
@pytest.mark.parametrize("isa", ["avx512", "avx2", "baseline"])
def test_op_every_instruction_set_build(isa, monkeypatch):
    monkeypatch.setenv("MUSE_SCAN_CPU_ISA", isa)
    if ops_op.cpu_kernel_isa() != isa:
        pytest.skip(f"this CPU cannot run the {isa} build")
    for dtype, layout, size in [
        (torch.bfloat16, "after_class_token", (2, 7, 7, 37, 21)),
        (torch.float32, "contiguous", (1, 6, 5, 19, 40)),
    ]:
        x, weight, bias = conv_case(*size, dtype, layout, seed=3)
        U = winograd_weight(weight)
        with torch.no_grad():
            ours = torch.ops.muse.conv3x3_winograd(x, U, bias)
            reference = conv3x3_winograd_ref(x, U, bias)
        torch.testing.assert_close(ours.float(), reference.float(), rtol=1e-5, atol=1e-5)


@needs_kernel
def test_op_without_bias_and_with_nan():
    x, weight, _ = conv_case(1, 5, 5, 8, 8, torch.bfloat16, "contiguous", seed=4)
    U = winograd_weight(weight)
    with torch.no_grad():
        torch.testing.assert_close(
            torch.ops.muse.conv3x3_winograd(x, U, None), conv3x3_winograd_ref(x, U, None), rtol=0, atol=0
        )
        x[0, 2, 2, 3] = float("nan")
        y = torch.ops.muse.conv3x3_winograd(x, U, None)
    # pixel (2, 2) lies in the tiles of outputs rows/columns 0..3 only: farther outputs stay finite
    assert y[0, 1:4, 1:4].isnan().any() and not y[0, 4:].isnan().any() and not y[0, :, 4:].isnan().any()


@needs_kernel
def test_op_refuses_bad_arguments_and_gradients():
    x, weight, bias = conv_case(1, 4, 4, 8, 6, torch.float32, "contiguous", seed=5)
    U = winograd_weight(weight)
    with pytest.raises(RuntimeError, match="U must be the transformed weight"):
        torch.ops.muse.conv3x3_winograd(x, U[:, :7], bias)
    with pytest.raises(RuntimeError, match="one dtype"):
        torch.ops.muse.conv3x3_winograd(x, U.bfloat16(), bias)
    with pytest.raises(RuntimeError, match="bias must have shape"):
        torch.ops.muse.conv3x3_winograd(x, U, bias[:5])
    with pytest.raises(RuntimeError, match="no backward"):
        torch.ops.muse.conv3x3_winograd(x.requires_grad_(), U, bias)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opcheck(dtype):
    x, weight, bias = conv_case(2, 5, 7, 12, 10, dtype, "after_class_token", seed=6)
    for b in (bias, None):
        torch.library.opcheck(
            torch.ops.muse.conv3x3_winograd.default,
            (x, winograd_weight(weight), b),
            test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"),
        )


def test_schema_is_the_cpp_one():
    assert (
        str(torch.ops.muse.conv3x3_winograd.default._schema)
        == f"muse::conv3x3_winograd{ops_op.WINOGRAD_SCHEMA}"
    )


@needs_kernel
def test_taken_only_where_it_applies():
    """bf16 eager inference on the CPU with a 3x3/stride 1/padding 1 conv: yes; fp32 where this CPU's
    ``winograd_dtypes`` has it; gradients, a tracer, inference-tensor weights, other convolutions and
    mixed dtypes: no."""
    conv = torch.nn.Conv2d(8, 8, 3, padding=1).bfloat16()
    conv32 = torch.nn.Conv2d(8, 8, 3, padding=1)
    x = tokens(1, 5, 5, 8, torch.bfloat16, "contiguous")
    with torch.no_grad():
        assert winograd_applies(conv, x)
        assert winograd_applies(conv32, x.float()) == (torch.float32 in winograd_dtypes())
        assert not winograd_applies(conv32, x) and not winograd_applies(conv, x.float())
        seen = []
        torch.jit.trace(
            lambda t: t + len(seen.append(winograd_applies(conv, t)) or ()), (x,), check_trace=False
        )
        assert seen == [False]
        for other in (
            torch.nn.Conv2d(8, 8, 3, padding=1, stride=2),
            torch.nn.Conv2d(8, 8, 3, padding=2, dilation=2),
            torch.nn.Conv2d(8, 8, 3, padding=1, groups=2),
            torch.nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"),
            torch.nn.Conv2d(8, 8, 1),
        ):
            assert not winograd_applies(other.bfloat16(), x)
    assert not winograd_applies(conv, x)  # grad mode on, the weight requires grad
    with torch.inference_mode():
        frozen = torch.nn.Conv2d(8, 8, 3, padding=1, dtype=torch.bfloat16)
        assert frozen.weight.is_inference() and not winograd_applies(frozen, x)


CPUINFO = "processor\t: 0\nvendor_id\t: {vendor}\ncpu family\t: 6\nflags\t\t: fpu sse2 avx2 fma {extra}\n\n"


@pytest.mark.parametrize(
    ("vendor", "extra", "float32"),
    [
        ("GenuineIntel", "avx512f avx512bw amx_bf16", True),  # MKL's fp32 matmuls use AVX-512
        ("GenuineIntel", "", False),  # no AVX-512
        ("AuthenticAMD", "avx512f avx512bw avx512_bf16", False),  # MKL keeps to AVX2 there
    ],
)
def test_float32_is_taken_on_intel_cpus_with_avx512_alone(tmp_path, vendor, extra, float32):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO.format(vendor=vendor, extra=extra) * 2)
    dtypes = winograd_dtypes(str(cpuinfo))
    assert torch.bfloat16 in dtypes
    assert (torch.float32 in dtypes) == (float32 and torch.backends.mkl.is_available())
    assert winograd_dtypes(str(tmp_path / "none")) == (torch.bfloat16,)  # no CPU description: bf16 alone


@needs_kernel
def test_pyramid_keeps_the_transformed_weight_until_it_changes():
    pyramid = cast_for_inference(MultiScaleGenerator(16, (0.5, 1.0, 2.0)).eval(), "bf16")
    grid = tokens(2, 7, 7, 16, torch.bfloat16, "contiguous", seed=7)

    def branches_as_written():
        return [m.permute(0, 2, 3, 1) for m in pyramid(grid.permute(0, 3, 1, 2))]

    with torch.no_grad():
        pyramid.forward_tokens(grid)
        kept = dict(pyramid._winograd)
        assert len(kept) == 3  # one 3x3 convolution a branch
        pyramid.forward_tokens(grid)
        assert all(pyramid._winograd[k][1] is kept[k][1] for k in kept), "reused while unchanged"
        conv = pyramid.branches[1][3]
        conv.weight.mul_(-2.0)  # in place: version counter
        for ours, reference in zip(pyramid.forward_tokens(grid), branches_as_written(), strict=True):
            torch.testing.assert_close(ours.float(), reference.float(), rtol=0.05, atol=0.05)
        assert pyramid._winograd[(1, 3)][1] is not kept[(1, 3)][1]
        conv.weight.data = torch.randn(conv.weight.shape).bfloat16()  # replaced: new storage
        for ours, reference in zip(pyramid.forward_tokens(grid), branches_as_written(), strict=True):
            torch.testing.assert_close(ours.float(), reference.float(), rtol=0.05, atol=0.05)
    assert "_winograd" not in str(list(pyramid.state_dict())), "not a checkpoint entry"
