"""Issue 25: a page opens with a table of at most ten columns and one paragraph of what the paired
tests support (robench.report.headline), on per-image records built by hand with known answers."""

from __future__ import annotations

from robench.report import headline, leaderboard
from tests.test_rankable import COLUMNS, alive, answers, constant, good, model_rows, write_run


def low(seed: int) -> list[dict]:
    """Right on 54 clean images like `good`, but keeping only 4 under every column."""
    return model_rows("low", seed, answers(alive(54)), {column: answers(alive(4)) for column in COLUMNS})


def glance(page: str) -> tuple[list[str], dict[str, list[str]], str]:
    """The headline table's header, its rows by strategy, and the paragraph under it."""
    body = page.split("## At a glance\n\n", 1)[1]
    table, rest = body.split("\n\n", 1)
    lines = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()]
    return lines[0], {row[1]: row for row in lines[2:]}, rest.split("\n\n", 1)[0]


def test_the_page_opens_with_ten_columns_at_most_and_says_what_the_tests_support(tmp_path):
    close = [row | {"strategy": "close"} for row in good(0, shift=1)]
    run = write_run(tmp_path / "run", constant(0) + good(0) + close + low(0), strategies=("constant", "good", "close", "low"))
    page = leaderboard.render(run)
    assert page.index("## At a glance") < page.index("- **") < page.index("## Robust accuracy")  # before provenance and grid
    header, rows, paragraph = glance(page)
    assert header == ["rank", "strategy", "clean acc", "balanced acc", "worst case@0.01", "worst case@0.02",
                      "trainable params", "flags"]
    assert len(header) <= 10 and list(rows) == ["good", "close", "low", "constant"]
    assert [rows[s][0] for s in rows] == ["1=", "1=", "3", "–"]
    assert rows["good"][4].startswith("40.00 [")  # 24 of 60 images survive both attacks at 0.01
    assert "good is more robust than low (+" in paragraph and "close is more robust than low (+" in paragraph
    assert "Not shown apart: good and close." in paragraph
    assert "Not ranked: constant (balanced accuracy 33.3%" in paragraph


def test_no_separation_is_said_as_such_and_more_than_three_eps_show_three():
    assert headline._supported(["a", "b"], []) == "No paired test separates the 2 ranked strategies: none is shown to be more robust than another."
    assert headline._supported(["a"], []).startswith("Fewer than two strategies")
    columns = [("worst case", e) for e in (0.01, 0.02, 0.03, 0.04, 0.05)]
    assert headline.shown_eps(columns) == [columns[0], columns[2], columns[4]]
    assert headline.shown_eps(columns[:3]) == columns[:3]
    # with less room (the clean ECE column and a minimal attack's median eps* take two), fewer eps
    assert headline.shown_eps(columns, room=2) == [columns[0], columns[4]]
    assert headline.shown_eps(columns, room=0) == [columns[0]]
    assert headline.shown_eps(columns[:2], room=2) == columns[:2]
