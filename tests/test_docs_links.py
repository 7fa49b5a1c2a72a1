"""Every relative link in README.md and docs/*.md points to an existing file (and, for `#anchor`, a heading there).

A moved page leaves dead links behind without anyone noticing; this test notices.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tiny_project import ROOT

DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])

FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def links(text: str) -> list[str]:
    """Markdown link targets outside code, which GitHub does not render as links."""
    return LINK.findall(CODE.sub("", FENCE.sub("", text)))


def anchors(text: str) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens."""
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in HEADING.findall(FENCE.sub("", text))}


def test_link_and_anchor_parsing() -> None:
    text = "[a](x.md#b-c) `[no](y.md)`\n```\n[no](z.md)\n```\n## B, c\n### 8. `torch.compile` on CPU\n"
    assert links(text) == ["x.md#b-c"]
    assert anchors(text) == {"b-c", "8-torchcompile-on-cpu"}


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in links(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text(encoding="utf-8")):
            broken.append(f"{target}: no heading #{anchor}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)
