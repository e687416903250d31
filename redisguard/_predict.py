"""What a Redis outage does to worker capacity: the model behind ``redisguard doctor``.

This is Shopify's "Your Circuit Breaker is Misconfigured" model, restated for redisguard's
breaker (no I/O here). A *worker* serves one request at a time (a thread, or a sync
process); ``workers_per_breaker`` of them share one breaker (the threads of one process, or
every process of the host with ``BreakerConfig(shared=True)``). During an outage where Redis
does not answer (paused, blackholed), every call that reaches Redis blocks its worker for a
timeout:

* **Detection** (breaker still closed): each request makes ``calls_per_request`` calls, and
  each one blocks for ``failed_call`` seconds (the socket timeout, times redis-py's own
  retries, times the guard's attempts that fit the deadline). The ``k`` workers on one breaker
  fail together, so it takes ``ceil(failures_to_open / (k * attempts))`` rounds of one timeout
  each to open it. Until then a worker serves ``1 / (request_time + calls * failed_call)``
  requests per second: the headline number of the Shopify post.
* **Open**: calls get their fallback at once; a worker serves ``1 / request_time``.
* **Half-open**: every ``reset_timeout + timeout`` seconds, ``min(half_open_max_attempts, k)``
  trial calls block their worker for one timeout and fail, and the breaker opens again. That
  is the steady loss: ``trials * timeout / (k * (reset_timeout + timeout))`` of the workers'
  time.

Over an outage of ``outage`` seconds the average capacity per worker is the time-weighted mix
of the detection and open phases. Utilization is the offered rate per worker divided by that
capacity: above 100 % requests queue.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from ._config import BreakerConfig, RetryPolicy
from ._errors import ConfigError

__all__ = ["ClientSettings", "Prediction", "Workload", "predict"]

#: How long a call without ``socket_timeout`` hangs on a dead peer: Linux gives up on an
#: unacknowledged TCP send after ``tcp_retries2`` (15) retransmissions, about 15 minutes.
NO_TIMEOUT_HANG = 900.0
#: Headroom the suggested socket timeout keeps: capacity while detecting >= 1.25 x offered.
_HEADROOM = 1.25
#: The shortest socket timeout ever suggested: below it healthy calls start timing out.
MIN_SUGGESTED_TIMEOUT = 0.05
#: Share of worker time the suggested reset_timeout lets half-open trials take.
_TRIAL_LOSS_TARGET = 0.01


def _positive(label: str, value: object, *, integer: bool = False, zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{label} must be a number, got {value!r}")
    if integer and not isinstance(value, int):
        raise ConfigError(f"{label} must be a whole number, got {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        bound = "zero or more" if zero else "positive"
        raise ConfigError(f"{label} must be {bound}, got {value!r}")


@dataclass(frozen=True)
class Workload:
    """The traffic a service sends to Redis, for the outage model.

    Attributes:
        rate: Requests per second the service receives, all workers together.
        workers: Workers serving them, each one request at a time (threads x processes).
        calls_per_request: Guarded Redis calls one request makes.
        request_time: Seconds one request takes without counting its Redis calls (> 0).
        workers_per_breaker: Workers that share one breaker: the threads of a process (a
            breaker is per process), or all workers of the host with ``shared=True``. None:
            ``workers`` when the breaker config is shared, else 1 (one sync worker per
            process, as gunicorn's default).
        use: ``"cache"`` (losing keys is fine, refusing writes is not) or ``"store"``
            (sessions, rate limits, queues: every acknowledged write must stay).
    """

    rate: float = 100.0
    workers: int = 8
    calls_per_request: int = 1
    request_time: float = 0.01
    workers_per_breaker: int | None = None
    use: Literal["cache", "store"] = "cache"

    def __post_init__(self) -> None:
        _positive("rate", self.rate)
        _positive("workers", self.workers, integer=True)
        _positive("calls_per_request", self.calls_per_request, integer=True)
        _positive("request_time", self.request_time)
        if self.workers_per_breaker is not None:
            _positive("workers_per_breaker", self.workers_per_breaker, integer=True)
            if self.workers_per_breaker > self.workers:
                raise ConfigError(
                    f"workers_per_breaker ({self.workers_per_breaker}) must not exceed "
                    f"workers ({self.workers})"
                )
        if self.use not in ("cache", "store"):
            raise ConfigError(f"use must be 'cache' or 'store', got {self.use!r}")


def _retry_count(retry: Any) -> int:
    """The retries of a redis-py ``Retry`` (``get_retries()`` is redis-py 5.1+)."""
    if retry is None:
        return 0
    getter = getattr(retry, "get_retries", None)
    return int(getter() if callable(getter) else getattr(retry, "_retries", 0) or 0)


@dataclass(frozen=True)
class ClientSettings:
    """The redis-py client settings that decide how long a call to a dead Redis blocks.

    Attributes:
        socket_timeout: Seconds to wait for a reply; None waits for TCP to give up.
        socket_connect_timeout: Seconds to wait for a connection; None uses
            ``socket_timeout`` (redis-py's rule).
        redis_py_retries: Extra attempts redis-py itself makes after a timeout or a
            connection error (0 when its retry is off, as :func:`redisguard.connect` does).
    """

    socket_timeout: float | None = 0.25
    socket_connect_timeout: float | None = 0.25
    redis_py_retries: int = 0

    def __post_init__(self) -> None:
        if self.socket_timeout is not None:
            _positive("socket_timeout", self.socket_timeout)
        if self.socket_connect_timeout is not None:
            _positive("socket_connect_timeout", self.socket_connect_timeout)
        _positive("redis_py_retries", self.redis_py_retries, integer=True, zero=True)

    @classmethod
    def from_client(cls, client: Any) -> ClientSettings:
        """Read what the connections of a ``redis.Redis`` (sync or asyncio, or a redisguard
        client) use, without I/O.

        The pool's ``connection_kwargs`` hold only what was passed to it:
        ``Redis.from_url()`` and ``Sentinel.master_for()`` pass no timeout and no retry, and
        the connections then take their class's defaults (redis-py 6+: a 5 s
        ``socket_timeout``), while ``retry_on_timeout``/``retry_on_error`` without a
        ``Retry`` give them redis-py's one retry. So a connection is built from the pool's
        settings, as the pool builds one, and read: it is never connected and not counted
        against ``max_connections``. A single-connection client's own connection is read.

        Raises:
            ConfigError: ``client`` has no connection pool to read (e.g. a cluster client),
                or its connection class cannot be built from the pool's settings.
        """
        name = type(client).__name__
        connection = getattr(client, "connection", None)
        if connection is None:
            pool = getattr(client, "connection_pool", None)
            kwargs: dict[str, Any] = dict(getattr(pool, "connection_kwargs", None) or {})
            connection_class = getattr(pool, "connection_class", None)
            if not kwargs or connection_class is None:
                raise ConfigError(
                    f"cannot read the connection settings of {name}: pass a redis.Redis / "
                    "redis.asyncio.Redis / redisguard.GuardedRedis, or client_settings="
                )
            try:
                connection = connection_class(**kwargs)
            except Exception as exc:  # any failure means: cannot tell
                raise ConfigError(
                    f"cannot read the connection settings of {name}: building a "
                    f"{connection_class.__name__} from its pool's settings failed "
                    f"({type(exc).__name__}); pass client_settings="
                ) from None
        timeout = getattr(connection, "socket_timeout", None)
        connect_timeout = getattr(connection, "socket_connect_timeout", timeout)
        return cls(
            socket_timeout=timeout,
            socket_connect_timeout=connect_timeout,
            redis_py_retries=_retry_count(getattr(connection, "retry", None)),
        )

    @property
    def attempt_time(self) -> float:
        """Seconds one guarded attempt blocks on a Redis that does not answer."""
        timeout = NO_TIMEOUT_HANG if self.socket_timeout is None else self.socket_timeout
        return timeout * (1 + self.redis_py_retries)


@dataclass(frozen=True)
class Prediction:
    """What an outage of ``outage`` seconds does to each worker (rates in requests/s).

    Attributes:
        outage: The outage length modelled, seconds.
        workers_per_breaker: Workers sharing one breaker (``k``).
        attempt_time: Seconds one attempt blocks on an unanswering Redis.
        attempts_per_call: Attempts one failed guarded call makes before the breaker opens.
        failed_call: Seconds one failed guarded call blocks its worker.
        failures_to_open: Failures the breaker needs to open.
        time_to_open: Seconds from the start of the outage until the breaker opens.
        healthy_per_worker: Requests/s one worker serves while Redis is healthy.
        detecting_per_worker: Requests/s one worker serves while calls hit the timeout
            before the breaker opens.
        open_per_worker: Requests/s one worker serves once the breaker is open, half-open
            trials included.
        outage_per_worker: The average over the whole outage.
        offered_per_worker: Requests/s each worker receives.
        utilization_healthy: Offered / healthy capacity (above 1 the workload as given
            overloads the workers even without an outage).
        trial_loss: Share of worker time lost to half-open trials once open.
        capacity_loss: ``1 - outage_per_worker / healthy_per_worker``.
        utilization_detecting: Offered / detecting capacity (above 1: requests queue).
        utilization_open: Offered / open capacity.
        backlog_per_worker: Requests queued per worker by the time the breaker opens.
        suggested_socket_timeout: The longest socket timeout that keeps detecting capacity
            at 1.25 x the offered rate (None: it would be under 50 ms, where healthy calls
            start timing out; make the breaker open sooner instead).
        suggested_failure_threshold: A threshold that opens within one timeout round when
            several workers share the breaker (else at most 3).
        suggested_reset_timeout: The shortest reset timeout that keeps trial losses <= 1 %.
    """

    outage: float
    workers_per_breaker: int
    attempt_time: float
    attempts_per_call: int
    failed_call: float
    failures_to_open: int
    time_to_open: float
    healthy_per_worker: float
    detecting_per_worker: float
    open_per_worker: float
    outage_per_worker: float
    offered_per_worker: float
    utilization_healthy: float
    trial_loss: float
    capacity_loss: float
    utilization_detecting: float
    utilization_open: float
    backlog_per_worker: float
    suggested_socket_timeout: float | None
    suggested_failure_threshold: int
    suggested_reset_timeout: float

    def as_dict(self) -> dict[str, Any]:
        """The prediction as JSON-ready numbers (rounded)."""
        return {
            key: round(value, 4) if isinstance(value, float) else value
            for key, value in asdict(self).items()
        }


def attempts_per_failed_call(retry: RetryPolicy | None, attempt_time: float) -> tuple[int, float]:
    """Attempts one timed-out guarded call makes, and how long it blocks, breaker closed.

    After its first timeout redis-py drops the connection, so every later call connects
    afresh and its handshake times out before the command is sent: that proves the command
    never ran, and the guard retries it even when the call is not declared idempotent. It
    never starts an attempt that, judging by the slowest so far, would end past the deadline
    (the mean jitter is used for the waits).
    """
    if retry is None:
        return 1, attempt_time
    attempts, elapsed = 1, attempt_time
    for number in range(2, retry.attempts + 1):
        sleep = min(retry.backoff * 2 ** (number - 2) + retry.jitter / 2, retry.max_backoff)
        if sleep + attempt_time > retry.deadline - elapsed:
            break
        attempts += 1
        elapsed += sleep + attempt_time
    return attempts, elapsed


def failures_to_open(config: BreakerConfig, calls_per_second: float) -> int:
    """Failed attempts, all in a row, that open a breaker whose window held only successes.

    Consecutive mode: ``failure_threshold``. Failure-rate mode: the share of the window that
    must fail (a count window of ``sliding_window_size`` calls, or a time window holding
    ``calls_per_second * monitoring_window`` successes), and at least ``minimum_calls``.
    """
    if config.failure_rate_threshold is None:
        return config.failure_threshold
    share = config.failure_rate_threshold / 100
    if config.sliding_window_size is not None:
        needed = math.ceil(share * config.sliding_window_size)
    elif share >= 1:
        needed = math.ceil(calls_per_second * config.monitoring_window) + 1
    else:
        successes = calls_per_second * config.monitoring_window
        needed = math.ceil(share * successes / (1 - share))
    return max(config.minimum_calls, needed, 1)


def predict(
    workload: Workload,
    client: ClientSettings,
    config: BreakerConfig,
    retry: RetryPolicy | None,
    *,
    outage: float = 30.0,
    call_latency: float = 0.0005,
) -> Prediction:
    """Predict each worker's capacity during a Redis outage of ``outage`` seconds.

    Args:
        workload: The traffic.
        client: The redis-py timeouts and retries.
        config: The breaker guarding the calls.
        retry: The guard's retry policy (None: one attempt).
        outage: How long Redis stops answering, seconds.
        call_latency: Seconds one healthy Redis call takes (round trip).

    Raises:
        ConfigError: ``outage`` or ``call_latency`` is not a positive number.
    """
    _positive("outage", outage)
    _positive("call_latency", call_latency, zero=True)
    k = workload.workers_per_breaker
    if k is None:
        k = workload.workers if config.shared else 1
    calls = workload.calls_per_request
    attempt = client.attempt_time
    attempts, failed_call = attempts_per_failed_call(retry, attempt)
    offered = workload.rate / workload.workers
    calls_per_second = offered * k * calls
    needed = failures_to_open(config, calls_per_second)
    # k workers fail together: each round of one attempt records k failures.
    rounds = math.ceil(needed / k)
    time_to_open = rounds * failed_call / attempts  # a round: one attempt and its wait
    healthy = 1 / (workload.request_time + calls * call_latency)
    detecting = 1 / (workload.request_time + calls * failed_call)
    trials = min(config.half_open_max_attempts, k)
    trial_loss = trials * attempt / (k * (config.reset_timeout + attempt))
    open_rate = (1 - trial_loss) / workload.request_time
    detect_span = min(time_to_open, outage)
    average = (detecting * detect_span + open_rate * (outage - detect_span)) / outage
    budget = 1 / (_HEADROOM * offered) - workload.request_time
    suggested_timeout = budget / (calls * attempts * (1 + client.redis_py_retries))
    suggested_reset = trials * attempt / (_TRIAL_LOSS_TARGET * k) - attempt
    return Prediction(
        outage=outage,
        workers_per_breaker=k,
        attempt_time=attempt,
        attempts_per_call=attempts,
        failed_call=failed_call,
        failures_to_open=needed,
        time_to_open=time_to_open,
        healthy_per_worker=healthy,
        detecting_per_worker=detecting,
        open_per_worker=open_rate,
        outage_per_worker=average,
        offered_per_worker=offered,
        utilization_healthy=offered / healthy,
        trial_loss=trial_loss,
        capacity_loss=max(0.0, 1 - average / healthy),
        utilization_detecting=offered / detecting,
        utilization_open=offered / open_rate,
        backlog_per_worker=max(0.0, (offered - detecting) * detect_span),
        suggested_socket_timeout=(
            suggested_timeout if suggested_timeout >= MIN_SUGGESTED_TIMEOUT else None
        ),
        suggested_failure_threshold=needed if rounds == 1 else max(k * attempts, min(needed, 3)),
        suggested_reset_timeout=max(suggested_reset, attempt),
    )
