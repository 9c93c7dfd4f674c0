"""Decoding cost: the readers compared (``--part readers``), the window walk's two cursors (``--part
windows``), decode workers with encode throughput (``--part workers``), the frame fit (``--part fit``) and
the decode workers' allocator setting (``--part allocator``).

    python benchmarks/bench_decode.py --part readers --videos 3 --repeats 5 --json docs/results/decode_readers.json
    python benchmarks/bench_decode.py --part windows --minutes 10     # moments: reference vs planned walk
    python benchmarks/bench_decode.py --part workers                  # worker start-up, encode throughput
    python benchmarks/bench_decode.py --part fit --repeats 5          # the frame fit: kernel vs PIL
    python benchmarks/bench_decode.py --part allocator --repeats 5    # decode workers' allocator setting
    python benchmarks/bench_decode.py --part allocator --before ../before   # + an older checkout's read_clip
    PYTHONPATH=/path/to/other/checkout python benchmarks/bench_decode.py --part workers --json out/other.json

Readers (CPU seconds a video, this process and all its threads, ``time.process_time``; medians over
``--videos`` videos x ``--repeats`` runs, the readers interleaved in the same run so that a busy machine
weighs on all alike). Videos, 30 s 640x360 25 fps H.264 (``--kinds``):
  gop2  a moving gradient over a fixed grain texture, a keyframe every 2 s: the videos of
        ``bench_ray.py --decode-cost`` (video 0 is the very same; the others differ in their grain);
  gop10 the same content, a keyframe every 10 s (x264's default 250 frames);
  pan   a camera pan over a textured landscape, a keyframe every 2 s;
  shapes five flat squares moving over a smooth gradient, a keyframe every 2 s (not by default).
Each reader reads 12 frames a video at 224 px (``FrameSettings()``): "clip" is the whole of what a
decode worker does (``read_clip``: decode, convert the sampled frames to RGB, fit them to 224 px),
"frames" stops before the fitting (the decoding proper). Readers, each adding one idea to the one before:
  before        ``read_clip_reference``: the reader as it was (every frame on the way decoded, FFmpeg's
                frame threads on, its stream probing decoding the first frame twice);
  1 thread      the same cursor with one decoding thread;
  + light probe the end probe opens the file without decoding (``reader.LIGHT_OPEN``);
  planned       ``planned.PlannedCursor`` without skipping non-reference frames: packets read ahead,
                keyframe jumps, no decoding past the wanted frame;
  + nonref skipped  the planned cursor skipping non-reference frames;
  exact, fit by PIL  ``read_frames``, the default reader: that cursor, and the RGB conversion on one
                thread (``video.pixels``; every reader above converts as PyAV does by default, threaded);
                fitted by PIL (``fit_frame_reference``), as every reader above;
  exact         ``read_clip``, the default: the same, fitted by ``muse_infer._fit`` (``fit_frame``:
                PIL's bytes, computing only the pixels the crop keeps);
  keyframes, RGB threaded  the keyframe cursor converting as PyAV does by default, fitted by PIL;
  keyframes, fit by PIL  ``read_keyframes`` (``sampling="keyframes"``): the keyframe nearest each sample
                time alone, the RGB conversion on one thread; fitted by PIL;
  keyframes     ``read_clip`` with ``sampling="keyframes"``: the same, fitted by ``muse_infer._fit``.
The exact readers' clips are checked equal to "before", bit for bit, on every video, and the three
keyframe readers' to each other.

Allocator (``--part allocator``): ``read_clip`` of the ``--kinds`` videos, exact and keyframes, in fresh
processes as a decode worker runs it, with glibc's allocator as it comes and as
``pool.keep_freed_memory`` sets it (the decode workers' setting), and the old reader ("before", as
glibc comes), in turn ``--repeats`` times: CPU seconds and minor page faults a clip, the ratio to
"before" in the same run, and the process's peak resident memory; with ``--before DIR``, that
checkout's ``read_clip`` (exact and keyframes, as glibc comes) in the same rounds (run in DIR, with
``PYTHONPATH=DIR``).

Fit (``--part fit``): ``fit_frame`` (``muse_infer._fit``) against ``fit_frame_reference`` (PIL) fitting
frames of video sizes to 224 px, both resize modes: thread CPU ms a frame, the bytes compared.

Windows (``--part windows``): ``bench_moments.py``'s ``--minutes`` video (64x48, 2 fps, a keyframe every
10 s) walked for its windows (12 s every 6 s, 12 frames at 224 px) by the reference cursor and by the
planned one, alternately, ``--repeats`` times: process CPU seconds (the reference decodes partly on
FFmpeg's threads, which a thread's CPU time would not count), frames decoded, and the clips compared.

Workers (``--part workers``, as before): a decode worker process started and timed until it reports
"ready", ``--starts`` times (wall and CPU seconds, ``RUSAGE_CHILDREN``); then ``--videos`` generated
videos (``--seconds`` long, 320x240) encoded with ``VideoEncoder(--model).encode(paths, workers=W)`` for
each W in ``--workers``: wall time, videos/s, CPU seconds a video. Medians over ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_moments, beside this file

KINDS = {
    "gop2": "30 s 640x360 25 fps H.264, moving gradient over grain, a keyframe every 2 s",
    "gop10": "30 s 640x360 25 fps H.264, moving gradient over grain, a keyframe every 10 s",
    "pan": "30 s 640x360 25 fps H.264, camera pan over a textured landscape, a keyframe every 2 s",
    "shapes": "30 s 640x360 25 fps H.264, five flat squares moving over a smooth gradient, a keyframe every 2 s",
}


# --- videos -------------------------------------------------------------------------------------------


def write_gradient_video(path: Path, seed: int, keyframe_every_s: float) -> None:
    """``bench_ray.make_clip_like_video``'s video (seed 1 is its grain), with a chosen keyframe interval."""
    import av

    width, height, fps = 640, 360, 25
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    texture = np.random.default_rng(seed).integers(0, 48, (height, width, 1), dtype=np.uint8)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"g": str(round(keyframe_every_s * fps))})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(30 * fps):
            shift = 4.0 * index
            channels = [(x + shift) % 256, (y + shift / 2) % 256, (x + y + shift) % 256]
            frame = np.stack(channels, axis=-1).astype(np.uint8) // 2 + texture
            _encode(container, stream, frame)
        _flush(container, stream)


def write_pan_video(path: Path, seed: int) -> None:
    """A 640x360 view panning across a wide smooth texture with fine grain, a keyframe every 2 s."""
    import av
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = (rng.random((60, 330, 3)) * 255).astype(np.uint8)
    land = np.asarray(Image.fromarray(coarse).resize((3300, 600), Image.BICUBIC)).astype(np.int16)
    land = (land * 0.85 + rng.integers(0, 24, (600, 3300, 1))).clip(0, 255).astype(np.uint8)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=25, options={"g": "50"})
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        for index in range(30 * 25):
            top, left = int(120 + 60 * np.sin(index / 40)), 3 * index
            _encode(container, stream, np.ascontiguousarray(land[top : top + 360, left : left + 640]))
        _flush(container, stream)


def write_shapes_video(path: Path, seed: int) -> None:
    """Five flat squares moving over a smooth gradient, a keyframe every 2 s: keyframes that cost
    little more than the other frames (no grain)."""
    import av

    width, height, fps, side = 640, 360, 25, 50
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    background = np.stack([x / width * 200, y / height * 200, np.full_like(x, 80)], -1).astype(np.uint8)
    rng = np.random.default_rng(seed)
    room = np.array([width - side - 10, height - side - 10], dtype=np.float64)
    positions, velocities = rng.random((5, 2)) * room, rng.normal(0, 4, (5, 2))
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"g": str(2 * fps)})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(30 * fps):
            frame = background.copy()
            positions = (positions + velocities) % room
            for number, (left, top) in enumerate(positions.astype(int)):
                frame[top : top + side, left : left + side] = (number * 50, 255 - number * 40, 128)
            _encode(container, stream, frame)
        _flush(container, stream)


def _encode(container, stream, rgb: np.ndarray) -> None:
    import av

    for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
        container.mux(packet)


def _flush(container, stream) -> None:
    for packet in stream.encode():
        container.mux(packet)


def work_folder(args) -> Path:
    """``--work-dir`` (made if missing; the videos are kept there for the next run), or a new temporary one."""
    folder = Path(args.work_dir or tempfile.mkdtemp(prefix="bench-decode-"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def make_videos(folder: Path, kind: str, count: int) -> list[Path]:
    paths = []
    for number in range(count):
        path = folder / f"{kind}_{number}.mp4"
        if not path.exists():
            if kind == "pan":
                write_pan_video(path, number)
            elif kind == "shapes":
                write_shapes_video(path, number)
            else:
                write_gradient_video(path, 1 + number, 2.0 if kind == "gop2" else 10.0)
        paths.append(path)
    return paths


# --- readers ------------------------------------------------------------------------------------------


@contextmanager
def probe_opening(light: bool):
    """Force the end probe's way of opening the file (the reference cursor's subclasses would get light)."""
    from muse_infer.video import reader

    real = reader._probe_end

    def probe(*args, **kwargs):
        return real(*args, **{**kwargs, "light_open": light})

    reader._probe_end = probe
    try:
        yield
    finally:
        reader._probe_end = real


def cursor_variants() -> dict:
    """name -> (cursor class, light end probe) for the readers built from parts (RGB converted threaded)."""
    from muse_infer.video.cursor import FrameCursor
    from muse_infer.video.keyframes import KeyframeCursor
    from muse_infer.video.planned import PlannedCursor

    class OneThread(FrameCursor):
        def __init__(self, container, stream, *args, **kwargs):
            super().__init__(container, stream, *args, **kwargs)
            stream.codec_context.thread_type = "NONE"

    class PlannedKeepingNonref(PlannedCursor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.skip_nonref = False

    return {
        "1 thread": (OneThread, False),
        "+ light probe": (OneThread, True),
        "planned": (PlannedKeepingNonref, True),
        "+ nonref skipped": (PlannedCursor, True),
        "keyframes, RGB threaded": (KeyframeCursor, True),
    }


def read_with(path: Path, stats, kind, light: bool) -> list[np.ndarray]:
    """The 12 frames of ``FrameSettings()`` read by a cursor class (no fallback: the videos need none),
    converted to RGB as PyAV does by default (threaded; the shipped readers convert on one thread,
    ``video.pixels``)."""
    from fractions import Fraction

    from muse_infer.video import reader

    with probe_opening(light), reader._open(path) as container:
        timeline = reader.open_timeline(path, container, seek=True, stats=stats, cursor_kind=kind)
        timeline.one_thread = False
        times = reader._sample_times(timeline, Fraction(1), 12, "uniform")
        timeline.plan(times)
        return [timeline.frame_at(path, t) for t in times]


def readers() -> dict:
    """name -> (function(path, stats) -> list of RGB frames, function turning them into the clip)."""
    from muse_infer.video.frames import FrameSettings, fit_frame, fit_frame_reference
    from muse_infer.video.reader import read_frames, read_frames_reference, read_keyframes

    def fit_as_before(frames):
        return np.stack([fit_frame_reference(frame, 224) for frame in frames])

    def fit(frames):
        return np.stack([fit_frame(frame, 224) for frame in frames])

    def exact(path, stats):
        return read_frames(path, stats=stats)

    def keyframes(path, stats):
        return read_keyframes(path, FrameSettings(sampling="keyframes"), stats)

    table = {"before": (lambda path, stats: read_frames_reference(path, stats=stats), fit_as_before)}
    for name, (kind, light) in cursor_variants().items():
        table[name] = (functools.partial(read_with, kind=kind, light=light), fit_as_before)
    table["exact, fit by PIL"] = (exact, fit_as_before)
    table["exact"] = (exact, fit)
    table["keyframes, fit by PIL"] = (keyframes, fit_as_before)
    table["keyframes"] = (keyframes, fit)
    return table


def measure_readers(paths: list[Path], repeats: int) -> dict:
    """CPU seconds a video for each reader ("frames" and "clip"), interleaved; parity checked."""
    from muse_infer.video.cursor import DecodeStats

    table = readers()
    costs = {name: {"frames": [], "clip": []} for name in table}
    decoded = {}
    for _ in range(repeats):
        for path in paths:
            clips = {}
            for name, (read, fit) in table.items():
                stats = DecodeStats()
                started = time.process_time()
                frames = read(path, stats)
                middle = time.process_time()
                clips[name] = fit(frames)
                ended = time.process_time()
                costs[name]["frames"].append(middle - started)
                costs[name]["clip"].append(ended - started)
                decoded[name] = (stats.frames_decoded, stats.packets_decoded, stats.fallbacks)
            for name in (
                "1 thread",
                "+ light probe",
                "planned",
                "+ nonref skipped",
                "exact, fit by PIL",
                "exact",
            ):
                assert np.array_equal(clips[name], clips["before"]), (name, path)
            for name in ("keyframes, RGB threaded", "keyframes, fit by PIL"):
                assert np.array_equal(clips[name], clips["keyframes"]), (name, path)
    rows = {}
    for name, cost in costs.items():
        frames, clip = statistics.median(cost["frames"]), statistics.median(cost["clip"])
        rows[name] = {
            "frames_cpu_s": frames,
            "clip_cpu_s": clip,
            "frames_cpu_s_all": [round(c, 4) for c in cost["frames"]],
            "clip_cpu_s_all": [round(c, 4) for c in cost["clip"]],
            "frames_decoded": decoded[name][0],
            "packets_decoded": decoded[name][1],
            "fallbacks": decoded[name][2],
        }
    for row in rows.values():
        row["clip_speedup"] = rows["before"]["clip_cpu_s"] / row["clip_cpu_s"]
        row["frames_speedup"] = rows["before"]["frames_cpu_s"] / row["frames_cpu_s"]
    return rows


def run_readers(args) -> dict:
    import av

    import muse_infer

    report = {
        "muse_infer": str(Path(muse_infer.__file__).parent),
        "python": sys.version.split()[0],
        "pyav": av.__version__,
        "machine": f"{platform.machine()}, {_cores()} cores",
        "command": "python benchmarks/bench_decode.py " + " ".join(sys.argv[1:]),
        "videos_per_kind": args.videos,
        "repeats": args.repeats,
        "kinds": {},
    }
    folder = work_folder(args)
    for kind in args.kinds:
        paths = make_videos(folder, kind, args.videos)
        rows = measure_readers(paths, args.repeats)
        report["kinds"][kind] = {"video": KINDS[kind], "readers": rows}
        print_readers(kind, rows)
    return report


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def print_readers(kind: str, rows: dict) -> None:
    print(f"\n{kind}: {KINDS[kind]}")
    print("| reader | clip CPU s | x before | frames CPU s | x before | frames decoded |")
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['clip_cpu_s']:.3f} | {row['clip_speedup']:.2f} | {row['frames_cpu_s']:.3f} | "
            f"{row['frames_speedup']:.2f} | {row['frames_decoded']} |"
        )


# --- the window walk ---------------------------------------------------------------------------------


def run_windows(args) -> dict:
    """Process CPU of walking a long video's windows with each cursor, alternately (clips compared)."""
    from bench_moments import make_long_video

    from muse_infer.video import reader, window_reader
    from muse_infer.video.cursor import DecodeStats, FrameCursor
    from muse_infer.video.frames import FrameSettings
    from muse_infer.video.planned import PlannedCursor
    from muse_infer.video.windows import WindowSettings

    folder = Path(args.work_dir or tempfile.mkdtemp(prefix="bench-windows-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"long_{args.minutes:g}min.mp4"
    if not path.exists():
        make_long_video(path, args.minutes)
    settings, windows = FrameSettings(), WindowSettings(12.0, 6.0)
    rows = {"reference": [], "planned": []}
    decoded, clips = {}, {}
    for _ in range(args.repeats):
        for name, kind in (("reference", FrameCursor), ("planned", PlannedCursor)):
            stats = DecodeStats()
            with reader._open(path) as container:
                started = time.process_time()
                walk = window_reader._walk(path, container, settings, windows, stats, None, kind)
                clips[name] = [clip.pixels for clip in walk]
                rows[name].append(time.process_time() - started)
            decoded[name] = stats.frames_decoded
        assert all(np.array_equal(a, b) for a, b in zip(clips["reference"], clips["planned"], strict=True))
    report = {"video_minutes": args.minutes, "windows": len(clips["planned"]), "command": " ".join(sys.argv)}
    for name, costs in rows.items():
        report[name] = {"process_cpu_s": statistics.median(costs), "all": [round(c, 3) for c in costs]}
        report[name]["frames_decoded"] = decoded[name]
        print(
            f"{name}: {statistics.median(costs):.3f} CPU s (runs {report[name]['all']}), {decoded[name]} frames"
        )
    return report


# --- workers and encode throughput (the measurement of 2026-11-30) ---------------------------------------


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker_class():
    """The decode worker class and its default settings, in either package layout."""
    try:
        from muse_infer.video.frames import FrameSettings
        from muse_infer.video.pool import _Worker
    except ImportError:  # the layout before 2026-11-30
        from muse_infer.decode_pool import DecodeSettings as FrameSettings
        from muse_infer.decode_pool import _Worker
    return _Worker, FrameSettings()


def time_worker_starts(starts: int) -> dict:
    """Wall and CPU seconds from starting a decode worker to its "ready" message."""
    worker_type, settings = worker_class()
    walls, cpus = [], []
    for _ in range(starts):
        cpu_before, began = children_cpu(), time.perf_counter()
        worker = worker_type(settings)
        message = worker.reader.recv()
        wall = time.perf_counter() - began
        assert message == ("ready",), message
        worker.stop(kill=False)
        worker.join(timeout=30)
        walls.append(wall)
        cpus.append(children_cpu() - cpu_before)  # the whole worker process, start to exit
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus), "starts": starts}


def write_noise_videos(folder: Path, count: int, seconds: int) -> list[str]:
    from muse_infer.data.writer import write_video

    rng = np.random.default_rng(0)
    fps, paths = 10, []
    for number in range(count):
        base = rng.integers(0, 255, size=(240, 320, 3), dtype=np.uint8)
        frames = np.stack([np.roll(base, shift=4 * k, axis=1) for k in range(seconds * fps)])  # (T, H, W, 3)
        path = folder / f"video_{number:03d}.mp4"
        write_video(str(path), frames, fps)
        paths.append(str(path))
    return paths


def time_encode(paths: list[str], model: str, workers: int, repeats: int, batch_size: int) -> dict:
    from muse_infer import VideoEncoder

    encoder = VideoEncoder(model, device="cpu")
    encoder.encode(paths[:batch_size], batch_size=batch_size, workers=0)  # warm-up: first model call
    walls, cpus = [], []
    for _ in range(repeats):
        cpu_before, began = own_cpu() + children_cpu(), time.perf_counter()
        embeddings = encoder.encode(paths, batch_size=batch_size, workers=workers)
        walls.append(time.perf_counter() - began)
        cpus.append(own_cpu() + children_cpu() - cpu_before)
        assert np.isfinite(embeddings).all()
    wall = statistics.median(walls)
    return {
        "workers": workers,
        "wall_s": wall,
        "videos_per_s": len(paths) / wall,
        "cpu_s_per_video": statistics.median(cpus) / len(paths),
    }


def run_workers(args) -> dict:
    import torch

    import muse_infer

    torch.set_num_threads(args.threads)
    report = {"muse_infer": str(Path(muse_infer.__file__).parent), "python": sys.version.split()[0]}
    report["worker_start"] = time_worker_starts(args.starts)
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as folder:
        paths = write_noise_videos(Path(folder), args.videos, args.seconds)
        report["encode"] = [
            time_encode(paths, args.model, w, args.repeats, args.batch_size) for w in args.workers
        ]
    start = report["worker_start"]
    print(f"muse_infer from {report['muse_infer']}")
    print(
        f"worker start-up: {start['wall_s']:.2f} s wall, {start['cpu_s']:.2f} s CPU (median of {start['starts']})"
    )
    print("| workers | wall s | videos/s | CPU s a video |")
    print("|---|---|---|---|")
    for row in report["encode"]:
        print(
            f"| {row['workers']} | {row['wall_s']:.2f} | {row['videos_per_s']:.2f} | {row['cpu_s_per_video']:.3f} |"
        )
    return report


# --- the decode workers' allocator -------------------------------------------------------------------

ALLOCATOR_CHILD = """
import json, resource, statistics, sys, time
import numpy as np
from muse_infer.video.frames import FrameSettings, fit_frame_reference
from muse_infer.video.pool import keep_freed_memory
from muse_infer.video.reader import read_clip, read_frames_reference
tuned, reader, passes, paths = sys.argv[1] == "1", sys.argv[2], int(sys.argv[3]), sys.argv[4:]
if tuned and not keep_freed_memory():
    sys.exit("keep_freed_memory did nothing here (not glibc, or MALLOC_*_ set in the environment)")
def read(path):
    if reader == "before":  # the reader and the fit as they were
        return np.stack([fit_frame_reference(frame) for frame in read_frames_reference(path)])
    return read_clip(path, FrameSettings(sampling=reader))
for path in paths:
    read(path)
cpu, faults = [], []
for _ in range(passes):
    for path in paths:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        started = time.process_time()
        read(path)
        cpu.append(time.process_time() - started)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"cpu_s": statistics.median(cpu), "faults": statistics.median(faults), "peak_mb": peak_mb}))
"""
# (reader, allocator kept, checkout: None for this one): the old reader in a process as glibc comes,
# then each sampling both ways
ALLOCATOR_RUNS = (
    ("before", False, None),
    ("exact", False, None),
    ("exact", True, None),
    ("keyframes", False, None),
    ("keyframes", True, None),
)


def run_allocator(args) -> dict:
    """``read_clip`` in fresh processes as a decode worker runs it, with glibc's allocator as it comes
    and as ``pool.keep_freed_memory`` sets it, and the old reader (``read_clip_reference``'s frames
    fitted by PIL) as glibc comes, in turn, ``--repeats`` rounds: CPU s and minor page faults a clip
    (medians over the videos x 3 passes, then over the rounds), the peak resident memory. With
    ``--before DIR``, that checkout's ``read_clip`` (both samplings, as glibc comes) in the same rounds."""
    import os
    import subprocess

    folder = work_folder(args)
    runs_asked = list(ALLOCATOR_RUNS)
    if args.before:
        code = args.before.resolve()
        runs_asked += [("exact", False, code), ("keyframes", False, code)]
    report = {"command": "python benchmarks/bench_decode.py " + " ".join(sys.argv[1:]), "rows": []}
    print("| videos | reader | allocator | CPU s a clip | x before | page faults a clip | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for kind in args.kinds:
        paths = [str(path) for path in make_videos(folder, kind, args.videos)]
        runs = {run: [] for run in runs_asked}
        for _ in range(args.repeats):
            for reader, kept, code in runs:
                command = [sys.executable, "-c", ALLOCATOR_CHILD, str(int(kept)), reader, "3", *paths]
                # In the checkout (``-c`` puts the working directory first on the path) and on its path.
                env, cwd = (dict(os.environ, PYTHONPATH=str(code)), code) if code else (None, None)
                output = subprocess.run(
                    command, check=True, capture_output=True, text=True, env=env, cwd=cwd
                ).stdout
                runs[reader, kept, code].append(json.loads(output))
        before = statistics.median(run["cpu_s"] for run in runs["before", False, None])
        for (reader, kept, code), results in runs.items():
            reader = f"{reader} (--before)" if code else reader
            row = {"kind": kind, "reader": reader, "allocator": "kept" if kept else "as glibc comes"}
            for field in ("cpu_s", "faults", "peak_mb"):
                row[field] = statistics.median(result[field] for result in results)
            row["speedup"] = before / row["cpu_s"]
            report["rows"].append(row)
            print(
                f"| {kind} | {reader} | {row['allocator']} | {row['cpu_s']:.3f} | {row['speedup']:.2f} | "
                f"{row['faults']:.0f} | {row['peak_mb']:.0f} |"
            )
    return report


# --- the fit ------------------------------------------------------------------------------------------

FIT_SHAPES = ((360, 640), (640, 360), (720, 1280), (1080, 1920), (480, 480))


def run_fit(args) -> dict:
    """``fit_frame`` (the kernel) against ``fit_frame_reference`` (PIL) on frames of video sizes to
    224 px: thread CPU ms a frame, medians of ``--repeats`` x 50 calls, alternating; bytes compared."""
    from muse_infer.video.frames import _fit_kernel, fit_frame, fit_frame_reference

    if _fit_kernel() is None:
        raise SystemExit("muse_infer._fit is not built or differs from this Pillow: nothing to measure")
    rng = np.random.default_rng(0)
    report = {"command": "python benchmarks/bench_decode.py " + " ".join(sys.argv[1:]), "frames": []}
    print("| frame | mode | PIL ms | kernel ms | x |")
    print("|---|---|---|---|---|")
    for height, width in FIT_SHAPES:
        y, x = np.mgrid[0:height, 0:width]
        smooth = np.stack([x % 256, y % 256, (x + y) % 256], -1) // 2
        rgb = (smooth + rng.integers(0, 48, (height, width, 3))).astype(np.uint8)
        for mode in ("shortest", "squash"):
            times = {"pil": [], "kernel": []}
            for _ in range(args.repeats):
                for name, fit in (("pil", fit_frame_reference), ("kernel", fit_frame)):
                    for _ in range(50):
                        started = time.thread_time()
                        fit(rgb, 224, mode)
                        times[name].append(time.thread_time() - started)
            assert np.array_equal(fit_frame(rgb, 224, mode), fit_frame_reference(rgb, 224, mode))
            pil_ms, kernel_ms = (statistics.median(times[name]) * 1000 for name in ("pil", "kernel"))
            report["frames"].append(
                {"height": height, "width": width, "mode": mode, "pil_ms": pil_ms, "kernel_ms": kernel_ms}
            )
            print(
                f"| {width}x{height} | {mode} | {pil_ms:.2f} | {kernel_ms:.2f} | {pil_ms / kernel_ms:.1f} |"
            )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--part", choices=["readers", "windows", "workers", "fit", "allocator"], default="readers"
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="windows: the video's length")
    parser.add_argument("--kinds", nargs="+", choices=list(KINDS), default=["gop2", "gop10", "pan"])
    parser.add_argument("--work-dir", default=None, help="readers: where the videos are made (and kept)")
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--videos", type=int, default=None, help="[default: readers 3 a kind, workers 24]")
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=None, help="[default: readers 5, workers 3]")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the model process")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        help="allocator: an older checkout whose read_clip joins the rounds",
    )
    args = parser.parse_args()
    readers_part = args.part in ("readers", "fit", "allocator")
    args.videos = args.videos or (3 if readers_part else 24)
    args.repeats = args.repeats or (5 if readers_part else 3)
    parts = {
        "readers": run_readers,
        "windows": run_windows,
        "workers": run_workers,
        "fit": run_fit,
        "allocator": run_allocator,
    }
    run = parts[args.part]
    report = run(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
