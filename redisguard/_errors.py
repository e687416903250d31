"""The exceptions redisguard raises.

The tree is shallow on purpose::

    Exception
     +-- RedisguardError
          +-- RedisUnavailableError      Redis could not serve the call and no fallback was given
          |    +-- CircuitOpenError      ... because the breaker was open (no I/O was attempted);
          |                              also a pybreaker.CircuitBreakerError
          |    +-- StoreUnavailableError a store could not read or write (a write was NOT done)
          |         +-- TemporarilyUnavailableError  ... retry after ``retry_after`` seconds
          +-- ConfigError (also ValueError)  bad configuration: env var, URL, argument
          +-- SlowCallsError             never raised: a breaker's ``opened_by`` when slow calls
                                         (not failures) opened it

    UserWarning
     +-- RedisguardWarning               a setting that works, but not as you may expect

Data errors from Redis (``WRONGTYPE``, ``DataError``, ``NoScriptError``...) and exceptions raised
by the guarded function's own logic are never wrapped: they reach the caller unchanged.
"""

from __future__ import annotations

import pybreaker

__all__ = [
    "CircuitOpenError",
    "ConfigError",
    "RedisUnavailableError",
    "RedisguardError",
    "RedisguardWarning",
    "SlowCallsError",
    "StoreUnavailableError",
    "TemporarilyUnavailableError",
]


class RedisguardError(Exception):
    """Base class of every exception raised by redisguard itself."""


class RedisguardWarning(UserWarning):
    """A setting redisguard honours although it probably does not do what you want.

    For example a ``retry=`` given to :func:`redisguard.connect`: it runs under the guard's
    own retries, so the attempts multiply.
    """


class RedisUnavailableError(RedisguardError):
    """Redis could not serve a guarded call, and there was no fallback.

    Attributes:
        operation: The ``name`` given to ``@redis_guarded``.
        breaker: The name of the breaker that guarded the call.
        attempts: How many attempts reached Redis (0 when the circuit was open).
    """

    def __init__(self, message: str, *, operation: str, breaker: str, attempts: int) -> None:
        super().__init__(message)
        self.operation = operation
        self.breaker = breaker
        self.attempts = attempts


class CircuitOpenError(RedisUnavailableError, pybreaker.CircuitBreakerError):
    """The breaker was open, so the call was answered without touching Redis.

    It is also a ``pybreaker.CircuitBreakerError``, so code written for pybreaker catches it.
    """


class StoreUnavailableError(RedisUnavailableError):
    """A store operation did not reach Redis; for a write, nothing was written."""


class ConfigError(RedisguardError, ValueError):
    """A configuration value is invalid; the message names the setting and the value."""


class TemporarilyUnavailableError(StoreUnavailableError):
    """A store could not reach Redis; try again after ``retry_after`` seconds.

    Map it to ``503 Service Unavailable`` with ``Retry-After: {retry_after}``. For a write,
    nothing was written.

    Attributes:
        retry_after: Whole seconds (1 to 30) after which Redis is worth trying again: the
            breaker's remaining open time when it is open, else 1.
    """

    def __init__(
        self, message: str, *, operation: str, breaker: str, attempts: int, retry_after: int
    ) -> None:
        super().__init__(message, operation=operation, breaker=breaker, attempts=attempts)
        self.retry_after = retry_after


class SlowCallsError(RedisguardError):
    """Why a breaker opened when its calls were slow rather than failing.

    It is never raised: it is the breaker's ``opened_by`` (so logs, spans and health checks
    can say why the circuit is open) when the slow-call rate reached
    ``slow_call_rate_threshold``, or when a half-open trial call was slow. An answered PING
    says nothing about latency, so the recovery prober leaves such a breaker alone: it
    half-opens after ``reset_timeout`` and its trial calls decide.

    Attributes:
        rate: Percent of the window's calls that were slow (100 for a slow trial call).
        threshold: The ``slow_call_rate_threshold`` (percent) it reached.
        calls: Calls in the window when it opened (1 for a slow trial call).
        slow_call_duration: Seconds above which a call counts as slow.
    """

    def __init__(
        self, message: str, *, rate: float, threshold: float, calls: int, slow_call_duration: float
    ) -> None:
        super().__init__(message)
        self.rate = rate
        self.threshold = threshold
        self.calls = calls
        self.slow_call_duration = slow_call_duration
