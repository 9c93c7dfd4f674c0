"""`python -m muse_infer` runs the `muse-infer` command line."""

from muse_infer.cli import main

main()
