"""The Cython sourcing loop against its pure twin: identical plans on random inputs.

Random networks (coordinates on a coarse grid so that distance ties happen,
regions known and unknown, calendars in far-apart time zones, capabilities),
random carrier tables, random orders with repeated SKUs, random ATP (with
zero, negative and unknown nodes), random channel orders and clocks. Each
example runs several orders through the same two sourcers, so the cached
ship windows are exercised as the clock moves (and goes back).
"""

from __future__ import annotations

import importlib.machinery
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine._fast import sourcing as fast_module
from engine._fast.sourcing import FastSourcer
from engine.core.carriers import CarrierTable, DistanceBand, ServiceLevel
from engine.core.future_supply import FutureSupply, InboundSupply
from engine.core.network import Destination, Network, ResolvedDestination
from engine.core.promising import Promiser, QuoteLine, QuoteRequest
from engine.core.sourcing import PureSourcer, make_sourcer
from engine.core.types import Capability, FulfillmentMethod, Node, NodeType

ZONES = ["UTC", "Pacific/Auckland", "America/Los_Angeles", "Europe/Berlin", "Asia/Kolkata", "Pacific/Chatham"]
REGIONS = ["r0", "r1", "r2"]
SKUS = ["A", "B", "C", "D"]
T0 = 1_709_000_000.0  # late February 2024: the window covers both DST changes of the year


@st.composite
def service_levels(draw: st.DrawFn, name: str) -> ServiceLevel:
    pairs = draw(
        st.dictionaries(
            st.tuples(st.sampled_from([*REGIONS, "*"]), st.sampled_from([*REGIONS, "*"])),
            st.integers(0, 6),
            max_size=6,
        )
    )
    limits = sorted(draw(st.sets(st.sampled_from([50.0, 200.0, 800.0, 3000.0]), max_size=3)))
    bands = tuple(DistanceBand(km, draw(st.integers(0, 5))) for km in limits)
    default = draw(st.none() | st.integers(0, 7))
    if not pairs and not bands and default is None:
        default = 3
    weekdays = tuple(sorted(draw(st.sets(st.integers(1, 7), min_size=1))))
    return ServiceLevel(
        name=name,
        transit=tuple((o, d, days) for (o, d), days in pairs.items()),
        distance_bands=bands,
        default_days=default,
        delivery_weekdays=weekdays,
    )


@st.composite
def networks(draw: st.DrawFn) -> Network:
    n = draw(st.integers(1, 30))
    nodes = []
    for k in range(n):
        nodes.append(
            Node(
                f"n{k}",
                type=draw(st.sampled_from(list(NodeType))),
                region=draw(st.sampled_from([*REGIONS, "", "elsewhere"])),
                # A coarse grid: equal distances (ties) are common.
                latitude=draw(st.integers(-6, 6)) * 10.0,
                longitude=draw(st.integers(-17, 17)) * 10.0,
                time_zone=draw(st.sampled_from(ZONES)),
                capabilities=draw(st.none() | st.integers(0, 7).map(Capability)),
                processing_days=draw(st.integers(0, 2)),
                cutoff=draw(st.sampled_from(["00:00", "09:30", "14:00", "23:59"])),
                open_weekdays=tuple(sorted(draw(st.sets(st.integers(1, 7), min_size=1)))),
                holidays=tuple(draw(st.sets(st.sampled_from(["2024-03-01", "2024-03-04", "2024-03-31"])))),
            )
        )
    levels = (draw(service_levels("standard")), draw(service_levels("express")))
    carriers = CarrierTable(service_levels=levels, regions=tuple(REGIONS), transfer_service="standard")
    return Network(nodes, carriers)


@st.composite
def orders(draw: st.DrawFn, network: Network) -> tuple:
    ids = [*network.node_ids, "ghost"]
    atp = {
        sku: draw(
            st.dictionaries(
                st.sampled_from(ids), st.integers(-3, 12), min_size=len(ids) // 2, max_size=len(ids)
            )
        )
        for sku in SKUS
    }
    lines = [
        (sku, draw(st.integers(1, 8) | st.integers(1, 40)), atp[sku])
        for sku in draw(st.lists(st.sampled_from(SKUS), min_size=1, max_size=8))
    ]
    # Mostly the whole network in a random priority order, sometimes a part of it.
    eligible = tuple(draw(st.permutations(ids)))
    if draw(st.integers(0, 3)) == 0:
        eligible = eligible[: draw(st.integers(0, len(ids)))]
    if draw(st.booleans()):
        lat, lon = (
            math.radians(draw(st.integers(-6, 6)) * 10.0),
            math.radians(draw(st.integers(-17, 17)) * 10.0),
        )
        destination = ResolvedDestination(
            lat, lon, math.cos(lat), True, draw(st.integers(0, network.n_regions - 1))
        )
    else:
        nan = math.nan
        destination = ResolvedDestination(nan, nan, nan, False, draw(st.integers(0, network.n_regions - 1)))
    now = T0 + draw(st.integers(0, 60 * 86400 // 900)) * 900.0 + draw(st.sampled_from([0.0, 0.5, 899.999]))
    return (
        now,
        draw(st.integers(0, len(network.services) - 1)),
        destination,
        eligible,
        lines,
        draw(st.booleans()),
        draw(st.sampled_from([7, 7, 7, 5, 1, 4, 2])),
        frozenset(draw(st.sets(st.sampled_from(ids), max_size=3))),
    )


def check_plan(network: Network, args: tuple, plans: list) -> None:
    """What any plan must satisfy, whichever loop made it."""
    _now, _service, _dest, eligible, lines, allow_split, caps, _full = args
    used: dict[tuple[str, str], int] = {}
    for (sku, qty, atp), plan in zip(lines, plans, strict=True):
        if plan is None:
            continue
        day, allocations = plan
        assert sum(a[1] for a in allocations) == qty
        assert day == max(a[3] for a in allocations)
        assert allow_split or len(allocations) == 1
        for node, q, ship, promise, _km in allocations:
            assert q > 0 and promise >= ship
            assert node in eligible and network.caps[network.index[node]] & caps
            used[(sku, node)] = used.get((sku, node), 0) + q
            assert used[(sku, node)] <= atp[node]


@settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(data=st.data())
def test_pure_and_fast_sourcing_make_identical_plans(data):
    network = data.draw(networks())
    pure, fast = PureSourcer(network), FastSourcer(network)
    for _ in range(data.draw(st.integers(1, 4))):
        args = data.draw(orders(network))
        expected = pure.plan(*args)
        assert fast.plan(*args) == expected
        check_plan(network, args, expected)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(data=st.data())
def test_pure_and_fast_promisers_give_identical_quotes(data):
    network = data.draw(networks())
    now = [T0]
    pure = Promiser(network, clock=lambda: now[0], impl="pure")
    fast = Promiser(network, clock=lambda: now[0], impl="fast")
    stores = [n.id for n in network.nodes if network.caps[network.index[n.id]] & Capability.PICKUP]
    for _ in range(data.draw(st.integers(1, 3))):
        now[0] = T0 + data.draw(st.integers(0, 40 * 86400))
        args = data.draw(orders(network))
        future = FutureSupply(
            InboundSupply(f"po-{i}", sku, node, qty, now[0] + hours * 3600.0)
            for i, (sku, node, qty, hours) in enumerate(
                data.draw(
                    st.lists(
                        st.tuples(
                            st.sampled_from(SKUS),
                            st.sampled_from(network.node_ids),
                            st.integers(1, 30),
                            st.integers(-5, 400),
                        ),
                        max_size=6,
                    )
                )
            )
        )
        methods = [FulfillmentMethod.SHIP]
        if stores and data.draw(st.booleans()):
            methods.append(FulfillmentMethod.PICKUP)
        request = QuoteRequest(
            lines=tuple(QuoteLine(sku, qty) for sku, qty, _ in args[4]),
            destination=Destination(
                latitude=data.draw(st.integers(-6, 6)) * 10.0,
                longitude=data.draw(st.integers(-17, 17)) * 10.0,
            ),
            pickup_store=data.draw(st.sampled_from(stores)) if FulfillmentMethod.PICKUP in methods else None,
            methods=tuple(data.draw(st.permutations(methods))),
            allow_split=data.draw(st.booleans()),
            allow_backorder=data.draw(st.booleans()),
            allow_ship_from_store=data.draw(st.booleans()),
            allow_transfer=data.draw(st.booleans()),
        )
        atp = {sku: m for sku, _, m in args[4]}
        kwargs = dict(eligible=args[3], atp=atp, future=future, full=args[7])
        assert fast.quote(request, **kwargs) == pure.quote(request, **kwargs)


def test_the_fast_sourcer_is_a_compiled_extension():
    path = fast_module.__file__
    assert path is not None and path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    network = Network([Node("n0")], CarrierTable(service_levels=(ServiceLevel("s", default_days=1),)))
    assert type(make_sourcer(network, "fast")) is FastSourcer
    assert type(make_sourcer(network, "pure")) is PureSourcer
    assert not hasattr(FastSourcer(network), "__dict__")


def test_distances_cached_for_one_destination_are_not_reused_for_another():
    """The fast loop keeps distances between calls for the same destination
    (one call per service level); a call without coordinates in between must
    not leave its infinite distances behind."""
    nodes = [Node("near", longitude=1.0), Node("far", longitude=3.0)]
    levels = (ServiceLevel("s", default_days=1),)
    network = Network(nodes, CarrierTable(service_levels=levels))
    pure, fast = PureSourcer(network), FastSourcer(network)
    here = ResolvedDestination(0.0, 0.0, 1.0, True, network.unknown_region)
    there = ResolvedDestination(0.0, math.radians(4.0), 1.0, True, network.unknown_region)
    nowhere = ResolvedDestination(math.nan, math.nan, math.nan, False, network.unknown_region)
    lines = [("A", 1, {"near": 5, "far": 5})]
    for destination in (here, here, nowhere, here, there, there, here):
        expected = pure.plan(T0, 0, destination, ("far", "near"), lines, False, 7)
        assert fast.plan(T0, 0, destination, ("far", "near"), lines, False, 7) == expected
    assert expected[0][1][0][0] == "near"
