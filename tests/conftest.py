"""Shared fixtures: registry isolation and a breaker driven by a fake monotonic clock."""

from __future__ import annotations

import asyncio
import inspect
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


def _current_loop() -> asyncio.AbstractEventLoop | None:
    """The loop set as current in this thread, without creating one (CPython's policy)."""
    local = getattr(asyncio.get_event_loop_policy(), "_local", None)
    loop = getattr(local, "_loop", None)
    return loop if isinstance(loop, asyncio.AbstractEventLoop) else None


@pytest.fixture(autouse=True)
def _close_leftover_event_loop(request: pytest.FixtureRequest) -> None:
    """Before a sync test, close the idle event loop an async test left set as current.

    pytest-asyncio before 0.25 leaves a fresh loop set as current after each async test. A
    later sync test that calls ``asyncio.run()`` (the soak, a benchmark's smoke run) ends with
    ``set_event_loop(None)``, which drops that loop unclosed: its self-pipe socket is then
    reported as an unclosed AF_UNIX socket by whatever test the garbage collector runs in.
    """
    if inspect.iscoroutinefunction(getattr(request, "function", None)):
        return  # pytest-asyncio sets up this test's loop
    loop = _current_loop()
    if loop is not None and not loop.is_running():
        loop.close()


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
