"""Every relative link in the README and docs/ resolves inside the repository.

A clone of the repository is all a reader has: a link to a file outside it, to a file
that was moved, or to a heading that was renamed is a broken promise to an integrator.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]

_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_INLINE_CODE = re.compile(r"`[^`]*`")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def markdown_files() -> list[Path]:
    """The README, everything under docs/, and the notes beside the deploy files."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    files += sorted((ROOT / "deploy").rglob("*.md"))
    return files


def prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """Lines outside fenced code blocks, with their numbers."""
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def links(path: Path) -> Iterator[tuple[int, str]]:
    """Every link target in a Markdown file, with its line number."""
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for match in _LINK.finditer(_INLINE_CODE.sub("", line)):
            yield number, match.group(1)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").strip().lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of every heading in a Markdown file, repeats numbered as GitHub does."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = _HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """Each relative link of ``path`` that leaves the repository ``root`` or leads nowhere."""
    problems = []
    for number, target in links(path):
        where = f"{path.relative_to(root)}:{number}: {target}"
        if not target or _EXTERNAL.match(target):
            continue  # https:, mailto: and the like are not files of this repository
        file_part, _, fragment = target.partition("#")
        if file_part.startswith("/"):
            problems.append(f"{where}: absolute path; use a relative one")
            continue
        resolved = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not resolved.is_relative_to(root):
            problems.append(f"{where}: points outside the repository")
            continue
        if not resolved.exists():
            problems.append(f"{where}: no such file")
            continue
        if fragment and resolved.suffix == ".md" and unquote(fragment) not in anchors(resolved):
            problems.append(f"{where}: no heading #{fragment} in {resolved.relative_to(root)}")
    return problems


def test_the_readme_and_the_docs_exist() -> None:
    """The files this test reads are there, so an empty list cannot pass by accident."""
    files = markdown_files()
    assert ROOT / "README.md" in files
    assert ROOT / "docs" / "CONTRACT.md" in files
    assert sum(1 for f in files for _ in links(f)) > 50


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(path: Path) -> None:
    """Files exist, headings named by anchors exist, and nothing points outside the clone."""
    assert broken_links(path) == []


def test_a_link_outside_the_repository_or_to_a_missing_heading_is_caught(
    tmp_path: Path,
) -> None:
    """The checker itself finds the mistakes it exists for."""
    tmp_path = tmp_path.resolve()
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "CONTRACT.md").write_text("# Outside\n", encoding="utf-8")
    (root / "docs" / "CONTRACT.md").write_text(
        "# Contract\n\n## 5. HTTP API (coupon-query, default `127.0.0.1:8080`)\n",
        encoding="utf-8",
    )
    page = root / "docs" / "page.md"
    page.write_text(
        "# Title\n\n[up](../../shared/CONTRACT.md) [gone](missing.md) "
        "[anchor](CONTRACT.md#no-such-heading) "
        "[ok](CONTRACT.md#5-http-api-coupon-query-default-1270018080) "
        "[here](#title) [web](https://example.com/x.md) `[code](nowhere.md)`\n\n"
        "```\n[in code](nowhere.md)\n```\n",
        encoding="utf-8",
    )
    problems = broken_links(page, root)
    assert len(problems) == 3
    assert "outside the repository" in problems[0]
    assert "no such file" in problems[1]
    assert "no heading #no-such-heading" in problems[2]


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("What happens when things fail", "what-happens-when-things-fail"),
        (
            "5. HTTP API (coupon-query, default `127.0.0.1:8080`)",
            "5-http-api-coupon-query-default-1270018080",
        ),
        ("ReceiptEvent (`pos.receipts.v1`)", "receiptevent-posreceiptsv1"),
        ("Punchcard: design", "punchcard-design"),
    ],
)
def test_heading_anchors_are_made_as_github_makes_them(heading: str, anchor: str) -> None:
    """Lower case, punctuation dropped, spaces to hyphens."""
    assert slug(heading) == anchor
