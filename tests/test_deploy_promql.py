"""Which metrics a PromQL expression reads, and which names deploy/ may use.

Shared by the Prometheus rule and Grafana dashboard tests (imported as
``test_deploy_promql``), and tested here on expressions shaped like theirs.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from engine.observability import metrics

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))

# Series Prometheus itself adds to every scrape target.
PROMETHEUS_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
     "inf", "nan", "atan2"}
)  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_VARIABLE = re.compile(r"\$\{?\w+\}?")
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_OFFSET = re.compile(r"\boffset\s+-?\w+")
_IDENTIFIER = re.compile(r"(?<![\w:.])[a-zA-Z_:][\w:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (functions, keywords and label names left out)."""
    text = _STRING.sub('""', expr)
    text = _VARIABLE.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _OFFSET.sub(" ", text)
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group()
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        if name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def rules() -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            out.extend(group["rules"])
    return out


def recorded_names() -> frozenset[str]:
    return frozenset(str(rule["record"]) for rule in rules() if "record" in rule)


def known_names() -> frozenset[str]:
    """What deploy/ may query: the engine's series, the recording rules', Prometheus' own."""
    return metrics.series_names() | recorded_names() | PROMETHEUS_SERIES


def test_metric_names_of_dashboard_shaped_queries() -> None:
    assert metric_names(
        "histogram_quantile(0.99, sum by (method, le) "
        '(rate(inventory_rpc_duration_seconds_bucket{job=~"$job",instance=~"$instance"}[$__rate_interval])))'
    ) == {"inventory_rpc_duration_seconds_bucket"}
    assert metric_names(
        "job:inventory_rpc_errors:ratio_rate5m > 0.01 and on (job) job:inventory_rpc_handled:rate5m > 1"
    ) == {"job:inventory_rpc_errors:ratio_rate5m", "job:inventory_rpc_handled:rate5m"}
    assert metric_names('time() - max(a_timestamp_seconds{instance=~"a|b"} > 0)') == {"a_timestamp_seconds"}
    assert metric_names("sum(x_total offset 5m) / sum(y_total) * 1e-3 == bool 1") == {"x_total", "y_total"}
    assert metric_names('sum(rate(x_total[5m])) by (code) or vector(0) unless on() up{job="a:b"}') == {
        "x_total",
        "up",
    }
    assert metric_names('max(v{le="+Inf"}) > Inf') == {"v"}


def test_known_names_are_the_engines_and_the_rules() -> None:
    names = known_names()
    assert "inventory_rpc_handled_total" in names
    assert "job:inventory_rpc_errors:ratio_rate5m" in names
    assert "inventory_rpc_handled" not in names
