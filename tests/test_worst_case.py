"""The worst case over attacks, per image, and the per-image flag: hand-built records with known answers."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from robench.core.results import ROW_FIELDS, append_row, write_config
from robench.report import flags, leaderboard
from robench.report.worst_case import WORST, worst_case_rows

LABELS = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]  # 10 attacked images
CLEAN = [0, 1, 2, 0, 1, 2, 0, 1, 2, 1]  # the last one wrong before any attack: 9 of 10 correct
WRONG = 3  # a class no image has: "fooled"


def preds(fooled: set[int]) -> list[int]:
    """Predictions after an attack that fooled the images at the ``fooled`` positions."""
    return [WRONG if i in fooled else p for i, p in enumerate(CLEAN)]


def rows(strategy: str, attacks: dict[str, tuple[str, set[int]]], seed: int = 0, eps: float = 0.01) -> list[dict]:
    model = {"strategy": strategy, "seed": seed, "status": "ok", "n_test": 10, "n_attacked": 10,
             "clean_acc": 0.9, "attack_clean_acc": 0.9, "clean_bacc": 0.9, "majority_acc": 0.4}
    out = [model | {"attack": "none", "attack_name": "none", "eps": 0.0, "robust_acc": 0.9, "clean_pred": CLEAN}]
    for attack, (family, fooled) in attacks.items():
        adv = preds(fooled)
        robust = sum(a == y for a, y in zip(adv, LABELS)) / 10
        out.append(model | {"attack": attack, "attack_name": attack.split("(")[0], "attack_family": family,
                            "attack_black_box": False, "eps": eps, "robust_acc": robust, "n_clean_correct": 9,
                            "acc_on_correct": robust / 0.9, "attack_seconds": 1.0, "adv_pred": adv})
    return out


def frame(rows_) -> pd.DataFrame:
    return pd.DataFrame(rows_, columns=list(ROW_FIELDS))


def test_the_worst_case_is_per_image_not_the_minimum_of_the_columns():
    # fgsm fools images 0-3, pgd images 2-5: each leaves 5 of 10 correct, together only 3 (6, 7, 8)
    table = frame(rows("vpt", {"fgsm": ("single-step", {0, 1, 2, 3}), "pgd": ("iterative", {2, 3, 4, 5})}))
    worst = worst_case_rows(table, LABELS)
    assert len(worst) == 1 and worst.iloc[0]["attack"] == WORST
    assert table.loc[table["attack"] != "none", "robust_acc"].min() == pytest.approx(0.5)
    assert worst.iloc[0]["robust_acc"] == pytest.approx(0.3)
    assert worst.iloc[0]["acc_on_correct"] == pytest.approx(3 / 9)
    assert worst.iloc[0]["robust_bacc"] == pytest.approx((1 / 4 + 1 / 3 + 1 / 3) / 3)  # images 6, 7, 8: one per class


def test_no_worst_case_with_one_attack_or_without_records():
    one = frame(rows("vpt", {"pgd": ("iterative", {0})}))
    assert worst_case_rows(one, LABELS).empty
    two = frame(rows("vpt", {"fgsm": ("single-step", {0}), "pgd": ("iterative", {1})}))
    assert worst_case_rows(two, None).empty  # a run written before robench kept its labels
    assert worst_case_rows(two.assign(adv_pred=None), LABELS).empty  # rows written before records


def _fired(table, labels=LABELS):
    return [f for f in flags.check(table, n_classes=3, labels=labels) if f.check == "weaker-per-image"]


def test_an_attack_that_leaves_images_a_peer_fooled_is_flagged():
    # pgd on cross-entropy fools 1 image, pgd on the margin 5, among them that one: ce left 4 it fooled
    table = frame(rows("vpt", {"pgd(loss=ce)": ("iterative", {0}), "pgd": ("iterative", {0, 1, 2, 3, 4})}))
    found = _fired(table)
    assert [(f.strategy, f.detail.split(" left")[0]) for f in found] == [("vpt", "pgd(loss=ce)")]
    assert "4.0 images" in found[0].detail
    assert _fired(table, labels=None) == []  # without labels the check is skipped


def test_few_images_or_a_weaker_family_do_not_flag():
    # 2 images (not more than FEW_IMAGES) is within what random starts explain
    assert _fired(frame(rows("vpt", {"pgd(loss=ce)": ("iterative", {0}), "pgd": ("iterative", {0, 1, 2})}))) == []
    # FGSM leaving what PGD fooled is expected: a single step is the weaker family
    assert _fired(frame(rows("vpt", {"fgsm": ("single-step", set()), "pgd": ("iterative", {0, 1, 2, 3, 4})}))) == []


def two_strategy_run(tmp_path):
    """A run folder where "low" has the better columns but its attacks fooled different images,
    and "high" loses the same images to both attacks: "high" has the better worst case."""
    run = tmp_path / "run"
    run.mkdir()
    for row in (rows("low", {"fgsm": ("single-step", {0, 1}), "pgd": ("iterative", {2, 3, 4})})
                + rows("high", {"fgsm": ("single-step", {0, 1, 2, 3}), "pgd": ("iterative", {0, 1, 2, 3})})):
        append_row(run, row)
    write_config(run, {"name": "t", "strategies": ["low", "high"], "attacks": ["fgsm", "pgd"], "seeds": [0],
                       "dataset": {"classes": ["a", "b", "c", "d"]},  # d: what the rows call a fooled image (WRONG)
                       "attacked": {"ids": list("abcdefghij"), "labels": LABELS}})
    return run


def test_the_page_shows_the_worst_case_first_and_ranks_by_it(tmp_path):
    page = leaderboard.render(two_strategy_run(tmp_path))
    header = next(line for line in page.split("## Robust accuracy", 1)[1].splitlines() if line.startswith("| rank"))
    assert header.index("worst case@0.01") < header.index("fgsm@0.01")
    body = [line for line in page.splitlines() if re.match(r"\| \S+ +\| (low|high) ", line)]
    assert "| high" in body[0]  # 5 of 10 survive both in "high", 4 in "low"
    assert body[0].startswith("| 1=") and body[1].startswith("| 1=")  # one seed, 10 images: no test separates them
    assert "| 50.00" in body[0] and "| 40.00" in body[1]


def test_per_class_recall_before_and_after_the_worst_case():
    from robench.report import per_class
    from robench.report.worst_case import with_worst_case

    table = with_worst_case(frame(rows("vpt", {"fgsm": ("single-step", {0, 1, 2, 3}), "pgd": ("iterative", {2, 3, 4, 5})})),
                            LABELS)
    recall = per_class.recall_table(table, LABELS, ["a", "b", "c"], ["vpt"], WORST, 0.01)
    # class a: images 0, 3, 6, 9 (9 wrong before the attack), only 6 survives both attacks
    assert recall.to_dict("records") == [{"strategy": "vpt", "a (n=4)": "75 → 25", "b (n=3)": "100 → 33",
                                          "c (n=3)": "100 → 33"}]
    text = per_class.section(table, LABELS, ["a", "b", "c"], ["vpt"], [(WORST, 0.01), ("fgsm", 0.01)])
    assert "Under `worst case@0.01`" in text and "fgsm@0.01" not in text


def test_the_missed_cancer_rate_counts_malignant_images_any_attack_called_benign():
    from robench.report import per_class

    built = rows("vpt", {"fgsm": ("single-step", {0, 1, 2, 3}), "pgd": ("iterative", {2, 3, 4, 5})})
    for row in built:
        if row["attack"] == "fgsm":
            row["adv_pred"] = [1] + row["adv_pred"][1:]  # image 0 (class a, malignant here) called b, benign
    recall = per_class.recall_table(frame(built), LABELS, ["a", "b", "c"], ["vpt"], "pgd", 0.01, malignant=["a"])
    # class a images correct before the attacks: 0, 3, 6; only image 0 was called benign (3 was called "3")
    assert recall["malignant → benign (n=4)"].tolist() == ["33"]


def test_a_reference_strategy_replaces_each_columns_best(tmp_path):
    from robench.errors import RobenchError

    run = two_strategy_run(tmp_path)
    paired = leaderboard.render(run, reference="low").split("## Paired comparisons")[1].split("\n\n")[2]
    low = next(line for line in paired.splitlines() if line.startswith("| low"))
    assert low.count("best") == 3  # the worst case and both attacks
    with pytest.raises(RobenchError, match="reference strategy 'mid' is not in this run: use one of high, low"):
        leaderboard.render(run, reference="mid")


def test_run_refuses_a_reference_that_is_not_one_of_its_strategies(tmp_path):
    from robench.errors import RobenchError
    from robench.pipeline.models import BackboneSpec
    from robench.pipeline.options import parse_specs
    from robench.pipeline.runner import RunConfig, plan
    from robench_plugins.backbones.timm import MICRO

    config = RunConfig("synthetic", BackboneSpec(MICRO, 32, pretrained=False), parse_specs("full,linear_probe", "strategy"),
                       parse_specs("fgsm", "attack"), [0.01], [0], tmp_path, tmp_path, "t", reference="lora")
    with pytest.raises(RobenchError, match="--reference 'lora' is not a strategy of this run: use one of full, linear_probe"):
        plan(config)


def test_the_confusion_matrix_under_attack_counts_the_records():
    from robench.report import confusion

    table = frame(rows("vpt", {"fgsm": ("single-step", {0, 1, 2, 3}), "pgd": ("iterative", {2, 3, 4, 5})}))
    counts = confusion.matrix(table, LABELS, 7, "vpt", "pgd", 0.01)
    row = table[(table["attack"] == "pgd") & (table["eps"] == 0.01)].iloc[0]
    assert counts.sum() == len(LABELS)
    assert np.trace(counts) == sum(p == y for p, y in zip(row["adv_pred"], LABELS))
    for true, pred in zip(LABELS, row["adv_pred"]):
        assert counts[true, pred] >= 1
    assert confusion.matrix(table, LABELS, 7, "vpt", "missing", 0.01) is None


def test_the_per_class_csv_has_every_attack_and_agrees_with_the_page_table():
    from robench.report import per_class
    from robench.report.worst_case import with_worst_case

    table = with_worst_case(frame(rows("vpt", {"fgsm": ("single-step", {0, 1, 2, 3}), "pgd": ("iterative", {2, 3, 4, 5})})),
                            LABELS)
    columns = [(WORST, 0.01), ("fgsm", 0.01), ("pgd", 0.01)]
    tidy = per_class.tidy(table, LABELS, ["a", "b", "c"], ["vpt"], columns)
    assert set(tidy["attack"]) == {WORST, "fgsm", "pgd"} and len(tidy) == 9
    worst_a = tidy[(tidy["attack"] == WORST) & (tidy["class"] == "a")].iloc[0]
    # the page's table says "75 → 25" for class a under the worst case (test above)
    assert (worst_a.n_images, round(100 * worst_a.clean_recall), round(100 * worst_a.robust_recall)) == (4, 75, 25)
