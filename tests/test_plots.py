"""Accuracy-vs-eps plots: one real PNG per attack, linked from both copies of the page, and
curves made of the leaderboard's own numbers, starting at the clean model."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from urllib.parse import unquote

import pytest
from PIL import Image

from robench.cli import main
from robench.core.results import append_row, read_frame, write_config
from robench.report import leaderboard
from robench.report.plots import curves, file_name, write_plots
from robench.report.summary import PROTOCOLS, summarise
from tests.test_leaderboard import (
    ATTACKS,
    CLEAN,
    FAILED,
    SEEDS,
    config,
    make_run,
    robust,
    row,
)

NAME = config()["name"]


def linked_images(page: Path) -> list[Path]:
    """The files a markdown page embeds, resolved relative to the page as a viewer does."""
    return [page.parent / unquote(link) for link in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", page.read_text())]


def assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width > 400 and image.height > 300
        assert len(image.getcolors(maxcolors=1 << 16) or range(1 << 16)) > 10  # not a blank canvas


def test_write_makes_one_png_per_attack_linked_from_both_pages(tmp_path):
    run_dir = make_run(tmp_path / "run")
    page = leaderboard.write(run_dir, tmp_path / "boards")
    expected = [file_name(NAME, attack) for attack in ATTACKS]
    for markdown in (page, run_dir / "leaderboard.md"):
        images = linked_images(markdown)
        assert [image.name for image in images] == expected
        for image in images:
            assert_png(image)


@pytest.mark.parametrize("protocol", ["all", "correct"])
def test_curves_start_at_clean_and_repeat_the_summary(tmp_path, protocol):
    run_dir = make_run(tmp_path / "run", protocol=protocol)
    points = curves(summarise(read_frame(run_dir)), "pgd", PROTOCOLS[protocol])
    full = points[points["strategy"] == "full"].set_index("eps")
    clean = [CLEAN["full", seed][0] for seed in SEEDS]
    assert list(full.index) == [0.0, 0.01, 0.02]
    assert full.loc[0.0, "mean"] == pytest.approx(statistics.mean(clean) if protocol == "all" else 1.0)
    values = [robust("full", seed, "pgd", 0.02) for seed in SEEDS]
    if protocol == "correct":
        values = [round(v / CLEAN["full", seed][0], 4) for v, seed in zip(values, SEEDS)]
    assert full.loc[0.02, "mean"] == pytest.approx(statistics.mean(values))
    assert full.loc[0.02, "std"] == pytest.approx(statistics.stdev(values))
    failed = points[(points["strategy"] == FAILED[0]) & (points["eps"] == FAILED[3])]
    assert list(failed["n"]) == [1]  # the failed seed is left out, not drawn as a value


def test_an_attacked_eps_zero_is_drawn_instead_of_the_clean_point(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_config(run_dir, config(seeds=[0], attacks=["fgsm"], eps=[0.0]))
    append_row(run_dir, row("full", 0))
    append_row(run_dir, row("full", 0, "fgsm", 0.0) | {"robust_acc": 0.25})  # a broken attack
    points = curves(summarise(read_frame(run_dir)), "fgsm", PROTOCOLS["all"])
    assert points[["eps", "mean"]].values.tolist() == [[0.0, 0.25]]


def test_one_seed_one_eps_still_plots(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_config(run_dir, config(seeds=[0], attacks=["fgsm"], eps=[0.01], strategies=["full"]))
    append_row(run_dir, row("full", 0))
    append_row(run_dir, row("full", 0, "fgsm", 0.01))
    page = leaderboard.write(run_dir, tmp_path / "boards")
    (image,) = linked_images(page)
    assert image.name == file_name(NAME, "fgsm")
    assert_png(image)


def test_a_run_without_attacks_gets_no_plot_section(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_config(run_dir, config(attacks=[]))
    append_row(run_dir, row("full", 0))
    page = leaderboard.write(run_dir, tmp_path / "boards")
    assert linked_images(page) == [] and "Accuracy vs eps" not in page.read_text()
    assert write_plots(run_dir, [tmp_path / "p"]) == [] and not (tmp_path / "p").exists()


def test_file_names_are_safe_and_links_quoted(tmp_path):
    assert file_name("t", "pgd(steps=20)") == "t-pgd-steps-20.png"
    assert file_name("t", "pgd(alpha=1/255, steps=5)") == "t-pgd-alpha-1-255-steps-5.png"
    page = leaderboard.write(make_run(tmp_path / "run"), tmp_path / "boards", name="my run")
    assert "(my%20run-fgsm.png)" in page.read_text()
    assert_png(linked_images(page)[0])


def test_plot_command_remakes_the_pngs(tmp_path, capsys):
    run_dir = make_run(tmp_path / "run")
    assert main(["plot", str(run_dir), "--out", str(tmp_path / "png")]) == 0
    out = capsys.readouterr().out.split()
    assert out == [str(tmp_path / "png" / file_name(NAME, attack)) for attack in ATTACKS]
    for path in out:
        assert_png(Path(path))
    assert main(["plot", str(run_dir)]) == 0  # default: beside the run's own page
    assert (run_dir / file_name(NAME, "fgsm")).is_file()


def test_plot_command_errors_are_one_line(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "none")]) == 2
    run_dir = tmp_path / "clean"
    run_dir.mkdir()
    write_config(run_dir, config(attacks=[]))
    append_row(run_dir, row("full", 0))
    assert main(["plot", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "run directory" in err and "no attacked cells" in err



def test_labels_with_dollars_are_drawn_as_text_and_labels_whose_slugs_collide_keep_a_plot_each(tmp_path):
    """Issue 24: a label holding `$\\alpha^$` once reached matplotlib's mathtext and raised (no page for
    that run ever again), and two labels differing only in a full-width digit shared one PNG."""
    from robench.report.plots import file_names

    files = file_names("t", ["pgd(steps=2)", "pgd(steps=\uff12)", "fgsm"])
    assert len(set(files.values())) == 3 and files["fgsm"] == "t-fgsm.png"
    run_dir = make_run(tmp_path / "run")
    renames = {"fgsm": "fgsm $\\alpha^$", "pgd": "pgd(steps=\uff12)", "full": "$\\alpha^$ full"}
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    for found in rows:
        found["attack"] = renames.get(found["attack"], found["attack"])
        found["strategy"] = renames.get(found["strategy"], found["strategy"])
    (run_dir / "results.jsonl").write_text("".join(json.dumps(found) + "\n" for found in rows))
    config = json.loads((run_dir / "config.json").read_text())
    config["strategies"] = [renames.get(s, s) for s in config["strategies"]]  # the rows' models, as a run lists them
    (run_dir / "config.json").write_text(json.dumps(config))
    written = write_plots(run_dir, [tmp_path / "png"], NAME)
    assert {attack for attack, _ in written} >= {renames["fgsm"], renames["pgd"]}
    assert len({file for _, file in written}) == len(written)
    for _, file in written:
        assert_png(tmp_path / "png" / file)
