"""``python -m robench.cli``: the `robench` command, for a process that has no script on its PATH."""

import sys

from robench.cli import main

sys.exit(main())
