"""Defenses: adversarial training makes models more robust, trains only what the strategy trains,
makes its examples in eval mode within eps, and combines with every strategy on the command line."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors import safe_open
from torch import nn

from robench import data
from robench.cli import main
from robench.core.results import read_rows
from robench.defense import Defense, combined_label, defended_loss
from robench.pipeline.evaluate import attack_sweep, predict
from robench.pipeline.models import BackboneSpec, Normalized, create_backbone
from robench.pipeline.prepare import resolve_dataset
from robench.pipeline.train import train
from robench.strategy import Recipe
from robench_plugins.attacks.pgd import PGD
from robench_plugins.backbones.timm import MICRO
from robench_plugins.defenses.fgsm_at import FGSMAT
from robench_plugins.defenses.pgd_at import PGDAT
from robench_plugins.defenses.trades import TRADES
from robench_plugins.strategies.full import Full
from robench_plugins.strategies.linear_probe import LinearProbe
from robench_plugins.strategies.lora import LoRA
from robench_plugins.strategies.vpt import VPTDeep

CPU = torch.device("cpu")


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 3, 32, 32, generator=g) * 255).to(torch.uint8)
    images[:, :, :4] = 255  # saturated pixels: the examples must stay in [0, 1] there too
    images[:, :, -4:] = 0
    return images, torch.arange(n) % 7


def _spy(defense_class):
    """A defense that records the training flag of every module at each forward, by phase."""

    class Spy(defense_class):
        def __init__(self, **options):
            super().__init__(**options)
            self.phase, self.seen, self.examples = "other", [], []

        def watch(self, model):
            model.register_forward_pre_hook(lambda m, _: self.seen.append((self.phase, _flags(m))))

        def perturb(self, model, images, labels):
            self.phase = "perturb"
            self.grad_during_perturb = any(p.requires_grad for p in model.parameters())
            adversarial = super().perturb(model, images, labels)
            self.phase = "loss"
            self.examples.append((images.clone(), adversarial.clone()))
            return adversarial

        def loss(self, model, clean, adversarial, labels, criterion):
            value = super().loss(model, clean, adversarial, labels, criterion)
            self.phase = "other"
            return value

    return Spy


def _flags(model: nn.Module) -> tuple[bool, ...]:
    return tuple(m.training for m in model.modules())


def _forwards_per_batch(defense) -> tuple[int, int]:
    """Forward passes while making a batch's examples, then while computing its loss: FGSM one and
    one; PGD one a step and one; TRADES its target f(x) and one a step, then f(x) and f(x')."""
    if isinstance(defense, TRADES):
        return defense.steps + 1, 2
    if isinstance(defense, PGDAT):
        return defense.steps, 1
    return 1, 1


EPS = 0.05  # large enough on 32x32 synthetic images for the undefended micro ViT to fall well below


@pytest.fixture(scope="module")
def synthetic():
    images = resolve_dataset("synthetic").load(None, image_size=32)
    split = data.split(images, seed=0)
    held_out = torch.cat([torch.as_tensor(split.val), torch.as_tensor(split.test)])
    return ((images.images[split.train], images.labels[split.train]), (images.images[split.val], images.labels[split.val]),
            images.images[held_out], images.labels[held_out])


def _robust_after_training(synthetic, defense) -> float:
    """PGD-10 robust accuracy at EPS on the held-out images of the micro ViT trained (seed 0) under ``defense``."""
    train_set, val_set, test_images, test_labels = synthetic
    torch.manual_seed(0)
    vit, mean, std = create_backbone(BackboneSpec(MICRO, 32, pretrained=False), 7)
    model = Normalized(Full().adapt(vit), mean, std)
    train(model, Full(), Recipe(epochs=6, lr=1e-3, batch_size=32, warmup_epochs=1), train_set, val_set, 7, 0, CPU, defense=defense)
    model.eval().requires_grad_(False)
    preds = predict(model, test_images, 256, CPU)
    torch.manual_seed(0)
    return attack_sweep(model, PGD(steps=10), [EPS], test_images, test_labels, preds, 256, CPU)[EPS]["robust_acc"]


@pytest.fixture(scope="module")
def undefended_robust(synthetic):
    return _robust_after_training(synthetic, None)


@pytest.mark.parametrize("defense", [PGDAT(eps=EPS, steps=3),
                                     pytest.param(TRADES(eps=EPS, steps=2), marks=pytest.mark.slow)], ids=lambda d: d.name)
@pytest.mark.slow  # default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_adversarial_training_makes_the_micro_vit_more_robust_under_pgd(synthetic, undefended_robust, defense):
    """Same model, data, recipe and seed, with and without the defense: PGD at the defense's eps
    leaves the undefended model far less accuracy than the defended one. Measured with these settings
    and seed 0: undefended 0.115, pgd_at 0.375, trades 0.495 (seeds 1 and 2: undefended 0.18 and
    0.21, pgd_at 0.74 and 0.66)."""
    robust = _robust_after_training(synthetic, defense)
    assert robust > undefended_robust + 0.15, (robust, undefended_robust)


@pytest.mark.parametrize("defense", [FGSMAT(eps=0.03), PGDAT(eps=0.03, steps=2), TRADES(eps=0.03, steps=2)], ids=lambda d: d.name)
@pytest.mark.parametrize("strategy", [LinearProbe(), VPTDeep(prompts=2), LoRA(rank=2)], ids=lambda s: s.name)
def test_frozen_parameters_stay_frozen_under_every_defense(micro_vit, strategy, defense):
    vit, mean, std = micro_vit
    model = Normalized(strategy.adapt(vit), mean, std)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    recipe = strategy.recipe.override(epochs=1, batch_size=8, warmup_epochs=0)
    result = train(model, strategy, recipe, _data(16, 1), _data(7, 2), 7, 0, CPU, defense=defense)
    assert not result.used_cached_features  # adversarial images have new features at every step
    after = dict(model.named_parameters())
    assert {name for name, p in after.items() if p.requires_grad} == trainable  # restored after each attack
    for name in before.keys() - trainable:
        assert torch.equal(before[name], after[name]), name
    assert any(not torch.equal(before[name], after[name]) for name in trainable)


@pytest.mark.parametrize("strategy", [Full(), VPTDeep(prompts=2, dropout=0.5), LoRA(rank=2, dropout=0.5)], ids=lambda s: s.name)
@pytest.mark.parametrize("defense_class", [FGSMAT, PGDAT, TRADES], ids=lambda c: c.name)
def test_examples_are_made_in_eval_mode_within_eps_and_trained_on_in_train_mode(micro_vit, strategy, defense_class):
    vit, mean, std = micro_vit
    adapted = strategy.adapt(vit)
    model = Normalized(adapted, mean, std)
    reference = copy.deepcopy(model)
    strategy.train_mode(reference.model)
    train_flags = _flags(reference.model)
    assert any(train_flags)  # dropout, prompt dropout or everything trains: eval mode would differ
    eps = 0.02
    defense = _spy(defense_class)(eps=eps)
    defense.watch(adapted)
    recipe = strategy.recipe.override(epochs=1, batch_size=8, warmup_epochs=0)
    train(model, strategy, recipe, _data(16, 1), _data(7, 2), 7, 0, CPU, defense=defense)

    perturb = [flags for phase, flags in defense.seen if phase == "perturb"]
    update = [flags for phase, flags in defense.seen if phase == "loss"]
    making, training = _forwards_per_batch(defense)
    assert (len(perturb), len(update)) == (2 * making, 2 * training)  # two batches of 8
    assert not any(any(flags) for flags in perturb)
    assert update == [train_flags] * len(update)
    assert not defense.grad_during_perturb
    for clean, adversarial in defense.examples:
        assert 0 <= adversarial.min() and adversarial.max() <= 1
        assert (adversarial - clean).abs().max() <= eps + 1e-6
        assert not torch.equal(adversarial, clean)


@pytest.mark.parametrize("defense_class", [FGSMAT, PGDAT, TRADES], ids=lambda c: c.name)
def test_eps_warms_up_linearly_over_the_warmup_epochs_one_step_at_a_time(micro_vit, defense_class):
    """warmup_epochs=1 with 4 batches an epoch: eps/4, eps/2, 3eps/4, then eps for every later
    batch; each batch's examples stay within its ramped radius (and alpha, when given, scales too)."""
    vit, mean, std = micro_vit
    strategy = LinearProbe()
    model = Normalized(strategy.adapt(vit), mean, std)
    seen = []

    class Recording(defense_class):
        def perturb(self, model, images, labels):
            adversarial = super().perturb(model, images, labels)
            seen.append((self.eps, self.alpha, (adversarial - images).abs().max().item()))
            return adversarial

    eps = 0.02
    recipe = strategy.recipe.override(epochs=2, batch_size=4, warmup_epochs=0)
    train(model, strategy, recipe, _data(16, 1), _data(7, 2), 7, 0, CPU,
          defense=Recording(eps=eps, alpha=eps / 2, warmup_epochs=1))
    assert [radius for radius, _, _ in seen] == pytest.approx([eps / 4, eps / 2, 3 * eps / 4] + [eps] * 5)
    assert [alpha for _, alpha, _ in seen] == pytest.approx([eps / 8, eps / 4, 3 * eps / 8] + [eps / 2] * 5)
    assert all(0 < moved <= radius + 1e-6 for radius, _, moved in seen)
    assert Recording(eps=eps, warmup_epochs=0).at_fraction(1.0).eps == eps


def test_fgsm_at_is_wong_et_al_step_on_a_linear_model():
    """delta ~ U(-eps, eps), one FGSM step of 1.25 eps from x + delta, projected to the eps-ball and [0, 1]."""
    torch.manual_seed(0)
    linear = nn.Linear(12, 3)
    model = nn.Sequential(nn.Flatten(), linear).eval()
    images, labels, eps = torch.rand(6, 3, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2]), 0.1
    images[0] = 1.0
    torch.manual_seed(5)
    start = (images + torch.empty_like(images).uniform_(-eps, eps)).clamp(0, 1)
    probs = torch.softmax(start.flatten(1) @ linear.weight.T + linear.bias, dim=1)
    grad = ((probs - nn.functional.one_hot(labels, 3)) @ linear.weight).view_as(images)
    expected = torch.clamp(torch.clamp(start + 1.25 * eps * grad.sign(), images - eps, images + eps), 0, 1)
    torch.manual_seed(5)
    torch.testing.assert_close(FGSMAT(eps=eps).perturb(model, images, labels), expected, rtol=0, atol=1e-7)


def test_pgd_at_trains_on_the_pgd_attack_that_evaluates(micro_model):
    images, labels = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(3)), torch.arange(4)
    torch.manual_seed(7)
    ours = PGDAT(eps=0.03, steps=4).perturb(micro_model, images, labels)
    torch.manual_seed(7)
    assert torch.equal(ours, PGD(steps=4, loss="ce", early_exit=False).perturb(micro_model, images, labels, 0.03))  # the paper's


def test_trades_loss_is_clean_cross_entropy_plus_beta_times_the_kl_to_the_adversarial_outputs():
    torch.manual_seed(0)
    linear = nn.Linear(12, 3)
    model = nn.Sequential(nn.Flatten(), linear)
    clean, adversarial, labels = torch.rand(5, 3, 2, 2), torch.rand(5, 3, 2, 2), torch.tensor([0, 1, 2, 0, 1])
    criterion = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 0.5]))
    p = torch.softmax(model(clean), dim=1)
    q = torch.softmax(model(adversarial), dim=1)
    kl = (p * (p.log() - q.log())).sum() / len(labels)
    for beta in (0.0, 1.0, 6.0):
        loss = TRADES(beta=beta).loss(model, clean, adversarial, labels, criterion)
        torch.testing.assert_close(loss, criterion(model(clean), labels) + beta * kl)


def test_trades_examples_raise_the_kl_from_the_clean_outputs(micro_model):
    images, labels = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(4)), torch.arange(8) % 7

    def kl(x):
        with torch.no_grad():
            p = torch.softmax(micro_model(images), dim=1)
            return nn.functional.kl_div(torch.log_softmax(micro_model(x), dim=1), p, reduction="batchmean").item()

    torch.manual_seed(0)
    adversarial = TRADES(eps=0.03).perturb(micro_model, images, labels)
    noise = (images + torch.empty_like(images).uniform_(-0.03, 0.03)).clamp(0, 1)
    assert (adversarial - images).abs().max() <= 0.03 + 1e-6
    assert kl(adversarial) > 10 * kl(noise) > 0


def test_a_defense_that_breaks_its_threat_model_is_refused(micro_model):
    class Cheat(Defense):
        name, eps = "cheat", 0.01

        def perturb(self, model, images, labels):
            return (images + 0.5).clamp(0, 1)

    images, labels = torch.rand(2, 3, 32, 32), torch.arange(2)
    with pytest.raises(ValueError, match="cheat exceeded eps=0.01"):
        defended_loss(Cheat(), micro_model, images, labels, nn.CrossEntropyLoss(), lambda: None)


def test_combined_label():
    assert combined_label("vpt_deep(prompts=5)", "none") == "vpt_deep(prompts=5)"
    assert combined_label("vpt_deep", "pgd_at(eps=0.01)") == "vpt_deep + pgd_at(eps=0.01)"


# ---------------------------------------------------------------- command line

FAST = ["--dataset", "synthetic", "--epochs", "1", "--quiet", "--attacks", "fgsm", "--eps", "0.01"]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_the_defenses(capsys):
    code, out, _ = run_cli(capsys, "list", "--kind", "defense")
    assert code == 0 and out.startswith("Defenses\n")
    assert "  pgd_at " in out and "from robench 0.2.0; options: eps=0.01, steps=7, alpha=None" in out
    assert "  fgsm_at " in out and "from robench 0.2.0; options: eps=0.01, alpha=None" in out


@pytest.mark.parametrize(
    ("defenses", "message"),
    [
        ("pgd_a", "unknown defense 'pgd_a': did you mean pgd_at"),
        ("pgd_at:epz=0.1", "unknown option 'epz' for defense 'pgd_at'"),
        ("pgd_at:eps=2", "eps must be in (0, 1]"),
        ("pgd_at:eps=x", "expected a number"),
        ("pgd_at:steps=0", "steps must be from 1 to 1,000"),
        ("fgsm_at:alpha=0", "alpha must be in (0, 1]"),
        ("trades:beta=-1", "beta must be a finite number >= 0"),
        ("pgd_at:warmup_epochs=-1", "warmup_epochs must be a finite number of epochs >= 0"),
        ("none:eps=0.01", "defense 'none' takes no options"),
        ("none,none", "defense 'none' is listed twice"),
        (",", "no defense given"),
    ],
)
def test_bad_defenses_are_one_line_and_exit_code_2(capsys, tmp_path, defenses, message):
    code, _, err = run_cli(capsys, "run", *FAST, "--defenses", defenses, "--out", str(tmp_path / "r"),
                           "--leaderboard-dir", str(tmp_path))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("robench: error: ")
    assert message in err
    assert not (tmp_path / "r" / "results.jsonl").exists()


@pytest.mark.slow  # default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_a_run_with_defenses_has_a_model_per_strategy_and_defense_and_resumes_each(capsys, tmp_path):
    out_dir = tmp_path / "run"
    argv = ["run", *FAST, "--strategies", "linear_probe", "--out", str(out_dir), "--leaderboard-dir", str(tmp_path), "--name", "d"]
    code, _, err = run_cli(capsys, *argv, "--defenses", "none,fgsm_at:eps=0.01")
    assert code == 0, err
    rows = read_rows(out_dir)
    labels = {(r["strategy"], r["strategy_name"], r["defense"], r["defense_name"]) for r in rows}
    assert labels == {("linear_probe", "linear_probe", "none", "none"),
                      ("linear_probe + fgsm_at(eps=0.01)", "linear_probe", "fgsm_at(eps=0.01)", "fgsm_at")}
    assert len(rows) == 2 * 3 and {r["status"] for r in rows} == {"ok"}  # clean + fgsm@0.01 + its escalation, per model
    keys = {}
    for path in (out_dir / "checkpoints").glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            key = json.loads(f.metadata()["key"])
        keys[key["strategy"]] = key
    assert "defense" not in keys["linear_probe"]  # as before defenses existed: old checkpoints still fit
    assert keys["linear_probe + fgsm_at(eps=0.01)"]["defense_plugin"] == "robench_plugins.defenses.fgsm_at.FGSMAT"
    assert json.loads((out_dir / "config.json").read_text())["defenses"] == ["none", "fgsm_at(eps=0.01)"]
    board = (tmp_path / "d.md").read_text()
    plain, defended = board.index("| linear_probe "), board.index("| linear_probe + fgsm_at(eps=0.01) ")
    assert plain < defended and "**defenses**" in board

    # again: nothing to do; then a new defense adds its model only
    assert run_cli(capsys, *argv, "--defenses", "none,fgsm_at:eps=0.01")[0] == 0
    assert len(read_rows(out_dir)) == 6
    assert run_cli(capsys, *argv, "--defenses", "pgd_at:eps=0.01:steps=1")[0] == 0
    rows = read_rows(out_dir)
    assert len(rows) == 9 and rows[-1]["strategy"] == "linear_probe + pgd_at(eps=0.01, steps=1)"
    assert json.loads((out_dir / "config.json").read_text())["defenses"] == [
        "none", "fgsm_at(eps=0.01)", "pgd_at(eps=0.01, steps=1)"]


def test_a_config_file_lists_defenses_like_strategies():
    from robench.cli import _run_parser, config_file

    actions = {a.dest: a for a in _run_parser()._actions}
    values = config_file.flag_values({"defenses": ["none", "pgd_at:eps=0.01"]}, actions, "run.toml")
    assert values == {"defenses": "none,pgd_at:eps=0.01"}
