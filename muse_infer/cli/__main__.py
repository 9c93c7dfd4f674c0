"""`python -m muse_infer.cli`: the `muse-infer` command."""

import sys

from muse_infer.cli import main

sys.exit(main())
