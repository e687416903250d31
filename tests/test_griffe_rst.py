"""The API reference's docstring rewriter (``docs/_ext/griffe_rst.py``, used by mkdocs.yml)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("griffe", reason="the docs extra is not installed")  # the lowest leg
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "docs" / "_ext"))

from griffe_rst import rst_to_markdown


def test_roles_become_code_spans() -> None:
    text = "See :class:`~redisguard.Breaker` and :func:`redisguard.connect`, :meth:`Foo.bar`."
    assert rst_to_markdown(text) == ("See ``Breaker`` and ``redisguard.connect``, ``Foo.bar``.")


def test_literal_block_markers_become_colons() -> None:
    text = "Use it like this::\n\n    x = 1\n\n::\n\n    y = 2"
    assert rst_to_markdown(text) == "Use it like this:\n\n    x = 1\n\n\n\n    y = 2"


def test_a_simple_table_with_a_header_and_continuation_rows() -> None:
    text = "\n".join(
        [
            "Fields:",
            "",
            "=======  ==============",
            "field    meaning",
            "=======  ==============",
            "``op``   only the guard",
            "         named NAME",
            "``p``    a share | a rate",
            "=======  ==============",
            "",
            "After.",
        ]
    )
    assert rst_to_markdown(text).split("\n") == [
        "Fields:",
        "",
        "| field | meaning |",
        "|---|---|",
        "| ``op`` | only the guard named NAME |",
        "| ``p`` | a share \\| a rate |",
        "",
        "After.",
    ]


def test_a_table_without_a_header() -> None:
    text = "====  ====\na     b\nc     d\n====  ===="
    assert rst_to_markdown(text).split("\n") == ["|  |  |", "|---|---|", "| a | b |", "| c | d |"]
