"""A Django session engine on :class:`redisguard.stores.SessionStore`.

``SESSION_ENGINE = "redisguard.django.sessions"``, configured by ``REDISGUARD_SESSIONS``::

    REDISGUARD_SESSIONS = {
        "LOCATION": "redis://127.0.0.1:6379/2",  # default: $REDIS_URL, else localhost
        "PREFIX": "django.session:",
        "BREAKER": "redis",
        "BREAKER_CONFIG": None,                  # a dict of BreakerConfig fields
        "NAME": "django.session",                # operations: django.session.get, ...
        "SOCKET_TIMEOUT": 0.25,
        "SOCKET_CONNECT_TIMEOUT": 0.25,
    }

Each session is stored as Django's own signed session string (``SessionBase.encode``, so
``SESSION_SERIALIZER`` applies) under ``PREFIX + session_key``, with the session's expiry
age as its Redis TTL.

While Redis is unavailable:

* loading a session answers "no session": the request is anonymous, not a 500, and the
  session cookie is kept (with the provided middleware), so the visitor is signed in again
  once Redis is back;
* saving, deleting or cycling a session raises
  :class:`~redisguard.TemporarilyUnavailableError` (nothing was written), which
  :class:`redisguard.django.middleware.SessionMiddleware` turns into a 503 with
  ``Retry-After``.
"""

from __future__ import annotations

import threading
from typing import Any

from django.conf import settings
from django.contrib.sessions.backends.base import CreateError, SessionBase, UpdateError
from django.core.signals import setting_changed

from redisguard._breaker import get_breaker
from redisguard._client import GuardedRedis, connect
from redisguard._config import BreakerConfig
from redisguard._errors import ConfigError
from redisguard.stores import SessionStore as _Store

__all__ = ["SessionStore", "store"]

_KNOWN = frozenset(
    {
        "LOCATION",
        "PREFIX",
        "BREAKER",
        "BREAKER_CONFIG",
        "NAME",
        "SOCKET_TIMEOUT",
        "SOCKET_CONNECT_TIMEOUT",
    }
)
_lock = threading.Lock()
# The process's store: (settings key, store, client), rebuilt when the settings change.
_current: dict[str, tuple[str, _Store, GuardedRedis]] = {}


def _settings() -> dict[str, Any]:
    config = getattr(settings, "REDISGUARD_SESSIONS", {})
    if not isinstance(config, dict):
        raise ConfigError(f"REDISGUARD_SESSIONS must be a dict, got {config!r}")
    unknown = sorted(set(config) - _KNOWN)
    if unknown:
        raise ConfigError(f"unknown REDISGUARD_SESSIONS keys {unknown}; known: {sorted(_KNOWN)}")
    return config


def _build(config: dict[str, Any]) -> tuple[_Store, GuardedRedis]:
    breaker_config = config.get("BREAKER_CONFIG")
    if isinstance(breaker_config, dict):
        try:
            breaker_config = BreakerConfig(**breaker_config)
        except TypeError as exc:
            raise ConfigError(f"REDISGUARD_SESSIONS['BREAKER_CONFIG']: {exc}") from None
    elif breaker_config is not None and not isinstance(breaker_config, BreakerConfig):
        raise ConfigError(
            "REDISGUARD_SESSIONS['BREAKER_CONFIG'] must be a dict or a BreakerConfig, "
            f"got {breaker_config!r}"
        )
    breaker = get_breaker(config.get("BREAKER", "redis"), breaker_config)
    client = connect(
        config.get("LOCATION"),
        check=False,
        breakers=(breaker,),
        socket_timeout=config.get("SOCKET_TIMEOUT", 0.25),
        socket_connect_timeout=config.get("SOCKET_CONNECT_TIMEOUT", 0.25),
    )
    store = _Store(
        client,
        prefix=config.get("PREFIX", "django.session:"),
        breaker=breaker,
        name=config.get("NAME", "django.session"),
    )
    return store, client


def store() -> _Store:
    """The process's session store (built on first use from ``REDISGUARD_SESSIONS``)."""
    config = _settings()
    key = repr(sorted(config.items()))
    current = _current.get("store")
    if current is not None and current[0] == key:
        return current[1]
    with _lock:
        current = _current.get("store")
        if current is None or current[0] != key:
            built, client = _build(config)
            if current is not None:
                current[2].close()
            current = _current["store"] = (key, built, client)
        return current[1]


def client() -> GuardedRedis:
    """The redisguard client the session store uses (for readiness probes)."""
    store()
    return _current["store"][2]


def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting == "REDISGUARD_SESSIONS":
        with _lock:
            current = _current.pop("store", None)
        if current is not None:
            current[2].close()


setting_changed.connect(_reset)


class SessionStore(SessionBase):  # type: ignore[misc]
    """Django's session API over a guarded Redis store (see the module docstring)."""

    #: True once loading this session found Redis unavailable (the data is unknown).
    redis_unavailable = False

    def __init__(self, session_key: str | None = None) -> None:
        self._store = store()
        super().__init__(session_key)

    def load(self) -> dict[str, Any]:
        """The session's data; ``{}`` (an anonymous session) when it is missing, corrupt or
        Redis is unavailable.

        When Redis is unavailable the session key is kept and :attr:`redis_unavailable` is
        set: :class:`~redisguard.django.middleware.SessionMiddleware` then leaves the cookie
        alone, so the visitor is signed in again once Redis is back.
        """
        key = self._get_session_key()
        found = self._store.lookup(key) if key else None
        if found is not None and found.degraded:  # Redis was unavailable for this read
            self.redis_unavailable = True
            return {}
        raw = None if found is None else found.value
        if isinstance(raw, str):
            data = self.decode(raw)
            if data:
                return dict(data)
        self._session_key = None
        return {}

    def exists(self, session_key: str | None) -> bool:
        """Whether the session is stored (False when Redis is unavailable)."""
        return session_key is not None and self._store.get(session_key) is not None

    def create(self) -> None:
        """Save a new, empty session under a new key.

        Raises:
            TemporarilyUnavailableError: Redis is unavailable; no session was created.
        """
        for _ in range(100):
            self._session_key = self._get_new_session_key()
            try:
                self.save(must_create=True)
            except CreateError:
                continue
            self.modified = True
            return
        raise RuntimeError("Unable to create a new session key.")

    def save(self, must_create: bool = False) -> None:
        """Store the session for its expiry age.

        Raises:
            CreateError: ``must_create`` and the key is taken.
            UpdateError: the session was deleted meanwhile (Django answers 400).
            TemporarilyUnavailableError: Redis is unavailable; nothing was written.
        """
        if self.session_key is None:
            return self.create()
        key = self.session_key
        age = max(1, self.get_expiry_age())
        if must_create:
            # Session keys are 32 random characters: the check races only with a collision.
            if self._store.get(key, strict=True) is not None:
                raise CreateError
        elif not self._store.touch(key, ttl=age):
            raise UpdateError
        self._store.set(key, self.encode(self._get_session(no_load=must_create)), ttl=age)
        return None

    def delete(self, session_key: str | None = None) -> None:
        """Delete the session.

        Raises:
            TemporarilyUnavailableError: Redis is unavailable; the session still exists.
        """
        if session_key is None:
            if self.session_key is None:
                return
            session_key = self.session_key
        self._store.delete(session_key)

    @classmethod
    def clear_expired(cls) -> None:
        """Nothing to do: Redis expires sessions itself."""
