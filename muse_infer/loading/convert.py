"""Convert the authors' CLIP4Clip/MUSE state dicts (``pytorch_model.bin.N``) to a muse-infer model.

Their layout: ``clip.*`` (OpenAI CLIP), ``MS_mamba.{i}.*`` (ResMamba blocks with Vim's BiMamba names)
and, had it been a ModuleList, ``mamba_stages.{s}.{j}.*`` (the pyramid; their files lack it).
The architecture is inferred from tensor shapes, as CLIP4Clip itself does.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import torch

from ..config import MuseConfig
from ..errors import ConversionError
from .checkpoint import load_state_dict_checked

logger = logging.getLogger(__name__)

# Vim/mamba-ssm parameter names inside ``MS_mamba.{i}.mamba`` -> ours inside ``blocks.{i}.mamba``.
BIMAMBA_NAMES = {
    "in_proj.weight": "in_proj.weight",
    "out_proj.weight": "out_proj.weight",
    "conv1d.weight": "forward_scan.conv1d.weight",
    "conv1d.bias": "forward_scan.conv1d.bias",
    "x_proj.weight": "forward_scan.x_proj.weight",
    "dt_proj.weight": "forward_scan.dt_proj.weight",
    "dt_proj.bias": "forward_scan.dt_proj.bias",
    "A_log": "forward_scan.A_log",
    "D": "forward_scan.D",
    "conv1d_b.weight": "backward_scan.conv1d.weight",
    "conv1d_b.bias": "backward_scan.conv1d.bias",
    "x_proj_b.weight": "backward_scan.x_proj.weight",
    "dt_proj_b.weight": "backward_scan.dt_proj.weight",
    "dt_proj_b.bias": "backward_scan.dt_proj.bias",
    "A_b_log": "backward_scan.A_log",
    "D_b": "backward_scan.D",
}
BLOCK_NAMES = {f"mamba.{k}": f"mamba.{v}" for k, v in BIMAMBA_NAMES.items()} | {
    name: name
    for name in ("layer_norm1.weight", "layer_norm1.bias", "temporal_fc.weight", "temporal_fc.bias")
}
# Entries CLIP4Clip's CLIP state dicts carry that are not parameters.
CLIP_NON_PARAMETERS = ("input_resolution", "context_length", "vocab_size")


@dataclass
class ConversionReport:
    config: MuseConfig
    used_keys: int = 0
    unused_keys: list[str] = field(default_factory=list)
    pyramid_initialised: bool = False


def our_key(authors_key: str) -> str | None:
    """The muse-infer name of an authors' key, or None when MUSE does not use it."""
    if authors_key.startswith("clip."):
        name = authors_key.removeprefix("clip.")
        return None if name in CLIP_NON_PARAMETERS else f"backbone.clip.{name}"
    match = re.fullmatch(r"MS_mamba\.(\d+)\.(.+)", authors_key)
    if match and match.group(2) in BLOCK_NAMES:
        return f"blocks.{match.group(1)}.{BLOCK_NAMES[match.group(2)]}"
    match = re.fullmatch(r"mamba_stages\.(\d+)\.(\d+)\.(weight|bias)", authors_key)
    if match:
        return f"pyramid.branches.{match.group(1)}.{match.group(2)}.{match.group(3)}"
    return None


def authors_key(our_name: str) -> str:
    """Inverse of ``our_key``: the authors' name of a muse-infer key."""
    if our_name.startswith("backbone.clip."):
        return "clip." + our_name.removeprefix("backbone.clip.")
    match = re.fullmatch(r"blocks\.(\d+)\.(.+)", our_name)
    if match:
        inverse = {v: k for k, v in BLOCK_NAMES.items()}
        return f"MS_mamba.{match.group(1)}.{inverse[match.group(2)]}"
    match = re.fullmatch(r"pyramid\.branches\.(\d+)\.(.+)", our_name)
    if match:
        return f"mamba_stages.{match.group(1)}.{match.group(2)}"
    raise KeyError(our_name)


def to_authors_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A muse-infer model's weights under the authors' key names (for tests and interoperability)."""
    return {authors_key(k): v.clone() for k, v in model.state_dict().items()}


def infer_clip_config(clip: dict[str, torch.Tensor]) -> dict:
    """open_clip config of an OpenAI-layout CLIP state dict (keys without ``clip.``), as CLIP4Clip infers it."""
    for key in ("visual.proj", "visual.conv1.weight", "text_projection", "positional_embedding"):
        if key not in clip:
            raise ConversionError(f"no 'clip.{key}': not a CLIP4Clip state dict with a ViT backbone")
    vision_width = clip["visual.conv1.weight"].shape[0]
    patch_size = clip["visual.conv1.weight"].shape[-1]
    grid = round((clip["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = clip["ln_final.weight"].shape[0]
    return {
        "embed_dim": int(clip["text_projection"].shape[1]),
        "quick_gelu": True,  # OpenAI CLIP weights use QuickGELU
        "vision_cfg": {
            "image_size": int(patch_size * grid),
            "layers": _count_layers(clip, "visual.transformer.resblocks."),
            "width": int(vision_width),
            "patch_size": int(patch_size),
            "head_width": 64,
            "mlp_ratio": clip["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / vision_width,
        },
        "text_cfg": {
            "context_length": int(clip["positional_embedding"].shape[0]),
            "vocab_size": int(clip["token_embedding.weight"].shape[0]),
            "width": int(text_width),
            "heads": int(text_width // 64),
            "layers": _count_layers(clip, "transformer.resblocks."),
            "mlp_ratio": clip["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / text_width,
        },
    }


def _count_layers(state: dict, prefix: str) -> int:
    return len({k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)})


def infer_config(
    state: dict[str, torch.Tensor], base: MuseConfig | None, scales, aggregation: str
) -> MuseConfig:
    """The MuseConfig of an authors' state dict; ``base`` (a known config) overrides the shape inference."""
    clip = {k.removeprefix("clip."): v for k, v in state.items() if k.startswith("clip.")}
    num_blocks = _count_layers(state, "MS_mamba.")
    fields = {"name": "converted-clip4clip", "clip": infer_clip_config(clip), "num_blocks": num_blocks}
    if num_blocks:
        a_log = state["MS_mamba.0.mamba.A_log"]
        fields |= {
            "d_state": int(a_log.shape[1]),
            "expand": int(a_log.shape[0] // fields["clip"]["embed_dim"]),
            "d_conv": int(state["MS_mamba.0.mamba.conv1d.weight"].shape[-1]),
            "scales": tuple(scales) if scales else (0.5, 1.0, 2.0),
            "aggregation": aggregation,
        }
    else:
        fields["scales"] = ()
    if base is not None:
        fields = base.to_dict() | {"num_blocks": num_blocks, "name": base.name}
        if scales:
            fields["scales"] = tuple(scales)
    return MuseConfig.from_dict(fields)


def convert_clip4clip(
    state: dict[str, torch.Tensor],
    *,
    base_config: MuseConfig | None = None,
    scales: tuple[float, ...] | None = None,
    aggregation: str = "scale_wise",
    init_missing_pyramid: bool = False,
    seed: int = 0,
):
    """(MuseModel, ConversionReport) from an authors' state dict (``module.`` prefixes already stripped)."""
    from ..model import MuseModel

    config = infer_config(state, base_config, scales, aggregation)
    mapped = {our_key(k): v.float() for k, v in state.items() if our_key(k) is not None}
    report = ConversionReport(
        config, used_keys=len(mapped), unused_keys=sorted(k for k in state if our_key(k) is None)
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MuseModel(config)
    expected = model.state_dict()
    pyramid_keys = [k for k in expected if k.startswith("pyramid.")]
    if pyramid_keys and not any(k.startswith("pyramid.") for k in mapped):
        if not init_missing_pyramid:
            raise ConversionError(
                "the state dict has MUSE blocks (MS_mamba.*) but no pyramid weights (mamba_stages.*): the "
                "authors' code kept the pyramid in a plain list, so their files lack it. Pass "
                "--init-pyramid (init_missing_pyramid=True) to use freshly initialised pyramid weights "
                "(seeded); embeddings will then differ from the authors' trained model."
            )
        mapped |= {k: expected[k] for k in pyramid_keys}
        report.pyramid_initialised = True
    load_state_dict_checked(model, mapped, "converted state dict")
    return model.eval(), report
