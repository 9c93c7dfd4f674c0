"""The authors' optimiser setup: parameter groups, learning-rate multipliers, weight decay, schedule.

Groups (CLIP4Clip's ``prep_optimizer`` plus MUSE's Mamba multiplier):
- CLIP weights (``backbone.clip.*``, including ``logit_scale``): lr x coef_lr (1e-3 in the recipe);
- the ResMamba blocks (``blocks.*``): lr x block_lr_mult (10);
- everything else (the pyramid): lr.
Each is split by weight decay: none for biases, LayerNorm weights, ``A_log``/``D`` (flagged
``_no_weight_decay`` by the model) and ``logit_scale``; ``weight_decay`` for the rest. Differences from
CLIP4Clip, on purpose: it matches names ('bias', 'LayerNorm.weight'), which misses CLIP's ``ln_*`` and
MUSE's ``layer_norm1`` and decays ``logit_scale``; here LayerNorms are found by module type and the
temperature is not decayed (as in open_clip's training). Its BertAdam also skips Adam's bias
correction; torch's AdamW (used here) has it.

Schedule: CLIP4Clip's ``warmup_cosine`` on training progress x = step / total_steps: x / warmup for
x < warmup, else 0.5 * (1 + cos(pi * x)) (the cosine runs over the whole of training, warm-up included).
"""

from __future__ import annotations

import math

import torch
from torch import nn

CLIP_PREFIX = "backbone.clip."
BLOCKS_PREFIX = "blocks."


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Parameters exempt from weight decay: biases, LayerNorm weights, A_log/D, logit_scale."""
    names = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            if (
                param_name == "bias"
                or isinstance(module, nn.LayerNorm)
                or getattr(param, "_no_weight_decay", False)
                or param_name == "logit_scale"
            ):
                names.add(full)
    return names


def lr_multiplier(name: str, coef_lr: float, block_lr_mult: float) -> float:
    """The learning-rate multiplier of the parameter called ``name`` in a MuseModel."""
    if name.startswith(CLIP_PREFIX):
        return coef_lr
    if name.startswith(BLOCKS_PREFIX):
        return block_lr_mult
    return 1.0


def parameter_groups(
    model: nn.Module, lr: float, weight_decay: float, coef_lr: float, block_lr_mult: float
) -> list[dict]:
    """Optimizer groups [{"params", "lr", "weight_decay", "name"}], empty groups left out.

    Each group also records its ``base_lr`` (lr before the schedule); names are e.g. "clip/decay".
    """
    exempt = no_weight_decay_names(model)
    groups: dict[tuple[str, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        tower = (
            "clip"
            if name.startswith(CLIP_PREFIX)
            else "blocks"
            if name.startswith(BLOCKS_PREFIX)
            else "other"
        )
        groups.setdefault((tower, name not in exempt), []).append((name, param))
    result = []
    for (tower, decays), members in sorted(groups.items()):
        base_lr = lr * lr_multiplier(members[0][0], coef_lr, block_lr_mult)
        result.append(
            {
                "params": [p for _, p in members],
                "lr": base_lr,
                "base_lr": base_lr,
                "weight_decay": weight_decay if decays else 0.0,
                "name": f"{tower}/{'decay' if decays else 'no_decay'}",
            }
        )
    return result


def warmup_cosine(progress: float, warmup: float) -> float:
    """CLIP4Clip's schedule: the lr factor at ``progress`` = step / total_steps in [0, 1]."""
    if progress < warmup:
        return progress / warmup
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def set_learning_rates(optimizer: torch.optim.Optimizer, step: int, total_steps: int, warmup: float) -> float:
    """Set every group's lr for optimisation step ``step`` (0-based); returns the schedule factor."""
    factor = warmup_cosine(step / max(1, total_steps), warmup)
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
    return factor


def build_optimizer(model: nn.Module, config) -> torch.optim.AdamW:
    """AdamW over ``parameter_groups`` with the config's lr, betas, eps and weight decay."""
    groups = parameter_groups(model, config.lr, config.weight_decay, config.coef_lr, config.block_lr_mult)
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps)
