"""The MUSE head's fast paths against their reference twins (docs/benchmarks.md, "The MUSE head").

- the blocks' depthwise conv on time-major rows, both its forms (the C++ op
  ``muse::depthwise_conv_time_major`` and the torch-ops reference), against ``nn.Conv1d`` on
  (B, Di, L): both directions, SiLU or not, awkward sizes, several dtypes, input layouts and
  instruction-set builds; gradients (through the reference); opcheck; when the op is taken;
- the scan op on exactly the strided views BiMamba hands it (no layout copy) against contiguous copies
  and the reference, several dtypes, and ``torch.library.opcheck`` on those views;
- the pyramid on (N, H, W, C) tokens (``forward_tokens``) against the branches run as written on
  (N, C, H, W) maps, every scale factor, odd grids, several dtypes and input layouts;
- out_proj and temporal_fc run as one matmul in inference, against the two modules; when it applies
  (not with gradients, not under a tracer) and when the kept product is recomputed;
- what the layouts are for: no activation-sized copy left in the blocks.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from muse_infer.model import pyramid as pyramid_module
from muse_infer.model.bimamba import BiMamba, ResMambaBlock, ScanDirection
from muse_infer.model.precision import cast_for_inference
from muse_infer.model.pyramid import MultiScaleGenerator
from muse_infer.ops import ScanInputs, selective_scan_bidirectional_ref
from muse_infer.ops import op as ops_op
from muse_infer.ops.conv import conv_op_applies, depthwise_conv_time_major, depthwise_conv_time_major_ref
from muse_infer.ops.op import op_available, selective_scan_bidirectional

needs_kernel = pytest.mark.skipif(not op_available("cpu"), reason="muse_infer._C is not built")
FLOOR = {torch.float64: 1e-12, torch.float32: 1e-6, torch.bfloat16: 1e-6, torch.float16: 1e-6}
# Winograd's F(2x2, 3x3) in bf16 rounds U, V and M where a direct convolution rounds its output only:
# measured up to 2.3x the module's error (tests/test_winograd_conv.py); the bound allows 3x.
WINOGRAD_ERROR_FACTOR = 3


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def time_major(x: torch.Tensor, layout: str) -> torch.Tensor:
    """x (B, L, Di) with the same values in one of the layouts BiMamba may see."""
    batch, length, channels = x.shape
    if layout == "contiguous":
        return x.contiguous()
    if layout == "half_of_wider_rows":  # like x or z: one half of in_proj's (B, L, 2*Di) output
        wide = torch.zeros(batch, length, 2 * channels + 3, dtype=x.dtype)
        wide[..., channels + 1 : 2 * channels + 1] = x
        return wide[..., channels + 1 : 2 * channels + 1]
    if layout == "channel_major":  # (B, Di, L) memory seen as (B, L, Di)
        return x.transpose(1, 2).contiguous().transpose(1, 2)
    raise ValueError(layout)


def within_twice_the_reference_error(ours, reference, truth, dtype, factor=2):
    """flash-attention's rule: our error against the float64 truth is at most twice the reference's
    (``factor`` times), plus a floor relative to the output's size."""
    ours_error = (ours.double() - truth).abs().max().item()
    reference_error = (reference.double() - truth).abs().max().item()
    floor = FLOOR[dtype] * max(1.0, truth.abs().max().item())
    assert ours_error <= factor * reference_error + floor, (ours_error, reference_error)


# --- the depthwise conv ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", ["contiguous", "half_of_wider_rows", "channel_major"])
@pytest.mark.parametrize(
    ("batch", "length", "channels", "taps"),
    [(1, 1, 5, 4), (2, 3, 17, 4), (3, 131, 33, 4), (1, 9, 6, 1), (2, 7, 6, 3)],
)
@pytest.mark.parametrize("reverse", [False, True])
def test_time_major_conv_matches_the_module(dtype, layout, batch, length, channels, taps, reverse):
    direction = ScanDirection(channels, d_state=4, d_conv=taps, dt_rank=2)
    with torch.no_grad():
        direction.conv1d.weight.copy_(randn(*direction.conv1d.weight.shape, seed=1))
        direction.conv1d.bias.copy_(randn(channels, seed=2))
    x = time_major(randn(batch, length, channels, seed=3, dtype=dtype), layout)
    truth_module = ScanDirection(channels, 4, taps, 2).double()
    truth_module.load_state_dict(direction.to(dtype).state_dict())
    with torch.no_grad():
        ours = direction.conv_time_major(x, reverse)
        reference = direction.conv_reference(x.transpose(1, 2).contiguous(), reverse).transpose(1, 2)
        truth = truth_module.conv_reference(x.double().transpose(1, 2), reverse).transpose(1, 2)
    assert ours.dtype == dtype and ours.shape == x.shape
    assert ours.is_contiguous() or layout == "channel_major"  # a dense input keeps its order
    within_twice_the_reference_error(ours, reference, truth, dtype)


CONV_SIZES = [(1, 1, 5, 4), (2, 3, 17, 4), (3, 131, 33, 4), (1, 9, 6, 1), (2, 7, 6, 3), (1, 300, 64, 4)]


def conv_case(batch, length, channels, taps, dtype, layout, seed=0):
    x = time_major(randn(batch, length, channels, seed=seed, dtype=dtype), layout)
    return x, randn(channels, taps, seed=seed + 1, dtype=dtype), randn(channels, seed=seed + 2, dtype=dtype)


def module_conv(x, weight, bias, reverse, silu):
    """nn.Conv1d's answer in float64 on (B, Di, L): the truth both forms are held to."""
    channels, taps = weight.shape
    w = weight.double().flip(-1) if reverse else weight.double()
    y = F.conv1d(x.double().transpose(1, 2), w.unsqueeze(1), bias.double(), padding=taps - 1, groups=channels)
    y = (y[..., taps - 1 :] if reverse else y[..., : x.shape[1]]).transpose(1, 2)
    return F.silu(y) if silu else y


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", ["contiguous", "half_of_wider_rows", "channel_major"])
@pytest.mark.parametrize(("batch", "length", "channels", "taps"), CONV_SIZES)
@pytest.mark.parametrize(("reverse", "silu"), [(False, False), (True, True), (False, True)])
def test_conv_op_matches_the_reference_and_the_module(
    dtype, layout, batch, length, channels, taps, reverse, silu
):
    x, weight, bias = conv_case(batch, length, channels, taps, dtype, layout)
    with torch.no_grad():
        ours = torch.ops.muse.depthwise_conv_time_major(x, weight, bias, reverse, silu)
        reference = depthwise_conv_time_major_ref(x, weight, bias, reverse, silu)
    assert ours.dtype == dtype and ours.shape == x.shape and ours.is_contiguous()
    within_twice_the_reference_error(ours, reference, module_conv(x, weight, bias, reverse, silu), dtype)


@needs_kernel
@pytest.mark.parametrize("isa", ["avx512", "avx2", "baseline"])
def test_conv_op_every_instruction_set_build(isa, monkeypatch):
    monkeypatch.setenv("MUSE_SCAN_CPU_ISA", isa)
    if ops_op.cpu_kernel_isa() != isa:
        pytest.skip(f"this CPU cannot run the {isa} build")
    for dtype, layout, size in [
        (torch.float32, "half_of_wider_rows", (2, 37, 41, 4)),
        (torch.bfloat16, "contiguous", (1, 29, 35, 4)),
        (torch.float32, "channel_major", (1, 11, 9, 3)),
    ]:
        x, weight, bias = conv_case(*size, dtype, layout, seed=30)
        for reverse in (False, True):
            with torch.no_grad():
                ours = torch.ops.muse.depthwise_conv_time_major(x, weight, bias, reverse, True)
                reference = depthwise_conv_time_major_ref(x, weight, bias, reverse, True)
            within_twice_the_reference_error(
                ours, reference, module_conv(x, weight, bias, reverse, True), dtype
            )


@needs_kernel
def test_conv_op_extremes_and_no_bias():
    """Large inputs (SiLU's exp saturates both ways), NaN propagation in bf16, no bias."""
    x, weight, _ = conv_case(1, 40, 20, 4, torch.float32, "contiguous", seed=31)
    x = x * 300
    with torch.no_grad():
        for dtype in (torch.float32, torch.bfloat16):
            ours = torch.ops.muse.depthwise_conv_time_major(x.to(dtype), weight.to(dtype), None, False, True)
            reference = depthwise_conv_time_major_ref(x.to(dtype), weight.to(dtype), None, False, True)
            assert torch.isfinite(ours).all()
            torch.testing.assert_close(
                ours.float(), reference.float(), rtol=2e-2 if dtype != torch.float32 else 1e-5, atol=1e-3
            )
        x[0, 5, 3] = float("nan")
        y = torch.ops.muse.depthwise_conv_time_major(x.bfloat16(), weight.bfloat16(), None, False, False)
    assert y[0, 5:9, 3].isnan().all() and not y[0, :5].isnan().any() and not y[0, 9:].isnan().any()


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_conv_opcheck(dtype):
    x, weight, bias = conv_case(2, 23, 19, 4, dtype, "half_of_wider_rows", seed=32)
    for reverse, silu in ((False, True), (True, False)):
        torch.library.opcheck(
            torch.ops.muse.depthwise_conv_time_major.default,
            (x, weight, bias, reverse, silu),
            test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"),
        )


def test_conv_schema_is_the_cpp_one():
    assert str(torch.ops.muse.depthwise_conv_time_major.default._schema) == (
        f"muse::depthwise_conv_time_major{ops_op.CONV_SCHEMA}"
    )


@needs_kernel
def test_conv_op_is_taken_only_where_it_applies():
    """The entry takes the op for eager CPU inference, the reference with gradients or under a tracer;
    the op itself refuses gradients with a message that says what to call."""
    x, weight, bias = conv_case(1, 19, 8, 4, torch.float32, "contiguous", seed=33)
    with torch.no_grad():
        assert conv_op_applies(x, weight, bias)
        seen = []
        torch.jit.trace(
            lambda t: t + len(seen.append(conv_op_applies(t, weight, bias)) or ()), (x,), check_trace=False
        )
        assert seen == [False]
    leaf = weight.clone().requires_grad_()
    assert not conv_op_applies(x, leaf, bias)
    depthwise_conv_time_major(x, leaf, bias, False, True).sum().backward()  # the reference: differentiable
    assert leaf.grad is not None
    with pytest.raises(RuntimeError, match="depthwise_conv_time_major_ref"):
        torch.ops.muse.depthwise_conv_time_major(x, leaf, bias, False, True)
    assert not conv_op_applies(x.double(), weight.double(), bias.double())


@pytest.mark.parametrize("reverse", [False, True])
def test_time_major_conv_gradients_match_the_module(reverse):
    """Training runs the same conv: its gradients (input, weight, bias) are the module's."""
    x = randn(2, 29, 7, seed=4, dtype=torch.float64)
    weight, bias = randn(7, 4, seed=5, dtype=torch.float64), randn(7, seed=6, dtype=torch.float64)
    grad_out = randn(2, 29, 7, seed=7, dtype=torch.float64)
    grads = []
    for fast in (True, False):
        leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
        if fast:
            y = depthwise_conv_time_major(*leaves, reverse)  # with gradients: the reference
        else:
            w = leaves[1].flip(-1) if reverse else leaves[1]
            y = F.conv1d(leaves[0].transpose(1, 2), w.unsqueeze(1), leaves[2], padding=3, groups=7)
            y = (y[..., -29:] if reverse else y[..., :29]).transpose(1, 2)
        (y * grad_out).sum().backward()
        grads.append([t.grad for t in leaves])
    for ours, reference in zip(*grads, strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)


# --- the scan op on BiMamba's views ------------------------------------------------------------------


def bimamba_views(dtype, batch=2, length=53, width=40, seed=8):
    """Both directions' ScanInputs as BiMamba builds them (strided views), from a random block."""
    block = BiMamba(width, d_state=16)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    block = cast_for_inference(
        block, {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    )
    hidden = torch.randn(batch, length, width, generator=g).to(dtype)
    with torch.no_grad():
        x, z = block.in_proj(hidden).chunk(2, dim=-1)
        directions = block.forward_scan.scan_inputs(x, z), block.backward_scan.scan_inputs(x, z, reverse=True)
    return [ScanInputs(*(t.detach() for t in d)) for d in directions]  # D and the bias are parameters


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("batch", "length", "width"), [(1, 1, 17), (2, 53, 40), (3, 130, 33)])
def test_scan_op_reads_bimambas_views_without_copies(dtype, batch, length, width):
    """u, delta and z arrive with channel stride 1, B and C as columns of x_proj's output: the op gives
    the very bits it gives on contiguous copies, and the reference's numbers."""
    forward, backward = bimamba_views(dtype, batch, length, width)
    assert forward.u.stride(1) == 1 and forward.z.stride(1) == 1 and forward.delta.stride(1) == 1
    assert forward.B.stride(1) == 1 and (length == 1 or not forward.z.is_contiguous())
    with torch.no_grad():
        ours = selective_scan_bidirectional(forward, backward, delta_softplus=True)
        copies = [ScanInputs(*(t.contiguous() for t in d)) for d in (forward, backward)]
        torch.testing.assert_close(
            ours, selective_scan_bidirectional(*copies, delta_softplus=True), rtol=0, atol=0
        )
        reference = selective_scan_bidirectional_ref(forward, backward, delta_softplus=True)
        truth = selective_scan_bidirectional_ref(
            forward.cast(torch.float64), backward.cast(torch.float64), True
        )
    assert ours.dtype == dtype
    within_twice_the_reference_error(ours, reference, truth, dtype)


@needs_kernel
@pytest.mark.parametrize("isa", ["avx512", "avx2", "baseline"])
@pytest.mark.parametrize(("batch", "length", "width"), [(1, 5, 17), (2, 70, 40)])
def test_scan_op_reads_bf16_as_is(isa, batch, length, width, monkeypatch):
    """bf16 u, delta and z are read by the kernel itself (no fp32 copies): exactly the numbers of the
    same values given as fp32, in the model's strided views and in contiguous ones, every build."""
    monkeypatch.setenv("MUSE_SCAN_CPU_ISA", isa)
    if ops_op.cpu_kernel_isa() != isa:
        pytest.skip(f"this CPU cannot run the {isa} build")
    forward, backward = bimamba_views(torch.bfloat16, batch, length, width)
    as_fp32 = [
        d.cast(torch.float32)._replace(A=d.A, D=d.D, delta_bias=d.delta_bias) for d in (forward, backward)
    ]
    with torch.no_grad():
        for views in (
            (forward, backward),
            [ScanInputs(*(t.contiguous() for t in d)) for d in (forward, backward)],
        ):
            torch.testing.assert_close(
                selective_scan_bidirectional(*views, delta_softplus=True).float(),
                selective_scan_bidirectional(*as_fp32, delta_softplus=True).bfloat16().float(),
                rtol=0,
                atol=0,
            )


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opcheck_on_bimambas_views(dtype):
    forward, backward = bimamba_views(dtype, batch=2, length=37, width=24)
    torch.library.opcheck(
        torch.ops.muse.selective_scan_bidirectional.default,
        (*forward, *backward, True),
        test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"),
    )


# --- the pyramid on tokens ---------------------------------------------------------------------------


def grid_tokens(batch, grid, width, layout, dtype, seed=9):
    """(N, G, G, C) tokens: contiguous, or the patch part of (N, 1 + G*G, C) tokens as the backbone
    gives them (class token first)."""
    tokens = randn(batch, 1 + grid * grid, width, seed=seed, dtype=dtype)
    view = tokens[:, 1:].reshape(batch, grid, grid, width)
    return view.contiguous() if layout == "contiguous" else view


@pytest.mark.parametrize(
    ("dtype", "winograd"),
    [(torch.float64, False), (torch.float32, False), (torch.bfloat16, False), (torch.bfloat16, True)],
)
@pytest.mark.parametrize("layout", ["contiguous", "after_class_token"])
@pytest.mark.parametrize(
    ("grid", "scales"), [(7, (0.5, 1.0, 2.0)), (5, (0.25, 0.5, 4.0)), (9, (1.0, 2.0)), (1, (1.0, 4.0))]
)
def test_pyramid_on_tokens_matches_the_branches_as_written(
    dtype, winograd, layout, grid, scales, monkeypatch
):
    """Every layer on tokens as the model runs it. In bf16 the 3x3 convolutions run by Winograd
    (ops/winograd.py) where the op is built; with it blocked, the modules on tokens are within twice the
    reference's error; with it, within WINOGRAD_ERROR_FACTOR (tests/test_winograd_conv.py)."""
    if winograd and not op_available("cpu"):
        pytest.skip("muse_infer._C is not built")
    if not winograd:
        monkeypatch.setattr(pyramid_module, "winograd_applies", lambda layer, x: False)
    width = 24
    pyramid = MultiScaleGenerator(width, scales).eval()
    g = torch.Generator().manual_seed(10)
    with torch.no_grad():
        for p in pyramid.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    truth_pyramid = MultiScaleGenerator(width, scales).double().eval()
    truth_pyramid.load_state_dict(pyramid.state_dict())
    pyramid = cast_for_inference(
        pyramid, {torch.float64: "fp32", torch.float32: "fp32", torch.bfloat16: "bf16"}[dtype]
    )
    pyramid.to(dtype) if dtype == torch.float64 else None
    tokens = grid_tokens(3, grid, width, layout, dtype)
    with torch.no_grad():
        ours = pyramid.forward_tokens(tokens)
        reference = pyramid(tokens.permute(0, 3, 1, 2))
        truth = truth_pyramid(tokens.double().permute(0, 3, 1, 2))
    factor = WINOGRAD_ERROR_FACTOR if winograd else 2
    for scale, a, r, t in zip(scales, ours, reference, truth, strict=True):
        side = grid // round(1 / scale) if scale < 1 else grid * round(scale)
        assert a.shape == (3, side, side, width) and a.is_contiguous() and a.dtype == dtype, scale
        within_twice_the_reference_error(a, r.permute(0, 2, 3, 1), t.permute(0, 2, 3, 1), dtype, factor)


# --- out_proj and temporal_fc as one matmul ----------------------------------------------------------


def gated_block(width=24, drop=0.0, seed=11):
    block = ResMambaBlock(width, drop)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return block


def two_matmuls(block, x):
    """The block as its modules compose: x + temporal_fc(out_proj(mix(layer_norm1(x))))."""
    return x + block.temporal_fc(block.mamba(block.layer_norm1(x)))


class OutProjCalls:
    """Counts calls of out_proj: it runs only when the projections are not fused."""

    def __init__(self, block):
        self.count = 0
        self.handle = block.mamba.out_proj.register_forward_hook(self.hook)

    def hook(self, *args):
        self.count += 1


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_fused_projections_equal_the_two_modules(dtype):
    block = gated_block().eval()
    block = (
        block.to(dtype)
        if dtype == torch.float64
        else cast_for_inference(block, "bf16" if dtype == torch.bfloat16 else "fp32")
    )
    x = randn(2, 41, 24, seed=12, dtype=dtype)
    calls = OutProjCalls(block)
    with torch.no_grad():
        fused = block(x)
        assert calls.count == 0, "inference without gradients fuses the projections"
        reference = two_matmuls(block, x)
        truth_block = gated_block().double().eval()
        truth_block.load_state_dict(block.state_dict())
        truth = two_matmuls(truth_block, x.double())
    within_twice_the_reference_error(fused, reference, truth, dtype)


def test_fused_weight_follows_the_weights():
    """The kept product is recomputed after an in-place change, a replaced tensor and a new dtype."""
    block = gated_block().eval()
    x = randn(1, 19, 24, seed=13)
    with torch.no_grad():
        block(x)
        block.temporal_fc.weight.mul_(-2.0)  # in place: version counter
        torch.testing.assert_close(block(x), two_matmuls(block, x), rtol=1e-5, atol=1e-6)
        block.mamba.out_proj.weight.data = randn(24, 24, seed=14)  # replaced: new storage
        torch.testing.assert_close(block(x), two_matmuls(block, x), rtol=1e-5, atol=1e-6)
        block.load_state_dict(gated_block(seed=15).state_dict())  # copied in: version counter
        torch.testing.assert_close(block(x), two_matmuls(block, x), rtol=1e-5, atol=1e-6)
        block.double()
        torch.testing.assert_close(block(x.double()), two_matmuls(block, x.double()), rtol=1e-12, atol=1e-12)
    assert "_fused" not in str(list(block.state_dict())), "the product is not a checkpoint entry"


def test_projections_stay_two_modules_for_training_and_tracing():
    block = gated_block(drop=0.1)
    x = randn(1, 23, 24, seed=16)
    calls = OutProjCalls(block)
    block.train()
    with torch.no_grad():
        block(x)  # dropout active: not the identity
    assert calls.count == 1
    block.eval()
    block(x).sum().backward()  # gradients needed: both weights get theirs
    assert calls.count == 2
    assert block.temporal_fc.weight.grad.abs().sum() > 0 and block.mamba.out_proj.weight.grad.abs().sum() > 0
    with torch.no_grad():
        traced = torch.jit.trace(block, (x,), check_trace=False)
        assert calls.count == 3, "a traced graph keeps the modules' own ops"
        torch.testing.assert_close(traced(x), block(x), rtol=1e-5, atol=1e-6)


# --- no layout copies --------------------------------------------------------------------------------


def test_no_activation_sized_copy_in_the_blocks():
    """The blocks run without copying any (B, L, Di)-sized tensor: the profile's aten::copy_ calls all
    move less than a tenth of one (before the time-major layout there were two full copies a block)."""
    width, length = 64, 301
    blocks = torch.nn.Sequential(*(gated_block(width, seed=s) for s in (17, 18))).eval()
    x = randn(2, length, width, seed=19)
    with torch.inference_mode():
        blocks(x)
        with torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True
        ) as prof:
            blocks(x)
    sizes = []
    for event in prof.events():
        if event.name == "aten::copy_" and event.input_shapes and event.input_shapes[0]:
            sizes.append(int(torch.tensor(event.input_shapes[0]).prod()))
    assert max(sizes, default=0) < x.numel() / 10, sizes


# --- one video at a time through the head on the CPU --------------------------------------------------


def test_head_one_video_at_a_time_equals_the_whole_batch():
    """On the CPU the video tower takes one video a call (videos_per_call); the result is the whole
    batch's, and a tracer sees the whole batch (no loop baked into an exported graph)."""
    from muse_infer import load_model
    from muse_infer.model.muse import videos_per_call

    model = load_model("tiny").eval()
    for i, block in enumerate(model.blocks):
        with torch.no_grad():
            block.temporal_fc.weight.copy_(0.1 * randn(*block.temporal_fc.weight.shape, seed=20 + i))
    frames = randn(3, 2, 3, 224, 224, seed=21)
    with torch.no_grad():
        assert videos_per_call(frames) == 1
        tokens = model.backbone.image_tokens(frames.flatten(0, 1)).unflatten(0, (3, 2))
        whole_batch = model.head_features(tokens)
        torch.testing.assert_close(model.frame_features(frames), whole_batch, rtol=1e-5, atol=1e-6)
        seen = []
        torch.jit.trace(
            lambda t: t.sum() + len(seen.append(videos_per_call(t)) or ()), (frames,), check_trace=False
        )
    assert [int(n) for n in seen] == [3]


@pytest.mark.parametrize("name", ["tiny", "tiny-meanP"])
@pytest.mark.parametrize("budget", [1, 60, 10**6])
def test_the_image_tower_in_chunks_equals_all_frames_at_once(monkeypatch, name, budget):
    """On the CPU a video's frames go through the image tower in chunks of at most
    IMAGE_TOKENS_PER_CPU_CALL tokens (one frame a call, a few, all): the features of every frame at
    once, for MUSE and meanP; a tracer sees all the frames in one call."""
    from muse_infer import load_model
    from muse_infer.model import muse

    model = load_model(name).eval()
    frames = randn(2, 5, 3, 224, 224, seed=22)
    monkeypatch.setattr(muse, "IMAGE_TOKENS_PER_CPU_CALL", budget)
    grid = model.backbone.grid_size
    calls = []
    tower = model.backbone.image_tokens if model.pyramid is not None else model.backbone.image_features
    with torch.no_grad():
        expected = tower(frames.flatten(0, 1)).unflatten(0, (2, 5))
        if model.pyramid is not None:
            expected = model.head_features(expected)
        monkeypatch.setattr(
            model.backbone, tower.__name__, lambda images: calls.append(len(images)) or tower(images)
        )
        got = model.frame_features(frames)
    per_call = max(1, budget // (grid * grid + 1))
    assert muse.frames_per_image_call(frames[0], grid) == per_call
    assert calls == [len(c) for _ in range(2) for c in torch.arange(5).split(per_call)]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    seen = []
    torch.jit.trace(
        lambda x: x.sum() + len(seen.append(muse.frames_per_image_call(x, grid)) or ()),
        (frames[0],),
        check_trace=False,
    )
    assert [int(n) for n in seen] == [5]
