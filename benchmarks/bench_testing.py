"""Benchmark the test toolkit: RedisServer start time and FaultProxy overhead.

Run: ``python benchmarks/bench_testing.py [--starts N] [--pings N]``

* Start time: wall time of ``RedisServer().start()`` (spawn to first ``PONG``),
  each server stopped before the next start.
* Proxy overhead: ``PING`` round trips on a raw socket straight to the server and
  through a :class:`FaultProxy`, interleaved one by one so that both see the same
  machine load; the overhead is the difference of the two distributions.

Targets: start median <= 150 ms; proxy overhead p50 <= 100 us.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import time

from redisguard.testing import FaultProxy, RedisServer


def _quantile(sorted_values: list[float], q: float) -> float:
    """Return the ``q`` quantile (nearest rank) of already sorted values."""
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def bench_start(count: int) -> list[float]:
    """Return ``count`` start times in milliseconds."""
    times = []
    for _ in range(count):
        server = RedisServer()
        started = time.perf_counter()
        server.start()
        times.append((time.perf_counter() - started) * 1000)
        server.stop()
    return sorted(times)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _ping_us(sock: socket.socket) -> float:
    """Time one PING round trip in microseconds."""
    started = time.perf_counter_ns()
    sock.sendall(b"PING\r\n")
    reply = sock.recv(64)
    elapsed = (time.perf_counter_ns() - started) / 1000
    if reply != b"+PONG\r\n":
        raise RuntimeError(f"unexpected reply {reply!r}")
    return elapsed


def bench_proxy(count: int, warmup: int = 500) -> tuple[list[float], list[float]]:
    """Return sorted (direct, proxied) PING round-trip times in microseconds."""
    with RedisServer() as server, FaultProxy.for_server(server) as proxy:
        direct_sock, proxied_sock = _connect(server.port), _connect(proxy.port)
        try:
            for _ in range(warmup):
                _ping_us(direct_sock)
                _ping_us(proxied_sock)
            direct, proxied = [], []
            for _ in range(count):
                direct.append(_ping_us(direct_sock))
                proxied.append(_ping_us(proxied_sock))
        finally:
            direct_sock.close()
            proxied_sock.close()
    return sorted(direct), sorted(proxied)


def main() -> None:
    """Run both benchmarks and print plain-text results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=30, help="server starts (>= 20)")
    parser.add_argument("--pings", type=int, default=10_000, help="PINGs per path (>= 5000)")
    options = parser.parse_args()

    starts = bench_start(max(20, options.starts))
    print(f"RedisServer.start(): n={len(starts)}")
    print(
        f"  median {statistics.median(starts):7.1f} ms   p90 {_quantile(starts, 0.9):7.1f} ms"
        f"   max {starts[-1]:7.1f} ms   (target: median <= 150 ms)"
    )

    direct, proxied = bench_proxy(max(5000, options.pings))
    print(f"PING round trip, interleaved: n={len(direct)} each")
    for label, values in (("direct", direct), ("proxied", proxied)):
        print(
            f"  {label:8s} p50 {_quantile(values, 0.5):7.1f} us   "
            f"p99 {_quantile(values, 0.99):7.1f} us"
        )
    p50 = _quantile(proxied, 0.5) - _quantile(direct, 0.5)
    p99 = _quantile(proxied, 0.99) - _quantile(direct, 0.99)
    print(f"  overhead p50 {p50:7.1f} us   p99 {p99:7.1f} us   (target: p50 <= 100 us)")


if __name__ == "__main__":
    main()
