"""CLIP's text tower alone, built without open_clip: what a search needs, in a fraction of the time.

``ClipTextTower`` holds the text half of an open_clip ``CLIP`` under the same names
(``token_embedding``, ``positional_embedding``, ``transformer.resblocks.N.{ln_1, attn, ln_2,
mlp.c_fc, mlp.c_proj}``, ``ln_final``, ``text_projection``, ``logit_scale``) and runs the same torch
modules in the same order (batch-first ``nn.MultiheadAttention`` with the causal mask in the input's
dtype, LayerNorms that return the input's dtype, QuickGELU or GELU), so its features equal the full
model's bit for bit (tests). It covers the plain CLIP text transformer (``supports``); other text
towers (Hugging Face models, other pooling) are built by open_clip with the whole model.

``add_text_tower`` makes these attributes, for this tower and for the text half of the whole plain CLIP
(``plain_clip.PlainClip``, which also takes its ``Transformer`` for the image tower).

Built on the meta device it costs nothing; weights are then assigned from a checkpoint or a CLIP
weights file (only the text tensors are read), or drawn by ``random_text_weights``: the seeded random
CLIP text weights, the same values whether drawn here or for the whole model (``loading.models``).
"""

from __future__ import annotations

import functools
import math
import zlib
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

PLAIN_TEXT_KEYS = {"context_length", "vocab_size", "width", "heads", "layers"}
LOGIT_SCALE_INIT = math.log(1 / 0.07)


def supports(clip_config: dict) -> bool:
    """Whether the text tower of this open_clip model config is the plain CLIP text transformer, under
    CLIP's names. Not a ``custom_text`` model's (EVA, PE-Core, ViTamin: open_clip's ``CustomTextCLIP``
    keeps the same transformer under ``text.``, so neither its weights files nor its random weights
    match these names) nor a Hugging Face or otherwise configured tower (SigLIP's, xlm-roberta's):
    those load with the whole model (``loading.text.load_text_model`` returns None)."""
    text = clip_config.get("text_cfg", {})
    plain = set(text) <= PLAIN_TEXT_KEYS | {"mlp_ratio"} and text.get("mlp_ratio", 4.0) == 4.0
    return plain and not clip_config.get("custom_text", False)


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the activation of OpenAI's CLIP weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class LayerNorm(nn.LayerNorm):
    """A LayerNorm whose output keeps its input's dtype (as open_clip's)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps).to(dtype)


class ResidualAttentionBlock(nn.Module):
    """x + attention(ln_1(x)), then + mlp(ln_2(x)); x (N, L, width), batch first. Its modules are made in
    open_clip's order, so that seeded random initialisation draws the same numbers (``plain_clip``)."""

    def __init__(
        self, width: int, heads: int, activation: type[nn.Module], device=None, mlp_ratio: float = 4.0
    ):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = LayerNorm(width, device=device)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True, device=device)
        self.ln_2 = LayerNorm(width, device=device)
        layers = [
            ("c_fc", nn.Linear(width, hidden, device=device)),
            ("gelu", activation()),
            ("c_proj", nn.Linear(hidden, width, device=device)),
        ]
        self.mlp = nn.Sequential(OrderedDict(layers))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        y = self.ln_1(x)
        mask = None if attn_mask is None else attn_mask.to(y.dtype)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """open_clip's ``Transformer`` (batch first, no layer scale): the blocks of either tower."""

    def __init__(
        self,
        width: int,
        layers: int,
        heads: int,
        activation: type[nn.Module],
        device=None,
        mlp_ratio: float = 4.0,
    ):
        super().__init__()
        blocks = (ResidualAttentionBlock(width, heads, activation, device, mlp_ratio) for _ in range(layers))
        self.resblocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, attn_mask=attn_mask)
        return x


def clip_text_features(tower: nn.Module, token_ids: torch.Tensor) -> torch.Tensor:
    """CLIP's text tower as CLIP4Clip runs it: token_ids (N, L) long, L <= context -> (N, C), not
    normalised. Positional embeddings and causal mask cut to L, the feature at each row's end token (the
    largest id) after ln_final, then the text projection. ``tower``: any module with CLIP's text
    attributes (``TextTower`` here, open_clip's ``CLIP`` in ``backbone``), so both compute alike."""
    length = token_ids.shape[1]
    x = tower.token_embedding(token_ids)  # (N, L, width)
    x = x + tower.positional_embedding[:length]
    x = tower.transformer(x, attn_mask=tower.attn_mask[:length, :length])
    x = tower.ln_final(x)
    end = token_ids.argmax(dim=-1)
    x = x[torch.arange(x.shape[0], device=x.device), end]  # (N, width)
    return x @ tower.text_projection  # (N, C)


class ClipTextTower(nn.Module):
    """The text half of an open_clip CLIP (``clip_config``: its model config dict), same names.

    device: where the (uninitialised) weights are made; "meta" for none at all, to assign them after.
    """

    def __init__(self, clip_config: dict, device=None):
        super().__init__()
        add_text_tower(self, clip_config, device)

    def text_features(self, token_ids: torch.Tensor) -> torch.Tensor:
        """token_ids (N, L) long -> (N, C) at each row's end token (the largest id), not normalised."""
        return clip_text_features(self, token_ids)


def activation_of(clip_config: dict) -> type[nn.Module]:
    """The MLPs' activation: QuickGELU for configs of OpenAI's weights (``quick_gelu``), else GELU."""
    return QuickGELU if clip_config.get("quick_gelu", False) else nn.GELU


def add_text_tower(module: nn.Module, clip_config: dict, device=None, initialise: bool = False) -> None:
    """Give ``module`` CLIP's text attributes (``token_embedding`` ... ``logit_scale``, ``attn_mask``).

    initialise False: nothing drawn (the weights are assigned after; drawing on the meta device would
    import torch's compiler: seconds). True: drawn as open_clip's ``TextTransformer`` draws them, in the
    same order (the embedding's default init, the blocks', then its ``init_parameters``), so that a
    seeded build gives open_clip's numbers and leaves the generator where open_clip leaves it.
    """
    text, embed_dim = clip_config["text_cfg"], int(clip_config["embed_dim"])
    width, context = int(text["width"]), int(text.get("context_length", 77))
    layers, vocabulary = int(text["layers"]), int(text.get("vocab_size", 49408))
    if initialise:
        embedding = nn.Embedding(vocabulary, width, device=device)
    else:
        embedding = nn.Embedding(vocabulary, width, _weight=torch.empty(vocabulary, width, device=device))
    positional = nn.Parameter(torch.empty(context, width, device=device))
    transformer = Transformer(width, layers, int(text["heads"]), activation_of(clip_config), device)
    projection = nn.Parameter(torch.empty(width, embed_dim, device=device))
    if initialise:  # open_clip's TextTransformer.init_parameters
        nn.init.normal_(embedding.weight, std=0.02)
        nn.init.normal_(positional, std=0.01)
        attn_std, proj_std = width**-0.5, (width**-0.5) * ((2 * layers) ** -0.5)
        for block in transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(projection, std=width**-0.5)
    # Registered in open_clip CLIP's order, so that state dicts and parameter lists list them alike.
    module.transformer = transformer
    module.token_embedding = embedding
    module.positional_embedding = positional
    module.ln_final = LayerNorm(width, device=device)
    module.text_projection = projection
    module.logit_scale = nn.Parameter(torch.full([], LOGIT_SCALE_INIT, device=device))
    module.register_buffer("attn_mask", causal_mask(context), persistent=False)


def causal_mask(context: int) -> torch.Tensor:
    """(context, context) float: -inf above the diagonal (a token sees itself and those before it)."""
    return torch.full((context, context), float("-inf")).triu_(1)


def text_parameter_names(clip_config: dict) -> list[str]:
    """The names of the text tower's weights in an open_clip CLIP's state dict."""
    return list(ClipTextTower(clip_config, device="meta").state_dict())


RANDOM_POOL = 1_048_583  # values drawn per seed; odd, so rows of a table never repeat one another


def random_text_weights(clip_config: dict, seed: int) -> dict[str, torch.Tensor]:
    """Seeded random weights of the text tower, by name: open_clip's scheme's standard deviations
    (normal weights, zero biases, unit LayerNorms). Random CLIP weights are for tests and trials, so
    they are made cheap: one pool of ``RANDOM_POOL`` normal values a seed, each tensor a stretch of it
    starting where its name points (``_drawn``). The whole model (``loading.models.build_model``) and
    the text tower alone (``loading.text``) take the same values; drawing 63M fresh values for
    ViT-B-32 would cost a search most of a second."""
    text = clip_config["text_cfg"]
    width, layers = int(text["width"]), int(text["layers"])
    stds = {
        "token_embedding.weight": 0.02,
        "positional_embedding": 0.01,
        "attn.in_proj_weight": width**-0.5,
        "attn.out_proj.weight": (width**-0.5) * ((2 * layers) ** -0.5),
        "mlp.c_fc.weight": (2 * width) ** -0.5,
        "mlp.c_proj.weight": (width**-0.5) * ((2 * layers) ** -0.5),
        "text_projection": width**-0.5,
    }
    tower = ClipTextTower(clip_config, device="meta")
    weights = {}
    for name, meta in tower.state_dict().items():
        std = next((value for suffix, value in stds.items() if name.endswith(suffix)), None)
        if name == "logit_scale":
            weights[name] = torch.tensor(LOGIT_SCALE_INIT)
        elif std is not None:
            weights[name] = _drawn(seed, name, meta.shape, std)
        elif name.endswith("weight") and ("ln_" in name):
            weights[name] = torch.ones(meta.shape)
        else:  # biases
            weights[name] = torch.zeros(meta.shape)
    return weights


def _drawn(seed: int, name: str, shape, std: float) -> torch.Tensor:
    """``shape`` normal values of standard deviation ``std``: the seed's pool read cyclically from an
    offset of the name's, scaled as it is copied (one pass over the output)."""
    pool = _random_pool(seed)
    out = torch.empty(math.prod(shape))
    at, start = 0, zlib.crc32(name.encode()) % RANDOM_POOL
    while at < len(out):
        take = min(len(out) - at, RANDOM_POOL - start)
        torch.mul(pool[start : start + take], std, out=out[at : at + take])
        at, start = at + take, 0
    return out.view(shape)


@functools.lru_cache(maxsize=2)
def _random_pool(seed: int) -> torch.Tensor:
    return torch.randn(RANDOM_POOL, generator=torch.Generator().manual_seed(seed))


def build_text_tower(clip_config: dict, weights: dict[str, torch.Tensor], device="cpu") -> ClipTextTower:
    """The tower with ``weights`` (every name of ``text_parameter_names``) assigned, without first
    initialising it (built on the meta device)."""
    tower = ClipTextTower(clip_config, device="meta")
    tower.load_state_dict({k: v.to(torch.float32) for k, v in weights.items()}, strict=True, assign=True)
    tower.attn_mask = causal_mask(tower.positional_embedding.shape[0])
    return tower.to(device).eval()


class TextModel(nn.Module):
    """A MUSE model's text tower alone (for searching): ``encode_text_tokens`` and ``tokenizer`` as
    ``MuseModel``'s, the same numbers; ``config`` the whole model's config. It has no video tower.
    text_files: the folder of a Hugging Face tokenizer's files, for a config that names one."""

    def __init__(self, config, tower: ClipTextTower, text_files: str | None = None):
        super().__init__()
        self.config, self.text, self.text_files = config, tower, text_files

    @property
    def tokenizer(self):
        """The text tokenizer of this model (``tokenizer.text_tokenizer``, as ``MuseModel.tokenizer``)."""
        if getattr(self, "_tokenizer", None) is None:
            from ..tokenizer import text_tokenizer

            self._tokenizer = text_tokenizer(self.config, self.text_files)
        return self._tokenizer

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.text.logit_scale

    def encode_text_tokens(self, token_ids: torch.Tensor) -> torch.Tensor:
        """token_ids (N, L) long -> L2-normalised text embeddings (N, C) float32 (normalised in float32)."""
        return F.normalize(self.text.text_features(token_ids).float(), dim=-1)

    def encode_video(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        from ..errors import BackendError

        raise BackendError(
            "this model was loaded for text queries only: load it with its video tower to encode videos"
        )
