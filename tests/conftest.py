"""Shared fixtures: registry isolation and a breaker driven by a fake monotonic clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import redisguard
from redisguard import _breaker, _observe

# tests/typing/ holds files for mypy only; they must never be imported by pytest.
collect_ignore = ["typing"]


def pytest_configure(config: pytest.Config) -> None:
    """Load the real-server fixtures here when the entry-point plugin is disabled.

    The ``pytest11`` entry point imports redisguard before pytest-cov starts measuring, so
    module-level lines would count as missed. Running with ``-p no:redisguard`` defers the
    plugin (and redisguard) to this point, after coverage has started.
    """
    if not config.pluginmanager.has_plugin("redisguard"):
        config.pluginmanager.import_plugin("redisguard.testing.plugin")


class FakeClock:
    """A monotonic clock that only moves when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        self.now += seconds


BreakerFactory = Callable[..., redisguard.Breaker]


@pytest.fixture(autouse=True)
def _isolate_registries() -> Iterator[None]:
    """Every test starts and ends with no registered breakers and no operation stats."""
    _breaker._clear_registry()
    _observe._clear_operations()
    yield
    _breaker._clear_registry()
    _observe._clear_operations()


@pytest.fixture
def clock() -> FakeClock:
    """A fake monotonic clock starting at t=1000 s."""
    return FakeClock()


@pytest.fixture
def make_breaker(clock: FakeClock) -> BreakerFactory:
    """Build a :class:`redisguard.Breaker` on a fake clock; other kwargs go to BreakerConfig."""

    def make(
        name: str = "test", *, clock: Callable[[], float] = clock, **config: Any
    ) -> redisguard.Breaker:
        return redisguard.Breaker(name, redisguard.BreakerConfig(**config), clock=clock)

    return make
