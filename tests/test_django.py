"""redisguard.django against a real redis-server that is killed, paused and restarted.

The cache checks are modelled on Django's own ``tests/cache`` (BaseCacheTests): each scenario
runs on Django's built-in ``RedisCache`` and on ours against the same server, and the results
must be equal.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

django = pytest.importorskip("django")

import django_project.settings as project  # noqa: E402
from django.conf import settings  # noqa: E402

if not settings.configured:
    settings.configure(**{name: getattr(project, name) for name in dir(project) if name.isupper()})
    django.setup()

from django.core.cache import caches  # noqa: E402
from django.core.cache.backends.base import DEFAULT_TIMEOUT  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

from redisguard import TemporarilyUnavailableError, get_breaker  # noqa: E402
from redisguard.django import (  # noqa: E402
    RedisCache,
    close_clients,
    dropped_writes,
    stale_served,
)
from redisguard.testing import RedisServer  # noqa: E402

BUILTIN = "django.core.cache.backends.redis.RedisCache"


@pytest.fixture
def project_on(redis_server: RedisServer) -> Iterator[Callable[..., None]]:
    """Point the project's caches and sessions at the test's server; undo it afterwards."""
    overrides: list[override_settings] = []

    def point(**options: Any) -> None:
        url = redis_server.url
        cache_settings = project.caches(url, **options)
        cache_settings["builtin"] = {"BACKEND": BUILTIN, "LOCATION": url, "KEY_PREFIX": "b"}
        cache_settings["default"]["KEY_PREFIX"] = "g"
        override = override_settings(
            CACHES=cache_settings, REDISGUARD_SESSIONS=project.sessions(url)
        )
        override.enable()
        overrides.append(override)

    try:
        yield point
    finally:
        for override in reversed(overrides):
            override.disable()
        close_clients()


def _wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _scenario(cache: Any) -> list[Any]:
    """Every public method, as Django's cache tests exercise them; returns what each said."""
    out: list[Any] = []
    out.append(cache.get("missing"))
    out.append(cache.get("missing", "dflt"))
    out.append(cache.set("k", "v"))
    out.append(cache.get("k"))
    out.append(cache.add("k", "other"))
    out.append(cache.add("new", {"a": [1, 2]}))
    out.append(cache.get("new"))
    out.append(cache.add("zero", 1, timeout=0))
    out.append(cache.has_key("zero"))
    out.append(cache.has_key("k"))
    out.append("k" in cache)
    out.append(cache.set("n", 10))
    out.append(cache.incr("n"))
    out.append(cache.incr("n", 5))
    out.append(cache.decr("n", 3))
    with pytest.raises(ValueError, match="not found"):
        cache.incr("nope")
    out.append(cache.set_many({"a": 1, "b": b"bytes", "c": None}))
    out.append(cache.get_many(["a", "b", "c", "d"]))
    out.append(cache.delete_many(["a", "b"]))
    out.append(cache.get_many(["a", "b", "c"]))
    out.append(cache.delete("k"))
    out.append(cache.delete("k"))
    out.append(cache.touch("new", 100))
    out.append(cache.touch("missing", 100))
    out.append(cache.touch("new", None))
    out.append(cache.set("v", 1, version=2))
    out.append(cache.get("v"))
    out.append(cache.get("v", version=2))
    out.append(cache.incr_version("v", version=2))
    out.append(cache.get("v", version=3))
    out.append(cache.decr_version("v", version=3))
    out.append(cache.get("v", version=2))
    out.append(cache.get_or_set("gos", lambda: "computed"))
    out.append(cache.get_or_set("gos", "ignored"))
    out.append(cache.set("short", 1, timeout=0))
    out.append(cache.get("short"))
    out.append(cache.set("forever", 1, timeout=None))
    out.append(cache.set("dt", 1, timeout=DEFAULT_TIMEOUT))
    out.append(cache.clear())
    out.append(cache.get("new"))
    return out


def test_same_results_as_djangos_redis_cache(project_on: Callable[..., None]) -> None:
    """On a healthy server every method answers what Django's built-in backend answers."""
    project_on()
    ours, builtin = caches["default"], caches["builtin"]
    assert isinstance(ours, RedisCache)
    assert _scenario(builtin) == _scenario(ours)
    assert dropped_writes().get("django.cache.set", 0) == 0


async def test_async_methods_are_guarded_too(project_on: Callable[..., None]) -> None:
    """Django's a-prefixed methods reach the guarded client."""
    project_on()
    cache = caches["default"]
    await cache.aset("k", 1)
    assert await cache.aget("k") == 1
    assert await cache.aadd("k", 2) is False
    assert await cache.adelete("k") is True


def test_killed_redis_reads_miss_and_writes_drop(
    project_on: Callable[..., None], redis_server: RedisServer
) -> None:
    """With Redis dead each method answers its documented outage value, never a 500."""
    project_on()
    cache = caches["default"]
    cache.set("k", "v")
    redis_server.kill()
    before = dropped_writes().get("django.cache.set", 0)
    answers = [cache.get("k", "dflt") for _ in range(3)]
    assert answers == ["dflt"] * 3
    assert get_breaker("redis").current_state == "open"
    started = time.perf_counter()
    assert cache.get("k") is None
    assert time.perf_counter() - started < 0.01
    assert cache.get_many(["k"]) == {}
    assert cache.has_key("k") is False
    assert cache.set("k", "w") is None
    assert dropped_writes()["django.cache.set"] == before + 1
    assert cache.set_many({"x": 1, "y": 2}) == ["x", "y"]
    assert cache.add("fresh", 1) is False
    assert cache.delete("k") is False
    assert cache.touch("k") is False
    assert cache.clear() is False
    assert cache.get_or_set("gos", "computed") == "computed"
    with pytest.raises(TemporarilyUnavailableError) as raised:
        cache.incr("n")
    assert 1 <= raised.value.retry_after <= 30


def test_write_failure_raise(project_on: Callable[..., None], redis_server: RedisServer) -> None:
    """WRITE_FAILURE='raise': writes raise during an outage, reads still miss."""
    project_on(WRITE_FAILURE="raise")
    cache = caches["default"]
    redis_server.kill()
    assert cache.get("k", 0) == 0
    for write in (lambda: cache.set("k", 1), lambda: cache.add("k", 1), lambda: cache.delete("k")):
        with pytest.raises(TemporarilyUnavailableError):
            write()


def test_bad_options_name_the_option(project_on: Callable[..., None]) -> None:
    """A typo or a wrong value in OPTIONS is a ConfigError naming it."""
    from redisguard import ConfigError

    project_on(WRITE_FAILURE="ignore")
    with pytest.raises(ConfigError, match="WRITE_FAILURE"):
        caches["default"].get("k")
    project_on(BREAKERR="x")
    with pytest.raises(ConfigError, match="BREAKERR"):
        caches["default"].get("k")
    project_on(socket_timeout=1, SOCKET_TIMEOUT=2)
    with pytest.raises(ConfigError, match="socket_timeout"):
        caches["default"].get("k")


def test_djangos_lower_case_timeouts_are_honoured(project_on: Callable[..., None]) -> None:
    """OPTIONS written for Django's backend (socket_timeout=...) keep working."""
    project_on(socket_timeout=0.5, socket_connect_timeout=0.75)
    cache = caches["default"]
    cache.set("k", 1)
    assert cache.get("k") == 1
    kwargs = cache.clients()[0].connection_pool.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.5, 0.75)


def test_paused_redis_answers_in_microseconds_once_open(
    project_on: Callable[..., None], redis_server: RedisServer
) -> None:
    """A paused Redis costs the socket timeout until the breaker opens, then nothing."""
    project_on(RETRY=None)
    cache = caches["default"]
    cache.set("k", "v")
    redis_server.pause()
    try:
        slow = time.perf_counter()
        assert cache.get("k") is None
        assert time.perf_counter() - slow >= 0.2
        cache.get("k")
        assert get_breaker("redis").current_state == "open"
        timings = []
        for _ in range(200):
            started = time.perf_counter()
            cache.get("k")
            timings.append(time.perf_counter() - started)
        timings.sort()
        assert timings[int(len(timings) * 0.99)] < 0.001
    finally:
        redis_server.resume()
    _wait_until(lambda: cache.get("k") == "v")


def test_restart_recovers_through_the_prober(
    project_on: Callable[..., None], redis_server: RedisServer
) -> None:
    """After Redis comes back the cache serves and stores again, with no reset timeout."""
    project_on()
    cache = caches["default"]
    redis_server.kill()
    cache.get("k")
    cache.get("k")
    assert get_breaker("redis").current_state == "open"
    redis_server.restart()
    _wait_until(lambda: get_breaker("redis").current_state != "open")  # half-open: a trial
    cache.set("k", "back")
    assert cache.get("k") == "back"


def test_cache_page_and_get_or_set_views(project_on: Callable[..., None]) -> None:
    """cache_page serves repeats from the cache; a cache-using view keeps counting."""
    project_on()
    client = Client()
    first = client.get("/page").content
    assert client.get("/page").content == first
    assert [client.get("/counter").json()["hits"] for _ in range(3)] == [0, 1, 2]


def test_views_keep_answering_while_redis_is_dead(
    project_on: Callable[..., None], redis_server: RedisServer
) -> None:
    """cache_page renders and a cache-using view answers 200 with Redis dead."""
    project_on()
    client = Client()
    redis_server.kill()
    first, second = client.get("/page"), client.get("/page")
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.content != second.content  # rendered twice: nothing was cached
    assert client.get("/counter").json() == {"hits": 0}


def test_session_round_trip(project_on: Callable[..., None], redis_server: RedisServer) -> None:
    """A session is stored signed in Redis under the prefix, with the expiry age as TTL."""
    project_on()
    client = Client()
    assert client.get("/login?name=grace").status_code == 200
    body = client.get("/session").json()
    assert body["name"] == "grace"
    admin = get_admin(redis_server)
    key = f"django.session:{body['key']}"
    assert admin.exists(key)
    assert 0 < admin.ttl(key) <= settings.SESSION_COOKIE_AGE
    admin.close()


def get_admin(server: RedisServer) -> Any:
    import redis

    return redis.Redis(**server.client_kwargs())


def test_session_outage_is_anonymous_and_saving_is_503(
    project_on: Callable[..., None], redis_server: RedisServer
) -> None:
    """During an outage a session read is anonymous (200); a session write is a 503."""
    project_on()
    client = Client()
    client.get("/login?name=grace")
    redis_server.kill()
    key = client.cookies["sessionid"].value
    anonymous = client.get("/session")
    assert anonymous.status_code == 200
    assert anonymous.json()["name"] is None
    assert "sessionid" not in anonymous.cookies  # the cookie is neither deleted nor replaced
    assert client.cookies["sessionid"].value == key
    refused = client.get("/login?name=eve")
    assert refused.status_code == 503
    assert 1 <= int(refused["Retry-After"]) <= 30
    assert refused.json()["error"] == "temporarily_unavailable"
    assert "127.0.0.1" not in refused.content.decode()
    redis_server.restart()
    _wait_until(lambda: get_breaker("redis").current_state != "open")  # half-open: a trial
    assert client.get("/login?name=ada").status_code == 200
    assert client.get("/session").json()["name"] == "ada"


def test_session_survives_a_pause(
    project_on: Callable[..., None], redis_server: RedisServer
) -> None:
    """A session read during a pause is anonymous; after resume the visitor is back."""
    project_on()
    client = Client()
    client.get("/login?name=grace")
    redis_server.pause()
    try:
        assert client.get("/session").json()["name"] is None
    finally:
        redis_server.resume()
    _wait_until(lambda: client.get("/session").json()["name"] == "grace")


def test_readiness_hides_the_target_unless_details(
    project_on: Callable[..., None], redis_server: RedisServer
) -> None:
    """/ready says status and breaker state; /private/ready (details=True) adds the target."""
    project_on()
    client = Client()
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "checks": {"redis": {"healthy": True, "state": "closed", "write_state": "closed"}},
    }
    assert "127.0.0.1" not in ready.content.decode()
    detailed = client.get("/private/ready").json()
    assert str(redis_server.port) in detailed["checks"]["redis"]["target"]
    assert client.get("/live").json()["status"] == "alive"
    redis_server.kill()
    degraded = client.get("/ready")
    assert degraded.status_code == 503
    assert degraded.json()["status"] == "degraded"
    assert "error" not in degraded.json()["checks"]["redis"]
    assert "error" in client.get("/private/ready").json()["checks"]["redis"]
    assert client.get("/live").status_code == 200


def test_serve_stale_answers_from_the_l1_during_an_outage(
    project_on: Callable[..., None], redis_server: RedisServer
) -> None:
    """With STALE_FOR, values read before the outage are served; unread keys miss."""
    project_on(STALE_FOR=60)
    cache = caches["default"]
    cache.set_many({"a": {"n": [1]}, "b": 2, "unread": 3})
    assert cache.get("a") == {"n": [1]}
    assert cache.get_many(["b"]) == {"b": 2}
    redis_server.kill()
    served = stale_served()
    stale = cache.get("a")
    assert stale == {"n": [1]}
    stale["n"].append(2)  # each caller gets its own copy, as from Redis
    assert cache.get("a") == {"n": [1]}
    assert cache.get_many(["a", "b", "unread"]) == {"a": {"n": [1]}, "b": 2}
    assert cache.get("unread", "dflt") == "dflt"
    assert stale_served() == served + 4


def test_serve_stale_is_bounded_by_age(
    project_on: Callable[..., None], redis_server: RedisServer
) -> None:
    """A value older than STALE_FOR is not served."""
    project_on(STALE_FOR=0.2)
    cache = caches["default"]
    cache.set("k", "v")
    assert cache.get("k") == "v"
    redis_server.kill()
    assert cache.get("k") == "v"
    time.sleep(0.3)
    assert cache.get("k", "dflt") == "dflt"


def test_nothing_changed_during_an_outage_is_served_stale(
    project_on: Callable[..., None], redis_server: RedisServer
) -> None:
    """A delete or set that did not reach Redis blocks the key; clear empties the L1."""
    project_on(STALE_FOR=60)
    cache = caches["default"]
    cache.set_many({"deleted": 1, "replaced": 2, "other": 3, "kept": 4})
    assert cache.get_many(["deleted", "replaced", "other", "kept"]) == {
        "deleted": 1,
        "replaced": 2,
        "other": 3,
        "kept": 4,
    }
    redis_server.kill()
    assert cache.delete("deleted") is False
    assert cache.set("replaced", 20) is None
    assert cache.get("deleted") is None
    assert cache.get("replaced") is None
    assert cache.get("kept") == 4
    assert cache.clear() is False
    assert cache.get("other") is None
    redis_server.restart()
    _wait_until(lambda: get_breaker("redis").current_state != "open")
    _wait_until(lambda: cache.set("replaced", 30) is None and cache.get("replaced") == 30)
    redis_server.kill()
    assert cache.get("replaced") == 30  # a write that reached Redis unblocked the key


def test_serve_stale_keeps_djangos_results_when_healthy(project_on: Callable[..., None]) -> None:
    """With an L1 the healthy results are still Django's own."""
    project_on(STALE_FOR=60)
    assert _scenario(caches["builtin"]) == _scenario(caches["default"])


def test_bad_stale_options_name_the_option(project_on: Callable[..., None]) -> None:
    """STALE_FOR and the L1 bounds are validated with the option's name."""
    from redisguard import ConfigError

    project_on(STALE_FOR=-1)
    with pytest.raises(ConfigError, match="STALE_FOR"):
        caches["default"].get("k")
    project_on(STALE_FOR=1, L1_MAX_ENTRIES=0)
    with pytest.raises(ConfigError, match=r"L1_MAX_ENTRIES.*max_entries"):
        caches["default"].get("k")


@pytest.mark.parametrize(
    "middleware",
    [
        "redisguard.django.middleware.SessionMiddleware",
        "redisguard.django.middleware.UnavailableMiddleware",
    ],
)
def test_a_view_that_raises_unavailable_answers_503(
    project_on: Callable[..., None], redis_server: RedisServer, middleware: str
) -> None:
    """Either middleware turns TemporarilyUnavailableError from a view into 503 + Retry-After."""
    project_on()
    with override_settings(MIDDLEWARE=[middleware]):
        client = Client()
        assert client.get("/incr").json() == {"n": 1}
        redis_server.kill()
        refused = client.get("/incr")
    assert refused.status_code == 503
    assert 1 <= int(refused["Retry-After"]) <= 30
    assert refused.json() == {
        "error": "temporarily_unavailable",
        "retry_after": int(refused["Retry-After"]),
    }


def test_session_store_api(project_on: Callable[..., None], redis_server: RedisServer) -> None:
    """SessionStore follows Django's contract: create, save, exists, cycle_key, delete."""
    from django.contrib.sessions.backends.base import UpdateError

    from redisguard.django.sessions import SessionStore

    project_on()
    session = SessionStore()
    assert session.session_key is None
    session["cart"] = [1, 2]
    session.save()
    key = session.session_key
    assert key is not None
    assert session.exists(key)
    assert SessionStore(key)["cart"] == [1, 2]
    session.cycle_key()
    assert session.session_key != key
    assert not session.exists(key)
    assert SessionStore(session.session_key)["cart"] == [1, 2]
    assert SessionStore("no-such-session-key-000000000000").load() == {}
    gone = SessionStore(session.session_key)
    assert gone["cart"] == [1, 2]  # loaded now, deleted below
    session.delete()
    assert not session.exists(gone.session_key)
    gone["cart"] = []
    with pytest.raises(UpdateError):
        gone.save()
    SessionStore.clear_expired()
    SessionStore().delete()  # no key: nothing to do


def test_session_delete_during_an_outage_raises(
    project_on: Callable[..., None], redis_server: RedisServer
) -> None:
    """Logging out during an outage raises: the session was not deleted."""
    from redisguard.django.sessions import SessionStore

    project_on()
    session = SessionStore()
    session["user"] = 1
    session.save()
    redis_server.kill()
    loaded = SessionStore(session.session_key)
    assert loaded.load() == {}
    assert loaded.redis_unavailable
    with pytest.raises(TemporarilyUnavailableError):
        loaded.flush()
    with pytest.raises(TemporarilyUnavailableError):
        SessionStore().save()


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ([], "REDISGUARD_SESSIONS must be a dict"),
        ({"LOCATON": "redis://x"}, "LOCATON"),
        ({"BREAKER_CONFIG": "fast"}, "BREAKER_CONFIG"),
        ({"BREAKER_CONFIG": {"treshold": 1}}, "BREAKER_CONFIG"),
    ],
)
def test_bad_session_settings_name_the_setting(value: Any, named: str) -> None:
    """A wrong REDISGUARD_SESSIONS is a ConfigError naming what is wrong."""
    from redisguard import ConfigError
    from redisguard.django.sessions import SessionStore

    with override_settings(REDISGUARD_SESSIONS=value), pytest.raises(ConfigError, match=named):
        SessionStore()


def test_the_core_never_imports_django() -> None:
    """Importing redisguard and its non-Django modules leaves Django unimported."""
    import os
    import subprocess
    import sys

    code = (
        "import sys, redisguard, redisguard.stores, redisguard.health, redisguard.ratelimit, "
        "redisguard.asgi, redisguard.testing, redisguard._cli, redisguard._l1\n"
        "assert 'django' not in sys.modules, sorted(m for m in sys.modules if 'django' in m)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
    done = subprocess.run(
        [sys.executable, "-c", "import redisguard.django, sys; print('django' in sys.modules)"],
        check=True,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == "True"


def test_each_operation_can_have_its_own_breaker_and_retry(
    project_on: Callable[..., None], redis_server: RedisServer
) -> None:
    """OPERATIONS gives get its own breaker: reads failing open it, not the writes' breaker."""
    project_on(OPERATIONS={"get": {"BREAKER": "cache-reads", "RETRY": None}})
    cache = caches["default"]
    cache.set("k", 1)
    assert cache.get("k") == 1
    redis_server.kill()
    cache.get("k")
    cache.get("k")
    assert get_breaker("cache-reads").current_state == "open"
    assert get_breaker("redis").current_state == "closed"
    body = Client().get("/private/ready").json()
    assert set(body["checks"]) == {"redis", "cache-reads"}
    redis_server.restart()
    _wait_until(lambda: get_breaker("cache-reads").current_state != "open")
    _wait_until(lambda: cache.set("k", 2) is None and cache.get("k") == 2)


@pytest.mark.parametrize(
    ("operations", "named"),
    [
        ([], "must be a dict"),
        ({"fetch": {}}, "unknown operation"),
        ({"get": {"RETRIES": 1}}, "BREAKER and/or RETRY"),
        ({"get": {"BREAKER": 1}}, "BREAKER'] must be a breaker name"),
        ({"get": {"RETRY": 3}}, "RETRY'] must be a RetryPolicy"),
    ],
)
def test_bad_operations_name_the_option(
    project_on: Callable[..., None], operations: Any, named: str
) -> None:
    """A wrong OPERATIONS entry is a ConfigError naming it."""
    from redisguard import ConfigError

    project_on(OPERATIONS=operations)
    with pytest.raises(ConfigError, match=re.escape(named)):
        caches["default"].get("k")
