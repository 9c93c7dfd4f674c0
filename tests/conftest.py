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


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    """Synthetic videos under awkward names, encoded with the packaged demo model (tests/web_corpus.py)."""
    from web_corpus import build_demo_corpus

    return build_demo_corpus(tmp_path_factory.mktemp("demo-corpus"))


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (tests/chromium.py); skipped when it is not installed, unless
    MUSE_REQUIRE_CHROMIUM=1 (CI) makes that a failure."""
    from chromium import Browser, find_chromium

    if find_chromium() is None:
        reason = "needs chromium (apt-get install chromium; .ci/run installs it)"
        if os.environ.get("MUSE_REQUIRE_CHROMIUM") == "1":
            pytest.fail(reason + ", and MUSE_REQUIRE_CHROMIUM=1 is set")
        pytest.skip(reason)
    with Browser() as instance:
        yield instance
