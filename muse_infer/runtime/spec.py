"""``ModelSpec``: which encoder to build, as data, resolved once at the edge.

A spec holds what a user chooses (model reference, CLIP weights, backend, device, precision, frames,
batch size) in resolved form: the reference decided (``loading.reference.resolve_model``), files made
absolute, CLIP weights parsed, every name checked. The CLI's option parsing and the SDK's
constructors make one (``ModelSpec.resolve``); everything below takes it: ``VideoEncoder`` /
``TextEncoder``, ``load_backend``, the local and Ray engines (which ship it to their actors, so the
driver and the workers cannot disagree), export and training.

A spec says what its model is without loading weights or importing torch (``facts``: identity,
embedding size, frame settings, from a config, a checkpoint header or an export manifest); ``load()``
builds the backend. ``device`` and ``precision`` may stay "auto": they are decided where the model
runs (``on_device``), so a Ray actor on a GPU picks bf16 while the driver has none. Every default of
an encoder lives here.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from functools import cached_property

from ..errors import BackendError, ConfigError
from ..loading.reference import ClipWeights, ModelRef, parse_clip_weights, resolve_model
from .choices import BACKENDS, PRECISION_CHOICES, SAMPLING_CHOICES
from .devices import default_batch_size
from .precision import resolve_precision


@dataclass(frozen=True)
class ModelFacts:
    """What a spec's model is, known without its weights.

    identity: ``loading.identity`` dict (which weights; checked against an index's); embed_dim: C;
    max_frames, framerate, slice_mode, image_size: the model's frame sampling defaults; max_words:
    text tokens; precision: an export's precision (None for a model torch runs in any); preprocess:
    the frames' mean, std, resize_mode and interpolation (``MuseConfig.frame_preprocess``).
    """

    identity: dict
    embed_dim: int
    max_frames: int
    framerate: float
    slice_mode: str
    image_size: int
    max_words: int
    precision: str | None = None
    preprocess: dict | None = None  # mean, std, resize_mode, interpolation (None: CLIP4Clip's)


@dataclass(frozen=True)
class ModelSpec:
    """Which encoder to build. Make one with ``ModelSpec.resolve`` (it checks and resolves); the
    fields are then final: ``ref`` the resolved model reference, ``clip_weights`` the parsed CLIP
    weights of a named/config model (None: the config's own, or not applicable), ``backend`` "torch",
    "onnx", "torchscript" or "pt2", ``device`` "auto" or a device name, ``precision`` "auto", "fp32",
    "bf16" or "fp16", ``max_frames`` frames a video (None: the model's), ``batch_size`` videos a model
    call (None: by device, ``runtime.devices.default_batch_size``), ``sampling`` how frames are
    chosen ("exact": the frame shown at each sample time; "keyframes": the nearest keyframe),
    ``tokenizer`` the absolute folder of the text tower's Hugging Face files (None: the Hugging Face
    cache when the model needs them; ``muse_infer.tokenizer``), ``decoder`` where videos are decoded
    ("cpu", "cuda", "cuda:N": ``video.devices``; the same frames, so not part of ``settings``)."""

    ref: ModelRef
    clip_weights: ClipWeights | None = None
    backend: str = "torch"
    device: str = "auto"
    precision: str = "auto"
    max_frames: int | None = None
    batch_size: int | None = None
    sampling: str = "exact"
    tokenizer: str | None = None
    decoder: str = "cpu"

    @classmethod
    def resolve(
        cls,
        model: str | os.PathLike | ModelRef,
        clip_weights: str | os.PathLike | ClipWeights | None = None,
        backend: str = "torch",
        device: str | None = "auto",
        precision: str | None = "auto",
        max_frames: int | None = None,
        batch_size: int | None = None,
        sampling: str = "exact",
        tokenizer: str | os.PathLike | None = None,
        decoder: str = "cpu",
    ) -> ModelSpec:
        """Check every choice and resolve the reference; raises ``ConfigError``/``BackendError``/
        ``CheckpointError`` naming the argument. torch runs the model an export directory was made from."""
        _check_choice("backend", backend, BACKENDS)
        _check_choice("precision", precision or "auto", PRECISION_CHOICES)
        _check_choice("sampling", sampling, SAMPLING_CHOICES)
        _check_decoder(decoder)
        _check_count("max_frames", max_frames)
        _check_count("batch_size", batch_size)
        ref = model if isinstance(model, ModelRef) else resolve_model(model)
        weights = parse_clip_weights(clip_weights)
        if ref.kind == "export" and backend == "torch":
            ref, weights, exported_tokenizer = _exported_from(ref, weights)
            tokenizer = tokenizer if tokenizer is not None else exported_tokenizer
        elif ref.kind != "export" and backend != "torch":
            raise BackendError(
                f"backend {backend!r} runs an export directory, and {ref.name!r} is not one: first run "
                f"`muse-infer export --checkpoint {ref.name} --out EXPORT_DIR --format {backend}` "
                f"and pass EXPORT_DIR as the model (--model EXPORT_DIR)"
            )
        if weights is not None and ref.kind not in ("named", "config"):
            raise ConfigError(
                f"--clip-weights applies to a named model or a config file; {ref.name!r} is a "
                f"{ref.kind} that holds its own weights: leave --clip-weights out"
            )
        if ref.path is not None:  # absolute: the spec means the same file from any folder or node
            ref = ModelRef(ref.kind, ref.name, ref.path.resolve())
        return cls(
            ref,
            weights,
            backend,
            device or "auto",
            precision or "auto",
            max_frames,
            batch_size,
            sampling,
            _tokenizer_folder(tokenizer),
            decoder,
        )

    @classmethod
    def for_index(
        cls,
        source: dict,
        model: str | os.PathLike | None = None,
        clip_weights: str | os.PathLike | None = None,
        **choices,
    ) -> ModelSpec:
        """The spec of the model an index records (``source``: its sidecar's ``model_source``), with the
        user's overrides: another ``model`` (checked against the index later, by identity) keeps the
        index's CLIP weights unless ``clip_weights`` is given, so ``--model ViT-B-32`` on an index made
        with random or local-file CLIP weights finds the same weights. ``choices``: backend, device,
        precision."""
        if model is None:
            model = source["model"]
        if clip_weights is None:
            recorded = source.get("clip_weights")
            ref = resolve_model(model)
            if recorded is not None and ref.kind in ("named", "config"):
                clip_weights = recorded
        if choices.get("tokenizer") is None and source.get("tokenizer"):
            choices["tokenizer"] = source["tokenizer"]  # the folder the index was made with
        return cls.resolve(model, clip_weights=clip_weights, **choices)

    def replace(self, **changes) -> ModelSpec:
        """This spec with some fields changed (checked again)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)} | changes
        model = fields.pop("ref")
        return ModelSpec.resolve(model, **fields)

    # --- what the model is, without its weights -------------------------------------------------

    @cached_property
    def facts(self) -> ModelFacts:
        """Identity, sizes and frame defaults, from the config, checkpoint header or export manifest."""
        if self.ref.kind == "export":
            return _export_facts(self.ref)
        from ..loading.identity import model_identity
        from ..loading.reference import model_config

        config = model_config(self.ref, self.clip_weights)
        return ModelFacts(
            identity=model_identity(self.ref, config, self.clip_weights),
            embed_dim=config.embed_dim,
            max_frames=config.max_frames,
            framerate=config.framerate,
            slice_mode=config.slice_mode,
            image_size=config.image_size,
            max_words=config.max_words,
            preprocess=config.frame_preprocess,
        )

    @property
    def identity(self) -> dict:
        return self.facts.identity

    @property
    def embed_dim(self) -> int:
        return self.facts.embed_dim

    @property
    def name(self) -> str:
        """The model as the user named it (for messages)."""
        return self.ref.name

    @property
    def source(self) -> dict:
        """How to load the model again from any folder, as an index or export records it."""
        weights = None if self.clip_weights is None else self.clip_weights.value
        source = {"model": self.ref.source, "clip_weights": weights}
        return source | ({"tokenizer": self.tokenizer} if self.tokenizer else {})

    @property
    def frame_settings(self):
        """``video.frames.FrameSettings``: the model's sampling with ``max_frames`` applied."""
        from ..video.frames import FrameSettings

        facts = self.facts
        return FrameSettings(
            self.max_frames or facts.max_frames,
            facts.framerate,
            facts.slice_mode,
            facts.image_size,
            self.sampling,
            **(facts.preprocess or {}),
            decoder=self.decoder,
        )

    @property
    def settings(self) -> dict:
        """Frame settings that, with the identity, determine every embedding (an index records them)."""
        return self.frame_settings.to_dict()

    # --- where it runs --------------------------------------------------------------------------

    def on_device(self, device: str | None = None, text_only: bool = False) -> ModelSpec:
        """This spec with ``device`` (default: its own) resolved on this machine and precision and
        batch size decided for it: what ``load`` runs. Imports torch (to see the GPUs).

        text_only (queries only): "auto" precision on the CPU is fp32, whatever the CPU: a query is a
        few dozen tokens, too little work for bf16 to pay back its cast of the weights."""
        from .devices import resolve_device

        device = device or self.device
        if not (self.backend == "onnx" and device == "auto"):  # ONNX Runtime picks its provider for auto
            device = resolve_device(device)
        if self.backend == "torch":
            precision = resolve_precision(self.precision, device, cpu_bf16=False if text_only else None)
        else:
            precision = self._export_precision()
        batch_size = self.batch_size or default_batch_size(device)
        return dataclasses.replace(self, device=device, precision=precision, batch_size=batch_size)

    def _export_precision(self) -> str:
        exported = self.facts.precision or "fp32"
        if self.precision not in ("auto", exported):
            raise BackendError(
                f"{self.ref.name}: exported in {exported}, not {self.precision}: export it again with "
                f"`muse-infer export --checkpoint CHECKPOINT --out DIR --format {self.backend} --precision "
                f"{self.precision}`, or run the checkpoint with --backend torch"
            )
        return exported

    def load(self, compile_backbone: str = "off", text_only: bool = False):
        """The backend running this model (``runtime.Backend``), on ``on_device()``'s device and
        precision. compile_backbone: torch only (``TorchBackend``). text_only: torch loads the text
        tower alone where it can (for searching: seconds less, and the same text embeddings)."""
        resolved = self.on_device(text_only=text_only)
        if resolved.backend == "torch":
            from .torch_backend import TorchBackend

            return TorchBackend.from_spec(resolved, compile_backbone, text_only)
        from .exported import load_export_backend

        return load_export_backend(resolved)


def _check_choice(name: str, value: str, choices: tuple) -> None:
    if value not in choices:
        raise BackendError(f"{name} {value!r} is not one of {choices}")


def _check_decoder(decoder: str) -> None:
    from ..video.devices import check_decoder_name

    try:
        check_decoder_name(decoder)
    except ValueError as error:
        raise BackendError(str(error)) from None


def _check_count(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _tokenizer_folder(tokenizer: str | os.PathLike | None) -> str | None:
    """``--tokenizer``'s folder, absolute; ConfigError naming it when it is not a folder."""
    if tokenizer is None:
        return None
    from pathlib import Path

    folder = Path(tokenizer)
    if not folder.is_dir():
        raise ConfigError(
            f"--tokenizer {tokenizer}: not a folder (give the folder holding the text tower's tokenizer.json)"
        )
    return str(folder.resolve())


def _exported_from(
    ref: ModelRef, weights: ClipWeights | None
) -> tuple[ModelRef, ClipWeights | None, str | None]:
    """The model an export directory was made from (its manifest's ``model_source``), for torch, with
    its tokenizer folder (the export's copy, else the recorded one; None for CLIP's BPE)."""
    from .manifest import TOKENIZER_FOLDER, export_model_source

    source = export_model_source(ref.path)
    model = resolve_model(source["model"])
    if weights is None and model.kind in ("named", "config"):
        weights = parse_clip_weights(source.get("clip_weights"))
    copy = ref.path / TOKENIZER_FOLDER
    return model, weights, str(copy) if copy.is_dir() else source.get("tokenizer")


def _export_facts(ref: ModelRef) -> ModelFacts:
    """An export directory's facts, from its manifest."""
    from .manifest import manifest_preprocess, read_manifest

    manifest = read_manifest(ref.path)
    preprocessing = manifest["preprocessing"]
    return ModelFacts(
        identity=manifest["model"],
        embed_dim=int(manifest["embed_dim"]),
        max_frames=int(preprocessing["max_frames"]),
        framerate=float(preprocessing["framerate"]),
        slice_mode=str(preprocessing["slice_mode"]),
        image_size=int(preprocessing["image_size"]),
        max_words=int(manifest["tokenizer"]["max_words"]),
        precision=str(manifest.get("precision", "fp32")),
        preprocess=manifest_preprocess(manifest),
    )
