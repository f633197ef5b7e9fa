"""Attacks in exact arithmetic and on losses that do not saturate (issue 10).

robench flushes subnormal floats to zero while a model trains; an attack must not inherit that:
a confident model's cross-entropy gradient lives below 1.2e-38, the flush zeroes it and the
attack stops moving. These tests build such a model, show the flush really masks its gradient
(so that they can fail), and check that robench's attacks and defenses give the same images
whatever numerics the run around them uses. The regression test at the end replays a real
run's PGD and FGSM with an independent implementation written here, image by image.
"""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
import torch
import torchattacks
from torch import nn

from robench.attack import attack_loss, flushing_subnormals, gradient
from robench.core.results import read_records
from robench.defense import defended_loss
from robench.pipeline.evaluate import attack_sweep
from robench.pipeline.runner import numerics
from robench.pipeline.train import to_pixels
from robench_plugins.attacks.fgsm import FGSM
from robench_plugins.attacks.pgd import PGD
from robench_plugins.defenses.pgd_at import PGDAT
from tests.test_cli import run_cli


@contextmanager
def flushed():
    """The numerics a run trains under (subnormals flushed), restored afterwards."""
    before = flushing_subnormals()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


class Confident(nn.Module):
    """A model whose cross-entropy saturates: each image's logits are scaled (by a factor that does
    not take part in the gradient) until the runner-up logit sits GAP below the top one, so softmax
    gives the other classes about exp(-82) = 2e-36, and the backward pass runs through subnormal
    floats (below 1.2e-38). Its predictions are the trained model's."""

    GAP = 82.0

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        logits = self.model(x)
        top2 = logits.detach().topk(2, 1).values
        return logits * (self.GAP / (top2[:, :1] - top2[:, 1:2]))


@pytest.fixture
def confident(trained):
    model, x, _ = trained
    model = Confident(model).eval()
    with torch.no_grad():
        labels = model(x).argmax(1)  # every image correct, so every image is attacked
    return model, x, labels


def test_the_flush_masks_a_saturated_cross_entropy_gradient(confident):
    """The precondition of the tests below: under the flush the CE gradient is (mostly) zero,
    without it it is not, and the margin loss does not underflow either way."""
    model, x, y = confident
    exact = gradient(model, x[:8], y[:8], "ce")
    with flushed():
        masked = gradient(model, x[:8], y[:8], "ce")
        margin = gradient(model, x[:8], y[:8], "margin")
    assert (exact == 0).float().mean() < 0.05
    assert (masked == 0).float().mean() > 0.3
    assert (margin != 0).float().mean() > 0.95


@pytest.mark.parametrize("attack", [FGSM(), PGD(steps=3, loss="ce"), PGD(steps=3)], ids=["fgsm", "pgd-ce", "pgd-margin"])
def test_an_attack_sweep_gives_the_same_images_inside_and_outside_the_training_numerics(confident, attack):
    model, x, y = confident
    x, y = x[:24], y[:24]
    images = (x * 255).round().to(torch.uint8)  # attack_sweep takes uint8 test images, as a run stores them
    outside = _sweep(model, attack, images, y)
    with numerics():  # what a run switches on for its whole length
        assert flushing_subnormals()
        inside = _sweep(model, attack, images, y)
        assert flushing_subnormals(), "the run's own setting is restored after the attack"
    assert all(torch.equal(a, b) for a, b in zip(inside, outside, strict=True))
    if attack.loss == "ce":  # the same sweep in the training numerics makes other images: the flush masks CE
        with flushed():
            torch.manual_seed(0)
            masked = [adv for _, adv in attack.sweep(model, to_pixels(images), y, [0.005, 0.01])]
        assert not all(torch.equal(a, b) for a, b in zip(masked, outside, strict=True))


def _sweep(model, attack, images, labels):
    """The adversarial images attack_sweep makes at eps 0.005 and 0.01, in that order."""
    made = []

    class Recording(type(attack)):
        def sweep(self, *args):
            for eps, adv in super().sweep(*args):
                made.append(adv)
                yield eps, adv

    recording = Recording.__new__(Recording)
    recording.__dict__.update(attack.__dict__)
    torch.manual_seed(0)
    attack_sweep(model, recording, [0.005, 0.01], images, labels, labels.clone(), 24, "cpu")
    return made


def test_a_defense_makes_its_examples_in_exact_arithmetic(confident):
    model, x, y = confident
    defense = PGDAT(eps=0.01, steps=2)
    seen = []

    def record(model, images, labels):
        seen.append(flushing_subnormals())
        torch.manual_seed(0)
        return PGD(steps=2, loss="ce").perturb(model, images, labels, 0.01)

    defense.perturb = record
    with flushed():
        defended_loss(defense, model, x[:8], y[:8], nn.functional.cross_entropy, model.train)
    assert seen == [False]


def test_margin_and_dlr_losses_have_their_closed_forms():
    logits = torch.tensor([[3.0, 1.0, 0.5, -1.0], [0.0, 2.0, 1.0, 0.0]])
    labels = torch.tensor([0, 2])
    # margin: max other - true, summed: (1 - 3) + (2 - 1)
    assert attack_loss(logits, labels, "margin").item() == pytest.approx(-1.0)
    # dlr: -(z_y - max other) / (z_1st - z_3rd): -(3 - 1) / (3 - 0.5) + -(1 - 2) / (2 - 0)
    assert attack_loss(logits, labels, "dlr").item() == pytest.approx(-2 / 2.5 + 0.5)
    assert attack_loss(logits, labels, "ce").item() == pytest.approx(nn.functional.cross_entropy(logits, labels).item())
    with pytest.raises(ValueError, match="at least 3 classes"):
        attack_loss(logits[:, :2], torch.tensor([0, 1]), "dlr")
    with pytest.raises(ValueError, match="loss must be one of"):
        PGD(loss="hinge")


def test_pgd_on_cross_entropy_is_bitwise_torchattacks(trained):
    model, x, y = trained
    torch.manual_seed(3)
    ours = PGD(steps=5, loss="ce", early_exit=False).perturb(model, x, y, 0.02)
    torch.manual_seed(3)
    theirs = torchattacks.PGD(model, eps=0.02, alpha=2.5 * 0.02 / 5, steps=5, random_start=True)(x, y)
    assert torch.equal(ours, theirs)


@pytest.mark.slow  # default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_margin_pgd_is_not_weaker_than_cross_entropy_pgd_on_a_confident_model(confident):
    """Where cross-entropy saturates, PGD on it barely moves; PGD on the margin still fools."""
    model, x, y = confident
    x, y = x[:32], y[:32]  # saturated CE gradients are subnormal, and slow on a CPU: a third of the test set
    results = {}
    for loss in ("ce", "margin"):
        torch.manual_seed(0)
        adv = PGD(steps=10, loss=loss).perturb(model, x, y, 0.02)
        with torch.no_grad():
            results[loss] = (model(adv).argmax(1) == y).float().mean()
    assert results["margin"] <= results["ce"]


# ---------------------------------------------------------------- independent replay of a run


def independent_pgd(model, x, y, eps, steps, loss, keep_first_fooled=False):
    """PGD written from the paper (Madry et al. 2018) for this test, sharing no code with robench.

    ``keep_first_fooled``: every image runs every step, and afterwards each keeps the first iterate
    the model got wrong (the last one where none did): what robench's early-exit PGD must return.
    """
    alpha = 2.5 * eps / steps
    adv = torch.clamp(x + torch.empty_like(x).uniform_(-eps, eps), 0, 1)
    kept, done = adv.clone(), torch.zeros(len(y), dtype=torch.bool)
    for _ in range(steps):
        adv = adv.detach().requires_grad_(True)
        logits = model(adv)
        wrong = logits.argmax(1) != y
        kept[wrong & ~done], done = adv.detach()[wrong & ~done], done | wrong
        if loss == "ce":
            objective = nn.functional.cross_entropy(logits, y)
        else:  # the Carlini-Wagner margin: best other logit minus the true one
            true = logits[torch.arange(len(y)), y]
            others = logits.clone()
            others[torch.arange(len(y)), y] = -torch.inf
            objective = (others.max(1).values - true).sum()
        (grad,) = torch.autograd.grad(objective, adv)
        adv = torch.clamp(x + torch.clamp(adv + alpha * grad.sign() - x, -eps, eps), 0, 1)
    if not keep_first_fooled:
        return adv.detach()
    kept[~done] = adv.detach()[~done]
    return kept


def replay_sweep(model, x, y, clean, attack, eps_values, seed: int, batch_size: int) -> dict[float, torch.Tensor]:
    """Predictions after ``attack(model, x, y, eps)`` at every eps, seeded and batched as a run's
    sweep is: torch seeded with the model's seed, the clean-correct images in batches, and within
    a batch the eps in order (so random starts are drawn in the run's order)."""
    torch.manual_seed(seed)
    preds = {e: clean.clone() for e in eps_values}
    for chunk in (clean == y).nonzero().flatten().split(batch_size):
        for e in eps_values:
            adv = attack(model, x[chunk], y[chunk], e)
            with torch.no_grad():
                preds[e][chunk] = model(adv).argmax(1)
    return preds


def independent_fgsm(model, x, y, eps):
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), x)
    return torch.clamp(x + eps * grad.sign(), 0, 1).detach()


@pytest.mark.slow  # default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_a_vpt_shallow_run_matches_an_independent_pgd_and_fgsm_image_by_image(capsys, tmp_path):
    """A real run (CLI, subnormal flush on as in every run) of a trained micro ViT with VPT-shallow,
    replayed outside robench's attack code with the run's seeding: same predictions per image."""
    from robench.pipeline import checkpoints, runner
    from robench.pipeline.fingerprint import model_key
    from robench.pipeline.models import BackboneSpec, Normalized, create_backbone
    from robench.pipeline.train import to_pixels

    out, eps = tmp_path / "run", [0.005, 0.01]
    argv = ["run", "--dataset", "synthetic", "--epochs", "4", "--quiet", "--strategies", "vpt_shallow",
            "--attacks", "fgsm,pgd,pgd:loss=ce", "--eps", "0.005,0.01", "--seeds", "1", "--attack-batch-size", "32",
            "--out", str(out), "--leaderboard-dir", str(tmp_path / "lb")]
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    config = json.loads((out / "config.json").read_text())

    # the trained model, rebuilt from its checkpoint (robench's model code; the attacks below are not)
    spec = BackboneSpec(config["backbone"]["name"], config["backbone"]["image_size"], pretrained=False)
    run_config = runner.RunConfig("synthetic", spec, [runner.Spec("vpt_shallow", "vpt_shallow")], [], eps, [1],
                                  out, tmp_path / "lb", "t", recipe_overrides={"epochs": 4, "batch_size": None, "lr": None})
    planned = runner.plan(run_config)
    strategy = planned.strategies[0]
    prepared = runner.prepare_data(planned.config, planned.dataset)
    runner.seed_everything(1)  # the frozen backbone is random-init here: the checkpoint keeps only what trained
    vit, mean, std = create_backbone(spec, 7)
    own = checkpoints.base_buffers(vit)
    adapted = strategy.plugin.adapt(vit)
    key = model_key(config["comparable"], strategy, 1, prepared)  # the run's one fingerprint, as config.json holds it
    assert checkpoints.load(checkpoints.path_for(out, key), adapted, own, key) is not None
    model = Normalized(strategy.plugin.for_evaluation(adapted), mean, std).eval().requires_grad_(False)

    x_all = to_pixels(prepared.images.images[prepared.split.test])
    y = torch.tensor(config["attacked"]["labels"])
    with torch.no_grad():
        clean = model(x_all).argmax(1)
    clean_row = next(r for r in rows if r["attack"] == "none")
    assert clean.tolist() == clean_row["clean_pred"]
    correct = (clean == y).nonzero().flatten()
    assert 0 < len(correct) < len(y)

    def replay(attack):
        return replay_sweep(model, x_all, y, clean, attack, eps, seed=1, batch_size=32)  # the run's seed and batch

    expected = {
        "fgsm": replay(independent_fgsm),
        "pgd": replay(lambda m, x, y, e: independent_pgd(m, x, y, e, 10, "margin", keep_first_fooled=True)),
        "pgd(loss=ce)": replay(lambda m, x, y, e: independent_pgd(m, x, y, e, 10, "ce", keep_first_fooled=True)),
    }
    for row in rows:
        if row["attack"] == "escalation":  # the worst case of the attacks and the escalation: never kinder than one
            kept = torch.tensor(row["adv_pred"]) == y
            assert all(not (kept & (replayed[row["eps"]] != y)).any() for replayed in expected.values())
        elif row["attack"] != "none":
            assert row["adv_pred"] == expected[row["attack"]][row["eps"]].tolist(), (row["attack"], row["eps"])
            # and the row's numbers are its records'
            survived = torch.tensor(row["adv_pred"]) == y
            assert row["robust_acc"] == pytest.approx(survived.float().mean().item())
            assert row["n_clean_correct"] == len(correct)
            assert row["acc_on_correct"] == pytest.approx(survived.sum().item() / len(correct))
    records = read_records(out)  # the same records, one row per image, for pandas
    assert len(records) == len(rows) * len(y)
    pgd = records[(records["attack"] == "pgd") & (records["eps"] == 0.01)]
    assert (pgd["adv_pred"] == pgd["label"]).mean() == pytest.approx(
        next(r["robust_acc"] for r in rows if r["attack"] == "pgd" and r["eps"] == 0.01))
