"""What every store and the rate limiter share: I/O-free flows, two drivers, guarded commands.

A store operation is written once, as a generator (a *flow*) that yields ``(op, args)`` steps
and receives each step's result, as httpx's ``auth_flow`` does::

    def get_flow(self, key):
        raw = yield ("get", (key,))     # the driver runs the guarded GET
        return self.decode(raw)

:func:`drive` runs a flow with sync callables, :func:`adrive` with coroutine functions; an
exception raised by a step is thrown back into the flow at its ``yield``. The callables are
built by :func:`sync_ops` / :func:`async_ops`: one ``@redis_guarded`` function per op, each
sending one Redis command, so a flow never sees a connection and never does I/O itself.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ._breaker import OPEN, Breaker, get_breaker
from ._config import RetryPolicy
from ._errors import (
    ConfigError,
    RedisUnavailableError,
    TemporarilyUnavailableError,
)
from ._guard import DEFAULT_RETRY, Failure, current_failure, redis_guarded
from ._sides import Access
from ._tally import Tally

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

__all__ = [
    "AsyncCommands",
    "Flow",
    "OpSpec",
    "Outage",
    "SyncCommands",
    "TemporarilyUnavailableError",
    "adrive",
    "async_ops",
    "data_errors",
    "drive",
    "sync_ops",
]

T = TypeVar("T")
logger = logging.getLogger("redisguard")

Step = tuple[str, tuple[Any, ...]]
Flow = Generator[Step, Any, T]

#: Retry-After never promises less than 1 s nor more than this.
MAX_RETRY_AFTER = 30


class SyncCommands(Protocol):
    """What a store needs from a sync client (``redis.Redis``, ``RedisCluster``...)."""

    def execute_command(self, *args: Any, **options: Any) -> Any: ...


class AsyncCommands(Protocol):
    """What a store needs from an asyncio client (``redis.asyncio.Redis``...)."""

    def execute_command(self, *args: Any, **options: Any) -> Awaitable[Any]: ...


@dataclass(frozen=True)
class Outage:
    """The result of a degradable op when Redis was unavailable (the fallback's value)."""

    failure: Failure | None


def _outage(*args: Any, **kwargs: Any) -> Outage:
    return Outage(current_failure())


@dataclass(frozen=True)
class OpSpec:
    """One guarded op: the operation name suffix, the Redis command, and its policy.

    Attributes:
        suffix: Appended to the store's name for the guard (``"get"`` -> ``"session.get"``).
        command: The Redis command sent with the step's arguments.
        degrade: When Redis is unavailable, return :class:`Outage` instead of raising.
        idempotent: Whether sending the command twice is as good as once, *reply included*
            (passed to ``redis_guarded(idempotent=...)``). Required: every op declares it.
            A non-idempotent op is retried only for errors that prove it never ran.
        access: What the command does (passed to ``redis_guarded(access=...)``): ``"read"``,
            ``"write"``, or ``"delete"`` for a write Redis still runs during an OOM (``DEL``,
            ``PEXPIRE``: no ``denyoom`` flag). Required: every op declares it.
    """

    suffix: str
    command: str
    degrade: bool = False
    idempotent: bool = dataclasses.field(kw_only=True)
    access: Access = dataclasses.field(kw_only=True)


_DEFAULT: Any = object()


def resolve_breaker(breaker: str | Breaker) -> Breaker:
    if isinstance(breaker, Breaker):
        return breaker
    if isinstance(breaker, str):
        return get_breaker(breaker)
    raise ConfigError(f"breaker must be a name or a redisguard.Breaker, got {breaker!r}")


def _guard_options(
    spec: OpSpec,
    name: str,
    breaker: Breaker,
    retry: RetryPolicy | None,
    telemetry: Mapping[str, Any],
) -> dict[str, Any]:
    options: dict[str, Any] = {
        "name": f"{name}.{spec.suffix}",
        "breaker": breaker,
        "retry": retry,
        "idempotent": spec.idempotent,
        "access": spec.access,
        **telemetry,
    }
    if spec.degrade:
        options["fallback"] = _outage
    return options


def sync_ops(
    client: SyncCommands,
    specs: Mapping[str, OpSpec],
    *,
    name: str,
    breaker: Breaker,
    retry: RetryPolicy | None = DEFAULT_RETRY,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> dict[str, Callable[..., Any]]:
    """One ``@redis_guarded`` sync function per op, each sending its one command."""
    telemetry = {"tracer_provider": tracer_provider, "meter_provider": meter_provider}
    ops: dict[str, Callable[..., Any]] = {}
    for key, spec in specs.items():
        command = spec.command

        def run(*args: Any, _command: str = command) -> Any:
            return client.execute_command(_command, *args)

        run.__qualname__ = run.__name__ = f"{name}.{spec.suffix}"
        ops[key] = redis_guarded(**_guard_options(spec, name, breaker, retry, telemetry))(run)
    return ops


def async_ops(
    client: AsyncCommands,
    specs: Mapping[str, OpSpec],
    *,
    name: str,
    breaker: Breaker,
    retry: RetryPolicy | None = DEFAULT_RETRY,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> dict[str, Callable[..., Awaitable[Any]]]:
    """The asyncio twin of :func:`sync_ops`."""
    telemetry = {"tracer_provider": tracer_provider, "meter_provider": meter_provider}
    ops: dict[str, Callable[..., Awaitable[Any]]] = {}
    for key, spec in specs.items():
        command = spec.command

        async def run(*args: Any, _command: str = command) -> Any:
            return await client.execute_command(_command, *args)

        run.__qualname__ = run.__name__ = f"{name}.{spec.suffix}"
        ops[key] = redis_guarded(**_guard_options(spec, name, breaker, retry, telemetry))(run)
    return ops


def drive(flow: Flow[T], ops: Mapping[str, Callable[..., Any]]) -> T:
    """Run ``flow`` to completion with sync ops."""
    try:
        op, args = next(flow)
        while True:
            try:
                result = ops[op](*args)
            except Exception as exc:
                op, args = flow.throw(exc)
            else:
                op, args = flow.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value


async def adrive(flow: Flow[T], ops: Mapping[str, Callable[..., Awaitable[Any]]]) -> T:
    """Run ``flow`` to completion with asyncio ops."""
    try:
        op, args = next(flow)
        while True:
            try:
                result = await ops[op](*args)
            except Exception as exc:
                op, args = flow.throw(exc)
            else:
                op, args = flow.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value


def retry_after(breaker: Breaker) -> int:
    """Whole seconds a client should wait before retrying (for ``Retry-After``)."""
    wait = breaker.seconds_until_retry() if breaker.state_code == OPEN else None
    if wait is None:  # a refused write: the write side's timeout
        wait = breaker.write_side.seconds_until_retry()
    if wait is None:
        return 1
    return max(1, min(MAX_RETRY_AFTER, math.ceil(wait)))


def unavailable(
    what: str, breaker: Breaker, source: RedisUnavailableError | Failure | None, operation: str
) -> TemporarilyUnavailableError:
    """The error a store raises when Redis could not serve ``what``."""
    if isinstance(source, RedisUnavailableError):
        operation, attempts, reason = source.operation, source.attempts, str(source)
    elif source is not None:
        attempts = source.attempts
        reason = "circuit open" if source.circuit_open else f"{source.attempts} attempt(s) failed"
    else:
        attempts, reason = 0, "Redis unavailable"
    return TemporarilyUnavailableError(
        f"{what} did not reach Redis ({reason})",
        operation=operation,
        breaker=breaker.name,
        attempts=attempts,
        retry_after=retry_after(breaker),
    )


_data_errors: dict[str, Tally] = {}


def data_error_tally(operation: str) -> Tally:
    """The counter of unreadable values (corrupt JSON...) met by ``operation``."""
    tally = _data_errors.get(operation)
    if tally is None:
        tally = _data_errors.setdefault(operation, Tally())
    return tally


def data_errors() -> dict[str, int]:
    """Unreadable values met so far, by operation (e.g. ``{"session.get": 2}``)."""
    return {name: tally.value for name, tally in sorted(_data_errors.items())}
