"""Configuration: breaker and retry settings, validated, readable from the environment."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ._errors import ConfigError
from ._segment import MAX_RING, SHARED_ENV, check_namespace, parse_shared

__all__ = ["BreakerConfig", "RetryPolicy"]

_DAY = 86_400.0
_ENV_PREFIX = "REDIS_CIRCUIT_BREAKER_"


def _check_number(
    label: str, value: object, *, integer: bool, low: float, high: float
) -> None:
    """Raise ConfigError naming ``label`` unless ``low <= value <= high`` (and int if asked)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{label} must be a number, got {value!r}")
    if integer and not isinstance(value, int):
        raise ConfigError(f"{label} must be a whole number, got {value!r}")
    if not math.isfinite(value) or not low <= value <= high:
        raise ConfigError(f"{label} must be between {low:g} and {high:g}, got {value!r}")


def _check_percent(label: str, value: object) -> None:
    """Raise ConfigError naming ``label`` unless ``0 < value <= 100``."""
    _check_number(label, value, integer=False, low=0, high=100)
    if value == 0:
        raise ConfigError(f"{label} must be above 0 and at most 100 (percent), got {value!r}")


def _env_percent(env: Mapping[str, str], name: str) -> float | None:
    """Read a percentage (0 < x <= 100)."""
    value = _env_number(env, name, integer=False, low=0, high=100, scale=1)
    if value == 0:
        raise ConfigError(f"{name} must be above 0 and at most 100 (percent), got {env[name]!r}")
    return value


def _env_number(
    env: Mapping[str, str], name: str, *, integer: bool, low: float, high: float, scale: float
) -> float | None:
    """Read one numeric variable; ``scale`` converts its unit to the field's (ms -> s: 0.001)."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    text = raw.strip()
    try:
        value: float = int(text) if integer else float(text)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise ConfigError(f"{name} must be {kind}, got {raw!r}") from None
    try:
        _check_number(name, value, integer=integer, low=low, high=high)
    except ConfigError:
        raise ConfigError(
            f"{name} must be between {low:g} and {high:g}, got {raw!r}"
        ) from None
    return value * scale


@dataclass(frozen=True)
class BreakerConfig:
    """How a breaker decides to open, probe and close. Durations are in seconds.

    Attributes:
        failure_threshold: Consecutive failures, all inside ``monitoring_window``, that open
            the circuit. A success clears the count; failures older than the window drop out.
        reset_timeout: How long the circuit stays open before it admits trial calls
            (measured on a monotonic clock).
        monitoring_window: How far back failures count.
        half_open_max_attempts: How many trial calls may be in flight at once while half-open;
            every other call gets its fallback at once.
        success_threshold: Successful trial calls needed to close the circuit again.
        half_open_trial_timeout: How long a half-open trial call may hold its slot without
            an outcome. When every slot has been held longer than this, the breaker starts a
            new round of trials and ignores the late outcomes of the old one, so no path
            (a hung call, a bookkeeping error) can keep the circuit half-open forever.
        max_concurrent_calls: The bulkhead: at most this many guarded calls on this breaker
            in flight at once (threads and asyncio tasks alike, retries included); a call
            over the limit gets its fallback at once. None (the default) turns it off.
        max_wait_for_slot: How long a call may wait for a bulkhead slot before it is
            rejected; 0 rejects at once.
        retry_budget_ratio: The retry budget shared by every guard on this breaker: retries
            may add at most this percentage of the breaker's recent successful calls (plus
            ``retry_budget_min_per_second``). When it is spent, a failing call falls back
            instead of retrying. None turns the budget off.
        retry_budget_min_per_second: Retries the budget allows per second even without
            successes (the floor that lets a quiet service retry).
        failure_rate_threshold: Percent (0 < x <= 100). Setting it selects failure-rate
            mode: the circuit opens when at least this share of the calls in the window
            failed (instead of after ``failure_threshold`` consecutive failures).
        minimum_calls: Calls the window must hold before a failure or slow-call rate is
            judged at all.
        sliding_window_size: The window is the last this many calls (count-based); None
            makes it the last ``monitoring_window`` seconds (time-based).
        slow_call_duration: Seconds; a call that succeeds but takes longer than this is a
            slow call. None turns slow-call breaking off.
        slow_call_rate_threshold: Percent (0 < x <= 100) of slow calls in the window that
            opens the circuit (with ``slow_call_duration`` set), even though they succeeded.
        shared: Share the breaker's state with every process on this host that uses the
            same breaker name in the same namespace (``redisguard._host``): False (the
            default) keeps it per process; True shares it in the namespace derived from the
            service and the Redis URL; a string is the namespace. Needs
            ``failure_threshold`` <= 4096.
    """

    failure_threshold: int = 5
    reset_timeout: float = 30.0
    monitoring_window: float = 60.0
    half_open_max_attempts: int = 3
    success_threshold: int = 1
    half_open_trial_timeout: float = 10.0
    # bulkhead and retry budget (redisguard._bulkhead, redisguard._budget)
    max_concurrent_calls: int | None = None
    max_wait_for_slot: float = 0.0
    retry_budget_ratio: float | None = 10.0
    retry_budget_min_per_second: float = 10.0

    # failure-rate and slow-call windows (redisguard._window)
    failure_rate_threshold: float | None = None
    minimum_calls: int = 20
    sliding_window_size: int | None = None
    slow_call_duration: float | None = None
    slow_call_rate_threshold: float = 50.0

    # host-wide shared state (redisguard._host)
    shared: bool | str = False

    @property
    def uses_window(self) -> bool:
        """Whether a failure-rate or slow-call window is configured (``redisguard._window``)."""
        return self.failure_rate_threshold is not None or self.slow_call_duration is not None

    def __post_init__(self) -> None:
        _check_number("failure_threshold", self.failure_threshold, integer=True, low=1, high=1e6)
        _check_number("reset_timeout", self.reset_timeout, integer=False, low=1e-3, high=_DAY)
        _check_number(
            "monitoring_window", self.monitoring_window, integer=False, low=1e-3, high=_DAY
        )
        _check_number(
            "half_open_max_attempts", self.half_open_max_attempts, integer=True, low=1, high=1e4
        )
        _check_number("success_threshold", self.success_threshold, integer=True, low=1, high=1e4)
        _check_number(
            "half_open_trial_timeout",
            self.half_open_trial_timeout,
            integer=False,
            low=1e-3,
            high=_DAY,
        )
        self._check_window_fields()
        self._check_budget_fields()
        self._check_shared()

    def _check_shared(self) -> None:
        shared = self.shared
        if isinstance(shared, bool):
            if not shared:
                return
        elif isinstance(shared, str):
            check_namespace(shared, source="shared")
        else:
            raise ConfigError(f"shared must be True, False or a namespace string, got {shared!r}")
        if self.failure_threshold > MAX_RING:
            raise ConfigError(
                f"a host-shared breaker (shared={shared!r}) takes failure_threshold up to "
                f"{MAX_RING}, got {self.failure_threshold}"
            )

    def _check_window_fields(self) -> None:
        if self.failure_rate_threshold is not None:
            _check_percent("failure_rate_threshold", self.failure_rate_threshold)
        _check_percent("slow_call_rate_threshold", self.slow_call_rate_threshold)
        _check_number("minimum_calls", self.minimum_calls, integer=True, low=1, high=1e6)
        if self.sliding_window_size is not None:
            _check_number(
                "sliding_window_size", self.sliding_window_size, integer=True, low=1, high=1e6
            )
            if self.minimum_calls > self.sliding_window_size:
                raise ConfigError(
                    f"minimum_calls ({self.minimum_calls!r}) must not exceed "
                    f"sliding_window_size ({self.sliding_window_size!r}): the window would "
                    "never hold enough calls to be judged"
                )
        if self.slow_call_duration is not None:
            _check_number(
                "slow_call_duration", self.slow_call_duration, integer=False, low=1e-6, high=_DAY
            )

    def _check_budget_fields(self) -> None:
        if self.max_concurrent_calls is not None:
            _check_number(
                "max_concurrent_calls", self.max_concurrent_calls, integer=True, low=1, high=1e6
            )
        _check_number("max_wait_for_slot", self.max_wait_for_slot, integer=False, low=0, high=60)
        if self.retry_budget_ratio is not None:
            _check_number(
                "retry_budget_ratio", self.retry_budget_ratio, integer=False, low=0, high=100
            )
        _check_number(
            "retry_budget_min_per_second",
            self.retry_budget_min_per_second,
            integer=False,
            low=0,
            high=1e6,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BreakerConfig:
        """Build a config from ``REDIS_CIRCUIT_BREAKER_*`` variables; unset ones keep defaults.

        Durations are read in **milliseconds**.

        Raises:
            ConfigError: a variable is not a number or is out of its range (0 is accepted
                only by ``MAX_WAIT_FOR_SLOT``, ``RETRY_BUDGET_RATIO`` and
                ``RETRY_BUDGET_MIN_PER_SECOND``); the message names the variable and its value.
        """
        env = os.environ if env is None else env
        fields: dict[str, float | None] = {
            "failure_threshold": _env_number(
                env, f"{_ENV_PREFIX}FAILURE_THRESHOLD", integer=True, low=1, high=1e6, scale=1
            ),
            "reset_timeout": _env_number(
                env, f"{_ENV_PREFIX}RESET_TIMEOUT", integer=False, low=1, high=_DAY * 1e3,
                scale=1e-3,
            ),
            "monitoring_window": _env_number(
                env, f"{_ENV_PREFIX}MONITORING_WINDOW", integer=False, low=1, high=_DAY * 1e3,
                scale=1e-3,
            ),
            "half_open_max_attempts": _env_number(
                env, f"{_ENV_PREFIX}HALF_OPEN_ATTEMPTS", integer=True, low=1, high=1e4, scale=1
            ),
            "success_threshold": _env_number(
                env, f"{_ENV_PREFIX}SUCCESS_THRESHOLD", integer=True, low=1, high=1e4, scale=1
            ),
            "half_open_trial_timeout": _env_number(
                env, f"{_ENV_PREFIX}HALF_OPEN_TRIAL_TIMEOUT", integer=False, low=1,
                high=_DAY * 1e3, scale=1e-3,
            ),
            "failure_rate_threshold": _env_percent(env, f"{_ENV_PREFIX}FAILURE_RATE_THRESHOLD"),
            "minimum_calls": _env_number(
                env, f"{_ENV_PREFIX}MINIMUM_CALLS", integer=True, low=1, high=1e6, scale=1
            ),
            "sliding_window_size": _env_number(
                env, f"{_ENV_PREFIX}SLIDING_WINDOW_SIZE", integer=True, low=1, high=1e6, scale=1
            ),
            "slow_call_duration": _env_number(
                env, f"{_ENV_PREFIX}SLOW_CALL_DURATION", integer=False, low=1e-3,
                high=_DAY * 1e3, scale=1e-3,
            ),
            "slow_call_rate_threshold": _env_percent(
                env, f"{_ENV_PREFIX}SLOW_CALL_RATE_THRESHOLD"
            ),
        }
        budget_fields, budget_off = _budget_fields_from_env(env)
        fields.update(budget_fields)
        given: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
        if budget_off:
            given["retry_budget_ratio"] = None
        for key in (
            "failure_threshold",
            "half_open_max_attempts",
            "success_threshold",
            "max_concurrent_calls",
            "minimum_calls",
            "sliding_window_size",
        ):
            if key in given:
                given[key] = int(given[key])
        raw_shared = env.get(SHARED_ENV)
        if raw_shared is not None:
            given["shared"] = parse_shared(raw_shared, source=SHARED_ENV)
        return cls(**given)


def _budget_fields_from_env(
    env: Mapping[str, str],
) -> tuple[dict[str, float | None], bool]:
    """The bulkhead and retry-budget fields, and whether ``..._RETRY_BUDGET_RATIO`` is ``off``."""
    ratio_name = f"{_ENV_PREFIX}RETRY_BUDGET_RATIO"
    ratio: float | None = None
    off = env.get(ratio_name, "").strip().lower() == "off"
    if not off:
        try:
            ratio = _env_number(env, ratio_name, integer=False, low=0, high=100, scale=1)
        except ConfigError:
            raise ConfigError(
                f"{ratio_name} must be a percentage between 0 and 100 or 'off', "
                f"got {env.get(ratio_name)!r}"
            ) from None
    fields = {
        "max_concurrent_calls": _env_number(
            env, f"{_ENV_PREFIX}MAX_CONCURRENT_CALLS", integer=True, low=1, high=1e6, scale=1
        ),
        "max_wait_for_slot": _env_number(
            env, f"{_ENV_PREFIX}MAX_WAIT_FOR_SLOT", integer=False, low=0, high=60_000,
            scale=1e-3,
        ),
        "retry_budget_ratio": ratio,
        "retry_budget_min_per_second": _env_number(
            env, f"{_ENV_PREFIX}RETRY_BUDGET_MIN_PER_SECOND", integer=False, low=0, high=1e6,
            scale=1,
        ),
    }
    return fields, off


# pybreaker's constructor keywords and the BreakerConfig fields they set.
_PYBREAKER_FIELDS = {
    "fail_max": "failure_threshold",
    "reset_timeout": "reset_timeout",
    "success_threshold": "success_threshold",
}


def with_pybreaker_keywords(config: BreakerConfig | None, **keywords: Any) -> BreakerConfig:
    """Merge pybreaker's constructor keywords into ``config``.

    ``fail_max`` sets ``failure_threshold``; ``reset_timeout`` (seconds) and
    ``success_threshold`` keep their names. Keywords that are None are not given. Without
    ``config`` the other fields come from ``BreakerConfig.from_env()``.

    Raises:
        ConfigError: a keyword is invalid, or contradicts ``config`` (naming both).
    """
    given = {key: value for key, value in keywords.items() if value is not None}
    if config is None:
        config = BreakerConfig.from_env()
        for key, value in given.items():
            config = replace_pybreaker_keyword(config, key, value)
        return config
    for key, value in given.items():
        field = _PYBREAKER_FIELDS[key]
        if getattr(config, field) != value:
            raise ConfigError(
                f"{key}={value!r} contradicts config.{field}={getattr(config, field)!r}; "
                f"pass one or the other"
            )
    return config


def replace_pybreaker_keyword(config: BreakerConfig, keyword: str, value: Any) -> BreakerConfig:
    """``config`` with pybreaker's ``keyword`` set; a ConfigError names the keyword."""
    try:
        return replace(config, **{_PYBREAKER_FIELDS[keyword]: value})
    except ConfigError as exc:
        raise ConfigError(f"{keyword}={value!r}: {exc}") from None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter for calls that failed because Redis was unavailable.

    The first attempt never touches the retry machinery; only after it fails does tenacity run.

    Attributes:
        attempts: Total attempts, the first included (1 means no retry).
        backoff: Base delay in seconds: attempt ``n`` (n >= 2) waits
            ``min(backoff * 2**(n-2) + U(0, jitter), max_backoff)``.
        max_backoff: Upper bound on one wait.
        jitter: Upper bound of the uniform random jitter added to each wait.
        deadline: Upper bound, in seconds, on the whole call including waits. No attempt
            starts that, judging by the slowest attempt so far, would end past it; on asyncio
            a retry attempt is also cancelled at the deadline.
    """

    attempts: int = 3
    backoff: float = 0.025
    max_backoff: float = 0.2
    jitter: float = 0.025
    deadline: float = 0.5

    def __post_init__(self) -> None:
        _check_number("attempts", self.attempts, integer=True, low=1, high=100)
        _check_number("backoff", self.backoff, integer=False, low=0, high=3600)
        _check_number("max_backoff", self.max_backoff, integer=False, low=0, high=3600)
        _check_number("jitter", self.jitter, integer=False, low=0, high=3600)
        _check_number("deadline", self.deadline, integer=False, low=1e-3, high=_DAY)
        if self.max_backoff < self.backoff:
            raise ConfigError(
                f"max_backoff ({self.max_backoff!r}) must be >= backoff ({self.backoff!r})"
            )
