"""The Store port: what the service layer needs from a store, whatever backs it.

Adapters: ``engine.store.embedded`` (ledger + journal + snapshots, the default)
and, later, ``engine.store.redis``. Every mutation is atomic and durable before
the coroutine returns; a raised :mod:`engine.core.errors` error means no effect.
Nothing here knows about protobuf or gRPC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from engine.core.future_supply import InboundOutcome, InboundPage, InboundSupply
from engine.core.types import (
    Channel,
    Node,
    Reservation,
    ReserveRequest,
    SkuAvailability,
    StockChange,
    StockLevel,
    SupplyOp,
)

__all__ = ["AuditReport", "CarrierRecord", "Store"]


@dataclass(frozen=True, slots=True)
class AuditReport:
    """``shortages``: rows whose on_hand no longer covers reserved + committed
    beyond what inbound supply expected there covers (backorder holds are
    covered by it; see ``future_supply.uncovered_shortages``)."""

    violations: tuple[str, ...]
    shortages: tuple[StockLevel, ...]
    rows: int
    reservations: int

    @property
    def ok(self) -> bool:
        return not self.violations


@dataclass(frozen=True, slots=True)
class CarrierRecord:
    """The carrier table set through the API, as a store keeps it.

    ``document`` is the table in the file format (``dump_carriers``; plain JSON
    values), None while none is set (the server's configured table applies).
    ``version`` counts every set and reset since the store was created (0:
    never set); it is the table's etag, so it never goes back, even on reset.
    """

    document: dict[str, Any] | None = None
    version: int = 0
    updated_at: float | None = None  # when it was last set or reset (seconds)


class Store(Protocol):
    kind: str

    async def start(self) -> None: ...
    async def close(self) -> None: ...

    async def upsert_node(self, node: Node) -> Node: ...
    async def upsert_channel(self, channel: Channel) -> Channel: ...
    # Both lists come sorted by id.
    async def list_nodes(self) -> list[Node]: ...
    async def list_channels(self) -> list[Channel]: ...

    # The carrier table set through the API (see CarrierRecord). Setting
    # ``document=None`` resets to the server's configured table. With
    # ``expected_version`` the write happens only if the stored version is
    # that one (else EtagMismatch, nothing written); an identical document is
    # not written again (same version). Changes reach every engine process
    # sharing the store as network changes do.
    async def carrier_table(self) -> CarrierRecord: ...
    async def set_carrier_table(
        self, document: dict[str, Any] | None, *, expected_version: int | None = None
    ) -> CarrierRecord: ...
    # Orders released per (node, local ISO date), as counted on commit
    # (engine/core/capacity.py), one count per key asked; 0 where none.
    async def released(self, days: Sequence[tuple[str, str]]) -> list[int]: ...

    async def apply_supply(self, ops: Sequence[SupplyOp]) -> list[StockChange]: ...
    async def stock(self, sku: str, node: str) -> StockLevel: ...

    async def reserve(self, request: ReserveRequest) -> Reservation: ...
    async def commit(self, reservation_id: str) -> Reservation: ...
    async def release(self, reservation_id: str, line_indexes: Sequence[int] | None) -> Reservation: ...
    async def fulfill(self, reservation_id: str, line_indexes: Sequence[int] | None) -> Reservation: ...
    async def extend(self, reservation_id: str, ttl_s: float) -> Reservation: ...
    async def get_reservation(self, reservation_id: str) -> Reservation: ...

    async def availability(
        self,
        skus: Sequence[str],
        channel: str | None,
        nodes: Sequence[str] | None,
        per_node: bool,
    ) -> list[SkuAvailability]: ...

    async def audit(self) -> AuditReport: ...

    # Future supply: inbound purchase orders and transfers, by supply id.
    # ``upsert_inbound`` applies the whole batch or nothing (a bad record or
    # an unknown node changes nothing): a new id is CREATED, the same record
    # again is UNCHANGED (nothing written), another body for a known id
    # replaces it (UPDATED: a revised ETA or quantity). The batch must not
    # repeat an id. Records must pass ``validate_inbound_records`` (the edge
    # runs it; the store re-checks shapes with ``inbound_violations`` and
    # refuses unknown nodes with UnknownNode on ``records[i].node``).
    async def upsert_inbound(self, records: Sequence[InboundSupply]) -> list[InboundOutcome]: ...
    # Forget records (received, or cancelled), atomically; per id, in order:
    # True if it was there. An unknown id is not an error.
    async def remove_inbound(self, ids: Sequence[str]) -> list[bool]: ...
    # Every record of these SKUs, in no particular order (what Quote needs).
    async def inbound(self, skus: Sequence[str]) -> list[InboundSupply]: ...
    # A page of records in id order, optionally of one SKU and/or one node,
    # those with an id greater than ``after`` (see ``future_supply.page_of``).
    async def list_inbound(
        self, *, sku: str | None = None, node: str | None = None, after: str | None = None, limit: int = 100
    ) -> InboundPage: ...
