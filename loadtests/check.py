"""The run-level check: what the store shows against what the load clients were told.

    python -m loadtests.check --target HOST:PORT --journal-dir DIR [--json] [--report FILE]

Exit 0 when everything agrees, 1 on any violation, 2 when it could not check
(no journal, engine unreachable). ``inventory-engine audit`` checks the store
against itself (counters vs holds, expiry); this checks it against its clients:

1. **Every acknowledged reservation** (``GetReservation`` for each id in the
   journals): it exists, its lines hold the units at the nodes the client was
   told, and each line is in the state the client was last told, except that a
   hold whose expiry passed more than a second ago must be EXPIRED (expiry keeps
   up), and an operation whose answer never came (deadline, end of run) may or
   may not have happened.
2. **Every refused reservation** (OUT_OF_STOCK, ...; up to ``--max-refused``,
   sampled) does not exist: a failed call has no effect.
3. **Per SKU**, units held, committed and fulfilled as the store shows them equal
   what clients were told succeeded, plus the units of calls whose answer was
   lost (reported as unresolved; the store decides those).
4. **Counters** (``GetAvailability`` with ``include_nodes`` over every node, for
   every SKU the run touched): ``reserved`` and ``committed`` of each row equal
   the sum of the run's held and committed lines there. Only when every
   reservation in the engine is one of the run's (Audit's reservation count
   equals the run's reservations found); otherwise this part is skipped and
   says so.
5. **Nothing oversold**: on every row read, ``reserved + committed <= on_hand``
   (a row that a feed lowered during the run may show a reported shortage
   instead); for the hot SKUs whose stock the scenario set, units told sold
   (held + committed + fulfilled) never exceed that stock, and ``on_hand`` went
   down by exactly the units shipped.

Before reading, it waits (at most ``--max-wait`` seconds) until every short
hold the clients abandoned is more than a second past its expiry, so that the
expiry part is decisive. The engine's clock and the checker's must agree (same
host, or NTP), as the engine's own hosts must.

Distributed runs: every load process wrote its own journal file; copy them
into one directory (or share one) and point ``--journal-dir`` at it.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests.journal import (
    COMMITTED,
    EXPIRED,
    FULFILLED,
    HELD,
    RELEASED,
    RunRecord,
    Snapshot,
    ToldReservation,
    read_journal,
    snapshot_from_pb,
)

__all__ = ["Report", "Row", "StoreView", "check", "main", "read_store"]

# ARCHITECTURE.md: an expired hold returns its units within a second of expiry.
EXPIRY_GRACE_S = 1.0
# A hold this close to its expiry may already be gone (clock granularity, the
# sweeper running early within its tick).
EARLY_S = 0.5
COUNTED = (HELD, COMMITTED, FULFILLED)


@dataclass(frozen=True)
class Row:
    """The counters of one (SKU, node) as GetAvailability shows them."""

    on_hand: int
    reserved: int
    committed: int


@dataclass
class StoreView:
    """What the engine shows at the end of the run.

    ``reservations`` maps an id to its snapshot, or to None when the engine
    says NOT_FOUND; ids that were not read are absent. ``read_from`` /
    ``read_until`` bound the time of the reads.
    """

    reservations: dict[str, Snapshot | None]
    rows: dict[tuple[str, str], Row]
    read_from: float
    read_until: float
    # Reservations in the engine, in any state (Audit); None when unknown.
    engine_reservations: int | None = None


@dataclass
class Report:
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    per_sku: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def violation(self, message: str) -> None:
        self.violations.append(message)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "violations": self.violations,
            "notes": self.notes,
            "figures": self.figures,
            "hot_skus": {s: v for s, v in self.per_sku.items() if v.get("hot")},
        }


# ------------------------------------------------------------------ the check


def _acceptable(told: ToldReservation, line_state: str, earliest: float, latest: float) -> set[str]:
    """The states a line may show when read between ``earliest`` and ``latest``,
    its client having last been told ``line_state``."""
    assert told.told is not None
    states = {line_state}
    if line_state == HELD:
        expire_at = told.told.expire_at
        if told.pending == "extend":
            # The extension may have happened (a later expiry we never saw) or not.
            states.add(EXPIRED)
        elif earliest >= expire_at + EXPIRY_GRACE_S:
            states = {EXPIRED}
        elif latest >= expire_at - EARLY_S:
            states.add(EXPIRED)
    # An operation whose answer was lost may have happened; only a legal
    # transition from the told state could have.
    if told.pending == "commit" and line_state == HELD:
        states.add(COMMITTED)
    elif told.pending == "release" and line_state in (HELD, COMMITTED):
        states.add(RELEASED)
    elif told.pending == "fulfill" and line_state == COMMITTED:
        states.add(FULFILLED)
    return states


def _units_by_state(snapshot: Snapshot, into: dict[str, dict[str, int]]) -> None:
    for line in snapshot.lines:
        if line.state in COUNTED:
            into[line.sku][line.state] += line.units


def check(record: RunRecord, store: StoreView, *, now: float | None = None) -> Report:
    """Compare a run's journal with the store; every disagreement is a violation.

    Reservations were read between ``store.read_from`` and ``store.read_until``
    (``now`` pins both, for tests): a hold expiring in that window may show
    either state.
    """
    earliest = store.read_from if now is None else now
    latest = store.read_until if now is None else now
    report = Report()
    for problem in record.problems:
        report.violation(f"journal: {problem}")
    if record.setups != 1:
        # The local process (or the master) writes it once its setup is done:
        # none means the setup failed or the master's journal was not
        # collected; several, that runs share a directory.
        report.violation(
            f"journal: {record.setups} setup records, expected 1"
            " (a failed setup, a missing master journal, or several runs in one directory)"
        )
    if record.torn_lines:
        report.notes.append(f"{record.torn_lines} torn journal line(s) skipped (a killed load process)")

    told_units: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    unresolved_units: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    store_units: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    acknowledged = refused_checked = unknown = expired_in_time = 0

    for rid, told in sorted(record.reservations.items()):
        if rid not in store.reservations:
            continue  # a refused id left out of the sample
        actual = store.reservations[rid]
        if told.told is None:
            if told.refused_reason:
                refused_checked += 1
                if actual is not None:
                    report.violation(
                        f"{rid}: refused ({told.refused_reason}) but the engine has it, {actual.state}"
                    )
                continue
            # The Reserve's answer never came: whatever the engine has is the truth.
            unknown += 1
            if actual is not None:
                _units_by_state(actual, unresolved_units)
                _units_by_state(actual, store_units)
            continue
        acknowledged += 1
        if actual is None:
            report.violation(f"{rid}: acknowledged as {told.told.state} but the engine does not know it")
            continue
        _units_by_state(actual, store_units)
        if len(actual.lines) != len(told.told.lines):
            report.violation(f"{rid}: told {len(told.told.lines)} lines, the engine has {len(actual.lines)}")
            continue
        resolved_by_store = False
        for index, (t_line, a_line) in enumerate(zip(told.told.lines, actual.lines, strict=True)):
            if (t_line.sku, t_line.allocations) != (a_line.sku, a_line.allocations):
                report.violation(
                    f"{rid} line {index}: told {t_line.sku} {list(t_line.allocations)},"
                    f" the engine has {a_line.sku} {list(a_line.allocations)}"
                )
            acceptable = _acceptable(told, t_line.state, earliest, latest)
            if a_line.state not in acceptable:
                late = ""
                if a_line.state == HELD and t_line.state == HELD:
                    late = f" ({earliest - told.told.expire_at:.2f} s past its expiry)"
                report.violation(
                    f"{rid} line {index} ({a_line.sku}): told {t_line.state},"
                    f" expected {'/'.join(sorted(acceptable))}, the engine shows {a_line.state}{late}"
                )
            if len(acceptable) > 1:
                resolved_by_store = True
            elif acceptable == {EXPIRED} and t_line.state == HELD and a_line.state == EXPIRED:
                expired_in_time += 1
        # What the clients were told, with expiry applied; a reservation whose
        # state the journal leaves open (a lost answer, a hold expiring right
        # now) counts as unresolved, decided by the store.
        if resolved_by_store:
            _units_by_state(actual, unresolved_units)
        else:
            projected = told.told
            if projected.state == HELD and earliest >= projected.expire_at + EXPIRY_GRACE_S:
                projected = projected.expired_copy()
            _units_by_state(projected, told_units)

    report.figures.update(
        acknowledged_reservations=acknowledged,
        refused_reservations_checked=refused_checked,
        refused_reservations=sum(1 for r in record.reservations.values() if r.refused_reason),
        unknown_outcomes=unknown
        + sum(1 for r in record.reservations.values() if r.told is not None and r.pending is not None),
        journal_processes=record.processes,
        # Lines told HELD whose expiry passed more than the grace ago, found EXPIRED.
        abandoned_lines_expired=expired_in_time,
    )

    # Per SKU: the store's units against the told ones plus the unresolved.
    for sku in sorted(set(told_units) | set(store_units) | set(unresolved_units) | record.hot_skus):
        entry: dict[str, Any] = {"hot": sku in record.hot_skus}
        for state in COUNTED:
            told_n = told_units[sku][state]
            open_n = unresolved_units[sku][state]
            store_n = store_units[sku][state]
            entry[state.lower()] = {"told": told_n, "unresolved": open_n, "store": store_n}
            if told_n + open_n != store_n:
                report.violation(
                    f"{sku}: {state.lower()} units: clients were told {told_n} (+{open_n} unresolved),"
                    f" the engine's reservations show {store_n}"
                )
        report.per_sku[sku] = entry

    _check_counters(record, store, report)
    _check_oversold(record, store, store_units, report)
    return report


def _check_counters(record: RunRecord, store: StoreView, report: Report) -> None:
    ours = sum(1 for snapshot in store.reservations.values() if snapshot is not None)
    if store.engine_reservations != ours:
        # Reservations that are not the run's (an earlier run, other clients)
        # move the same counters: the equality would not hold, and proves nothing.
        report.notes.append(
            f"counters not compared with the reservations: the engine has {store.engine_reservations}"
            f" reservations, the run {ours}"
        )
        return
    expected: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    # A hold that expires while the reads run may be counted in one read and
    # not the other: its rows are left out (and counted in the figures).
    unstable: set[tuple[str, str]] = set()
    low, high = store.read_from - EXPIRY_GRACE_S - EARLY_S, store.read_until + EARLY_S
    for snapshot in store.reservations.values():
        if snapshot is None:
            continue
        expiring = low <= snapshot.expire_at <= high
        for line in snapshot.lines:
            for node, qty in line.allocations:
                if expiring and line.state in (HELD, EXPIRED):
                    unstable.add((line.sku, node))
                if line.state == HELD:
                    expected[(line.sku, node)][0] += qty
                elif line.state == COMMITTED:
                    expected[(line.sku, node)][1] += qty
    compared = 0
    for key, row in sorted(store.rows.items()):
        if key in unstable:
            continue
        compared += 1
        reserved, committed = expected.get(key, (0, 0))
        if (row.reserved, row.committed) != (reserved, committed):
            report.violation(
                f"{key[0]}@{key[1]}: counters reserved {row.reserved} committed {row.committed},"
                f" the run's reservations there hold {reserved} and commit {committed}"
            )
    missing = [k for k in expected if k not in store.rows and k not in unstable]
    for key in missing:
        report.violation(f"{key[0]}@{key[1]}: reservations there but no counters read")
    report.figures.update(rows_compared=compared, rows_skipped_expiring=len(unstable))


def _check_oversold(
    record: RunRecord, store: StoreView, store_units: dict[str, dict[str, int]], report: Report
) -> None:
    oversold = 0
    shortages = 0
    for (sku, node), row in sorted(store.rows.items()):
        over = row.reserved + row.committed - row.on_hand
        if row.on_hand < 0:
            report.violation(f"{sku}@{node}: on_hand {row.on_hand} < 0")
        if over > 0:
            if (sku, node) in record.supply_rows:
                # A till sale or a count took units the engine had promised:
                # the engine reports it as a shortage, it did not oversell.
                shortages += 1
            else:
                oversold += over
                report.violation(
                    f"{sku}@{node}: oversold by {over}: reserved {row.reserved} + committed"
                    f" {row.committed} > on_hand {row.on_hand}"
                )
    stock_by_sku: dict[str, int] = defaultdict(int)
    for (sku, _), units in record.hot_stock.items():
        stock_by_sku[sku] += units
    fulfilled_at: dict[tuple[str, str], int] = defaultdict(int)
    for snapshot in store.reservations.values():
        for line in snapshot.lines if snapshot is not None else ():
            if line.state == FULFILLED:
                for node, qty in line.allocations:
                    fulfilled_at[(line.sku, node)] += qty
    for sku, stock in sorted(stock_by_sku.items()):
        if any(row_sku == sku for row_sku, _ in record.supply_rows):
            report.notes.append(f"{sku}: a feed changed its stock during the run; only row checks apply")
            continue
        entry = report.per_sku.setdefault(sku, {"hot": True})
        sold = sum(store_units[sku][s] for s in COUNTED)
        # Units buyers asked for, refused or not: the sale's demand factor.
        demanded = sum(
            q for r in record.reservations.values() for line_sku, q in r.requested if line_sku == sku
        )
        entry.update(stock=stock, sold=sold, demanded=demanded)
        if sold > stock:
            oversold += sold - stock
            report.violation(f"{sku}: {sold} units held, committed or fulfilled, stock was {stock}")
        for (row_sku, node), units in record.hot_stock.items():
            if row_sku != sku:
                continue
            hot_row = store.rows.get((row_sku, node))
            if hot_row is None:
                report.violation(f"{sku}@{node}: hot row not found in the engine")
                continue
            expected_on_hand = units - fulfilled_at[(sku, node)]
            if hot_row.on_hand != expected_on_hand:
                report.violation(
                    f"{sku}@{node}: on_hand {hot_row.on_hand}, expected {expected_on_hand}"
                    f" (stock {units} - {fulfilled_at[(sku, node)]} shipped)"
                )
    report.figures.update(oversold_units=oversold, shortage_rows_from_feeds=shortages)


# -------------------------------------------------------------- reading the store


class CannotCheck(Exception):
    """The check could not run (engine unreachable, ...): exit 2."""


def read_store(
    target: str,
    record: RunRecord,
    *,
    max_refused: int = 2000,
    timeout: float = 10.0,
    window: int = 64,
    engine_reservations: int | None = None,
) -> StoreView:
    """Read every journaled reservation (refused ones sampled) and the counters of every touched SKU.

    ``engine_reservations`` (from an audit just run) saves an Audit call.
    """
    import grpc

    from engine._proto.inventory.v1 import admin_service_pb2 as admin_pb
    from engine._proto.inventory.v1 import admin_service_pb2_grpc as admin_grpc
    from engine._proto.inventory.v1 import inventory_service_pb2 as inv_pb
    from engine._proto.inventory.v1 import inventory_service_pb2_grpc as inv_grpc
    from engine._proto.inventory.v1 import network_service_pb2 as net_pb
    from engine._proto.inventory.v1 import network_service_pb2_grpc as net_grpc

    refused = [rid for rid, r in record.reservations.items() if r.told is None and r.refused_reason]
    ids = [rid for rid, r in record.reservations.items() if not (r.told is None and r.refused_reason)]
    ids += random.Random(0).sample(refused, min(max_refused, len(refused)))
    with grpc.insecure_channel(target) as channel:
        inventory = inv_grpc.InventoryServiceStub(channel)
        try:
            nodes = [n.id for n in net_grpc.NetworkServiceStub(channel).ListNodes(
                net_pb.ListNodesRequest(), timeout=timeout
            ).nodes]  # fmt: skip
        except grpc.RpcError as error:
            raise CannotCheck(f"cannot reach {target}: {error.code().name} {error.details()}") from error  # type: ignore[attr-defined]
        read_from = time.time()
        reservations: dict[str, Snapshot | None] = {}
        # A window of calls in flight: thousands of ids in a few seconds
        # without flooding the engine's admission limit.
        for start in range(0, len(ids), window):
            chunk = ids[start : start + window]
            futures = [
                inventory.GetReservation.future(
                    inv_pb.GetReservationRequest(reservation_id=rid), timeout=timeout
                )
                for rid in chunk
            ]
            for rid, future in zip(chunk, futures, strict=True):
                try:
                    reservations[rid] = snapshot_from_pb(future.result())
                except grpc.RpcError as error:
                    if error.code() != grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                        raise CannotCheck(f"GetReservation {rid}: {error.code().name}") from error  # type: ignore[attr-defined]
                    reservations[rid] = None
        rows: dict[tuple[str, str], Row] = {}
        skus = sorted(record.touched_skus())
        per_call = max(1, min(1000, 10_000 // max(1, len(nodes))))
        for start in range(0, len(skus), per_call):
            response = inventory.GetAvailability(
                inv_pb.GetAvailabilityRequest(
                    skus=skus[start : start + per_call], nodes=nodes, include_nodes=True
                ),
                timeout=timeout,
            )
            for availability in response.availabilities:
                for n in availability.nodes:
                    rows[(availability.sku, n.node)] = Row(int(n.on_hand), int(n.reserved), int(n.committed))
        read_until = time.time()
        if engine_reservations is None:
            try:
                audit = admin_grpc.AdminServiceStub(channel).Audit(admin_pb.AuditRequest(), timeout=60)
                engine_reservations = int(audit.reservation_count)
            except grpc.RpcError as error:
                # Only the counter comparison needs it; it is skipped and says why.
                print(
                    f"run check: Audit failed ({error.code().name}), counters not compared", file=sys.stderr
                )  # type: ignore[attr-defined]
        return StoreView(reservations, rows, read_from, read_until, engine_reservations)


def settle(record: RunRecord, max_wait_s: float) -> float:
    """Wait until every hold due within ``max_wait_s`` is past its expiry grace; the seconds waited."""
    now = time.time()
    due = [
        r.told.expire_at
        for r in record.reservations.values()
        if r.told is not None and r.told.state == HELD and r.told.expire_at <= now + max_wait_s
    ]
    if not due:
        return 0.0
    wait = max(0.0, max(due) + EXPIRY_GRACE_S + 0.2 - now)
    time.sleep(wait)
    return wait


# ------------------------------------------------------------------ command


def _print_human(report: Report) -> None:
    f = report.figures
    print(
        f"run check: {'OK' if report.ok else 'VIOLATIONS'};"
        f" reservations acknowledged {f.get('acknowledged_reservations', 0)},"
        f" refused {f.get('refused_reservations', 0)} ({f.get('refused_reservations_checked', 0)} checked),"
        f" unknown outcomes {f.get('unknown_outcomes', 0)};"
        f" expired holds verified {f.get('abandoned_lines_expired', 0)};"
        f" rows compared {f.get('rows_compared', 0)}; oversold units {f.get('oversold_units', 0)}"
    )
    for sku, entry in report.per_sku.items():
        if entry.get("hot"):
            states = ", ".join(
                f"{s} {entry[s]['store']}" for s in ("held", "committed", "fulfilled") if s in entry
            )
            stock, demanded = entry.get("stock", 0), entry.get("demanded", 0)
            factor = f"{demanded / stock:.1f}x" if stock else "-"
            print(
                f"  hot {sku}: stock {stock}, demanded {demanded} ({factor}),"
                f" sold {entry.get('sold', '?')} ({states})"
            )
    for note in report.notes:
        print(f"  note: {note}")
    for violation in report.violations[:200]:
        print(f"  violation: {violation}")
    if len(report.violations) > 200:
        print(f"  ... and {len(report.violations) - 200} more")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="engine address HOST:PORT")
    parser.add_argument("--journal-dir", required=True, type=Path, help="the run's journal files (*.jsonl)")
    parser.add_argument(
        "--max-wait", type=float, default=10.0, help="seconds to wait for short holds to expire"
    )
    parser.add_argument(
        "--max-refused", type=int, default=2000, help="refused reservations to look up (sampled)"
    )
    parser.add_argument(
        "--engine-reservations",
        type=int,
        help="the engine's reservation count from an audit just run (saves the checker's own Audit call)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--report", type=Path, help="also write the JSON report to this file")
    args = parser.parse_args(argv)

    paths = sorted(args.journal_dir.glob("*.jsonl")) if args.journal_dir.is_dir() else []
    if not paths:
        print(f"run check: no journal files in {args.journal_dir}", file=sys.stderr)
        return 2
    record = read_journal(paths)
    waited = settle(record, args.max_wait)
    try:
        store = read_store(
            args.target, record, max_refused=args.max_refused, engine_reservations=args.engine_reservations
        )
    except CannotCheck as exc:
        print(f"run check: {exc}", file=sys.stderr)
        return 2
    report = check(record, store)
    report.figures["waited_for_expiry_s"] = round(waited, 2)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n")
    if args.json:
        print(json.dumps(report.to_json(), sort_keys=True))
    else:
        _print_human(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
