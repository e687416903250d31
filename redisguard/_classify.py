"""Which exceptions mean "Redis is unavailable", and what the guard does about each kind."""

from __future__ import annotations

import asyncio
import builtins
import enum
import ssl
from collections.abc import Callable

from redis import exceptions as rx

from ._errors import RedisUnavailableError
from ._transport import closed_transport_error

__all__ = ["Classifier", "ErrorKind", "classify_error"]


class ErrorKind(enum.Enum):
    """What the guard does with an exception raised by the guarded function.

    ======================  =======  =======================  ========  =========================
    kind                    retried  counted by the breaker    fallback  examples
    ======================  =======  =======================  ========  =========================
    ``TRANSIENT``           yes      yes                       yes       connection refused/reset,
                                                                         timeouts, LOADING, failover
    ``MISCONFIGURED``       no       yes                       yes       wrong password, no ACL
                                                                         permission, a TLS
                                                                         certificate that does
                                                                         not verify (logged ERROR)
    ``REJECTED``            no       no                        yes       local pool exhausted; an
                                                                         inner guard already gave up
    ``PROPAGATE``           no       no                        no        WRONGTYPE, DataError, the
                                                                         function's own bugs
    ======================  =======  =======================  ========  =========================
    """

    TRANSIENT = "transient"
    MISCONFIGURED = "misconfigured"
    REJECTED = "rejected"
    PROPAGATE = "propagate"


Classifier = Callable[[BaseException], ErrorKind]

# Order matters: subclasses that mean something else must be tested before their bases.
# AuthenticationError/AuthorizationError/MaxConnectionsError subclass ConnectionError, and
# ReadOnlyError/TryAgainError/ClusterDownError subclass ResponseError.
_MISCONFIGURED: tuple[type[BaseException], ...] = (
    rx.AuthenticationError,
    rx.AuthorizationError,
    rx.AuthenticationWrongNumberOfArgsError,
    rx.NoPermissionError,
)
_REJECTED: tuple[type[BaseException], ...] = (rx.MaxConnectionsError, RedisUnavailableError)
_TRANSIENT: tuple[type[BaseException], ...] = (
    rx.ConnectionError,  # includes BusyLoadingError, MasterNotFoundError, SlaveNotFoundError
    rx.TimeoutError,
    builtins.TimeoutError,  # asyncio.wait_for / asyncio.timeout
    asyncio.TimeoutError,  # the same class from 3.11; wait_for's own class on 3.10
    builtins.ConnectionError,  # raw socket errors that escaped redis-py
    rx.ReadOnlyError,  # writing to a master that was demoted by a failover
    rx.TryAgainError,  # cluster resharding
    rx.ClusterError,  # includes ClusterDownError, "TTL exhausted"
    rx.SlotNotCoveredError,
    rx.MasterDownError,
)


def classify_error(exc: BaseException) -> ErrorKind:
    """The default classification of an exception raised inside a guarded call.

    Connection-level failures are ``TRANSIENT``; authentication and permission errors are
    ``MISCONFIGURED`` (a retry cannot fix them, but the service should still degrade rather
    than fail); a full local connection pool is ``REJECTED`` (Redis itself may be fine, so the
    breaker is not told). asyncio's internal ``AttributeError``/``TypeError`` from writing to
    a transport the peer already closed (CPython 3.12+, redis-py #4287) is a failed connection
    too: ``TRANSIENT`` (see :func:`closed_transport_error`). Everything else, including every
    other ``ResponseError`` and every non-Redis exception, propagates unchanged.
    """
    if not isinstance(exc, Exception):
        # CancelledError, KeyboardInterrupt, SystemExit: never retried, counted or swallowed.
        return ErrorKind.PROPAGATE
    if isinstance(exc, _MISCONFIGURED) or _bad_certificate(exc):
        return ErrorKind.MISCONFIGURED
    if isinstance(exc, _REJECTED):
        return ErrorKind.REJECTED
    if isinstance(exc, _TRANSIENT) or closed_transport_error(exc):
        return ErrorKind.TRANSIENT
    return ErrorKind.PROPAGATE


def _bad_certificate(exc: BaseException) -> bool:
    """A TLS certificate that does not verify: a configuration problem, not an outage.

    redis-py reports it as a ``ConnectionError`` caused by ``ssl.SSLCertVerificationError``.
    """
    seen = 0
    cause: BaseException | None = exc
    while cause is not None and seen < 8:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
        seen += 1
    return False
