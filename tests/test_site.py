"""`robench site`: the website holds every row of the run, fetches nothing, opens from file://, and in a
real headless Chromium a click on a header sorts the table (skipped when no Chromium is installed)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from robench.cli import main
from robench.core.results import read_frame, read_rows
from tests.test_cli import FAST, run_cli
from tests.test_leaderboard import table

# The module's run and site cost about 25 s: the default pytest stays under 4 min; CI runs these with -m slow.
pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
STRATEGIES = ("linear_probe", "linear_probe(lr=0.01)")
COLUMNS = ("worst case@0.01", "worst case@0.02", "fgsm@0.01", "fgsm@0.02")  # the worst case: fgsm and its escalation


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> tuple[Path, Path]:
    """One tiny synthetic run (two linear probes, the fastest strategy) and its site: (run, site folder)."""
    root = tmp_path_factory.mktemp("site")
    with pytest.MonkeyPatch.context() as env:  # the module fixture runs before conftest's per-test one
        env.setenv("ROBENCH_CACHE_DIR", str(root / "cache"))
        env.setenv("ROBENCH_QUIET", "1")
        assert main(["run", *FAST, "--strategies", "linear_probe,linear_probe:lr=0.01", "--attacks", "fgsm",
                     "--eps", "0.01,0.02", "--out", str(root / "run"), "--leaderboard-dir", str(root / "boards")]) == 0
        assert main(["site", str(root / "run"), "--to", str(root / "www")]) == 0
    return root / "run", root / "www"


class Page(HTMLParser):
    """The table rows (their data- attributes and cell texts) and every URL a page refers to."""

    def __init__(self, text: str):
        super().__init__()
        self.rows, self.urls, self._cell = [], [], None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-strategy" in attrs:
            self.rows.append({**{k[5:]: v for k, v in attrs.items() if k.startswith("data-")}, "cells": {}})
        if tag == "td" and self.rows:
            self._cell = (attrs.get("class") or "").split()[0].removeprefix("col-")
            self.rows[-1]["cells"][self._cell] = ""
        self.urls += [(tag, attrs[key]) for key in ("src", "href") if attrs.get(key)]

    def handle_data(self, data):
        if self._cell:
            self.rows[-1]["cells"][self._cell] += data

    def handle_endtag(self, tag):
        if tag == "td":
            self._cell = None


def test_the_site_holds_every_row_with_the_markdown_pages_numbers(site):
    run_dir, www = site
    rows = Page((www / "index.html").read_text()).rows
    frame = read_frame(run_dir)
    assert set(frame["strategy"]) == set(STRATEGIES)
    expected = {(s, c.split("@")[0], c.split("@")[1], p) for s in STRATEGIES for c in COLUMNS for p in ("all", "correct")}
    assert {(r["strategy"], r["attack"], r["eps"], r["protocol"]) for r in rows} == expected and len(rows) == len(expected)
    page = {row["strategy"]: row for row in table((run_dir / "leaderboard.md").read_text(), "## Robust accuracy").values()}
    for row in rows:
        if row["protocol"] == "all":
            column = f"{row['attack']}@{row['eps']}"
            assert row["cells"]["robust"] == page[row["strategy"]][column]
            assert row["cells"]["clean"] == page[row["strategy"]]["clean acc"]


def test_the_site_fetches_nothing_and_every_link_opens_from_the_folder(site):
    _, www = site
    for name in ("index.html", "per-class.html", "report.html"):
        urls = Page((www / name).read_text()).urls
        assert urls, name
        for tag, url in urls:
            parts = urlsplit(url)
            assert not parts.scheme and not parts.netloc, (name, tag, url)  # no http(s)://, no //host
            if parts.path:
                assert (www / unquote(parts.path)).is_file(), (name, url)
    index = (www / "index.html").read_text()
    assert '<script src="site.js">' in index and 'href="site.css"' in index and "per-class.html#fgsm-0.01" in index
    assert (www / "per-class.html").read_text().count("<table") == len(COLUMNS)


def _split_by_strategy(run_dir: Path, root: Path) -> list[Path]:
    """The run's rows as two run folders of one strategy each, as two commands would have written them."""
    config, rows = json.loads((run_dir / "config.json").read_text()), read_rows(run_dir)
    folders = []
    for strategy in STRATEGIES:
        folder = root / strategy.replace("(", "-").replace(")", "").replace("=", "")
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config | {"strategies": [strategy], "name": folder.name}))
        (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if r["strategy"] == strategy))
        folders.append(folder)
    return folders


def test_a_site_of_two_comparable_runs_shows_what_the_site_of_one_run_of_both_shows(site, tmp_path, capsys):
    run_dir, www = site
    parts = _split_by_strategy(run_dir, tmp_path)
    code, out, err = run_cli(capsys, "site", *map(str, parts), "--to", str(tmp_path / "merged"))
    assert code == 0 and out.strip() == str(tmp_path / "merged" / "index.html"), err
    merged = Page((tmp_path / "merged" / "index.html").read_text()).rows
    assert sorted(map(str, merged)) == sorted(map(str, Page((www / "index.html").read_text()).rows))
    config = json.loads((parts[1] / "config.json").read_text())
    (parts[1] / "config.json").write_text(json.dumps(config | {"comparable": config["comparable"] | {"image_size": 64}}))
    code, _, err = run_cli(capsys, "site", *map(str, parts), "--to", str(tmp_path / "refused"))
    assert code == 2 and err.count("\n") == 1 and "--image-size 32 vs 64" in err, err


@pytest.mark.parametrize("case, message", [("missing run", "nope not found: pass the --out folder"),
                                           ("empty run", "empty is not a robench run folder (it has no config.json)"),
                                           ("merged page", "merged is a merged page's folder (it has no config.json)"),
                                           ("--to is a file", "is a file: pass a folder")])
def test_bad_input_is_one_line_and_writes_nothing(capsys, site, tmp_path, case, message):
    run_dir, _ = site
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "results.jsonl").write_text("")
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "leaderboard.md").write_text("# a page of two runs")
    run, to = {"missing run": (tmp_path / "nope", tmp_path / "www"), "empty run": (tmp_path / "empty", tmp_path / "www"),
               "merged page": (tmp_path / "merged", tmp_path / "www"),
               "--to is a file": (run_dir, tmp_path / "file")}[case]
    code, _, err = run_cli(capsys, "site", str(run), "--to", str(to))
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "www").exists() and (tmp_path / "file").read_text() == "x"


def _chromium():
    """A headless Chromium driven through the Debian package's chromedriver, never a downloaded one."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip(f"no Chromium ({CHROMIUM}) or chromedriver ({CHROMEDRIVER}): apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="robench-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options), profile


VISIBLE = """return Array.from(document.querySelectorAll('#board tbody tr')).filter(r => !r.hidden)
             .map(r => [r.dataset.strategy, r.dataset.protocol, r.querySelector('td.col-' + arguments[0]).dataset.sort]);"""


def test_a_header_click_sorts_the_table_in_headless_chromium(site, tmp_path):
    _, www = site
    driver, profile = _chromium()
    try:
        driver.get((www / "index.html").as_uri())
        shown = driver.execute_script(VISIBLE, "robust")
        assert {protocol for _, protocol, _ in shown} == {"all"}  # the run's headline protocol is preselected
        assert driver.find_element("id", "count").text == f"{len(shown)} of {2 * len(shown)} rows"
        header = driver.find_element("css selector", "#board th[data-key='robust'] button")
        assert not driver.find_element("css selector", "details.provenance").get_attribute("open")  # folded: the table first
        header.click()  # an accuracy: the best first
        values = [float(v) for _, _, v in driver.execute_script(VISIBLE, "robust")]
        assert len(values) == len(shown) and len(set(values)) > 1 and values == sorted(values, reverse=True)
        header.click()
        assert [float(v) for _, _, v in driver.execute_script(VISIBLE, "robust")] == sorted(values)
        driver.execute_script("var s = document.querySelector(\"select[data-filter='protocol']\"); s.value = '';"
                              "s.dispatchEvent(new Event('change'));")  # a change event alone re-filters
        assert driver.find_element("id", "count").text == f"{2 * len(shown)} of {2 * len(shown)} rows"
        driver.execute_script("var s = document.querySelector(\"select[data-filter='protocol']\"); s.value = 'all';"
                              "s.dispatchEvent(new Event('change'));")
        driver.find_element("css selector", "input[data-filter='strategy']").send_keys("lr=")
        assert {s for s, _, _ in driver.execute_script(VISIBLE, "robust")} == {"linear_probe(lr=0.01)"}
        screenshot = tmp_path / "site.png"
        assert driver.save_screenshot(str(screenshot))
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
