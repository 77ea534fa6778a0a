"""Domain value types shared by the ledgers, the stores and the service layer.

States are small ints (IntEnum) so the Cython ledger can keep them in C arrays
and both ledgers report identical values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # allocation_rules imports this module
    from engine.core.allocation_rules import AllocationRule

__all__ = [
    "Allocation",
    "Capability",
    "Channel",
    "FulfillmentMethod",
    "LineRequest",
    "LineState",
    "Node",
    "NodeAvailability",
    "NodeType",
    "Reservation",
    "ReservationLine",
    "ReservationState",
    "ReserveRequest",
    "SkuAvailability",
    "StockChange",
    "StockLevel",
    "SupplyKind",
    "SupplyOp",
    "TERMINAL_STATES",
    "aggregate_state",
]

# Input limits (enforced by engine.core.validation at the edge; the ledgers trust them).
MAX_QUANTITY = 1_000_000_000
MAX_ON_HAND = 1_000_000_000_000
MAX_LINES = 500
MAX_AVAILABILITY_SKUS = 10_000
MIN_TTL_S = 1.0
MAX_TTL_S = 7 * 24 * 3600.0


class ReservationState(IntEnum):
    HELD = 1
    COMMITTED = 2
    FULFILLED = 3
    RELEASED = 4
    EXPIRED = 5


# A line moves through the same states as its reservation.
LineState = ReservationState

TERMINAL_STATES = frozenset({ReservationState.FULFILLED, ReservationState.RELEASED, ReservationState.EXPIRED})


def aggregate_state(line_states: list[int]) -> ReservationState:
    """The reservation's state is derived from its lines.

    Any line still held keeps the reservation HELD; otherwise any committed line
    keeps it COMMITTED. Once every line is terminal: FULFILLED if anything
    shipped; else EXPIRED if any line ran out of time (a partial reservation's
    empty lines are RELEASED from the start, and the shopper should still hear
    "timed out", not "cancelled"); else RELEASED.
    """
    s = set(line_states)
    if ReservationState.HELD in s:
        return ReservationState.HELD
    if ReservationState.COMMITTED in s:
        return ReservationState.COMMITTED
    if ReservationState.FULFILLED in s:
        return ReservationState.FULFILLED
    if ReservationState.EXPIRED in s:
        return ReservationState.EXPIRED
    return ReservationState.RELEASED


class NodeType(IntEnum):
    DC = 1
    STORE = 2
    VENDOR = 3


class SupplyKind(IntEnum):
    ADJUST = 1  # on_hand += value (receipt, sale, shrink)
    SET = 2  # on_hand = value, only if version is newer than the stored one
    SAFETY = 3  # the row's own safety_stock = value
    SAFETY_DEFAULT = 4  # the row drops its own safety stock and follows its node's default (value 0)


class SupplyOp(NamedTuple):
    """One supply change; ``event_id`` (optional) makes it idempotent."""

    kind: SupplyKind
    sku: str
    node: str
    value: int
    version: int = 0
    event_id: str | None = None


class LineRequest(NamedTuple):
    """One requested line. A plain tuple so the Cython ledger unpacks it cheaply."""

    sku: str
    quantity: int
    node: str | None = None


@dataclass(frozen=True, slots=True)
class RankedSourcing:
    """Promise-driven sourcing of a reserve (a request with a fulfillment context).

    ``context`` is the canonical text of the fulfillment context: part of the
    body a replay is compared with. ``candidates`` gives, per line, the nodes
    to take it from in order (ranked by the promiser from the stock it read),
    or None for a line that names its node; they are not part of the body
    (they depend on the stock at the time, and a replay is not sourced
    again). ``whole_lines``: a line is taken whole by one node or not at all.

    ``backorder`` (None: no line may be backordered): per line, the units of
    inbound supply expected at the line's one node (its named node, or its
    single candidate), which the line may be held against when the shelf
    cannot cover it; 0 for a line held from the shelf only. Like the
    candidates it is not part of the body (see ``Ledger.reserve``).
    """

    context: str
    candidates: tuple[tuple[str, ...] | None, ...]
    whole_lines: bool
    backorder: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class ReserveRequest:
    reservation_id: str
    channel: str
    lines: tuple[LineRequest, ...]
    ttl_s: float
    allow_partial: bool = False
    # None: each line without a node is sourced in the channel's priority order.
    sourcing: RankedSourcing | None = None


@dataclass(frozen=True, slots=True)
class Allocation:
    node: str
    quantity: int


@dataclass(frozen=True, slots=True)
class ReservationLine:
    index: int
    sku: str
    requested: int
    requested_node: str | None
    allocations: tuple[Allocation, ...]
    state: ReservationState

    @property
    def allocated(self) -> int:
        return sum(a.quantity for a in self.allocations)


@dataclass(frozen=True, slots=True)
class Reservation:
    id: str
    channel: str
    state: ReservationState
    lines: tuple[ReservationLine, ...]
    allow_partial: bool
    ttl_s: float
    created_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class StockLevel:
    sku: str
    node: str
    on_hand: int
    reserved: int
    committed: int
    safety_stock: int
    version: int

    @property
    def atp(self) -> int:
        """Available to promise; negative when the row is short or inside safety stock."""
        return self.on_hand - self.reserved - self.committed - self.safety_stock

    @property
    def shortage(self) -> int:
        """Units promised (held or committed) that are not on hand."""
        return max(0, self.reserved + self.committed - self.on_hand)


@dataclass(frozen=True, slots=True)
class StockChange:
    """Result of a supply mutation.

    ``applied`` is False when a SetStock version was not newer than the stored one,
    or when the event id was already applied (``duplicate``).
    """

    level: StockLevel
    applied: bool
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class NodeAvailability:
    node: str
    on_hand: int
    reserved: int
    committed: int
    safety_stock: int
    atp: int  # clamped at zero: what the channel may sell from this node


@dataclass(frozen=True, slots=True)
class SkuAvailability:
    sku: str
    atp: int
    nodes: tuple[NodeAvailability, ...] = ()


class Capability(IntFlag):
    """What a node does for a customer order (a bit set, so one int in C arrays)."""

    NONE = 0
    SHIP = 1  # parcels to customers (DCs, dropship vendors)
    PICKUP = 2  # click & collect: the customer picks the order up here
    SHIP_FROM_STORE = 4  # a store packing parcels for online orders


# What a node without explicit capabilities does, by type: a network defined
# before capabilities existed keeps sourcing the way it did.
DEFAULT_CAPABILITIES: dict[NodeType, Capability] = {
    NodeType.DC: Capability.SHIP,
    NodeType.STORE: Capability.PICKUP | Capability.SHIP_FROM_STORE,
    NodeType.VENDOR: Capability.SHIP,
}


class FulfillmentMethod(IntEnum):
    SHIP = 1  # delivered by a carrier; the promise is a delivery date
    PICKUP = 2  # collected at a store; the promise is a ready-for-pickup time


@dataclass(frozen=True, slots=True)
class Node:
    """A place that holds stock, with its location, calendar and capabilities.

    Every field has a default, so a node given only an id (and maybe a type)
    still sources as it did before calendars existed: it works Monday to
    Friday, takes orders until 14:00 local time and ships the same day.

    Fields after ``time_zone`` are plain JSON values (ints, strings, lists of
    them) because the embedded store persists nodes field by field as JSON; a
    list read back from such a file is turned into a tuple on construction.

    - ``capabilities``: None means "by node type" (see DEFAULT_CAPABILITIES).
    - ``postal_prefix``: the start of the node's postal code; finds its carrier
      region when ``region`` is not one the carriers know.
    - ``processing_days``: whole working days between the day an order is
      released to the node and the day its parcel leaves (0: the same day).
    - ``pickup_minutes``: time to pick and stage a click & collect order once
      the store has it.
    - ``cutoff``: local ``HH:MM``; an order placed later (or on a closed day)
      is released the next working day.
    - ``opens_at``: local ``HH:MM``; pickup preparation of orders released on a
      later day starts then.
    - ``open_weekdays``: ISO weekdays (1 = Monday .. 7 = Sunday) the node works.
    - ``holidays``: ISO dates (``YYYY-MM-DD``) the node is closed.
    - ``daily_capacity``: orders the node can release per day; None = unlimited.
      The promiser does not count orders itself: the caller says which nodes
      are full today and their releases roll to the next working day.
    """

    id: str
    type: NodeType = NodeType.STORE
    name: str = ""
    region: str = ""
    latitude: float = 0.0
    longitude: float = 0.0
    time_zone: str = "UTC"
    capabilities: Capability | None = None
    postal_prefix: str = ""
    processing_days: int = 0
    pickup_minutes: int = 120
    cutoff: str = "14:00"
    opens_at: str = "09:00"
    open_weekdays: tuple[int, ...] = (1, 2, 3, 4, 5)
    holidays: tuple[str, ...] = ()
    daily_capacity: int | None = None
    default_safety_stock: int = 0

    def __post_init__(self) -> None:
        # JSON brings lists and plain ints back; keep the node hashable and equal
        # to the one that was stored.
        if type(self.open_weekdays) is not tuple:
            object.__setattr__(self, "open_weekdays", tuple(self.open_weekdays))
        if type(self.holidays) is not tuple:
            object.__setattr__(self, "holidays", tuple(self.holidays))
        if self.capabilities is not None and type(self.capabilities) is not Capability:
            object.__setattr__(self, "capabilities", Capability(self.capabilities))

    @property
    def effective_capabilities(self) -> Capability:
        if self.capabilities is not None:
            return self.capabilities
        return DEFAULT_CAPABILITIES.get(self.type, Capability.NONE)


@dataclass(frozen=True, slots=True)
class Channel:
    """A sales channel; ``nodes`` are its eligible nodes in sourcing priority order.

    ``allocation_rules`` limit what the channel may take of a node's stock
    (engine/core/allocation_rules.py); each rule's ``channel`` is this id.
    ``allow_backorder``: a promise-driven Reserve of this channel may hold a
    line against inbound supply (a backorder or preorder) when the shelf
    cannot cover it, if the request asks for it too.
    """

    id: str
    nodes: tuple[str, ...] = field(default_factory=tuple)
    name: str = ""
    allocation_rules: tuple[AllocationRule, ...] = ()
    allow_backorder: bool = False
