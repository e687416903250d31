"""An ASGI service whose Redis-backed parts degrade instead of answering 500.

Why Starlette: it is small, it is plain ASGI (so redisguard's framework-free ASGI helpers
plug in as ordinary middleware), and it is what FastAPI is built on -- everything here works
unchanged in a FastAPI app.

Run it (``pip install redisguard[examples]``)::

    REDIS_URL=redis://localhost:6379/0 uvicorn examples.asgi_service:create_app --factory

Configuration (environment): ``REDIS_URL``; ``RATE_LIMIT`` requests per ``RATE_WINDOW``
seconds per client (header ``x-client-id``, else the peer address); ``RATE_POLICY`` is the
limiter's ``on_unavailable`` (``open``, ``closed`` or ``local``); ``REDIS_WAIT`` seconds of
wait-for-ready at startup; the breaker reads ``REDIS_CIRCUIT_BREAKER_*``.

What the endpoints do when Redis is down:

=============================  =========================================================
``GET /sessions/{id}``         404, like a missing session (the design document's choice);
                               the body says ``"degraded": true``
``PUT/DELETE /sessions/{id}``  503 + Retry-After: the write did not happen
``POST/GET/DELETE /tokens``    503 + Retry-After: never "missing token"
``POST /register``             503 + Retry-After, RFC 7591 ``temporarily_unavailable``
rate limiting                  per ``RATE_POLICY``; 429 with the JSON-RPC body when denied
``GET /ready``                 503 with the breaker's state; ``GET /live`` stays 200
=============================  =========================================================
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from redisguard import aconnect
from redisguard.asgi import HealthMiddleware, RateLimitMiddleware, Scope
from redisguard.ratelimit import AsyncRateLimiter
from redisguard.stores import (
    AsyncClientRegistry,
    AsyncSessionStore,
    AsyncTokenStore,
    ClientExistsError,
    TemporarilyUnavailableError,
)


def unavailable(exc: TemporarilyUnavailableError) -> JSONResponse:
    """503 with Retry-After: Redis is down, the request may be retried."""
    return JSONResponse(
        {"error": "temporarily_unavailable", "error_description": "storage unavailable"},
        status_code=503,
        headers={"Retry-After": str(exc.retry_after)},
    )


class Services:
    """What the routes use; built at startup."""

    client: Any
    sessions: AsyncSessionStore
    tokens: AsyncTokenStore
    registry: AsyncClientRegistry
    limiter: AsyncRateLimiter


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def rate_limit_key(scope: Scope) -> str | None:
    """The ``x-client-id`` header, else the peer address."""
    for name, value in scope.get("headers", ()):
        if name == b"x-client-id":
            return "client:" + bytes(value).decode("latin-1")
    client = scope.get("client")
    return f"ip:{client[0]}" if client else None


async def get_session(request: Request) -> Response:
    found = await _services(request).sessions.lookup(request.path_params["sid"])
    if found.value is None:
        # An outage reads as "not found"; lookup() says whether *this* read was a fallback
        # (the breaker's state cannot: the first fallbacks of an outage precede its opening).
        return JSONResponse({"error": "session_not_found", "degraded": found.degraded}, 404)
    return JSONResponse({"session": found.value})


async def put_session(request: Request) -> Response:
    body = await request.json()
    try:
        await _services(request).sessions.set(request.path_params["sid"], body)
    except TemporarilyUnavailableError as exc:
        return unavailable(exc)
    except TypeError:
        return JSONResponse({"error": "invalid_session"}, 400)
    return Response(status_code=204)


async def delete_session(request: Request) -> Response:
    try:
        found = await _services(request).sessions.delete(request.path_params["sid"])
    except TemporarilyUnavailableError as exc:
        return unavailable(exc)
    return Response(status_code=204 if found else 404)


async def save_token(request: Request) -> Response:
    body = await request.json()
    try:
        token = await _services(request).tokens.save(
            request.path_params["tid"], str(body["token"]), ttl=float(body.get("ttl", 300))
        )
    except TemporarilyUnavailableError as exc:
        return unavailable(exc)
    return JSONResponse({"expires_at": token.expires_at.isoformat()}, 201)


async def get_token(request: Request) -> Response:
    try:
        token = await _services(request).tokens.get(request.path_params["tid"])
    except TemporarilyUnavailableError as exc:
        return unavailable(exc)
    if token is None:
        return JSONResponse({"error": "invalid_token"}, 404)
    return JSONResponse({"token": token.value, "expires_in": round(token.expires_in)})


async def revoke_token(request: Request) -> Response:
    try:
        await _services(request).tokens.revoke(request.path_params["tid"])
    except TemporarilyUnavailableError as exc:
        return unavailable(exc)
    return Response(status_code=204)


async def register(request: Request) -> Response:
    metadata = await request.json()
    if not isinstance(metadata, dict) or not metadata.get("redirect_uris"):
        return JSONResponse({"error": "invalid_client_metadata"}, 400)
    metadata["client_secret"] = secrets.token_urlsafe(32)
    try:
        record = await _services(request).registry.register(metadata)
    except TemporarilyUnavailableError as exc:
        return unavailable(exc)
    except ClientExistsError:
        return JSONResponse({"error": "invalid_client_metadata"}, 400)
    return JSONResponse(record, 201)


async def get_client(request: Request) -> Response:
    try:
        record = await _services(request).registry.get(request.path_params["cid"])
    except TemporarilyUnavailableError as exc:
        return unavailable(exc)
    if record is None:
        return JSONResponse({"error": "invalid_client"}, 404)
    record.pop("client_secret", None)
    return JSONResponse(record)


def create_app(
    redis_url: str | None = None,
    *,
    rate_limit: int | None = None,
    window: float | None = None,
    policy: str | None = None,
) -> Any:
    """Build the ASGI app (Starlette wrapped in redisguard's middleware)."""
    env = os.environ
    limit = rate_limit or int(env.get("RATE_LIMIT", "100"))
    period = window or float(env.get("RATE_WINDOW", "60"))
    on_unavailable: Any = policy or env.get("RATE_POLICY", "open")
    wait = float(env.get("REDIS_WAIT", "0")) or None
    services = Services()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        services.client = await aconnect(redis_url, wait=wait)
        services.sessions = AsyncSessionStore(services.client, ttl=3600)
        services.tokens = AsyncTokenStore(services.client)
        services.registry = AsyncClientRegistry(services.client)
        services.limiter = AsyncRateLimiter(
            services.client, limit, period, on_unavailable=on_unavailable
        )
        try:
            yield
        finally:
            await services.client.aclose()

    app = Starlette(
        routes=[
            Route("/sessions/{sid}", get_session, methods=["GET"]),
            Route("/sessions/{sid}", put_session, methods=["PUT"]),
            Route("/sessions/{sid}", delete_session, methods=["DELETE"]),
            Route("/tokens/{tid}", save_token, methods=["POST"]),
            Route("/tokens/{tid}", get_token, methods=["GET"]),
            Route("/tokens/{tid}", revoke_token, methods=["DELETE"]),
            Route("/register", register, methods=["POST"]),
            Route("/clients/{cid}", get_client, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.services = services
    limited = RateLimitMiddleware(app, lambda: services.limiter, key=rate_limit_key)
    return HealthMiddleware(limited, lambda: services.client)
