"""A small Flask (WSGI, sync) service using redisguard's sync stores, limiter and readiness.

Run it (``pip install redisguard[examples]``)::

    REDIS_URL=redis://localhost:6379/0 flask --app examples.wsgi_service:create_app run

It mirrors :mod:`examples.asgi_service`: a session lookup degrades to 404 when Redis is
down, writes and registrations answer 503 with Retry-After, the limiter answers 429 with the
design document's JSON-RPC body, ``/ready`` answers 503 while Redis is unavailable and
``/live`` never touches Redis.
"""

from __future__ import annotations

import math
import os
from typing import Any

from flask import Flask, Response, jsonify, request

from redisguard import connect
from redisguard.asgi import RATE_LIMIT_BODY
from redisguard.health import liveness, readiness
from redisguard.ratelimit import RateLimiter
from redisguard.stores import ClientRegistry, SessionStore, TemporarilyUnavailableError


def create_app(client: Any = None, *, rate_limit: int = 100, window: float = 60.0) -> Flask:
    """Build the Flask app; ``client`` defaults to ``redisguard.connect()`` ($REDIS_URL)."""
    client = (
        client if client is not None else connect(wait=float(os.environ.get("WAIT", "0")) or None)
    )
    sessions = SessionStore(client)
    registry = ClientRegistry(client)
    limiter = RateLimiter(
        client,
        rate_limit,
        window,
        on_unavailable=os.environ.get("RATE_POLICY", "open"),  # type: ignore[arg-type]
    )
    app = Flask(__name__)

    def unavailable(exc: TemporarilyUnavailableError) -> Response:
        response = jsonify(error="temporarily_unavailable")
        response.status_code = 503
        response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.before_request
    def limit() -> Response | None:
        if request.path in ("/ready", "/live"):
            return None
        key = request.headers.get("x-client-id") or request.remote_addr or "anonymous"
        decision = limiter.hit(key)
        if decision.allowed:
            return None
        return Response(
            RATE_LIMIT_BODY,
            status=429,
            mimetype="application/json",
            headers={"Retry-After": str(max(1, math.ceil(decision.retry_after)))},
        )

    @app.get("/sessions/<sid>")
    def get_session(sid: str) -> Any:
        found = sessions.lookup(sid)
        if found.value is None:
            # degraded: Redis was unavailable for this read, so "not found" is a fallback.
            return jsonify(error="session_not_found", degraded=found.degraded), 404
        return jsonify(session=found.value)

    @app.put("/sessions/<sid>")
    def put_session(sid: str) -> Any:
        try:
            sessions.set(sid, request.get_json())
        except TemporarilyUnavailableError as exc:
            return unavailable(exc)
        return "", 204

    @app.post("/register")
    def register() -> Any:
        try:
            record = registry.register(request.get_json() or {})
        except TemporarilyUnavailableError as exc:
            return unavailable(exc)
        return jsonify(record), 201

    @app.get("/ready")
    def ready() -> Any:
        result = readiness(client)
        return jsonify(result.as_dict()), result.http_status

    @app.get("/live")
    def live() -> Any:
        return jsonify(liveness().as_dict()), 200

    return app
