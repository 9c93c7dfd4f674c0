"""Readers for the file layouts of text-video retrieval benchmarks: (video path, caption) pairs.

A leaf module (no model imports). Layouts (see docs/architecture.md, "Benchmarks and metrics"):

- ``msrvtt``: ``annotations`` is the directory holding the CLIP4Clip files.
  split "test" (1k-A): ``MSRVTT_JSFUSION_test.csv`` (columns key, vid_key, video_id, sentence), one
  caption a video; split "train" (9k): ``MSRVTT_train.9k.csv`` (column video_id) and
  ``MSRVTT_data.json`` (``sentences``: [{video_id, caption}]), every caption of those videos.
  Videos: ``{videos}/{video_id}.mp4``.
- ``didemo``: ``{split}_list.txt`` (one video name a line) and ``{split}_data.json``
  ([{video, description, times}]); all descriptions of a video joined into one paragraph, in file
  order. Videos: the file under ``videos`` whose name minus its last extension is the listed name.
- ``activitynet``: ``{split}_ids.json`` (a list of ids) and ``train.json`` (split train) or
  ``val_1.json`` (split val): {id: {"sentences": [...]}}; the sentences joined into one paragraph.
  Videos found as for DiDeMo.
- ``jsonl``: one JSON object a line with a video path and a caption (keys ``video`` and ``caption``
  by default); ``csv``: a header row naming those columns. Relative video paths are taken relative to
  ``videos`` when given, else to the annotation file's directory.

Every reader returns a list of ``Pair(video, caption)``; ``group_by_video`` turns pairs into the
caption -> video mapping an evaluation needs. Errors name the file, the line and what is missing.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .errors import DatasetError

LAYOUTS = ("msrvtt", "didemo", "activitynet", "jsonl", "csv")
SPLITS = {
    "msrvtt": ("train", "test"),
    "didemo": ("train", "val", "test"),
    "activitynet": ("train", "val"),
}
ACTIVITYNET_CAPTIONS = {"train": "train.json", "val": "val_1.json"}


class Pair(NamedTuple):
    """One training/evaluation example: a video file and a caption (or paragraph) describing it."""

    video: str
    caption: str


@dataclass(frozen=True)
class DataSpec:
    """Where a dataset split lives: its ``layout``, the annotation file or directory, split, videos dir."""

    layout: str
    annotations: str
    split: str | None = None
    videos: str | None = None
    video_key: str = "video"
    caption_key: str = "caption"

    @classmethod
    def from_dict(cls, data: dict, source: str = "data spec") -> DataSpec:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise DatasetError(f"{source}: unknown field(s) {unknown}; known: {sorted(known)}")
        if "layout" not in data or "annotations" not in data:
            raise DatasetError(f"{source}: needs 'layout' and 'annotations'")
        return cls(**data)


def read_pairs(spec: DataSpec) -> list[Pair]:
    """The (video, caption) pairs of one dataset split, videos as paths (checked to exist for the
    benchmark layouts, whose video names must be resolved; plain JSONL/CSV paths are returned as given)."""
    if spec.layout not in LAYOUTS:
        raise DatasetError(f"unknown dataset layout {spec.layout!r}; choose from {LAYOUTS}")
    if spec.layout in ("jsonl", "csv"):
        reader = read_jsonl if spec.layout == "jsonl" else read_csv
        return reader(spec.annotations, spec.videos, spec.video_key, spec.caption_key)
    split = spec.split or "test"
    if split not in SPLITS[spec.layout]:
        raise DatasetError(f"{spec.layout} has splits {SPLITS[spec.layout]}, not {split!r}")
    if spec.videos is None:
        raise DatasetError(f"{spec.layout}: the videos directory is needed (videos=...)")
    readers = {"msrvtt": read_msrvtt, "didemo": read_didemo, "activitynet": read_activitynet}
    return readers[spec.layout](spec.annotations, split, spec.videos)


# ------------------------------------------------------------------------------------------------
# Plain files


def read_jsonl(
    path: str | os.PathLike, videos: str | None = None, video_key: str = "video", caption_key: str = "caption"
) -> list[Pair]:
    """Pairs from a JSONL file: one object a line with ``video_key`` and ``caption_key``; blank lines skipped."""
    path = Path(path)
    root = Path(videos) if videos else path.parent
    pairs = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DatasetError(f"{path}, line {number}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise DatasetError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}")
        pairs.append(_pair(record, root, video_key, caption_key, f"{path}, line {number}"))
    if not pairs:
        raise DatasetError(f"{path}: no examples")
    return pairs


def read_csv(
    path: str | os.PathLike, videos: str | None = None, video_key: str = "video", caption_key: str = "caption"
) -> list[Pair]:
    """Pairs from a CSV file with a header row naming ``video_key`` and ``caption_key`` columns."""
    path = Path(path)
    root = Path(videos) if videos else path.parent
    rows = _read_csv_rows(path, required=(video_key, caption_key))
    pairs = [_pair(row, root, video_key, caption_key, f"{path}, line {n}") for n, row in rows]
    if not pairs:
        raise DatasetError(f"{path}: no examples")
    return pairs


def _pair(record: dict, root: Path, video_key: str, caption_key: str, where: str) -> Pair:
    for key in (video_key, caption_key):
        if key not in record:
            raise DatasetError(f"{where}: missing field {key!r} (has {sorted(record)})")
        if not isinstance(record[key], str) or not record[key].strip():
            raise DatasetError(f"{where}: field {key!r} must be a non-empty string")
    return Pair(str(root / record[video_key]), record[caption_key])


# ------------------------------------------------------------------------------------------------
# Benchmarks


def read_msrvtt(annotations: str | os.PathLike, split: str, videos: str | os.PathLike) -> list[Pair]:
    """MSR-VTT 1k-A test (one caption a video) or train.9k (every caption of each video)."""
    root = Path(annotations)
    if split == "test":
        table = root / "MSRVTT_JSFUSION_test.csv"
        rows = _read_csv_rows(table, required=("video_id", "sentence"))
        pairs = [Pair(_msrvtt_video(videos, row["video_id"]), row["sentence"]) for _, row in rows]
    else:
        table = root / "MSRVTT_train.9k.csv"
        ids = [row["video_id"] for _, row in _read_csv_rows(table, required=("video_id",))]
        captions = _msrvtt_captions(root / "MSRVTT_data.json")
        missing = [i for i in ids if i not in captions]
        if missing:
            raise DatasetError(
                f"{root / 'MSRVTT_data.json'}: no sentences for video {missing[0]!r} "
                f"({len(missing)} of the {len(ids)} videos in {table.name})"
            )
        pairs = [Pair(_msrvtt_video(videos, i), c) for i in ids for c in captions[i]]
    _check_videos_exist(pairs, table)
    return pairs


def _msrvtt_video(videos: str | os.PathLike, video_id: str) -> str:
    return str(Path(videos) / f"{video_id}.mp4")


def _msrvtt_captions(path: Path) -> dict[str, list[str]]:
    data = _read_json(path)
    sentences = data.get("sentences") if isinstance(data, dict) else None
    if not isinstance(sentences, list):
        raise DatasetError(f"{path}: expected an object with a 'sentences' list")
    captions: dict[str, list[str]] = {}
    for number, item in enumerate(sentences):
        if not isinstance(item, dict) or "video_id" not in item or "caption" not in item:
            raise DatasetError(f"{path}: sentences[{number}] lacks 'video_id' or 'caption'")
        captions.setdefault(item["video_id"], []).append(item["caption"])
    return captions


def read_didemo(annotations: str | os.PathLike, split: str, videos: str | os.PathLike) -> list[Pair]:
    """DiDeMo: one pair a listed video, its descriptions joined into a paragraph (CLIP4Clip's setting)."""
    root = Path(annotations)
    listed = [line.strip() for line in _read_text(root / f"{split}_list.txt").splitlines() if line.strip()]
    data_file = root / f"{split}_data.json"
    data = _read_json(data_file)
    if not isinstance(data, list):
        raise DatasetError(f"{data_file}: expected a list of {{video, description, times}} objects")
    descriptions: dict[str, list[str]] = {}
    for number, item in enumerate(data):
        if not isinstance(item, dict) or "video" not in item or "description" not in item:
            raise DatasetError(f"{data_file}: item {number} lacks 'video' or 'description'")
        descriptions.setdefault(item["video"], []).append(item["description"])
    return _paragraph_pairs(listed, descriptions, videos, data_file)


def read_activitynet(annotations: str | os.PathLike, split: str, videos: str | os.PathLike) -> list[Pair]:
    """ActivityNet Captions (paragraph-to-video): one pair a listed id, its sentences joined."""
    root = Path(annotations)
    ids_file = root / f"{split}_ids.json"
    ids = _read_json(ids_file)
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise DatasetError(f"{ids_file}: expected a JSON list of video ids")
    captions_file = root / ACTIVITYNET_CAPTIONS[split]
    data = _read_json(captions_file)
    if not isinstance(data, dict):
        raise DatasetError(f"{captions_file}: expected an object mapping video ids to annotations")
    sentences = {}
    for video_id, item in data.items():
        if not isinstance(item, dict) or not isinstance(item.get("sentences"), list):
            raise DatasetError(f"{captions_file}: {video_id!r} lacks a 'sentences' list")
        sentences[video_id] = [s.strip() for s in item["sentences"]]
    return _paragraph_pairs(ids, sentences, videos, captions_file)


def _paragraph_pairs(listed: list[str], texts: dict[str, list[str]], videos, source: Path) -> list[Pair]:
    """One (video file, paragraph) pair a listed name; the files found by name under ``videos``."""
    missing = [name for name in listed if name not in texts]
    if missing:
        raise DatasetError(
            f"{source}: no text for video {missing[0]!r} ({len(missing)} listed videos lack text)"
        )
    files = _video_files_by_stem(videos, set(listed))
    absent = [name for name in listed if name not in files]
    if absent:
        raise DatasetError(
            f"{videos}: no video file for {absent[0]!r} (looked for '{absent[0]}.<ext>'; "
            f"{len(absent)} of {len(listed)} listed videos missing)"
        )
    return [Pair(files[name], " ".join(texts[name])) for name in listed]


def _video_files_by_stem(videos, wanted: set[str]) -> dict[str, str]:
    """{name: path} for files under ``videos`` (recursively) whose name minus its last extension is wanted."""
    if not Path(videos).is_dir():
        raise DatasetError(f"videos directory not found: {videos}")
    found = {}
    for folder, _, names in os.walk(videos):
        for name in sorted(names):
            stem = name.rsplit(".", 1)[0] if "." in name else name
            if stem in wanted and stem not in found:
                found[stem] = os.path.join(folder, name)
    return found


def _check_videos_exist(pairs: Iterable[Pair], source: Path) -> None:
    for pair in pairs:
        if not os.path.isfile(pair.video):
            raise DatasetError(f"{source}: video file not found: {pair.video}")


# ------------------------------------------------------------------------------------------------
# Grouping for evaluation


@dataclass(frozen=True)
class RetrievalSet:
    """Videos (unique, in order of first appearance), captions, and each caption's video index."""

    videos: list[str]
    captions: list[str]
    caption_to_video: list[int]

    @property
    def one_caption_per_video(self) -> bool:
        return len(self.captions) == len(self.videos) and self.caption_to_video == list(
            range(len(self.videos))
        )


def group_by_video(pairs: Iterable[Pair]) -> RetrievalSet:
    """Pairs -> RetrievalSet; a video listed with several captions becomes one video with several queries."""
    videos: list[str] = []
    index: dict[str, int] = {}
    captions, owners = [], []
    for pair in pairs:
        if pair.video not in index:
            index[pair.video] = len(videos)
            videos.append(pair.video)
        captions.append(pair.caption)
        owners.append(index[pair.video])
    if not captions:
        raise DatasetError("no (video, caption) pairs to evaluate")
    return RetrievalSet(videos, captions, owners)


# ------------------------------------------------------------------------------------------------
# File helpers


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"annotation file not found: {path}") from None
    except UnicodeDecodeError as error:
        raise DatasetError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: is a directory, expected a file") from None


def _read_json(path: Path):
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path}, line {error.lineno}: not valid JSON ({error.msg})") from None


def _read_csv_rows(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict]]:
    """(line number, row) for each data row; checks the header names every ``required`` column."""
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    header = reader.fieldnames or []
    missing = [c for c in required if c not in header]
    if missing:
        raise DatasetError(f"{path}, line 1: missing column(s) {missing} (header: {header})")
    rows = []
    for row in reader:
        if None in row or any(row[c] is None for c in required):
            raise DatasetError(f"{path}, line {reader.line_num}: wrong number of fields")
        rows.append((reader.line_num, row))
    return rows
