"""Issue 24, family 2: a strategy, class or attack label that a spreadsheet would run as a formula
(OWASP CSV injection) is written into the page's CSV and the per-class CSV as text."""

from __future__ import annotations

import csv
import json

import pytest

from robench.report import leaderboard
from tests.test_leaderboard import make_run

FORMULAS = {"full": "=HYPERLINK(\"http://x\",\"full\")", "fgsm": "+fgsm", "pgd": "@pgd"}
CLASS = "-1+cmd|' /C calc'!A0"


def test_labels_and_classes_that_look_like_formulas_are_text_in_every_csv(tmp_path):
    run_dir = make_run(tmp_path / "run")
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    for row in rows:
        row["strategy"] = FORMULAS.get(row["strategy"], row["strategy"])
        row["attack"] = FORMULAS.get(row["attack"], row["attack"])
    (run_dir / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = json.loads((run_dir / "config.json").read_text())
    config["dataset"]["classes"][0] = CLASS
    config["strategies"] = [FORMULAS.get(s, s) for s in config.get("strategies", [])]
    config["attacks"] = [FORMULAS.get(a, a) for a in config.get("attacks", [])]
    (run_dir / "config.json").write_text(json.dumps(config))
    page = leaderboard.write(run_dir, tmp_path / "boards", formats=("md", "csv"))
    written = [page.with_suffix(".csv"), *page.parent.glob("*-per-class.csv")]
    assert len(written) >= 1 and written[0].is_file()
    cells = [cell for path in written for line in csv.reader(path.open()) for cell in line]
    assert any(FORMULAS["full"] in cell for cell in cells)  # the label is there, as text
    dangerous = [cell for cell in cells if cell[:1] in ("=", "+", "@", "\t", "\r")
                 or (cell.startswith("-") and not _number(cell))]
    assert not dangerous, dangerous
    assert "'" + FORMULAS["full"] in cells


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_the_api_refuses_arguments_of_the_wrong_type_in_one_line():
    """Issue 24, family 9: these were TypeError tracebacks."""
    import robench
    from robench.errors import RobenchError

    for call, message in [(lambda: robench.load_run(None), "takes a run folder"), (lambda: robench.load_run(3), "not int 3"),
                          (lambda: robench.list_plugins(["attack"]), "unknown plugin kind ['attack']")]:
        with pytest.raises(RobenchError, match=None) as caught:
            call()
        assert message in str(caught.value) and "\n" not in str(caught.value)



@pytest.mark.parametrize(("field", "value", "shown"), [
    ("robust_acc", 7, "got 7"), ("robust_acc", -5, "got -5"), ("robust_acc", 1e308, "got 1e+308"),
    ("robust_acc", float("nan"), "got nan"), ("clean_bacc", 1.5, "got 1.5"), ("eps", -0.01, "got -0.01"),
])
def test_an_impossible_number_read_back_is_one_line_naming_file_line_and_field(tmp_path, capsys, field, value, shown):
    """Issue 24, family 7: these were shown as 700 %, -500 %, 1e310 % and nan on the page."""
    from robench.cli import main

    run_dir = make_run(tmp_path / "run")
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    damaged = json.loads(lines[1])
    damaged[field] = value
    lines[1] = json.dumps(damaged)  # NaN is written as JSON's NaN, which Python's json reads back
    (run_dir / "results.jsonl").write_text("\n".join(lines) + "\n")
    before = sorted(p.name for p in run_dir.iterdir())
    assert main(["leaderboard", str(run_dir), "--leaderboard-dir", str(tmp_path / "boards")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "results.jsonl line 2" in err and f"field {field} must be a finite number" in err and shown in err
    assert sorted(p.name for p in run_dir.iterdir()) == before and not (tmp_path / "boards").exists()


@pytest.mark.parametrize(("flags", "message"), [
    (["--strategies", "linear_probe:epochs=100000"], "linear_probe:epochs=100000: epochs 100000 is out of range"),
    (["--seeds", ",".join(map(str, range(1001)))], "--seeds lists 1,001 seeds, more than 1,000"),
])
def test_limits_hold_for_every_way_a_number_arrives(tmp_path, capsys, flags, message):
    """Issue 24, family 6: per-strategy overrides passed the flags' bounds, repeated eps wrote identical rows."""
    from robench.cli import main

    argv = ["run", "--dataset", "synthetic", "--strategies", "linear_probe", "--attacks", "fgsm", "--eps", "0.01",
            "--seeds", "0", "--out", str(tmp_path / "run")]
    for flag, value in zip(flags[::2], flags[1::2]):
        argv[argv.index(flag) + 1] = value
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "run").exists()


def test_a_toml_nested_thousands_deep_is_one_line(tmp_path, capsys):
    from robench.cli import main

    config = tmp_path / "deep.toml"
    config.write_text("seeds = " + "[" * 3000 + "]" * 3000 + "\n")
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "nests arrays or tables too deep" in err and err.count("\n") == 1


def test_one_eps_written_three_ways_is_one_cell(tmp_path):
    from robench.cli import main
    from robench.core.results import read_rows

    assert main(["run", "--dataset", "synthetic", "--strategies", "linear_probe", "--attacks", "fgsm", "--eps",
                 "0.01,1/100,0.010", "--seeds", "0", "--escalation", "off", "--quiet", "--out", str(tmp_path / "run")]) == 0
    assert [(row["attack"], row["eps"]) for row in read_rows(tmp_path / "run")] == [("none", 0.0), ("fgsm", 0.01)]


def test_a_malignant_class_that_is_no_class_is_one_line(tmp_path, capsys):
    """Issue 24, family 7: this was a ValueError traceback ('akiec' is not in list)."""
    from robench.cli import main

    run_dir = make_run(tmp_path / "run")
    config = json.loads((run_dir / "config.json").read_text())
    config["dataset"]["malignant"] = ["mel", "not-a-class"]
    (run_dir / "config.json").write_text(json.dumps(config))
    assert main(["leaderboard", str(run_dir), "--leaderboard-dir", str(tmp_path / "boards")]) == 2
    err = capsys.readouterr().err
    assert "field dataset.malignant names 'not-a-class', not a class of dataset.classes" in err and err.count("\n") == 1


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--attacks", "pgd:steps=100000000", "steps must be from 1 to 100,000"),
    ("--attacks", "pgd:restarts=5000", "restarts must be from 1 to 1,000"),
    ("--strategies", "vpt_deep:prompts=100000", "prompts must be from 1 to 1000"),
    ("--strategies", "lora:rank=1000000000", "rank must be from 1 to 4,096"),
    ("--strategies", "lora:alpha=nan", "alpha must be a finite number > 0"),
    ("--attacks", "autoattack:n_queries=1000000000000", "n_queries from 1 to 1,000,000"),
    ("--attacks", "square:n_queries=1000000000000", "n_queries must be from 1 to 1,000,000"),
    ("--attacks", "minimal:rounds=1000000000", "rounds must be from 1 to 64"),
    ("--defenses", "pgd_at:steps=1000000000", "steps must be from 1 to 1,000 (per training batch)"),
    ("--defenses", "trades:beta=nan", "beta must be a finite number >= 0"),
    ("--dataset", "synthetic:seed=-1", "seed must be from 0 to 4294967295"),
])
def test_plugin_options_have_upper_bounds_checked_before_anything_is_allocated(tmp_path, capsys, flag, value, message):
    """Issue 24, family 6: these ran (or allocated 100,000 prompts) before failing."""
    from robench.cli import main

    argv = ["run", "--dataset", "synthetic", "--strategies", "linear_probe", "--attacks", "fgsm", "--eps", "0.01",
            "--seeds", "0", "--defenses", "none", "--out", str(tmp_path / "run")]
    argv[argv.index(flag) + 1] = value
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "run").exists()


def test_a_model_with_no_clean_correct_image_keeps_its_rows_readable(tmp_path):
    """robench itself writes NaN for a ratio over the clean-correct images when there are none (0 of 0):
    the range check of issue 24 must read it back, while a NaN accuracy stays refused."""
    from robench.core.results import append_row, read_rows, write_config

    write_config(tmp_path, {"name": "t"})
    row = {"strategy": "s", "seed": 0, "attack": "fgsm", "eps": 0.01, "status": "ok", "robust_acc": 0.0,
           "n_clean_correct": 0, "acc_on_correct": float("nan"), "attack_success_rate": float("nan")}
    append_row(tmp_path, row)
    assert len(read_rows(tmp_path)) == 1
    append_row(tmp_path, row | {"robust_acc": float("nan")})
    with pytest.raises(Exception, match="field robust_acc must be a finite number"):
        read_rows(tmp_path)


def test_rows_of_a_model_or_seed_config_json_does_not_list_are_refused_not_ranked(tmp_path, capsys):
    """Issue 24, family 7: rows appended from another run were ranked silently."""
    from robench.cli import main
    from tests.test_rankable import constant, good, write_run

    run = write_run(tmp_path / "run", constant(0) + good(0))
    extra = [row | {"strategy": "ghost"} for row in good(0)][:1] + [row | {"seed": 7} for row in good(0)][:1]
    with open(run / "results.jsonl", "a") as f:
        f.write(json.dumps(extra[0]) + "\n")
    assert main(["leaderboard", str(run), "--leaderboard-dir", str(tmp_path / "boards")]) == 2
    err = capsys.readouterr().err
    assert "line 11: field strategy 'ghost' is not a model config.json lists (constant, good)" in err and err.count("\n") == 1
    lines = (run / "results.jsonl").read_text().splitlines()
    (run / "results.jsonl").write_text("\n".join(lines[:-1] + [json.dumps(extra[1])]) + "\n")
    assert main(["leaderboard", str(run), "--leaderboard-dir", str(tmp_path / "boards")]) == 2
    assert "field seed 7 is not a seed config.json lists (0)" in capsys.readouterr().err
