"""The RPC metrics interceptor: every way a call ends is counted under the code the client saw.

A real engine server on loopback (engine.service.testing.ServerThread) with the
real embedded store, wrapped where a call must block or fail; metrics are read
from the process registry as differences (other tests share it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from engine._proto.inventory.v1 import admin_service_pb2 as admin_pb
from engine._proto.inventory.v1 import admin_service_pb2_grpc as admin_grpc
from engine._proto.inventory.v1 import inventory_service_pb2 as inv_pb
from engine._proto.inventory.v1 import inventory_service_pb2_grpc as inv_grpc
from engine._proto.inventory.v1 import network_service_pb2 as net_pb
from engine._proto.inventory.v1 import network_service_pb2_grpc as net_grpc
from engine._proto.inventory.v1 import supply_service_pb2 as sup_pb
from engine._proto.inventory.v1 import supply_service_pb2_grpc as sup_grpc
from engine.config import EmbeddedStoreConfig, ServerConfig
from engine.core.types import ReserveRequest
from engine.service.metrics_interceptor import MetricsInterceptor, split_method
from engine.service.testing import ServerThread
from engine.store.embedded import EmbeddedStore

INVENTORY = "inventory.v1.InventoryService"


class GatedStore:
    """The real store; ``reserve`` waits at ``gate`` and raises ``fail_with`` when set."""

    def __init__(self, inner: EmbeddedStore) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_with: BaseException | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def reserve(self, request: ReserveRequest) -> Any:
        if self.fail_with is not None:
            raise self.fail_with
        await self.gate.wait()
        return await self.inner.reserve(request)


def start(**config: Any) -> ServerThread:
    async def make() -> GatedStore:
        inner = EmbeddedStore(EmbeddedStoreConfig(data_dir=None, ledger_impl="pure"))
        await inner.start()
        return GatedStore(inner)

    server = ServerThread(make, ServerConfig(listen="127.0.0.1:0", grace_s=1.0, **config)).start()
    with grpc.insecure_channel(server.target) as channel:
        net_grpc.NetworkServiceStub(channel).UpsertNode(
            net_pb.UpsertNodeRequest(node=net_pb.Node(id="dc-1", type=net_pb.NODE_TYPE_DC))
        )
        net_grpc.NetworkServiceStub(channel).UpsertChannel(
            net_pb.UpsertChannelRequest(channel=net_pb.Channel(id="web", nodes=["dc-1"]))
        )
        sup_grpc.SupplyServiceStub(channel).AdjustStock(
            sup_pb.AdjustStockRequest(changes=[sup_pb.StockAdjustment(sku="A", node="dc-1", delta=5)])
        )
    return server


def store_of(server: ServerThread) -> GatedStore:
    assert isinstance(server.store, GatedStore)
    return server.store


def set_gate(server: ServerThread, is_open: bool) -> None:
    async def flip() -> None:
        (store_of(server).gate.set if is_open else store_of(server).gate.clear)()

    server.run(flip())


@pytest.fixture
def server() -> Iterator[ServerThread]:
    running = start()
    yield running
    set_gate(running, True)
    running.stop()


def handled(method: str, code: str, service: str = INVENTORY) -> float:
    labels = {"service": service, "method": method, "code": code}
    return REGISTRY.get_sample_value("inventory_rpc_handled_total", labels) or 0.0


def observed(method: str, service: str = INVENTORY) -> float:
    labels = {"service": service, "method": method}
    return REGISTRY.get_sample_value("inventory_rpc_duration_seconds_count", labels) or 0.0


def in_flight(method: str, service: str = INVENTORY) -> float:
    labels = {"service": service, "method": method}
    return REGISTRY.get_sample_value("inventory_rpc_in_flight", labels) or 0.0


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """A hang guard, not a measurement: the server records after the client has its answer."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def reserve(reservation_id: str, quantity: int = 1) -> inv_pb.ReserveRequest:
    return inv_pb.ReserveRequest(
        reservation_id=reservation_id,
        channel="web",
        lines=[inv_pb.LineRequest(sku="A", quantity=quantity)],
        ttl=Duration(seconds=600),
    )


def call_code(fn: Callable[[], Any]) -> grpc.StatusCode:
    try:
        fn()
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[attr-defined, no-any-return]
    return grpc.StatusCode.OK


def test_split_method() -> None:
    assert split_method("/inventory.v1.InventoryService/Reserve") == (INVENTORY, "Reserve")


def test_successes_and_refusals_are_counted_by_method_and_code(server: ServerThread) -> None:
    before = {
        "noop": handled("Noop", "OK", "inventory.v1.AdminService"),
        "ok": handled("Reserve", "OK"),
        "oos": handled("Reserve", "FAILED_PRECONDITION"),
        "bad": handled("Reserve", "INVALID_ARGUMENT"),
        "observed": observed("Reserve"),
    }
    with grpc.insecure_channel(server.target) as channel:
        inventory = inv_grpc.InventoryServiceStub(channel)
        admin = admin_grpc.AdminServiceStub(channel)
        for _ in range(3):
            admin.Noop(admin_pb.NoopRequest())
        assert call_code(lambda: inventory.Reserve(reserve("ok-1", 2))) is grpc.StatusCode.OK
        assert (
            call_code(lambda: inventory.Reserve(reserve("oos-1", 50))) is grpc.StatusCode.FAILED_PRECONDITION
        )
        assert call_code(lambda: inventory.Reserve(reserve("", 1))) is grpc.StatusCode.INVALID_ARGUMENT
    wait_for(lambda: observed("Reserve") == before["observed"] + 3)
    assert handled("Noop", "OK", "inventory.v1.AdminService") == before["noop"] + 3
    assert handled("Reserve", "OK") == before["ok"] + 1
    assert handled("Reserve", "FAILED_PRECONDITION") == before["oos"] + 1
    assert handled("Reserve", "INVALID_ARGUMENT") == before["bad"] + 1
    assert in_flight("Reserve") == 0


def test_an_unexpected_store_error_is_counted_internal(server: ServerThread) -> None:
    before = handled("Reserve", "INTERNAL")

    async def break_store() -> None:
        store_of(server).fail_with = RuntimeError("disk on fire")

    server.run(break_store())
    with grpc.insecure_channel(server.target) as channel:
        code = call_code(lambda: inv_grpc.InventoryServiceStub(channel).Reserve(reserve("boom")))
    assert code is grpc.StatusCode.INTERNAL
    wait_for(lambda: handled("Reserve", "INTERNAL") == before + 1)


def test_in_flight_counts_a_call_until_it_ends(server: ServerThread) -> None:
    base = in_flight("Reserve")
    set_gate(server, False)
    with grpc.insecure_channel(server.target) as channel:
        future = inv_grpc.InventoryServiceStub(channel).Reserve.future(reserve("slow-1"))
        wait_for(lambda: in_flight("Reserve") == base + 1)
        set_gate(server, True)
        future.result(timeout=10)
    wait_for(lambda: in_flight("Reserve") == base)


def test_admission_rejections_are_counted_resource_exhausted() -> None:
    server = start(max_concurrent_rpcs=1)
    try:
        before = handled("Reserve", "RESOURCE_EXHAUSTED")
        set_gate(server, False)
        with grpc.insecure_channel(server.target) as channel:
            stub = inv_grpc.InventoryServiceStub(channel)
            blocked = stub.Reserve.future(reserve("holder"))
            wait_for(lambda: in_flight("Reserve") >= 1)
            assert call_code(lambda: stub.Reserve(reserve("shed"))) is grpc.StatusCode.RESOURCE_EXHAUSTED
            set_gate(server, True)
            blocked.result(timeout=10)
        wait_for(lambda: handled("Reserve", "RESOURCE_EXHAUSTED") == before + 1)
    finally:
        set_gate(server, True)
        server.stop()


def test_a_call_past_its_deadline_is_counted_deadline_exceeded(server: ServerThread) -> None:
    before = handled("Reserve", "DEADLINE_EXCEEDED")
    set_gate(server, False)
    with grpc.insecure_channel(server.target) as channel:
        stub = inv_grpc.InventoryServiceStub(channel)
        code = call_code(lambda: stub.Reserve(reserve("late"), timeout=0.3))
    assert code is grpc.StatusCode.DEADLINE_EXCEEDED
    wait_for(lambda: handled("Reserve", "DEADLINE_EXCEEDED") == before + 1)
    wait_for(lambda: in_flight("Reserve") == 0)


def test_a_call_the_client_cancels_is_counted_cancelled(server: ServerThread) -> None:
    before = handled("Reserve", "CANCELLED")
    base = in_flight("Reserve")
    set_gate(server, False)
    with grpc.insecure_channel(server.target) as channel:
        future = inv_grpc.InventoryServiceStub(channel).Reserve.future(reserve("gone"))
        wait_for(lambda: in_flight("Reserve") == base + 1)
        future.cancel()
        wait_for(lambda: handled("Reserve", "CANCELLED") == before + 1)
    wait_for(lambda: in_flight("Reserve") == base)


def test_every_engine_method_is_exported_at_zero_from_the_start(server: ServerThread) -> None:
    """Series that appear only at their first call hide that call from rate()."""
    from engine.service.server import ENGINE_METHODS

    assert len(ENGINE_METHODS) >= 16
    for method in ENGINE_METHODS:
        service, name = split_method(method)
        labels = {"service": service, "method": name}
        assert REGISTRY.get_sample_value("inventory_rpc_handled_total", {**labels, "code": "OK"}) is not None
        assert REGISTRY.get_sample_value("inventory_rpc_duration_seconds_count", labels) is not None
        assert REGISTRY.get_sample_value("inventory_rpc_in_flight", labels) is not None


def test_health_checks_are_not_counted(server: ServerThread) -> None:
    with grpc.insecure_channel(server.target) as channel:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    services = {
        sample.labels["service"]
        for family in REGISTRY.collect()
        if family.name == "inventory_rpc_handled"
        for sample in family.samples
    }
    assert "grpc.health.v1.Health" not in services
    assert all(service.startswith("inventory.v1.") for service in services)


# ----------------------------------------------------- codes the servicers never produce


@pytest.mark.asyncio
async def test_handler_exceptions_and_set_code_are_counted_as_grpc_answers_them() -> None:
    """An exception that is not an abort is UNKNOWN on the wire; ``set_code`` is honoured."""

    async def boom(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise RuntimeError("unexpected")

    async def not_found(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        context.set_code(grpc.StatusCode.NOT_FOUND)
        return b""

    def same(data: bytes) -> bytes:
        return data

    handlers = {
        name: grpc.unary_unary_rpc_method_handler(fn, request_deserializer=same, response_serializer=same)
        for name, fn in (("Boom", boom), ("NotFound", not_found))
    }
    server = grpc.aio.server(interceptors=(MetricsInterceptor(method_prefix="/test.metrics."),))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.metrics.Probe", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    before = (
        handled("Boom", "UNKNOWN", "test.metrics.Probe"),
        handled("NotFound", "NOT_FOUND", "test.metrics.Probe"),
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for name, expected in (
                ("Boom", grpc.StatusCode.UNKNOWN),
                ("NotFound", grpc.StatusCode.NOT_FOUND),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as failure:
                    await channel.unary_unary(f"/test.metrics.Probe/{name}")(b"")
                assert failure.value.code() is expected
    finally:
        await server.stop(0)
    assert handled("Boom", "UNKNOWN", "test.metrics.Probe") == before[0] + 1
    assert handled("NotFound", "NOT_FOUND", "test.metrics.Probe") == before[1] + 1
