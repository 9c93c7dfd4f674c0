"""The Ray engine behind ``muse-infer encode-videos DIR --out EMB.npy --engine ray [--address ...]``.

The same job as the local engine (``muse_infer.jobs.encode``: the folder walk, the work directory
``EMB.npy.parts/`` with its lock and ``job.json``, the resume rule, the failures, the index), with
the encoding spread over a Ray cluster as a Ray Data pipeline::

    shards (from plan.json) --map: CPU tasks--> uint8 clips --map_batches: model actors--> rows --> driver

1. The driver plans: the sorted videos still to do are cut into shards of ``chunk_size`` videos
   (``muse_infer.jobs.shards``; ``plan.json``, written before any work starts).
2. Decoding: one Ray task a shard (1 CPU), decoding its videos one after another in a decoder
   subprocess (``muse_infer.video.pool.DecodePool`` with one worker), so a decode that hangs is
   killed after ``timeout`` seconds and a decoder crash fails one file; reasons are the local
   engine's, word for word. The task ships the shard's clips as uint8 (a quarter of float32).
3. The model: an actor pool (``ShardEmbedder``, a class passed to ``map_batches``), the model loaded
   once per actor: one GPU each where the cluster has GPUs, CPU actors otherwise. An actor embeds a
   whole shard, in model batches of ``batch_size`` decoded videos (``VideoEncoder.encode_decoded``),
   and returns its rows and failures.
4. The driver writes each shard as it arrives to ``chunk-{shard id:06d}.npz`` (atomically, with its
   shard and plan ids), then, once every shard is in, writes the index exactly as the local engine
   does: rows in sorted path order, looked up by path, never in order of arrival.

Guarantees: the index holds the same paths in the same order as the local engine's, and the same
failures with the same reasons. Rows equal the local engine's within float rounding: batches are
formed within a shard, so they differ from the local engine's when a batch would straddle a shard
border or a failed file (identical bits with the tiny model on CPU, where a row does not depend on
its batch). A rerun after the driver was killed (at any moment, SIGKILL included) reuses every
shard written and encodes the others again with the same videos, hence the same batches and the
same bits as an uninterrupted Ray run. A Ray worker killed mid-run is retried by Ray (decode tasks
``max_retries=-1``; actors ``max_restarts=-1``, ``max_task_retries=-1``); a shard's result is
written once, whole, so nothing is lost or duplicated.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from ..encoders import VideoEncoder
from ..errors import MuseError, RayEngineError
from ..progress import progress_bar
from ..runtime.spec import ModelSpec
from .encode import JobSummary, OpenJob, open_job
from .ray_cluster import ActorLayout, actor_layout, check_decode_memory, import_ray, ray_connection
from .shards import Shard, ShardPlan, plan_work

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActorModel:
    """What every model actor loads: the driver's ``ModelSpec`` (on the actor's own device), and what
    the driver knows of it without loading it (identity and frame settings), to check against."""

    spec: ModelSpec
    identity: dict
    settings: dict

    @classmethod
    def of(cls, spec: ModelSpec) -> ActorModel:
        return cls(spec, spec.identity, spec.settings)

    def build(self, device: str) -> VideoEncoder:
        """The encoder on ``device``, checked to be the driver's model (files on shared storage can
        differ by node). The spec is resolved again here, so nothing the driver computed is reused."""
        from ..loading.identity import identity_difference, same_model

        spec = self.spec.replace(device=device)
        if not same_model(spec.identity, self.identity) or spec.settings != self.settings:
            raise RayEngineError(
                f"the model {spec.name!r} loaded on a Ray worker is not the driver's "
                f"({identity_difference(self.identity, spec.identity)}); every node must see the same files"
            )
        return VideoEncoder(spec)


def decode_shard(row: dict, root: str, settings: dict, timeout: float, inline: bool) -> dict:
    """Ray Data ``map`` (one CPU task a shard): the shard's videos as uint8 clips, or why each failed.

    row: {"shard": id, "paths": JSON list of paths relative to ``root``}. Returns {"shard": id,
    "clips": (sum of frames, S, S, 3) uint8, the clips one after another, "frames": (n,) int32 frames
    of each video (0 for a failure), "errors": JSON list of n reasons or nulls, "facts": JSON list of
    n facts dicts (``video.facts``) or nulls}.
    """
    from ..video.frames import FrameSettings
    from ..video.pool import DecodePool, decode_inline

    frame_settings = FrameSettings.from_dict(settings)
    paths = [os.path.join(root, path) for path in json.loads(row["paths"])]
    if inline:
        decoded = decode_inline(paths, frame_settings)
    else:
        decoded = DecodePool(frame_settings, workers=1, timeout=timeout, prefetch=2).imap(paths)
    clips, frames, errors, facts = [], [], [], []
    for item in decoded:
        clips += [] if item.pixels is None else [item.pixels]
        frames.append(0 if item.pixels is None else len(item.pixels))
        errors.append(item.error)
        facts.append(item.facts)
    size = frame_settings.size
    return {
        "shard": row["shard"],
        "clips": np.concatenate(clips) if clips else np.zeros((0, size, size, 3), np.uint8),
        "frames": np.asarray(frames, dtype=np.int32),
        "errors": json.dumps(errors),
        "facts": json.dumps(facts),
    }


class ShardEmbedder:
    """Ray Data actor (a class given to ``map_batches``): the model, loaded once; each call embeds shards.

    A batch holds whole shards as ``decode_shard`` made them; each comes back as {"shard": id,
    "embeddings": (k, C) float32 for its k encoded videos in order, "errors": JSON list of n reasons
    or nulls, "precision": what this actor computed in, "facts": the decode task's, passed on}. Model
    batches are formed within a shard:
    ``batch_size`` decoded videos each (None: the spec's default on the actor's device).
    """

    def __init__(self, model: ActorModel, device: str, batch_size: int | None):
        self.encoder, self.error = None, None
        try:
            self.encoder = model.build(device)
        except MuseError as error:
            # Raised by the first call instead: Ray keeps a task's exception (the driver reports it
            # as is), but of a failed actor constructor only the text of the traceback.
            self.error = error
        # None: the spec's batch size on this actor's device, as the local engine decides it
        self.batch_size = batch_size or (self.encoder.default_batch_size if self.encoder else None)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.error is not None:
            raise self.error
        shards = [int(shard) for shard in batch["shard"]]
        results = [
            self._embed(np.asarray(clips), np.asarray(frames), json.loads(str(errors)))
            for clips, frames, errors in zip(batch["clips"], batch["frames"], batch["errors"], strict=True)
        ]
        return {
            "shard": np.asarray(shards, dtype=np.int64),
            "embeddings": _column([embeddings for embeddings, _ in results]),
            "errors": np.asarray([json.dumps(errors) for _, errors in results], dtype=object),
            "precision": np.asarray([self.encoder.backend.precision] * len(shards), dtype=object),
            "facts": np.asarray([str(facts) for facts in batch["facts"]], dtype=object),
        }

    def _embed(self, clips: np.ndarray, frames: np.ndarray, errors: list) -> tuple[np.ndarray, list]:
        from ..video.pool import Decoded

        ends = np.cumsum(frames)
        items = [
            Decoded(i, str(i), error=error)
            if error is not None
            else Decoded(i, str(i), pixels=clips[ends[i] - frames[i] : ends[i]])
            for i, error in enumerate(errors)
        ]
        results = [r for group in self.encoder.encode_decoded(items, self.batch_size) for r in group]
        rows = [r.embedding for r in results if r.error is None]
        embeddings = np.stack(rows) if rows else np.zeros((0, self.encoder.embed_dim), np.float32)
        return embeddings.astype(np.float32, copy=False), [r.error for r in results]


def _column(arrays: list[np.ndarray]) -> np.ndarray:
    """A batch column of arrays whose first dimension may differ (Ray Data's variable-shaped tensors)."""
    if len({a.shape for a in arrays}) == 1:
        return np.stack(arrays)
    column = np.empty(len(arrays), dtype=object)
    column[:] = arrays
    return column


@dataclass(frozen=True)
class RayOptions:
    """How the cluster is used: ``address`` (None: a private local instance of ``local_cpus`` CPUs),
    model ``actors`` (None: one per GPU, else one), ``device`` inside them, ``cpus_per_actor``."""

    address: str | None = None
    actors: int | None = None
    device: str = "auto"
    cpus_per_actor: float = 1.0
    local_cpus: int | None = None


def encode_folder_ray(
    root: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    encoder: ModelSpec | VideoEncoder,
    batch_size: int | None = None,
    workers: int | None = None,
    timeout: float = 120.0,
    chunk_size: int = 64,
    overwrite: bool = False,
    retry_failed: bool = False,
    progress: bool = True,
    thumbnails: bool = True,
    address: str | None = None,
    actors: int | None = None,
    device: str = "auto",
    cpus_per_actor: float = 1.0,
    local_cpus: int | None = None,
) -> JobSummary:
    """Encode every video under ``root`` into the index ``out`` on a Ray cluster, resuming earlier work.

    The arguments of ``muse_infer.jobs.encode.encode_folder`` mean the same, except: ``encoder`` only
    names the model (a ``ModelSpec``, or a ``VideoEncoder``'s spec): this process never loads it; its
    identity goes into the index, and each actor loads it on ``device`` (there ``batch_size`` None is
    the spec's default for that device, as with the local engine);
    ``chunk_size`` is the shard size (videos a Ray task decodes and a written result holds);
    ``workers`` caps the decode tasks running at once (None: as many as the cluster's free CPUs;
    0: decode in the task itself, without the per-file timeout); ``thumbnails`` are made by this
    process once the index is written, as the local engine makes them. ``address``, ``actors``,
    ``device``, ``cpus_per_actor``, ``local_cpus``: see ``RayOptions``.
    Raises ``RayEngineError`` (a ``JobError``) when Ray is missing or the cluster cannot serve.
    """
    import_ray()  # before any work: a missing extra is the first thing to say
    if timeout is None or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if (batch_size is not None and batch_size < 1) or chunk_size < 1 or (workers is not None and workers < 0):
        raise ValueError(
            f"need batch_size, chunk_size >= 1 and workers >= 0, got {batch_size}, {chunk_size}, {workers}"
        )
    options = RayOptions(address, actors, device, cpus_per_actor, local_cpus)
    spec = encoder if isinstance(encoder, ModelSpec) else encoder.spec
    if spec is not None and spec.decoder != "cpu":
        raise RayEngineError(
            f"--decoder {spec.decoder}: the Ray engine decodes in CPU tasks; decode on the GPU with the "
            "local engine (leave --engine ray out), or leave --decoder out"
        )
    with open_job(root, out, encoder, overwrite, retry_failed) as job:
        taken = {int(path.stem.split("-")[1]) for path in job.store.chunks()}
        plan, resumed = plan_work(job.store.directory, job.todo, chunk_size, taken)
        if plan.shards:
            run = _Run(job, plan, ActorModel.of(job.spec), batch_size, workers, timeout)
            with ray_connection(options.address, options.local_cpus) as ray:
                run.execute(ray, options, progress, resumed)
        return job.finish(thumbnails, workers, progress)  # thumbnails: made here, on the driver


class _Run:
    """One pass of the pipeline over a plan's shards, writing each shard's result as it comes."""

    def __init__(self, job: OpenJob, plan: ShardPlan, model: ActorModel, batch_size, workers, timeout):
        self.job, self.plan, self.model = job, plan, model
        self.batch_size, self.workers, self.timeout = batch_size, workers, timeout
        self.pending: dict[int, Shard] = {shard.id: shard for shard in plan.shards}

    def execute(self, ray, options: RayOptions, progress: bool, resumed: bool) -> None:
        layout = actor_layout(ray.cluster_resources(), options.device, options.actors, options.cpus_per_actor)
        memory = [node["Resources"].get("memory", 0.0) for node in ray.nodes() if node.get("Alive")]
        check_decode_memory(
            memory, _decode_memory(self.plan.shard_size, self.model.settings), self.plan.shard_size
        )
        summary = self.job.summary
        total = sum(len(shard.entries) for shard in self.plan.shards)
        started = time.monotonic()
        with _data_context(ray), _progress_bar(total, summary.reused, progress, resumed) as bar:
            try:
                for row in self._dataset(ray, layout).iter_rows():
                    if not summary.processed_now:
                        logger.info("ray engine: first result after %.2f s", time.monotonic() - started)
                    processed = self._write(
                        int(row["shard"]),
                        row["embeddings"],
                        json.loads(str(row["errors"])),
                        str(row["precision"]),
                        json.loads(str(row["facts"])),
                    )
                    bar.update(processed, failed=summary.processed_now - summary.encoded_now)
            except Exception as error:
                user_error = _user_error_inside(error)
                if user_error is None:
                    raise
                raise user_error from None
            finally:
                summary.encode_seconds = time.monotonic() - started
        if self.pending:
            missing = ", ".join(map(str, sorted(self.pending)[:5]))
            raise RayEngineError(
                f"the cluster returned no result for shards {missing}; run the command again"
            )

    def _dataset(self, ray, layout: ActorLayout):
        """The pipeline: shards -> decode tasks -> model actors (two operators: never fused)."""
        from ray.data import ActorPoolStrategy

        rows = [{"shard": s.id, "paths": json.dumps([e.path for e in s.entries])} for s in self.plan.shards]
        settings = self.model.settings
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows))  # a task a shard
        # Each decode task reserves the memory of its shard's clips. With these remote arguments
        # different from the actors', Ray Data also never fuses decoding into the model actors (it
        # fuses consecutive maps whose remote arguments are equal). Retries are Ray Data's defaults:
        # tasks max_retries=-1, actors max_restarts=-1 and max_task_retries=-1.
        decode_kwargs = {"root": str(self.job.root), "settings": settings, "timeout": self.timeout}
        dataset = dataset.map(
            decode_shard,
            fn_kwargs={**decode_kwargs, "inline": self.workers == 0},
            num_cpus=1,
            memory=_decode_memory(self.plan.shard_size, settings),
            concurrency=self.workers or None,
        )
        actor = {"model": self.model, "device": layout.device, "batch_size": self.batch_size}
        return dataset.map_batches(
            ShardEmbedder,
            fn_constructor_kwargs=actor,
            batch_size=1,
            batch_format="numpy",
            compute=ActorPoolStrategy(size=layout.actors),
            num_cpus=layout.cpus,
            num_gpus=layout.gpus,
        )

    def _write(self, shard_id: int, embeddings: np.ndarray, errors: list, precision: str, facts: list) -> int:
        """Write one shard's result, computed in ``precision``, with each video's ``facts`` (once: a
        repeat is dropped); returns its number of videos."""
        shard = self.pending.pop(shard_id, None)
        if shard is None:
            return 0
        embeddings = np.asarray(embeddings, dtype=np.float32).reshape(-1, self.job.spec.embed_dim)
        done = [
            [e.path, e.size, e.mtime_ns]
            for e, error in zip(shard.entries, errors, strict=True)
            if error is None
        ]
        failed = [
            [e.path, e.size, e.mtime_ns, error]
            for e, error in zip(shard.entries, errors, strict=True)
            if error is not None
        ]
        if len(done) != len(embeddings):
            raise RuntimeError(f"shard {shard_id}: {len(embeddings)} rows for {len(done)} videos")
        records = {"done": done, "failed": failed, "shard": shard_id, "plan": self.plan.plan_id}
        records["precision"] = precision
        records["facts"] = [fact for fact, error in zip(facts, errors, strict=True) if error is None]
        self.job.store.write_chunk(shard_id, embeddings, records)
        self.job.summary.encoded_now += len(done)
        self.job.summary.processed_now += len(shard.entries)
        return len(shard.entries)


def _decode_memory(shard_size: int, settings: dict) -> int:
    """Bytes a decode task holds: its shard's uint8 clips, twice (collected, then concatenated), plus
    64 MiB for the interpreter and the decoder (1 GB for 256 videos of 12 frames at 224 px)."""
    clip = settings["max_frames"] * settings["image_size"] ** 2 * 3
    return 2 * shard_size * clip + (64 << 20)


def _user_error_inside(error: BaseException) -> MuseError | None:
    """A ``MuseError`` raised on a worker (Ray wraps it in its own errors), to be reported as is.

    Ray Data appends lines about its retry settings to the message of an error raised in a map
    (``args[0]``); a ``MuseError`` says everything in its first line, which alone is kept.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, MuseError) and not type(error).__module__.startswith("ray."):
            if error.args and isinstance(error.args[0], str):
                error.args = (error.args[0].split("\n", 1)[0], *error.args[1:])
            return error
        error = getattr(error, "cause", None) or error.__cause__ or error.__context__
    return None


@contextmanager
def _data_context(ray) -> Iterator[None]:
    """Ray Data as this engine needs it, restored after: errors raised in our tasks and actors
    reach the driver as themselves (not as Ray Data's ``UserCodeException``), so a ``MuseError``
    is reported as one line; no progress bars or log lines of its own (the command has its bar,
    and an error is raised, not logged)."""
    context, data_logger = ray.data.DataContext.get_current(), logging.getLogger("ray.data")
    names = ("raise_original_map_exception", "enable_progress_bars", "print_on_execution_start")
    saved = [getattr(context, name) for name in names] + [data_logger.level]
    for name, value in zip(names, (True, False, False), strict=True):
        setattr(context, name, value)
    data_logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for name, value in zip(names, saved, strict=False):
            setattr(context, name, value)
        data_logger.setLevel(saved[-1])


def _progress_bar(total: int, reused: int, enabled: bool, resumed: bool):
    described = "encoding on Ray" + (" (resumed plan)" if resumed else "")
    return progress_bar(
        total, f"{described} ({reused} already done)" if reused else described, enabled=enabled
    )
