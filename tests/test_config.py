"""BreakerConfig and RetryPolicy: validation, defaults and the environment variables."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from redisguard import BreakerConfig, ConfigError, RetryPolicy

PREFIX = "REDIS_CIRCUIT_BREAKER_"
ENV_VARS = [
    "FAILURE_THRESHOLD",
    "RESET_TIMEOUT",
    "HALF_OPEN_ATTEMPTS",
    "MONITORING_WINDOW",
    "SUCCESS_THRESHOLD",
    "HALF_OPEN_TRIAL_TIMEOUT",
    "FAILURE_RATE_THRESHOLD",
    "MINIMUM_CALLS",
    "SLIDING_WINDOW_SIZE",
    "SLOW_CALL_DURATION",
    "SLOW_CALL_RATE_THRESHOLD",
]


def test_defaults_match_the_design() -> None:
    """The defaults are 5 failures, 30 s open, 60 s window, 3 trials, 1 success, 10 s trials;
    failure-rate and slow-call breaking are off (20 minimum calls, 50% slow calls if on)."""
    config = BreakerConfig()
    assert dataclasses.astuple(config) == (5, 30.0, 60.0, 3, 1, 10.0, None, 20, None, None, 50.0)


def test_configs_are_frozen_and_comparable() -> None:
    """Configs are immutable values, so breakers can compare them."""
    config = BreakerConfig(failure_threshold=2)
    assert config == BreakerConfig(failure_threshold=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.failure_threshold = 3  # type: ignore[misc]


def test_from_env_without_variables_gives_defaults() -> None:
    """No variables set means the default config."""
    assert BreakerConfig.from_env({}) == BreakerConfig()


def test_from_env_converts_units() -> None:
    """Durations are read in milliseconds and counts as whole numbers."""
    env = {
        f"{PREFIX}FAILURE_THRESHOLD": "3",
        f"{PREFIX}RESET_TIMEOUT": "1500",
        f"{PREFIX}HALF_OPEN_ATTEMPTS": " 2 ",
        f"{PREFIX}MONITORING_WINDOW": "250.5",
        f"{PREFIX}SUCCESS_THRESHOLD": "4",
    }
    config = BreakerConfig.from_env(env)
    assert config == BreakerConfig(
        failure_threshold=3,
        reset_timeout=1.5,
        monitoring_window=0.2505,
        half_open_max_attempts=2,
        success_threshold=4,
    )
    assert isinstance(config.failure_threshold, int)
    assert isinstance(config.half_open_max_attempts, int)


def test_from_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit mapping, from_env reads the process environment."""
    monkeypatch.setenv(f"{PREFIX}RESET_TIMEOUT", "2000")
    assert BreakerConfig.from_env().reset_timeout == 2.0


def test_blank_variable_keeps_the_default() -> None:
    """An empty or blank variable counts as unset."""
    assert BreakerConfig.from_env({f"{PREFIX}FAILURE_THRESHOLD": "  "}) == BreakerConfig()


@pytest.mark.parametrize("var", ENV_VARS)
@pytest.mark.parametrize("raw", ["abc", "0", "-5", "1e30", "nan", "inf", "5ms"])
def test_bad_env_value_names_variable_and_value(var: str, raw: str) -> None:
    """A non-number, non-positive or absurd value raises ConfigError naming variable and value."""
    name = PREFIX + var
    with pytest.raises(ConfigError) as info:
        BreakerConfig.from_env({name: raw})
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert message.startswith(name + " ")
    assert _same_value(message.rpartition("got ")[2], raw)


def _same_value(shown: str, raw: str) -> bool:
    """Whether the value quoted in an error message is ``raw`` (verbatim or as parsed)."""
    shown = shown.strip("'")
    if shown == raw:
        return True
    try:
        a, b = float(shown), float(raw)
    except ValueError:
        return False
    return a == b or (math.isnan(a) and math.isnan(b))


@pytest.mark.parametrize(
    "var",
    [
        "FAILURE_THRESHOLD",
        "HALF_OPEN_ATTEMPTS",
        "SUCCESS_THRESHOLD",
        "MINIMUM_CALLS",
        "SLIDING_WINDOW_SIZE",
    ],
)
def test_count_variables_must_be_whole(var: str) -> None:
    """Counts like 2.5 are refused rather than truncated."""
    with pytest.raises(ConfigError, match=f"{PREFIX}{var} must be a whole number, got '2.5'"):
        BreakerConfig.from_env({PREFIX + var: "2.5"})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("failure_threshold", 0),
        ("failure_threshold", 2.5),
        ("failure_threshold", True),
        ("failure_threshold", "5"),
        ("reset_timeout", 0),
        ("reset_timeout", -1.0),
        ("reset_timeout", math.inf),
        ("reset_timeout", 10 * 86_400.0),
        ("monitoring_window", math.nan),
        ("half_open_max_attempts", 0),
        ("success_threshold", 0),
        ("half_open_trial_timeout", 0),
        ("half_open_trial_timeout", math.inf),
        ("half_open_trial_timeout", "10"),
    ],
)
def test_breaker_config_validates_fields(field: str, value: Any) -> None:
    """Each field must be a positive, sane number; the error names the field and value."""
    with pytest.raises(ConfigError) as info:
        BreakerConfig(**{field: value})
    assert field in str(info.value)
    assert repr(value) in str(info.value)


def test_retry_policy_defaults_stay_on_the_request_path() -> None:
    """The default policy retries, with short delays, and ends well under a second."""
    policy = RetryPolicy()
    assert policy.attempts >= 2
    assert policy.deadline < 1.0
    assert policy.backoff <= policy.max_backoff < policy.deadline


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("attempts", 0),
        ("attempts", 1.5),
        ("attempts", 1000),
        ("backoff", -0.1),
        ("jitter", math.nan),
        ("deadline", 0),
        ("deadline", "1"),
    ],
)
def test_retry_policy_validates_fields(field: str, value: Any) -> None:
    """Invalid retry settings raise ConfigError naming the field and value."""
    with pytest.raises(ConfigError) as info:
        RetryPolicy(**{field: value})
    assert field in str(info.value)
    assert repr(value) in str(info.value)


def test_retry_policy_max_backoff_not_below_backoff() -> None:
    """max_backoff below backoff is refused."""
    with pytest.raises(ConfigError, match="max_backoff"):
        RetryPolicy(backoff=0.5, max_backoff=0.1)


def test_single_attempt_policy_is_valid() -> None:
    """attempts=1 means no retry and is allowed; zero waits are allowed."""
    policy = RetryPolicy(attempts=1, backoff=0, max_backoff=0, jitter=0)
    assert policy.attempts == 1
