"""redisguard: keep Redis-backed services working when Redis does not."""

from __future__ import annotations

from ._breaker import Breaker, BreakerStats, breakers, forget_breaker, get_breaker
from ._classify import ErrorKind, classify_error
from ._client import (
    AsyncGuardedRedis,
    AsyncGuardedRedisCluster,
    GuardedRedis,
    GuardedRedisCluster,
    aconnect,
    connect,
)
from ._config import BreakerConfig, RetryPolicy
from ._errors import (
    BulkheadFullError,
    CircuitOpenError,
    ConfigError,
    RedisguardError,
    RedisguardWarning,
    RedisUnavailableError,
    SlowCallsError,
    StoreUnavailableError,
    TemporarilyUnavailableError,
)
from ._guard import Failure, current_failure, redis_guarded
from ._host import HostStorage
from ._listeners import LoggingListener
from ._redact import redact_url
from ._telemetry import OpenTelemetryListener
from ._version import __version__

__all__ = [
    "AsyncGuardedRedis",
    "AsyncGuardedRedisCluster",
    "Breaker",
    "BreakerConfig",
    "BreakerStats",
    "BulkheadFullError",
    "CircuitOpenError",
    "ConfigError",
    "ErrorKind",
    "Failure",
    "GuardedRedis",
    "GuardedRedisCluster",
    "HostStorage",
    "LoggingListener",
    "OpenTelemetryListener",
    "RedisUnavailableError",
    "RedisguardError",
    "RedisguardWarning",
    "RetryPolicy",
    "SlowCallsError",
    "StoreUnavailableError",
    "TemporarilyUnavailableError",
    "__version__",
    "aconnect",
    "breakers",
    "classify_error",
    "connect",
    "current_failure",
    "forget_breaker",
    "get_breaker",
    "redact_url",
    "redis_guarded",
]
