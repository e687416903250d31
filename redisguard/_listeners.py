"""Breaker listeners shipped with redisguard (pybreaker ``CircuitBreakerListener`` subclasses)."""

from __future__ import annotations

import logging
from typing import Any

import pybreaker

from ._breaker import _default_listener_factories
from ._redact import redact_text
from ._sides import WriteEvent

__all__ = ["LoggingListener"]


class LoggingListener(pybreaker.CircuitBreakerListener):
    """Logs every real state transition to the ``redisguard`` logger, by severity.

    closed -> open is ERROR ("Circuit breaker opened"), half-open -> open is WARNING ("re-opened
    during recovery"), -> half-open and -> closed are INFO. Records carry ``category``,
    ``breaker``, ``state`` and ``previous_state`` in ``extra`` for structured handlers.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("redisguard")

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        old = getattr(old_state, "name", None)
        new = new_state.name
        if old == new or getattr(cb, "_adopting", False):
            return  # (adopting: another process on the host made it, and logged it)
        if new == pybreaker.STATE_OPEN:
            if old == pybreaker.STATE_HALF_OPEN:
                level, message = logging.WARNING, "Circuit breaker re-opened during recovery"
            else:
                level, message = logging.ERROR, "Circuit breaker opened"
        elif new == pybreaker.STATE_HALF_OPEN:
            level, message = logging.INFO, "Circuit breaker entering half-open state"
        else:
            level, message = logging.INFO, "Circuit breaker closed (recovered)"
        extra: dict[str, Any] = {
            "category": "circuit-breaker",
            "breaker": cb.name,
            "state": new,
            "previous_state": old,
        }
        if new == pybreaker.STATE_OPEN:
            extra["failure_count"] = cb.fail_counter
            extra["reset_timeout"] = cb.reset_timeout
            cause = getattr(cb, "opened_by", None)
            if cause is not None:  # why: e.g. a SlowCallsError (slow calls, not failures)
                extra["opened_by"] = redact_text(f"{type(cause).__name__}: {cause}")
        self.logger.log(level, "%s: %s", message, cb.name, extra=extra)

    def write_state_change(self, cb: pybreaker.CircuitBreaker, event: WriteEvent) -> None:
        """The breaker's write side moved (``redisguard._sides``): opened by refusals of
        writes, it blocks write guards while reads go on."""
        old, new, cause = event.old, event.new, event.cause
        if new == "open":
            level = logging.WARNING if old == "half-open" else logging.ERROR
            message = (
                "Circuit breaker write side re-opened during recovery"
                if old == "half-open"
                else "Circuit breaker write side opened (reads go on)"
            )
        elif new == "half-open":
            level, message = logging.INFO, "Circuit breaker write side entering half-open state"
        else:
            level, message = logging.INFO, "Circuit breaker write side closed (writes accepted)"
        extra: dict[str, Any] = {
            "category": "circuit-breaker",
            "breaker": cb.name,
            "side": "write",
            "state": new,
            "previous_state": old,
            "cause": cause,
        }
        if new == "open":
            extra["reset_timeout"] = cb.reset_timeout
        suffix = f" ({cause})" if cause and new != "closed" else ""
        self.logger.log(level, "%s: %s%s", message, cb.name, suffix, extra=extra)


_default_listener_factories.append(LoggingListener)
