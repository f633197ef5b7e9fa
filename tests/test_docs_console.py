"""docs/writing-plugins.md's console sessions give, run today, the outputs the page shows.

The tutorial's example plugins are installed as a reader installs them (tests/test_example_plugin.py),
every robench, ls and grep command of the page runs in one folder in the page's order, and its
output must equal the page's, wall times aside (tests/doc_console.py). When robench changes what a
command prints, `ROBENCH_UPDATE_DOCS=1 pytest -m slow tests/test_docs_console.py` writes the new
outputs into the page; the prose around them is then read again by a person.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.doc_console import normalised, rewrite, sessions
from tests.test_example_plugin import installed  # noqa: F401  (the fixture: the examples, pip-installed)

PAGE = REPO / "docs" / "writing-plugins.md"
FOLDER = "/tmp/tutorial"  # where the page's commands ran, as it shows them


@pytest.mark.slow  # installs three packages and trains about 14 tiny models: minutes
def test_the_writing_plugins_page_shows_what_its_commands_print(installed, tmp_path):  # noqa: F811
    env = installed | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "200"}
    env.pop("ROBENCH_QUIET", None)  # the page shows the progress lines a reader sees
    differ, outputs = [], {}
    for command in sessions(PAGE):
        if not command.compared:
            continue
        done = subprocess.run(["bash", "-c", command.text], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=900)
        # the page's folder is /tmp/tutorial; ETA lines come at most every 30 s, as fast as the machine is
        printed = [line.replace(str(tmp_path), FOLDER) for line in done.stdout.splitlines() if "ETA" not in line]
        outputs[command.line] = printed
        if normalised(printed) != normalised(command.output):
            differ.append(f"line {command.line + 1}: $ {command.text}\n  page: {command.output[:4]}\n  now:  {printed[:4]}")
    if os.environ.get("ROBENCH_UPDATE_DOCS") == "1":
        rewrite(PAGE, outputs)
        return
    assert not differ, f"{len(differ)} outputs of {PAGE.name} are not what robench prints now:\n" + "\n".join(differ)
