"""The MUSE model: meanP equivalence at init, shapes per aggregation/scale set, the authors' forward."""

import pytest
import torch
from authors_reference import authors_video_embedding

from muse_infer import load_model
from muse_infer.config import ConfigError, MuseConfig, load_config
from muse_infer.errors import ScanChoiceError
from muse_infer.loading import build_model
from muse_infer.loading.convert import convert_clip4clip, to_authors_state_dict
from muse_infer.model.aggregation import (
    aggregate,
    class_token_positions,
    class_token_slice,
    sequence_length,
)
from muse_infer.model.bimamba import BiMamba, ScanDirection
from muse_infer.model.pyramid import MultiScaleGenerator, scaled_grid

FRAMES = 4


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny")


def random_video(batch=2, frames=FRAMES, size=224, seed=0):
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(batch, frames, 3, size, size, generator=g)
    mask = torch.ones(batch, frames, dtype=torch.long)
    mask[-1, frames // 2 :] = 0
    video[mask == 0] = 0  # padded frames are zero, as load_video returns them
    return video, mask


def set_gates(model, scale=0.05, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in model.blocks:
            block.temporal_fc.weight.copy_(scale * torch.randn(block.temporal_fc.weight.shape, generator=g))
            block.temporal_fc.bias.copy_(scale * torch.randn(block.temporal_fc.bias.shape, generator=g))


def test_fresh_muse_equals_meanp_until_a_gate_opens(tiny):
    mean_pooling = build_model(load_config("tiny-meanP"))
    mean_pooling.backbone.load_state_dict(tiny.backbone.state_dict())
    video, mask = random_video()
    with torch.no_grad():
        torch.testing.assert_close(tiny.encode_video(video, mask), mean_pooling.encode_video(video, mask))
        tiny.blocks[0].temporal_fc.bias.fill_(0.1)
        try:
            assert not torch.allclose(
                tiny.encode_video(video, mask), mean_pooling.encode_video(video, mask), atol=1e-4
            )
        finally:
            tiny.blocks[0].temporal_fc.bias.zero_()


def test_paper_sequence_length_is_3060():
    grids = [scaled_grid(7, s) for s in (0.5, 1.0, 2.0)]
    assert grids == [3, 7, 14]
    pyramid = MultiScaleGenerator(512, (0.5, 1.0, 2.0))
    maps = pyramid(torch.randn(12, 512, 7, 7))
    assert [m.shape[-1] for m in maps] == grids
    tokens = [m.flatten(2).transpose(1, 2).unflatten(0, (1, 12)) for m in maps]
    sequence = aggregate(torch.randn(1, 12, 512), tokens, "scale_wise")
    assert sequence.shape == (1, 3060, 512) == (1, sequence_length("scale_wise", 12, 9 + 49 + 196), 512)


@pytest.mark.parametrize("scales", [(0.25, 0.5, 1.0, 2.0, 4.0), (1.0,), (0.5, 2.0)])
def test_every_scale_branch_shape(scales):
    maps = MultiScaleGenerator(16, scales)(torch.randn(3, 16, 7, 7))
    assert [tuple(m.shape) for m in maps] == [(3, 16, scaled_grid(7, s), scaled_grid(7, s)) for s in scales]


@pytest.mark.parametrize("mode", ["scale_wise", "frame_wise", "spatial_wise"])
def test_aggregation_orders_tokens(mode):
    batch, frames, width = 2, 3, 4
    cls = torch.arange(batch * frames * width, dtype=torch.float).reshape(batch, frames, width)
    scales = [torch.full((batch, frames, 1, width), 100.0), torch.full((batch, frames, 4, width), 200.0)]
    seq = aggregate(cls, scales, mode)
    assert seq.shape[1] == sequence_length(mode, frames, 5)
    positions = class_token_positions(mode, frames, 5)
    torch.testing.assert_close(seq[:, positions], cls)
    for count in (1, frames):  # the slice the model uses picks the same tokens, also for one frame
        picked = list(range(seq.shape[1]))[class_token_slice(mode, count, 5)]
        assert picked == class_token_positions(mode, count, 5)
    if mode == "scale_wise":  # all frames of the coarse scale before any fine token
        assert (seq[:, frames : frames + frames] == 100).all() and (seq[:, 2 * frames :] == 200).all()
    if mode == "frame_wise":  # frame 0: cls, its 1 coarse token, its 4 fine ones; then frame 1
        assert (seq[:, 1] == 100).all() and (seq[:, 2:6] == 200).all() and seq.shape[1] == frames * 6


@pytest.mark.parametrize("mode", ["scale_wise", "frame_wise", "spatial_wise"])
@pytest.mark.parametrize("scales", [(0.5, 1.0, 2.0), (0.25, 4.0)])
def test_model_runs_every_mode_and_scale_set(tiny, mode, scales):
    model = build_model(tiny.config.replace(aggregation=mode, scales=scales, num_blocks=1))
    set_gates(model)
    video, mask = random_video(frames=2)
    with torch.no_grad():
        features = model.frame_features(video)
        embedding = model.encode_video(video, mask)
    assert features.shape == (2, 2, 64) and embedding.shape == (2, 64)
    torch.testing.assert_close(embedding.norm(dim=-1), torch.ones(2))


def test_masked_pooling_ignores_padded_frames_only_at_the_end(tiny):
    set_gates(tiny)
    try:
        video, mask = random_video(batch=1)
        mask[0, 2:] = 0
        with torch.no_grad():
            features = tiny.frame_features(video)
            expected = torch.nn.functional.normalize(
                torch.nn.functional.normalize(features[0, :2], dim=-1).mean(0), dim=0
            )
            torch.testing.assert_close(tiny.encode_video(video, mask)[0], expected)
    finally:
        set_gates(tiny, scale=0.0)


def test_text_encoding_and_similarity(tiny):
    with torch.no_grad():
        text = tiny.encode_text(["a red circle moves left", "a tiny blue square"])
        video = tiny.encode_video(*random_video())
        logits = tiny.similarity(text, video)
    assert text.shape == (2, 64)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(logits, tiny.logit_scale.exp() * text @ video.t())


def test_text_feature_independent_of_padding_length(tiny):
    from muse_infer.tokenizer import tokenize

    ids = tokenize(["a cat"], max_words=32)
    with torch.no_grad():
        short = tiny.encode_text_tokens(ids[:, :8])
        full = tiny.encode_text_tokens(ids)
    torch.testing.assert_close(
        short, full, rtol=1e-5, atol=1e-6
    )  # causal mask: padding after [end] is unseen


def test_tokenizer_follows_clip4clip():
    from muse_infer.tokenizer import tokenize

    ids = tokenize(["Hello   WORLD!", " ".join(["word"] * 100)], max_words=8)
    assert ids.shape == (2, 8)
    assert ids[0, 0] == 49406 and 49407 in ids[0].tolist() and ids[0, -1] == 0
    assert ids[1, 0] == 49406 and ids[1, -1] == 49407  # cut to max_words - 2 BPE tokens


def random_authors_weights(model, seed=3):
    """The authors' key layout with fresh random values (gates open, pyramid not identity)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, tensor in to_authors_state_dict(model).items():
        if key.endswith(("A_log", "A_b_log")):
            state[key] = torch.log(torch.rand(tensor.shape, generator=g) * 4 + 0.5)
        elif (
            "ln" in key.split(".")[-2]
            or "layer_norm" in key
            or key.split(".")[-2].isdigit()
            and tensor.dim() == 1
            and key.endswith("weight")
        ):
            state[key] = 1 + 0.1 * torch.randn(tensor.shape, generator=g)
        else:
            state[key] = tensor + 0.05 * torch.randn(tensor.shape, generator=g)
    return state


SCAN_CHOICES = ("auto", "op", "ref", "chunked", "script")


@pytest.fixture(scope="module")
def authors_case(tiny):
    """A converted model with random authors' weights, inputs, and the authors' float64 embedding."""
    state = random_authors_weights(tiny)
    model, report = convert_clip4clip(state)
    assert report.unused_keys == [] and not report.pyramid_initialised
    video, mask = random_video(batch=2, frames=3)
    return model, video, mask, authors_video_embedding(state, video, mask)


@pytest.mark.parametrize("choice", SCAN_CHOICES)
def test_converted_model_matches_the_authors_forward_with_every_scan(authors_case, choice):
    """Every scan implementation gives the authors' embedding within 1e-5 relative (fused op included)."""
    model, video, mask, theirs = authors_case
    previous = model.set_scan(choice)
    try:
        with torch.no_grad():
            ours = model.encode_video(video, mask).double()
    finally:
        model.set_scan(previous)
    assert (ours - theirs).norm() / theirs.norm() < 1e-5


def test_config_validation_names_the_field():
    base = load_config("tiny").to_dict()
    with pytest.raises(ConfigError, match="scales"):
        MuseConfig.from_dict(base | {"scales": [3.0]})
    with pytest.raises(ConfigError, match="aggregation"):
        MuseConfig.from_dict(base | {"aggregation": "diagonal"})
    with pytest.raises(ConfigError, match="unknown field"):
        MuseConfig.from_dict(base | {"num_layers": 4})
    with pytest.raises(ConfigError, match="unknown model config"):
        load_config("ViT-Z-99")


def test_video_embedding_same_through_every_scan_choice(tiny):
    from muse_infer.ops.op import op_available

    assert op_available("cpu"), "the C++ scan kernel was not built (pip install --no-build-isolation -e .)"
    set_gates(tiny, scale=0.2)
    try:
        video, mask = random_video(frames=3)
        embeddings = {}
        for choice in SCAN_CHOICES:
            assert tiny.set_scan(choice) in SCAN_CHOICES
            with torch.no_grad():
                embeddings[choice] = tiny.encode_video(video, mask)
        for choice in SCAN_CHOICES:
            gap = (embeddings[choice] - embeddings["ref"]).norm() / embeddings["ref"].norm()
            assert gap < 1e-5, choice
        # the gates are open: the scan really shapes the embedding
        mean_pooling = build_model(load_config("tiny-meanP"))
        mean_pooling.backbone.load_state_dict(tiny.backbone.state_dict())
        with torch.no_grad():
            assert not torch.allclose(embeddings["op"], mean_pooling.encode_video(video, mask), atol=1e-3)
    finally:
        set_gates(tiny, scale=0.0)
        tiny.set_scan("auto")


def test_set_scan_reaches_every_block_and_returns_the_previous_choice(tiny):
    assert tiny.scan_impl == "auto" and {b.mamba.scan_impl for b in tiny.blocks} == {"auto"}
    assert tiny.set_scan("REF") == "auto"
    try:
        assert tiny.scan_impl == "ref" and {b.mamba.scan_impl for b in tiny.blocks} == {"ref"}
        assert "scan_impl" not in str(list(tiny.state_dict())), "the choice is not a checkpoint entry"
        with pytest.raises(
            ScanChoiceError, match="'fast' is not a scan choice.*auto, op, ref, chunked, script"
        ):
            tiny.set_scan("fast")
        assert tiny.scan_impl == "ref"
    finally:
        tiny.set_scan("auto")


@pytest.mark.parametrize(("length", "kernel"), [(1, 4), (2, 4), (9, 4), (9, 1), (5, 3)])
def test_backward_conv_in_natural_order_is_the_causal_conv_of_the_reversed_sequence(length, kernel):
    """What BiMamba's backward direction relies on: flip(causal_conv(flip(x), w)) is the anti-causal conv
    with the kernel flipped (ScanDirection.conv_reference(x, reverse=True)), checked against the causal
    conv; the time-major conv the model runs (conv_time_major) equals the module's both ways."""
    direction = ScanDirection(d_inner=6, d_state=4, d_conv=kernel, dt_rank=2).double()
    g = torch.Generator().manual_seed(length)
    with torch.no_grad():
        direction.conv1d.weight.copy_(torch.randn(direction.conv1d.weight.shape, generator=g))
        direction.conv1d.bias.copy_(torch.randn(direction.conv1d.bias.shape, generator=g))
        x = torch.randn(2, 6, length, dtype=torch.float64, generator=g)
        expected = direction.conv_reference(x.flip(-1), reverse=False).flip(-1)
        torch.testing.assert_close(
            direction.conv_reference(x, reverse=True), expected, rtol=1e-12, atol=1e-12
        )
        for reverse in (False, True):
            torch.testing.assert_close(
                direction.conv_time_major(x.transpose(1, 2), reverse).transpose(1, 2),
                direction.conv_reference(x, reverse),
                rtol=1e-12,
                atol=1e-12,
            )
        # and the whole backward direction: its inputs in natural order are the flipped ones' reversal
        z = torch.randn(2, 6, length, dtype=torch.float64, generator=g)
        x, z = x.transpose(1, 2), z.transpose(1, 2)  # time-major (B, L, Di), as BiMamba passes them
        natural = direction.scan_inputs(x, z, reverse=True)
        reversed_order = direction.scan_inputs(x.flip(1), z.flip(1)).flip_time()
        for name, a, b in zip(natural._fields, natural, reversed_order, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)


def test_bimamba_both_directions_match_the_flipped_formulation():
    """BiMamba through the fused op equals Vim's formulation written with flips (reference scans)."""
    from muse_infer.ops import selective_scan_ref

    block = BiMamba(d_model=24, d_state=16, scan="op").eval()
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 37, 24, generator=g)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
        x, z = block.in_proj(hidden).chunk(2, dim=-1)  # (B, L, Di) each
        y_forward = selective_scan_ref(*block.forward_scan.scan_inputs(x, z), delta_softplus=True)
        flipped = block.backward_scan.scan_inputs(x.flip(1), z.flip(1))
        y_backward = selective_scan_ref(*flipped, delta_softplus=True).flip(-1)
        expected = block.out_proj((y_forward + y_backward).transpose(1, 2))
        torch.testing.assert_close(block(hidden), expected, rtol=1e-5, atol=1e-6)


def test_profile_of_encode_video_shows_the_fused_scan_once_per_block(tiny):
    """On CPU with the kernel built, the blocks' scans are muse::selective_scan_bidirectional calls, one a
    block, except the last block's: the head reads it at the class tokens alone, where it runs two
    single-direction scans (the forward one over the first steps, the backward one over the reversed
    sequence; ResMambaBlock.forward_rows). benchmarks/profile_encode.py prints the whole table."""
    from muse_infer.ops.op import op_available

    assert op_available("cpu"), "the C++ scan kernel was not built (pip install --no-build-isolation -e .)"
    video, mask = random_video(batch=1, frames=2)
    with (
        torch.inference_mode(),
        torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof,
    ):
        tiny.encode_video(video, mask)
    calls = {event.key: event.count for event in prof.key_averages()}
    assert calls.get("muse::selective_scan_bidirectional") == len(tiny.blocks) - 1 == 1
    assert calls.get("muse::selective_scan") == 2 and "muse::selective_scan_with_state" not in calls
