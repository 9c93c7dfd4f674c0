"""Retrieval metrics: R@1/5/10, median and mean rank of the true item in each row of a similarity matrix.

A rank is 1 + the number of items scoring STRICTLY higher than the true item, so ties never hurt the
query (the optimistic convention) and the result does not depend on how a sort breaks ties. The common
CLIP4Clip ``compute_metrics`` (``np.sort`` then ``np.where(sorted == true)``) gives the same ranks when
there are no ties and miscounts rows when there are; this module is exact in both cases.

A leaf module: numpy and (optionally passed-in) torch tensors only, no model imports.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

# Rows a chunk holds so that a chunk's comparison mask stays near 16 MB, whatever the item count:
# a 10k x 10k matrix is ranked in ~25 chunks without a Python loop over rows.
_CHUNK_ELEMENTS = 1 << 24

V2T_CONVENTIONS = ("clip4clip", "all_captions")


def _as_matrix(sim: Any) -> np.ndarray:
    """Any array-like (numpy, torch on any device, nested lists) -> a 2-D numpy array, no copy if possible."""
    if hasattr(sim, "detach"):  # a torch tensor; checked by duck type so torch stays optional here
        sim = sim.detach().cpu()
        if sim.dtype.is_floating_point and sim.dtype.itemsize < 4:
            sim = sim.float()  # numpy has no bfloat16; fp16 -> fp32 is exact, so ranks are unchanged
        sim = sim.numpy()
    sim = np.asarray(sim)
    if sim.ndim != 2:
        raise ValueError(f"sim must be a 2-D (queries, items) matrix, got shape {sim.shape}")
    if sim.shape[0] == 0 or sim.shape[1] == 0:
        raise ValueError(f"sim must have at least one query and one item, got shape {sim.shape}")
    if not (np.issubdtype(sim.dtype, np.number) or sim.dtype == np.bool_) or np.iscomplexobj(sim):
        raise ValueError(f"sim must hold real numbers, got dtype {sim.dtype}")
    return sim


def _check_finite_rows(block: np.ndarray, first_row: int, what: str = "row") -> None:
    if np.issubdtype(block.dtype, np.floating):
        bad = np.isnan(block).any(axis=1)
        if bad.any():
            raise ValueError(
                f"sim contains NaN (first in {what} {first_row + int(np.argmax(bad))}); "
                "ranks are undefined, fix the features that produced it"
            )


def _count_above(block: np.ndarray, true_scores: np.ndarray) -> np.ndarray:
    """block (r, n), true_scores (r,) -> (r,) int64: items in each row scoring strictly above the true one."""
    return np.count_nonzero(block > true_scores[:, None], axis=1)


def ranks(sim: Any, targets: Any = None) -> np.ndarray:
    """Rank (1 = best) of each query's true item.

    sim: (Q, N) scores, higher = more similar; numpy, torch or nested lists.
    targets: (Q,) int column of each query's true item; default ``arange(Q)`` (the diagonal), which
        needs Q <= N.
    Returns (Q,) int64 ranks in [1, N]. Raises ValueError on NaN, on a bad shape or on a target outside
    [0, N).
    """
    sim = _as_matrix(sim)
    num_queries, num_items = sim.shape
    if targets is None:
        if num_queries > num_items:
            raise ValueError(f"with the diagonal as ground truth queries must be <= items, got {sim.shape}")
        targets = np.arange(num_queries)
    targets = _check_targets(targets, num_queries, num_items)
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // num_items)
    out = np.empty(num_queries, dtype=np.int64)
    for start in range(0, num_queries, rows_per_chunk):
        block = sim[start : start + rows_per_chunk]  # (r, N), a view
        _check_finite_rows(block, start)
        true_scores = block[np.arange(block.shape[0]), targets[start : start + rows_per_chunk]]  # (r,)
        out[start : start + block.shape[0]] = 1 + _count_above(block, true_scores)
    return out


def _check_targets(targets: Any, num_queries: int, num_items: int) -> np.ndarray:
    targets = np.asarray(targets.detach().cpu() if hasattr(targets, "detach") else targets)
    if targets.shape != (num_queries,) or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"targets must be ({num_queries},) integers, got {targets.shape} {targets.dtype}")
    if num_queries and (targets.min() < 0 or targets.max() >= num_items):
        raise ValueError(f"targets must lie in [0, {num_items}), got [{targets.min()}, {targets.max()}]")
    return targets.astype(np.int64, copy=False)


def metrics_from_ranks(rank_values: Any) -> dict[str, float]:
    """(Q,) ranks -> {"R@1", "R@5", "R@10": percent of queries with rank <= k, "MdR": median, "MnR": mean}.

    The median of an even count is the mean of the two middle ranks (numpy's median, as in CLIP4Clip's
    ``compute_metrics``; its multi-sentence path uses torch.median, which takes the lower one instead).
    """
    rank_values = np.asarray(rank_values, dtype=np.float64)
    if rank_values.ndim != 1 or rank_values.size == 0:
        raise ValueError(f"ranks must be a non-empty 1-D array, got shape {rank_values.shape}")
    result = {f"R@{k}": float(100.0 * np.mean(rank_values <= k)) for k in (1, 5, 10)}
    result["MdR"] = float(np.median(rank_values))
    result["MnR"] = float(np.mean(rank_values))
    return result


def retrieval_metrics(sim: Any) -> dict[str, float]:
    """Metrics of retrieving column i for query i.

    sim: (Q, N) scores with Q <= N; the true item of query i is column i. For text->video pass the
    (texts, videos) matrix; for video->text pass its transpose.
    Returns {"R@1", "R@5", "R@10" (percent), "MdR", "MnR"} as floats.
    """
    return metrics_from_ranks(ranks(sim))


def multi_caption_metrics(
    sim: Any, caption_to_video: Any, v2t: Literal["clip4clip", "all_captions"] = "clip4clip"
) -> dict[str, dict[str, float]]:
    """Metrics when videos have several captions (MSVD, VATEX, ...).

    sim: (C, V) caption-video scores; caption_to_video: (C,) int, the true video column of each caption.
    Text->video: every caption is a query, ranked among all V videos.
    Video->text (only videos with at least one caption are queries), by ``v2t``:
      - "clip4clip" (default; CLIP4Clip's multi-sentence eval, ``tensor_video_to_text_sim``, which its
        descendants copy): each video's candidates are the captioned videos' caption GROUPS, a group
        scoring its best caption; rank = 1 + the number of other groups whose best caption beats the
        video's best true caption. Another video counts at most once however many captions it has.
      - "all_captions" (the COCO/Flickr image-text convention): rank of the video's best-ranked true
        caption among ALL C captions, i.e. 1 + the number of false captions scoring above its best one.
    Returns {"t2v": metrics, "v2t": metrics}, each as ``retrieval_metrics`` returns.
    """
    sim = _as_matrix(sim)
    if v2t not in V2T_CONVENTIONS:
        raise ValueError(f"v2t must be one of {V2T_CONVENTIONS}, got {v2t!r}")
    caption_to_video = _check_targets(caption_to_video, *sim.shape)
    t2v = ranks(sim, caption_to_video)  # NaN is checked here, so the v2t pass can skip it
    v2t_ranks = _video_to_text_ranks(sim, caption_to_video, per_group=v2t == "clip4clip")
    return {"t2v": metrics_from_ranks(t2v), "v2t": metrics_from_ranks(v2t_ranks)}


def _column_slices(sim: np.ndarray) -> list[slice]:
    width = max(1, _CHUNK_ELEMENTS // sim.shape[0])
    return [slice(start, start + width) for start in range(0, sim.shape[1], width)]


def _caption_groups(caption_to_video: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(C,) -> (C,) order grouping captions by video, (G,) captioned videos ascending, (G,) group starts."""
    order = np.argsort(caption_to_video, kind="stable")
    videos, starts = np.unique(caption_to_video[order], return_index=True)
    return order, videos, starts


def _video_to_text_ranks(sim: np.ndarray, caption_to_video: np.ndarray, per_group: bool) -> np.ndarray:
    """(C, V) -> (G,) video->text ranks of the captioned videos, in ascending video order.

    per_group=True: CLIP4Clip's convention, candidates are caption groups scored by their best caption;
    per_group=False: candidates are all C captions.
    """
    order, videos, starts = _caption_groups(caption_to_video)
    out = []
    for columns in _column_slices(sim):
        block = sim[:, columns]  # (C, v)
        group_best = np.maximum.reduceat(block[order], starts, axis=0)  # (G, v)
        in_block = (videos >= columns.start) & (videos < columns.start + block.shape[1])
        cols = videos[in_block] - columns.start  # (g,) columns of this block's captioned videos
        best_true = group_best[np.nonzero(in_block)[0], cols]  # (g,)
        # A video's own captions never beat their best, so counting over all candidates counts false ones.
        candidates = group_best[:, cols] if per_group else block[:, cols]  # (G or C, g)
        out.append(1 + _count_above(candidates.T, best_true))
    return np.concatenate(out)
