"""Model identity: which weights made an embedding, independent of the backend that ran them.

An index records the identity of the model that encoded its videos, so a text query is encoded by
the same model (through torch, ONNX or TorchScript alike: the backend is not part of the identity).
Identities are plain JSON dicts:

- a checkpoint file: ``{"kind": "checkpoint", "sha256": <file hash>, "config": {...}}`` (the path is
  not part of it, so a moved or renamed checkpoint still matches);
- a packaged trained model: ``{"kind": "named", "name": ..., "sha256": ..., "config": {...}}``;
- a named architecture or a JSON config with seeded random or pretrained CLIP weights:
  ``{"kind": "named" | "config", "name": ..., "clip_weights": "random" | <tag> | "sha256:<hash>",
  "config": {...}}``.
"""

from __future__ import annotations

import hashlib
import json
import os

from ..config import MuseConfig
from .reference import ClipWeights, ModelRef, parse_clip_weights, resolve_model


def model_identity(
    name_or_path: str | os.PathLike | ModelRef,
    config: MuseConfig,
    clip_weights: str | os.PathLike | ClipWeights | None = None,
) -> dict:
    """The identity dict of the model ``load_model(name_or_path, clip_weights=...)`` builds.

    The reference is resolved as ``load_model`` resolves it (``muse_infer.loading.reference``); a
    ``ModelRef`` is taken as already resolved.
    """
    ref = name_or_path if isinstance(name_or_path, ModelRef) else resolve_model(name_or_path)
    if ref.kind == "checkpoint":
        identity = {"kind": "checkpoint", "sha256": file_sha256(ref.path)}
    elif ref.kind == "packaged":
        identity = {"kind": "named", "name": ref.name, "sha256": file_sha256(ref.path)}
    else:
        kind = "named" if ref.kind == "named" else "config"
        weights = effective_clip_weights(config, clip_weights)
        identity = {"kind": kind, "name": config.name, "clip_weights": clip_weights_identity(weights)}
    identity["config"] = config.to_dict()
    return normalise_identity(identity)


def effective_clip_weights(
    config: MuseConfig, clip_weights: str | os.PathLike | ClipWeights | None
) -> ClipWeights | None:
    """The CLIP weights a named/config model is built with: ``clip_weights``, else the config's
    ``clip_pretrained`` (None: random)."""
    given = parse_clip_weights(clip_weights)
    return given if given is not None else parse_clip_weights(config.clip_pretrained)


def clip_weights_identity(weights: ClipWeights | None) -> str:
    """ "random", the open_clip tag, or "sha256:<hash>" of a local file: a file is identified by its
    content, so the same file elsewhere is the same model."""
    if weights is None or weights.is_random:
        return "random"
    if weights.kind == "file":
        return f"sha256:{file_sha256(weights.value)}"
    return weights.value


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (checkpoints can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def normalise_identity(identity: dict) -> dict:
    """The identity as it reads back from JSON (tuples become lists), so comparisons are exact."""
    return json.loads(json.dumps(identity, sort_keys=True))


def same_model(a: dict | None, b: dict | None) -> bool:
    """True when two identities name the same weights and architecture."""
    if not a or not b:
        return False
    return normalise_identity(a) == normalise_identity(b)


def describe_identity(identity: dict | None) -> str:
    """A short human-readable name for messages, e.g. "tiny (random CLIP weights)"."""
    if not identity:
        return "an unknown model"
    kind = identity.get("kind")
    if kind == "checkpoint":
        return f"checkpoint sha256 {str(identity.get('sha256', '?'))[:12]} ({identity['config']['name']})"
    name = identity.get("name", "?")
    if "clip_weights" in identity:
        weights = identity["clip_weights"]
        weights = "random" if weights == "random" else weights[:19]
        return f"{name} ({weights} CLIP weights)"
    return f"{name} (sha256 {str(identity.get('sha256', '?'))[:12]})"


def identity_difference(expected: dict, given: dict) -> str:
    """Which top-level fields differ between two identities (config fields listed by name)."""
    expected, given = normalise_identity(expected), normalise_identity(given)
    differences = []
    for key in sorted(set(expected) | set(given)):
        if key == "config" and isinstance(expected.get(key), dict) and isinstance(given.get(key), dict):
            fields = sorted(
                k for k in set(expected[key]) | set(given[key]) if expected[key].get(k) != given[key].get(k)
            )
            if fields:
                differences.append(f"config fields {fields}")
        elif expected.get(key) != given.get(key):
            differences.append(f"{key}: {expected.get(key)!r} vs {given.get(key)!r}")
    return "; ".join(differences) or "none"
