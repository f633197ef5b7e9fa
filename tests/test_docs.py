"""The docs stay true: the tutorial shows the example plugins' files exactly as shipped, and
every relative link in the README and docs/ points at a file that exists."""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO

DOCS = REPO / "docs"
EXAMPLES = DOCS / "examples"


def test_tutorial_shows_every_example_file_as_it_is():
    text = (DOCS / "writing-plugins.md").read_text()
    shown = dict(re.findall(r"^`(robench-[\w-]+/[^`]+)`:\n\n```\w+\n(.*?)^```", text, flags=re.M | re.S))
    shipped = [p for p in EXAMPLES.rglob("*") if p.suffix == ".py" or p.name == "pyproject.toml"]
    shipped = {str(p.relative_to(EXAMPLES)) for p in shipped if not {"build", "__pycache__"} & set(p.parts)}
    assert set(shown) == shipped
    for path, body in shown.items():
        assert body == (EXAMPLES / path).read_text(), path


@pytest.mark.parametrize("page", [REPO / "README.md", *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name)
def test_relative_links_resolve(page):
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:|#", target):
            continue
        assert (page.parent / target.split("#")[0]).exists(), f"{page.name} links to missing {target}"
