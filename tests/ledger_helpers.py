"""Helpers shared by the ledger contract suite and the differential state machine."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from engine.core.errors import EngineError
from engine.core.ledger_protocol import Ledger
from engine.core.types import SupplyKind, SupplyOp

# A small network. ``web`` deliberately leaves store2 out so eligibility matters,
# and the two channels share store1.
NODES = ("dc1", "dc2", "store1", "store2")
CHANNELS = {
    "web": ("dc1", "dc2", "store1"),
    "pos": ("store1", "store2"),
}


def define_network(ledger: Ledger) -> Ledger:
    for node in NODES:
        ledger.define_node(node)
    for channel, nodes in CHANNELS.items():
        ledger.define_channel(channel, nodes)
    return ledger


def receive(ledger: Ledger, sku: str, per_node: Mapping[str, int], now: float = 0.0) -> None:
    """Put stock on hand, one receipt per node."""
    for node, quantity in per_node.items():
        ledger.adjust_stock(sku, node, quantity, None, now)


def error_signature(exc: EngineError) -> tuple[Any, ...]:
    """What a caller can observe of a domain error, minus the free-text message."""
    return (
        type(exc),
        exc.reason,
        tuple(getattr(exc, "shortfalls", ())),
        tuple(getattr(exc, "violations", ())),
    )


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """The return value or the domain error of a call, in a comparable form.

    Anything that is not an EngineError propagates: neither ledger may leak a
    KeyError or a TypeError to its caller.
    """
    try:
        return ("ok", call())
    except EngineError as exc:
        return ("error", error_signature(exc))


def normalized_state(state: dict[str, Any]) -> dict[str, Any]:
    """``export_state()`` with the order of its unordered collections fixed.

    The image lists nodes, rows and reservations in storage order, which the
    format does not promise: the pure ledger uses insertion order, and the
    Cython one is free to use its interned-id order (today the two agree, but
    the differential test must not depend on that). So those lists are sorted
    here. Order that carries meaning is kept: a channel's node list (sourcing
    priority), a reservation's lines and a line's allocations. Numbers compare
    by value, so 10 and 10.0 are the same.
    """
    return {
        "format": state["format"],
        "nodes": sorted(state["nodes"]),
        "channels": {c: list(nodes) for c, nodes in state["channels"].items()},
        "rows": sorted(list(row) for row in state["rows"]),
        "reservations": sorted(
            (
                [
                    rid,
                    channel,
                    ttl_s,
                    bool(allow_partial),
                    created_at,
                    expires_at,
                    [
                        [sku, qty, node, [list(a) for a in allocs], int(st)]
                        for sku, qty, node, allocs, st in lines
                    ],
                ]
                for rid, channel, ttl_s, allow_partial, created_at, expires_at, lines in state["reservations"]
            ),
            key=lambda r: r[0],
        ),
        "events": {e: list(fp) for e, fp in state["events"].items()},
        "channel_rules": {
            c: sorted(list(rule) for rule in rules) for c, rules in state.get("channel_rules", {}).items()
        },
        "track_usage": sorted(state.get("track_usage", ())),
    }


def snapshot(ledger: Ledger) -> dict[str, Any]:
    return normalized_state(ledger.export_state())


# --------------------------------------------------------------------------- a lived-in ledger


def build_rich_state(ledger: Ledger) -> Ledger:
    """A ledger with one reservation in every state, events, versions and safety stock.

    Returns at t=100 with: ``held`` (expires 160), ``partial`` (held, one line
    released at creation, expires 130), ``committed``, ``fulfilled``,
    ``released``, ``expired``, a SetStock version, a stale SetStock event,
    safety stock and a shortage row.
    """
    define_network(ledger)
    ledger.apply_supply(
        [
            SupplyOp(SupplyKind.ADJUST, "sku-a", "dc1", 50, 0, "rcpt-1"),
            SupplyOp(SupplyKind.ADJUST, "sku-a", "dc2", 20, 0, "rcpt-2"),
            SupplyOp(SupplyKind.SET, "sku-b", "store1", 12, 3, "count-1"),
            SupplyOp(SupplyKind.SAFETY, "sku-b", "store1", 2, 0, "safety-1"),
            SupplyOp(SupplyKind.ADJUST, "sku-c", "store2", 9, 0, None),
        ],
        0.0,
    )
    ledger.set_stock("sku-b", "store1", 99, 2, "count-stale", 0.0)  # older count: ignored, remembered
    ledger.reserve("expired", "web", [("sku-a", 1, None)], 10.0, False, 0.0)
    ledger.reserve("released", "web", [("sku-a", 2, "dc2")], 600.0, False, 1.0)
    ledger.release("released", None, 2.0)
    ledger.reserve("fulfilled", "pos", [("sku-c", 3, None), ("sku-b", 1, "store1")], 600.0, False, 3.0)
    ledger.commit("fulfilled", 4.0)
    ledger.fulfill("fulfilled", None, 5.0)
    ledger.reserve("committed", "web", [("sku-a", 4, None), ("sku-b", 2, None)], 600.0, False, 6.0)
    ledger.commit("committed", 7.0)
    ledger.reserve("held", "web", [("sku-a", 30, None), ("sku-a", 25, None)], 60.0, False, 100.0)
    ledger.reserve(
        "partial", "pos", [("sku-c", 100, None), ("sku-z", 1, None), ("sku-b", 1, None)], 30.0, True, 100.0
    )
    # A recount below what is promised at store2: a shortage that must survive a snapshot.
    ledger.set_stock("sku-c", "store2", 2, 1, "count-2", 100.0)
    return ledger


def continue_rich_state(ledger: Ledger) -> list[tuple[str, Any]]:
    """Operations whose results depend on everything ``build_rich_state`` stored."""
    results = [
        outcome(
            lambda: ledger.reserve(
                "held", "web", [("sku-a", 30, None), ("sku-a", 25, None)], 60.0, False, 101.0
            )
        ),
        outcome(lambda: ledger.reserve("held", "web", [("sku-a", 31, None)], 60.0, False, 101.0)),
        outcome(lambda: ledger.adjust_stock("sku-a", "dc1", 50, "rcpt-1", 101.0)),
        outcome(lambda: ledger.adjust_stock("sku-a", "dc1", 51, "rcpt-1", 101.0)),
        outcome(lambda: ledger.set_stock("sku-b", "store1", 99, 2, "count-stale", 101.0)),
        outcome(lambda: ledger.set_stock("sku-b", "store1", 7, 3, None, 101.0)),
        outcome(lambda: ledger.commit("expired", 102.0)),
        outcome(lambda: ledger.fulfill("committed", [1], 102.0)),
        outcome(lambda: ledger.release("fulfilled", [0], 102.0)),
        outcome(lambda: ledger.reserve("new", "pos", [("sku-c", 1, None)], 5.0, False, 103.0)),
        outcome(lambda: ledger.availability(["sku-a", "sku-b", "sku-c", "sku-z"], "web", None, True)),
        outcome(lambda: ledger.availability(["sku-c"], None, ["store2"], True)),
        outcome(lambda: ledger.expire_due(129.999)),
        outcome(lambda: ledger.expire_due(130.0)),
        outcome(lambda: ledger.get_reservation("partial")),
        outcome(lambda: ledger.commit("held", 159.0)),
        outcome(lambda: ledger.fulfill("held", None, 159.5)),
        outcome(lambda: ledger.expire_due(1000.0)),
        outcome(lambda: ledger.shortages()),
        outcome(lambda: ledger.audit(1000.0)),
        outcome(lambda: list(ledger.iter_rows())),
    ]
    return results
