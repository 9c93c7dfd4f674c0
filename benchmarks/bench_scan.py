"""Time ``torch.ops.muse.selective_scan`` against ``selective_scan_ref`` (and, on CUDA, its peers).

    python benchmarks/bench_scan.py                       # CPU, and CUDA when there is a GPU
    python benchmarks/bench_scan.py --device cpu --json out/scan_cpu.json

For every shape (batch, Di, L, N) and dtype it prints a table, and the same rows as markdown:
- CPU: the op (the C++ kernel) and the reference in the same run, and their ratio; at the first shape
  also BiMamba's two directions: two op calls with the flips a block makes around the backward one,
  the same without the flips, and ``muse::selective_scan_bidirectional`` (one call, no flips).
- CUDA: the op (the Triton kernel), the reference, a device-to-device copy of the same number of bytes
  (the memory ceiling), the scan's effective bandwidth (u, delta, z, B, C read once, y written once,
  over its time), both directions at batch 16 (two calls + flips, and the bidirectional op), and
  mamba-ssm's CUDA ``selective_scan_fn`` when it is installed.
Times are the minimum over repeats after a warm-up (CUDA: torch.cuda.Event pairs).

Imports only torch and muse_infer.ops (Triton only through the op, on CUDA): it runs where open_clip is
missing. Inputs look like a MUSE block's: A = -(1..N), delta_bias as Mamba initialises it, softplus on.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from muse_infer.ops.inputs import SCAN_FIELDS  # noqa: E402
from muse_infer.ops.op import (  # noqa: E402
    cpu_kernel_isa,
    op_available,
    selective_scan,
    selective_scan_bidirectional,
)
from muse_infer.ops.reference import selective_scan_ref  # noqa: E402

CPU_SHAPES = ["1,512,3060,16", "8,512,1024,16"]
CUDA_SHAPES = ["1,512,3060,16", "8,512,1024,16", "16,512,3060,16"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def scan_inputs(batch: int, channels: int, length: int, dstate: int, device: str, dtype: torch.dtype) -> dict:
    """Arguments of one scan direction: u, delta, z (batch, Di, L); B, C (batch, N, L); A (Di, N); D, bias (Di,)."""
    g = torch.Generator(device=device).manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, device=device, generator=g)

    dt = torch.exp(
        torch.rand(channels, device=device, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)
    )
    return dict(
        u=randn(batch, channels, length).to(dtype),
        delta=(0.1 * randn(batch, channels, length)).to(dtype),
        A=-torch.arange(1, dstate + 1, device=device, dtype=torch.float32).repeat(channels, 1),
        B=randn(batch, dstate, length).to(dtype),
        C=randn(batch, dstate, length).to(dtype),
        D=torch.ones(channels, device=device),
        z=randn(batch, channels, length).to(dtype),
        delta_bias=dt + torch.log(-torch.expm1(-dt)),  # inverse softplus of dt
    )


def model_layout(args: dict) -> dict:
    """The same values laid out as BiMamba passes them: delta (batch, L, Di) memory seen as (batch, Di, L),
    z one half of a (batch, L, 2 Di) projection; channel stride 1 for both."""
    batch, channels, length = args["u"].shape
    delta = args["delta"].transpose(1, 2).contiguous().transpose(1, 2)
    xz = torch.cat([args["u"], args["z"]], dim=1).transpose(1, 2).contiguous().transpose(1, 2)
    return {**args, "delta": delta, "z": xz[:, channels:]}


def scan_bytes(args: dict) -> int:
    """Bytes a scan must move at least: u, delta, z, B, C read once and y written once."""
    read = sum(args[k].numel() * args[k].element_size() for k in ("u", "delta", "z", "B", "C"))
    return read + args["u"].numel() * args["u"].element_size()  # y: u's shape and dtype


def time_cpu(fn: Callable[[], object], repeats: int) -> float:
    """Minimum wall time in ms over ``repeats`` calls, after one warm-up call."""
    fn()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def time_cuda(fn: Callable[[], object], repeats: int) -> float:
    """Minimum GPU time in ms over ``repeats`` calls (CUDA events), after one warm-up call."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return min(times)


def bidirectional_two_calls(fwd: dict, bwd: dict, flips: bool) -> torch.Tensor:
    """BiMamba's two scans as two op calls; ``flips``: with the copies a block makes around the backward one."""
    if not flips:
        return selective_scan(**fwd, delta_softplus=True) + selective_scan(**bwd, delta_softplus=True)
    flipped = {k: v.flip(-1) if k in ("u", "delta", "z", "B", "C") else v for k, v in bwd.items()}
    return selective_scan(**fwd, delta_softplus=True) + selective_scan(**flipped, delta_softplus=True).flip(
        -1
    )


def row(device, shape, dtype, impl, ms, **extra) -> dict:
    return dict(device=device, shape=shape, dtype=dtype, impl=impl, ms=round(ms, 3), **extra)


def thread_cpu_ms(fn: Callable[[], object], repeats: int) -> float:
    """Minimum CPU time in ms of this thread over ``repeats`` calls run on 1 thread, after a warm-up.

    Why: on a shared machine wall times measure the neighbours too; one thread's CPU time does not count
    the time it spends descheduled (it still feels their use of caches and memory).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fn()
        best = math.inf
        for _ in range(repeats):
            start = time.thread_time()
            fn()
            best = min(best, time.thread_time() - start)
    finally:
        torch.set_num_threads(threads)
    return best * 1e3


def cpu_rows(shape, dtype_name, variants: dict, args, repeats: int) -> list[dict]:
    """One row a variant (name -> function), wall ms and, with --thread-cpu-time, 1-thread CPU ms."""
    rows = []
    for name, fn in variants.items():
        extra = dict(cpu_1t_ms=round(thread_cpu_ms(fn, repeats), 3)) if args.thread_cpu_time else {}
        rows.append(row("cpu", shape, dtype_name, name, time_cpu(fn, repeats), **extra))
    return rows


def add_ratios(rows: list[dict]) -> list[dict]:
    """vs_ref (and cpu_1t_vs_ref): how many times faster than the first row, the reference."""
    ref = rows[0]
    for r in rows:
        if not r["impl"].startswith("both directions"):
            r["vs_ref"] = round(ref["ms"] / r["ms"], 1)
            if "cpu_1t_ms" in r:
                r["cpu_1t_vs_ref"] = round(ref["cpu_1t_ms"] / r["cpu_1t_ms"], 1)
    return rows


def bench_cpu(shape: tuple, dtype_name: str, args: argparse.Namespace, first: bool) -> list[dict]:
    inputs = scan_inputs(*shape, "cpu", DTYPES[dtype_name])
    rows = cpu_rows(
        shape,
        dtype_name,
        {"selective_scan_ref": lambda: selective_scan_ref(**inputs, delta_softplus=True)},
        args,
        args.ref_repeats,
    )
    if not op_available("cpu"):
        return rows + [
            row("cpu", shape, dtype_name, "muse::selective_scan: muse_infer._C not built", math.nan)
        ]
    variants = {
        f"muse::selective_scan (C++, {cpu_kernel_isa()})": lambda: selective_scan(
            **inputs, delta_softplus=True
        )
    }
    if first:
        model = model_layout(inputs)
        variants["muse::selective_scan, delta and z in the model's layout"] = lambda: selective_scan(
            **model, delta_softplus=True
        )
        variants.update(bidirectional_variants(shape, dtype_name, inputs))
    return add_ratios(rows + cpu_rows(shape, dtype_name, variants, args, args.repeats))


def bidirectional_variants(shape, dtype_name, inputs) -> dict:
    """BiMamba's two scans: two op calls with the flips a block makes, without them, and the fused op."""
    backward = scan_inputs(*shape, "cpu", DTYPES[dtype_name])
    forward_args, backward_args = [inputs[k] for k in SCAN_FIELDS], [backward[k] for k in SCAN_FIELDS]
    return {
        "both directions: 2 op calls + flips of u, delta, z, B, C, y": lambda: bidirectional_two_calls(
            inputs, backward, True
        ),
        "both directions: 2 op calls, no flips": lambda: bidirectional_two_calls(inputs, backward, False),
        "both directions: muse::selective_scan_bidirectional": lambda: selective_scan_bidirectional(
            forward_args, backward_args, True
        ),
    }


def bench_cuda(shape: tuple, dtype_name: str, args: argparse.Namespace) -> list[dict]:
    inputs = scan_inputs(*shape, "cuda", DTYPES[dtype_name])
    nbytes = scan_bytes(inputs)
    ref_ms = time_cuda(lambda: selective_scan_ref(**inputs, delta_softplus=True), args.ref_repeats)
    op_ms = time_cuda(lambda: selective_scan(**inputs, delta_softplus=True), args.repeats)
    source = torch.empty(nbytes // 2, dtype=torch.uint8, device="cuda")  # read n/2 + write n/2 = n bytes
    target = torch.empty_like(source)
    copy_ms = time_cuda(lambda: target.copy_(source), args.repeats)
    rows = [
        row("cuda", shape, dtype_name, "selective_scan_ref", ref_ms, vs_ref=1.0),
        row(
            "cuda",
            shape,
            dtype_name,
            "muse::selective_scan (Triton)",
            op_ms,
            vs_ref=round(ref_ms / op_ms, 1),
            GBps=round(nbytes / op_ms / 1e6, 1),
        ),
        row(
            "cuda",
            shape,
            dtype_name,
            f"device copy of the same {nbytes / 1e6:.0f} MB",
            copy_ms,
            GBps=round(nbytes / copy_ms / 1e6, 1),
        ),
    ]
    rows += bench_mamba_ssm(shape, dtype_name, inputs, args)
    if shape[0] == 16:
        rows += bench_cuda_bidirectional(shape, dtype_name, inputs, args)
    return rows


def bench_mamba_ssm(shape, dtype_name, inputs, args) -> list[dict]:
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as mamba_scan
    except ImportError:
        return [row("cuda", shape, dtype_name, "mamba-ssm selective_scan_fn: not installed", math.nan)]
    ms = time_cuda(lambda: mamba_scan(**inputs, delta_softplus=True), args.repeats)
    return [
        row(
            "cuda",
            shape,
            dtype_name,
            "mamba-ssm selective_scan_fn",
            ms,
            GBps=round(scan_bytes(inputs) / ms / 1e6, 1),
        )
    ]


def bench_cuda_bidirectional(shape, dtype_name, inputs, args) -> list[dict]:
    """Two op calls + flips against muse::selective_scan_bidirectional (Triton's bidirectional kernel)."""
    backward = scan_inputs(*shape, "cuda", DTYPES[dtype_name])
    forward_args, backward_args = [inputs[k] for k in SCAN_FIELDS], [backward[k] for k in SCAN_FIELDS]
    variants = {
        "both directions: 2 op calls + flips": lambda: bidirectional_two_calls(inputs, backward, True),
        "both directions: muse::selective_scan_bidirectional (Triton)": lambda: selective_scan_bidirectional(
            forward_args, backward_args, True
        ),
    }
    return [
        row("cuda", shape, dtype_name, name, time_cuda(fn, args.repeats)) for name, fn in variants.items()
    ]


def table_line(r: dict) -> str:
    ratio = f"x{r['vs_ref']}" if "vs_ref" in r else ""
    one_thread = f"{r['cpu_1t_ms']:10.2f} ms 1-thread CPU" if "cpu_1t_ms" in r else ""
    return (
        f"{r['device']:5} {str(r['shape']):22} {r['dtype']:9} {r['ms']:10.2f} ms {ratio:>8} "
        f"{r.get('GBps', ''):>7} {one_thread}  {r['impl']}"
    )


def markdown(rows: list[dict]) -> list[str]:
    cpu_time = any("cpu_1t_ms" in r for r in rows)
    head = ["device", "batch, Di, L, N", "dtype", "implementation", "ms", "x ref", "GB/s"]
    head += ["1-thread CPU ms", "x ref (1 thread)"] if cpu_time else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 4 + "---:|" * (len(head) - 4)]
    for r in rows:
        cells = [r["device"], ", ".join(map(str, r["shape"])), r["dtype"], r["impl"], f"{r['ms']:.2f}"]
        cells += [str(r.get("vs_ref", "")), str(r.get("GBps", ""))]
        if cpu_time:
            cells += [str(r.get("cpu_1t_ms", "")), str(r.get("cpu_1t_vs_ref", ""))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def cpu_name() -> str:
    """The CPU's model name (lscpu's), else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--shapes", nargs="+", help="batch,Di,L,N each (default: per device, see CPU_SHAPES)")
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=["float32"])
    parser.add_argument("--repeats", type=int, default=10, help="timed calls of the fast paths")
    parser.add_argument("--ref-repeats", type=int, default=3, help="timed calls of the (slow) reference")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads before timing (CPU)")
    parser.add_argument(
        "--thread-cpu-time",
        action="store_true",
        help="CPU: also time each variant as one thread's CPU time on 1 thread (robust on a shared machine)",
    )
    parser.add_argument("--json", type=Path, help="also write the rows and the setup here")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            raise SystemExit("--device cuda: no CUDA GPU visible")
        devices.remove("cuda")
    setup = dict(
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        cpu=cpu_name(),
        cpu_kernel=cpu_kernel_isa(),
        gpu=torch.cuda.get_device_name() if "cuda" in devices else None,
        # Other processes skew CPU times (an OpenMP barrier waits for any descheduled thread): say so.
        load_average_1min=round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    )
    print("setup:", ", ".join(f"{k}={v}" for k, v in setup.items()))
    rows = []
    for device in devices:
        shapes = args.shapes or (CPU_SHAPES if device == "cpu" else CUDA_SHAPES)
        for i, text in enumerate(shapes):
            shape = tuple(int(x) for x in text.split(","))
            for dtype_name in args.dtypes:
                new = (
                    bench_cpu(shape, dtype_name, args, i == 0)
                    if device == "cpu"
                    else bench_cuda(shape, dtype_name, args)
                )
                for r in new:
                    print(table_line(r), flush=True)
                rows += new
    print()
    print("\n".join(markdown(rows)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dict(setup=setup, rows=rows), indent=1))


if __name__ == "__main__":
    main()
