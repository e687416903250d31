"""Type-check-only: ``mypy --strict tests/typing/api.py`` proves the decorator keeps types.

This file is never run or collected by pytest. Each ``assert_type`` fails the type check
if ``@redis_guarded`` loses a parameter or widens a return type more than documented:

* no fallback: the return type is unchanged (the guard raises instead);
* a fallback value or callable of type ``F``: the return type becomes ``R | F``;
* async functions keep being coroutine functions with the same widening.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from typing_extensions import assert_type

import redisguard
import redisguard.chaos
from redisguard import Breaker, ErrorKind, RetryPolicy, redis_guarded
from redisguard.stores import AsyncSessionStore, Lookup, SessionStore

# -- sync functions -----------------------------------------------------------------------------


@redis_guarded(name="plain")
def plain(key: str, *, ttl: int = 0) -> bytes:
    return key.encode()


assert_type(plain("k"), bytes)
assert_type(plain("k", ttl=5), bytes)


@redis_guarded(name="value", fallback=None)
def with_none(key: str) -> bytes:
    return key.encode()


assert_type(with_none("k"), bytes | None)


@redis_guarded(name="constant", fallback=0)
def with_int(key: str) -> int:
    return len(key)


assert_type(with_int("k"), int)


def stale(key: str) -> str:
    return key


@redis_guarded(name="callable", fallback=stale, retry=None, breaker="sessions")
def with_callable(key: str) -> bytes:
    return key.encode()


assert_type(with_callable("k"), bytes | str)


@redis_guarded(
    name="canaried",
    fallback=stale,
    canary=0.01,
    canary_compare=lambda result, fallback_result: result == fallback_result,
    canary_side_effect_free=True,
)
def with_canary(key: str) -> bytes:
    return key.encode()


assert_type(with_canary("k"), bytes | str)


def by_kind(exc: BaseException) -> ErrorKind:
    return redisguard.classify_error(exc)


@redis_guarded(
    name="options",
    fallback=False,
    breaker=Breaker("typing"),
    retry=RetryPolicy(attempts=2),
    classify=by_kind,
    idempotent=True,
)
def with_options(a: int, b: str = "") -> bool:
    return bool(a) and bool(b)


assert_type(with_options(1, b="x"), bool)


@redis_guarded(name="read", fallback=None, access="read")
def read_only(key: str) -> bytes:
    return key.encode()


assert_type(read_only("k"), bytes | None)


@redis_guarded(name="delete", fallback=0, access="delete")
async def delete(key: str) -> int:
    return len(key)


async def deletes() -> None:
    assert_type(await delete("k"), int)
    assert_type(Breaker("sides").write_side.current_state, str)
    assert_type(Breaker("sides").write_state, str)


# -- pybreaker's constructor keywords ----------------------------------------------------------

pybreaker_style = Breaker(
    fail_max=3,
    reset_timeout=10,
    success_threshold=2,
    exclude=[KeyError, lambda e: isinstance(e, ValueError)],
    name="pybreaker-style",
    throw_new_error_on_trip=False,
)
assert_type(pybreaker_style.opened_by, BaseException | None)
assert_type(pybreaker_style.throw_new_error_on_trip, bool)
assert_type(pybreaker_style.call(lambda: 1), int)


# -- async functions ----------------------------------------------------------------------------


@redis_guarded(name="async-plain")
async def aplain(key: str) -> bytes:
    return key.encode()


plain_coro = assert_type(aplain("k"), Coroutine[Any, Any, bytes])


@redis_guarded(name="async-value", fallback=None)
async def awith_none(key: str) -> bytes:
    return key.encode()


none_coro = assert_type(awith_none("k"), Coroutine[Any, Any, bytes | None])


async def astale(key: str) -> str:
    return key


@redis_guarded(name="async-callable", fallback=astale)
async def awith_async_fallback(key: str) -> bytes:
    return key.encode()


fallback_coro = assert_type(awith_async_fallback("k"), Coroutine[Any, Any, bytes | str])


async def use_async() -> None:
    assert_type(await aplain("k"), bytes)
    assert_type(await awith_none("k"), bytes | None)
    assert_type(await awith_async_fallback("k"), bytes | str)


# -- methods ----------------------------------------------------------------------------------


class Store:
    @redis_guarded(name="store.get", fallback=None)
    def get(self, key: str) -> bytes:
        return key.encode()

    @redis_guarded(name="store.count")
    async def count(self, prefix: str) -> int:
        return len(prefix)

    @classmethod
    @redis_guarded(name="store.build", fallback=None)
    def build(cls, url: str) -> Store:
        return cls()

    @staticmethod
    @redis_guarded(name="store.key", fallback="")
    def key(user_id: int) -> str:
        return str(user_id)


store = Store()
assert_type(store.get("k"), bytes | None)
count_coro = assert_type(store.count("p"), Coroutine[Any, Any, int])
assert_type(Store.build("redis://h"), Store | None)
assert_type(Store.key(1), str)


# -- misuse the type checker catches --------------------------------------------------------------

plain(1)  # type: ignore[arg-type]
with_none("k", "extra")  # type: ignore[call-arg]


# -- stores: a lookup says whether Redis answered ---------------------------------------------


async def _lookups(sessions: SessionStore, asessions: AsyncSessionStore) -> None:
    found = sessions.lookup("sid")
    assert_type(found, Lookup[Any])
    assert_type(found.degraded, bool)
    assert_type(found.found, bool)
    assert_type(found.failure, redisguard.Failure | None)
    assert_type(await asessions.lookup("sid"), Lookup[Any])


# -- chaos -----------------------------------------------------------------------------------

redisguard.chaos.enable(
    redisguard.chaos.Fault(operation="op", error="busy", p=0.01), "all,latency=5ms,p=0.01"
)
redisguard.chaos.kill()
assert_type(redisguard.chaos.injected(), dict[tuple[str, str], int])
