"""A node's default safety stock through the Store port, on every store kind
(the embedded store on both ledgers, Redis, Redis Cluster): rows without a
safety stock of their own follow it, at once, in reserve, availability, channel
allocation (SHARE of on_hand - safety) and the audit; a row's own value (an
explicit 0 included) overrides it until SAFETY_DEFAULT drops it again; a new
store over the same data keeps all of it."""

from __future__ import annotations

import pytest
from store_helpers import FakeClock, StoreMaker, adjust

from engine.core.allocation_rules import AllocationRule, RuleKind
from engine.core.errors import OutOfStock
from engine.core.types import Channel, LineRequest, Node, NodeType, ReserveRequest, SupplyKind, SupplyOp
from engine.store.base import Store

pytestmark = pytest.mark.asyncio


def safety(sku: str, node: str, units: int) -> SupplyOp:
    return SupplyOp(SupplyKind.SAFETY, sku, node, units, 0, None)


def follow(sku: str, node: str) -> SupplyOp:
    return SupplyOp(SupplyKind.SAFETY_DEFAULT, sku, node, 0, 0, None)


def reserve(
    rid: str, sku: str, quantity: int, node: str | None = None, channel: str = "web"
) -> ReserveRequest:
    return ReserveRequest(rid, channel, (LineRequest(sku, quantity, node),), 600.0)


async def network(store: Store, dc1_default: int = 0) -> None:
    await store.upsert_node(Node("dc1", NodeType.DC, default_safety_stock=dc1_default))
    await store.upsert_node(Node("dc2", NodeType.DC))
    await store.upsert_channel(Channel("web", ("dc1", "dc2")))
    share = AllocationRule(channel="app", kind=RuleKind.SHARE, value=50)
    await store.upsert_channel(Channel("app", ("dc1",), allocation_rules=(share,)))


async def atp(store: Store, sku: str, channel: str = "web") -> int:
    [level] = await store.availability([sku], channel, None, False)
    return level.atp


async def test_rows_follow_the_node_default_until_they_have_their_own(make_store: StoreMaker) -> None:
    store = await make_store()
    await network(store, dc1_default=3)
    await store.apply_supply([adjust("A", "dc1", 10), adjust("B", "dc1", 10), adjust("A", "dc2", 5)])
    assert (await store.stock("A", "dc1")).safety_stock == 3
    assert (await store.stock("A", "dc2")).safety_stock == 0
    assert await atp(store, "A") == 7 + 5
    # An explicit 0 is the row's own and overrides the default.
    [change] = await store.apply_supply([safety("B", "dc1", 0)])
    assert change.level.safety_stock == 0
    assert await atp(store, "B") == 10
    # The default changes: at once, for every row following it, not for B.
    await store.upsert_node(Node("dc1", NodeType.DC, default_safety_stock=6))
    assert (await store.stock("A", "dc1")).safety_stock == 6
    assert await atp(store, "A") == 4 + 5
    assert await atp(store, "B") == 10
    [level] = await store.availability(["A"], "web", None, True)
    assert [(n.node, n.safety_stock, n.atp) for n in level.nodes] == [("dc1", 6, 4), ("dc2", 0, 5)]
    # B follows the default again.
    [change] = await store.apply_supply([follow("B", "dc1")])
    assert change.applied and change.level.safety_stock == 6
    assert await atp(store, "B") == 4


async def test_no_hold_takes_units_inside_the_default(make_store: StoreMaker) -> None:
    store = await make_store()
    await network(store, dc1_default=4)
    await store.apply_supply([adjust("A", "dc1", 10)])
    with pytest.raises(OutOfStock):
        await store.reserve(reserve("r1", "A", 7, "dc1"))
    await store.reserve(reserve("r2", "A", 6, "dc1"))
    with pytest.raises(OutOfStock):
        await store.reserve(reserve("r3", "A", 1))
    # Raising the default past what is held lowers ATP below zero, but is no shortage.
    await store.upsert_node(Node("dc1", NodeType.DC, default_safety_stock=8))
    assert (await store.stock("A", "dc1")).atp == -4
    report = await store.audit()
    assert report.violations == () and report.shortages == ()
    await store.upsert_node(Node("dc1", NodeType.DC, default_safety_stock=0))
    await store.reserve(reserve("r4", "A", 4, "dc1"))


async def test_a_share_is_of_on_hand_less_the_default(make_store: StoreMaker) -> None:
    store = await make_store()
    await network(store, dc1_default=4)
    await store.apply_supply([adjust("A", "dc1", 20)])
    assert await atp(store, "A", "app") == 8  # 50% of 20 - 4
    with pytest.raises(OutOfStock):
        await store.reserve(reserve("a1", "A", 9, "dc1", channel="app"))
    await store.reserve(reserve("a2", "A", 8, "dc1", channel="app"))
    await store.upsert_node(Node("dc1", NodeType.DC, default_safety_stock=0))
    assert await atp(store, "A", "app") == 2  # 50% of 20, less the 8 held


async def test_following_a_default_on_a_missing_row_creates_nothing(make_store: StoreMaker) -> None:
    store = await make_store()
    await network(store, dc1_default=2)
    [change] = await store.apply_supply([follow("Z", "dc1")])
    assert change.applied and not change.duplicate
    assert change.level.on_hand == 0 and change.level.safety_stock == 0
    # A row made later follows the default.
    await store.apply_supply([adjust("Z", "dc1", 5)])
    assert (await store.stock("Z", "dc1")).safety_stock == 2


async def test_defaults_and_own_values_survive_a_new_store(make_store: StoreMaker) -> None:
    clock = FakeClock()
    store = await make_store(clock=clock)
    await network(store, dc1_default=3)
    await store.apply_supply([adjust("A", "dc1", 10), adjust("B", "dc1", 10), safety("B", "dc1", 0)])
    await store.close()

    again = await make_store(clock=FakeClock(clock.now))
    [dc1] = [n for n in await again.list_nodes() if n.id == "dc1"]
    assert dc1.default_safety_stock == 3
    assert (await again.stock("A", "dc1")).safety_stock == 3
    assert (await again.stock("B", "dc1")).safety_stock == 0
    # A still follows, B still has its own.
    await again.upsert_node(Node("dc1", NodeType.DC, default_safety_stock=5))
    assert (await again.stock("A", "dc1")).safety_stock == 5
    assert (await again.stock("B", "dc1")).safety_stock == 0
    assert await atp(again, "A") == 5
    assert (await again.audit()).violations == ()
