"""Channel allocation rules in the ledgers: one suite, run on the pure and the Cython ledger.

A rule is given to ``define_channel`` resolved per eligible node (what the
stores work out from a Channel's rules and the node types); the ledger keeps
channel_used for channels with rules and enforces each channel's allowance
atomically on reserve.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from ledger_helpers import snapshot

from engine.core.allocation_rules import RuleKind
from engine.core.errors import InvalidArgument, OutOfStock, Shortfall
from engine.core.types import MAX_ON_HAND, Allocation
from engine.ledgers import make_ledger

NONE, SHARE, CAP, PROTECT = (int(k) for k in RuleKind)


def network(ledger, web_rules=None, app_rules=None, pos_rules=None):
    """dc and store; web, app and pos all eligible at both (dc first)."""
    for node in ("dc", "store"):
        ledger.define_node(node)
    ledger.define_channel("web", ("dc", "store"), web_rules)
    ledger.define_channel("app", ("dc", "store"), app_rules)
    ledger.define_channel("pos", ("store",), pos_rules)
    return ledger


def atp(ledger, sku, channel):
    return ledger.availability([sku], channel, None, False)[0].atp


def allocs(ledger, rid):
    return [
        tuple((a.node, a.quantity) for a in line.allocations) for line in ledger.get_reservation(rid).lines
    ]


def test_a_share_limits_what_the_channel_holds_and_sees(ledger):
    network(ledger, web_rules=[(SHARE, 30), (NONE, 0)])
    ledger.adjust_stock("A", "dc", 100, None, 0.0)
    assert atp(ledger, "A", "web") == 30
    assert atp(ledger, "A", "app") == 100
    ledger.reserve("r1", "web", [("A", 20, "dc")], 60.0, False, 1.0)
    assert ledger.channel_usage("A", "dc") == {"web": 20}
    assert atp(ledger, "A", "web") == 10
    with pytest.raises(OutOfStock) as err:
        ledger.reserve("r2", "web", [("A", 11, "dc")], 60.0, False, 1.0)
    assert err.value.shortfalls == (Shortfall(0, "A", 11, 10),)
    # Committing does not free the share; releasing does.
    ledger.commit("r1", 2.0)
    assert atp(ledger, "A", "web") == 10
    ledger.release("r1", None, 3.0)
    assert ledger.channel_usage("A", "dc") == {}
    assert atp(ledger, "A", "web") == 30
    assert ledger.audit(3.0) == []


def test_a_cap_counts_held_and_committed_units_and_frees_them_on_fulfill_and_expiry(ledger):
    network(ledger, web_rules=[(CAP, 5), (CAP, 5)])
    ledger.adjust_stock("A", "dc", 100, None, 0.0)
    ledger.reserve("r1", "web", [("A", 3, None)], 60.0, False, 1.0)
    ledger.commit("r1", 1.0)
    ledger.reserve("r2", "web", [("A", 2, None)], 10.0, False, 1.0)
    assert atp(ledger, "A", "web") == 0
    with pytest.raises(OutOfStock):
        ledger.reserve("r3", "web", [("A", 1, None)], 60.0, False, 2.0)
    ledger.fulfill("r1", None, 3.0)
    assert ledger.channel_usage("A", "dc") == {"web": 2}
    ledger.expire_due(20.0)
    assert ledger.channel_usage("A", "dc") == {}
    assert atp(ledger, "A", "web") == 5
    assert ledger.audit(20.0) == []


def test_protection_keeps_the_last_units_for_the_protected_channel(ledger):
    network(ledger, web_rules=[(NONE, 0), (PROTECT, 2)])
    ledger.adjust_stock("A", "store", 5, None, 0.0)
    assert atp(ledger, "A", "web") == 3
    assert atp(ledger, "A", "pos") == 5
    ledger.reserve("w", "web", [("A", 3, "store")], 60.0, False, 1.0)
    with pytest.raises(OutOfStock):
        ledger.reserve("w2", "web", [("A", 1, "store")], 60.0, False, 1.0)
    ledger.reserve("p", "pos", [("A", 2, "store")], 60.0, False, 1.0)
    assert ledger.stock("A", "store").reserved == 5
    assert ledger.audit(1.0) == []


def test_sourcing_uses_each_nodes_allowance_and_splits_across_nodes(ledger):
    network(ledger, web_rules=[(CAP, 4), (SHARE, 50)])
    ledger.adjust_stock("A", "dc", 10, None, 0.0)
    ledger.adjust_stock("A", "store", 10, None, 0.0)
    assert atp(ledger, "A", "web") == 9
    ledger.reserve("r", "web", [("A", 3, None), ("A", 5, None)], 60.0, False, 1.0)
    # The first line fits in the dc's cap; the second does not fit in what the
    # cap leaves (1), so it goes to the first node whose allowance covers it.
    assert allocs(ledger, "r") == [(("dc", 3),), (("store", 5),)]
    assert ledger.channel_usage("A", "dc") == {"web": 3}
    assert ledger.channel_usage("A", "store") == {"web": 5}
    with pytest.raises(OutOfStock) as err:
        ledger.reserve("r2", "web", [("A", 2, None)], 60.0, False, 1.0)
    assert err.value.shortfalls == (Shortfall(0, "A", 2, 1),)
    # A partial reservation takes what the rules allow.
    ledger.reserve("r3", "web", [("A", 2, None)], 60.0, True, 1.0)
    assert allocs(ledger, "r3") == [(("dc", 1),)]
    # A line that fits nowhere whole is split across the allowances in priority order.
    ledger.define_channel("app", ("dc", "store"), [(CAP, 2), (CAP, 3)])
    ledger.reserve("r4", "app", [("A", 4, None)], 60.0, False, 1.0)
    assert allocs(ledger, "r4") == [(("dc", 2), ("store", 2))]


def test_a_refused_reservation_leaves_channel_used_untouched(ledger):
    network(ledger, web_rules=[(CAP, 4), (CAP, 4)])
    ledger.adjust_stock("A", "dc", 10, None, 0.0)
    before = snapshot(ledger)
    with pytest.raises(OutOfStock):
        ledger.reserve("r", "web", [("A", 3, None), ("B", 1, None)], 60.0, False, 1.0)
    assert ledger.channel_usage("A", "dc") == {}
    assert snapshot(ledger) == before


def test_rules_added_later_count_the_channels_existing_holds(ledger):
    network(ledger)
    ledger.adjust_stock("A", "dc", 10, None, 0.0)
    ledger.reserve("r", "web", [("A", 4, "dc")], 60.0, False, 1.0)
    assert ledger.channel_usage("A", "dc") == {}  # not tracked without rules
    ledger.define_channel("web", ("dc", "store"), [(CAP, 5), (NONE, 0)])
    assert ledger.channel_usage("A", "dc") == {"web": 4}
    assert atp(ledger, "A", "web") == 1
    ledger.define_channel("web", ("dc", "store"))
    assert ledger.channel_usage("A", "dc") == {}
    assert ledger.audit(1.0) == []


def test_rules_and_channel_used_survive_export_and_load_on_both_ledgers(ledger):
    network(ledger, web_rules=[(SHARE, 40), (PROTECT, 1)])
    ledger.adjust_stock("A", "dc", 10, None, 0.0)
    ledger.adjust_stock("A", "store", 3, None, 0.0)
    ledger.reserve("r", "web", [("A", 6, None)], 60.0, False, 1.0)
    state = ledger.export_state()
    for impl in ("pure", "fast"):
        other = make_ledger(impl)
        other.load_state(state)
        assert snapshot(other) == snapshot(ledger)
        assert other.channel_usage("A", "dc") == {"web": 4}
        assert other.channel_usage("A", "store") == {"web": 2}
        assert other.channel_rules("web") == {"dc": (SHARE, 40), "store": (PROTECT, 1)}
        assert atp(other, "A", "web") == atp(ledger, "A", "web") == 0


def test_set_row_carries_channel_counters_for_a_view(ledger):
    ledger.define_node("dc")
    ledger.define_channel("web", ("dc",), [(CAP, 5)])
    ledger.define_channel("app", ("dc",), None, True)
    ledger.define_channel("pos", ("dc",))
    ledger.set_row("A", "dc", 10, 4, 0, 0, 1, {"web": 3, "app": 1, "pos": 7})
    assert ledger.channel_usage("A", "dc") == {"app": 1, "web": 3}
    assert atp(ledger, "A", "web") == 2
    # Counters not named stay; named ones are set (0 clears).
    ledger.set_row("A", "dc", 10, 4, 0, 0, 2)
    assert ledger.channel_usage("A", "dc") == {"app": 1, "web": 3}
    ledger.set_row("A", "dc", 10, 0, 0, 0, 3, {"web": 0, "app": 0})
    assert ledger.channel_usage("A", "dc") == {}
    with pytest.raises(InvalidArgument):
        ledger.set_row("A", "dc", 10, 0, 0, 0, 2, {"web": -1})


_EDGES = st.one_of(
    st.sampled_from([-2, -1, 0, 1, MAX_ON_HAND, MAX_ON_HAND + 1, 2 * MAX_ON_HAND, 2 * MAX_ON_HAND + 1]),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), 2**64, True, False, 1.0, "3", None]),
    st.integers(min_value=-(2**65), max_value=2**65),
)


@st.composite
def _row_values(draw):
    """Valid counters with at most one of them (or one channel counter) made odd:
    an odd value among others that are wrong too would be refused either way."""
    values = [draw(st.integers(0, MAX_ON_HAND)) for _ in range(3)]
    values += [draw(st.integers(-1, MAX_ON_HAND)), draw(st.integers(0, 2**63 - 1))]
    channels = st.sampled_from(["web", "app"])
    used = draw(st.none() | st.dictionaries(channels, st.integers(0, 2 * MAX_ON_HAND), max_size=2))
    where = draw(st.integers(0, 6))
    if where < 5:
        values[where] = draw(_EDGES)
    elif where == 5:
        used = {**(used or {}), draw(channels): draw(_EDGES)}
    return tuple(values), used


@settings(max_examples=300, deadline=None)
@given(row=_row_values())
# Each limit, just inside and just outside, always.
@example(row=((MAX_ON_HAND + 1, 0, 0, 0, 1), None))
@example(row=((0, MAX_ON_HAND + 1, 0, 0, 1), None))
@example(row=((0, 0, MAX_ON_HAND + 1, 0, 1), None))
@example(row=((0, 0, 0, MAX_ON_HAND + 1, 1), None))
@example(row=((0, 0, 0, -2, 1), None))
@example(row=((0, 0, 0, -1, 2**63 - 1), None))
@example(row=((0, 0, 0, 0, 2**63), None))
@example(row=((-1, 0, 0, 0, 1), None))
@example(row=((MAX_ON_HAND, 0, 0, 0, 1), {"web": 2 * MAX_ON_HAND}))
@example(row=((1, 0, 0, 0, 1), {"web": 2 * MAX_ON_HAND + 1}))
@example(row=((1, 0, 0, 0, 1), {"web": -1}))
@example(row=((1, 0, 0, 0, 1), {"web": True}))
@example(row=((True, 0, 0, 0, 1), None))
def test_set_row_accepts_and_refuses_exactly_what_the_reference_does(row):
    # The fast ledger checks plain ints in C and leaves everything else to the
    # reference's checks: both must agree on every value, bools and big ints too.
    values, used = row
    outcomes = []
    for impl in ("pure", "fast"):
        ledger = make_ledger(impl)
        ledger.define_node("dc")
        ledger.define_channel("web", ("dc",), [(CAP, 5)])
        try:
            ledger.set_row("A", "dc", *values, used)
        except InvalidArgument as exc:
            outcomes.append(("refused", [(v.field, v.description) for v in exc.violations]))
        else:
            outcomes.append(("set", ledger.stock("A", "dc"), ledger.channel_usage("A", "dc")))
    assert outcomes[0] == outcomes[1]


def test_per_node_breakdown_shows_the_allowance(ledger):
    network(ledger, web_rules=[(SHARE, 25), (NONE, 0)])
    ledger.adjust_stock("A", "dc", 10, None, 0.0)
    ledger.adjust_stock("A", "store", 4, None, 0.0)
    [level] = ledger.availability(["A"], "web", None, True)
    assert [(n.node, n.on_hand, n.atp) for n in level.nodes] == [("dc", 10, 2), ("store", 4, 4)]
    assert level.atp == 6
    # Without a channel, nodes show their whole ATP.
    [level] = ledger.availability(["A"], None, ["dc"], True)
    assert level.atp == 10


@pytest.mark.parametrize(
    "rules",
    [[(SHARE, 101), (NONE, 0)], [(CAP, -1), (NONE, 0)], [(7, 1), (NONE, 0)], [(CAP, 1)]],
)
def test_bad_resolved_rules_are_refused(ledger, rules):
    network(ledger)
    with pytest.raises(InvalidArgument):
        ledger.define_channel("web", ("dc", "store"), rules)
    assert ledger.channel_rules("web") == {}


def test_audit_reports_a_channel_counter_that_disagrees_with_the_lines(ledger):
    network(ledger, web_rules=[(CAP, 5), (NONE, 0)])
    ledger.adjust_stock("A", "dc", 10, None, 0.0)
    ledger.reserve("r", "web", [("A", 2, "dc")], 60.0, False, 1.0)
    ledger.set_row("A", "dc", 10, 2, 0, 0, 0, {"web": 1})
    assert ledger.audit(1.0) == ["A@dc: channel_used of web 1 != its held and committed lines 2"]
    assert Allocation("dc", 2) in ledger.get_reservation("r").lines[0].allocations
