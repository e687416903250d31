"""Redis-backed stores that degrade on purpose: sessions, tokens, OAuth client registrations.

Each store has a sync class and an asyncio twin with the same method names; both run the same
I/O-free flows (:mod:`redisguard._stores_core`), and every Redis command goes through
``@redis_guarded`` on the store's breaker (``breaker="redis"`` by default).

What each store does when Redis is unavailable:

=====================  ==========================================================================
``SessionStore.get``   returns None, like a missing session;
                       ``strict=True`` raises :class:`TemporarilyUnavailableError` instead;
                       ``lookup()`` returns a :class:`Lookup` that tells the two apart
``set/touch/delete``   raise :class:`TemporarilyUnavailableError`: the write did not happen
``TokenStore.*``       raise :class:`TemporarilyUnavailableError`, never "missing/expired", so an
                       outage is not mistaken for a token or IdP problem
``ClientRegistry.*``   raise :class:`TemporarilyUnavailableError` with ``retry_after``: answer 503
=====================  ==========================================================================

A value in Redis that is not valid JSON is a *data* error: it is logged with a fingerprint of
the key (never the key or the value), counted in :func:`data_errors`, answered as "not found",
and never counted by the breaker.

**Not found, or not asked?** ``get()`` answers None both when the session does not exist and
when Redis could not be asked. Reading the breaker's state *after* the call cannot tell them
apart: the first fallbacks of an outage happen while the breaker is still closed (it opens only
after ``failure_threshold`` failures). :meth:`SessionStore.lookup` answers for the call itself::

    found = sessions.lookup(sid)        # Lookup(value, degraded, failure)
    if found.value is None:
        return 404, {"error": "session_not_found", "degraded": found.degraded}
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from ._breaker import Breaker
from ._config import RetryPolicy
from ._errors import RedisUnavailableError
from ._guard import DEFAULT_RETRY, Failure
from ._redact import fingerprint
from ._stores_core import (
    AsyncCommands,
    Flow,
    OpSpec,
    Outage,
    Step,
    SyncCommands,
    TemporarilyUnavailableError,
    adrive,
    async_ops,
    data_error_tally,
    data_errors,
    drive,
    resolve_breaker,
    sync_ops,
    unavailable,
)

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

__all__ = [
    "AsyncClientRegistry",
    "AsyncSessionStore",
    "AsyncTokenStore",
    "ClientExistsError",
    "ClientRegistry",
    "Lookup",
    "SessionStore",
    "TemporarilyUnavailableError",
    "Token",
    "TokenStore",
    "data_errors",
]

logger = logging.getLogger("redisguard")
_DEFAULT: Any = object()
T = TypeVar("T")


@dataclass(frozen=True)
class Lookup(Generic[T]):
    """The answer of one read, and whether Redis gave it.

    Attributes:
        value: What was found; None when nothing was (missing, unreadable, or Redis was
            unavailable: ``degraded`` tells which).
        degraded: True when Redis was unavailable for *this* call and the store's fallback
            answered (the breaker may still be closed: the first failures of an outage
            fall back before it opens).
        failure: Why, when ``degraded``: the :class:`~redisguard.Failure` the guard handed
            the fallback (``circuit_open``, ``attempts``, the last error...).
    """

    value: T | None
    degraded: bool = False
    failure: Failure | None = None

    @property
    def found(self) -> bool:
        """A value was found (Redis answered and the key held a readable value)."""
        return self.value is not None


class ClientExistsError(ValueError):
    """``register(client_id=...)`` named a client that is already registered."""


def _ms(label: str, seconds: float) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
        raise ValueError(f"{label} must be a positive number of seconds, got {seconds!r}")
    return max(1, round(seconds * 1000))


def _encode(value: Any) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:  # NaN/Infinity, circular references
        raise TypeError(f"value is not JSON-serializable: {exc}") from None


def _check_id(label: str, value: str) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{label} must be a non-empty string, got {type(value).__name__}")
    return value


class _Core:
    """The store plumbing both twins share: naming, breaker, decoding, error mapping."""

    SPECS: ClassVar[Mapping[str, OpSpec]] = {}
    KIND = "store"

    def __init__(
        self, prefix: str, name: str, breaker: str | Breaker, retry: RetryPolicy | None
    ) -> None:
        if not isinstance(prefix, str):
            raise TypeError("prefix must be a string")
        self.prefix = prefix
        self.name = name
        self.breaker = resolve_breaker(breaker)
        self._retry = DEFAULT_RETRY if retry is _DEFAULT else retry

    def key(self, ident: str) -> str:
        return self.prefix + ident

    def _guard_ops(
        self,
        build: Callable[..., dict[str, Any]],
        client: Any,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
    ) -> dict[str, Any]:
        """The store's guarded ops: ``build`` is :func:`sync_ops` or :func:`async_ops`."""
        return build(
            client,
            self.SPECS,
            name=self.name,
            breaker=self.breaker,
            retry=self._retry,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        )

    def decode(self, raw: bytes | str, key: str, operation: str) -> Any:
        """Parse JSON; a corrupt value is a data error, answered as not found."""
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            data_error_tally(operation).add()
            logger.warning(
                "Unreadable value in Redis treated as not found (%s, key %s): %s",
                operation,
                fingerprint(key),
                type(exc).__name__,
                extra={"category": self.KIND, "operation": operation, "key": fingerprint(key)},
            )
            return None

    def must(self, what: str, op: str, args: tuple[Any, ...]) -> Generator[Step, Any, Any]:
        """One step whose outage becomes :class:`TemporarilyUnavailableError`."""
        try:
            return (yield (op, args))
        except RedisUnavailableError as exc:
            raise unavailable(what, self.breaker, exc, f"{self.name}.{op}") from exc


# -- sessions -------------------------------------------------------------------------------
class _SessionCore(_Core):
    SPECS: ClassVar[Mapping[str, OpSpec]] = {
        "get": OpSpec("get", "GET", degrade=True, idempotent=True, access="read"),
        # SET key value PX ttl: a replay writes the same value (its TTL restarts, harmless).
        "set": OpSpec("set", "SET", idempotent=True, access="write"),
        # PEXPIRE with a fixed TTL: the reply (key exists) is the same on a replay. It grows
        # no memory, so Redis runs it during an OOM (READONLY and MISCONF refuse it): "delete".
        "touch": OpSpec("touch", "PEXPIRE", idempotent=True, access="delete"),
        # DEL is idempotent for the data but not for its reply: a replay after a lost reply
        # answers 0, and delete() would report "did not exist". The reply is our contract.
        "delete": OpSpec("delete", "DEL", idempotent=False, access="delete"),
    }
    KIND = "session-store"

    def __init__(
        self,
        prefix: str,
        ttl: float,
        name: str,
        breaker: str | Breaker,
        retry: RetryPolicy | None,
    ) -> None:
        super().__init__(prefix, name, breaker, retry)
        self.ttl = ttl
        self._ttl_ms = _ms("ttl", ttl)

    def lookup_flow(self, session_id: str, strict: bool) -> Flow[Lookup[Any]]:
        key = self.key(_check_id("session_id", session_id))
        raw = yield ("get", (key,))
        if isinstance(raw, Outage):
            if strict:
                cause = raw.failure.exception if raw.failure is not None else None
                raise unavailable(
                    "session lookup", self.breaker, raw.failure, f"{self.name}.get"
                ) from cause
            logger.debug(
                "Session lookup fallback - treating as not found",
                extra={"category": self.KIND, "session": fingerprint(session_id)},
            )
            return Lookup(None, degraded=True, failure=raw.failure)
        if raw is None:
            return Lookup(None)
        return Lookup(self.decode(raw, key, f"{self.name}.get"))

    def get_flow(self, session_id: str, strict: bool) -> Flow[Any]:
        return (yield from self.lookup_flow(session_id, strict)).value

    def set_flow(self, session_id: str, value: Any, ttl: float | None) -> Flow[None]:
        key = self.key(_check_id("session_id", session_id))
        payload = _encode(value)
        ms = self._ttl_ms if ttl is None else _ms("ttl", ttl)
        yield from self.must("session write", "set", (key, payload, "PX", ms))

    def touch_flow(self, session_id: str, ttl: float | None) -> Flow[bool]:
        key = self.key(_check_id("session_id", session_id))
        ms = self._ttl_ms if ttl is None else _ms("ttl", ttl)
        return bool((yield from self.must("session touch", "touch", (key, ms))))

    def delete_flow(self, session_id: str) -> Flow[bool]:
        key = self.key(_check_id("session_id", session_id))
        return bool((yield from self.must("session delete", "delete", (key,))))


class SessionStore(_SessionCore):
    """Sessions as JSON values under ``prefix + session_id``, expiring after ``ttl`` seconds.

    Args:
        client: A sync redis-py client (``redisguard.connect()``, ``redis.Redis``, cluster).
        prefix: Key prefix.
        ttl: Default lifetime in seconds, refreshed by :meth:`touch`.
        breaker: Breaker name or object guarding the calls.
        name: Operation name prefix for logs and metrics (``session.get``...).
        retry: Retry policy for transient errors (``None``: one attempt).
        tracer_provider: Where this component's spans go (the global provider when None).
        meter_provider: Where this component's metrics go (the global provider when None).
    """

    def __init__(
        self,
        client: SyncCommands,
        *,
        prefix: str = "session:",
        ttl: float = 1800,
        breaker: str | Breaker = "redis",
        name: str = "session",
        retry: RetryPolicy | None = _DEFAULT,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        super().__init__(prefix, ttl, name, breaker, retry)
        self._ops = self._guard_ops(sync_ops, client, tracer_provider, meter_provider)

    def get(self, session_id: str, *, strict: bool = False) -> Any:
        """The session's value, or None if it does not exist (or is unreadable).

        Args:
            strict: Raise instead of answering None when Redis is unavailable.

        Raises:
            TemporarilyUnavailableError: only with ``strict=True``, when Redis is unavailable.
        """
        return drive(self.get_flow(session_id, strict), self._ops)

    def lookup(self, session_id: str) -> Lookup[Any]:
        """The session's value, and whether Redis answered (see :class:`Lookup`).

        Unlike :meth:`get`, a missing session (``degraded=False``) and a fallback because
        Redis was unavailable for this call (``degraded=True``) are told apart. Never raises
        for an outage.
        """
        return drive(self.lookup_flow(session_id, False), self._ops)

    def set(self, session_id: str, value: Any, *, ttl: float | None = None) -> None:
        """Store ``value`` (anything ``json.dumps`` accepts) for ``ttl`` seconds.

        Raises:
            TypeError: ``value`` is not JSON-serializable (nothing is sent to Redis).
            TemporarilyUnavailableError: Redis is unavailable; nothing was written.
        """
        drive(self.set_flow(session_id, value, ttl), self._ops)

    def touch(self, session_id: str, *, ttl: float | None = None) -> bool:
        """Extend the session's lifetime; False if it does not exist.

        Raises:
            TemporarilyUnavailableError: Redis is unavailable; the TTL was not refreshed.
        """
        return drive(self.touch_flow(session_id, ttl), self._ops)

    def delete(self, session_id: str) -> bool:
        """Delete the session; False if it did not exist.

        Raises:
            TemporarilyUnavailableError: Redis is unavailable; nothing was deleted.
        """
        return drive(self.delete_flow(session_id), self._ops)


class AsyncSessionStore(_SessionCore):
    """The asyncio twin of :class:`SessionStore` (same arguments, same semantics)."""

    def __init__(
        self,
        client: AsyncCommands,
        *,
        prefix: str = "session:",
        ttl: float = 1800,
        breaker: str | Breaker = "redis",
        name: str = "session",
        retry: RetryPolicy | None = _DEFAULT,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        super().__init__(prefix, ttl, name, breaker, retry)
        self._ops = self._guard_ops(async_ops, client, tracer_provider, meter_provider)

    async def get(self, session_id: str, *, strict: bool = False) -> Any:
        """See :meth:`SessionStore.get`."""
        return await adrive(self.get_flow(session_id, strict), self._ops)

    async def lookup(self, session_id: str) -> Lookup[Any]:
        """See :meth:`SessionStore.lookup`."""
        return await adrive(self.lookup_flow(session_id, False), self._ops)

    async def set(self, session_id: str, value: Any, *, ttl: float | None = None) -> None:
        """See :meth:`SessionStore.set`."""
        await adrive(self.set_flow(session_id, value, ttl), self._ops)

    async def touch(self, session_id: str, *, ttl: float | None = None) -> bool:
        """See :meth:`SessionStore.touch`."""
        return await adrive(self.touch_flow(session_id, ttl), self._ops)

    async def delete(self, session_id: str) -> bool:
        """See :meth:`SessionStore.delete`."""
        return await adrive(self.delete_flow(session_id), self._ops)


# -- tokens -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Token:
    """A stored token. ``repr()`` never shows the value.

    Attributes:
        value: The token itself.
        expires_at: When it expires (UTC).
        metadata: What was saved with it (scopes, subject...).
    """

    value: str = field(repr=False)
    expires_at: datetime
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def expires_in(self) -> float:
        """Seconds until expiry (negative once expired)."""
        return self.expires_at.timestamp() - time.time()


class _TokenCore(_Core):
    SPECS: ClassVar[Mapping[str, OpSpec]] = {
        # A fixed value and PX: same result on a replay.
        "save": OpSpec("save", "SET", idempotent=True, access="write"),
        "get": OpSpec("get", "GET", idempotent=True, access="read"),
        # The reply says "was there". DEL frees memory: Redis runs it during an OOM.
        "revoke": OpSpec("revoke", "DEL", idempotent=False, access="delete"),
    }
    KIND = "token-store"

    def key(self, ident: str) -> str:
        # Token ids are often tokens themselves: never put them in clear in key names.
        return self.prefix + fingerprint(_check_id("token_id", ident), 64)

    def save_flow(
        self, token_id: str, value: str, ttl: float, metadata: Mapping[str, Any] | None
    ) -> Flow[Token]:
        _check_id("value", value)
        ms = _ms("ttl", ttl)
        expires = time.time() + ms / 1000
        meta = dict(metadata or {})
        payload = _encode({"v": value, "exp": expires, "m": meta})
        yield from self.must("token save", "save", (self.key(token_id), payload, "PX", ms))
        return Token(value, datetime.fromtimestamp(expires, timezone.utc), meta)

    def get_flow(self, token_id: str) -> Flow[Token | None]:
        key = self.key(token_id)
        raw = yield from self.must("token lookup", "get", (key,))
        if raw is None:
            return None
        data = self.decode(raw, key, f"{self.name}.get")
        try:
            value, expires, meta = data["v"], float(data["exp"]), dict(data["m"])
        except (TypeError, KeyError, ValueError):
            if data is not None:
                data_error_tally(f"{self.name}.get").add()
                logger.warning(
                    "Malformed token record treated as missing (key %s)",
                    fingerprint(key),
                    extra={"category": self.KIND, "key": fingerprint(key)},
                )
            return None
        if expires <= time.time():
            return None
        return Token(value, datetime.fromtimestamp(expires, timezone.utc), meta)

    def revoke_flow(self, token_id: str) -> Flow[bool]:
        return bool((yield from self.must("token revoke", "revoke", (self.key(token_id),))))


class TokenStore(_TokenCore):
    """Tokens with expiry; an outage raises, so it is never mistaken for a missing token.

    Keys are ``prefix + sha256(token_id)``: a token used as its own id never appears in a
    key name. Token values are never logged.

    Args:
        client: A sync redis-py client.
        prefix: Key prefix.
        breaker: Breaker name or object guarding the calls.
        name: Operation name prefix (``token.get``...).
        retry: Retry policy for transient errors.
        tracer_provider: Where this component's spans go (the global provider when None).
        meter_provider: Where this component's metrics go (the global provider when None).
    """

    def __init__(
        self,
        client: SyncCommands,
        *,
        prefix: str = "token:",
        breaker: str | Breaker = "redis",
        name: str = "token",
        retry: RetryPolicy | None = _DEFAULT,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        super().__init__(prefix, name, breaker, retry)
        self._ops = self._guard_ops(sync_ops, client, tracer_provider, meter_provider)

    def save(
        self,
        token_id: str,
        value: str,
        *,
        ttl: float,
        metadata: Mapping[str, Any] | None = None,
    ) -> Token:
        """Store ``value`` under ``token_id`` for ``ttl`` seconds.

        Raises:
            TemporarilyUnavailableError: Redis is unavailable; nothing was stored.
        """
        return drive(self.save_flow(token_id, value, ttl, metadata), self._ops)

    def get(self, token_id: str) -> Token | None:
        """The token, or None if it is missing or expired.

        Raises:
            TemporarilyUnavailableError: Redis is unavailable (a storage failure, not a
                missing token).
        """
        return drive(self.get_flow(token_id), self._ops)

    def revoke(self, token_id: str) -> bool:
        """Delete the token; False if it was not stored.

        Raises:
            TemporarilyUnavailableError: Redis is unavailable; the token is still valid.
        """
        return drive(self.revoke_flow(token_id), self._ops)


class AsyncTokenStore(_TokenCore):
    """The asyncio twin of :class:`TokenStore`."""

    def __init__(
        self,
        client: AsyncCommands,
        *,
        prefix: str = "token:",
        breaker: str | Breaker = "redis",
        name: str = "token",
        retry: RetryPolicy | None = _DEFAULT,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        super().__init__(prefix, name, breaker, retry)
        self._ops = self._guard_ops(async_ops, client, tracer_provider, meter_provider)

    async def save(
        self,
        token_id: str,
        value: str,
        *,
        ttl: float,
        metadata: Mapping[str, Any] | None = None,
    ) -> Token:
        """See :meth:`TokenStore.save`."""
        return await adrive(self.save_flow(token_id, value, ttl, metadata), self._ops)

    async def get(self, token_id: str) -> Token | None:
        """See :meth:`TokenStore.get`."""
        return await adrive(self.get_flow(token_id), self._ops)

    async def revoke(self, token_id: str) -> bool:
        """See :meth:`TokenStore.revoke`."""
        return await adrive(self.revoke_flow(token_id), self._ops)


# -- OAuth dynamic client registration -------------------------------------------------------
class _RegistryCore(_Core):
    SPECS: ClassVar[Mapping[str, OpSpec]] = {
        # SET NX is not idempotent under retry (a retried success reads as "exists").
        "register": OpSpec("register", "SET", idempotent=False, access="write"),
        "get": OpSpec("get", "GET", idempotent=True, access="read"),
        # The reply says "was there".
        "delete": OpSpec("delete", "DEL", idempotent=False, access="delete"),
    }
    KIND = "client-registry"

    def __init__(
        self,
        prefix: str,
        ttl: float | None,
        name: str,
        breaker: str | Breaker,
        retry: RetryPolicy | None,
        new_id: Callable[[], str],
    ) -> None:
        super().__init__(prefix, name, breaker, retry)
        self._ttl_ms = None if ttl is None else _ms("ttl", ttl)
        self._new_id = new_id

    def register_flow(
        self, metadata: Mapping[str, Any], client_id: str | None
    ) -> Flow[dict[str, Any]]:
        if not isinstance(metadata, Mapping):
            raise TypeError("client metadata must be a mapping")
        explicit = client_id is not None
        ident = _check_id("client_id", client_id) if client_id is not None else self._new_id()
        record = {**metadata, "client_id": ident, "client_id_issued_at": int(time.time())}
        args: tuple[Any, ...] = (self.key(ident), _encode(record), "NX")
        if self._ttl_ms is not None:
            args += ("PX", self._ttl_ms)
        stored = yield from self.must("client registration", "register", args)
        if not stored:
            if explicit:
                raise ClientExistsError(f"client {fingerprint(ident)} is already registered")
            raise ClientExistsError("generated client_id collided; try again")
        return record

    def get_flow(self, client_id: str) -> Flow[dict[str, Any] | None]:
        key = self.key(_check_id("client_id", client_id))
        raw = yield from self.must("client lookup", "get", (key,))
        if raw is None:
            return None
        data = self.decode(raw, key, f"{self.name}.get")
        return data if isinstance(data, dict) else None

    def delete_flow(self, client_id: str) -> Flow[bool]:
        key = self.key(_check_id("client_id", client_id))
        return bool((yield from self.must("client deletion", "delete", (key,))))


def _new_client_id() -> str:
    return secrets.token_urlsafe(16)


class ClientRegistry(_RegistryCore):
    """The store behind OAuth 2.0 Dynamic Client Registration (RFC 7591).

    On an outage every method raises :class:`TemporarilyUnavailableError`; map it to
    ``503`` with ``Retry-After: {exc.retry_after}`` and the RFC's ``temporarily_unavailable``.

    Args:
        client: A sync redis-py client.
        prefix: Key prefix.
        ttl: Optional lifetime of a registration, in seconds.
        breaker: Breaker name or object guarding the calls.
        name: Operation name prefix (``client_registry.register``...).
        retry: Retry policy. ``get`` retries every transient error; ``register`` and
            ``delete`` (not idempotent) only errors that prove the command never ran.
        tracer_provider: Where this component's spans go (the global provider when None).
        meter_provider: Where this component's metrics go (the global provider when None).
        new_id: Generates client ids.
    """

    def __init__(
        self,
        client: SyncCommands,
        *,
        prefix: str = "oauth_client:",
        ttl: float | None = None,
        breaker: str | Breaker = "redis",
        name: str = "client_registry",
        retry: RetryPolicy | None = _DEFAULT,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        new_id: Callable[[], str] = _new_client_id,
    ) -> None:
        super().__init__(prefix, ttl, name, breaker, retry, new_id)
        self._ops = self._guard_ops(sync_ops, client, tracer_provider, meter_provider)

    def register(
        self, metadata: Mapping[str, Any], *, client_id: str | None = None
    ) -> dict[str, Any]:
        """Store a new client; returns the record with ``client_id`` and ``client_id_issued_at``.

        Raises:
            ClientExistsError: ``client_id`` is already registered.
            TypeError: ``metadata`` is not a JSON-serializable mapping.
            TemporarilyUnavailableError: Redis is unavailable; nothing was registered.
        """
        return drive(self.register_flow(metadata, client_id), self._ops)

    def get(self, client_id: str) -> dict[str, Any] | None:
        """The client's record, or None if it is not registered.

        Raises:
            TemporarilyUnavailableError: Redis is unavailable.
        """
        return drive(self.get_flow(client_id), self._ops)

    def delete(self, client_id: str) -> bool:
        """Remove a client; False if it was not registered.

        Raises:
            TemporarilyUnavailableError: Redis is unavailable; nothing was deleted.
        """
        return drive(self.delete_flow(client_id), self._ops)


class AsyncClientRegistry(_RegistryCore):
    """The asyncio twin of :class:`ClientRegistry`."""

    def __init__(
        self,
        client: AsyncCommands,
        *,
        prefix: str = "oauth_client:",
        ttl: float | None = None,
        breaker: str | Breaker = "redis",
        name: str = "client_registry",
        retry: RetryPolicy | None = _DEFAULT,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        new_id: Callable[[], str] = _new_client_id,
    ) -> None:
        super().__init__(prefix, ttl, name, breaker, retry, new_id)
        self._ops: dict[str, Callable[..., Awaitable[Any]]] = self._guard_ops(
            async_ops, client, tracer_provider, meter_provider
        )

    async def register(
        self, metadata: Mapping[str, Any], *, client_id: str | None = None
    ) -> dict[str, Any]:
        """See :meth:`ClientRegistry.register`."""
        return await adrive(self.register_flow(metadata, client_id), self._ops)

    async def get(self, client_id: str) -> dict[str, Any] | None:
        """See :meth:`ClientRegistry.get`."""
        return await adrive(self.get_flow(client_id), self._ops)

    async def delete(self, client_id: str) -> bool:
        """See :meth:`ClientRegistry.delete`."""
        return await adrive(self.delete_flow(client_id), self._ops)
