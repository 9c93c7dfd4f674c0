"""The C++ scan kernel must be built and load: a missing or broken kernel fails the suite, loudly.

Without this, a kernel that does not load (an ABI mismatch after a torch upgrade, a failed build) would
only make the kernel's own tests skip and everything else fall back to the slow reference: green CI
with no kernel. ``MUSE_ALLOW_NO_KERNEL=1`` is the deliberate opt-out (e.g. a build with
``MUSE_SKIP_CPP_BUILD=1`` on a platform without a compiler).
"""

import importlib
import os

import pytest


def test_the_cpu_scan_kernel_is_built_and_loads():
    if os.environ.get("MUSE_ALLOW_NO_KERNEL") == "1":
        pytest.skip("MUSE_ALLOW_NO_KERNEL=1: running without the C++ kernel on purpose")
    try:
        importlib.import_module("muse_infer._C")
    except (ImportError, OSError) as error:
        pytest.fail(
            f"the C++ scan kernel muse_infer._C did not load ({type(error).__name__}: {error}); rebuild it "
            "against the installed torch: pip install --no-build-isolation -e ."
        )
    from muse_infer.ops.op import cpu_kernel_isa, op_available

    assert op_available("cpu")
    assert cpu_kernel_isa() in ("avx512", "avx2", "baseline")
