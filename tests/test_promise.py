"""Promise dates and sourcing, with a pinned clock, over both sourcing loops.

The test network sits on the equator near longitude 0, where a degree of
longitude is about 111 km, so distances are easy to read:

    destination (0, 0)
    store-a  (0, 0.2)   ~22 km    store, pickup + ship-from-store
    store-b  (0, 0.3)   ~33 km    store
    dc-near  (0, 0.5)   ~56 km    DC
    dc-far   (0, 5.0)   ~556 km   DC

Standard shipping: 1 day up to 100 km, 2 days up to 1000 km (Monday to
Friday deliveries); express: 1 day anywhere, Saturdays too. Transfers to a
store (truck): 1 day up to 500 km. 2024-06-10 is a Monday.
"""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from engine.core.carriers import loads_carriers
from engine.core.errors import InvalidArgument, UnknownNode
from engine.core.future_supply import FutureSupply, InboundKind, InboundSupply
from engine.core.network import Destination, Network
from engine.core.promising import Promiser, QuoteLine, QuoteRequest, SupplySource, validate_quote
from engine.core.types import Capability, FulfillmentMethod, LineRequest, Node, NodeType

SHIP = FulfillmentMethod.SHIP
PICKUP = FulfillmentMethod.PICKUP

CARRIERS = loads_carriers(
    """
regions:
  zone: []
transfer_service: truck
service_levels:
  - name: standard
    distance_bands: [{max_km: 100, days: 1}, {max_km: 1000, days: 2}]
    default_days: 4
  - name: express
    delivery_days: [Mon, Tue, Wed, Thu, Fri, Sat]
    default_days: 1
  - name: truck
    internal: true
    distance_bands: [{max_km: 500, days: 1}]
    default_days: 3
"""
)

HOME = Destination(latitude=0.0, longitude=0.0)


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo("UTC")).timestamp()


def day(text: str) -> date:
    return date.fromisoformat(text)


def nodes(**overrides: dict) -> list[Node]:
    base = {
        "store-a": dict(type=NodeType.STORE, longitude=0.2),
        "store-b": dict(type=NodeType.STORE, longitude=0.3),
        "dc-near": dict(type=NodeType.DC, longitude=0.5),
        "dc-far": dict(type=NodeType.DC, longitude=5.0),
    }
    for node_id, fields in overrides.items():
        base.setdefault(node_id, {}).update(fields)
    return [Node(node_id, **fields) for node_id, fields in base.items()]  # type: ignore[arg-type]


@pytest.fixture(params=["pure", "fast"])
def impl(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def promiser(impl: str, now: float, network_nodes: list[Node] | None = None) -> Promiser:
    return Promiser(Network(network_nodes or nodes(), CARRIERS), clock=lambda: now, impl=impl)


def eligible(p: Promiser) -> tuple[str, ...]:
    return p.network.node_ids


def ship(p: Promiser, lines, atp, **kw):
    request = QuoteRequest(
        lines=tuple(QuoteLine(s, q) for s, q in lines),
        destination=kw.pop("destination", HOME),
        service_levels=kw.pop("levels", ("standard",)),
        **kw,
    )
    validate_quote(request, p.network)
    return p.quote(request, eligible=kw.get("eligible", eligible(p)), atp=atp)


# ------------------------------------------------------------------ ship dates


def test_the_earliest_delivery_wins(impl):
    p = promiser(impl, utc("2024-06-10 10:00"))
    q = ship(p, [("A", 2)], {"A": {"dc-far": 50, "dc-near": 5}})
    (opt,) = q.lines[0].options
    assert opt.method == SHIP and opt.service_level == "standard"
    assert opt.promise_date == day("2024-06-11")
    assert [(a.node, a.quantity, a.ship_date) for a in opt.allocations] == [("dc-near", 2, day("2024-06-10"))]
    assert not opt.split
    assert opt.allocations[0].distance_km == pytest.approx(55.6, abs=0.1)


def test_after_cutoff_ships_the_next_working_day(impl):
    p = promiser(impl, utc("2024-06-10 15:00"))  # cutoff 14:00 local (UTC)
    opt = ship(p, [("A", 1)], {"A": {"dc-near": 5}}).lines[0].options[0]
    assert opt.allocations[0].ship_date == day("2024-06-11")
    assert opt.promise_date == day("2024-06-12")


def test_friday_after_cutoff_delivers_on_tuesday(impl):
    p = promiser(impl, utc("2024-06-14 15:00"))
    opt = ship(p, [("A", 1)], {"A": {"dc-near": 5}}).lines[0].options[0]
    assert opt.allocations[0].ship_date == day("2024-06-17")
    assert opt.promise_date == day("2024-06-18")


def test_carriers_deliver_only_on_their_days(impl):
    p = promiser(impl, utc("2024-06-14 10:00"), nodes(**{"dc-near": {"open_weekdays": (1, 2, 3, 4, 5, 6)}}))
    q = ship(p, [("A", 1)], {"A": {"dc-near": 5}}, levels=("standard", "express"))
    standard, express = q.lines[0].options
    assert standard.promise_date == day("2024-06-17")  # Friday + 1 delivery day = Monday
    assert express.promise_date == day("2024-06-15")  # express delivers on Saturday


def test_a_holiday_at_the_near_dc_sends_the_order_from_the_far_one(impl):
    p = promiser(
        impl, utc("2024-06-10 10:00"), nodes(**{"dc-near": {"holidays": ("2024-06-10", "2024-06-11")}})
    )
    opt = ship(p, [("A", 1)], {"A": {"dc-near": 5, "dc-far": 5}}).lines[0].options[0]
    # dc-near ships Wednesday (arrives Thursday); dc-far ships today (arrives Wednesday).
    assert [a.node for a in opt.allocations] == ["dc-far"]
    assert opt.promise_date == day("2024-06-12")


def test_processing_days_delay_the_ship_date(impl):
    p = promiser(impl, utc("2024-06-10 10:00"), nodes(**{"dc-near": {"processing_days": 2}}))
    opt = ship(p, [("A", 1)], {"A": {"dc-near": 5}}).lines[0].options[0]
    assert opt.allocations[0].ship_date == day("2024-06-12")
    assert opt.promise_date == day("2024-06-13")


def test_a_node_at_capacity_today_ships_tomorrow(impl):
    p = promiser(impl, utc("2024-06-10 10:00"))
    request = QuoteRequest(lines=(QuoteLine("A", 1),), destination=HOME, service_levels=("standard",))
    q = p.quote(request, eligible=eligible(p), atp={"A": {"dc-near": 5}}, full={"dc-near"})
    opt = q.lines[0].options[0]
    assert opt.allocations[0].ship_date == day("2024-06-11")
    assert opt.promise_date == day("2024-06-12")


def test_auckland_node_is_already_past_its_cutoff(impl):
    # 03:00 UTC Monday is 15:00 Monday in Auckland (NZST): after its 14:00 cutoff.
    akl = {"akl": {"type": NodeType.DC, "time_zone": "Pacific/Auckland", "longitude": 0.5}}
    p = promiser(impl, utc("2024-06-10 03:00"), nodes(**akl))
    opt = ship(p, [("A", 1)], {"A": {"akl": 5}}).lines[0].options[0]
    assert opt.allocations[0].ship_date == day("2024-06-11")
    assert opt.promise_date == day("2024-06-12")


def test_los_angeles_node_is_still_before_its_cutoff(impl):
    # 20:00 UTC Monday is 13:00 in Los Angeles (PDT).
    lax = {"lax": {"type": NodeType.DC, "time_zone": "America/Los_Angeles", "longitude": 0.5}}
    p = promiser(impl, utc("2024-06-10 20:00"), nodes(**lax))
    opt = ship(p, [("A", 1)], {"A": {"lax": 5, "dc-near": 5}}).lines[0].options[0]
    # The UTC DC is past its cutoff (ships Tuesday); Los Angeles still ships Monday.
    assert [(a.node, a.ship_date) for a in opt.allocations] == [("lax", day("2024-06-10"))]
    assert opt.promise_date == day("2024-06-11")


@pytest.mark.parametrize(
    ("now", "ships"),
    [
        ("2024-03-10 20:30", "2024-03-10"),  # 13:30 PDT: before the cutoff
        ("2024-03-10 21:30", "2024-03-11"),  # 14:30 PDT (13:30 in last week's PST): after it
    ],
)
def test_the_cutoff_moves_with_the_clocks_on_a_dst_change_day(impl, now, ships):
    lax = {
        "lax": {
            "type": NodeType.DC,
            "time_zone": "America/Los_Angeles",
            "longitude": 0.5,
            "open_weekdays": (1, 2, 3, 4, 5, 6, 7),
        }
    }
    p = promiser(impl, utc(now), nodes(**lax))
    opt = ship(p, [("A", 1)], {"A": {"lax": 5}}, levels=("express",)).lines[0].options[0]
    assert opt.allocations[0].ship_date == day(ships)


def test_the_cached_ship_window_follows_the_clock(impl):
    """One promiser across the cutoff: the cached answer must not outlive its window."""
    now = [utc("2024-06-10 13:59")]
    p = Promiser(Network(nodes(), CARRIERS), clock=lambda: now[0], impl=impl)
    assert ship(p, [("A", 1)], {"A": {"dc-near": 5}}).lines[0].options[0].promise_date == day("2024-06-11")
    now[0] = utc("2024-06-10 14:00")
    assert ship(p, [("A", 1)], {"A": {"dc-near": 5}}).lines[0].options[0].promise_date == day("2024-06-12")
    now[0] = utc("2024-06-10 09:00")  # a clock that went back is answered correctly too
    assert ship(p, [("A", 1)], {"A": {"dc-near": 5}}).lines[0].options[0].promise_date == day("2024-06-11")


# ------------------------------------------------------------- split and ties


def test_no_split_allowed_waits_for_a_node_that_has_everything(impl):
    p = promiser(impl, utc("2024-06-10 10:00"))
    atp = {"A": {"dc-near": 6, "store-a": 6, "dc-far": 10}}
    opt = ship(p, [("A", 10)], atp).lines[0].options[0]
    assert [(a.node, a.quantity) for a in opt.allocations] == [("dc-far", 10)]
    assert opt.promise_date == day("2024-06-12") and not opt.split


def test_a_split_is_chosen_when_it_delivers_earlier(impl):
    p = promiser(impl, utc("2024-06-10 10:00"))
    atp = {"A": {"dc-near": 6, "store-a": 6, "dc-far": 10}}
    opt = ship(p, [("A", 10)], atp, allow_split=True).lines[0].options[0]
    # Equal stock: the nearer node gives the larger part first.
    assert [(a.node, a.quantity) for a in opt.allocations] == [("store-a", 6), ("dc-near", 4)]
    assert opt.promise_date == day("2024-06-11") and opt.split and opt.shipments == 2


def test_a_split_takes_the_largest_stock_first_for_fewer_parcels(impl):
    p = promiser(impl, utc("2024-06-10 10:00"))
    atp = {"A": {"store-a": 3, "store-b": 4, "dc-near": 8}}
    opt = ship(p, [("A", 12)], atp, allow_split=True).lines[0].options[0]
    assert [(a.node, a.quantity) for a in opt.allocations] == [("dc-near", 8), ("store-b", 4)]


def test_one_node_beats_a_split_with_the_same_date(impl):
    p = promiser(impl, utc("2024-06-10 10:00"))
    atp = {"A": {"store-a": 6, "dc-near": 10}}
    opt = ship(p, [("A", 10)], atp, allow_split=True).lines[0].options[0]
    assert [(a.node, a.quantity) for a in opt.allocations] == [("dc-near", 10)]
    assert not opt.split


def test_split_not_enough_anywhere_gives_no_option(impl):
    p = promiser(impl, utc("2024-06-10 10:00"))
    q = ship(p, [("A", 30)], {"A": {"store-a": 6, "dc-near": 10}}, allow_split=True)
    assert q.lines[0].options == ()


def test_same_date_prefers_fewer_shipments_over_distance(impl):
    p = promiser(impl, utc("2024-06-10 10:00"))
    # X is nearer at store-b, but Y is only at dc-near: one parcel from dc-near.
    atp = {"X": {"store-b": 5, "dc-near": 5}, "Y": {"dc-near": 5}}
    q = ship(p, [("X", 1), ("Y", 1)], atp)
    assert [line.options[0].allocations[0].node for line in q.lines] == ["dc-near", "dc-near"]
    assert q.shipments(SHIP, "standard") == 1


def test_same_date_and_shipments_prefers_the_nearer_node(impl):
    p = promiser(impl, utc("2024-06-10 10:00"))
    opt = ship(p, [("X", 1)], {"X": {"dc-near": 5, "store-b": 5}}).lines[0].options[0]
    assert opt.allocations[0].node == "store-b"


def test_a_full_tie_goes_to_the_channel_priority_order(impl):
    twins = {
        "twin-1": {"type": NodeType.DC, "longitude": 0.5},
        "twin-2": {"type": NodeType.DC, "longitude": 0.5},
    }
    p = promiser(impl, utc("2024-06-10 10:00"), nodes(**twins))
    atp = {"X": {"twin-1": 5, "twin-2": 5}}
    for order, expected in ((("twin-1", "twin-2"), "twin-1"), (("twin-2", "twin-1"), "twin-2")):
        request = QuoteRequest(lines=(QuoteLine("X", 1),), destination=HOME, service_levels=("standard",))
        q = p.quote(request, eligible=order, atp=atp)
        assert q.lines[0].options[0].allocations[0].node == expected


def test_lines_of_the_same_sku_share_a_nodes_stock(impl):
    p = promiser(impl, utc("2024-06-10 10:00"))
    q = ship(p, [("A", 3), ("A", 3)], {"A": {"dc-near": 4, "dc-far": 10}})
    assert [line.options[0].allocations[0].node for line in q.lines] == ["dc-near", "dc-far"]


def test_only_eligible_and_capable_nodes_source(impl):
    p = promiser(
        impl,
        utc("2024-06-10 10:00"),
        nodes(**{"store-a": {"capabilities": Capability.PICKUP}}),  # a store that does not ship
    )
    atp = {"A": {"store-a": 5, "store-b": 5, "dc-far": 5, "ghost": 5}}
    request = QuoteRequest(lines=(QuoteLine("A", 1),), destination=HOME, service_levels=("standard",))
    q = p.quote(request, eligible=("store-a", "dc-far", "store-b"), atp=atp)
    assert q.lines[0].options[0].allocations[0].node == "store-b"
    q = p.quote(request, eligible=("store-a", "dc-far"), atp=atp)
    assert q.lines[0].options[0].allocations[0].node == "dc-far"
    no_sfs = QuoteRequest(
        lines=(QuoteLine("A", 1),),
        destination=HOME,
        service_levels=("standard",),
        allow_ship_from_store=False,
    )
    q = p.quote(no_sfs, eligible=eligible(p), atp=atp)
    assert q.lines[0].options[0].allocations[0].node == "dc-far"


def test_a_postal_code_destination_without_coordinates_uses_defaults(impl):
    p = promiser(impl, utc("2024-06-10 10:00"))
    opt = (
        ship(p, [("A", 1)], {"A": {"dc-far": 5}}, destination=Destination(postal_code="ZZ1"))
        .lines[0]
        .options[0]
    )
    # No distance: no band applies, the default 4 days do; the distance is unknown.
    assert opt.promise_date == day("2024-06-14")
    assert opt.allocations[0].distance_km is None


def test_every_customer_service_level_by_default(impl):
    p = promiser(impl, utc("2024-06-10 10:00"))
    q = ship(p, [("A", 1)], {"A": {"dc-far": 5}}, levels=())
    assert [o.service_level for o in q.lines[0].options] == ["standard", "express"]  # not the truck


# -------------------------------------------------------------- future supply


def po(supply_id: str, sku: str, node: str, quantity: int, eta: str) -> InboundSupply:
    return InboundSupply(supply_id, sku, node, quantity, utc(eta))


def test_a_line_only_available_from_future_supply(impl):
    p = promiser(impl, utc("2024-06-10 10:00"))
    future = FutureSupply([po("po-1", "NEW", "dc-far", 50, "2024-06-13 08:00")])
    request = QuoteRequest(lines=(QuoteLine("NEW", 3),), destination=HOME, service_levels=("standard",))
    assert p.quote(request, eligible=eligible(p), atp={}, future=future).lines[0].options == ()
    request = QuoteRequest(
        lines=(QuoteLine("NEW", 3),), destination=HOME, service_levels=("standard",), allow_backorder=True
    )
    (opt,) = p.quote(request, eligible=eligible(p), atp={}, future=future).lines[0].options
    assert opt.backorder
    (units,) = opt.allocations
    assert (units.node, units.quantity, units.source) == ("dc-far", 3, SupplySource.INBOUND)
    assert units.supply_ids == ("po-1",)
    assert units.available_at == datetime(2024, 6, 13, 8, 0, tzinfo=ZoneInfo("UTC"))
    # Arrives Thursday morning, ships Thursday, two delivery days: Monday.
    assert units.ship_date == day("2024-06-13")
    assert opt.promise_date == day("2024-06-17")
    assert opt.line_requests("NEW") == ()  # nothing on a shelf to hold yet


def test_backorder_counts_stock_on_hand_and_earlier_promises(impl):
    p = promiser(impl, utc("2024-06-10 10:00"))
    future = FutureSupply(
        [
            po("po-1", "A", "dc-near", 2, "2024-06-12 08:00"),
            po("po-2", "A", "dc-near", 10, "2024-06-19 08:00"),
        ]
    )
    request = QuoteRequest(
        lines=(QuoteLine("A", 4),), destination=HOME, service_levels=("standard",), allow_backorder=True
    )
    # 1 on the shelf + 2 on Wednesday = 3 < 4: wait for the second PO.
    q = p.quote(request, eligible=eligible(p), atp={"A": {"dc-near": 1}}, future=future)
    assert q.lines[0].options[0].allocations[0].supply_ids == ("po-1", "po-2")
    # 2 on the shelf + 2 on Wednesday = 4: the first PO is enough.
    q = p.quote(request, eligible=eligible(p), atp={"A": {"dc-near": 2}}, future=future)
    assert q.lines[0].options[0].promise_date == day("2024-06-13")
    # ... unless 1 unit was already promised against that supply.
    q = p.quote(
        request,
        eligible=eligible(p),
        atp={"A": {"dc-near": 2}},
        future=future,
        promised={("A", "dc-near"): 1},
    )
    assert q.lines[0].options[0].promise_date == day("2024-06-20")


def test_stock_beats_backorder_for_the_same_line(impl):
    p = promiser(impl, utc("2024-06-10 10:00"))
    future = FutureSupply([po("po-1", "A", "dc-near", 50, "2024-06-11 08:00")])
    request = QuoteRequest(
        lines=(QuoteLine("A", 2),), destination=HOME, service_levels=("standard",), allow_backorder=True
    )
    opt = p.quote(request, eligible=eligible(p), atp={"A": {"dc-far": 5}}, future=future).lines[0].options[0]
    assert not opt.backorder and opt.allocations[0].source == SupplySource.STOCK


# --------------------------------------------------------------------- pickup


def pickup(p: Promiser, store: str, lines, atp, future: FutureSupply | None = None, **kw):
    request = QuoteRequest(
        lines=tuple(QuoteLine(s, q) for s, q in lines), methods=(PICKUP,), pickup_store=store, **kw
    )
    validate_quote(request, p.network)
    return p.quote(request, eligible=eligible(p), atp=atp, future=future)


def test_pickup_from_the_stores_own_stock(impl):
    p = promiser(impl, utc("2024-06-10 10:00"))
    opt = pickup(p, "store-a", [("A", 2)], {"A": {"store-a": 2, "dc-near": 10}}).lines[0].options[0]
    assert opt.method == PICKUP and opt.service_level is None
    assert opt.ready_at == datetime(2024, 6, 10, 12, 0, tzinfo=ZoneInfo("UTC"))  # now + 120 minutes
    assert [(a.node, a.source) for a in opt.allocations] == [("store-a", SupplySource.STOCK)]
    assert opt.line_requests("A") == (LineRequest("A", 2, "store-a"),)


def test_pickup_at_a_closed_store_is_ready_when_it_opens(impl):
    p = promiser(impl, utc("2024-06-10 10:00"), nodes(**{"store-a": {"open_weekdays": (2, 3, 4, 5, 6)}}))
    opt = pickup(p, "store-a", [("A", 1)], {"A": {"store-a": 2}}).lines[0].options[0]
    assert opt.ready_at == datetime(2024, 6, 11, 11, 0, tzinfo=ZoneInfo("UTC"))  # Tuesday 09:00 + 2 h
    assert opt.promise_date == day("2024-06-11")


def test_pickup_in_a_far_time_zone_reports_local_time(impl):
    akl = nodes(**{"store-a": {"time_zone": "Pacific/Auckland"}})
    # 01:00 UTC Monday is 13:00 in Auckland (NZST): before the cutoff, ready at 15:00.
    opt = pickup(promiser(impl, utc("2024-06-10 01:00"), akl), "store-a", [("A", 1)], {"A": {"store-a": 2}})
    ready = opt.lines[0].options[0].ready_at
    assert ready == datetime(2024, 6, 10, 15, 0, tzinfo=ZoneInfo("Pacific/Auckland"))
    assert ready.utcoffset().total_seconds() == 12 * 3600
    # 03:00 UTC is 15:00 there: past the cutoff, ready Tuesday 11:00 local.
    opt = pickup(promiser(impl, utc("2024-06-10 03:00"), akl), "store-a", [("A", 1)], {"A": {"store-a": 2}})
    assert opt.lines[0].options[0].ready_at == datetime(
        2024, 6, 11, 11, 0, tzinfo=ZoneInfo("Pacific/Auckland")
    )
    assert opt.lines[0].options[0].promise_date == day("2024-06-11")


def test_pickup_by_transfer_when_the_store_has_none(impl):
    p = promiser(impl, utc("2024-06-10 10:00"))
    opt = pickup(p, "store-a", [("A", 2)], {"A": {"dc-near": 10, "dc-far": 10}}).lines[0].options[0]
    # The truck from dc-near (34 km from the store) arrives Tuesday; ready at 11:00.
    assert [(a.node, a.source, a.ship_date) for a in opt.allocations] == [
        ("dc-near", SupplySource.TRANSFER, day("2024-06-10"))
    ]
    assert opt.ready_at == datetime(2024, 6, 11, 11, 0, tzinfo=ZoneInfo("UTC"))
    assert opt.line_requests("A") == (LineRequest("A", 2, "dc-near"),)


def test_pickup_partly_from_the_shelf_when_splitting_is_allowed(impl):
    p = promiser(impl, utc("2024-06-10 10:00"))
    atp = {"A": {"store-a": 1, "dc-near": 10}}
    opt = pickup(p, "store-a", [("A", 3)], atp, allow_split=True).lines[0].options[0]
    assert [(a.node, a.quantity, a.source) for a in opt.allocations] == [
        ("store-a", 1, SupplySource.STOCK),
        ("dc-near", 2, SupplySource.TRANSFER),
    ]
    assert opt.split
    opt = pickup(p, "store-a", [("A", 3)], atp).lines[0].options[0]
    assert [(a.node, a.quantity) for a in opt.allocations] == [("dc-near", 3)]


def test_pickup_without_transfers_or_stock_can_wait_for_inbound_at_the_store(impl):
    p = promiser(impl, utc("2024-06-10 10:00"))
    future = FutureSupply(
        [InboundSupply("t-9", "A", "store-a", 5, utc("2024-06-12 07:00"), InboundKind.TRANSFER)]
    )
    q = pickup(p, "store-a", [("A", 2)], {"A": {"dc-near": 10}}, allow_transfer=False)
    assert q.lines[0].options == ()
    q = pickup(p, "store-a", [("A", 2)], {"A": {}}, allow_transfer=False, allow_backorder=True, future=future)
    opt = q.lines[0].options[0]
    assert opt.backorder and opt.allocations[0].supply_ids == ("t-9",)
    assert opt.ready_at == datetime(2024, 6, 12, 11, 0, tzinfo=ZoneInfo("UTC"))


def test_ship_and_pickup_options_together_in_request_order(impl):
    p = promiser(impl, utc("2024-06-10 10:00"))
    request = QuoteRequest(
        lines=(QuoteLine("A", 1),),
        destination=HOME,
        pickup_store="store-b",
        methods=(PICKUP, SHIP),
        service_levels=("express",),
    )
    q = p.quote(request, eligible=eligible(p), atp={"A": {"store-b": 1, "dc-near": 1}})
    assert [(o.method, o.service_level) for o in q.lines[0].options] == [(PICKUP, None), (SHIP, "express")]
    assert q.lines[0].option(SHIP).allocations[0].node in ("store-b", "dc-near")


# -------------------------------------------------------------- endless aisle


def test_endless_aisle_lists_the_nearest_stores_with_stock(impl):
    extra = {
        "store-c": {"type": NodeType.STORE, "longitude": 0.25},
        "store-d": {"type": NodeType.STORE, "longitude": 1.0, "open_weekdays": (2, 3, 4, 5)},
    }
    p = promiser(impl, utc("2024-06-10 10:00"), nodes(**extra))
    atp = {"A": {"store-a": 1, "store-b": 1, "store-c": 0, "store-d": 4, "dc-near": 100}}
    aisle = p.endless_aisle("A", "store-a", eligible=eligible(p), atp=atp, quantity=1, limit=5)
    assert aisle.here.node == "store-a" and aisle.here.atp == 1
    assert aisle.here.ready_at == datetime(2024, 6, 10, 12, 0, tzinfo=ZoneInfo("UTC"))
    # store-c has none, the DC is not a store; nearest first.
    assert [s.node for s in aisle.nearby] == ["store-b", "store-d"]
    assert aisle.nearby[0].distance_km == pytest.approx(11.1, abs=0.1)
    assert aisle.nearby[1].ready_at == datetime(2024, 6, 11, 11, 0, tzinfo=ZoneInfo("UTC"))  # closed Mondays
    two = p.endless_aisle("A", "store-a", eligible=eligible(p), atp=atp, quantity=2, limit=1)
    assert [s.node for s in two.nearby] == ["store-d"]
    assert two.here.ready_at is None  # the store itself has only one


# ----------------------------------------------------------------- validation


def test_quote_requests_are_validated_with_every_problem_listed():
    net = Network(nodes(), CARRIERS)
    bad = QuoteRequest(
        lines=(QuoteLine("A{", 0),),
        methods=(SHIP, PICKUP, SHIP),
        destination=Destination(latitude=91.0, longitude=0.0),
        service_levels=("truck", "rocket"),
        pickup_store="dc-near",
    )
    with pytest.raises(InvalidArgument) as info:
        validate_quote(bad, net)
    assert [v.field for v in info.value.violations] == [
        "lines[0].sku",
        "lines[0].quantity",
        "methods[2]",
        "destination.latitude",
        "service_levels[0]",
        "service_levels[1]",
        "pickup_store",
    ]
    with pytest.raises(InvalidArgument) as info:
        validate_quote(QuoteRequest(lines=(QuoteLine("A", 1),)), net)
    assert info.value.violations[0].field == "destination"
    with pytest.raises(UnknownNode):
        validate_quote(QuoteRequest(lines=(QuoteLine("A", 1),), methods=(PICKUP,), pickup_store="nope"), net)


def test_nodes_at_their_daily_capacity_are_the_full_ones():
    network = Network(
        nodes(**{"dc-near": {"daily_capacity": 100}, "store-a": {"daily_capacity": 5}}), CARRIERS
    )
    assert network.at_capacity({"dc-near": 100, "store-a": 4, "dc-far": 10**6, "ghost": 1}) == {"dc-near"}
