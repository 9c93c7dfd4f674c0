"""Backends that run an export directory (written by ``muse-infer export``): ONNX Runtime, TorchScript,
torch.export ("pt2").

An export directory holds ``manifest.json`` and the encoder files; the manifest carries the model
identity, so an index encoded by one backend is searched by another. onnxruntime is imported only when
an ONNX session is created, torch only by the TorchScript and pt2 backends.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import BackendError
from .backend import Backend
from .devices import resolve_device
from .manifest import manifest_preprocess, read_manifest


def load_export_backend(spec):
    """The backend (``spec.backend``: "onnx" | "torchscript" | "pt2") running the export directory of
    ``spec`` (a ``ModelSpec`` resolved ``on_device``: its precision is the export's)."""
    cls = {"onnx": OnnxBackend, "torchscript": TorchScriptBackend, "pt2": Pt2Backend}[spec.backend]
    loaded = cls(spec.ref.path, spec.device)
    loaded.spec = spec
    return loaded


class _ExportBackend(Backend):
    """What the export backends share: the manifest's settings and input checks."""

    name = "export"
    runtime = ""  # the manifest's file variant: "onnx", "torchscript" or "pt2"

    def __init__(self, directory: Path, device: str):
        manifest = read_manifest(directory)
        self.directory, self.manifest, self.device = directory, manifest, device
        preprocessing = manifest["preprocessing"]
        self.identity = manifest["model"]
        self.source = {"model": str(directory), "clip_weights": None}
        self.max_frames = int(preprocessing["max_frames"])
        self.framerate = float(preprocessing["framerate"])
        self.slice_mode = str(preprocessing["slice_mode"])
        self.image_size = int(preprocessing["image_size"])
        self.max_words = int(manifest["tokenizer"]["max_words"])
        self.embed_dim = int(manifest["embed_dim"])
        self.logit_scale = float(manifest["logit_scale"])
        self.precision = str(manifest.get("precision", "fp32"))  # older manifests: fp32 exports
        self.preprocess = manifest_preprocess(manifest)
        self._tokenizer = None

    def tokenize(self, texts: list[str]) -> np.ndarray:
        """texts -> (N, max_words) int64 as the manifest's tokenizer says: CLIP's BPE, or the Hugging
        Face tokenizer whose files the export holds (its ``tokenizer/`` folder)."""
        spec = self.manifest["tokenizer"]
        if "hf" not in spec:
            return super().tokenize(texts)
        if self._tokenizer is None:
            from ..tokenizer import HfTokenizer

            folder = self.directory / spec["folder"]
            if not (folder / "tokenizer.json").is_file():
                raise BackendError(
                    f"{folder}/tokenizer.json: listed in the manifest but missing; export again"
                )
            hf = spec["hf"]
            self._tokenizer = HfTokenizer(
                folder, self.max_words, hf.get("clean", "whitespace"), hf.get("strip_sep_token", False)
            )
        return self._tokenizer(texts).numpy()

    def _file(self, encoder: str, variant: str) -> Path:
        files = self.manifest["encoders"][encoder]["files"]
        if variant not in files:
            raise BackendError(
                f"{self.directory}: no {variant} {encoder} encoder in this export (it has {sorted(files)}); "
                f"export again with --format {self.runtime}"
            )
        path = self.directory / files[variant]["file"]
        if not path.is_file():
            raise BackendError(f"{path}: listed in the manifest but missing; export again")
        return path

    def _check_video(self, frames: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        frames = np.ascontiguousarray(frames, dtype=np.float32)
        mask = np.ascontiguousarray(mask, dtype=np.float32)
        expected = (self.max_frames, 3, self.image_size, self.image_size)
        if frames.ndim != 5 or frames.shape[1:] != expected:
            raise BackendError(
                f"{self.directory}: the exported video encoder takes frames (batch, {', '.join(map(str, expected))}), "
                f"got {frames.shape}; it was exported for {self.max_frames} frames (do not change --frames)"
            )
        if mask.shape != frames.shape[:2]:
            raise BackendError(f"mask must be (batch, {self.max_frames}), got {mask.shape}")
        return frames, mask

    def _check_text(self, token_ids: np.ndarray) -> np.ndarray:
        ids = np.ascontiguousarray(token_ids, dtype=np.int64)
        if ids.ndim != 2 or ids.shape[1] != self.max_words:
            raise BackendError(f"token ids must be (N, {self.max_words}), got {ids.shape}")
        return ids


class OnnxBackend(_ExportBackend):
    """ONNX Runtime sessions on ``video_encoder.onnx`` / ``text_encoder.onnx`` (created on first use)."""

    name = "onnx"
    runtime = "onnx"

    def __init__(self, directory: Path, device: str = "cpu"):
        super().__init__(directory, device)
        self._sessions: dict[str, object] = {}

    def encode_video(self, frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """frames (B, T, 3, H, W) float32, mask (B, T) -> (B, C) float32 L2-normalised."""
        frames, mask = self._check_video(frames, mask)
        return self._session("video").run(None, {"frames": frames, "mask": mask})[0]

    def encode_text_tokens(self, token_ids: np.ndarray) -> np.ndarray:
        """token_ids (N, L) int64 -> (N, C) float32 L2-normalised."""
        return self._session("text").run(None, {"ids": self._check_text(token_ids)})[0]

    def _session(self, encoder: str):
        if encoder not in self._sessions:
            self._sessions[encoder] = _onnx_session(self._file(encoder, "onnx"), self.device)
        return self._sessions[encoder]


def _onnx_session(path: Path, device: str):
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendError(
            "backend 'onnx' needs onnxruntime: pip install onnxruntime (or onnxruntime-gpu)"
        ) from None
    return ort.InferenceSession(str(path), providers=_providers(ort, device))


def _providers(ort, device: str) -> list[str]:
    available = ort.get_available_providers()
    wants_gpu = device.startswith("cuda")
    if wants_gpu and "CUDAExecutionProvider" not in available:
        raise BackendError(
            f"device {device!r} with backend 'onnx' needs onnxruntime-gpu (this onnxruntime offers {available})"
        )
    if wants_gpu or (device == "auto" and "CUDAExecutionProvider" in available):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class TorchScriptBackend(_ExportBackend):
    """``torch.jit.load``-ed encoders. The video file with ``muse::selective_scan`` calls is used when the
    op's library loads (``import muse_infer.ops.op``), else the portable file."""

    name = "torchscript"
    runtime = "torchscript"

    def __init__(self, directory: Path, device: str = "cpu"):
        super().__init__(directory, resolve_device(device))
        self._modules: dict[str, object] = {}

    def encode_video(self, frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """frames (B, T, 3, H, W) float32, mask (B, T) -> (B, C) float32 L2-normalised."""
        import torch

        frames, mask = self._check_video(frames, mask)
        with torch.inference_mode():
            inputs = [torch.from_numpy(a).to(self.device) for a in (frames, mask)]
            return self._module("video")(*inputs).float().cpu().numpy()

    def encode_text_tokens(self, token_ids: np.ndarray) -> np.ndarray:
        """token_ids (N, L) int64 -> (N, C) float32 L2-normalised."""
        import torch

        with torch.inference_mode():
            ids = torch.from_numpy(self._check_text(token_ids)).to(self.device)
            return self._module("text")(ids).float().cpu().numpy()

    def _module(self, encoder: str):
        if encoder not in self._modules:
            import torch

            path = self._file(encoder, self._variant(encoder))
            with warnings.catch_warnings():
                warnings.filterwarnings(
                    "ignore", message=".*torch.jit.load.*deprecated", category=FutureWarning
                )
                self._modules[encoder] = torch.jit.load(str(path), map_location=self.device).eval()
        return self._modules[encoder]

    def _variant(self, encoder: str) -> str:
        files = self.manifest["encoders"][encoder]["files"]
        if encoder == "text" or not files.get("torchscript", {}).get("needs_op_library"):
            return "torchscript"
        try:
            from ..ops.op import op_available
        except ImportError:
            op_available = None
        if op_available is not None and op_available(self.device.split(":")[0]):
            return "torchscript"
        return "torchscript_portable"


class Pt2Backend(TorchScriptBackend):
    """``torch.export.load``-ed programs (``video_encoder.pt2``, ``text_encoder.pt2``). The video program
    calls ``muse::selective_scan``, registered here by ``import muse_infer.ops.op``."""

    name = "pt2"
    runtime = "pt2"

    def _module(self, encoder: str):
        if encoder not in self._modules:
            path = self._file(encoder, "pt2")
            if encoder == "video":
                self._register_op()
            self._modules[encoder] = load_exported_program(path, self.device)
        return self._modules[encoder]

    def _register_op(self) -> None:
        """Register muse::selective_scan (import muse_infer.ops.op), refusing where it has no kernel."""
        try:
            from ..ops.op import op_available
        except ImportError as error:
            raise BackendError(f"backend 'pt2' needs the muse::selective_scan op ({error})") from None
        if not op_available(self.device.split(":")[0]):
            raise BackendError(
                f"{self.directory / 'video_encoder.pt2'} calls muse::selective_scan, which has no kernel "
                f"on {self.device!r} here (build the package with `pip install --no-build-isolation -e .`, "
                "or use --backend torchscript, whose portable file needs no op)"
            )


def load_exported_program(path: str | os.PathLike, device: str = "cpu"):
    """``torch.export.load(path).module()`` on ``device`` (register muse::selective_scan first if needed).

    The programs are exported on the CPU; for another device the program's tensors (weights and the
    constants the graph creates) are moved with ``torch.export.passes.move_to_device_pass``.
    """
    import torch

    program = torch.export.load(str(path))
    if torch.device(device).type != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, torch.device(device))
    return program.module()
