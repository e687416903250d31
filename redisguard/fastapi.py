"""FastAPI: a lifespan-managed guarded client, dependencies for the stores and the limiter.

Install with ``pip install redisguard[fastapi]``. A thin layer over :mod:`redisguard.asgi`,
:mod:`redisguard.health` and the asyncio stores::

    from fastapi import FastAPI
    from redisguard.fastapi import RateLimit, Redisguard, Sessions

    guard = Redisguard("redis://cache:6379/0", rate_limit=100, window=60, on_unavailable="local")
    app = FastAPI(lifespan=guard.lifespan)
    guard.install(app)                       # GET /ready, GET /live, the 503 and 429 handlers

    @app.get("/sessions/{sid}", dependencies=[RateLimit])
    async def get_session(sid: str, sessions: Sessions) -> dict[str, object]:
        found = await sessions.lookup(sid)   # found.degraded: Redis was unavailable
        ...

The client is created when the app starts (``await redisguard.aconnect(...)``) and closed when
it stops; the stores and the limiter are handed to each request as lifespan state, so nothing
is global and two apps never share a client by accident. A route that raises
:class:`~redisguard.stores.TemporarilyUnavailableError` answers 503 with ``Retry-After``; a
denied request answers 429 with :data:`redisguard.asgi.RATE_LIMIT_BODY` and ``Retry-After``.

The readiness body says only the status and the breakers' states unless ``details=True``: see
:mod:`redisguard.health` for why.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ._client import aconnect
from .asgi import RATE_LIMIT_BODY, UNAVAILABLE_BODY, Scope, client_address
from .health import areadiness, liveness
from .ratelimit import AsyncRateLimiter, Decision, Policy, RateLimitExceeded
from .stores import (
    AsyncClientRegistry,
    AsyncSessionStore,
    AsyncTokenStore,
    TemporarilyUnavailableError,
)

__all__ = [
    "Client",
    "Guarded",
    "Limiter",
    "RateLimit",
    "Redisguard",
    "Registry",
    "Sessions",
    "Tokens",
    "guarded",
    "rate_limit",
    "rate_limited",
    "unavailable",
]

#: The lifespan state key holding the :class:`Guarded` services.
STATE_KEY = "redisguard"


@dataclass(frozen=True)
class Guarded:
    """What one running app uses: the client, the stores and the limiter (None if off)."""

    client: Any
    sessions: AsyncSessionStore
    tokens: AsyncTokenStore
    registry: AsyncClientRegistry
    limiter: AsyncRateLimiter | None
    key: Callable[[Scope], str | None]
    exempt: frozenset[str]


class Redisguard:
    """Configuration of the client, stores and limiter that :meth:`lifespan` builds.

    Args:
        url: The Redis URL (default ``$REDIS_URL``, as ``redisguard.aconnect()``).
        rate_limit: Requests allowed per ``window`` per key; None: no limiter (the
            :data:`RateLimit` dependency then raises at request time).
        window: The rate-limit window in seconds.
        on_unavailable: The limiter's policy while Redis is down (``"open"``, ``"closed"``,
            ``"local"``).
        key: Maps the ASGI scope to a rate-limit key (default: the peer address); None
            skips limiting for that request.
        exempt: Paths the :data:`RateLimit` dependency never limits (the health probes).
        session_ttl: The session store's default lifetime in seconds.
        details: Put the Redis target, errors and counts in ``/ready`` (keep it False where the
            route is reachable from outside).
        connect: More keyword arguments for ``redisguard.aconnect()`` (``wait``,
            ``socket_timeout``, ``breakers``...).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        rate_limit: int | None = None,
        window: float = 60.0,
        on_unavailable: Policy = "open",
        key: Callable[[Scope], str | None] = client_address,
        exempt: Sequence[str] = ("/ready", "/live"),
        session_ttl: float = 1800,
        details: bool = False,
        connect: Mapping[str, Any] | None = None,
    ) -> None:
        if rate_limit is not None and (
            isinstance(rate_limit, bool) or not isinstance(rate_limit, int) or rate_limit < 1
        ):
            raise ValueError(f"rate_limit must be a positive integer or None, got {rate_limit!r}")
        if not callable(key):
            raise TypeError(f"key must be a callable taking the ASGI scope, got {key!r}")
        self.url = url
        self.rate_limit = rate_limit
        self.window = window
        self.on_unavailable = on_unavailable
        self.key = key
        self.exempt = frozenset(exempt)
        self.session_ttl = session_ttl
        self.details = details
        self.connect = dict(connect or {})

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[dict[str, Guarded]]:
        """Connect at startup, close at shutdown; pass it as ``FastAPI(lifespan=...)``.

        To combine it with a lifespan of your own: ``async with guard.lifespan(app) as state:
        yield {**state, ...}``.
        """
        client = await aconnect(self.url, **self.connect)
        try:
            limiter = None
            if self.rate_limit is not None:
                limiter = AsyncRateLimiter(
                    client, self.rate_limit, self.window, on_unavailable=self.on_unavailable
                )
            services = Guarded(
                client=client,
                sessions=AsyncSessionStore(client, ttl=self.session_ttl),
                tokens=AsyncTokenStore(client),
                registry=AsyncClientRegistry(client),
                limiter=limiter,
                key=self.key,
                exempt=self.exempt,
            )
            yield {STATE_KEY: services}
        finally:
            await client.aclose()

    def install(
        self, app: FastAPI, *, ready_path: str = "/ready", live_path: str = "/live"
    ) -> None:
        """Add ``GET /ready`` and ``GET /live`` (left out of the OpenAPI schema) and the
        handlers answering 503 for an outage and 429 for a denied request (the probes' paths
        join ``exempt``: :data:`RateLimit` never limits them)."""
        details = self.details
        self.exempt = self.exempt | {ready_path, live_path}

        async def ready(request: Request) -> Response:
            result = await areadiness(guarded(request).client)
            return JSONResponse(
                result.as_dict(details=details),
                result.http_status,
                headers={"Cache-Control": "no-store"},
            )

        async def live() -> Response:
            return JSONResponse(liveness().as_dict(details=details))

        app.add_api_route(ready_path, ready, methods=["GET"], include_in_schema=False)
        app.add_api_route(live_path, live, methods=["GET"], include_in_schema=False)
        app.add_exception_handler(TemporarilyUnavailableError, _unavailable_handler)
        app.add_exception_handler(RateLimitExceeded, _rate_limited_handler)


def guarded(request: Request) -> Guarded:
    """The running app's :class:`Guarded` services (a dependency)."""
    services = getattr(request.state, STATE_KEY, None)
    if not isinstance(services, Guarded):
        raise RuntimeError(
            "redisguard.fastapi: no client for this app; create it with "
            "FastAPI(lifespan=guard.lifespan) and run the lifespan (a TestClient must be "
            "used as a context manager)"
        )
    return services


def _client(request: Request) -> Any:
    return guarded(request).client


def _sessions(request: Request) -> AsyncSessionStore:
    return guarded(request).sessions


def _tokens(request: Request) -> AsyncTokenStore:
    return guarded(request).tokens


def _registry(request: Request) -> AsyncClientRegistry:
    return guarded(request).registry


def _limiter(request: Request) -> AsyncRateLimiter:
    limiter = guarded(request).limiter
    if limiter is None:
        raise RuntimeError("redisguard.fastapi: no limiter; pass Redisguard(rate_limit=...)")
    return limiter


async def rate_limit(request: Request) -> Decision | None:
    """Count the request against the limiter (a dependency); raises
    :class:`~redisguard.ratelimit.RateLimitExceeded` when denied (429 once installed).

    Returns the decision, or None when the path is exempt or the key function skips it.
    """
    services = guarded(request)
    if request.url.path in services.exempt:
        return None
    key = services.key(request.scope)
    if key is None:
        return None
    decision = await _limiter(request).hit(key)
    if not decision.allowed:
        raise RateLimitExceeded(decision)
    return decision


def unavailable(exc: TemporarilyUnavailableError) -> JSONResponse:
    """503 with ``Retry-After``: Redis could not serve the request; it may be retried."""
    return JSONResponse(UNAVAILABLE_BODY, 503, headers={"Retry-After": str(exc.retry_after)})


def rate_limited(exc: RateLimitExceeded) -> Response:
    """429 with ``Retry-After`` and :data:`redisguard.asgi.RATE_LIMIT_BODY`."""
    return Response(
        RATE_LIMIT_BODY,
        429,
        headers={"Retry-After": str(exc.retry_after)},
        media_type="application/json",
    )


async def _unavailable_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TemporarilyUnavailableError)
    return unavailable(exc)


async def _rate_limited_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RateLimitExceeded)
    return rate_limited(exc)


#: The guarded client (``redisguard.AsyncGuardedRedis``) of the running app.
Client = Annotated[Any, Depends(_client)]
#: The :class:`~redisguard.stores.AsyncSessionStore`.
Sessions = Annotated[AsyncSessionStore, Depends(_sessions)]
#: The :class:`~redisguard.stores.AsyncTokenStore`.
Tokens = Annotated[AsyncTokenStore, Depends(_tokens)]
#: The :class:`~redisguard.stores.AsyncClientRegistry`.
Registry = Annotated[AsyncClientRegistry, Depends(_registry)]
#: The :class:`~redisguard.ratelimit.AsyncRateLimiter` (raises if ``rate_limit`` was not set).
Limiter = Annotated[AsyncRateLimiter, Depends(_limiter)]
#: Put in a route's or router's ``dependencies=[RateLimit]`` to limit it.
RateLimit = Depends(rate_limit)
