"""Sanity checks of a run's numbers, computed from its results and shown as flags on its leaderboard.

A robustness number is only as good as the attack behind it. Each check below catches a way a
published table goes wrong (Carlini et al., "On Evaluating Adversarial Robustness", arXiv
1902.06705; FIELD_NOTES.md); a check that fires marks the strategy's row with a short flag and
explains it, with the numbers that set it off, under the table.

Attack comparisons use the mean robust accuracy over the seeds that both sides have. The models
and the attacked images are the same on both sides, so training noise cancels; what remains is
the attacks' own randomness (random starts, random search), and an iterative attack may lose a
borderline image or two to a single-step one because it maximises the loss, not the error. So a
comparison fires only past TOLERANCE or one attacked image, whichever is larger: the seed study's
rise of 3.4 points (VPT p=50, FGSM from eps 0.01 to 0.02) clears it by far.

Attacks are compared only with attacks of the same norm (robench.attack.NORMS): an L2 and an
L-inf attack at "eps 0.5" attack different balls, and either may rightly leave more images correct.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from robench.attack import CLEAN, ESCALATION, FAMILIES
from robench.core.metrics import eps_label
from robench.core.results import attack_norms
from robench.report import flags_per_image as per_image
from robench.report.flags_per_image import FEW_IMAGES, SAME_NORM, Flag, at  # noqa: F401  (Flag, FEW_IMAGES: this module's API)

TOLERANCE = 0.005  # half a percentage point of mean robust accuracy
NEAR_CHANCE = 0.05  # balanced accuracy within 5 points of 1 / n_classes

# flag -> what it means, in the order they are listed
CHECKS = {
    "eps0-not-clean": "at eps = 0 the attack changed the accuracy of the clean images: the evaluation "
    "itself is broken (an attack must return its input at eps 0)",
    "rises-with-eps": "robust accuracy rises with eps: the attack is weak or masked at the larger eps, "
    "so trust none of that curve's numbers (they are upper bounds at best)",
    "family-order": "an attack of a stronger family (single-step < iterative < ensemble) is weaker than "
    "one of a weaker family at the same eps in the same norm: the stronger attack is misconfigured or the "
    "gradients are masked",
    "weaker-per-image": "an attack left more than a few images correct that another attack of the same or a "
    "weaker family fooled at the same eps in the same norm on the same model (per image, e.g. PGD on "
    "cross-entropy against PGD on the margin): its column overstates robustness; the worst-case column does not",
    "minimal-too-weak": "the minimal attack's curve says more than a few images survive an eps at which a "
    "fixed-eps attack of its norm fooled them: its eps* are too large there, and its curve and median overstate "
    "robustness (the reverse, a fixed-eps attack missing what the minimal one found, is expected and not flagged)",
    "bf16-weaker": "an attack computed in bf16 left more than a few images correct that its fp32 twin "
    "(the same attack in fp32, ``--attack-precision fp32,bf16``) fooled at the same eps on the same model: "
    "bf16's rounding masks the gradient there, so trust the fp32 column, not the bf16 one",
    "escalation-moved": "escalation (stronger PGD and APGD on what every attack left correct) fooled more than one image "
    "the configured attacks' worst case counted as robust: they are too weak there; trust the worst-case column",
    "black-box-wins": "a black-box attack, which never reads gradients, beats every white-box attack at the "
    "same eps in the same norm: the mark of gradient masking; the white-box numbers overstate robustness",
    "transfer-fools-survivors": "a transfer attack, crafted on another model without this one's gradients, fooled "
    "more than a few images that every white-box attack at the same eps left correct on this model: the white-box "
    "attacks are too weak there (or the gradients masked); the worst-case column counts those images as fooled",
    "below-majority": "clean accuracy at or below the majority-class baseline (always answering the most "
    "frequent class): the model collapsed to that class if its balanced accuracy is near chance too, "
    "else class weighting traded accuracy for balanced accuracy; robust accuracy of a collapsed model "
    "says nothing about robustness",
    "near-chance": "balanced accuracy near chance (1 / number of classes): the model has learned "
    "(almost) nothing, whatever its accuracy",
}


def check(frame: pd.DataFrame, n_classes: int | None = None, labels=None) -> list[Flag]:
    """Every flag of a results frame (``robench.core.results.read_frame``); failed rows are ignored.

    Family and black-box checks need the rows' ``attack_family`` and ``attack_black_box``, and
    compare attacks of one ``attack_norm`` only (a row without one is L-inf);
    the near-chance check needs ``n_classes``, the per-image check the attacked images'
    ``labels`` (config.json's ``attacked``). Without them those checks are skipped.
    """
    ok = frame[frame["status"] == "ok"]
    cells = ok[ok["attack"] != CLEAN].drop_duplicates(["strategy", "seed", "attack", "eps"], keep="last")
    cells = cells.assign(norm_=attack_norms(cells))
    models = ok.drop_duplicates(["strategy", "seed"], keep="last")
    # An escalation row is the worst case again: only the minimal attack's check and its own compare it.
    plain = cells[cells["attack_family"] != ESCALATION] if "attack_family" in cells else cells
    found = [
        *_eps_zero(plain),
        *_rises_with_eps(plain),
        *_family_order(plain),
        *per_image.weaker_per_image(plain, labels),
        *per_image.minimal_too_weak(cells, labels),
        *per_image.bf16_weaker(plain, labels),
        *(_escalation_moved(cells) if "escalation_fooled" in cells else ()),
        *_black_box_wins(plain),
        *per_image.transfer_fools_survivors(cells, labels),
        *_collapse(models, n_classes),
    ]
    order = list(CHECKS)
    return sorted(found, key=lambda flag: order.index(flag.check))


def annotate(flags: list[Flag]) -> tuple[dict[str, str], list[str]]:
    """Per-strategy notes (the flags' names) and the footnotes that explain them, for the leaderboard."""
    notes: dict[str, list[str]] = {}
    for flag in flags:
        names = notes.setdefault(flag.strategy, [])
        if flag.check not in names:
            names.append(flag.check)
    if not flags:
        return {}, [f"Sanity checks (robench/report/flags.py; {', '.join(CHECKS)}): none fired."]
    footnotes = ["Sanity flags (robench/report/flags.py), shown in the notes column:"]
    for name, meaning in CHECKS.items():
        seen: dict[str, list[str]] = {}
        for flag in flags:
            if flag.check == name:
                seen.setdefault(flag.strategy, []).append(flag.detail)
        if seen:
            where = "; ".join(f"{strategy}: {', '.join(details)}" for strategy, details in seen.items())
            footnotes.append(f"- `{name}`: {meaning}. Seen: {where}.")
    return {strategy: ", ".join(names) for strategy, names in notes.items()}, ["\n".join(footnotes)]


# ---------------------------------------------------------------- the checks


def _eps_zero(cells: pd.DataFrame) -> Iterator[Flag]:
    """At eps 0 an attack returns its input: robust accuracy equals clean accuracy on the attacked images."""
    for row in cells[cells["eps"] == 0].itertuples(index=False):
        clean = row.attack_clean_acc if pd.notna(row.attack_clean_acc) else row.clean_acc
        if abs(row.robust_acc - clean) > 1e-9:
            yield Flag("eps0-not-clean", row.strategy,
                       f"{row.attack} seed {row.seed} {_pct(row.robust_acc)} at eps 0, clean {_pct(clean)}")


def _rises_with_eps(cells: pd.DataFrame) -> Iterator[Flag]:
    for (strategy, attack), curve in cells.groupby(["strategy", "attack"], sort=False):
        table = curve.pivot(index="seed", columns="eps", values="robust_acc").dropna()  # seeds with every eps
        if table.empty:
            continue
        means, tolerance = table.mean(), _tolerance(curve)
        lowest = None  # (eps, mean) of the lowest point at a smaller eps
        for eps, mean in means.sort_index().items():
            if lowest is not None and mean > lowest[1] + tolerance:
                yield Flag("rises-with-eps", strategy,
                           f"{attack} {_pct(lowest[1])} at eps {eps_label(lowest[0])} -> {_pct(mean)} at eps {eps_label(eps)}")
            if lowest is None or mean < lowest[1]:
                lowest = (eps, mean)


def _family_order(cells: pd.DataFrame) -> Iterator[Flag]:
    white = cells[(cells["attack_black_box"] == False) & cells["attack_family"].isin(FAMILIES)]  # noqa: E712
    rank = {attack: FAMILIES.index(family) for attack, family in zip(white["attack"], white["attack_family"])}
    for (strategy, eps, norm), group in white.groupby(SAME_NORM, sort=False):
        for weak, strong, weak_mean, strong_mean, tolerance in _pairs(group):
            if rank[weak] < rank[strong] and strong_mean > weak_mean + tolerance:
                yield Flag("family-order", strategy,
                           f"{strong} ({FAMILIES[rank[strong]]}) {_pct(strong_mean)} > {weak} "
                           f"({FAMILIES[rank[weak]]}) {_pct(weak_mean)} at {at(eps, norm)}")


def _escalation_moved(cells: pd.DataFrame) -> Iterator[Flag]:
    """Escalation fooled more than one survivor of the configured attacks on one model at one eps."""
    moved = cells[(cells["attack_family"] == ESCALATION) & (cells["escalation_fooled"].fillna(0) > 1)]
    for row in moved.itertuples(index=False):
        yield Flag("escalation-moved", row.strategy,
                   f"{row.attack} fooled {int(row.escalation_fooled)} of the {int(row.escalated)} images the attacks left "
                   f"correct at {at(row.eps, row.attack_norm or 'Linf')} (seed {row.seed})")


def _black_box_wins(cells: pd.DataFrame) -> Iterator[Flag]:
    known = cells[cells["attack_black_box"].isin([True, False])]
    for (strategy, eps, norm), group in known.groupby(SAME_NORM, sort=False):
        # per model: a transfer attack crafted on this very model is white box here, black box elsewhere
        black = set(group.loc[group["attack_black_box"] == True, "attack"])  # noqa: E712
        best = {}  # black-box attack -> the strongest white-box attack it is compared with
        for a, b, mean_a, mean_b, tolerance in _pairs(group):
            if a in black and b not in black:
                if a not in best or mean_b < best[a][1]:
                    best[a] = (b, mean_b, mean_a, tolerance)
        for attack, (white, white_mean, black_mean, tolerance) in best.items():
            if black_mean < white_mean - tolerance:
                yield Flag("black-box-wins", strategy,
                           f"{attack} {_pct(black_mean)} < {white} {_pct(white_mean)} at {at(eps, norm)}")


def _collapse(models: pd.DataFrame, n_classes: int | None) -> Iterator[Flag]:
    for row in models.itertuples(index=False):
        if pd.notna(row.majority_acc) and row.clean_acc <= row.majority_acc + 1e-9:
            yield Flag("below-majority", row.strategy,
                       f"seed {row.seed} accuracy {_pct(row.clean_acc)}, majority class {_pct(row.majority_acc)}")
        if n_classes and row.clean_bacc <= 1 / n_classes + NEAR_CHANCE:
            yield Flag("near-chance", row.strategy,
                       f"seed {row.seed} balanced accuracy {_pct(row.clean_bacc)}, chance {_pct(1 / n_classes)}")


# ---------------------------------------------------------------- helpers


def _pairs(group: pd.DataFrame) -> Iterator[tuple[str, str, float, float, float]]:
    """Every ordered pair of attacks in one (strategy, eps) group: their mean robust accuracies
    over the seeds both have, and the tolerance of the comparison."""
    table = group.pivot(index="seed", columns="attack", values="robust_acc")
    tolerance = _tolerance(group)
    values = table.to_numpy(dtype=float)  # numpy, not a DataFrame per pair: a page has thousands of pairs
    present = ~np.isnan(values)
    for i, a in enumerate(table.columns):
        for j, b in enumerate(table.columns):
            both = present[:, i] & present[:, j]
            if a != b and both.any():
                yield a, b, values[both, i].mean(), values[both, j].mean(), tolerance


def _tolerance(rows: pd.DataFrame) -> float:
    """TOLERANCE, or one image of the smallest attacked set when that is larger."""
    sizes = rows["n_attacked"].fillna(rows["n_test"]).dropna()
    return max(TOLERANCE, 1 / sizes.min()) if len(sizes) and sizes.min() > 0 else TOLERANCE


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"
