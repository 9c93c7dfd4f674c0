"""Time the Triton selective scan on a GPU at the MUSE shape: launch shapes, and one bidirectional
launch against two calls.

    python benchmarks/bench_triton_bidir.py --json out/triton_scan_gpu.json --markdown out/triton.md

What it prints and writes (median of triton.testing.do_bench, CUDA events):
- the copy bandwidth of this GPU (device-to-device, bytes read + written), the memory ceiling;
- for each launch shape in CANDIDATE_CONFIGS and each dtype: ms, GB/s over the bytes the scan must
  move (u, delta, z, B, C read once, y written once), that time's ratio to the memory floor, and
  the kernel's registers and spills;
- BiMamba's two scans: one bidirectional launch, vs two calls on already-flipped backward inputs
  plus flip-and-add of the output, vs the same with the five input flips the block would do.
Inputs are ~0.4 GB a set in fp32, far beyond the L2, so repeated calls do not measure the cache.

``--dry-run`` runs the same steps on CPU tensors at a tiny shape through Triton's interpreter (start
it with TRITON_INTERPRET=1): a check of this script on a machine without a GPU, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from muse_infer.ops import triton_scan  # noqa: E402
from muse_infer.ops.inputs import ScanInputs  # noqa: E402
from muse_infer.ops.triton_scan import (  # noqa: E402
    CANDIDATE_CONFIGS,
    selective_scan_triton,
    selective_scan_triton_bidirectional,
)

SHAPE = dict(Di=512, L=3060, N=16)  # MUSE's; --dry-run shrinks it
DEVICE = "cuda"


def muse_inputs(batch: int, dtype: torch.dtype, seed: int) -> ScanInputs:
    """One direction's inputs as BiMamba feeds them (contiguous; A, D, delta_bias in fp32)."""
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    Di, L, N = SHAPE["Di"], SHAPE["L"], SHAPE["N"]

    def randn(*shape, scale=1.0):
        return (scale * torch.randn(*shape, device=DEVICE, generator=g)).to(dtype)

    log_dt = torch.rand(Di, device=DEVICE, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)
    dt = torch.exp(log_dt)
    return ScanInputs(
        u=randn(batch, Di, L),
        delta=randn(batch, Di, L, scale=0.5),
        A=-torch.arange(1, N + 1, device=DEVICE, dtype=torch.float32).repeat(Di, 1),
        B=randn(batch, N, L),
        C=randn(batch, N, L),
        D=torch.ones(Di, device=DEVICE),
        z=randn(batch, Di, L),
        delta_bias=dt + torch.log(-torch.expm1(-dt)),  # Mamba's dt init, through inverse softplus
    )


def scan_bytes(inputs: ScanInputs) -> int:
    """Bytes a scan must move: every input read once, y (u's dtype) written once."""
    read = sum(t.numel() * t.element_size() for t in inputs if t is not None)
    return read + inputs.u.numel() * inputs.u.element_size()


def time_ms(fn) -> float:
    if DEVICE != "cuda":  # dry run: one wall-clock call
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def copy_bandwidth_gbps() -> float:
    """Device-to-device copy of 1 GiB, counting bytes read plus written."""
    src = torch.empty(2**28 if DEVICE == "cuda" else 2**20, device=DEVICE, dtype=torch.float32).normal_()
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src))
    return 2 * src.numel() * 4 / ms / 1e6


def kernel_resources(inputs: ScanInputs, config) -> dict:
    """Registers and spills of the compiled kernel for `config` (None where Triton hides them)."""
    try:
        y = torch.empty_like(inputs.u)
        compiled = triton_scan._launch(y, None, triton_scan._direction_args(*inputs), None, True, config)
        return {"regs": getattr(compiled, "n_regs", None), "spills": getattr(compiled, "n_spills", None)}
    except Exception as error:  # informative only
        return {"regs": None, "spills": None, "note": repr(error)[:200]}


def sweep_configs(batch: int, dtype: torch.dtype, copy_gbps: float, deadline: float, configs) -> list[dict]:
    """Time each config (None: the default choice) on one input set; diff against the default's y."""
    inputs = muse_inputs(batch, dtype, seed=0)
    nbytes = scan_bytes(inputs)
    floor_ms = nbytes / (copy_gbps * 1e6)
    reference = selective_scan_triton(*inputs, delta_softplus=True)
    rows = []
    for config in configs:
        name = "default" if config is None else _config_name(config)
        if time.monotonic() > deadline:
            rows.append({"config": name, "dtype": _name(dtype), "skipped": "time budget"})
            continue
        try:
            out = selective_scan_triton(*inputs, delta_softplus=True, config=config)
            diff = (out.float() - reference.float()).abs().max().item()
            ms = time_ms(
                lambda config=config: selective_scan_triton(*inputs, delta_softplus=True, config=config)
            )
            row = {
                "config": name,
                "dtype": _name(dtype),
                "batch": batch,
                "ms": ms,
                "GBps": nbytes / ms / 1e6,
                "x_floor": ms / floor_ms,
                "max_diff_vs_default": diff,
            }
            row.update(kernel_resources(inputs, config or triton_scan._choose_config(SHAPE["N"], 0)))
        except Exception as error:
            row = {"config": name, "dtype": _name(dtype), "error": repr(error)[:300]}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def bidirectional(batch: int, dtype: torch.dtype, deadline: float) -> dict:
    """One bidirectional launch vs two calls (with and without the input flips)."""
    if time.monotonic() > deadline:
        return {"dtype": _name(dtype), "skipped": "time budget"}
    fwd, bwd = muse_inputs(batch, dtype, seed=1), muse_inputs(batch, dtype, seed=2)
    flipped = ScanInputs(*[t.flip(-1) if t is not None and t.dim() == 3 else t for t in bwd])

    def fused():
        return selective_scan_triton_bidirectional(fwd, bwd, True)

    def two_calls_preflipped():
        return selective_scan_triton(*fwd, delta_softplus=True) + selective_scan_triton(
            *flipped, delta_softplus=True
        ).flip(-1)

    def two_calls_with_flips():
        inputs = ScanInputs(*[t.flip(-1) if t is not None and t.dim() == 3 else t for t in bwd])
        return selective_scan_triton(*fwd, delta_softplus=True) + selective_scan_triton(
            *inputs, delta_softplus=True
        ).flip(-1)

    fused_out, two_out = fused().float(), two_calls_preflipped().float()
    scale = two_out.abs().max().item()
    row = {
        "dtype": _name(dtype),
        "batch": batch,
        "fused_ms": time_ms(fused),
        "two_calls_ms": time_ms(two_calls_preflipped),
        "two_calls_with_flips_ms": time_ms(two_calls_with_flips),
        "max_rel_diff": (fused_out - two_out).abs().max().item() / max(scale, 1e-30),
    }
    row["speedup_vs_two_calls"] = row["two_calls_ms"] / row["fused_ms"]
    row["speedup_vs_two_calls_with_flips"] = row["two_calls_with_flips_ms"] / row["fused_ms"]
    print(json.dumps(row), flush=True)
    return row


def mamba_peer(batch: int, dtype: torch.dtype) -> dict | None:
    """mamba-ssm's CUDA selective_scan_fn at the same inputs, where it is installed."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:
        return None
    inputs = muse_inputs(batch, dtype, seed=0)
    ms = time_ms(lambda: selective_scan_fn(*inputs, delta_softplus=True))
    return {"dtype": _name(dtype), "batch": batch, "mamba_ssm_ms": ms}


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _config_name(config) -> str:
    return f"d{config.block_d}-l{config.block_l}-w{config.num_warps}"


def markdown(result: dict) -> str:
    lines = [
        f"### Triton selective scan, {result['device']} (torch {result['torch']}, triton {result['triton']})",
        "",
        f"Shape batch {result['batch']}, Di {SHAPE['Di']}, L {SHAPE['L']}, N {SHAPE['N']}, softplus, D, z. "
        f"Copy bandwidth {result['copy_GBps']:.0f} GB/s (read + write).",
        "",
        "| config | dtype | ms | GB/s | x memory floor | regs | spills |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["configs"]:
        if "ms" not in row:
            lines.append(
                f"| {row['config']} | {row['dtype']} | {row.get('error') or row.get('skipped')} | | | | |"
            )
            continue
        lines.append(
            f"| {row['config']} | {row['dtype']} | {row['ms']:.3f} | {row['GBps']:.0f} | "
            f"{row['x_floor']:.2f} | {row.get('regs', '')} | {row.get('spills', '')} |"
        )
    lines += [
        "",
        "| BiMamba scans | dtype | one launch ms | two calls ms | two calls + input flips ms | speedup | rel diff |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["bidirectional"]:
        if "fused_ms" not in row:
            lines.append(
                f"| bidirectional | {row['dtype']} | {row.get('error') or row.get('skipped')} | | | | |"
            )
            continue
        lines.append(
            f"| bidirectional | {row['dtype']} | {row['fused_ms']:.3f} | {row['two_calls_ms']:.3f} | "
            f"{row['two_calls_with_flips_ms']:.3f} | {row['speedup_vs_two_calls']:.2f}x / "
            f"{row['speedup_vs_two_calls_with_flips']:.2f}x | {row['max_rel_diff']:.1e} |"
        )
    for row in result.get("mamba_ssm") or []:
        lines.append(f"\nmamba-ssm selective_scan_fn, {row['dtype']}: {row['mamba_ssm_ms']:.3f} ms")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write all numbers here")
    parser.add_argument("--markdown", type=Path, help="write the tables here")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--budget-s", type=float, default=150.0, help="skip what would start after this")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shape, TRITON_INTERPRET=1")
    args = parser.parse_args(argv)
    global DEVICE
    if args.dry_run:
        DEVICE = "cpu"
        SHAPE.update(Di=8, L=20)
    elif not torch.cuda.is_available():
        print("no CUDA GPU: nothing to time", file=sys.stderr)
        return 2
    import triton

    deadline = time.monotonic() + args.budget_s
    dtypes = [getattr(torch, name) for name in args.dtypes.split(",")]
    copy_gbps = copy_bandwidth_gbps()
    result = {
        "device": torch.cuda.get_device_name() if DEVICE == "cuda" else "CPU (dry run, interpreter)",
        "torch": torch.__version__,
        "triton": triton.__version__,
        "batch": args.batch,
        "copy_GBps": copy_gbps,
        "configs": [],
        "bidirectional": [],
        "mamba_ssm": [],
    }
    print(f"copy bandwidth {copy_gbps:.0f} GB/s", flush=True)
    # Most wanted first, results saved after each phase: a cut-short run still leaves them.
    for dtype in dtypes:
        result["configs"] += sweep_configs(args.batch, dtype, copy_gbps, deadline, [None])
    _save(result, args)
    for dtype in dtypes:
        try:
            result["bidirectional"].append(bidirectional(args.batch, dtype, deadline))
        except Exception as error:
            result["bidirectional"].append({"dtype": _name(dtype), "error": repr(error)[:300]})
        peer = mamba_peer(args.batch, dtype)
        if peer:
            result["mamba_ssm"].append(peer)
    _save(result, args)
    for dtype in dtypes:
        result["configs"] += sweep_configs(args.batch, dtype, copy_gbps, deadline, CANDIDATE_CONFIGS)
        _save(result, args)
    print(markdown(result))
    return 0


def _save(result: dict, args) -> None:
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if args.markdown:
        args.markdown.write_text(markdown(result))


if __name__ == "__main__":
    sys.exit(main())
