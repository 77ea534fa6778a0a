"""Promise-driven sourcing through the Store port, on every store kind: a reserve
whose lines carry ranked candidates (``ReserveRequest.sourcing``) is held by the
same rules in the pure and Cython ledgers and in the Redis scripts (one call,
and per slot on the Cluster), and its fulfillment context is part of the body
a replay is compared with; the candidates are not.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from store_helpers import FakeClock, StoreMaker, adjust, req, seed

from engine.config import EmbeddedStoreConfig
from engine.core.errors import IdempotencyMismatch, InvalidArgument, OutOfStock
from engine.core.types import Channel, Node, NodeType, RankedSourcing, ReservationState
from engine.store.base import Store
from engine.store.embedded import EmbeddedStore

pytestmark = pytest.mark.asyncio


def ranked(
    *candidates: tuple[str, ...] | None, whole: bool = False, context: str = "ship|10001"
) -> RankedSourcing:
    return RankedSourcing(context, tuple(candidates), whole)


def allocations(reservation: object) -> list[list[tuple[str, int]]]:
    return [[(a.node, a.quantity) for a in line.allocations] for line in reservation.lines]  # type: ignore[attr-defined]


async def seeded(make_store: StoreMaker) -> Store:
    """seed()'s network plus a third DC the web channel sells from; sku-a: dc1 10, dc2 10, dc3 4."""
    store = await make_store()
    await seed(store)
    await store.upsert_node(Node("dc3", NodeType.DC))
    await store.upsert_channel(Channel("web", ("dc1", "dc2", "dc3"), "Web shop"))
    await store.apply_supply([adjust("sku-a", "dc3", 4, "r4")])
    return store


async def test_candidates_replace_the_channel_order(make_store: StoreMaker) -> None:
    store = await seeded(make_store)
    res = await store.reserve(req("r1", ("sku-a", 3), sourcing=ranked(("dc2", "dc1"))))
    assert allocations(res) == [[("dc2", 3)]]
    # The first candidate that covers the line wins, even if an earlier one has some.
    res = await store.reserve(req("r2", ("sku-a", 6), sourcing=ranked(("dc3", "dc1", "dc2"))))
    assert allocations(res) == [[("dc1", 6)]]
    # Nodes the channel does not sell from and repeats are skipped, never counted twice.
    res = await store.reserve(req("r3", ("sku-a", 5), sourcing=ranked(("store1", "dc3", "dc3", "dc2"))))
    assert allocations(res) == [[("dc2", 5)]]


async def test_no_split_refuses_a_line_no_single_candidate_covers(make_store: StoreMaker) -> None:
    store = await seeded(make_store)
    with pytest.raises(OutOfStock) as exc:
        await store.reserve(req("r1", ("sku-a", 12), sourcing=ranked(("dc3", "dc1"), whole=True)))
    assert [(s.sku, s.requested, s.available) for s in exc.value.shortfalls] == [("sku-a", 12, 0)]
    # With splitting: greedy in candidate order.
    res = await store.reserve(req("r2", ("sku-a", 12), sourcing=ranked(("dc3", "dc1"))))
    assert allocations(res) == [[("dc3", 4), ("dc1", 8)]]
    # Partial and whole lines: a line no node covers gets nothing, the others are held.
    res = await store.reserve(
        req(
            "r3",
            ("sku-a", 9),
            ("sku-a", 2),
            allow_partial=True,
            sourcing=ranked(("dc1", "dc3"), ("dc1",), whole=True),  # dc1 has 2 left, dc3 none
        )
    )
    assert allocations(res) == [[], [("dc1", 2)]]
    assert [line.state for line in res.lines] == [ReservationState.RELEASED, ReservationState.HELD]


async def test_named_nodes_and_channel_order_lines_mix_with_ranked_ones(make_store: StoreMaker) -> None:
    store = await seeded(make_store)
    res = await store.reserve(
        req("r1", ("sku-a", 2, "dc3"), ("sku-a", 2), ("sku-b", 1), sourcing=ranked(None, ("dc2",), None))
    )
    assert allocations(res) == [[("dc3", 2)], [("dc2", 2)], [("dc1", 1)]]
    # An empty candidate list holds nothing.
    with pytest.raises(OutOfStock):
        await store.reserve(req("r2", ("sku-a", 1), sourcing=ranked(())))
    with pytest.raises(InvalidArgument):
        await store.reserve(req("r3", ("sku-a", 1), ("sku-b", 1), sourcing=ranked(("dc1",))))


async def test_the_context_is_part_of_the_body_the_candidates_are_not(make_store: StoreMaker) -> None:
    store = await seeded(make_store)
    first = await store.reserve(req("r1", ("sku-a", 2), sourcing=ranked(("dc2", "dc1"))))
    # Other candidates (the stock moved since): the stored result, not a new sourcing.
    await store.apply_supply([adjust("sku-a", "dc2", -8)])
    again = await store.reserve(req("r1", ("sku-a", 2), sourcing=ranked(("dc1",), whole=True)))
    assert allocations(again) == allocations(first) == [[("dc2", 2)]]
    with pytest.raises(IdempotencyMismatch):
        await store.reserve(req("r1", ("sku-a", 2), sourcing=ranked(("dc2",), context="ship|94105")))
    with pytest.raises(IdempotencyMismatch):
        await store.reserve(req("r1", ("sku-a", 2)))  # without a context
    await store.reserve(req("plain", ("sku-a", 1)))
    with pytest.raises(IdempotencyMismatch):
        await store.reserve(req("plain", ("sku-a", 1), sourcing=ranked(("dc1",))))


async def test_lines_in_many_shards_take_their_candidates(make_store: StoreMaker) -> None:
    """On the Cluster, SKUs in several slots go through reserve_slot.lua, one call per slot."""
    store = await seeded(make_store)
    skus = [f"multi-{i}" for i in range(6)]
    await store.apply_supply([adjust(s, n, 5) for s in skus for n in ("dc1", "dc2")])
    lines = [(s, 4) for s in skus]
    res = await store.reserve(req("r1", *lines, sourcing=ranked(*[("dc2", "dc1")] * len(skus))))
    assert allocations(res) == [[("dc2", 4)]] * len(skus)
    with pytest.raises(OutOfStock) as exc:
        await store.reserve(req("r2", *[(s, 3) for s in skus], sourcing=ranked(*[("dc2",)] * 6, whole=True)))
    assert len(exc.value.shortfalls) == len(skus)
    assert allocations(await store.get_reservation("r1")) == [[("dc2", 4)]] * len(skus)


@pytest.mark.parametrize("impl", ["pure", "fast"])
@pytest.mark.parametrize("snapshot", [False, True], ids=["journal", "snapshot"])
async def test_embedded_recovery_reproduces_ranked_holds(tmp_path: Path, impl: str, snapshot: bool) -> None:
    """The journal record carries the candidates and the context (and snapshots the
    context): recovery holds the same units, and a replay is still compared with it."""

    async def open_store() -> EmbeddedStore:
        store = EmbeddedStore(
            EmbeddedStoreConfig(data_dir=tmp_path / "data", ledger_impl=impl), clock=FakeClock()
        )
        await store.start()
        return store

    store = await open_store()
    await seed(store)
    await store.reserve(req("r1", ("sku-a", 3), sourcing=ranked(("dc2", "dc1"), whole=True)))
    await store.reserve(req("r2", ("sku-a", 12), sourcing=ranked(("dc2", "dc1"))))
    if snapshot:
        await store.snapshot()
    before = [allocations(await store.get_reservation(rid)) for rid in ("r1", "r2")]
    assert before == [[[("dc2", 3)]], [[("dc2", 7), ("dc1", 5)]]]
    await store.close()

    reopened = await open_store()
    try:
        assert [allocations(await reopened.get_reservation(rid)) for rid in ("r1", "r2")] == before
        with pytest.raises(IdempotencyMismatch):
            await reopened.reserve(req("r1", ("sku-a", 3), sourcing=ranked(("dc2",), context="pickup|x")))
        again = await reopened.reserve(req("r1", ("sku-a", 3), sourcing=ranked(("dc1",))))
        assert allocations(again) == before[0]
        assert (await reopened.audit()).ok
    finally:
        await reopened.close()
