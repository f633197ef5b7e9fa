"""Sanity flags: each fires on a hand-built case, with its numbers, and stays silent on a healthy run."""

from __future__ import annotations

import pandas as pd
import pytest

from robench.core.results import ROW_FIELDS, append_row, write_config
from robench.report import flags, leaderboard

N = 200  # attacked images: one image is 0.5 points, the same as flags.TOLERANCE
MAJORITY = 0.67
# attack -> (family, black box, survival per 0.01 of eps): PGD and AutoAttack stronger than FGSM
ATTACKS = {
    "fgsm": ("single-step", False, 0.80),
    "pgd": ("iterative", False, 0.60),
    "autoattack": ("ensemble", False, 0.50),
    "square": ("iterative", True, 0.70),
}
EPS = (0.0, 0.01, 0.02)


def healthy_rows(strategy="vpt", seeds=(0, 1, 2), clean=0.80, bacc=0.60) -> list[dict]:
    rows = []
    for seed in seeds:
        model = {"strategy": strategy, "seed": seed, "n_test": N, "n_attacked": N, "clean_acc": clean,
                 "attack_clean_acc": clean, "clean_bacc": bacc, "majority_acc": MAJORITY, "status": "ok"}
        rows.append(model | {"attack": "none", "attack_name": "none", "eps": 0.0, "robust_acc": clean})
        for attack, (family, black_box, survival) in ATTACKS.items():
            for eps in EPS:
                robust = round(clean * survival ** (eps / 0.01) - 0.01 * seed, 4) if eps else clean
                rows.append(model | {"attack": attack, "attack_name": attack, "attack_family": family,
                                     "attack_black_box": black_box, "eps": eps, "robust_acc": robust})
    return rows


def frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(ROW_FIELDS))


def change(rows, value, **where) -> list[dict]:
    """The rows with robust_acc (or the field named in value) set where every key matches."""
    field, value = value if isinstance(value, tuple) else ("robust_acc", value)
    return [r | {field: value} if all(r.get(k) == v for k, v in where.items()) else r for r in rows]


def fired(rows, n_classes=7) -> dict[str, list[flags.Flag]]:
    found = {}
    for flag in flags.check(frame(rows), n_classes=n_classes):
        found.setdefault(flag.check, []).append(flag)
    return found


def test_a_healthy_run_raises_no_flag():
    assert flags.check(frame(healthy_rows() + healthy_rows("full", clean=0.75)), n_classes=7) == []
    notes, footnotes = flags.annotate([])
    assert notes == {} and "none fired" in footnotes[0]


def test_eps_zero_must_give_clean_accuracy():
    rows = change(healthy_rows(), 0.79, attack="pgd", eps=0.0, seed=1)
    (flag,) = fired(rows)["eps0-not-clean"]
    assert flag.strategy == "vpt" and flag.detail == "pgd seed 1 79.00% at eps 0, clean 80.00%"


def test_eps_zero_compares_with_the_clean_accuracy_of_the_attacked_subset():
    rows = [r | {"attack_clean_acc": 0.75} for r in healthy_rows()]
    rows = [r | {"robust_acc": 0.75} if r["attack"] != "none" and r["eps"] == 0 else r for r in rows]
    assert "eps0-not-clean" not in fired(rows)


def test_robust_accuracy_rising_with_eps_fires_past_the_tolerance_only():
    # the seed study's VPT p=50: FGSM 29.81% at eps 0.01, 33.22% at eps 0.02
    rows = change(change(healthy_rows(), 0.2981, attack="fgsm", eps=0.01), 0.3322, attack="fgsm", eps=0.02)
    (flag,) = fired(rows)["rises-with-eps"]
    assert flag.detail == "fgsm 29.81% at eps 0.01 -> 33.22% at eps 0.02"
    # one image of 200 (0.5 points) is within what random starts explain
    within = change(change(healthy_rows(), 0.30, attack="fgsm", eps=0.01), 0.305, attack="fgsm", eps=0.02)
    assert "rises-with-eps" not in fired(within)


def test_a_rise_in_one_seed_is_judged_by_the_mean():
    rows = change(healthy_rows(), 0.50, attack="pgd", eps=0.02, seed=0)  # seed 0 rises from 48%
    assert "rises-with-eps" not in fired(rows)  # but the mean over seeds still falls
    rows = change(change(healthy_rows(), 0.30, attack="pgd", eps=0.02), 0.40, attack="pgd", eps=0.01)
    assert "rises-with-eps" not in fired(rows)
    rows = change(healthy_rows(), 0.70, attack="pgd", eps=0.02)
    assert "rises-with-eps" in fired(rows)


def test_a_stronger_family_weaker_than_a_weaker_one_fires():
    rows = change(healthy_rows(), 0.70, attack="autoattack", eps=0.01)  # above PGD (~0.47) and FGSM (~0.63)
    assert sorted(f.detail for f in fired(rows)["family-order"]) == [
        "autoattack (ensemble) 70.00% > fgsm (single-step) 63.00% at eps 0.01",
        "autoattack (ensemble) 70.00% > pgd (iterative) 47.00% at eps 0.01",
    ]


def test_family_order_is_generic_over_attack_names():
    """A third-party iterative attack weaker than FGSM is flagged like PGD would be."""
    rows = [r | {"attack": "mine", "attack_name": "mine"} if r["attack"] == "pgd" else r for r in healthy_rows()]
    rows = change(rows, 0.75, attack="mine", eps=0.02)
    (flag,) = fired(rows)["family-order"]
    assert flag.detail.startswith("mine (iterative) 75.00% > fgsm (single-step)")


def test_black_box_attacks_are_left_out_of_the_family_order():
    rows = change(healthy_rows(), 0.54, attack="square", eps=0.02)  # weaker than FGSM (50.2%): allowed
    assert fired(rows) == {}


def test_a_black_box_attack_beating_every_white_box_one_fires():
    rows = change(healthy_rows(), 0.10, attack="square", eps=0.02)
    (flag,) = fired(rows)["black-box-wins"]
    # compared with the strongest white-box attack at that eps (AutoAttack, mean 20% - 1 point)
    assert flag.detail == "square 10.00% < autoattack 19.00% at eps 0.02"
    # beating FGSM but not the strongest white-box attack is normal
    rows = change(healthy_rows(), 0.40, attack="square", eps=0.02)
    assert "black-box-wins" not in fired(rows)


def test_majority_level_and_near_chance_models_are_flagged_per_seed():
    rows = change(change(healthy_rows(), ("clean_acc", MAJORITY), seed=2), ("clean_bacc", 1 / 7), seed=2)
    found = fired(rows)
    assert [f.detail for f in found["below-majority"]] == ["seed 2 accuracy 67.00%, majority class 67.00%"]
    assert [f.detail for f in found["near-chance"]] == ["seed 2 balanced accuracy 14.29%, chance 14.29%"]
    assert "near-chance" not in fired(rows, n_classes=None)  # unknown classes: no chance level
    assert "near-chance" in fired(change(healthy_rows(), ("clean_bacc", 0.19))) and not fired(
        change(healthy_rows(), ("clean_bacc", 0.20)))


def test_failed_rows_and_rows_without_attack_facts_are_ignored():
    rows = change(healthy_rows(), ("status", "failed"), attack="pgd", eps=0.02)
    rows = change(rows, 0.99, attack="pgd", eps=0.02)  # garbage in failed rows
    assert fired(rows) == {}
    old = [{k: v for k, v in r.items() if k not in ("attack_family", "attack_black_box")} for r in healthy_rows()]
    assert fired(change(old, 0.70, attack="autoattack", eps=0.01)) == {}  # no families: not compared


def test_annotate_gives_notes_and_footnotes_that_explain_them():
    rows = change(healthy_rows(), 0.10, attack="square", eps=0.02) + change(
        healthy_rows("full"), ("clean_acc", 0.60))
    notes, footnotes = flags.annotate(flags.check(frame(rows), n_classes=7))
    assert notes == {"vpt": "black-box-wins", "full": "below-majority"}
    (text,) = footnotes
    assert "`black-box-wins`: a black-box attack" in text and "gradient masking" in text
    assert "Seen: full: seed 0 accuracy 60.00%, majority class 67.00%, seed 1" in text


def test_every_leaderboard_carries_the_flags(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_config(run_dir, {"seeds": [0, 1, 2], "strategies": ["vpt"], "attacks": list(ATTACKS),
                           "dataset": {"classes": list("abcdefg")}})
    for row in change(healthy_rows(), 0.70, attack="pgd", eps=0.02):
        append_row(run_dir, row)
    text = leaderboard.write(run_dir, tmp_path / "boards").read_text()
    assert "| rises-with-eps, family-order |" in text
    assert "- `rises-with-eps`: robust accuracy rises with eps" in text
    assert "Seen: vpt: pgd 47.00% at eps 0.01 -> 70.00% at eps 0.02" in text


@pytest.mark.parametrize("n_attacked, fires", [(20, False), (400, True)])
def test_the_tolerance_grows_to_one_image_of_a_small_attacked_set(n_attacked, fires):
    rows = [r | {"n_attacked": n_attacked} for r in healthy_rows()]
    rows = change(rows, 0.66, attack="fgsm", eps=0.02)  # 3 points above its mean at eps 0.01 (63%)
    assert ("rises-with-eps" in fired(rows)) is fires  # one image of 20 is 5 points


def _pred_row(attack, seed, adv_pred):
    return {"strategy": "s", "seed": seed, "attack": attack, "attack_family": "iterative", "attack_black_box": False,
            "eps": 0.01, "status": "ok", "adv_pred": adv_pred, "robust_acc": 1 - sum(adv_pred) / len(adv_pred)}


@pytest.mark.parametrize(("bf16_fooled", "fp32_fooled", "fires"), [
    (1, 5, "bf16-weaker"),  # bf16 left 4 images correct that fp32 fooled
    (5, 1, None),  # fp32 the weaker one: not a bf16 problem, and twins are not compared as two attacks
    (4, 5, None),  # one image: within what rounding does
])
def test_a_bf16_attack_weaker_than_its_fp32_twin_fires_one_way_only(bf16_fooled, fp32_fooled, fires):
    labels = [0] * 10

    def fooled(n):
        return [1] * n + [0] * (10 - n)

    rows = [_pred_row("pgd", 0, fooled(fp32_fooled)), _pred_row("pgd[bf16]", 0, fooled(bf16_fooled))]
    found = {flag.check: flag for flag in flags.check(frame(rows), labels=labels)}
    assert set(found) == ({fires} if fires else set())
    if fires:
        assert found[fires].detail.startswith("pgd[bf16] left 4.0 images correct that pgd fooled at eps 0.01")
