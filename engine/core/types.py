"""Domain value types shared by the ledgers, the stores and the service layer.

States are small ints (IntEnum) so the Cython ledger can keep them in C arrays
and both ledgers report identical values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple

__all__ = [
    "Allocation",
    "Channel",
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
    SAFETY = 3  # safety_stock = value


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
class ReserveRequest:
    reservation_id: str
    channel: str
    lines: tuple[LineRequest, ...]
    ttl_s: float
    allow_partial: bool = False


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


@dataclass(frozen=True, slots=True)
class Node:
    """A place that holds stock. Later issues add location, calendar and capacity."""

    id: str
    type: NodeType = NodeType.STORE
    name: str = ""
    region: str = ""
    latitude: float = 0.0
    longitude: float = 0.0
    time_zone: str = "UTC"


@dataclass(frozen=True, slots=True)
class Channel:
    """A sales channel; ``nodes`` are its eligible nodes in sourcing priority order."""

    id: str
    nodes: tuple[str, ...] = field(default_factory=tuple)
    name: str = ""
