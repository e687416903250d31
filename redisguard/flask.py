"""Flask: an extension wiring a guarded client, the stores, the limiter, readiness and errors.

Install with ``pip install redisguard[flask]``. A thin layer over the sync stores,
:mod:`redisguard.ratelimit` and :mod:`redisguard.health`::

    from flask import Flask
    from redisguard.flask import Redisguard, sessions

    app = Flask(__name__)
    Redisguard(app, url="redis://cache:6379/0", rate_limit=100, window=60)

    @app.get("/sessions/<sid>")
    def get_session(sid):
        found = sessions().lookup(sid)       # found.degraded: Redis was unavailable
        ...

``init_app`` connects (``redisguard.connect()``, or uses the ``client=`` you pass), builds the
stores and the limiter, and adds:

* ``GET /ready`` (200/503) and ``GET /live`` (200, never touches Redis);
* an error handler answering :class:`~redisguard.stores.TemporarilyUnavailableError` (a
  store could not reach Redis) with 503, ``Retry-After`` and
  :data:`redisguard.asgi.UNAVAILABLE_BODY`;
* with ``rate_limit=``, a limit on every request but the probes, answered with 429,
  ``Retry-After`` and :data:`redisguard.asgi.RATE_LIMIT_BODY` (or call :func:`rate_limit` in
  the views you choose, with ``limit_every_request=False``).

The URL comes from ``url=``, else ``app.config["REDISGUARD_URL"]``, else ``$REDIS_URL``.
The readiness body says only the status and the breakers' states unless ``details=True``: see
:mod:`redisguard.health` for why.

For Flask-Caching, :mod:`redisguard.flask_caching` has a guarded backend (its own module:
it imports Flask-Caching, which this one does not need).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask, Request, Response, current_app, jsonify, request

from ._client import connect
from .asgi import RATE_LIMIT_BODY, UNAVAILABLE_BODY
from .health import liveness, readiness
from .ratelimit import Decision, Policy, RateLimiter, RateLimitExceeded
from .stores import ClientRegistry, SessionStore, TemporarilyUnavailableError, TokenStore

__all__ = [
    "Guarded",
    "Redisguard",
    "client",
    "guarded",
    "limiter",
    "rate_limit",
    "rate_limited",
    "registry",
    "remote_address",
    "sessions",
    "tokens",
    "unavailable",
]

#: The ``app.extensions`` key holding the :class:`Guarded` services.
EXTENSION_KEY = "redisguard"


def remote_address(req: Request) -> str | None:
    """The default rate-limit key: the peer's address (None: do not limit)."""
    return req.remote_addr


@dataclass(frozen=True)
class Guarded:
    """What one app uses: the client, the stores and the limiter (None if off)."""

    client: Any
    sessions: SessionStore
    tokens: TokenStore
    registry: ClientRegistry
    limiter: RateLimiter | None
    key: Callable[[Request], str | None]


class Redisguard:
    """The Flask extension (``Redisguard(app, ...)`` or ``ext.init_app(app)`` in a factory).

    Args:
        app: The app to set up now (else call :meth:`init_app`).
        url: The Redis URL (else ``app.config["REDISGUARD_URL"]``, else ``$REDIS_URL``).
        client: A client to use instead of connecting (``redisguard.connect(...)``).
        rate_limit: Requests allowed per ``window`` per key; None: no limiter.
        window: The rate-limit window in seconds.
        on_unavailable: The limiter's policy while Redis is down (``"open"``, ``"closed"``,
            ``"local"``).
        key: Maps the request to a rate-limit key (default: the peer address); None skips
            limiting for that request.
        limit_every_request: Limit every request but the probes (else only where
            :func:`rate_limit` is called).
        session_ttl: The session store's default lifetime in seconds.
        details: Put the Redis target, errors and counts in ``/ready`` (keep it False where the
            route is reachable from outside).
        ready_path: The readiness probe's path (None: do not add that route).
        live_path: The liveness probe's path (None: do not add that route).
        connect: More keyword arguments for ``redisguard.connect()`` (``wait``,
            ``socket_timeout``, ``breakers``...).
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        url: str | None = None,
        client: Any = None,
        rate_limit: int | None = None,
        window: float = 60.0,
        on_unavailable: Policy = "open",
        key: Callable[[Request], str | None] = remote_address,
        limit_every_request: bool = True,
        session_ttl: float = 1800,
        details: bool = False,
        ready_path: str | None = "/ready",
        live_path: str | None = "/live",
        connect: Mapping[str, Any] | None = None,
    ) -> None:
        if rate_limit is not None and (
            isinstance(rate_limit, bool) or not isinstance(rate_limit, int) or rate_limit < 1
        ):
            raise ValueError(f"rate_limit must be a positive integer or None, got {rate_limit!r}")
        if not callable(key):
            raise TypeError(f"key must be a callable taking the request, got {key!r}")
        if client is not None and (url is not None or connect):
            raise ValueError("give either client= or url=/connect=, not both")
        self.url = url
        self.client = client
        self.rate_limit = rate_limit
        self.window = window
        self.on_unavailable = on_unavailable
        self.key = key
        self.limit_every_request = limit_every_request
        self.session_ttl = session_ttl
        self.details = details
        self.ready_path = ready_path
        self.live_path = live_path
        self.connect = dict(connect or {})
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Connect, build the stores and limiter, add the probes and the error handlers."""
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(f"redisguard is already set up on app {app.name!r}")
        redis = self.client
        if redis is None:
            redis = connect(self.url or app.config.get("REDISGUARD_URL"), **self.connect)
        limiter = None
        if self.rate_limit is not None:
            limiter = RateLimiter(
                redis, self.rate_limit, self.window, on_unavailable=self.on_unavailable
            )
        app.extensions[EXTENSION_KEY] = Guarded(
            client=redis,
            sessions=SessionStore(redis, ttl=self.session_ttl),
            tokens=TokenStore(redis),
            registry=ClientRegistry(redis),
            limiter=limiter,
            key=self.key,
        )
        details = self.details
        exempt = {path for path in (self.ready_path, self.live_path) if path is not None}

        def ready() -> tuple[Response, int]:
            result = readiness(guarded().client)
            response = jsonify(result.as_dict(details=details))
            response.headers["Cache-Control"] = "no-store"
            return response, result.http_status

        def live() -> Response:
            return jsonify(liveness().as_dict(details=details))

        def limit_request() -> None:
            if request.path not in exempt:
                rate_limit()

        if self.ready_path is not None:
            app.add_url_rule(self.ready_path, "redisguard_ready", ready, methods=["GET"])
        if self.live_path is not None:
            app.add_url_rule(self.live_path, "redisguard_live", live, methods=["GET"])
        app.register_error_handler(TemporarilyUnavailableError, unavailable)
        app.register_error_handler(RateLimitExceeded, rate_limited)
        if limiter is not None and self.limit_every_request:
            app.before_request(limit_request)


def guarded() -> Guarded:
    """The current app's :class:`Guarded` services."""
    services = current_app.extensions.get(EXTENSION_KEY)
    if not isinstance(services, Guarded):
        raise RuntimeError(
            f"redisguard is not set up on app {current_app.name!r}: call Redisguard(app)"
        )
    return services


def client() -> Any:
    """The current app's guarded client."""
    return guarded().client


def sessions() -> SessionStore:
    """The current app's :class:`~redisguard.stores.SessionStore`."""
    return guarded().sessions


def tokens() -> TokenStore:
    """The current app's :class:`~redisguard.stores.TokenStore`."""
    return guarded().tokens


def registry() -> ClientRegistry:
    """The current app's :class:`~redisguard.stores.ClientRegistry`."""
    return guarded().registry


def limiter() -> RateLimiter:
    """The current app's :class:`~redisguard.ratelimit.RateLimiter`."""
    found = guarded().limiter
    if found is None:
        raise RuntimeError("redisguard has no limiter: pass Redisguard(app, rate_limit=...)")
    return found


def rate_limit(key: str | None = None, cost: int = 1) -> Decision | None:
    """Count this request against the limiter; raises
    :class:`~redisguard.ratelimit.RateLimitExceeded` (answered with 429) when denied.

    Args:
        key: The rate-limit key (default: the extension's ``key`` for this request; None
            from it skips limiting).
        cost: How many requests this one counts for.
    """
    services = guarded()
    if key is None:
        key = services.key(request)
        if key is None:
            return None
    decision = limiter().hit(key, cost)
    if not decision.allowed:
        raise RateLimitExceeded(decision)
    return decision


def unavailable(exc: TemporarilyUnavailableError) -> tuple[Response, int]:
    """503 with ``Retry-After``: Redis could not serve the request; it may be retried."""
    response = jsonify(UNAVAILABLE_BODY)
    response.headers["Retry-After"] = str(exc.retry_after)
    return response, 503


def rate_limited(exc: RateLimitExceeded) -> Response:
    """429 with ``Retry-After`` and :data:`redisguard.asgi.RATE_LIMIT_BODY`."""
    return Response(
        RATE_LIMIT_BODY,
        status=429,
        mimetype="application/json",
        headers={"Retry-After": str(exc.retry_after)},
    )
