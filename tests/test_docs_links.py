"""The README and docs/*.md: every relative link and image points at a file that exists, every
``#anchor`` at a heading of its page, the README stays short, starts with the two commands that
``.ci/run`` mirrors, and links to every page in docs/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250
FIRST_LINES = [
    "# LoveCS for QGIS",
    "",
    "```bash",
    "make setup demo   # install QGIS 3.22, GDAL and the engine (venv, pinned torch), then run the end-to-end demo",
    "make test         # every test, headless",
    "```",
]

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
# [text](target) and ![alt](target); the target ends at whitespace or ')'
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def _prose(text: str) -> str:
    """The page without fenced code blocks and inline code (links there are not links)."""
    return _CODE.sub("", _FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: inline markup dropped, lower case, punctuation removed
    (letters, digits, '-', '_' and spaces kept), spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = text.replace("`", "").replace("*", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in _HEADING.findall(_FENCE.sub("", page.read_text(encoding="utf-8"))):
        base = slug(heading)
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return out


def links(page: Path) -> list[str]:
    return _LINK.findall(_prose(page.read_text(encoding="utf-8")))


def _problems(page: Path) -> list[str]:
    problems = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: …
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            problems.append(f"{target}: {dest} does not exist")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{target}: no heading '#{anchor}' in {dest.relative_to(ROOT)}")
    return problems


def test_slug_follows_github():
    assert slug('The dock: "Adapt to this image"') == "the-dock-adapt-to-this-image"
    assert slug("Model files (`.lovecs`)") == "model-files-lovecs"
    assert slug("What happens when…") == "what-happens-when"
    assert slug("Correcting the map: click, refine, measure") == (
        "correcting-the-map-click-refine-measure"
    )


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_relative_links_and_images_resolve(page):
    assert _problems(page) == []


def test_a_broken_link_is_caught(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# Here it is\n", encoding="utf-8")
    page.write_text(
        "# Page\n[ok](there.md#here-it-is) [gone](missing.md) ![img](pics/none.png)\n"
        "[bad anchor](there.md#nowhere) [self](#page) [web](https://example.org/x)\n"
        "```\n[in code](also-missing.md)\n```\n",
        encoding="utf-8",
    )
    problems = _problems(page)
    assert len(problems) == 3, problems
    assert any("missing.md" in p for p in problems)
    assert any("none.png" in p for p in problems)
    assert any("#nowhere" in p for p in problems)


def test_readme_is_short_and_starts_with_the_two_commands():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(links(README)) > 10  # the pattern finds the README's links
    assert len(lines) <= README_MAX_LINES
    assert lines[: len(FIRST_LINES)] == FIRST_LINES
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make setup demo" in ci and "make test" in ci


def test_readme_links_every_docs_page():
    linked = {
        (README.parent / t.partition("#")[0]).resolve()
        for t in links(README)
        if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I)
    }
    missing = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in linked]
    assert missing == []
