"""What the kernel says of this CPU (Linux's /proc/cpuinfo): its vendor and instruction-set flags.

The one reader of that file: ``runtime.precision`` asks it for native bf16 ("auto" precision),
``ops.winograd`` for an Intel CPU with AVX-512 (fp32 by Winograd). Light: imports nothing.
"""

from __future__ import annotations

import functools

CPUINFO = "/proc/cpuinfo"


@functools.cache
def cpu_description(cpuinfo: str = CPUINFO) -> tuple[str, frozenset[str]]:
    """(vendor, flags) of the first processor ``cpuinfo`` lists, e.g. ("GenuineIntel", {"avx512f", ...});
    ("", frozenset()) where there is no such file (macOS, Windows) or it names neither."""
    vendor, flags = "", frozenset()
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("vendor_id"):
                    vendor = line.partition(":")[2].strip()
                elif line.startswith("flags"):
                    flags = frozenset(line.partition(":")[2].split())
                    break
    except OSError:
        pass
    return vendor, flags
