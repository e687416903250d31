"""A small Flask (WSGI, sync) service using :mod:`redisguard.flask`.

Run it (``pip install redisguard[examples]``)::

    REDIS_URL=redis://localhost:6379/0 flask --app examples.wsgi_service:create_app run

It mirrors :mod:`examples.asgi_service`: a session lookup degrades to 404 when Redis is
down (its body says ``"degraded": true`` when *this* read was answered by the fallback),
writes and registrations answer 503 with Retry-After (the extension's error handler: no view
catches :class:`~redisguard.stores.TemporarilyUnavailableError`), the limiter answers 429 with
the design document's JSON-RPC body, ``/ready`` answers 503 while Redis is unavailable and
``/live`` never touches Redis.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, Request, jsonify, request

from redisguard.flask import Redisguard, registry, sessions


def client_key(req: Request) -> str:
    """The ``x-client-id`` header, else the peer address."""
    return req.headers.get("x-client-id") or req.remote_addr or "anonymous"


def create_app(client: Any = None, *, rate_limit: int = 100, window: float = 60.0) -> Flask:
    """Build the Flask app; ``client`` defaults to ``redisguard.connect()`` ($REDIS_URL)."""
    app = Flask(__name__)
    Redisguard(
        app,
        client=client,
        rate_limit=rate_limit,
        window=window,
        on_unavailable=os.environ.get("RATE_POLICY", "open"),  # type: ignore[arg-type]
        key=client_key,
        connect=None
        if client is not None
        else {"wait": float(os.environ.get("WAIT", "0")) or None},
    )

    @app.get("/sessions/<sid>")
    def get_session(sid: str) -> Any:
        found = sessions().lookup(sid)
        if found.value is None:
            # degraded: Redis was unavailable for this read, so "not found" is a fallback.
            return jsonify(error="session_not_found", degraded=found.degraded), 404
        return jsonify(session=found.value)

    @app.put("/sessions/<sid>")
    def put_session(sid: str) -> Any:
        sessions().set(sid, request.get_json())
        return "", 204

    @app.post("/register")
    def register() -> Any:
        return jsonify(registry().register(request.get_json() or {})), 201

    return app
