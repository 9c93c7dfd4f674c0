"""The plain CLIP (OpenAI's layout: a ViT image tower, CLIP's text transformer), built without open_clip.

Importing open_clip costs a command seconds before any work (it imports torchvision, which imports
torch's compiler, and transformers and timm when they are installed): 4.5 s of a tiny model's
``encode-videos`` on the 2-core development machine. Most models users run (ViT-B-32, ViT-B-16, ViT-L-14
and the "tiny" test model) are this plain layout, so ``PlainClip`` builds it from the same torch modules
as open_clip's ``CLIP``, under the same names, made in the same order: a seeded build draws the same
numbers and leaves the random generator in the same state (the MUSE head drawn after it is unchanged),
state dicts load either way, and the forward computes the same operations, so outputs are equal bit for
bit (``tests/test_plain_clip.py`` holds all three against open_clip). Any other config (``supports``
False: other poolings, layer scale, timm or Hugging Face towers, custom text) is built by open_clip
(``backbone.build_clip``).
"""

from __future__ import annotations

import torch
from torch import nn

from .text_tower import LayerNorm, Transformer, activation_of, add_text_tower
from .text_tower import supports as plain_text

PLAIN_CLIP_KEYS = {"embed_dim", "quick_gelu", "vision_cfg", "text_cfg"}
PLAIN_VISION_KEYS = {"image_size", "layers", "width", "head_width", "patch_size", "mlp_ratio"}


def supports(clip_config: dict) -> bool:
    """Whether an open_clip model config is the plain layout ``PlainClip`` builds: a ViT image tower with
    open_clip's defaults bar its sizes (class-token pooling, ln_pre, learnt positions, no layer scale,
    no attentional pooling) and the plain CLIP text tower (``text_tower.supports``)."""
    vision = clip_config.get("vision_cfg", {})
    return (
        set(clip_config) <= PLAIN_CLIP_KEYS
        and set(vision) <= PLAIN_VISION_KEYS
        and isinstance(vision.get("layers", 12), int)  # a list means a ResNet tower
        and plain_text(clip_config)
    )


def _pair(value) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (list, tuple)) else (int(value), int(value))


class VisionTransformer(nn.Module):
    """open_clip's ``VisionTransformer`` with class-token pooling: images (N, 3, H, W) -> (N, embed_dim).

    The attributes ``backbone.tower_kind`` reads are open_clip's (``pool_type``, ``attn_pool``,
    ``final_ln_after_pool``, ``grid_size``), so the backbone treats both alike ("openai")."""

    def __init__(self, clip_config: dict):
        super().__init__()
        vision, embed_dim = clip_config["vision_cfg"], int(clip_config["embed_dim"])
        width, layers = int(vision.get("width", 768)), int(vision.get("layers", 12))
        heads = width // int(vision.get("head_width", 64))
        self.image_size = _pair(vision.get("image_size", 224))
        self.patch_size = _pair(vision.get("patch_size", 16))
        self.grid_size = (self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1])
        self.output_dim = embed_dim
        self.pool_type, self.attn_pool, self.final_ln_after_pool = "tok", None, False
        # Made in open_clip's order: the draws of a seeded build are open_clip's.
        self.conv1 = nn.Conv2d(3, width, kernel_size=self.patch_size, stride=self.patch_size, bias=False)
        scale = width**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(
            scale * torch.randn(self.grid_size[0] * self.grid_size[1] + 1, width)
        )
        self.ln_pre = LayerNorm(width)
        mlp_ratio = float(vision.get("mlp_ratio", 4.0))
        self.transformer = Transformer(width, layers, heads, activation_of(clip_config), mlp_ratio=mlp_ratio)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, embed_dim))

    def _embeds(self, x: torch.Tensor) -> torch.Tensor:
        """images (N, 3, H, W) -> (N, 1 + G*G, width): patches, class token first, positions, ln_pre."""
        x = self.conv1(x)  # (N, width, G, G)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # (N, G*G, width)
        token = self.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat([token, x], dim=1)
        x = x + self.positional_embedding.to(x.dtype)
        return self.ln_pre(x)

    def _pool(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 1 + G*G, width) -> pooled (N, width), patches (N, G*G, width), after ln_post."""
        x = self.ln_post(x)
        return x[:, 0], x[:, 1:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled, _ = self._pool(self.transformer(self._embeds(x)))
        return pooled @ self.proj


class PlainClip(nn.Module):
    """open_clip's ``CLIP`` for a plain config (``supports``): ``visual`` and CLIP's text attributes,
    open_clip's names, initialised as open_clip initialises them."""

    def __init__(self, clip_config: dict):
        super().__init__()
        self.visual = VisionTransformer(clip_config)  # first, as in open_clip: the draws follow its order
        add_text_tower(self, clip_config, initialise=True)
        text = clip_config["text_cfg"]
        self.context_length = int(text.get("context_length", 77))
        self.vocab_size = int(text.get("vocab_size", 49408))
        self.text_pool_type = "argmax"
        self.logit_bias = None

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """images (N, 3, H, W) -> (N, embed_dim), as open_clip's ``encode_image``."""
        features = self.visual(images)
        return nn.functional.normalize(features, dim=-1) if normalize else features
