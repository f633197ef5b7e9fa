"""Transfer attacks: crafted on a surrogate alone, the same examples for every model, evaluated as
robench evaluates any attack, refused in one line where the source is wrong."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import robench
from robench.attack import TRANSFER, TransferAttack
from robench.core.results import read_frame
from robench.errors import RobenchError
from robench.pipeline import transfer
from robench.pipeline.evaluate import transfer_sweep
from robench.report import flags
from robench_plugins.attacks.transfer import Transfer

FAST = dict(dataset="synthetic", eps=0.02, seeds=0, epochs=1, escalation="off", quiet=True)


def test_craft_stays_in_the_ball_and_pushes_the_surrogate_off(trained):
    model, x, y = trained
    attack = Transfer(steps=5)
    assert isinstance(attack, TransferAttack) and attack.family == TRANSFER and attack.black_box
    torch.manual_seed(0)
    crafted = dict(attack.craft(model, x, y, [0.0, 0.05]))
    assert torch.equal(crafted[0.0], x)  # eps 0 is the image itself
    assert (crafted[0.05] - x).abs().max() <= 0.05 + 1e-6 and crafted[0.05].min() >= 0 and crafted[0.05].max() <= 1
    with torch.no_grad():
        assert (model(crafted[0.05]).argmax(1) == y).float().mean() < (model(x).argmax(1) == y).float().mean() - 0.3
    with pytest.raises(TypeError, match="transfer attack"):
        attack.perturb(model, x, y, 0.05)  # never crafted on the attacked model
    with pytest.raises(ValueError, match="steps"):
        Transfer(steps=0)


def test_examples_are_crafted_once_per_eps_then_read_whoever_asks(trained, tmp_path):
    model, x, y = trained
    images = (x * 255).round().to(torch.uint8)
    calls = []

    def surrogate():
        calls.append(1)
        return model

    def made(folder, eps_values, key=None):
        key = key or {"k": 1}
        paths = {eps: transfer.examples_path(folder, "transfer(source=pretrained)", 0, eps, key) for eps in eps_values}
        return transfer.examples(paths, key, Transfer(steps=3), surrogate, images, y, 32, "cpu",
                                 reseed=lambda eps: torch.manual_seed(transfer.eps_seed(0, eps)))

    first = made(tmp_path / "a", [0.02])
    assert len(calls) == 1 and torch.equal(made(tmp_path / "a", [0.02])[0.02], first[0.02]) and len(calls) == 1
    extended = made(tmp_path / "a", [0.02, 0.04])  # a resumed run that adds an eps: the old one's examples stay
    assert len(calls) == 2 and torch.equal(extended[0.02], first[0.02])
    alone = made(tmp_path / "b", [0.04])  # an eps's examples depend on the seed and that eps alone
    assert torch.equal(alone[0.04], extended[0.04])
    made(tmp_path / "a", [0.02], key={"k": 2})  # another key (surrogate, attack, images): another file, crafted anew
    assert len(calls) == 4


def test_the_first_published_examples_are_the_ones_every_model_reads(trained, tmp_path):
    """Two processes (two Ray nodes) that crafted at once publish without replacing: both answer the first file."""
    model, x, y = trained
    key, images = {"k": 1}, (x * 255).round().to(torch.uint8)
    path = transfer.examples_path(tmp_path, "transfer", 0, 0.02, key)
    path.parent.mkdir(parents=True)
    first = torch.full_like(x, 0.5)
    transfer._publish(path, first, key | {"eps": 0.02})
    transfer._publish(path, torch.zeros_like(x), key | {"eps": 0.02})  # the later one does not replace it
    found = transfer.examples({0.02: path}, key, Transfer(steps=2), lambda: model, images, y, 32, "cpu", reseed=lambda eps: None)
    assert torch.equal(found[0.02], first) and not list(tmp_path.rglob("*.partial"))


def test_a_transfer_row_answers_the_examples_on_the_clean_correct_images(trained):
    model, x, y = trained
    with torch.no_grad():
        clean_logits = model(x)
    clean_preds = clean_logits.argmax(1)
    examples = {0.03: (x + 0.03 * torch.randn_like(x).sign()).clamp(0, 1)}
    row = transfer_sweep(model, examples, y, clean_preds, torch.softmax(clean_logits, 1), 16, "cpu")[0.03]
    with torch.no_grad():
        after = model(examples[0.03]).argmax(1)
    expected = torch.where(clean_preds == y, after, clean_preds)  # a clean-wrong image keeps its answer
    assert row["adv_pred"] == expected.tolist()
    assert row["robust_acc"] == pytest.approx(float((expected == y).float().mean()))
    assert row["n_clean_correct"] == int((clean_preds == y).sum()) and row["ece"] is not None


@pytest.mark.slow  # two runs; the examples' independence of any target is also what the test above shows in seconds
def test_the_examples_do_not_depend_on_the_target(tmp_path):
    """Two runs whose target (full fine-tuning) differs, here by its learning rate: the examples crafted
    on the pretrained surrogate are bit for bit the same file content, and the targets answer them differently."""
    runs = [robench.run(strategies=f"full:lr={lr}", attacks="transfer:source=pretrained", out=tmp_path / f"lr{lr}", **FAST)
            for lr in (1e-3, 3e-2)]
    files = [sorted((r.run_dir / transfer.FOLDER).glob("*.safetensors")) for r in runs]
    assert [len(f) for f in files] == [1, 1] and files[0][0].name == files[1][0].name
    a, b = (load_file(str(f[0])) for f in files)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = [frame[frame["attack"] == "transfer(source=pretrained)"].iloc[0] for frame in map(read_frame, (r.run_dir for r in runs))]
    assert all(row["status"] == "ok" and row["attack_family"] == TRANSFER and row["attack_source"] == "pretrained"
               and row["attack_black_box"] for row in rows)
    assert rows[0]["adv_pred"] != rows[1]["adv_pred"]  # two targets, one set of examples


def test_a_source_strategy_gives_a_matrix_with_its_diagonal_white_box(tmp_path):
    results = robench.run(strategies="full,linear_probe", attacks="fgsm,transfer:source=pretrained,transfer:source=full",
                          out=tmp_path / "run", **FAST)
    rows = results.rows.set_index(["strategy", "attack"])
    assert not rows.loc[("full", "transfer(source=full)"), "attack_black_box"]  # crafted on itself
    assert rows.loc[("linear_probe", "transfer(source=full)"), "attack_black_box"]
    assert not rows.loc[("linear_probe", "transfer(source=pretrained)"), "attack_black_box"]  # the same linear probe
    assert (results.rows["status"] == "ok").all()
    assert len(list((results.run_dir / transfer.FOLDER).glob("*.safetensors"))) == 2  # one per source and seed
    page = results.leaderboard.read_text()
    assert "## Transfer attacks" in page and "| target" in page and "from pretrained" in page and "from full" in page
    assert page.count(" (w) |") == 2
    paired = page.split("## Paired comparisons", 1)[1].split("\n## ", 1)[0]
    assert "transfer(source=full)@0.02" not in paired  # full's own cell is white box: no black-box pair is left to test


def test_a_transfer_attack_that_fools_white_box_survivors_is_flagged():
    labels = [0, 1, 2, 3, 4, 5, 6, 0]
    base = dict(strategy="lora", seed=0, eps=0.01, status="ok", attack_norm="Linf", n_test=8, n_attacked=8, robust_acc=0.5,
                clean_acc=1.0, clean_bacc=1.0, majority_acc=0.25, attack_clean_acc=1.0)
    frame = pd.DataFrame([
        base | dict(attack="pgd", attack_family="iterative", attack_black_box=False, adv_pred=labels),
        base | dict(attack="transfer(source=pretrained)", attack_family=TRANSFER, attack_black_box=True,
                    adv_pred=[1, 2, 3, 4, 5, 6, 6, 0]),
    ])
    found = [f for f in flags.check(frame, labels=labels) if f.check == "transfer-fools-survivors"]
    assert [f.strategy for f in found] == ["lora"] and "fooled 6.0 images" in found[0].detail
    frame.loc[0, "adv_pred"] = [1, 2, 3, 4, 5, 6, 6, 0]  # the white-box attack fooled them too: nothing to flag
    assert not [f for f in flags.check(frame, labels=labels) if f.check == "transfer-fools-survivors"]


@pytest.mark.parametrize("source, message", [
    ("ful", "source 'ful' is not a strategy of this run: did you mean full?"),
    ("pretrain", "did you mean pretrained"),
])
def test_a_wrong_source_is_one_line_before_training(tmp_path, source, message):
    with pytest.raises(RobenchError, match=message):
        robench.run(strategies="full,linear_probe", attacks=f"transfer:source={source}", out=tmp_path / "run", **FAST)
    assert not (tmp_path / "run" / "checkpoints").exists()



def test_the_examples_are_torchattacks_pgd_on_the_surrogate(trained):
    """Written outside robench: torchattacks' PGD on the surrogate, from the same random draws, makes the
    same examples bit for bit (how a target answers them is the test of transfer_sweep above)."""
    import torchattacks

    model, x, y = trained
    torch.manual_seed(3)
    ours = dict(Transfer(steps=5).craft(model, x, y, [0.03]))[0.03]
    torch.manual_seed(3)
    theirs = torchattacks.PGD(model, eps=0.03, alpha=2.5 * 0.03 / 5, steps=5, random_start=True)(x, y)
    assert torch.equal(ours, theirs)
