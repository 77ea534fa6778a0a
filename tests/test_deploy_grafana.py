"""deploy/grafana: every query of the dashboard reads only metrics the engine exports.

"Exports" is the engine's metrics module (engine/observability/metrics.py,
with the _total/_bucket/_sum/_count series Prometheus sees) plus the recording
rules of deploy/prometheus/rules, plus Prometheus' own ``up``. A renamed metric
or a typo in a panel fails here instead of showing "No data" in production.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import yaml
from test_deploy_promql import DEPLOY, known_names, metric_names

GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "inventory-engine.json"
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s"}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))  # collapsed rows nest their panels


def queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    for panel in panels(board["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} target {target['refId']}", target["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            # label_values(selector, label): the selector is the PromQL part.
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
            assert inner, f"variable {variable['name']}: unexpected query {query!r}"
            yield f"variable {variable['name']}", inner.group(1)


def unknown_metrics(board: dict[str, Any]) -> dict[str, set[str]]:
    known = known_names()
    out = {}
    for where, expr in queries(board):
        unknown = metric_names(expr) - known
        if unknown:
            out[where] = unknown
    return out


def test_every_query_reads_metrics_the_engine_exports() -> None:
    board = dashboard()
    assert sum(1 for _ in queries(board)) >= 30
    assert unknown_metrics(board) == {}


def test_the_check_catches_an_unknown_metric() -> None:
    board = dashboard()
    board["panels"].append(
        {
            "title": "typo",
            "targets": [{"refId": "A", "expr": "sum(rate(inventory_rpc_handeld_total[5m]))"}],
        }
    )
    assert unknown_metrics(board) == {"panel 'typo' target A": {"inventory_rpc_handeld_total"}}


def test_the_dashboard_covers_what_an_sre_needs() -> None:
    read = set().union(*(metric_names(expr) for _, expr in queries(dashboard())))
    assert {
        # RED per method
        "inventory_rpc_handled_total",
        "job_service_method:inventory_rpc_errors:ratio_rate5m",
        "inventory_rpc_duration_seconds_bucket",
        # reservations per channel and outcome, out-of-stock, shortages
        "inventory_reservations_total",
        "inventory_out_of_stock_rejections_total",
        "inventory_sold_out_fast_path_hits_total",
        "inventory_shortage_rows",
        # Redis, view lag, workers
        "inventory_redis_script_duration_seconds_bucket",
        "inventory_view_lag_seconds",
        "inventory_worker_info",
    } <= read
    by_method = [
        expr for _, expr in queries(dashboard()) if "inventory_rpc_" in expr and "by (method" in expr
    ]
    assert len(by_method) >= 4


def test_variables_and_data_sources_are_defined() -> None:
    board = dashboard()
    defined = {variable["name"] for variable in board["templating"]["list"]}
    assert {"datasource", "job", "instance"} <= defined
    ids = [panel["id"] for panel in panels(board["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for where, expr in queries(board):
        used = set(re.findall(r"\$\{?(\w+)", expr))
        assert used <= defined | BUILTIN_VARIABLES, f"{where} uses undefined variables {used - defined}"
    for panel in panels(board["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["gridPos"]["x"] >= 0 and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24


def test_provisioning_points_grafana_at_prometheus_and_the_dashboards() -> None:
    sources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["url"].startswith("http")
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "inventory-engine.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
    assert dashboard()["uid"] == "inventory-engine"
