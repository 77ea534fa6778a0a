"""Promise dates and fulfillment options: what the ``Quote`` RPC answers.

Given an order's lines, where it goes (a destination, or a pickup store), the
fulfillment methods the shopper accepts, the channel's eligible nodes and what
the channel may take of each node's stock, :meth:`Promiser.quote` returns for
every line its options: which node(s), which method and carrier service
level, the promise (earliest delivery date, or ready-for-pickup time) and
whether the line splits into several parcels. Nothing is held: a checkout
reserves the option it picked (see :meth:`LineOption.line_requests`).

- **Ship**, per carrier service level: the sourcing loop
  (:mod:`engine.core.sourcing`) ranks nodes with stock by promise date, then
  number of shipments, then distance, splitting a line only when allowed.
- **Pickup** at the chosen store: from its own stock (ready after the store's
  pick time, or the next working day after its cutoff), else by a transfer
  from other nodes (the carriers' transfer service to the store), ready when
  the transfer is unpacked.
- **Backorder / preorder** (when allowed): a line that stock cannot serve is
  promised against inbound supply at one node, dated from that supply's ETA.

Time comes from the injected clock, dates from each node's calendar (its time
zone, cutoff, working days, holidays): tests pin the clock and get the same
dates on every machine.

ATP is supplied by the caller, per SKU, as ``{node: units the channel may
take}`` (a mapping of such mappings, or a callable): the ledger, the Redis
view, or a test. Allocation rules are applied by whoever builds it (see
:meth:`engine.core.allocation_rules.AllocationPolicy.channel_atp`).

Requests are trusted, like the ledger's: the servicer runs
:func:`validate_quote` at the edge.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import IntEnum
from typing import NamedTuple

from engine.core.errors import FieldViolation, InvalidArgument, UnknownNode
from engine.core.future_supply import FutureSupply, InboundSupply, time_phased_atp
from engine.core.geo import haversine_rad
from engine.core.network import Destination, Network, ResolvedDestination
from engine.core.sourcing import (
    LinePlan,
    PlanLine,
    Sourcer,
    add_delivery_days,
    make_sourcer,
    node_distance,
    transit_days,
)
from engine.core.types import MAX_LINES, MAX_QUANTITY, Capability, FulfillmentMethod, LineRequest, NodeType

__all__ = [
    "AtpSource",
    "EndlessAisle",
    "LineOption",
    "NodePromise",
    "ReserveFulfillment",
    "ReserveRanking",
    "LineQuote",
    "Promiser",
    "Quote",
    "QuoteLine",
    "QuoteRequest",
    "SourcedUnits",
    "StoreStock",
    "SupplySource",
    "validate_find_in_stores",
    "validate_quote",
    "validate_reserve_fulfillment",
]

# ATP by node for one SKU, as the channel may take it.
AtpSource = Mapping[str, Mapping[str, int]] | Callable[[str], Mapping[str, int]]

_SHIP_CAPS = int(Capability.SHIP | Capability.SHIP_FROM_STORE)
_DC_SHIP_CAPS = int(Capability.SHIP)
_EMPTY: Mapping[str, int] = {}
_KEY = re.compile(r"[!-z|~]{1,64}")
MAX_POSTAL_CODE = 16
MAX_REGION = 64
_POSTAL_CODE = re.compile(rf"[A-Za-z0-9 \-]{{0,{MAX_POSTAL_CODE}}}")
# Nearby stores an endless-aisle lookup returns at most: a POS screen shows a
# handful, and each one costs a distance and a calendar computation.
MAX_NEARBY_STORES = 50


class SupplySource(IntEnum):
    STOCK = 1  # on the node's shelf now
    INBOUND = 2  # arriving by purchase order or transfer (backorder, preorder)
    TRANSFER = 3  # moved from this node to the pickup store


@dataclass(frozen=True, slots=True)
class QuoteLine:
    sku: str
    quantity: int


@dataclass(frozen=True, slots=True, kw_only=True)
class QuoteRequest:
    lines: tuple[QuoteLine, ...]
    destination: Destination | None = None  # required for SHIP
    pickup_store: str | None = None  # required for PICKUP
    methods: tuple[FulfillmentMethod, ...] = (FulfillmentMethod.SHIP,)
    service_levels: tuple[str, ...] = ()  # SHIP: these levels, in this order; empty = every customer level
    allow_split: bool = False
    allow_backorder: bool = False
    allow_ship_from_store: bool = True
    allow_transfer: bool = True


# SourcedUnits and LineOption are built per allocation and per option of every
# quote, the promiser's hottest allocations: as NamedTuples they are built by
# tuple.__new__ at a fifth of a frozen dataclass's cost (same immutability).


class SourcedUnits(NamedTuple):
    """Units of one line from one node."""

    node: str
    quantity: int
    source: SupplySource
    promise_date: date  # delivery date (ship) or ready date at the store (pickup)
    ship_date: date | None  # the day they leave the node; None when picked up where they are
    distance_km: float | None  # to the destination, or to the pickup store; None when unknown
    available_at: datetime | None = None  # INBOUND: when the supply arrives
    supply_ids: tuple[str, ...] = ()  # INBOUND: the records counted on


class LineOption(NamedTuple):
    method: FulfillmentMethod
    service_level: str | None  # the carrier level for SHIP; None for PICKUP
    promise_date: date  # the latest of the allocations' dates
    ready_at: datetime | None  # PICKUP: when the order can be collected (store's time zone)
    allocations: tuple[SourcedUnits, ...]
    split: bool  # more than one node ships this line
    backorder: bool = False  # promised against inbound supply

    @property
    def shipments(self) -> int:
        return len({a.node for a in self.allocations})

    def line_requests(self, sku: str) -> tuple[LineRequest, ...]:
        """The ledger lines that hold this option's stock (one per node).

        Units from inbound supply cannot be held by today's ledger (there is
        nothing on the shelf yet); they are left out.
        """
        return tuple(
            LineRequest(sku, a.quantity, a.node) for a in self.allocations if a.source != SupplySource.INBOUND
        )


@dataclass(frozen=True, slots=True)
class LineQuote:
    index: int
    sku: str
    quantity: int
    options: tuple[LineOption, ...]  # by method (request order), then service level; empty: cannot promise

    def option(self, method: FulfillmentMethod, service_level: str | None = None) -> LineOption | None:
        for opt in self.options:
            if opt.method == method and (service_level is None or opt.service_level == service_level):
                return opt
        return None


@dataclass(frozen=True, slots=True)
class Quote:
    quoted_at: datetime
    lines: tuple[LineQuote, ...]

    def shipments(self, method: FulfillmentMethod, service_level: str | None = None) -> int:
        """Parcels (distinct nodes) if every line takes this method and level."""
        nodes: set[str] = set()
        for line in self.lines:
            opt = line.option(method, service_level)
            if opt is not None:
                nodes.update(a.node for a in opt.allocations)
        return len(nodes)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReserveFulfillment:
    """How the shopper gets a reservation's lines (ReserveRequest.fulfillment).

    The fields mean what :class:`QuoteRequest`'s mean, for one method and one
    service level (None: the carriers' first customer level).
    """

    method: FulfillmentMethod
    destination: Destination | None = None
    pickup_store: str | None = None
    service_level: str | None = None
    allow_split: bool = False
    allow_backorder: bool = False

    def key(self) -> str:
        """Canonical text of the context, stored with the reservation and
        compared on a replay: another destination is another request."""
        d = self.destination
        fields: list[object] = [
            int(self.method),
            None if d is None else [d.postal_code, d.latitude, d.longitude, d.region],
            self.pickup_store,
            self.service_level,
            bool(self.allow_split),
        ]
        if self.allow_backorder:
            # Appended only when set: contexts stored before backorders keep their text.
            fields.append(True)
        return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)


class NodePromise(NamedTuple):
    """When units of a reservation allocated at one node reach the shopper."""

    promise_date: date  # delivery date (SHIP), or the pickup store's local date when ready (PICKUP)
    ready_at: datetime | None  # PICKUP: when ready at the pickup store (its time zone)
    source: SupplySource  # STOCK, TRANSFER to the pickup store, or INBOUND (a backorder)
    available_at: datetime | None = None  # INBOUND: when the supply counted on arrives
    supply_ids: tuple[str, ...] = ()  # INBOUND: the inbound records counted on


@dataclass(frozen=True, slots=True)
class ReserveRanking:
    """What promise-driven sourcing of a Reserve decided before the hold.

    ``candidates``: per line, the nodes to take it from in order, or None for
    a line that names its node. ``promises``: the promise of units at each
    node that may be chosen (the candidates and the named nodes), so the
    allocations the store actually made can be dated without asking again.
    """

    method: FulfillmentMethod
    service_level: str | None
    candidates: tuple[tuple[str, ...] | None, ...]
    promises: Mapping[str, NodePromise]
    time_zone: str | None = None  # PICKUP: the pickup store's
    # Backorders (allow_backorder): per line, the inbound units expected at its
    # one candidate node that the hold may count on (0: shelf only), and the
    # promise of each backordered line (at that node, from its supply).
    backorder: tuple[int, ...] | None = None
    backorder_promises: Mapping[int, tuple[str, NodePromise]] = field(default_factory=dict)
    # (SKU, node) rows whose holds already wait for inbound supply: units
    # held there (a replayed backorder) are not dated as shelf stock.
    waiting: frozenset[tuple[str, str]] = frozenset()

    def promise(self, node: str, line: int | None = None, sku: str | None = None) -> NodePromise | None:
        """The promise of units at ``node``; for a backordered line held
        there, the promise of its inbound supply; None for units of ``sku``
        at a row whose holds wait for supply (this read cannot tell whether
        they are on the shelf)."""
        if line is not None:
            backordered = self.backorder_promises.get(line)
            if backordered is not None and backordered[0] == node:
                return backordered[1]
        if sku is not None and (sku, node) in self.waiting:
            return None
        return self.promises.get(node)


@dataclass(frozen=True, slots=True)
class StoreStock:
    node: str
    name: str
    atp: int
    distance_km: float
    ready_at: datetime | None  # None when the store cannot cover the quantity asked


@dataclass(frozen=True, slots=True)
class EndlessAisle:
    sku: str
    quantity: int
    here: StoreStock
    nearby: tuple[StoreStock, ...]  # nearest first, each holding at least ``quantity``


def validate_quote(request: QuoteRequest, network: Network) -> None:
    """Check a quote request at the edge; one InvalidArgument lists every problem."""
    v: list[FieldViolation] = []
    lines = request.lines
    if not lines:
        v.append(FieldViolation("lines", "at least one line is required"))
    elif len(lines) > MAX_LINES:
        v.append(FieldViolation("lines", f"at most {MAX_LINES} lines, got {len(lines)}"))
    for i, line in enumerate(lines):
        if not isinstance(line.sku, str) or _KEY.fullmatch(line.sku) is None:
            v.append(
                FieldViolation(
                    f"lines[{i}].sku",
                    "must be 1-64 printable ASCII characters without whitespace, '{' or '}'",
                )
            )
        if type(line.quantity) is not int or not 1 <= line.quantity <= MAX_QUANTITY:
            v.append(
                FieldViolation(f"lines[{i}].quantity", f"must be 1..{MAX_QUANTITY}, got {line.quantity}")
            )
    methods = request.methods
    if not methods:
        v.append(FieldViolation("methods", "accept at least one fulfillment method"))
    for i, method in enumerate(methods):
        if method not in (FulfillmentMethod.SHIP, FulfillmentMethod.PICKUP):
            v.append(FieldViolation(f"methods[{i}]", "must be SHIP or PICKUP"))
        elif method in methods[:i]:
            v.append(FieldViolation(f"methods[{i}]", "repeats a method"))
    if FulfillmentMethod.SHIP in methods:
        dest = request.destination
        if dest is not None:
            if _POSTAL_CODE.fullmatch(dest.postal_code) is None:
                v.append(
                    FieldViolation(
                        "destination.postal_code",
                        f"at most {MAX_POSTAL_CODE} letters, digits, spaces or dashes",
                    )
                )
            if len(dest.region) > MAX_REGION:
                v.append(FieldViolation("destination.region", f"at most {MAX_REGION} characters"))
        if dest is None or (not dest.postal_code and (dest.latitude is None or dest.longitude is None)):
            v.append(FieldViolation("destination", "shipping needs a postal code or latitude and longitude"))
        elif dest.latitude is not None or dest.longitude is not None:
            lat, lon = dest.latitude, dest.longitude
            if lat is None or not (math.isfinite(lat) and -90.0 <= lat <= 90.0):
                v.append(FieldViolation("destination.latitude", "must be -90..90 (with a longitude)"))
            if lon is None or not (math.isfinite(lon) and -180.0 <= lon <= 180.0):
                v.append(FieldViolation("destination.longitude", "must be -180..180 (with a latitude)"))
        for i, name in enumerate(request.service_levels):
            k = network.service_index.get(name)
            if k is None or network.services[k].internal:
                offered = ", ".join(s.name for s in network.services if not s.internal)
                v.append(
                    FieldViolation(
                        f"service_levels[{i}]", f"unknown service level {name!r} (offered: {offered})"
                    )
                )
    if FulfillmentMethod.PICKUP in methods:
        store = request.pickup_store
        if not store:
            v.append(FieldViolation("pickup_store", "pickup needs a store"))
        elif store not in network.index:
            if not v:
                raise UnknownNode(store, field="pickup_store")
            v.append(FieldViolation("pickup_store", f"node {store!r} is not defined"))
        elif not network.caps[network.index[store]] & Capability.PICKUP:
            v.append(FieldViolation("pickup_store", f"node {store!r} does not offer pickup"))
    if v:
        first = v[0]
        more = f" (and {len(v) - 1} more)" if len(v) > 1 else ""
        raise InvalidArgument(f"{first.field} {first.description}{more}", tuple(v))


def validate_reserve_fulfillment(
    fulfillment: ReserveFulfillment, lines: Sequence[LineRequest], network: Network
) -> None:
    """Check a Reserve's fulfillment context at the edge (as :func:`validate_quote`
    checks a quote's), its fields named under ``fulfillment``; one
    InvalidArgument lists every problem."""
    method = fulfillment.method
    request = QuoteRequest(
        lines=tuple(QuoteLine(line.sku, line.quantity) for line in lines),
        destination=fulfillment.destination,
        pickup_store=fulfillment.pickup_store,
        methods=(method,),
        service_levels=() if fulfillment.service_level is None else (fulfillment.service_level,),
    )
    try:
        validate_quote(request, network)
    except UnknownNode as exc:
        raise UnknownNode(fulfillment.pickup_store or "", field="fulfillment.pickup_store") from exc
    except InvalidArgument as exc:
        renamed = {"methods[0]": "method", "service_levels[0]": "service_level"}
        v = tuple(
            FieldViolation(f"fulfillment.{renamed.get(x.field, x.field)}", x.description)
            for x in exc.violations
            if not x.field.startswith("lines")  # the edge checked the lines already
        )
        if v:
            first = v[0]
            more = f" (and {len(v) - 1} more)" if len(v) > 1 else ""
            raise InvalidArgument(f"{first.field} {first.description}{more}", v) from None


def validate_find_in_stores(sku: str, store: str, quantity: int, limit: int, network: Network) -> None:
    """Check an endless-aisle lookup at the edge; one InvalidArgument lists every problem.

    ``store`` must be a STORE node of ``network``; when that is the only
    problem and the node does not exist, the error is UnknownNode.
    """
    v: list[FieldViolation] = []
    if _KEY.fullmatch(sku) is None:
        v.append(
            FieldViolation("sku", "must be 1-64 printable ASCII characters without whitespace, '{' or '}'")
        )
    if not 1 <= quantity <= MAX_QUANTITY:
        v.append(FieldViolation("quantity", f"must be 1..{MAX_QUANTITY}, got {quantity}"))
    if not 0 <= limit <= MAX_NEARBY_STORES:
        v.append(FieldViolation("max_stores", f"must be 0..{MAX_NEARBY_STORES}, got {limit}"))
    k = network.index.get(store)
    if not store:
        v.append(FieldViolation("store", "is required"))
    elif k is None:
        if not v:
            raise UnknownNode(store, field="store")
        v.append(FieldViolation("store", f"node {store!r} is not defined"))
    elif network.nodes[k].type != NodeType.STORE:
        v.append(FieldViolation("store", f"node {store!r} is not a store"))
    if v:
        first = v[0]
        more = f" (and {len(v) - 1} more)" if len(v) > 1 else ""
        raise InvalidArgument(f"{first.field} {first.description}{more}", tuple(v))


class Promiser:
    """Quotes and endless-aisle lookups over one compiled network.

    ``impl`` picks the sourcing loop (``fast``: Cython, ``pure``: the
    reference); both give identical answers. A promiser keeps per-node caches
    (ship windows, distances, the channel's priority table) and scratch
    arrays: use one per thread or event loop, and build a new one (over a new
    :class:`Network`) when nodes or carriers change.
    """

    def __init__(self, network: Network, *, clock: Callable[[], float], impl: str = "fast") -> None:
        self.network = network
        self._clock = clock
        self._sourcer: Sourcer = make_sourcer(network, impl)
        self._dates: dict[int, date] = {}
        self._customer_levels = tuple(s.name for s in network.services if not s.internal)
        self._without: dict[tuple[tuple[str, ...], str], tuple[str, ...]] = {}

    @property
    def implementation(self) -> str:
        return self._sourcer.implementation

    # ------------------------------------------------------------------ quote

    def quote(
        self,
        request: QuoteRequest,
        *,
        eligible: Sequence[str],
        atp: AtpSource,
        future: FutureSupply | None = None,
        promised: Mapping[tuple[str, str], int] | None = None,
        full: Collection[str] = (),
    ) -> Quote:
        """Options for every line of ``request`` (see the module docstring).

        ``eligible``: the channel's nodes in priority order (ties go to the
        earlier one); pass the channel's own tuple every time, the sourcing
        loop recognises it by identity instead of hashing it. ``atp``: what
        the channel may take per SKU and node. ``future``/``promised``:
        inbound supply and the units already promised against it by (SKU,
        node), for backorders. ``full``: nodes whose daily capacity is used up
        today (:meth:`Network.at_capacity`).
        """
        now = self._clock()
        lookup = atp if callable(atp) else _mapping_lookup(atp)
        stock: dict[str, Mapping[str, int]] = {}
        spec: list[PlanLine] = []
        for line in request.lines:
            m = stock.get(line.sku)
            if m is None:
                m = stock[line.sku] = lookup(line.sku)
            spec.append((line.sku, line.quantity, m))
        options: list[list[LineOption]] = [[] for _ in request.lines]
        for method in request.methods:
            if method == FulfillmentMethod.SHIP:
                self._ship(request, now, eligible, spec, future, promised, full, options)
            elif method == FulfillmentMethod.PICKUP:
                self._pickup(request, now, eligible, spec, future, promised, full, options)
        return Quote(
            quoted_at=datetime.fromtimestamp(now, UTC),
            lines=tuple(
                LineQuote(i, line.sku, line.quantity, tuple(options[i]))
                for i, line in enumerate(request.lines)
            ),
        )

    def _ship(
        self,
        request: QuoteRequest,
        now: float,
        eligible: Sequence[str],
        spec: list[PlanLine],
        future: FutureSupply | None,
        promised: Mapping[tuple[str, str], int] | None,
        full: Collection[str],
        options: list[list[LineOption]],
    ) -> None:
        net = self.network
        if request.destination is None:
            raise InvalidArgument(
                "destination is required to ship",
                (FieldViolation("destination", "shipping needs a destination"),),
            )
        dest = net.resolve(request.destination)
        caps = _SHIP_CAPS if request.allow_ship_from_store else _DC_SHIP_CAPS
        names = request.service_levels or self._customer_levels
        dates = self._dates
        to_date = self._date
        stock = SupplySource.STOCK
        inf = math.inf
        for name in names:
            service = net.service_index[name]
            plans = self._sourcer.plan(now, service, dest, eligible, spec, request.allow_split, caps, full)
            for i, plan in enumerate(plans):
                if plan is not None:
                    units: list[SourcedUnits] = []
                    for node, qty, ship, delivery, km in plan[1]:
                        units.append(
                            SourcedUnits(
                                node,
                                qty,
                                stock,
                                dates.get(delivery) or to_date(delivery),
                                dates.get(ship) or to_date(ship),
                                None if km == inf else km,
                            )
                        )
                    promise_day = plan[0]
                    options[i].append(
                        LineOption(
                            FulfillmentMethod.SHIP,
                            name,
                            dates.get(promise_day) or to_date(promise_day),
                            None,
                            tuple(units),
                            len(units) > 1,
                        )
                    )
                elif request.allow_backorder and future is not None:
                    opt = self._ship_backorder(
                        i, name, service, dest, now, eligible, spec, plans, future, promised, caps
                    )
                    if opt is not None:
                        options[i].append(opt)

    def _ship_backorder(
        self,
        i: int,
        name: str,
        service: int,
        dest: ResolvedDestination,
        now: float,
        eligible: Sequence[str],
        spec: list[PlanLine],
        plans: list[LinePlan | None],
        future: FutureSupply,
        promised: Mapping[tuple[str, str], int] | None,
        caps: int,
    ) -> LineOption | None:
        """The line from inbound supply at one node: earliest delivery, then nearest, then priority."""
        net = self.network
        sku, qty, atp = spec[i]
        svc = net.services[service]
        best: tuple[int, float, int] | None = None
        chosen: SourcedUnits | None = None
        for node_id, records in sorted(future.for_sku(sku).items()):
            prio = _position(eligible, node_id)
            k = net.index.get(node_id)
            if prio < 0 or k is None or not net.caps[k] & caps:
                continue
            found = self._inbound_at(sku, node_id, qty, atp, spec, plans, records, promised, now)
            if found is None:
                continue
            arrives, ids = found
            cal = net.calendars[k]
            ship_day = cal.ship_window(max(arrives, now)).ship_day
            km = node_distance(net, k, dest)
            transit = transit_days(svc, net.region[k] * net.n_regions + dest.region, km)
            if transit < 0:
                continue
            delivery = add_delivery_days(ship_day, transit, svc.weekday_mask)
            key = (delivery, km, prio)
            if best is None or key < best:
                best = key
                chosen = SourcedUnits(
                    node_id,
                    qty,
                    SupplySource.INBOUND,
                    self._date(delivery),
                    self._date(ship_day),
                    None if km == math.inf else km,
                    datetime.fromtimestamp(arrives, UTC),
                    ids,
                )
        if chosen is None:
            return None
        return LineOption(
            FulfillmentMethod.SHIP, name, chosen.promise_date, None, (chosen,), False, backorder=True
        )

    def _inbound_at(
        self,
        sku: str,
        node_id: str,
        qty: int,
        atp: Mapping[str, int],
        spec: list[PlanLine],
        plans: list[LinePlan | None] | None,
        records: Sequence[InboundSupply],
        promised: Mapping[tuple[str, str], int] | None,
        now: float,
    ) -> tuple[float, tuple[str, ...]] | None:
        """When ``qty`` units of ``sku`` can be promised at a node counting inbound supply,
        after the stock other lines of this quote took there; None if never."""
        taken = 0
        if plans is not None:
            for (other_sku, _, _), plan in zip(spec, plans, strict=True):
                if plan is not None and other_sku == sku:
                    taken += sum(q for n, q, *_ in plan[1] if n == node_id)
        phased = time_phased_atp(
            atp.get(node_id, 0) - taken, records, promised=(promised or {}).get((sku, node_id), 0)
        )
        at = phased.earliest(qty)
        if at is None:
            return None
        arrives = now if at == -math.inf else max(at, now)
        return arrives, tuple(r.id for r in records if r.eta <= arrives)

    def _pickup(
        self,
        request: QuoteRequest,
        now: float,
        eligible: Sequence[str],
        spec: list[PlanLine],
        future: FutureSupply | None,
        promised: Mapping[tuple[str, str], int] | None,
        full: Collection[str],
        options: list[list[LineOption]],
    ) -> None:
        net = self.network
        store = request.pickup_store
        if not store:
            raise InvalidArgument(
                "pickup_store is required", (FieldViolation("pickup_store", "pickup needs a store"),)
            )
        k_store = net.position(store, "pickup_store")
        cal = net.calendars[k_store]
        zone = cal.zone
        ready = cal.pickup_ready_at(now, full=bool(full) and store in full)
        ready_dt = datetime.fromtimestamp(ready, zone)
        ready_day = ready_dt.date()
        store_sells = _position(eligible, store) >= 0
        left: dict[str, int] = {}
        transfers: list[tuple[int, int, PlanLine]] = []  # (line, units from the store, what to move)
        for i, (sku, qty, atp) in enumerate(spec):
            have = left.get(sku)
            if have is None:
                have = max(0, atp.get(store, 0)) if store_sells else 0
            if have >= qty:
                left[sku] = have - qty
                units = SourcedUnits(store, qty, SupplySource.STOCK, ready_day, None, 0.0)
                options[i].append(
                    LineOption(FulfillmentMethod.PICKUP, None, ready_day, ready_dt, (units,), False)
                )
                continue
            here = have if request.allow_split else 0
            left[sku] = have - here
            if request.allow_transfer and net.transfer_service is not None:
                transfers.append((i, here, (sku, qty - here, atp)))
            else:
                self._pickup_backorder(i, request, k_store, now, spec, future, promised, options)

        if not transfers:
            return
        assert net.transfer_service is not None
        sources = self._without_node(eligible, store)
        plans = self._sourcer.plan(
            now,
            net.transfer_service,
            net.resolve_node(k_store),
            sources,
            [t[2] for t in transfers],
            request.allow_split,
            _SHIP_CAPS,
            full,
        )
        for (i, here, _), plan in zip(transfers, plans, strict=True):
            if plan is None:
                self._pickup_backorder(i, request, k_store, now, spec, future, promised, options)
                continue
            arrival, allocations = plan
            at = cal.ready_on_arrival(arrival)
            at_dt = datetime.fromtimestamp(max(at, ready), zone)
            at_day = at_dt.date()
            units_list = [SourcedUnits(store, here, SupplySource.STOCK, at_day, None, 0.0)] if here else []
            units_list.extend(
                SourcedUnits(node, qty, SupplySource.TRANSFER, at_day, self._date(ship), km)
                for node, qty, ship, _, km in allocations
            )
            options[i].append(
                LineOption(
                    FulfillmentMethod.PICKUP, None, at_day, at_dt, tuple(units_list), len(units_list) > 1
                )
            )

    def _pickup_backorder(
        self,
        i: int,
        request: QuoteRequest,
        k_store: int,
        now: float,
        spec: list[PlanLine],
        future: FutureSupply | None,
        promised: Mapping[tuple[str, str], int] | None,
        options: list[list[LineOption]],
    ) -> None:
        """Inbound supply at the pickup store itself, when backorders are allowed."""
        if not request.allow_backorder or future is None:
            return
        net = self.network
        store = net.node_ids[k_store]
        sku, qty, atp = spec[i]
        records = future.for_sku(sku).get(store, ())
        if not records:
            return
        # Earlier lines of the same SKU picked up from the shelf come first.
        taken = sum(
            a.quantity
            for j in range(i)
            if spec[j][0] == sku
            for opt in options[j]
            if opt.method == FulfillmentMethod.PICKUP
            for a in opt.allocations
            if a.node == store and a.source == SupplySource.STOCK
        )
        found = self._inbound_at(
            sku, store, qty, {store: atp.get(store, 0) - taken}, spec, None, records, promised, now
        )
        if found is None:
            return
        arrives, ids = found
        cal = net.calendars[k_store]
        ready = cal.pickup_ready_at(arrives)
        ready_dt = datetime.fromtimestamp(ready, cal.zone)
        units = SourcedUnits(
            store,
            qty,
            SupplySource.INBOUND,
            ready_dt.date(),
            None,
            0.0,
            datetime.fromtimestamp(arrives, UTC),
            ids,
        )
        options[i].append(
            LineOption(
                FulfillmentMethod.PICKUP, None, ready_dt.date(), ready_dt, (units,), False, backorder=True
            )
        )

    # ------------------------------------------------- promise-driven reserve

    def rank_reserve(
        self,
        lines: Sequence[LineRequest],
        fulfillment: ReserveFulfillment,
        *,
        eligible: Sequence[str],
        atp: AtpSource,
        full: Collection[str] = (),
        future: FutureSupply | None = None,
        promised: Mapping[tuple[str, str], int] | None = None,
    ) -> ReserveRanking:
        """The ranked candidate nodes of each line of a Reserve, and the promise
        of units at each node that may be chosen.

        SHIP: the channel's nodes that ship with the stock this read saw,
        ranked by delivery date, then distance, then the channel's priority;
        the node the quote's consolidation (fewest parcels) picks for a line
        goes first, and for a line it splits, the nodes of its split. PICKUP:
        the pickup store, then (when the carriers have a transfer service) the
        other nodes with stock, ranked by when a transfer would be ready at the
        store, then distance, then priority. The store's atomic hold takes the
        first candidate covering a line, else splits in this order (only with
        ``allow_split``): the ledger is the final check on stock.

        Backorders (``fulfillment.allow_backorder``, with ``future``: the
        inbound supply the channel may count on, and ``promised``: the units
        per (SKU, node) already promised beyond the shelf): a line this read
        finds no stock for gets one candidate, the node whose inbound supply
        gives the best promise, as Quote's backorder option picks it (SHIP:
        earliest delivery, then nearest, then priority; PICKUP: the pickup
        store itself), and the units expected there as its backorder allowance.
        """
        now = self._clock()
        lookup = atp if callable(atp) else _mapping_lookup(atp)
        stock: dict[str, Mapping[str, int]] = {}
        spec: list[PlanLine] = []
        sourced: list[int] = []  # lines without a node
        for i, line in enumerate(lines):
            if line.node is None:
                m = stock.get(line.sku)
                if m is None:
                    m = stock[line.sku] = lookup(line.sku)
                spec.append((line.sku, line.quantity, m))
                sourced.append(i)
        named = {line.node for line in lines if line.node is not None}
        supply = future if fulfillment.allow_backorder else None
        if fulfillment.method == FulfillmentMethod.PICKUP:
            ranking = self._rank_pickup(lines, fulfillment, now, eligible, spec, sourced, named, full)
            if supply is not None:
                ranking = self._backorder_pickup(
                    ranking, fulfillment, now, eligible, spec, sourced, supply, promised
                )
        else:
            ranking = self._rank_ship(
                lines, fulfillment, now, eligible, spec, sourced, named, full, supply, promised
            )
        if promised:
            ranking = dataclasses.replace(ranking, waiting=frozenset(k for k, v in promised.items() if v > 0))
        return ranking

    def _rank_ship(
        self,
        lines: Sequence[LineRequest],
        fulfillment: ReserveFulfillment,
        now: float,
        eligible: Sequence[str],
        spec: list[PlanLine],
        sourced: list[int],
        named: set[str],
        full: Collection[str],
        future: FutureSupply | None = None,
        promised: Mapping[tuple[str, str], int] | None = None,
    ) -> ReserveRanking:
        net = self.network
        if fulfillment.destination is None:
            raise InvalidArgument(
                "destination is required to ship",
                (FieldViolation("fulfillment.destination", "shipping needs a destination"),),
            )
        dest = net.resolve(fulfillment.destination)
        name = fulfillment.service_level or self._customer_levels[0]
        service = net.service_index[name]
        svc = net.services[service]
        # Per node, the day and distance the sourcing loop ranks by (the same
        # calendar, transit and delivery-day rules).
        days: dict[str, tuple[int, float, int]] = {}  # node -> (delivery day, km, priority)
        for node_id in dict.fromkeys([*eligible, *named]):
            k = net.index.get(node_id)
            if k is None or not net.caps[k] & _SHIP_CAPS:
                continue
            window = net.calendars[k].ship_window(now)
            ship_day = window.ship_day_when_full if full and node_id in full else window.ship_day
            km = node_distance(net, k, dest)
            transit = transit_days(svc, net.region[k] * net.n_regions + dest.region, km)
            if transit >= 0:
                delivery = add_delivery_days(ship_day, transit, svc.weekday_mask)
                days[node_id] = (delivery, km, _position(eligible, node_id))
        plans = (
            self._sourcer.plan(now, service, dest, eligible, spec, fulfillment.allow_split, _SHIP_CAPS, full)
            if spec
            else []
        )
        candidates: list[tuple[str, ...] | None] = [None] * len(lines)
        for j, i in enumerate(sourced):
            atp = spec[j][2]
            ranked = sorted((n for n in atp if atp[n] > 0 and n in days), key=days.__getitem__)
            plan = plans[j]
            if plan is not None:
                first = [a[0] for a in plan[1]]
                ranked = first + [n for n in ranked if n not in first]
            candidates[i] = tuple(ranked)
        promises = {
            node: NodePromise(self._date(day), None, SupplySource.STOCK) for node, (day, _, _) in days.items()
        }
        if future is None:
            return ReserveRanking(FulfillmentMethod.SHIP, name, tuple(candidates), promises)
        allowance = [0] * len(lines)
        backordered: dict[int, tuple[str, NodePromise]] = {}
        # Earlier backorders of this request speak for their units too.
        spoken = dict(promised or {})
        for j, i in enumerate(sourced):
            if plans[j] is not None:
                continue
            option = self._ship_backorder(
                j, name, service, dest, now, eligible, spec, plans, future, spoken, _SHIP_CAPS
            )
            if option is None:
                continue  # nothing will cover it: the hold reports it short
            (units,) = option.allocations
            sku = spec[j][0]
            candidates[i] = (units.node,)
            allowance[i] = future.expected_at(sku, units.node)
            backordered[i] = (units.node, _inbound_promise(units, None))
            spoken[(sku, units.node)] = spoken.get((sku, units.node), 0) + units.quantity
        return ReserveRanking(
            FulfillmentMethod.SHIP, name, tuple(candidates), promises, None, tuple(allowance), backordered
        )

    def _rank_pickup(
        self,
        lines: Sequence[LineRequest],
        fulfillment: ReserveFulfillment,
        now: float,
        eligible: Sequence[str],
        spec: list[PlanLine],
        sourced: list[int],
        named: set[str],
        full: Collection[str],
    ) -> ReserveRanking:
        net = self.network
        store = fulfillment.pickup_store
        if not store:
            raise InvalidArgument(
                "pickup_store is required",
                (FieldViolation("fulfillment.pickup_store", "pickup needs a store"),),
            )
        k_store = net.position(store, "fulfillment.pickup_store")
        cal = net.calendars[k_store]
        ready = cal.pickup_ready_at(now, full=bool(full) and store in full)
        ready_dt = datetime.fromtimestamp(ready, cal.zone)
        promises: dict[str, NodePromise] = {store: NodePromise(ready_dt.date(), ready_dt, SupplySource.STOCK)}
        # Transfer sources: when a transfer from each would be ready at the
        # store (the transfer service's day to the store, then unpacking).
        order: dict[str, tuple[float, float, int]] = {}
        if net.transfer_service is not None:
            svc = net.services[net.transfer_service]
            to_store = net.resolve_node(k_store)
            for node_id in dict.fromkeys([*eligible, *named]):
                k = net.index.get(node_id)
                if k is None or k == k_store or not net.caps[k] & _SHIP_CAPS:
                    continue
                window = net.calendars[k].ship_window(now)
                ship_day = window.ship_day_when_full if full and node_id in full else window.ship_day
                km = node_distance(net, k, to_store)
                transit = transit_days(svc, net.region[k] * net.n_regions + to_store.region, km)
                if transit < 0:
                    continue
                arrival = add_delivery_days(ship_day, transit, svc.weekday_mask)
                at = max(cal.ready_on_arrival(arrival), ready)
                at_dt = datetime.fromtimestamp(at, cal.zone)
                promises[node_id] = NodePromise(at_dt.date(), at_dt, SupplySource.TRANSFER)
                order[node_id] = (at, km, _position(eligible, node_id))
        candidates: list[tuple[str, ...] | None] = [None] * len(lines)
        for j, i in enumerate(sourced):
            atp = spec[j][2]
            transfers = sorted((n for n in atp if atp[n] > 0 and n in order), key=order.__getitem__)
            candidates[i] = (store, *transfers)
        return ReserveRanking(
            FulfillmentMethod.PICKUP, None, tuple(candidates), promises, net.nodes[k_store].time_zone
        )

    def _backorder_pickup(
        self,
        ranking: ReserveRanking,
        fulfillment: ReserveFulfillment,
        now: float,
        eligible: Sequence[str],
        spec: list[PlanLine],
        sourced: list[int],
        future: FutureSupply,
        promised: Mapping[tuple[str, str], int] | None,
    ) -> ReserveRanking:
        """Backordered PICKUP lines: held at the pickup store itself against its
        inbound supply, when neither its shelf nor one transfer source (nor,
        with ``allow_split``, all of them) has the line in this read."""
        store = fulfillment.pickup_store
        assert store is not None  # _rank_pickup refused a context without one
        if _position(eligible, store) < 0:
            return ranking  # the channel does not hold stock there, inbound or not
        k_store = self.network.position(store, "fulfillment.pickup_store")
        cal = self.network.calendars[k_store]
        candidates = list(ranking.candidates)
        allowance = [0] * len(candidates)
        backordered: dict[int, tuple[str, NodePromise]] = {}
        spoken = dict(promised or {})
        left: dict[tuple[str, str], int] = {}  # shelf units earlier lines of this request took
        for j, i in enumerate(sourced):
            sku, qty, atp = spec[j]
            nodes = candidates[i] or ()
            have = {n: max(0, atp.get(n, 0) - left.get((sku, n), 0)) for n in nodes}
            taking = _as_the_hold_takes(have, qty, fulfillment.allow_split)
            if taking:
                for n, q in taking:
                    left[(sku, n)] = left.get((sku, n), 0) + q
                continue
            records = future.for_sku(sku).get(store, ())
            if not records:
                continue
            shelf = {store: max(0, atp.get(store, 0)) - left.get((sku, store), 0)}
            found = self._inbound_at(sku, store, qty, shelf, spec, None, records, spoken, now)
            if found is None:
                continue
            arrives, ids = found
            ready_dt = datetime.fromtimestamp(cal.pickup_ready_at(arrives), cal.zone)
            candidates[i] = (store,)
            allowance[i] = future.expected_at(sku, store)
            backordered[i] = (
                store,
                NodePromise(
                    ready_dt.date(), ready_dt, SupplySource.INBOUND, datetime.fromtimestamp(arrives, UTC), ids
                ),
            )
            spoken[(sku, store)] = spoken.get((sku, store), 0) + qty
        return dataclasses.replace(
            ranking, candidates=tuple(candidates), backorder=tuple(allowance), backorder_promises=backordered
        )

    # ---------------------------------------------------------- endless aisle

    def endless_aisle(
        self,
        sku: str,
        store: str,
        *,
        eligible: Sequence[str],
        atp: AtpSource,
        quantity: int = 1,
        limit: int = 5,
        full: Collection[str] = (),
    ) -> EndlessAisle:
        """POS: this store's stock of a SKU, and the ``limit`` nearest other pickup
        stores (among the channel's nodes) holding at least ``quantity``, with
        their distance and when an order placed now would be ready there."""
        net = self.network
        now = self._clock()
        k_here = net.position(store, "store")
        stock = atp(sku) if callable(atp) else atp.get(sku, _EMPTY)
        lat, lon, cos_lat = net.lat[k_here], net.lon[k_here], net.cos_lat[k_here]

        def entry(k: int, km: float) -> StoreStock:
            node = net.nodes[k]
            units = max(0, stock.get(node.id, 0)) if _position(eligible, node.id) >= 0 or k == k_here else 0
            ready = None
            if units >= quantity:
                cal = net.calendars[k]
                at = cal.pickup_ready_at(now, full=bool(full) and node.id in full)
                ready = datetime.fromtimestamp(at, cal.zone)
            return StoreStock(node.id, node.name, units, km, ready)

        candidates: list[tuple[float, int, int]] = []
        for prio, node_id in enumerate(eligible):
            k = net.index.get(node_id)
            if k is None or k == k_here or not net.caps[k] & Capability.PICKUP:
                continue
            if net.nodes[k].type != NodeType.STORE or stock.get(node_id, 0) < quantity:
                continue
            km = haversine_rad(lat, lon, cos_lat, net.lat[k], net.lon[k], net.cos_lat[k])
            candidates.append((km, prio, k))
        candidates.sort()
        return EndlessAisle(
            sku=sku,
            quantity=quantity,
            here=entry(k_here, 0.0),
            nearby=tuple(entry(k, km) for km, _, k in candidates[: max(0, limit)]),
        )

    # ---------------------------------------------------------------- helpers

    def _date(self, ordinal: int) -> date:
        d = self._dates.get(ordinal)
        if d is None:
            if len(self._dates) > 4096:
                self._dates.clear()
            d = self._dates[ordinal] = date.fromordinal(ordinal)
        return d

    def _without_node(self, eligible: Sequence[str], node: str) -> tuple[str, ...]:
        """The eligible list minus one node (transfer sources exclude the pickup store)."""
        key = (eligible if type(eligible) is tuple else tuple(eligible), node)
        out = self._without.get(key)
        if out is None:
            if len(self._without) > 256:
                self._without.clear()
            out = self._without[key] = tuple(n for n in key[0] if n != node)
        return out


def _as_the_hold_takes(have: Mapping[str, int], qty: int, split: bool) -> list[tuple[str, int]]:
    """What the ledger's sourcing takes from candidates with ``have`` units
    (in order): the first covering the line, else (``split``) greedily; empty
    when they cannot cover it."""
    for node, units in have.items():
        if units >= qty:
            return [(node, qty)]
    if not split or sum(have.values()) < qty:
        return []
    taking: list[tuple[str, int]] = []
    for node, units in have.items():
        if units and qty:
            taking.append((node, min(units, qty)))
            qty -= taking[-1][1]
    return taking


def _inbound_promise(units: SourcedUnits, ready_at: datetime | None) -> NodePromise:
    return NodePromise(
        units.promise_date, ready_at, SupplySource.INBOUND, units.available_at, units.supply_ids
    )


def _mapping_lookup(atp: Mapping[str, Mapping[str, int]]) -> Callable[[str], Mapping[str, int]]:
    def lookup(sku: str) -> Mapping[str, int]:
        return atp.get(sku, _EMPTY)

    return lookup


def _position(eligible: Sequence[str], node_id: str) -> int:
    try:
        return eligible.index(node_id)
    except ValueError:
        return -1
