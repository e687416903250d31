"""The after-fork registry (redisguard._fork)."""

from __future__ import annotations

import gc
import os
import sys

import pytest

from redisguard import _fork

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs os.fork")


class _Thing:
    def __init__(self) -> None:
        self.reset_in: int | None = None


def _fork_and_report(check: object) -> int:
    """Fork; in the child exit with check()'s int; return the child's exit status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            code = int(check())  # type: ignore[operator]
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_reset_runs_in_the_child_only() -> None:
    """A registered reset runs in a forked child and never in the parent."""
    thing = _Thing()
    _fork.after_fork(thing, lambda t: setattr(t, "reset_in", os.getpid()))
    assert _fork_and_report(lambda: 7 if thing.reset_in == os.getpid() else 3) == 7
    assert thing.reset_in is None


def test_registry_holds_objects_weakly_and_prunes() -> None:
    """Registering never keeps an object alive; dead entries are pruned as the list grows.

    Relative to what earlier tests left registered: enough registrations to cross the
    registry's current prune mark, each of an object that dies at once."""
    gc.collect()
    registry = _fork._registry
    before = len(registry.entries)
    count = max(registry.prune_at - before, 0) + _fork._PRUNE_AT
    for _ in range(count):
        _fork.after_fork(_Thing(), lambda t: None)
    assert len(registry.entries) < before + count  # the prune dropped the dead ones
    assert not any(isinstance(ref(), _Thing) for ref, _ in registry.entries)  # held weakly


def test_a_failing_reset_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One reset that raises does not stop the others (checked by calling the hook directly)."""
    bad, good = _Thing(), _Thing()

    def boom(t: _Thing) -> None:
        raise RuntimeError("boom")

    _fork.after_fork(bad, boom)
    _fork.after_fork(good, lambda t: setattr(t, "reset_in", 1))
    _fork._registry.run_in_child()
    assert good.reset_in == 1
    assert "resetting" in caplog.text


@pytest.mark.filterwarnings("ignore:This process.*multi-threaded:DeprecationWarning")
@pytest.mark.parametrize(
    ("module", "attribute"),
    [
        ("redisguard._breaker", "_registry_lock"),
        ("redisguard._observe", "_lock"),
        ("redisguard._telemetry", "_instruments_lock"),
        ("redisguard.ratelimit", "_stats_lock"),
    ],
)
def test_module_locks_held_by_another_thread_are_renewed_in_the_child(
    module: str, attribute: str
) -> None:
    """A registry lock another thread held at the fork is usable in the child."""
    import importlib
    import signal
    import threading

    mod = importlib.import_module(module)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with getattr(mod, attribute):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(5)
    try:

        def child() -> int:
            signal.alarm(5)  # a deadlock ends the child with SIGALRM instead of hanging
            with getattr(mod, attribute):
                return 7

        assert _fork_and_report(child) == 7
    finally:
        release.set()
        thread.join()
