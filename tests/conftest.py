"""Shared fixtures: registry isolation, a breaker driven by a fake monotonic clock, private
redis-servers with the clients the modules test through, and the secret scanner and in-memory
spans of the redaction tests.

A module whose tests need something else (another breaker threshold, other socket timeouts, a
server with a password) defines a fixture of the same name; pytest prefers the module's.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis.backoff import NoBackoff
from redis.retry import Retry

import redisguard
from redisguard import BreakerConfig, _breaker, _observe, get_breaker
from redisguard._client import AsyncGuardedRedis, GuardedRedis, aconnect, connect
from redisguard.testing import RedisServer
from redisguard.testing._soak import SecretScanner, capture_logs

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


# -- a private server and the guarded clients on it -----------------------------------------
@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A redis-server of this test's own, started before it and stopped after it.

    Unlike the plugin's ``redis_server`` it does not skip when redis-server is missing.
    """
    with RedisServer() as srv:
        yield srv


@pytest.fixture
def client_breaker() -> BreakerConfig:
    """The config of the ``"redis"`` breaker that ``client`` and ``aclient`` register.

    Opens after 2 failures and stays open 60 s. A module whose tests count on
    another threshold overrides this fixture.
    """
    return BreakerConfig(failure_threshold=2, reset_timeout=60)


@pytest.fixture
def client(server: RedisServer, client_breaker: BreakerConfig) -> Iterator[GuardedRedis]:
    """``connect(server.url, prober=False)``; ``client_breaker`` sets up its breaker first."""
    get_breaker("redis", client_breaker)
    c = connect(server.url, prober=False)
    yield c
    c.close()


@pytest.fixture
async def aclient(
    server: RedisServer, client_breaker: BreakerConfig
) -> AsyncIterator[AsyncGuardedRedis]:
    """The asyncio twin of ``client``: ``aconnect(server.url, prober=False)``."""
    get_breaker("redis", client_breaker)
    c = await aconnect(server.url, prober=False)
    yield c
    await c.aclose()


# -- plain redis-py clients holding k = "real" ------------------------------------------------
@pytest.fixture
def seeded_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain redis-py client of ``redis_server`` (0.25 s socket timeout, redis-py's retry
    off) that has set ``k`` to ``"real"``: what a fallback is told apart from."""
    client = redis.Redis(
        **redis_server.client_kwargs(),  # type: ignore[arg-type]
        socket_timeout=0.25,
        retry=Retry(NoBackoff(), 0),
    )
    client.set("k", "real")
    yield client
    client.close()


@pytest.fixture
async def seeded_aclient(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    """The asyncio twin of ``seeded_client`` (0.25 s socket timeout, redis-py's default retry)."""
    client = redis.asyncio.Redis(
        **redis_server.client_kwargs(),  # type: ignore[arg-type]
        socket_timeout=0.25,
    )
    await client.set("k", "real")
    yield client
    await client.aclose()


# -- secrets that must not leak ---------------------------------------------------------------
@pytest.fixture
def scanner() -> Iterator[SecretScanner]:
    """Secrets for the test; every log record emitted during it is scanned for them.

    Fails the test at teardown when no record was scanned or any secret leaked.
    """
    found = SecretScanner()
    with capture_logs(found):
        yield found
    assert found.scanned.get("log", 0) > 0
    assert [(leak.source, leak.kind, leak.excerpt) for leak in found.leaks] == []


@pytest.fixture
def spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    """An explicit tracer provider whose spans stay in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter
