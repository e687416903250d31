"""Which exceptions mean "Redis is unavailable", and what the guard does about each kind."""

from __future__ import annotations

import asyncio
import builtins
import enum
import queue
import re
import ssl
from collections.abc import Callable
from types import TracebackType

from redis import exceptions as rx

from ._errors import CircuitOpenError, RedisUnavailableError
from ._transport import closed_transport_error

__all__ = ["Classifier", "ErrorKind", "classify_error", "not_applied"]


class ErrorKind(enum.Enum):
    """What the guard does with an exception raised by the guarded function.

    ======================  =======  =======================  ========  =========================
    kind                    retried  counted by the breaker    fallback  examples
    ======================  =======  =======================  ========  =========================
    ``TRANSIENT``           yes      yes                       yes       connection refused/reset,
                                                                         timeouts, LOADING, BUSY
                                                                         (a script past its time
                                                                         limit), MASTERDOWN,
                                                                         failover
    ``MISCONFIGURED``       no       yes                       yes       wrong password, no ACL
                                                                         permission, a TLS
                                                                         certificate that does
                                                                         not verify (logged ERROR)
    ``WRITE_REFUSED``       no       by the write side only    yes       OOM (maxmemory reached
                                                                         with ``noeviction``),
                                                                         MISCONF (a failed RDB
                                                                         save stops writes),
                                                                         READONLY (a replica, a
                                                                         demoted master);
                                                                         logged WARNING
    ``REJECTED``            no       no                        yes       local pool exhausted
                                                                         (also BlockingConnection-
                                                                         Pool's timeout); an inner
                                                                         guard already gave up
    ``PROPAGATE``           no       no                        no        WRONGTYPE, DataError, the
                                                                         function's own bugs
    ======================  =======  =======================  ========  =========================

    "Retried" is the most a guard does: a guard that is not declared ``idempotent=True``
    retries an error only when :func:`not_applied` proves the command never ran.

    ``WRITE_REFUSED`` means Redis is up and serves reads but refuses writes. It is not
    retried (the condition lasts until memory is freed, a save succeeds or the client is
    pointed at the new master) and not counted by the breaker's main side, so reads keep
    flowing; it counts towards opening the breaker's *write side*, which then answers write
    guards with their fallback (``redisguard._sides``).
    """

    TRANSIENT = "transient"
    MISCONFIGURED = "misconfigured"
    WRITE_REFUSED = "write_refused"
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
_WRITE_REFUSED: tuple[type[BaseException], ...] = (
    rx.OutOfMemoryError,
    rx.ReadOnlyError,  # a replica, or a master demoted by a failover (a plain client)
)
_TRANSIENT: tuple[type[BaseException], ...] = (
    rx.ConnectionError,  # includes BusyLoadingError, MasterNotFoundError, SlaveNotFoundError
    rx.TimeoutError,
    builtins.TimeoutError,  # asyncio.wait_for / asyncio.timeout
    asyncio.TimeoutError,  # the same class from 3.11; wait_for's own class on 3.10
    builtins.ConnectionError,  # raw socket errors that escaped redis-py
    rx.TryAgainError,  # cluster resharding
    rx.ClusterError,  # includes ClusterDownError, "TTL exhausted"
    rx.SlotNotCoveredError,
    rx.MasterDownError,
)


def classify_error(exc: BaseException) -> ErrorKind:
    """The default classification of an exception raised inside a guarded call.

    Connection-level failures and "cannot serve now" replies (LOADING, BUSY, MASTERDOWN,
    TRYAGAIN, CLUSTERDOWN) are ``TRANSIENT``; authentication and permission errors are
    ``MISCONFIGURED`` (a retry cannot fix them, but the service should still degrade rather than
    fail); OOM, MISCONF and READONLY are ``WRITE_REFUSED`` (a Sentinel client turns READONLY
    from a demoted master into a ``ConnectionError`` itself: ``TRANSIENT``); a full local
    connection pool is ``REJECTED`` (Redis itself may be fine, so the breaker is not told).
    asyncio's internal ``AttributeError``/``TypeError`` from writing to a transport the peer
    already closed (CPython 3.12+, redis-py #4287) is a failed connection too: ``TRANSIENT``
    (see :func:`closed_transport_error`). Everything else, including every other
    ``ResponseError`` and every non-Redis exception, propagates unchanged. Error codes redis-py
    has no class for are matched on the reply's first word.
    """
    if not isinstance(exc, Exception):
        # CancelledError, KeyboardInterrupt, SystemExit: never retried, counted or swallowed.
        return ErrorKind.PROPAGATE
    if isinstance(exc, _MISCONFIGURED) or _bad_certificate(exc):
        return ErrorKind.MISCONFIGURED
    if isinstance(exc, _REJECTED) or (type(exc) is rx.ConnectionError and _pool_exhausted(exc)):
        return ErrorKind.REJECTED
    if isinstance(exc, _WRITE_REFUSED):
        return ErrorKind.WRITE_REFUSED
    if isinstance(exc, _TRANSIENT) or closed_transport_error(exc):
        return ErrorKind.TRANSIENT
    if type(exc) is rx.ResponseError:
        # Replies whose error code redis-py has no class for (or had none for before 6.x):
        # the code is the reply's first word, part of the protocol, not free text.
        return _CODE_KINDS.get(_error_code(exc), ErrorKind.PROPAGATE)
    return ErrorKind.PROPAGATE


#: Error codes of "cannot serve now" replies that redis-py raises as a plain ResponseError.
#: (BUSYGROUP, BUSYKEY... are data errors: the match is on the whole first word.)
_CODE_KINDS: dict[str, ErrorKind] = {
    "BUSY": ErrorKind.TRANSIENT,  # a script or function past busy-reply-threshold
    "MASTERDOWN": ErrorKind.TRANSIENT,  # redis-py < 6
    "TRYAGAIN": ErrorKind.TRANSIENT,  # redis-py < 6
    "CLUSTERDOWN": ErrorKind.TRANSIENT,  # redis-py < 6
    "MISCONF": ErrorKind.WRITE_REFUSED,  # stop-writes-on-bgsave-error after a failed save
    "OOM": ErrorKind.WRITE_REFUSED,  # a script's refused write (redis-py maps the prefix too)
    "READONLY": ErrorKind.WRITE_REFUSED,
}


def _error_code(exc: BaseException) -> str:
    """The error code of a Redis error reply (``"BUSY"`` for ``-BUSY Redis is busy...``).

    Redis < 7 wraps the error of a command a Lua script called in its own text:
    ``Error running script (call to f_<sha>): @user_script:1: @user_script: 1: -OOM ...``
    (``redis.call``) or ``@user_script: 1: -OOM ...`` (an error ``redis.pcall`` returned);
    the code is the wrapped reply's (``"OOM"``). Redis 7 passes the reply on as it is.
    """
    args = exc.args
    if not args or not isinstance(args[0], str):
        return ""
    message = args[0]
    if message.startswith(_SCRIPT_PREFIXES):
        wrapped = _WRAPPED_CODE.search(message)
        if wrapped is not None:
            return wrapped.group(1)
    return message.split(" ", 1)[0]


_SCRIPT_PREFIXES = ("Error running script", "@user_script:")
#: The wrapped reply's code: the first ``: -CODE `` after the script's location.
_WRAPPED_CODE = re.compile(r"@user_script: ?\d+: -([A-Z][A-Z_]*) ")


# -- "the command never ran" ----------------------------------------------------------------
#: Server replies that refuse a command before running it (by redis-py class, and by error
#: code for the ones redis-py raises as a plain ResponseError). For a script the refusal
#: comes before its first write: Redis checks OOM/MISCONF/READONLY only while a script has
#: not written yet, so a script is never half-applied by them.
_REFUSED: tuple[type[BaseException], ...] = (
    rx.BusyLoadingError,  # LOADING
    rx.OutOfMemoryError,  # OOM
    rx.ReadOnlyError,  # READONLY
    rx.MasterDownError,  # MASTERDOWN
    rx.TryAgainError,  # TRYAGAIN
    rx.ClusterDownError,  # CLUSTERDOWN
    rx.NoPermissionError,  # NOPERM
    rx.AuthenticationError,  # NOAUTH, WRONGPASS
    rx.AuthorizationError,
)
_REFUSED_CODES = frozenset(
    {
        "BUSY",
        "LOADING",
        "OOM",
        "MISCONF",
        "READONLY",
        "MASTERDOWN",
        "TRYAGAIN",
        "CLUSTERDOWN",
        "NOPERM",
        "NOAUTH",
    }
)

#: Where redis-py opens a connection or takes one from its pool, in 5.x to 8.x, sync and
#: asyncio: an error raised under one of these frames was raised before the command was sent.
_CONNECT_MODULES = frozenset(
    {"redis.connection", "redis.asyncio.connection", "redis.sentinel", "redis.asyncio.sentinel"}
)
_CONNECT_FUNCTIONS = frozenset(
    {
        "connect",  # every version: the entry point that opens the socket and handshakes
        "connect_check_health",  # >= 6
        "_connect",
        "_connect_retry",  # sentinel: find the master, then connect
        "connect_to",
        "on_connect",  # AUTH, HELLO, SELECT, CLIENT SETNAME
        "on_connect_check_health",  # >= 6
        "_wrap_socket_with_ssl",
        "get_connection",  # pool checkout (connects the connection it hands out)
        "make_connection",
        "get_available_connection",
        "ensure_connection",
    }
)
#: A pipeline or transaction: commands before the failing one may have run.
_PIPELINE_MODULES = frozenset(
    {"redis.client", "redis.asyncio.client", "redis.cluster", "redis.asyncio.cluster"}
)
_PIPELINE_FUNCTIONS = frozenset(
    {
        "_execute_transaction",
        "_execute_transaction_with_retries",
        "_execute_pipeline",
        "execute_pipeline",
        "send_cluster_commands",
        "_send_cluster_commands",
    }
)
_RETRY_MODULES = frozenset({"redis.retry", "redis.asyncio.retry"})


def not_applied(exc: BaseException) -> bool:
    """Whether ``exc`` proves that the failed command never ran on Redis.

    True for:

    * errors raised while redis-py was connecting, handshaking or taking a connection from
      its pool (found by the traceback's frames: module and function name, not message),
      including a connect that ``asyncio.timeout`` cut short;
    * a full local pool (``MaxConnectionsError``, ``BlockingConnectionPool``'s
      "No connection available");
    * a reply by which the server refused the command: LOADING, BUSY, OOM, MISCONF,
      READONLY, MASTERDOWN, TRYAGAIN, CLUSTERDOWN, NOPERM, NOAUTH -- unless it came out of a
      pipeline or transaction, where earlier commands may have run;
    * :class:`~redisguard.CircuitOpenError` (a breaker refused the call);
    * asyncio's error from writing to a transport the peer already closed
      (:func:`closed_transport_error`): the bytes never left the process.

    False for everything else, in particular a timeout or a reset while waiting for the
    reply: the command may have run. This assumes the client does not resend commands
    itself: when redis-py's own ``Retry`` already resent one and then failed to reconnect,
    the answer is False (read from its retry loop's failure count).
    """
    if isinstance(exc, rx.MaxConnectionsError | CircuitOpenError) or closed_transport_error(exc):
        return True
    tb = exc.__traceback__
    if isinstance(exc, builtins.TimeoutError | asyncio.TimeoutError) and not isinstance(
        exc, rx.RedisError
    ):
        # asyncio.timeout / wait_for: the cancelled attempt is the cause (or the context). On
        # Python 3.10 wait_for raises from a fresh CancelledError whose context is the one
        # that went through the attempt's frames, so follow cancellations a few links deep.
        inner = exc.__cause__ or exc.__context__
        for _ in range(3):
            if inner is None:
                break
            if _before_send(inner.__traceback__):
                return True
            if not isinstance(inner, asyncio.CancelledError):
                break
            inner = inner.__cause__ or inner.__context__
    if _before_send(tb):
        return True
    if isinstance(exc, _REFUSED) or (
        type(exc) is rx.ResponseError and _error_code(exc) in _REFUSED_CODES
    ):
        return not _in_pipeline(tb)
    return False


def _before_send(tb: TracebackType | None) -> bool:
    """The traceback went through a connect/checkout frame, and no earlier resend."""
    while tb is not None:
        frame = tb.tb_frame
        module = frame.f_globals.get("__name__")
        name = frame.f_code.co_name
        if module in _CONNECT_MODULES and name in _CONNECT_FUNCTIONS:
            return True
        if module in _RETRY_MODULES and name == "call_with_retry":
            # redis-py's own retry loop around the command: more than one failure means an
            # earlier attempt sent the command before this one failed to reconnect.
            failures = frame.f_locals.get("failures", 0)
            if isinstance(failures, int) and failures > 1:
                return False
        tb = tb.tb_next
    return False


def _pool_exhausted(exc: BaseException) -> bool:
    """A plain ``ConnectionError`` that says the *local* pool is full, found by where it rose.

    ``BlockingConnectionPool`` raises "No connection available" from ``get_connection`` while
    handling its wait's timeout (``queue.Empty`` / ``TimeoutError``); redis-py 5.x raises "Too
    many connections" from ``make_connection``/``get_available_connection`` (later versions
    raise ``MaxConnectionsError``).
    """
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    frame = tb.tb_frame
    if frame.f_globals.get("__name__") not in _POOL_MODULES:
        return False
    name = frame.f_code.co_name
    if name in ("make_connection", "get_available_connection"):
        return True
    return name == "get_connection" and isinstance(
        exc.__context__, queue.Empty | builtins.TimeoutError | asyncio.TimeoutError
    )


_POOL_MODULES = frozenset({"redis.connection", "redis.asyncio.connection"})


def _in_pipeline(tb: TracebackType | None) -> bool:
    while tb is not None:
        frame = tb.tb_frame
        if (
            frame.f_code.co_name in _PIPELINE_FUNCTIONS
            and frame.f_globals.get("__name__") in _PIPELINE_MODULES
        ):
            return True
        tb = tb.tb_next
    return False


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
