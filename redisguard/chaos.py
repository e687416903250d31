"""Fault injection for staging and production game days: ``redisguard.chaos``.

Off by default. Turn it on in code::

    from redisguard import chaos

    chaos.enable(chaos.Fault(operation="session.get", error="timeout", p=0.05))
    chaos.enable("breaker=cache,outage=30s")          # the same spec REDISGUARD_CHAOS takes
    chaos.kill()                                      # off, at once

or with ``REDISGUARD_CHAOS=<spec>`` (read when the first guard is built; outage windows
start then). The spec is rules
separated by ``;``, each a comma-separated list of fields:

==================  ==========================================================================
field               meaning
==================  ==========================================================================
``op=NAME``         only the guard(s) named NAME (``redis_guarded(name=...)``)
``breaker=NAME``    only calls through breaker NAME
``all``             every guard (give a scope: ``op``/``breaker`` or ``all``)
``error=KIND``      raise what redis-py raises for: ``refused`` (connection refused),
                    ``timeout`` (read timeout), ``busy``, ``loading``, ``readonly``, ``oom``
``latency=250ms``   wait this long first (``ms``, ``s``; at most 10 s); with ``error=timeout``
                    a slow timeout
``p=0.05``          the share of calls that get the fault, at most ``MAX_PROBABILITY`` (0.25)
``outage=30s``      every call fails (``error``, default ``refused``) for this long from now,
                    at most ``MAX_OUTAGE_SECONDS`` (600 s); no ``p``
==================  ==========================================================================

The first rule of a call's scope that fires wins. Faults are injected where the guarded
call reaches Redis, as real redis-py exceptions, so classification, retries, the breaker,
the fallback and telemetry behave as in a real outage. Every injected fault is counted in
``redisguard_chaos_injected_total{operation,kind}`` and its span carries
``redisguard.chaos=true``.

The kill switch: :func:`kill`, or ``REDISGUARD_CHAOS_KILL=1`` in the environment, which keeps
chaos from being enabled and, when set in a running process (``os.environ``), turns it off
at the next injected call. With chaos off, guards call their function directly: no cost.
"""

from __future__ import annotations

from ._chaos import (
    CHAOS_ENV,
    ERRORS,
    KILL_ENV,
    MAX_LATENCY_MS,
    MAX_OUTAGE_SECONDS,
    MAX_PROBABILITY,
    Fault,
    active,
    counts,
    kill,
    parse_spec,
)
from ._chaos import enable as _enable

__all__ = [
    "CHAOS_ENV",
    "ERRORS",
    "KILL_ENV",
    "MAX_LATENCY_MS",
    "MAX_OUTAGE_SECONDS",
    "MAX_PROBABILITY",
    "Fault",
    "active",
    "enable",
    "injected",
    "kill",
    "parse_spec",
]


def enable(*faults: Fault | str, seed: int | None = None) -> None:
    """Inject these faults from now on, replacing any active ones.

    Args:
        faults: :class:`Fault` rules, or spec strings (see the module docstring).
        seed: Seeds the sampling, for a reproducible rehearsal.

    Raises:
        ConfigError: for a bad spec, or when ``REDISGUARD_CHAOS_KILL`` is set.
    """
    rules: list[Fault] = []
    for fault in faults:
        if isinstance(fault, str):
            rules.extend(parse_spec(fault, source="chaos.enable"))
        else:
            rules.append(fault)
    if not rules:
        raise TypeError("chaos.enable() needs at least one fault; chaos.kill() turns it off")
    _enable(rules, seed)


def injected() -> dict[tuple[str, str], int]:
    """Faults injected so far, by ``(operation, kind)`` (the metric's labels)."""
    return counts()
