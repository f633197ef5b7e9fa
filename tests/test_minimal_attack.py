"""The minimal-perturbation attack (issue 11): eps* per image, checked against plain bisection with
a PGD written outside robench, and recorded by the runner so that every eps's row follows from it."""

from __future__ import annotations

import math

import pytest
import torch

from robench.attack import at_eps
from robench.pipeline.evaluate import attack_sweep
from robench_plugins.attacks.minimal import Minimal
from tests.test_exact_attacks import independent_pgd

EPS_MAX = 16 / 255
ROUNDS = 7
STEP = 2 ** (10 / 2**ROUNDS)  # the reference's bisection step: a factor, on a log scale


def bisection_pgd(model, x, y, eps_max=EPS_MAX, rounds=ROUNDS):
    """The reference: per image, log-bisection on [eps_max / 1024, eps_max] with a fresh PGD-10
    (random start, margin loss) at each probe; inf where PGD-10 at eps_max does not fool it. The PGD
    is the one written in tests/test_exact_attacks.py, outside robench's code path."""
    star = []
    for image, label in zip(x, y):
        image, label = image[None], label[None]

        def fools(eps):
            adversarial = independent_pgd(model, image, label, eps, 10, "margin")
            with torch.no_grad():
                return bool(model(adversarial).argmax(1) != label)

        if not fools(eps_max):
            star.append(math.inf)
            continue
        low, high = eps_max / 1024, eps_max
        for _ in range(rounds):
            mid = math.sqrt(low * high)
            low, high = (low, mid) if fools(mid) else (mid, high)
        star.append(high)
    return torch.tensor(star)


@pytest.fixture(scope="module")
def correct(trained):
    model, x, y = trained
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    return model, x[keep][:24], y[keep][:24]


@pytest.mark.slow  # default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_minimal_eps_is_not_above_bisection_pgd_beyond_one_step(correct):
    model, x, y = correct
    torch.manual_seed(0)
    adversarial, star = Minimal().minimize(model, x, y)
    torch.manual_seed(0)
    reference = bisection_pgd(model, x, y)
    assert torch.isfinite(reference).sum() >= 12, "the reference should fool most images below eps_max"
    worse = (star > reference * STEP * 1.0001).sum().item()
    assert worse <= 2, f"eps* above bisection-PGD's by more than one bisection step on {worse} of {len(x)} images"
    # each eps* is the norm of an example that really fools the model
    found = torch.isfinite(star)
    assert found.sum() >= torch.isfinite(reference).sum() - 2
    norms = (adversarial - x).flatten(1).abs().amax(1)
    assert torch.allclose(norms[found], star[found])
    with torch.no_grad():
        assert (model(adversarial[found]).argmax(1) != y[found]).all()


@pytest.mark.slow  # default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_a_stronger_pgd_one_step_below_eps_star_fools_few(correct):
    """The issue-21 check, on the micro ViT: PGD-50 on the margin from 3 random starts (written in
    tests/test_escalation.py, outside robench) at eps*/2^(1/12) fools at most 10% of the images."""
    from tests.test_escalation import independent_pgd as strong_pgd

    model, x, y = correct
    torch.manual_seed(0)
    _, star = Minimal().minimize(model, x, y)
    found = torch.isfinite(star)
    assert found.sum() >= 12
    below = star[found] / 2 ** (1 / 12)
    fooled = sum(bool(strong_pgd(model, x[found][i:i + 1], y[found][i:i + 1], float(e))) for i, e in enumerate(below))
    assert fooled <= 0.1 * found.sum().item(), f"PGD-50x3 one step below eps* fooled {fooled} of {int(found.sum())}"


def test_the_sweep_records_eps_star_and_each_eps_follows_from_it(correct):
    model, x, y = correct
    images = (x * 255).round().to(torch.uint8)
    x8 = images.float() / 255
    with torch.no_grad():
        probs = torch.softmax(model(x8), 1)
    clean = probs.argmax(1)
    eps_values = [0.002, 0.01, 0.03]
    torch.manual_seed(0)
    rows = attack_sweep(model, Minimal(), eps_values, images, y, clean, 16, "cpu", clean_probs=probs)
    assert all("ece" not in row and "nll" not in row for row in rows.values())  # eps* search: no one answer to calibrate
    star = torch.tensor([math.inf if e is None else e for e in rows[0.002]["min_eps"]])
    assert rows[0.002]["eps_max"] == pytest.approx(EPS_MAX)
    assert (star[clean != y] == 0).all()
    for eps in eps_values:
        survived = torch.tensor(rows[eps]["adv_pred"]) == y
        assert torch.equal(survived, star > eps), f"eps {eps}: the row is not the share of eps* above it"
        assert rows[eps]["robust_acc"] == pytest.approx((star > eps).float().mean().item())
    # the robust accuracy falls with eps, and PGD at the largest eps is not weaker than the curve
    accs = [rows[eps]["robust_acc"] for eps in eps_values]
    assert accs == sorted(accs, reverse=True) and accs[0] > accs[-1]


def test_at_eps_returns_the_example_only_where_eps_star_is_below():
    images, adversarial = torch.zeros(3, 1, 2, 2), torch.ones(3, 1, 2, 2) * 0.1
    out = at_eps(images, adversarial, torch.tensor([0.05, 0.2, math.inf]), 0.1)
    assert out[0].eq(0.1).all() and out[1].eq(0).all() and out[2].eq(0).all()


@pytest.mark.parametrize("bad", [0, -0.1, 1.5])
def test_eps_max_outside_0_1_is_refused(bad):
    with pytest.raises(ValueError, match="eps_max must be in"):
        Minimal(eps_max=bad)


def _row(attack, family, seed, adv_pred, eps=0.01):
    return {"strategy": "s", "seed": seed, "attack": attack, "attack_family": family, "attack_black_box": False,
            "eps": eps, "status": "ok", "adv_pred": adv_pred, "robust_acc": 0.0}


def test_minimal_too_weak_is_flagged_one_way_only():
    import pandas as pd

    from robench.report import flags

    labels = [0] * 10
    fooled_by_pgd = [1] * 4 + [0] * 6  # pgd fooled images 0-3
    strong = [1] * 6 + [0] * 4  # minimal fooled 0-5: more than pgd (expected, never flagged)
    weak = [0] * 10  # minimal fooled none of pgd's 4
    from robench.core.results import ROW_FIELDS

    ok = pd.DataFrame([_row("pgd", "iterative", 0, fooled_by_pgd), _row("minimal", "minimal", 0, strong)], columns=ROW_FIELDS)
    bad = pd.DataFrame([_row("pgd", "iterative", 0, fooled_by_pgd), _row("minimal", "minimal", 0, weak)], columns=ROW_FIELDS)
    assert not [f for f in flags.check(ok, labels=labels) if f.check in ("minimal-too-weak", "weaker-per-image")]
    found = [f for f in flags.check(bad, labels=labels) if f.check == "minimal-too-weak"]
    assert len(found) == 1 and "4.0 images" in found[0].detail


def test_median_and_auc_follow_the_records():
    import numpy as np

    from robench.report import minimal_eps

    eps_max = 0.04
    matrix = np.array([[0.0, 0.01, 0.02, 0.03, np.inf], [0.0, 0.01, 0.01, 0.03, 0.03]])
    stats = minimal_eps.median_and_auc(matrix, eps_max)
    assert stats["median"][0] == pytest.approx((0.025 + 0.02) / 2)  # over eps* > 0: (0.01, 0.02, 0.03, inf), (0.01, 0.01, 0.03, 0.03)
    # AUC: mean of min(eps*, eps_max) / eps_max, the area under acc(eps) = share of eps* > eps
    assert stats["auc"][0] == pytest.approx(np.minimum(matrix, eps_max).mean() / eps_max)
    grid = np.linspace(0, eps_max, 40001)
    assert stats["auc"][0] == pytest.approx(np.trapezoid(minimal_eps.curve(matrix, grid), grid) / eps_max, abs=1e-3)
    for value, low, high in stats.values():
        assert low <= value <= high
    survivors = np.full((1, 5), np.inf)
    assert minimal_eps.median_and_auc(survivors, eps_max)["median"][0] == float("inf")


@pytest.mark.slow  # default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_every_row_kind_is_recomputed_from_its_records(tmp_path, capsys):
    """Clean rows, fixed-eps rows and minimal rows of a real CLI run: each number from read_records."""
    from robench.cli import main
    from robench.core.metrics import balanced_accuracy
    from robench.core.results import read_frame, read_records

    out = tmp_path / "run"
    assert main(["run", "--dataset", "synthetic", "--subset", "300", "--epochs", "3", "--seeds", "0,1", "--quiet",
                 "--strategies", "full", "--attacks", "fgsm,minimal", "--eps", "0.002,0.01",
                 "--out", str(out), "--leaderboard-dir", str(tmp_path)]) == 0
    capsys.readouterr()
    rows, records = read_frame(out), read_records(out)
    assert set(rows["attack"]) == {"none", "fgsm", "minimal", "escalation"}
    attacked = rows[rows["attack"] != "none"]
    assert (attacked["n_clean_correct"] > 0).all() and (attacked["robust_acc"] > 0).any()
    for row in rows.itertuples(index=False):
        mine = records[(records["seed"] == row.seed) & (records["attack"] == row.attack) & (records["eps"] == row.eps)]
        labels, hits = torch.tensor(mine["label"].to_numpy()), torch.tensor((mine["adv_pred"] == mine["label"]).to_numpy())
        if row.attack == "none":
            assert row.clean_acc == pytest.approx(hits.float().mean().item())
            assert row.clean_bacc == pytest.approx(balanced_accuracy(labels, hits), nan_ok=True)
            continue
        clean_hits = (mine["clean_pred"] == mine["label"]).to_numpy()
        assert row.robust_acc == pytest.approx(hits.float().mean().item())
        assert row.robust_bacc == pytest.approx(balanced_accuracy(labels, hits), nan_ok=True)
        assert row.n_clean_correct == clean_hits.sum()
        assert row.acc_on_correct == pytest.approx(hits.sum().item() / clean_hits.sum())
        if row.attack == "minimal":
            assert row.robust_acc == pytest.approx((mine["min_eps"] > row.eps).mean())
            assert (mine.loc[~clean_hits, "min_eps"] == 0).all()


def test_an_eps_above_eps_max_is_refused_before_training(tmp_path, capsys):
    from robench.cli import main

    code = main(["run", "--dataset", "synthetic", "--strategies", "full", "--attacks", "minimal:eps_max=0.01",
                 "--eps", "0.02", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().count("\n") == 0 and "eps_max=0.01, below --eps 0.02" in err
    assert not (tmp_path / "run" / "results.jsonl").exists()
    code = main(["run", "--dataset", "synthetic", "--strategies", "full", "--attacks", "minimal:eps_max=1.5",
                 "--out", str(tmp_path / "run")])
    assert code == 2 and "eps_max must be in (0, 1]" in capsys.readouterr().err


def test_a_model_with_no_image_right_has_no_median_eps_and_says_so():
    import math
    import warnings

    import numpy as np

    from robench.report.minimal_eps import median_and_auc, median_text

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning leaks from the bootstrap
        stats = median_and_auc(np.zeros((2, 5)), 16 / 255)
    assert math.isnan(stats["median"][0]) and stats["auc"] == (0.0, 0.0, 0.0)
    assert median_text(stats["median"], 16 / 255) == "n/a (no image right before the attack)"
