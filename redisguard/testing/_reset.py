"""Test isolation for redisguard's process-wide registries."""

from __future__ import annotations

from redisguard import _canary, _chaos
from redisguard._breaker import _clear_registry
from redisguard._observe import _clear_operations


def reset_breakers() -> None:
    """Forget every registered breaker and operation counter, and turn chaos off.

    Call it between tests (the project's own suite does, in an autouse fixture) so one test's
    open circuit cannot leak into the next. Decorated functions keep the breaker object they
    were created with; decorate inside the test, or use ``breaker.reset()``, to start clean.
    """
    _clear_registry()
    _clear_operations()
    _chaos.kill()
    _chaos._clear_counts()
    _canary._clear_counts()
