"""Views that use the cache and the session the way applications do."""

from __future__ import annotations

import itertools

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path
from django.views.decorators.cache import cache_page

_renders = itertools.count(1)


@cache_page(60)
def page(request: HttpRequest) -> HttpResponse:
    """A page whose body says how often it was rendered (cache_page serves repeats)."""
    return HttpResponse(f"render {next(_renders)}")


def counter(request: HttpRequest) -> JsonResponse:
    """get_or_set then set: what a view caching a computed value does."""
    hits = cache.get_or_set("hits", 0)
    cache.set("hits", hits + 1)
    return JsonResponse({"hits": hits})


def incr(request: HttpRequest) -> JsonResponse:
    """cache.incr: raises TemporarilyUnavailableError during an outage (no number to give)."""
    cache.add("n", 0)
    return JsonResponse({"n": cache.incr("n")})


def session_get(request: HttpRequest) -> JsonResponse:
    """The visitor's name, or anonymous."""
    return JsonResponse({"name": request.session.get("name"), "key": request.session.session_key})


def session_set(request: HttpRequest) -> JsonResponse:
    """Log the visitor in under a name (the session is saved after the view)."""
    request.session["name"] = request.GET.get("name", "ada")
    return JsonResponse({"ok": True})


urlpatterns = [
    path("page", page),
    path("counter", counter),
    path("incr", incr),
    path("session", session_get),
    path("login", session_set),
    path("", include("redisguard.django.urls")),
    path("private/", include("redisguard.django.urls"), {"details": True}),
]
