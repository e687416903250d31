"""Host-shared breakers (``redisguard._host``, ``redisguard._segment``): one state for every
process on the host.

Cross-process tests fork real processes that attach to the same segment (in a private
directory per test, ``REDISGUARD_SHARED_DIR``); nothing is mocked.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pybreaker
import pytest

from redisguard import Breaker, BreakerConfig, ConfigError
from redisguard._host import HostBreaker, HostStorage
from redisguard._segment import (
    DIR_ENV,
    PROBER_PID,
    SHARED_ENV,
    TRIALS,
    derive_namespace,
    parse_shared,
    segment_path,
)

FORK = multiprocessing.get_context("fork")


@pytest.fixture(autouse=True)
def shared_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test's segments live in its own directory."""
    monkeypatch.setenv(DIR_ENV, str(tmp_path))
    monkeypatch.delenv(SHARED_ENV, raising=False)
    return tmp_path


def _config(**kwargs: Any) -> BreakerConfig:
    kwargs.setdefault("shared", "tests")
    kwargs.setdefault("failure_threshold", 3)
    kwargs.setdefault("reset_timeout", 30.0)
    return BreakerConfig(**kwargs)


def _fail(breaker: Breaker) -> None:
    def boom() -> None:
        raise ConnectionError("Redis is down")

    with pytest.raises((ConnectionError, pybreaker.CircuitBreakerError)):
        breaker.call(boom)


def _in_child(fn: Callable[[], object], timeout: float = 20.0) -> int:
    """Run ``fn`` in a forked child; return its exit code (0: it returned)."""

    def run() -> None:
        try:
            fn()
        except BaseException:  # pragma: no cover - reported through the exit code
            import traceback

            traceback.print_exc()
            os._exit(3)
        os._exit(0)

    process = FORK.Process(target=run)
    process.start()
    process.join(timeout)
    assert process.exitcode is not None, "child hung"
    return process.exitcode


# -- one state for the host ------------------------------------------------------------------
def test_a_shared_config_builds_a_host_breaker_and_stats_say_so() -> None:
    breaker = Breaker("cache", _config())
    assert isinstance(breaker, HostBreaker)
    stats = breaker.stats()
    assert stats.shared is True
    assert stats.host_segment is not None
    assert Path(stats.host_segment).exists()
    assert stats.as_dict()["shared"] is True
    plain = Breaker("plain", BreakerConfig())
    assert type(plain) is Breaker
    assert plain.stats().shared is False
    assert plain.stats().host_segment is None


def test_failures_are_counted_across_processes() -> None:
    """Three processes with one failure each open a breaker whose threshold is 3."""
    breaker = Breaker("redis", _config())
    for _ in range(2):
        assert _in_child(lambda: _fail(Breaker("redis", _config()))) == 0
    assert breaker.current_state == "closed"
    assert breaker.fail_counter == 2
    _fail(breaker)
    assert breaker.current_state == "open"
    # A process started afterwards sees it open at once.
    assert _in_child(lambda: _assert_state(Breaker("redis", _config()), "open")) == 0


def _assert_state(breaker: Breaker, state: str) -> None:
    assert breaker.current_state == state, breaker.current_state


def test_a_success_in_another_process_clears_the_run() -> None:
    breaker = Breaker("redis", _config())
    _fail(breaker)
    _fail(breaker)
    assert _in_child(lambda: Breaker("redis", _config()).call(lambda: None)) == 0
    assert breaker.fail_counter == 0
    _fail(breaker)
    assert breaker.current_state == "closed"


def test_an_open_made_elsewhere_is_adopted_once_per_host(caplog: pytest.LogCaptureFixture) -> None:
    """The process that opens logs it; another adopts it silently, its listeners flagged."""
    heard: list[tuple[str, str, bool]] = []

    class Listener(pybreaker.CircuitBreakerListener):
        def state_change(self, cb: Any, old: Any, new: Any) -> None:
            heard.append((old.name, new.name, cb._adopting))

    from redisguard._listeners import LoggingListener

    breaker = Breaker("redis", _config(), listeners=[Listener(), LoggingListener()])
    caplog.set_level(logging.INFO, logger="redisguard")

    def open_there() -> None:
        other = Breaker("redis", _config())
        for _ in range(3):
            _fail(other)

    assert _in_child(open_there) == 0
    assert breaker.current_state == "open"
    assert breaker._admit() == -1  # a call now is refused, and adopts the transition
    assert heard == [("closed", "open", True)]
    assert breaker.state.name == "open"
    assert not [r for r in caplog.records if "opened" in r.getMessage()]
    assert isinstance(breaker.opened_by, Exception)
    assert "Redis is down" in str(breaker.opened_by)
    # Its own transitions it reports as always.
    breaker.close()
    assert heard[-1] == ("open", "closed", False)
    assert [r for r in caplog.records if "closed (recovered)" in r.getMessage()]


def test_the_cause_survives_for_the_prober_in_other_processes() -> None:
    """``opened_by`` is rebuilt in the family a PING can (or cannot) prove healed."""
    from redis import exceptions as rx

    from redisguard._prober import ping_proves_recovery

    breaker = Breaker("redis", _config())

    def open_with(exc: BaseException) -> Callable[[], None]:
        def run() -> None:
            other = Breaker("redis", _config())
            other._on_failure(0, exc)
            other._on_failure(0, exc)
            other._on_failure(0, exc)

        return run

    cases: list[tuple[BaseException, bool]] = [
        (rx.ConnectionError("refused"), True),
        (rx.TimeoutError("Timeout reading"), True),
        (rx.BusyLoadingError("LOADING"), True),
        (rx.ResponseError("BUSY Redis is busy running a script"), True),
        (rx.ResponseError("NOPERM this user has no permissions"), False),
        (rx.ReadOnlyError("READONLY replica"), False),
    ]
    for exc, provable in cases:
        breaker.reset()
        assert _in_child(open_with(exc)) == 0
        assert breaker.current_state == "open"
        assert ping_proves_recovery(breaker.opened_by) is provable, exc


# -- half-open trials, host-wide ---------------------------------------------------------------
def test_half_open_trials_are_limited_host_wide() -> None:
    config = _config(half_open_max_attempts=2)
    breaker = Breaker("redis", config)
    breaker.half_open()
    queue = FORK.Queue()
    done = FORK.Event()

    def admit() -> None:
        queue.put(Breaker("redis", config)._admit())
        done.wait(20)  # alive: a dead process's slot would be reclaimed

    processes = [FORK.Process(target=admit) for _ in range(5)]
    for p in processes:
        p.start()
    try:
        tickets = [queue.get(timeout=20) for _ in processes]
        assert sum(t > 0 for t in tickets) == 2, tickets
        assert breaker._admit() == -1
    finally:
        done.set()
        for p in processes:
            p.join(20)


def test_a_dead_process_trial_slot_is_reclaimed() -> None:
    """A worker killed mid-trial does not hold its slot until the trial timeout."""
    config = _config(half_open_max_attempts=1, half_open_trial_timeout=3600)
    breaker = Breaker("redis", config)
    breaker.half_open()

    def take_and_die() -> None:
        other = Breaker("redis", config)
        assert other._admit() > 0
        os.kill(os.getpid(), signal.SIGKILL)

    assert _in_child(take_and_die) == -signal.SIGKILL
    assert breaker._seg.u32(TRIALS) == 1
    ticket = breaker._admit()
    assert ticket > 0
    breaker._on_success(ticket)
    assert breaker.current_state == "closed"


# -- the prober lease -----------------------------------------------------------------------
def test_one_prober_per_host_and_it_passes_on_when_its_holder_dies() -> None:
    breaker = Breaker("redis", _config())
    ready, release = FORK.Event(), FORK.Event()

    def hold() -> None:
        other = Breaker("redis", _config())
        assert other.claim_prober()  # type: ignore[attr-defined]
        ready.set()
        release.wait(20)

    holder = FORK.Process(target=hold)
    holder.start()
    try:
        assert ready.wait(20)
        assert breaker._seg.u32(PROBER_PID) == holder.pid
        assert not breaker.claim_prober()  # type: ignore[attr-defined]
    finally:
        assert holder.pid is not None
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(20)
    assert breaker.claim_prober()  # type: ignore[attr-defined]
    assert breaker._seg.u32(PROBER_PID) == os.getpid()
    breaker.release_prober()  # type: ignore[attr-defined]
    assert breaker._seg.u32(PROBER_PID) == 0


def test_a_stale_lease_passes_on_even_if_its_holder_lives() -> None:
    breaker = Breaker("redis", _config())
    assert _in_child(lambda: None) == 0
    breaker._seg.set_u32(PROBER_PID, os.getppid())  # alive, not us
    breaker._seg.set_f64(PROBER_PID + 8, time.monotonic())
    assert not breaker.claim_prober()  # type: ignore[attr-defined]
    assert breaker.claim_prober(now=time.monotonic() + 60)  # type: ignore[attr-defined]


# -- lifecycle ------------------------------------------------------------------------------
def test_a_segment_with_another_configuration_is_replaced_not_reused() -> None:
    old = Breaker("redis", _config(failure_threshold=3))
    old.open()
    path = Path(old._seg.path)
    inode = path.stat().st_ino
    new = Breaker("redis2", _config())  # a different name: a different file
    assert Path(new._seg.path) != path
    replaced = HostBreaker("redis", _config(failure_threshold=4))
    assert path.stat().st_ino != inode
    assert replaced.current_state == "closed"  # the old deployment's open state is not reused
    assert old.current_state == "open"  # the old process keeps its own (unlinked) mapping


def test_spawned_processes_attach_too() -> None:
    breaker = Breaker("redis", _config())
    breaker.open()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        state = pool.apply(_spawned_state, (os.environ[DIR_ENV],))
    assert state == "open"


def _spawned_state(directory: str) -> str:
    os.environ[DIR_ENV] = directory
    return Breaker("redis", _config()).current_state


def test_a_breaker_built_before_fork_works_in_the_child() -> None:
    """gunicorn --preload: the parent builds the breaker, the workers fork from it."""
    breaker = Breaker("redis", _config())

    def child() -> None:
        for _ in range(3):
            _fail(breaker)
        assert breaker.current_state == "open"

    assert _in_child(child) == 0
    assert breaker.current_state == "open"


def test_the_segment_is_private_to_the_user() -> None:
    breaker = Breaker("redis", _config())
    info = os.stat(breaker._seg.path)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.geteuid()
    assert str(os.geteuid()) in Path(breaker._seg.path).name


def test_a_readable_segment_is_refused() -> None:
    path = segment_path("redis", "tests")
    path.write_bytes(b"")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=r"refusing host segment .*mode 0644"):
        Breaker("redis", _config())


def test_a_symlink_is_refused(shared_dir: Path) -> None:
    target = shared_dir / "elsewhere"
    target.write_bytes(b"")
    segment_path("redis", "tests").symlink_to(target)
    with pytest.raises(ConfigError, match="symlink is refused"):
        Breaker("redis", _config())


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_segment_owned_by_another_user_is_refused() -> None:
    path = segment_path("redis", "tests")
    path.write_bytes(b"")
    path.chmod(0o600)
    os.chown(path, 65534, 65534)
    with pytest.raises(ConfigError, match="owned by uid 65534"):
        Breaker("redis", _config())


def test_a_missing_directory_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DIR_ENV, "/nonexistent/redisguard")
    with pytest.raises(ConfigError, match=f"/nonexistent/redisguard .*{DIR_ENV}"):
        Breaker("redis", _config())


# -- configuration ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("ON", True),
        ("0", False),
        ("", False),
        ("off", False),
        ("shop-api", "shop-api"),
        ("svc@redis:6379/0", "svc@redis:6379/0"),
    ],
)
def test_the_environment_switch(raw: str, expected: bool | str) -> None:
    assert BreakerConfig.from_env({SHARED_ENV: raw}).shared == expected
    assert parse_shared(raw, source=SHARED_ENV) == expected


@pytest.mark.parametrize("raw", ["two words", "-dash", "x" * 129, "a;b"])
def test_a_bad_namespace_names_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match=SHARED_ENV):
        BreakerConfig.from_env({SHARED_ENV: raw})


def test_bad_shared_values_in_code() -> None:
    with pytest.raises(ConfigError, match="shared must be True, False or a namespace"):
        BreakerConfig(shared=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="failure_threshold up to 4096"):
        BreakerConfig(shared=True, failure_threshold=5000)


def test_the_environment_makes_every_default_breaker_host_shared(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from redisguard import get_breaker

    monkeypatch.setenv(SHARED_ENV, "1")
    assert isinstance(get_breaker("from-env"), HostBreaker)


def test_the_derived_namespace_names_service_and_redis_but_no_password() -> None:
    env = {"OTEL_SERVICE_NAME": "shop", "REDIS_URL": "redis://:s3cret@cache.internal:6380/2"}
    assert derive_namespace(env) == "shop@cache.internal:6380/2"
    other = derive_namespace({**env, "REDIS_URL": "redis://other:6379"})
    assert other == "shop@other:6379/0"
    assert segment_path("redis", derive_namespace(env)) != segment_path("redis", other)
    assert derive_namespace({"OTEL_SERVICE_NAME": "x", "REDIS_URL": "unix:///run/r.sock"}) == (
        "x@unix:/run/r.sock"
    )


def test_host_storage_for_plain_pybreaker_and_for_breaker() -> None:
    storage = HostStorage("legacy", BreakerConfig(failure_threshold=2))
    plain = pybreaker.CircuitBreaker(fail_max=2, state_storage=storage)
    for _ in range(2):
        with pytest.raises((ConnectionError, pybreaker.CircuitBreakerError)):
            plain.call(_raise_connection_error)
    assert storage.state == "open"
    assert storage.opened_at is not None
    breaker = Breaker("legacy", BreakerConfig(failure_threshold=2), state_storage=storage)
    assert isinstance(breaker, HostBreaker)
    assert breaker.current_state == "open"
    with pytest.raises(ConfigError, match="differs from the breaker's"):
        Breaker("legacy", BreakerConfig(failure_threshold=3), state_storage=storage)
    with pytest.raises(ConfigError, match="takes no other state_storage"):
        Breaker("x", _config(), state_storage=pybreaker.CircuitMemoryStorage("closed"))


def _raise_connection_error() -> None:
    raise ConnectionError("down")


# -- SIGKILL at any point -----------------------------------------------------------------------
def _churn(config: BreakerConfig, seed: int) -> None:
    """A worker that moves the host breaker through every transition as fast as it can."""
    import random

    rng = random.Random(seed)
    breaker = Breaker("redis", config)
    while True:
        step = rng.random()
        if step < 0.4:
            breaker._on_failure(breaker._admit(), ConnectionError("down"))
        elif step < 0.7:
            ticket = breaker._admit()
            if ticket != -1:
                breaker._on_success(ticket)
        elif step < 0.8:
            breaker.half_open()
        elif step < 0.85:
            breaker.claim_prober()  # type: ignore[attr-defined]
        elif step < 0.9:
            breaker.write_side.refused(0, ConnectionRefusedError("OOM command not allowed"))
        elif step < 0.95:
            breaker.write_side.close()
        else:
            breaker.open()


@pytest.fixture
def churners() -> Iterator[list[Any]]:
    processes: list[Any] = []
    yield processes
    for p in processes:
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
        p.join(5)


def test_the_host_state_survives_workers_killed_at_any_point(churners: list[Any]) -> None:
    """Kill churning workers with SIGKILL at random moments, 60 times, inside transitions too;
    the segment must stay usable (no stuck lock, a rolled-back record, bounded trials)."""
    import random

    config = _config(half_open_max_attempts=2, half_open_trial_timeout=3600, reset_timeout=0.01)
    breaker = Breaker("redis", config)
    rng = random.Random(7)
    deadline = time.monotonic() + 60.0  # a safety net only: a loaded machine forks slowly
    kills = 0
    seed = 0
    while kills < 60 and time.monotonic() < deadline:
        while len([p for p in churners if p.is_alive()]) < 4:
            seed += 1
            p = FORK.Process(target=_churn, args=(config, seed), daemon=True)
            p.start()
            churners.append(p)
        time.sleep(rng.uniform(0.001, 0.02))
        victim = rng.choice([p for p in churners if p.is_alive()])
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(5)
        kills += 1
    for p in churners:
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
        p.join(5)
    assert kills == 60
    # Every worker is dead: the lock must be free, a half-done transaction rolled back.
    started = time.monotonic()
    stats = breaker.stats()
    assert time.monotonic() - started < 1.0
    assert stats.state in ("closed", "open", "half-open")
    seg = breaker._seg
    seg.lock()
    try:
        assert seg.u32(48) == os.getpid()  # our transaction, not a dead one's
        assert seg.u32(TRIALS) <= 2 + 4 * 64
    finally:
        seg.unlock()
    # And recovery still works: half-open, a trial (a dead worker's slot is reclaimed), closed.
    breaker.half_open()
    ticket = breaker._admit()
    assert ticket > 0
    breaker._on_success(ticket)
    assert breaker.current_state == "closed"
    assert breaker.fail_counter == 0
    breaker.write_side.close()
    assert breaker.write_state == "closed"
    assert breaker.write_side.write_gate._code == 0


def test_a_transaction_cut_short_by_sigkill_is_rolled_back() -> None:
    """A worker killed between changing the record and committing leaves nothing half-done."""
    from redisguard._segment import GENERATION, STATE

    config = _config()
    breaker = Breaker("redis", config)
    _fail(breaker)
    before = (breaker.current_state, breaker.fail_counter, breaker._seg.u64(GENERATION))

    def die_mid_transaction() -> None:
        other = Breaker("redis", config)
        seg = other._seg
        seg.lock()
        seg.set_u8(STATE, 2)
        seg.set_u64(GENERATION, 99)
        seg.failures.clear()
        seg.set_u32(TRIALS, 7)
        os.kill(os.getpid(), signal.SIGKILL)

    assert _in_child(die_mid_transaction) == -signal.SIGKILL
    assert breaker._seg.u8(STATE) == 2  # a lock-free reader may see the uncommitted byte
    started = time.monotonic()
    stats = breaker.stats()  # the next transaction rolls it back
    assert time.monotonic() - started < 1.0
    assert (stats.state, stats.failure_count, breaker._seg.u64(GENERATION)) == before
    assert breaker._seg.u32(TRIALS) == 0


# -- the guard on a host-shared breaker ---------------------------------------------------------
@pytest.mark.parametrize("access", ["read", "both", "write"])
def test_a_guard_sees_an_open_made_in_another_process_on_its_next_call(access: str) -> None:
    from redisguard import redis_guarded

    breaker = Breaker("redis", _config())
    calls: list[str] = []

    @redis_guarded(name="get", breaker=breaker, fallback="fallback", access=access)  # type: ignore[arg-type]
    def get() -> str:
        calls.append("redis")
        return "value"

    assert get() == "value"

    def open_there() -> None:
        other = Breaker("redis", _config())
        for _ in range(3):
            _fail(other)

    assert _in_child(open_there) == 0
    assert get() == "fallback"
    assert calls == ["redis"]
    assert breaker.stats().rejected_count == 1  # counted here, by this worker
    assert _in_child(lambda: Breaker("redis", _config()).close()) == 0
    assert get() == "value"
    assert breaker.state.name == "closed"


async def test_an_async_guard_on_a_host_breaker() -> None:
    from redisguard import redis_guarded

    breaker = Breaker("redis", _config())

    @redis_guarded(name="aget", breaker=breaker, fallback="fallback", access="read")
    async def aget() -> str:
        return "value"

    assert await aget() == "value"
    assert _in_child(lambda: Breaker("redis", _config()).open()) == 0
    assert await aget() == "fallback"


def test_a_guarded_success_clears_a_host_run_and_a_failure_adds_to_it() -> None:
    from redisguard import redis_guarded

    breaker = Breaker("redis", _config())
    fail = [True]

    @redis_guarded(name="get", breaker=breaker, fallback="fallback", access="read")
    def get() -> str:
        if fail[0]:
            raise ConnectionError("down")
        return "value"

    assert get() == "fallback"
    assert _in_child(lambda: _assert_failures(Breaker("redis", _config()), 1)) == 0
    fail[0] = False
    assert get() == "value"
    assert _in_child(lambda: _assert_failures(Breaker("redis", _config()), 0)) == 0


def _assert_failures(breaker: Breaker, count: int) -> None:
    assert breaker.fail_counter == count, breaker.fail_counter


def test_metrics_say_host_shared_and_count_a_transition_once_per_host() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from redisguard import redis_guarded

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    breaker = Breaker("redis", _config())
    plain = Breaker("plain", BreakerConfig())

    def series() -> dict[str, dict[frozenset[Any], Any]]:
        out: dict[str, dict[frozenset[Any], Any]] = {}
        data = reader.get_metrics_data()
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    for point in metric.data.data_points:
                        key = frozenset((point.attributes or {}).items())
                        out.setdefault(metric.name, {})[key] = getattr(point, "value", None)
        return out

    try:
        get = redis_guarded(
            name="get", breaker=breaker, fallback=None, access="read", meter_provider=provider
        )(lambda: "value")
        redis_guarded(name="p", breaker=plain, fallback=None, meter_provider=provider)(
            lambda: None
        )
        from redisguard._telemetry import OpenTelemetryListener

        breaker.add_listener(OpenTelemetryListener())
        assert _in_child(lambda: Breaker("redis", _config()).open()) == 0
        assert get() is None  # adopted here: not counted here
        breaker.close()  # made here: counted here
        got = series()
        assert got["circuit_breaker_host_shared"][frozenset({("name", "redis")})] == 1
        assert got["circuit_breaker_host_shared"][frozenset({("name", "plain")})] == 0
        transitions = got.get("circuit_breaker_transitions", {})
        assert transitions[frozenset({("name", "redis"), ("from", "closed"), ("to", "open")})] == 0
        assert transitions[frozenset({("name", "redis"), ("from", "open"), ("to", "closed")})] == 1
    finally:
        provider.shutdown()


def test_a_client_names_the_namespace_of_the_breakers_it_creates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two services' clients of different Redis servers never share a breaker named alike."""
    import redisguard

    monkeypatch.setenv(SHARED_ENV, "1")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "svc")
    monkeypatch.delenv("REDIS_URL", raising=False)
    one = redisguard.connect(
        "redis://:s3cret@127.0.0.1:7001/0", check=False, prober=False, breakers=("a",)
    )
    two = redisguard.connect("redis://127.0.0.1:7002/0", check=False, prober=False, breakers=("b",))
    try:
        a, b = redisguard.get_breaker("a"), redisguard.get_breaker("b")
        assert a.host_segment == str(segment_path("a", "svc@127.0.0.1:7001/0"))
        assert b.host_segment == str(segment_path("b", "svc@127.0.0.1:7002/0"))
        assert "s3cret" not in str(a.stats().as_dict())
    finally:
        one.close()
        two.close()


def _probe_for(url: str, seconds: float, out: Any, reported: Any) -> None:
    """A worker: a connect() client on a dead Redis; fail until open, then count its PINGs."""
    import redisguard

    client = redisguard.connect(url, check=False, probe_interval=0.05, breakers=("fleet",))

    @redisguard.redis_guarded(name="get", breaker="fleet", fallback=None, access="read")
    def get() -> Any:
        return client.get("k")

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        get()
        time.sleep(0.01)
    prober = client.prober
    out.put(prober.plan.probes if prober is not None else 0)
    # Close only once every worker reported: closing gives the lease up, and a worker still
    # running would then take it over.
    reported.wait(20)
    client.close()


def test_one_process_probes_for_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three workers on a dead Redis: their breaker opens once, and one of them PINGs."""
    from redisguard.testing import free_port

    monkeypatch.setenv(SHARED_ENV, "probe-test")
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    out, reported = FORK.Queue(), FORK.Event()
    workers = [FORK.Process(target=_probe_for, args=(url, 1.5, out, reported)) for _ in range(3)]
    for w in workers:
        w.start()
    try:
        probes = sorted(out.get(timeout=30) for _ in workers)
    finally:
        reported.set()
        for w in workers:
            w.join(20)
    assert probes[:2] == [0, 0], probes
    assert probes[2] >= 5, probes


def test_a_breaker_inherited_through_fork_still_excludes_its_parent() -> None:
    """After fork the child takes the host lock on its own open file description: while the
    child holds it, the parent waits (an inherited description would not exclude it)."""
    breaker = Breaker("redis", _config())
    ready = FORK.Event()

    def hold() -> None:
        with breaker._gate:
            ready.set()
            time.sleep(0.6)

    child = FORK.Process(target=hold)
    child.start()
    try:
        assert ready.wait(20)
        started = time.monotonic()
        breaker.stats()  # takes the gate
        assert time.monotonic() - started >= 0.4
    finally:
        child.join(20)


# -- the write side, host-wide ------------------------------------------------------------------
def _refuse_writes(times: int, word: str = "OOM") -> Callable[[], None]:
    from redis import exceptions as rx

    errors = {
        "OOM": rx.OutOfMemoryError("OOM command not allowed when used memory > 'maxmemory'."),
        "READONLY": rx.ReadOnlyError("READONLY You can't write against a read only replica."),
    }

    def run() -> None:
        side = Breaker("redis", _config()).write_side
        for _ in range(times):
            side.refused(0, errors[word])

    return run


def test_write_refusals_anywhere_on_the_host_open_every_workers_write_side() -> None:
    from redisguard import redis_guarded

    breaker = Breaker("redis", _config())
    calls: list[str] = []

    @redis_guarded(name="set", breaker=breaker, fallback="dropped", access="write")
    def write() -> str:
        calls.append("set")
        return "OK"

    @redis_guarded(name="get", breaker=breaker, fallback="fb", access="read")
    def read() -> str:
        calls.append("get")
        return "value"

    @redis_guarded(name="del", breaker=breaker, fallback="fb", access="delete")
    def delete() -> str:
        calls.append("del")
        return "1"

    assert _in_child(_refuse_writes(3)) == 0
    assert breaker.write_state == "open"
    assert breaker.write_side.cause == "OOM"
    assert breaker.current_state == "closed"
    assert write() == "dropped"  # refused here without a call: the host's write side is open
    assert read() == "value"
    assert delete() == "1"  # OOM spares deletes
    assert calls == ["get", "del"]
    assert type(breaker.write_side.opened_by).__name__ == "OutOfMemoryError"
    assert "maxmemory" in str(breaker.write_side.opened_by)
    # A READONLY refusal blocks deletes too.
    assert _in_child(_close_write_side) == 0
    assert write() == "OK"
    assert _in_child(_refuse_writes(3, "READONLY")) == 0
    assert delete() == "fb"
    assert type(breaker.write_side.opened_by).__name__ == "ReadOnlyError"


def _close_write_side() -> None:
    Breaker("redis", _config()).write_side.close()


def test_a_write_trial_in_one_worker_closes_the_write_side_for_the_host() -> None:
    from redisguard import redis_guarded

    config = _config(reset_timeout=0.05)
    breaker = Breaker("redis", config)

    @redis_guarded(name="set", breaker=breaker, fallback="dropped", access="write")
    def write() -> str:
        return "OK"

    def refuse() -> None:
        side = Breaker("redis", config).write_side
        from redis import exceptions as rx

        for _ in range(3):
            side.refused(0, rx.OutOfMemoryError("OOM"))

    assert _in_child(refuse) == 0
    assert write() == "dropped"
    time.sleep(0.06)

    def trial_there() -> None:
        other = Breaker("redis", config)

        @redis_guarded(name="set", breaker=other, fallback="dropped", access="write")
        def write_there() -> str:
            return "OK"

        assert write_there() == "OK"

    assert _in_child(trial_there) == 0
    assert breaker.write_state == "closed"
    assert breaker.write_side.cause is None
    assert write() == "OK"


def test_stats_count_the_trials_this_process_admitted() -> None:
    """``trial_count`` is per worker: the fleet benchmark sums it over the host."""
    config = _config(half_open_max_attempts=2)
    breaker = Breaker("redis", config)
    breaker.half_open()
    assert _in_child(lambda: _assert_trial(Breaker("redis", config))) == 0
    assert breaker._admit() > 0
    assert breaker._admit() > 0  # the dead child's slot was reclaimed
    assert breaker._admit() == -1
    assert breaker.stats().trial_count == 2


def _assert_trial(breaker: Breaker) -> None:
    assert breaker._admit() > 0
    assert breaker.stats().trial_count == 1


def _guarded_worker(url: str, config: BreakerConfig) -> None:
    """A worker of the fleet below: a connect() client, guarded GETs in a loop, forever."""
    import redisguard

    client = redisguard.connect(
        url, check=False, socket_timeout=0.1, socket_connect_timeout=0.1, probe_interval=0.05,
        breakers=(Breaker("fleet", config),),
    )

    @redisguard.redis_guarded(name="get", breaker="fleet", fallback=None, access="read")
    def get() -> Any:
        return client.get("k")

    while True:
        get()
        time.sleep(0.005)


def test_a_fleet_killed_in_a_loop_through_an_outage_and_a_recovery(
    redis_server: Any, churners: list[Any]
) -> None:
    """Workers on a real Redis are SIGKILLed and replaced in a loop while Redis is paused and
    resumed: the host breaker opens, and once Redis is back it closes, for every worker."""
    import random

    from redisguard import get_breaker

    config = _config(reset_timeout=30.0)
    breaker = Breaker("fleet", config)
    from redisguard._breaker import _registry

    _registry["fleet"] = breaker  # the workers' get_breaker("fleet") finds this one after fork
    rng = random.Random(11)
    kills = 0

    def churn(seconds: float) -> None:
        nonlocal kills
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            while len([p for p in churners if p.is_alive()]) < 4:
                p = FORK.Process(target=_guarded_worker, args=(redis_server.url, config))
                p.daemon = True
                p.start()
                churners.append(p)
            time.sleep(rng.uniform(0.01, 0.1))
            victim = rng.choice([p for p in churners if p.is_alive()])
            os.kill(victim.pid, signal.SIGKILL)
            victim.join(5)
            kills += 1

    churn(0.5)
    assert breaker.current_state == "closed"
    redis_server.pause()
    try:
        churn(2.0)
        assert breaker.current_state == "open"
    finally:
        redis_server.resume()
    churn(2.0)  # recovery: a surviving worker's prober PINGs, trials run, workers keep dying
    deadline = time.monotonic() + 10
    while breaker.current_state != "closed" and time.monotonic() < deadline:
        churn(0.2)
    assert breaker.current_state == "closed", breaker.stats()
    assert kills >= 20
    assert get_breaker("fleet") is breaker
    # The segment is consistent: the lock is free and no dead worker's transaction is open.
    breaker._seg.lock()
    try:
        assert breaker._seg.u32(48) == os.getpid()
    finally:
        breaker._seg.unlock()
