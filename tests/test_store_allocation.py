"""Channel allocation rules through the Store port, on every store kind (the
embedded store on both ledgers, Redis, Redis Cluster): configured on the Channel,
enforced atomically on reserve, shown by availability, kept across a restart and
checked by the audit."""

from __future__ import annotations

import pytest
from store_helpers import FakeClock, StoreMaker, adjust

from engine.core.allocation_rules import AllocationRule, RuleKind
from engine.core.errors import InvalidArgument, OutOfStock
from engine.core.types import Channel, LineRequest, Node, NodeType, ReservationState, ReserveRequest
from engine.store.base import Store

pytestmark = pytest.mark.asyncio

SHARE, CAP, PROTECT = RuleKind.SHARE, RuleKind.CAP, RuleKind.PROTECT


def rule(channel: str, kind: RuleKind, value: int, **scope: object) -> AllocationRule:
    return AllocationRule(channel=channel, kind=kind, value=value, **scope)  # type: ignore[arg-type]


def reserve(rid: str, channel: str, sku: str, quantity: int, node: str | None = None, **kw: object):
    return ReserveRequest(rid, channel, (LineRequest(sku, quantity, node),), kw.pop("ttl", 600.0), **kw)  # type: ignore[arg-type]


async def network(store: Store, **rules: tuple[AllocationRule, ...]) -> None:
    """dc1 (DC), store1 (store); web, app and callcenter at both (dc1 first), pos at store1."""
    await store.upsert_node(Node("dc1", NodeType.DC))
    await store.upsert_node(Node("store1", NodeType.STORE))
    for channel, nodes in (("web", ("dc1", "store1")), ("app", ("dc1", "store1")),
                           ("callcenter", ("dc1", "store1")), ("pos", ("store1",))):  # fmt: skip
        await store.upsert_channel(Channel(channel, nodes, allocation_rules=rules.get(channel, ())))


async def atp(store: Store, sku: str, channel: str) -> int:
    [level] = await store.availability([sku], channel, None, False)
    return level.atp


async def held(store: Store, sku: str, node: str) -> int:
    level = await store.stock(sku, node)
    return level.reserved + level.committed


async def test_a_share_by_node_type_caps_each_channel_and_the_sum_stays_within_atp(
    make_store: StoreMaker,
) -> None:
    store = await make_store()
    await network(store, web=(rule("web", SHARE, 60, node_type=NodeType.DC),),
                  app=(rule("app", SHARE, 60, node_type=NodeType.DC),))  # fmt: skip
    await store.apply_supply([adjust("A", "dc1", 10)])
    assert await atp(store, "A", "web") == 6
    await store.reserve(reserve("w1", "web", "A", 6, "dc1"))
    with pytest.raises(OutOfStock):
        await store.reserve(reserve("w2", "web", "A", 1, "dc1"))
    # Shares overlap (60% + 60%), stock does not: app gets what is left.
    assert await atp(store, "A", "app") == 4
    await store.reserve(reserve("a1", "app", "A", 4, "dc1"))
    assert await held(store, "A", "dc1") == 10
    assert await atp(store, "A", "app") == 0
    # Committing keeps the share taken; releasing gives it back.
    await store.commit("w1")
    await store.release("a1", None)
    assert await atp(store, "A", "web") == 0
    assert await atp(store, "A", "app") == 4
    await store.release("w1", None)
    assert await atp(store, "A", "web") == 6
    assert (await store.audit()).violations == ()


async def test_a_cap_on_one_node_and_sourcing_by_allowance(make_store: StoreMaker) -> None:
    clock = FakeClock()
    store = await make_store(clock=clock)
    await network(store, callcenter=(rule("callcenter", CAP, 2, node="dc1"),))
    await store.apply_supply([adjust("A", "dc1", 10), adjust("A", "store1", 10)])
    assert await atp(store, "A", "callcenter") == 12
    # The cap leaves dc1 2 units: the line goes whole to store1, the next fits dc1.
    first = await store.reserve(reserve("c1", "callcenter", "A", 3))
    assert [(a.node, a.quantity) for a in first.lines[0].allocations] == [("store1", 3)]
    second = await store.reserve(reserve("c2", "callcenter", "A", 2, ttl=5.0))
    assert [(a.node, a.quantity) for a in second.lines[0].allocations] == [("dc1", 2)]
    with pytest.raises(OutOfStock):
        await store.reserve(reserve("c3", "callcenter", "A", 1, "dc1"))
    # The expired hold gives its share back.
    clock.now += 10
    assert (await store.get_reservation("c2")).state == ReservationState.EXPIRED
    await store.reserve(reserve("c4", "callcenter", "A", 2, "dc1"))
    await store.commit("c4")
    await store.fulfill("c4", None)
    assert await atp(store, "A", "callcenter") == 2 + 7
    assert (await store.audit()).violations == ()


async def test_protection_keeps_the_last_store_units_for_walk_in_customers(make_store: StoreMaker) -> None:
    store = await make_store()
    await network(store, web=(rule("web", PROTECT, 2, node_type=NodeType.STORE, protects="pos"),))
    await store.apply_supply([adjust("A", "store1", 5)])
    assert await atp(store, "A", "web") == 3
    assert await atp(store, "A", "pos") == 5
    await store.reserve(reserve("w", "web", "A", 3))
    with pytest.raises(OutOfStock) as refused:
        await store.reserve(reserve("w2", "web", "A", 1))
    assert refused.value.shortfalls[0].available == 0
    await store.reserve(reserve("p", "pos", "A", 2))
    assert await held(store, "A", "store1") == 5
    assert (await store.audit()).violations == ()


async def test_rules_and_counters_survive_a_new_store(make_store: StoreMaker) -> None:
    clock = FakeClock()
    store = await make_store(clock=clock)
    rules = (rule("web", CAP, 4), rule("web", SHARE, 50, node="store1"))
    await network(store, web=rules)
    await store.apply_supply([adjust("A", "dc1", 10), adjust("A", "store1", 10)])
    await store.reserve(reserve("w1", "web", "A", 3, "dc1"))
    await store.reserve(reserve("w2", "web", "A", 5, "store1"))
    await store.commit("w2")
    await store.close()

    again = await make_store(clock=FakeClock(clock.now))
    [web] = [c for c in await again.list_channels() if c.id == "web"]
    assert web.allocation_rules == rules
    assert await atp(again, "A", "web") == 1
    with pytest.raises(OutOfStock):
        await again.reserve(reserve("w3", "web", "A", 2, "dc1"))
    await again.release("w1", None)
    assert await atp(again, "A", "web") == 4
    assert (await again.audit()).violations == ()


async def test_rules_added_later_count_the_holds_already_made(make_store: StoreMaker) -> None:
    store = await make_store()
    await network(store)
    await store.apply_supply([adjust("A", "dc1", 10)])
    await store.reserve(reserve("w1", "web", "A", 4, "dc1"))
    await store.upsert_channel(Channel("web", ("dc1", "store1"), allocation_rules=(rule("web", CAP, 5),)))
    assert await atp(store, "A", "web") == 1
    with pytest.raises(OutOfStock):
        await store.reserve(reserve("w2", "web", "A", 2, "dc1"))
    assert (await store.audit()).violations == ()


async def test_a_node_changing_type_changes_which_rule_applies(make_store: StoreMaker) -> None:
    store = await make_store()
    await network(store, web=(rule("web", CAP, 1, node_type=NodeType.STORE),))
    await store.apply_supply([adjust("A", "store1", 10)])
    assert await atp(store, "A", "web") == 1
    await store.upsert_node(Node("store1", NodeType.DC))
    assert await atp(store, "A", "web") == 10
    await store.reserve(reserve("w", "web", "A", 5))
    assert (await store.audit()).violations == ()


async def test_a_channel_with_bad_rules_is_refused_with_no_effect(make_store: StoreMaker) -> None:
    store = await make_store()
    await network(store)
    bad = Channel("kiosk", ("dc1",), allocation_rules=(rule("kiosk", SHARE, 150),))
    with pytest.raises(InvalidArgument):
        await store.upsert_channel(bad)
    assert "kiosk" not in {c.id for c in await store.list_channels()}
    await store.close()
    # Nothing was written that would stop the next process from loading the network.
    again = await make_store()
    assert "kiosk" not in {c.id for c in await again.list_channels()}
