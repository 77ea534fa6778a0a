"""The Cython ledger builds its results and errors without running their __init__.

That is only sound while it produces exactly what the classes' own
constructors produce; the module checks this at import and falls back to the
constructors when it does not hold. These tests pin both halves: with today's
types the shortcuts are in use, and what they build is indistinguishable from
ordinary construction, field by field and attribute by attribute.
"""

from __future__ import annotations

import dataclasses

import pytest

from engine._fast import ledger as fast
from engine.core.errors import Shortfall
from engine.core.types import (
    Allocation,
    NodeAvailability,
    Reservation,
    ReservationLine,
    ReservationState,
    SkuAvailability,
    StockChange,
    StockLevel,
)

RESULT_TYPES = [
    Allocation,
    ReservationLine,
    Reservation,
    StockLevel,
    StockChange,
    NodeAvailability,
    SkuAvailability,
    Shortfall,
]


def test_the_shortcuts_are_in_use_with_todays_types():
    assert fast._shortcuts() == {"errors": True, **{cls.__name__: True for cls in RESULT_TYPES}}


@pytest.mark.parametrize("cls", RESULT_TYPES, ids=lambda cls: cls.__name__)
def test_results_built_without_init_equal_ordinary_ones(cls):
    values = [object() for _ in dataclasses.fields(cls)]
    built = fast._build_like(cls, *values)
    usual = cls(*values)
    assert type(built) is cls
    assert built == usual and hash(built) == hash(usual)
    for field, value in zip(dataclasses.fields(cls), values, strict=True):
        assert getattr(built, field.name) is value
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(built, dataclasses.fields(cls)[0].name, None)


def test_a_reservation_from_the_ledger_is_an_ordinary_reservation():
    ledger = fast.FastLedger()
    ledger.define_node("dc1")
    ledger.define_channel("web", ["dc1"])
    ledger.adjust_stock("sku", "dc1", 5, None, 0.0)
    ledger.reserve("r", "web", [("sku", 2, None), ("sku", 1, "dc1")], 30.0, False, 1.0)
    res = ledger.get_reservation("r")
    expected = Reservation(
        id="r",
        channel="web",
        state=ReservationState.HELD,
        lines=(
            ReservationLine(0, "sku", 2, None, (Allocation("dc1", 2),), ReservationState.HELD),
            ReservationLine(1, "sku", 1, "dc1", (Allocation("dc1", 1),), ReservationState.HELD),
        ),
        allow_partial=False,
        ttl_s=30.0,
        created_at=1.0,
        expires_at=31.0,
    )
    assert res == expected and repr(res) == repr(expected)
    assert res.lines[0].allocated == 2


def test_errors_built_without_init_equal_ordinary_ones():
    for built, usual in fast._errors_like():
        assert type(built) is type(usual)
        assert built.args == usual.args and str(built) == str(usual)
        assert list(vars(built).items()) == list(vars(usual).items())
        assert built.reason == usual.reason
