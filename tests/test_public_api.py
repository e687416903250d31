"""The public surface: a sorted ``__all__``, importable names, and the typing marker."""

from __future__ import annotations

import configparser
import importlib
import importlib.resources
import subprocess
import sys
from pathlib import Path

import redisguard

REQUIRED = {
    "BreakerConfig",
    "CircuitOpenError",
    "ConfigError",
    "RedisUnavailableError",
    "RetryPolicy",
    "aconnect",
    "breakers",
    "connect",
    "get_breaker",
    "redis_guarded",
}


def test_all_is_sorted_and_unique() -> None:
    """``__all__`` is sorted and lists each name once."""
    assert list(redisguard.__all__) == sorted(set(redisguard.__all__))


def test_every_name_in_all_is_importable() -> None:
    """Every name in ``__all__`` resolves with ``from redisguard import name``."""
    module = importlib.import_module("redisguard")
    missing = [name for name in redisguard.__all__ if not hasattr(module, name)]
    assert missing == []


def test_the_issue_names_are_public() -> None:
    """The names the design promises are exported."""
    assert set(redisguard.__all__) >= REQUIRED


def test_errors_form_the_documented_tree() -> None:
    """CircuitOpenError is a RedisUnavailableError and ConfigError is also a ValueError."""
    assert issubclass(redisguard.CircuitOpenError, redisguard.RedisUnavailableError)
    assert issubclass(redisguard.RedisUnavailableError, redisguard.RedisguardError)
    assert issubclass(redisguard.ConfigError, ValueError)
    assert issubclass(redisguard.ConfigError, redisguard.RedisguardError)


def test_version_is_a_string() -> None:
    """``__version__`` is a non-empty version string."""
    assert isinstance(redisguard.__version__, str)
    assert redisguard.__version__[0].isdigit()


def test_py_typed_is_shipped() -> None:
    """The PEP 561 marker exists in the package and is declared as package data."""
    assert importlib.resources.files("redisguard").joinpath("py.typed").is_file()
    setup_cfg = Path(redisguard.__file__).resolve().parent.parent / "setup.cfg"
    parser = configparser.ConfigParser()
    parser.read(setup_cfg)
    assert "py.typed" in parser.get("options.package_data", "redisguard").split()


def test_the_core_imports_no_framework() -> None:
    """redisguard and its framework-free modules import no web framework (each is an extra)."""
    code = (
        "import sys, redisguard, redisguard.asgi, redisguard.health, redisguard.stores, "
        "redisguard.ratelimit, redisguard.cluster, redisguard.testing\n"
        "found = sorted({'flask', 'flask_caching', 'fastapi', 'starlette', 'django'} & "
        "{name.split('.')[0] for name in sys.modules})\n"
        "print(','.join(found))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""
