"""CLIP from open_clip, exposing what MUSE needs: every visual token projected, and the text feature."""

from __future__ import annotations

import torch
from torch import nn


def build_open_clip(clip_config: dict) -> nn.Module:
    """An open_clip CLIP (OpenAI layout, so OpenAI/CLIP4Clip weights load by name) from its config dict."""
    from open_clip.model import CLIP

    config = dict(clip_config)
    return CLIP(
        embed_dim=config.pop("embed_dim"),
        vision_cfg=config.pop("vision_cfg"),
        text_cfg=config.pop("text_cfg"),
        quick_gelu=config.pop("quick_gelu", False),
        **config,
    )


class ClipBackbone(nn.Module):
    """Wraps an open_clip CLIP (as ``self.clip``, so state-dict keys read ``clip.visual.*`` etc.)."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        visual = getattr(clip, "visual", None)
        if visual is None or not hasattr(visual, "conv1") or getattr(visual, "attn_pool", None) is not None:
            raise ValueError("MUSE needs an open_clip VisionTransformer backbone with a class token")
        if getattr(visual, "final_ln_after_pool", False):
            raise ValueError("open_clip models with final_ln_after_pool are not supported")
        self.clip = clip

    @property
    def grid_size(self) -> int:
        return int(self.clip.visual.grid_size[0])

    def image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, 3, H, W) -> tokens (N, 1 + G*G, C): class token then patches, row-major.

        Every token goes through ln_post and the visual projection (open_clip's ``output_tokens``
        would return the patches unprojected, at the ViT's width).
        """
        visual = self.clip.visual
        x = visual._embeds(images)  # (N, 1 + G*G, width)
        x = visual.transformer(x)
        x = visual.ln_post(x)
        return x @ visual.proj  # (N, 1 + G*G, C)

    def text_features(self, token_ids: torch.Tensor) -> torch.Tensor:
        """token_ids (N, L) long, L <= context length -> (N, C) at each row's end token (not normalised).

        As CLIP4Clip: positional embeddings and the causal mask cut to L, the feature taken at the
        position of the largest token id (the end token) after ln_final and the text projection.
        """
        clip = self.clip
        length = token_ids.shape[1]
        x = clip.token_embedding(token_ids)  # (N, L, width)
        x = x + clip.positional_embedding[:length]
        x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
        x = clip.ln_final(x)
        end = token_ids.argmax(dim=-1)
        x = x[torch.arange(x.shape[0], device=x.device), end]  # (N, width)
        return x @ clip.text_projection  # (N, C)
