"""A real Prometheus scraping a real engine, through the project's own scrape config and rules.

The engine runs as ``inventory-engine serve`` (a child process, journal on
disk, audits every second) with ``--metrics-port``; Prometheus (Debian's
/usr/bin/prometheus) runs with deploy/prometheus/prometheus.yml, its target
pointed at that port, scraping and evaluating the rules every second. Both
listen on 127.0.0.1 only. Traffic goes in over gRPC; everything is checked
through Prometheus' HTTP API, as a dashboard or an alert would see it.

A missing prometheus binary fails these tests; it is never a reason to skip.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf.duration_pb2 import Duration
from test_deploy_grafana import dashboard, queries
from test_deploy_promql import PROMETHEUS_DIR, RULE_FILES

from engine._proto.inventory.v1 import inventory_service_pb2 as inv_pb
from engine._proto.inventory.v1 import inventory_service_pb2_grpc as inv_grpc
from engine._proto.inventory.v1 import network_service_pb2 as net_pb
from engine._proto.inventory.v1 import network_service_pb2_grpc as net_grpc
from engine._proto.inventory.v1 import supply_service_pb2 as sup_pb
from engine._proto.inventory.v1 import supply_service_pb2_grpc as sup_grpc
from engine.launcher import free_ports, start_server, wait_serving

# Hang guards, not measurements: how long to wait for a scrape, a rule
# evaluation or a process to start or stop before calling it broken.
READY_TIMEOUT_S = 60.0
SERIES_TIMEOUT_S = 60.0


def binary(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/bin")
    if path is None:
        pytest.fail(f"{name} is missing: install Debian's prometheus package (apt-get install prometheus)")
    return path


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Stack:
    grpc_target: str
    metrics_url: str
    prometheus_url: str
    prometheus_log: Path
    baseline: dict[str, float] = field(default_factory=dict)

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:  # 400 for a query Prometheus cannot parse
            raise AssertionError(f"{promql!r}: {exc.read().decode()}") from exc
        assert body["status"] == "success", body
        return body["data"]["result"]  # type: ignore[no-any-return]

    def value(self, promql: str) -> float | None:
        """The query's single value, or None while it has no result."""
        result = self.query(promql)
        if not result:
            return None
        assert len(result) == 1, f"{promql!r} returned {len(result)} series"
        return float(result[0]["value"][1])

    def wait_for(self, what: str, condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + SERIES_TIMEOUT_S
        while not condition():
            if time.monotonic() > deadline:
                log = self.prometheus_log.read_text()[-3000:]
                raise AssertionError(f"timed out waiting for {what}; Prometheus log:\n{log}")
            time.sleep(0.25)


def prometheus_config(metrics_port: int) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml, pointed at this engine, scraping every second."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s", scrape_timeout="1s")
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "inventory-engine"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
    config["scrape_configs"] = [job]
    config["rule_files"] = [str(path) for path in RULE_FILES]
    return config


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = binary("prometheus")
    tmp = tmp_path_factory.mktemp("prometheus-integration")
    grpc_port, metrics_port, prometheus_port = free_ports(3)
    engine = start_server(
        grpc_port,
        str(tmp / "engine-data"),
        ["--audit-interval", "1"],
        metrics_port=metrics_port,
    )
    processes = [engine]
    try:
        asyncio.run(wait_serving(f"127.0.0.1:{grpc_port}", process=engine))
        config_path = tmp / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(prometheus_config(metrics_port)))
        log_path = tmp / "prometheus.log"
        with log_path.open("wb") as log:
            server = subprocess.Popen(
                [
                    prometheus,
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={tmp / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prometheus_port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        processes.append(server)
        url = f"http://127.0.0.1:{prometheus_port}"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            assert server.poll() is None, f"prometheus exited:\n{log_path.read_text()}"
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"prometheus did not become ready:\n{log_path.read_text()}"
            time.sleep(0.2)
        yield Stack(
            grpc_target=f"127.0.0.1:{grpc_port}",
            metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
            prometheus_url=url,
            prometheus_log=log_path,
        )
    finally:
        for process in reversed(processes):
            stop(process)


def reserve(reservation_id: str, quantity: int) -> inv_pb.ReserveRequest:
    return inv_pb.ReserveRequest(
        reservation_id=reservation_id,
        channel="web",
        lines=[inv_pb.LineRequest(sku="SKU-P", quantity=quantity)],
        ttl=Duration(seconds=600),
    )


@pytest.fixture(scope="module")
def traffic(stack: Stack) -> Stack:
    """Once Prometheus has scraped the idle engine: a network, stock, a hold, a refusal, a shortage."""
    stack.wait_for("the first scrape", lambda: stack.value('up{job="inventory-engine"}') == 1)
    stack.wait_for(
        "the idle engine's series", lambda: stack.value("inventory_journal_records_total") is not None
    )
    stack.baseline["reserve_ok"] = stack.value('sum(inventory_rpc_handled_total{method="Reserve"})') or 0.0
    stack.baseline["journal"] = stack.value("inventory_journal_records_total") or 0.0
    with grpc.insecure_channel(stack.grpc_target) as channel:
        network = net_grpc.NetworkServiceStub(channel)
        inventory = inv_grpc.InventoryServiceStub(channel)
        supply = sup_grpc.SupplyServiceStub(channel)
        network.UpsertNode(net_pb.UpsertNodeRequest(node=net_pb.Node(id="dc-1", type=net_pb.NODE_TYPE_DC)))
        network.UpsertChannel(net_pb.UpsertChannelRequest(channel=net_pb.Channel(id="web", nodes=["dc-1"])))
        supply.AdjustStock(
            sup_pb.AdjustStockRequest(changes=[sup_pb.StockAdjustment(sku="SKU-P", node="dc-1", delta=5)])
        )
        inventory.Reserve(reserve("prom-1", 3))
        with pytest.raises(grpc.RpcError) as refused:
            inventory.Reserve(reserve("prom-2", 100))
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
        inventory.GetAvailability(inv_pb.GetAvailabilityRequest(skus=["SKU-P"], channel="web"))
        # A count below what is held: a shortage the periodic audit reports.
        supply.SetStock(
            sup_pb.SetStockRequest(
                changes=[sup_pb.StockCount(sku="SKU-P", node="dc-1", on_hand=1, version=1)]
            )
        )
    return stack


def at_least(stack: Stack, promql: str, minimum: float) -> Callable[[], bool]:
    def check() -> bool:
        value = stack.value(promql)
        return value is not None and value >= minimum

    return check


def test_rpc_series_move_with_traffic(traffic: Stack) -> None:
    s = traffic
    reserve_ok = 'sum(inventory_rpc_handled_total{job="inventory-engine",method="Reserve",code="OK"})'
    s.wait_for("Reserve OK counted", at_least(s, reserve_ok, s.baseline["reserve_ok"] + 1))
    s.wait_for(
        "the out-of-stock Reserve counted under its code",
        at_least(s, 'sum(inventory_rpc_handled_total{method="Reserve",code="FAILED_PRECONDITION"})', 1),
    )
    s.wait_for(
        "GetAvailability counted",
        at_least(s, 'sum(inventory_rpc_handled_total{method="GetAvailability"})', 1),
    )
    s.wait_for(
        "both Reserve calls in the latency histogram",
        at_least(s, 'sum(inventory_rpc_duration_seconds_count{method="Reserve"})', 2),
    )
    s.wait_for(
        "a latency bucket that holds them",
        at_least(s, 'sum(inventory_rpc_duration_seconds_bucket{method="Reserve",le="+Inf"})', 2),
    )
    assert s.value('sum(inventory_rpc_in_flight{method="Reserve"})') == 0


def test_store_and_audit_series_move_with_traffic(traffic: Stack) -> None:
    s = traffic
    s.wait_for(
        "journal records written",
        at_least(s, "inventory_journal_records_total", s.baseline["journal"] + 5),
    )
    s.wait_for("the audit to see the shortage", at_least(s, "inventory_shortage_rows", 1))
    assert s.value("inventory_shortage_units") == 2
    assert s.value("inventory_invariant_violations") == 0
    assert s.value('inventory_store_up{store="embedded"}') == 1
    assert s.value('count(inventory_worker_info{worker="0",store="embedded"})') == 1


def test_recording_rules_and_alerts_evaluate_on_the_engines_series(traffic: Stack) -> None:
    s = traffic
    s.wait_for(
        "the Reserve rate recorded",
        lambda: (
            (s.value('job_service_method_code:inventory_rpc_handled:rate5m{method="Reserve",code="OK"}') or 0)
            > 0
        ),
    )
    s.wait_for(
        "the error ratio recorded (0: refusals are not errors)",
        lambda: s.value('job:inventory_rpc_errors:ratio_rate5m{job="inventory-engine"}') == 0,
    )
    # The shortage alert is pending (it fires after 5 minutes of shortage).
    s.wait_for(
        "the shortage alert pending",
        lambda: s.value('ALERTS{alertname="InventoryShortage",alertstate="pending"}') == 1,
    )
    assert s.query('ALERTS{alertname="InventoryInvariantViolation"}') == []


def test_every_dashboard_query_runs_on_prometheus(traffic: Stack) -> None:
    s = traffic
    rps = 'sum by (method) (rate(inventory_rpc_handled_total{job=~"inventory-engine"}[1m]))'
    s.wait_for("a request rate", lambda: bool(s.query(rps)))
    for where, expr in queries(dashboard()):
        promql = (
            expr.replace("$__rate_interval", "1m")
            .replace("$job", "inventory-engine")
            .replace("$instance", ".+")
        )
        s.query(promql)  # raises with Prometheus' message on a query it cannot run
        assert where


def test_live_exposition_passes_promtool(stack: Stack) -> None:
    with urllib.request.urlopen(stack.metrics_url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        exposition = response.read()
    assert b"inventory_rpc_handled_total" in exposition or b"inventory_store_up" in exposition
    result = subprocess.run(
        [binary("promtool"), "check", "metrics"], input=exposition, capture_output=True, timeout=60
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
