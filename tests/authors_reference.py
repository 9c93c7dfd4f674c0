"""An independent re-implementation of the authors' CLIP4Clip + MUSE forward pass, for tests only.

Written from hrtang22/MUSE's modules/modeling.py and OpenAI CLIP: plain functional ops on a state
dict with the authors' key names (``clip.*``, ``mamba_stages.{s}.{j}.*``, ``MS_mamba.{i}.*``), in
float64, sharing no code with muse_infer, so that agreement with muse_infer means both are right.
"""

import math

import torch
import torch.nn.functional as F


def _layer_norm(x, p, prefix, eps=1e-5):
    return F.layer_norm(x, x.shape[-1:], p[prefix + ".weight"], p[prefix + ".bias"], eps)


def _attention(x, p, prefix, heads):
    n, length, width = x.shape
    qkv = x @ p[prefix + ".in_proj_weight"].t() + p[prefix + ".in_proj_bias"]
    q, k, v = (t.reshape(n, length, heads, width // heads).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width // heads), dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(n, length, width)
    return out @ p[prefix + ".out_proj.weight"].t() + p[prefix + ".out_proj.bias"]


def _mlp(x, p, prefix):
    hidden = x @ p[prefix + ".c_fc.weight"].t() + p[prefix + ".c_fc.bias"]
    hidden = hidden * torch.sigmoid(1.702 * hidden)  # QuickGELU, as OpenAI CLIP
    return hidden @ p[prefix + ".c_proj.weight"].t() + p[prefix + ".c_proj.bias"]


def clip_visual_all_tokens(p, images):
    """OpenAI CLIP ViT, every token after ln_post and the projection: (N, 1 + G*G, C)."""
    conv = p["clip.visual.conv1.weight"]
    width, patch = conv.shape[0], conv.shape[-1]
    x = F.conv2d(images, conv, stride=patch).flatten(2).transpose(1, 2)  # (N, G*G, width)
    cls = p["clip.visual.class_embedding"].expand(x.shape[0], 1, width)
    x = torch.cat([cls, x], dim=1) + p["clip.visual.positional_embedding"]
    x = _layer_norm(x, p, "clip.visual.ln_pre")
    layers = len({k.split(".")[4] for k in p if k.startswith("clip.visual.transformer.resblocks.")})
    for i in range(layers):
        prefix = f"clip.visual.transformer.resblocks.{i}"
        x = x + _attention(_layer_norm(x, p, prefix + ".ln_1"), p, prefix + ".attn", width // 64)
        x = x + _mlp(_layer_norm(x, p, prefix + ".ln_2"), p, prefix + ".mlp")
    return _layer_norm(x, p, "clip.visual.ln_post") @ p["clip.visual.proj"]


def _layer_norm_conv(x, p, prefix):
    return _layer_norm(x.permute(0, 2, 3, 1), p, prefix).permute(0, 3, 1, 2)


def mamba_stage(p, s, scale, x):
    """One entry of the authors' ``mamba_stages`` list, layer by layer with their indices."""
    j = 0
    if scale == 4.0:
        x = F.conv_transpose2d(x, p[f"mamba_stages.{s}.0.weight"], p[f"mamba_stages.{s}.0.bias"], stride=2)
        x = F.gelu(_layer_norm_conv(x, p, f"mamba_stages.{s}.1"))
        x = F.conv_transpose2d(x, p[f"mamba_stages.{s}.3.weight"], p[f"mamba_stages.{s}.3.bias"], stride=2)
        j = 4
    elif scale == 2.0:
        x = F.conv_transpose2d(x, p[f"mamba_stages.{s}.0.weight"], p[f"mamba_stages.{s}.0.bias"], stride=2)
        j = 1
    elif scale in (0.5, 0.25):
        x = F.max_pool2d(x, int(1 / scale), int(1 / scale))
        j = 1
    x = F.conv2d(x, p[f"mamba_stages.{s}.{j}.weight"], p[f"mamba_stages.{s}.{j}.bias"])
    x = F.gelu(_layer_norm_conv(x, p, f"mamba_stages.{s}.{j + 1}"))
    x = F.conv2d(x, p[f"mamba_stages.{s}.{j + 3}.weight"], p[f"mamba_stages.{s}.{j + 3}.bias"], padding=1)
    return _layer_norm_conv(x, p, f"mamba_stages.{s}.{j + 4}")


def _scan_loop(u, delta, A, B, C, D, z, delta_bias):
    delta = F.softplus(delta + delta_bias[:, None])
    h = torch.zeros(u.shape[0], u.shape[1], A.shape[1], dtype=u.dtype)
    ys = []
    for t in range(u.shape[-1]):
        h = (
            torch.exp(delta[:, :, t, None] * A) * h
            + (delta[:, :, t] * u[:, :, t])[..., None] * B[:, None, :, t]
        )
        ys.append((h * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1) + D[:, None] * u
    return y * F.silu(z)


def _mamba_direction(p, prefix, suffix, a_name, d_name, xz):
    x, z = xz.chunk(2, dim=1)
    length = x.shape[-1]
    conv_w = p[f"{prefix}.conv1d{suffix}.weight"]
    x = F.silu(
        F.conv1d(
            x, conv_w, p[f"{prefix}.conv1d{suffix}.bias"], padding=conv_w.shape[-1] - 1, groups=x.shape[1]
        )[..., :length]
    )
    x_dbl = x.transpose(1, 2) @ p[f"{prefix}.x_proj{suffix}.weight"].t()
    dt_w = p[f"{prefix}.dt_proj{suffix}.weight"]
    rank, state = dt_w.shape[1], p[f"{prefix}.{a_name}"].shape[1]
    delta = (x_dbl[..., :rank] @ dt_w.t()).transpose(1, 2)
    B = x_dbl[..., rank : rank + state].transpose(1, 2)
    C = x_dbl[..., rank + state :].transpose(1, 2)
    A = -torch.exp(p[f"{prefix}.{a_name}"])
    return _scan_loop(x, delta, A, B, C, p[f"{prefix}.{d_name}"], z, p[f"{prefix}.dt_proj{suffix}.bias"])


def vim_bimamba_v2(p, prefix, hidden):
    """Vim's Mamba with bimamba_type='v2', if_devide_out=False: (B, L, D) -> (B, L, D)."""
    xz = (hidden @ p[f"{prefix}.in_proj.weight"].t()).transpose(1, 2)
    out = _mamba_direction(p, prefix, "", "A_log", "D", xz)
    out_b = _mamba_direction(p, prefix, "_b", "A_b_log", "D_b", xz.flip([-1]))
    return (out + out_b.flip([-1])).transpose(1, 2) @ p[f"{prefix}.out_proj.weight"].t()


def authors_video_embedding(p, video, video_mask, scales=(0.5, 1.0, 2.0)):
    """video (B, T, 3, H, W), video_mask (B, T) -> (B, C), as the authors' _loose_similarity('MUSE')."""
    p = {k: v.double() for k, v in p.items()}
    b, t = video.shape[:2]
    visual_output = clip_visual_all_tokens(p, video.double().flatten(0, 1))
    tokens, width = visual_output.shape[1], visual_output.shape[2]
    side = int(math.sqrt(tokens - 1))
    visual_output = visual_output.view(b, t, tokens, width)
    original = visual_output[:, :, 0, :]
    patches = visual_output[:, :, 1:, :].reshape(b * t, side, side, width).permute(0, 3, 1, 2)
    ms = [
        mamba_stage(p, s, scale, patches).view(b, t, width, -1).permute(0, 1, 3, 2)
        for s, scale in enumerate(scales)
    ]
    x = torch.cat((original, torch.cat([m.reshape(b, -1, width) for m in ms], dim=1)), dim=1)
    layers = len({k.split(".")[1] for k in p if k.startswith("MS_mamba.")})
    for i in range(layers):
        prefix = f"MS_mamba.{i}"
        hidden = _layer_norm(x, p, prefix + ".layer_norm1")
        hidden = vim_bimamba_v2(p, prefix + ".mamba", hidden)
        x = x + hidden @ p[prefix + ".temporal_fc.weight"].t() + p[prefix + ".temporal_fc.bias"]
    out = x[:, :t, :]
    out = out / out.norm(dim=-1, keepdim=True)
    mask = video_mask.double().unsqueeze(-1)
    total = mask.sum(dim=1)
    total[total == 0.0] = 1.0
    out = (out * mask).sum(dim=1) / total
    return out / out.norm(dim=-1, keepdim=True)
