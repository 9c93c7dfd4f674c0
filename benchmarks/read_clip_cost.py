"""CPU seconds ``read_clip`` takes a video in whichever checkout Python imports (medians), to compare
checkouts in separate processes:

    PYTHONPATH=/path/to/old/checkout python benchmarks/read_clip_cost.py VIDEO...
    python benchmarks/read_clip_cost.py --reference VIDEO...     # this checkout's read_clip_reference

Prints the reader's file, and the median over ``--repeats`` reads of each video (process CPU time).
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("videos", nargs="+")
    parser.add_argument(
        "--reference", action="store_true", help="read_clip_reference (the old reader's twin)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from muse_infer.video import reader
    from muse_infer.video.frames import FrameSettings

    read = reader.read_clip_reference if args.reference else reader.read_clip
    settings = FrameSettings()
    read(args.videos[0], settings)  # warm-up: imports, first allocations
    costs = []
    for _ in range(args.repeats):
        for path in args.videos:
            started = time.process_time()
            read(path, settings)
            costs.append(time.process_time() - started)
    name = "read_clip_reference" if args.reference else "read_clip"
    print(f"{reader.__file__} {name}: {statistics.median(costs):.4f} CPU s a video (median of {len(costs)})")


if __name__ == "__main__":
    main()
