"""The load tests' run-level check fails when the store disagrees with what clients were told.

A checker that cannot fail proves nothing, so these tests feed it runs that
went wrong: oversold rows, holds that never expired, reservations the engine
forgot or changed behind the clients' backs, refusals that took effect. First
on fabricated journals and store views (every rule, quickly), then on a real
engine, where the journal is written by real calls and the store is then
tampered with.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

# The load tests are not part of the installed package: import them from the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine._proto.inventory.v1 import inventory_service_pb2 as inv_pb
from engine._proto.inventory.v1 import inventory_service_pb2_grpc as inv_grpc
from engine._proto.inventory.v1 import supply_service_pb2 as sup_pb
from engine._proto.inventory.v1 import supply_service_pb2_grpc as sup_grpc
from engine.config import EmbeddedStoreConfig, ServerConfig
from engine.service.testing import ServerThread
from loadtests import check
from loadtests.journal import Journal, Line, Snapshot, read_journal, snapshot_from_pb

HOT = "SKU-H"
NOW = 1_800_000_000.0


def snap(state: str, units: int, *, node: str = "dc-east", expire_at: float = NOW + 600) -> Snapshot:
    return Snapshot(state, expire_at, (Line(HOT, state, ((node, units),)),))


def write_run(directory: Path, *, setup: bool = True) -> None:
    """A small flash sale: 10 units; a held cart of 3, an order of 2 shipped, a refusal,
    an abandoned hold of 1 that expired, and a commit whose answer never came."""
    journal = Journal(directory, run_id="test", role="local")
    journal.stock_set(HOT, "dc-east", 10)
    if setup:
        journal.setup()
    journal.attempt("r1", "reserve", lines=[[HOT, 3, ""]])
    journal.told("r1", "reserve", snap("HELD", 3))
    journal.attempt("r2", "reserve", lines=[[HOT, 2, ""]])
    journal.told("r2", "reserve", snap("HELD", 2))
    journal.attempt("r2", "commit")
    journal.told("r2", "commit", snap("COMMITTED", 2))
    journal.attempt("r2", "fulfill")
    journal.told("r2", "fulfill", snap("FULFILLED", 2))
    journal.attempt("r3", "reserve", lines=[[HOT, 9, ""]])
    journal.refused("r3", "reserve", "OUT_OF_STOCK")
    journal.attempt("r4", "reserve", lines=[[HOT, 1, ""]])
    journal.told("r4", "reserve", snap("HELD", 1, expire_at=NOW - 5))
    journal.attempt("r5", "reserve", lines=[[HOT, 1, ""]])
    journal.told("r5", "reserve", snap("HELD", 1))
    journal.attempt("r5", "commit")  # the run ended before the answer
    journal.close()


def good_store() -> check.StoreView:
    return check.StoreView(
        reservations={
            "r1": snap("HELD", 3),
            "r2": snap("FULFILLED", 2),
            "r3": None,
            "r4": snap("EXPIRED", 1, expire_at=NOW - 5),
            "r5": snap("COMMITTED", 1),
        },
        # 10 - 2 shipped; 3 held (r1) and 1 committed (r5).
        rows={(HOT, "dc-east"): check.Row(on_hand=8, reserved=3, committed=1)},
        read_from=NOW,
        read_until=NOW + 1,
        engine_reservations=4,
    )


def run_check(tmp_path: Path, store: check.StoreView, **journal: bool) -> check.Report:
    write_run(tmp_path, **journal)
    return check.check(read_journal(tmp_path.glob("*.jsonl")), store)


def test_a_consistent_run_passes(tmp_path: Path) -> None:
    report = run_check(tmp_path, good_store())
    assert report.ok, report.violations
    assert report.figures["oversold_units"] == 0
    assert report.figures["unknown_outcomes"] == 1
    hot = report.per_sku[HOT]
    assert (hot["stock"], hot["sold"]) == (10, 6)


def test_a_lost_answer_may_go_either_way(tmp_path: Path) -> None:
    store = good_store()
    store.reservations["r5"] = snap("HELD", 1)
    store.rows[(HOT, "dc-east")] = check.Row(on_hand=8, reserved=4, committed=0)
    assert run_check(tmp_path, store).ok


def _tamper_oversold(store: check.StoreView) -> None:
    store.rows[(HOT, "dc-east")] = check.Row(on_hand=3, reserved=3, committed=1)


def _tamper_forgotten(store: check.StoreView) -> None:
    store.reservations["r1"] = None


def _tamper_released(store: check.StoreView) -> None:
    store.reservations["r1"] = snap("RELEASED", 3)
    store.rows[(HOT, "dc-east")] = check.Row(on_hand=8, reserved=0, committed=1)


def _tamper_never_expired(store: check.StoreView) -> None:
    store.reservations["r4"] = snap("HELD", 1, expire_at=NOW - 5)
    store.rows[(HOT, "dc-east")] = check.Row(on_hand=8, reserved=4, committed=1)


def _tamper_refusal_took_effect(store: check.StoreView) -> None:
    store.reservations["r3"] = snap("HELD", 9)


def _tamper_counters(store: check.StoreView) -> None:
    store.rows[(HOT, "dc-east")] = check.Row(on_hand=8, reserved=2, committed=1)


def _tamper_moved(store: check.StoreView) -> None:
    store.reservations["r1"] = snap("HELD", 3, node="dc-west")


def _tamper_shipped_twice(store: check.StoreView) -> None:
    store.rows[(HOT, "dc-east")] = check.Row(on_hand=6, reserved=3, committed=1)


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (_tamper_oversold, "SKU-H@dc-east: oversold by 1"),
        (_tamper_forgotten, "r1: acknowledged as HELD but the engine does not know it"),
        (_tamper_released, "r1 line 0 (SKU-H): told HELD, expected HELD, the engine shows RELEASED"),
        (_tamper_never_expired, "r4 line 0 (SKU-H): told HELD, expected EXPIRED, the engine shows HELD"),
        (_tamper_refusal_took_effect, "r3: refused (OUT_OF_STOCK) but the engine has it"),
        (_tamper_counters, "SKU-H@dc-east: counters reserved 2 committed 1"),
        (_tamper_moved, "r1 line 0: told SKU-H [('dc-east', 3)]"),
        (_tamper_shipped_twice, "SKU-H@dc-east: on_hand 6, expected 8"),
    ],
)
def test_a_store_that_disagrees_fails(
    tmp_path: Path, tamper: Callable[[check.StoreView], None], expected: str
) -> None:
    store = good_store()
    tamper(store)
    report = run_check(tmp_path, store)
    assert not report.ok
    assert any(v.startswith(expected) for v in report.violations), report.violations


def test_clients_told_more_than_the_stock_fails(tmp_path: Path) -> None:
    # The store agrees with the clients, but together they sold 11 of 10 units.
    store = good_store()
    store.reservations["r1"] = snap("HELD", 8)
    store.rows[(HOT, "dc-east")] = check.Row(on_hand=8, reserved=8, committed=1)
    directory = tmp_path
    write_run(directory)
    record = read_journal(directory.glob("*.jsonl"))
    record.reservations["r1"].told = snap("HELD", 8)
    report = check.check(record, store)
    assert "SKU-H: 11 units held, committed or fulfilled, stock was 10" in report.violations
    assert report.figures["oversold_units"] == 2  # 1 on the row, 1 against the stock


def test_a_run_without_its_setup_record_fails(tmp_path: Path) -> None:
    report = run_check(tmp_path, good_store(), setup=False)
    assert "journal: 0 setup records, expected 1" in report.violations[0]


def test_two_runs_in_one_directory_fail(tmp_path: Path) -> None:
    write_run(tmp_path)
    report = run_check(tmp_path, good_store())
    assert any(v.startswith("journal: 2 setup records, expected 1") for v in report.violations)


def test_counters_are_compared_only_when_all_reservations_are_the_runs(tmp_path: Path) -> None:
    store = good_store()
    store.engine_reservations = 5  # someone else's reservation moves the counters too
    store.rows[(HOT, "dc-east")] = check.Row(on_hand=8, reserved=4, committed=1)
    report = run_check(tmp_path, store)
    assert report.ok, report.violations
    assert (
        "counters not compared with the reservations: the engine has 5 reservations, the run 4"
        in report.notes
    )


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    write_run(tmp_path)
    (path,) = tmp_path.glob("*.jsonl")
    with path.open("a") as f:
        f.write('{"e":"try","id":"r6","op":"res')
    record = read_journal([path])
    assert record.torn_lines == 1
    assert check.check(record, good_store()).ok


# ------------------------------------------------------------ a real engine


@pytest.fixture
def engine() -> object:
    from engine.demo import load_demo
    from engine.store.embedded import EmbeddedStore

    async def demo_store() -> EmbeddedStore:
        store = EmbeddedStore(EmbeddedStoreConfig(data_dir=None))
        await store.start()
        await load_demo(store, skus=30)
        return store

    with ServerThread(
        demo_store, ServerConfig(listen="127.0.0.1:0", grace_s=1.0, audit_interval_s=0)
    ) as running:
        yield running


def test_the_checker_fails_a_tampered_engine(
    engine: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal_dir = tmp_path / "journal"
    journal = Journal(journal_dir, run_id="test", role="local")
    hot = "SKU-000001"
    with grpc.insecure_channel(engine.target) as channel:
        inventory = inv_grpc.InventoryServiceStub(channel)
        supply = sup_grpc.SupplyServiceStub(channel)

        def set_stock(units: int) -> None:
            supply.SetStock(
                sup_pb.SetStockRequest(
                    changes=[
                        sup_pb.StockCount(sku=hot, node="dc-east", on_hand=units, version=time.time_ns())
                    ]
                )
            )

        def reserve_request(rid: str, quantity: int) -> inv_pb.ReserveRequest:
            return inv_pb.ReserveRequest(
                reservation_id=rid,
                channel="web",
                lines=[inv_pb.LineRequest(sku=hot, quantity=quantity, node="dc-east")],
                ttl=duration_pb2.Duration(seconds=600),
            )

        def reserve(rid: str, quantity: int) -> None:
            # The protocol the Locust users follow: intent, call, answer.
            journal.attempt(rid, "reserve", lines=[[hot, quantity, "dc-east"]])
            try:
                journal.told(
                    rid, "reserve", snapshot_from_pb(inventory.Reserve(reserve_request(rid, quantity)))
                )
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
                journal.refused(rid, "reserve", "OUT_OF_STOCK")

        set_stock(5)
        journal.stock_set(hot, "dc-east", 5)
        journal.setup()
        reserve("a", 2)
        reserve("b", 2)
        journal.attempt("b", "commit")
        journal.told(
            "b", "commit", snapshot_from_pb(inventory.Commit(inv_pb.CommitRequest(reservation_id="b")))
        )
        journal.attempt("b", "fulfill")
        journal.told(
            "b", "fulfill", snapshot_from_pb(inventory.Fulfill(inv_pb.FulfillRequest(reservation_id="b")))
        )
        reserve("c", 2)  # 1 left: refused
        journal.flush()

        args = ["--target", engine.target, "--journal-dir", str(journal_dir), "--json"]
        assert check.main(args) == 0, capsys.readouterr().out
        figures = json.loads(capsys.readouterr().out)["figures"]
        # Every row of the hot SKU, at every node, checked against the reservations.
        assert figures["rows_compared"] == 23
        assert (figures["acknowledged_reservations"], figures["refused_reservations_checked"]) == (2, 1)

        # Behind the clients' backs: the held cart is released.
        inventory.Release(inv_pb.ReleaseRequest(reservation_id="a"))
        assert check.main(args) == 1
        violations = json.loads(capsys.readouterr().out)["violations"]
        assert any(v.startswith("a line 0 (SKU-000001): told HELD") for v in violations), violations

        # Another cart holds 2, then a count drops on_hand below what is held.
        reserve("d", 2)
        journal.close()
        set_stock(1)
        assert check.main(args) == 1
        violations = json.loads(capsys.readouterr().out)["violations"]
        assert any("oversold by 1" in v for v in violations), violations
