"""engine.observability.metrics: names that pass promtool, helpers that record what they say.

Metrics live in the process-wide registry, so each test reads the change it
caused (after - before), never an absolute value.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess

import pytest
import redis.exceptions
from prometheus_client import REGISTRY, generate_latest

from engine.core.errors import IllegalTransition, OutOfStock, Shortfall
from engine.core.types import (
    Allocation,
    Reservation,
    ReservationLine,
    ReservationState,
    StockChange,
    StockLevel,
)
from engine.observability import metrics


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is missing: install Debian's prometheus package (apt-get install prometheus) "
            "or put a promtool binary on the PATH"
        )
    return path


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def exercise_every_metric() -> None:
    """One sample in every metric, so the exposition shows each with labels."""
    metrics.RPC_HANDLED.labels("inventory.v1.InventoryService", "Reserve", "OK").inc()
    metrics.RPC_DURATION.labels("inventory.v1.InventoryService", "Reserve").observe(0.002)
    metrics.RPC_IN_FLIGHT.labels("inventory.v1.InventoryService", "Reserve").set(0)
    metrics.record_reservation("web", "held", units=3)
    metrics.record_out_of_stock("web", 2)
    metrics.record_sold_out_fast_path("web")
    metrics.set_audit_result(violations=0, shortage_rows=0, shortage_units=0, duration_s=0.01)
    metrics.record_audit_failure()
    metrics.set_expiry_sweep_lag(0.0)
    metrics.set_store_up("embedded", True)
    metrics.observe_journal_fsync(0.0004)
    metrics.observe_journal_batch(12)
    metrics.JOURNAL_RECORDS.inc(0)
    metrics.JOURNAL_BYTES.inc(0)
    metrics.JOURNAL_DURABLE_LAG.set(0)
    metrics.SNAPSHOTS.labels("ok").inc(0)
    metrics.observe_redis_script("reserve", 0.0008)
    metrics.record_redis_error("reserve", redis.exceptions.ConnectionError("refused"))
    metrics.observe_pipeline(8)
    metrics.set_view_lag(0.05)
    metrics.set_worker_info(worker=0, store="embedded", ledger="fast")
    metrics.set_configured_workers(1)
    metrics.set_event_loop_lag(0.001)


def test_exposition_passes_promtool_check_metrics() -> None:
    exercise_every_metric()
    exposition = generate_latest(REGISTRY)
    # Every family of ours is in it, with its HELP and TYPE lines.
    for metric in metrics.ALL_METRICS:
        for family in metric.describe():
            assert f"# HELP {family.name}".encode() in exposition
    result = subprocess.run(
        [promtool(), "check", "metrics"], input=exposition, capture_output=True, timeout=60
    )
    # promtool prints lint problems and exits 1 (3 for lint-only problems).
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    assert not result.stdout.strip(), result.stdout.decode()


def test_series_names_cover_the_suffixes_prometheus_sees() -> None:
    names = metrics.series_names()
    assert "inventory_rpc_handled_total" in names
    assert {"inventory_rpc_duration_seconds_bucket", "inventory_rpc_duration_seconds_sum"} <= names
    assert "inventory_rpc_duration_seconds_count" in names
    assert "inventory_rpc_in_flight" in names
    # Counters are exported only with _total; created series are off.
    assert "inventory_rpc_handled" not in names
    assert not any(name.endswith("_created") for name in names)
    exercise_every_metric()
    exported = {
        sample.name
        for family in REGISTRY.collect()
        if family.name.startswith("inventory_")
        for sample in family.samples
    }
    assert exported <= names
    assert exported == names, f"never exported: {sorted(names - exported)}"


def test_record_reservation_counts_the_outcome_and_the_units_held() -> None:
    held = value("inventory_reservations_total", channel="app", outcome="held")
    committed = value("inventory_reservations_total", channel="app", outcome="committed")
    units = value("inventory_reserved_units_total", channel="app")
    metrics.record_reservation("app", "held", units=5)
    metrics.record_reservation("app", "held", units=2)
    metrics.record_reservation("app", "committed")
    assert value("inventory_reservations_total", channel="app", outcome="held") == held + 2
    assert value("inventory_reservations_total", channel="app", outcome="committed") == committed + 1
    assert value("inventory_reserved_units_total", channel="app") == units + 7


def test_declared_channels_export_zero_before_their_first_event() -> None:
    metrics.declare_channels(["marketplace:declared"])
    for outcome in metrics.OUTCOMES:
        assert (
            REGISTRY.get_sample_value(
                "inventory_reservations_total", {"channel": "marketplace:declared", "outcome": outcome}
            )
            == 0.0
        )
    assert (
        REGISTRY.get_sample_value(
            "inventory_out_of_stock_rejections_total", {"channel": "marketplace:declared"}
        )
        == 0.0
    )


def test_out_of_stock_counts_short_lines() -> None:
    before = value("inventory_out_of_stock_rejections_total", channel="pos")
    metrics.record_out_of_stock("pos", 3)
    metrics.record_out_of_stock("pos", 0)
    assert value("inventory_out_of_stock_rejections_total", channel="pos") == before + 3


def test_supply_changes_count_only_applied_changes_that_left_a_shortage() -> None:
    def change(on_hand: int, reserved: int, applied: bool = True) -> StockChange:
        return StockChange(StockLevel("SKU-1", "dc", on_hand, reserved, 0, 0, 1), applied)

    before = value("inventory_shortages_created_total")
    metrics.record_supply_changes([change(1, 3), change(5, 3), change(0, 2, applied=False)])
    assert value("inventory_shortages_created_total") == before + 1


def test_label_sets_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug feeding ids into a label must not create unbounded series."""
    children = metrics._Children(metrics.RESERVED_UNITS, 1)
    monkeypatch.setattr(metrics, "MAX_LABEL_SETS", 2)
    children.get("cap-a").inc()
    children.get("cap-b").inc()
    children.get("cap-c").inc()
    children.get("cap-d").inc()
    assert value("inventory_reserved_units_total", channel="cap-c") == 0
    assert value("inventory_reserved_units_total", channel=metrics.OTHER) >= 2
    assert value("inventory_reserved_units_total", channel="cap-a") == 1


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (redis.exceptions.ConnectionError("refused"), "connection"),
        (redis.exceptions.TimeoutError("slow"), "timeout"),
        (redis.exceptions.ClusterDownError("CLUSTERDOWN"), "cluster_down"),
        (redis.exceptions.NoScriptError("NOSCRIPT"), "noscript"),
        (redis.exceptions.ResponseError("ERR in script"), "response"),
        (ConnectionResetError("reset"), "connection"),
        (ValueError("x"), "other"),
    ],
)
def test_redis_errors_are_classified(exc: BaseException, kind: str) -> None:
    assert metrics.redis_error_kind(exc) == kind


def test_redis_script_timer_times_calls_and_counts_failures() -> None:
    count = value("inventory_redis_script_duration_seconds_count", script="commit")
    errors = value("inventory_redis_script_errors_total", script="commit", error="timeout")
    with metrics.redis_script_timer("commit"):
        pass
    with pytest.raises(redis.exceptions.TimeoutError), metrics.redis_script_timer("commit"):
        raise redis.exceptions.TimeoutError("slow")
    assert value("inventory_redis_script_duration_seconds_count", script="commit") == count + 2
    assert value("inventory_redis_script_errors_total", script="commit", error="timeout") == errors + 1


def test_rpc_latency_buckets_resolve_100_microseconds_to_1_second() -> None:
    buckets = metrics.RPC_LATENCY_BUCKETS
    assert buckets[0] == 0.0001
    assert 1.0 in buckets
    # No gap wider than a factor of 2.5 between neighbours in that range.
    in_range = [b for b in buckets if b <= 1.0]
    assert all(high / low <= 2.5 for low, high in itertools.pairwise(in_range))


def partial_reservation(channel: str) -> Reservation:
    held = ReservationState.HELD
    return Reservation(
        id="r-1",
        channel=channel,
        state=held,
        lines=(
            ReservationLine(0, "A", 5, None, (Allocation("dc-1", 3), Allocation("dc-2", 2)), held),
            ReservationLine(1, "B", 4, None, (Allocation("dc-1", 1),), held),
        ),
        allow_partial=True,
        ttl_s=60.0,
        created_at=0.0,
        expires_at=60.0,
    )


def test_helpers_for_the_store_and_servicer_call_sites() -> None:
    channel = "marketplace:helpers"

    def outcome(name: str) -> float:
        return value("inventory_reservations_total", channel=channel, outcome=name)

    metrics.record_held(partial_reservation(channel))
    assert outcome("held") == 1
    assert value("inventory_reserved_units_total", channel=channel) == 6
    assert value("inventory_out_of_stock_rejections_total", channel=channel) == 1  # line B cut short

    metrics.record_reserve_error(channel, OutOfStock((Shortfall(0, "A", 9, 0), Shortfall(1, "B", 2, 1))))
    metrics.record_reserve_error(channel, IllegalTransition("not stock", reason="RESERVATION_EXPIRED"))
    assert outcome("out_of_stock") == 1
    assert value("inventory_out_of_stock_rejections_total", channel=channel) == 3

    metrics.record_transition("committed", partial_reservation(channel))
    metrics.record_expired([channel, channel])
    assert outcome("committed") == 1
    assert outcome("expired") == 2
