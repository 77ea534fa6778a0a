"""The ledger contract: one behavioral suite, run against both implementations.

Every test takes the ``ledger`` fixture, which is parametrized over the pure
reference and the Cython ledger. Time is whatever ``now`` the test passes: the
ledgers never read a clock, so expiry is exact and reproducible.
"""

from __future__ import annotations

import json

import pytest
from ledger_helpers import (
    CHANNELS,
    build_rich_state,
    continue_rich_state,
    define_network,
    error_signature,
    outcome,
    receive,
    snapshot,
)

from engine.core.allocation_rules import RuleKind
from engine.core.errors import (
    FieldViolation,
    IdempotencyMismatch,
    IllegalTransition,
    InvalidArgument,
    NodeNotEligible,
    NotFound,
    OutOfStock,
    Shortfall,
    StockRejected,
    UnknownChannel,
    UnknownNode,
)
from engine.core.types import (
    MAX_ON_HAND,
    Allocation,
    LineRequest,
    NodeAvailability,
    ReservationState,
    SkuAvailability,
    StockChange,
    StockLevel,
    SupplyKind,
    SupplyOp,
)
from engine.ledgers import make_ledger

HELD = ReservationState.HELD
COMMITTED = ReservationState.COMMITTED
FULFILLED = ReservationState.FULFILLED
RELEASED = ReservationState.RELEASED
EXPIRED = ReservationState.EXPIRED


@pytest.fixture
def net(ledger):
    """The fixture ledger with the standard network defined."""
    return define_network(ledger)


def channel_atp(ledger, sku: str, channel: str) -> int:
    return ledger.availability([sku], channel, None, False)[0].atp


def allocations(ledger, reservation_id: str) -> list[tuple[tuple[str, int], ...]]:
    return [
        tuple((a.node, a.quantity) for a in line.allocations)
        for line in ledger.get_reservation(reservation_id).lines
    ]


def line_states(ledger, reservation_id: str) -> list[ReservationState]:
    return [line.state for line in ledger.get_reservation(reservation_id).lines]


def assert_unchanged(ledger, before, call, error_type, reason):
    """The call fails with ``error_type``/``reason`` and leaves no trace in the state."""
    with pytest.raises(error_type) as info:
        call()
    assert info.value.reason == reason
    assert snapshot(ledger) == before
    return info.value


# ------------------------------------------------------------------------ network


def test_each_param_runs_the_implementation_it_names(ledger, request):
    """The fast param must exercise the extension, never a silent fallback."""
    wanted = request.node.callspec.params["ledger"]
    assert ledger.implementation == wanted
    expected_module = "engine._fast.ledger" if wanted == "fast" else "engine.core.ledger"
    assert type(ledger).__module__ == expected_module


def test_network_is_queryable(net):
    assert net.has_node("dc1") and not net.has_node("nowhere")
    assert net.has_channel("web") and not net.has_channel("fax")
    assert net.channel_nodes("web") == CHANNELS["web"]
    assert net.channel_nodes("pos") == CHANNELS["pos"]


def test_unknown_channel_and_node_in_network_definition(net):
    with pytest.raises(UnknownChannel) as info:
        net.channel_nodes("fax")
    assert info.value.reason == "CHANNEL_NOT_FOUND"
    with pytest.raises(UnknownNode) as info:
        net.define_channel("app", ["dc1", "nowhere"])
    assert info.value.reason == "NODE_NOT_FOUND"
    assert [v.field for v in info.value.violations] == ["nodes[1]"]
    assert not net.has_channel("app")


# ----------------------------------------------------------------- availability


def test_node_atp_is_on_hand_minus_reserved_committed_and_safety(net):
    receive(net, "sku", {"dc1": 20})
    net.set_safety_stock("sku", "dc1", 3, None, 0.0)
    net.reserve("order", "web", [("sku", 5, "dc1")], 60.0, False, 0.0)
    net.commit("order", 0.0)
    net.reserve("cart", "web", [("sku", 4, "dc1")], 60.0, False, 0.0)

    level = net.stock("sku", "dc1")
    assert (level.on_hand, level.reserved, level.committed, level.safety_stock) == (20, 4, 5, 3)
    assert level.atp == 8
    [avail] = net.availability(["sku"], None, ["dc1"], True)
    assert avail == SkuAvailability("sku", 8, (NodeAvailability("dc1", 20, 4, 5, 3, 8),))


def test_channel_atp_is_the_sum_of_clamped_node_atp_over_eligible_nodes(net):
    receive(net, "sku", {"dc1": 10, "dc2": 2, "store1": 5, "store2": 100})
    net.set_safety_stock("sku", "dc2", 7, None, 0.0)  # dc2 ATP is -5: counts as 0, not -5

    [avail] = net.availability(["sku"], "web", None, True)
    assert avail.atp == 15  # store2 holds 100 but is not a web node
    assert [(n.node, n.atp) for n in avail.nodes] == [("dc1", 10), ("dc2", 0), ("store1", 5)]
    assert avail.nodes[1] == NodeAvailability("dc2", 2, 0, 0, 7, 0)
    assert channel_atp(net, "sku", "pos") == 105


def test_availability_of_unknown_skus_is_zero_with_a_row_per_node(net):
    receive(net, "known", {"dc1": 4})
    result = net.availability(["ghost", "known", "ghost"], "web", None, True)
    assert [a.sku for a in result] == ["ghost", "known", "ghost"]
    assert [a.atp for a in result] == [0, 4, 0]
    assert result[0].nodes == tuple(NodeAvailability(n, 0, 0, 0, 0, 0) for n in CHANNELS["web"])


def test_availability_without_breakdown_has_no_nodes(net):
    receive(net, "sku", {"dc1": 4})
    assert net.availability(["sku"], "web", None, False) == [SkuAvailability("sku", 4, ())]


def test_availability_selection_channel_nodes_or_both(net):
    receive(net, "sku", {"dc1": 1, "dc2": 10, "store1": 100, "store2": 1000})
    assert channel_atp(net, "sku", "web") == 111
    # An empty node list with a channel means "all of the channel's nodes".
    assert net.availability(["sku"], "web", [], False)[0].atp == 111
    # Channel and nodes: only those nodes, in the given order.
    [both] = net.availability(["sku"], "web", ["store1", "dc1"], True)
    assert both.atp == 101
    assert [n.node for n in both.nodes] == ["store1", "dc1"]
    # Nodes alone: any defined node, eligibility does not apply.
    assert net.availability(["sku"], None, ["store2", "dc2"], False)[0].atp == 1010


@pytest.mark.parametrize(
    ("channel", "nodes", "error_type", "reason", "field"),
    [
        (None, None, InvalidArgument, "INVALID_ARGUMENT", "channel"),
        (None, [], InvalidArgument, "INVALID_ARGUMENT", "channel"),
        ("fax", None, UnknownChannel, "CHANNEL_NOT_FOUND", "channel"),
        (None, ["dc1", "nowhere"], UnknownNode, "NODE_NOT_FOUND", "nodes[1]"),
        ("web", ["dc1", "store2"], NodeNotEligible, "NODE_NOT_ELIGIBLE", "nodes[1]"),
        ("web", ["nowhere"], UnknownNode, "NODE_NOT_FOUND", "nodes[0]"),
    ],
)
def test_availability_selection_errors_name_the_field(net, channel, nodes, error_type, reason, field):
    with pytest.raises(error_type) as info:
        net.availability(["sku"], channel, nodes, False)
    assert isinstance(info.value, InvalidArgument)
    assert info.value.reason == reason
    assert [v.field for v in info.value.violations] == [field]


# ----------------------------------------------------------------- reserving


def test_explicit_node_holds_only_from_that_node(net):
    receive(net, "sku", {"dc1": 10, "store1": 3})
    assert net.reserve("r", "web", [("sku", 3, "store1")], 60.0, False, 0.0) == HELD
    assert allocations(net, "r") == [(("store1", 3),)]
    assert net.stock("sku", "store1").reserved == 3
    assert net.stock("sku", "dc1").reserved == 0


def test_explicit_node_short_is_out_of_stock_even_if_other_nodes_have_it(net):
    receive(net, "sku", {"dc1": 10, "store1": 3})
    before = snapshot(net)
    error = assert_unchanged(
        net,
        before,
        lambda: net.reserve("r", "web", [("sku", 4, "store1")], 60.0, False, 0.0),
        OutOfStock,
        "OUT_OF_STOCK",
    )
    assert error.shortfalls == (Shortfall(0, "sku", 4, 3),)


def test_channel_sourcing_takes_the_first_node_covering_the_whole_line(net):
    receive(net, "sku", {"dc1": 2, "dc2": 10, "store1": 10})
    net.reserve("r", "web", [("sku", 5, None)], 60.0, False, 0.0)
    assert allocations(net, "r") == [(("dc2", 5),)]


def test_channel_sourcing_splits_greedily_in_priority_order(net):
    receive(net, "sku", {"dc1": 3, "dc2": 4, "store1": 2, "store2": 50})
    net.reserve("r", "web", [("sku", 8, None)], 60.0, False, 0.0)
    assert allocations(net, "r") == [(("dc1", 3), ("dc2", 4), ("store1", 1))]
    assert [net.stock("sku", n).reserved for n in ("dc1", "dc2", "store1", "store2")] == [3, 4, 1, 0]


def test_channel_sourcing_skips_nodes_with_nothing_to_promise(net):
    receive(net, "sku", {"dc1": 5, "dc2": 3, "store1": 4})
    net.set_safety_stock("sku", "dc1", 5, None, 0.0)
    net.reserve("r", "web", [("sku", 6, None)], 60.0, False, 0.0)
    assert allocations(net, "r") == [(("dc2", 3), ("store1", 3))]


def test_channel_sourcing_never_uses_an_ineligible_node(net):
    receive(net, "sku", {"dc1": 1, "store2": 100})
    with pytest.raises(OutOfStock) as info:
        net.reserve("r", "web", [("sku", 2, None)], 60.0, False, 0.0)
    assert info.value.shortfalls == (Shortfall(0, "sku", 2, 1),)


def test_same_sku_twice_the_second_line_sees_what_the_first_took(net):
    receive(net, "sku", {"dc1": 5, "dc2": 3})
    net.reserve("r", "web", [("sku", 4, None), ("sku", 4, None)], 60.0, False, 0.0)
    assert allocations(net, "r") == [(("dc1", 4),), (("dc1", 1), ("dc2", 3))]
    assert net.stock("sku", "dc1").reserved == 5
    assert net.stock("sku", "dc2").reserved == 3
    assert channel_atp(net, "sku", "web") == 0


def test_same_sku_twice_short_reports_the_second_line(net):
    receive(net, "sku", {"dc1": 5, "dc2": 3})
    before = snapshot(net)
    error = assert_unchanged(
        net,
        before,
        lambda: net.reserve("r", "web", [("sku", 5, None), ("sku", 4, "dc2")], 60.0, False, 0.0),
        OutOfStock,
        "OUT_OF_STOCK",
    )
    assert error.shortfalls == (Shortfall(1, "sku", 4, 3),)


def test_all_or_nothing_reports_every_short_line_and_holds_nothing(net):
    receive(net, "a", {"dc1": 5})
    receive(net, "b", {"dc2": 1})
    receive(net, "c", {"store1": 5})
    before = snapshot(net)
    lines = [("a", 2, None), ("b", 5, None), ("c", 1, "store1"), ("d", 3, None)]
    error = assert_unchanged(
        net, before, lambda: net.reserve("r", "web", lines, 60.0, False, 0.0), OutOfStock, "OUT_OF_STOCK"
    )
    assert error.shortfalls == (Shortfall(1, "b", 5, 1), Shortfall(3, "d", 3, 0))
    assert not net.has_reservation("r")
    assert net.reservation_count() == 0


def test_a_failed_reservation_id_can_be_retried_once_stock_arrives(net):
    with pytest.raises(OutOfStock):
        net.reserve("r", "web", [("sku", 2, None)], 60.0, False, 0.0)
    receive(net, "sku", {"dc1": 2}, now=1.0)
    assert net.reserve("r", "web", [("sku", 2, None)], 60.0, False, 2.0) == HELD


def test_allow_partial_holds_what_there_is_and_releases_empty_lines(net):
    receive(net, "a", {"dc1": 5})
    receive(net, "b", {"dc2": 1})
    lines = [("a", 2, None), ("b", 5, None), ("d", 3, None)]
    assert net.reserve("r", "web", lines, 60.0, True, 0.0) == HELD
    res = net.get_reservation("r")
    assert res.state == HELD and res.allow_partial
    assert [line.state for line in res.lines] == [HELD, HELD, RELEASED]
    assert [line.allocated for line in res.lines] == [2, 1, 0]
    assert [line.requested for line in res.lines] == [2, 5, 3]
    assert res.lines[2].allocations == ()
    assert net.stock("b", "dc2").reserved == 1

    assert net.commit("r", 1.0) == COMMITTED
    assert line_states(net, "r") == [COMMITTED, COMMITTED, RELEASED]


def test_allow_partial_with_nothing_at_all_is_out_of_stock(net):
    receive(net, "a", {"store2": 5})  # not a web node
    before = snapshot(net)
    error = assert_unchanged(
        net,
        before,
        lambda: net.reserve("r", "web", [("a", 2, None), ("b", 1, None)], 60.0, True, 0.0),
        OutOfStock,
        "OUT_OF_STOCK",
    )
    assert error.shortfalls == (Shortfall(0, "a", 2, 0), Shortfall(1, "b", 1, 0))
    assert not net.has_reservation("r")


def test_reservation_records_its_request(net):
    receive(net, "sku", {"dc1": 5})
    net.reserve("r", "web", [LineRequest("sku", 2, "dc1"), LineRequest("sku", 1)], 90.0, False, 10.0)
    res = net.get_reservation("r")
    assert (res.id, res.channel, res.ttl_s, res.created_at, res.expires_at) == ("r", "web", 90.0, 10.0, 100.0)
    assert [(line.index, line.sku, line.requested, line.requested_node) for line in res.lines] == [
        (0, "sku", 2, "dc1"),
        (1, "sku", 1, None),
    ]
    assert res.lines[0].allocations == (Allocation("dc1", 2),)


@pytest.mark.parametrize(
    ("channel", "lines", "error_type", "reason", "field"),
    [
        ("fax", [("sku", 1, None)], UnknownChannel, "CHANNEL_NOT_FOUND", "channel"),
        ("web", [("sku", 1, None), ("sku", 1, "nowhere")], UnknownNode, "NODE_NOT_FOUND", "lines[1].node"),
        ("web", [("sku", 1, "store2")], NodeNotEligible, "NODE_NOT_ELIGIBLE", "lines[0].node"),
    ],
)
def test_reserve_rejects_unknown_channel_node_and_ineligible_node(
    net, channel, lines, error_type, reason, field
):
    receive(net, "sku", {"dc1": 5, "store2": 5})
    before = snapshot(net)
    error = assert_unchanged(
        net, before, lambda: net.reserve("r", channel, lines, 60.0, False, 0.0), error_type, reason
    )
    assert isinstance(error, InvalidArgument)
    assert [v.field for v in error.violations] == [field]
    assert not net.has_reservation("r")


# ----------------------------------------------------------------- lifecycle


def test_held_committed_fulfilled_moves_the_counters(net):
    receive(net, "sku", {"dc1": 10})
    assert net.reserve("r", "web", [("sku", 4, None)], 60.0, False, 0.0) == HELD
    assert (net.stock("sku", "dc1").reserved, net.stock("sku", "dc1").committed) == (4, 0)

    assert net.commit("r", 1.0) == COMMITTED
    level = net.stock("sku", "dc1")
    assert (level.on_hand, level.reserved, level.committed, level.atp) == (10, 0, 4, 6)

    assert net.fulfill("r", None, 2.0) == FULFILLED
    level = net.stock("sku", "dc1")
    assert (level.on_hand, level.reserved, level.committed, level.atp) == (6, 0, 0, 6)
    assert net.get_reservation("r").state == FULFILLED
    assert line_states(net, "r") == [FULFILLED]


def test_commit_and_fulfill_replays_change_nothing(net):
    receive(net, "sku", {"dc1": 10})
    net.reserve("r", "web", [("sku", 4, None)], 60.0, False, 0.0)
    net.commit("r", 1.0)
    before = snapshot(net)
    assert net.commit("r", 2.0) == COMMITTED
    assert snapshot(net) == before
    net.fulfill("r", None, 3.0)
    before = snapshot(net)
    assert net.fulfill("r", None, 4.0) == FULFILLED
    assert net.commit("r", 4.0) == FULFILLED
    assert snapshot(net) == before


def test_commit_is_not_undone_by_the_old_expiry(net):
    receive(net, "sku", {"dc1": 10})
    net.reserve("r", "web", [("sku", 4, None)], 10.0, False, 0.0)
    net.commit("r", 9.999)
    assert net.expire_due(1000.0) == []
    assert net.get_reservation("r").state == COMMITTED
    assert net.stock("sku", "dc1").committed == 4


@pytest.mark.parametrize("commit_first", [False, True], ids=["held", "committed"])
def test_release_whole_reservation_returns_every_unit(net, commit_first):
    receive(net, "sku", {"dc1": 3, "dc2": 3})
    net.reserve("r", "web", [("sku", 5, None)], 60.0, False, 0.0)
    if commit_first:
        net.commit("r", 1.0)
    assert net.release("r", None, 2.0) == RELEASED
    for node in ("dc1", "dc2"):
        level = net.stock("sku", node)
        assert (level.reserved, level.committed, level.on_hand) == (0, 0, 3)
    assert channel_atp(net, "sku", "web") == 6
    before = snapshot(net)
    assert net.release("r", None, 3.0) == RELEASED  # a replay changes nothing
    assert snapshot(net) == before


@pytest.mark.parametrize("commit_first", [False, True], ids=["held", "committed"])
def test_release_some_lines(net, commit_first):
    receive(net, "a", {"dc1": 5})
    receive(net, "b", {"dc1": 5})
    net.reserve("r", "web", [("a", 2, None), ("b", 3, None), ("a", 1, None)], 60.0, False, 0.0)
    if commit_first:
        net.commit("r", 1.0)
    live = COMMITTED if commit_first else HELD
    assert net.release("r", [2, 0, 2], 2.0) == live
    assert line_states(net, "r") == [RELEASED, live, RELEASED]
    a, b = net.stock("a", "dc1"), net.stock("b", "dc1")
    assert (a.reserved, a.committed) == (0, 0)
    assert (b.reserved, b.committed) == ((0, 3) if commit_first else (3, 0))

    # Committing afterwards commits what is left, and only that.
    assert net.commit("r", 3.0) == COMMITTED
    assert line_states(net, "r") == [RELEASED, COMMITTED, RELEASED]
    assert net.stock("b", "dc1").committed == 3
    assert net.release("r", [1], 4.0) == RELEASED
    assert net.stock("b", "dc1").committed == 0


def test_fulfill_some_lines_then_the_rest(net):
    receive(net, "a", {"dc1": 5})
    receive(net, "b", {"dc2": 5})
    net.reserve("r", "web", [("a", 2, None), ("b", 3, None)], 60.0, False, 0.0)
    net.commit("r", 1.0)
    assert net.fulfill("r", [1], 2.0) == COMMITTED
    assert line_states(net, "r") == [COMMITTED, FULFILLED]
    assert (net.stock("b", "dc2").on_hand, net.stock("b", "dc2").committed) == (2, 0)
    assert net.fulfill("r", [1], 3.0) == COMMITTED  # a replay of the line: nothing more leaves
    assert net.stock("b", "dc2").on_hand == 2
    assert net.fulfill("r", None, 4.0) == FULFILLED
    assert (net.stock("a", "dc1").on_hand, net.stock("a", "dc1").committed) == (3, 0)


def test_release_rest_after_partial_fulfillment_ends_fulfilled(net):
    receive(net, "a", {"dc1": 5})
    net.reserve("r", "web", [("a", 2, None), ("a", 1, None)], 60.0, False, 0.0)
    net.commit("r", 1.0)
    net.fulfill("r", [0], 2.0)
    assert net.release("r", None, 3.0) == FULFILLED
    assert line_states(net, "r") == [FULFILLED, RELEASED]
    level = net.stock("a", "dc1")
    assert (level.on_hand, level.reserved, level.committed) == (3, 0, 0)


def _held(net):
    net.reserve("r", "web", [("sku", 2, None), ("sku", 1, None)], 10.0, False, 0.0)


def _committed(net):
    _held(net)
    net.commit("r", 1.0)


def _fulfilled(net):
    _committed(net)
    net.fulfill("r", None, 2.0)


def _released(net):
    _held(net)
    net.release("r", None, 1.0)


def _expired(net):
    _held(net)
    assert net.expire_due(10.0) == ["r"]


def _line0_released(net):
    _committed(net)
    net.release("r", [0], 2.0)


def _line0_fulfilled(net):
    _committed(net)
    net.fulfill("r", [0], 2.0)


def _case(setup, method, args, now, error_type, reason):
    return pytest.param(
        setup, method, args, now, error_type, reason, id=f"{setup.__name__[1:]}-{method}-{reason}"
    )


@pytest.mark.parametrize(
    ("setup", "method", "args", "now", "error_type", "reason"),
    [
        _case(_held, "commit", ("r",), 10.0, IllegalTransition, "RESERVATION_EXPIRED"),
        _case(_expired, "commit", ("r",), 11.0, IllegalTransition, "RESERVATION_EXPIRED"),
        _case(_released, "commit", ("r",), 2.0, IllegalTransition, "RESERVATION_RELEASED"),
        _case(_held, "fulfill", ("r", None), 1.0, IllegalTransition, "NOT_COMMITTED"),
        _case(_held, "fulfill", ("r", [1]), 1.0, IllegalTransition, "NOT_COMMITTED"),
        _case(_released, "fulfill", ("r", None), 2.0, IllegalTransition, "RESERVATION_RELEASED"),
        _case(_expired, "fulfill", ("r", None), 11.0, IllegalTransition, "RESERVATION_EXPIRED"),
        _case(_expired, "fulfill", ("r", [0]), 11.0, IllegalTransition, "LINE_EXPIRED"),
        _case(_line0_released, "fulfill", ("r", [1, 0]), 3.0, IllegalTransition, "LINE_RELEASED"),
        _case(_fulfilled, "release", ("r", None), 3.0, IllegalTransition, "RESERVATION_FULFILLED"),
        _case(_line0_fulfilled, "release", ("r", [1, 0]), 3.0, IllegalTransition, "LINE_FULFILLED"),
        _case(_committed, "extend", ("r", 60.0), 2.0, IllegalTransition, "RESERVATION_COMMITTED"),
        _case(_fulfilled, "extend", ("r", 60.0), 3.0, IllegalTransition, "RESERVATION_FULFILLED"),
        _case(_released, "extend", ("r", 60.0), 2.0, IllegalTransition, "RESERVATION_RELEASED"),
        _case(_held, "extend", ("r", 60.0), 10.0, IllegalTransition, "RESERVATION_EXPIRED"),
        _case(_held, "release", ("r", [2]), 1.0, InvalidArgument, "INVALID_ARGUMENT"),
        _case(_held, "release", ("r", [-1]), 1.0, InvalidArgument, "INVALID_ARGUMENT"),
        _case(_committed, "fulfill", ("r", [0, 5]), 2.0, InvalidArgument, "INVALID_ARGUMENT"),
        _case(_held, "release", ("r", []), 1.0, InvalidArgument, "INVALID_ARGUMENT"),
        _case(_held, "commit", ("nope",), 1.0, NotFound, "RESERVATION_NOT_FOUND"),
        _case(_held, "release", ("nope", None), 1.0, NotFound, "RESERVATION_NOT_FOUND"),
        _case(_held, "fulfill", ("nope", None), 1.0, NotFound, "RESERVATION_NOT_FOUND"),
        _case(_held, "extend", ("nope", 5.0), 1.0, NotFound, "RESERVATION_NOT_FOUND"),
        _case(_held, "get_reservation", ("nope",), None, NotFound, "RESERVATION_NOT_FOUND"),
    ],
)
def test_illegal_transitions_fail_with_a_reason_and_change_nothing(
    net, setup, method, args, now, error_type, reason
):
    receive(net, "sku", {"dc1": 10})
    setup(net)
    # Every mutation first expires what is due at its ``now``; that expiry is the
    # only effect a refused call may have. A twin that only ran expire_due(now)
    # shows the state the refused call must leave behind.
    twin = make_ledger(net.implementation)
    twin.load_state(net.export_state())
    if now is not None:
        twin.expire_due(now)
    call_args = (*args, now) if now is not None else args
    with pytest.raises(error_type) as info:
        getattr(net, method)(*call_args)
    assert info.value.reason == reason
    assert snapshot(net) == snapshot(twin)


def test_invalid_line_index_names_the_field(net):
    receive(net, "sku", {"dc1": 10})
    _held(net)
    with pytest.raises(InvalidArgument) as info:
        net.release("r", [0, 7], 1.0)
    assert [v.field for v in info.value.violations] == ["line_indexes"]
    assert line_states(net, "r") == [HELD, HELD]  # line 0 was not released on the way


def test_release_of_an_expired_reservation_changes_nothing(net):
    receive(net, "sku", {"dc1": 10})
    _expired(net)
    before = snapshot(net)
    assert net.release("r", None, 11.0) == EXPIRED
    assert net.release("r", [0], 11.0) == EXPIRED
    assert snapshot(net) == before


# ----------------------------------------------------------------- idempotency


def test_replayed_reserve_returns_the_stored_state_without_a_second_hold(net):
    receive(net, "sku", {"dc1": 10})
    lines = [("sku", 3, None)]
    assert net.reserve("r", "web", lines, 60.0, False, 0.0) == HELD
    before = snapshot(net)
    assert net.reserve("r", "web", [LineRequest("sku", 3, None)], 60.0, False, 1.0) == HELD
    assert snapshot(net) == before
    assert net.stock("sku", "dc1").reserved == 3
    assert net.reservation_count() == 1
    net.commit("r", 2.0)
    assert net.reserve("r", "web", lines, 60.0, False, 3.0) == COMMITTED
    assert net.stock("sku", "dc1").committed == 3


def test_replay_after_extend_is_still_the_same_request(net):
    receive(net, "sku", {"dc1": 10})
    net.reserve("r", "web", [("sku", 3, None)], 60.0, False, 0.0)
    net.extend("r", 600.0, 30.0)
    assert net.reserve("r", "web", [("sku", 3, None)], 60.0, False, 31.0) == HELD
    assert net.get_reservation("r").expires_at == 630.0


def test_replay_of_an_expired_reservation_does_not_hold_again(net):
    receive(net, "sku", {"dc1": 10})
    net.reserve("r", "web", [("sku", 3, None)], 10.0, False, 0.0)
    assert net.reserve("r", "web", [("sku", 3, None)], 10.0, False, 20.0) == EXPIRED
    assert net.stock("sku", "dc1").reserved == 0


@pytest.mark.parametrize(
    ("channel", "lines", "ttl_s", "allow_partial"),
    [
        ("web", [("sku", 4, None)], 60.0, False),
        ("web", [("sku", 3, "dc1")], 60.0, False),
        ("web", [("other", 3, None)], 60.0, False),
        ("web", [("sku", 3, None), ("sku", 1, None)], 60.0, False),
        ("pos", [("sku", 3, None)], 60.0, False),
        ("web", [("sku", 3, None)], 61.0, False),
        ("web", [("sku", 3, None)], 60.0, True),
        ("fax", [("sku", 3, None)], 60.0, False),
    ],
    ids=["quantity", "node", "sku", "extra-line", "channel", "ttl", "allow-partial", "unknown-channel"],
)
def test_same_id_different_body_is_a_mismatch_and_changes_nothing(net, channel, lines, ttl_s, allow_partial):
    receive(net, "sku", {"dc1": 10, "store1": 10})
    receive(net, "other", {"dc1": 10})
    net.reserve("r", "web", [("sku", 3, None)], 60.0, False, 0.0)
    before = snapshot(net)
    assert_unchanged(
        net,
        before,
        lambda: net.reserve("r", channel, lines, ttl_s, allow_partial, 1.0),
        IdempotencyMismatch,
        "IDEMPOTENCY_MISMATCH",
    )


# ----------------------------------------------------------------- extend & expiry


def test_extend_moves_the_expiry(net):
    receive(net, "sku", {"dc1": 10})
    net.reserve("r", "web", [("sku", 3, None)], 10.0, False, 0.0)
    assert net.extend("r", 20.0, 5.0) == 25.0
    assert net.get_reservation("r").expires_at == 25.0
    assert net.expire_due(10.0) == []
    assert net.stock("sku", "dc1").reserved == 3
    assert net.commit("r", 24.0) == COMMITTED


def test_extend_can_shorten_the_hold(net):
    receive(net, "sku", {"dc1": 10})
    net.reserve("r", "web", [("sku", 3, None)], 60.0, False, 0.0)
    assert net.extend("r", 2.0, 1.0) == 3.0
    assert net.expire_due(2.999) == []
    assert net.expire_due(3.0) == ["r"]
    assert net.stock("sku", "dc1").reserved == 0
    assert net.expire_due(60.0) == []


def test_units_return_at_the_expiry_time_and_not_before(net):
    receive(net, "sku", {"dc1": 10})
    net.reserve("r", "web", [("sku", 3, None)], 10.0, False, 0.0)
    assert net.next_expiry() == 10.0
    assert net.expire_due(9.999) == []
    assert net.stock("sku", "dc1").reserved == 3
    assert net.get_reservation("r").state == HELD
    assert net.expire_due(10.0) == ["r"]
    assert net.stock("sku", "dc1").reserved == 0
    assert net.get_reservation("r").state == EXPIRED
    assert line_states(net, "r") == [EXPIRED]
    assert net.expire_due(10.0) == []
    assert net.expire_due(1000.0) == []
    assert net.stock("sku", "dc1").reserved == 0
    assert channel_atp(net, "sku", "web") == 10


def test_any_mutation_first_expires_what_is_due(net):
    receive(net, "sku", {"dc1": 5})
    net.reserve("r", "web", [("sku", 5, None)], 10.0, False, 0.0)
    # The hold is due at 10: a new reservation at 10 must see the units again.
    assert net.reserve("s", "web", [("sku", 5, None)], 10.0, False, 10.0) == HELD
    assert net.get_reservation("r").state == EXPIRED
    assert net.stock("sku", "dc1").reserved == 5


def test_commit_just_before_expiry_succeeds(net):
    receive(net, "sku", {"dc1": 5})
    net.reserve("r", "web", [("sku", 5, None)], 10.0, False, 0.0)
    assert net.commit("r", 9.999) == COMMITTED


def test_expire_due_orders_by_expiry_then_id(net):
    receive(net, "sku", {"dc1": 10})
    net.reserve("b", "web", [("sku", 1, None)], 10.0, False, 0.0)
    net.reserve("a", "web", [("sku", 1, None)], 10.0, False, 0.0)
    net.reserve("c", "web", [("sku", 1, None)], 3.0, False, 2.0)
    net.reserve("d", "web", [("sku", 1, None)], 20.0, False, 0.0)
    assert net.expire_due(10.0) == ["c", "a", "b"]
    assert net.stock("sku", "dc1").reserved == 1
    assert net.expire_due(20.0) == ["d"]
    assert net.next_expiry() is None or net.next_expiry() >= 20.0


@pytest.mark.parametrize("action", ["release", "commit", "extend", "release-lines"])
def test_stale_expiry_entries_never_release_twice(net, action):
    receive(net, "sku", {"dc1": 10})
    net.reserve("r1", "web", [("sku", 2, None)], 10.0, False, 0.0)
    net.reserve("r2", "web", [("sku", 3, None)], 20.0, False, 0.0)
    if action == "release":
        net.release("r1", None, 1.0)
    elif action == "release-lines":
        net.release("r1", [0], 1.0)
    elif action == "commit":
        net.commit("r1", 1.0)
    else:
        net.extend("r1", 14.0, 1.0)  # new expiry 15
    assert net.expire_due(10.0) == []
    level = net.stock("sku", "dc1")
    assert level.reserved == (5 if action == "extend" else 3)
    assert level.committed == (2 if action == "commit" else 0)
    if action == "extend":
        assert net.expire_due(15.0) == ["r1"]
    assert net.expire_due(20.0) == ["r2"]
    assert net.stock("sku", "dc1").reserved == 0
    assert net.audit(20.0) == []


def test_audit_flags_a_hold_left_past_its_expiry_by_more_than_a_second(net):
    receive(net, "sku", {"dc1": 10})
    net.reserve("late", "web", [("sku", 1, None)], 10.0, False, 0.0)
    assert net.audit(10.0) == []
    assert net.audit(11.0) == []  # within a second of expiry is fine
    violations = net.audit(11.5)
    assert len(violations) == 1 and "late" in violations[0]
    net.expire_due(11.5)
    assert net.audit(11.5) == []


def test_a_healthy_ledger_audits_clean(net):
    build_rich_state(net)
    assert net.audit(100.0) == []


# ----------------------------------------------------------------- supply


def test_adjust_reports_the_new_level(net):
    change = net.adjust_stock("sku", "dc1", 7, None, 0.0)
    assert change == StockChange(StockLevel("sku", "dc1", 7, 0, 0, 0, 0), applied=True, duplicate=False)
    change = net.adjust_stock("sku", "dc1", -2, None, 0.0)
    assert change.level.on_hand == 5 and change.applied
    assert net.row_count() == 1


def test_adjust_below_zero_on_hand_is_rejected(net):
    receive(net, "sku", {"dc1": 3})
    before = snapshot(net)
    assert_unchanged(
        net, before, lambda: net.adjust_stock("sku", "dc1", -4, None, 1.0), StockRejected, "NEGATIVE_ON_HAND"
    )
    assert_unchanged(
        net, before, lambda: net.adjust_stock("new", "dc1", -1, None, 1.0), StockRejected, "NEGATIVE_ON_HAND"
    )
    assert net.adjust_stock("sku", "dc1", -3, None, 1.0).level.on_hand == 0


def test_on_hand_limits_are_enforced(net):
    receive(net, "sku", {"dc1": MAX_ON_HAND})
    before = snapshot(net)
    assert_unchanged(
        net, before, lambda: net.adjust_stock("sku", "dc1", 1, None, 0.0), StockRejected, "ON_HAND_LIMIT"
    )
    assert_unchanged(
        net,
        before,
        lambda: net.set_stock("sku", "dc1", MAX_ON_HAND + 1, 5, None, 0.0),
        StockRejected,
        "ON_HAND_LIMIT",
    )
    assert_unchanged(
        net, before, lambda: net.set_stock("sku", "dc1", -1, 5, None, 0.0), StockRejected, "ON_HAND_LIMIT"
    )
    assert_unchanged(
        net, before, lambda: net.set_safety_stock("sku", "dc1", -1, None, 0.0), StockRejected, "ON_HAND_LIMIT"
    )


def test_supply_batch_is_atomic(net):
    receive(net, "sku", {"dc1": 3})
    before = snapshot(net)
    ops = [
        SupplyOp(SupplyKind.ADJUST, "sku", "dc1", 10, 0, "e-ok"),
        SupplyOp(SupplyKind.SET, "other", "dc2", 50, 1, "e-set"),
        SupplyOp(SupplyKind.SAFETY, "sku", "dc1", 2, 0, None),
        SupplyOp(SupplyKind.ADJUST, "sku", "dc1", -20, 0, "e-bad"),  # 3 + 10 - 20 < 0
    ]
    assert_unchanged(net, before, lambda: net.apply_supply(ops, 1.0), StockRejected, "NEGATIVE_ON_HAND")
    assert net.row_count() == 1
    # The events of the failed batch were not remembered: resending them applies them.
    assert net.adjust_stock("sku", "dc1", 10, "e-ok", 2.0) == StockChange(
        StockLevel("sku", "dc1", 13, 0, 0, 0, 0), applied=True, duplicate=False
    )


def test_supply_batch_with_an_unknown_node_names_the_op(net):
    before = snapshot(net)
    ops = [SupplyOp(SupplyKind.ADJUST, "sku", "dc1", 10), SupplyOp(SupplyKind.ADJUST, "sku", "nowhere", 1)]
    error = assert_unchanged(net, before, lambda: net.apply_supply(ops, 0.0), UnknownNode, "NODE_NOT_FOUND")
    assert [v.field for v in error.violations] == ["changes[1].node"]


def test_supply_batch_ops_see_the_earlier_ops(net):
    changes = net.apply_supply(
        [
            SupplyOp(SupplyKind.ADJUST, "sku", "dc1", 5),
            SupplyOp(SupplyKind.ADJUST, "sku", "dc1", -5),
            SupplyOp(SupplyKind.SET, "sku", "dc1", 8, 1),
            SupplyOp(SupplyKind.ADJUST, "sku", "dc1", -8),
            SupplyOp(SupplyKind.SAFETY, "sku", "dc2", 1),
        ],
        0.0,
    )
    assert [c.applied for c in changes] == [True] * 5
    # Every result shows the row as the whole batch left it.
    assert [c.level.on_hand for c in changes[:4]] == [0, 0, 0, 0]
    assert net.stock("sku", "dc1") == StockLevel("sku", "dc1", 0, 0, 0, 0, 1)
    assert net.stock("sku", "dc2").safety_stock == 1


def test_set_stock_applies_only_newer_versions(net):
    first = net.set_stock("sku", "dc1", 10, 2, None, 0.0)
    assert first.applied and first.level.on_hand == 10 and first.level.version == 2
    older = net.set_stock("sku", "dc1", 3, 1, None, 1.0)
    assert older == StockChange(StockLevel("sku", "dc1", 10, 0, 0, 0, 2), applied=False, duplicate=False)
    equal = net.set_stock("sku", "dc1", 7, 2, None, 2.0)
    assert not equal.applied and equal.level.on_hand == 10
    newer = net.set_stock("sku", "dc1", 7, 3, None, 3.0)
    assert newer.applied and newer.level.on_hand == 7 and newer.level.version == 3
    # Adjustments move on_hand but not the version.
    assert net.adjust_stock("sku", "dc1", 1, None, 4.0).level == StockLevel("sku", "dc1", 8, 0, 0, 0, 3)


def test_a_stale_count_on_a_missing_row_creates_nothing(net):
    change = net.set_stock("sku", "dc1", 10, 0, None, 0.0)
    assert not change.applied and change.level.on_hand == 0
    assert net.row_count() == 0


def test_event_ids_make_supply_idempotent(net):
    first = net.adjust_stock("sku", "dc1", 5, "rcpt-1", 0.0)
    assert first.applied and not first.duplicate
    again = net.adjust_stock("sku", "dc1", 5, "rcpt-1", 1.0)
    assert again == StockChange(StockLevel("sku", "dc1", 5, 0, 0, 0, 0), applied=False, duplicate=True)
    assert net.set_stock("sku", "dc2", 4, 1, "count-1", 2.0).applied
    assert net.set_stock("sku", "dc2", 4, 1, "count-1", 3.0).duplicate
    assert net.set_safety_stock("sku", "dc1", 1, "safe-1", 4.0).applied
    assert net.set_safety_stock("sku", "dc1", 1, "safe-1", 5.0).duplicate
    # Inside one batch, too.
    changes = net.apply_supply(
        [
            SupplyOp(SupplyKind.ADJUST, "sku", "dc1", 1, 0, "e"),
            SupplyOp(SupplyKind.ADJUST, "sku", "dc1", 1, 0, "e"),
        ],
        6.0,
    )
    assert [(c.applied, c.duplicate) for c in changes] == [(True, False), (False, True)]
    assert net.stock("sku", "dc1").on_hand == 6


def test_a_stale_count_is_remembered_as_an_event(net):
    net.set_stock("sku", "dc1", 10, 5, None, 0.0)
    stale = net.set_stock("sku", "dc1", 3, 4, "count-4", 1.0)
    assert (stale.applied, stale.duplicate) == (False, False)
    assert net.set_stock("sku", "dc1", 3, 4, "count-4", 2.0).duplicate


@pytest.mark.parametrize(
    "op",
    [
        SupplyOp(SupplyKind.ADJUST, "sku", "dc1", 6, 0, "rcpt-1"),
        SupplyOp(SupplyKind.ADJUST, "sku", "dc2", 5, 0, "rcpt-1"),
        SupplyOp(SupplyKind.ADJUST, "other", "dc1", 5, 0, "rcpt-1"),
        SupplyOp(SupplyKind.SET, "sku", "dc1", 5, 0, "rcpt-1"),
        SupplyOp(SupplyKind.SAFETY, "sku", "dc1", 5, 0, "rcpt-1"),
    ],
    ids=["value", "node", "sku", "kind-set", "kind-safety"],
)
def test_an_event_id_with_a_different_body_is_a_mismatch(net, op):
    net.adjust_stock("sku", "dc1", 5, "rcpt-1", 0.0)
    before = snapshot(net)
    assert_unchanged(
        net, before, lambda: net.apply_supply([op], 1.0), IdempotencyMismatch, "IDEMPOTENCY_MISMATCH"
    )
    # The whole batch is refused, including the ops that were fine.
    batch = [SupplyOp(SupplyKind.ADJUST, "sku", "dc2", 1), op]
    assert_unchanged(
        net, before, lambda: net.apply_supply(batch, 1.0), IdempotencyMismatch, "IDEMPOTENCY_MISMATCH"
    )


def test_safety_stock_is_never_promised(net):
    receive(net, "sku", {"dc1": 10})
    change = net.set_safety_stock("sku", "dc1", 4, None, 0.0)
    assert change.level == StockLevel("sku", "dc1", 10, 0, 0, 4, 0)
    assert channel_atp(net, "sku", "web") == 6
    with pytest.raises(OutOfStock) as info:
        net.reserve("r", "web", [("sku", 7, "dc1")], 60.0, False, 0.0)
    assert info.value.shortfalls == (Shortfall(0, "sku", 7, 6),)
    net.reserve("r", "web", [("sku", 6, "dc1")], 60.0, False, 0.0)
    assert net.stock("sku", "dc1").atp == 0
    # Raising safety stock above what is free makes ATP negative; availability shows 0.
    net.set_safety_stock("sku", "dc1", 8, None, 1.0)
    assert net.stock("sku", "dc1").atp == -4
    assert channel_atp(net, "sku", "web") == 0
    assert net.shortages() == []  # on_hand still covers every promise
    assert net.audit(1.0) == []


def test_a_correction_below_promises_is_a_reported_shortage(net):
    receive(net, "sku", {"dc1": 10, "dc2": 5})
    net.reserve("order", "web", [("sku", 6, "dc1")], 600.0, False, 0.0)
    net.commit("order", 0.0)
    net.reserve("cart", "web", [("sku", 2, "dc1")], 600.0, False, 0.0)

    change = net.set_stock("sku", "dc1", 5, 1, None, 1.0)
    assert change.applied  # a correction is never refused: the count is the truth
    level = net.stock("sku", "dc1")
    assert (level.on_hand, level.reserved, level.committed) == (5, 2, 6)
    assert level.atp == -3 and level.shortage == 3
    assert net.shortages() == [level]
    assert net.audit(1.0) == []  # a shortage is reported, it is not a broken ledger

    [avail] = net.availability(["sku"], "web", None, True)
    assert avail.atp == 5 and avail.nodes[0].atp == 0
    with pytest.raises(OutOfStock) as info:
        net.reserve("more", "web", [("sku", 1, "dc1")], 600.0, False, 2.0)
    assert info.value.shortfalls == (Shortfall(0, "sku", 1, 0),)
    # Channel sourcing goes around the short node.
    net.reserve("elsewhere", "web", [("sku", 3, None)], 600.0, False, 2.0)
    assert allocations(net, "elsewhere") == [(("dc2", 3),)]

    # Releasing the hold and receiving stock ends the shortage.
    net.release("cart", None, 3.0)
    net.adjust_stock("sku", "dc1", 1, None, 3.0)
    assert net.shortages() == []
    assert net.stock("sku", "dc1").atp == 0


# ----------------------------------------------------------------- set_row (availability view)


def test_set_row_creates_a_row_that_availability_sees_like_one_built_by_supply(net):
    """A view fed absolute counters answers exactly as a ledger that lived through them."""
    lived = define_network(make_ledger(net.implementation))
    receive(lived, "sku", {"dc1": 10, "store1": 4})
    lived.set_safety_stock("sku", "dc1", 1, None, 0.0)
    lived.set_stock("sku", "store1", 4, 7, None, 0.0)
    lived.reserve("cart", "web", [("sku", 3, "dc1")], 60.0, False, 0.0)
    lived.reserve("order", "web", [("sku", 2, "dc1")], 60.0, False, 0.0)
    lived.commit("order", 0.0)

    assert net.set_row("sku", "dc1", 10, 3, 2, 1, 0) is None
    net.set_row("sku", "store1", 4, 0, 0, 0, 7)
    for channel in ("web", "pos"):
        assert net.availability(["sku", "other"], channel, None, True) == lived.availability(
            ["sku", "other"], channel, None, True
        )
    assert net.availability(["sku"], None, ["dc1", "store1"], True) == lived.availability(
        ["sku"], None, ["dc1", "store1"], True
    )
    assert net.stock("sku", "dc1") == StockLevel("sku", "dc1", 10, 3, 2, 1, 0)
    assert [level for level in net.iter_rows()] == [level for level in lived.iter_rows()]
    assert net.row_count() == 2
    assert net.reservation_count() == 0  # no reservation involved


def test_set_row_overwrites_every_counter_of_an_existing_row(net):
    receive(net, "sku", {"dc1": 10})
    net.set_safety_stock("sku", "dc1", 2, None, 0.0)
    net.set_row("sku", "dc1", 3, 1, 1, 0, 9)
    assert net.stock("sku", "dc1") == StockLevel("sku", "dc1", 3, 1, 1, 0, 9)
    assert channel_atp(net, "sku", "web") == 1
    net.set_row("sku", "dc1", 0, 0, 0, 0, 10)
    assert net.stock("sku", "dc1") == StockLevel("sku", "dc1", 0, 0, 0, 0, 10)
    assert channel_atp(net, "sku", "web") == 0
    assert net.row_count() == 1


def test_set_row_shows_a_short_row_as_zero_available_and_as_a_shortage(net):
    net.set_row("sku", "dc1", 2, 3, 1, 0, 1)
    [avail] = net.availability(["sku"], "web", None, True)
    assert avail.atp == 0 and avail.nodes[0] == NodeAvailability("dc1", 2, 3, 1, 0, 0)
    assert net.shortages() == [StockLevel("sku", "dc1", 2, 3, 1, 0, 1)]


def test_set_row_needs_a_defined_node(net):
    before = snapshot(net)
    with pytest.raises(UnknownNode) as info:
        net.set_row("sku", "nowhere", 1, 0, 0, 0, 1)
    assert info.value.reason == "NODE_NOT_FOUND"
    assert [v.field for v in info.value.violations] == ["node"]
    assert snapshot(net) == before


@pytest.mark.parametrize(
    ("values", "fields"),
    [
        ((-1, 0, 0, 0, 0), ["on_hand"]),
        ((0, -1, -2, 0, 0), ["reserved", "committed"]),
        ((MAX_ON_HAND + 1, 0, 0, MAX_ON_HAND + 1, 0), ["on_hand", "safety_stock"]),
        ((1, 0, 0, 0, -1), ["version"]),
        ((1, 0, 0, 0, 2**63), ["version"]),
        ((1.5, 0, 0, 0, 0), ["on_hand"]),
        ((1, "2", 0, 0, None), ["reserved", "version"]),
    ],
)
def test_set_row_refuses_counters_out_of_range_and_changes_nothing(net, values, fields):
    net.set_row("sku", "dc1", 5, 0, 0, 0, 1)
    before = snapshot(net)
    with pytest.raises(InvalidArgument) as info:
        net.set_row("sku", "dc1", *values)
    assert [v.field for v in info.value.violations] == fields
    assert snapshot(net) == before


def test_set_row_takes_the_largest_values_that_fit(net):
    net.set_row("sku", "dc1", MAX_ON_HAND, MAX_ON_HAND, MAX_ON_HAND, MAX_ON_HAND, 2**63 - 1)
    assert net.stock("sku", "dc1") == StockLevel(
        "sku", "dc1", MAX_ON_HAND, MAX_ON_HAND, MAX_ON_HAND, MAX_ON_HAND, 2**63 - 1
    )
    assert channel_atp(net, "sku", "web") == 0


def test_rows_set_by_set_row_survive_a_snapshot_in_both_implementations(net):
    net.set_row("sku", "dc1", 7, 1, 2, 1, 4)
    net.set_row("sku", "store2", 3, 0, 0, 0, 1)
    image = json.loads(json.dumps(net.export_state()))
    for impl in ("pure", "fast"):
        other = make_ledger(impl)
        other.load_state(image)
        assert list(other.iter_rows()) == list(net.iter_rows())
        assert other.availability(["sku"], "pos", None, True) == net.availability(["sku"], "pos", None, True)


# ----------------------------------------------------------------- snapshots


def test_export_state_is_json_and_round_trips(ledger):
    build_rich_state(ledger)
    image = ledger.export_state()
    text = json.dumps(image)
    fresh = make_ledger(ledger.implementation)
    fresh.load_state(json.loads(text))
    assert snapshot(fresh) == snapshot(ledger)
    assert fresh.row_count() == ledger.row_count()
    assert fresh.reservation_count() == ledger.reservation_count()
    assert fresh.shortages() == ledger.shortages()
    assert continue_rich_state(fresh) == continue_rich_state(ledger)
    assert snapshot(fresh) == snapshot(ledger)


@pytest.mark.parametrize("other_impl", ["pure", "fast"])
def test_state_moves_between_implementations(ledger, other_impl):
    build_rich_state(ledger)
    other = make_ledger(other_impl)
    other.load_state(json.loads(json.dumps(ledger.export_state())))
    assert snapshot(other) == snapshot(ledger)
    for reservation_id in ("held", "partial", "committed", "fulfilled", "released", "expired"):
        assert other.get_reservation(reservation_id) == ledger.get_reservation(reservation_id)
    assert list(other.iter_rows()) == list(ledger.iter_rows())
    # Same answers from here on, operation by operation.
    assert continue_rich_state(other) == continue_rich_state(ledger)
    assert snapshot(other) == snapshot(ledger)


def test_load_state_replaces_everything(ledger):
    build_rich_state(ledger)
    image = ledger.export_state()
    target = define_network(make_ledger(ledger.implementation))
    receive(target, "leftover", {"dc1": 1})
    target.reserve("leftover", "web", [("leftover", 1, None)], 60.0, False, 0.0)
    target.load_state(image)
    assert not target.has_reservation("leftover")
    assert target.stock("leftover", "dc1").on_hand == 0
    assert snapshot(target) == snapshot(ledger)


def test_load_state_refuses_an_unknown_format(ledger):
    image = define_network(ledger).export_state()
    image["format"] = 999
    with pytest.raises(ValueError):
        make_ledger(ledger.implementation).load_state(image)


def test_error_signatures_are_comparable(net):
    """The differential test compares errors by these fields; pin their shape."""
    with pytest.raises(UnknownNode) as info:
        net.reserve("r", "web", [("sku", 1, "nowhere")], 60.0, False, 0.0)
    assert error_signature(info.value) == (
        UnknownNode,
        "NODE_NOT_FOUND",
        (),
        (FieldViolation("lines[0].node", "node 'nowhere' is not defined"),),
    )
    assert outcome(lambda: net.expire_due(0.0)) == ("ok", [])


# ----------------------------------------------------------------- regressions
# Bugs found in the reference ledger. Each test failed against it
# (and its Cython twin) before the fix; the docstring says what a user saw.


def test_extend_onto_the_same_expiry_expires_the_hold_once(net):
    """Extending a hold onto the expiry it already has (a retried extend does
    exactly that) left two live heap entries: expire_due reported the id twice."""
    receive(net, "sku", {"dc1": 10})
    net.reserve("r", "web", [("sku", 3, None)], 10.0, False, 0.0)
    assert net.extend("r", 5.0, 5.0) == 10.0
    assert net.extend("r", 5.0, 5.0) == 10.0
    assert net.expire_due(10.0) == ["r"]
    assert net.stock("sku", "dc1").reserved == 0
    assert net.expire_due(10.0) == []


def test_extend_back_to_an_earlier_expiry_expires_the_hold_once(net):
    """Same as above, reached by extending out and back again."""
    receive(net, "sku", {"dc1": 10})
    net.reserve("r", "web", [("sku", 3, None)], 10.0, False, 0.0)
    net.extend("r", 100.0, 1.0)
    net.extend("r", 8.0, 2.0)
    assert net.expire_due(200.0) == ["r"]


def test_a_channel_cannot_list_a_node_twice(net):
    """define_channel accepted a node twice; sourcing then counted that node's ATP
    twice and held 8 of 5 units on hand (ATP -3, and audit() stayed clean)."""
    receive(net, "sku", {"dc1": 5})
    with pytest.raises(InvalidArgument) as info:
        net.define_channel("dup", ["dc1", "dc2", "dc1"])
    assert [v.field for v in info.value.violations] == ["nodes[2]"]
    assert not net.has_channel("dup")


def test_availability_refuses_a_node_listed_twice(net):
    """The same node twice in an availability query doubled its ATP."""
    receive(net, "sku", {"dc1": 5})
    for channel in (None, "web"):
        with pytest.raises(InvalidArgument) as info:
            net.availability(["sku"], channel, ["dc1", "dc1"], False)
        assert [v.field for v in info.value.violations] == ["nodes[1]"]


def test_shipping_more_than_is_on_hand_is_refused(net):
    """After a recount left fewer units on the shelf than were committed, fulfill
    drove on_hand negative (-3), and from then on a receipt smaller than the hole
    was refused with NEGATIVE_ON_HAND."""
    receive(net, "sku", {"dc1": 5})
    net.reserve("r", "web", [("sku", 5, None)], 60.0, False, 0.0)
    net.commit("r", 0.0)
    net.set_stock("sku", "dc1", 2, 1, None, 1.0)  # only 2 found on the shelf
    before = snapshot(net)
    assert_unchanged(net, before, lambda: net.fulfill("r", None, 2.0), StockRejected, "NEGATIVE_ON_HAND")
    assert_unchanged(net, before, lambda: net.fulfill("r", [0], 2.0), StockRejected, "NEGATIVE_ON_HAND")
    assert net.adjust_stock("sku", "dc1", 1, None, 3.0).level.on_hand == 3  # receipts still land
    net.set_stock("sku", "dc1", 5, 2, None, 4.0)  # the missing units turn up
    assert net.fulfill("r", None, 5.0) == FULFILLED
    assert net.stock("sku", "dc1") == StockLevel("sku", "dc1", 0, 0, 0, 0, 2)


def test_shipping_checks_the_total_per_row_across_lines(net):
    """Two lines of one SKU from one node ship together: their sum must be on hand."""
    receive(net, "sku", {"dc1": 6})
    net.reserve("r", "web", [("sku", 3, "dc1"), ("sku", 3, "dc1")], 60.0, False, 0.0)
    net.commit("r", 0.0)
    net.set_stock("sku", "dc1", 4, 1, None, 1.0)
    before = snapshot(net)
    assert_unchanged(net, before, lambda: net.fulfill("r", None, 2.0), StockRejected, "NEGATIVE_ON_HAND")
    assert net.fulfill("r", [0], 2.0) == COMMITTED  # one line fits
    assert net.stock("sku", "dc1").on_hand == 1


# ----------------------------------------------------------------- open
# Fails against both ledgers as of this writing; reported to the lead.


def test_a_partial_reservation_that_expired_reports_expired(net):
    """A partial reservation whose hold timed out reports RELEASED, because the
    line that found no stock was RELEASED at creation and ``aggregate_state``
    says EXPIRED only when every line expired. expire_due() lists it as
    expired, yet get_reservation() says RELEASED and commit() answers
    RESERVATION_RELEASED, so a checkout tells the shopper "cancelled" instead
    of "timed out". (Open: decided in engine.core.types.aggregate_state.)"""
    receive(net, "a", {"dc1": 5})
    net.reserve("r", "web", [("a", 2, None), ("none-left", 1, None)], 10.0, True, 0.0)
    assert net.expire_due(10.0) == ["r"]
    assert net.get_reservation("r").state == EXPIRED
    with pytest.raises(IllegalTransition) as info:
        net.commit("r", 11.0)
    assert info.value.reason == "RESERVATION_EXPIRED"


def test_a_reservation_without_lines_holds_nothing_and_never_expires(net):
    """The ledger takes what validation would refuse; with no lines there is no
    hold, so expiry must not report one (the Cython ledger once did)."""
    assert net.reserve("empty", "web", [], 10.0, False, 0.0) == HELD
    assert net.get_reservation("empty").lines == ()
    assert net.expire_due(10.0) == []
    assert net.audit(20.0) == []


def test_a_reserve_that_fails_on_its_ttl_leaves_no_hold(net):
    """BUG (fixed): the pure ledger wrote the hold before computing the expiry,
    so a bad TTL raised after the counters had moved."""
    receive(net, "sku", {"dc1": 5})
    with pytest.raises(TypeError):
        net.reserve("r", "web", [("sku", 1, None)], "x", False, 0.0)
    assert net.stock("sku", "dc1").reserved == 0
    assert not net.has_reservation("r")
    assert net.audit(0.0) == []


# ------------------------------------------------------------------ backorder holds
# The rule of a line held against expected inbound supply (see Ledger.reserve):
# with a = on_hand - reserved - committed - safety - (this request's earlier
# holds there) and w what the line could take as an ordinary line (the channel's
# allowance, else a; never below 0), a line of q with allowance B > 0 at its one
# node is held whole when q <= w, or when the channel has no allocation rule at
# the node and q <= a + B, else it gets nothing (its shortfall reports w). A
# channel with a rule at the node (any kind) takes no backorders there.


def backorder_reserve(
    ledger,
    reservation_id: str,
    lines: list[tuple[str, int, str | None]],
    backorder: list[int] | None,
    *,
    channel: str = "web",
    allow_partial: bool = False,
    now: float = 0.0,
    ttl_s: float = 60.0,
    candidates: list[tuple[str, ...] | None] | None = None,
):
    """A reserve with backorder allowances, through the keyword a store passes them by."""
    return ledger.reserve(
        reservation_id, channel, lines, ttl_s, allow_partial, now, candidates, backorder=backorder
    )


def test_backorder_holds_a_line_the_shelf_cannot_cover_down_to_minus_the_allowance(net):
    """The SPEC's first examples: on_hand 3, q 5, B 10 is held (ATP -2); then q 9
    with B 10 is not (9 > -2 + 10), and q 8 is (ATP -10, exactly -B)."""
    receive(net, "sku", {"dc1": 3})
    assert backorder_reserve(net, "r1", [("sku", 5, "dc1")], [10]) == HELD
    assert allocations(net, "r1") == [(("dc1", 5),)]
    assert net.stock("sku", "dc1") == StockLevel("sku", "dc1", 3, 5, 0, 0, 0)
    assert net.stock("sku", "dc1").atp == -2
    # Availability never shows a negative figure: the shelf has nothing left to sell.
    assert channel_atp(net, "sku", "web") == 0

    before = snapshot(net)
    error = assert_unchanged(
        net,
        before,
        lambda: backorder_reserve(net, "r2", [("sku", 9, "dc1")], [10]),
        OutOfStock,
        "OUT_OF_STOCK",
    )
    assert error.shortfalls == (Shortfall(0, "sku", 9, 0),)
    assert backorder_reserve(net, "r2", [("sku", 8, "dc1")], [10]) == HELD
    assert net.stock("sku", "dc1").atp == -10
    # The hold is an ordinary hold: the row is short, and the ledger is healthy.
    assert net.shortages() == [net.stock("sku", "dc1")]
    assert net.audit(0.0) == []


def test_a_backorder_line_the_shelf_covers_is_an_ordinary_hold(net):
    receive(net, "sku", {"dc1": 10})
    assert backorder_reserve(net, "r", [("sku", 4, "dc1")], [5]) == HELD
    assert allocations(net, "r") == [(("dc1", 4),)]
    assert net.stock("sku", "dc1").atp == 6


def test_no_backorder_where_the_channel_rule_keeps_part_of_the_shelf_from_it(net):
    """The SPEC's example: on_hand 10, a 50% share (w 5), q 7, B 100: the
    channel has a rule at the node, so nothing is held; the shortfall reports
    what the line could take as an ordinary one."""
    net.define_channel("app", ("dc1",), [(int(RuleKind.SHARE), 50)])
    receive(net, "sku", {"dc1": 10})
    before = snapshot(net)
    error = assert_unchanged(
        net,
        before,
        lambda: backorder_reserve(net, "r", [("sku", 7, "dc1")], [100], channel="app"),
        OutOfStock,
        "OUT_OF_STOCK",
    )
    assert error.shortfalls == (Shortfall(0, "sku", 7, 5),)
    # What the share allows is still an ordinary hold.
    assert backorder_reserve(net, "r", [("sku", 5, "dc1")], [100], channel="app") == HELD


def test_two_backorder_lines_of_one_row_see_what_the_earlier_line_took(net):
    """The SPEC's example: on_hand 2, two lines of q 4 with B 5 each: line 0 is
    held (4 <= 2 + 5, ATP -2), line 1 is not (a = -2, 4 > -2 + 5)."""
    receive(net, "sku", {"dc1": 2})
    lines = [("sku", 4, "dc1"), ("sku", 4, "dc1")]
    before = snapshot(net)
    error = assert_unchanged(
        net, before, lambda: backorder_reserve(net, "all", lines, [5, 5]), OutOfStock, "OUT_OF_STOCK"
    )
    assert error.shortfalls == (Shortfall(1, "sku", 4, 0),)

    assert backorder_reserve(net, "some", lines, [5, 5], allow_partial=True) == HELD
    assert allocations(net, "some") == [(("dc1", 4),), ()]
    assert line_states(net, "some") == [HELD, RELEASED]
    assert net.stock("sku", "dc1").atp == -2


def test_an_ordinary_line_after_a_backorder_hold_of_its_row_gets_nothing(net):
    receive(net, "sku", {"dc1": 3})
    lines = [("sku", 5, "dc1"), ("sku", 1, "dc1")]
    assert backorder_reserve(net, "r", lines, [10, 0], allow_partial=True) == HELD
    assert allocations(net, "r") == [(("dc1", 5),), ()]
    assert net.stock("sku", "dc1").reserved == 5


def test_a_backorder_line_is_never_held_in_part(net):
    """Even with allow_partial, a backorder line the rule refuses gets nothing,
    not the 3 units on the shelf; the other lines are held."""
    receive(net, "sku", {"dc1": 3})
    receive(net, "other", {"dc1": 5})
    lines = [("other", 2, "dc1"), ("sku", 20, "dc1")]
    assert backorder_reserve(net, "r", lines, [0, 10], allow_partial=True) == HELD
    assert allocations(net, "r") == [(("dc1", 2),), ()]
    assert line_states(net, "r") == [HELD, RELEASED]
    assert net.stock("sku", "dc1").reserved == 0
    with pytest.raises(OutOfStock) as info:
        backorder_reserve(net, "r2", [("sku", 20, "dc1")], [10], allow_partial=True)
    assert info.value.shortfalls == (Shortfall(0, "sku", 20, 3),)


def test_all_or_nothing_with_a_refused_backorder_line_leaves_nothing_changed(net):
    """Line 0's backorder hold (planned, at a row that does not exist yet) and
    line 1's ordinary hold are both undone when line 2 is short: no row is created."""
    receive(net, "a", {"dc1": 5})
    receive(net, "b", {"dc1": 1})
    lines = [("new", 3, "dc2"), ("a", 2, None), ("b", 9, "dc1")]
    before = snapshot(net)
    rows = net.row_count()
    error = assert_unchanged(
        net, before, lambda: backorder_reserve(net, "r", lines, [5, 0, 2]), OutOfStock, "OUT_OF_STOCK"
    )
    assert error.shortfalls == (Shortfall(2, "b", 9, 1),)
    assert net.row_count() == rows
    assert net.stock("new", "dc2") == StockLevel("new", "dc2", 0, 0, 0, 0, 0)
    assert not net.has_reservation("r")
    assert net.audit(0.0) == []


def test_a_backorder_hold_creates_the_row_it_is_held_at(net):
    """A SKU never stocked at the node: the row counts as all zeros (a = 0, w = 0)
    and is created by the hold; a second line of the request sees the first's units."""
    rows = net.row_count()
    lines = [("new", 3, "dc2"), ("new", 2, "dc2"), ("new", 1, "dc2")]
    assert backorder_reserve(net, "r", lines, [5, 5, 0], allow_partial=True) == HELD
    # Line 1: a = -3, 2 <= -3 + 5; line 2 (no allowance) finds nothing on the shelf.
    assert allocations(net, "r") == [(("dc2", 3),), (("dc2", 2),), ()]
    assert net.row_count() == rows + 1
    assert net.stock("new", "dc2") == StockLevel("new", "dc2", 0, 5, 0, 0, 0)
    assert [level.sku for level in net.iter_rows()] == ["new"]
    assert net.shortages() == [net.stock("new", "dc2")]
    assert net.audit(0.0) == []
    for other_impl in ("pure", "fast"):
        other = make_ledger(other_impl)
        other.load_state(json.loads(json.dumps(net.export_state())))
        assert snapshot(other) == snapshot(net)
        assert other.get_reservation("r") == net.get_reservation("r")


def test_a_backorder_line_without_a_node_takes_its_one_candidate(net):
    """Promise-driven sourcing: the line's node is its single candidate."""
    receive(net, "sku", {"dc1": 10, "dc2": 1})
    lines = [("sku", 4, None)]
    assert backorder_reserve(net, "r", lines, [6], candidates=[("dc2",)]) == HELD
    assert allocations(net, "r") == [(("dc2", 4),)]
    assert net.stock("sku", "dc2").atp == -3
    assert net.stock("sku", "dc1").reserved == 0


def test_a_backorder_line_whose_one_candidate_is_not_usable_gets_nothing(net):
    """store2 is not a web node: the candidate is dropped, and the line is short."""
    receive(net, "sku", {"store2": 10})
    before = snapshot(net)
    error = assert_unchanged(
        net,
        before,
        lambda: backorder_reserve(net, "r", [("sku", 2, None)], [5], candidates=[("store2",)]),
        OutOfStock,
        "OUT_OF_STOCK",
    )
    assert error.shortfalls == (Shortfall(0, "sku", 2, 0),)


@pytest.mark.parametrize(
    ("lines", "backorder", "candidates", "field"),
    [
        ([("sku", 1, "dc1")], [], None, "backorder"),
        ([("sku", 1, "dc1")], [1, 1], None, "backorder"),
        ([("sku", 1, "dc1"), ("sku", 1, "dc1")], [0, -1], None, "backorder[1]"),
        ([("sku", 1, "dc1")], ["2"], None, "backorder[0]"),
        ([("sku", 1, None)], [3], None, "backorder[0]"),
        ([("sku", 1, None)], [3], [None], "backorder[0]"),
        ([("sku", 1, None)], [3], [("dc1", "dc2")], "backorder[0]"),
        ([("sku", 1, None)], [3], [()], "backorder[0]"),
    ],
    ids=[
        "too-few",
        "too-many",
        "negative",
        "not-an-int",
        "no-node-no-candidates",
        "channel-order",
        "two-candidates",
        "no-candidate",
    ],
)
def test_bad_backorder_allowances_are_invalid_and_change_nothing(net, lines, backorder, candidates, field):
    receive(net, "sku", {"dc1": 5})
    before = snapshot(net)
    error = assert_unchanged(
        net,
        before,
        lambda: backorder_reserve(net, "r", lines, backorder, candidates=candidates),
        InvalidArgument,
        "INVALID_ARGUMENT",
    )
    assert [v.field for v in error.violations] == [field]
    assert not net.has_reservation("r")


def test_an_allowance_of_zero_needs_no_single_node(net):
    """0 is "from the shelf only": the line sources as any other, split included."""
    receive(net, "sku", {"dc1": 2, "dc2": 3})
    assert backorder_reserve(net, "r", [("sku", 4, None)], [0]) == HELD
    assert allocations(net, "r") == [(("dc1", 2), ("dc2", 2))]


def test_a_replay_ignores_the_backorder_allowances(net):
    receive(net, "sku", {"dc1": 3})
    lines = [("sku", 5, "dc1")]
    assert backorder_reserve(net, "r", lines, [10]) == HELD
    before = snapshot(net)
    # Not part of the body: none, others, even a list that would be refused.
    for backorder in (None, [0], [2], [1, 2, 3], [-1]):
        assert backorder_reserve(net, "r", lines, backorder) == HELD
    assert net.reserve("r", "web", lines, 60.0, False, 0.0) == HELD
    assert snapshot(net) == before
    # A request stored without allowances replays with them too.
    receive(net, "other", {"dc1": 1})
    net.reserve("plain", "web", [("other", 1, "dc1")], 60.0, False, 0.0)
    assert backorder_reserve(net, "plain", [("other", 1, "dc1")], [4]) == HELD
    assert net.stock("other", "dc1").reserved == 1


@pytest.mark.parametrize("how", ["release", "release-line", "expiry"])
def test_releasing_or_expiring_a_backorder_hold_returns_the_atp(net, how):
    receive(net, "sku", {"dc1": 3})
    backorder_reserve(net, "r", [("sku", 5, "dc1"), ("sku", 1, "dc2")], [10, 2], ttl_s=10.0)
    assert net.stock("sku", "dc1").atp == -2 and net.stock("sku", "dc2").atp == -1
    if how == "release":
        assert net.release("r", None, 1.0) == RELEASED
    elif how == "release-line":
        net.release("r", [0], 1.0)
        net.release("r", [1], 1.0)
    else:
        assert net.expire_due(9.999) == []
        assert net.expire_due(10.0) == ["r"]
    assert net.stock("sku", "dc1") == StockLevel("sku", "dc1", 3, 0, 0, 0, 0)
    assert net.stock("sku", "dc1").atp == 3
    # The row the hold created stays, empty (rows are never removed).
    assert net.stock("sku", "dc2") == StockLevel("sku", "dc2", 0, 0, 0, 0, 0)
    assert net.shortages() == []
    assert net.audit(20.0) == []


def test_a_committed_backorder_line_ships_only_once_the_stock_arrives(net):
    receive(net, "sku", {"dc1": 3})
    backorder_reserve(net, "r", [("sku", 5, "dc1")], [10])
    assert net.commit("r", 1.0) == COMMITTED
    assert net.stock("sku", "dc1") == StockLevel("sku", "dc1", 3, 0, 5, 0, 0)
    before = snapshot(net)
    assert_unchanged(net, before, lambda: net.fulfill("r", None, 2.0), StockRejected, "NEGATIVE_ON_HAND")
    assert_unchanged(net, before, lambda: net.fulfill("r", [0], 2.0), StockRejected, "NEGATIVE_ON_HAND")
    # The purchase order arrives.
    assert net.adjust_stock("sku", "dc1", 2, None, 3.0).level.on_hand == 5
    assert net.fulfill("r", None, 4.0) == FULFILLED
    assert net.stock("sku", "dc1") == StockLevel("sku", "dc1", 0, 0, 0, 0, 0)
    assert net.shortages() == []
    assert net.audit(4.0) == []


def test_a_tracked_channel_counts_its_backorder_holds(net):
    """A channel tracked without rules backorders as any other; its
    channel_used counts the holds (at a new row too) and audit() stays clean."""
    net.define_channel("app", ("dc1", "dc2"), None, track_usage=True)
    receive(net, "sku", {"dc1": 3})
    lines = [("sku", 5, "dc1"), ("sku", 2, "dc2")]
    assert backorder_reserve(net, "r", lines, [10, 4], channel="app") == HELD
    assert net.channel_usage("sku", "dc1") == {"app": 5}
    assert net.channel_usage("sku", "dc2") == {"app": 2}
    assert net.audit(0.0) == []
    net.commit("r", 1.0)
    assert net.channel_usage("sku", "dc1") == {"app": 5}
    assert net.audit(1.0) == []
    net.release("r", [1], 2.0)
    assert net.channel_usage("sku", "dc2") == {}
    assert net.audit(2.0) == []
    # The counters survive a snapshot into either implementation.
    for other_impl in ("pure", "fast"):
        other = make_ledger(other_impl)
        other.load_state(json.loads(json.dumps(net.export_state())))
        assert other.channel_usage("sku", "dc1") == {"app": 5}
        assert other.audit(2.0) == []


RULES_AT_A_NODE = [
    (int(RuleKind.CAP), 5),
    (int(RuleKind.SHARE), 30),
    (int(RuleKind.PROTECT), 2),
    # Rules that would leave the channel the whole shelf: still rules.
    (int(RuleKind.CAP), 1000),
    (int(RuleKind.SHARE), 100),
    (int(RuleKind.PROTECT), 0),
]
RULE_IDS = ["cap-5", "share-30", "protect-2", "cap-1000", "share-100", "protect-0"]


@pytest.mark.parametrize("rule", RULES_AT_A_NODE, ids=RULE_IDS)
def test_a_channel_with_a_rule_at_a_node_takes_no_backorders_there(net, rule):
    """The review's case: the call center capped at 5 at dc1 held 100 units
    on a purchase order once the shelf was empty (ATP 0 made the allowance
    and the raw ATP both 0, so the rule limited nothing). Any rule at the
    node now means no backorders there; at dc2, without a rule, the channel
    still backorders."""
    none = (int(RuleKind.NONE), 0)
    net.define_channel("callcenter", ("dc1", "dc2"), [rule, none])
    # No row at dc1 yet (a hold would start it), then an empty shelf.
    for sku in ("new", "empty"):
        if sku == "empty":
            receive(net, sku, {"dc1": 5})
            net.reserve("emptied", "web", [(sku, 5, "dc1")], 60.0, False, 0.0)
            assert net.stock(sku, "dc1").atp == 0
        before = snapshot(net)
        error = assert_unchanged(
            net,
            before,
            lambda sku=sku: backorder_reserve(
                net, f"bo-{sku}", [(sku, 100, "dc1")], [100], channel="callcenter"
            ),
            OutOfStock,
            "OUT_OF_STOCK",
        )
        assert error.shortfalls == (Shortfall(0, sku, 100, 0),)
        # One unit is refused too, even with allow_partial (a backorder line
        # is never held in part, and there is no other line).
        assert_unchanged(
            net,
            before,
            lambda sku=sku: backorder_reserve(
                net, f"one-{sku}", [(sku, 1, "dc1")], [100], channel="callcenter", allow_partial=True
            ),
            OutOfStock,
            "OUT_OF_STOCK",
        )
        assert net.channel_usage(sku, "dc1") == {}
    # Where the channel has no rule, it backorders as before.
    assert backorder_reserve(net, "dc2", [("new", 4, "dc2")], [4], channel="callcenter") == HELD
    assert net.stock("new", "dc2").atp == -4
    assert net.audit(0.0) == []


@pytest.mark.parametrize("rule", RULES_AT_A_NODE, ids=RULE_IDS)
def test_a_ruled_channel_holds_a_backorder_line_within_its_allowance_from_the_shelf(net, rule):
    """A backorder line the allowance covers is an ordinary hold (never below
    zero); beyond it, the supply does not help, however much is expected."""
    net.define_channel("callcenter", ("dc1",), [rule])
    receive(net, "sku", {"dc1": 10})
    w = channel_atp(net, "sku", "callcenter")
    assert 0 < w <= 10
    before = snapshot(net)
    error = assert_unchanged(
        net,
        before,
        lambda: backorder_reserve(net, "over", [("sku", w + 1, "dc1")], [1000], channel="callcenter"),
        OutOfStock,
        "OUT_OF_STOCK",
    )
    assert error.shortfalls == (Shortfall(0, "sku", w + 1, w),)
    assert backorder_reserve(net, "within", [("sku", w, "dc1")], [1000], channel="callcenter") == HELD
    assert net.stock("sku", "dc1").atp == 10 - w >= 0
    assert net.channel_usage("sku", "dc1") == {"callcenter": w}
    assert net.audit(0.0) == []


def test_a_cap_the_shelf_would_exceed_refuses_the_backorder(net):
    """A cap of 2 keeps one of the 3 units on the shelf from the channel."""
    net.define_channel("app", ("dc1",), [(int(RuleKind.CAP), 2)])
    receive(net, "sku", {"dc1": 3})
    with pytest.raises(OutOfStock) as info:
        backorder_reserve(net, "r", [("sku", 5, "dc1")], [10], channel="app")
    assert info.value.shortfalls == (Shortfall(0, "sku", 5, 2),)
    assert net.channel_usage("sku", "dc1") == {}


def test_rows_follow_their_node_default_safety_stock_until_given_their_own(net):
    net.define_node("dc1", 4)
    receive(net, "sku", {"dc1": 10})
    receive(net, "own", {"dc1": 10})
    net.set_safety_stock("own", "dc1", 0, None, 0.0)  # an explicit 0 overrides the default
    assert net.stock("sku", "dc1").safety_stock == 4
    assert net.stock("own", "dc1").safety_stock == 0
    with pytest.raises(OutOfStock):
        net.reserve("inside", "web", [("sku", 7, "dc1")], 60.0, False, 0.0)
    net.reserve("cart", "web", [("sku", 6, "dc1")], 60.0, False, 0.0)
    net.define_node("dc1", 8)  # applies at once; ATP goes negative, no shortage
    assert net.stock("sku", "dc1").atp == -4
    assert net.stock("own", "dc1").safety_stock == 0
    assert net.shortages() == [] and net.audit(0.0) == []
    [change] = net.apply_supply([SupplyOp(SupplyKind.SAFETY_DEFAULT, "own", "dc1", 0, 0, None)], 0.0)
    assert change.applied and change.level.safety_stock == 8
    assert not net.has_own_safety_stock("own", "dc1")
    # A missing row is not created by following the default.
    net.apply_supply([SupplyOp(SupplyKind.SAFETY_DEFAULT, "none", "dc1", 0, 0, None)], 0.0)
    assert net.stock("none", "dc1").on_hand == 0 and net.row_count() == 2


def test_node_defaults_and_own_values_survive_an_image(net):
    net.define_node("dc1", 3)
    receive(net, "sku", {"dc1": 10})
    receive(net, "own", {"dc1": 10})
    net.set_safety_stock("own", "dc1", 1, None, 0.0)
    image = net.export_state()
    fresh = type(net)()
    fresh.load_state(image)
    assert fresh.node_safety_stock("dc1") == 3
    fresh.define_node("dc1", 5)
    assert fresh.stock("sku", "dc1").safety_stock == 5
    assert fresh.stock("own", "dc1").safety_stock == 1


def test_a_node_default_out_of_range_is_refused(net):
    with pytest.raises(InvalidArgument):
        net.define_node("dc1", -1)
    assert net.node_safety_stock("dc1") == 0
