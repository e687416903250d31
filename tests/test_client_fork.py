"""After os.fork(), the child's prober, tallies and telemetry locks work on their own."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable

import pytest
from opentelemetry.sdk.metrics import MeterProvider

import redisguard
from redisguard import Breaker, BreakerConfig, OpenTelemetryListener, _telemetry, get_breaker
from redisguard._prober import TaskProber
from redisguard._tally import Tally, TallyGroup
from redisguard.testing import RedisServer

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="needs os.fork"),
    pytest.mark.timeout(60),
    # Python 3.12+ warns that forking a multi-threaded process may deadlock: that is the
    # situation under test.
    pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning"),
]


def _wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _prober_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("redisguard-prober")]


def _in_child(body: Callable[[], int], timeout: int = 30) -> int:
    """Fork; run ``body`` in the child and exit with its result; return the child's pid."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 99
        try:
            signal.alarm(timeout)  # a deadlocked child dies instead of hanging the suite
            os.close(read_fd)
            os.write(write_fd, b"forked")
            code = body()
        finally:
            os._exit(code)
    os.close(write_fd)
    assert os.read(read_fd, 16) == b"forked"
    os.close(read_fd)
    return pid


def _exit_code(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_child_prober_recovers_when_the_parent_prober_ran_at_fork(
    redis_server: RedisServer,
) -> None:
    """A prober running at fork time is replaced by the child's own, which half-opens promptly."""
    breaker = get_breaker("redis", BreakerConfig(failure_threshold=1, reset_timeout=600))
    client = redisguard.connect(redis_server.url)
    try:
        redis_server.kill()
        with pytest.raises(redisguard.CircuitOpenError):
            breaker.call(client.get, "k")
        assert _wait_until(lambda: bool(_prober_threads()), 2.0)

        def child() -> int:  # pragma: no cover - runs in the child
            # Redis still down: the child probes through a thread of its own.
            if not _wait_until(lambda: client.prober is not None and client.prober.running, 2):
                return 10
            if not _prober_threads():
                return 11
            # The parent restarts Redis; the child's prober half-opens within its backoff.
            if not _wait_until(lambda: breaker.current_state == "half-open", 10.0):
                return 12
            breaker.call(client.ping)
            return 0 if breaker.current_state == "closed" else 13

        pid = _in_child(child)
        time.sleep(0.5)
        redis_server.restart()
        assert _exit_code(pid) == 0
    finally:
        client.close()


def test_tallies_count_exactly_in_a_child_forked_while_threads_held_them() -> None:
    """Cells of threads gone in the child still count once, and a lock held at fork is freed."""
    tally = Tally()
    group = TallyGroup()
    group.attach(tally)
    tally.add(5)
    release = threading.Event()
    ready = threading.Barrier(5)

    def worker() -> None:
        tally.add(10)
        ready.wait()
        release.wait()

    workers = [threading.Thread(target=worker) for _ in range(4)]
    for thread in workers:
        thread.start()
    ready.wait()
    # Another thread holds the tally's and the group's locks at the moment of the fork.
    tally._lock.acquire()
    group._lock.acquire()
    try:

        def child() -> int:  # pragma: no cover - runs in the child
            if tally.value != 45 or group.value != 45:
                return 20
            tally.add(1)
            if tally.value != 46 or group.value != 46:
                return 21
            return 0 if len(tally._cells) == 1 else 22

        pid = _in_child(child)
    finally:
        tally._lock.release()
        group._lock.release()
        release.set()
        for thread in workers:
            thread.join()
    assert _exit_code(pid) == 0
    assert tally.value == 45


def test_telemetry_locks_held_at_fork_are_free_in_the_child() -> None:
    """The instrument cache and a listener's counters work in a child forked mid-update."""
    listener = OpenTelemetryListener()
    breaker = Breaker("forked-telemetry", BreakerConfig(failure_threshold=1))
    _telemetry._instruments_lock.acquire()
    listener._lock.acquire()
    try:

        def child() -> int:  # pragma: no cover - runs in the child
            _telemetry._instruments_for(MeterProvider())
            listener.state_change(breaker, breaker.state, _Named("open"))
            counts = {(old, new): n for old, new, n in listener.transitions(breaker.name)}
            return 0 if counts[("closed", "open")] == 1 else 30

        pid = _in_child(child)
    finally:
        _telemetry._instruments_lock.release()
        listener._lock.release()
    assert _exit_code(pid) == 0


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name


async def test_child_forgets_the_parents_prober_task(redis_server: RedisServer) -> None:
    """An aconnect() prober task belongs to the parent's loop: the child does not see it run."""
    breaker = get_breaker("redis", BreakerConfig(failure_threshold=1, reset_timeout=600))
    client = await redisguard.aconnect(redis_server.url)
    try:
        redis_server.kill()
        with pytest.raises(redisguard.CircuitOpenError):
            await breaker.acall(client.get, "k")
        prober = client.prober
        assert isinstance(prober, TaskProber)
        assert prober.running

        def child() -> int:  # pragma: no cover - runs in the child
            return 0 if not prober.running and prober._task is None else 40

        pid = _in_child(child)
        assert _exit_code(pid) == 0
        assert prober.running  # the parent's task is untouched
    finally:
        await client.aclose()
