"""The Ray engine's shard plan: which videos each unit of work holds, fixed before any work starts.

A plan cuts the sorted list of videos still to encode (``OpenJob.todo``) into shards of
``shard_size`` consecutive entries, numbered ``first_id, first_id + 1, ...``. Shard ``id``'s result
is the work directory's ``chunk-{id:06d}.npz`` in the local engine's chunk format (so either engine
resumes the other's work); its records also carry ``"shard": id`` and ``"plan": plan id``.

The plan is saved as ``plan.json`` in the work directory before the cluster gets any work. A rerun
(after the driver was killed, say) takes the saved plan up again when the videos still to do are
exactly those of its unfinished shards: each such shard is encoded again with the same videos, so
in the same model batches, giving the same bits as an uninterrupted run. Otherwise (files added,
changed or removed; chunks of the local engine in between) a new plan is made for what is left,
with ids above every existing chunk and earlier plan, so no two results ever share a file name.

``plan.json``::

    {"format": "muse-infer-shard-plan", "format_version": 1, "plan": "<16 hex>", "shard_size": S,
     "shards": [[id, first_path, last_path, count, sha256], ...]}

where ``sha256`` is the hash of the shard's entries (path, size, mtime_ns): about 200 bytes a shard
(two paths and a hash), so 8 MB for 10 million videos in shards of 256.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_write
from .work import Entry

PLAN_FORMAT, PLAN_FORMAT_VERSION = "muse-infer-shard-plan", 1
PLAN_FILE = "plan.json"


@dataclass(frozen=True)
class Shard:
    """One unit of work: ``entries`` (consecutive in sorted order) whose results go to chunk ``id``."""

    id: int
    entries: tuple[Entry, ...]

    @property
    def digest(self) -> str:
        return entries_digest(self.entries)


@dataclass(frozen=True)
class ShardPlan:
    """A plan's id (16 hex digits, a hash of its shards), its shard size and its shards in path order."""

    plan_id: str
    shard_size: int
    shards: tuple[Shard, ...]

    def to_dict(self) -> dict:
        rows = [[s.id, s.entries[0].path, s.entries[-1].path, len(s.entries), s.digest] for s in self.shards]
        return {
            "format": PLAN_FORMAT,
            "format_version": PLAN_FORMAT_VERSION,
            "plan": self.plan_id,
            "shard_size": self.shard_size,
            "shards": rows,
        }


def entries_digest(entries: Sequence[Entry]) -> str:
    """SHA-256 (hex) of the entries' paths, sizes and mtimes: what a shard's result depends on."""
    digest = hashlib.sha256()
    for entry in entries:
        # surrogateescape: a name that is not UTF-8 hashes as its bytes (a UTF-8 name as before)
        digest.update(f"{entry.path}\0{entry.size}\0{entry.mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def make_plan(todo: Sequence[Entry], shard_size: int, first_id: int) -> ShardPlan:
    """``todo`` (sorted by path) cut into shards of ``shard_size`` entries, ids from ``first_id``."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    shards = tuple(
        Shard(first_id + number, tuple(todo[start : start + shard_size]))
        for number, start in enumerate(range(0, len(todo), shard_size))
    )
    hashed = hashlib.sha256(json.dumps([[s.id, s.digest] for s in shards]).encode())
    return ShardPlan(hashed.hexdigest()[:16], shard_size, shards)


def save_plan(work: Path, plan: ShardPlan) -> None:
    text = json.dumps(plan.to_dict())
    atomic_write(work / PLAN_FILE, lambda handle: handle.write(text.encode()))


def read_plan(work: Path) -> dict | None:
    """The saved plan as written by ``save_plan``, or None when there is none or it is unreadable."""
    try:
        saved = json.loads((work / PLAN_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("format") != PLAN_FORMAT:
        return None
    return saved


def resume_plan(saved: dict, todo: Sequence[Entry], taken_ids: set[int]) -> ShardPlan | None:
    """The saved plan's unfinished shards, rebuilt from ``todo``, if ``todo`` is exactly their entries.

    ``todo`` (sorted by path) is split by the saved shards' path ranges; every non-empty part must
    hold the very entries of its shard (count and hash), every entry of ``todo`` must fall in one,
    and no unfinished shard's id may be ``taken`` (a chunk file of that number exists). Else None.
    """
    paths = [entry.path for entry in todo]
    unfinished, covered = [], 0
    try:
        for shard_id, first, last, count, digest in saved["shards"]:
            part = tuple(todo[bisect_left(paths, first) : bisect_right(paths, last)])
            if not part:
                continue  # finished
            if len(part) != count or entries_digest(part) != digest or shard_id in taken_ids:
                return None
            unfinished.append(Shard(int(shard_id), part))
            covered += len(part)
        plan = ShardPlan(str(saved["plan"]), int(saved["shard_size"]), tuple(unfinished))
    except (KeyError, TypeError, ValueError):
        return None
    return plan if covered == len(todo) else None


def plan_work(
    work: Path, todo: Sequence[Entry], shard_size: int, taken_ids: set[int]
) -> tuple[ShardPlan, bool]:
    """The shards to run now and whether they continue the saved plan; a new plan is saved first.

    taken_ids: numbers of the chunk files already in the work directory.
    """
    saved = read_plan(work)
    if saved is not None:
        resumed = resume_plan(saved, todo, taken_ids)
        if resumed is not None:
            return resumed, True
    earlier = [row[0] for row in saved["shards"]] if saved and isinstance(saved.get("shards"), list) else []
    first_id = max([*taken_ids, *[i for i in earlier if isinstance(i, int)], -1]) + 1
    plan = make_plan(todo, shard_size, first_id)
    save_plan(work, plan)
    return plan, False
