"""Pick free loopback TCP ports for test servers.

Asking the kernel for port 0 hands out a port from the *ephemeral* range, the same
range the kernel uses for the local end of every outgoing connection. In a test
run that opens many client connections, one of them can grab the port between the
moment we probe it and the moment ``redis-server`` binds it. So on Linux we pick
random ports *below* the ephemeral range (read from
``/proc/sys/net/ipv4/ip_local_port_range``), which client sockets never receive,
and probe them with a plain ``bind()``. Callers still have to retry on a lost race
(another process may bind the port first); :class:`~redisguard.testing.RedisServer`
does.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

__all__ = ["CLUSTER_BUS_OFFSET", "LOOPBACK", "free_port"]

#: The only address the toolkit ever binds or connects to by default.
LOOPBACK = "127.0.0.1"
#: Redis Cluster listens on ``port + 10000`` for its node-to-node bus.
CLUSTER_BUS_OFFSET = 10000

_LOWEST_PORT = 10000
_MAX_PORT = 65535
_ATTEMPTS = 200
# A private generator: tests often seed the global ``random`` module, and parallel
# workers (pytest-xdist) seeded alike would otherwise probe the same ports.
_rng = random.SystemRandom()


def free_port(*, cluster_bus: bool = False) -> int:
    """Return a TCP port that is free on 127.0.0.1 right now.

    Args:
        cluster_bus: Also require ``port + 10000`` to be a valid, free port, as a
            Redis Cluster node needs it for its bus.

    Returns:
        A port number. Nothing holds it: bind it soon and retry on ``EADDRINUSE``.

    Raises:
        OSError: No free port was found.
    """
    low, high = _candidate_range(cluster_bus)
    if low <= high:
        for _ in range(_ATTEMPTS):
            port = _rng.randint(low, high)
            if _port_is_free(port, cluster_bus):
                return port
    # Unusual port layout (or non-Linux): let the kernel choose.
    for _ in range(_ATTEMPTS):
        port = _kernel_port()
        if _port_is_free(port, cluster_bus):
            return port
    raise OSError("no free loopback port found")


def _candidate_range(cluster_bus: bool) -> tuple[int, int]:
    """Return the inclusive range of ports below the ephemeral range."""
    ephemeral_low = _ephemeral_low()
    high = ephemeral_low - 1 if ephemeral_low is not None else -1
    if cluster_bus:
        high = min(high, _MAX_PORT - CLUSTER_BUS_OFFSET)
    return _LOWEST_PORT, high


def _ephemeral_low() -> int | None:
    """Return the lowest ephemeral port, or None where the kernel does not say."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _kernel_port() -> int:
    """Return a port the kernel considers free (from the ephemeral range)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(port: int, cluster_bus: bool) -> bool:
    """Return True if ``port`` (and its bus port when asked) can be bound now."""
    if not _can_bind(port):
        return False
    if not cluster_bus:
        return True
    bus = port + CLUSTER_BUS_OFFSET
    return bus <= _MAX_PORT and _can_bind(bus)


def _can_bind(port: int) -> bool:
    """Return True if a plain ``bind()`` of ``127.0.0.1:port`` succeeds."""
    # No SO_REUSEADDR on purpose: it makes the probe stricter (a TIME_WAIT socket
    # or a wildcard listener on the port counts as "taken").
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True
