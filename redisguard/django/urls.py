"""``path("", include("redisguard.django.urls"))`` serves ``ready`` and ``live``.

Pass ``{"details": True}`` as include's third argument to add targets and errors to
``/ready`` (see :mod:`redisguard.django.views`).
"""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "redisguard"
urlpatterns = [
    path("ready", views.ready, name="ready"),
    path("live", views.live, name="live"),
]
