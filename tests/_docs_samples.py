"""Run the Python samples of one Markdown page, in order, in one namespace.

Usage: ``python tests/_docs_samples.py PAGE.md``. Used by ``tests/test_docs.py``, one subprocess
per page (a page may install OpenTelemetry providers or register breakers: pages never share a
process). The page's samples see ``$REDIS_URL`` pointing at a private ``redis-server``.

What runs:

- every fenced block whose info string starts with ``python`` (```` ```python ````,
  ```` ```python title="app.py" ````), top to bottom;
- hidden set-up code in an HTML comment that starts with ``<!-- test-setup``: the rest of the
  comment is Python, run at that point of the page and not shown by MkDocs or GitHub. Use it for
  what a reader would already have (a running app, a fixture), never to hide what a sample needs.

Other fences (``console``, ``yaml``, ``ini``, ``text``...) are not Python and are not run.
A failure names the page and the line of the block that failed, with its traceback.
"""

from __future__ import annotations

import re
import sys
import textwrap
import traceback
import types
from dataclasses import dataclass
from pathlib import Path

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^\n]*)$")
_SETUP = "<!-- test-setup"


@dataclass(frozen=True)
class Sample:
    """One piece of Python from a page: its first line (1-based), its code, and its kind."""

    line: int
    code: str
    kind: str  # "python" (a fenced block) or "setup" (hidden set-up in a comment)


def samples(text: str) -> list[Sample]:
    """Every Python sample of ``text`` in page order (see the module docstring)."""
    found: list[Sample] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith(_SETUP):
            start = i
            body: list[str] = [line.lstrip()[len(_SETUP) :]]
            while "-->" not in body[-1] and i + 1 < len(lines):
                i += 1
                body.append(lines[i])
            if "-->" not in body[-1]:
                raise ValueError(f"line {start + 1}: unterminated {_SETUP} comment")
            body[-1] = body[-1][: body[-1].index("-->")]
            found.append(Sample(start + 2, _dedent(body), "setup"))
            i += 1
            continue
        match = _FENCE.match(line)
        if match is None:
            i += 1
            continue
        fence, indent = match["fence"], match["indent"]
        language = match["info"].split(" ", 1)[0].split("{", 1)[0].strip().lower()
        start = i
        body = []
        i += 1
        while i < len(lines) and not (
            lines[i].strip().startswith(fence) and lines[i].strip().strip(fence[0]) == ""
        ):
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        if i == len(lines):
            raise ValueError(f"line {start + 1}: unterminated {fence} fence")
        i += 1
        if language in ("python", "py"):
            found.append(Sample(start + 2, "\n".join(body) + "\n", "python"))
    return found


def _dedent(body: list[str]) -> str:
    return textwrap.dedent("\n".join(body)).strip("\n") + "\n"


def run(page: Path) -> int:
    """Run ``page``'s samples; print a report naming the failing block; return an exit code."""
    # The samples run as the body of a real module, as a reader's script would: what looks its
    # defining module up in sys.modules (dataclasses, pickle, typing.get_type_hints) finds it.
    module = types.ModuleType("__docs__")
    module.__file__ = str(page)
    sys.modules[module.__name__] = module
    namespace = module.__dict__
    found = samples(page.read_text(encoding="utf-8"))
    for sample in found:
        # Line numbers in tracebacks point into the page: pad so that line 1 of the code is
        # the sample's first line.
        code = "\n" * (sample.line - 1) + sample.code
        try:
            exec(compile(code, str(page), "exec"), namespace)
        except BaseException:
            print(f"FAILED: {page}:{sample.line} ({sample.kind} sample)", file=sys.stderr)
            traceback.print_exc()
            return 1
    print(f"ok: {page}: {len(found)} samples")
    return 0


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))
