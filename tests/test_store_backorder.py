"""Backorder holds through the Store port, on every store kind (the embedded
store on both ledgers, Redis, Redis Cluster): a line of a promise-driven
reserve (``RankedSourcing.backorder``) may be held against the inbound supply
expected at its one node, pushing the row's ATP below zero down to minus that
allowance, by the same rule in the ledgers and in the Redis scripts (one call,
and per slot on the Cluster). The audit reports such a row as a shortage only
beyond the inbound supply expected there.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from store_helpers import (
    T0,
    Crash,
    FakeClock,
    StoreMaker,
    adjust,
    crash_at_step,
    req,
    seed,
    skus_in_distinct_slots,
    store_params,
)

from engine.core.allocation_rules import AllocationRule, RuleKind
from engine.core.errors import IdempotencyMismatch, InvalidArgument, NotFound, OutOfStock, StockRejected
from engine.core.future_supply import InboundSupply
from engine.core.types import (
    Channel,
    LineRequest,
    RankedSourcing,
    Reservation,
    ReservationState,
    ReserveRequest,
    StockLevel,
)
from engine.store.base import Store
from engine.store.redis import RedisStore

pytestmark = pytest.mark.asyncio

HELD = ReservationState.HELD
COMMITTED = ReservationState.COMMITTED
FULFILLED = ReservationState.FULFILLED
RELEASED = ReservationState.RELEASED
EXPIRED = ReservationState.EXPIRED
# Inbound supply is due a week after the stores' fake clock starts.
ETA = T0 + 7 * 86_400.0
# A hang guard for the change feed reaching another process's view, not a measurement.
HANG_GUARD_S = 30.0


def bo(
    *candidates: tuple[str, ...] | None,
    backorder: tuple[int, ...] | None,
    whole: bool = False,
    context: str = "ship|10001",
) -> RankedSourcing:
    return RankedSourcing(context, tuple(candidates), whole, backorder=backorder)


def allocations(reservation: Reservation) -> list[list[tuple[str, int]]]:
    return [[(a.node, a.quantity) for a in line.allocations] for line in reservation.lines]


def short(error: OutOfStock) -> list[tuple[int, str, int, int]]:
    return [(s.line_index, s.sku, s.requested, s.available) for s in error.shortfalls]


def counters(level: StockLevel) -> tuple[int, int, int, int]:
    """on_hand, reserved, committed, safety_stock."""
    return (level.on_hand, level.reserved, level.committed, level.safety_stock)


def inbound(supply_id: str, sku: str, node: str, quantity: int) -> InboundSupply:
    return InboundSupply(supply_id, sku, node, quantity, ETA)


async def seeded(make_store: StoreMaker, clock: FakeClock | None = None) -> Store:
    """seed()'s network (web sells from dc1 then dc2; store1 is pos's) and
    stock, plus bo-1: 3 on hand at dc1."""
    store = await make_store(clock=clock)
    await seed(store)
    await store.apply_supply([adjust("bo-1", "dc1", 3, "bo-r1")])
    return store


async def shortages(store: Store) -> list[tuple[str, str, int]]:
    """The audit's shortages (sku, node, shortage); its invariants must hold."""
    report = await store.audit()
    assert report.ok, report.violations
    return [(level.sku, level.node, level.shortage) for level in report.shortages]


def redis_of(store: Store) -> RedisStore:
    assert isinstance(store, RedisStore)
    return store



# ==================================================================== the rule


async def test_the_spec_examples(make_store: StoreMaker) -> None:
    store = await seeded(make_store)
    # on_hand 3, q 5, B 10: a 3, w 3, 5 <= 13: held; the row's ATP -2.
    first = await store.reserve(req("r1", ("bo-1", 5), sourcing=bo(("dc1",), backorder=(10,))))
    assert allocations(first) == [[("dc1", 5)]]
    assert first.lines[0].state == HELD
    level = await store.stock("bo-1", "dc1")
    assert (counters(level), level.atp) == ((3, 5, 0, 0), -2)
    # Then q 9, B 10: a -2, w 0, 9 <= 8 fails: nothing, the shortfall showing w.
    with pytest.raises(OutOfStock) as info:
        await store.reserve(req("r2", ("bo-1", 9), sourcing=bo(("dc1",), backorder=(10,))))
    assert short(info.value) == [(0, "bo-1", 9, 0)]
    # q 8 fits exactly: the ATP ends at -10, never lower. A named node is the line's one node.
    third = await store.reserve(req("r3", ("bo-1", 8, "dc1"), sourcing=bo(None, backorder=(10,))))
    assert allocations(third) == [[("dc1", 8)]]
    level = await store.stock("bo-1", "dc1")
    assert (counters(level), level.atp) == ((3, 13, 0, 0), -10)
    with pytest.raises(OutOfStock):
        await store.reserve(req("r4", ("bo-1", 1), sourcing=bo(("dc1",), backorder=(10,))))
    # Availability is clamped at zero, and the channel's other node is untouched.
    [avail] = await store.availability(["bo-1"], "web", None, True)
    assert avail.atp == 0
    assert [(n.node, n.reserved, n.atp) for n in avail.nodes] == [("dc1", 13, 0), ("dc2", 0, 0)]


async def test_two_lines_of_one_row_share_the_supply(make_store: StoreMaker) -> None:
    store = await make_store()
    await seed(store)
    await store.apply_supply([adjust("bo-2", "dc1", 2)])
    lines = (("bo-2", 4), ("bo-2", 4))
    sourcing = bo(("dc1",), ("dc1",), backorder=(5, 5))
    # Line 0: a 2, w 2, 4 <= 7: held (t becomes 4); line 1: a -2, w 0, 4 <= 3 fails.
    with pytest.raises(OutOfStock) as info:
        await store.reserve(req("r1", *lines, sourcing=sourcing))
    assert short(info.value) == [(1, "bo-2", 4, 0)]
    assert (await store.stock("bo-2", "dc1")).reserved == 0
    partial = await store.reserve(req("r2", *lines, allow_partial=True, sourcing=sourcing))
    assert allocations(partial) == [[("dc1", 4)], []]
    assert [line.state for line in partial.lines] == [HELD, RELEASED]
    assert (await store.stock("bo-2", "dc1")).reserved == 4


async def test_a_backorder_line_is_held_whole_or_not_at_all(make_store: StoreMaker) -> None:
    store = await seeded(make_store)
    # An allowance of 0 is an ordinary line, which may be held in part.
    part = await store.reserve(
        req("r0", ("bo-1", 5), allow_partial=True, sourcing=bo(("dc1",), backorder=(0,)))
    )
    assert allocations(part) == [[("dc1", 3)]]
    await store.release("r0", None)
    # 5 > 3 + 1: not the 3 on the shelf either, whatever allow_partial and whole_lines say.
    for rid, whole in (("r1", False), ("r2", True)):
        res = await store.reserve(
            req(
                rid,
                ("bo-1", 5),
                ("sku-a", 1),
                allow_partial=True,
                sourcing=bo(("dc1",), None, backorder=(1, 0), whole=whole),
            )
        )
        assert allocations(res) == [[], [("dc1", 1)]]
        assert [line.state for line in res.lines] == [RELEASED, HELD]
    assert (await store.stock("bo-1", "dc1")).reserved == 0


async def test_a_backorder_hold_at_a_row_that_did_not_exist_creates_it(make_store: StoreMaker) -> None:
    store = await seeded(make_store)
    rows = (await store.audit()).rows
    res = await store.reserve(req("r1", ("pre-1", 4), sourcing=bo(("dc2",), backorder=(6,))))
    assert allocations(res) == [[("dc2", 4)]]
    assert await store.stock("pre-1", "dc2") == StockLevel("pre-1", "dc2", 0, 4, 0, 0, 0)
    assert (await store.audit()).rows == rows + 1
    # a -4: 3 more would need 7 of the 6 expected; 2 fit.
    with pytest.raises(OutOfStock) as info:
        await store.reserve(req("r2", ("pre-1", 3, "dc2"), sourcing=bo(None, backorder=(6,))))
    assert short(info.value) == [(0, "pre-1", 3, 0)]
    await store.reserve(req("r3", ("pre-1", 2, "dc2"), sourcing=bo(None, backorder=(6,))))
    [avail] = await store.availability(["pre-1"], "web", None, True)
    assert avail.atp == 0
    assert [(n.node, n.on_hand, n.reserved, n.atp) for n in avail.nodes] == [
        ("dc1", 0, 0, 0),
        ("dc2", 0, 6, 0),
    ]
    # Releasing gives the units back; the row stays, with nothing held.
    await store.release("r1", None)
    assert await store.stock("pre-1", "dc2") == StockLevel("pre-1", "dc2", 0, 2, 0, 0, 0)
    assert (await store.audit()).rows == rows + 1


async def test_channel_allocation_rules_decide_whether_a_channel_may_backorder(
    make_store: StoreMaker,
) -> None:
    store = await make_store()
    await seed(store)
    share = AllocationRule(channel="web", kind=RuleKind.SHARE, value=50, node="dc1")
    await store.upsert_channel(Channel("web", ("dc1", "dc2"), "Web shop", allocation_rules=(share,)))
    await store.apply_supply([adjust("bo-3", "dc1", 10)])
    # a 10, w 5: the rule keeps 5 of the shelf from web, so no backorder there.
    with pytest.raises(OutOfStock) as info:
        await store.reserve(req("w1", ("bo-3", 7), sourcing=bo(("dc1",), backorder=(100,))))
    assert short(info.value) == [(0, "bo-3", 7, 5)]
    # Within the share: an ordinary hold.
    assert allocations(
        await store.reserve(req("w2", ("bo-3", 5), sourcing=bo(("dc1",), backorder=(100,))))
    ) == [[("dc1", 5)]]
    # The share is used up: a 5, w 0; the other 5 are still kept from web.
    with pytest.raises(OutOfStock) as info:
        await store.reserve(req("w3", ("bo-3", 1), sourcing=bo(("dc1",), backorder=(100,))))
    assert short(info.value) == [(0, "bo-3", 1, 0)]
    # dc2 has no rule for web: a backorder there starts the row.
    held = await store.reserve(req("w4", ("bo-3", 3), sourcing=bo(("dc2",), backorder=(3,))))
    assert allocations(held) == [[("dc2", 3)]]
    # Even a rule that keeps nothing of the shelf from the channel (a cap
    # above it) means no backorders at its node: the shelf only.
    cap = AllocationRule(channel="app", kind=RuleKind.CAP, value=100, node="dc1")
    await store.upsert_channel(Channel("app", ("dc1", "dc2"), allocation_rules=(cap,)))
    await store.apply_supply([adjust("bo-4", "dc1", 2)])
    with pytest.raises(OutOfStock) as info:
        await store.reserve(
            ReserveRequest(
                "a1", "app", (LineRequest("bo-4", 5),), 600.0, sourcing=bo(("dc1",), backorder=(3,))
            )
        )
    assert short(info.value) == [(0, "bo-4", 5, 2)]
    app = await store.reserve(
        ReserveRequest("a2", "app", (LineRequest("bo-4", 2),), 600.0, sourcing=bo(("dc1",), backorder=(3,)))
    )
    assert allocations(app) == [[("dc1", 2)]]
    assert (await store.stock("bo-4", "dc1")).atp == 0
    # channel_used counts the holds (the audit checks it against the lines).
    assert await shortages(store) == [("bo-3", "dc2", 3)]


@pytest.mark.parametrize(
    ("kind", "value"),
    [(RuleKind.CAP, 5), (RuleKind.SHARE, 30), (RuleKind.PROTECT, 2), (RuleKind.CAP, 1000)],
    ids=["cap-5", "share-30", "protect-2", "cap-1000"],
)
async def test_a_channel_with_a_rule_at_a_node_takes_no_backorders_there(
    make_store: StoreMaker, kind: RuleKind, value: int
) -> None:
    """The review's case: the call center, capped at 5 at dc1, held 100 units
    on a purchase order there once the shelf was empty. Any rule at the node
    now refuses a backorder the allowance does not cover, at an empty row and
    at a row not started yet; the rule-less node still takes backorders."""
    store = await make_store()
    await seed(store)
    rule = AllocationRule(channel="callcenter", kind=kind, value=value, node="dc1")
    await store.upsert_channel(Channel("callcenter", ("dc1", "dc2"), allocation_rules=(rule,)))
    # bo-5: the shelf at dc1 sold out (web took it); bo-6: no row at dc1 at all.
    await store.apply_supply([adjust("bo-5", "dc1", 5)])
    await store.reserve(req("web-took-it", ("bo-5", 5, "dc1")))
    rows = (await store.audit()).rows

    def callcenter(rid: str, sku: str, quantity: int, node: str, units: int) -> ReserveRequest:
        return ReserveRequest(
            rid, "callcenter", (LineRequest(sku, quantity),), 600.0, sourcing=bo((node,), backorder=(units,))
        )

    for sku in ("bo-5", "bo-6"):
        before = await store.stock(sku, "dc1")
        for rid, quantity in ((f"{sku}-100", 100), (f"{sku}-1", 1)):
            with pytest.raises(OutOfStock) as info:
                await store.reserve(callcenter(rid, sku, quantity, "dc1", 100))
            assert short(info.value) == [(0, sku, quantity, 0)]
            with pytest.raises(NotFound):
                await store.get_reservation(rid)
        assert await store.stock(sku, "dc1") == before
    assert (await store.audit()).rows == rows
    [avail] = await store.availability(["bo-5"], "callcenter", None, True)
    assert [(n.node, n.atp) for n in avail.nodes] == [("dc1", 0), ("dc2", 0)]
    # dc2 has no rule for the call center: a backorder there is held.
    held = await store.reserve(callcenter("dc2", "bo-6", 4, "dc2", 4))
    assert allocations(held) == [[("dc2", 4)]]
    assert (await store.stock("bo-6", "dc2")).atp == -4
    assert await shortages(store) == [("bo-6", "dc2", 4)]


# ============================================================ all or nothing


async def test_a_failing_reservation_with_a_backorder_line_changes_nothing(make_store: StoreMaker) -> None:
    store = await seeded(make_store)
    rows = (await store.audit()).rows
    watched = [("sku-a", "dc1"), ("bo-1", "dc1"), ("new-1", "dc2")]
    before = [await store.stock(sku, node) for sku, node in watched]
    lines = (("sku-a", 4), ("new-1", 2, "dc2"), ("bo-1", 20))
    # Line 1 alone would start new-1@dc2; line 2 needs 20 of 3 + 10.
    sourcing = bo(None, None, ("dc1",), backorder=(0, 5, 10))
    with pytest.raises(OutOfStock) as info:
        await store.reserve(req("r1", *lines, sourcing=sourcing))
    assert short(info.value) == [(2, "bo-1", 20, 3)]
    assert [await store.stock(sku, node) for sku, node in watched] == before
    assert (await store.audit()).rows == rows
    with pytest.raises(NotFound):
        await store.get_reservation("r1")
    # With allow_partial the other lines are held (the new row with them).
    partial = await store.reserve(req("r2", *lines, allow_partial=True, sourcing=sourcing))
    assert allocations(partial) == [[("dc1", 4)], [("dc2", 2)], []]
    assert [line.state for line in partial.lines] == [HELD, HELD, RELEASED]
    assert await store.stock("new-1", "dc2") == StockLevel("new-1", "dc2", 0, 2, 0, 0, 0)
    assert (await store.audit()).rows == rows + 1
    # allow_partial with nothing held at all is still out of stock.
    with pytest.raises(OutOfStock):
        await store.reserve(
            req("r3", ("bo-1", 20), allow_partial=True, sourcing=bo(("dc1",), backorder=(10,)))
        )


async def test_a_malformed_backorder_is_refused_before_anything_happens(make_store: StoreMaker) -> None:
    store = await seeded(make_store)
    one, two = (("bo-1", 1),), (("bo-1", 1), ("sku-a", 1))
    cases = [
        (two, bo(("dc1",), None, backorder=(1,)), "backorder"),  # one allowance for two lines
        (two, bo(("dc1",), None, backorder=(1, 0, 0)), "backorder"),
        (two, bo(("dc1",), None, backorder=(0, -2)), "backorder[1]"),
        (one, bo(("dc1", "dc2"), backorder=(1,)), "backorder[0]"),  # more than one node
        (one, bo(None, backorder=(1,)), "backorder[0]"),  # the channel's order
        (one, bo((), backorder=(1,)), "backorder[0]"),  # no node at all
    ]
    for i, (lines, sourcing, field) in enumerate(cases):
        with pytest.raises(InvalidArgument) as info:
            await store.reserve(req(f"bad-{i}", *lines, sourcing=sourcing))
        assert [v.field for v in info.value.violations] == [field], i
        with pytest.raises(NotFound):
            await store.get_reservation(f"bad-{i}")
    assert (await store.stock("bo-1", "dc1")).reserved == 0
    # Several candidates are fine for a line without an allowance.
    ok = await store.reserve(req("ok", ("bo-1", 1), sourcing=bo(("dc2", "dc1"), backorder=(0,))))
    assert allocations(ok) == [[("dc1", 1)]]
    # A single candidate the channel does not sell from: the line gets nothing.
    with pytest.raises(OutOfStock) as oos:
        await store.reserve(req("pos-node", ("bo-1", 1), sourcing=bo(("store1",), backorder=(5,))))
    assert short(oos.value) == [(0, "bo-1", 1, 0)]


# ================================================================== replays


async def test_a_replay_returns_the_stored_reservation_whatever_its_backorder_says(
    make_store: StoreMaker,
) -> None:
    store = await seeded(make_store)
    first = await store.reserve(req("r1", ("bo-1", 5), sourcing=bo(("dc1",), backorder=(10,))))
    # Sourced again, (1,) or another node would refuse or move the line: a replay is not sourced again.
    for sourcing in (
        bo(("dc1",), backorder=None),
        bo(("dc1",), backorder=(0,)),
        bo(("dc1",), backorder=(1,)),
        bo(("dc2",), backorder=(10,)),
    ):
        again = await store.reserve(req("r1", ("bo-1", 5), sourcing=sourcing))
        assert again == first
    assert (await store.stock("bo-1", "dc1")).reserved == 5
    with pytest.raises(IdempotencyMismatch):
        await store.reserve(
            req("r1", ("bo-1", 5), sourcing=bo(("dc1",), backorder=(10,), context="ship|94105"))
        )
    with pytest.raises(IdempotencyMismatch):
        await store.reserve(req("r1", ("bo-1", 6), sourcing=bo(("dc1",), backorder=(10,))))
    # A refused backorder is no reservation: retried once the supply covers it, it is held.
    with pytest.raises(OutOfStock):
        await store.reserve(req("r2", ("bo-1", 4), sourcing=bo(("dc1",), backorder=(5,))))
    await store.apply_supply([adjust("bo-1", "dc1", 2)])
    retried = await store.reserve(req("r2", ("bo-1", 4), sourcing=bo(("dc1",), backorder=(5,))))
    assert allocations(retried) == [[("dc1", 4)]]


# ============================================================ the hold's life


async def test_release_and_expiry_give_the_units_back(make_store: StoreMaker) -> None:
    clock = FakeClock(T0 + 100.0)
    store = await seeded(make_store, clock)
    await store.reserve(req("r1", ("bo-1", 5), sourcing=bo(("dc1",), backorder=(10,))))
    released = await store.release("r1", None)
    assert released.state == RELEASED
    assert (await store.stock("bo-1", "dc1")).atp == 3
    # The whole allowance again, and a new row, both expiring.
    await store.reserve(req("r2", ("bo-1", 13), ttl=10.0, sourcing=bo(("dc1",), backorder=(10,))))
    await store.reserve(req("r3", ("pre-2", 2, "dc1"), ttl=10.0, sourcing=bo(None, backorder=(2,))))
    assert (await store.stock("bo-1", "dc1")).atp == -10
    clock.now = T0 + 111.0
    assert (await store.get_reservation("r2")).state == EXPIRED
    assert (await store.get_reservation("r3")).state == EXPIRED
    assert counters(await store.stock("bo-1", "dc1")) == (3, 0, 0, 0)
    assert counters(await store.stock("pre-2", "dc1")) == (0, 0, 0, 0)
    assert await shortages(store) == []


async def test_fulfill_waits_for_the_stock_to_arrive(make_store: StoreMaker) -> None:
    store = await seeded(make_store)
    await store.reserve(
        req("r1", ("bo-1", 5), ("pre-3", 4, "dc2"), sourcing=bo(("dc1",), None, backorder=(10, 4)))
    )
    assert (await store.commit("r1")).state == COMMITTED
    with pytest.raises(StockRejected) as info:
        await store.fulfill("r1", None)
    assert info.value.reason == "NEGATIVE_ON_HAND"
    assert counters(await store.stock("bo-1", "dc1")) == (3, 0, 5, 0)
    assert counters(await store.stock("pre-3", "dc2")) == (0, 0, 4, 0)
    # The first line's stock arrives: that line ships, the other still waits.
    await store.apply_supply([adjust("bo-1", "dc1", 2, "receipt-1")])
    assert (await store.fulfill("r1", [0])).lines[0].state == FULFILLED
    with pytest.raises(StockRejected):
        await store.fulfill("r1", [1])
    await store.apply_supply([adjust("pre-3", "dc2", 4, "receipt-2")])
    assert (await store.fulfill("r1", None)).state == FULFILLED
    assert counters(await store.stock("bo-1", "dc1")) == (0, 0, 0, 0)
    assert counters(await store.stock("pre-3", "dc2")) == (0, 0, 0, 0)
    assert await shortages(store) == []


# ==================================================================== audit


async def test_the_audit_lists_a_backorder_row_only_beyond_its_inbound_supply(make_store: StoreMaker) -> None:
    store = await seeded(make_store)
    await store.upsert_inbound(
        [
            inbound("PO-1", "bo-1", "dc1", 6),
            inbound("PO-2", "bo-1", "dc1", 4),
            inbound("TR-1", "pre-4", "dc2", 5),
        ]
    )
    await store.reserve(req("r1", ("bo-1", 13), sourcing=bo(("dc1",), backorder=(10,))))
    await store.reserve(req("r2", ("pre-4", 5, "dc2"), sourcing=bo(None, backorder=(5,))))
    await store.commit("r2")  # committed units count as much as held ones
    assert await shortages(store) == []
    # The order is cut: the 9 units still expected do not cover the 10.
    await store.upsert_inbound([inbound("PO-2", "bo-1", "dc1", 3)])
    assert await shortages(store) == [("bo-1", "dc1", 10)]
    await store.upsert_inbound([inbound("PO-2", "bo-1", "dc1", 4)])
    assert await shortages(store) == []
    # Supply at another node covers nothing here.
    await store.remove_inbound(["TR-1"])
    await store.upsert_inbound([inbound("TR-2", "pre-4", "dc1", 5)])
    assert await shortages(store) == [("pre-4", "dc2", 5)]
    # Received (record removed, then the stock adjusted): covered by the shelf.
    await store.apply_supply([adjust("pre-4", "dc2", 5, "receipt-tr-1")])
    assert await shortages(store) == []
    # Removed without a receipt: listed, once.
    assert await store.remove_inbound(["PO-1", "PO-2"]) == [True, True]
    assert await shortages(store) == [("bo-1", "dc1", 10)]


# ================================================================ Redis only


@pytest.mark.parametrize("store_kind", store_params("redis", "cluster"))
async def test_the_sold_out_fast_path_never_refuses_a_backorder_line(
    make_store: StoreMaker, store_kind: str
) -> None:
    store = redis_of(await seeded(make_store))
    await store.reserve(req("all", ("bo-1", 3, "dc1")))
    deadline = time.monotonic() + HANG_GUARD_S
    # Once the view has seen the row sold out, it refuses a plain reserve without a script.
    while store.sold_out_fast_path_hits == 0:
        assert time.monotonic() < deadline, "the view never caught up"
        with pytest.raises(OutOfStock):
            await store.reserve(req("plain", ("bo-1", 1, "dc1")))
        await asyncio.sleep(0.01)
    hits = store.sold_out_fast_path_hits
    res = await store.reserve(req("bo", ("bo-1", 2, "dc1"), sourcing=bo(None, backorder=(2,))))
    assert allocations(res) == [[("dc1", 2)]]
    assert store.sold_out_fast_path_hits == hits


@pytest.mark.parametrize("store_kind", store_params("redis", "cluster"))
async def test_a_row_a_backorder_created_reaches_other_processes_views(
    make_store: StoreMaker, store_kind: str
) -> None:
    store = redis_of(await seeded(make_store))
    other = redis_of(await make_store())  # another engine process, following the feed
    await store.reserve(req("r1", ("pre-5", 4, "dc2"), sourcing=bo(None, backorder=(4,))))
    expected = [("dc2", 0, 4, 0, 0, 0)]

    def seen(process: RedisStore) -> list[tuple[str, int, int, int, int, int]]:
        assert process.view is not None
        [level] = process.view.availability(["pre-5"], None, ["dc2"], True)
        return [(n.node, n.on_hand, n.reserved, n.committed, n.safety_stock, n.atp) for n in level.nodes]

    deadline = time.monotonic() + HANG_GUARD_S
    while seen(other) != expected:
        assert time.monotonic() < deadline, f"the feed never brought the new row: {seen(other)}"
        await asyncio.sleep(0.01)
    # A process started now loads it from the shard (the resync path).
    late = redis_of(await make_store())
    assert seen(late) == expected
    # Given back: the feed carries the row's new counters too.
    await store.release("r1", None)
    expected = [("dc2", 0, 0, 0, 0, 0)]
    while seen(other) != expected:
        assert time.monotonic() < deadline, f"the feed never brought the release: {seen(other)}"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("store_kind", store_params("cluster"))
async def test_across_slots_a_failing_backorder_line_rolls_back_the_other_slots(
    make_store: StoreMaker, store_kind: str
) -> None:
    store = redis_of(await make_store())
    await seed(store)
    sku_x, sku_y, sku_z = skus_in_distinct_slots(store.keys, 3, prefix="slot-sku-")
    await store.apply_supply([adjust(sku_x, "dc1", 5), adjust(sku_y, "dc1", 1)])
    # Line 0 is held in x's slot, line 2 (a backorder at a row not there yet) in
    # z's; line 1, in y's slot, needs 4 of 1 + 2.
    lines = ((sku_x, 3), (sku_y, 4, "dc1"), (sku_z, 2, "dc2"))
    sourcing = bo(None, None, None, backorder=(0, 2, 2))
    with pytest.raises(OutOfStock) as info:
        await store.reserve(req("r1", *lines, sourcing=sourcing))
    assert short(info.value) == [(1, sku_y, 4, 1)]
    assert store.stats.cross_slot_reserves >= 1
    assert counters(await store.stock(sku_x, "dc1")) == (5, 0, 0, 0)
    assert counters(await store.stock(sku_y, "dc1")) == (1, 0, 0, 0)
    assert counters(await store.stock(sku_z, "dc2")) == (0, 0, 0, 0)
    # z's slot did start the row (its feed says so), and the compensation removed it.
    shard_z = store.keys.shard_of_sku(sku_z)
    feed = await store.client.xrange(store.keys.feed(shard_z))
    assert [(f["sku"], f["rs"]) for _, f in feed if f["sku"] == sku_z] == [(sku_z, "2"), (sku_z, "0")]
    assert not await store.client.exists(store.keys.sku(shard_z, sku_z))
    assert not await store.client.exists(store.keys.directory("r1"))
    with pytest.raises(NotFound):
        await store.get_reservation("r1")
    assert await shortages(store) == []
    # Partial: every slot holds what it can; the backorder line that fails gets nothing.
    partial = await store.reserve(req("r2", *lines, allow_partial=True, sourcing=sourcing))
    assert allocations(partial) == [[("dc1", 3)], [], [("dc2", 2)]]
    await store.release("r2", None)
    # Enough expected supply in y's slot: all three slots hold.
    done = await store.reserve(req("r3", *lines, sourcing=bo(None, None, None, backorder=(0, 3, 2))))
    assert allocations(done) == [[("dc1", 3)], [("dc1", 4)], [("dc2", 2)]]
    assert counters(await store.stock(sku_y, "dc1")) == (1, 4, 0, 0)
    assert await shortages(store) == [(sku_y, "dc1", 3), (sku_z, "dc2", 2)]


@pytest.mark.parametrize("store_kind", store_params("cluster"))
async def test_across_slots_a_refused_fulfill_ships_no_line(make_store: StoreMaker, store_kind: str) -> None:
    """A shelf line in one slot, a backordered line in another: Fulfill is
    refused while the backordered units are not on hand, and the shelf line
    does not ship either (every slot is checked before any slot ships)."""
    store = redis_of(await make_store())
    await seed(store)
    shelf, back = skus_in_distinct_slots(store.keys, 2, prefix="slot-sku-")
    await store.apply_supply([adjust(shelf, "dc1", 5)])
    await store.reserve(
        req("mixed", (shelf, 2, "dc1"), (back, 3, "dc1"), sourcing=bo(None, None, backorder=(0, 10)))
    )
    committed = await store.commit("mixed")
    assert [line.state for line in committed.lines] == [COMMITTED, COMMITTED]
    feeds = [store.keys.feed(store.keys.shard_of_sku(sku)) for sku in (shelf, back)]
    lengths = [await store.client.xlen(feed) for feed in feeds]
    for lines in (None, [0, 1]):
        with pytest.raises(StockRejected) as info:
            await store.fulfill("mixed", lines)
        assert info.value.reason == "NEGATIVE_ON_HAND"
        assert counters(await store.stock(shelf, "dc1")) == (5, 0, 2, 0)
        assert counters(await store.stock(back, "dc1")) == (0, 0, 3, 0)
        assert await store.get_reservation("mixed") == committed
        # Not even a passing change: no slot wrote a row.
        assert [await store.client.xlen(feed) for feed in feeds] == lengths
    assert await shortages(store) == [(back, "dc1", 3)]
    # The shelf line alone ships; the whole order once its units arrive.
    assert [line.state for line in (await store.fulfill("mixed", [0])).lines] == [FULFILLED, COMMITTED]
    await store.apply_supply([adjust(back, "dc1", 3, "receipt-back")])
    assert (await store.fulfill("mixed", None)).state == FULFILLED
    assert counters(await store.stock(shelf, "dc1")) == (3, 0, 0, 0)
    assert counters(await store.stock(back, "dc1")) == (0, 0, 0, 0)
    assert await shortages(store) == []


@pytest.mark.parametrize("store_kind", store_params("cluster"))
async def test_across_slots_a_fulfill_refused_after_its_check_puts_back_what_it_shipped(
    make_store: StoreMaker, store_kind: str
) -> None:
    """Every slot passed the check, then another process's recount leaves one
    slot short before that slot ships: the slots that shipped meanwhile are put
    back (lines COMMITTED, units on hand and committed again), so the refused
    call has no effect in the end."""
    store = redis_of(await make_store())
    other = redis_of(await make_store())
    await seed(store)
    sku_x, sku_y = skus_in_distinct_slots(store.keys, 2, prefix="slot-sku-")
    await store.apply_supply([adjust(sku_x, "dc1", 5), adjust(sku_y, "dc1", 5)])
    await store.reserve(req("r1", (sku_x, 2, "dc1"), (sku_y, 3, "dc1")))
    committed = await store.commit("r1")
    slot_x = store.keys.slots[store.keys.shard_of_sku(sku_x)]
    steps: list[tuple[str, str]] = []

    async def recount_before_x_ships(step: str, shard: int) -> None:
        where = sku_x if store.keys.slots[shard] == slot_x else sku_y
        steps.append((step, where))
        if (step, where) == ("slot", sku_x):
            await other.apply_supply([adjust(sku_x, "dc1", -4)])  # 1 left on hand

    store.step_hook = recount_before_x_ships
    with pytest.raises(StockRejected) as info:
        await store.fulfill("r1", None)
    store.step_hook = None
    assert info.value.reason == "NEGATIVE_ON_HAND"
    assert sorted(steps) == [
        ("check", sku_x),
        ("check", sku_y),
        ("slot", sku_x),
        ("slot", sku_y),
        ("undo", sku_y),
    ]
    assert await store.get_reservation("r1") == committed
    assert counters(await store.stock(sku_x, "dc1")) == (1, 0, 2, 0)
    assert counters(await store.stock(sku_y, "dc1")) == (5, 0, 3, 0)
    assert await shortages(store) == [(sku_x, "dc1", 1)]
    # y's slot shipped and was put back: its feed says so, ending where it began.
    feed = await store.client.xrange(store.keys.feed(store.keys.shard_of_sku(sku_y)))
    assert [(f["oh"], f["cm"]) for _, f in feed if f["sku"] == sku_y][-3:] == [
        ("5", "3"),
        ("2", "0"),
        ("5", "3"),
    ]
    # Undone lines ship again once the stock is there.
    await store.apply_supply([adjust(sku_x, "dc1", 1)])
    assert (await store.fulfill("r1", None)).state == FULFILLED
    assert counters(await store.stock(sku_x, "dc1")) == (0, 0, 0, 0)
    assert counters(await store.stock(sku_y, "dc1")) == (2, 0, 0, 0)
    assert await shortages(store) == []


@pytest.mark.parametrize("store_kind", store_params("cluster"))
async def test_across_slots_a_crashed_attempts_new_row_is_started_afresh_on_retry(
    make_store: StoreMaker, store_kind: str
) -> None:
    """The process dies after one slot's backorder hold started a row: the hold
    expires like any other, and the retry (a fresh attempt) drops the stale
    sub-reservation, removes the row it started, and starts it again."""
    clock = FakeClock(T0)
    store = redis_of(await make_store(clock=clock))
    await seed(store)
    sku_x, sku_y = skus_in_distinct_slots(store.keys, 2, prefix="slot-sku-")
    request = req(
        "r1", (sku_x, 3, "dc1"), (sku_y, 2, "dc2"), ttl=30.0, sourcing=bo(None, None, backorder=(3, 2))
    )
    store.step_hook = crash_at_step(2)
    with pytest.raises(Crash):
        await store.reserve(request)
    store.step_hook = None
    # One slot held, starting its row (which its sub-reservation lists); the other never ran.
    rows = [(sku_x, "dc1"), (sku_y, "dc2")]
    [(sku, node)] = [(sku, node) for sku, node in rows if (await store.stock(sku, node)).reserved]
    sub = store.keys.sub(store.keys.shard_of_sku(sku), "r1")
    assert await store.client.hget(sub, "nw") == f"{sku}\t{node}"
    assert (await store.audit()).ok
    clock.now = T0 + 31.0
    retried = await store.reserve(request)
    assert retried.state == HELD
    assert (retried.created_at, retried.expires_at) == (T0 + 31.0, T0 + 61.0)  # a fresh attempt
    assert allocations(retried) == [[("dc1", 3)], [("dc2", 2)]]
    assert await store.stock(sku_x, "dc1") == StockLevel(sku_x, "dc1", 0, 3, 0, 0, 0)
    assert await store.stock(sku_y, "dc2") == StockLevel(sku_y, "dc2", 0, 2, 0, 0, 0)
    assert await shortages(store) == sorted([(sku_x, "dc1", 3), (sku_y, "dc2", 2)])
    assert await store.reserve(request) == retried  # a replay
