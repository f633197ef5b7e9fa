"""``python -m robench``: the `robench` command, for an environment whose scripts are not on the PATH."""

import sys

from robench.cli import main

sys.exit(main())
