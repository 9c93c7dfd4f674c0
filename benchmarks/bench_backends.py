"""Video-encoder latency and videos/s per backend, same inputs, same run (docs/benchmarks.md, "Backends").

Builds the ViT-B-32 MUSE architecture with random (seeded) weights and opened gates, exports its video
encoder once into --work-dir (reused by later runs), then times each backend on the same random
batch, round-robin so that a busy machine slows all of them alike:

- torch (C++ scan)   eager PyTorch, ``model.set_scan("op")``: each block's scans one
                     muse::selective_scan_bidirectional call (the C++ kernel on CPU)
- torch (ref scan)   eager PyTorch, ``model.set_scan("ref")``: selective_scan_ref (for context; slow)
- onnx               video_encoder.onnx in a stock onnxruntime InferenceSession (standard ops)
- torchscript        video_encoder.pt (muse::selective_scan_bidirectional calls, op library loaded)
- torchscript portable  video_encoder.portable.pt (the scan as TorchScript code)
- pt2                video_encoder.pt2, a torch.export program (muse:: scan op nodes), .module()

Run:  python benchmarks/bench_backends.py --batch 1 8 --repeats 5 [--device cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from export.modules import example_video_inputs  # noqa: E402
from muse_infer.config import load_config  # noqa: E402
from muse_infer.loading import build_model  # noqa: E402

BACKENDS = ("torch", "torch-ref", "onnx", "torchscript", "torchscript-portable", "pt2")


def build(architecture: str) -> torch.nn.Module:
    """The architecture with random CLIP weights and random gates (a fresh block is the identity)."""
    model = build_model(load_config(architecture), clip_weights="random").eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for block in model.blocks:
            for p in (block.temporal_fc.weight, block.temporal_fc.bias):
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
    return model


def exported(model, work_dir: Path, wanted: list[str], device: str) -> dict[str, Path]:
    """Export the video encoder in the formats the wanted backends need (kept across runs).

    ONNX and pt2 are exported from the CPU model (onnxruntime runs it on CPU here; the pt2 program is
    moved to ``device`` when loaded); TorchScript is traced on ``device``, since a trace keeps the
    device its intermediate tensors were made on.
    """
    from export.pt2_export import export_video_pt2
    from export.torchscript_export import export_video_torchscript

    def export_video_onnx(model, path):
        from export.onnx_export import export_video_onnx  # onnxscript: only when ONNX is wanted

        return export_video_onnx(model, path)

    work_dir.mkdir(parents=True, exist_ok=True)
    tag = device.replace(":", "")
    files = {
        "onnx": (work_dir / "video_encoder.onnx", lambda p: export_video_onnx(model.cpu(), p)),
        "torchscript": (
            work_dir / f"video_encoder.{tag}.pt",
            lambda p: export_video_torchscript(model.to(device), p),
        ),
        "torchscript-portable": (
            work_dir / f"video_encoder.portable.{tag}.pt",
            lambda p: export_video_torchscript(model.to(device), p, portable=True),
        ),
        "pt2": (work_dir / "video_encoder.pt2", lambda p: export_video_pt2(model.cpu(), p)),
    }
    paths = {}
    for name in wanted:
        if name in files:
            path, write = files[name]
            if not path.is_file():
                print(f"exporting {path.name} ...", file=sys.stderr, flush=True)
                write(path)
            paths[name] = path
    return paths


def runners(model, paths: dict[str, Path], wanted: list[str], device: str) -> dict:
    """name -> function(frames np, mask np) -> embeddings np."""
    import muse_infer.ops.op  # noqa: F401  (the op, for torch and torchscript)

    model = model.to(device)
    result = {}

    def eager(scan: str):
        def run(frames, mask):
            model.set_scan(scan)  # the two eager backends share the model
            with torch.inference_mode():
                out = model.encode_video(
                    torch.from_numpy(frames).to(device), torch.from_numpy(mask).to(device)
                )
                return out.float().cpu().numpy()

        return run

    def scripted(path: Path, loader: str):
        if loader == "pt2":
            from export.pt2_export import load_pt2

            module = load_pt2(path, device)
        else:
            module = torch.jit.load(str(path), map_location=device).eval()

        def run(frames, mask):
            with torch.inference_mode():
                return (
                    module(torch.from_numpy(frames).to(device), torch.from_numpy(mask).to(device))
                    .cpu()
                    .numpy()
                )

        return run

    for name in wanted:
        if name == "torch":
            result[name] = eager("op")
        elif name == "torch-ref":
            result[name] = eager("ref")
        elif name == "onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()  # the same thread count as torch
            session = ort.InferenceSession(str(paths[name]), options, providers=["CPUExecutionProvider"])
            result[name] = lambda f, m, s=session: s.run(None, {"frames": f, "mask": m})[0]
        else:
            result[name] = scripted(paths[name], "pt2" if name == "pt2" else "torchscript")
    return result


def measure(
    run_by_name: dict, frames: np.ndarray, mask: np.ndarray, repeats: int, slow: set[str], sync, clock
) -> dict:
    """Round-robin timing: every round runs each backend once (slow ones only in the first round).

    clock: time.perf_counter (wall) or time.process_time (CPU time of the whole process, which does not
    count time spent descheduled by other jobs: the robust figure on a shared machine, with 1 thread).
    """
    outputs = {name: run(frames, mask) for name, run in run_by_name.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in run_by_name}
    for round_index in range(repeats):
        for name, run in run_by_name.items():
            if name in slow and round_index > 0:
                continue
            sync()
            start = clock()
            run(frames, mask)
            sync()
            times[name].append(clock() - start)
    reference = outputs.get("torch")
    rows = {}
    for name, values in times.items():
        error = float(np.abs(outputs[name] - reference).max()) if reference is not None else None
        median = statistics.median(values)
        rows[name] = {
            "median_s": median,
            "min_s": min(values),
            "runs": len(values),
            "videos_per_s": frames.shape[0] / median,
            "max_abs_error_vs_torch": error,
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--architecture", default="ViT-B-32")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--slow", nargs="*", default=["torch-ref"], help="backends timed once only")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/muse-bench-backends"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads")
    parser.add_argument("--cpu-time", action="store_true", help="process CPU time instead of wall time")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.cpu_time else time.perf_counter

    model = build(args.architecture)
    paths = exported(model, args.work_dir / args.architecture, args.backends, args.device)
    run_by_name = runners(model, paths, args.backends, args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    report = {
        "machine": machine(args.device),
        "command": " ".join(sys.argv),
        "clock": "process CPU time" if args.cpu_time else "wall",
        "load_average_at_start": os.getloadavg(),
        "results": {},
    }
    for batch in args.batch:
        frames, mask = (t.numpy() for t in example_video_inputs(model.config, batch, seed=5))
        rows = measure(run_by_name, frames, mask, args.repeats, set(args.slow), sync, clock)
        report["results"][str(batch)] = rows
        print_table(batch, rows, report["clock"])
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


def machine(device: str) -> dict:
    import onnxruntime

    info = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    try:
        info["cpu"] = next(
            line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def print_table(batch: int, rows: dict, clock: str) -> None:
    print(f"\nbatch {batch} ({clock}, load average {os.getloadavg()[0]:.2f})")
    print("| backend | median latency (s) | min (s) | videos/s | runs | max abs error vs torch |")
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        error = "-" if row["max_abs_error_vs_torch"] is None else f"{row['max_abs_error_vs_torch']:.1e}"
        print(
            f"| {name} | {row['median_s']:.3f} | {row['min_s']:.3f} | {row['videos_per_s']:.2f} | {row['runs']} | {error} |"
        )


if __name__ == "__main__":
    main()
