"""The page's transfer matrix: each model (rows) under the examples crafted on each surrogate (columns).

For a parameter-efficient strategy the public backbone is the attacker's natural surrogate, so the
column ``pretrained`` is the grey-box threat; a column named after a strategy says how well that
model's examples carry over to the others. A cell is the robust accuracy over all attacked images
with the same 95% interval as every robust accuracy (robench.report.uncertainty); a cell crafted on
the model itself is a white-box PGD, marked. The paired tests of the main table compare strategies
under each transfer column too.
"""

from __future__ import annotations

import pandas as pd

from robench.attack import TRANSFER
from robench.core.metrics import eps_label

WHITE_BOX = " (w)"  # a cell crafted on the model itself


def section(board, markdown) -> str | None:
    """One matrix per eps of the run's transfer rows; None where it has none."""
    frame = board.frame
    if "attack_family" not in frame or "attack_source" not in frame:
        return None
    rows = frame[(frame["attack_family"] == TRANSFER) & (frame["status"] == "ok")]
    if rows.empty:
        return None
    attacks = list(dict.fromkeys(rows["attack"]))
    sources = rows.drop_duplicates("attack").set_index("attack")["attack_source"]
    repeated = sources.duplicated(keep=False)
    headers = {a: a if repeated[a] else f"from {sources[a]}" for a in attacks}
    white = {(r.strategy, r.attack) for r in rows.itertuples(index=False) if r.attack_black_box == False}  # noqa: E712  (None: unknown)
    parts = ["## Transfer attacks"]
    for eps in sorted(rows["eps"].unique()):
        table = {"target": list(board.strategies)}
        for attack in attacks:
            table[headers[attack]] = [board.robust_cell(s, "robust_acc", attack, eps) + (WHITE_BOX if (s, attack) in white else "")
                                      for s in board.strategies]
        parts += [f"At eps {eps_label(eps)}:", markdown(pd.DataFrame(table))]
    parts.append(
        "Robust accuracy in % over all attacked images, mean [95% interval] over seeds and images, of each model "
        "(rows) under L-inf PGD crafted on a surrogate (columns) without the model's weights: `from pretrained` is the "
        "public backbone with a linear head trained on the training split (the grey-box threat of a "
        "parameter-efficient strategy), `from STRATEGY` that strategy's model of the same seed. "
        f"`{WHITE_BOX.strip()}`: crafted on the model itself, a white-box attack. Each image's examples are the same for "
        "every model (robench/pipeline/transfer.py); the transfer rows enter the worst case, and a transfer attack that "
        "fools images every white-box attack left correct is flagged `transfer-fools-survivors`.")
    return "\n\n".join(parts)
