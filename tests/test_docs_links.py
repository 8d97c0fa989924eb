"""README.md and docs/*.md: every relative link points to a file that exists (and to a heading
of it when the link names an anchor); the README still opens with its two commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parent.parent
PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^()\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)


def prose(page: Path) -> str:
    """The page without its fenced code blocks."""
    return FENCE.sub("", page.read_text(encoding="utf-8"))


def anchors(page: Path) -> set[str]:
    """The anchors GitHub makes of a page's headings."""
    found: set[str] = set()
    for heading in HEADING.findall(prose(page)):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def relative_links(page: Path) -> list[str]:
    """The page's links that are neither absolute URLs nor mail addresses."""
    return [target for target in LINK.findall(prose(page))
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target)]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(REPO_ROOT).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading with anchor #{anchor}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_docs_pages_are_linked_from_readme() -> None:
    linked = {(REPO_ROOT / target.partition("#")[0]).resolve()
              for target in relative_links(REPO_ROOT / "README.md")}
    missing = [page.name for page in PAGES[1:] if page.resolve() not in linked]
    assert not missing, f"docs pages not linked from README.md: {missing}"


def test_readme_opens_with_the_two_commands() -> None:
    opening = (REPO_ROOT / "README.md").read_text(encoding="utf-8").split("\n")[:6]
    assert opening[2] == "```bash"
    assert opening[3].startswith("scripts/up.sh ")
    assert opening[4].startswith("scripts/test.sh ")


def test_anchor_rules() -> None:
    """The slug rule on headings the docs use."""
    page = REPO_ROOT / "docs" / "http-api.md"
    assert "flowers-cli-against-our-cloud" in anchors(page)
    assert "command-line-agata" in anchors(page)
