"""In-process fault injection: the rules, the spec parser and the injecting wrappers.

Faults are injected where a guarded call reaches Redis: the guard's wrapper calls its
function through a closure cell (``_Guard.fn_cell``), and while chaos is enabled that cell
of every matching guard holds an injecting wrapper instead of the function. With chaos off
the cell holds the function itself, so the happy path does no extra work at all. An injected
error is a real redis-py exception (built by redis-py's own reply parser or connect path),
so classification, retries, the breaker, the fallback and telemetry run as in an outage.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from redis import exceptions as rx
from redis._parsers.base import BaseParser
from redis.backoff import NoBackoff
from redis.connection import Connection
from redis.retry import Retry

from ._errors import ConfigError
from ._fork import renew_lock_after_fork
from ._sides import ACCESS_KINDS, Access
from ._tally import Tally
from ._telemetry import CHAOS_MARK, mark_active_span_chaos

__all__ = [
    "CHAOS_ENV",
    "ERRORS",
    "KILL_ENV",
    "MAX_LATENCY_MS",
    "MAX_OUTAGE_SECONDS",
    "MAX_PROBABILITY",
    "Fault",
    "parse_spec",
]

logger = logging.getLogger("redisguard")
CHAOS_ENV = "REDISGUARD_CHAOS"
KILL_ENV = "REDISGUARD_CHAOS_KILL"
#: The most a rule may inject (a share of calls): a typo such as ``p=1`` for ``p=0.01`` is
#: rejected instead of failing every call. A full outage is a separate, time-boxed rule.
MAX_PROBABILITY = 0.25
#: The longest latency a rule may add to one call (ms).
MAX_LATENCY_MS = 10_000.0
#: The longest outage window (s); the window ends by itself.
MAX_OUTAGE_SECONDS = 600.0
ERRORS = ("refused", "timeout", "busy", "loading", "readonly", "oom")

_REPLIES = {
    "busy": "BUSY Redis is busy running a script. You can only call SCRIPT KILL or "
    "SHUTDOWN NOSAVE.",
    "loading": "LOADING Redis is loading the dataset in memory",
    "readonly": "READONLY You can't write against a read only replica.",
    "oom": "OOM command not allowed when used memory > 'maxmemory'.",
}

_EVERY_ACCESS = frozenset(ACCESS_KINDS)
#: The guards (by ``access``) a write refusal reaches; other errors reach every guard.
_REFUSED_BY: dict[str | None, frozenset[str]] = {
    "oom": frozenset({"write", "both"}),
    "readonly": frozenset({"write", "delete", "both"}),
}


@dataclass(frozen=True)
class Fault:
    """One chaos rule: what to inject, into which calls, how often.

    Attributes:
        error: One of :data:`ERRORS` (``"refused"``, ``"timeout"``, ``"busy"``,
            ``"loading"``, ``"readonly"``, ``"oom"``), or None for latency only. ``oom``
            reaches only write guards and ``readonly`` only write and delete guards (by their
            ``access``), as a real refusal would; see :meth:`matches`.
        latency_ms: Added before the call (or before the error, e.g. a slow timeout).
        p: The share of matching calls that get the fault, ``0 < p <= MAX_PROBABILITY``;
            not used by an outage.
        outage: Seconds of full outage: every matching call in the window gets ``error``
            (``"refused"`` by default), ``0 < outage <= MAX_OUTAGE_SECONDS``. The window
            starts when chaos is enabled and ends by itself.
        operation: Only calls of guards with this ``name``.
        breaker: Only calls through the breaker with this name. Neither: every guard.
    """

    error: str | None = None
    latency_ms: float = 0.0
    p: float = 0.0
    outage: float | None = None
    operation: str | None = None
    breaker: str | None = None

    def __post_init__(self) -> None:
        _check(self, "Fault")

    @property
    def kind(self) -> str:
        """The metric label: ``outage``, the error's name, or ``latency``."""
        if self.outage is not None:
            return "outage"
        return self.error or "latency"

    def matches(self, operation: str, breaker: str, access: Access = "both") -> bool:
        """Whether this rule's scope takes calls of guard ``operation`` on ``breaker``.

        A write refusal reaches only the guards a real one would: Redis out of memory refuses
        commands that may grow memory (not reads, not ``DEL``), a read-only replica refuses
        writes and deletes, so ``oom`` skips ``access="read"`` and ``"delete"`` guards and
        ``readonly`` skips ``access="read"`` ones.
        """
        if access not in _REFUSED_BY.get(self.error, _EVERY_ACCESS):
            return False
        return (self.operation is None or self.operation == operation) and (
            self.breaker is None or self.breaker == breaker
        )


def _check(fault: Fault, where: str) -> None:
    """Raise ConfigError naming ``where`` and the bad field."""
    if fault.error is not None and fault.error not in ERRORS:
        raise ConfigError(f"{where}: error must be one of {', '.join(ERRORS)}, got {fault.error!r}")
    latency = fault.latency_ms
    if isinstance(latency, bool) or not isinstance(latency, int | float):
        raise ConfigError(f"{where}: latency_ms must be a number, got {latency!r}")
    if not math.isfinite(latency) or not 0 <= latency <= MAX_LATENCY_MS:
        raise ConfigError(
            f"{where}: latency_ms must be between 0 and {MAX_LATENCY_MS:g}, got {latency!r}"
        )
    for label, name in (("operation", fault.operation), ("breaker", fault.breaker)):
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ConfigError(f"{where}: {label} must be a non-empty string, got {name!r}")
    if fault.outage is not None:
        value = fault.outage
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: outage must be a number of seconds, got {value!r}")
        if not math.isfinite(value) or not 0 < value <= MAX_OUTAGE_SECONDS:
            raise ConfigError(
                f"{where}: outage must be above 0 and at most {MAX_OUTAGE_SECONDS:g} s "
                f"(the cap), got {value!r}"
            )
        if fault.p:
            raise ConfigError(f"{where}: an outage fails every call in its window; drop p")
        return
    p = fault.p
    if isinstance(p, bool) or not isinstance(p, int | float) or not math.isfinite(p):
        raise ConfigError(f"{where}: p must be a number, got {p!r}")
    if not 0 < p <= MAX_PROBABILITY:
        raise ConfigError(
            f"{where}: p must be above 0 and at most {MAX_PROBABILITY:g} (the cap), got {p!r}"
        )
    if fault.error is None and fault.latency_ms == 0:
        raise ConfigError(f"{where}: give an error, a latency or an outage")


# -- the spec ------------------------------------------------------------------------------
def parse_spec(spec: str, *, source: str = CHAOS_ENV) -> tuple[Fault, ...]:
    """Parse a chaos spec: rules separated by ``;``, fields by ``,``.

    Each rule has a scope (``op=NAME``, ``breaker=NAME``, both, or ``all``) and a fault
    (``error=KIND``, ``latency=Nms``, both, or ``outage=Ns``), and ``p=SHARE`` unless it is an
    outage::

        op=session.get,error=timeout,latency=250ms,p=0.05; breaker=cache,outage=30s

    Raises:
        ConfigError: naming ``source`` and the rule or field that is wrong.
    """
    if not isinstance(spec, str):
        raise ConfigError(f"{source} must be a string, got {spec!r}")
    rules = [rule.strip() for rule in spec.split(";")]
    faults = []
    for number, rule in enumerate(rules, 1):
        if not rule:
            continue
        faults.append(_parse_rule(rule, f"{source} rule {number} ({rule!r})"))
    if not faults:
        raise ConfigError(f"{source} has no rules, got {spec!r}")
    return tuple(faults)


_KEYS = ("op", "breaker", "all", "error", "latency", "outage", "p")


def _parse_rule(rule: str, where: str) -> Fault:
    fields: dict[str, str] = {}
    for part in (piece.strip() for piece in rule.split(",")):
        key, sep, value = part.partition("=")
        key, value = key.strip().lower(), value.strip()
        if key == "all" and not sep:
            value = "all"
        elif not sep or not value:
            raise ConfigError(f"{where}: {part!r} is not key=value")
        if key not in _KEYS:
            raise ConfigError(f"{where}: unknown field {key!r} (fields: {', '.join(_KEYS)})")
        if key in fields:
            raise ConfigError(f"{where}: {key!r} given twice")
        fields[key] = value
    scoped = "op" in fields or "breaker" in fields
    if scoped == ("all" in fields):
        raise ConfigError(f"{where}: give a scope: op=NAME, breaker=NAME or all (not both)")
    kwargs: dict[str, Any] = {
        "operation": fields.get("op"),
        "breaker": fields.get("breaker"),
        "error": fields.get("error", "").lower() or None,
    }
    if "latency" in fields:
        kwargs["latency_ms"] = _duration(fields["latency"], where, "latency", "ms")
    if "outage" in fields:
        kwargs["outage"] = _duration(fields["outage"], where, "outage", "s")
    if "p" in fields:
        try:
            kwargs["p"] = float(fields["p"])
        except ValueError:
            raise ConfigError(f"{where}: p must be a number, got {fields['p']!r}") from None
    elif "outage" not in fields:
        raise ConfigError(f"{where}: give p=SHARE (at most {MAX_PROBABILITY:g})")
    return Fault(**_checked(kwargs, where))


def _checked(kwargs: dict[str, Any], where: str) -> dict[str, Any]:
    """``kwargs`` if they make a valid Fault, else ConfigError naming ``where``."""
    try:
        Fault(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {str(exc).removeprefix('Fault: ')}") from None
    return kwargs


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0}


def _duration(text: str, where: str, label: str, unit: str) -> float:
    """``"250ms"``/``"1.5s"``/``"2m"`` (a bare number is in ``unit``), converted to ``unit``."""
    raw = text.lower()
    scale = _UNITS[unit]
    for suffix in ("ms", "s", "m"):
        if raw.endswith(suffix):
            raw, scale = raw[: -len(suffix)], _UNITS[suffix]
            break
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(
            f"{where}: {label} must be a duration such as 250ms, 2s or 1m, got {text!r}"
        ) from None
    return value * scale / _UNITS[unit]


# -- the errors ------------------------------------------------------------------------------
class _RefusedConnection(Connection):
    """A redis-py connection whose socket connect is refused: ``connect()`` then raises what
    redis-py raises for a refused connection, from redis-py's own frames (so
    :func:`~redisguard._classify.not_applied` sees a connect)."""

    def _connect(self) -> Any:
        raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")


def make_error(kind: str) -> Exception:
    """A fresh redis-py exception for ``kind``, exactly as redis-py would raise it."""
    if kind == "refused":
        conn = _RefusedConnection(  # type: ignore[no-untyped-call]
            host="redisguard-chaos", port=0, retry=Retry(NoBackoff(), 0)
        )
        try:
            conn.connect()  # type: ignore[no-untyped-call]
        except rx.ConnectionError as exc:
            return exc
        raise AssertionError("the refused connection connected")  # pragma: no cover
    if kind == "timeout":
        return rx.TimeoutError("Timeout reading from socket")
    error: Exception = BaseParser.parse_error(_REPLIES[kind])  # type: ignore[no-untyped-call]
    return error


# -- the plan and the injection --------------------------------------------------------------
class Target(Protocol):
    """What chaos needs of a guard (``redisguard._guard._Guard``)."""

    name: str
    breaker_name: str
    access: Access
    is_async: bool
    fn_cell: Any  # the closure cell the guard's wrapper calls its function through
    fn: Callable[..., Any]
    chaos_hooks: list[Callable[[bool], None]]  # told when injection starts and stops


@dataclass
class _Plan:
    faults: tuple[Fault, ...]
    started: float
    rng: random.Random

    def pick(self, faults: tuple[Fault, ...]) -> Fault | None:
        """The fault for one call, or None (the first matching rule that fires wins)."""
        now = time.monotonic()
        for fault in faults:
            if fault.outage is not None:
                if now - self.started < fault.outage:
                    return fault
            elif self.rng.random() < fault.p:
                return fault
        return None


_lock = threading.Lock()
renew_lock_after_fork(__name__, "_lock")
_targets: weakref.WeakSet[Any] = weakref.WeakSet()


class _State:
    """What is on: the plan (None: off), and whether REDISGUARD_CHAOS was read."""

    plan: _Plan | None = None
    env_read = False


_state = _State()
_counts: dict[tuple[str, str], Tally] = {}


def killed_by_env(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return env.get(KILL_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def register(target: Target) -> None:
    """A guard was built: remember it, and inject into it if chaos is on.

    The first registration reads ``REDISGUARD_CHAOS`` (a bad spec raises ConfigError there,
    at decoration, and again at the next one); its outage windows start then.
    """
    with _lock:
        _targets.add(target)
        first = not _state.env_read
        plan = _state.plan
    if first:
        spec = os.environ.get(CHAOS_ENV, "").strip()
        faults = parse_spec(spec) if spec else ()  # a bad spec fails every decoration
        _state.env_read = True
        if faults and killed_by_env():
            logger.warning(
                "%s is ignored: %s is set", CHAOS_ENV, KILL_ENV, extra={"category": "chaos"}
            )
        elif faults:
            enable(faults, None)
            return
    if plan is not None:
        _install(target, plan)


def enable(faults: Iterable[Fault], seed: int | None) -> None:
    """Replace the active rules (an empty set disables chaos)."""
    faults = tuple(faults)
    for fault in faults:
        if not isinstance(fault, Fault):
            raise TypeError(f"chaos faults must be redisguard.chaos.Fault, got {fault!r}")
    if killed_by_env():
        raise ConfigError(f"{KILL_ENV} is set: chaos stays off (unset it to enable chaos)")
    with _lock:
        plan = _Plan(faults, time.monotonic(), random.Random(seed)) if faults else None
        _state.plan = plan
        targets = list(_targets)
    for target in targets:
        if plan is None:
            _put(target, target.fn)
        else:
            _install(target, plan)
    logger.warning(
        "redisguard chaos %s",
        "enabled: " + "; ".join(map(_describe, faults)) if faults else "disabled",
        extra={"category": "chaos"},
    )


def _describe(fault: Fault) -> str:
    scope = ",".join(
        f"{key}={value}"
        for key, value in (("op", fault.operation), ("breaker", fault.breaker))
        if value is not None
    )
    what = [f"error={fault.error}"] if fault.error else []
    if fault.latency_ms:
        what.append(f"latency={fault.latency_ms:g}ms")
    what.append(f"outage={fault.outage:g}s" if fault.outage is not None else f"p={fault.p:g}")
    return ",".join([scope or "all", *what])


def kill() -> None:
    """Turn chaos off at once: every guard calls its function directly again."""
    with _lock:
        was_on, _state.plan = _state.plan is not None, None
        targets = list(_targets)
    for target in targets:
        _put(target, target.fn)
    if was_on:
        logger.warning("redisguard chaos killed", extra={"category": "chaos"})


def active() -> tuple[Fault, ...]:
    plan = _state.plan
    return () if plan is None else plan.faults


def counts() -> dict[tuple[str, str], int]:
    """Injected faults by (operation, kind)."""
    return {key: tally.value for key, tally in list(_counts.items())}


def _clear_counts() -> None:
    """Forget the injected-fault counts (test isolation: ``redisguard.testing``)."""
    with _lock:
        _counts.clear()


def _tally(operation: str, kind: str) -> Tally:
    key = (operation, kind)
    tally = _counts.get(key)
    if tally is None:
        with _lock:
            tally = _counts.setdefault(key, Tally())
    return tally


def _put(target: Target, fn: Callable[..., Any]) -> None:
    """Make ``target`` call ``fn`` (its own function, or an injector) and tell its hooks."""
    target.fn_cell.cell_contents = fn
    injecting = fn is not target.fn
    for hook in target.chaos_hooks:
        hook(injecting)


def _install(target: Target, plan: _Plan) -> None:
    faults = tuple(
        f for f in plan.faults if f.matches(target.name, target.breaker_name, target.access)
    )
    if not faults:
        _put(target, target.fn)
        return
    factory = _async_injector if target.is_async else _sync_injector
    _put(target, factory(target, plan, faults))


def _still_on(plan: _Plan) -> bool:
    """Whether ``plan`` is still the active one (the kill switch may have been thrown)."""
    if killed_by_env():
        kill()
        return False
    return _state.plan is plan


def _fault_for(target: Target, plan: _Plan, faults: tuple[Fault, ...]) -> Fault | None:
    if not _still_on(plan):
        return None
    fault = plan.pick(faults)
    if fault is not None:
        _tally(target.name, fault.kind).add()
        mark_active_span_chaos(fault.kind)
    return fault


def _raise(fault: Fault) -> None:
    if fault.error is None and fault.outage is None:
        return
    exc = make_error(fault.error or "refused")
    setattr(exc, CHAOS_MARK, fault.kind)
    raise exc


def _sync_injector(target: Target, plan: _Plan, faults: tuple[Fault, ...]) -> Callable[..., Any]:
    fn = target.fn

    def injecting(*args: Any, **kwargs: Any) -> Any:
        fault = _fault_for(target, plan, faults)
        if fault is not None:
            if fault.latency_ms:
                time.sleep(fault.latency_ms / 1000)
            _raise(fault)
        return fn(*args, **kwargs)

    return injecting


def _async_injector(target: Target, plan: _Plan, faults: tuple[Fault, ...]) -> Callable[..., Any]:
    fn = target.fn

    async def injecting(*args: Any, **kwargs: Any) -> Any:
        fault = _fault_for(target, plan, faults)
        if fault is not None:
            if fault.latency_ms:
                await asyncio.sleep(fault.latency_ms / 1000)
            _raise(fault)
        return await fn(*args, **kwargs)

    return injecting
