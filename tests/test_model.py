"""The MUSE model: meanP equivalence at init, shapes per aggregation/scale set, the authors' forward."""

import pytest
import torch
from authors_reference import authors_video_embedding

from muse_infer import load_model
from muse_infer.config import ConfigError, MuseConfig, load_config
from muse_infer.loading import build_model
from muse_infer.loading.convert import convert_clip4clip, to_authors_state_dict
from muse_infer.model.aggregation import (
    aggregate,
    class_token_positions,
    class_token_slice,
    sequence_length,
)
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


def test_converted_model_matches_the_authors_forward(tiny):
    state = random_authors_weights(tiny)
    model, report = convert_clip4clip(state)
    assert report.unused_keys == [] and not report.pyramid_initialised
    video, mask = random_video(batch=2, frames=3)
    with torch.no_grad():
        ours = model.encode_video(video, mask).double()
    theirs = authors_video_embedding(state, video, mask)
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


def test_video_embedding_same_through_the_op_and_the_reference(tiny, monkeypatch):
    from muse_infer.ops.op import op_available

    assert op_available("cpu"), "the C++ scan kernel was not built (pip install --no-build-isolation -e .)"
    set_gates(tiny, scale=0.2)
    try:
        video, mask = random_video(frames=3)
        embeddings = {}
        for choice in ("ref", "op"):
            monkeypatch.setenv("MUSE_SCAN", choice)
            with torch.no_grad():
                embeddings[choice] = tiny.encode_video(video, mask)
        gap = (embeddings["op"] - embeddings["ref"]).norm() / embeddings["ref"].norm()
        assert gap < 1e-5
        # the gates are open: the scan really shapes the embedding
        mean_pooling = build_model(load_config("tiny-meanP"))
        mean_pooling.backbone.load_state_dict(tiny.backbone.state_dict())
        with torch.no_grad():
            assert not torch.allclose(embeddings["op"], mean_pooling.encode_video(video, mask), atol=1e-3)
    finally:
        set_gates(tiny, scale=0.0)
