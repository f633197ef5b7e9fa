"""The per-image sanity checks of robench.report.flags: an attack that left images correct which
another attack fooled, on the same model at the same eps in the same norm.

They read each row's per-image answers (``adv_pred``) against the attacked images' labels, so they
see what a comparison of mean accuracies hides: two attacks can keep the same share of images and
keep different ones. Each yields robench.report.flags' ``Flag``; its names and meanings are in
``flags.CHECKS``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from robench.attack import FAMILIES, MINIMAL, TRANSFER
from robench.core.metrics import eps_label
from robench.core.names import BF16_TWIN
from robench.report.worst_case import survived

FEW_IMAGES = 2  # per-image check: more images than this left correct that another attack fooled
SAME_NORM = ["strategy", "eps", "norm_"]  # the groups attacks are compared within


@dataclass(frozen=True)
class Flag:
    check: str  # a key of CHECKS
    strategy: str
    detail: str  # the numbers that set it off, e.g. "pgd 19.07% at eps 0.01 -> 33.22% at eps 0.02"


def weaker_per_image(cells: pd.DataFrame, labels) -> Iterator[Flag]:
    """Attack A left correct, on average over the seeds both ran, more than FEW_IMAGES images that
    attack B fooled, where B's family is A's or a weaker one (a single-step attack losing to an
    iterative one is expected, not flagged; black-box attacks are gradient-masking probes, not
    flagged either)."""
    if labels is None or "adv_pred" not in cells:
        return
    white = cells[(cells["attack_black_box"] == False) & cells["attack_family"].isin(FAMILIES)]  # noqa: E712
    rank = {attack: FAMILIES.index(family) for attack, family in zip(white["attack"], white["attack_family"])}
    for (strategy, eps, norm), group, alive in _survival_groups(white, labels):
        attacks = list(dict.fromkeys(group["attack"]))
        for a in attacks:
            for b in attacks:
                if a == b or rank[b] > rank[a] or _twins(a, b):
                    continue
                if found := _kept_what_another_fooled(alive, a, b, eps, norm):
                    yield Flag("weaker-per-image", strategy, found)


def minimal_too_weak(cells: pd.DataFrame, labels) -> Iterator[Flag]:
    """A minimal attack left correct at an eps, on average over the seeds, more than FEW_IMAGES images
    that a fixed-eps attack of its norm (any family, white or black box) fooled at that eps on that model."""
    if labels is None or "adv_pred" not in cells:
        return
    for (strategy, eps, norm), group, alive in _survival_groups(cells, labels):
        families = dict(zip(group["attack"], group["attack_family"]))
        for a in [attack for attack, family in families.items() if family == MINIMAL]:
            for b in [attack for attack, family in families.items() if family != MINIMAL]:
                if found := _kept_what_another_fooled(alive, a, b, eps, norm):
                    yield Flag("minimal-too-weak", strategy, found)


def bf16_weaker(cells: pd.DataFrame, labels) -> Iterator[Flag]:
    """A bf16 attack left correct, on average over the seeds, more than FEW_IMAGES images that its
    fp32 twin fooled at that eps on that model."""
    if labels is None or "adv_pred" not in cells:
        return
    if not cells["attack"].str.endswith(BF16_TWIN).any():
        return
    for (strategy, eps, norm), group, alive in _survival_groups(cells, labels):
        present = set(group["attack"])
        for twin in [attack for attack in present if attack.endswith(BF16_TWIN)]:
            fp32 = twin.removesuffix(BF16_TWIN)
            if fp32 in present and (found := _kept_what_another_fooled(alive, twin, fp32, eps, norm)):
                yield Flag("bf16-weaker", strategy, found)


def _survival_groups(cells: pd.DataFrame, labels) -> Iterator[tuple[tuple, pd.DataFrame, dict]]:
    """Per (strategy, eps, norm): its cells that have per-image records, and (attack, seed) -> the
    survival of each attacked image, which the per-image checks compare."""
    cells = cells.assign(alive_=survived(cells, labels))
    cells = cells[cells["alive_"].notna()]
    for key, group in cells.groupby(SAME_NORM, sort=False):
        yield key, group, {(row.attack, row.seed): row.alive_ for row in group.itertuples(index=False)}


def _twins(a: str, b: str) -> bool:
    """Whether two attacks are one attack in bf16 and fp32 (compared by _bf16_weaker alone)."""
    return a == b + BF16_TWIN or b == a + BF16_TWIN


def _kept_what_another_fooled(alive: dict, a: str, b: str, eps: float, norm: str) -> str | None:
    """The flag's detail when attack ``a`` left correct more than FEW_IMAGES images (mean over the seeds
    both ran) that attack ``b`` fooled; ``alive`` maps (attack, seed) to per-image survival."""
    counts = [int((alive[(a, seed)] & ~alive[(b, seed)]).sum()) for (attack, seed) in alive
              if attack == a and (b, seed) in alive]
    if not counts or sum(counts) / len(counts) <= FEW_IMAGES:
        return None
    return (f"{a} left {sum(counts) / len(counts):.1f} images correct that {b} fooled at {at(eps, norm)} "
            f"(mean over {len(counts)} seed(s))")


def transfer_fools_survivors(cells: pd.DataFrame, labels) -> Iterator[Flag]:
    """A black-box transfer row fooled, on average over the seeds, more than FEW_IMAGES images that
    survived every white-box attack (escalation included) at that eps on that model."""
    if labels is None or "adv_pred" not in cells or "attack_family" not in cells:
        return
    for (strategy, eps, norm), group, alive in _survival_groups(cells, labels):
        white = set(group.loc[(group["attack_black_box"] == False) & (group["attack_family"] != MINIMAL), "attack"])  # noqa: E712
        transfers = group.loc[(group["attack_black_box"] == True) & (group["attack_family"] == TRANSFER), "attack"]  # noqa: E712
        for attack in dict.fromkeys(transfers):
            counts = []
            for seed in [seed for (a, seed) in alive if a == attack]:
                kept = [alive[(w, seed)] for w in white if (w, seed) in alive]
                if kept:
                    counts.append(int((np.logical_and.reduce(kept) & ~alive[(attack, seed)]).sum()))
            if counts and sum(counts) / len(counts) > FEW_IMAGES:
                yield Flag("transfer-fools-survivors", strategy,
                           f"{attack} fooled {sum(counts) / len(counts):.1f} images every white-box attack left correct at "
                           f"{at(eps, norm)} (mean over {len(counts)} seed(s))")


def at(eps: float, norm: str) -> str:
    """``eps 0.01`` for L-inf, as flags always read; ``eps 0.5 in L2`` for another norm."""
    return f"eps {eps_label(eps)}" + ("" if norm == "Linf" else f" in {norm}")
