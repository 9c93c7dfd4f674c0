"""Time the CPU scan on 1 and 2 threads, on a quiet machine and next to one or two busy neighbours.

    python benchmarks/bench_scan_threads.py --json out/scan_threads.json
    python benchmarks/bench_scan_threads.py --conditions 0 1 2 --rounds 30 --calls 10 --label after

A busy neighbour is a process of its own spinning on one core (``python -c "while True: pass"``); the
script starts them before a condition and kills them after it. In each condition it times
``muse::selective_scan`` and ``muse::selective_scan_bidirectional`` at the MUSE shape (batch 1, Di 512,
L 3060, N 16, fp32, D, z, delta_bias, softplus; contiguous inputs as in bench_scan.py) with
torch.set_num_threads(1) and (2), in interleaved rounds (1 thread, then 2, ``--calls`` calls each, after
one warm-up call) so that both see the same drift of the machine. It prints, per condition and op, the
median wall time a call on each thread count and their ratio (2 threads / 1 thread), the median CPU
time of the calling thread on 1 thread (what the kernel costs, whatever the neighbours do), and how
many cores other processes kept busy meanwhile (from /proc/stat, less this process and its neighbours;
"steal": time the hypervisor gave to other machines).

The criterion of issue 15: 2 threads no more than 10% slower than 1 with one and with two busy
neighbours, and no slower than the previous kernel on a quiet machine. To time another build of the
kernel (e.g. main's), copy this file into that checkout, build it there and run it with PYTHONPATH set
to it: the first lines name the library that was loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install
sys.path.insert(1, str(Path(__file__).resolve().parent))

from bench_scan import cpu_name, scan_inputs  # noqa: E402

from muse_infer.ops.op import (  # noqa: E402
    SCAN_FIELDS,
    cpu_kernel_isa,
    op_available,
    selective_scan,
    selective_scan_bidirectional,
)

SPIN = "while True: pass"
THREADS = (1, 2)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def condition_name(neighbours: int) -> str:
    return {0: "quiet", 1: "1 busy neighbour"}.get(neighbours, f"{neighbours} busy neighbours")


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


def ops(shape: tuple) -> dict[str, Callable[[], object]]:
    forward = scan_inputs(*shape, "cpu", torch.float32)
    backward = scan_inputs(*shape, "cpu", torch.float32)
    forward_args, backward_args = [forward[k] for k in SCAN_FIELDS], [backward[k] for k in SCAN_FIELDS]
    return {
        "selective_scan": lambda: selective_scan(**forward, delta_softplus=True),
        "selective_scan_bidirectional": lambda: selective_scan_bidirectional(
            forward_args, backward_args, True
        ),
    }


def timed_calls(fn: Callable[[], object], threads: int, calls: int) -> tuple[list[float], list[float]]:
    """Wall and calling-thread CPU ms of ``calls`` calls on ``threads`` threads, after one warm-up call."""
    torch.set_num_threads(threads)
    fn()
    wall, cpu = [], []
    for _ in range(calls):
        w0, c0 = time.perf_counter(), time.thread_time()
        fn()
        cpu.append((time.thread_time() - c0) * 1e3)
        wall.append((time.perf_counter() - w0) * 1e3)
    return wall, cpu


def quantile(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=20, method="inclusive")[round(q * 20) - 1]


def run_condition(neighbours: int, variants: dict, args: argparse.Namespace) -> list[dict]:
    procs = start_neighbours(neighbours)
    try:
        with OtherLoad(procs) as load:
            times = {(name, t): ([], []) for name in variants for t in THREADS}
            for _ in range(args.rounds):
                for name, fn in variants.items():
                    for t in THREADS:
                        wall, cpu = timed_calls(fn, t, args.calls)
                        times[name, t][0].extend(wall)
                        times[name, t][1].extend(cpu)
    finally:
        stop_neighbours(procs)
    rows = []
    for name in variants:
        (wall1, cpu1), (wall2, _) = times[name, 1], times[name, 2]
        med1, med2 = statistics.median(wall1), statistics.median(wall2)
        rows.append(
            dict(
                condition=condition_name(neighbours),
                neighbours=neighbours,
                op=name,
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
    head = [
        "condition",
        "op",
        "1 thread ms",
        "2 threads ms",
        "2t / 1t",
        "p90 1t / 2t ms",
        "1-thread CPU ms",
        "others' cores",
    ]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for r in rows:
        cells = [r["condition"], r["op"], f"{r['ms_1t']:.2f}", f"{r['ms_2t']:.2f}", f"{r['ratio_2t_1t']:.2f}"]
        cells += [f"{r['p90_ms_1t']:.1f} / {r['p90_ms_2t']:.1f}", f"{r['cpu_ms_1t']:.2f}"]
        cells += [f"{r['other_cores']:.2f} (steal {r['steal_cores']:.2f})"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="1,512,3060,16", help="batch,Di,L,N")
    parser.add_argument(
        "--conditions", type=int, nargs="+", default=[0, 1, 2], help="numbers of busy neighbours"
    )
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds a condition")
    parser.add_argument("--calls", type=int, default=10, help="timed calls a round, op and thread count")
    parser.add_argument("--label", default="", help="a name for this run (e.g. before / after)")
    parser.add_argument("--json", type=Path, help="also write the rows and the setup here")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if not op_available("cpu"):
        raise SystemExit("muse_infer._C is not built: python setup.py build_ext --inplace")
    import muse_infer._C

    setup = dict(
        label=args.label,
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        torch=torch.__version__,
        cpu=cpu_name(),
        cores=os.cpu_count(),
        cpu_kernel=cpu_kernel_isa(),
        library=muse_infer._C.__file__,
        shape=args.shape,
        load_average_1min=round(os.getloadavg()[0], 2),
    )
    print("setup:", ", ".join(f"{k}={v}" for k, v in setup.items()), flush=True)
    variants = ops(tuple(int(x) for x in args.shape.split(",")))
    threads = torch.get_num_threads()
    rows = []
    try:
        for neighbours in args.conditions:
            new = run_condition(neighbours, variants, args)
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
