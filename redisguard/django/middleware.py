"""Turn :class:`~redisguard.TemporarilyUnavailableError` into ``503`` with ``Retry-After``.

Use :class:`SessionMiddleware` *instead of* ``django.contrib.sessions.middleware.
SessionMiddleware``: Django saves the session in the middleware's ``process_response``, where
an exception never reaches another middleware's ``process_exception`` (Django turns it into a
500 first). Without sessions, :class:`UnavailableMiddleware` handles views that raise (a
cache with ``WRITE_FAILURE="raise"``, a store).
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_vary_headers

from redisguard._errors import TemporarilyUnavailableError

__all__ = ["SessionMiddleware", "UnavailableMiddleware", "unavailable_response"]


def unavailable_response(exc: TemporarilyUnavailableError) -> HttpResponse:
    """``503`` with ``Retry-After: exc.retry_after`` and a JSON body naming no Redis target."""
    body = {"error": "temporarily_unavailable", "retry_after": exc.retry_after}
    response = HttpResponse(json.dumps(body), status=503, content_type="application/json")
    response["Retry-After"] = str(exc.retry_after)
    response["Cache-Control"] = "no-store"
    return response


class UnavailableMiddleware:
    """A view that raised :class:`TemporarilyUnavailableError` answers 503, not 500."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> Any:
        if isinstance(exception, TemporarilyUnavailableError):
            return unavailable_response(exception)
        return None


class SessionMiddleware(DjangoSessionMiddleware):  # type: ignore[misc]
    """Django's ``SessionMiddleware``; a session that cannot be saved answers 503.

    When the session could not be loaded (Redis unavailable) and the view did not change it,
    the response leaves the session cookie alone, where Django's would delete it.

    The view has run by then: the 503 tells the client that its session change (a login,
    a cart) was not kept and that it should retry after ``Retry-After`` seconds.
    """

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        session: Any = getattr(request, "session", None)
        if getattr(session, "redis_unavailable", False) and not session.modified:
            # The session could not be loaded, so it looks empty: Django would delete the
            # visitor's cookie. Keep it: the session is still in Redis.
            patch_vary_headers(response, ("Cookie",))
            return response
        try:
            result: HttpResponse = super().process_response(request, response)
        except TemporarilyUnavailableError as exc:
            return unavailable_response(exc)
        return result

    def process_exception(self, request: HttpRequest, exception: Exception) -> Any:
        if isinstance(exception, TemporarilyUnavailableError):
            return unavailable_response(exception)
        return None
