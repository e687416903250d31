"""Reading redis-py pools and retries the same way on redis-py 5.x to 8.x.

redis-py < 5.3 requires ``get_connection(command_name)``; later releases deprecate the argument
(a DeprecationWarning, an error under this suite's ``filterwarnings = error``).
"""

from __future__ import annotations

import inspect
from typing import Any


def _needs_command_name(pool: Any) -> bool:
    parameter = inspect.signature(pool.get_connection).parameters.get("command_name")
    return parameter is not None and parameter.default is inspect.Parameter.empty


def checkout(pool: Any) -> Any:
    """``pool.get_connection()`` on every redis-py (sync pools)."""
    return pool.get_connection("PING") if _needs_command_name(pool) else pool.get_connection()


async def acheckout(pool: Any) -> Any:
    """``await pool.get_connection()`` on every redis-py (asyncio pools)."""
    if _needs_command_name(pool):
        return await pool.get_connection("PING")
    return await pool.get_connection()


def retries(retry: Any) -> int:
    """How many times a redis-py ``Retry`` retries (``get_retries()`` is new in redis-py 6)."""
    get_retries = getattr(retry, "get_retries", None)
    return int(get_retries() if get_retries is not None else retry._retries)
