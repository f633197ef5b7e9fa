"""Benchmark (issue 25): `robench list` against `python -c "import torch"` on the same machine, in one run.

`robench list` used to import every plugin (and with them torch and timm) before its first line;
it now answers from a cache of what the plugins said (robench/cli/listing.py) and imports them only
when they changed. Issue 25 asks it to be faster than importing torch. Each command runs ROUNDS
times as a fresh process, alternating, after one listing that fills the cache; medians are printed.

    python bench/list_speed.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

ROUNDS = 5
COMMANDS = {"robench list": [sys.executable, "-m", "robench", "list"], "import torch": [sys.executable, "-c", "import torch"]}


def seconds(command: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        env = os.environ | {"ROBENCH_CACHE_DIR": cache}
        first = seconds(COMMANDS["robench list"], env)  # fills the cache: the plugins are imported once
        times = {name: [] for name in COMMANDS}
        for _ in range(ROUNDS):
            for name, command in COMMANDS.items():
                times[name].append(seconds(command, env))
    median = {name: statistics.median(found) for name, found in times.items()}
    print(f"first robench list (fills the cache): {first:.2f} s")
    for name, found in times.items():
        print(f"{name}: median {median[name]:.2f} s over {ROUNDS} runs ({', '.join(f'{t:.2f}' for t in found)})")
    ratio = median["robench list"] / median["import torch"]
    print(f"robench list / import torch: {ratio:.2f} ({'met' if ratio < 1 else 'not met'}: issue 25 asks < 1)")


if __name__ == "__main__":
    main()
