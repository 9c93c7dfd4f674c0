"""Time the CPU scan on 1 and 2 threads, on a quiet machine and next to one or two busy neighbours.

    python benchmarks/bench_scan_threads.py --json out/scan_threads.json
    python benchmarks/bench_scan_threads.py --baseline main --conditions 0 0+op 1 2 --rounds 12

Conditions: ``N`` busy neighbours (0: a quiet machine), ``+op``: each timed call right after a parallel
torch op (an elementwise op on 3 M floats, not timed), as inside a model, where torch's OpenMP threads
are still spinning from it. A busy neighbour is a process of its own spinning on one core
(``python -c "while True: pass"``); the script starts them before a condition and kills them after it.
In each condition it times ``muse::selective_scan`` and ``muse::selective_scan_bidirectional`` at the
MUSE shape (batch 1, Di 512,
L 3060, N 16, fp32, D, z, delta_bias, softplus; contiguous inputs as in bench_scan.py) with
torch.set_num_threads(1) and (2), in interleaved rounds so that all variants see the same drift of the
machine: each round runs, for every op (and kernel, with --baseline) and thread count, one warm-up call
and ``--calls`` timed calls, after a 20 ms pause (so that threads left spinning by the previous block,
OpenMP's for ~4 ms, are gone). It prints, per condition, op and kernel, the median wall time of a call
on each thread count and their ratio (2 threads / 1 thread), the 90th percentiles, the median CPU time
of the calling thread on 1 thread (what the kernel costs, whatever the neighbours do), and how many
cores other processes kept busy meanwhile (from /proc/stat, less this process and its neighbours;
"steal": time the hypervisor gave to other machines).

``--ways`` times the current kernel in several ways of sharing its items among threads
(MUSE_SCAN_CPU_THREADS: auto, openmp, helpers; csrc/parallel_items.h); for each it reports the share of
its 2-thread calls that ran on torch's OpenMP team and how many times that team stalled.

``--baseline REF`` also builds the C++ kernel of git revision REF of this repository (its csrc/, the ops
renamed to the namespace ``muse_baseline`` so that both load in one process; cached under
build/scan_baseline/) and times it in the same rounds: before/after in one run.

The criterion of issue 15: 2 threads no more than 10% slower than 1 with one and with two busy
neighbours, and no slower than the previous kernel on a quiet machine.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without install
sys.path.insert(1, str(REPO / "benchmarks"))

from bench_scan import cpu_name, scan_inputs  # noqa: E402

from muse_infer.ops.op import SCAN_FIELDS, cpu_kernel_isa, op_available  # noqa: E402

SPIN = "while True: pass"
THREADS = (1, 2)
PAUSE_S = 0.02
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BASELINE_NAMESPACE = "muse_baseline"
CXX_FLAGS = ["-O3", "-fopenmp", "-march=x86-64-v2", "-ffast-math", "-fno-finite-math-only"]  # setup.py's


def parse_condition(spec: str) -> tuple[int, bool]:
    """A condition: "2" -> (2 neighbours, False); "0+op" -> (0, True), each call after a parallel op."""
    neighbours, _, op = spec.partition("+")
    if not neighbours.isdigit() or op not in ("", "op"):
        raise argparse.ArgumentTypeError(f"condition {spec!r}: a number of neighbours, optionally +op")
    return int(neighbours), op == "op"


def condition_name(neighbours: int, after_op: bool) -> str:
    name = {0: "quiet", 1: "1 busy neighbour"}.get(neighbours, f"{neighbours} busy neighbours")
    return name + (", after a parallel op" if after_op else "")


def start_neighbours(count: int) -> list[subprocess.Popen]:
    procs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(count)]
    time.sleep(1.0 if procs else 0.0)  # let them get past the interpreter's start and spin
    return procs


def stop_neighbours(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


def process_cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_cpu_s() -> tuple[float, float]:
    """Busy and steal CPU seconds of the whole machine so far, all cores together (/proc/stat)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq) / CLOCK_TICKS, steal / CLOCK_TICKS


class OtherLoad:
    """Cores kept busy by processes other than this one and its neighbours, over a stretch of time."""

    def __init__(self, neighbours: list[subprocess.Popen]):
        self.pids = [os.getpid()] + [p.pid for p in neighbours]

    def __enter__(self):
        self.start = (time.monotonic(), machine_cpu_s(), sum(map(process_cpu_s, self.pids)))
        return self

    def __exit__(self, *exc):
        t0, (busy0, steal0), ours0 = self.start
        (busy1, steal1), ours1 = machine_cpu_s(), sum(map(process_cpu_s, self.pids))
        elapsed = time.monotonic() - t0
        self.cores = max(0.0, (busy1 - busy0) - (ours1 - ours0)) / elapsed
        self.steal = (steal1 - steal0) / elapsed


def build_baseline(ref: str) -> str:
    """Builds and loads csrc/ of git revision ``ref`` with its ops in BASELINE_NAMESPACE; returns its name."""
    from torch.utils.cpp_extension import load

    sha = subprocess.check_output(["git", "-C", str(REPO), "rev-parse", "--short", ref], text=True).strip()
    build_dir = REPO / "build" / "scan_baseline" / sha
    source_dir = build_dir / "csrc"
    source_dir.mkdir(parents=True, exist_ok=True)
    files = subprocess.check_output(
        ["git", "-C", str(REPO), "ls-tree", "--name-only", sha, "csrc/"], text=True
    )
    for path in files.split():
        text = subprocess.check_output(["git", "-C", str(REPO), "show", f"{sha}:{path}"], text=True)
        # The op namespace and the C++ one (the libraries' symbols stay apart); no Python stubs module.
        text = re.sub(r"\bmuse\b", BASELINE_NAMESPACE, text)
        text = re.sub(r'\n\s*m\.set_python_module\("[^"]*"\);[^\n]*', "", text)
        out = source_dir / Path(path).name
        if not out.exists() or out.read_text() != text:
            out.write_text(text)
    if f"TORCH_LIBRARY({BASELINE_NAMESPACE}," not in (source_dir / "selective_scan.cpp").read_text():
        raise SystemExit(
            f"--baseline {ref}: csrc/selective_scan.cpp has no TORCH_LIBRARY(muse, ...) to rename"
        )
    load(
        name=f"muse_scan_baseline_{sha}",
        sources=sorted(str(p) for p in source_dir.glob("*.cpp")),
        extra_cflags=CXX_FLAGS,
        extra_ldflags=["-fopenmp"],
        build_directory=str(build_dir),
        is_python_module=False,
    )
    return f"{ref} ({sha})"


def threading_counts() -> dict:
    import muse_infer._C

    return muse_infer._C.threading_stats() if hasattr(muse_infer._C, "threading_stats") else {}


def op_calls(namespace: str, shape: tuple) -> dict[str, Callable[[], object]]:
    """The two ops of one kernel build, called through torch.ops as the Python wrappers do."""
    forward = scan_inputs(*shape, "cpu", torch.float32)
    backward = scan_inputs(*shape, "cpu", torch.float32)
    forward_args, backward_args = [forward[k] for k in SCAN_FIELDS], [backward[k] for k in SCAN_FIELDS]
    ops = getattr(torch.ops, namespace)
    return {
        "selective_scan": lambda: ops.selective_scan(*forward_args, True),
        "selective_scan_bidirectional": lambda: ops.selective_scan_bidirectional(
            *forward_args, *backward_args, True
        ),
    }


def timed_calls(
    fn: Callable[[], object], threads: int, calls: int, before: Callable[[], object] | None
) -> tuple[list[float], list[float]]:
    """Wall and calling-thread CPU ms of ``calls`` calls on ``threads`` threads, after a pause and a warm-up;
    ``before``: run (not timed) before each call."""
    torch.set_num_threads(threads)
    time.sleep(PAUSE_S)
    fn()
    wall, cpu = [], []
    for _ in range(calls):
        if before is not None:
            before()
        w0, c0 = time.perf_counter(), time.thread_time()
        fn()
        cpu.append((time.thread_time() - c0) * 1e3)
        wall.append((time.perf_counter() - w0) * 1e3)
    return wall, cpu


def quantile(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=20, method="inclusive")[round(q * 20) - 1]


def run_condition(spec: str, variants: dict, args: argparse.Namespace) -> list[dict]:
    """variants: (op, kernel) -> (function, MUSE_SCAN_CPU_THREADS or None). One row a variant."""
    neighbours, after_op = parse_condition(spec)
    activations = torch.randn(1, 1024, 3060)  # a BiMamba block's in_proj output at the MUSE shape
    before = (lambda: activations.mul_(1.0)) if after_op else None
    times = {(v, t): ([], []) for v in variants for t in THREADS}
    counts = {v: collections.Counter() for v in variants}  # 2-thread calls by way, and stalls
    procs = start_neighbours(neighbours)
    way_before = os.environ.get("MUSE_SCAN_CPU_THREADS")
    try:
        with OtherLoad(procs) as load:
            for _ in range(args.rounds):
                for v, (fn, way) in variants.items():
                    if way is not None:
                        os.environ["MUSE_SCAN_CPU_THREADS"] = way
                    for t in THREADS:
                        start = threading_counts()
                        wall, cpu = timed_calls(fn, t, args.calls, before)
                        if way is not None and t == 2:
                            counts[v].update({k: n - start[k] for k, n in threading_counts().items()})
                        times[v, t][0].extend(wall)
                        times[v, t][1].extend(cpu)
    finally:
        stop_neighbours(procs)
        if way_before is None:
            os.environ.pop("MUSE_SCAN_CPU_THREADS", None)
        else:
            os.environ["MUSE_SCAN_CPU_THREADS"] = way_before
    rows = []
    for op, kernel in variants:
        (wall1, cpu1), (wall2, _) = times[(op, kernel), 1], times[(op, kernel), 2]
        med1, med2 = statistics.median(wall1), statistics.median(wall2)
        c = counts[op, kernel]
        multi = c["openmp_calls"] + c["helper_calls"]
        rows.append(
            dict(
                condition=condition_name(neighbours, after_op),
                neighbours=neighbours,
                after_op=after_op,
                op=op,
                kernel=kernel,
                openmp_share_2t=round(c["openmp_calls"] / multi, 2) if multi else None,
                openmp_stalls=c["openmp_stalls"] if multi else None,
                ms_1t=round(med1, 2),
                ms_2t=round(med2, 2),
                ratio_2t_1t=round(med2 / med1, 2),
                p90_ms_1t=round(quantile(wall1, 0.9), 2),
                p90_ms_2t=round(quantile(wall2, 0.9), 2),
                cpu_ms_1t=round(statistics.median(cpu1), 2),
                calls=len(wall1),
                other_cores=round(load.cores, 2),
                steal_cores=round(load.steal, 2),
            )
        )
    return rows


def markdown(rows: list[dict]) -> list[str]:
    head = ["condition", "op", "kernel", "1 thread ms", "2 threads ms", "2t / 1t", "p90 1t / 2t ms"]
    head += ["1-thread CPU ms", "2t calls on OpenMP (stalls)", "others' cores"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * (len(head) - 3)]
    for r in rows:
        cells = [r["condition"], r["op"], r["kernel"], f"{r['ms_1t']:.2f}", f"{r['ms_2t']:.2f}"]
        cells += [f"{r['ratio_2t_1t']:.2f}", f"{r['p90_ms_1t']:.1f} / {r['p90_ms_2t']:.1f}"]
        share = "" if r["openmp_share_2t"] is None else f"{r['openmp_share_2t']:.0%} ({r['openmp_stalls']})"
        cells += [f"{r['cpu_ms_1t']:.2f}", share, f"{r['other_cores']:.2f} (steal {r['steal_cores']:.2f})"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="1,512,3060,16", help="batch,Di,L,N")
    parser.add_argument(
        "--conditions",
        nargs="+",
        default=["0", "0+op", "1", "2"],
        help="numbers of busy neighbours, +op: each call after a parallel torch op (quiet ones first by"
        " default: after a stall the kernel keeps off the OpenMP team for up to 16 s)",
    )
    parser.add_argument(
        "--ways",
        nargs="+",
        choices=["auto", "openmp", "helpers"],
        default=["auto"],
        help="MUSE_SCAN_CPU_THREADS for the current kernel (csrc/parallel_items.h)",
    )
    parser.add_argument("--rounds", type=int, default=12, help="interleaved rounds a condition")
    parser.add_argument("--calls", type=int, default=10, help="timed calls a round, variant and thread count")
    parser.add_argument("--baseline", metavar="REF", help="also time the kernel of this git revision")
    parser.add_argument("--json", type=Path, help="also write the rows and the setup here")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if not op_available("cpu"):
        raise SystemExit("muse_infer._C is not built: python setup.py build_ext --inplace")
    import muse_infer._C

    shape = tuple(int(x) for x in args.shape.split(","))
    for spec in args.conditions:
        parse_condition(spec)
    kernels = {(f"current, {way}" if len(args.ways) > 1 else "current"): ("muse", way) for way in args.ways}
    if args.baseline:
        kernels[build_baseline(args.baseline)] = (BASELINE_NAMESPACE, None)
    variants = {}
    for kernel, (namespace, way) in kernels.items():
        for op, fn in op_calls(namespace, shape).items():
            variants[op, kernel] = (fn, way)
    variants = dict(sorted(variants.items(), key=lambda kv: kv[0][0]))  # the op's kernels side by side

    setup = dict(
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        torch=torch.__version__,
        cpu=cpu_name(),
        cores=os.cpu_count(),
        cpu_kernel=cpu_kernel_isa(),
        library=muse_infer._C.__file__,
        kernels=list(kernels),
        shape=args.shape,
        load_average_1min=round(os.getloadavg()[0], 2),
    )
    print("setup:", ", ".join(f"{k}={v}" for k, v in setup.items()), flush=True)
    threads = torch.get_num_threads()
    rows = []
    try:
        for spec in args.conditions:
            new = run_condition(spec, variants, args)
            for r in new:
                print(", ".join(f"{k}={v}" for k, v in r.items()), flush=True)
            rows += new
    finally:
        torch.set_num_threads(threads)
    print()
    print("\n".join(markdown(rows)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dict(setup=setup, rows=rows), indent=1))


if __name__ == "__main__":
    main()
