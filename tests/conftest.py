"""Shared test settings: CPU-only, deterministic, few threads (CI has 2 cores)."""

import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


HOOKS = os.path.join(os.path.dirname(__file__), "hooks")


def hang_env(rules: str) -> dict:
    """Environment variables that make reading the files matching ``rules`` ("PATTERN=SECONDS;...")
    hang, in this process's children (decode workers included): see tests/hooks/sitecustomize.py."""
    path = os.pathsep.join(filter(None, [HOOKS, os.environ.get("PYTHONPATH")]))
    return {"MUSE_TEST_HANG": rules, "PYTHONPATH": path}
