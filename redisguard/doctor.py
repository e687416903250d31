"""``redisguard doctor``: read a configuration and a live Redis, report the risks and fixes.

:func:`diagnose` returns a :class:`Report`: findings (each with a severity, the risk in plain
words and the fix) about

* the **client** (redis-py's own retry, ``socket_timeout``, ``socket_connect_timeout``);
* the **breaker** (a ``reset_timeout`` shorter than Redis needs to load its dataset);
* the **server** (eviction policy, persistence, ``timeout``, ``busy-reply-threshold``);
* the **topology** (replicas, Sentinel, Cluster);
* and a **prediction** of what an outage does to worker capacity (:mod:`redisguard._predict`).

It only reads: ``PING``, ``INFO``, ``ROLE``, ``CONFIG GET`` of named parameters (never
``requirepass`` or ``masterauth``), ``SENTINEL MASTER``/``CKQUORUM`` and ``CLUSTER INFO``. A
command the server refuses (ACL ``NOPERM``, ``CONFIG`` renamed away) becomes an ``info``
finding saying what could not be checked. Passwords never reach the report.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import redis
import redis.asyncio
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from ._client import _parse_url, _Target
from ._config import BreakerConfig, RetryPolicy
from ._errors import ConfigError
from ._guard import DEFAULT_RETRY
from ._predict import ClientSettings, Prediction, Workload, predict
from ._redact import redact_text

__all__ = [
    "LOAD_BYTES_PER_SECOND",
    "LOAD_KEYS_PER_SECOND",
    "SEVERITIES",
    "ClientSettings",
    "Finding",
    "Prediction",
    "Report",
    "Workload",
    "diagnose",
]

Severity = Literal["high", "medium", "low", "info"]
#: Severities, worst first. ``--strict`` fails on ``high``.
SEVERITIES: tuple[Severity, ...] = ("high", "medium", "low", "info")
#: How fast redis-server loads an RDB file, measured on a 2-core Linux VM with redis 7.0
#: (``benchmarks/bench_doctor.py load-rate``): the load time is about
#: ``keys / LOAD_KEYS_PER_SECOND + dataset bytes / LOAD_BYTES_PER_SECOND``, rounded down
#: (slower) from 1 M keys of 40 B in 2.0 s and 131 k keys of 1 kB (137 MB) in 0.53 s.
LOAD_KEYS_PER_SECOND = 500_000.0
LOAD_BYTES_PER_SECOND = 400e6
_INSPECT_TIMEOUT = 2.0
# Read by name, one at a time (CONFIG GET takes one pattern before Redis 7); never a secret.
_CONFIG_NAMES = (
    "maxmemory",
    "maxmemory-policy",
    "appendonly",
    "appendfsync",
    "save",
    "timeout",
    "busy-reply-threshold",
    "lua-time-limit",
    "tcp-keepalive",
)
_EVICTING = ("allkeys-lru", "allkeys-lfu", "allkeys-random")


@dataclass(frozen=True)
class Finding:
    """One risk: how bad, what happens, and what to change.

    Attributes:
        code: A stable identifier, e.g. ``"server.noeviction-cache"``.
        severity: ``high``, ``medium``, ``low`` or ``info``.
        title: One line.
        risk: What goes wrong, in plain words.
        fix: What to change.
    """

    code: str
    severity: Severity
    title: str
    risk: str
    fix: str

    @property
    def area(self) -> str:
        """``client``, ``breaker``, ``server``, ``topology`` or ``prediction``."""
        return self.code.partition(".")[0]

    def as_dict(self) -> dict[str, str]:
        """The finding as JSON-ready strings."""
        return {
            "code": self.code,
            "area": self.area,
            "severity": self.severity,
            "title": self.title,
            "risk": self.risk,
            "fix": self.fix,
        }


@dataclass(frozen=True)
class Report:
    """What :func:`diagnose` found.

    Attributes:
        target: The Redis inspected, password redacted (None: no server was inspected).
        findings: Worst first.
        prediction: The outage model's numbers.
        server: What was read from the server (version, role, memory, persistence...).
        reachable: Whether the server answered (False: server checks were skipped).
    """

    target: str | None
    findings: tuple[Finding, ...]
    prediction: Prediction
    server: dict[str, Any] = field(default_factory=dict)
    reachable: bool = True

    @property
    def high_risk(self) -> bool:
        """Whether any finding is ``high`` (``--strict`` exits 1)."""
        return any(f.severity == "high" for f in self.findings)

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {
            "target": self.target,
            "reachable": self.reachable,
            "high_risk": self.high_risk,
            "counts": {s: sum(f.severity == s for f in self.findings) for s in SEVERITIES},
            "findings": [f.as_dict() for f in self.findings],
            "prediction": self.prediction.as_dict(),
            "server": self.server,
        }

    def format_text(self) -> str:
        """The report for people."""
        lines = [f"redisguard doctor: {self.target or '(no server inspected)'}"]
        if self.server:
            shown = ", ".join(f"{k} {_quoted(v)}" for k, v in self.server.items())
            lines.append(f"  {shown}")
        counts = ", ".join(f"{sum(f.severity == s for f in self.findings)} {s}" for s in SEVERITIES)
        lines += ["", f"Findings ({counts}):"]
        if not self.findings:
            lines.append("  none")
        for finding in self.findings:
            lines.append(f"  [{finding.severity.upper()}] {finding.code}: {finding.title}")
            lines.append(f"      risk: {finding.risk}")
            lines.append(f"      fix:  {finding.fix}")
        lines += ["", *_format_prediction(self.prediction)]
        return "\n".join(lines)


def _quoted(value: object) -> str:
    """A setting as redis.conf shows it: an empty value is ``""``."""
    return '""' if value == "" else str(value)


def _format_prediction(p: Prediction) -> list[str]:
    timeout = (
        f"socket_timeout <= {p.suggested_socket_timeout * 1000:.0f} ms"
        if p.suggested_socket_timeout is not None
        else "no socket_timeout keeps up (open sooner)"
    )
    return [
        f"Outage prediction ({p.outage:g} s outage, {p.workers_per_breaker} worker(s) per "
        "breaker; Shopify's circuit-breaker model):",
        f"  healthy:             {p.healthy_per_worker:8.1f} requests/s per worker "
        f"(offered {p.offered_per_worker:.1f})",
        f"  until it opens:      {p.detecting_per_worker:8.1f} requests/s per worker for "
        f"{p.time_to_open:.2f} s ({p.failures_to_open} failures of {p.failed_call * 1000:.0f} ms"
        f"; utilization {p.utilization_detecting:.0%})",
        f"  open (with trials):  {p.open_per_worker:8.1f} requests/s per worker "
        f"({p.trial_loss:.1%} of the time in half-open trials)",
        f"  whole outage:        {p.outage_per_worker:8.1f} requests/s per worker "
        f"(capacity loss {p.capacity_loss:.1%})",
        f"  suggested: {timeout}, failure_threshold <= "
        f"{p.suggested_failure_threshold}, reset_timeout >= {p.suggested_reset_timeout:.2f} s",
    ]


# -- reading the server (read-only commands) -------------------------------------------------
@dataclass
class _Facts:
    """What the server told us; ``refused`` lists what it would not."""

    info: dict[str, Any] = field(default_factory=dict)
    config: dict[str, str] = field(default_factory=dict)
    role: str | None = None
    cluster: dict[str, Any] | None = None
    refused: list[str] = field(default_factory=list)


def _describe(exc: BaseException) -> str:
    return redact_text(f"{type(exc).__name__}: {exc}")


def _ask(facts: _Facts, what: str, fn: Callable[[], Any]) -> Any:
    """Run one read; a refusal (NOPERM, unknown or renamed command) is noted, not raised."""
    try:
        return fn()
    except (redis.exceptions.NoPermissionError, redis.exceptions.ResponseError) as exc:
        facts.refused.append(f"{what} ({_describe(exc)})")
        return None


def _command(client: Any, *args: Any) -> Any:
    """``client.execute_command(*args)`` (untyped in redis-py)."""
    return client.execute_command(*args)


def _cluster_info(client: Any) -> dict[str, Any]:
    reply = _command(client, "CLUSTER INFO")
    if isinstance(reply, dict):
        return reply
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    pairs = (line.partition(":") for line in text.splitlines() if ":" in line)
    return {key: value.strip() for key, _, value in pairs}


def _read(client: Any) -> _Facts:
    facts = _Facts()
    info = _ask(facts, "INFO", lambda: client.info("everything"))
    facts.info = dict(info or {})
    role = _ask(facts, "ROLE", lambda: _command(client, "ROLE"))
    if role:
        first = role[0]
        facts.role = first.decode() if isinstance(first, bytes) else str(first)
    elif facts.info.get("role"):
        facts.role = str(facts.info["role"])
    for name in _CONFIG_NAMES:
        try:
            reply = client.config_get(name)
        except (redis.exceptions.NoPermissionError, redis.exceptions.ResponseError) as exc:
            facts.refused.append(f"CONFIG GET ({_describe(exc)})")
            break  # renamed or forbidden: the other names fail the same way
        for key, value in (reply or {}).items():
            k = key.decode() if isinstance(key, bytes) else str(key)
            v = value.decode() if isinstance(value, bytes) else str(value)
            facts.config[k] = v
    if facts.info.get("cluster_enabled"):
        facts.cluster = _ask(facts, "CLUSTER INFO", lambda: _cluster_info(client))
    return facts


def _inspection_client(target: _Target, url: str) -> redis.Redis:
    """A plain redis-py client for the inspection: short timeouts, its retry off."""
    retry = Retry(NoBackoff(), 0)
    options: dict[str, Any] = {
        "socket_timeout": _INSPECT_TIMEOUT,
        "socket_connect_timeout": _INSPECT_TIMEOUT,
        "retry": retry,
    }
    if target.kind == "cluster":
        host, port = target.nodes[0]
        return redis.Redis(
            host=host,
            port=port,
            username=target.username,
            password=target.password,
            ssl=url.startswith("rediss"),
            **options,
        )
    return redis.Redis.from_url(url, **options)


# -- findings ------------------------------------------------------------------------------
def _client_findings(settings: ClientSettings, retry: RetryPolicy | None) -> Iterator[Finding]:
    deadline = retry.deadline if retry is not None else None
    if settings.redis_py_retries > 0:
        yield Finding(
            "client.redis-py-retry",
            "high",
            f"redis-py's own retry is on ({settings.redis_py_retries} retries)",
            "redis-py retries under the guard, so one failed call to a paused Redis blocks "
            f"{settings.redis_py_retries + 1} x socket_timeout before the guard even sees it, "
            "and the breaker opens that much later.",
            "Build the client with redisguard.connect() (its retry is off), or pass "
            "retry=Retry(NoBackoff(), 0) and leave retrying to @redis_guarded(retry=...).",
        )
    if settings.socket_timeout is None:
        yield Finding(
            "client.socket-timeout-missing",
            "high",
            "no socket_timeout",
            "A paused or blackholed Redis blocks each call until TCP gives up (about 15 "
            "minutes on Linux): every worker hangs and the breaker never sees a failure.",
            "Set socket_timeout a few times above your Redis p99 latency, at most the "
            f"guard's deadline ({deadline if deadline is not None else 0.5:g} s); "
            "redisguard.connect() uses 0.25 s.",
        )
    elif deadline is not None and settings.socket_timeout > deadline:
        yield Finding(
            "client.socket-timeout-over-deadline",
            "high",
            f"socket_timeout {settings.socket_timeout:g} s is longer than the guard's "
            f"deadline {deadline:g} s",
            "A sync call cannot be cut at the deadline: each call to a dead Redis blocks "
            f"{settings.socket_timeout:g} s, not {deadline:g} s, and retries never fit.",
            f"Set socket_timeout <= {deadline:g} s (or raise RetryPolicy.deadline knowingly).",
        )
    if settings.socket_connect_timeout is None:
        yield Finding(
            "client.connect-timeout-missing",
            "medium" if settings.socket_timeout is not None else "high",
            "no socket_connect_timeout",
            "redis-py then uses socket_timeout for connecting"
            + (
                ", which is unset too: a connect to an unreachable host waits for the "
                "kernel (minutes)."
                if settings.socket_timeout is None
                else "; it is easy to lose when socket_timeout is raised for slow commands."
            ),
            "Set socket_connect_timeout explicitly (redisguard.connect() uses 0.25 s).",
        )


def _load_seconds(info: dict[str, Any]) -> tuple[float, int, int]:
    keys = sum(
        int(v.get("keys", 0)) for k, v in info.items() if k.startswith("db") and isinstance(v, dict)
    )
    dataset = int(info.get("used_memory_dataset", info.get("used_memory", 0)) or 0)
    return keys / LOAD_KEYS_PER_SECOND + dataset / LOAD_BYTES_PER_SECOND, keys, dataset


def _persists(config: dict[str, str], info: dict[str, Any]) -> bool:
    save = config.get("save")
    aof = config.get("appendonly", "yes" if info.get("aof_enabled") else "no")
    return aof == "yes" or bool(save and save.strip())


def _breaker_findings(
    config: BreakerConfig, facts: _Facts, load_seconds: float, keys: int, dataset: int
) -> Iterator[Finding]:
    if not facts.info or not _persists(facts.config, facts.info):
        return
    if load_seconds > config.reset_timeout:
        yield Finding(
            "breaker.reset-before-loaded",
            "medium",
            f"reset_timeout {config.reset_timeout:g} s is shorter than the ~{load_seconds:.1f} s "
            "Redis needs to load its dataset",
            f"After a restart Redis answers -LOADING for about {load_seconds:.1f} s ({keys} keys, "
            f"{dataset / 1e6:.0f} MB): the breaker half-opens "
            f"{int(load_seconds // config.reset_timeout)} time(s) during the load, each round "
            "of trial calls fails and it flaps open again, alerting on every flap.",
            f"Set reset_timeout >= {math.ceil(load_seconds)} s "
            "(REDIS_CIRCUIT_BREAKER_RESET_TIMEOUT in ms); the prober closes the breaker as "
            "soon as Redis answers, so a longer reset_timeout does not slow recovery.",
        )


def _server_findings(facts: _Facts, workload: Workload, deadline: float) -> Iterator[Finding]:
    config, info = facts.config, facts.info
    policy = config.get("maxmemory-policy")
    maxmemory = int(config.get("maxmemory", "0") or 0)
    if workload.use == "cache" and policy == "noeviction":
        yield Finding(
            "server.noeviction-cache",
            "high",
            "maxmemory-policy noeviction on a cache",
            "When memory fills up, Redis refuses every write with -OOM instead of evicting "
            "old keys: the cache stops caching and the write side of the breaker opens.",
            "CONFIG SET maxmemory-policy allkeys-lru (or allkeys-lfu), and set maxmemory "
            "below the memory the host can give Redis.",
        )
    elif workload.use == "cache" and maxmemory == 0 and policy is not None:
        yield Finding(
            "server.no-maxmemory",
            "low",
            "no maxmemory on a cache",
            "Without a limit the eviction policy never applies: the cache grows until the "
            "kernel's OOM killer ends Redis.",
            "Set maxmemory to what the host can give Redis (e.g. 75 % of its memory).",
        )
    if workload.use == "store" and policy in _EVICTING:
        yield Finding(
            "server.evicting-store",
            "high",
            f"maxmemory-policy {policy} on a store",
            "When memory fills up, Redis silently deletes keys (sessions, counters) that "
            "were acknowledged to your users.",
            "Use noeviction (writes then fail loudly, and the guard falls back), or "
            "volatile-* with TTLs only on disposable keys.",
        )
    if workload.use == "store" and info:
        yield from _persistence_findings(config, info)
    timeout = int(config.get("timeout", "0") or 0)
    if timeout > 0:
        yield Finding(
            "server.idle-timeout",
            "medium" if timeout < 300 else "low",
            f"timeout {timeout} s closes idle connections",
            f"Redis closes a client connection idle for {timeout} s; the next call on that "
            "pooled connection fails, and a quiet worker counts it as a breaker failure.",
            "CONFIG SET timeout 0 (use tcp-keepalive to find dead peers), or set the "
            "client's health_check_interval below it.",
        )
    busy_text = config.get("busy-reply-threshold", config.get("lua-time-limit"))
    if busy_text is not None:
        busy = int(busy_text) / 1000
        if 0 < busy < 0.5:
            yield Finding(
                "server.busy-reply-threshold-low",
                "medium",
                f"busy-reply-threshold {busy * 1000:.0f} ms",
                f"A script or function running longer than {busy * 1000:.0f} ms makes Redis "
                "answer -BUSY to every client: one slow script looks like an outage and "
                "opens every breaker.",
                "Keep the default 5000 ms, and keep scripts short (or move them off the "
                "request path).",
            )
        elif busy > deadline:
            yield Finding(
                "server.busy-reply-threshold-long",
                "info",
                f"busy-reply-threshold {busy:g} s is above the guard's deadline",
                f"A runaway script blocks Redis for {busy:g} s before anyone gets -BUSY: "
                "calls time out first and the breaker opens on timeouts.",
                "Nothing to change if your scripts are short; SCRIPT KILL ends a runaway one.",
            )


def _persistence_findings(config: dict[str, str], info: dict[str, Any]) -> Iterator[Finding]:
    aof = config.get("appendonly", "yes" if info.get("aof_enabled") else "no") == "yes"
    save = (config.get("save") or "").strip()
    if not aof and not save:
        yield Finding(
            "server.no-persistence",
            "high",
            'no persistence (appendonly no, save "")',
            "A restart or crash loses every key: all sessions and counters acknowledged to "
            "users are gone.",
            "CONFIG SET appendonly yes (appendfsync everysec or always), or replicate to a "
            "replica that persists.",
        )
    elif not aof:
        yield Finding(
            "server.snapshot-only",
            "high",
            f'snapshots only (save "{save}", appendonly no)',
            "A crash loses every write since the last snapshot: minutes of acknowledged writes.",
            "CONFIG SET appendonly yes with appendfsync everysec (at most ~1 s lost) or "
            "always (nothing lost).",
        )
    else:
        fsync = config.get("appendfsync")
        if fsync == "no":
            yield Finding(
                "server.appendfsync-no",
                "medium",
                "appendfsync no",
                "The kernel flushes the AOF when it likes (up to ~30 s): a host crash loses "
                "that much acknowledged data.",
                "CONFIG SET appendfsync everysec (or always).",
            )
        elif fsync == "everysec":
            yield Finding(
                "server.appendfsync-everysec",
                "info",
                "appendfsync everysec",
                "A host crash can lose up to about a second of acknowledged writes.",
                "Use appendfsync always if no acknowledged write may be lost (slower writes).",
            )


def _topology_findings(facts: _Facts, workload: Workload) -> Iterator[Finding]:
    info = facts.info
    role = facts.role
    if role in ("master", "primary") and info:
        replicas = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
        if not replicas and int(info.get("connected_slaves", 0) or 0) == 0:
            yield Finding(
                "topology.no-replica",
                "medium" if workload.use == "store" else "info",
                "no replica",
                "One process holds the only copy: a host failure loses the data, and "
                "nothing can take over while Redis restarts.",
                "Add a replica (and Sentinel, or a managed failover) for automatic failover.",
            )
        for replica in replicas:
            where = f"{replica.get('ip')}:{replica.get('port')}"
            if replica.get("state") != "online":
                yield Finding(
                    "topology.replica-not-online",
                    "medium",
                    f"replica {where} is {replica.get('state')}",
                    "It is not receiving writes: a failover to it would lose data.",
                    "Check its log and its link to the master.",
                )
            elif int(replica.get("lag", 0) or 0) > 10:
                yield Finding(
                    "topology.replica-lag",
                    "medium",
                    f"replica {where} lags {replica.get('lag')} s",
                    "A failover now would lose that many seconds of writes.",
                    "Check the replica's network and load.",
                )
    elif role in ("slave", "replica") and info:
        link = info.get("master_link_status")
        if link != "up":
            yield Finding(
                "topology.master-link-down",
                "high",
                f"this replica's link to its master is {link}",
                "Its data is stale and getting staler; a failover to it loses writes.",
                "Check the master and the replication link.",
            )
        yield Finding(
            "topology.connected-to-replica",
            "medium",
            "the URL points at a replica",
            "Writes get -READONLY (the guard treats them as refused); reads may be stale.",
            "Point writers at the master, or at Sentinel (redis+sentinel://) so failovers "
            "are followed.",
        )
    cluster = facts.cluster
    if cluster:
        state = cluster.get("cluster_state")
        assigned = int(cluster.get("cluster_slots_assigned", 0) or 0)
        if state != "ok" or assigned < 16384:
            yield Finding(
                "topology.cluster-not-ok",
                "high",
                f"cluster_state {state}, {assigned}/16384 slots assigned",
                "Keys in unassigned or failed slots are unavailable (-CLUSTERDOWN).",
                "Assign every slot (redis-cli --cluster fix) and replace failed nodes.",
            )
        failing = int(cluster.get("cluster_slots_pfail", 0) or 0) + int(
            cluster.get("cluster_slots_fail", 0) or 0
        )
        if failing:
            yield Finding(
                "topology.cluster-slots-failing",
                "medium",
                f"{failing} slots on failing nodes",
                "Calls to those slots time out until a replica takes over.",
                "Check the failing nodes (CLUSTER NODES).",
            )


def _sentinel_findings(target: _Target) -> tuple[list[Finding], str | None]:
    """Ask each Sentinel about the service; return the findings and the master address."""
    findings: list[Finding] = []
    master: str | None = None
    answered = 0
    for host, port in target.nodes:
        node = redis.Redis(
            host=host,
            port=port,
            socket_timeout=_INSPECT_TIMEOUT,
            socket_connect_timeout=_INSPECT_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            state: Any = node.sentinel_master(target.service_name)
            answered += 1
            master = f"{state.get('ip')}:{state.get('port')}"
            flags = str(state.get("flags", ""))
            if "down" in flags:
                findings.append(
                    Finding(
                        "topology.sentinel-master-down",
                        "high",
                        f"Sentinel {host}:{port} sees the master as {flags}",
                        "Writes fail until a failover completes.",
                        "Check the master; Sentinel promotes a replica once the quorum agrees.",
                    )
                )
            try:
                _command(node, "SENTINEL CKQUORUM", target.service_name)
            except redis.exceptions.ResponseError as exc:
                findings.append(
                    Finding(
                        "topology.sentinel-no-quorum",
                        "high",
                        f"Sentinel {host}:{port} cannot reach a quorum",
                        f"No automatic failover is possible: {_describe(exc)}",
                        "Run at least 3 Sentinels on separate hosts and check they see each other.",
                    )
                )
            if int(state.get("num-other-sentinels", 0) or 0) + 1 < 3:
                findings.append(
                    Finding(
                        "topology.few-sentinels",
                        "medium",
                        f"{int(state.get('num-other-sentinels', 0) or 0) + 1} Sentinel(s) "
                        "watch the master",
                        "With fewer than 3, losing one Sentinel host can block failover.",
                        "Run at least 3 Sentinels on separate hosts.",
                    )
                )
            break
        except redis.RedisError as exc:
            findings.append(
                Finding(
                    "topology.sentinel-unreachable",
                    "medium",
                    f"Sentinel {host}:{port} did not answer",
                    f"Clients that list it waste a connect timeout on it: {_describe(exc)}",
                    "Remove it from the URL, or bring it back.",
                )
            )
        finally:
            node.close()
    if not answered:
        findings.append(
            Finding(
                "topology.no-sentinel",
                "high",
                "no Sentinel answered",
                "Clients cannot find the master at all.",
                "Check the Sentinel addresses and that they run.",
            )
        )
    return findings, master


def _prediction_findings(p: Prediction, config: BreakerConfig) -> Iterator[Finding]:
    if p.utilization_healthy > 1:
        yield Finding(
            "prediction.overloaded-when-healthy",
            "info",
            "the workload as given overloads the workers even with Redis healthy",
            f"Each worker can serve {p.healthy_per_worker:.1f} requests/s and receives "
            f"{p.offered_per_worker:.1f}: the outage numbers below are not meaningful.",
            "Check the rate, workers and request time given to doctor.",
        )
        return
    if p.utilization_detecting > 1:
        severity: Severity = (
            "high" if p.time_to_open >= 5 else "medium" if p.time_to_open >= 1 else "low"
        )
        yield Finding(
            "prediction.overload-before-open",
            severity,
            f"workers fall behind for {p.time_to_open:.2f} s before the breaker opens",
            f"Each worker can serve {p.detecting_per_worker:.1f} requests/s while calls hit the "
            f"timeout but receives {p.offered_per_worker:.1f}: about "
            f"{p.backlog_per_worker:.0f} requests queue per worker before the breaker opens.",
            (
                f"Lower socket_timeout (<= {_ms(p.suggested_socket_timeout)}) or "
                if p.suggested_socket_timeout is not None
                else "No socket_timeout keeps up with this traffic: make the breaker open "
                "sooner: lower "
            )
            + f"failure_threshold (<= {p.suggested_failure_threshold}), or share the breaker "
            "between workers (threads of one process, or BreakerConfig(shared=True)).",
        )
    if p.utilization_open > 1:
        yield Finding(
            "prediction.overload-while-open",
            "high",
            "the workers cannot keep up even with the breaker open",
            f"Half-open trials take {p.trial_loss:.0%} of the workers' time: each serves "
            f"{p.open_per_worker:.1f} requests/s of the {p.offered_per_worker:.1f} it receives.",
            f"Raise reset_timeout (>= {p.suggested_reset_timeout:.1f} s) or lower "
            "half_open_max_attempts.",
        )
    elif p.trial_loss > 0.05:
        yield Finding(
            "prediction.trial-loss",
            "medium",
            f"half-open trials take {p.trial_loss:.0%} of worker time during an outage",
            f"Every {config.reset_timeout:g} s each breaker lets trial calls wait a full "
            "timeout on the dead Redis.",
            f"Raise reset_timeout to >= {p.suggested_reset_timeout:.1f} s (the prober still "
            "closes the breaker as soon as Redis answers).",
        )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _order(findings: Sequence[Finding]) -> tuple[Finding, ...]:
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    return tuple(sorted(findings, key=lambda f: (rank[f.severity], f.code)))


def _server_summary(facts: _Facts, latency: float) -> dict[str, Any]:
    info = facts.info
    summary: dict[str, Any] = {
        "version": info.get("redis_version"),
        "role": facts.role,
        "keys": _load_seconds(info)[1] if info else None,
        "used_memory": info.get("used_memory"),
        "ping_ms": round(latency * 1000, 3),
    }
    for name in ("maxmemory-policy", "appendonly", "appendfsync", "save", "timeout"):
        if name in facts.config:
            summary[name] = facts.config[name]
    if facts.cluster:
        summary["cluster_state"] = facts.cluster.get("cluster_state")
    return {k: v for k, v in summary.items() if v is not None}


def _client_target(client: Any) -> str:
    """Where a client's pool connects (no password): host:port, a socket, or a service."""
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None) or {}
    if "host" in kwargs:
        return f"{kwargs['host']}:{kwargs.get('port', 6379)}"
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    service = getattr(pool, "service_name", None)
    return f"Sentinel service {service}" if service else "?"


@dataclass
class _Inspection:
    facts: _Facts = field(default_factory=_Facts)
    findings: list[Finding] = field(default_factory=list)
    target: str | None = None
    reachable: bool = True
    latency: float = 0.0005


def _inspect(url: str | None, client: Any) -> _Inspection:
    """Read the server at ``url`` (or through ``client``); never raises for a dead server."""
    out = _Inspection()
    inspector: Any = None
    owned = False
    if url is not None:
        target = _parse_url(url)
        out.target = target.shown
        inspect_url = url
        if target.kind == "sentinel":
            sentinel_findings, master = _sentinel_findings(target)
            out.findings += sentinel_findings
            if master is not None:
                auth = f"{target.username or ''}:{target.password}@" if target.password else ""
                scheme = "rediss" if url.startswith("rediss") else "redis"
                inspect_url = f"{scheme}://{auth}{master}/{target.db}"
        if target.kind != "sentinel" or inspect_url != url:
            inspector, owned = _inspection_client(target, inspect_url), True
    elif client is not None:
        if isinstance(client, redis.asyncio.Redis | redis.asyncio.RedisCluster):
            raise ConfigError(
                f"cannot inspect Redis through an asyncio client ({type(client).__name__}): "
                "pass its URL too, diagnose(url, client=client); the client's settings are "
                "still read from it"
            )
        inspector = client
        out.target = _client_target(client)
    if inspector is None:
        return out
    try:
        inspector.ping()  # connects; the next round trips measure the latency
        rounds = []
        for _ in range(3):
            started = time.perf_counter()
            inspector.ping()
            rounds.append(time.perf_counter() - started)
        out.latency = min(rounds)
        out.facts = _read(inspector)
    except redis.RedisError as exc:
        out.reachable = False
        out.findings.append(
            Finding(
                "server.unreachable",
                "high",
                "Redis did not answer",
                f"Server checks were skipped: {_describe(exc)}",
                "Check the URL, the network and that Redis runs; then run doctor again.",
            )
        )
    finally:
        if owned:
            inspector.close()
    return out


def diagnose(
    url: str | None = None,
    *,
    client: Any = None,
    config: BreakerConfig | None = None,
    retry: RetryPolicy | None = DEFAULT_RETRY,
    workload: Workload | None = None,
    client_settings: ClientSettings | None = None,
    outage: float = 30.0,
) -> Report:
    """Inspect a configuration and (read-only) a live Redis; report risks and fixes.

    Args:
        url: The Redis to inspect (``redis://``, ``rediss://``, ``unix://``,
            ``redis+sentinel://``, ``redis+cluster://``). None with ``client=`` inspects
            through that client; None without a client checks the configuration only.
        client: Your application's redis-py client: its timeouts and retry are checked,
            and (without ``url``) the server is read through it.
        config: The breaker config; default ``BreakerConfig.from_env()``.
        retry: The guard's retry policy (``None``: one attempt); default ``RetryPolicy()``.
        workload: The traffic, for the outage prediction; default ``Workload()``.
        client_settings: The client's timeouts when no ``client`` is given; default those
            of ``redisguard.connect()`` (0.25 s, redis-py's retry off).
        outage: The outage length the prediction models, seconds.

    Returns:
        A :class:`Report`; ``report.high_risk`` says whether ``--strict`` would fail.

    Raises:
        ConfigError: an argument is invalid (the URL's password is redacted).
    """
    if client is not None and client_settings is not None:
        raise ConfigError("give client= or client_settings=, not both")
    config = BreakerConfig.from_env() if config is None else config
    workload = Workload() if workload is None else workload
    settings = client_settings
    if settings is None:
        settings = ClientSettings.from_client(client) if client is not None else ClientSettings()
    findings: list[Finding] = list(_client_findings(settings, retry))
    inspection = _inspect(url, client)
    findings += inspection.findings
    facts, latency = inspection.facts, inspection.latency
    prediction = predict(
        workload, settings, config, retry, outage=outage, call_latency=min(latency, 0.05)
    )
    if facts.info:
        load_seconds, keys, dataset = _load_seconds(facts.info)
        findings += _breaker_findings(config, facts, load_seconds, keys, dataset)
    findings += _server_findings(
        facts, workload, retry.deadline if retry is not None else settings.attempt_time
    )
    findings += _topology_findings(facts, workload)
    for what in facts.refused:
        findings.append(
            Finding(
                "server.not-checked",
                "info",
                f"could not read {what.partition(' (')[0]}",
                f"The server refused {what}; the checks that need it were skipped.",
                "Run doctor as a user allowed INFO, ROLE and CONFIG GET (read-only), e.g. "
                "ACL SETUSER doctor on >... +info +role +config|get +ping.",
            )
        )
    findings += _prediction_findings(prediction, config)
    return Report(
        target=inspection.target,
        findings=_order(findings),
        prediction=prediction,
        server=_server_summary(facts, latency) if facts.info else {},
        reachable=inspection.reachable,
    )
