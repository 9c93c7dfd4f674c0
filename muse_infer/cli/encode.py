"""`muse-infer encode-videos`: a thin wrapper over ``muse_infer.jobs.encode.encode_folder`` (the local
engine) and ``muse_infer.jobs.ray_engine.encode_folder_ray`` (``--engine ray``)."""

from __future__ import annotations

import sys

import click

from ..runtime.choices import SAMPLING_CHOICES
from .common import (
    BACKEND_CHOICE,
    EXIT_INTERRUPTED,
    PRECISION_CHOICE,
    PRECISION_HELP,
    UserError,
    model_spec,
    sigterm_as_interrupt,
    tokenizer_option,
)


@click.command("encode-videos")
@click.argument("videos", nargs=-1, required=True, type=click.Path())
@click.option(
    "--out",
    required=True,
    type=click.Path(),
    help="Index to write (.npy); EMB.json and EMB.failures.jsonl go beside it.",
)
@click.option(
    "--model",
    default="ViT-B-32",
    show_default=True,
    help="Name, checkpoint or config file (see `muse-infer models`).",
)
@click.option(
    "--clip-weights",
    default=None,
    help="CLIP weights of a named/config model: open_clip tag, local file, or 'random'.",
)
@tokenizer_option
@click.option(
    "--device",
    default="auto",
    show_default=True,
    help="cpu, cuda, cuda:N, or auto (a GPU when there is one; --engine ray: in the actors).",
)
@click.option(
    "--backend", type=BACKEND_CHOICE, default="torch", show_default=True, help="What runs the model."
)
@click.option("--precision", type=PRECISION_CHOICE, default="auto", show_default=True, help=PRECISION_HELP)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Videos a model call [default: 8 on the CPU, 64 on a GPU].",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Decoding processes [default: cores - 1, 1 to 8; 0: decode inline, no timeout].",
)
@click.option(
    "--frames",
    type=click.IntRange(min=1),
    default=None,
    help="Frames sampled a video [default: the model's, 12].",
)
@click.option(
    "--sampling",
    type=click.Choice(SAMPLING_CHOICES),
    default="exact",
    show_default=True,
    help="exact: the frame shown at each sample time; keyframes: the keyframe nearest it, decoding "
    "nothing else (2-3x less decoding CPU; frames up to half a keyframe interval off).",
)
@click.option(
    "--decoder",
    default="cpu",
    show_default=True,
    callback=lambda ctx, param, value: _check_decoder_option(value),
    help="Where videos are decoded: cpu, or cuda / cuda:N (the GPU's NVDEC, through PyAV's FFmpeg; the "
    "same frames, far less CPU a video; local engine only).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=120.0,
    show_default=True,
    help="Seconds a file may take to decode before it is skipped (moments: seconds without a new window).",
)
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Videos a saved work chunk (what a kill can lose).",
)
@click.option(
    "--overwrite", is_flag=True, help="Discard an existing index or unfinished run made with other options."
)
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Try again files that failed in earlier runs (else only changed ones).",
)
@click.option(
    "--thumbnails/--no-thumbnails",
    default=True,
    show_default=True,
    help="Keep 3 small keyframes of each video in OUT's .thumbs/ folder (for search --html and serve).",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: this machine; ray: a Ray cluster (needs the ray extra; see docs/ray.md).",
)
@click.option(
    "--address",
    default=None,
    help="Ray engine: auto (the cluster `ray start` made here), HOST:PORT or ray://HOST:PORT "
    "[default: a private local Ray instance].",
)
@click.option(
    "--actors",
    type=click.IntRange(min=1),
    default=None,
    help="Ray engine: model replicas [default: one per GPU of the cluster, else 1].",
)
@click.option(
    "--window",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Encode moments: a row every --stride seconds for each WINDOW-second stretch of a video, with its "
    "start_s/end_s [default: a row a video; with --stride or --cuts alone: the model's clip, 12 s].",
)
@click.option(
    "--stride",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds between the starts of consecutive windows [default: half the window].",
)
@click.option(
    "--cuts",
    type=click.Choice(["fixed", "shots"]),
    default=None,
    help="Where windows start: fixed (every --stride s) or shots (at shot boundaries, long shots split "
    "into windows; needs the scenes extra: pip install 'muse-infer[scenes]').",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print a JSON summary on stdout: counts, skipped files with reasons, dropped rows, files written. "
    "Paths are exact (a name's bytes that are not UTF-8 as \\udcXX escapes); display_path, text to show "
    "(such bytes as \\xNN), comes where it differs.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or progress lines.")
def encode_videos(
    videos,
    out,
    model,
    clip_weights,
    tokenizer,
    device,
    backend,
    precision,
    batch_size,
    workers,
    frames,
    sampling,
    decoder,
    timeout,
    chunk_size,
    overwrite,
    retry_failed,
    thumbnails,
    engine,
    address,
    actors,
    window,
    stride,
    cuts,
    as_json,
    quiet,
) -> None:
    """Encode the VIDEOS (folders, walked recursively, and video files) into an embedding index.

    Paths in the index are relative to the folders' and files' common folder (or to the folder of
    the index already at OUT, which every input must then lie in). A later run with other files or
    folders grows the same index: what it covers is found again (new, changed and deleted videos),
    rows of videos outside it stay as they are.

    Writes OUT (N, C) float32 (one L2-normalised row a video), OUT's sidecar .json (relative paths in
    row order, model identity, settings), .failures.jsonl (each skipped file with its reason) and
    the .thumbs/ folder (3 JPEG keyframes a video, made after the index is written; a video whose
    thumbnails fail is logged, the index is kept).
    Work is saved as it goes in OUT.parts/: run the same command again after an interruption (even
    kill -9) to resume; run it on a folder with new files to add them.

    Progress: a bar on a terminal; a plain line every 30 s when stderr goes to a file. Running it
    again on a folder with new, changed or deleted files updates the index in place and says which
    rows it dropped.

    \b
    Exit status:
      0    every video encoded
      1    some files could not be read (skipped, listed in the failures file); the index has the rest
      2    usage or input error (bad folder, model, or an existing index made with other options)
      130  interrupted by Ctrl-C or SIGTERM (finished batches are kept: run again to resume)

    With --engine ray the same job runs on a Ray cluster (decoding in CPU tasks, the model in one
    actor per GPU) and gives the same index; --chunk-size is then the shard size (videos a task
    decodes and a saved result holds) and --workers caps the decode tasks running at once.

    Moments (--window, --stride, --cuts): each video becomes a row per time window (the last ends with
    the video; windows start at least half a stride apart, so a video shorter than the window plus
    half a stride stays one row), sampled as a whole video is
    (1 frame a second, at most --frames), each video decoded once for all its windows; search then
    returns time ranges. A window of 12 s (the model's clip: 12 frames at 1 a second) with a 6 s
    stride is the default once any of the three is given. The window settings are part of the
    index: resuming or updating it with others needs --overwrite. Not with --engine ray.

    --sampling keyframes takes the keyframe nearest each sample time instead of the frame shown at
    it, and decodes only those keyframes (with moments too). It is part of the index's settings, like
    --frames: resuming or updating an index with the other sampling needs --overwrite.

    --decoder cuda decodes on the GPU's NVDEC (an NVIDIA GPU and its driver; nothing to install: PyAV's
    FFmpeg has it). The frames are the CPU decoder's, so the index is the same and either may resume
    the other; codecs the GPU cannot decode are decoded on the CPU. Not with --engine ray.

    \b
    Example:
      muse-infer encode-videos videos/ --out emb.npy --model ViT-B-32 --batch-size 16
      muse-infer encode-videos a.mp4 b.webm more_videos/ --out emb.npy
      muse-infer encode-videos videos/ --out emb.npy --model tiny --frames 4 --workers 2
      muse-infer encode-videos videos/ --out emb.npy --device cpu --precision bf16
      muse-infer encode-videos videos/ --out emb.npy --no-thumbnails
      muse-infer encode-videos videos/ --out emb.npy --json -q > summary.json
      muse-infer encode-videos /shared/videos --out /shared/emb.npy --engine ray --address auto
      muse-infer encode-videos videos/ --out moments.npy --window 6 --stride 3
      muse-infer encode-videos videos/ --out shots.npy --cuts shots
      muse-infer encode-videos videos/ --out fast.npy --sampling keyframes
      muse-infer encode-videos videos/ --out emb.npy --device cuda --decoder cuda
      muse-infer encode-videos videos/ --out siglip.npy --model ViT-B-16-SigLIP-meanP --tokenizer siglip_tok/
    """
    import json

    from ..jobs.encode import encode_folder, saved_work

    if engine == "local" and (address is not None or actors is not None):
        raise UserError("--address and --actors are options of --engine ray")
    moments = _check_moment_options(window, stride, cuts, engine)
    options = dict(workers=workers, timeout=timeout, chunk_size=chunk_size, overwrite=overwrite)
    options |= dict(retry_failed=retry_failed, progress=not quiet, thumbnails=thumbnails)
    run = encode_folder
    if engine == "ray":
        run, options = _ray_engine(options | dict(address=address, actors=actors, device=device))
    spec = model_spec(
        model,
        clip_weights=clip_weights,
        backend=backend,
        device=device,
        precision=precision,
        max_frames=frames,
        batch_size=batch_size,
        sampling=sampling,
        tokenizer=tokenizer,
        decoder=decoder,
    )
    if moments:
        options["windows"] = _window_settings(spec, window, stride, cuts)
    try:
        with sigterm_as_interrupt():
            summary = run(list(videos), out, spec, **options)  # loads the model only if there is work
    except KeyboardInterrupt:
        click.echo(_interrupted_message(saved_work(out)), err=True)
        sys.exit(EXIT_INTERRUPTED)
    except OSError as error:  # a full disk, a folder made read-only during the run: no traceback
        where = error.filename or out
        raise UserError(
            f"{where}: {error.strerror or error} (a full disk? a folder that became unwritable?); the work "
            "saved so far is kept: run the same command again once that is fixed"
        ) from None
    click.echo(summary.line(), err=True)
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=1))
    sys.exit(summary.exit_code)


def _check_decoder_option(value: str) -> str:
    from ..video.devices import DECODER_HELP, DECODER_PATTERN

    if not DECODER_PATTERN.fullmatch(value):
        raise click.BadParameter(f"{value!r}: give {DECODER_HELP}")
    return value


def _ray_engine(options: dict):
    from ..jobs.ray_cluster import import_ray
    from ..jobs.ray_engine import encode_folder_ray

    import_ray()  # a missing extra is said before the model loads
    return encode_folder_ray, options


def _check_moment_options(window: float | None, stride: float | None, cuts: str | None, engine: str) -> bool:
    """Whether moments were asked for (--window, --stride or --cuts); UserError for what cannot run."""
    moments = window is not None or stride is not None or cuts is not None
    if moments and engine == "ray":
        raise UserError(
            "--window/--stride/--cuts (moments) run on the local engine only; drop --engine ray, or encode "
            "whole videos on Ray"
        )
    if stride is not None and window is not None and stride > window:
        raise UserError(
            f"--stride {stride:g} is longer than --window {window:g}: give a stride <= the window"
        )
    if cuts == "shots":
        from ..video.shots import import_scenedetect

        import_scenedetect()  # a missing extra is said before the model loads
    return moments


def _window_settings(spec, window: float | None, stride: float | None, cuts: str | None):
    """The moments' ``WindowSettings``, the model's defaults filled in (see muse_infer.video.windows)."""
    from ..video.windows import window_settings

    try:
        return window_settings(spec.frame_settings, window, stride, cuts or "fixed")
    except ValueError as error:
        raise UserError(f"--window/--stride: {error}") from None


def _interrupted_message(saved: int) -> str:
    if saved:
        return f"interrupted; {saved} finished videos are saved: run the same command again to resume"
    return "interrupted before any video was saved; nothing of this run was kept (run the command again)"
