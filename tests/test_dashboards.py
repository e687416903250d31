"""The Grafana dashboard and the Prometheus alert rules in examples/, against a real scrape.

A guarded workload goes through a real outage of a private ``redis-server`` (killed and
restarted: the breaker opens and closes, calls fall back, a call is retried, the retry budget
denies one, the rate limiter decides locally, ``@cached`` serves a stale value, the canary
finds a mismatch, chaos injects a fault, a wrong password is refused) while OpenTelemetry's
Prometheus exporter serves ``/metrics`` on a loopback port. The scrape is parsed with
``prometheus_client``'s parser, and every metric name and label that the dashboard's PromQL and
the alert expressions use must be in it: a small PromQL tokenizer pulls out the vector
selectors (names, matcher labels) and the grouping labels (``by``, ``on``...). A renamed metric
or label is reported, which a test proves by renaming some.

The JSON and YAML are also checked for structure, and ``promtool`` (Debian's ``prometheus``
package) checks the rules and runs ``examples/prometheus/alerts_test.yml`` when installed.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from redis.backoff import NoBackoff
from redis.retry import Retry

from redisguard import BreakerConfig, RetryPolicy, chaos, get_breaker, redis_guarded
from redisguard.cache import cached
from redisguard.ratelimit import RateLimiter
from redisguard.testing import RedisServer, free_port, reset_breakers
from redisguard.testing.plugin import _start

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "examples" / "grafana" / "redisguard.json"
ALERTS = ROOT / "examples" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "examples" / "prometheus" / "alerts_test.yml"
DOCS_PAGE = ROOT / "docs" / "observability" / "dashboards.md"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


# The prometheus extra needs a newer SDK than the rest (see setup.cfg): only the scrape skips.
HAS_PROMETHEUS = _installed("opentelemetry.exporter.prometheus")
PROMETHEUS_MISSING = "the prometheus extra (opentelemetry-exporter-prometheus) is not installed"
needs_prometheus = pytest.mark.skipif(not HAS_PROMETHEUS, reason=PROMETHEUS_MISSING)
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not found: `apt-get install prometheus` (Debian) provides it",
)

DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
# Labels Prometheus itself attaches to every scraped series: queries may group by them.
TARGET_LABELS = frozenset({"job", "instance"})


# -- a PromQL tokenizer: which metrics and labels an expression uses -----------------------------
# (str.split: the lists read like the PromQL documentation's)
FUNCTIONS = frozenset(
    """
    abs absent absent_over_time avg_over_time ceil changes clamp clamp_max clamp_min
    count_over_time day_of_month day_of_week day_of_year days_in_month delta deriv end exp
    floor histogram_avg histogram_count histogram_fraction histogram_quantile
    histogram_stddev histogram_stdvar histogram_sum holt_winters hour idelta increase irate
    label_join label_replace last_over_time ln log10 log2 mad_over_time max_over_time
    min_over_time minute month predict_linear present_over_time quantile_over_time rate
    resets round scalar sgn sort sort_by_label sort_by_label_desc sort_desc sqrt start
    stddev_over_time stdvar_over_time sum_over_time time timestamp vector year
    """.split()  # noqa: SIM905
)
AGGREGATIONS = frozenset(
    """
    sum min max avg count stddev stdvar topk bottomk quantile count_values group limitk
    limit_ratio
    """.split()  # noqa: SIM905
)
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"})
_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
    | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
    | (?P<variable>\$\{[^}]*\}|\$\w+|\[\[\w+\]\])
    | (?P<duration>\d+(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*)
    | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
    | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){}\[\],:@])
    """,
    re.VERBOSE,
)
_MATCH_OPS = frozenset({"=", "!=", "=~", "!~"})


class PromQLError(ValueError):
    """The expression is not PromQL this tokenizer understands."""


@dataclass
class Refs:
    """What one expression reads: (metric, labels in its matchers), and grouping labels."""

    selectors: list[tuple[str, frozenset[str]]] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)

    @property
    def metrics(self) -> set[str]:
        return {metric for metric, _ in self.selectors}


def tokenize(expr: str) -> list[tuple[str, str]]:
    """(kind, text) tokens, spaces dropped; Grafana's ``$variables`` are one token."""
    tokens = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise PromQLError(f"cannot read {expr[pos : pos + 20]!r} at offset {pos} of {expr!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            tokens.append((kind, match.group()))
        pos = match.end()
    return tokens


def _label_list(tokens: list[tuple[str, str]], i: int, after: str) -> tuple[list[str], int]:
    """Read ``( label, label, ... )`` starting at tokens[i]; return the labels and the index
    past the closing parenthesis."""
    if i >= len(tokens) or tokens[i][1] != "(":
        raise PromQLError(f"{after!r} must be followed by a (label list)")
    labels = []
    i += 1
    while i < len(tokens) and tokens[i][1] != ")":
        kind, text = tokens[i]
        if kind != "ident":
            raise PromQLError(f"{text!r} in the label list of {after!r} is not a label name")
        labels.append(text)
        i += 1
        if i < len(tokens) and tokens[i][1] == ",":
            i += 1
    if i >= len(tokens):
        raise PromQLError(f"the label list of {after!r} is not closed")
    return labels, i + 1


def _matchers(tokens: list[tuple[str, str]], i: int, metric: str) -> tuple[set[str], int]:
    """Read ``{ label op "value", ... }`` starting at tokens[i] (the brace)."""
    labels = set()
    i += 1
    while i < len(tokens) and tokens[i][1] != "}":
        if i + 2 >= len(tokens):
            raise PromQLError(f"the matchers of {metric} are not closed")
        (kind, label), (_, op), (value_kind, _) = tokens[i : i + 3]
        if kind != "ident" or op not in _MATCH_OPS or value_kind not in {"string", "variable"}:
            raise PromQLError(f"bad label matcher in {metric}{{...}} near {label!r} {op!r}")
        labels.add(label)
        i += 3
        if i < len(tokens) and tokens[i][1] == ",":
            i += 1
    if i >= len(tokens):
        raise PromQLError(f"the matchers of {metric} are not closed")
    return labels, i + 1


def promql_refs(expr: str) -> Refs:
    """The metrics (with their matcher labels) and the grouping labels ``expr`` uses.

    Functions, aggregations and keywords are told apart from metric names: an identifier is a
    metric unless it is one of those; a name followed by ``(`` that is no known function is an
    error, not a metric. Range and subquery brackets, strings and ``$variables`` are skipped.
    """
    tokens = tokenize(expr)
    refs = Refs()
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else None
        if kind == "op" and text == "[":
            while i < len(tokens) and tokens[i][1] != "]":
                i += 1
            i += 1
            continue
        if kind == "op" and text == "{":
            raise PromQLError(f"a selector without a metric name in {expr!r}")
        if kind != "ident":
            i += 1
            continue
        word = text.lower()
        if word in GROUPING:
            grouping, i = _label_list(tokens, i + 1, text)
            refs.grouping.update(grouping)
            continue
        if word in AGGREGATIONS:
            if following not in {"(", "by", "without"}:
                raise PromQLError(f"the aggregation {text!r} is not followed by ( or by/without")
        elif word in FUNCTIONS:
            if following != "(":
                raise PromQLError(f"the function {text!r} is not called")
        elif word in KEYWORDS:
            pass
        elif following == "(":
            raise PromQLError(f"{text!r} is called like a function but is no PromQL function")
        else:
            if following == "{":
                labels, end = _matchers(tokens, i + 1, text)
                refs.selectors.append((text, frozenset(labels)))
                i = end
                continue
            refs.selectors.append((text, frozenset()))
        i += 1
    if not refs.selectors:
        raise PromQLError(f"no metric in {expr!r}")
    return refs


_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(.+?)\s*,\s*(\w+)\s*\)\s*$")


def variable_promql(query: str) -> str:
    """A Grafana ``label_values(metric, label)`` variable query as PromQL with the same refs."""
    match = _LABEL_VALUES.match(query)
    if match is None:
        raise PromQLError(f"not a label_values(metric, label) query: {query!r}")
    return f"count by ({match.group(2)}) ({match.group(1)})"


# -- what the dashboard and the rules query ----------------------------------------------------
def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def load_rules() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return data


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(dashboard: dict[str, Any]) -> dict[str, str]:
    """Where -> PromQL, for every target, annotation query and query variable."""
    queries = {}
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            queries[f"panel {panel.get('title')!r} target {target.get('refId')}"] = target["expr"]
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if "expr" in annotation:
            queries[f"annotation {annotation['name']!r}"] = annotation["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            queries[f"variable {variable['name']!r}"] = variable_promql(text)
    return queries


def rule_queries(rules: dict[str, Any]) -> dict[str, str]:
    return {
        f"alert {rule['alert']!r}": rule["expr"]
        for group in rules["groups"]
        for rule in group["rules"]
    }


def check_against_scrape(queries: dict[str, str], scraped: dict[str, set[str]]) -> list[str]:
    """Problems: every metric a query reads must be a scraped sample name, every matcher
    label a label of that metric, every grouping label a label of a metric in the query (or
    one Prometheus adds at scrape time: job, instance)."""
    problems = []
    for where, expr in queries.items():
        try:
            refs = promql_refs(expr)
        except PromQLError as exc:
            problems.append(f"{where}: {exc}")
            continue
        available = set(TARGET_LABELS)
        missing = False
        for metric, labels in refs.selectors:
            if metric not in scraped:
                near = sorted(n for n in scraped if n.split("_")[0] == metric.split("_")[0])
                problems.append(f"{where}: metric {metric} is not in the scrape (near: {near})")
                missing = True
                continue
            have = scraped[metric] | TARGET_LABELS | {"__name__"}
            problems += [
                f"{where}: {metric} has no label {label!r} (it has {sorted(scraped[metric])})"
                for label in sorted(labels - have)
            ]
            available |= scraped[metric]
        if not missing:  # (a missing metric's labels are unknown: it is the problem)
            problems += [
                f"{where}: grouping label {label!r} is on none of {sorted(refs.metrics)}"
                for label in sorted(refs.grouping - available)
            ]
    return problems


# -- the real scrape -------------------------------------------------------------------------------
FAST_RETRY = RetryPolicy(attempts=2, backoff=0, max_backoff=0, jitter=0, deadline=2.0)
PASSWORD = "dash-board-secret"


def plain_client(url: str) -> redis.Redis:
    """redis-py with short timeouts and its own retry off (the guard does the retrying)."""
    client: redis.Redis = redis.Redis.from_url(
        url, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    return client


def fetch_metrics(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        body: bytes = response.read()
    return body.decode()


@dataclass
class Scrape:
    text: str
    labels: dict[str, set[str]]  # sample name -> label names
    values: dict[tuple[str, frozenset[tuple[str, str]]], float]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        from prometheus_client.parser import text_string_to_metric_families

        labels: dict[str, set[str]] = {}
        values = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels.setdefault(sample.name, set()).update(sample.labels)
                values[sample.name, frozenset(sample.labels.items())] = sample.value
        return cls(text, labels, values)

    def value(self, metric: str, /, **labels: str) -> float:
        return self.values[metric, frozenset(labels.items())]


def drive_outage(server: RedisServer, auth_url: str, provider: Any) -> None:
    """One outage of ``server`` through every component the dashboard shows."""
    main = get_breaker(
        "dash.main", BreakerConfig(failure_threshold=3, reset_timeout=1.0, max_concurrent_calls=8)
    )
    get_breaker(
        "dash.budget",
        BreakerConfig(failure_threshold=100, retry_budget_ratio=0, retry_budget_min_per_second=0),
    )
    get_breaker("dash.auth", BreakerConfig(failure_threshold=100))
    client = plain_client(server.url)
    dead = plain_client(f"redis://127.0.0.1:{free_port()}/0")
    wrong_password = plain_client(auth_url)
    common: dict[str, Any] = {"meter_provider": provider}

    @redis_guarded(name="price.get", breaker=main, fallback="list", retry=FAST_RETRY, **common)
    def get_price() -> str:
        value = client.get("price")
        return "list" if value is None else value.decode()

    @redis_guarded(name="stock.get", breaker="dash.budget", fallback=0, retry=FAST_RETRY, **common)
    def get_stock() -> Any:
        return dead.get("stock")

    @redis_guarded(name="secret.get", breaker="dash.auth", fallback=None, **common)
    def get_secret() -> Any:
        return wrong_password.get("secret")

    # The fallback answers an int where Redis answers bytes: the canary's default comparison
    # calls that a mismatch.
    @redis_guarded(name="flag.get", breaker=main, fallback=0, canary=1.0, **common)
    def get_flag() -> Any:
        return client.get("flag")

    @redis_guarded(name="chaos.get", breaker="dash.budget", fallback=None, retry=None, **common)
    def get_chaos() -> Any:
        return client.get("chaos")

    limiter = RateLimiter(
        client, limit=2, window=60, on_unavailable="local", name="dash.api", breaker=main, **common
    )

    @cached(client, ttl=60, stale_for=600, name="dash.profile", breaker=main, **common)
    def profile(user: int) -> dict[str, int]:
        return {"user": user}

    client.set("price", "9.99")
    client.set("flag", "on")
    assert [get_price() for _ in range(3)] == ["9.99"] * 3
    assert [limiter.hit("10.0.0.1").allowed for _ in range(3)] == [True, True, False]
    assert profile(1) == {"user": 1}  # a miss: filled in Redis and the L1
    assert get_flag() == b"on"
    assert get_stock() == 0  # refused, and the empty retry budget denies the retry
    assert get_secret() is None  # WRONGPASS: misconfigured, not retried
    chaos.enable("op=chaos.get,outage=5s")
    try:
        assert get_chaos() is None
    finally:
        chaos.kill()

    server.kill()
    assert [get_price() for _ in range(4)] == ["list"] * 4  # a retry, then the circuit opens
    assert main.current_state == "open"
    assert profile(1) == {"user": 1}  # served stale from the L1
    assert [limiter.hit("10.0.0.2").degraded for _ in range(2)] == [True, True]

    server.start()
    time.sleep(1.1)  # past reset_timeout: the next call is the half-open trial
    assert get_price() == "list"  # the restarted server is empty: Redis answered "not there"
    assert main.current_state == "closed"
    for c in (client, dead, wrong_password):
        c.close()


@pytest.fixture(scope="module")
def scrape() -> Iterator[Scrape]:
    """``/metrics`` of the exporter after the outage (one workload for the module)."""
    if not HAS_PROMETHEUS:
        pytest.skip(PROMETHEUS_MISSING)
    import prometheus_client
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider

    registry = prometheus_client.CollectorRegistry()
    reader = PrometheusMetricReader(
        disable_target_info=True, scope_info_enabled=False, registry=registry
    )
    provider = MeterProvider(metric_readers=[reader])
    http_server, thread = prometheus_client.start_http_server(
        0, addr="127.0.0.1", registry=registry
    )
    url = f"http://127.0.0.1:{http_server.server_port}/metrics"
    server = RedisServer()
    auth_server = RedisServer(password=PASSWORD)
    reset_breakers()
    try:
        _start(server)
        _start(auth_server)
        auth_url = f"redis://:wrong-{PASSWORD}@127.0.0.1:{auth_server.port}/0"
        drive_outage(server, auth_url, provider)
        # The canary compares on its worker thread (it polls every 50 ms): wait for it.
        deadline = time.monotonic() + 10
        mismatch = (
            "redisguard_canary_checks_total",
            frozenset({("operation", "flag.get"), ("result", "mismatch")}),
        )
        while True:
            result = Scrape.parse(fetch_metrics(url))
            if result.values.get(mismatch, 0) >= 1 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        yield result
    finally:
        reset_breakers()
        server.stop()
        auth_server.stop()
        http_server.shutdown()
        http_server.server_close()
        thread.join(timeout=5)
        provider.shutdown()


@needs_prometheus
def test_the_outage_left_every_series_the_dashboard_shows(scrape: Scrape) -> None:
    """The workload really went through each state the panels and alerts are about."""
    v = scrape.value
    for old, new in (("closed", "open"), ("open", "half-open"), ("half-open", "closed")):
        assert (
            v("circuit_breaker_transitions_total", name="dash.main", **{"from": old, "to": new})
            == 1
        )
    assert v("circuit_breaker_state", name="dash.main") == 0
    assert v("circuit_breaker_failures_total", name="dash.main") >= 3
    assert v("circuit_breaker_rejections_total", name="dash.main") >= 1
    assert v("redis_operations_total", operation="price.get", result="fallback") == 4
    assert v("redis_operation_retries_total", operation="price.get") >= 1
    assert (
        v("redis_degraded_call_duration_seconds_count", operation="price.get", result="fallback")
        >= 1
    )
    assert v("redis_retries_denied_total", breaker="dash.budget") == 1
    assert v("redis_bulkhead_in_flight", breaker="dash.main") == 0
    assert v("ratelimit_decisions_total", limiter="dash.api", result="allowed") == 2
    assert v("ratelimit_decisions_total", limiter="dash.api", result="denied") == 1
    assert v("ratelimit_decisions_total", limiter="dash.api", result="local_allowed") == 2
    assert v("cache_stale_served_total", cache="dash.profile") == 1
    assert v("redisguard_canary_checks_total", operation="flag.get", result="mismatch") == 1
    assert v("redis_operation_failures_total", operation="secret.get", kind="misconfigured") == 1
    assert v("redis_operation_failures_total", operation="secret.get", kind="transient") == 0
    assert v("redis_operation_failures_total", operation="price.get", kind="transient") >= 3
    assert v("redisguard_chaos_injected_total", operation="chaos.get", kind="outage") == 1
    assert v("circuit_breaker_host_shared", name="dash.main") == 0
    assert PASSWORD not in scrape.text


@needs_prometheus
def test_every_dashboard_query_reads_scraped_names(scrape: Scrape) -> None:
    queries = dashboard_queries(load_dashboard())
    assert len(queries) >= 25
    assert check_against_scrape(queries, scrape.labels) == []


@needs_prometheus
def test_every_alert_expression_reads_scraped_names(scrape: Scrape) -> None:
    queries = rule_queries(load_rules())
    assert len(queries) == 5
    assert check_against_scrape(queries, scrape.labels) == []


@needs_prometheus
def test_a_renamed_metric_or_label_is_reported(scrape: Scrape) -> None:
    """The check fails when a query names what the exporter does not serve."""
    dashboard = load_dashboard()
    broken = copy.deepcopy(dashboard)
    renamed = 0
    for panel in all_panels(broken):
        for target in panel.get("targets", []):
            if "cache_stale_served_total" in target["expr"]:
                # The OpenTelemetry instrument's name, without the exporter's _total suffix.
                target["expr"] = target["expr"].replace(
                    "cache_stale_served_total", "cache_stale_served"
                )
                renamed += 1
            if "sum by (kind)" in target["expr"]:
                target["expr"] = target["expr"].replace("sum by (kind)", "sum by (error_kind)")
                renamed += 1
            if "circuit_breaker_state{" in target["expr"]:
                target["expr"] = target["expr"].replace("{name=", "{breaker=")
                renamed += 1
    assert renamed == 3
    problems = check_against_scrape(dashboard_queries(broken), scrape.labels)
    assert len(problems) == 3, problems
    assert any("metric cache_stale_served is not in the scrape" in p for p in problems)
    assert any("grouping label 'error_kind'" in p for p in problems)
    assert any("circuit_breaker_state has no label 'breaker'" in p for p in problems)

    rules = load_rules()
    rule = rules["groups"][0]["rules"][-1]
    rule["expr"] = rule["expr"].replace("redis_operation_failures_total", "redis_errors_total")
    (problem,) = check_against_scrape(rule_queries(rules), scrape.labels)
    assert problem.startswith("alert 'RedisguardMisconfigured': metric redis_errors_total")


# -- the tokenizer on its own ---------------------------------------------------------------------
def test_tokenizer_finds_metrics_matcher_labels_and_grouping_labels() -> None:
    refs = promql_refs(
        "histogram_quantile(0.99, sum by (le, operation) (rate("
        'redis_degraded_call_duration_seconds_bucket{operation=~"$operation"}[$__rate_interval])))'
        " / on (job) group_left (name) max without (instance) "
        '(circuit_breaker_state{name!="x", job="api"} offset 5m) > bool 0.5'
    )
    assert refs.selectors == [
        ("redis_degraded_call_duration_seconds_bucket", frozenset({"operation"})),
        ("circuit_breaker_state", frozenset({"name", "job"})),
    ]
    assert refs.grouping == {"le", "operation", "job", "name", "instance"}
    assert promql_refs("up").selectors == [("up", frozenset())]
    assert promql_refs("increase(a[10m:1m])").metrics == {"a"}


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("rates(x[5m])", "'rates' is called like a function"),
        ('{__name__="x"}', "a selector without a metric name"),
        ('x{name "y"}', "bad label matcher"),
        ("sum by name (x)", "must be followed by a (label list)"),
        ("rate", "the function 'rate' is not called"),
        ("1 + 1", "no metric"),
        ("x # y", "cannot read"),
    ],
)
def test_tokenizer_refuses_what_it_cannot_read(expr: str, message: str) -> None:
    with pytest.raises(PromQLError, match=re.escape(message)):
        promql_refs(expr)


# -- structure ------------------------------------------------------------------------------------
def dashboard_problems(dashboard: dict[str, Any]) -> list[str]:
    """What would keep the JSON from importing and working with any Prometheus data source."""
    problems = []
    if not 36 <= dashboard.get("schemaVersion", 0) <= 41:
        problems.append(f"schemaVersion {dashboard.get('schemaVersion')} is not 36..41")
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    ds = variables.get("DS_PROMETHEUS", {})
    if ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append("no datasource variable DS_PROMETHEUS of type prometheus")
    breaker = variables.get("breaker", {})
    if breaker.get("type") != "query" or breaker.get("datasource") != DATASOURCE:
        problems.append("the breaker variable is not a query on ${DS_PROMETHEUS}")
    ids = [p.get("id") for p in all_panels(dashboard)]
    if len(ids) != len(set(ids)):
        problems.append(f"panel ids repeat: {ids}")
    for panel in all_panels(dashboard):
        title = panel.get("title")
        pos = panel.get("gridPos", {})
        if pos.get("x", 0) + pos.get("w", 0) > 24 or pos.get("h", 0) < 1:
            problems.append(f"panel {title!r}: gridPos {pos} does not fit 24 columns")
        if panel.get("type") == "row":
            continue
        if panel.get("datasource") != DATASOURCE:
            problems.append(
                f"panel {title!r}: datasource {panel.get('datasource')} "
                "is not the ${DS_PROMETHEUS} variable"
            )
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"panel {title!r} has no targets")
        if len({t.get("refId") for t in targets}) != len(targets):
            problems.append(f"panel {title!r}: refIds repeat")
        for target in targets:
            if not str(target.get("expr", "")).strip():
                problems.append(f"panel {title!r} target {target.get('refId')} has no expr")
            if target.get("datasource") != DATASOURCE:
                problems.append(
                    f"panel {title!r} target {target.get('refId')}: datasource is "
                    "not the ${DS_PROMETHEUS} variable"
                )
    return problems


def test_dashboard_is_importable_and_uses_the_datasource_variable() -> None:
    dashboard = load_dashboard()
    assert dashboard_problems(dashboard) == []
    assert dashboard["uid"] == "redisguard"
    queries = dashboard_queries(dashboard)
    used = set().union(*(promql_refs(q).metrics for q in queries.values()))
    # What the dashboard exists to show (the list).
    assert used >= {
        "circuit_breaker_state",
        "circuit_breaker_transitions_total",
        "circuit_breaker_failures_total",
        "circuit_breaker_successes_total",
        "redis_operations_total",
        "redis_degraded_call_duration_seconds_bucket",
        "redis_operation_retries_total",
        "redis_retries_denied_total",
        "ratelimit_decisions_total",
        "cache_stale_served_total",
        "circuit_breaker_host_shared",
        "redis_operation_failures_total",
        "redisguard_canary_checks_total",
    }


def test_breaker_panels_repeat_per_breaker_and_the_state_is_mapped() -> None:
    dashboard = load_dashboard()
    panels = dashboard["panels"]
    (row_index,) = [i for i, p in enumerate(panels) if p.get("repeat") == "breaker"]
    assert panels[row_index]["type"] == "row"
    next_row = next(i for i, p in enumerate(panels) if i > row_index and p["type"] == "row")
    for panel in panels[row_index + 1 : next_row]:  # the panels the row repeats
        for target in panel["targets"]:
            assert "$breaker" in target["expr"], (panel["title"], target["expr"])
    (state,) = [p for p in panels if p["type"] == "state-timeline"]
    (mapping,) = state["fieldConfig"]["defaults"]["mappings"]
    assert {k: v["text"] for k, v in mapping["options"].items()} == {
        "0": "closed",
        "1": "half-open",
        "2": "open",
    }


def test_dashboard_problems_are_reported() -> None:
    """The structure check can fail: a hard-wired data source and an empty target."""
    broken = load_dashboard()
    panel = next(p for p in broken["panels"] if p["type"] == "timeseries")
    panel["datasource"] = {"type": "prometheus", "uid": "my-prod-prometheus"}
    panel["targets"][0]["expr"] = " "
    problems = dashboard_problems(broken)
    assert len(problems) == 2, problems
    assert "is not the ${DS_PROMETHEUS} variable" in problems[0]
    assert "has no expr" in problems[1]


DURATION = re.compile(r"^(\d+(ms|[smhdwy]))+$")
EXPECTED_ALERTS = {
    "RedisguardBreakerOpen",
    "RedisguardBreakerFlapping",
    "RedisguardFallbackRatioHigh",
    "RedisguardCanaryMismatch",
    "RedisguardMisconfigured",
}


def test_alert_rules_have_the_documented_shape_and_thresholds() -> None:
    rules = load_rules()
    assert [g["name"] for g in rules["groups"]] == ["redisguard"]
    by_name = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    assert set(by_name) == EXPECTED_ALERTS
    for name, rule in by_name.items():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, name
        assert "for" not in rule or DURATION.match(rule["for"]), name
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, name
        runbook = annotations["runbook_url"]
        assert re.fullmatch(r"docs/(concepts|guides)/[a-z0-9-]+\.md", runbook), name
        assert (ROOT / runbook).is_file(), f"{name}: runbook {runbook} is not a docs page"
        assert promql_refs(rule["expr"]).metrics, name
    expr = {name: " ".join(rule["expr"].split()) for name, rule in by_name.items()}
    assert by_name["RedisguardBreakerOpen"]["for"] == "5m"
    assert expr["RedisguardBreakerOpen"].endswith("(circuit_breaker_state) >= 1")
    assert expr["RedisguardBreakerFlapping"].endswith("> 6")
    assert expr["RedisguardBreakerFlapping"].count("[10m]") == 2
    assert expr["RedisguardFallbackRatioHigh"].endswith("> 0.05")
    assert expr["RedisguardFallbackRatioHigh"].count("[5m]") == 2
    assert "[15m]" in expr["RedisguardCanaryMismatch"]
    assert 'kind="misconfigured"' in expr["RedisguardMisconfigured"]


def test_the_docs_page_names_every_alert() -> None:
    text = DOCS_PAGE.read_text(encoding="utf-8")
    for name in EXPECTED_ALERTS:
        assert f"`{name}`" in text, name
    assert "../assets/outage-timeline.png" in text
    assert (ROOT / "docs" / "assets" / "outage-timeline.png").stat().st_size > 10_000


@needs_promtool
def test_promtool_checks_the_rules_and_runs_their_unit_tests() -> None:
    assert PROMTOOL is not None
    checked = subprocess.run(
        [PROMTOOL, "check", "rules", str(ALERTS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 5 rules found" in checked.stdout
    tested = subprocess.run(
        [PROMTOOL, "test", "rules", ALERTS_TEST.name],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ALERTS_TEST.parent,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
