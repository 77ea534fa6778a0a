"""The view's sold-out verdict: its quick "surely covered" exit never changes an answer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.allocation_rules import AllocationRule, RuleKind
from engine.core.types import Channel, LineRequest, Node, NodeType
from engine.store import view as view_module
from engine.store.view import AvailabilityView

NODES = ("DC-1", "DC-2", "ST-1", "ST-2")
SKUS = ("A", "B", "C")
CHANNELS = (
    Channel("web", NODES),
    Channel("pos", ("ST-2", "ST-1")),
    # A capped channel: what it may take is its allowance, not the shelf's ATP.
    Channel(
        "app",
        ("DC-2", "ST-1"),
        allocation_rules=(AllocationRule(channel="app", kind=RuleKind.CAP, value=3, node="DC-2"),),
    ),
)

rows = st.fixed_dictionaries(
    {
        (sku, node): st.tuples(
            st.integers(0, 12), st.integers(0, 6), st.integers(0, 4), st.integers(0, 3)
        )  # on_hand, reserved, committed, safety
        for sku in SKUS
        for node in NODES
    }
)
lines = st.lists(
    st.builds(LineRequest, st.sampled_from(SKUS), st.integers(1, 8), st.none()), min_size=1, max_size=4
)


def loaded_view(impl: str, levels: dict[tuple[str, str], tuple[int, int, int, int]]) -> AvailabilityView:
    view = AvailabilityView(impl)
    nodes = [Node(n, NodeType.DC if n.startswith("DC") else NodeType.STORE) for n in NODES]
    view.set_network(nodes, CHANNELS)
    for (sku, node), (on_hand, reserved, committed, safety) in levels.items():
        view.apply(sku, node, on_hand, reserved, committed, safety, 1)
    view.caught_up()
    return view


@pytest.mark.parametrize("impl", ["pure", "fast"])
@settings(max_examples=150, deadline=None)
@given(levels=rows, request_lines=lines, channel=st.sampled_from(CHANNELS), allow_partial=st.booleans())
def test_the_quick_exit_gives_the_full_walks_verdict(
    impl: str,
    levels: dict[tuple[str, str], tuple[int, int, int, int]],
    request_lines: list[LineRequest],
    channel: Channel,
    allow_partial: bool,
) -> None:
    view = loaded_view(impl, levels)
    quick = view.sold_out_shortfalls(channel.id, request_lines, allow_partial, channel)
    full_walk = pytest.MonkeyPatch()
    full_walk.setattr(view_module, "_surely_covered", lambda *args: False)
    try:
        walked = view.sold_out_shortfalls(channel.id, request_lines, allow_partial, channel)
    finally:
        full_walk.undo()
    assert quick == walked


def test_a_line_covered_exactly_is_covered_and_one_unit_more_is_not() -> None:
    levels = {(sku, node): (0, 0, 0, 0) for sku in SKUS for node in NODES}
    levels[("A", "DC-1")] = (5, 2, 0, 0)  # 3 free
    view = loaded_view("fast", levels)
    ledger = view._ledger
    assert view_module._surely_covered(ledger, "web", [LineRequest("A", 2, None), LineRequest("A", 1, None)])
    assert not view_module._surely_covered(ledger, "web", [LineRequest("A", 4, None)])
    assert not view_module._surely_covered(ledger, "web", [LineRequest("A", 1, "DC-1")])


row_changes = st.tuples(
    st.sampled_from(SKUS), st.sampled_from(NODES), st.integers(0, 12), st.integers(0, 6)
)  # sku, node, on_hand, reserved
# A few requests asked again and again, as in a flash sale: a remembered verdict
# is only ever reused for the very same question.
questions = st.sampled_from(
    [
        [LineRequest("A", 1, None)],
        [LineRequest("B", 3, None)],
        [LineRequest("A", 1, None), LineRequest("C", 2, None)],
    ]
)
steps = st.lists(st.one_of(row_changes, questions), min_size=1, max_size=30)


@settings(max_examples=200, deadline=None)
@given(levels=rows, program=steps, channel=st.sampled_from(CHANNELS))
def test_a_remembered_sold_out_verdict_is_never_stale(
    levels: dict[tuple[str, str], tuple[int, int, int, int]],
    program: list[tuple[str, str, int, int] | list[LineRequest]],
    channel: Channel,
) -> None:
    # The same feed into two views; the second forgets its last verdict before
    # every question, so it always walks. Their answers must agree throughout.
    remembering, walking = loaded_view("fast", levels), loaded_view("fast", levels)
    for step in program:
        if isinstance(step, tuple):
            sku, node, on_hand, reserved = step
            for view in (remembering, walking):
                view.apply(sku, node, on_hand, reserved, 0, 0, 2)
            continue
        walking._last_sold_out = None
        expected = walking.sold_out_shortfalls(channel.id, step, False, channel)
        assert remembering.sold_out_shortfalls(channel.id, step, False, channel) == expected


def test_a_sold_out_verdict_is_remembered_until_the_counters_move() -> None:
    levels = {(sku, node): (4, 4, 0, 0) for sku in SKUS for node in NODES}  # all taken
    view = loaded_view("fast", levels)
    web = CHANNELS[0]
    first = view.sold_out_shortfalls("web", [LineRequest("A", 1, None)], False, web)
    assert first is not None
    assert view.sold_out_shortfalls("web", [LineRequest("A", 1, None)], False, web) is first
    view.apply("A", "ST-2", 5, 4, 0, 0, 2)  # a receipt: one unit free again
    assert view.sold_out_shortfalls("web", [LineRequest("A", 1, None)], False, web) is None
