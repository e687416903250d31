"""Type-check-only: ``mypy --strict tests/typing/cache.py`` proves ``@cached`` keeps types.

Never run or collected by pytest. The decorated function keeps its parameters and return
type; ``invalidate`` and ``key_for`` take the same parameters; async stays awaitable.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import redis
import redis.asyncio
from typing_extensions import assert_type

from redisguard.cache import cached

client = redis.Redis()
aclient = redis.asyncio.Redis()


@cached(client, ttl=60, stale_for=600)
def profile(user_id: int, *, full: bool = False) -> dict[str, int]:
    return {"id": user_id}


assert_type(profile(1), dict[str, int])
assert_type(profile(1, full=True), dict[str, int])
assert_type(profile.invalidate(1), bool)
assert_type(profile.key_for(1, full=True), str)
profile("1")  # type: ignore[arg-type]
profile.invalidate(1, fuller=True)  # type: ignore[call-arg]


@cached(aclient, ttl=60, key=lambda user_id: f"user:{user_id}", serializer="pickle")
async def aprofile(user_id: int) -> list[str]:
    return []


aprofile_coro = assert_type(aprofile(1), Coroutine[Any, Any, list[str]])
invalidate_coro = assert_type(aprofile.invalidate(1), Coroutine[Any, Any, bool])
assert_type(aprofile.key_for(1), str)
