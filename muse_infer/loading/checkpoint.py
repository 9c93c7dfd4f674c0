"""Checkpoints: one .safetensors file (weights + config in its metadata), checked key by key.

Loading never runs pickled code: safetensors files are plain tensors, and ``.bin``/``.pth`` files of
other tools are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from ..atomic import atomic_path
from ..config import MuseConfig
from ..errors import CheckpointError
from .identity import file_sha256
from .reference import CHECKPOINT_FORMAT, config_from_metadata

__all__ = [
    "CheckpointError",
    "atomic_path",
    "save_checkpoint",
    "read_checkpoint",
    "check_state_dict",
    "load_state_dict_checked",
    "load_checkpoint",
    "read_torch_state_dict",
    "file_sha256",
]

FORMAT_NAME = CHECKPOINT_FORMAT
FORMAT_VERSION = "1"


def save_checkpoint(
    model: torch.nn.Module, path: str | os.PathLike, extra_metadata: dict | None = None
) -> Path:
    """Write ``model``'s weights and config to ``path`` atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "config": model.config.to_json()}
    metadata.update({k: str(v) for k, v in (extra_metadata or {}).items()})
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_checkpoint(path: str | os.PathLike) -> tuple[MuseConfig, dict[str, torch.Tensor], dict[str, str]]:
    """(config, state_dict, metadata) of a muse-infer .safetensors checkpoint, with clear errors."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:  # safetensors raises its own error types for truncated/garbled files
        raise CheckpointError(
            f"{path}: not a readable .safetensors file ({error}); is it truncated?"
        ) from None
    config = config_from_metadata(metadata, path)
    return config, tensors, metadata


def check_state_dict(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError naming the first missing, unexpected or wrongly shaped key."""
    missing = [k for k in expected if k not in given]
    if missing:
        raise CheckpointError(f"{source}: missing key '{missing[0]}' ({len(missing)} missing in all)")
    unexpected = [k for k in given if k not in expected]
    if unexpected:
        raise CheckpointError(
            f"{source}: unexpected key '{unexpected[0]}' ({len(unexpected)} unexpected in all)"
        )
    for key, tensor in expected.items():
        if tuple(given[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{source}: key '{key}' has shape {tuple(given[key].shape)}, the model expects {tuple(tensor.shape)}"
            )


def load_state_dict_checked(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load every key of ``model`` from ``state_dict`` after checking names and shapes."""
    expected = model.state_dict()
    check_state_dict(expected, state_dict, source)
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state_dict.items()}, strict=True)


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu", tokenizer: str | os.PathLike | None = None
):
    """A MuseModel in eval mode from a muse-infer checkpoint. tokenizer: the folder of its text tower's
    Hugging Face files, when it has such a tower (``muse_infer.tokenizer``)."""
    from ..model import MuseModel

    config, tensors, _ = read_checkpoint(path)
    model = MuseModel(config, text_files=None if tokenizer is None else str(tokenizer))
    load_state_dict_checked(model, tensors, str(path))
    return model.to(device).eval()


def read_torch_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or from .bin/.pth/.pt (any suffix) with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as error:
            raise CheckpointError(f"{path}: not a readable .safetensors file ({error})") from None
    try:
        with (
            warnings.catch_warnings()
        ):  # torch warns about pickle protocols before refusing; our message says it
            warnings.simplefilter("ignore")
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"{path}: {_refusal_reason(path, error)}") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors (a state dict)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _refusal_reason(path: Path, error: Exception) -> str:
    """Why torch.load(weights_only=True) refused a file, in our words (torch's words suggest unsafe loading)."""
    if "GLOBAL" in str(error) or _pickles_objects(path):
        return (
            "holds pickled Python objects besides tensors, which muse-infer never loads (unpickling can run "
            "code). Save a plain state dict of tensors, or convert it to .safetensors where it was made"
        )
    return (
        "not a PyTorch weights file or a damaged one (expected a .safetensors file or a torch.save'd state "
        "dict of tensors)"
    )


def _pickles_objects(path: Path) -> bool:
    """Whether the file is a pickle (plain, or the data.pkl of torch's zip format) that names classes or
    functions. Read with pickletools, which parses opcodes and runs nothing."""
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith("data.pkl")]
                data = archive.read(names[0]) if names else b""
        else:
            data = path.read_bytes()
        opcodes = {op.name for op, _, _ in pickletools.genops(data)}
    except Exception:  # not a pickle at all (or a damaged one)
        return False
    return bool(opcodes & {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ"})  # names a class or function
