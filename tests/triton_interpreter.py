"""Running the Triton scan kernels on CPU tensors, through Triton's interpreter, from a pytest process.

Triton's interpreter runs a kernel on CPU tensors only in a process that first imported triton with
TRITON_INTERPRET=1 (Triton reads the variable when its library and the kernels are decorated). So a
test file runs its interpreter cases in ONE subprocess: the file itself as a script with
``--worker OUT [PAYLOAD]`` and the variable set; the pytest process's own triton stays compiled, so
GPU tests are unaffected. A pytest process started with TRITON_INTERPRET=1 may run them in-process.

The interpreter's generic scan calls the combine function once per element; ``speed_up_interpreter``
swaps in one call per time step (the same combine, applied in the same order along the axis), ~20x
faster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")
WORKER_TIMEOUT_S = 900


def _scan_by_steps(self, input):
    """Stand-in for the interpreter's ScanOps.generic_scan: one combine call per step along the axis."""
    import numpy as np

    axis = self.axis
    data = [arg.handle.data for arg in input]
    dtypes = [arg.dtype for arg in input]
    outs = [np.empty_like(d) for d in data]
    acc = None
    for i in range(data[0].shape[axis]):
        step = tuple(self.to_tensor(np.take(d, i, axis=axis), dt) for d, dt in zip(data, dtypes, strict=True))
        if acc is None:
            acc = step
        else:
            ret = self.combine_fn.fn(*acc, *step)
            acc = ret if isinstance(ret, tuple) else (ret,)
        for out, value in zip(outs, acc, strict=True):
            index = [slice(None)] * out.ndim
            index[axis] = i
            out[tuple(index)] = value.handle.data
    return [self.to_tensor(out, dt) for out, dt in zip(outs, dtypes, strict=True)]


def speed_up_interpreter() -> None:
    """Patch the interpreter's scan (see the module docstring) and use at most 2 torch threads."""
    from triton.runtime import interpreter

    interpreter.ScanOps.generic_scan = _scan_by_steps  # reverse=True flips around it, as before
    torch.set_num_threads(min(2, os.cpu_count() or 1))


def run_worker(script: str | Path, payload: object = None, timeout_s: float = WORKER_TIMEOUT_S) -> dict:
    """Run ``script --worker OUT [PAYLOAD.json]`` with TRITON_INTERPRET=1 and no GPU; its JSON result.

    ``payload`` (JSON-able) reaches the worker as a file. Raises RuntimeError with the worker's output
    when it fails or runs past ``timeout_s``.
    """
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as tmp:
        path, extra = Path(tmp) / "results.json", []
        if payload is not None:
            extra = [str(Path(tmp) / "payload.json")]
            Path(extra[0]).write_text(json.dumps(payload))
        command = [sys.executable, str(script), "--worker", str(path), *extra]
        try:
            proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"interpreter worker {Path(script).name} ran past {timeout_s:.0f} s") from None
        if proc.returncode != 0 or not path.exists():
            raise RuntimeError(
                f"interpreter worker failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return json.loads(path.read_text())
