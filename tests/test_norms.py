"""Every attack declares its family and norm; an L2 attack is checked in L2, and never compared or
combined with an L-inf one in flags, the worst case or plots. On real tensors and hand-built rows."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robench.attack import (
    NORMS,
    Attack,
    MinimalAttack,
    check_attack_class,
    check_perturbation,
    gradient,
    perturbation_size,
    project,
)
from robench.core.results import append_row, attack_norms, read_frame, write_config
from robench.errors import PluginError
from robench.pipeline.evaluate import attack_sweep, predict
from robench.report import flags, leaderboard, per_class
from robench.report.worst_case import WORST, worst_case_rows, worst_label
from tests.test_worst_case import LABELS, frame, rows

L2_WORST = worst_label("L2")


def _unit(grad: torch.Tensor) -> torch.Tensor:
    """Each image's gradient scaled to length 1 in L2."""
    return grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (grad.dim() - 1))


class L2PGD(Attack):
    """PGD in L2 (Madry et al. 2018): steps of 2.5 eps / steps along the unit gradient, projected on the L2 ball."""

    name = "pgd_l2"
    family = "iterative"
    norm = "L2"

    def __init__(self, steps: int = 5):
        self.steps = steps

    def perturb(self, model, images, labels, eps):
        adv = images.clone()
        for _ in range(self.steps):
            step = 2.5 * eps / self.steps * _unit(gradient(model, adv, labels, "margin"))
            adv = project(adv + step, images, eps, self.norm)
        return adv


class LinfInDisguise(L2PGD):
    """Declares L2 but moves every pixel by eps: inside the L-inf ball, far outside the L2 one."""

    name = "linf_in_disguise"

    def perturb(self, model, images, labels, eps):
        return (images + eps * gradient(model, images, labels).sign()).clamp(0, 1)


class L2Minimal(MinimalAttack):
    """Walks along each image's unit gradient until it is fooled; eps* is the L2 length of the step."""

    name = "minimal_l2"
    norm = "L2"
    eps_max = 6.0
    measured_in = "L2"  # the norm its eps* are measured in: "Linf" makes them too small for an L2 attack

    def minimize(self, model, images, labels):
        direction = _unit(gradient(model, images, labels, "margin"))
        adversarial, star = images.clone(), torch.full((len(images),), math.inf)
        for length in torch.linspace(0.05, self.eps_max, 120).tolist():
            candidate = (images + length * direction).clamp(0, 1)
            with torch.no_grad():
                new = (model(candidate).argmax(1) != labels) & torch.isinf(star)
            adversarial[new] = candidate[new]
            star[new] = perturbation_size(candidate - images, self.measured_in)[new].float()
        return adversarial, star


@pytest.fixture
def linear():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3)).eval()
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    preds = predict(model, images, 16, "cpu")
    return model, images, preds


# ---------------------------------------------------------------- the contract


def test_a_class_without_family_or_norm_is_refused_in_one_line():
    class NoNorm(Attack):
        name = "no_norm"
        family = "iterative"

    class NoFamily(Attack):
        name = "no_family"
        norm = "L2"

    class Neither(Attack):
        name = "neither"

    for cls, missing in ((NoNorm, "no norm"), (NoFamily, "no family"), (Neither, "no family and no norm")):
        with pytest.raises(PluginError) as refused:
            check_attack_class(cls)
        message = str(refused.value)
        assert "\n" not in message and f"attack '{cls.name}'" in message and f"declares {missing}:" in message
        assert "single-step, iterative, ensemble, targeted" in message and "Linf, L2" in message
        with pytest.raises(PluginError, match=missing):
            cls()  # refused when made, too: the runner's plan makes every attack before any model trains


def test_values_outside_the_lists_are_refused_and_a_plugins_subclass_inherits_its_declarations():
    bad_norm = type("BadNorm", (Attack,), {"name": "bad", "family": "iterative", "norm": "L1"})
    with pytest.raises(PluginError, match="declares norm 'L1'"):
        check_attack_class(bad_norm)
    assert check_attack_class(type("MyPGD", (L2PGD,), {"name": "my_pgd"})) is not None


def test_a_minimal_attack_needs_a_norm_and_keeps_its_family():
    with pytest.raises(PluginError, match="declares no norm"):
        check_attack_class(type("NoNorm", (MinimalAttack,), {"name": "m", "eps_max": 1.0}))
    with pytest.raises(PluginError, match="declares family 'iterative'.*family to one of minimal"):
        check_attack_class(type("Iter", (MinimalAttack,), {"name": "m", "family": "iterative", "norm": "L2"}))
    assert L2Minimal().family == "minimal"


def test_every_built_in_attack_declares_family_and_norm_in_its_own_class():
    from robench_plugins.attacks import autoattack, fgsm, minimal, pgd, square

    for cls in (autoattack.AutoAttack, fgsm.FGSM, minimal.Minimal, pgd.PGD, square.Square):
        assert {"family", "norm"} <= set(vars(cls)), cls.__name__
        assert check_attack_class(cls) is cls and cls.norm in NORMS


# ---------------------------------------------------------------- checked in its own norm


def test_check_perturbation_measures_l2_per_image():
    clean = torch.full((4, 3, 8, 8), 0.5)
    delta = torch.zeros_like(clean)
    delta[:, 0, 0, 0] = 0.3  # each image's change: length 0.3; the batch's together: 0.6
    check_perturbation("attack x", "L2", clean + delta, clean, 0.3)
    delta[2, 1, 0, 0] = 0.1  # one image at sqrt(0.1) = 0.316
    with pytest.raises(ValueError, match=r"attack x exceeded eps=0.3 in L2 \(an image at 0.316"):
        check_perturbation("attack x", "L2", clean + delta, clean, 0.3)
    check_perturbation("attack x", "Linf", clean + delta, clean, 0.3)  # the same images are inside L-inf 0.3
    with pytest.raises(ValueError, match="unknown norm 'L1'"):
        check_perturbation("attack x", "L1", clean, clean, 0.3)


def test_project_in_l2_shortens_only_what_is_too_long():
    clean = torch.full((2, 3, 4, 4), 0.5)
    far = clean + torch.full_like(clean, 0.1)  # length 0.1 * sqrt(48) = 0.69
    near = clean.clone()
    near[:, 0, 0, 0] += 0.2
    projected = project(torch.cat([far[:1], near[:1]]), clean, 0.5, "L2")
    lengths = perturbation_size(projected - clean, "L2")
    assert lengths[0].item() == pytest.approx(0.5, rel=1e-5) and lengths[1].item() == pytest.approx(0.2, rel=1e-5)


def test_an_l2_attack_runs_in_its_ball_and_an_linf_step_declared_l2_is_refused(linear):
    model, images, preds = linear
    metrics = attack_sweep(model, L2PGD(), [0.0, 0.5, 2.0], images, preds, preds, 8, "cpu")
    assert metrics[0.0]["robust_acc"] == pytest.approx(1.0) and metrics[2.0]["robust_acc"] < 1.0
    x = images.float() / 255
    adv = L2PGD().perturb(model, x, preds, 2.0)
    assert perturbation_size(adv - x, "L2").max() <= 2.0 + 1e-5
    assert perturbation_size(adv - x, "Linf").max() < 2.0  # an L-inf check would have passed anything here
    with pytest.raises(ValueError, match="linf_in_disguise exceeded eps=0.05 in L2"):
        attack_sweep(model, LinfInDisguise(), [0.05], images, preds, preds, 8, "cpu")


def test_a_minimal_attacks_eps_star_is_checked_in_its_norm(linear):
    model, images, preds = linear
    metrics = attack_sweep(model, L2Minimal(), [0.5, 6.0], images, preds, preds, 8, "cpu")
    assert metrics[0.5]["robust_acc"] >= metrics[6.0]["robust_acc"] and any(math.isfinite(e or math.inf)
                                                                           for e in metrics[6.0]["min_eps"])
    too_small = type("TooSmall", (L2Minimal,), {"name": "too_small", "measured_in": "Linf"})
    with pytest.raises(ValueError, match="larger than eps"):
        attack_sweep(model, too_small(), [0.5], images, preds, preds, 8, "cpu")


# ---------------------------------------------------------------- never compared or combined


def _mixed(l2: dict[str, tuple[str, set[int]]], linf: dict[str, tuple[str, set[int]]], black_box=()) -> list[dict]:
    """One model's rows: the ``l2`` attacks declared L2, the ``linf`` ones L-inf, all at eps 0.01."""
    built = rows("vpt", linf | l2)
    return [r | ({"attack_norm": "L2"} if r["attack"] in l2 else {"attack_norm": "Linf"} if r["attack"] in linf else {})
            | ({"attack_black_box": True} if r["attack"] in black_box else {}) for r in built]


def _checks(built) -> set[str]:
    return {flag.check for flag in flags.check(frame(built), n_classes=3, labels=LABELS)}


def test_a_weaker_l2_attack_raises_no_family_or_per_image_flag():
    # the L2 PGD fools 1 image, the L-inf FGSM 6 of them: as one norm, PGD would be both flags' culprit
    attacks = {"pgd_l2": ("iterative", {0})}, {"fgsm": ("single-step", {0, 1, 2, 3, 4, 5})}
    assert _checks(_mixed(*attacks)) == set()
    assert {"family-order", "weaker-per-image"} <= _checks(_mixed({}, attacks[0] | attacks[1]))
    # a row without a norm (written before robench recorded one) is L-inf, and compared as such
    assert _checks(_mixed(*attacks)[:2] + [r | {"attack_norm": None} for r in _mixed(*attacks)[2:]]) != set()


def test_a_black_box_l2_attack_beating_linf_ones_is_no_sign_of_masking():
    l2, linf = {"square_l2": ("iterative", {0, 1, 2, 3, 4, 5})}, {"pgd": ("iterative", {0})}
    assert "black-box-wins" not in _checks(_mixed(l2, linf, black_box={"square_l2"}))
    assert "black-box-wins" in _checks(_mixed({}, l2 | linf, black_box={"square_l2"}))


def test_the_worst_case_is_taken_per_norm():
    built = _mixed({"pgd_l2": ("iterative", {6, 7})}, {"fgsm": ("single-step", {0, 1}), "pgd": ("iterative", {2})})
    (worst,) = worst_case_rows(frame(built), LABELS).to_dict("records")  # one L2 attack: no L2 worst case
    assert worst["attack"] == WORST and worst["attack_norm"] == "Linf"
    assert worst["robust_acc"] == pytest.approx(0.6)  # 9 correct less 0, 1, 2: images 6 and 7 still count
    built = _mixed({"pgd_l2": ("iterative", {6, 7}), "fgm_l2": ("single-step", {8})}, {"fgsm": ("single-step", {0})})
    by_label = {row["attack"]: row for row in worst_case_rows(frame(built), LABELS).to_dict("records")}
    assert set(by_label) == {L2_WORST}  # one L-inf attack: no L-inf worst case
    assert by_label[L2_WORST]["robust_acc"] == pytest.approx(0.6) and by_label[L2_WORST]["attack_norm"] == "L2"


def test_the_missed_cancer_rate_of_a_worst_case_counts_its_own_norm_only():
    built = _mixed({"pgd_l2": ("iterative", set())}, {"fgsm": ("single-step", set()), "pgd": ("iterative", set())})
    for row in built:
        if row["attack"] == "pgd_l2":
            row["adv_pred"] = [1] + row["adv_pred"][1:]  # image 0 (class a, malignant here) called benign in L2
    clean = per_class._clean_hits(frame(built), LABELS, "vpt")
    rate = per_class.missed_cancer_rate(frame(built), LABELS, ["a", "b", "c"], ["a"], "vpt", 0.01, clean, WORST)
    assert rate == 0.0
    assert per_class.missed_cancer_rate(frame(built), LABELS, ["a", "b", "c"], ["a"], "vpt", 0.01, clean,
                                        L2_WORST) == pytest.approx(1 / 3)


def test_a_page_and_its_plots_keep_the_norms_apart(tmp_path):
    from robench.report.plots import write_plots

    run = tmp_path / "run"
    built = _mixed({"pgd_l2": ("iterative", {0}), "fgm_l2": ("single-step", {1})},
                   {"fgsm": ("single-step", {0, 1, 2, 3, 4, 5}), "pgd": ("iterative", {0, 1, 2, 3, 4, 5, 6})})
    run.mkdir()
    for row in built:
        append_row(run, row)
    write_config(run, {"name": "t", "strategies": ["vpt"], "attacks": ["fgsm", "pgd", "pgd_l2", "fgm_l2"], "seeds": [0],
                       "dataset": {"classes": ["a", "b", "c", "d"]},  # d: what the rows call a fooled image
                       "attacked": {"ids": list("abcdefghij"), "labels": LABELS}})
    page = leaderboard.render(run)
    header = next(line for line in page.split("## Robust accuracy", 1)[1].splitlines() if line.startswith("| rank"))
    assert header.index("worst case@0.01") < header.index(f"{L2_WORST}@0.01") < header.index("fgsm@0.01")
    assert "none fired" in page
    plots = dict(write_plots(run, [tmp_path / "boards"], "t"))
    assert {WORST, L2_WORST, "pgd_l2", "fgsm"} <= set(plots)


def test_the_eps_axis_and_title_name_the_norm():
    import pandas as pd

    from robench.report.plots import figure

    points = pd.DataFrame({"strategy": ["vpt"] * 2, "eps": [0.0, 0.5], "mean": [0.9, 0.4], "std": [0.0, 0.0], "n": [1, 1]})
    fig = figure(points, ["vpt"], "pgd_l2", "all", {}, {}, norm="L2")
    ax = fig.axes[0]
    assert "L2 radius" in ax.get_xlabel() and fig.get_suptitle().startswith("pgd_l2 (L2) on")
    assert not ax.child_axes  # no "eps × 255" axis: in L2 that is no pixel level
    linf = figure(points, ["vpt"], "pgd", "all", {}, {}).axes[0]
    assert "L∞ radius" in linf.get_xlabel() and linf.child_axes


def test_rows_written_before_the_norm_was_recorded_read_as_linf(tmp_path):
    for row in rows("vpt", {"fgsm": ("single-step", {0})}):
        append_row(tmp_path, row)  # rows without attack_norm, as robench wrote them before
    table = read_frame(tmp_path)
    assert table.set_index("attack")["attack_norm"].to_dict()["fgsm"] == "Linf"
    assert table.loc[table["attack"] == "none", "attack_norm"].isna().all()  # a clean row has no attack
    assert attack_norms(frame(rows("vpt", {"fgsm": ("single-step", {0})}))).eq("Linf").all()
