"""Profile ``MuseModel.encode_video`` on the CPU: which ops do the work, and what an encode costs.

    python benchmarks/profile_encode.py                                  # tiny model: the ops table
    python benchmarks/profile_encode.py --model ViT-B-32 --time 7        # + thread CPU time of encodes

The model is a named architecture with random, seeded weights (``--clip-weights random``: nothing is
downloaded) and opened gates (a fresh block is the identity), on one video of the config's
``max_frames`` random frames, with ``--threads`` torch threads (default 1). It prints:
- the torch.profiler table of one ``encode_video`` (self CPU time, top ``--rows`` ops) and how many
  times each ``muse::`` scan op ran: with a C++ kernel built, ``muse::selective_scan_bidirectional``
  once per block but the last, which the head reads at its class tokens alone (two
  ``muse::selective_scan`` calls: ``ResMambaBlock.forward_rows``);
- with ``--time N``: the median thread CPU time (``time.thread_time``: time spent descheduled by other
  jobs is not counted) of N encodes, and of N passes of the Mamba blocks alone on the same sequence;
- with ``--ab N``: the blocks alone, N passes each, interleaved in this process, as the model runs them
  (one ``muse::selective_scan_bidirectional`` call a block) and as it ran them before 2026-11-30 (two
  ``muse::selective_scan`` calls, the backward one on flipped x and z, its output flipped back).

Imports only torch and muse_infer (no API newer than ``MuseModel.blocks``) from the checkout it lies
in, so a copy of it times an older checkout: ``cp benchmarks/profile_encode.py OLD/benchmarks/ &&
cd OLD && python benchmarks/profile_encode.py --model ViT-B-32 --time 7``.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from muse_infer.config import load_config  # noqa: E402
from muse_infer.loading import build_model  # noqa: E402

SCAN_OPS = ("muse::selective_scan", "muse::selective_scan_with_state", "muse::selective_scan_bidirectional")


def gated_model(name: str) -> torch.nn.Module:
    """The architecture with random (seeded) weights and small random gates, in eval mode."""
    model = build_model(load_config(name), clip_weights="random").eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for block in model.blocks:
            for p in (block.temporal_fc.weight, block.temporal_fc.bias):
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
    return model


def video_inputs(model, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random preprocessed frames (batch, T, 3, H, W) and an all-real mask (batch, T)."""
    config = model.config
    g = torch.Generator().manual_seed(seed)
    size = model.backbone.clip.visual.image_size
    size = size[0] if isinstance(size, tuple | list) else size
    frames = torch.randn(batch, config.max_frames, 3, size, size, generator=g)
    return frames, torch.ones(batch, config.max_frames)


def profile_encode(model, frames, mask) -> torch.profiler.profile:
    """torch.profiler (CPU) over one ``encode_video`` call, after one warm-up call."""
    with torch.inference_mode():
        model.encode_video(frames, mask)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
            model.encode_video(frames, mask)
    return profile


def scan_op_calls(profile: torch.profiler.profile) -> dict[str, int]:
    """How many times each ``muse::`` scan op ran in ``profile``."""
    counts = {event.key: event.count for event in profile.key_averages()}
    return {name: counts.get(name, 0) for name in SCAN_OPS}


def median_thread_time(fn, repeats: int) -> float:
    """Median thread CPU seconds of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    return statistics.median(times)


def blocks_input(model, frames) -> torch.Tensor:
    """The sequence the Mamba blocks see for ``frames`` (batch, S, C): captured by a forward hook."""
    captured = []
    hook = model.blocks[0].register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    try:
        with torch.inference_mode():
            model.frame_features(frames)
    finally:
        hook.remove()
    return captured[0]


def run_blocks(model, sequence):
    with torch.inference_mode():
        for block in model.blocks:
            sequence = block(sequence)
    return sequence


def _direction_with_flips(direction, x, z):
    """One direction as ``ScanDirection.forward`` computed it before 2026-11-30 (x, z in scan order)."""
    from muse_infer.ops.op import selective_scan

    length = x.shape[-1]
    x = F.silu(direction.conv1d(x)[..., :length])
    dt, B, C = torch.split(
        direction.x_proj(x.transpose(1, 2)), [direction.dt_rank, direction.d_state, direction.d_state], dim=-1
    )
    delta = (dt @ direction.dt_proj.weight.t()).transpose(1, 2)
    A, D, bias = -torch.exp(direction.A_log.float()), direction.D.float(), direction.dt_proj.bias.float()
    return selective_scan(x, delta, A, B.transpose(1, 2), C.transpose(1, 2), D, z, bias, True)


def bimamba_with_flips(mixer, hidden):
    """BiMamba as before 2026-11-30: two op calls, flips around the backward one."""
    x, z = mixer.in_proj(hidden).transpose(1, 2).chunk(2, dim=1)
    y_backward = _direction_with_flips(mixer.backward_scan, x.flip(-1), z.flip(-1)).flip(-1)
    return mixer.out_proj((_direction_with_flips(mixer.forward_scan, x, z) + y_backward).transpose(1, 2))


def run_blocks_with_flips(model, sequence):
    with torch.inference_mode():
        for block in model.blocks:
            mixed = bimamba_with_flips(block.mamba, block.layer_norm1(sequence))
            sequence = sequence + block.temporal_fc(block.proj_drop(mixed))
    return sequence


def compare_blocks(model, sequence, repeats: int) -> dict[str, list[float]]:
    """Thread CPU seconds of the blocks, fused vs with flips, alternating which goes first each round."""
    runs = {
        "fused": functools.partial(run_blocks, model, sequence),
        "with flips": functools.partial(run_blocks_with_flips, model, sequence),
    }
    gap = (runs["fused"]() - runs["with flips"]()).abs().max().item()
    print(f"max |fused - with flips| after the blocks: {gap:.3g}")
    times = {name: [] for name in runs}
    for round_index in range(repeats):
        for name in list(runs)[:: 1 if round_index % 2 == 0 else -1]:
            start = time.thread_time()
            runs[name]()
            times[name].append(time.thread_time() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny", help="a named architecture (tiny, ViT-B-32, ...)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=12, help="rows of the profile table")
    parser.add_argument("--time", type=int, default=0, metavar="N", help="also time N encodes")
    parser.add_argument("--ab", type=int, default=0, metavar="N", help="blocks: fused vs with flips, N each")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = gated_model(args.model)
    frames, mask = video_inputs(model)
    profile = profile_encode(model, frames, mask)
    print(profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    calls = scan_op_calls(profile)
    print(f"{len(model.blocks)} blocks; scan op calls: " + ", ".join(f"{k} x{v}" for k, v in calls.items()))
    if args.time:
        encode = median_thread_time(lambda: model.encode_video(frames, mask), args.time)
        sequence = blocks_input(model, frames)
        blocks = median_thread_time(lambda: run_blocks(model, sequence), args.time)
        print(
            f"{args.model}, 1 video of {frames.shape[1]} frames, {args.threads} thread(s), median of "
            f"{args.time}: encode_video {encode * 1e3:.1f} ms, the {len(model.blocks)} Mamba blocks alone "
            f"(sequence {tuple(sequence.shape)}) {blocks * 1e3:.1f} ms thread CPU time"
        )
    if args.ab:
        for name, times in compare_blocks(model, blocks_input(model, frames), args.ab).items():
            print(
                f"{len(model.blocks)} blocks, {name}: median {statistics.median(times) * 1e3:.1f} ms, "
                f"min {min(times) * 1e3:.1f} ms thread CPU time ({len(times)} passes)"
            )


if __name__ == "__main__":
    main()
