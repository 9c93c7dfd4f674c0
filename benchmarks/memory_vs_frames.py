"""Peak memory of one training step of the video HEAD, MUSE (ResMamba) vs a Transformer, per frame count.

The paper's Figure 3 (a Transformer head runs out of memory near 16 frames; Mamba saves 79.9 % there).
Both heads take the same input, random CLIP token features (B, T, 1 + G*G, C) with requires_grad
(C = 512, G = 7: ViT-B/32), run the same multi-scale pyramid (scales 0.5, 1, 2) and scale-wise
aggregation (S = T * 255 tokens), then 4 blocks of
  - MUSE: the project's ResMambaBlock (bidirectional Mamba, d_state 16, expand 1);
  - Transformer: nn.TransformerEncoderLayer(C, 8 heads, 4C feed-forward, pre-norm, dropout 0.1),
    attention computed the plain way (the math kernel: the (S x S) attention matrix is materialised;
    no flash or memory-efficient attention);
then the class-token positions are normalised and mean-pooled; the step is forward + backward of the
sum of the pooled embedding.

How memory is measured:
  - CPU: every configuration runs in a fresh subprocess. After building the head and its input and
    running one warm-up step at T = 1 (loading kernels and allocator pools), the process's peak
    resident set (getrusage ru_maxrss) is read; then the measured step runs and the peak is read again.
    Reported: the increase, i.e. the step's peak memory above what the process already held (model
    weights, input). Freed memory reused within the step is not counted twice, as on a GPU.
  - CUDA (--device cuda): torch.cuda.max_memory_allocated() during the step minus the memory allocated
    before it.
On the CPU the Mamba scan is the differentiable PyTorch scan the model dispatches to when gradients are
needed (muse_infer/ops/chunked.py, which stores one state a chunk and recomputes the rest in backward);
its memory is what that PyTorch scan costs, not Mamba's fused CUDA kernel (which keeps even less).

Usage:
  python benchmarks/memory_vs_frames.py --frames 4 8 12 16 20 24 --json out.json --plot out.png
  python benchmarks/memory_vs_frames.py --device cuda --frames 4 8 12 16 20 24 32
Imports only torch and muse_infer's model modules (no open_clip), so it runs on the GPU machines.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

WIDTH, GRID, SCALES, BLOCKS, HEADS = 512, 7, (0.5, 1.0, 2.0), 4, 8


class Head(nn.Module):
    """Pyramid + scale-wise aggregation + ``BLOCKS`` blocks (Mamba or Transformer) + masked-free pooling."""

    def __init__(self, kind: str):
        super().__init__()
        from muse_infer.model.bimamba import ResMambaBlock
        from muse_infer.model.pyramid import MultiScaleGenerator

        self.pyramid = MultiScaleGenerator(WIDTH, SCALES)
        if kind == "mamba":
            rates = torch.linspace(0, 0.1, BLOCKS).tolist()
            self.blocks = nn.ModuleList(ResMambaBlock(WIDTH, rate) for rate in rates)
        else:
            self.blocks = nn.ModuleList(
                nn.TransformerEncoderLayer(WIDTH, HEADS, 4 * WIDTH, 0.1, batch_first=True, norm_first=True)
                for _ in range(BLOCKS)
            )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T, 1 + G*G, C) -> pooled (B, C)."""
        from muse_infer.model.aggregation import aggregate

        batch, frames = tokens.shape[:2]
        patches = tokens[:, :, 1:].reshape(batch * frames, GRID, GRID, WIDTH).permute(0, 3, 1, 2)
        scales = [m.flatten(2).transpose(1, 2).unflatten(0, (batch, frames)) for m in self.pyramid(patches)]
        sequence = aggregate(tokens[:, :, 0], scales, "scale_wise")  # (B, S, C)
        for block in self.blocks:
            sequence = block(sequence)
        return F.normalize(F.normalize(sequence[:, :frames], dim=-1).mean(1), dim=-1)


def training_step(head: Head, batch: int, frames: int, device: str) -> None:
    tokens = torch.randn(batch, frames, 1 + GRID * GRID, WIDTH, device=device, requires_grad=True)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):  # plain attention: no flash / memory-efficient kernels
        head(tokens).sum().backward()


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def measure(kind: str, frames: int, batch: int, device: str) -> dict:
    """One configuration in this process: the step's peak memory above the memory held before it."""
    torch.manual_seed(0)
    head = Head(kind).to(device).train()
    training_step(head, 1, 1, device)  # warm-up at T = 1
    head.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        before = peak_rss_bytes()
    began = time.perf_counter()
    training_step(head, batch, frames, device)
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = peak_rss_bytes() - before
    seconds = time.perf_counter() - began
    return {
        "head": kind,
        "frames": frames,
        "batch": batch,
        "device": device,
        "peak_bytes": peak,
        "seconds": seconds,
    }


def run_isolated(kind: str, frames: int, batch: int, device: str, threads: int) -> dict:
    """``measure`` in a fresh Python process (CPU peaks are per process); an OOM is reported, not raised."""
    command = [
        sys.executable,
        __file__,
        "--one",
        kind,
        str(frames),
        "--batch",
        str(batch),
        "--device",
        device,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"head": kind, "frames": frames, "batch": batch, "device": device, "error": tail}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    """Markdown table: frames, sequence length, MUSE peak, Transformer peak, saving."""
    by = {(r["head"], r["frames"]): r for r in rows}
    lines = ["| frames | tokens | MUSE (Mamba) | Transformer | saving |", "|---|---|---|---|---|"]
    for frames in sorted({r["frames"] for r in rows}):
        cells = [_mib(by.get((k, frames))) for k in ("mamba", "transformer")]
        saving = "-"
        mamba, transformer = by.get(("mamba", frames)), by.get(("transformer", frames))
        if mamba and transformer and "peak_bytes" in mamba and "peak_bytes" in transformer:
            saving = f"{100 * (1 - mamba['peak_bytes'] / transformer['peak_bytes']):.1f} %"
        lines.append(f"| {frames} | {frames * (1 + 9 + 49 + 196)} | {cells[0]} | {cells[1]} | {saving} |")
    return "\n".join(lines)


def _mib(row: dict | None) -> str:
    if row is None:
        return "-"
    if "error" in row:
        return "failed (" + row["error"][:40] + ")"
    return f"{row['peak_bytes'] / 2**20:,.0f} MiB ({row['seconds']:.1f} s)"


def plot(rows: list[dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 3.8))
    for kind, label, marker in (("mamba", "MUSE (Mamba)", "o"), ("transformer", "Transformer", "s")):
        points = sorted(
            (r["frames"], r["peak_bytes"] / 2**30) for r in rows if r["head"] == kind and "peak_bytes" in r
        )
        if points:
            axis.plot(*zip(*points, strict=True), marker=marker, label=label)
    axis.set_xlabel("frames")
    axis.set_ylabel("peak memory of a training step (GiB)")
    axis.set_title(title, fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[4, 8, 12, 16])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads a measurement (OMP_NUM_THREADS)")
    parser.add_argument(
        "--heads", nargs="+", default=["mamba", "transformer"], choices=["mamba", "transformer"]
    )
    parser.add_argument("--json", help="write the measurements here")
    parser.add_argument("--plot", help="write a PNG plot here (needs matplotlib)")
    parser.add_argument("--one", nargs=2, metavar=("HEAD", "FRAMES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.batch, args.device)))
        return
    rows = []
    for frames in args.frames:
        for kind in args.heads:
            rows.append(run_isolated(kind, frames, args.batch, args.device, args.threads))
            print(json.dumps(rows[-1]), flush=True)
    print(table(rows))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"rows": rows, "torch": torch.__version__, "batch": args.batch}, handle, indent=2)
    if args.plot:
        where = "GPU" if args.device == "cuda" else "CPU"
        plot(rows, args.plot, f"Head training step, batch {args.batch}, C=512, 4 blocks ({where})")


if __name__ == "__main__":
    main()
