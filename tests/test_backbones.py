"""Any open_clip backbone (issue 23): names resolved from open_clip's configs without torch, the shipped
ViT-B models unchanged, open_clip's preprocessing and tokenizers, and the models themselves equal to
open_clip's towers.

The equality checks run on open_clip's real architectures where that is quick enough, and on reduced
twins (fewer layers, a small text tower; same widths, patch grids and tower kinds) in the default
suite; the full ViT-L-14 and ViT-B-16-SigLIP checks are marked slow (~1 min and 6 GB each).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from backbone_factory import WORDS, reduced_model, tiny_tokenizer, twin_weights  # noqa: E402

from muse_infer import ModelSpec, load_model  # noqa: E402
from muse_infer.errors import ConfigError  # noqa: E402

CLI = [sys.executable, "-c", "from muse_infer.cli import main; main()"]
OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1"}


def run(*args, check_rc=0, env=None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, timeout=600, env=env or OFFLINE
    )
    assert result.returncode == check_rc, f"rc {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result


def one_frame_video(model, images: torch.Tensor) -> torch.Tensor:
    """encode_video of N one-frame clips (N, 1, 3, S, S), normalised (N, C)."""
    with torch.no_grad():
        return model.encode_video(images[:, None], torch.ones(len(images), 1, dtype=torch.long))


def open_clip_image(reference, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return F.normalize(reference.encode_image(images), dim=-1)


# --- names, identities, preprocessing: known without torch --------------------------------------------


def test_open_clip_names_are_known_without_torch():
    """NAME and NAME-meanP of open_clip models resolve, with their embedding width, frame preprocessing
    and text length, in a process that imports neither torch nor open_clip."""
    code = (
        "import sys, json; from muse_infer import ModelSpec\n"
        "out = {}\n"
        "for name in ('ViT-L-14', 'ViT-L-14-meanP', 'ViT-B-16-SigLIP', 'xlm-roberta-base-ViT-B-32-meanP'):\n"
        "    spec = ModelSpec.resolve(name, clip_weights='random')\n"
        "    out[name] = [spec.identity, spec.embed_dim, spec.settings, spec.facts.max_words]\n"
        "out['imported'] = sorted(m for m in ('torch', 'open_clip') if m in sys.modules)\n"
        "print(json.dumps(out))\n"
    )
    facts = json.loads(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )
    assert facts.pop("imported") == []
    large, large_meanp = facts["ViT-L-14"], facts["ViT-L-14-meanP"]
    assert large[1] == large_meanp[1] == 768 and large[3] == 77  # open_clip's context: encode_text exactly
    assert large[0]["config"]["num_blocks"] == 4 and large_meanp[0]["config"]["num_blocks"] == 0
    assert (
        large[0]["config"]["clip"]["vision_cfg"]["width"] == 1024
        and "quick_gelu" not in large[0]["config"]["clip"]
    )
    assert large[2] == {"max_frames": 12, "framerate": 1.0, "slice_mode": "uniform", "image_size": 224}
    siglip = facts["ViT-B-16-SigLIP"]
    assert siglip[1] == 768 and siglip[3] == 64
    assert siglip[2]["resize_mode"] == "squash" and siglip[2]["mean"] == [0.5, 0.5, 0.5] == siglip[2]["std"]
    assert siglip[0]["config"]["tokenizer"]["name"] == "timm/ViT-B-16-SigLIP"
    assert facts["xlm-roberta-base-ViT-B-32-meanP"][1] == 512


# Digests of (identity, settings, source) as the code before open_clip names made them (commit cb2fb17):
# indexes made with the shipped models must still match.
SHIPPED_DIGESTS = {
    "ViT-B-32/random": "e02f31fdcb770a5d",
    "ViT-B-32/openai": "7dd0df8511f61962",
    "ViT-B-16-meanP/None": "502dc7f2a6fbca23",
    "ViT-B-16/openai": "52d8be5b62f7cfc4",
    "tiny/random": "0411053d4d5a8039",
    "demo/None": "236123f31d4357ec",
}


@pytest.mark.parametrize("key", sorted(SHIPPED_DIGESTS))
def test_shipped_models_keep_their_identity_and_settings(key):
    name, weights = key.split("/")
    spec = ModelSpec.resolve(name, clip_weights=None if weights == "None" else weights)
    text = json.dumps([spec.identity, spec.settings, spec.source], sort_keys=True)
    assert hashlib.sha256(text.encode()).hexdigest()[:16] == SHIPPED_DIGESTS[key]
    if name.startswith("ViT-B"):
        assert spec.identity["config"]["clip"]["quick_gelu"] is True  # OpenAI's QuickGELU models still


def test_the_shipped_pretrained_table_is_the_installed_open_clips():
    """configs/open_clip/pretrained.json against open_clip's own pretrained configs (every model and tag
    both know), and every recommended default a tag of the architecture's activation."""
    from muse_infer import catalog

    shipped, installed = catalog.pretrained_table()["models"], catalog.build_table()["models"]
    shared = [(m, t) for m in shipped if m in installed for t in shipped[m] if t in installed[m]]
    assert len(shared) > 150
    assert all(shipped[m][t] == installed[m][t] for m, t in shared)
    for name, tag in catalog.RECOMMENDED.items():
        quick_gelu = catalog.open_clip_model_json(name).get("quick_gelu", False)
        assert tag in catalog.compatible_tags(name, quick_gelu), name
        assert ModelSpec.resolve(name).identity["clip_weights"] == tag


def test_weights_of_the_other_activation_are_refused_and_a_tag_brings_its_preprocessing():
    with pytest.raises(ConfigError, match="trained with QuickGELU.*--model ViT-L-14-quickgelu"):
        ModelSpec.resolve("ViT-L-14", clip_weights="openai").facts  # noqa: B018
    with pytest.raises(ConfigError, match="trained with GELU"):
        ModelSpec.resolve("ViT-B-32", clip_weights="laion2b_s34b_b79k").facts  # noqa: B018 (shipped: QuickGELU)
    default = ModelSpec.resolve("ViT-L-14")  # datacomp_xl_s13b_b90k: OpenAI's statistics
    laion = ModelSpec.resolve("ViT-L-14", clip_weights="laion2b_s32b_b82k")  # trained with mean/std 0.5
    assert "mean" not in default.settings and laion.settings["mean"] == [0.5, 0.5, 0.5]
    assert laion.identity != default.identity


def test_unknown_names_and_unsupported_towers_say_what_to_use():
    with pytest.raises(ConfigError, match="any open_clip model name"):
        ModelSpec.resolve("ViT-Q-99")
    with pytest.raises(ConfigError, match="use RN50-meanP"):
        ModelSpec.resolve("RN50").facts  # noqa: B018
    assert ModelSpec.resolve("RN50-quickgelu-meanP").embed_dim == 1024


# --- reduced twins of ViT-L-14 and SigLIP: equal to open_clip's towers ---------------------------------


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    """ViT-L-14 with 2 vision and 2 text layers (widths, 14 px patches, 16x16 grid, 768-d: ViT-L-14's):
    its config, open_clip's twin, the twin's random weights saved with torch.save, and our MUSE and
    meanP models loaded from that file (built once for the module)."""
    folder = tmp_path_factory.mktemp("large")
    config = reduced_model(
        folder, "ViT-L-14", "ViT-L-14-r2", vision={"layers": 2}, text={"layers": 2}, max_frames=2
    )
    weights = folder / "weights.pt"
    reference = twin_weights("ViT-L-14-r2", weights)
    meanp_config = _variant(config, folder, num_blocks=0, name="ViT-L-14-r2-meanP")
    models = {
        "muse": load_model(config, clip_weights=weights),
        "meanp": load_model(meanp_config, clip_weights=weights),
    }
    return Backbone(config, meanp_config, reference, weights, None, models)


@pytest.fixture(scope="module")
def siglip(tmp_path_factory):
    """open_clip's SigLIP2 B/32 256 px tower (timm trunk, no class token, MAP head) with a one-layer text
    tower over a tiny tokenizer; random weights saved as safetensors; our models built once."""
    folder = tmp_path_factory.mktemp("siglip")
    text = {"layers": 1, "width": 64, "heads": 1, "vocab_size": 32, "context_length": 16}
    config = reduced_model(folder, "ViT-B-32-SigLIP2-256", "SigLIP-r1", text=text, max_words=16, max_frames=2)
    weights = folder / "weights.safetensors"
    reference = twin_weights("SigLIP-r1", weights)
    tokenizer = tiny_tokenizer(folder / "tokenizer")
    meanp_config = _variant(config, folder, num_blocks=0, name="SigLIP-r1-meanP")
    models = {
        "muse": load_model(config, clip_weights=weights, tokenizer=tokenizer),
        "meanp": load_model(meanp_config, clip_weights=weights),
    }
    return Backbone(config, meanp_config, reference, weights, tokenizer, models)


@dataclass
class Backbone:
    config: Path
    meanp_config: Path
    reference: torch.nn.Module  # open_clip's model
    weights: Path
    tokenizer: Path | None
    models: dict


def _variant(config: Path, folder: Path, **fields) -> Path:
    data = json.loads(config.read_text()) | fields
    if fields.get("num_blocks") == 0:
        data["scales"] = []
    path = folder / f"{data['name']}.json"
    path.write_text(json.dumps(data))
    return path


def test_reduced_vit_l_14_equals_open_clip(large):
    muse, meanp = large.models["muse"], large.models["meanp"]
    images = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    assert (one_frame_video(meanp, images) - open_clip_image(large.reference, images)).abs().max() <= 1e-5
    texts = ["a dog runs on the beach", "a small red car " * 20]  # the second longer than the context
    import open_clip

    with torch.no_grad():
        tokens = open_clip.get_tokenizer("ViT-L-14")(texts)
        expected = F.normalize(large.reference.encode_text(tokens), dim=-1)
    assert (muse.encode_text(texts) - expected).abs().max() <= 1e-5
    assert muse.backbone.kind == "openai" and muse.backbone.grid_size == 16 and muse.config.embed_dim == 768
    assert (one_frame_video(muse, images) - one_frame_video(meanp, images)).abs().max() <= 1e-6


def test_reduced_siglip_equals_open_clip(siglip):
    muse, meanp = siglip.models["muse"], siglip.models["meanp"]
    images = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    assert (one_frame_video(meanp, images) - open_clip_image(siglip.reference, images)).abs().max() <= 1e-5
    assert muse.backbone.kind == "timm" and muse.backbone.grid_size == 8
    # a fresh head is the identity: the MUSE model is the backbone's zero-shot mean pooling
    assert (one_frame_video(muse, images) - one_frame_video(meanp, images)).abs().max() <= 1e-6
    texts = ["A dog, jumps over the ball!", "the big blue car"]
    ids = muse.tokenizer(texts)
    with torch.no_grad():
        expected = F.normalize(siglip.reference.encode_text(ids), dim=-1)
    assert ids.shape == (2, 16) and (muse.encode_text(texts) - expected).abs().max() <= 1e-5


def test_the_muse_head_takes_other_grids_and_widths(large, tmp_path):
    """ViT-L-14's 16x16 grid and 768-d tokens, and 336 px's 24x24: the pyramid and blocks read them
    (sequence T * (1 + (G/2)^2 + G^2 + (2G)^2)), and an opened gate changes the embedding."""
    config = reduced_model(
        tmp_path, "ViT-L-14-336", "ViT-L-14-336-r1", vision={"layers": 1}, text={"layers": 1}
    )
    for model, image_size, grid, frames in (
        (copy.deepcopy(large.models["muse"]), 224, 16, 2),
        (load_model(config, clip_weights="random"), 336, 24, 1),
    ):
        frames = torch.randn(1, frames, 3, image_size, image_size, generator=torch.Generator().manual_seed(2))
        mask = torch.ones(1, frames.shape[1], dtype=torch.long)
        with torch.no_grad():
            tokens = model.backbone.image_tokens(frames[0])
            lengths = []
            model.blocks[0].register_forward_pre_hook(lambda module, args: lengths.append(args[0].shape[1]))  # noqa: B023
            closed = model.encode_video(frames, mask)
            torch.nn.init.normal_(model.blocks[-1].temporal_fc.weight, std=0.05)
            opened = model.encode_video(frames, mask)
        assert tokens.shape == (frames.shape[1], 1 + grid * grid, 768)
        assert lengths[0] == frames.shape[1] * (1 + (grid // 2) ** 2 + grid**2 + (2 * grid) ** 2)
        assert (closed - opened).abs().max() > 1e-3 and torch.isfinite(opened).all()


# --- frames as open_clip preprocesses them ---------------------------------------------------------


@pytest.mark.parametrize("resize_mode", ["shortest", "squash"])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_frames_equal_open_clips_transform(resize_mode, interpolation):
    """fit_frame + normalise against open_clip's own inference transform (PIL in, tensor out), on frames
    of awkward sizes, with SigLIP's statistics and CLIP's."""
    import numpy as np
    from open_clip.transform import image_transform
    from PIL import Image

    from muse_infer.video.frames import CLIP_MEAN, CLIP_STD, fit_frame, normalise

    rng = np.random.default_rng(6)
    for (height, width), size, (mean, std) in (
        ((37, 61), 32, ((0.5,) * 3, (0.5,) * 3)),
        ((300, 199), 224, (CLIP_MEAN, CLIP_STD)),
        ((64, 64), 64, (CLIP_MEAN, CLIP_STD)),
    ):
        rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        transform = image_transform(
            size, False, mean, std, resize_mode=resize_mode, interpolation=interpolation
        )
        expected = transform(Image.fromarray(rgb)).numpy()
        ours = normalise(fit_frame(rgb, size, resize_mode, interpolation), mean, std)
        assert ours.shape == expected.shape and np.abs(ours - expected).max() <= 1e-6


def test_uint8_clips_normalised_on_the_device_equal_the_float_path(siglip):
    """TorchBackend.submit_clips (uint8, normalised where the model runs, with SigLIP's mean and std)
    against encode_video of clip_inputs' float frames: the same embeddings, bit for bit."""
    import numpy as np

    from muse_infer.runtime.torch_backend import TorchBackend
    from muse_infer.video.frames import clip_inputs

    backend = TorchBackend(siglip.models["meanp"], {}, {}, "cpu", "fp32")
    assert backend.preprocess["mean"] == [0.5] * 3
    rng = np.random.default_rng(7)
    clips = [rng.integers(0, 256, (n, 256, 256, 3), dtype=np.uint8) for n in (2, 1)]
    mean, std = backend.preprocess["mean"], backend.preprocess["std"]
    fast = backend.submit_clips(clips, 2).result()
    reference = backend.encode_video(*clip_inputs(clips, 2, mean, std))
    assert np.array_equal(fast, reference)


# --- the text tower alone, as search loads it ---------------------------------------------------------


TEXTS = ["a dog runs on the beach", "a small red car " * 20]  # the second longer than the context


def test_search_loads_open_clips_vit_l_14_text_tower_alone_with_the_same_embeddings(large):
    """ViT-L-14's text tower is the plain CLIP transformer (GELU): a TextEncoder reads only its tensors
    from the --clip-weights file (model.text_tower), and gives open_clip's encode_text and the whole
    model's embeddings; random weights are drawn alike by both loaders."""
    import open_clip

    from muse_infer import TextEncoder
    from muse_infer.model.text_tower import TextModel

    text = TextEncoder(large.meanp_config, clip_weights=large.weights, device="cpu", precision="fp32")
    assert text.backend.text_only and isinstance(text.backend.model, TextModel)
    with torch.no_grad():
        tokens = open_clip.get_tokenizer("ViT-L-14")(TEXTS)
        expected = F.normalize(large.reference.encode_text(tokens), dim=-1).numpy()
        whole = large.models["meanp"].encode_text(TEXTS).numpy()
    assert abs(text.encode(TEXTS) - expected).max() <= 1e-5
    assert abs(text.encode(TEXTS) - whole).max() <= 1e-6
    drawn = TextEncoder(large.config, clip_weights="random", device="cpu", precision="fp32")
    with torch.no_grad():
        whole = load_model(large.config, clip_weights="random").encode_text(TEXTS).numpy()
    assert drawn.backend.text_only and abs(drawn.encode(TEXTS) - whole).max() <= 1e-6


def test_towers_the_text_tower_alone_does_not_cover_are_loaded_whole_for_search(siglip):
    """SigLIP's (Hugging Face tokenizer, its own pooling), xlm-roberta's and custom_text models' (EVA,
    PE-Core, ViTamin: the same transformer under other names) text towers are not the fast tower's: a
    TextEncoder loads the whole model, with the same embeddings as open_clip's."""
    from muse_infer import TextEncoder
    from muse_infer.catalog import config_data
    from muse_infer.model.text_tower import supports

    for name, covered in (
        ("ViT-L-14", True),
        ("ViT-B-32", True),
        ("ViT-B-16-SigLIP", False),
        ("xlm-roberta-base-ViT-B-32", False),
        ("EVA02-B-16", False),
        ("PE-Core-T-16-384", False),
    ):
        assert supports(config_data(name)["clip"]) is covered, name
    text = TextEncoder(
        siglip.config, clip_weights=siglip.weights, tokenizer=siglip.tokenizer, device="cpu", precision="fp32"
    )
    assert not text.backend.text_only
    texts = ["A dog, jumps over the ball!", "the big blue car"]
    with torch.no_grad():
        expected = F.normalize(
            siglip.reference.encode_text(torch.from_numpy(text.backend.tokenize(texts))), dim=-1
        ).numpy()
    assert abs(text.encode(texts) - expected).max() <= 1e-5
    # a custom_text model with random weights (drawn by open_clip's initialisers, not by name)
    custom = TextEncoder("PE-Core-T-16-384-meanP", clip_weights="random", device="cpu", precision="fp32")
    with torch.no_grad():
        whole = load_model("PE-Core-T-16-384-meanP", clip_weights="random").encode_text(TEXTS).numpy()
    assert not custom.backend.text_only and abs(custom.encode(TEXTS) - whole).max() <= 1e-6


def test_an_example_image_is_fitted_with_the_models_preprocessing(siglip, tmp_path):
    """search --like photo.png on a SigLIP index: the image is squashed (SigLIP's resize), not cropped,
    and normalised with SigLIP's statistics, as open_clip's transform prepares it."""
    import numpy as np
    from open_clip.transform import image_transform
    from PIL import Image

    from muse_infer import VideoEncoder

    rgb = np.random.default_rng(8).integers(0, 256, (90, 300, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    video = VideoEncoder(siglip.meanp_config, clip_weights=siglip.weights, device="cpu", precision="fp32")
    assert video.frame_settings.resize_mode == "squash"
    size, mean, std = 256, (0.5,) * 3, (0.5,) * 3
    transform = image_transform(size, False, mean, std, resize_mode="squash", interpolation="bicubic")
    expected = open_clip_image(siglip.reference, transform(Image.fromarray(rgb))[None]).numpy()[0]
    assert abs(video.encode_example(tmp_path / "photo.png") - expected).max() <= 1e-5


# --- tokenizers open_clip does not bundle ----------------------------------------------------------


def test_hf_tokenizer_layout_cleaning_truncation_and_separator(tmp_path):
    from muse_infer.tokenizer import HfTokenizer

    folder = tiny_tokenizer(tmp_path / "siglip")
    vocab = {w: i + 3 for i, w in enumerate(WORDS)}
    ids = HfTokenizer(folder, 8, clean="canonicalize")(["A Dog, runs!", " ".join(WORDS)])
    assert ids[0].tolist() == [vocab["a"], vocab["dog"], vocab["runs"], 1, 0, 0, 0, 0]  # words </s> <pad>
    assert ids[1].tolist() == [vocab[w] for w in WORDS[:7]] + [1]  # cut to 8, the end token kept
    unknown = HfTokenizer(folder, 8, clean="whitespace")(["A dog"])  # no lower-casing: "A" is unknown
    assert unknown[0, :3].tolist() == [2, vocab["dog"], 1]
    xlmr = tiny_tokenizer(tmp_path / "xlmr", style="xlmr")
    stripped = HfTokenizer(xlmr, 6, strip_sep_token=True)(["the cat"])
    assert stripped[0].tolist() == [0, vocab["the"] + 1, vocab["cat"] + 1, 0, 1, 1]  # </s> zeroed, pad 1


def test_hf_tokenizer_matches_open_clips_where_transformers_is_installed(tmp_path):
    transformers = pytest.importorskip("transformers")  # open_clip's HFTokenizer is built on it
    del transformers
    from open_clip.tokenizer import HFTokenizer

    from muse_infer.tokenizer import HfTokenizer

    texts = ["A Dog, runs!", "the small red car jumps over the blue ball " * 3, "cat"]
    for style, clean, strip in (("siglip", "canonicalize", False), ("xlmr", "whitespace", True)):
        folder = tiny_tokenizer(tmp_path / style, style=style)
        ours = HfTokenizer(folder, 12, clean, strip)(texts)
        theirs = HFTokenizer(str(folder), context_length=12, clean=clean, strip_sep_token=strip)(texts)
        assert torch.equal(ours, theirs), style


def test_an_xlm_roberta_text_tower_equals_open_clips_where_transformers_is_installed(tmp_path):
    """A multilingual tower's path (open_clip's Hugging Face text encoder, mean pooling over the
    attention mask): a tiny XLM-R config and tokenizer in one folder (--tokenizer), ViT-B-32 reduced."""
    transformers = pytest.importorskip("transformers")
    import open_clip
    from open_clip.tokenizer import HFTokenizer

    folder = tiny_tokenizer(tmp_path / "xlmr", style="xlmr")
    transformers.XLMRobertaConfig(
        vocab_size=len(WORDS) + 4, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=100, pad_token_id=1, bos_token_id=0, eos_token_id=2,
    ).save_pretrained(folder)  # fmt: skip
    text = {"hf_model_name": str(folder)}  # open_clip's twin reads it there; ours from --tokenizer
    config = reduced_model(tmp_path, "xlm-roberta-base-ViT-B-32", "XLMR-r1", vision={"layers": 1}, text=text)
    torch.manual_seed(1)
    reference = open_clip.create_model("XLMR-r1", pretrained=None, pretrained_text=False).eval()
    torch.save(reference.state_dict(), tmp_path / "w.pt")
    model = load_model(config, clip_weights=tmp_path / "w.pt", tokenizer=folder)
    texts = ["the dog runs", "a small red car jumps over the ball"]
    ids = HFTokenizer(str(folder), context_length=77)(texts)
    assert torch.equal(model.tokenizer(texts), ids)
    with torch.no_grad():
        expected = F.normalize(reference.encode_text(ids), dim=-1)
    assert (model.encode_text(texts) - expected).abs().max() <= 1e-5
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    assert (one_frame_video(model, images) - open_clip_image(reference, images)).abs().max() <= 1e-5


def test_a_hugging_face_text_tower_without_transformers_or_files_says_what_to_do(tmp_path):
    from muse_infer.model.backbone import build_open_clip

    clip = json.loads(json.dumps(ModelSpec.resolve("xlm-roberta-base-ViT-B-32").identity["config"]["clip"]))
    try:
        import transformers  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="pip install transformers"):
            build_open_clip(clip, tmp_path)
        return
    with pytest.raises(ConfigError, match="no config.json there.*huggingface.co/xlm-roberta-base"):
        build_open_clip(clip, tmp_path)


def test_missing_tokenizer_files_name_what_to_fetch(tmp_path, siglip, monkeypatch):
    import huggingface_hub.constants

    from muse_infer.config import load_config
    from muse_infer.tokenizer import text_tokenizer

    config = load_config(siglip.config)
    with pytest.raises(
        ConfigError,
        match=r"no tokenizer.json there.*tokenizer_config.json.*huggingface.co/timm/ViT-B-32-SigLIP2-256.*--tokenizer DIR",
    ):
        text_tokenizer(config, tmp_path)  # an empty folder
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty cache
    with pytest.raises(ConfigError, match="not in the Hugging Face cache. Fetch tokenizer.json"):
        text_tokenizer(config)


def test_a_tokenizer_in_the_hugging_face_cache_is_found_offline(tmp_path, siglip, monkeypatch):
    """The cache layout huggingface_hub writes (refs/main -> snapshots/<hash>/files), found with no
    network and no --tokenizer."""
    import huggingface_hub.constants

    from muse_infer.config import load_config
    from muse_infer.tokenizer import text_tokenizer

    repo = tmp_path / "hub" / "models--timm--ViT-B-32-SigLIP2-256"
    snapshot = repo / "snapshots" / "0123abc"
    tiny_tokenizer(snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    tokenizer = text_tokenizer(load_config(siglip.config))
    assert tokenizer.folder == snapshot
    assert tokenizer(["a dog"])[0, :3].tolist() == [3, WORDS.index("dog") + 3, 1]


# --- the commands, end to end, on the reduced models ------------------------------------------------


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    from video_factory import make_video

    root = tmp_path_factory.mktemp("backbone-videos") / "videos"
    root.mkdir()
    for i in range(2):
        make_video(root / f"clip_{i}.mp4", 3 + i, 4)
    return root


def test_encode_and_search_with_siglip_and_its_tokenizer(siglip, videos, tmp_path):
    """encode-videos (as moments) records the --tokenizer folder, search finds it there; the frames
    were squashed and normalised with SigLIP's statistics (recorded in the index's settings)."""
    out = tmp_path / "moments.npy"
    run(
        "encode-videos", videos, "--out", out, "--model", siglip.config, "--clip-weights", siglip.weights,
        "--tokenizer", siglip.tokenizer, "--window", "2", "--stride", "1",
        "--device", "cpu", "--frames", "2", "--workers", "0", "-q",
    )  # fmt: skip
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["settings"]["resize_mode"] == "squash" and sidecar["settings"]["mean"] == [0.5] * 3
    hits = json.loads(run("search", "a dog runs", "--index", out, "--json", "--device", "cpu").stdout)
    assert len(hits) == 2 and all("start_s" in hit for hit in hits)


def test_encode_and_search_with_a_vit_l_14_meanp_config(large, videos, tmp_path):
    out = tmp_path / "emb.npy"
    run(
        "encode-videos", videos, "--out", out, "--model", large.meanp_config, "--clip-weights", large.weights,
        "--device", "cpu", "--frames", "2", "--workers", "0", "-q",
    )  # fmt: skip
    hits = json.loads(run("search", "a red car", "--index", out, "--json", "--device", "cpu").stdout)
    assert len(hits) == 2
    settings = json.loads(out.with_suffix(".json").read_text())["settings"]
    assert settings == {"max_frames": 2, "framerate": 1.0, "slice_mode": "uniform", "image_size": 224}


def test_models_lists_backbones_with_width_parameters_and_cost():
    listing = run("models").stdout
    for name in ("ViT-L-14", "ViT-L-14-meanP", "ViT-B-16-SigLIP", "xlm-roberta-base-ViT-B-32"):
        assert f"\n{name} " in listing
    rows = {row["name"]: row for row in json.loads(run("models", "--json").stdout)}
    assert rows["ViT-L-14-meanP"]["embed_dim"] == 768 and rows["ViT-L-14-meanP"]["parameters"] > 4e8
    assert rows["ViT-L-14-meanP"]["cpu_seconds_per_video"] > 0
    assert rows["demo"]["trained_head"].startswith("trained") and rows["ViT-L-14"]["trained_head"].startswith(
        "untrained"
    )
    assert "multilingual" in rows["xlm-roberta-base-ViT-B-32"]["text"]
    every = {row["name"] for row in json.loads(run("models", "--all", "--json").stdout)}
    assert {"ViT-gopt-16-SigLIP2-256", "RN50-meanP", "ViT-L-14-336"} <= every and len(every) > 250


# --- export, bf16, training, conversion on the new towers ---------------------------------------------


def _export(siglip, out: Path, formats: tuple[str, ...]):
    from export import export_model

    spec = ModelSpec.resolve(siglip.config, clip_weights=siglip.weights, tokenizer=siglip.tokenizer)
    result = export_model(siglip.models["muse"], out, formats, identity=spec.identity, source=spec.source)
    assert result.errors and max(result.errors.values()) <= 1e-4  # each file run in a fresh process
    return result


@pytest.mark.slow  # 25 s; the default suite verifies ViT-L-14-meanP's ONNX export
def test_onnx_export_of_a_siglip_muse_model_verifies_and_tokenizes_on_its_own(siglip, tmp_path):
    """The timm tower with a MUSE head as ONNX, verified against the eager model in a fresh process; the
    export carries the tokenizer and SigLIP's preprocessing, so it needs no --tokenizer."""
    from muse_infer import TextEncoder

    out = tmp_path / "export"
    result = _export(siglip, out, ("onnx",))
    assert set(result.errors) == {"video_encoder.onnx", "text_encoder.onnx"}
    assert (out / "tokenizer" / "tokenizer.json").is_file()
    assert result.manifest["preprocessing"]["mean"] == [0.5] * 3
    assert result.manifest["preprocessing"]["resize_mode"] == "squash"
    texts = ["a dog runs", "the red car"]
    exported = TextEncoder(out, backend="onnx", device="cpu").encode(texts)
    with torch.no_grad():
        eager = siglip.models["muse"].encode_text(texts).numpy()
    assert abs(exported - eager).max() <= 1e-4
    as_torch = ModelSpec.resolve(out, backend="torch")  # the model it was made from, with its tokenizer
    assert as_torch.ref.path == siglip.config.resolve() and as_torch.tokenizer == str(out / "tokenizer")


def test_onnx_export_of_a_vit_l_14_meanp_model_verifies(large, tmp_path):
    """open_clip's ViT-L-14 (GELU, 16x16 grid, 768-d) with mean pooling as ONNX: each file verified
    against the eager model in a fresh process; its text encoder agrees with the text tower search
    loads alone."""
    from export import export_model
    from muse_infer import TextEncoder

    spec = ModelSpec.resolve(large.meanp_config, clip_weights=large.weights)
    out = tmp_path / "export"
    result = export_model(large.models["meanp"], out, ("onnx",), identity=spec.identity, source=spec.source)
    assert set(result.errors) == {"video_encoder.onnx", "text_encoder.onnx"}
    assert max(result.errors.values()) <= 1e-4
    exported = TextEncoder(out, backend="onnx", device="cpu").encode(TEXTS)
    alone = TextEncoder(large.meanp_config, clip_weights=large.weights, device="cpu", precision="fp32")
    assert abs(exported - alone.encode(TEXTS)).max() <= 1e-4


@pytest.mark.slow
def test_torchscript_torch_export_and_external_onnx_data_of_a_siglip_muse_model_verify(
    siglip, tmp_path, monkeypatch
):
    """~6 min on 2 busy cores: TorchScript (op and portable) and torch.export files of the same model,
    and ONNX with its weights in a .data file beside it (as encoders over 1.5 GB are written: ViT-H)."""
    import export.onnx_export

    monkeypatch.setattr(export.onnx_export, "EXTERNAL_DATA_BYTES", 0)
    result = _export(siglip, tmp_path / "export", ("onnx", "torchscript", "pt2"))
    expected = {"video_encoder.pt", "video_encoder.portable.pt", "video_encoder.pt2", "text_encoder.pt2"}
    assert expected | {"video_encoder.onnx"} <= set(result.errors)
    assert (tmp_path / "export" / "video_encoder.onnx.data").is_file()


def test_bf16_follows_fp32_on_the_new_towers(siglip, large):
    from muse_infer.model.precision import cast_for_inference

    for backbone, size in ((siglip, 256), (large, 224)):
        model = copy.deepcopy(backbone.models["muse"])
        frames = torch.randn(1, 2, 3, size, size, generator=torch.Generator().manual_seed(3))
        mask = torch.tensor([[1, 1]])
        with torch.no_grad():
            for block in model.blocks:
                torch.nn.init.normal_(block.temporal_fc.weight, std=0.02)
            fp32 = model.encode_video(frames, mask)
            bf16 = cast_for_inference(model, "bf16").encode_video(frames, mask)
        assert bf16.dtype == torch.float32 and (fp32 * bf16).sum(-1).min() > 0.99


@pytest.mark.slow  # 13 s; training is covered on the tiny model in the default suite
def test_training_a_siglip_model_with_its_tokenizer(siglip, videos, tmp_path):
    """One epoch of `muse-infer train` on the timm tower with its Hugging Face tokenizer; the text length
    is the model's (SigLIP's last-token pooling needs the full context)."""
    data = tmp_path / "pairs.jsonl"
    captions = ("a dog runs", "a red car")
    data.write_text(
        "".join(
            json.dumps({"video": str(p), "caption": c}) + "\n"
            for p, c in zip(sorted(videos.iterdir()), captions, strict=True)
        )
    )
    run(
        "train", "--model", siglip.meanp_config, "--clip-weights", siglip.weights, "--tokenizer", siglip.tokenizer,
        "--layout", "jsonl", "--train", data, "--out-dir", tmp_path / "run", "--epochs", "1", "--batch-size", "2",
        "--device", "cpu", "--set", "max_frames=2", "--cache-dir", tmp_path / "cache", "-q",
    )  # fmt: skip
    trained = load_model(tmp_path / "run" / "epoch_1.safetensors", tokenizer=siglip.tokenizer)
    assert trained.config.max_words == 16 and trained.config.tokenizer["name"] == "timm/ViT-B-32-SigLIP2-256"
    assert trained.encode_text("a dog").shape == (1, 768)


def test_authors_layout_round_trip_on_a_vit_l_14_head(large):
    from muse_infer.loading.convert import convert_clip4clip, to_authors_state_dict

    model = large.models["muse"]
    converted, report = convert_clip4clip(to_authors_state_dict(model), base_config=model.config)
    assert report.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(converted.state_dict()[key], value), key


# --- the full architectures (slow: ~1 min and up to 6 GB each) ---------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ViT-L-14", "ViT-B-16-SigLIP"])
def test_full_size_meanp_video_equals_open_clip_encode_image(name, tmp_path):
    import open_clip

    weights = tmp_path / "w.pt"
    reference = twin_weights(name, weights)
    model = load_model(f"{name}-meanP", clip_weights=weights)
    size = model.config.image_size
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(4))
    assert (one_frame_video(model, images) - open_clip_image(reference, images)).abs().max() <= 1e-5
    if name == "ViT-L-14":
        texts = ["a dog catches a frisbee", "two people ride bicycles along a river at sunset"]
        with torch.no_grad():
            expected = F.normalize(reference.encode_text(open_clip.get_tokenizer(name)(texts)), dim=-1)
        assert (model.encode_text(texts) - expected).abs().max() <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["random", "file"])
def test_encode_videos_and_search_with_the_full_vit_l_14_meanp(videos, tmp_path, weights):
    """encode-videos --model ViT-L-14-meanP, then search (its text tower loaded alone): with a saved
    open_clip ViT-L-14 the search scores are the index rows against open_clip's encode_text."""
    import numpy as np
    import open_clip

    out = tmp_path / "emb.npy"
    reference = twin_weights("ViT-L-14", tmp_path / "w.pt") if weights == "file" else None
    clip_weights = tmp_path / "w.pt" if weights == "file" else "random"
    run(
        "encode-videos", videos, "--out", out, "--model", "ViT-L-14-meanP", "--clip-weights", clip_weights,
        "--device", "cpu", "--precision", "fp32", "--frames", "2", "--workers", "0", "-q",
    )  # fmt: skip
    hits = json.loads(run("search", "a dog", "--index", out, "--json", "--device", "cpu").stdout)
    assert len(hits) == 2
    if reference is not None:
        with torch.no_grad():
            query = F.normalize(reference.encode_text(open_clip.get_tokenizer("ViT-L-14")(["a dog"])), dim=-1)
        rows = np.load(out)
        expected = rows / np.linalg.norm(rows, axis=1, keepdims=True) @ query[0].numpy()
        assert max(abs(hit["score"] - expected[hit["row"]]) for hit in hits) <= 1e-5
