"""Django integration: a guarded cache backend, a session engine, readiness URLs.

Needs the ``django`` extra (``pip install 'redisguard[django]'``)::

    CACHES = {"default": {"BACKEND": "redisguard.django.RedisCache",
                          "LOCATION": "redis://127.0.0.1:6379/1"}}
    SESSION_ENGINE = "redisguard.django.sessions"
    MIDDLEWARE = [..., "redisguard.django.middleware.SessionMiddleware", ...]
    urlpatterns = [path("", include("redisguard.django.urls"))]   # /ready, /live

What :class:`RedisCache` answers while Redis is unavailable (once the breaker is open, at
once, without touching Redis):

=================  =======================================================================
``get``            ``default`` (a miss)
``get_many``       ``{}``
``has_key``        False (the key is not known to be there)
``get_or_set``     the default (computed if callable), not stored
``set``            None, like a stored write (Django's API cannot tell): the write is
                   dropped and counted in :func:`dropped_writes`, or raises with
                   ``WRITE_FAILURE="raise"``
``set_many``       every key given: Django's "keys that failed to be inserted"
``add``            False: not stored
``touch``          False: not touched
``delete``         False: nothing deleted (the old value may still be in Redis)
``delete_many``    None; dropped and counted
``clear``          False
``incr``/``decr``  raise :class:`~redisguard.TemporarilyUnavailableError`: no number to give
=================  =======================================================================

With ``WRITE_FAILURE="raise"`` every write raises
:class:`~redisguard.TemporarilyUnavailableError` (``retry_after`` set) instead.

Serve stale: with ``OPTIONS["STALE_FOR"] = seconds``, every value a ``get``/``get_many``
read from Redis is also kept (serialized) in a bounded in-process LRU (``L1_MAX_ENTRIES``,
``L1_MAX_BYTES``), and while Redis is unavailable those reads answer from it, for values up
to ``STALE_FOR`` old (counted in :func:`stale_served`). On the happy path Redis stays the
source of truth. A write or delete that may not have reached Redis (an outage) blocks its
keys in the L1, and ``clear`` empties it: nothing the application tried to change or remove
is served stale afterwards.
"""

from __future__ import annotations

try:
    import django  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("redisguard.django needs Django: pip install 'redisguard[django]'") from exc

from redisguard.django._cache import (
    GuardedCacheClient,
    RedisCache,
    close_clients,
    dropped_writes,
    stale_served,
)

__all__ = [
    "GuardedCacheClient",
    "RedisCache",
    "close_clients",
    "dropped_writes",
    "stale_served",
]
