"""Make a real Redis refuse writes with ``-OOM`` while it keeps serving reads, and undo it.

``maxmemory`` set below what any server uses, with the ``noeviction`` policy: every command
that may grow memory (``SET``, a script that writes...) answers ``-OOM command not allowed
when used memory > 'maxmemory'``; reads, ``DEL`` and ``PING`` still work. Used by the chaos
soak and by ``redisguard demo --fault oom`` against a server they started, never a user's.
"""

from __future__ import annotations

from typing import Any

__all__ = ["allow_writes", "refuse_writes"]


def refuse_writes(admin: Any) -> None:
    """Make the server behind the redis-py client ``admin`` answer writes with ``-OOM``."""
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", 1)  # one byte: less than any server uses


def allow_writes(admin: Any) -> None:
    """Undo :func:`refuse_writes` (no memory limit, the server's default)."""
    admin.config_set("maxmemory", 0)
