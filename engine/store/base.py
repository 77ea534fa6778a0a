"""The Store port: what the service layer needs from a store, whatever backs it.

Adapters: ``engine.store.embedded`` (ledger + journal + snapshots, the default)
and, later, ``engine.store.redis``. Every mutation is atomic and durable before
the coroutine returns; a raised :mod:`engine.core.errors` error means no effect.
Nothing here knows about protobuf or gRPC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

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

__all__ = ["AuditReport", "Store"]


@dataclass(frozen=True, slots=True)
class AuditReport:
    violations: tuple[str, ...]
    shortages: tuple[StockLevel, ...]
    rows: int
    reservations: int

    @property
    def ok(self) -> bool:
        return not self.violations


class Store(Protocol):
    kind: str

    async def start(self) -> None: ...
    async def close(self) -> None: ...

    async def upsert_node(self, node: Node) -> Node: ...
    async def upsert_channel(self, channel: Channel) -> Channel: ...
    # Both lists come sorted by id.
    async def list_nodes(self) -> list[Node]: ...
    async def list_channels(self) -> list[Channel]: ...

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
