"""Plain ASGI helpers: rate limiting (429) and ``/ready`` / ``/live`` endpoints.

No framework is imported: these are ASGI 3 callables, usable with Starlette, FastAPI, Quart,
Litestar or a bare ASGI server::

    app = RateLimitMiddleware(app, limiter)                  # 429 with Retry-After
    app = HealthMiddleware(app, client)                      # GET /ready, GET /live
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from typing import Any

from ._breaker import Breaker
from .health import areadiness, liveness
from .ratelimit import AsyncRateLimiter

__all__ = [
    "RATE_LIMIT_BODY",
    "UNAVAILABLE_BODY",
    "HealthMiddleware",
    "RateLimitMiddleware",
    "client_address",
    "health_app",
    "send_json",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The design document's 429 body, byte for byte.
RATE_LIMIT_BODY = (
    b'{"jsonrpc":"2.0","error":{"code":-32003,"message":"Rate limit exceeded",'
    b'"data":{"reason":"too_many_requests"}},"id":null}'
)
#: The body the integrations answer with 503 when a store raises
#: :class:`~redisguard.stores.TemporarilyUnavailableError` (RFC 6749's error code).
UNAVAILABLE_BODY = {"error": "temporarily_unavailable", "error_description": "storage unavailable"}


async def send_json(
    send: Send,
    status: int,
    body: bytes | dict[str, Any],
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """Send a complete JSON response."""
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"cache-control", b"no-store"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def client_address(scope: Scope) -> str | None:
    """The default rate-limit key: the peer's IP address (None: do not limit)."""
    client = scope.get("client")
    return str(client[0]) if client else None


class RateLimitMiddleware:
    """Answer 429 (the seed's JSON-RPC body, ``Retry-After``) when the limiter says no.

    Args:
        app: The ASGI app to protect.
        limiter: An :class:`~redisguard.ratelimit.AsyncRateLimiter`, or a zero-argument
            callable returning one (for limiters built at application startup).
        key: Maps the ASGI scope to a rate-limit key; None skips limiting for that request.
        exempt: Paths never limited (health probes by default).
    """

    def __init__(
        self,
        app: ASGIApp,
        limiter: AsyncRateLimiter | Callable[[], AsyncRateLimiter],
        *,
        key: Callable[[Scope], str | None] = client_address,
        exempt: Sequence[str] = ("/ready", "/live"),
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.key = key
        self.exempt = frozenset(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.exempt:
            await self.app(scope, receive, send)
            return
        key = self.key(scope)
        if key is not None:
            limiter = self.limiter if isinstance(self.limiter, AsyncRateLimiter) else self.limiter()
            decision = await limiter.hit(key)
            if not decision.allowed:
                wait = max(1, math.ceil(decision.retry_after))
                await send_json(send, 429, RATE_LIMIT_BODY, [(b"retry-after", str(wait).encode())])
                return
        await self.app(scope, receive, send)


class HealthMiddleware:
    """Serve ``GET /ready`` (readiness, 200/503) and ``GET /live`` (200) in front of ``app``.

    Args:
        app: The app that serves every other path (None: answer 404).
        client: The asyncio client to PING (``await redisguard.aconnect()``), or a
            zero-argument callable returning it (for clients created at startup).
        breakers: Breakers to report; default the client's.
        ready_path: Path of the readiness probe.
        live_path: Path of the liveness probe.
        timeout: Upper bound on the readiness PING, in seconds.
        details: Put the Redis target, PING latency, last error, failure counts and the
            version in the bodies. Off by default: readiness routes are often reachable from
            outside, and those details map the network behind the service (see
            :mod:`redisguard.health`). Turn it on only where the route is private.
    """

    def __init__(
        self,
        app: ASGIApp | None,
        client: Any,
        *,
        breakers: Sequence[str | Breaker] | None = None,
        ready_path: str = "/ready",
        live_path: str = "/live",
        timeout: float = 0.25,
        details: bool = False,
    ) -> None:
        self.app = app
        self.client = client
        self.breakers = breakers
        self.ready_path = ready_path
        self.live_path = live_path
        self.timeout = timeout
        self.details = details

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path") if scope["type"] == "http" else None
        if path == self.live_path:
            live = liveness()
            await send_json(send, live.http_status, live.as_dict(details=self.details))
        elif path == self.ready_path:
            client = self.client() if callable(self.client) else self.client
            ready = await areadiness(client, breakers=self.breakers, timeout=self.timeout)
            await send_json(send, ready.http_status, ready.as_dict(details=self.details))
        elif self.app is not None:
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            await send_json(send, 404, {"error": "not_found"})


def health_app(client: Any, **options: Any) -> HealthMiddleware:
    """A standalone ASGI app serving only ``/ready`` and ``/live`` (to mount anywhere)."""
    return HealthMiddleware(None, client, **options)
