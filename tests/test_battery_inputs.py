"""The hostile battery (issue 15), what robench reads: bad numbers and names in flags and config
files, files of a finished run edited or damaged, and files that are not weights. Each case ends in
exactly one line on stderr and exit status 2 (or a correct run), never a traceback, and changes no
file outside ``--out`` and the leaderboard folder (tests/battery.py says how that is checked).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from robench.core.results import CONFIG_FILE, RESULTS_FILE
from tests.battery import FAST, Place, hostile, refused

# --- flags, names and config files: refused before anything is decoded ---------------------------

@pytest.mark.parametrize(("flags", "message"), [
    (["--split-seed", "-1"], "--split-seed -1 is out of range: use a whole number from 0 to 4,294,967,295"),
    (["--seeds", "4294967296"], "--seeds 4294967296 is out of range"),
    (["--seeds", "-3"], "--seeds -3 is out of range"),
    (["--epochs", "100000"], "--epochs 100000 is out of range: use a whole number from 1 to 10,000"),
    (["--image-size", "100000"], "--image-size 100000: robench_vit_micro needs at least"),
    (["--image-size", "30"], "--image-size 30 is not a multiple of robench_vit_micro's patch size 4"),
    (["--image-size", "2"], "--image-size 2 is smaller than robench_vit_micro's patch size 4: use at least 4"),
    (["--threads", "100000"], "--threads 100000 is out of range: use a whole number from 1 to"),
    (["--lr", "nan"], "lr must be a finite number > 0"),
    (["--strategies", "full:lr=inf"], "lr must be a finite number > 0"),
    (["--name", "../x"], "--name: '../x' is not a valid name"),
    (["--name", "a/b"], "--name: 'a/b' is not a valid name"),
    (["--name", ".."], "--name: '..' is not a valid name"),
])
def test_a_bad_flag_is_one_line_before_anything_is_written(capsys, place, flags, message):
    refused(capsys, place, message, "run", *FAST, *flags, "--out", place.out, "--leaderboard-dir", place.boards)
    assert not (place.out / RESULTS_FILE).exists()


@pytest.mark.parametrize(("content", "message"), [
    (b'epochs = 1\nname = "caf\xe9"\n', "is not UTF-8 text (byte 0xe9 at position 22): save it as UTF-8"),
    (b'name = "../../x"\n', "--name: '../../x' is not a valid name"),
])
def test_a_hostile_config_file_is_one_line(capsys, place, content, message):
    (place.root / "run.toml").write_bytes(content)
    refused(capsys, place, message, "run", *FAST, "--config", place.root / "run.toml", "--out", place.out)


# --- files of a finished run, edited or damaged -----------------------------------------------------

def _edit_config(place: Place, change) -> None:
    path = place.out / CONFIG_FILE
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def _edit_row(place: Place, change, number: int = 1) -> None:
    """Replace line ``number`` of the results (1: the clean row, 2: the attacked row) by ``change(line)``."""
    path = place.out / RESULTS_FILE
    lines = path.read_text().splitlines(keepends=True)
    lines[number - 1] = change(lines[number - 1])
    path.write_text("".join(lines))


def _edit_field(place: Place, number: int, field: str, change) -> None:
    """Set a field of row ``number`` to ``change(its value)`` (None where the row lacks it)."""
    _edit_row(place, lambda line: json.dumps((row := json.loads(line)) | {field: change(row.get(field))}) + "\n", number)


def _one_changed(values: list, position: int, value) -> list:
    return [*values[:position], value, *values[position + 1:]]


def _without(row_line: str, field: str) -> str:
    row = json.loads(row_line)
    del row[field]
    return json.dumps(row) + "\n"


def _without_recipes(config: dict) -> dict:
    del config["comparable"]["recipes"]
    return config


DAMAGE = {
    "comparable a string": (lambda p: _edit_config(p, lambda c: c | {"comparable": "x"}),
                            "config.json: field comparable must be an object, got 'x'"),
    "config a list": (lambda p: _edit_config(p, lambda c: [c]), "config.json: it must be an object, got [{"),
    "recipes missing": (lambda p: _edit_config(p, _without_recipes), "config.json: field comparable.recipes is missing"),
    "config not UTF-8": (lambda p: (p.out / CONFIG_FILE).write_bytes(b'{"name": "caf\xe9"}'), "config.json is not valid JSON"),
    "seeds not numbers": (lambda p: _edit_config(p, lambda c: c | {"seeds": ["0"]}), "field seeds[0] must be a whole number"),
    "row a JSON list": (lambda p: _edit_row(p, lambda line: "[1, 2]\n"), "results.jsonl line 1: it must be an object, got [1, 2]"),
    "row without seed": (lambda p: _edit_row(p, lambda line: _without(line, "seed")), "results.jsonl line 1: field seed is missing"),
    "row not UTF-8": (lambda p: (p.out / RESULTS_FILE).write_bytes(b'{"strategy": "caf\xe9"}\n' + (p.out / RESULTS_FILE).read_bytes()),
                      "results.jsonl line 1 is not a JSON row"),
    # per-image records that pages index by: checked against config.json's attacked images and 7 classes
    "prediction not a class": (lambda p: _edit_field(p, 2, "adv_pred", lambda v: _one_changed(v, 3, 99)),
                               ("results.jsonl line 2: field adv_pred[3] must be a class index from 0 to 6 "
                                "(config.json lists 7 classes), got 99: the file was edited or damaged; delete that line")),
    "prediction negative": (lambda p: _edit_field(p, 1, "clean_pred", lambda v: _one_changed(v, 0, -1)),
                            "results.jsonl line 1: field clean_pred[0] must be a class index from 0 to 6"),
    "predictions cut short": (lambda p: _edit_field(p, 2, "adv_pred", lambda v: v[:-1]),
                              "results.jsonl line 2: field adv_pred holds 36 values, not one per attacked image (37 in config.json)"),
    "min_eps not numbers": (lambda p: _edit_field(p, 2, "min_eps", lambda _: [0.01, "x"]),
                            "results.jsonl line 2: field min_eps[1] must be a number or null, got 'x'"),
    "min_eps too long": (lambda p: _edit_field(p, 2, "min_eps", lambda _: [0.01, None] * 19),
                         "results.jsonl line 2: field min_eps holds 38 values, not one per attacked image"),
    "attacked ids cut short": (lambda p: _edit_config(p, lambda c: c | {"attacked": c["attacked"] | {"ids": c["attacked"]["ids"][1:]}}),
                               "config.json: field attacked.ids holds 36 ids for 37 attacked.labels"),
    "attacked label not a class": (lambda p: _edit_config(p, lambda c: c | {"attacked": c["attacked"] | {"labels": [7] * len(c["attacked"]["ids"])}}),
                                   ("config.json: field attacked.labels[0] must be a class index from 0 to 6 "
                                    "(dataset.classes lists 7 classes), got 7")),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
@pytest.mark.parametrize("command", ["run", "leaderboard"])
def test_a_damaged_run_file_is_one_line_naming_the_file_and_field(capsys, copied, damage, command):
    edit, message = DAMAGE[damage]
    edit(copied)
    rows_before = (copied.out / RESULTS_FILE).read_bytes()
    argv = ["run", *FAST, "--out", copied.out] if command == "run" else ["leaderboard", copied.out]
    refused(capsys, copied, message, *argv, "--leaderboard-dir", copied.boards)
    assert (copied.out / RESULTS_FILE).read_bytes() == rows_before


@pytest.mark.parametrize("command", ["leaderboard", "plot"])
def test_a_path_as_the_run_name_in_config_json_writes_nothing_outside(capsys, copied, command):
    _edit_config(copied, lambda c: c | {"name": "../../../../x"})
    boards = ["--leaderboard-dir", copied.boards] if command == "leaderboard" else []
    refused(capsys, copied, "config.json: field name: '../../../../x' is not a valid name", command, copied.out, *boards)


def test_a_run_resumed_over_that_name_takes_its_folder_s_name(capsys, copied):
    _edit_config(copied, lambda c: c | {"name": "../../../../x"})
    code, _, err = hostile(capsys, copied, "run", *FAST, "--out", copied.out, "--leaderboard-dir", copied.boards)
    assert code == 0 and err == ""
    assert json.loads((copied.out / CONFIG_FILE).read_text())["name"] == "run" and (copied.boards / "run.md").is_file()


@pytest.mark.parametrize("command", ["leaderboard", "plot"])
def test_a_path_as_name_flag_is_refused(capsys, copied, command):
    refused(capsys, copied, "--name: '../x' is not a valid name", command, copied.out, "--name", "../x")


# --- files that are not weights --------------------------------------------------------------------

class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("kind", ["pickle payload", "npz"])
def test_a_file_that_is_not_weights_is_refused_with_its_reason_and_never_executed(capsys, place, kind):
    marker = place.top / "executed"
    weights = place.root / ("w.pth" if kind == "pickle payload" else "w.npz")
    if kind == "pickle payload":
        weights.write_bytes(pickle.dumps(_Payload(marker)))
    else:
        np.savez(weights, a=np.zeros(3))
    err = refused(capsys, place, f"weights {weights.name} ", "run", *FAST, "--weights", weights, "--out", place.out)
    assert ": ;" not in err and not err.rstrip().endswith(":")  # a reason is given
    assert not marker.exists()
