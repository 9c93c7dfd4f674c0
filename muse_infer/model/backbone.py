"""CLIP as open_clip builds it, exposing what MUSE needs: each frame's token and its projected patch
grid, and the text feature.

Any open_clip image-text model builds here from its config dict as ``open_clip.create_model`` builds it
(``CLIP``, or ``CustomTextCLIP`` for SigLIP's and Hugging Face text towers), so open_clip's state dicts
load by name; the plain layout (OpenAI's ViTs) is built by ``plain_clip`` with the same modules and
names, without importing open_clip. The image tower decides what a frame gives the MUSE head (``tower_kind``):

- "openai": open_clip's ViT in OpenAI's layout (class token, ln_post, proj): every token through
  ln_post and the projection; the class token is the frame token (CLIP4Clip's, unchanged).
- "vit": open_clip's ViT pooled otherwise (mean of patches, LayerNorm after pooling): the pooled,
  projected feature is the frame token; the patches get ln_post and the projection.
- "timm": a timm ViT trunk (SigLIP, SigLIP2: no class token, an attention-pool "MAP" head): the frame
  token is the trunk's pooled output through open_clip's head, i.e. exactly ``encode_image``; the patch
  tokens are the trunk's normed tokens through the same per-token layers (fc_norm, heads).
- "pooled": any other tower (ResNets, ConvNeXt): ``encode_image`` only, so meanP only.

Why the pooled embedding as the frame token: it is the feature the tower was trained to align with
text (for SigLIP there is no class token at all; its MAP head is what produces the image embedding).
With the MUSE blocks' zero-initialised gates, a fresh MUSE model then equals the backbone's zero-shot
mean pooling exactly, whatever the tower; patch tokens feed the pyramid only.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from . import plain_clip
from .text_tower import clip_text_features

TOWER_KINDS = ("openai", "vit", "timm", "pooled")


def build_clip(clip_config: dict, text_files: str | Path | None = None) -> nn.Module:
    """The CLIP model of an open_clip config dict, as ``open_clip.create_model`` would build it without
    weights: ``plain_clip.PlainClip`` for the plain layout (no open_clip import: seconds saved), else
    open_clip's ``CLIP`` or ``CustomTextCLIP`` (``build_open_clip``). Both draw the same seeded weights."""
    if plain_clip.supports(clip_config):
        return plain_clip.PlainClip(clip_config)
    return build_open_clip(clip_config, text_files)


def build_open_clip(clip_config: dict, text_files: str | Path | None = None) -> nn.Module:
    """open_clip's ``CLIP`` or ``CustomTextCLIP`` from its config dict, as ``open_clip.create_model``
    would build it without weights. ``text_files``: the folder holding a Hugging Face text tower's
    ``config.json`` (xlm-roberta's); no download is ever attempted."""
    from open_clip.model import CLIP, CustomTextCLIP

    config = json.loads(json.dumps(clip_config))  # a deep copy: the keys are consumed below
    if "multimodal_cfg" in config:
        raise ConfigError("open_clip's CoCa (captioning) models are not supported: choose a CLIP model")
    text_cfg = config["text_cfg"]
    custom_text = bool(config.pop("custom_text", False))
    if text_cfg.get("hf_model_name"):
        text_cfg["hf_model_name"] = str(_hf_text_folder(text_cfg["hf_model_name"], text_files))
        text_cfg["hf_model_pretrained"] = False
        custom_text = True
    if config["vision_cfg"].get("timm_model_name"):
        config["vision_cfg"]["timm_model_pretrained"] = False
    model_class = CustomTextCLIP if custom_text else CLIP
    return model_class(**config)


def _hf_text_folder(repo: str, folder: str | Path | None) -> Path:
    from ..tokenizer import HF_TEXT_CONFIG, hf_files

    try:
        import transformers  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"the {repo} text tower is a Hugging Face transformers model: pip install transformers"
        ) from None
    return hf_files(repo, folder, (HF_TEXT_CONFIG,), what="text tower")


def tower_kind(visual: nn.Module) -> str:
    """What an open_clip image tower gives per frame ("openai", "vit", "timm" or "pooled")."""
    if hasattr(visual, "conv1") and hasattr(visual, "transformer") and hasattr(visual, "class_embedding"):
        if getattr(visual, "attn_pool", None) is not None or visual.proj is None:
            return "pooled"
        standard = visual.pool_type == "tok" and not getattr(visual, "final_ln_after_pool", False)
        return "openai" if standard else ("vit" if visual.pool_type in ("tok", "avg") else "pooled")
    trunk = getattr(visual, "trunk", None)
    if trunk is not None and all(
        hasattr(trunk, name) for name in ("forward_features", "forward_head", "num_prefix_tokens", "fc_norm")
    ):
        grid = getattr(getattr(trunk, "patch_embed", None), "grid_size", None)
        if (
            grid is not None
            and len(grid) == 2
            and grid[0] == grid[1]
            and not getattr(trunk, "dynamic_img_size", False)
        ):
            return "timm"
    return "pooled"


class ClipBackbone(nn.Module):
    """Wraps a CLIP model (open_clip's, or ``plain_clip.PlainClip``) as ``self.clip``, so state-dict keys
    read ``clip.visual.*`` etc.

    need_tokens: whether the patch grid is needed (a MUSE head); a tower without one ("pooled") then
    raises ConfigError."""

    def __init__(self, clip: nn.Module, need_tokens: bool = True):
        super().__init__()
        visual = getattr(clip, "visual", None)
        if visual is None:
            raise ConfigError("not an open_clip image-text model (no image tower)")
        self.kind = tower_kind(visual)
        if need_tokens and self.kind == "pooled":
            raise ConfigError(
                f"a MUSE head needs an image tower with a patch grid (a ViT); this {type(visual).__name__} "
                "tower gives one embedding a frame: use the model's -meanP variant"
            )
        self.clip = clip

    @property
    def grid_size(self) -> int:
        visual = self.clip.visual
        if self.kind == "timm":
            return int(visual.trunk.patch_embed.grid_size[0])
        return int(visual.grid_size[0])

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the image tower computes in (its first weight's)."""
        return next(self.clip.visual.parameters()).dtype

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, 3, H, W) -> the frame tokens (N, C): open_clip's ``encode_image`` (unnormalised)."""
        if self.kind == "openai":
            return self.image_tokens(images)[:, 0]  # CLIP4Clip's path, as before
        return self.clip.visual(images)

    def image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, 3, H, W) -> tokens (N, 1 + G*G, C): the frame token, then the patches row-major,
        every one in the joint embedding width C (projected as the tower projects its pooled output)."""
        if self.kind == "openai":
            visual = self.clip.visual
            x = visual._embeds(images)  # (N, 1 + G*G, width)
            x = visual.transformer(x)
            x = visual.ln_post(x)
            return x @ visual.proj  # (N, 1 + G*G, C); open_clip's output_tokens would skip proj
        if self.kind == "vit":
            return self._vit_tokens(images)
        if self.kind == "timm":
            return self._timm_tokens(images)
        raise ConfigError("this image tower has no patch tokens (use the model's -meanP variant)")

    def _vit_tokens(self, images: torch.Tensor) -> torch.Tensor:
        visual = self.clip.visual
        x = visual.transformer(visual._embeds(images))
        pooled, patches = visual._pool(x)  # pooled: what encode_image projects
        if getattr(visual, "final_ln_after_pool", False):
            patches = visual.ln_post(patches)  # pooled got ln_post after pooling; patches get it here
        return torch.cat([(pooled @ visual.proj).unsqueeze(1), patches @ visual.proj], dim=1)

    def _timm_tokens(self, images: torch.Tensor) -> torch.Tensor:
        visual = self.clip.visual
        trunk = visual.trunk
        features = trunk.forward_features(images)  # (N, prefix + G*G, width), after the final norm
        pooled = visual.head(trunk.forward_head(features))  # TimmModel.forward: encode_image exactly
        patches = features[:, trunk.num_prefix_tokens :]
        patches = visual.head(trunk.head(trunk.fc_norm(patches)))  # the head's per-token layers
        return torch.cat([pooled.unsqueeze(1), patches], dim=1)

    def text_features(self, token_ids: torch.Tensor) -> torch.Tensor:
        """token_ids (N, L) long, L <= context length -> (N, C) (not normalised).

        CLIP's own text tower (argmax pooling, causal mask) runs as CLIP4Clip runs it: positional
        embeddings and mask cut to L, the feature at the end token (the largest id) after ln_final and
        the text projection; with L the full context it is ``encode_text`` exactly. Other towers
        (SigLIP's, Hugging Face's) are open_clip's ``encode_text``; their tokenisers pad to the context.
        """
        clip = self.clip
        if not _clip4clip_text(clip):
            return clip.encode_text(token_ids)
        return clip_text_features(clip, token_ids)

    @property
    def text_vocab_size(self) -> int:
        """Token ids the text tower takes (0 .. vocab_size - 1)."""
        return int(self.clip.vocab_size)


def _clip4clip_text(clip: nn.Module) -> bool:
    return (
        hasattr(clip, "token_embedding")
        and getattr(clip, "text_pool_type", "argmax") == "argmax"
        and getattr(clip, "attn_mask", None) is not None
        and isinstance(getattr(clip, "text_projection", None), nn.Parameter)
    )
