"""Models trained elsewhere: robench.benchmark on a plain nn.Module and `robench eval --model FILE`.

Both must evaluate the very model they are given: its clean accuracy and its FGSM robust accuracy
on the run's test images equal what the model itself and torchattacks (an attack written outside
robench) give on those images.
"""

from __future__ import annotations

import json

import pytest
import torch
import torchattacks
from torch import nn

import robench
from robench.cli import main
from robench.errors import RobenchError

EPS = 0.02


class Flat(nn.Module):
    """Images in [0, 1] to logits, normalising inside: the kind of model a user brings."""

    def __init__(self, classes: int):
        super().__init__()
        self.linear = nn.Linear(3 * 32 * 32, classes)

    def forward(self, x):
        return self.linear((x.flatten(1) - 0.5) / 0.25)


def _fgsm_accuracy(model, x, y) -> float:
    adversarial = torchattacks.FGSM(model, eps=EPS)(x, y)
    with torch.no_grad():
        return (model(adversarial).argmax(1) == y).float().mean().item()


def test_benchmark_evaluates_the_given_module_as_torchattacks_does(trained, tmp_path):
    model, x, y = trained
    rows = robench.benchmark(model, dataset="synthetic", image_size=32, attacks="fgsm", eps=EPS,
                             escalation="off", out=tmp_path / "run", quiet=True)
    assert set(rows["status"]) == {"ok"} and set(rows["strategy"]) == {"given"}
    clean, fgsm = (rows[rows["attack"] == name].iloc[0] for name in ("none", "fgsm"))
    with torch.no_grad():
        assert clean["clean_acc"] == pytest.approx((model(x).argmax(1) == y).float().mean().item())
    assert clean["n_test"] == len(y) and fgsm["n_attacked"] == len(y)
    assert fgsm["robust_acc"] == pytest.approx(_fgsm_accuracy(model, x, y), abs=1 / len(y))  # one image of float rounding at most
    assert fgsm["robust_acc"] < clean["clean_acc"]
    assert rows.attrs["run_dir"] == str(tmp_path / "run") and "given" in (tmp_path / "run" / "leaderboard.md").read_text()


def test_benchmark_of_the_same_model_again_resumes_and_another_class_count_is_refused(tmp_path):
    torch.manual_seed(0)
    model = Flat(7)
    options = {"dataset": "synthetic", "image_size": 32, "attacks": "fgsm", "eps": EPS, "escalation": "off",
               "out": tmp_path / "run", "quiet": True}
    first = robench.benchmark(model, **options)
    again = robench.benchmark(model, **options)  # same weights: same file hash, the finished run is read back
    assert first[["attack", "robust_acc"]].equals(again[["attack", "robust_acc"]])
    assert len((tmp_path / "run" / "results.jsonl").read_text().splitlines()) == len(first)
    with pytest.raises(RobenchError, match="answers 5 classes on a 3x32x32 image, the dataset has 7"):
        robench.benchmark(Flat(5), **options | {"out": tmp_path / "five"})
    with pytest.raises(RobenchError, match="gives nothing .* for a 3x224x224 image"):
        robench.benchmark(model, **options | {"image_size": None, "out": tmp_path / "size"})
    with pytest.raises(RobenchError, match="sets strategies itself"):
        robench.benchmark(model, **options | {"strategies": "full"})
    with pytest.raises(RobenchError, match="takes a torch.nn.Module"):
        robench.benchmark("model.pt", **options)


def test_eval_attacks_a_checkpoint_of_a_backbone(trained, tmp_path, capsys):
    model, x, y = trained
    checkpoint = tmp_path / "finetuned.pth"
    torch.save(model.model.state_dict(), checkpoint)  # the timm model inside robench's normalising wrapper
    command = ["eval", "--model", str(checkpoint), "--backbone", "robench_vit_micro", "--dataset", "synthetic",
               "--image-size", "32", "--attacks", "fgsm", "--eps", str(EPS), "--escalation", "off", "--quiet"]
    assert main(command + ["--out", str(tmp_path / "run")]) == 0
    rows = {row["attack"]: row for row in map(json.loads, (tmp_path / "run" / "results.jsonl").read_text().splitlines())}
    with torch.no_grad():
        assert rows["none"]["clean_acc"] == pytest.approx((model(x).argmax(1) == y).float().mean().item())
    assert rows["fgsm"]["robust_acc"] == pytest.approx(_fgsm_accuracy(model, x, y), abs=1 / len(y))
    assert rows["none"]["strategy"] == f"given(file={checkpoint})" and rows["none"]["trainable_params"] == 0


@pytest.mark.parametrize(("extra", "message"), [
    ([], "robench eval needs --model FILE"),
    (["--model", "MISSING", "--strategies", "full"], "it replaces --strategies"),
    (["--model", "MISSING"], "--model MISSING not found"),
    (["--model", "CHECKPOINT", "--defenses", "pgd_at"], "trains nothing, so no defense can train it"),
    (["--model", "FIVE"], "the checkpoint answers 5 classes, the dataset has 7"),
])
def test_eval_refuses_in_one_line(extra, message, tmp_path, capsys):
    import timm

    import robench_plugins.backbones.timm  # noqa: F401  (registers robench_vit_micro with timm)

    for name, classes in (("CHECKPOINT", 7), ("FIVE", 5)):
        torch.save(timm.create_model("robench_vit_micro", num_classes=classes).state_dict(), tmp_path / f"{name}.pth")
    extra = [str(tmp_path / f"{a}.pth") if a in ("CHECKPOINT", "FIVE") else a for a in extra]
    code = main(["eval", "--dataset", "synthetic", "--backbone", "robench_vit_micro", "--image-size", "32",
                 "--out", str(tmp_path / "run"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
