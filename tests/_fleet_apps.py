"""The example apps as a multi-worker server loads them, each answer naming its worker.

gunicorn and uvicorn ``--workers`` import this module in every worker (fork or spawn); the
apps are the examples unchanged, wrapped in a middleware that adds ``x-worker-pid`` to every
response, so a test can tell which worker answered (and that every worker did).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from examples.asgi_service import create_app as create_asgi_app
from examples.wsgi_service import create_app as create_wsgi_app

WORKER_HEADER = "x-worker-pid"

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def wsgi_app() -> Callable[..., Iterable[bytes]]:
    """``gunicorn '_fleet_apps:wsgi_app()'``: the Flask example plus the worker header."""
    app = create_wsgi_app()

    def with_pid(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(status, [*headers, (WORKER_HEADER, str(os.getpid()))], exc_info)

        result: Iterable[bytes] = app(environ, start)
        return result

    return with_pid


def asgi_app() -> Callable[[Message, Receive, Send], Awaitable[None]]:
    """``uvicorn _fleet_apps:asgi_app --factory``: the Starlette example plus the header."""
    app = create_asgi_app()

    async def with_pid(scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def send_with_pid(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    *message.get("headers", ()),
                    (WORKER_HEADER.encode(), b"%d" % os.getpid()),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await app(scope, receive, send_with_pid)

    return with_pid
