"""Backbones for tests, made here: open_clip architectures at reduced size, their open_clip twins with
random weights saved to a file, and tiny Hugging Face tokenizers (no network, no downloads).

- ``reduced_model(folder, base, ...)``: a muse-infer JSON config from open_clip's ``base`` config
  (``muse_infer.catalog.config_data``) with fewer layers / a smaller text tower, and the same change
  registered with open_clip (``open_clip.add_model_config``) under its own name, so that
  ``open_clip.create_model(name)`` builds the reference the way open_clip builds its own models.
- ``twin_weights(name, path)``: open_clip's model of that name with random weights, saved to ``path``
  (torch.save for .pt, safetensors otherwise); returns the model (eval mode).
- ``tiny_tokenizer(folder, words, style)``: a WordLevel tokenizer built with the ``tokenizers`` package
  and saved as tokenizer.json + tokenizer_config.json, with SigLIP's layout ("siglip": words then
  ``</s>``, pad ``<pad>``) or xlm-roberta's ("xlmr": ``<s>`` words ``</s>``, pad ``<pad>``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = "a an the dog cat car red blue runs jumps over on at street beach ball small big".split()


def reduced_model(folder: Path, base: str, name: str, vision=None, text=None, **fields) -> Path:
    """Write ``name``.json (muse-infer config) into ``folder`` and register open_clip's twin config.

    vision, text: changes to open_clip's vision_cfg/text_cfg; fields: MuseConfig fields (e.g.
    num_blocks=0 for meanP, max_words). Returns the muse-infer config's path."""
    import open_clip

    from muse_infer.catalog import config_data

    data = config_data(base)
    data["clip"]["vision_cfg"].update(vision or {})
    data["clip"]["text_cfg"].update(text or {})
    data.update(fields)
    data["name"] = name
    if data["num_blocks"] == 0:
        data["scales"] = []
    open_clip_dir = folder / "open_clip_configs"
    open_clip_dir.mkdir(parents=True, exist_ok=True)
    (open_clip_dir / f"{name}.json").write_text(json.dumps(data["clip"]))
    open_clip.add_model_config(open_clip_dir / f"{name}.json")
    path = folder / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


def twin_weights(name: str, path: Path, seed: int = 1):
    """open_clip's ``name`` with random weights (seeded), saved to ``path``; the model, eval mode."""
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None).eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".pt":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    return model


def tiny_tokenizer(folder: Path, words=WORDS, style: str = "siglip") -> Path:
    """A WordLevel tokenizer of ``words`` saved in ``folder`` (see the module docstring)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    specials = ["<pad>", "</s>", "<unk>"] if style == "siglip" else ["<s>", "<pad>", "</s>", "<unk>"]
    vocab = {token: i for i, token in enumerate(specials + list(words))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    template = "$A </s>" if style == "siglip" else "<s> $A </s>"
    special_ids = [(t, vocab[t]) for t in ("<s>", "</s>") if t in vocab]
    tokenizer.post_processor = processors.TemplateProcessing(single=template, special_tokens=special_ids)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>", "eos_token": "</s>"}
    if style != "siglip":
        config |= {"bos_token": "<s>", "sep_token": "</s>", "unk_token": "<unk>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder
