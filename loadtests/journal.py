"""What the load clients were told, written as they are told it, read back by the checker.

Every load process (the one process of a local run, the master and each worker
of a distributed one) appends to a file of its own in the journal directory,
``journal-<host>-<pid>-<token>.jsonl``, so processes never share a file and the
checker merges a directory of them. One JSON object per line, ``e`` its kind:

``run``       the process started: ``run`` id, ``role`` (local/master/worker), ``host``, ``pid``
``setup``     the run's setup ran (once per run: the local process, or the master)
``stock``     the scenario set ``on_hand`` of a hot (SKU, node) row to an exact value
``supply``    a feed changed ``on_hand`` of a row during the run (POS sale, receipt,
              cycle count): that row's on_hand is no longer predictable, and a shortage
              on it is the feed's doing, not an oversell
``try``       a call is about to be sent: ``id``, ``op`` (reserve/commit/release/fulfill/extend)
``ok``        the engine answered: ``id``, ``op`` and the reservation it returned
              (``st`` state, ``exp`` expiry in epoch seconds, ``ln`` lines as
              ``[sku, state, [[node, qty], ...]]``)
``no``        the engine refused, with no effect: ``id``, ``op``, ``reason``
``?``         the outcome is unknown (deadline, transport error): the call may or may
              not have taken effect

The intent (``try``) is written before the call: a user that Locust kills in the
middle of a call (the end of the run) leaves a ``try`` without an outcome, which
the checker treats like ``?``. Only the last outcome of each reservation
matters, and one reservation id is only ever used by one process, so the order
of lines across files is irrelevant. A torn last line (a killed process) is
skipped and counted.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "Journal",
    "Line",
    "RunRecord",
    "Snapshot",
    "ToldReservation",
    "derive_state",
    "read_journal",
    "snapshot_from_pb",
]

# Reservation and line states, by the names of the proto enum without its prefix.
HELD, COMMITTED, FULFILLED, RELEASED, EXPIRED = "HELD", "COMMITTED", "FULFILLED", "RELEASED", "EXPIRED"
OPS = ("reserve", "commit", "release", "fulfill", "extend")


@dataclass(frozen=True)
class Line:
    """One reservation line: its SKU, state and where its units are."""

    sku: str
    state: str
    allocations: tuple[tuple[str, int], ...]

    @property
    def units(self) -> int:
        return sum(q for _, q in self.allocations)


@dataclass(frozen=True)
class Snapshot:
    """A reservation as the engine described it (to a client, or to the checker)."""

    state: str
    expire_at: float
    lines: tuple[Line, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "st": self.state,
            "exp": round(self.expire_at, 3),
            "ln": [[ln.sku, ln.state, [list(a) for a in ln.allocations]] for ln in self.lines],
        }

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Snapshot:
        return cls(
            state=str(record["st"]),
            expire_at=float(record["exp"]),
            lines=tuple(
                Line(str(sku), str(state), tuple((str(n), int(q)) for n, q in allocs))
                for sku, state, allocs in record["ln"]
            ),
        )

    def expired_copy(self) -> Snapshot:
        """The same reservation after its hold ran out: held lines became EXPIRED."""
        lines = tuple(replace(ln, state=EXPIRED) if ln.state == HELD else ln for ln in self.lines)
        return Snapshot(derive_state(lines), self.expire_at, lines)


def derive_state(lines: Iterable[Line]) -> str:
    """A reservation's state from its lines' (the rule of the proto's ReservationState)."""
    states = {ln.state for ln in lines}
    for state in (HELD, COMMITTED, FULFILLED, EXPIRED):
        if state in states:
            return state
    return RELEASED


def snapshot_from_pb(reservation: Any) -> Snapshot:
    """Snapshot of an ``inventory.v1.Reservation`` message."""
    from engine._proto.inventory.v1 import inventory_service_pb2 as pb

    def name(value: int) -> str:
        return str(pb.ReservationState.Name(value)).removeprefix("RESERVATION_STATE_")

    expire = reservation.expire_time
    return Snapshot(
        state=name(reservation.state),
        expire_at=expire.seconds + expire.nanos / 1e9,
        lines=tuple(
            Line(ln.sku, name(ln.state), tuple((a.node, int(a.quantity)) for a in ln.allocations))
            for ln in reservation.lines
        ),
    )


class Journal:
    """One process's append-only record of what its clients sent and were told.

    Not thread-safe, and need not be: a Locust process runs its users as
    greenlets on one thread, and each ``write`` is a single buffered
    ``file.write`` with no yield in between. ``flush`` at the end of the run
    (and ``close`` at exit) pushes the buffer to disk.
    """

    def __init__(self, directory: Path, *, run_id: str, role: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        host = socket.gethostname().replace("/", "_")
        self.path = directory / f"journal-{host}-{os.getpid()}-{secrets.token_hex(3)}.jsonl"
        self._file: TextIO | None = self.path.open("a", encoding="utf-8")
        self.write({"e": "run", "run": run_id, "role": role, "host": host, "pid": os.getpid()})

    def write(self, record: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")

    def attempt(self, reservation_id: str, op: str, **extra: Any) -> None:
        self.write({"e": "try", "id": reservation_id, "op": op, **extra})

    def told(self, reservation_id: str, op: str, snapshot: Snapshot) -> None:
        self.write({"e": "ok", "id": reservation_id, "op": op, **snapshot.to_json()})

    def refused(self, reservation_id: str, op: str, reason: str) -> None:
        self.write({"e": "no", "id": reservation_id, "op": op, "reason": reason})

    def unknown(self, reservation_id: str, op: str, code: str) -> None:
        self.write({"e": "?", "id": reservation_id, "op": op, "code": code})

    def stock_set(self, sku: str, node: str, on_hand: int) -> None:
        self.write({"e": "stock", "sku": sku, "node": node, "on_hand": on_hand})

    def supply_changed(self, sku: str, node: str, kind: str, amount: int) -> None:
        self.write({"e": "supply", "sku": sku, "node": node, "kind": kind, "amount": amount})

    def setup(self) -> None:
        self.write({"e": "setup"})

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# ------------------------------------------------------------------ reading


@dataclass
class ToldReservation:
    """What the clients know about one reservation id after the run."""

    id: str
    # The last reservation the engine returned for it; None if no call on it
    # was ever answered with the reservation.
    told: Snapshot | None = None
    # An operation sent after the last answer whose outcome is unknown.
    pending: str | None = None
    # A Reserve was definitely refused (OUT_OF_STOCK, ...): it must not exist.
    refused_reason: str | None = None
    # Requested (sku, quantity) of the Reserve, for reports on unknown outcomes.
    requested: tuple[tuple[str, int], ...] = ()


@dataclass
class RunRecord:
    """A whole run's journals, merged."""

    reservations: dict[str, ToldReservation] = field(default_factory=dict)
    # Exact on_hand the scenario set on hot rows: (sku, node) -> units.
    hot_stock: dict[tuple[str, str], int] = field(default_factory=dict)
    # Rows whose on_hand feeds changed during the run.
    supply_rows: set[tuple[str, str]] = field(default_factory=set)
    # Setup records: exactly one per run (the local process's or the master's).
    setups: int = 0
    processes: int = 0
    torn_lines: int = 0
    # Problems in the journal itself (an id used by two processes, ...).
    problems: list[str] = field(default_factory=list)

    @property
    def hot_skus(self) -> set[str]:
        return {sku for sku, _ in self.hot_stock}

    def touched_skus(self) -> set[str]:
        skus = set(self.hot_skus)
        for r in self.reservations.values():
            skus.update(sku for sku, _ in r.requested)
            if r.told is not None:
                skus.update(ln.sku for ln in r.told.lines)
        return skus


def _records(path: Path, record: RunRecord) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for raw in f:
            try:
                yield json.loads(raw)
            except json.JSONDecodeError:
                # Only a killed process's last line can be torn; the checker
                # reports the count, and an unknown outcome is handled anyway.
                record.torn_lines += 1


def read_journal(paths: Iterable[Path]) -> RunRecord:
    """Merge journal files into the clients' final knowledge of every reservation."""
    record = RunRecord()
    owner: dict[str, Path] = {}
    for path in sorted(paths):
        record.processes += 1
        for rec in _records(path, record):
            kind = rec.get("e")
            if kind == "setup":
                record.setups += 1
            elif kind == "stock":
                record.hot_stock[(rec["sku"], rec["node"])] = int(rec["on_hand"])
            elif kind == "supply":
                record.supply_rows.add((rec["sku"], rec["node"]))
            elif kind in ("try", "ok", "no", "?"):
                rid = str(rec["id"])
                if owner.setdefault(rid, path) != path:
                    record.problems.append(f"reservation id {rid} used by two processes ({path.name})")
                _fold(record.reservations.setdefault(rid, ToldReservation(rid)), kind, rec)
    return record


def _fold(r: ToldReservation, kind: str, rec: dict[str, Any]) -> None:
    op = str(rec["op"])
    if kind == "try":
        r.pending = op
        if op == "reserve":
            r.requested = tuple((str(sku), int(qty)) for sku, qty, *_ in rec.get("lines", ()))
    elif kind == "ok":
        r.told = Snapshot.from_json(rec)
        r.pending = None
        r.refused_reason = None
    elif kind == "no":
        r.pending = None
        if op == "reserve" and r.told is None:
            r.refused_reason = str(rec.get("reason", ""))
        elif rec.get("reason") == "RESERVATION_EXPIRED" and r.told is not None:
            # The engine said the hold ran out: that is news about its state.
            r.told = r.told.expired_copy()
    # kind "?": the pending op stays pending: it may or may not have happened.
