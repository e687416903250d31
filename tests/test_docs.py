"""Every Python sample in the README and in ``docs/`` runs (see ``tests/_docs_samples.py``).

Each page runs in its own interpreter, against a private ``redis-server`` named by
``$REDIS_URL``, from a scratch working directory (a sample that writes a file writes it there).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _docs_samples import samples

from redisguard.testing import RedisServer

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
RUNNER = Path(__file__).resolve().parent / "_docs_samples.py"


def _pages_with_samples() -> list[Path]:
    return [page for page in PAGES if samples(page.read_text(encoding="utf-8"))]


@pytest.mark.parametrize(
    "page", _pages_with_samples(), ids=lambda page: str(page.relative_to(ROOT))
)
def test_page_samples_run(
    page: Path, redis_server_session: RedisServer, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "REDIS_URL": redis_server_session.url,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    env.pop("OTEL_SERVICE_NAME", None)
    done = subprocess.run(
        [sys.executable, str(RUNNER), str(page)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, f"{done.stderr}\n{done.stdout}"


def test_samples_are_found_in_page_order() -> None:
    text = "\n".join(
        [
            "# t",
            "```python",
            "x = 1",
            "```",
            "<!-- test-setup",
            "y = 2",
            "-->",
            "```console",
            "$ not python",
            "```",
            '```python title="a.py"',
            "assert x + y == 3",
            "```",
        ]
    )
    found = samples(text)
    assert [(s.kind, s.line, s.code) for s in found] == [
        ("python", 3, "x = 1\n"),
        ("setup", 6, "y = 2\n"),
        ("python", 12, "assert x + y == 3\n"),
    ]


def test_a_failing_sample_names_its_page_and_line(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "intro\n\n```python\nok = True\n```\n\n```python\nraise KeyError('boom')\n```\n"
    )
    done = subprocess.run(
        [sys.executable, str(RUNNER), str(page)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert f"FAILED: {page}:8 (python sample)" in done.stderr
    assert "KeyError: 'boom'" in done.stderr


def test_samples_run_as_a_module(tmp_path: Path) -> None:
    """A dataclass (which looks its module up in sys.modules) works in a sample."""
    page = tmp_path / "page.md"
    page.write_text(
        "```python\nfrom dataclasses import dataclass\n\n@dataclass\nclass Point:\n"
        "    x: int\n\nassert Point(1).x == 1\n```\n"
    )
    done = subprocess.run(
        [sys.executable, str(RUNNER), str(page)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_unterminated_fence_is_an_error() -> None:
    with pytest.raises(ValueError, match="line 1: unterminated"):
        samples("```python\nx = 1\n")
