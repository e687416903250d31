"""Keep process-wide state valid in a child made by ``os.fork()``.

After a fork only the forking thread exists in the child: a lock another thread held at that
moment stays held forever, and a background thread (the recovery prober) is gone although
the objects that point at it are not. gunicorn ``--preload``, ``multiprocessing`` with the
fork start method and Celery's prefork pool all fork a process that already runs redisguard.

An object that owns such state registers a reset with :func:`after_fork`. The resets run in
the child only, right after the fork, in registration order. The registry holds objects
weakly, so registering never keeps anything alive.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["after_fork", "renew_lock_after_fork"]

T = TypeVar("T")
logger = logging.getLogger("redisguard")

_PRUNE_AT = 256  # prune dead entries when the list has grown past this since the last prune


class _Registry:
    def __init__(self) -> None:
        self.entries: list[tuple[weakref.ref[Any], Callable[[Any], None]]] = []
        self.lock = threading.Lock()
        self.prune_at = _PRUNE_AT

    def add(self, obj: Any, reset: Callable[[Any], None]) -> None:
        with self.lock:
            self.entries.append((weakref.ref(obj), reset))
            if len(self.entries) >= self.prune_at:
                self.entries[:] = [entry for entry in self.entries if entry[0]() is not None]
                self.prune_at = max(_PRUNE_AT, 2 * len(self.entries))

    def run_in_child(self) -> None:
        self.lock = threading.Lock()  # the parent's may have been held by another thread
        for ref, reset in list(self.entries):
            obj = ref()
            if obj is None:
                continue
            try:
                reset(obj)
            except Exception:  # a broken reset must not kill the child at birth
                logger.exception("redisguard: resetting %r after fork failed", obj)


_registry = _Registry()


def after_fork(obj: T, reset: Callable[[T], None]) -> None:
    """Call ``reset(obj)`` in every child forked from now on, while ``obj`` is alive."""
    _registry.add(obj, reset)


def renew_lock_after_fork(module_name: str, attribute: str) -> None:
    """Give the module-level lock ``module_name.attribute`` a fresh ``threading.Lock`` in a child.

    Call it right after the lock's definition, with ``__name__``.
    """
    module = sys.modules[module_name]
    after_fork(module, lambda m: setattr(m, attribute, threading.Lock()))


if hasattr(os, "register_at_fork"):  # pragma: no branch - absent only on Windows
    os.register_at_fork(after_in_child=_registry.run_in_child)
