"""The leaderboard shows the right numbers, both protocols, the baselines and the failures."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from robench.core.results import append_row, read_frame, write_config
from robench.errors import RobenchError
from robench.report import leaderboard, publish

N_TEST = 90
STRATEGIES = ("vpt_deep(prompts=5)", "full")  # not alphabetical: the config's order must win
SEEDS = (0, 1)
ATTACKS = ("fgsm", "pgd")
EPS = (0.01, 0.02)
# clean (acc, balanced acc) per strategy and seed: full sits on the majority baseline (collapse)
CLEAN = {
    ("full", 0): (0.6778, 0.1614),
    ("full", 1): (0.6667, 0.1429),
    ("vpt_deep(prompts=5)", 0): (0.7889, 0.5210),
    ("vpt_deep(prompts=5)", 1): (0.8111, 0.5532),
}
PARAMS = {"full": 5_524_999, "vpt_deep(prompts=5)": 11_527}
BACKBONE_PARAMS = 5_524_999
MAJORITY = 0.6690
FAILED = ("vpt_deep(prompts=5)", 1, "pgd", 0.02)
GARBAGE = 0.999  # written into the failed row: it must never reach an average


def robust(strategy, seed, attack, eps):
    """Distinct, plausible robust accuracies: lower for larger eps and for PGD, VPT far less robust."""
    clean = CLEAN[strategy, seed][0]
    survival = {"full": {"fgsm": 0.85, "pgd": 0.7}, "vpt_deep(prompts=5)": {"fgsm": 0.3, "pgd": 0.2}}
    return round(clean * survival[strategy][attack] ** (eps / 0.01) - 0.011 * seed, 4)


def config(**changes):
    base = {
        "robench_version": "0.1.0",
        "command": "robench run --dataset ham10000 --strategies full,vpt_deep(prompts=5) --out runs/t",
        "created": "2026-11-22T10:30:00+00:00",
        "name": "ham-vit_tiny-20261122-103000",
        "dataset": {
            "name": "ham10000",
            "description": "HAM10000 (dermatoscopic images), 600 of 10015 images, 224x224",
            "n_images": 600,
            "classes": ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"],
        },
        "split": {"seed": 0, "fingerprint": "3fa2c1d09e4b", "n_train": 420, "n_val": 90,
                  "n_test": N_TEST, "test_set": "lesion-grouped split of the dataset"},
        "backbone": {"name": "vit_tiny_patch16_224",
                     "weights": "vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors",
                     "weights_sha256": "a22e9b36" + "0" * 56, "image_size": 224, "params": BACKBONE_PARAMS},
        "seeds": list(SEEDS),
        "strategies": list(STRATEGIES),
        "attacks": list(ATTACKS),
        "eps": list(EPS),
        "protocol": "all",
        "versions": {"robench": "0.1.0", "torch": "2.14.1", "timm": "1.0.31", "torchattacks": "3.5.1",
                     "peft": "0.21.2", "python": "3.11.7"},
        "device": "cpu",
    }
    return base | changes


def row(strategy, seed, attack="none", eps=0.0, status="ok"):
    clean_acc, clean_bacc = CLEAN[strategy, seed]
    attacked = attack != "none"
    robust_acc = robust(strategy, seed, attack, eps) if attacked else None
    if status == "failed":
        robust_acc = GARBAGE
    return {
        "strategy": strategy, "strategy_name": strategy.split("(")[0], "seed": seed,
        "attack": attack, "attack_name": attack, "eps": eps,
        "n_test": N_TEST, "clean_acc": clean_acc, "clean_bacc": clean_bacc, "majority_acc": MAJORITY,
        "robust_acc": robust_acc, "robust_bacc": robust_acc and robust_acc * 0.7,
        "n_clean_correct": round(clean_acc * N_TEST),
        "acc_on_correct": robust_acc and (GARBAGE if status == "failed" else round(robust_acc / clean_acc, 4)),
        "attack_success_rate": robust_acc and (GARBAGE if status == "failed" else round(1 - robust_acc / clean_acc, 4)),
        "trainable_params": PARAMS[strategy], "backbone_params": BACKBONE_PARAMS,
        "epochs": 5, "best_epoch": 4, "train_seconds": 61.5 + seed, "seconds_per_epoch": 12.3 + seed / 5,
        "peak_mem_mb": 812.0, "attack_seconds": 3.2 if attacked else None,
        "status": status, "error": "RuntimeError: CUDA out of memory" if status == "failed" else None,
    }


def make_run(run_dir: Path, seeds=SEEDS, **config_changes) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, config(seeds=list(seeds), **config_changes))
    for strategy in STRATEGIES:
        for seed in seeds:
            append_row(run_dir, row(strategy, seed))
            for attack in ATTACKS:
                for eps in EPS:
                    failed = (strategy, seed, attack, eps) == FAILED
                    append_row(run_dir, row(strategy, seed, attack, eps, "failed" if failed else "ok"))
    return run_dir


@pytest.fixture
def run_dir(tmp_path):
    return make_run(tmp_path / "runs" / "t")


def table(markdown: str, heading: str) -> dict[str, dict[str, str]]:
    """The first markdown table after ``heading``, as {first cell: {column: cell}}."""
    lines = markdown.split(heading, 1)[1].splitlines()
    rows = [line for line in lines[lines.index(next(l for l in lines if l.startswith("|"))):]]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in
            rows[: next((i for i, l in enumerate(rows) if not l.startswith("|")), len(rows))]]
    header, body = rows[0], rows[2:]
    return {cells[0]: dict(zip(header, cells)) for cells in body}


def expected(values, n_asked=len(SEEDS)) -> str:
    text = f"{100 * statistics.mean(values):.2f}"
    if len(values) > 1:
        text += f" ± {100 * statistics.stdev(values):.2f}"
    return text + (f" (n={len(values)})" if len(values) < n_asked else "")


def robust_values(strategy, attack, eps, metric="robust_acc"):
    values = []
    for seed in SEEDS:
        if (strategy, seed, attack, eps) == FAILED:
            continue
        value = robust(strategy, seed, attack, eps)
        values.append(value if metric == "robust_acc" else round(value / CLEAN[strategy, seed][0], 4))
    return values


MAIN = "## Robust accuracy over all test images"
OTHER = "## Other protocol"


def test_summarise_counts_each_model_once_and_skips_failed_rows(run_dir):
    summary = leaderboard.summarise(read_frame(run_dir)).set_index(["strategy", "attack", "eps", "metric"])
    clean = summary.xs(("full", "none", "clean_acc"), level=["strategy", "attack", "metric"]).iloc[0]
    values = [CLEAN["full", seed][0] for seed in SEEDS]
    # five rows repeat each model's clean accuracy; counting them all would change n and std
    assert clean["n"] == 2
    assert clean["mean"] == pytest.approx(statistics.mean(values))
    assert clean["std"] == pytest.approx(statistics.stdev(values))
    failed_cell = summary.loc[(FAILED[0], "pgd", 0.02, "robust_acc")]
    assert failed_cell["n"] == 1
    assert failed_cell["mean"] == pytest.approx(robust(FAILED[0], 0, "pgd", 0.02))


def test_main_table_shows_mean_and_std_over_seeds(run_dir):
    rows = table(leaderboard.render(run_dir), MAIN)
    assert list(rows) == list(STRATEGIES)
    for strategy in STRATEGIES:
        cells = rows[strategy]
        assert cells["clean acc"] == expected([CLEAN[strategy, s][0] for s in SEEDS])
        assert cells["balanced acc"] == expected([CLEAN[strategy, s][1] for s in SEEDS])
        for attack in ATTACKS:
            for eps in EPS:
                assert cells[f"{attack}@{eps:g}"] == expected(robust_values(strategy, attack, eps))
    assert rows["full"]["trainable params"] == "5.5M (100%)"
    assert rows["vpt_deep(prompts=5)"]["trainable params"] == "11.5k (0.209%)"
    assert rows["full"]["s/epoch"] == "12.4 ± 0.1"
    assert rows["full"]["train s"] == "62 ± 1"
    assert rows["full"]["peak MiB"] == "812 ± 0"


def test_failed_cell_is_listed_and_not_averaged(run_dir):
    text = leaderboard.render(run_dir)
    cell = table(text, MAIN)[FAILED[0]]["pgd@0.02"]
    assert cell == f"{100 * robust(FAILED[0], 0, 'pgd', 0.02):.2f} (n=1)"  # one seed: no ±
    failed = table(text, "## Failed cells")
    assert failed[FAILED[0]]["seed"] == "1"
    assert failed[FAILED[0]]["attack"] == "pgd"
    assert failed[FAILED[0]]["error"] == "RuntimeError: CUDA out of memory"
    assert f"{100 * GARBAGE:.2f}" not in text


def test_protocol_switch_swaps_main_and_other_table(tmp_path):
    rows_all = table(leaderboard.render(make_run(tmp_path / "a")), MAIN)
    text = leaderboard.render(make_run(tmp_path / "c", protocol="correct"))
    main = table(text, "## Accuracy on the clean-correct subset")
    other = table(text, "## Other protocol: robust accuracy over all test images")
    assert main["full"]["fgsm@0.01"] == expected(robust_values("full", "fgsm", 0.01, "acc_on_correct"))
    assert main["full"]["fgsm@0.01"] != rows_all["full"]["fgsm@0.01"]
    assert other["full"]["fgsm@0.01"] == rows_all["full"]["fgsm@0.01"]
    assert main["full"]["clean acc"] == rows_all["full"]["clean acc"]
    assert "n_clean_correct" in text.split(OTHER)[0]  # the denominator is named under the main table


def test_other_protocol_is_always_shown(run_dir):
    text = leaderboard.render(run_dir)
    other = table(text, "## Other protocol: accuracy on the clean-correct subset")
    assert other["full"]["pgd@0.02"] == expected(robust_values("full", "pgd", 0.02, "acc_on_correct"))
    assert f"all {N_TEST} test images" in text.split(OTHER)[0]


def test_baselines_shown(run_dir):
    text = leaderboard.render(run_dir)
    assert "majority class" in text and "66.90% accuracy" in text
    assert "1/7 = 14.29%" in text


def test_header_states_what_was_run(run_dir):
    header = leaderboard.render(run_dir).split(MAIN)[0]
    assert header.startswith("# robench leaderboard: ham-vit_tiny-20261122-103000\n")
    assert "```\n" + config()["command"] + "\n```" in header
    for fact in ("3fa2c1d09e4b", "420 train / 90 val / 90 test", "lesion-grouped", "sha256 a22e9b360000)",
                 "vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors", "image size 224", "seeds**: 0, 1",
                 "torch 2.14.1", "timm 1.0.31", "torchattacks 3.5.1", "peft 0.21.2", "python 3.11.7",
                 "robench 0.1.0", "**device**: cpu", "2026-11-22T10:30:00+00:00", "ham10000: HAM10000"):
        assert fact in header, fact


def test_old_config_without_keys_says_unknown(run_dir):
    old = {"seeds": list(SEEDS), "strategies": list(STRATEGIES)}
    (run_dir / "config.json").write_text(json.dumps(old))
    text = leaderboard.render(run_dir)
    assert text.startswith("# robench leaderboard: t\n")  # falls back to the run dir's name
    assert "fingerprint `unknown`" in text and "torch unknown" in text and "**device**: unknown" in text
    assert "chance balanced accuracy (also the majority class's): unknown" in text
    assert f"all {N_TEST} test images" in text  # n_test taken from the rows instead


def test_single_seed_run_has_no_std(tmp_path):
    text = leaderboard.render(make_run(tmp_path / "one", seeds=(0,)))
    rows = table(text, MAIN)
    assert rows["full"]["clean acc"] == f"{100 * CLEAN['full', 0][0]:.2f}"
    assert "±" not in text.split("## Failed cells")[0].replace("mean ± sample std", "")
    assert "(n=" not in text.split("## Failed cells")[0].replace("`(n=k)`", "")


def test_clean_only_model_and_notes(tmp_path):
    run_dir = tmp_path / "clean"
    run_dir.mkdir()
    write_config(run_dir, config(attacks=[]))
    for seed in SEEDS:
        append_row(run_dir, row("full", seed))
    text = leaderboard.render(run_dir, notes={"full": "¹"}, footnotes=["¹ clean acc equals the majority baseline"])
    cells = table(text, MAIN)["full"]
    assert cells["clean acc"] == expected([CLEAN["full", s][0] for s in SEEDS])
    assert cells["notes"] == "¹"
    assert not any("@" in column for column in cells)
    assert "¹ clean acc equals the majority baseline" in text
    assert "## Failed cells\n\nNone." in text


def test_write_puts_page_in_both_places(run_dir, tmp_path):
    path = leaderboard.write(run_dir, tmp_path / "board")
    assert path == tmp_path / "board" / "ham-vit_tiny-20261122-103000.md"
    plots = [(attack, f"{path.stem}-{attack}.png") for attack in ATTACKS]
    assert path.read_text() == (run_dir / "leaderboard.md").read_text()
    assert path.read_text().startswith(leaderboard.render(run_dir, plots=plots))
    assert publish.made_from(path) == [("ham-vit_tiny-20261122-103000", publish.run_id(run_dir))]
    assert leaderboard.write(run_dir, tmp_path / "board", name="mine") == tmp_path / "board" / "mine.md"


@pytest.mark.parametrize("content", [None, "", '{"strategy": "full"'])  # missing, empty, torn line
def test_no_results_is_a_user_error(tmp_path, content):
    run_dir = tmp_path / "x"
    run_dir.mkdir()
    if content is not None:
        (run_dir / "results.jsonl").write_text(content)
    with pytest.raises(RobenchError, match=r"no results in .*results\.jsonl: run `robench run --out .*x` first"):
        leaderboard.write(run_dir, tmp_path / "board")
    assert not (tmp_path / "board").exists()


def test_cell_written_twice_counts_once_with_its_last_value(run_dir):
    rerun = row("full", 0, "fgsm", 0.01) | {"robust_acc": 0.5}  # a resumed run repeats the cell
    append_row(run_dir, rerun)
    cell = table(leaderboard.render(run_dir), MAIN)["full"]["fgsm@0.01"]
    assert cell == expected([0.5, robust("full", 1, "fgsm", 0.01)])


@pytest.mark.parametrize(("eps", "shown"), [(0.25 / 255, "0.25/255"), (0.5 / 255, "0.5/255"), (0.75 / 255, "0.75/255"),
                                            (1 / 255, "1/255"), (2 / 255, "2/255"), (16 / 255, "16/255"),
                                            (0.01, "0.01"), (0.02, "0.02"), (0.002, "0.002"), (0.5, "0.5")])
def test_eps_is_shown_in_quarters_of_a_pixel_level_or_as_typed(eps, shown):
    from robench.core.metrics import eps_label

    assert eps_label(eps) == shown
