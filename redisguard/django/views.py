"""``/ready`` and ``/live`` views over :mod:`redisguard.health`.

``/ready`` PINGs Redis through the breaker of every ``redisguard.django.RedisCache`` in
``CACHES`` and of the session engine (when it is ``redisguard.django.sessions``). Its body
says only the status and each breaker's state by default: readiness routes are often
reachable from outside, and the Redis host, port and error text help an attacker map the
network. ``details=True`` (``include("redisguard.django.urls"), {"details": True}``) adds
them, for probes on a private port.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache

from redisguard.django import sessions
from redisguard.django._cache import RedisCache
from redisguard.health import Readiness, liveness, readiness

__all__ = ["live", "readiness_of_project", "ready"]

SESSION_ENGINE = "redisguard.django.sessions"


def _clients() -> list[Any]:
    found: list[Any] = []
    for alias in settings.CACHES:
        backend = caches[alias]
        if isinstance(backend, RedisCache):
            found.extend(backend.clients())
    if getattr(settings, "SESSION_ENGINE", None) == SESSION_ENGINE:
        found.append(sessions.client())
    unique: dict[int, Any] = {}
    for client in found:
        unique.setdefault(id(client), client)
    return list(unique.values())


def readiness_of_project() -> Readiness:
    """One :class:`~redisguard.health.Readiness` over every redisguard client of the project.

    A breaker seen through several clients is healthy only if it is through each.
    """
    checks: dict[str, dict[str, Any]] = {}
    clients = _clients()
    for client in clients or [None]:
        for name, check in readiness(client).checks.items():
            if name in checks and not check["healthy"]:
                checks[name] = check
            checks.setdefault(name, check)
    ready = all(check["healthy"] for check in checks.values())
    return Readiness("ready" if ready else "degraded", 200 if ready else 503, checks)


def _json(status: int, body: dict[str, Any]) -> HttpResponse:
    return HttpResponse(json.dumps(body), status=status, content_type="application/json")


@never_cache  # type: ignore[untyped-decorator]
def ready(request: HttpRequest, details: bool = False) -> HttpResponse:
    """200 when every breaker is closed and Redis answers a PING, else 503."""
    result = readiness_of_project()
    return _json(result.http_status, result.as_dict(details=details))


@never_cache  # type: ignore[untyped-decorator]
def live(request: HttpRequest, details: bool = False) -> HttpResponse:
    """Always 200 while the process serves requests: never touches Redis."""
    result = liveness()
    return _json(result.http_status, result.as_dict(details=details))
