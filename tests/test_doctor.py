"""``redisguard doctor`` against real redis-servers configured well and badly."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.sentinel
from _bench import load_benchmark

import redisguard
from redisguard import BreakerConfig, ConfigError, RetryPolicy
from redisguard._cli import main
from redisguard._guard import DEFAULT_RETRY
from redisguard._predict import NO_TIMEOUT_HANG, attempts_per_failed_call, failures_to_open, predict
from redisguard.doctor import ClientSettings, Report, Workload, diagnose
from redisguard.testing import ClusterTopology, RedisServer, SentinelTopology, free_port

Factory = Callable[..., RedisServer]
PASSWORD = "pw-Doc7-never-printed"
WELL = ["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"]
# The commands doctor may send: reads, and the connection handshake.
READ_ONLY = {"ping", "info", "role", "config|get", "hello", "auth", "client|setinfo"}


def codes(report: Report) -> set[str]:
    """The finding codes of a report."""
    return {finding.code for finding in report.findings}


def test_well_configured_cache_has_no_high_risk(redis_server_factory: Factory) -> None:
    """A cache with an eviction policy and redisguard.connect() defaults has no high finding."""
    server = redis_server_factory(args=WELL)
    report = diagnose(server.url, config=BreakerConfig(), workload=Workload(use="cache"))
    assert report.reachable
    assert not report.high_risk, report.format_text()
    assert report.server["role"] == "master"
    assert report.server["maxmemory-policy"] == "allkeys-lru"


def test_well_configured_store_has_no_high_risk(redis_server_factory: Factory) -> None:
    """A store with appendfsync always and noeviction has no high finding."""
    server = redis_server_factory(appendonly=True, args=["--maxmemory-policy", "noeviction"])
    report = diagnose(server.url, config=BreakerConfig(), workload=Workload(use="store"))
    assert not report.high_risk, report.format_text()
    assert "server.noeviction-cache" not in codes(report)
    assert "topology.no-replica" in codes(report)  # medium for a store


def test_noeviction_cache_is_high_risk(redis_server_factory: Factory) -> None:
    """maxmemory-policy noeviction on a cache is a high finding that names the fix."""
    server = redis_server_factory(args=["--maxmemory-policy", "noeviction"])
    report = diagnose(server.url, config=BreakerConfig(), workload=Workload(use="cache"))
    finding = next(f for f in report.findings if f.code == "server.noeviction-cache")
    assert finding.severity == "high"
    assert "allkeys-lru" in finding.fix
    assert report.high_risk


def test_evicting_store_is_high_risk(redis_server_factory: Factory) -> None:
    """An allkeys-* policy on a store silently deletes acknowledged keys."""
    server = redis_server_factory(appendonly=True, args=WELL)
    report = diagnose(server.url, config=BreakerConfig(), workload=Workload(use="store"))
    assert "server.evicting-store" in codes(report)


def test_store_without_persistence_loses_writes(redis_server_factory: Factory) -> None:
    """appendonly no and save "" on a store: every key is lost on restart."""
    server = redis_server_factory(args=WELL)  # the toolkit's default: save "", appendonly no
    report = diagnose(server.url, config=BreakerConfig(), workload=Workload(use="store"))
    finding = next(f for f in report.findings if f.code == "server.no-persistence")
    assert finding.severity == "high"
    # The same server as a cache: losing keys is fine.
    cache = diagnose(server.url, config=BreakerConfig(), workload=Workload(use="cache"))
    assert "server.no-persistence" not in codes(cache)


def test_snapshots_only_store(redis_server_factory: Factory) -> None:
    """RDB snapshots without an AOF lose the writes since the last snapshot."""
    server = redis_server_factory(args=["--save", "900", "1"])  # one "900 1" needs Redis 7
    report = diagnose(server.url, config=BreakerConfig(), workload=Workload(use="store"))
    assert "server.snapshot-only" in codes(report)


def test_low_busy_reply_threshold_and_idle_timeout(redis_server_factory: Factory) -> None:
    """A 100 ms busy-reply-threshold and an idle timeout are reported with their fixes."""
    # lua-time-limit: busy-reply-threshold's name before Redis 7.0 (an alias since)
    server = redis_server_factory(args=[*WELL, "--lua-time-limit", "100", "--timeout", "60"])
    report = diagnose(server.url, config=BreakerConfig())
    busy = next(f for f in report.findings if f.code == "server.busy-reply-threshold-low")
    assert busy.severity == "medium"
    assert "100 ms" in busy.title
    idle = next(f for f in report.findings if f.code == "server.idle-timeout")
    assert "60 s" in idle.title


def test_password_is_never_printed(
    redis_server_factory: Factory, capsys: pytest.CaptureFixture[str]
) -> None:
    """The password appears in no report, text or JSON, reachable or not."""
    server = redis_server_factory(password=PASSWORD, args=WELL)
    report = diagnose(server.url, config=BreakerConfig())
    assert report.reachable
    assert PASSWORD not in report.format_text()
    assert PASSWORD not in json.dumps(report.as_dict())
    assert "***" in (report.target or "")
    wrong = server.url.replace(PASSWORD, PASSWORD + "x")
    bad = diagnose(wrong, config=BreakerConfig())
    assert not bad.reachable
    assert PASSWORD not in bad.format_text()
    for argv in (["doctor", "--url", server.url], ["doctor", "--url", wrong, "--json"]):
        main(argv)
        captured = capsys.readouterr()
        assert PASSWORD not in captured.out + captured.err


@pytest.mark.requires_redis(7, 0, reason="commandstats per subcommand, e.g. cmdstat_config|get")
def test_doctor_only_reads(redis_server_factory: Factory) -> None:
    """doctor sends only read commands: the dataset's change counter does not move."""
    server = redis_server_factory(password=PASSWORD, args=WELL)
    admin = redis.Redis(**server.client_kwargs())
    admin.set("k", "v")
    admin.config_resetstat()
    dirty = admin.info("persistence")["rdb_changes_since_last_save"]
    diagnose(server.url, config=BreakerConfig())
    stats = admin.info("commandstats")
    sent = {name.removeprefix("cmdstat_") for name in stats} - {"config|resetstat"}
    assert sent <= READ_ONLY | {"info"}, sent
    assert "config|get" in sent
    assert admin.info("persistence")["rdb_changes_since_last_save"] == dirty
    admin.close()


def test_replica_and_master(redis_server_factory: Factory) -> None:
    """A replica is flagged as such; its master then has a replica online."""
    master = redis_server_factory(args=WELL)
    replica = redis_server_factory(args=[*WELL, "--replicaof", master.host, str(master.port)])
    client = redis.Redis(**replica.client_kwargs())
    deadline = time.monotonic() + 10
    while client.info("replication").get("master_link_status") != "up":
        assert time.monotonic() < deadline, "the replica did not sync"
        time.sleep(0.05)
    client.close()
    on_master_side = redis.Redis(**master.client_kwargs())
    deadline = time.monotonic() + 10
    # The master says "online" a moment after the replica says its link is up.
    while on_master_side.info("replication").get("slave0", {}).get("state") != "online":
        assert time.monotonic() < deadline, "the master does not see its replica online"
        time.sleep(0.05)
    on_master_side.close()
    on_replica = diagnose(replica.url, config=BreakerConfig())
    assert on_replica.server["role"] == "slave"
    assert "topology.connected-to-replica" in codes(on_replica)
    assert "topology.master-link-down" not in codes(on_replica)
    on_master = diagnose(master.url, config=BreakerConfig(), workload=Workload(use="store"))
    assert "topology.no-replica" not in codes(on_master)
    assert "topology.replica-not-online" not in codes(on_master)
    replica.stop()
    deadline = time.monotonic() + 10
    while True:  # the master notices the replica is gone
        report = diagnose(master.url, config=BreakerConfig(), workload=Workload(use="store"))
        if "topology.no-replica" in codes(report) or "topology.replica-not-online" in codes(report):
            break
        assert time.monotonic() < deadline, report.format_text()
        time.sleep(0.1)


def test_sentinel_topology(redis_sentinel: SentinelTopology) -> None:
    """Through Sentinel: one Sentinel is too few; the master it names is inspected."""
    report = diagnose(redis_sentinel.url, config=BreakerConfig(), workload=Workload(use="store"))
    assert report.reachable
    assert "topology.few-sentinels" in codes(report)
    assert "topology.sentinel-no-quorum" not in codes(report)
    assert report.server["role"] == "master"
    assert "topology.no-replica" not in codes(report)  # the topology has one replica
    port = free_port()
    dead = f"redis+sentinel://127.0.0.1:{port}/{redis_sentinel.service_name}"
    report = diagnose(dead, config=BreakerConfig())
    assert {"topology.sentinel-unreachable", "topology.no-sentinel"} <= codes(report)


def test_cluster_state(redis_cluster_factory: Callable[..., ClusterTopology]) -> None:
    """A healthy cluster has no cluster finding; its state is read with CLUSTER INFO."""
    cluster = redis_cluster_factory()
    report = diagnose(cluster.url, config=BreakerConfig())
    assert report.reachable, report.format_text()
    assert not {c for c in codes(report) if c.startswith("topology.cluster")}
    assert report.server["cluster_state"] == "ok"


def test_cluster_without_slots_is_high_risk(redis_server_factory: Factory) -> None:
    """A cluster node with no slots assigned is down for every key."""
    node = redis_server_factory(args=["--cluster-enabled", "yes", *WELL])
    report = diagnose(node.url, config=BreakerConfig())
    finding = next(f for f in report.findings if f.code == "topology.cluster-not-ok")
    assert finding.severity == "high"
    assert "0/16384" in finding.title


def test_config_renamed_away_is_reported_not_raised(redis_server_factory: Factory) -> None:
    """With CONFIG renamed away, doctor says what it could not check and goes on."""
    server = redis_server_factory(args=["--rename-command", "CONFIG", ""])
    report = diagnose(server.url, config=BreakerConfig())
    assert report.reachable
    finding = next(f for f in report.findings if f.code == "server.not-checked")
    assert finding.severity == "info"
    assert "CONFIG GET" in finding.title
    assert report.server["role"] == "master"


def test_acl_user_without_config_permission(redis_server_factory: Factory) -> None:
    """An ACL user refused CONFIG (NOPERM) still gets the checks INFO and ROLE allow."""
    server = redis_server_factory(args=WELL)
    admin = redis.Redis(**server.client_kwargs())
    admin.acl_setuser(
        "doc", enabled=True, passwords=[f"+{PASSWORD}"], commands=["+ping", "+info", "+role"]
    )
    admin.close()
    url = f"redis://doc:{PASSWORD}@{server.host}:{server.port}/0"
    report = diagnose(url, config=BreakerConfig())
    assert report.reachable
    assert "server.not-checked" in codes(report)
    assert PASSWORD not in report.format_text()


def test_unreachable_server_is_a_high_finding() -> None:
    """A port nobody listens on gives a report with server.unreachable, not an exception."""
    report = diagnose(f"redis://127.0.0.1:{free_port()}/0", config=BreakerConfig())
    assert not report.reachable
    assert "server.unreachable" in codes(report)


def test_reset_timeout_shorter_than_load(redis_server_factory: Factory) -> None:
    """A persisted dataset takes time to load; a shorter reset_timeout is flagged."""
    server = redis_server_factory(appendonly=True, args=WELL)
    admin = redis.Redis(**server.client_kwargs())
    pipe = admin.pipeline(transaction=False)
    for i in range(20_000):
        pipe.set(f"k:{i}", "v")
    pipe.execute()
    admin.close()
    short = diagnose(server.url, config=BreakerConfig(reset_timeout=0.01))
    finding = next(f for f in short.findings if f.code == "breaker.reset-before-loaded")
    assert "20000 keys" in finding.risk
    assert "breaker.reset-before-loaded" not in codes(diagnose(server.url, config=BreakerConfig()))


def test_client_findings_from_a_plain_redis_py_client(redis_server_factory: Factory) -> None:
    """A redis.Redis with its own retry on (redis-py 6+'s default; 5.x has none unless asked,
    so it is asked for here) and a 5 s timeout over the deadline."""
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    server = redis_server_factory(args=WELL)
    plain = redis.Redis(
        **server.client_kwargs(), socket_timeout=5, retry=Retry(ExponentialBackoff(), 3)
    )
    report = diagnose(client=plain, config=BreakerConfig())
    assert {"client.redis-py-retry", "client.socket-timeout-over-deadline"} <= codes(report)
    assert report.server["role"] == "master"
    plain.close()
    guarded = redisguard.connect(server.url, prober=False)
    report = diagnose(client=guarded, config=BreakerConfig())
    assert not {c for c in codes(report) if c.startswith("client.")}
    guarded.close()


# -- what the client's connections really use --------------------------------------------
def _used_by(connection: Any) -> tuple[float | None, int]:
    """The socket timeout and the redis-py retry count of a connection redis-py made."""
    retry = connection.retry
    return connection.socket_timeout, int(retry._retries)


def _assert_reports(report: Report, timeout: float | None, retries: int) -> None:
    """The report's client findings and prediction match ``timeout`` and ``retries``."""
    found = {f.code: f for f in report.findings}
    text = report.format_text()
    if timeout is None:
        assert "client.socket-timeout-missing" in found, text
    else:
        assert "client.socket-timeout-missing" not in found, text
        assert "client.connect-timeout-missing" not in found, text
        if timeout > DEFAULT_RETRY.deadline:
            title = found["client.socket-timeout-over-deadline"].title
            assert title.startswith(f"socket_timeout {timeout:g} s "), title
    if retries:
        assert f"({retries} retries)" in found["client.redis-py-retry"].title, text
    else:
        assert "client.redis-py-retry" not in found, text
    hang = NO_TIMEOUT_HANG if timeout is None else timeout
    assert report.prediction.attempt_time == pytest.approx(hang * (1 + retries)), text


@pytest.mark.parametrize(
    "options",
    [{}, {"retry_on_error": [redis.ConnectionError]}, {"single_connection_client": True}],
    ids=["defaults", "retry_on_error", "single-connection"],
)
def test_from_url_client_is_read_as_its_connections_are(
    redis_server_factory: Factory, options: dict[str, Any]
) -> None:
    """redis.Redis.from_url() leaves the timeout and retry out of the pool's settings; its
    connections then use the connection class's defaults (redis-py 6+: a 5 s socket
    timeout), and retry_on_error gives them a retry: doctor reports what they use."""
    server = redis_server_factory(args=WELL)
    client = redis.Redis.from_url(server.url, **options)
    created = client.connection_pool._created_connections
    ClientSettings.from_client(client)  # builds a connection: neither connected nor counted
    assert client.connection_pool._created_connections == created
    assert not client.connection_pool._available_connections
    report = diagnose(client=client, config=BreakerConfig())
    client.ping()
    connection = client.connection or client.connection_pool._available_connections[0]
    timeout, retries = _used_by(connection)
    client.close()
    if options.get("retry_on_error"):
        assert retries == 1  # redis-py's Retry(NoBackoff(), 1) when no retry is given
    _assert_reports(report, timeout, retries)


def test_asyncio_from_url_client_is_read_as_its_connections_are(
    redis_server_factory: Factory,
) -> None:
    """The same for redis.asyncio.Redis.from_url(); the server is read through the URL, and
    without one doctor says it cannot inspect through an asyncio client."""
    server = redis_server_factory(args=WELL)
    client = redis.asyncio.Redis.from_url(server.url, retry_on_error=[redis.ConnectionError])
    report = diagnose(server.url, client=client, config=BreakerConfig())
    assert report.reachable
    assert report.server["role"] == "master"

    async def used() -> tuple[float | None, int]:
        await client.ping()
        found = _used_by(client.connection_pool._available_connections[0])
        await client.aclose()
        return found

    timeout, retries = asyncio.run(used())
    assert retries == 1
    _assert_reports(report, timeout, retries)
    with pytest.raises(ConfigError, match="asyncio client"):
        diagnose(client=redis.asyncio.Redis.from_url(server.url), config=BreakerConfig())


def test_sentinel_client_is_read_as_its_connections_are(redis_sentinel: SentinelTopology) -> None:
    """A redis-py Sentinel master_for() client: its connections' defaults are reported."""
    sentinel = redis.sentinel.Sentinel([redis_sentinel.sentinel_address])
    client = sentinel.master_for(redis_sentinel.service_name)
    report = diagnose(client=client, config=BreakerConfig())
    client.ping()
    timeout, retries = _used_by(client.connection_pool._available_connections[0])
    client.close()
    _assert_reports(report, timeout, retries)


def test_redisguard_connect_is_read_as_its_connections_are(redis_server_factory: Factory) -> None:
    """redisguard.connect(url): 0.25 s and no redis-py retry, as its connections use."""
    server = redis_server_factory(args=WELL)
    client = redisguard.connect(server.url, prober=False)
    report = diagnose(client=client, config=BreakerConfig())
    timeout, retries = _used_by(client.connection_pool._available_connections[0])
    client.close()
    assert (timeout, retries) == (0.25, 0)
    _assert_reports(report, timeout, retries)


def test_unreadable_client_settings_say_why() -> None:
    """A pool whose connection class cannot be built from its settings: a ConfigError that
    names the class and the way out, not a guess."""

    class NeedsToken(redis.Connection):
        def __init__(self, *, token: str, **kwargs: Any) -> None:
            super().__init__(**kwargs)

    pool = redis.ConnectionPool(connection_class=NeedsToken, host="127.0.0.1", port=1)
    client = redis.Redis(connection_pool=pool)
    with pytest.raises(ConfigError, match=r"building a NeedsToken .* failed \(TypeError\)"):
        diagnose(client=client, config=BreakerConfig())
    with pytest.raises(ConfigError, match="client_settings="):
        ClientSettings.from_client(object())


def test_missing_timeouts() -> None:
    """No socket_timeout at all is high; a missing connect timeout alone is medium."""
    report = diagnose(
        client_settings=ClientSettings(socket_timeout=None, socket_connect_timeout=None),
        config=BreakerConfig(),
    )
    severities = {f.code: f.severity for f in report.findings}
    assert severities["client.socket-timeout-missing"] == "high"
    assert severities["client.connect-timeout-missing"] == "high"
    report = diagnose(
        client_settings=ClientSettings(socket_timeout=0.2, socket_connect_timeout=None),
        config=BreakerConfig(),
    )
    assert {f.code: f.severity for f in report.findings}["client.connect-timeout-missing"] == (
        "medium"
    )
    assert report.target is None
    assert report.server == {}


def test_bad_arguments_name_themselves() -> None:
    """Invalid workloads and settings raise ConfigError naming the field."""
    with pytest.raises(ConfigError, match="workers_per_breaker"):
        Workload(workers=2, workers_per_breaker=3)
    with pytest.raises(ConfigError, match="rate"):
        Workload(rate=0)
    with pytest.raises(ConfigError, match="use"):
        Workload(use="queue")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="socket_timeout"):
        ClientSettings(socket_timeout=-1)
    with pytest.raises(ConfigError, match="client= or client_settings="):
        diagnose(client=object(), client_settings=ClientSettings())
    with pytest.raises(ConfigError, match="invalid Redis URL"):
        diagnose("http://example.com")


# -- the model (no server) ----------------------------------------------------------------
def test_shared_breaker_opens_in_one_timeout_round() -> None:
    """Eight workers on one breaker open it after one timeout; one worker needs five."""
    client = ClientSettings(socket_timeout=0.1, socket_connect_timeout=0.1)
    config = BreakerConfig(failure_threshold=5, reset_timeout=1.0)
    shared = predict(Workload(workers=8, workers_per_breaker=8), client, config, None)
    alone = predict(Workload(workers=8, workers_per_breaker=1), client, config, None)
    assert shared.time_to_open == pytest.approx(0.1)
    assert alone.time_to_open == pytest.approx(0.5)
    # Three trials shared by eight workers cost less than one trial per worker.
    assert shared.trial_loss == pytest.approx(3 * 0.1 / (8 * 1.1))
    assert alone.trial_loss == pytest.approx(0.1 / 1.1)
    assert shared.outage_per_worker > alone.outage_per_worker
    assert shared.detecting_per_worker == pytest.approx(1 / (0.01 + 0.1))


def test_shopify_example_ten_fold_drop() -> None:
    """Shopify's example: a 5 requests/s worker waiting 2 s timeouts serves ~0.5/s."""
    p = predict(
        Workload(rate=5, workers=1, request_time=0.2),
        ClientSettings(socket_timeout=2.0),
        BreakerConfig(failure_threshold=3, reset_timeout=10),
        None,
        call_latency=0.0,
    )
    assert p.healthy_per_worker == pytest.approx(5.0)
    assert p.detecting_per_worker == pytest.approx(1 / 2.2)
    assert p.utilization_detecting > 1


def test_retries_that_fit_the_deadline() -> None:
    """The default policy fits three 0.1 s attempts in 0.5 s, and one 0.25 s attempt."""
    assert attempts_per_failed_call(RetryPolicy(), 0.1) == (3, pytest.approx(0.4))
    assert attempts_per_failed_call(RetryPolicy(), 0.25) == (1, 0.25)
    assert attempts_per_failed_call(None, 0.1) == (1, 0.1)


def test_failure_rate_window_needs_its_share() -> None:
    """A count window of 100 at 50 % needs 50 failures; a time window scales with traffic."""
    assert failures_to_open(BreakerConfig(failure_threshold=7), 100.0) == 7
    counted = BreakerConfig(failure_rate_threshold=50, sliding_window_size=100, minimum_calls=10)
    assert failures_to_open(counted, 1000.0) == 50
    timed = BreakerConfig(failure_rate_threshold=50, monitoring_window=2.0, minimum_calls=10)
    assert failures_to_open(timed, 100.0) == 200


def test_prediction_findings_suggest_thresholds() -> None:
    """A per-process breaker with a long timeout falls behind; the fix names the numbers."""
    settings = ClientSettings(socket_timeout=0.5, socket_connect_timeout=0.5)
    config = BreakerConfig(failure_threshold=10, reset_timeout=1.0)
    retry = RetryPolicy(deadline=1.0)
    report = diagnose(
        client_settings=settings,
        retry=retry,
        config=config,
        workload=Workload(rate=80, workers=8, request_time=0.005),
    )
    finding = next(f for f in report.findings if f.code == "prediction.overload-before-open")
    assert finding.severity == "high"
    assert "socket_timeout (<= 75 ms)" in finding.fix
    assert report.prediction.suggested_socket_timeout == pytest.approx(0.075)
    assert "trial" in report.format_text()
    # Five times the traffic: no sane timeout keeps up; the breaker must open sooner.
    busy = diagnose(
        client_settings=settings,
        retry=retry,
        config=config,
        workload=Workload(rate=400, workers=8, request_time=0.005),
    )
    assert busy.prediction.suggested_socket_timeout is None
    assert "open sooner" in busy.format_text()


# -- the command ----------------------------------------------------------------------------
def test_cli_json_and_strict_exit_codes(
    redis_server_factory: Factory, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json prints the report; --strict exits 1 on a high finding, 0 without; 2 unreachable."""
    bad = redis_server_factory(args=["--maxmemory-policy", "noeviction"])
    good = redis_server_factory(args=WELL)
    assert main(["doctor", "--url", bad.url, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["high_risk"] is True
    assert "server.noeviction-cache" in {f["code"] for f in data["findings"]}
    assert data["prediction"]["workers_per_breaker"] == 1
    assert main(["doctor", "--url", bad.url, "--strict"]) == 1
    assert "[HIGH] server.noeviction-cache" in capsys.readouterr().out
    assert main(["doctor", "--url", good.url, "--strict"]) == 0
    assert "Outage prediction" in capsys.readouterr().out
    assert main(["doctor", "--url", f"redis://127.0.0.1:{free_port()}/0", "--strict"]) == 2
    capsys.readouterr()
    assert main(["doctor", "--url", good.url, "--strict", "--no-socket-timeout"]) == 1
    assert "client.socket-timeout-missing" in capsys.readouterr().out
    assert main(["doctor", "--url", good.url, "--redis-py-retries", "-1"]) == 2
    assert "redis_py_retries" in capsys.readouterr().err


def test_cli_reads_breaker_settings_from_env(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """REDIS_CIRCUIT_BREAKER_* apply; a flag overrides them."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("REDIS_CIRCUIT_BREAKER_FAILURE_THRESHOLD", "40")
    assert main(["doctor", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["prediction"]["failures_to_open"] == 40
    assert main(["doctor", "--json", "--failure-threshold", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["prediction"]["failures_to_open"] == 2


# -- the validation benchmark ---------------------------------------------------------------
def test_bench_doctor_prediction_matches_a_measured_outage() -> None:
    """The smoke run: predicted requests/s per worker over a paused-Redis outage is within
    25 % of the measurement, for a per-worker breaker."""
    bench = load_benchmark("bench_doctor.py")
    scenario = bench.Scenario(
        "per-worker", workers=4, shared=False, failure_threshold=3, reset_timeout=0.3
    )
    row = bench.run_scenario(
        scenario, calls=2, request_ms=20.0, socket_timeout=0.1, healthy=0.5, outage=1.5
    )
    assert row.outage_measured > 0
    assert abs(row.outage_error) < 0.25, bench.format_rows([row])
    assert row.time_to_open_measured == pytest.approx(row.time_to_open_predicted, abs=0.2)
