"""Single-flight for threads and asyncio tasks, and the cache's serializers (no Redis)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from redisguard import ConfigError
from redisguard._codec import BUILTIN, resolve_serializer
from redisguard._flight import AsyncFlights, Flights


def test_threads_share_one_run_and_its_error() -> None:
    """Callers arriving during a run wait for it; its error reaches all of them."""
    flights = Flights()
    started, release = threading.Event(), threading.Event()
    runs = 0

    def work() -> int:
        nonlocal runs
        runs += 1
        started.set()
        release.wait(5)
        raise KeyError("boom")

    errors: list[BaseException] = []

    def call() -> None:
        try:
            flights.run("k", work)
        except KeyError as exc:
            errors.append(exc)

    leader = threading.Thread(target=call)
    leader.start()
    started.wait(5)
    waiters = [threading.Thread(target=call) for _ in range(3)]
    for t in waiters:
        t.start()
    time.sleep(0.05)
    assert bool(flights)
    release.set()
    for t in (leader, *waiters):
        t.join(5)
    assert runs == 1
    assert len(errors) == 4
    assert not flights
    assert flights.join("k") == (False, None)


def test_join_waits_for_a_thread_flight() -> None:
    """join() returns the value of the flight in progress."""
    flights = Flights()
    started = threading.Event()

    def work() -> str:
        started.set()
        time.sleep(0.05)
        return "v"

    leader = threading.Thread(target=lambda: flights.run("k", work))
    leader.start()
    started.wait(5)
    assert flights.join("k") == (True, "v")
    leader.join(5)


def test_an_interrupted_thread_leader_hands_over() -> None:
    """A leader ended by a BaseException that is not an Exception: a waiter runs the work."""
    flights = Flights()
    started, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def interrupted() -> str:
        calls.append("leader")
        started.set()
        release.wait(5)
        raise SystemExit

    def leader() -> None:
        with pytest.raises(SystemExit):
            flights.run("k", interrupted)

    t = threading.Thread(target=leader)
    t.start()
    started.wait(5)
    result: list[Any] = []
    waiter = threading.Thread(target=lambda: result.append(flights.run("k", lambda: "mine")))
    waiter.start()
    time.sleep(0.05)
    release.set()
    t.join(5)
    waiter.join(5)
    assert result == [("mine", True)]
    assert calls == ["leader"]


async def test_async_join_and_interrupted_join() -> None:
    """join() waits for the task's flight; a cancelled leader leaves join() empty-handed."""
    flights = AsyncFlights()
    assert await flights.join("k") == (False, None)

    async def work() -> int:
        await asyncio.sleep(0.05)
        return 7

    leader = asyncio.ensure_future(flights.run("k", work))
    await asyncio.sleep(0.01)
    assert bool(flights)
    assert await flights.join("k") == (True, 7)
    assert await leader == (7, True)

    doomed = asyncio.ensure_future(flights.run("k", work))
    await asyncio.sleep(0.01)
    waiter = asyncio.ensure_future(flights.join("k"))
    await asyncio.sleep(0.01)
    doomed.cancel()
    assert await waiter == (False, None)
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert not flights


def test_serializers_round_trip() -> None:
    """json, bytes and pickle give back what they stored; bytes accept bytearray too."""
    assert BUILTIN["json"].loads(BUILTIN["json"].dumps({"a": [1, None]})) == {"a": [1, None]}
    assert BUILTIN["bytes"].dumps(bytearray(b"ab")) == b"ab"
    assert BUILTIN["pickle"].loads(BUILTIN["pickle"].dumps({1, 2})) == {1, 2}
    with pytest.raises(TypeError):
        BUILTIN["pickle"].dumps(lambda: None)
    with pytest.raises(ValueError, match="Out of range float"):
        BUILTIN["json"].dumps(float("nan"))


def test_custom_serializer_and_bad_ones() -> None:
    """Any object with dumps/loads is accepted; anything else is a ConfigError naming it."""

    class Upper:
        def dumps(self, value: Any) -> bytes:
            return str(value).upper().encode()

        def loads(self, data: bytes) -> Any:
            return data.decode()

    custom = Upper()
    assert resolve_serializer(custom) is custom
    with pytest.raises(ConfigError, match="got 42"):
        resolve_serializer(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="got 'msgpack'"):
        resolve_serializer("msgpack")  # type: ignore[arg-type]
