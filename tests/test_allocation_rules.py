"""Channel allocation rules: shares, caps and protection, and the no-oversell invariant."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine._fast import allocation as fast_allocation
from engine.core.allocation_rules import (
    AllocationPolicy,
    AllocationRule,
    RuleKind,
    channel_allowance,
    ruled_nodes,
)
from engine.core.errors import InvalidArgument
from engine.core.types import Channel, Node, NodeType

IMPLS = {"pure": channel_allowance, "fast": fast_allocation.channel_allowance}


@pytest.fixture(params=sorted(IMPLS))
def allowance(request):
    return IMPLS[request.param]


def test_no_rule_sees_the_whole_atp(allowance):
    assert allowance(100, 10, 5, 5, RuleKind.NONE, 0, 0) == 80
    assert allowance(10, 8, 5, 0, RuleKind.NONE, 0, 0) == 0  # short: nothing, never negative


def test_a_share_is_a_percentage_of_sellable_stock_minus_what_the_channel_holds(allowance):
    # 30% of (100 - 0) = 30; the channel holds 10 already.
    assert allowance(100, 10, 0, 0, RuleKind.SHARE, 30, 10) == 20
    # Rounded down: 30% of 7 is 2.
    assert allowance(7, 0, 0, 0, RuleKind.SHARE, 30, 0) == 2
    # Safety stock is not sellable.
    assert allowance(100, 0, 0, 50, RuleKind.SHARE, 50, 0) == 25
    # Never more than ATP, even if the share says so.
    assert allowance(100, 90, 0, 0, RuleKind.SHARE, 50, 0) == 10


def test_a_cap_limits_what_the_channel_holds(allowance):
    assert allowance(100, 3, 2, 0, RuleKind.CAP, 5, 5) == 0
    assert allowance(100, 3, 0, 0, RuleKind.CAP, 5, 3) == 2
    assert allowance(4, 0, 0, 0, RuleKind.CAP, 50, 0) == 4


def test_protection_keeps_the_last_units_for_another_channel(allowance):
    # Web may not take a store's last 2 units.
    assert allowance(5, 1, 0, 0, RuleKind.PROTECT, 2, 0) == 2
    assert allowance(2, 0, 0, 0, RuleKind.PROTECT, 2, 0) == 0


def test_policy_resolution_prefers_node_then_type_then_channel_wide():
    store = Node("store-1", type=NodeType.STORE)
    other_store = Node("store-2", type=NodeType.STORE)
    dc = Node("dc-1", type=NodeType.DC)
    policy = AllocationPolicy(
        [
            AllocationRule(channel="web", kind=RuleKind.CAP, value=1, node="store-1"),
            AllocationRule(
                channel="web", kind=RuleKind.PROTECT, value=2, node_type=NodeType.STORE, protects="pos"
            ),
            AllocationRule(channel="web", kind=RuleKind.SHARE, value=50),
        ]
    )
    assert policy.rule_for("web", store).kind == RuleKind.CAP
    assert policy.rule_for("web", other_store).kind == RuleKind.PROTECT
    assert policy.rule_for("web", dc).kind == RuleKind.SHARE
    assert policy.rule_for("pos", store) is None
    assert policy.allowance("web", other_store, 10, 0, 0, 0) == 8
    assert policy.allowance("pos", other_store, 10, 0, 0, 0) == 10
    assert policy.allowance("web", dc, 10, 0, 0, 0, channel_used=3) == 2
    nodes = {n.id: n for n in (store, other_store, dc)}
    rows = [("store-1", 10, 0, 0, 0, 0), ("store-2", 2, 0, 0, 0, 0), ("dc-1", 10, 0, 0, 0, 5)]
    assert policy.channel_atp("web", nodes, rows) == {"store-1": 1}
    assert policy.channel_atp("pos", nodes, rows) == {"store-1": 10, "store-2": 2, "dc-1": 10}


def test_ruled_nodes_are_the_channels_nodes_where_any_rule_applies():
    """Where the channel takes no backorders: a node rule, a type rule or a
    channel-wide rule, of any kind and value (a cap above any shelf too)."""
    nodes = {
        "dc1": Node("dc1", NodeType.DC),
        "dc2": Node("dc2", NodeType.DC),
        "s1": Node("s1", NodeType.STORE),
        "s2": Node("s2", NodeType.STORE),
    }
    plain = Channel("web", ("dc1", "dc2", "s1", "s2"))
    assert ruled_nodes(plain, nodes) == frozenset()
    assert ruled_nodes(None, nodes) == frozenset()
    by_node_and_type = Channel(
        "callcenter",
        ("dc1", "dc2", "s1", "s2"),
        allocation_rules=(
            AllocationRule(channel="callcenter", kind=RuleKind.CAP, value=10**9, node="dc1"),
            AllocationRule(channel="callcenter", kind=RuleKind.PROTECT, value=0, node_type=NodeType.STORE),
        ),
    )
    assert ruled_nodes(by_node_and_type, nodes) == {"dc1", "s1", "s2"}
    everywhere = Channel(
        "marketplace:x",
        ("dc2", "s1"),
        allocation_rules=(AllocationRule(channel="marketplace:x", kind=RuleKind.SHARE, value=100),),
    )
    assert ruled_nodes(everywhere, nodes) == {"dc2", "s1"}


def test_bad_rules_are_listed_together():
    with pytest.raises(InvalidArgument) as info:
        AllocationPolicy(
            [
                AllocationRule(channel="shop", kind=RuleKind.SHARE, value=120),
                AllocationRule(channel="web", kind=RuleKind.CAP, value=-1, node="a", node_type=NodeType.DC),
                AllocationRule(channel="web", kind=RuleKind.SHARE, value=10, protects="pos"),
                AllocationRule(channel="pos", kind=RuleKind.PROTECT, value=1, protects="pos"),
                AllocationRule(channel="pos", kind=RuleKind.CAP, value=1),
            ]
        )
    fields = [v.field for v in info.value.violations]
    assert fields == [
        "rules[0].channel",
        "rules[0].value",
        "rules[1].value",
        "rules[1]",
        "rules[2].protects",
        "rules[3].protects",
        "rules[4]",
    ]


_counts = st.integers(0, 10**6)
_kinds = st.sampled_from([RuleKind.NONE, RuleKind.SHARE, RuleKind.CAP, RuleKind.PROTECT])


@settings(max_examples=2000, deadline=None)
@given(
    on_hand=_counts,
    reserved=_counts,
    committed=_counts,
    safety=_counts,
    kind=_kinds,
    value=st.integers(0, 10**6),
    used=_counts,
)
def test_pure_and_c_agree_and_never_exceed_atp(on_hand, reserved, committed, safety, kind, value, used):
    if kind == RuleKind.SHARE:
        value %= 101
    pure = channel_allowance(on_hand, reserved, committed, safety, kind, value, used)
    fast = fast_allocation.channel_allowance(on_hand, reserved, committed, safety, kind, value, used)
    assert pure == fast
    assert 0 <= pure <= max(0, on_hand - reserved - committed - safety)


@settings(max_examples=300, deadline=None)
@given(
    on_hand=st.integers(0, 200),
    safety=st.integers(0, 20),
    rules=st.lists(st.tuples(_kinds, st.integers(0, 120)), min_size=1, max_size=4),
    takes=st.lists(st.tuples(st.integers(0, 3), st.integers(1, 40)), max_size=60),
)
def test_takes_within_allowances_never_oversell_and_respect_every_share(on_hand, safety, rules, takes):
    """Channels taking in any interleaving, each within its allowance at that moment
    (what a ledger checks atomically): the node never goes below zero ATP, no
    channel exceeds its share or cap, and protected units stay."""
    rules = [(kind, value % 101 if kind == RuleKind.SHARE else value) for kind, value in rules]
    used = [0] * len(rules)
    reserved = 0
    for who, want in takes:
        c = who % len(rules)
        kind, value = rules[c]
        atp_before = on_hand - reserved - safety
        may = channel_allowance(on_hand, reserved, 0, safety, kind, value, used[c])
        take = min(want, may)
        reserved += take
        used[c] += take
        assert on_hand - reserved - safety >= min(0, atp_before)
        if kind == RuleKind.SHARE:
            assert used[c] <= max(0, on_hand - safety) * value // 100
        elif kind == RuleKind.CAP:
            assert used[c] <= value
        elif kind == RuleKind.PROTECT and take:
            assert on_hand - reserved - safety >= min(value, atp_before)
    assert sum(used) == reserved
    assert reserved <= max(0, on_hand - safety)


def test_a_channels_rules_are_validated_at_the_edge_with_field_violations():
    from engine.core.types import Channel
    from engine.core.validation import validate_channel

    channel = Channel(
        "web",
        ("dc-1",),
        allocation_rules=(
            AllocationRule(channel="web", kind=RuleKind.SHARE, value=150),
            AllocationRule(channel="web", kind=RuleKind.CAP, value=3, node="store-9"),
            AllocationRule(channel="app", kind=RuleKind.CAP, value=3, node_type=NodeType.DC),
            AllocationRule(channel="web", kind=RuleKind.CAP, value=1, protects="pos"),
        ),
    )
    with pytest.raises(InvalidArgument) as err:
        validate_channel(channel)
    fields = {v.field for v in err.value.violations}
    assert {
        "channel.allocation_rules[0].value",
        "channel.allocation_rules[1].node",
        "channel.allocation_rules[2].channel",
        "channel.allocation_rules[3].protects",
        "channel.allocation_rules[3]",  # same scope (channel-wide) as [0]
    } <= fields
