"""Issue 24, family 1: a site built from hostile run files fetches nothing from elsewhere. Strings from
the rows and config.json that hold markdown images and links aimed at a server (here one on loopback
that counts what it is asked) are opened in a real headless Chromium; the server must see no request,
while the site's own plots still load."""

from __future__ import annotations

import json
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from robench.cli import main
from tests.test_cli import FAST
from tests.test_site import _chromium


class Counting(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self):  # noqa: N802  (http.server's name)
        Counting.seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.slow  # 10 s or more: default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_a_site_of_hostile_run_files_makes_no_network_request(tmp_path, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"http://127.0.0.1:{server.server_address[1]}"
    hostile = f"![x]({host}/label.png) [click]({host}/link) <img src={host}/raw.png>"
    monkeypatch.setenv("ROBENCH_QUIET", "1")
    run = tmp_path / "run"
    assert main(["run", *FAST, "--strategies", "linear_probe", "--attacks", "fgsm", "--eps", "0.01,0.02",
                 "--out", str(run)]) == 0
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    for row in rows:
        row["strategy"] = f"lp {hostile}"
        if row["status"] == "ok" and row["attack"] == "fgsm" and row["eps"] == 0.02:
            row["status"], row["error"] = "failed", f"RuntimeError: {hostile}"
    (run / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = json.loads((run / "config.json").read_text())
    config["strategies"] = [f"lp {hostile}"]
    config["command"] += f" --data-dir '{hostile}'"
    config["dataset"]["description"] = hostile
    (run / "config.json").write_text(json.dumps(config))
    www = tmp_path / "www"
    assert main(["site", str(run), "--to", str(www)]) == 0

    driver, profile = _chromium()
    try:
        for page in ("index.html", "per-class.html", "report.html"):
            driver.get((www / page).as_uri())
            driver.execute_script("return document.readyState")
        driver.get((www / "report.html").as_uri())
        loaded = driver.execute_script("return Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0)"
                                       ".map(i => i.getAttribute('src'))")
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
        server.shutdown()
    assert Counting.seen == [], Counting.seen
    assert any(src.endswith(".png") and "://" not in src for src in loaded), loaded  # its own plots still show


@pytest.mark.slow  # 13 s: default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_a_command_cannot_close_its_fence_and_directional_controls_are_shown_escaped(tmp_path, monkeypatch):
    """Issue 24, family 1: a line of three backquotes in the command ended the page's code block, and a
    class named with U+202E (right-to-left override) showed itself and what followed it backwards."""
    monkeypatch.setenv("ROBENCH_QUIET", "1")
    run = tmp_path / "run"
    assert main(["run", *FAST, "--strategies", "linear_probe", "--attacks", "fgsm", "--eps", "0.01", "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    config["command"] += "\n```\n![x](http://127.0.0.1:9/p.png)\n```"
    classes = config["dataset"]["classes"]
    classes[classes.index("nv")] = "mel\u202eneb"  # a benign class: the malignant ones are named in "malignant" too
    (run / "config.json").write_text(json.dumps(config))
    assert main(["leaderboard", str(run), "--leaderboard-dir", str(tmp_path / "boards")]) == 0
    assert main(["site", str(run), "--to", str(tmp_path / "www")]) == 0
    page = (run / "leaderboard.md").read_text()
    assert "\u202e" not in page and "mel\\u202eneb" in page
    assert "````\nrobench run" in page  # a fence one backquote longer than the command's own
    index = (tmp_path / "www" / "index.html").read_text()
    assert "\u202e" not in index and "<img" not in index.split("robench run", 1)[1].split("</code>", 1)[0]
    for page in ("index.html", "per-class.html", "report.html"):  # every page forbids fetching from elsewhere
        text = (tmp_path / "www" / page).read_text()
        assert "Content-Security-Policy" in text and "default-src 'none'" in text, page


@pytest.mark.slow  # a whole run, 8 s on idle cores
def test_the_markdown_page_of_hostile_run_files_has_no_image_html_or_cut_row(tmp_path, monkeypatch):
    """Issue 24, family 1, on the .md page (GitHub renders it): a label, class, description or error
    holding an image, raw HTML or a | stays text, and every table row stays one row."""
    hostile = "![x](http://127.0.0.1:9/p.png) <img src=http://127.0.0.1:9/q.png> a|b"
    monkeypatch.setenv("ROBENCH_QUIET", "1")
    run = tmp_path / "run"
    assert main(["run", *FAST, "--strategies", "linear_probe", "--attacks", "fgsm", "--eps", "0.01,0.02", "--out", str(run)]) == 0
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    for row in rows:
        row["strategy"] = f"lp {hostile}"
        if row["attack"] == "fgsm" and row["eps"] == 0.02:
            row["status"], row["error"] = "failed", f"RuntimeError: {hostile}\nsecond line"
    (run / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = json.loads((run / "config.json").read_text())
    config["strategies"] = [f"lp {hostile}"]
    config["dataset"]["description"] = hostile
    classes = config["dataset"]["classes"]
    classes[classes.index("nv")] = hostile
    config["command"] += " --data-dir '<b>![c](http://127.0.0.1:9/c.png)'"
    (run / "config.json").write_text(json.dumps(config))
    assert main(["leaderboard", str(run), "--leaderboard-dir", str(tmp_path / "boards")]) == 0
    page = (run / "leaderboard.md").read_text()
    command = page.split("Command:", 1)[1].split("\n## ", 1)[0]
    prose = page.replace(command, "")
    assert "<img" not in prose and "![x]" not in prose and "&lt;img" in prose and "!\\[x]" in prose
    assert "--data-dir '<b>![c](http://127.0.0.1:9/c.png)'" in command  # the command is shown as typed, in its fence
    for table in re.findall(r"((?:^\|.*\n)+)", page, flags=re.MULTILINE):
        widths = {len(re.findall(r"(?<!\\)\|", line)) for line in table.splitlines()}
        assert len(widths) == 1, table  # no row cut by a | or a line break from the data
