"""Where the Ray engine's fixed cost goes on one machine (docs/benchmarks.md, "Ray engine: start-up").

Each repeat runs in a fresh process, as the command does, a private instance started as
``muse_infer.jobs.ray_cluster`` starts one (2 logical CPUs, no dashboard, loopback node), then a Ray
Data pipeline shaped like the engine's (3 items -> ``map`` tasks of 1 CPU -> ``map_batches`` on one
actor that imports torch and ``muse_infer.encoders``, as a model actor does before it loads its
model), then ``ray.shutdown()``. It reports, medians over the repeats:

- wall seconds of: ``import ray``, ``import ray.data`` (the driver's), ``ray.init`` and the steps of
  it that wait (Ray's ``Node`` methods, timed by wrapping them: for measuring only), the pipeline up
  to its first row and to its end, ``ray.shutdown()`` and the kill of each of Ray's process types;
- CPU seconds of every process of the instance just before the shutdown (``/proc``), by kind.

Run:
    python benchmarks/ray_startup_probe.py --repeats 3 --json out/ray_startup_probe.json
    python benchmarks/ray_startup_probe.py --repeats 3 \\
        --init-options '{"_system_config": {"prestart_worker_first_driver": false}}'
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NODE_STEPS = ("start_head_processes", "start_api_server", "start_ray_processes", "__init__")
PROCESS_KINDS = (  # a command line fragment -> its kind (the first that matches)
    ("gcs_server", "gcs_server"),
    ("raylet", "raylet"),
    ("log_monitor", "log monitor"),
    ("monitor.py", "autoscaler monitor"),
    ("dashboard/dashboard.py", "API server (dashboard.py)"),
    ("DashboardAgent", "dashboard agent"),
    ("RuntimeEnvAgent", "runtime env agent"),
    ("MapWorker", "model actor (imports torch)"),
    ("_StatsActor", "Ray Data stats actor"),
    ("_AutoscalingCoordinator", "Ray Data autoscaling coordinator"),
    ("ActorLocationTracker", "Ray Data actor location tracker"),
    ("ray::", "task worker"),
)


class Actor:
    """Stands for the model actor: imports what it imports before loading the model."""

    def __init__(self):
        import torch  # noqa: F401

        import muse_infer.encoders  # noqa: F401

    def __call__(self, batch):
        return batch


def identity(row):
    return row


def timed(times: dict, owner, name: str) -> None:
    """Wrap ``owner.name`` to add its wall seconds to ``times[name]`` (for this measurement only)."""
    method = getattr(owner, name)

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        started = time.monotonic()
        try:
            return method(*args, **kwargs)
        finally:
            times[name] = times.get(name, 0.0) + time.monotonic() - started

    setattr(owner, name, wrapper)


def process_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of this process's descendants, by kind, and this one ("driver")."""
    tick, cpu = os.sysconf("SC_CLK_TCK"), {}

    def walk(pid: int):
        yield pid
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            yield from walk(int(child))

    for pid in walk(os.getpid()):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            command = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
        except OSError:
            continue
        kind = "driver" if pid == os.getpid() else "other"
        kind = next((k for fragment, k in PROCESS_KINDS if fragment in command and pid != os.getpid()), kind)
        cpu[kind] = cpu.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return cpu


def one_run(init_options: dict) -> dict:
    """One private instance (``ray.init`` also given ``init_options``), pipeline and shutdown in this
    process (the child side)."""
    phases = {}
    started = time.monotonic()
    import ray

    phases["import ray"] = time.monotonic() - started
    import ray.data

    phases["import ray.data"] = time.monotonic() - started - phases["import ray"]
    from ray._private import node, worker

    steps: dict[str, float] = {}
    for name in NODE_STEPS:
        timed(steps, node.Node, name)
    timed(steps, worker, "connect")
    kills: dict[str, float] = {}
    kill = node.Node._kill_process_type

    def timed_kill(self, process_type, *args, **kwargs):
        began = time.monotonic()
        try:
            return kill(self, process_type, *args, **kwargs)
        finally:
            kills[process_type] = time.monotonic() - began

    node.Node._kill_process_type = timed_kill
    began = time.monotonic()
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        logging_level=logging.ERROR,
        _temp_dir=tempfile.mkdtemp(prefix="muse-ray-probe-"),
        _node_ip_address="127.0.0.2",
        **init_options,
    )
    phases["ray.init"] = time.monotonic() - began
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars, context.print_on_execution_start = False, False
    began = time.monotonic()
    dataset = ray.data.from_items([{"x": i} for i in range(3)], override_num_blocks=3)
    dataset = dataset.map(identity, num_cpus=1).map_batches(
        Actor, batch_size=1, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1
    )
    rows = iter(dataset.iter_rows())
    next(rows)
    phases["pipeline: first row"] = time.monotonic() - began
    list(rows)
    phases["pipeline: all rows"] = time.monotonic() - began
    cpu = process_cpu()
    began = time.monotonic()
    ray.shutdown()
    phases["ray.shutdown"] = time.monotonic() - began
    return {
        "phases_s": phases,
        "ray.init steps_s": steps,
        "shutdown kill_s": kills,
        "cpu_s": cpu,
        "cpu_s_total": sum(cpu.values()),
    }


def medians(runs: list[dict], key: str) -> dict:
    names = sorted({name for run in runs for name in run[key]})
    return {name: round(statistics.median(run[key].get(name, 0.0) for run in runs), 2) for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--init-options",
        default="{}",
        help='JSON of more ray.init arguments to try, e.g. \'{"_system_config": {"prestart_worker_first_driver": false}}\'',
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_run(json.loads(args.init_options))))
        return
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")])
        ),
    }
    runs = []
    for repeat in range(args.repeats):
        child = subprocess.run(
            [sys.executable, __file__, "--child", "--init-options", args.init_options],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(f"repeat {repeat + 1}: {json.dumps(runs[-1]['phases_s'])}", file=sys.stderr)
    table = {key: medians(runs, key) for key in ("phases_s", "ray.init steps_s", "shutdown kill_s", "cpu_s")}
    table["cpu_s_total"] = round(statistics.median(run["cpu_s_total"] for run in runs), 2)
    table["runs"] = runs
    table["setup"] = {
        "init_options": json.loads(args.init_options),
        "repeats": args.repeats,
        "cores": os.cpu_count(),
        "load_average_1min_at_end": os.getloadavg()[0],
    }
    print(json.dumps({k: v for k, v in table.items() if k != "runs"}, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
