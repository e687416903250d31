"""Settings of the test project; Redis comes from ``$REDIS_URL`` (gunicorn) or the test."""

from __future__ import annotations

import os
from typing import Any

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

SECRET_KEY = "redisguard-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "django_project.urls"
INSTALLED_APPS = ["django.contrib.sessions"]
DATABASES: dict[str, Any] = {}
USE_TZ = True
MIDDLEWARE = ["redisguard.django.middleware.SessionMiddleware"]
SESSION_ENGINE = "redisguard.django.sessions"
LOGGING_CONFIG = None


BREAKER_CONFIG = {"failure_threshold": 2, "reset_timeout": 60.0}


def caches(url: str, **options: Any) -> dict[str, Any]:
    """CACHES for ``url``: the breaker opens after 2 failures and stays open a minute, so
    only the recovery prober closes it within a test."""
    return {
        "default": {
            "BACKEND": "redisguard.django.RedisCache",
            "LOCATION": url,
            "OPTIONS": {
                "BREAKER_CONFIG": BREAKER_CONFIG,
                "PROBE_INTERVAL": 0.05,
                **options,
            },
        }
    }


def sessions(url: str) -> dict[str, Any]:
    """REDISGUARD_SESSIONS for ``url`` (the cache's breaker, "redis")."""
    return {"LOCATION": url, "BREAKER_CONFIG": BREAKER_CONFIG}


CACHES = caches(REDIS_URL)
REDISGUARD_SESSIONS = sessions(REDIS_URL)
