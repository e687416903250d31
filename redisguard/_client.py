"""Build redis-py clients whose timeouts are explicit and whose own retry is off.

redis-py 8.x ``Redis()`` retries 10 times with backoff by default: a refused connection takes
~4 s to fail and a paused server ~58 s. A guard that retries on top multiplies that. The
clients built here leave every retry decision to ``@redis_guarded``.
"""

from __future__ import annotations

import logging
import os
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from ._errors import ConfigError, RedisguardError, RedisUnavailableError
from ._redact import redact_text, redact_url

__all__ = ["DEFAULT_URL", "aconnect", "client_options", "connect", "validate_url"]

logger = logging.getLogger("redisguard")
DEFAULT_URL = "redis://localhost:6379/0"
_SCHEMES = {"redis", "rediss", "unix"}


def validate_url(url: str) -> str:
    """Check a Redis URL's scheme, port and database; return it unchanged.

    Raises:
        ConfigError: naming the problem; the password is redacted in the message.
    """
    if not isinstance(url, str) or not url:
        raise ConfigError(f"Redis URL must be a non-empty string, got {url!r}")
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"invalid Redis URL {shown}: {redact_text(str(exc))}") from None
    if parts.scheme not in _SCHEMES:
        raise ConfigError(
            f"invalid Redis URL {shown}: scheme {parts.scheme!r} is not one of "
            "redis://, rediss://, unix://"
        )
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigError(f"invalid Redis URL {shown}: unix:// needs a socket path")
        return url
    if not parts.hostname:
        raise ConfigError(f"invalid Redis URL {shown}: no host")
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"invalid Redis URL {shown}: port {port} out of range")
    db = parts.path.lstrip("/")
    if db and (not db.isdigit() or int(db) > 1_000_000):
        raise ConfigError(f"invalid Redis URL {shown}: database {db!r} is not a number")
    return url


def client_options(
    *, socket_timeout: float, socket_connect_timeout: float, **overrides: Any
) -> dict[str, Any]:
    """The keyword arguments redisguard gives redis-py: explicit timeouts, retry off."""
    for label, value in (
        ("socket_timeout", socket_timeout),
        ("socket_connect_timeout", socket_connect_timeout),
    ):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigError(f"{label} must be a positive number of seconds, got {value!r}")
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
        "socket_keepalive": True,
        "health_check_interval": 0,
    }
    options.update(overrides)
    return options


def _resolve(url: str | None) -> str:
    return validate_url(url if url is not None else os.environ.get("REDIS_URL") or DEFAULT_URL)


def connect(
    url: str | None = None,
    *,
    socket_timeout: float = 0.25,
    socket_connect_timeout: float = 0.25,
    check: bool = True,
    **kwargs: Any,
) -> redis.Redis:
    """A sync ``redis.Redis`` for ``url`` (default ``$REDIS_URL``, else ``redis://localhost:6379``).

    Args:
        url: ``redis://``, ``rediss://`` or ``unix://`` URL.
        socket_timeout: Seconds to wait for a reply; keep it at or below your retry deadline.
        socket_connect_timeout: Seconds to wait for a TCP connect.
        check: PING once now and fail fast if Redis does not answer.
        **kwargs: Passed to ``redis.Redis.from_url`` (e.g. ``decode_responses=True``).

    Raises:
        ConfigError: the URL or a timeout is invalid.
        RedisUnavailableError: ``check`` is true and Redis did not answer the PING.
    """
    url = _resolve(url)
    options = client_options(
        socket_timeout=socket_timeout, socket_connect_timeout=socket_connect_timeout, **kwargs
    )
    options["retry"] = Retry(NoBackoff(), 0)
    client: redis.Redis = redis.Redis.from_url(url, **options)
    if check:
        try:
            client.ping()
        except redis.RedisError as exc:
            client.close()
            raise _startup_error(url, exc) from exc
    logger.info("Redis ready: %s", redact_url(url), extra={"category": "redis"})
    return client


async def aconnect(
    url: str | None = None,
    *,
    socket_timeout: float = 0.25,
    socket_connect_timeout: float = 0.25,
    check: bool = True,
    **kwargs: Any,
) -> redis.asyncio.Redis:
    """The asyncio twin of :func:`connect`: returns a ``redis.asyncio.Redis``."""
    url = _resolve(url)
    options = client_options(
        socket_timeout=socket_timeout, socket_connect_timeout=socket_connect_timeout, **kwargs
    )
    options["retry"] = Retry(NoBackoff(), 0)
    client: redis.asyncio.Redis = redis.asyncio.Redis.from_url(url, **options)
    if check:
        try:
            await client.ping()
        except redis.RedisError as exc:
            await client.aclose()
            raise _startup_error(url, exc) from exc
    logger.info("Redis ready: %s", redact_url(url), extra={"category": "redis"})
    return client


def _startup_error(url: str, exc: BaseException) -> RedisguardError:
    if isinstance(exc, redis.AuthenticationError | redis.exceptions.AuthorizationError):
        return ConfigError(
            f"Redis at {redact_url(url)} rejected the credentials: {redact_text(str(exc))}"
        )
    return RedisUnavailableError(
        f"Redis at {redact_url(url)} is not reachable: "
        f"{type(exc).__name__}: {redact_text(str(exc))}",
        operation="connect",
        breaker="",
        attempts=1,
    )
