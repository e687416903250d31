"""Alert someone when a circuit opens: a pybreaker listener of your own.

redisguard breakers are ``pybreaker.CircuitBreaker`` objects, so any
``pybreaker.CircuitBreakerListener`` can be attached with ``add_listener``. Its
``state_change`` hook is called for every *real* transition (never ``closed -> closed``),
on the thread of the call that caused it. So the listener below only puts the alert on a
queue: the slow part (an HTTP request to a webhook, a pager API) runs on a worker thread,
and a failing webhook is logged, never raised into the request that tripped the breaker.

Run it::

    python examples/alert_on_open.py                      # private redis-server, an outage
    python examples/alert_on_open.py --webhook http://127.0.0.1:8080/hooks/redis
    python examples/alert_on_open.py redis://localhost:6379/0
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

import pybreaker

import redisguard

__all__ = ["Alert", "AlertOnOpen", "main", "print_alert", "run", "webhook"]

logger = logging.getLogger("alert_on_open")
BREAKER = redisguard.BreakerConfig(failure_threshold=3, reset_timeout=0.5)


@dataclass(frozen=True)
class Alert:
    """One notification.

    Attributes:
        breaker: The breaker's name.
        status: ``"firing"`` when the circuit opened, ``"resolved"`` when it closed again.
        state: The new state.
        previous_state: The state it left.
        reopened: True when a trial call failed and the circuit opened again.
        failure_count: Failures in the breaker's window when it opened.
        at: When it happened (UTC, ISO 8601).
    """

    breaker: str
    status: str
    state: str
    previous_state: str
    reopened: bool
    failure_count: int
    at: str


class AlertOnOpen(pybreaker.CircuitBreakerListener):
    """Sends an :class:`Alert` when a circuit opens (and, optionally, when it recovers).

    Args:
        notify: Called with each alert, on a worker thread; may be slow, may raise.
        resolve: Also send a ``"resolved"`` alert when the circuit closes after being open.
    """

    def __init__(self, notify: Callable[[Alert], None], *, resolve: bool = True) -> None:
        self.notify = notify
        self.resolve = resolve
        self._queue: queue.Queue[Alert | None] = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="alert-on-open", daemon=True)
        self._worker.start()

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        """Queue an alert; never blocks the call that changed the state."""
        old = getattr(old_state, "name", "")
        new = new_state.name
        if new == pybreaker.STATE_OPEN:
            status = "firing"
        elif new == pybreaker.STATE_CLOSED and self.resolve and old:
            status = "resolved"
        else:
            return
        self._queue.put(
            Alert(
                breaker=cb.name or "",
                status=status,
                state=new,
                previous_state=old,
                reopened=old == pybreaker.STATE_HALF_OPEN and new == pybreaker.STATE_OPEN,
                failure_count=cb.fail_counter,
                at=datetime.now(timezone.utc).isoformat(),
            )
        )

    def _work(self) -> None:
        while True:
            alert = self._queue.get()
            try:
                if alert is None:
                    return
                self.notify(alert)
            except Exception:
                logger.exception("alert delivery failed for breaker %s", alert and alert.breaker)
            finally:
                self._queue.task_done()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued alert was handed to ``notify``; False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued, then stop the worker thread."""
        self._queue.put(None)
        self._worker.join(timeout)


def webhook(url: str, *, timeout: float = 2.0) -> Callable[[Alert], None]:
    """A ``notify`` that POSTs each alert as JSON to ``url`` (Slack/Alertmanager style).

    Raises (on the worker thread, where it is logged): ``urllib.error.URLError`` when the
    webhook cannot be reached or answers with an error status.
    """

    def post(alert: Alert) -> None:
        body = json.dumps(asdict(alert)).encode()
        request = urllib.request.Request(
            url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()

    return post


def print_alert(alert: Alert) -> None:
    """A ``notify`` for the demo: print the alert."""
    icon = "FIRING" if alert.status == "firing" else "RESOLVED"
    change = f"{alert.previous_state} -> {alert.state}"
    print(f"[{icon}] circuit {alert.breaker!r}: {change}", flush=True)


def run(
    redis_url: str,
    notify: Callable[[Alert], None],
    *,
    calls: int = 5,
    break_redis: Callable[[], object] | None = None,
    mend_redis: Callable[[], object] | None = None,
) -> list[str | None]:
    """Attach :class:`AlertOnOpen` to the ``"redis"`` breaker and make guarded calls.

    Args:
        redis_url: Where Redis is.
        notify: Receives the alerts.
        calls: Calls per phase.
        break_redis: Called between the healthy and the degraded phase (e.g. kill the
            server); None runs a single phase against whatever ``redis_url`` is.
        mend_redis: Called after the degraded phase; the example then waits for the
            breaker's reset timeout and shows the recovery.

    Returns:
        What each call answered (None is the fallback).
    """
    breaker = redisguard.get_breaker("redis", BREAKER)
    alerts = AlertOnOpen(notify)
    breaker.add_listener(alerts)
    client = redisguard.connect(redis_url, check=False, decode_responses=True)

    @redisguard.redis_guarded(name="feature_flags.get", fallback=None)
    def get_flag(flag: str) -> str | None:
        value = client.get(f"flag:{flag}")
        return None if value is None else str(value)

    answers: list[str | None] = []
    try:
        if break_redis is not None:
            client.set("flag:new-checkout", "on")
            answers += [get_flag("new-checkout") for _ in range(calls)]
            break_redis()
        answers += [get_flag("new-checkout") for _ in range(calls)]
        if mend_redis is not None:
            mend_redis()
            time.sleep(BREAKER.reset_timeout)
            answers += [get_flag("new-checkout") for _ in range(calls)]
    finally:
        client.close()
        alerts.close()
        breaker.remove_listener(alerts)
    return answers


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("redis_url", nargs="?", default=os.environ.get("REDIS_URL"))
    parser.add_argument("--webhook", help="POST alerts as JSON to this URL instead of printing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    notify = webhook(args.webhook) if args.webhook else print_alert
    if args.redis_url:
        answers = run(args.redis_url, notify)
    else:
        from redisguard.testing import RedisServer

        with RedisServer(appendonly=True) as server:  # data survives the outage
            answers = run(server.url, notify, break_redis=server.kill, mend_redis=server.start)
    print("answers:", answers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
