"""The Store contract, run against every store kind: the embedded store on both
ledgers, the Redis store on a standalone server and on a 3-master Redis Cluster.

Everything here goes through the Store port (``engine.store.base.Store``) and
nothing else: no journal files, no ledger, no Redis keys. "A failed call changes
nothing" is checked by reading everything a client can read before and after.
What only the embedded store has (journal, snapshots, recovery, group commit,
the directory lock) is tested in test_embedded_store.py; Redis restarts and
outages in test_redis_durability.py.

A fake clock makes expiry exact; the sweeper test uses the real one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from store_helpers import (
    CALENDAR_NODE,
    SEEDED_ROWS,
    T0,
    FakeClock,
    StoreMaker,
    adjust,
    cross_slot_skus,
    expected_store_class,
    req,
    reserved_total,
    seed,
    store_params,
)

from engine.core.capacity import local_day
from engine.core.carriers import default_carriers, dump_carriers
from engine.core.errors import (
    EngineError,
    EtagMismatch,
    IdempotencyMismatch,
    IllegalTransition,
    InvalidArgument,
    NodeNotEligible,
    NotFound,
    OutOfStock,
    StockRejected,
    StoreUnavailable,
    UnknownChannel,
    UnknownNode,
)
from engine.core.future_supply import InboundKind, InboundOutcome, InboundSupply
from engine.core.types import (
    Capability,
    Channel,
    LineRequest,
    Node,
    NodeType,
    ReservationState,
    ReserveRequest,
    SupplyKind,
    SupplyOp,
)
from engine.store.base import CarrierRecord, Store

pytestmark = pytest.mark.asyncio

HELD = ReservationState.HELD
COMMITTED = ReservationState.COMMITTED
FULFILLED = ReservationState.FULFILLED
RELEASED = ReservationState.RELEASED
EXPIRED = ReservationState.EXPIRED

ROWS = (*SEEDED_ROWS, ("sku-b", "dc2"), ("sku-a", "store1"), ("sku-c", "store1"))


async def observe(store: Store, reservation_ids: tuple[str, ...] = ()) -> dict[str, Any]:
    """Everything a client can read of the seeded network, for before/after comparisons."""

    async def outcome(reservation_id: str) -> Any:
        try:
            return await store.get_reservation(reservation_id)
        except NotFound:
            return "not found"

    report = await store.audit()
    return {
        "nodes": await store.list_nodes(),
        "channels": await store.list_channels(),
        "stock": [await store.stock(sku, node) for sku, node in ROWS],
        "web": await store.availability(["sku-a", "sku-b", "sku-c"], "web", None, True),
        "pos": await store.availability(["sku-a", "sku-b", "sku-c"], "pos", None, True),
        "reservations": {rid: await outcome(rid) for rid in reservation_ids},
        "audit": (report.violations, report.shortages, report.rows, report.reservations),
    }


# ======================================================================= basics


async def test_it_is_a_store(make_store: StoreMaker, store_kind: str) -> None:
    store = await make_store()
    assert isinstance(store, expected_store_class(store_kind))
    assert store.kind == ("embedded" if store_kind.startswith("embedded") else "redis")
    checked: Store = store  # the Protocol, statically
    assert checked is store


async def test_network_upserts_are_listed_sorted_and_validated(make_store: StoreMaker) -> None:
    store = await make_store()
    await store.upsert_node(Node("b-store", NodeType.STORE, "B", latitude=1.5))
    await store.upsert_node(Node("a-dc", NodeType.DC))
    assert [n.id for n in await store.list_nodes()] == ["a-dc", "b-store"]
    assert (await store.list_nodes())[1] == Node("b-store", NodeType.STORE, "B", latitude=1.5)

    with pytest.raises(UnknownNode):
        await store.upsert_channel(Channel("web", ("a-dc", "nowhere")))
    assert await store.list_channels() == []  # a failed call changes nothing

    await store.upsert_channel(Channel("web", ("b-store", "a-dc")))
    await store.upsert_channel(Channel("app", ("a-dc",)))
    assert [c.id for c in await store.list_channels()] == ["app", "web"]
    # The node order is the sourcing priority: kept as given, and used.
    assert (await store.list_channels())[1].nodes == ("b-store", "a-dc")
    await store.apply_supply([adjust("sku-x", "a-dc", 5), adjust("sku-x", "b-store", 5)])
    held = await store.reserve(req("first-node-wins", ("sku-x", 1)))
    assert [(a.node, a.quantity) for a in held.lines[0].allocations] == [("b-store", 1)]

    # An identical upsert changes nothing; a changed one replaces the node.
    before = await store.list_nodes()
    assert await store.upsert_node(Node("a-dc", NodeType.DC)) == Node("a-dc", NodeType.DC)
    assert await store.list_nodes() == before
    await store.upsert_node(Node("a-dc", NodeType.DC, "renamed"))
    assert (await store.list_nodes())[0].name == "renamed"
    assert len(await store.list_nodes()) == 2


# ================================================================ reservations


async def test_a_reservation_moves_through_its_states(make_store: StoreMaker) -> None:
    clock = FakeClock(T0 + 500.0)
    store = await make_store(clock=clock)
    await seed(store)

    res = await store.reserve(req("r1", ("sku-a", 12)))
    assert res.state == HELD
    assert (res.created_at, res.expires_at, res.ttl_s) == (T0 + 500.0, T0 + 1100.0, 600.0)
    assert [(a.node, a.quantity) for a in res.lines[0].allocations] == [("dc1", 10), ("dc2", 2)]
    assert (await store.stock("sku-a", "dc1")).reserved == 10
    [avail] = await store.availability(["sku-a"], "web", None, True)
    assert avail.atp == 8
    assert [(n.node, n.atp) for n in avail.nodes] == [("dc1", 0), ("dc2", 8)]

    clock.now = T0 + 510.0
    extended = await store.extend("r1", 60.0)
    assert extended.expires_at == T0 + 570.0

    committed = await store.commit("r1")
    assert committed.state == COMMITTED
    assert (await store.stock("sku-a", "dc1")).committed == 10

    fulfilled = await store.fulfill("r1", None)
    assert fulfilled.state == FULFILLED
    level = await store.stock("sku-a", "dc1")
    assert (level.on_hand, level.reserved, level.committed) == (0, 0, 0)
    assert await store.get_reservation("r1") == fulfilled

    with pytest.raises(IllegalTransition):
        await store.release("r1", None)
    with pytest.raises(NotFound):
        await store.get_reservation("nope")
    with pytest.raises(NotFound):
        await store.commit("nope")


async def test_partial_release_and_line_states(make_store: StoreMaker) -> None:
    store = await make_store()
    await seed(store)
    await store.reserve(req("r", ("sku-a", 2), ("sku-b", 1)))
    res = await store.release("r", [1])
    assert [line.state for line in res.lines] == [HELD, RELEASED]
    assert res.state == HELD
    assert (await store.stock("sku-b", "dc1")).reserved == 0
    assert await reserved_total(store, "sku-a") == 2


async def test_failures_change_nothing(make_store: StoreMaker) -> None:
    store = await make_store()
    await seed(store)
    await store.reserve(req("kept", ("sku-a", 1)))
    before = await observe(store, ("kept", "too-much", "x", "bad-node", "not-eligible"))

    with pytest.raises(OutOfStock) as info:
        await store.reserve(req("too-much", ("sku-a", 100), ("sku-b", 1)))
    assert [s.sku for s in info.value.shortfalls] == ["sku-a"]
    with pytest.raises(UnknownChannel):
        await store.reserve(ReserveRequest("x", "nowhere", (LineRequest("sku-a", 1),), 60.0))
    with pytest.raises(UnknownNode):
        await store.reserve(req("bad-node", ("sku-a", 1), ("sku-a", 1, "ghost")))
    with pytest.raises(NodeNotEligible):
        await store.reserve(req("not-eligible", ("sku-a", 1), ("sku-a", 1, "store1")))
    with pytest.raises(StockRejected):
        # All or nothing: the valid first op is not applied either.
        await store.apply_supply([adjust("sku-a", "dc1", 5), adjust("sku-b", "dc1", -99)])
    with pytest.raises(IdempotencyMismatch):
        await store.reserve(req("kept", ("sku-a", 2)))
    with pytest.raises(IllegalTransition):
        await store.fulfill("kept", None)  # not committed

    assert await observe(store, ("kept", "too-much", "x", "bad-node", "not-eligible")) == before
    with pytest.raises(NotFound):
        await store.get_reservation("too-much")


async def test_a_refused_fulfill_ships_no_line(make_store: StoreMaker) -> None:
    """One line short of stock on hand refuses the whole Fulfill and ships no
    other line, also when the lines live in different Redis Cluster slots (the
    SKUs are chosen so); the refusal names the first short row in line order."""
    store = await make_store()
    await seed(store)
    shelf, short = cross_slot_skus(2)
    await store.apply_supply([adjust(shelf, "dc1", 5), adjust(short, "dc1", 5)])
    await store.reserve(req("order", (shelf, 2, "dc1"), (short, 3, "dc1")))
    await store.commit("order")
    # A recount finds 1 of the order's 3 units of `short`: a shortage.
    await store.apply_supply([SupplyOp(SupplyKind.SET, short, "dc1", 1, 1, None)])

    async def everything() -> Any:
        stock = [await store.stock(sku, "dc1") for sku in (shelf, short)]
        return await observe(store, ("order",)), stock

    before = await everything()
    assert [line.state for line in before[0]["reservations"]["order"].lines] == [COMMITTED, COMMITTED]
    for lines in (None, [0, 1], [1, 0]):
        with pytest.raises(StockRejected) as info:
            await store.fulfill("order", lines)
        assert info.value.reason == "NEGATIVE_ON_HAND"
        assert str(info.value) == f"cannot ship 3 of {short}@dc1: only 1 on hand"
        assert await everything() == before  # nothing shipped, in any slot
    # Both rows short: the first line's row is named, and still nothing ships.
    await store.apply_supply([SupplyOp(SupplyKind.SET, shelf, "dc1", 0, 1, None)])
    before = await everything()
    with pytest.raises(StockRejected) as info:
        await store.fulfill("order", None)
    assert str(info.value) == f"cannot ship 2 of {shelf}@dc1: only 0 on hand"
    assert await everything() == before
    # The stock is back: the order ships whole.
    await store.apply_supply([adjust(shelf, "dc1", 2), adjust(short, "dc1", 2)])
    shipped = await store.fulfill("order", None)
    assert [line.state for line in shipped.lines] == [FULFILLED, FULFILLED]
    levels = [await store.stock(sku, "dc1") for sku in (shelf, short)]
    assert [(level.on_hand, level.committed) for level in levels] == [(0, 0), (0, 0)]
    report = await store.audit()
    assert report.ok and not report.shortages


async def test_idempotent_replays_return_the_stored_result_and_change_nothing(make_store: StoreMaker) -> None:
    store = await make_store()
    await seed(store)
    first = await store.reserve(req("r", ("sku-a", 3)))
    assert await store.reserve(req("r", ("sku-a", 3))) == first
    assert await reserved_total(store, "sku-a") == 3
    with pytest.raises(IdempotencyMismatch):
        await store.reserve(req("r", ("sku-a", 4)))
    assert await reserved_total(store, "sku-a") == 3

    [change] = await store.apply_supply([adjust("sku-b", "dc1", 1, "receipt-9")])
    assert change.applied and not change.duplicate
    [again] = await store.apply_supply([adjust("sku-b", "dc1", 1, "receipt-9")])
    assert again.duplicate
    assert (await store.stock("sku-b", "dc1")).on_hand == 4
    with pytest.raises(IdempotencyMismatch):
        await store.apply_supply([adjust("sku-b", "dc1", 2, "receipt-9")])
    assert (await store.stock("sku-b", "dc1")).on_hand == 4


async def test_supply_versions_safety_stock_and_shortages(make_store: StoreMaker) -> None:
    store = await make_store()
    await seed(store)
    [counted] = await store.apply_supply([SupplyOp(SupplyKind.SET, "sku-c", "store1", 7, 3, "count-1")])
    assert (counted.applied, counted.level.on_hand, counted.level.version) == (True, 7, 3)
    [stale] = await store.apply_supply([SupplyOp(SupplyKind.SET, "sku-c", "store1", 99, 2, None)])
    assert (stale.applied, stale.duplicate, stale.level.on_hand) == (False, False, 7)
    [safety] = await store.apply_supply([SupplyOp(SupplyKind.SAFETY, "sku-c", "store1", 2, 0, None)])
    assert (safety.level.safety_stock, safety.level.atp) == (2, 5)
    [avail] = await store.availability(["sku-c"], "pos", None, False)
    assert avail.atp == 5

    pos = ReserveRequest("pos-sale", "pos", (LineRequest("sku-c", 5),), 600.0)
    await store.reserve(pos)
    [recount] = await store.apply_supply([SupplyOp(SupplyKind.SET, "sku-c", "store1", 1, 4, None)])
    assert (recount.applied, recount.level.shortage) == (True, 4)
    with pytest.raises(OutOfStock):  # no new holds on a short row
        await store.reserve(ReserveRequest("more", "pos", (LineRequest("sku-c", 1),), 600.0))
    report = await store.audit()
    assert report.ok
    assert [(s.sku, s.node, s.shortage) for s in report.shortages] == [("sku-c", "store1", 4)]


async def test_a_cancelled_caller_leaves_nothing_partial_and_others_unharmed(make_store: StoreMaker) -> None:
    store = await make_store()
    await seed(store)
    cancelled = asyncio.create_task(store.reserve(req("a", ("sku-a", 1), ("sku-b", 1))))
    other = asyncio.create_task(store.reserve(req("b", ("sku-a", 1))))
    await asyncio.sleep(0)
    cancelled.cancel()
    assert (await other).state == HELD
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    # The cancelled reservation happened whole or not at all.
    try:
        kept = await store.get_reservation("a")
    except NotFound:
        a_lines = 0
    else:
        assert kept.state == HELD and [line.allocated for line in kept.lines] == [1, 1]
        a_lines = 1
    assert await reserved_total(store, "sku-a") == 1 + a_lines
    assert await reserved_total(store, "sku-b") == a_lines
    assert (await store.audit()).ok


async def test_audit_reports_shortages_and_counts(make_store: StoreMaker) -> None:
    store = await make_store()
    await seed(store)
    await store.reserve(req("r", ("sku-a", 10)))
    await store.apply_supply([SupplyOp(SupplyKind.SET, "sku-a", "dc1", 4, 1, None)])  # recount: 6 missing
    report = await store.audit()
    assert report.ok and report.violations == ()
    assert [(s.sku, s.node, s.shortage) for s in report.shortages] == [("sku-a", "dc1", 6)]
    assert (report.rows, report.reservations) == (3, 1)


async def test_a_closed_store_refuses_calls(make_store: StoreMaker) -> None:
    store = await make_store()
    await seed(store)
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreUnavailable):
        await store.reserve(req("r", ("sku-a", 1)))
    with pytest.raises(StoreUnavailable):
        await store.stock("sku-a", "dc1")


async def workload(store: Store, clock: FakeClock) -> tuple[str, ...]:
    """A mix of every mutation, each acknowledged before the next; returns the reservation ids."""
    await store.reserve(req("held", ("sku-a", 4)))
    await store.reserve(req("to-commit", ("sku-a", 8), ("sku-b", 1)))
    await store.commit("to-commit")
    await store.reserve(req("to-fulfill", ("sku-b", 2)))
    await store.commit("to-fulfill")
    await store.fulfill("to-fulfill", None)
    await store.reserve(req("to-release", ("sku-a", 1), ("sku-a", 1)))
    await store.release("to-release", [0])
    await store.reserve(req("another-hold", ("sku-a", 1)))
    await store.extend("held", 900.0)
    await store.apply_supply([SupplyOp(SupplyKind.SET, "sku-c", "store1", 7, 3, "count-1")])
    await store.apply_supply([SupplyOp(SupplyKind.SAFETY, "sku-c", "store1", 1, 0, None)])
    await store.reserve(req("expiring", ("sku-a", 1), ttl=5.0))
    clock.now += 10
    assert (await store.get_reservation("expiring")).state == EXPIRED
    return ("held", "to-commit", "to-fulfill", "to-release", "another-hold", "expiring")


async def test_a_new_store_on_the_same_state_sees_everything_acknowledged(make_store: StoreMaker) -> None:
    clock = FakeClock()
    store = await make_store(clock=clock)
    await seed(store)
    ids = await workload(store, clock)
    before = await observe(store, ids)
    await store.close()

    again = await make_store(clock=FakeClock(clock.now))
    assert await observe(again, ids) == before
    assert before["audit"][0] == ()
    # The event ids and the versions came along too.
    [duplicate] = await again.apply_supply([adjust("sku-a", "dc1", 10, "r1")])
    assert duplicate.duplicate
    [stale] = await again.apply_supply([SupplyOp(SupplyKind.SET, "sku-c", "store1", 50, 2, None)])
    assert not stale.applied


async def test_node_calendars_and_capabilities_survive_a_new_store(make_store: StoreMaker) -> None:
    store = await make_store()
    # No capabilities at all is stored as such, not as "by node type".
    bare = Node("dc-none", NodeType.DC, capabilities=Capability.NONE)
    assert await store.upsert_node(CALENDAR_NODE) == CALENDAR_NODE
    await store.upsert_node(bare)
    assert await store.list_nodes() == [bare, CALENDAR_NODE]
    await store.close()

    again = await make_store()
    listed = await again.list_nodes()
    assert listed == [bare, CALENDAR_NODE]
    assert listed[0].capabilities is Capability.NONE and listed[1].open_weekdays == (1, 2, 3, 4, 5, 6)


# ======================================================================= expiry


async def test_reads_never_show_a_hold_past_its_expiry(make_store: StoreMaker) -> None:
    clock = FakeClock(T0 + 100.0)
    store = await make_store(clock=clock, sweep_interval_s=1.0)
    await seed(store)
    await store.reserve(req("r", ("sku-a", 10), ttl=10.0))
    clock.now = T0 + 110.0  # due, and the sweeper has not run
    assert (await store.get_reservation("r")).state == EXPIRED
    [avail] = await store.availability(["sku-a"], "web", None, False)
    assert avail.atp == 20


async def test_a_failing_call_after_an_expiry_sees_the_units_back(make_store: StoreMaker) -> None:
    clock = FakeClock(T0 + 1_000.0)
    store = await make_store(clock=clock, sweep_interval_s=1.0)
    await seed(store)
    await store.reserve(req("short", ("sku-a", 15), ttl=10.0))
    clock.now = T0 + 1_011.0
    with pytest.raises(OutOfStock) as info:
        await store.reserve(req("big", ("sku-a", 21)))
    assert info.value.shortfalls[0].available == 20
    assert (await store.get_reservation("short")).state == EXPIRED
    assert (await store.stock("sku-a", "dc1")).reserved == 0
    with pytest.raises(IllegalTransition) as expired:
        await store.commit("short")
    assert expired.value.reason == "RESERVATION_EXPIRED"


async def test_the_sweeper_expires_holds_nobody_reads_within_a_second(make_store: StoreMaker) -> None:
    store = await make_store(clock=time.time)  # the default sweep interval
    await seed(store)
    res = await store.reserve(req("soon", ("sku-a", 3), ttl=0.3))
    # No call at all until the hold is over a second past its expiry: only the
    # sweeper can have expired it. Audit does not expire holds; it reports any
    # held more than a second past its expiry.
    await asyncio.sleep(max(0.0, res.expires_at + 1.0 - time.time()) + 0.05)
    report = await store.audit()
    assert report.ok, report.violations
    assert (await store.get_reservation("soon")).state == EXPIRED
    assert await reserved_total(store, "sku-a") == 0


async def test_holds_that_expired_while_the_store_was_down_return_at_start(make_store: StoreMaker) -> None:
    store = await make_store(clock=FakeClock(T0 + 1_000.0), sweep_interval_s=1.0)
    await seed(store)
    await store.reserve(req("r", ("sku-a", 5), ttl=10.0))
    await store.close()

    reopened = await make_store(clock=FakeClock(T0 + 5_000.0), sweep_interval_s=1.0)
    report = await reopened.audit()  # the first call: no read has expired anything
    assert report.ok, report.violations
    assert (await reopened.stock("sku-a", "dc1")).reserved == 0
    assert (await reopened.get_reservation("r")).state == EXPIRED


async def test_every_error_is_an_engine_error(make_store: StoreMaker) -> None:
    """What the servicer maps to gRPC statuses: nothing else may escape a store."""
    store = await make_store()
    await seed(store)
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: store.commit("missing"),
        lambda: store.release("missing", [0]),
        lambda: store.extend("missing", 10.0),
        lambda: store.reserve(
            ReserveRequest("p", "web", (LineRequest("sku-z", 1),), 60.0, allow_partial=True)
        ),
        lambda: store.availability(["sku-a"], "nowhere", None, False),
        lambda: store.availability(["sku-a"], None, ["ghost"], False),
    ]
    for call in calls:
        with pytest.raises(EngineError):
            await call()


# ================================================================ future supply


def po(
    supply_id: str, sku: str = "sku-a", node: str = "dc1", quantity: int = 10, eta: float = T0 + 5 * 86_400.0,
    kind: InboundKind = InboundKind.PURCHASE_ORDER,
) -> InboundSupply:  # fmt: skip
    return InboundSupply(supply_id, sku, node, quantity, eta, kind)


async def all_inbound(store: Store, **filters: Any) -> list[InboundSupply]:
    """Every page of a listing, two records at a time (pagination on every call)."""
    out: list[InboundSupply] = []
    after: str | None = None
    while True:
        page = await store.list_inbound(after=after, limit=2, **filters)
        out += page.records
        if page.next_after is None:
            return out
        assert page.records and page.next_after == page.records[-1].id
        after = page.next_after


async def test_inbound_upserts_are_idempotent_by_id_and_revisions_replace(make_store: StoreMaker) -> None:
    store = await make_store()
    await seed(store)
    first = [
        po("po-1"),
        po("po-2", "sku-b", "dc2", 5),
        po("tr-1", "sku-a", "store1", 2, kind=InboundKind.TRANSFER),
    ]
    assert await store.upsert_inbound(first) == [InboundOutcome.CREATED] * 3
    # The same records again change nothing.
    assert await store.upsert_inbound(first) == [InboundOutcome.UNCHANGED] * 3
    assert await all_inbound(store) == sorted(first, key=lambda r: r.id)

    # A revised PO line (new ETA and quantity, even another node) replaces the old one.
    revised = po("po-1", "sku-a", "dc2", 12, T0 + 9 * 86_400.0)
    outcomes = await store.upsert_inbound([first[1], revised])
    assert outcomes == [InboundOutcome.UNCHANGED, InboundOutcome.UPDATED]
    assert sorted(await store.inbound(["sku-a", "sku-a"]), key=lambda r: r.id) == [revised, first[2]]
    assert await store.inbound(["sku-b", "sku-z"]) == [first[1]]
    assert await store.inbound([]) == []
    # Filters: by SKU, by node (the revision left dc1's index), both.
    assert await all_inbound(store, sku="sku-a") == [revised, first[2]]
    assert await all_inbound(store, node="dc1") == []
    assert await all_inbound(store, node="dc2") == [revised, first[1]]
    assert await all_inbound(store, sku="sku-a", node="dc2") == [revised]
    assert await all_inbound(store, sku="sku-a", node="store1") == [first[2]]
    assert await all_inbound(store, sku="sku-none") == []

    one = await store.list_inbound(limit=1)
    assert one.records == (revised,) and one.next_after == "po-1"
    rest = await store.list_inbound(after="po-1", limit=5)
    assert rest.records == (first[1], first[2]) and rest.next_after is None
    # Stock is untouched: future supply is not on the shelf.
    assert (await store.stock("sku-a", "dc2")).on_hand == 10


async def test_a_bad_inbound_batch_changes_nothing(make_store: StoreMaker) -> None:
    store = await make_store()
    await seed(store)
    await store.upsert_inbound([po("po-1")])
    before = await all_inbound(store)

    with pytest.raises(UnknownNode) as unknown:
        await store.upsert_inbound([po("po-2"), po("po-3", node="nowhere")])
    assert unknown.value.reason == "NODE_NOT_FOUND"
    assert [v.field for v in unknown.value.violations] == ["records[1].node"]

    with pytest.raises(InvalidArgument) as bad:
        await store.upsert_inbound(
            [po("po-1", quantity=99), po("po 4"), po("po-5", quantity=0), po("po-6", sku="a{b}")]
        )
    fields = {v.field for v in bad.value.violations}
    assert fields == {"records[1].id", "records[2].quantity", "records[3].sku"}

    with pytest.raises(InvalidArgument) as repeated:
        await store.upsert_inbound([po("po-7"), po("po-7", quantity=3)])
    assert [v.field for v in repeated.value.violations] == ["records[1].id"]
    assert await all_inbound(store) == before


async def test_inbound_removal_reports_what_was_there(make_store: StoreMaker) -> None:
    store = await make_store()
    await seed(store)
    await store.upsert_inbound([po("po-1"), po("po-2", "sku-b"), po("po-3", node="dc2")])
    assert await store.remove_inbound(["po-2", "ghost", "po-1", "po-2"]) == [True, False, True, False]
    assert await all_inbound(store) == [po("po-3", node="dc2")]
    assert await store.inbound(["sku-a", "sku-b"]) == [po("po-3", node="dc2")]
    assert await all_inbound(store, node="dc1") == []
    assert await store.remove_inbound(["ghost"]) == [False]
    # A removed id can come back (a cancelled PO line re-issued).
    assert await store.upsert_inbound([po("po-1", quantity=4)]) == [InboundOutcome.CREATED]
    assert await all_inbound(store, sku="sku-a", node="dc1") == [po("po-1", quantity=4)]


async def test_inbound_supply_survives_a_new_store(make_store: StoreMaker) -> None:
    store = await make_store()
    await seed(store)
    records = [
        po(f"po-{i:02d}", ("sku-a", "sku-b")[i % 2], ("dc1", "dc2")[i % 3 == 0], i + 1) for i in range(7)
    ]
    await store.upsert_inbound(records)
    await store.upsert_inbound([po("po-03", "sku-b", "dc1", 40, T0 + 0.125)])
    await store.remove_inbound(["po-05"])
    before = await all_inbound(store)
    await store.close()

    again = await make_store()
    assert await all_inbound(again) == before
    assert len(before) == 6 and po("po-03", "sku-b", "dc1", 40, T0 + 0.125) in before
    # Re-sending what is stored is still recognised as unchanged.
    assert await again.upsert_inbound(before) == [InboundOutcome.UNCHANGED] * 6


# ============================================== carrier table, daily capacity


async def test_a_carrier_table_is_set_versioned_and_reset(make_store: StoreMaker) -> None:
    store = await make_store()
    assert await store.carrier_table() == CarrierRecord()  # none set: the server's applies
    sample = dump_carriers(default_carriers())
    first = await store.set_carrier_table(sample, expected_version=0)
    assert (first.document, first.version, first.updated_at) == (sample, 1, T0)
    assert await store.set_carrier_table(sample) == first, "the same table again writes nothing"
    with pytest.raises(EtagMismatch):
        await store.set_carrier_table({**sample, "transfer_service": None}, expected_version=0)
    assert await store.carrier_table() == first
    reset = await store.set_carrier_table(None, expected_version=1)
    assert (reset.document, reset.version) == (None, 2), "a reset is a version too"
    again = await store.set_carrier_table(sample)
    assert again.version == 3
    await store.close()

    reopened = await make_store()
    assert await reopened.carrier_table() == again


# Redis kinds only: one process owns an embedded store.
@pytest.mark.parametrize("store_kind", store_params("redis", "cluster"))
async def test_a_carrier_table_reaches_every_process_at_once(
    make_store: StoreMaker, store_kind: str
) -> None:
    one, two = await make_store(), await make_store()
    assert (await two.carrier_table()).version == 0
    record = await one.set_carrier_table(dump_carriers(default_carriers()))
    assert await two.carrier_table() == record
    assert (await two.set_carrier_table(None)).version == 2
    assert await one.carrier_table() == CarrierRecord(None, 2, T0)


async def test_capacity_counts_each_committed_order_once_per_node_and_local_day(
    make_store: StoreMaker,
) -> None:
    store = await make_store()
    await seed(store)
    # dc1 counts, on its own local day (Auckland's, a day ahead of Los Angeles'
    # at T0); dc2 has no capacity.
    dc1 = Node("dc1", NodeType.DC, "DC one", time_zone="Pacific/Auckland", daily_capacity=5)
    await store.upsert_node(dc1)
    today = local_day("Pacific/Auckland", T0)
    assert today != local_day("America/Los_Angeles", T0)
    await store.reserve(req("split", ("sku-a", 15)))  # dc1 10 + dc2 5
    assert await store.released([("dc1", today)]) == [0], "a hold is not an order"
    await store.commit("split")
    await store.commit("split")  # a retried commit
    assert await store.released([("dc1", today), ("dc2", today), ("dc1", "2000-01-01")]) == [1, 0, 0]
    # A line released before the commit ships nothing from its node.
    await store.apply_supply([adjust("sku-a", "dc1", 5), adjust("sku-b", "dc2", 5)])
    await store.reserve(req("two", ("sku-b", 1, "dc2"), ("sku-a", 1, "dc1")))
    await store.release("two", [1])
    await store.commit("two")
    assert await store.released([("dc1", today)]) == [1]
    await store.reserve(req("three", ("sku-a", 2, "dc1")))
    await store.commit("three")
    assert await store.released([("dc1", today)]) == [2]
    await store.close()

    reopened = await make_store()
    assert await reopened.released([("dc1", today)]) == [2]
    await reopened.commit("three")
    assert await reopened.released([("dc1", today)]) == [2]
