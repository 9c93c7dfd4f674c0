"""The plain CLIP built without open_clip (``muse_infer.model.plain_clip``) against open_clip's ``CLIP``,
its reference twin: the same seeded weights under the same names in the same order, the random
generator left in the same state, and the same outputs bit for bit (both dtypes, eval and training,
gradients included); ``supports`` refuses every config it does not build; a model loads and encodes,
and downloaded CLIP weights are found, without importing open_clip."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import torch

from muse_infer.catalog import config_data
from muse_infer.loading.reference import model_config, resolve_model
from muse_infer.model import plain_clip
from muse_infer.model.backbone import ClipBackbone, build_clip, build_open_clip


def shipped(name: str):
    """The MuseConfig of a model shipped in ``muse_infer/configs`` ("tiny", "ViT-B-32" ...)."""
    return model_config(resolve_model(name))


TINY = shipped("tiny").clip


def sized(base: str, vision: dict | None = None, text: dict | None = None, **top) -> dict:
    """An open_clip model config (from the catalog) with sizes changed, so that a build stays cheap."""
    clip = copy.deepcopy(TINY if base == "tiny" else config_data(base)["clip"])
    clip["vision_cfg"].update(vision or {})
    clip["text_cfg"].update(text or {})
    clip.update(top)
    return clip


PLAIN = {
    "tiny": TINY,
    "odd sizes, GELU": {
        "embed_dim": 24,
        "vision_cfg": {"image_size": 96, "layers": 3, "width": 48, "patch_size": 16, "head_width": 16},
        "text_cfg": {"context_length": 20, "vocab_size": 300, "width": 40, "heads": 5, "layers": 1},
    },
    "vision mlp_ratio 2.5, lists": {
        "embed_dim": 16,
        "quick_gelu": True,
        "vision_cfg": {
            "image_size": [64, 64],
            "layers": 1,
            "width": 32,
            "head_width": 16,
            "patch_size": [16, 16],
            "mlp_ratio": 2.5,
        },
        "text_cfg": {"context_length": 9, "vocab_size": 50, "width": 24, "heads": 3, "layers": 2},
    },
    "ViT-B-32, 1 layer": sized("ViT-B-32", {"layers": 1}, {"layers": 1}),
    "ViT-H-14 widths (head width 80), 1 layer": sized(
        "ViT-H-14", {"layers": 1, "image_size": 56}, {"layers": 1, "vocab_size": 1000}
    ),
    "ViT-g-14 mlp ratio, 1 layer": sized(
        "ViT-g-14", {"layers": 1, "image_size": 56}, {"layers": 1, "vocab_size": 999}
    ),
}


def seeded(build, clip_config: dict, seed: int):
    """(model, the next draw of the generator): what a seeded build gives and leaves behind."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build(clip_config)
        return model, torch.rand(4)


@pytest.fixture(scope="module", params=list(PLAIN), ids=list(PLAIN))
def twins(request):
    clip_config = PLAIN[request.param]
    ours, after_ours = seeded(plain_clip.PlainClip, clip_config, seed=5)
    theirs, after_theirs = seeded(build_open_clip, clip_config, seed=5)
    return clip_config, ours, theirs, (after_ours, after_theirs)


def test_the_plain_configs_are_plain():
    assert all(plain_clip.supports(clip) for clip in PLAIN.values())
    for name in (
        "ViT-B-32",
        "ViT-B-16",
        "ViT-L-14",
        "ViT-L-14-336",
        "ViT-H-14",
        "ViT-bigG-14",
        "ViT-B-32-256",
    ):
        assert plain_clip.supports(config_data(name)["clip"]), name


def test_a_seeded_build_draws_open_clips_numbers_in_open_clips_order(twins):
    _, ours, theirs, (after_ours, after_theirs) = twins
    assert isinstance(ours, plain_clip.PlainClip) and type(theirs).__module__.startswith("open_clip")
    mine, reference = ours.state_dict(), theirs.state_dict()
    assert list(mine) == list(reference)
    assert [name for name, _ in ours.named_parameters()] == [name for name, _ in theirs.named_parameters()]
    for name, tensor in reference.items():
        assert mine[name].dtype == tensor.dtype and torch.equal(mine[name], tensor), name
    assert torch.equal(ours.attn_mask, theirs.attn_mask)
    assert torch.equal(after_ours, after_theirs)  # what is drawn next (the MUSE head) is unchanged
    assert ours.vocab_size == theirs.vocab_size and ours.context_length == theirs.context_length


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("batch", [1, 3])
def test_the_same_outputs_bit_for_bit(twins, dtype, batch):
    clip_config, ours, theirs = twins[:3]
    mine, reference = ClipBackbone(copy.deepcopy(ours)), ClipBackbone(copy.deepcopy(theirs))
    assert mine.kind == reference.kind == "openai" and mine.grid_size == reference.grid_size
    mine.to(dtype).eval()
    reference.to(dtype).eval()
    height, width = ours.visual.image_size
    generator = torch.Generator().manual_seed(batch)
    images = torch.randn(batch, 3, height, width, generator=generator).to(dtype)
    layouts = {"contiguous": images, "channels last": images.contiguous(memory_format=torch.channels_last)}
    vocabulary = clip_config["text_cfg"].get("vocab_size", 49408)
    ids = torch.randint(0, vocabulary, (batch, min(7, ours.context_length)), generator=generator)
    with torch.no_grad():
        for layout, x in layouts.items():
            assert torch.equal(mine.image_tokens(x), reference.image_tokens(x)), layout
            assert torch.equal(mine.image_features(x), reference.image_features(x)), layout
            assert torch.equal(mine.clip.encode_image(x), reference.clip.encode_image(x)), layout
        assert torch.equal(mine.text_features(ids), reference.text_features(ids))


def test_training_computes_the_same_values_and_gradients(twins):
    clip_config, ours, theirs = twins[:3]
    mine, reference = ClipBackbone(copy.deepcopy(ours)).train(), ClipBackbone(copy.deepcopy(theirs)).train()
    height, width = ours.visual.image_size
    images = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(9))
    ids = torch.randint(0, clip_config["text_cfg"].get("vocab_size", 49408), (2, 5))
    for model in (mine, reference):
        loss = model.image_tokens(images).square().mean() + model.text_features(ids).square().mean()
        loss.backward()
    grads = dict(reference.named_parameters())
    for name, parameter in mine.named_parameters():
        expected = grads[name].grad
        assert (parameter.grad is None) == (expected is None), name
        assert parameter.grad is None or torch.equal(parameter.grad, expected), name


NOT_PLAIN = {
    "SigLIP (timm tower, custom text)": config_data("ViT-B-16-SigLIP")["clip"],
    "ResNet tower": config_data("RN50")["clip"],
    "ConvNeXt tower": config_data("convnext_base")["clip"],
    "CLIPA (no ln_pre, pooled after ln)": config_data("ViT-L-14-CLIPA")["clip"],
    "EVA (custom text)": config_data("EVA02-B-16")["clip"],
    "layer scale": sized("tiny", {"ls_init_value": 0.1}),
    "average pooling": sized("tiny", {"pool_type": "avg"}),
    "attentional pooling": sized("tiny", {"attentional_pool": True}),
    "no ln_pre": sized("tiny", {"no_ln_pre": True}),
    "patch dropout": sized("tiny", {"patch_dropout": 0.5}),
    "a text projection with bias": sized("tiny", text={"proj_bias": True}),
    "text mlp_ratio": sized("tiny", text={"mlp_ratio": 2.0}),
    "logit bias": sized("tiny", init_logit_bias=-10.0),
    "custom text": sized("tiny", custom_text=True),
}


@pytest.mark.parametrize("name", list(NOT_PLAIN))
def test_other_configs_are_left_to_open_clip(name):
    clip_config = NOT_PLAIN[name]
    assert not plain_clip.supports(clip_config)
    if name.startswith(("layer scale", "average", "no ln_pre", "a text projection", "logit bias")):
        model = build_clip(clip_config)  # cheap enough to build: open_clip's class, not ours
        assert type(model).__module__.startswith("open_clip")


def test_build_clip_takes_the_plain_path_for_plain_configs():
    assert isinstance(build_clip(TINY), plain_clip.PlainClip)


def test_a_model_loads_and_encodes_without_importing_open_clip(tmp_path):
    """The tiny model with random CLIP weights, and ViT-B-32's layout (1 layer) loading a CLIP weights
    file, each encode a clip and a text in a process that never imports open_clip, torchvision or timm;
    the embeddings equal this process's, where the same models are built through open_clip."""
    from safetensors.torch import save_file

    import muse_infer

    config = config_data("ViT-B-32")
    config["clip"] = PLAIN["ViT-B-32, 1 layer"]
    config_path = tmp_path / "b32-1.json"
    config_path.write_text(json.dumps(config))
    weights = tmp_path / "clip.safetensors"
    clip, _ = seeded(build_open_clip, config["clip"], seed=11)
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(weights))
    code = (  # on this process's thread count: the CPU kernels' sums may split by thread
        "import sys, json, torch, muse_infer\n"
        f"torch.set_num_threads({torch.get_num_threads()})\n"
        "out = {}\n"
        "for name, ref, weights in json.loads(sys.argv[1]):\n"
        "    model = muse_infer.load_model(ref, clip_weights=weights)\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    frames = torch.randn(1, 4, 3, 224, 224, generator=g)\n"
        "    mask = torch.ones(1, 4, dtype=torch.long)\n"
        "    with torch.no_grad():\n"
        "        out[name] = [model.encode_video(frames, mask).tolist(), model.encode_text(['a cat']).tolist()]\n"
        "out['imported'] = sorted(m for m in ('open_clip', 'torchvision', 'timm') if m in sys.modules)\n"
        "print(json.dumps(out))\n"
    )
    cases = [["tiny", "tiny", "random"], ["b32", str(config_path), str(weights)]]
    run = subprocess.run([sys.executable, "-c", code, json.dumps(cases)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out.pop("imported") == []
    for name, ref, clip_weights in cases:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(plain_clip, "supports", lambda clip_config: False)  # through open_clip
            model = muse_infer.load_model(ref, clip_weights=clip_weights)
        assert model.backbone.clip.__class__.__module__.startswith("open_clip")
        frames = torch.randn(1, 4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            video = model.encode_video(frames, torch.ones(1, 4, dtype=torch.long))
            text = model.encode_text(["a cat"])
        assert torch.equal(torch.tensor(out[name][0]), video), name
        assert torch.equal(torch.tensor(out[name][1]), text), name


def test_a_whole_seeded_model_is_unchanged():
    """``build_model`` (CLIP, then the MUSE head from the same generator) gives every tensor of the
    model built through open_clip, bit for bit: random-weight indexes stay comparable."""
    from muse_infer.loading.models import build_model

    config = shipped("tiny")
    ours = build_model(config, "random").state_dict()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plain_clip, "supports", lambda clip_config: False)
        theirs = build_model(config, "random").state_dict()
    assert list(ours) == list(theirs)
    for name, tensor in theirs.items():
        assert torch.equal(ours[name], tensor), name


def test_downloaded_clip_weights_are_found_without_importing_open_clip(tmp_path, monkeypatch):
    """ViT-B-32's default "openai" weights, downloaded before into the Hugging Face cache, resolve to the
    cached file from the shipped copy of open_clip's table, in a process that never imports open_clip;
    open_clip's own table (this process) names the same file."""
    from muse_infer.loading import models

    repo = tmp_path / "hub" / "models--timm--vit_base_patch32_clip_224.openai"
    snapshot = repo / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(b"not read here")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    code = (
        "import sys\n"
        "from muse_infer.loading.models import resolve_clip_weights\n"
        "from muse_infer.loading.reference import model_config, resolve_model\n"
        "print(resolve_clip_weights(model_config(resolve_model('ViT-B-32')), 'openai'))\n"
        "print(sorted(m for m in ('open_clip', 'torchvision', 'timm') if m in sys.modules))\n"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    found, imported = run.stdout.splitlines()
    assert found == str(snapshot / "open_clip_model.safetensors") and imported == "[]"

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(models, "pretrained_tags", lambda name: {})  # open_clip's table decides
    config = shipped("ViT-B-32")
    assert str(models.resolve_clip_weights(config, "openai")) == found
