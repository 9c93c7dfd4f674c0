"""The pyramid's convolutions against matmul forms, on token grids (N, H, W, C), one CPU thread.

    python benchmarks/bench_pyramid_forms.py --frames 12 96 --repeats 9 --json out/pyramid_forms.json

What ``MultiScaleGenerator.forward_tokens`` could run for the ViT-B-32 pyramid's layers that have a
matmul form (C = 512, grids 3, 7 and 14 for 12 frames; ``--frames 96`` is batch 8):
- the 1x1 convolutions (C -> C on 3x3 and 7x7, C/2 -> C on 14x14): ``F.linear`` over the channels of the
  tokens, against the Conv2d on the tokens' channels-last view (what the model runs) and on a
  contiguous (N, C, H, W) copy (the layout the branches were written for);
- the stride == kernel transposed convolution (C -> C/2, kernel 2, stride 2, 7x7 -> 14x14): one matmul
  with the weight laid out (4 C/2, C) and each position's 2x2 patch moved into place, against the
  ConvTranspose2d on the channels-last view and on a contiguous copy;
- the 3x3 convolutions (C -> C on 3x3, 7x7 and 14x14): Winograd's F(2x2, 3x3), the op
  ``muse::conv3x3_winograd`` with the transformed weight computed beforehand (as the model keeps it),
  against the Conv2d on the channels-last view and on a contiguous copy.
Each matmul or Winograd form is checked against the module (max abs difference printed and bounded)
before it is timed. Times: median thread CPU ms of ``--repeats`` calls, the forms interleaved, after
one warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from muse_infer.ops.winograd import winograd_weight  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def patch_transpose_conv(layer: nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    """A stride == kernel ConvTranspose2d as a matmul: (N, H, W, Cin) -> (N, H*kh, W*kw, Cout)."""
    cin, cout, kh, kw = layer.weight.shape
    n, h, w, _ = x.shape
    weight = layer.weight.permute(2, 3, 1, 0).reshape(kh * kw * cout, cin)
    patches = F.linear(x, weight, layer.bias.repeat(kh * kw)).view(n, h, w, kh, kw, cout)
    return patches.permute(0, 1, 3, 2, 4, 5).reshape(n, h * kh, w * kw, cout)


def forms(layer: nn.Module, x: torch.Tensor) -> dict:
    """The ways to run ``layer`` on tokens x (N, H, W, C), each returning (N, H', W', C')."""
    ways = {
        "module, channels-last view": lambda: layer(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1),
        "module, contiguous NCHW copy": lambda: layer(x.permute(0, 3, 1, 2).contiguous()).permute(0, 2, 3, 1),
    }
    if isinstance(layer, nn.ConvTranspose2d):
        ways["matmul form"] = lambda: patch_transpose_conv(layer, x)
    elif layer.kernel_size == (3, 3):
        import muse_infer.ops.op  # noqa: F401  (registers the op)

        transformed = winograd_weight(layer.weight)
        ways["Winograd op"] = lambda: torch.ops.muse.conv3x3_winograd(x, transformed, layer.bias)
    else:
        ways["matmul form"] = lambda: F.linear(x, layer.weight.flatten(1), layer.bias)
    return ways


def fast_form(calls: dict) -> str:
    """The name of the form that is not the module."""
    return next(name for name in calls if not name.startswith("module"))


def median_ms(calls: dict, repeats: int) -> dict[str, float]:
    for fn in calls.values():
        fn()
    times = {name: [] for name in calls}
    for round_index in range(repeats):
        for name in list(calls)[:: 1 if round_index % 2 == 0 else -1]:
            start = time.thread_time()
            calls[name]()
            times[name].append(time.thread_time() - start)
    return {name: round(1e3 * statistics.median(t), 2) for name, t in times.items()}


def layers(width: int = 512) -> list[tuple[str, nn.Module, int, int]]:
    """(name, layer, input grid, input channels) of the ViT-B-32 pyramid with a matmul or Winograd form."""
    return [
        ("1x1 conv C->C on 3x3", nn.Conv2d(width, width, 1), 3, width),
        ("1x1 conv C->C on 7x7", nn.Conv2d(width, width, 1), 7, width),
        ("1x1 conv C/2->C on 14x14", nn.Conv2d(width // 2, width, 1), 14, width // 2),
        ("transposed conv C->C/2, k2 s2, 7x7", nn.ConvTranspose2d(width, width // 2, 2, stride=2), 7, width),
        *((f"3x3 conv C->C on {g}x{g}", nn.Conv2d(width, width, 3, padding=1), g, width) for g in (3, 7, 14)),
    ]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, nargs="+", default=[12, 96], help="N: frames of the batch")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES))
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows = []
    with torch.inference_mode():
        for precision in args.precisions:
            dtype = DTYPES[precision]
            for frames in args.frames:
                for name, layer, grid, channels in layers():
                    layer = layer.to(dtype)
                    x = torch.randn(frames, grid, grid, channels, dtype=dtype)
                    calls = forms(layer, x)
                    reference = calls["module, contiguous NCHW copy"]().float()
                    fast = fast_form(calls)
                    gap = (calls[fast]().float() - reference).abs().max().item()
                    assert gap <= (1e-3 if dtype == torch.float32 else 0.1) * max(
                        1.0, reference.abs().max().item()
                    )
                    row = {
                        "precision": precision,
                        "frames": frames,
                        "layer": name,
                        f"{fast.replace(' ', '_').lower()}_max_abs_diff": gap,
                    }
                    row["median_thread_cpu_ms"] = median_ms(calls, args.repeats)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    result = {
        "setup": {"torch": torch.__version__, "threads": 1, "command": " ".join(sys.argv)},
        "rows": rows,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
