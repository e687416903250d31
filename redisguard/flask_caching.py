"""Flask-Caching: a Redis backend whose every operation is guarded.

Install with ``pip install redisguard[flask-caching]`` and configure Flask-Caching with::

    CACHE_TYPE = "redisguard.flask_caching.RedisCache"
    CACHE_REDIS_URL = "redis://cache:6379/0"      # else $REDIS_URL
    CACHE_OPTIONS = {"breaker": "cache", "connect": {"socket_timeout": 0.1}}   # optional

It is Flask-Caching's own ``RedisCache`` (same keys, same pickle format, same results on a
healthy server), with each public method run through ``@redis_guarded`` on one breaker.
While Redis is unavailable it answers with cachelib's own "backend error" values, within
microseconds once the breaker is open, instead of waiting for a timeout on every call:

=========================================  ==================================================
``get``, ``has``, ``get_many``             a miss: None, False, ``[None, ...]``
``set``, ``add``, ``delete``, ``clear``    False: nothing was written or deleted
``set_many``, ``delete_many``              ``[]``: no key was written or deleted
``inc``, ``dec``                           None
``unlink``                                 None
=========================================  ==================================================

So ``@cache.cached`` and ``@cache.memoize`` views run their function instead of answering
500 or hanging, and nothing is reported as written that was not. Each fallback is counted by
the guard's telemetry under ``{name}.{method}`` (``flask_cache.get``...).

Why this is natural for Flask-Caching and not for everything: its API (cachelib's) already has
an answer for "the backend failed" in every method's return value, so a guarded backend needs
no new vocabulary. The client is created with ``check=False``: a cache that is down at startup
must not stop the app from starting.

``CACHE_OPTIONS`` keys: ``breaker`` (a name or :class:`~redisguard.Breaker`, default
``"redis"``), ``name`` (default ``"flask_cache"``), ``retry`` (a
:class:`~redisguard.RetryPolicy`, or None for one attempt), ``connect`` (keyword arguments for
``redisguard.connect()``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask
from flask_caching.backends.rediscache import RedisCache as _FlaskRedisCache

from ._breaker import Breaker
from ._client import connect
from ._config import RetryPolicy
from ._guard import DEFAULT_RETRY, redis_guarded
from ._sides import Access

__all__ = ["RedisCache"]


def _none(*args: Any, **kwargs: Any) -> None:
    return None


def _misses(*keys: Any) -> list[None]:
    return [None] * len(keys)


def _nothing(*args: Any, **kwargs: Any) -> list[Any]:
    return []


#: method -> (fallback, idempotent, access). "Idempotent" covers the reply too: SETNX, DEL
#: and INCR answer differently when replayed, so they are retried only for errors that prove
#: the command never ran.
_POLICY: Mapping[str, tuple[Any, bool, Access]] = {
    "get": (_none, True, "read"),
    "get_many": (_misses, True, "read"),
    "has": (False, True, "read"),
    "set": (False, True, "write"),
    "add": (False, False, "write"),
    "set_many": (_nothing, True, "write"),
    "delete": (False, False, "delete"),
    "delete_many": (_nothing, False, "delete"),
    "unlink": (_none, False, "delete"),
    "clear": (False, True, "delete"),
    "inc": (_none, False, "write"),
    "dec": (_none, False, "write"),
}

_DEFAULT: Any = object()


class RedisCache(_FlaskRedisCache):
    """Flask-Caching's ``RedisCache`` with every operation guarded (see the module docstring).

    Args:
        host: A redis-py client (``redisguard.connect(...)``); :meth:`factory` makes one
            from ``CACHE_REDIS_URL``.
        default_timeout: Default expiry in seconds (0: never).
        key_prefix: Prefix of every key.
        breaker: The breaker (name or object) guarding the calls.
        name: Operation name prefix for logs and metrics.
        retry: Retry policy for transient errors (None: one attempt).
        kwargs: Passed on to Flask-Caching's ``RedisCache``.
    """

    def __init__(
        self,
        host: Any,
        default_timeout: int = 300,
        key_prefix: str | None = None,
        *,
        breaker: str | Breaker = "redis",
        name: str = "flask_cache",
        retry: RetryPolicy | None = _DEFAULT,
        **kwargs: Any,
    ) -> None:
        if isinstance(host, str):
            raise TypeError(
                "redisguard.flask_caching.RedisCache takes a client, not a host name: "
                "set CACHE_REDIS_URL, or pass redisguard.connect(url)"
            )
        super().__init__(host, default_timeout=default_timeout, key_prefix=key_prefix, **kwargs)
        policy = DEFAULT_RETRY if retry is _DEFAULT else retry
        for method, (fallback, idempotent, access) in _POLICY.items():
            unguarded = getattr(super(), method, None)
            if unguarded is None:  # unlink: older Flask-Caching versions have none
                continue
            guard = redis_guarded(
                name=f"{name}.{method}",
                breaker=breaker,
                fallback=fallback,
                idempotent=idempotent,
                access=access,
                retry=policy,
            )
            setattr(self, method, guard(_forward(unguarded, f"{name}.{method}")))

    @classmethod
    def factory(
        cls, app: Flask, config: dict[str, Any], args: list[Any], kwargs: dict[str, Any]
    ) -> RedisCache:
        """Build the backend from Flask-Caching's configuration (``CACHE_TYPE`` names this)."""
        options = dict(kwargs)
        connect_options = {"check": False, **dict(options.pop("connect", None) or {})}
        client = connect(config.get("CACHE_REDIS_URL"), **connect_options)
        key_prefix = config.get("CACHE_KEY_PREFIX")
        if key_prefix:
            options["key_prefix"] = key_prefix
        return cls(client, *args, **options)


def _forward(method: Callable[..., Any], name: str) -> Callable[..., Any]:
    """A plain function calling ``method`` (what ``redis_guarded`` wraps), named for logs."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return method(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call
