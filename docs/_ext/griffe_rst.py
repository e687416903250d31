"""A griffe extension that renders redisguard's reStructuredText-flavoured docstrings as Markdown.

The docstrings are Google style (``Args:``, ``Returns:``, ``Raises:``) but use a few
reStructuredText constructs that read well in ``help()`` and badly as Markdown: cross-reference
roles (``:class:`Breaker```), literal-block markers (``text::``) and simple tables (``=====``
borders). The API reference (``mkdocs.yml``, mkdocstrings' ``extensions``) loads this module so
that the source keeps its plain-text form and the site gets:

- ``:class:`~redisguard.Breaker``` → ```Breaker``` (``~`` keeps the last component) and
  ``:func:`connect``` → ```connect``` (a code span, not a link: an unresolved link would fail
  ``mkdocs build --strict``);
- ``Example::`` → ``Example:`` (the indented block after it is already a Markdown code block);
- a simple table → a Markdown table (a row whose first cell is empty continues the row above).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|exc|obj|const):`(~?)([^`]+)`")
_BORDER = re.compile(r"^(\s*)(=+)(\s+=+)+\s*$")


def _role(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    if tilde:
        target = target.rsplit(".", 1)[-1]
    return f"``{target}``"


def _columns(border: str) -> list[tuple[int, int]]:
    """The (start, end) character span of each column of a table border line."""
    return [(m.start(), m.end()) for m in re.finditer(r"=+", border)]


def _cells(line: str, spans: list[tuple[int, int]]) -> list[str]:
    cells = []
    for i, (start, _) in enumerate(spans):
        end = spans[i + 1][0] if i + 1 < len(spans) else len(line)
        cells.append(line[start:end].strip())
    return cells


def _join(above: list[str], below: list[str]) -> list[str]:
    """Cells of a row continued on the next line (same number of columns)."""
    return [f"{a} {b}".strip() for a, b in zip(above, below, strict=True)]


def _table(lines: list[str], spans: list[tuple[int, int]], indent: str) -> list[str]:
    """A simple RST table's lines (borders included) as Markdown table lines."""
    borders = [i for i, line in enumerate(lines) if _BORDER.match(line)]
    has_header = len(borders) == 3
    rows: list[list[str]] = []
    header: list[str] | None = None
    for i, line in enumerate(lines):
        if i in borders or not line.strip():
            continue
        cells = _cells(line, spans)
        if has_header and i < borders[1]:
            header = cells if header is None else _join(header, cells)
            continue
        if rows and not cells[0]:
            rows[-1] = _join(rows[-1], cells)
        else:
            rows.append(cells)
    if header is None:
        header = [""] * len(spans)
    out = [indent + "| " + " | ".join(header) + " |", indent + "|" + "---|" * len(spans)]
    for row in rows:
        out.append(indent + "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return out


def rst_to_markdown(text: str) -> str:
    """Rewrite the reStructuredText constructs of ``text`` (see the module docstring)."""
    text = _ROLE.sub(_role, text)
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _BORDER.match(lines[i])
        if match:
            # A table runs from this border to the last border before a blank line.
            borders = [i]
            end = i + 1
            while end < len(lines) and lines[end].strip():
                if _BORDER.match(lines[end]):
                    borders.append(end)
                end += 1
            block = lines[i : borders[-1] + 1]
            out.extend(_table(block, _columns(lines[i]), match.group(1)))
            i = borders[-1] + 1
            continue
        line = lines[i]
        if line.rstrip().endswith("::"):
            stripped = line.rstrip()[:-2].rstrip()
            line = stripped + ":" if stripped.strip() else ""
        out.append(line)
        i += 1
    return "\n".join(out)


class RstToMarkdown(griffe.Extension):
    """Rewrite every docstring griffe loads (see the module docstring)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)
