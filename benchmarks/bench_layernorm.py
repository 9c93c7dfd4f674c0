"""A kept-float32 LayerNorm on bf16 activations: the cast form against PyTorch reading bf16 itself.

    python benchmarks/bench_layernorm.py --repeats 30 --json docs/results/layernorm_2026-12-08.json

``muse_infer.model.precision.cast_for_inference`` keeps LayerNorm weights in float32. A traced graph
casts the input to float32 and the output back ("cast": three ops, two new tensors); in eager
inference on the CPU the module reads the bf16 input itself ("reads bf16": PyTorch's mixed-type
kernel, float32 inside). Both are timed on the shapes of ViT-B-32's video tower at 12 frames (the
blocks' (1, 3060, 512), CLIP's (12, 50, 768), the pyramid's (12, 14, 14, 512)) and at batch 8 of
CLIP's, one thread, thread CPU time, the two alternating, medians; and compared (values that differ,
the largest difference in steps of bf16).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

SHAPES = [(1, 3060, 512), (12, 50, 768), (12, 14, 14, 512), (96, 50, 768)]


def thread_ms(fn) -> float:
    start = time.thread_time()
    fn()
    return 1e3 * (time.thread_time() - start)


def measure(shape: tuple[int, ...], repeats: int) -> dict:
    generator = torch.Generator().manual_seed(0)
    width = shape[-1]
    weight = 1 + 0.5 * torch.randn(width, generator=generator)
    bias = 0.1 * torch.randn(width, generator=generator)
    x = (3 * torch.randn(shape, generator=generator) + 1).to(torch.bfloat16)
    forms = {
        "cast": lambda: F.layer_norm(x.float(), (width,), weight, bias).to(torch.bfloat16),
        "reads bf16": lambda: F.layer_norm(x, (width,), weight, bias),
    }
    with torch.inference_mode():
        outputs = {name: form() for name, form in forms.items()}
        times = {name: [] for name in forms}
        for _ in range(repeats):
            for name, form in forms.items():
                times[name].append(thread_ms(form))
    cast, fast = outputs["cast"].float(), outputs["reads bf16"].float()
    steps = (fast - cast).abs() / (cast.abs() * 2.0**-7).clamp(min=torch.finfo(torch.float32).tiny)
    medians = {name: round(statistics.median(t), 3) for name, t in times.items()}
    return {
        "shape": list(shape),
        "median_ms": medians,
        "speedup": round(medians["cast"] / medians["reads bf16"], 2),
        "values_differing": int((fast != cast).sum()),
        "values": cast.numel(),
        "max_difference_in_bf16_steps_of_larger_than_1e-3": float(steps[cast.abs() > 1e-3].max()),
    }


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for shape in SHAPES:
        rows.append(measure(shape, args.repeats))
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        record = {"setup": {"torch": torch.__version__, "threads": args.threads, "repeats": args.repeats}}
        args.json.write_text(json.dumps(record | {"rows": rows}, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
