"""The Starlette example's service, in FastAPI, with :mod:`redisguard.fastapi`.

Run it (``pip install redisguard[examples]``)::

    REDIS_URL=redis://localhost:6379/0 uvicorn examples.fastapi_service:create_app --factory

Configuration (environment): ``REDIS_URL``; ``RATE_LIMIT`` requests per ``RATE_WINDOW``
seconds per client (header ``x-client-id``, else the peer address); ``RATE_POLICY`` is the
limiter's ``on_unavailable`` (``open``, ``closed`` or ``local``); ``REDIS_WAIT`` seconds of
wait-for-ready at startup; the breaker reads ``REDIS_CIRCUIT_BREAKER_*``.

What the endpoints do when Redis is down:

=============================  =========================================================
``GET /sessions/{id}``         404, like a missing session, with ``"degraded": true``
                               when *this* read was answered by the fallback
``PUT/DELETE /sessions/{id}``  503 + Retry-After: the write did not happen
``POST/GET/DELETE /tokens``    503 + Retry-After: never "missing token"
``POST /register``             503 + Retry-After, RFC 7591 ``temporarily_unavailable``
rate limiting                  per ``RATE_POLICY``; 429 with the JSON-RPC body when denied
``GET /ready``                 503 with the breaker's state; ``GET /live`` stays 200
=============================  =========================================================

No route catches :class:`~redisguard.stores.TemporarilyUnavailableError`: the handler that
``guard.install(app)`` adds answers 503 with ``Retry-After`` for all of them.
"""

from __future__ import annotations

import os
import secrets
from typing import Annotated, Any

from fastapi import Body, FastAPI
from fastapi.responses import JSONResponse, Response

from redisguard.asgi import Scope
from redisguard.fastapi import RateLimit, Redisguard, Registry, Sessions, Tokens
from redisguard.stores import ClientExistsError

#: Any JSON body.
JsonBody = Annotated[Any, Body()]


def rate_limit_key(scope: Scope) -> str | None:
    """The ``x-client-id`` header, else the peer address."""
    for name, value in scope.get("headers", ()):
        if name == b"x-client-id":
            return "client:" + bytes(value).decode("latin-1")
    client = scope.get("client")
    return f"ip:{client[0]}" if client else None


def create_app(
    redis_url: str | None = None,
    *,
    rate_limit: int | None = None,
    window: float | None = None,
    policy: str | None = None,
) -> FastAPI:
    """Build the FastAPI app."""
    env = os.environ
    on_unavailable: Any = policy or env.get("RATE_POLICY", "open")
    guard = Redisguard(
        redis_url,
        rate_limit=rate_limit or int(env.get("RATE_LIMIT", "100")),
        window=window or float(env.get("RATE_WINDOW", "60")),
        on_unavailable=on_unavailable,
        key=rate_limit_key,
        session_ttl=3600,
        connect={"wait": float(env.get("REDIS_WAIT", "0")) or None},
    )
    app = FastAPI(lifespan=guard.lifespan, dependencies=[RateLimit])
    guard.install(app)

    @app.get("/sessions/{sid}")
    async def get_session(sid: str, sessions: Sessions) -> Any:
        found = await sessions.lookup(sid)
        if found.value is None:
            # "degraded": Redis was unavailable for this very read (not the breaker's state,
            # which stays closed during the first fallbacks of an outage).
            return JSONResponse({"error": "session_not_found", "degraded": found.degraded}, 404)
        return {"session": found.value}

    @app.put("/sessions/{sid}", status_code=204)
    async def put_session(sid: str, sessions: Sessions, body: JsonBody) -> Response:
        try:
            await sessions.set(sid, body)
        except TypeError:
            return JSONResponse({"error": "invalid_session"}, 400)
        return Response(status_code=204)

    @app.delete("/sessions/{sid}")
    async def delete_session(sid: str, sessions: Sessions) -> Response:
        found = await sessions.delete(sid)
        return Response(status_code=204 if found else 404)

    @app.post("/tokens/{tid}", status_code=201)
    async def save_token(tid: str, tokens: Tokens, body: JsonBody) -> Any:
        token = await tokens.save(tid, str(body["token"]), ttl=float(body.get("ttl", 300)))
        return {"expires_at": token.expires_at.isoformat()}

    @app.get("/tokens/{tid}")
    async def get_token(tid: str, tokens: Tokens) -> Any:
        token = await tokens.get(tid)
        if token is None:
            return JSONResponse({"error": "invalid_token"}, 404)
        return {"token": token.value, "expires_in": round(token.expires_in)}

    @app.delete("/tokens/{tid}", status_code=204)
    async def revoke_token(tid: str, tokens: Tokens) -> Response:
        await tokens.revoke(tid)
        return Response(status_code=204)

    @app.post("/register", status_code=201)
    async def register(registry: Registry, metadata: JsonBody) -> Any:
        if not isinstance(metadata, dict) or not metadata.get("redirect_uris"):
            return JSONResponse({"error": "invalid_client_metadata"}, 400)
        metadata["client_secret"] = secrets.token_urlsafe(32)
        try:
            return await registry.register(metadata)
        except ClientExistsError:
            return JSONResponse({"error": "invalid_client_metadata"}, 400)

    @app.get("/clients/{cid}")
    async def get_client(cid: str, registry: Registry) -> Any:
        record = await registry.get(cid)
        if record is None:
            return JSONResponse({"error": "invalid_client"}, 404)
        record.pop("client_secret", None)
        return record

    return app
