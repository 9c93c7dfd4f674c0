"""Any open_clip model as a muse-infer architecture, known without importing torch or open_clip.

A name open_clip knows (``ViT-L-14``, ``ViT-B-16-SigLIP``, ``xlm-roberta-base-ViT-B-32``, ...) is a
MUSE model on that backbone; ``NAME-meanP`` is its mean-pooling baseline. Their configs are made here,
as data, from two sources:

- open_clip's own model configs, the JSON files of its installed package (``open_clip/model_configs``),
  read where ``importlib`` finds the package, without importing it (nor torch);
- open_clip's pretrained-weights table (which tags exist, each one's frame preprocessing and whether it
  was trained with QuickGELU), which open_clip keeps as Python code that imports torch: a copy made from
  it is shipped (``configs/open_clip/pretrained.json``; remake it with
  ``python -m muse_infer.catalog --write`` after upgrading open_clip; tests/test_backbones.py checks it
  against the installed open_clip).

The names shipped in ``configs/`` come first: ``ViT-B-32`` and ``ViT-B-16`` stay OpenAI's QuickGELU
models (their identity, hence existing indexes, unchanged); open_clip's own ``ViT-B-32`` (GELU) is
``ViT-B-32-quickgelu``'s twin and is reached through the shipped name's weights only.

A leaf module: json and the standard library (``config`` imports it: ``load_config`` calls it, and
CLIP's frame statistics are defined here, as open_clip's default for a tag without its own).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from pathlib import Path

from .errors import ConfigError

TABLE = Path(__file__).parent / "configs" / "open_clip" / "pretrained.json"
MEAN_POOLING_SUFFIX = "-meanP"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's (and CLIP4Clip's) frame statistics
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MUSE_DEFAULTS = {"scales": [0.5, 1.0, 2.0], "num_blocks": 4}  # the paper's head, as the shipped ViT-B-32
MEANP_DEFAULTS = {"scales": [], "num_blocks": 0}

# Backbones worth choosing, with the default weights of each (a tag of open_clip's table whose
# activation matches the architecture's). Why these tags: the best text->image retrieval among each
# name's tags in open_clip's published results (docs/openclip_retrieval_results.csv of
# mlfoundations/open_clip), ViT-L-14's DataComp-XL being within 0.01 R@1 of the best and the
# better-documented one. docs/choosing_a_model.md gives the numbers and their sources.
RECOMMENDED = {
    "ViT-L-14": "datacomp_xl_s13b_b90k",
    "ViT-L-14-336-quickgelu": "openai",
    "ViT-H-14": "laion2b_s32b_b79k",
    "ViT-B-16-SigLIP": "webli",
    "ViT-B-16-SigLIP2": "webli",
    "ViT-SO400M-14-SigLIP": "webli",
    "ViT-B-16-SigLIP-i18n-256": "webli",
    "xlm-roberta-base-ViT-B-32": "laion5b_s13b_b90k",
    "xlm-roberta-large-ViT-H-14": "frozen_laion5b_s13b_b90k",
}
MULTILINGUAL = ("ViT-B-16-SigLIP-i18n-256", "xlm-roberta-base-ViT-B-32", "xlm-roberta-large-ViT-H-14")


@functools.lru_cache(maxsize=1)
def open_clip_config_dir() -> Path | None:
    """open_clip's ``model_configs`` folder, found without importing open_clip; None if not installed."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model_configs"
    return folder if folder.is_dir() else None


def open_clip_names() -> list[str]:
    """Every model name of the installed open_clip (its JSON configs), sorted."""
    folder = open_clip_config_dir()
    return sorted(p.stem for p in folder.glob("*.json")) if folder else []


@functools.cache
def open_clip_model_json(name: str) -> dict | None:
    """open_clip's config of ``name`` (a fresh copy each call is not needed: callers copy), or None."""
    folder = open_clip_config_dir()
    if folder is None or "/" in name or name.startswith("."):
        return None
    path = folder / f"{name}.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


@functools.lru_cache(maxsize=1)
def pretrained_table() -> dict:
    """The shipped copy of open_clip's pretrained table: {"open_clip_version", "models": {name: {tag: ...}}}."""
    return json.loads(TABLE.read_text())


def pretrained_tags(name: str) -> dict[str, dict]:
    """{tag: {"quick_gelu", "mean", "std", "resize_mode", "interpolation", "hf_hub", "url"}} of ``name``."""
    return pretrained_table()["models"].get(name, {})


def compatible_tags(name: str, quick_gelu: bool) -> list[str]:
    """Tags of ``name`` trained with the activation the architecture uses (open_clip's order)."""
    return [tag for tag, entry in pretrained_tags(name).items() if entry["quick_gelu"] == bool(quick_gelu)]


def default_tag(name: str, quick_gelu: bool) -> str | None:
    """The weights a name loads by default: ``RECOMMENDED``'s, else the first compatible tag, else None
    (random weights: open_clip has none for that architecture)."""
    tags = compatible_tags(name, quick_gelu)
    if name in RECOMMENDED and RECOMMENDED[name] in tags:
        return RECOMMENDED[name]
    return tags[0] if tags else None


def check_tag(name: str | None, quick_gelu: bool, tag: str) -> None:
    """ConfigError when open_clip's ``tag`` weights for ``name`` were trained with the other activation
    (loading them would run silently worse); nothing to check for names or tags not in the table."""
    entry = pretrained_tags(name or "").get(tag)
    if entry is None or entry["quick_gelu"] == bool(quick_gelu):
        return
    trained, built = ("QuickGELU", "GELU") if entry["quick_gelu"] else ("GELU", "QuickGELU")
    twins = [n for n in _activation_twins(name) if tag in compatible_tags(n, entry["quick_gelu"])]
    hint = f": use --model {twins[0]}" if twins else ""
    compatible = compatible_tags(name, quick_gelu)
    raise ConfigError(
        f"open_clip's '{tag}' weights for {name} were trained with {trained}, and this model is {built}"
        f"{hint} (its {built} weights: {compatible or 'none'})"
    )


def _activation_twins(name: str) -> list[str]:
    base = name.removesuffix("-quickgelu")
    return [n for n in (base, f"{base}-quickgelu") if n != name and open_clip_model_json(n) is not None]


def tag_preprocess(name: str | None, tag: str | None) -> dict | None:
    """The frame preprocessing of open_clip's ``tag`` weights for ``name`` (mean, std, resize_mode,
    interpolation); None when it is CLIP4Clip's (or the tag is unknown: open_clip's defaults then)."""
    entry = pretrained_tags(name or "").get(tag or "")
    if entry is None:
        return None
    preprocess = {key: entry[key] for key in ("mean", "std", "resize_mode", "interpolation")}
    default = {
        "mean": list(CLIP_MEAN),
        "std": list(CLIP_STD),
        "resize_mode": "shortest",
        "interpolation": "bicubic",
    }
    return None if preprocess == default else preprocess


def tokenizer_of(clip: dict) -> dict | None:
    """The tokenizer an open_clip config names (as ``open_clip.get_tokenizer`` chooses it): None for
    CLIP's BPE, else a Hugging Face tokenizer ``{"kind": "hf", "name", "clean", "strip_sep_token"}``."""
    text = clip.get("text_cfg", {})
    name = text.get("hf_tokenizer_name")
    if not name:
        return None
    kwargs = text.get("tokenizer_kwargs") or {}
    return {
        "kind": "hf",
        "name": name,
        "clean": kwargs.get("clean", "whitespace"),
        "strip_sep_token": bool(kwargs.get("strip_sep_token", False)),
    }


def config_data(name: str) -> dict | None:
    """The MuseConfig fields of an open_clip name (``NAME``: MUSE head, ``NAME-meanP``: mean pooling),
    or None when open_clip has no such model. Text is tokenised to the tower's full context (so text
    embeddings are open_clip's ``encode_text``); frames as the default weights' preprocessing says."""
    base, mean_pooling = (name.removesuffix(MEAN_POOLING_SUFFIX), name.endswith(MEAN_POOLING_SUFFIX))
    clip = open_clip_model_json(base)
    if clip is None:
        return None
    clip = json.loads(json.dumps(clip))  # a copy the caller may keep
    tag = default_tag(base, clip.get("quick_gelu", False))
    return {
        "name": name,
        "clip": clip,
        "clip_model": base,
        "clip_pretrained": tag,
        **(MEANP_DEFAULTS if mean_pooling else MUSE_DEFAULTS),
        "max_words": int(clip.get("text_cfg", {}).get("context_length", 77)),
        "preprocess": tag_preprocess(base, tag),
        "tokenizer": tokenizer_of(clip),
    }


def is_open_clip_name(name: str) -> bool:
    """Whether ``config_data`` knows ``name`` (with or without -meanP)."""
    return open_clip_model_json(name.removesuffix(MEAN_POOLING_SUFFIX)) is not None


def names_hint() -> str:
    if open_clip_config_dir() is None:
        return "open_clip is not installed: pip install open_clip_torch"
    return f"{len(open_clip_names())} of them: muse-infer models --all"


# --- remaking the shipped table from the installed open_clip (imports open_clip, hence torch) ---------


def build_table() -> dict:
    """open_clip's pretrained table as the installed open_clip has it (``pretrained_table``'s format)."""
    import open_clip
    from open_clip import pretrained

    models = {}
    for name in open_clip.list_models():
        tags = {}
        for tag in open_clip.list_pretrained_tags_by_model(name):
            config = pretrained.get_pretrained_cfg(name, tag)
            tags[tag] = {
                "quick_gelu": bool(config.get("quick_gelu", False)),
                "mean": [float(v) for v in config.get("mean", CLIP_MEAN)],
                "std": [float(v) for v in config.get("std", CLIP_STD)],
                "resize_mode": config.get("resize_mode", "shortest"),
                "interpolation": config.get("interpolation", "bicubic"),
                "hf_hub": (config.get("hf_hub") or "").rstrip("/"),
                "url": config.get("url") or "",
            }
        if tags:
            models[name] = tags
    return {"open_clip_version": open_clip.__version__, "models": models}


def write_table(path: Path = TABLE) -> Path:
    """Write ``build_table()`` to ``path`` atomically."""
    from .atomic import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(build_table(), indent=1, sort_keys=True) + "\n")
    return path


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m muse_infer.catalog --write   (remakes " + str(TABLE) + ")")
    print(f"wrote {write_table()}")
