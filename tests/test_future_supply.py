"""Inbound supply and time-phased ATP."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.errors import InvalidArgument
from engine.core.future_supply import FutureSupply, InboundKind, InboundSupply, time_phased_atp

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
