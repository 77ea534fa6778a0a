"""Inbound supply and time-phased ATP."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.errors import InvalidArgument
from engine.core.future_supply import (
    MAX_INBOUND_BATCH,
    FutureSupply,
    InboundKind,
    InboundSupply,
    backorder_basis,
    decode_inbound,
    encode_inbound,
    page_of,
    phased_availability,
    time_phased_atp,
    validate_inbound_ids,
    validate_inbound_records,
)
from engine.core.types import NodeAvailability, SkuAvailability

DAY = 86400.0


def po(supply_id: str, quantity: int, eta: float, sku: str = "A", node: str = "dc") -> InboundSupply:
    return InboundSupply(supply_id, sku, node, quantity, eta)


def test_availability_steps_up_at_each_arrival():
    phased = time_phased_atp(5, [po("b", 10, 2 * DAY), po("a", 3, DAY)])
    assert phased.steps == ((-math.inf, 5), (DAY, 8), (2 * DAY, 18))
    assert phased.available_at(0.0) == 5
    assert phased.available_at(DAY) == 8
    assert phased.available_at(3 * DAY) == 18
    assert phased.earliest(5) == -math.inf
    assert phased.earliest(6) == DAY
    assert phased.earliest(18) == 2 * DAY
    assert phased.earliest(19) is None
    assert phased.total == 18


def test_a_shortage_is_covered_by_the_first_arrivals():
    phased = time_phased_atp(-4, [po("a", 3, DAY), po("b", 3, 2 * DAY)])
    assert phased.steps == ((-math.inf, 0), (2 * DAY, 2))


def test_earlier_promises_take_the_earliest_supply():
    phased = time_phased_atp(0, [po("a", 3, DAY), po("b", 5, 2 * DAY)], promised=4)
    assert phased.steps == ((-math.inf, 0), (2 * DAY, 4))


def test_arrivals_at_the_same_time_merge():
    phased = time_phased_atp(0, [po("a", 1, DAY), po("b", 2, DAY)])
    assert phased.steps == ((-math.inf, 0), (DAY, 3))


@given(
    atp=st.integers(-20, 20),
    promised=st.integers(0, 20),
    arrivals=st.lists(st.tuples(st.integers(1, 30), st.integers(0, 10)), max_size=8),
    probe=st.integers(0, 12),
)
def test_time_phased_atp_never_decreases_and_matches_a_direct_sum(atp, promised, arrivals, probe):
    records = [po(f"r{i}", q, d * DAY) for i, (q, d) in enumerate(arrivals)]
    phased = time_phased_atp(atp, records, promised=promised)
    levels = [level for _, level in phased.steps]
    assert levels == sorted(levels) and levels[0] >= 0
    direct = atp - promised + sum(r.quantity for r in records if r.eta <= probe * DAY)
    assert phased.available_at(probe * DAY) == max(0, direct)


def node(name: str, on_hand: int, reserved: int = 0, *, atp: int | None = None) -> NodeAvailability:
    raw = on_hand - reserved
    return NodeAvailability(name, on_hand, reserved, 0, 0, max(0, raw) if atp is None else atp)


def test_availability_by_date_counts_supply_as_a_backorder_would():
    level = SkuAvailability(
        "A",
        2,
        (
            node("dc", 2),  # shelf 2, supply on top
            node("short", 1, 4),  # 3 units promised to backorders
            node("capped", 9, atp=0),  # a rule keeps the shelf from the channel
        ),
    )
    records = [
        po("p1", 5, DAY, node="dc"),
        po("p2", 4, DAY, node="short"),
        po("p3", 6, 2 * DAY, node="capped"),
        po("p4", 1, 2 * DAY, node="elsewhere"),  # not a node of the answer
        po("p5", 7, DAY, sku="B", node="dc"),  # another SKU
    ]
    (found,) = phased_availability([level], records)
    assert found.nodes["dc"].steps == ((-math.inf, 2), (DAY, 7))
    assert found.nodes["short"].steps == ((-math.inf, 0), (DAY, 1))
    assert found.nodes["capped"].steps == ((-math.inf, 0),)
    assert found.total.steps == ((-math.inf, 2), (DAY, 8))
    assert found.supply_ids == {"dc": {DAY: ("p1",)}, "short": {DAY: ("p2",)}, "capped": {}}


def test_every_row_at_a_node_with_a_rule_is_ruled_even_with_an_empty_shelf():
    """The review's case: with nothing on the shelf the channel's ATP and the
    raw ATP are both 0, so only the channel's rules can tell that it takes no
    backorders at the node; a node whose channel ATP is below the raw ATP is
    ruled whatever the caller passes."""
    levels = [
        SkuAvailability("A", 0, (node("capped", 0), node("free", 0), node("short", 1, 4))),
        SkuAvailability("B", 0, (node("capped", 0, 2), node("free", 9, atp=4))),
    ]
    promised, ruled = backorder_basis(levels)
    assert promised == {("A", "short"): 3, ("B", "capped"): 2}
    assert ruled == {("B", "free")}
    promised, ruled = backorder_basis(levels, frozenset({"capped", "short"}))
    assert promised == {("A", "short"): 3, ("B", "capped"): 2}
    assert ruled == {("A", "capped"), ("A", "short"), ("B", "capped"), ("B", "free")}
    records = [po("p1", 100, DAY, node="capped"), po("p2", 5, DAY, node="free")]
    (found,) = phased_availability(levels[:1], records, {"capped"})
    assert found.nodes["capped"].steps == ((-math.inf, 0),)
    assert found.nodes["free"].steps == ((-math.inf, 0), (DAY, 5))
    assert found.supply_ids["capped"] == {}


@given(
    st.lists(
        st.tuples(
            st.integers(0, 50),  # on hand
            st.integers(0, 80),  # reserved (beyond on hand: promised)
            st.lists(st.tuples(st.integers(1, 30), st.integers(0, 5)), max_size=4),  # (qty, day)
        ),
        min_size=1,
        max_size=5,
    ),
    st.integers(-1, 6),
)
def test_availability_by_date_of_a_sku_is_the_sum_of_its_nodes(nodes, probe_day):
    levels = [node(f"n{i}", on_hand, reserved) for i, (on_hand, reserved, _) in enumerate(nodes)]
    records = [
        po(f"n{i}-{j}", qty, d * DAY, node=f"n{i}")
        for i, (_, _, arrivals) in enumerate(nodes)
        for j, (qty, d) in enumerate(arrivals)
    ]
    sku = SkuAvailability("A", sum(n.atp for n in levels), tuple(levels))
    (found,) = phased_availability([sku], records)
    probe = probe_day * DAY
    assert found.total.available_at(probe) == sum(p.available_at(probe) for p in found.nodes.values())
    assert found.total.steps[0][1] == sku.atp
    for i, (on_hand, reserved, arrivals) in enumerate(nodes):
        arrived = sum(qty for qty, d in arrivals if d * DAY <= probe)
        assert found.nodes[f"n{i}"].available_at(probe) == max(0, on_hand - reserved + arrived)
    starts = [start for start, _ in found.total.steps]
    values = [available for _, available in found.total.steps]
    assert starts == sorted(set(starts)) and values == sorted(values)
    assert all(a != b for a, b in itertools.pairwise(values))


def test_the_book_upserts_and_removes_by_id():
    book = FutureSupply([po("po-1", 5, DAY), po("po-2", 7, 2 * DAY, node="store")])
    book.upsert([po("po-1", 6, 3 * DAY)])  # a revised PO line replaces the old one
    assert len(book) == 2
    assert book.for_sku("A") == {
        "dc": (po("po-1", 6, 3 * DAY),),
        "store": (po("po-2", 7, 2 * DAY, node="store"),),
    }
    assert book.remove("po-1") and not book.remove("po-1")
    assert book.for_sku("A") == {"store": (po("po-2", 7, 2 * DAY, node="store"),)}
    assert book.for_sku("B") == {}
    phased = book.time_phased("A", {"dc": 2})
    assert phased["dc"].steps == ((-math.inf, 2),)
    assert phased["store"].earliest(7) == 2 * DAY
    transfer = InboundSupply("t-1", "A", "store", 1, DAY, InboundKind.TRANSFER)
    book.upsert([transfer])
    assert book.get("t-1") == transfer
    assert list(book) == [transfer, po("po-2", 7, 2 * DAY, node="store")]


def test_bad_records_are_refused_as_a_batch():
    book = FutureSupply()
    with pytest.raises(InvalidArgument) as info:
        book.upsert([po("ok", 1, DAY), InboundSupply("bad id", "A{", "dc", 0, math.nan)])
    assert [v.field for v in info.value.violations] == [
        "inbound[1].id",
        "inbound[1].sku",
        "inbound[1].quantity",
        "inbound[1].eta",
    ]
    assert len(book) == 0


# ------------------------------------------------- edge checks, persistence, pages

NOW = 2_000_000_000.0


def test_an_upsert_batch_is_checked_whole_against_the_clock():
    validate_inbound_records([po("a", 1, NOW - 364 * DAY), po("b", 1, NOW + 3 * 365 * DAY)], NOW)
    with pytest.raises(InvalidArgument) as bad:
        validate_inbound_records(
            [po("a", 1, NOW - 366 * DAY), po("b", 0, math.nan), po("a", 1, NOW + 3 * 365 * DAY + 1)], NOW
        )
    assert [(v.field, v.description) for v in bad.value.violations] == [
        ("records[1].quantity", "must be 1..1000000000"),
        ("records[1].eta", "is required"),
        ("records[0].eta", "must be within 1 year before and 3 years after the engine's time"),
        ("records[2].eta", "must be within 1 year before and 3 years after the engine's time"),
        ("records[2].id", "repeats records[0].id"),
    ]
    with pytest.raises(InvalidArgument, match="records at least one"):
        validate_inbound_records([], NOW)
    with pytest.raises(InvalidArgument, match="at most 1000 records"):
        validate_inbound_records([po(str(i), 1, NOW) for i in range(MAX_INBOUND_BATCH + 1)], NOW)
    with pytest.raises(InvalidArgument) as ids:
        validate_inbound_ids(["ok", "", "x" * 129])
    assert [v.field for v in ids.value.violations] == ["ids[1]", "ids[2]"]


def test_records_round_trip_through_their_json_text():
    record = InboundSupply("PO-1/2", "A", "dc", 7, NOW + 0.1, InboundKind.TRANSFER)
    text = encode_inbound(record)
    assert decode_inbound(text) == record
    assert encode_inbound(decode_inbound(text)) == text  # the same text: re-sends are recognised
    assert encode_inbound(InboundSupply("x", "A", "dc", 1, 5)) == encode_inbound(
        InboundSupply("x", "A", "dc", 1, 5.0)
    )


def test_pages_follow_id_order_and_filters():
    records = [po(f"p{i}", 1, DAY, sku="AB"[i % 2], node="dc" if i < 3 else "st") for i in range(5)]
    first = page_of(records, sku=None, node=None, after=None, limit=2)
    assert [r.id for r in first.records] == ["p0", "p1"] and first.next_after == "p1"
    rest = page_of(records, sku=None, node=None, after="p1", limit=3)
    assert [r.id for r in rest.records] == ["p2", "p3", "p4"] and rest.next_after is None
    assert [r.id for r in page_of(records, sku="A", node="st", after=None, limit=9).records] == ["p4"]
