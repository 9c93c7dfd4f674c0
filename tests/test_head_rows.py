"""The last block computed at the class tokens alone (``ResMambaBlock.forward_rows``,
``BiMamba.mix_rows``) against the whole block sliced: every dtype, row slices of every kind (first
steps, strided, one step at either end, all steps), awkward lengths, the scan implementations; where it
applies (gradients and tracers get the whole block); and the model's head, every aggregation mode.
"""

from __future__ import annotations

import pytest
import torch

from muse_infer.config import load_config
from muse_infer.loading import build_model
from muse_infer.model.bimamba import ResMambaBlock
from muse_infer.model.precision import cast_for_inference

FLOOR = {torch.float64: 1e-12, torch.float32: 1e-6, torch.bfloat16: 1e-6}
ROWS = [
    (41, slice(0, 5)),
    (41, slice(3, 40, 7)),
    (30, slice(0, 30)),
    (17, slice(16, 17)),
    (17, slice(0, 1)),
    (1, slice(0, 1)),
]


def gated_block(width=24, seed=11):
    block = ResMambaBlock(width, 0.0)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return block.eval()


def in_precision(block, dtype):
    if dtype == torch.float64:
        return block.double()
    return cast_for_inference(block, "bf16" if dtype == torch.bfloat16 else "fp32")


def randn(*shape, seed, dtype):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("length", "rows"), ROWS)
@pytest.mark.parametrize("scan", ["auto", "ref"])
def test_rows_equal_the_whole_block_sliced(dtype, length, rows, scan):
    """Against the float64 block's rows: within twice the error of the whole block sliced, plus a floor.
    "auto" runs the C++ op for fp32 and bf16 where it is built."""
    block = in_precision(gated_block(), dtype)
    block.mamba.scan_impl = scan
    truth_block = gated_block().double()
    truth_block.load_state_dict(block.state_dict())
    x = randn(2, length, 24, seed=12, dtype=dtype)
    with torch.no_grad():
        ours = block.forward_rows(x, rows)
        whole = block(x)[:, rows]
        truth = truth_block(x.double())[:, rows]
    assert ours.shape == whole.shape and ours.dtype == dtype
    ours_error = (ours.double() - truth).abs().max().item()
    whole_error = (whole.double() - truth).abs().max().item()
    assert ours_error <= 2 * whole_error + FLOOR[dtype] * max(1.0, truth.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("length", "rows"), [(41, slice(3, 40, 7)), (17, slice(16, 17))])
def test_rows_with_inference_tensor_weights(dtype, length, rows):
    """Weights made under ``torch.inference_mode`` (no version counters: ``forward`` cannot keep the
    fused output weight) still take the rows alone, equal to the whole block sliced within twice the
    error of the whole block against float64."""
    with torch.inference_mode():
        block = in_precision(gated_block(), dtype)
        assert block.temporal_fc.weight.is_inference() and not block.fuses_projections(
            block.temporal_fc.weight
        )
        truth_block = gated_block().double()
        truth_block.load_state_dict(block.state_dict())
        x = randn(2, length, 24, seed=16, dtype=dtype)
        ours, whole = block.forward_rows(x, rows), block(x)[:, rows]
        truth = truth_block(x.double())[:, rows]
    ours_error = (ours.double() - truth).abs().max().item()
    whole_error = (whole.double() - truth).abs().max().item()
    assert ours_error <= 2 * whole_error + FLOOR[dtype] * max(1.0, truth.abs().max().item())


def test_rows_skip_the_unread_work():
    """In inference only R rows go through the z half of in_proj, out_proj and temporal_fc; x's half
    of in_proj meets every row (the backward scan reads them all)."""
    block = gated_block()
    seen = []
    for module in (block.mamba.out_proj, block.temporal_fc):
        module.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))
    x = randn(1, 50, 24, seed=13, dtype=torch.float32)
    with torch.no_grad(), torch.profiler.profile(record_shapes=True) as prof:
        block.forward_rows(x, slice(0, 4))
    assert seen == [(1, 4, 24), (1, 4, 24)]
    shapes = [e.input_shapes[0] for e in prof.events() if e.name == "aten::linear"]
    assert [1, 4, 24] in shapes and [1, 50, 24] in shapes, shapes


def test_rows_refuse_an_empty_selection():
    block = gated_block()
    with torch.no_grad(), pytest.raises(ValueError, match="at least one step"):
        block.mamba.mix_rows(randn(1, 9, 24, seed=14, dtype=torch.float32), slice(5, 5))


class FirstRows(torch.nn.Module):
    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x):
        return self.block.forward_rows(x, slice(0, 3))


def test_gradients_and_tracers_get_the_whole_block():
    block = gated_block()
    x = randn(1, 21, 24, seed=15, dtype=torch.float32)
    rows_seen = []
    block.mamba.out_proj.register_forward_hook(lambda m, args, out: rows_seen.append(args[0].shape[1]))
    block.forward_rows(x, slice(0, 3)).sum().backward()  # gradients: the whole block
    assert rows_seen == [21] and block.temporal_fc.weight.grad is not None
    with torch.no_grad():
        traced = torch.jit.trace(FirstRows(block), (x,), check_trace=False)
        assert rows_seen == [21, 21]
        torch.testing.assert_close(traced(x), block(x)[:, :3], rtol=1e-5, atol=1e-6)
    with torch.inference_mode():  # weights made here are inference tensors: the rows alone still
        frozen = gated_block()
        frozen.mamba.out_proj.register_forward_hook(lambda m, args, out: rows_seen.append(args[0].shape[1]))
        frozen.forward_rows(x, slice(0, 3))
    assert rows_seen[-1] == 3


@pytest.mark.parametrize("aggregation", ["scale_wise", "frame_wise", "spatial_wise"])
def test_head_reads_the_last_block_at_the_class_tokens(aggregation, monkeypatch):
    """The head's features equal the last block run whole and sliced at the class tokens."""
    config = load_config("tiny").replace(aggregation=aggregation)
    model = build_model(config, clip_weights="random").eval()
    for i, block in enumerate(model.blocks):
        with torch.no_grad():
            block.temporal_fc.weight.copy_(
                0.1 * randn(*block.temporal_fc.weight.shape, seed=20 + i, dtype=torch.float32)
            )
    frames = randn(2, config.max_frames, 3, 224, 224, seed=21, dtype=torch.float32)
    with torch.no_grad():
        tokens = model.backbone.image_tokens(frames.flatten(0, 1)).unflatten(0, frames.shape[:2])
        ours = model.head_features(tokens)
        monkeypatch.setattr(ResMambaBlock, "forward_rows", lambda self, x, rows: self(x)[:, rows])
        whole = model.head_features(tokens)
    torch.testing.assert_close(ours, whole, rtol=1e-5, atol=1e-5)
