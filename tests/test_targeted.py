"""Targeted PGD (issue 11): ``pgd:target=nv`` and ``pgd:target=benign``, the missed-cancer threat."""

from __future__ import annotations

import pytest
import torch

from robench.attack import attack_loss
from robench_plugins.attacks.pgd import PGD
from robench_plugins.datasets.ham10000 import CLASSES as HAM10000_CLASSES
from robench_plugins.datasets.ham10000 import MALIGNANT as HAM10000_MALIGNANT
from tests.test_cli import run_cli


def test_targeted_margin_is_positive_exactly_when_the_model_answers_the_target():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    labels, targets = torch.tensor([0, 1]), torch.tensor([0, 2])
    per_image = [attack_loss(logits[i:i + 1], labels[i:i + 1], "margin", targets[i:i + 1]).item() for i in range(2)]
    assert per_image == [2.0, -1.0]


def targeted(target):
    attack = PGD(target=target)
    attack.for_dataset(list(HAM10000_CLASSES), list(HAM10000_MALIGNANT))
    return attack


def test_a_target_class_is_reached_far_more_often_than_by_the_untargeted_attack(trained):
    """akiec is a class the untargeted attack rarely ends in on this model (3 of 31 images)."""
    model, x, y = trained
    akiec = HAM10000_CLASSES.index("akiec")
    keep = y != akiec
    with torch.no_grad():
        keep &= model(x).argmax(1) == y
    x, y = x[keep][:40], y[keep][:40]
    torch.manual_seed(0)
    towards_akiec = targeted("akiec").perturb(model, x, y, 0.1)
    torch.manual_seed(0)
    anywhere = PGD().perturb(model, x, y, 0.1)
    with torch.no_grad():
        towards, untargeted = model(towards_akiec).argmax(1), model(anywhere).argmax(1)
    assert (towards == akiec).sum() >= 12
    assert (towards == akiec).sum() >= 3 * (untargeted == akiec).sum()


def test_target_benign_picks_a_benign_class_other_than_the_own():
    attack = targeted("benign")
    benign = [i for i, c in enumerate(HAM10000_CLASSES) if c not in HAM10000_MALIGNANT]
    logits = torch.randn(64, 7, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 7, (64,), generator=torch.Generator().manual_seed(1))
    targets = attack.targets(lambda images: logits, torch.zeros(64, 3, 2, 2), labels)
    assert all(t in benign for t in targets.tolist()) and (targets != labels).all()
    for row, t, label in zip(logits, targets, labels):  # the closest: the highest-ranked allowed class
        assert row[t] == max(row[b] for b in benign if b != label)


def test_bad_targets_are_refused():
    with pytest.raises(ValueError, match="not a class of this dataset"):
        PGD(target="melanoma").for_dataset(list(HAM10000_CLASSES), list(HAM10000_MALIGNANT))
    with pytest.raises(ValueError, match="declares"):
        PGD(target="benign").for_dataset(["cat", "dog"], [])
    with pytest.raises(ValueError, match="not dlr"):
        PGD(target="nv", loss="dlr")


def test_cli_refuses_a_target_the_dataset_lacks_before_training(tmp_path, capsys):
    code, _, err = run_cli(capsys, "run", "--dataset", "synthetic", "--strategies", "full", "--attacks", "pgd:target=zz",
                     "--seeds", "0", "--out", str(tmp_path / "run"))
    assert code == 2
    assert err.strip().count("\n") == 0 and "target class 'zz'" in err
    assert not (tmp_path / "run" / "results.jsonl").exists()


def test_a_targeted_attack_is_its_own_family_so_untargeted_checks_leave_it_alone():
    """It aims at chosen classes, so it is expected to leave images correct that an untargeted attack
    fooled: the family-order and weaker-per-image flags must not compare it with them."""
    from robench.attack import FAMILIES

    assert PGD(target="nv").family == "targeted" and "targeted" not in FAMILIES
    assert PGD().family == "iterative"


def test_targeted_pgd_on_ce_equals_torchattacks_targeted_pgd(trained):
    """An implementation outside robench's code path: torchattacks' PGD in targeted mode, seeded alike."""
    import torchattacks

    model, x, y = trained
    x, y = x[:16], y[:16]
    nv = HAM10000_CLASSES.index("nv")
    torch.manual_seed(0)
    ours = PGD(target="nv", loss="ce")
    ours.for_dataset(list(HAM10000_CLASSES), list(HAM10000_MALIGNANT))
    mine = ours.perturb(model, x, y, 0.03)
    reference = torchattacks.PGD(model, eps=0.03, alpha=2.5 * 0.03 / 10, steps=10)
    reference.set_mode_targeted_by_function(lambda images, labels: torch.full_like(labels, nv))
    torch.manual_seed(0)
    theirs = reference(x, y)
    assert torch.equal(mine, theirs)
