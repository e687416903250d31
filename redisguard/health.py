"""Readiness and liveness: a ``/ready`` that reports breaker state, with a live PING.

:func:`readiness` / :func:`areadiness` report one check per breaker: its state, failure count,
last failure, next retry, and the latency of a PING sent *through* the breaker (so a
half-open breaker is closed by the readiness probe itself: a pod taken out of rotation by
``/ready`` gets no traffic, and must not wait for traffic to prove Redis is back).

A check is healthy when its breaker is not open and the PING answered. The status is
``"ready"`` (HTTP 200) when every check is healthy, else ``"degraded"`` (HTTP 503).

A breaker whose *write side* is open (Redis refuses writes: OOM, READONLY, MISCONF) is still
healthy: Redis answers and serves reads, and every pod sees the same Redis, so taking this
one out of rotation helps nothing. Its check says so (``write_state``, ``write_cause``,
``write_next_retry``, ``note``) and the body lists it under ``writes_refused``. A PING that
Redis refuses as a write (MISCONF refuses PING) proves Redis answers: it is told to the
write side, not counted as a failure.

:func:`liveness` never touches Redis: a Redis outage must not get the process restarted.

**The body says little by default.** Readiness routes are often reachable from outside (a load
balancer's health check, a status page, a mis-scoped ingress), and a body naming the Redis host
and port or quoting its errors maps the network behind the service for anyone who asks. So
``as_dict()`` gives only the status and each breaker's state (``healthy``, ``state``,
``write_state``, and ``writes_refused`` when writes are refused). ``as_dict(details=True)``
adds the rest: the version, failure count, last failure and next retry, the write side's
cause, the PING's target (``host:port``) and latency, and the last error. The
:class:`Readiness` object itself always holds every detail, for logs and code.

Even the detailed body contains no secrets: targets are shown with the password redacted,
errors are redacted too.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn, cast

import redis

from ._breaker import OPEN, Breaker, breakers, get_breaker
from ._classify import ErrorKind, classify_error
from ._guard import _describe
from ._version import __version__
from .cluster import node_address

__all__ = ["Liveness", "Readiness", "areadiness", "liveness", "readiness"]


#: The keys of a check that the default (public) body shows: status and breaker state only.
_SUMMARY = ("healthy", "state", "write_state")


@dataclass(frozen=True)
class Readiness:
    """The answer of a readiness probe.

    Attributes:
        status: ``"ready"`` or ``"degraded"``.
        http_status: 200 or 503.
        checks: One entry per breaker (dependency), JSON-ready.
    """

    status: Literal["ready", "degraded"]
    http_status: int
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def writes_refused(self) -> list[str]:
        """The breakers whose write side is not closed (Redis refuses writes)."""
        return [name for name, check in self.checks.items() if check["write_state"] != "closed"]

    def as_dict(self, *, details: bool = False) -> dict[str, Any]:
        """The JSON body: ``{"status", "checks"}``, plus ``writes_refused`` (the breakers whose
        write side is not closed) when there are any.

        Args:
            details: Also give the version and every check's details (target, latency, error,
                failure count, timestamps). Off by default: see the module docstring.
        """
        body: dict[str, Any] = {"status": self.status}
        if details:
            body["version"] = __version__
            body["checks"] = self.checks
        else:
            body["checks"] = {
                name: {key: check[key] for key in _SUMMARY if key in check}
                for name, check in self.checks.items()
            }
        refused = self.writes_refused
        if refused:
            body["writes_refused"] = refused
        return body


@dataclass(frozen=True)
class Liveness:
    """The answer of a liveness probe (always alive while the process serves it)."""

    status: Literal["alive"] = "alive"
    http_status: int = 200

    def as_dict(self, *, details: bool = False) -> dict[str, Any]:
        """The JSON body; ``details=True`` adds the version."""
        if details:
            return {"status": self.status, "version": __version__}
        return {"status": self.status}


def liveness() -> Liveness:
    """Alive; never touches Redis."""
    return Liveness()


def _pick(client: Any, names: Sequence[str | Breaker] | None) -> list[Breaker]:
    if names is not None:
        return [b if isinstance(b, Breaker) else get_breaker(b) for b in names]
    attached = getattr(client, "breakers", None)
    if attached:
        return list(attached)
    return breakers() or [get_breaker("redis")]


def _pinger(client: Any, breaker: Breaker) -> Callable[[], Any]:
    """PING for one breaker: a Cluster node breaker pings its own node only.

    A cluster client's plain PING goes to a random node: through a dead node's half-open
    breaker it could succeed on a healthy node and close the breaker, and through a healthy
    node's breaker it could hit the dead node and count a failure there.
    """
    address = node_address(breaker)
    if address is not None and hasattr(client, "get_node"):
        node = client.get_node(host=address[0], port=address[1])
        if node is None:
            # The client dropped the node (it failed): a PING elsewhere would prove nothing.
            return functools.partial(_node_gone, address)
        return functools.partial(client.ping, target_nodes=node)
    return cast(Callable[[], Any], client.ping)


def _refusal_aware(ping: Callable[[], Any], breaker: Breaker) -> Callable[[], Any]:
    """``ping`` whose refusal as a write (MISCONF) goes to the write side, not the breaker."""

    def send() -> Any:
        try:
            return ping()
        except Exception as exc:
            if classify_error(exc) is not ErrorKind.WRITE_REFUSED:
                raise
            breaker.write_side.refused(0, exc)
            return exc

    return send


def _arefusal_aware(ping: Callable[[], Any], breaker: Breaker) -> Callable[[], Any]:
    """The asyncio twin of :func:`_refusal_aware`."""

    async def send() -> Any:
        try:
            return await ping()
        except Exception as exc:
            if classify_error(exc) is not ErrorKind.WRITE_REFUSED:
                raise
            breaker.write_side.refused(0, exc)
            return exc

    return send


def _node_gone(address: tuple[str, int]) -> NoReturn:
    raise redis.ConnectionError(f"cluster node {address[0]}:{address[1]} is no longer known")


def _check(
    breaker: Breaker, target: str | None, latency: float | None, error: BaseException | None
) -> dict[str, Any]:
    """One dependency's entry (no I/O)."""
    stats = breaker.stats()
    pinged = target is not None
    healthy = breaker.state_code != OPEN and (not pinged or error is None)
    entry: dict[str, Any] = {
        "healthy": healthy,
        "state": stats.state,
        "failure_count": stats.failure_count,
        "last_failure": stats.last_failure_time.isoformat() if stats.last_failure_time else None,
        "next_retry": stats.next_retry_time.isoformat() if stats.next_retry_time else None,
    }
    entry["write_state"] = stats.write_state
    if stats.write_state != "closed":
        entry["write_cause"] = stats.write_cause
        entry["write_next_retry"] = (
            stats.write_next_retry_time.isoformat() if stats.write_next_retry_time else None
        )
        entry["note"] = (
            f"writes refused ({stats.write_cause}): write guards get their fallback, "
            "reads are served"
        )
    if pinged:
        entry["target"] = target
        entry["latency_ms"] = None if latency is None else round(latency * 1000, 3)
        if error is not None:
            entry["error"] = _describe(error)
    return entry


def _result(checks: dict[str, dict[str, Any]]) -> Readiness:
    ready = all(check["healthy"] for check in checks.values())
    return Readiness("ready" if ready else "degraded", 200 if ready else 503, checks)


def readiness(
    client: Any = None,
    *,
    breakers: Sequence[str | Breaker] | None = None,
    timeout: float = 0.25,
) -> Readiness:
    """Check Redis through each breaker.

    Args:
        client: A sync client to PING (``redisguard.connect()``); None to report breaker
            state only.
        breakers: The breakers to report; default the client's, else every registered one.
        timeout: Unused by the sync PING, which is bounded by the client's ``socket_timeout``
            (0.25 s from ``connect()``); kept for symmetry with :func:`areadiness`.

    Returns:
        A :class:`Readiness`; serve ``as_dict()`` with ``http_status``.
    """
    target = None if client is None else str(getattr(client, "target", "redis"))
    checks = {}
    for breaker in _pick(client, breakers):
        latency = error = None
        if client is not None:
            started = time.perf_counter()
            try:
                breaker.call(_refusal_aware(_pinger(client, breaker), breaker))
                latency = time.perf_counter() - started
            except Exception as exc:
                error = exc
        checks[breaker.name] = _check(breaker, target, latency, error)
    return _result(checks)


async def areadiness(
    client: Any = None,
    *,
    breakers: Sequence[str | Breaker] | None = None,
    timeout: float = 0.25,
) -> Readiness:
    """The asyncio twin of :func:`readiness`; each PING is cut off after ``timeout`` seconds."""
    target = None if client is None else str(getattr(client, "target", "redis"))

    async def ping(send: Callable[[], Any]) -> Any:
        return await asyncio.wait_for(send(), timeout)

    checks = {}
    for breaker in _pick(client, breakers):
        latency = error = None
        if client is not None:
            started = time.perf_counter()
            try:
                send = functools.partial(ping, _pinger(client, breaker))
                await breaker.acall(_arefusal_aware(send, breaker))
                latency = time.perf_counter() - started
            except Exception as exc:
                error = exc
        checks[breaker.name] = _check(breaker, target, latency, error)
    return _result(checks)
