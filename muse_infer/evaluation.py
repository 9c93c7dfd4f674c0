"""Retrieval evaluation: a model on a dataset split, or an encoded index with a captions file.

Text->video: every caption is a query ranked against all videos. Video->text: every captioned video is
a query; with several captions a video, CLIP4Clip's convention (``multi_caption_metrics``): candidates
are caption groups, each scored by its best caption. With one caption a video both reduce to
``retrieval_metrics`` on the (caption, video) matrix and its transpose.

    report = evaluate("model.safetensors", DataSpec("msrvtt", "anno/", "test", "videos/"))
    report["t2v"]["R@1"], report["v2t"]["MdR"]
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .datasets import DatasetError, DataSpec, RetrievalSet, group_by_video, read_pairs
from .metrics import multi_caption_metrics

METRIC_KEYS = ("R@1", "R@5", "R@10", "MdR", "MnR")


def similarity_report(text_embeddings: np.ndarray, video_embeddings: np.ndarray, caption_to_video) -> dict:
    """Metrics from embeddings: text (Q, C), video (V, C), caption_to_video (Q,) ints.

    Returns {"t2v": metrics, "v2t": metrics, "captions": Q, "videos": V}; metrics as
    ``muse_infer.metrics.retrieval_metrics`` gives them (R@K in percent, MdR, MnR).
    """
    text = np.asarray(text_embeddings, dtype=np.float64)
    video = np.asarray(video_embeddings, dtype=np.float64)
    if text.ndim != 2 or video.ndim != 2 or text.shape[1] != video.shape[1]:
        raise ValueError(f"embeddings must be (Q, C) and (V, C), got {text.shape} and {video.shape}")
    sim = text @ video.T  # (Q, V) cosine when both are normalised; ranks ignore the temperature
    report = multi_caption_metrics(sim, np.asarray(caption_to_video, dtype=np.int64))
    return {**report, "captions": int(text.shape[0]), "videos": int(video.shape[0])}


def evaluate(
    model,
    data: DataSpec | RetrievalSet,
    batch_size: int | None = None,
    device: str = "auto",
    clip_weights: str | os.PathLike | None = None,
    workers: int | None = None,
    precision: str = "auto",
    tokenizer: str | os.PathLike | None = None,
) -> dict:
    """Evaluate ``model`` (a name, checkpoint or config ``load_model`` accepts, or a loaded backend) on a
    dataset split (``DataSpec``) or prepared ``RetrievalSet``. Returns ``similarity_report``'s dict.

    batch_size: videos a model call (None: 8 on the CPU, 64 on a GPU); precision: "auto" (bf16 on a
    GPU and on a CPU with native bf16, fp32 elsewhere), "fp32", "bf16" or "fp16"; tokenizer: the
    folder of the text tower's Hugging Face tokenizer files (``muse_infer.tokenizer``)."""
    from .encoders import TextEncoder, VideoEncoder

    retrieval = group_by_video(read_pairs(data)) if isinstance(data, DataSpec) else data
    choices = dict(device=device, clip_weights=clip_weights, precision=precision)
    if tokenizer is not None:
        choices["tokenizer"] = tokenizer
    video_encoder = VideoEncoder(model, **choices)
    videos = video_encoder.encode(retrieval.videos, batch_size=batch_size, workers=workers)  # (V, C)
    texts = TextEncoder(video_encoder.backend).encode(retrieval.captions)  # (Q, C)
    return similarity_report(texts, videos, retrieval.caption_to_video)


def evaluate_index(
    index_path: str | os.PathLike,
    captions: DataSpec,
    model=None,
    device: str = "auto",
    precision: str = "auto",
    tokenizer: str | os.PathLike | None = None,
) -> dict:
    """Evaluate an encoded index (``EMB.npy`` + sidecar) against a captions file (JSONL/CSV layout).

    Caption video paths are relative to the index's root (unless ``captions.videos`` says otherwise)
    or absolute under it; each must be a row of the index. Indexed videos without a caption stay in
    the gallery as distractors. The text encoder is the index's own model, or ``model`` (checked to be
    the same model).
    """
    from .encoders import TextEncoder
    from .index import EmbeddingIndex

    index = EmbeddingIndex.load(index_path)
    root = Path(index.metadata.get("root", "."))
    if captions.videos is None:
        captions = DataSpec(**{**captions.__dict__, "videos": str(root)})
    pairs = read_pairs(captions)
    row_of = {path: row for row, path in enumerate(index.paths)}
    owners = []
    for pair in pairs:
        relative = Path(os.path.relpath(os.path.abspath(pair.video), root)).as_posix()
        if relative not in row_of:
            raise DatasetError(
                f"{captions.annotations}: video {pair.video!r} is not in the index {index_path} "
                f"(its {len(index.paths)} paths are relative to {root})"
            )
        owners.append(row_of[relative])
    encoder = TextEncoder.for_index(
        index, device=device, precision=precision, model=model, tokenizer=tokenizer
    )
    texts = encoder.encode([p.caption for p in pairs])
    videos = index.embeddings / np.maximum(np.linalg.norm(index.embeddings, axis=1, keepdims=True), 1e-12)
    return similarity_report(texts, videos, owners)


def format_report(report: dict) -> str:
    """A two-row text table (t2v, v2t) of R@1/R@5/R@10/MdR/MnR."""
    header = f"{'':6}" + "".join(f"{k:>8}" for k in METRIC_KEYS)
    lines = [f"{report['captions']} captions, {report['videos']} videos", header]
    for direction in ("t2v", "v2t"):
        values = report[direction]
        lines.append(f"{direction:6}" + "".join(f"{values[k]:>8.1f}" for k in METRIC_KEYS))
    return "\n".join(lines)
