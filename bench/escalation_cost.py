"""What escalation (robench/pipeline/escalation.py) costs, as a share of a run's attack sweep (issue 21).

    python bench/escalation_cost.py RUN_FOLDER

Reads the run's rows: per model, the seconds its configured attacks took (each attack's sweep
over every eps is timed once, robench.pipeline.evaluate.attack_sweep) and the seconds its escalation took
at each eps, measured in the same process one after the other, and prints escalation's time as a
share of the sweep's, with how many survivors it was given and fooled. The run's own command is
the setting; the figures are whole-run timings, so compare them on one host, not across hosts.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from robench.attack import CLEAN, ESCALATION  # noqa: E402
from robench.core import results  # noqa: E402


def shares(frame):
    """Per (strategy, seed): (sweep seconds, escalation seconds, survivors given, fooled)."""
    ok = frame[(frame["status"] == "ok") & (frame["attack"] != CLEAN)]
    found = {}
    for (strategy, seed), model in ok.groupby(["strategy", "seed"], sort=False):
        escalation = model[model["attack_family"] == ESCALATION]
        attacks = model[model["attack_family"] != ESCALATION].drop_duplicates("attack")  # one sweep per attack
        found[(strategy, seed)] = (float(attacks["attack_seconds"].sum()), float(escalation["attack_seconds"].sum()),
                                   int(escalation["escalated"].fillna(0).sum()),
                                   int(escalation["escalation_fooled"].fillna(0).sum()))
    return found


def main() -> None:
    run = Path(sys.argv[1])
    total_sweep = total_escalation = 0.0
    for (strategy, seed), (sweep, escalation, given, fooled) in shares(results.read_frame(run)).items():
        total_sweep, total_escalation = total_sweep + sweep, total_escalation + escalation
        share = escalation / sweep if sweep else float("nan")
        print(f"{strategy} seed {seed}: attacks {sweep:.1f} s, escalation {escalation:.1f} s ({100 * share:.0f}% of the "
              f"attacks), {fooled} of {given} survivors fooled")
    if total_sweep:
        print(f"all models: escalation {total_escalation:.1f} s = {100 * total_escalation / total_sweep:.0f}% of the "
              f"attacks' {total_sweep:.1f} s")


if __name__ == "__main__":
    main()
