"""SIGKILL the real server in the middle of concurrent gRPC traffic, restart it
on the same data directory, and check that nothing acknowledged was lost and
every invariant holds.

What "acknowledged" means here: the client got an OK answer. For calls that were
in flight when the process died the outcome is unknown, so the check accepts
either the state before or the state after that one call, and nothing else.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from dataclasses import dataclass, field

import grpc
import pytest
import uvloop
from google.protobuf.duration_pb2 import Duration

from engine._proto.inventory.v1 import (
    admin_service_pb2 as admin_pb,
)
from engine._proto.inventory.v1 import (
    admin_service_pb2_grpc as admin_grpc,
)
from engine._proto.inventory.v1 import (
    inventory_service_pb2 as inv_pb,
)
from engine._proto.inventory.v1 import (
    inventory_service_pb2_grpc as inv_grpc,
)
from engine._proto.inventory.v1 import (
    network_service_pb2 as net_pb,
)
from engine._proto.inventory.v1 import (
    network_service_pb2_grpc as net_grpc,
)
from engine._proto.inventory.v1 import (
    supply_service_pb2 as sup_pb,
)
from engine._proto.inventory.v1 import (
    supply_service_pb2_grpc as sup_grpc,
)
from engine.launcher import free_port, start_server, wait_serving

SKUS = [f"CRASH-{i}" for i in range(8)]
NODES = ["crash-dc", "crash-store"]
UNITS_PER_ROW = 60
HELD = inv_pb.RESERVATION_STATE_HELD
COMMITTED = inv_pb.RESERVATION_STATE_COMMITTED
FULFILLED = inv_pb.RESERVATION_STATE_FULFILLED
RELEASED = inv_pb.RESERVATION_STATE_RELEASED


@dataclass
class Ledger:
    """What the clients were told, and what was in flight when the server died."""

    acked: dict[str, int] = field(default_factory=dict)  # reservation id -> last acknowledged state
    pending: dict[str, int] = field(default_factory=dict)  # id -> state the in-flight call would set
    acked_events: dict[str, tuple[str, str, int]] = field(
        default_factory=dict
    )  # event id -> (sku, node, delta)
    pending_events: set[str] = field(default_factory=set)


async def _setup(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as ch:
        net = net_grpc.NetworkServiceStub(ch)
        for node in NODES:
            await net.UpsertNode(
                net_pb.UpsertNodeRequest(node=net_pb.Node(id=node, type=net_pb.NODE_TYPE_DC))
            )
        await net.UpsertChannel(net_pb.UpsertChannelRequest(channel=net_pb.Channel(id="web", nodes=NODES)))
        await sup_grpc.SupplyServiceStub(ch).SetStock(
            sup_pb.SetStockRequest(
                changes=[
                    sup_pb.StockCount(sku=s, node=n, on_hand=UNITS_PER_ROW, version=1)
                    for s in SKUS
                    for n in NODES
                ]
            )
        )


async def _client(target: str, worker: int, book: Ledger, rng: random.Random) -> None:
    """Reserve, then commit/release/fulfill, until the server goes away."""
    async with grpc.aio.insecure_channel(target) as ch:
        inv = inv_grpc.InventoryServiceStub(ch)
        sup = sup_grpc.SupplyServiceStub(ch)
        n = 0
        while True:
            n += 1
            rid = f"w{worker}-r{n}"
            lines = [
                inv_pb.LineRequest(sku=rng.choice(SKUS), quantity=rng.randint(1, 3))
                for _ in range(rng.randint(1, 2))
            ]
            book.pending[rid] = HELD
            try:
                await inv.Reserve(
                    inv_pb.ReserveRequest(
                        reservation_id=rid, channel="web", lines=lines, ttl=Duration(seconds=3600)
                    ),
                    timeout=5,
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:  # out of stock: no effect
                    del book.pending[rid]
                    continue
                return  # the server is gone; the outcome of this call is unknown
            del book.pending[rid]
            book.acked[rid] = HELD
            for method, target_state in rng.choice(
                [
                    [("Commit", COMMITTED), ("Fulfill", FULFILLED)],
                    [("Commit", COMMITTED)],
                    [("Release", RELEASED)],
                    [("Commit", COMMITTED), ("Release", RELEASED)],
                    [],
                ]
            ):
                book.pending[rid] = target_state
                try:
                    request = getattr(inv_pb, f"{method}Request")(reservation_id=rid)
                    await getattr(inv, method)(request, timeout=5)
                except grpc.aio.AioRpcError:
                    return
                del book.pending[rid]
                book.acked[rid] = target_state
            if rng.random() < 0.2:
                event = f"w{worker}-e{n}"
                change = (rng.choice(SKUS), rng.choice(NODES), rng.randint(1, 5))
                book.pending_events.add(event)
                try:
                    await sup.AdjustStock(
                        sup_pb.AdjustStockRequest(
                            changes=[
                                sup_pb.StockAdjustment(
                                    sku=change[0], node=change[1], delta=change[2], event_id=event
                                )
                            ]
                        ),
                        timeout=5,
                    )
                except grpc.aio.AioRpcError:
                    return
                book.pending_events.discard(event)
                book.acked_events[event] = change


async def _traffic_then_kill(target: str, pid: int, book: Ledger, kill_after_s: float) -> None:
    rng = random.Random(kill_after_s)
    clients = [
        asyncio.ensure_future(_client(target, w, book, random.Random(rng.random()))) for w in range(24)
    ]
    await asyncio.sleep(kill_after_s)
    assert len(book.acked) > 20, "traffic did not get going before the kill"
    os.kill(pid, signal.SIGKILL)
    await asyncio.wait_for(asyncio.gather(*clients), timeout=30)


async def _verify(target: str, book: Ledger) -> None:
    async with grpc.aio.insecure_channel(target) as ch:
        inv = inv_grpc.InventoryServiceStub(ch)
        for rid, state in book.acked.items():
            got = (await inv.GetReservation(inv_pb.GetReservationRequest(reservation_id=rid))).state
            allowed = {state, book.pending.get(rid, state)}
            assert got in allowed, f"{rid}: acknowledged {state}, found {got}"
        for rid in book.pending:
            if rid in book.acked:
                continue
            # A Reserve in flight at the kill either happened entirely or not at all.
            try:
                got = (await inv.GetReservation(inv_pb.GetReservationRequest(reservation_id=rid))).state
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.NOT_FOUND
            else:
                assert got == HELD
        # Every acknowledged supply event is there: redelivering it is a duplicate.
        sup = sup_grpc.SupplyServiceStub(ch)
        for event, (sku, node, delta) in book.acked_events.items():
            reply = await sup.AdjustStock(
                sup_pb.AdjustStockRequest(
                    changes=[sup_pb.StockAdjustment(sku=sku, node=node, delta=delta, event_id=event)]
                )
            )
            assert reply.results[0].duplicate, f"acknowledged event {event} was lost"
        audit = await admin_grpc.AdminServiceStub(ch).Audit(admin_pb.AuditRequest())
        assert audit.ok, list(audit.violations)
        assert not audit.shortages, "no correction went below holds, so there must be no shortage"
        avail = await inv.GetAvailability(
            inv_pb.GetAvailabilityRequest(skus=SKUS, channel="web", include_nodes=True)
        )
        for sku in avail.availabilities:
            for node in sku.nodes:
                assert node.reserved + node.committed <= node.on_hand, f"oversold {sku.sku}@{node.node}"


@pytest.mark.parametrize("kill_after_s", [0.8, 1.6])
def test_sigkill_mid_traffic_loses_nothing_acknowledged(tmp_path, kill_after_s):
    data_dir = str(tmp_path / "data")
    port = free_port()
    target = f"127.0.0.1:{port}"
    server = start_server(port, data_dir)
    book = Ledger()
    try:
        uvloop.run(wait_serving(target, process=server))
        uvloop.run(_setup(target))
        uvloop.run(_traffic_then_kill(target, server.pid, book, kill_after_s))
        assert server.wait(timeout=10) == -signal.SIGKILL
        port = free_port()
        target = f"127.0.0.1:{port}"
        server = start_server(port, data_dir)
        uvloop.run(wait_serving(target, process=server))
        uvloop.run(_verify(target, book))
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
