"""The gRPC servicers: validate, convert, call the store, answer.

Every method has the same shape: convert the request to engine/core types,
validate it (all violations at once), make sure the deadline has not passed,
then make exactly one store call and convert its result. Nothing is awaited
between the deadline check and the store call, and the store applies a
mutation synchronously before it awaits durability, so a call cancelled by its
deadline either changed nothing or changed everything (and a retry with the
same id returns that result).

Failures go through :func:`fail`: engine errors become their gRPC status with
google.rpc details (engine/service/errors.py); anything else is logged with the
request id and answered INTERNAL without internals.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc.aio

from engine._proto.inventory.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    inventory_service_pb2,
    inventory_service_pb2_grpc,
    network_service_pb2,
    network_service_pb2_grpc,
    supply_service_pb2,
    supply_service_pb2_grpc,
)
from engine.core.carriers import CarrierTable, default_carriers, parse_carriers
from engine.core.errors import EngineError, FieldViolation, InvalidArgument, NotFound, OutOfStock, Shortfall
from engine.core.future_supply import (
    FutureSupply,
    phased_availability,
    validate_inbound_ids,
    validate_inbound_records,
)
from engine.core.types import RankedSourcing, Reservation, SupplyOp
from engine.core.validation import (
    validate_availability,
    validate_channel,
    validate_extend,
    validate_line_change,
    validate_node,
    validate_reservation_id,
    validate_reserve,
    validate_sku,
    validate_supply,
)
from engine.observability import metrics
from engine.service import convert
from engine.service.errors import DeadlineExceeded, code_for, set_status, status_for
from engine.service.interceptors import current_request_id
from engine.service.quoting import StorePromiser
from engine.store.base import CarrierRecord, Store

__all__ = [
    "AdminServicer",
    "InventoryServicer",
    "NetworkServicer",
    "SupplyServicer",
    "check_deadline",
    "fail",
]

log = logging.getLogger("engine.service")

_NOOP_RESPONSE = admin_service_pb2.NoopResponse()
# FindInStores without max_stores: what fits a POS screen.
DEFAULT_NEARBY_STORES = 5


def check_deadline(context: grpc.aio.ServicerContext) -> None:
    """Refuse to start a store call whose caller has already given up."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise DeadlineExceeded("the call's deadline passed before it reached the store; nothing changed")


def fail(context: grpc.aio.ServicerContext, exc: Exception, metadata: dict[str, str] | None = None) -> None:
    """Answer the call with ``exc``'s status (see :func:`set_status`); the servicer returns None next."""
    request_id = current_request_id.get()
    if code_for(exc) is grpc.StatusCode.INTERNAL or not isinstance(exc, EngineError):
        log.error("internal error serving request %s", request_id or "-", exc_info=exc)
    status = status_for(
        exc,
        request_id=request_id or None,
        metadata=metadata,
        trailing_metadata=tuple(context.trailing_metadata() or ()),
    )
    set_status(context, status)


def _reservation_metadata(reservation_id: str) -> dict[str, str] | None:
    # Only ids that passed validation go back into error details.
    return {"reservation_id": reservation_id} if 0 < len(reservation_id) <= 128 else None


class InventoryServicer(inventory_service_pb2_grpc.InventoryServiceServicer):
    def __init__(self, store: Store, promiser: StorePromiser | None = None) -> None:
        self._store = store
        # Without one: the sample carriers and the real clock (EngineServer
        # passes the configured ones).
        self._promiser = promiser or StorePromiser(store, carriers=default_carriers(), clock=time.time)

    async def Reserve(
        self, request: inventory_service_pb2.ReserveRequest, context: grpc.aio.ServicerContext
    ) -> inventory_service_pb2.Reservation | None:
        try:
            reserve = convert.reserve_request(request)
            validate_reserve(reserve)
            fulfillment = convert.reserve_fulfillment(request)
            if fulfillment is None:
                check_deadline(context)
                return convert.reservation_pb(await self._store.reserve(reserve))
            # Promise-driven sourcing: the promiser ranks each line's nodes from
            # the stock it reads now; the store's atomic hold is the final check
            # (stock taken in between makes a line short, never oversold). A
            # replay gets the stored allocations, dated as of this answer.
            try:
                ranking = await self._promiser.rank_reserve(reserve.channel, reserve.lines, fulfillment)
            except EngineError:
                # Ranking checks the context against today's network (a node that
                # stopped offering pickup, a service level dropped...). A replay of
                # a reservation made before must still get its stored result, so
                # the store decides when the id exists; the answer is undated then.
                if not await self._exists(reserve.reservation_id):
                    raise
                unranked: tuple[tuple[str, ...] | None, ...] = (None,) * len(reserve.lines)
                reserve = dataclasses.replace(
                    reserve,
                    sourcing=RankedSourcing(fulfillment.key(), unranked, not fulfillment.allow_split),
                )
                check_deadline(context)
                return convert.reservation_pb(await self._store.reserve(reserve))
            reserve = dataclasses.replace(
                reserve,
                sourcing=RankedSourcing(
                    fulfillment.key(), ranking.candidates, not fulfillment.allow_split, ranking.backorder
                ),
            )
            check_deadline(context)
            return convert.reservation_pb(await self._store.reserve(reserve), ranking)
        except Exception as exc:
            # Refusals are counted where they are answered (store and fast path alike).
            metrics.record_reserve_error(request.channel, exc)
            fail(context, exc, _reservation_metadata(request.reservation_id))
            return None

    async def _exists(self, reservation_id: str) -> bool:
        try:
            await self._store.get_reservation(reservation_id)
        except NotFound:
            return False
        return True

    async def Commit(
        self, request: inventory_service_pb2.CommitRequest, context: grpc.aio.ServicerContext
    ) -> inventory_service_pb2.Reservation | None:
        try:
            validate_reservation_id(request.reservation_id)
            check_deadline(context)
            reservation = await self._store.commit(request.reservation_id)
            # Counted per successful call: a client's retry of a commit counts again.
            metrics.record_transition("committed", reservation)
            return convert.reservation_pb(reservation)
        except Exception as exc:
            fail(context, exc, _reservation_metadata(request.reservation_id))
            return None

    async def Release(
        self, request: inventory_service_pb2.ReleaseRequest, context: grpc.aio.ServicerContext
    ) -> inventory_service_pb2.Reservation | None:
        return await self._change_lines(self._store.release, request, context, "released")

    async def Fulfill(
        self, request: inventory_service_pb2.FulfillRequest, context: grpc.aio.ServicerContext
    ) -> inventory_service_pb2.Reservation | None:
        return await self._change_lines(self._store.fulfill, request, context, "fulfilled")

    async def _change_lines(
        self,
        store_call: Callable[[str, list[int] | None], Awaitable[Reservation]],
        request: inventory_service_pb2.ReleaseRequest | inventory_service_pb2.FulfillRequest,
        context: grpc.aio.ServicerContext,
        outcome: metrics.Outcome,
    ) -> inventory_service_pb2.Reservation | None:
        """Release and Fulfill: the whole reservation, or the listed lines."""
        try:
            indexes = list(request.line_indexes)
            validate_line_change(request.reservation_id, indexes)
            check_deadline(context)
            reservation = await store_call(request.reservation_id, indexes or None)
            metrics.record_transition(outcome, reservation)  # per successful call, as Commit
            return convert.reservation_pb(reservation)
        except Exception as exc:
            fail(context, exc, _reservation_metadata(request.reservation_id))
            return None

    async def ExtendReservation(
        self, request: inventory_service_pb2.ExtendReservationRequest, context: grpc.aio.ServicerContext
    ) -> inventory_service_pb2.Reservation | None:
        try:
            ttl_s = convert.duration_s(request.ttl)
            validate_extend(request.reservation_id, ttl_s)
            check_deadline(context)
            return convert.reservation_pb(await self._store.extend(request.reservation_id, ttl_s))
        except Exception as exc:
            fail(context, exc, _reservation_metadata(request.reservation_id))
            return None

    async def GetReservation(
        self, request: inventory_service_pb2.GetReservationRequest, context: grpc.aio.ServicerContext
    ) -> inventory_service_pb2.Reservation | None:
        try:
            validate_reservation_id(request.reservation_id)
            return convert.reservation_pb(await self._store.get_reservation(request.reservation_id))
        except Exception as exc:
            fail(context, exc, _reservation_metadata(request.reservation_id))
            return None

    async def GetAvailability(
        self, request: inventory_service_pb2.GetAvailabilityRequest, context: grpc.aio.ServicerContext
    ) -> inventory_service_pb2.GetAvailabilityResponse | None:
        try:
            skus = list(request.skus)
            nodes = list(request.nodes)
            channel = request.channel or None
            validate_availability(skus, channel, nodes)
            if not request.include_future:
                results = await self._store.availability(skus, channel, nodes or None, request.include_nodes)
                return convert.availability_pb(results)
            # Availability by date starts from each node's ATP: read per node,
            # with the SKUs' inbound supply (concurrently: one pipeline on Redis).
            results, records = await asyncio.gather(
                self._store.availability(skus, channel, nodes or None, True), self._store.inbound(skus)
            )
            # Supply at the nodes where the channel has an allocation rule does
            # not count: it takes no backorders there (as Quote and Reserve).
            ruled = await self._promiser.ruled_nodes(channel) if channel is not None else frozenset()
            return convert.availability_pb(
                results, phased_availability(results, records, ruled), include_nodes=request.include_nodes
            )
        except Exception as exc:
            fail(context, exc)
            return None

    async def Quote(
        self, request: inventory_service_pb2.QuoteRequest, context: grpc.aio.ServicerContext
    ) -> inventory_service_pb2.QuoteResponse | None:
        # Read-only: validation needs the network (service levels, the pickup
        # store), so it runs inside the promiser, before the stock is read.
        try:
            channel, quote_request = convert.quote_request(request)
            return convert.quote_pb(await self._promiser.quote(channel, quote_request))
        except Exception as exc:
            fail(context, exc)
            return None

    async def FindInStores(
        self, request: inventory_service_pb2.FindInStoresRequest, context: grpc.aio.ServicerContext
    ) -> inventory_service_pb2.FindInStoresResponse | None:
        try:
            found = await self._promiser.find_in_stores(
                request.channel,
                request.store,
                request.sku,
                quantity=request.quantity or 1,
                limit=request.max_stores or DEFAULT_NEARBY_STORES,
            )
            return convert.find_in_stores_pb(found)
        except Exception as exc:
            fail(context, exc)
            return None


class SupplyServicer(supply_service_pb2_grpc.SupplyServiceServicer):
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        # Inbound ETAs are checked against the clock that dates quotes (tests pin it).
        self._clock = clock

    async def AdjustStock(
        self, request: supply_service_pb2.AdjustStockRequest, context: grpc.aio.ServicerContext
    ) -> supply_service_pb2.SupplyChangeResponse | None:
        return await self._apply(convert.adjust_ops, request, context)

    async def SetStock(
        self, request: supply_service_pb2.SetStockRequest, context: grpc.aio.ServicerContext
    ) -> supply_service_pb2.SupplyChangeResponse | None:
        return await self._apply(convert.set_stock_ops, request, context)

    async def SetSafetyStock(
        self, request: supply_service_pb2.SetSafetyStockRequest, context: grpc.aio.ServicerContext
    ) -> supply_service_pb2.SupplyChangeResponse | None:
        return await self._apply(convert.safety_stock_ops, request, context)

    async def _apply(
        self, to_ops: Callable[[Any], list[SupplyOp]], request: Any, context: grpc.aio.ServicerContext
    ) -> supply_service_pb2.SupplyChangeResponse | None:
        """The three supply RPCs differ only in how a change becomes a SupplyOp."""
        try:
            ops = to_ops(request)
            validate_supply(ops)
            check_deadline(context)
            changes = await self._store.apply_supply(ops)
            short = {c.level.sku for c in changes if c.applied and c.level.shortage > 0}
            # Rarely any: then whether inbound supply covers it (backorders) decides.
            expected = FutureSupply(await self._store.inbound(sorted(short))).expected() if short else None
            metrics.record_supply_changes(changes, expected)
            return convert.supply_pb(changes)
        except Exception as exc:
            fail(context, exc)
            return None

    async def UpsertInboundSupply(
        self, request: supply_service_pb2.UpsertInboundSupplyRequest, context: grpc.aio.ServicerContext
    ) -> supply_service_pb2.UpsertInboundSupplyResponse | None:
        try:
            records = convert.inbound_records(request)
            validate_inbound_records(records, self._clock())
            check_deadline(context)
            outcomes = await self._store.upsert_inbound(records)
            return convert.inbound_upsert_pb(records, outcomes)
        except Exception as exc:
            fail(context, exc)
            return None

    async def DeleteInboundSupply(
        self, request: supply_service_pb2.DeleteInboundSupplyRequest, context: grpc.aio.ServicerContext
    ) -> supply_service_pb2.DeleteInboundSupplyResponse | None:
        try:
            ids = list(request.ids)
            validate_inbound_ids(ids)
            check_deadline(context)
            return convert.inbound_delete_pb(ids, await self._store.remove_inbound(ids))
        except Exception as exc:
            fail(context, exc)
            return None

    async def ListInboundSupply(
        self, request: supply_service_pb2.ListInboundSupplyRequest, context: grpc.aio.ServicerContext
    ) -> supply_service_pb2.ListInboundSupplyResponse | None:
        try:
            sku, node, after, limit = convert.inbound_list_request(request)
            page = await self._store.list_inbound(sku=sku, node=node, after=after, limit=limit)
            return convert.inbound_list_pb(page, sku, node)
        except Exception as exc:
            fail(context, exc)
            return None


class NetworkServicer(network_service_pb2_grpc.NetworkServiceServicer):
    def __init__(self, store: Store, *, carriers: CarrierTable | None = None) -> None:
        self._store = store
        # The server's own carrier table (serve --carriers, else the sample):
        # in force while none is set through the API.
        self._carriers = carriers or default_carriers()

    async def UpsertNode(
        self, request: network_service_pb2.UpsertNodeRequest, context: grpc.aio.ServicerContext
    ) -> network_service_pb2.Node | None:
        try:
            node = convert.node_from_pb(request.node)
            validate_node(node, "node")
            check_deadline(context)
            return convert.node_pb(await self._store.upsert_node(node))
        except Exception as exc:
            fail(context, exc)
            return None

    async def UpsertChannel(
        self, request: network_service_pb2.UpsertChannelRequest, context: grpc.aio.ServicerContext
    ) -> network_service_pb2.Channel | None:
        try:
            channel = convert.channel_from_pb(request.channel)
            validate_channel(channel, "channel")
            check_deadline(context)
            return convert.channel_pb(await self._store.upsert_channel(channel))
        except InvalidArgument as exc:
            # The store names the channel's fields from the channel's point of
            # view (``nodes[2]``); the request nests them under ``channel``.
            exc.violations = tuple(
                v if v.field.startswith("channel.") else FieldViolation(f"channel.{v.field}", v.description)
                for v in exc.violations
            )
            fail(context, exc)
            return None
        except Exception as exc:
            fail(context, exc)
            return None

    async def ListNodes(
        self, request: network_service_pb2.ListNodesRequest, context: grpc.aio.ServicerContext
    ) -> network_service_pb2.ListNodesResponse | None:
        try:
            nodes = await self._store.list_nodes()
            return network_service_pb2.ListNodesResponse(nodes=[convert.node_pb(n) for n in nodes])
        except Exception as exc:
            fail(context, exc)
            return None

    async def ListChannels(
        self, request: network_service_pb2.ListChannelsRequest, context: grpc.aio.ServicerContext
    ) -> network_service_pb2.ListChannelsResponse | None:
        try:
            channels = await self._store.list_channels()
            return network_service_pb2.ListChannelsResponse(
                channels=[convert.channel_pb(c) for c in channels]
            )
        except Exception as exc:
            fail(context, exc)
            return None

    async def GetCarrierTable(
        self, request: network_service_pb2.GetCarrierTableRequest, context: grpc.aio.ServicerContext
    ) -> network_service_pb2.CarrierTable | None:
        try:
            return self._carrier_table_pb(await self._store.carrier_table())
        except Exception as exc:
            fail(context, exc)
            return None

    async def SetCarrierTable(
        self, request: network_service_pb2.SetCarrierTableRequest, context: grpc.aio.ServicerContext
    ) -> network_service_pb2.CarrierTable | None:
        try:
            violations: list[FieldViolation] = []
            document: dict[str, Any] | None = None
            expected: int | None = None
            if not request.HasField("carrier_table"):
                violations.append(FieldViolation("carrier_table", "the whole new table is required"))
            else:
                try:
                    document = convert.carrier_document(request.carrier_table, "carrier_table")
                except InvalidArgument as exc:
                    violations.extend(exc.violations)
                try:
                    expected = convert.carriers_etag(request.carrier_table.etag, "carrier_table.etag")
                except InvalidArgument as exc:
                    violations.extend(exc.violations)
            if violations:
                first = violations[0]
                more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
                raise InvalidArgument(
                    f"{first.field} {first.description}{more}", tuple(violations), reason="INVALID_CARRIERS"
                )
            check_deadline(context)
            record = await self._store.set_carrier_table(document, expected_version=expected)
            return self._carrier_table_pb(record)
        except Exception as exc:
            fail(context, exc)
            return None

    async def ResetCarrierTable(
        self, request: network_service_pb2.ResetCarrierTableRequest, context: grpc.aio.ServicerContext
    ) -> network_service_pb2.CarrierTable | None:
        try:
            expected = convert.carriers_etag(request.etag, "etag")
            check_deadline(context)
            record = await self._store.set_carrier_table(None, expected_version=expected)
            return self._carrier_table_pb(record)
        except Exception as exc:
            fail(context, exc)
            return None

    def _carrier_table_pb(self, record: CarrierRecord) -> network_service_pb2.CarrierTable:
        # A stored table passed this very check when it was set.
        table = self._carriers if record.document is None else parse_carriers(record.document)
        return convert.carrier_table_pb(table, record)


class AdminServicer(admin_service_pb2_grpc.AdminServiceServicer):
    def __init__(self, store: Store) -> None:
        self._store = store

    async def Audit(
        self, request: admin_service_pb2.AuditRequest, context: grpc.aio.ServicerContext
    ) -> admin_service_pb2.AuditResponse | None:
        try:
            return convert.audit_pb(await self._store.audit())
        except Exception as exc:
            fail(context, exc)
            return None

    async def Noop(
        self, request: admin_service_pb2.NoopRequest, context: grpc.aio.ServicerContext
    ) -> admin_service_pb2.NoopResponse | None:
        if not request.out_of_stock_sku:
            return _NOOP_RESPONSE
        # A sold-out reject's answer without its work: the flash-sale benchmark's baseline.
        try:
            validate_sku(request.out_of_stock_sku, "out_of_stock_sku")
            raise OutOfStock((Shortfall(0, request.out_of_stock_sku, 1, 0),))
        except Exception as exc:
            fail(context, exc)
            return None
