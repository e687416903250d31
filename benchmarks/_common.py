"""What the ``bench_*.py`` scripts share: the redis-server check, quieting loggers, the progress
line, the JSON report and the exit status.

A script run as ``python benchmarks/bench_x.py`` finds this module next to it (its folder is
``sys.path[0]``); the smoke tests load the scripts with ``tests/_bench.py``, which puts this
folder on ``sys.path`` for the load.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from redisguard.testing import ServerNotFoundError
from redisguard.testing._binary import find_redis_server


def no_redis_server() -> bool:
    """True, after printing why on stderr, when no redis-server can be found to start."""
    try:
        find_redis_server()
    except ServerNotFoundError as exc:
        print(exc, file=sys.stderr)
        return True
    return False


@contextmanager
def muted_logs(*names: str) -> Iterator[None]:
    """Drop the records of the loggers ``names`` for the block; restore them after.

    The loggers stop propagating and get a ``NullHandler`` (so ``logging.lastResort`` does not
    print either); their levels stay as they are, so a measured hot path makes the very same
    ``isEnabledFor`` checks as in production. Restored even when the block raises, since
    ``main()`` also runs in-process, from the tests, where later tests capture these loggers.
    """
    null = logging.NullHandler()
    saved: dict[str, bool] = {}
    for name in names:
        log = logging.getLogger(name)
        saved[name] = log.propagate
        log.addHandler(null)
        log.propagate = False
    try:
        yield
    finally:
        for name, propagate in saved.items():
            log = logging.getLogger(name)
            log.removeHandler(null)
            log.propagate = propagate


@contextmanager
def only_critical(name: str = "redisguard") -> Iterator[None]:
    """Set logger ``name`` to CRITICAL for the block (the outage logs are expected); restore
    its level after, even when the block raises."""
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


class StatusLine:
    """One progress line on stderr, rewritten in place; silent when stderr is not a terminal.

    Call it with each new line; :meth:`clear` blanks it before the report is printed.
    """

    def __init__(self, width: int = 60) -> None:
        self.width = width
        self.interactive = sys.stderr.isatty()

    def __call__(self, line: str) -> None:
        if self.interactive:
            print(f"\r{line:<{self.width}}", end="", file=sys.stderr, flush=True)

    def clear(self) -> None:
        """Blank the line (when it was shown at all)."""
        if self.interactive:
            print("\r" + " " * self.width + "\r", end="", file=sys.stderr)


def write_json(path: str | None, data: Any) -> None:
    """Write ``data`` to ``path`` as indented JSON (the ``--json`` option); nothing when None."""
    if path:
        with open(path, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=2)


def missed_variants(report: Mapping[str, Any]) -> list[str]:
    """``scenario/variant`` keys of a report's variants whose target was missed."""
    return [
        f"{sc['key']}/{v['key']}"
        for sc in report["scenarios"]
        for v in sc["variants"]
        if v["met"] is False
    ]


def exit_status(missed: Sequence[str], *, check: bool, what: str = "targets missed") -> int:
    """Name the missed targets on stderr; 1 when ``--check`` was given and one was missed."""
    if missed:
        print(f"{what}: {', '.join(missed)}", file=sys.stderr)
    return 1 if check and missed else 0
