"""Where pages go, merging runs into one page, and the page's table as CSV and JSON.

The merge tests split one real two-seed run of the micro ViT into two one-seed run folders (its
rows and config.json, as two `--seeds 0` and `--seeds 1` commands write them), so that the
merged page can be compared with the page the run makes of both seeds.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from filelock import FileLock, Timeout

from robench.cli import main
from robench.core.results import read_rows
from robench.errors import RobenchError
from robench.report import export, leaderboard, publish
from tests.test_cli import FAST, run_cli
from tests.test_leaderboard import make_run

GRID = [*FAST[:-2], "1", "--quiet", "--strategies", "linear_probe", "--attacks", "fgsm,pgd:steps=1", "--eps", "0.01"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``(both, seed0, seed1, workdir)``: a run of seeds 0 and 1, and its two seeds as run folders of their own."""
    workdir = tmp_path_factory.mktemp("merge")
    both = workdir / "both"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)  # where pages used to land, in ./leaderboards
        patch.setattr("robench.report.plots.write_plots", lambda *args, **kwargs: [])  # seconds; tested in test_plots.py
        assert main(["run", *GRID, "--seeds", "0,1", "--out", str(both)]) == 0
    config = json.loads((both / "config.json").read_text())
    singles = []
    for seed in (0, 1):
        folder = workdir / f"seed{seed}"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config | {
            "seeds": [seed], "name": folder.name, "command": config["command"].replace("0,1", str(seed))}))
        (folder / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in read_rows(both) if row["seed"] == seed))
        singles.append(folder)
    return both, *singles, workdir


@pytest.fixture
def no_plots(monkeypatch):
    """Pages without their PNGs, which take a second each to draw and are tested in test_plots.py."""
    monkeypatch.setattr("robench.report.plots.write_plots", lambda *args, **kwargs: [])


def numbers(page: str) -> str:
    """A page from its first table on, without the plot links and the marker (they name the page)."""
    body = page.split("## Robust accuracy", 1)[1]
    return "\n".join(line for line in body.splitlines() if not line.startswith(("![", "<!--")))


def test_a_run_writes_its_page_into_its_own_folder_only(runs):
    both, _, _, workdir = runs
    assert (both / "leaderboard.md").is_file()
    assert not (workdir / "leaderboards").exists()


@pytest.mark.parametrize("order", [(1, 2), (2, 1)], ids=["seed0,seed1", "seed1,seed0"])
def test_merging_two_seeds_runs_gives_the_page_of_one_run_of_both(runs, order):
    merged = [runs[i] for i in order]
    assert numbers(leaderboard.render(merged)) == numbers(leaderboard.render(runs[0]))
    pd.testing.assert_frame_equal(export.table(merged), export.table(runs[0]))


def test_leaderboard_command_merges_runs_into_a_folder_beside_them_with_csv_and_json(runs, capsys, no_plots):
    _, seed0, seed1, workdir = runs
    code, out, err = run_cli(capsys, "leaderboard", str(seed0), str(seed1), "--format", "md,csv,json")
    folder = workdir / "seed0-and-seed1"
    assert code == 0, err
    assert out.strip() == str(folder / "leaderboard.md")
    page = (folder / "leaderboard.md").read_text()
    assert "- **merged from 2 runs**" in page and "`seed0` (seeds 0," in page and "`seed1` (seeds 1," in page
    assert "--seeds 0 " in page and "--seeds 1 " in page  # each run's command
    assert publish.made_from(folder / "leaderboard.md") == [("seed0", publish.run_id(seed0)), ("seed1", publish.run_id(seed1))]
    table = pd.read_csv(folder / "leaderboard.csv")
    assert list(table["attack"]) == ["worst case", "fgsm", "pgd(steps=1)"] and set(table["seeds"]) == {2}
    assert (table["robust_acc_low"] <= table["robust_acc"]).all() and (table["robust_acc"] <= table["robust_acc_high"]).all()
    document = json.loads((folder / "leaderboard.json").read_text())
    assert [run["name"] for run in document["runs"]] == ["seed0", "seed1"]
    # a strategy without a rank (robench.report.rankable): an empty cell in the CSV, null in the JSON
    assert [row["rank"] for row in document["rows"]] == [None if pd.isna(r) else int(r) for r in table["rank"]]
    pd.testing.assert_frame_equal(pd.DataFrame(document["rows"]).drop(columns="rank"), table.drop(columns="rank"),
                                  check_dtype=False)


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c["comparable"].update(image_size=48), "--image-size 32 vs 48"),
    (lambda c: c["comparable"].update(split_fingerprint="0123abcd0123"), "split fingerprint (which images are held out) "),
    (lambda c: c["comparable"].update(weights="sha256 of other weights"), "--weights (sha256) "),
    (lambda c: c["comparable"].update(test_set="isic2018"), "--test-set split vs isic2018"),
    (lambda c: c["comparable"]["recipes"]["linear_probe"].update(epochs=3),
     "'linear_probe' trained with another recipe (epochs 1 vs 3)"),
    (lambda c: c["comparable"]["plugins"].update({"attack fgsm": "robench 9.9"}), "attack fgsm from robench"),
    (lambda c: c.pop("comparable"), "does not record the settings a merge compares"),
])
def test_runs_that_are_not_comparable_are_refused_in_one_line(runs, tmp_path, capsys, change, message):
    _, seed0, seed1, _ = runs
    other = tmp_path / "other"
    shutil.copytree(seed1, other)
    config = json.loads((other / "config.json").read_text())
    change(config)
    (other / "config.json").write_text(json.dumps(config))
    code, _, err = run_cli(capsys, "leaderboard", str(seed0), str(other), "--leaderboard-dir", str(tmp_path / "lb"))
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "lb").exists()


def test_the_same_model_in_two_runs_is_a_conflict(runs, capsys):
    both, seed0, _, _ = runs
    code, _, err = run_cli(capsys, "leaderboard", str(both), str(seed0))
    assert code == 2 and "both hold strategy 'linear_probe' seed 0" in err


def test_a_published_page_is_not_replaced_by_another_runs_unless_forced(tmp_path, no_plots):
    first, second = make_run(tmp_path / "a" / "exp"), make_run(tmp_path / "b" / "exp")  # same name, same page
    published = leaderboard.write(first, tmp_path / "boards")
    before = published.read_text()
    refused = r"is the page of another run folder named ham-vit_tiny-\S+, not of .*b/exp: pass --force"
    with pytest.raises(RobenchError, match=refused):
        leaderboard.write(second, tmp_path / "boards")
    assert published.read_text() == before
    assert leaderboard.write(first, tmp_path / "boards") == published  # its own run may rewrite it
    leaderboard.write(second, tmp_path / "boards", force=True)
    assert publish.made_from(published) == [(published.stem, publish.run_id(second))]
    (tmp_path / "boards" / "old.md").write_text("# a page from before robench recorded its runs\n")
    with pytest.raises(RobenchError, match="does not say which runs it was made from"):
        leaderboard.write(first, tmp_path / "boards", name="old")


def test_a_merged_page_is_replaced_by_its_runs_but_not_by_one_of_them(runs, tmp_path, no_plots):
    _, seed0, seed1, _ = runs
    page = leaderboard.write([seed0, seed1], tmp_path / "boards", name="m")
    assert page == tmp_path / "boards" / "m.md"
    assert leaderboard.write([seed1, seed0], tmp_path / "boards", name="m") == page
    with pytest.raises(RobenchError, match="another run folder named seed1"):
        leaderboard.write(seed0, tmp_path / "boards", name="m")


def test_run_refuses_to_publish_over_another_runs_page_before_training(tmp_path, capsys):
    boards = tmp_path / "boards"
    boards.mkdir()
    (boards / "exp.md").write_text("page\n" + publish.marker([{"name": "exp", "dir": tmp_path / "a" / "exp"}]) + "\n")
    code, _, err = run_cli(capsys, "run", *GRID, "--out", str(tmp_path / "b" / "exp"), "--leaderboard-dir", str(boards))
    assert code == 2 and "boards/exp.md is the page of another run folder named exp" in err
    assert not (tmp_path / "b" / "exp").exists()


def test_marker_survives_a_name_that_would_end_the_comment(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(publish.marker([{"name": "x-->y", "dir": tmp_path}]) + "\n")
    assert publish.made_from(page) == [("x-->y", publish.run_id(tmp_path))]


def test_an_unknown_format_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(capsys, "run", *GRID, "--format", "md,xls", "--out", str(tmp_path / "r"))
    assert code == 2 and "--format 'md,xls': give md, csv or json" in err


def test_a_page_never_replaces_a_runs_own_files(tmp_path, capsys, no_plots):
    run = make_run(tmp_path / "r")
    before = (run / "config.json").read_bytes()
    code, _, err = run_cli(capsys, "leaderboard", str(run), "--leaderboard-dir", str(run), "--name", "config", "--format", "md,json")
    assert code == 2 and f"a page named 'config' would write {run / 'config.json'}, the name of a run's own config.json" in err
    assert (run / "config.json").read_bytes() == before and not (run / "config.md").exists()


def test_a_write_that_fails_midway_leaves_the_published_page_and_no_partial_file(tmp_path, monkeypatch, no_plots):
    run = make_run(tmp_path / "r")
    published = leaderboard.write(run, tmp_path / "boards")
    before = {page: page.read_text() for page in (run / publish.PAGE, published)}
    real = Path.write_text

    def disk_full(self, data, *args, **kwargs):  # half the page reaches the disk, then it is full
        real(self, data[: len(data) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", disk_full)
    with pytest.raises(OSError, match="No space left"):
        leaderboard.write(run, tmp_path / "boards")
    assert {page: page.read_text() for page in before} == before
    assert not [path for path in tmp_path.rglob("*") if path.name.endswith(".partial")]


def test_a_page_is_claimed_and_written_under_a_hidden_lock_of_its_name(tmp_path, monkeypatch, no_plots):
    run, held = make_run(tmp_path / "r"), []
    real = export.write

    def write(pages, *args):  # the last step of a page's writes: another publisher of the name must still wait
        try:
            FileLock(tmp_path / "boards" / ".p.lock", timeout=0).acquire()
        except Timeout:
            held.append(True)
        real(pages, *args)

    monkeypatch.setattr(export, "write", write)
    leaderboard.write(run, tmp_path / "boards", name="p")
    assert held == [True]
    assert sorted(p.name for p in (tmp_path / "boards").iterdir() if not p.name.startswith(".")) == ["p.md"]  # the lock is out of sight
