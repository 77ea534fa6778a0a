"""The server stack around the servicers: health, reflection, request ids, admission,
deadlines, unexpected errors, graceful shutdown, and ``run()`` under SIGTERM.

Real gRPC on loopback and the real embedded store; where a test needs the store
to be slow or to fail, a thin wrapper around the real store does that.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from engine._proto.inventory.v1 import admin_service_pb2 as admin_pb
from engine._proto.inventory.v1 import admin_service_pb2_grpc as admin_grpc
from engine._proto.inventory.v1 import inventory_service_pb2 as inv_pb
from engine._proto.inventory.v1 import inventory_service_pb2_grpc as inv_grpc
from engine._proto.inventory.v1 import network_service_pb2 as net_pb
from engine._proto.inventory.v1 import network_service_pb2_grpc as net_grpc
from engine._proto.inventory.v1 import supply_service_pb2 as sup_pb
from engine._proto.inventory.v1 import supply_service_pb2_grpc as sup_grpc
from engine.config import EmbeddedStoreConfig, ServerConfig
from engine.core.errors import StoreUnavailable
from engine.core.types import ReserveRequest
from engine.service.errors import decode_error
from engine.service.server import SERVICE_NAMES
from engine.service.servicers import InventoryServicer
from engine.service.testing import ServerThread
from engine.store.embedded import EmbeddedStore

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class WrappedStore:
    """The real store, with hooks: ``before_reserve`` runs (and may block or raise) first."""

    def __init__(self, inner: EmbeddedStore) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = 0
        self.fail_with: BaseException | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def reserve(self, request: ReserveRequest) -> Any:
        if self.fail_with is not None:
            raise self.fail_with
        self.waiting += 1
        try:
            await self.gate.wait()
        finally:
            self.waiting -= 1
        return await self.inner.reserve(request)


def wrapped_store_factory() -> Callable[[], Any]:
    async def make() -> WrappedStore:
        inner = EmbeddedStore(EmbeddedStoreConfig(data_dir=None, ledger_impl="pure"))
        await inner.start()
        return WrappedStore(inner)

    return make


def start_server(**config: Any) -> ServerThread:
    server = ServerThread(wrapped_store_factory(), ServerConfig(listen="127.0.0.1:0", **config)).start()
    with grpc.insecure_channel(server.target) as channel:
        net_grpc.NetworkServiceStub(channel).UpsertNode(
            net_pb.UpsertNodeRequest(node=net_pb.Node(id="dc-1", type=net_pb.NODE_TYPE_DC))
        )
        net_grpc.NetworkServiceStub(channel).UpsertChannel(
            net_pb.UpsertChannelRequest(channel=net_pb.Channel(id="web", nodes=["dc-1"]))
        )
        sup_grpc.SupplyServiceStub(channel).AdjustStock(
            sup_pb.AdjustStockRequest(changes=[sup_pb.StockAdjustment(sku="A", node="dc-1", delta=100)])
        )
    return server


def store_of(server: ServerThread) -> WrappedStore:
    assert isinstance(server.store, WrappedStore)
    return server.store


def set_gate(server: ServerThread, is_open: bool) -> None:
    async def flip() -> None:
        if is_open:
            store_of(server).gate.set()
        else:
            store_of(server).gate.clear()

    server.run(flip())


def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def reserve_request(reservation_id: str, quantity: int = 1) -> inv_pb.ReserveRequest:
    return inv_pb.ReserveRequest(
        reservation_id=reservation_id,
        channel="web",
        lines=[inv_pb.LineRequest(sku="A", quantity=quantity)],
        ttl=Duration(seconds=600),
    )


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    running = start_server()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target) as ch:
        yield ch


# ------------------------------------------------------ health, reflection


def test_health_serving_for_server_and_every_service(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", *SERVICE_NAMES):
        assert health.Check(health_pb2.HealthCheckRequest(service=name)).status == SERVING
    with pytest.raises(grpc.RpcError) as exc_info:
        health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert exc_info.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_and_describes_the_services(channel: grpc.Channel) -> None:
    db = ProtoReflectionDescriptorDatabase(channel)
    services = set(db.get_services())
    assert {
        "inventory.v1.InventoryService",
        "inventory.v1.SupplyService",
        "inventory.v1.NetworkService",
        "inventory.v1.AdminService",
        "grpc.health.v1.Health",
    } <= services
    proto = db.FindFileContainingSymbol("inventory.v1.InventoryService")
    assert proto.name == "inventory/v1/inventory_service.proto"
    assert [m.name for m in proto.service[0].method] == [
        "Reserve",
        "Commit",
        "Release",
        "Fulfill",
        "ExtendReservation",
        "GetReservation",
        "GetAvailability",
        "Quote",
        "FindInStores",
    ]


# ---------------------------------------------------------- failure modes


def test_unexpected_exception_is_internal_without_internals(
    server: ServerThread, channel: grpc.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    store_of(server).fail_with = RuntimeError("secret-detail-1234")
    try:
        with (
            caplog.at_level(logging.ERROR, logger="engine.service"),
            pytest.raises(grpc.RpcError) as exc_info,
        ):
            inv_grpc.InventoryServiceStub(channel).Reserve(
                reserve_request("boom"), metadata=(("x-request-id", "req-boom"),)
            )
    finally:
        store_of(server).fail_with = None
    details = decode_error(exc_info.value)
    assert (details.code, details.reason, details.request_id) == (
        grpc.StatusCode.INTERNAL,
        "INTERNAL",
        "req-boom",
    )
    assert "secret" not in details.message and "RuntimeError" not in details.message
    assert "req-boom" in details.message
    # ...but the operator's log has it all.
    assert any("req-boom" in r.getMessage() and r.exc_info for r in caplog.records)


def test_store_unavailable_is_retryable(server: ServerThread, channel: grpc.Channel) -> None:
    store_of(server).fail_with = StoreUnavailable("journal write failed", reason="JOURNAL_FAILED")
    try:
        with pytest.raises(grpc.RpcError) as exc_info:
            inv_grpc.InventoryServiceStub(channel).Reserve(reserve_request("unavailable"))
    finally:
        store_of(server).fail_with = None
    details = decode_error(exc_info.value)
    assert (details.code, details.reason) == (grpc.StatusCode.UNAVAILABLE, "JOURNAL_FAILED")
    assert details.retry_delay_s is not None and details.retry_delay_s > 0


class FakeContext:
    """Just enough of grpc.aio.ServicerContext to call a servicer method directly."""

    def __init__(self, time_remaining: float | None) -> None:
        self._time_remaining = time_remaining
        self.code: Any = None
        self.details: str | None = None
        self.trailing: tuple[tuple[str, str | bytes], ...] = (("x-request-id", "ctx-1"),)

    def time_remaining(self) -> float | None:
        return self._time_remaining

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self.trailing

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str | bytes], ...]) -> None:
        self.trailing = metadata


class CountingStore:
    def __init__(self) -> None:
        self.reserves = 0

    async def reserve(self, request: ReserveRequest) -> Any:
        self.reserves += 1
        raise AssertionError("must not be reached")


def test_a_call_past_its_deadline_never_reaches_the_store() -> None:
    store = CountingStore()
    servicer = InventoryServicer(store)  # type: ignore[arg-type]
    context = FakeContext(time_remaining=-0.001)
    assert asyncio.run(servicer.Reserve(reserve_request("late"), context)) is None  # type: ignore[arg-type]
    assert store.reserves == 0
    assert context.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert ("x-request-id", "ctx-1") in context.trailing
    assert any(key == "grpc-status-details-bin" for key, _ in context.trailing)


def test_deadline_while_waiting_leaves_no_hold(server: ServerThread, channel: grpc.Channel) -> None:
    inventory = inv_grpc.InventoryServiceStub(channel)
    set_gate(server, False)
    try:
        with pytest.raises(grpc.RpcError) as exc_info:
            inventory.Reserve(reserve_request("too-slow"), timeout=0.3)
        assert exc_info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        wait_for(lambda: store_of(server).waiting == 0)  # the handler was cancelled
    finally:
        set_gate(server, True)
    with pytest.raises(grpc.RpcError) as exc_info:
        inventory.GetReservation(inv_pb.GetReservationRequest(reservation_id="too-slow"))
    assert exc_info.value.code() == grpc.StatusCode.NOT_FOUND
    # The same id works afterwards: a retry after a deadline is safe.
    assert inventory.Reserve(reserve_request("too-slow")).state == inv_pb.RESERVATION_STATE_HELD


# ----------------------------------------------------- admission, shutdown


def test_admission_limit_sheds_load_but_not_health() -> None:
    server = start_server(max_concurrent_rpcs=2)
    try:
        with grpc.insecure_channel(server.target) as channel:
            inventory = inv_grpc.InventoryServiceStub(channel)
            set_gate(server, False)
            slow = [inventory.Reserve.future(reserve_request(f"slow-{i}")) for i in range(2)]
            wait_for(lambda: store_of(server).waiting == 2)
            with pytest.raises(grpc.RpcError) as exc_info:
                admin_grpc.AdminServiceStub(channel).Noop(admin_pb.NoopRequest())
            details = decode_error(exc_info.value)
            assert (details.code, details.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED")
            assert details.metadata["max_in_flight"] == "2"
            assert details.retry_delay_s is not None and details.request_id
            assert (
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest()).status == SERVING
            )
            set_gate(server, True)
            assert [f.result(timeout=5).state for f in slow] == [inv_pb.RESERVATION_STATE_HELD] * 2
            # The slots are free again.
            admin_grpc.AdminServiceStub(channel).Noop(admin_pb.NoopRequest())
    finally:
        server.stop()


def test_graceful_shutdown_finishes_in_flight_calls() -> None:
    server = start_server(grace_s=5.0)
    channel = grpc.insecure_channel(server.target)
    try:
        inventory = inv_grpc.InventoryServiceStub(channel)
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        assert next(watch).status == SERVING
        set_gate(server, False)
        in_flight = inventory.Reserve.future(reserve_request("in-flight"))
        wait_for(lambda: store_of(server).waiting == 1)
        stopper = threading.Thread(target=server.stop)
        stop_requested = time.monotonic()
        stopper.start()
        # Load balancers are told first...
        assert next(watch).status == NOT_SERVING
        watch.cancel()  # an open Watch stream would hold the shutdown for the whole grace
        # ...then new calls are refused while the admitted one still runs.
        wait_for(lambda: _refused(inventory))
        assert not in_flight.done()
        server.run(_open_gate(store_of(server)))
        assert in_flight.result(timeout=5).state == inv_pb.RESERVATION_STATE_HELD
        stopper.join(10)
        assert not stopper.is_alive()
        assert time.monotonic() - stop_requested < 4.0, "shutdown waited for the grace instead of the call"
    finally:
        channel.close()
        server.stop()


async def _open_gate(store: WrappedStore) -> None:
    store.gate.set()


def _refused(inventory: inv_grpc.InventoryServiceStub) -> bool:
    try:
        inventory.GetReservation(inv_pb.GetReservationRequest(reservation_id="x"), timeout=1)
    except grpc.RpcError as exc:
        return exc.code() == grpc.StatusCode.UNAVAILABLE
    return False


def test_port_in_use_fails_start(server: ServerThread) -> None:
    clash = ServerThread(wrapped_store_factory(), ServerConfig(listen=server.target))
    with pytest.raises(RuntimeError, match="failed to start"):
        clash.start()


@pytest.mark.parametrize(
    "kwargs",
    [{"listen": "nowhere"}, {"grace_s": -1}, {"max_concurrent_rpcs": 0}, {"max_message_bytes": 10}],
)
def test_server_config_is_checked(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ServerConfig(**kwargs)


# ------------------------------------------------------------- run() + SIGTERM

_RUN_SCRIPT = textwrap.dedent(
    """
    import sys
    from engine.config import EmbeddedStoreConfig, ServerConfig
    from engine.core.types import Node
    from engine.service.server import run
    from engine.store.embedded import EmbeddedStore

    async def make_store():
        store = EmbeddedStore(EmbeddedStoreConfig(data_dir=None, ledger_impl="pure"))
        await store.start()
        await store.upsert_node(Node("dc-run"))
        return store

    run(ServerConfig(listen=sys.argv[1], grace_s=2.0), make_store)
    print("clean exit", flush=True)
    """
)


def test_run_serves_until_sigterm_then_exits_cleanly() -> None:
    from engine.launcher import free_port

    target = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])),
    }
    process = subprocess.Popen(
        [sys.executable, "-c", _RUN_SCRIPT, target], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        with grpc.insecure_channel(target) as channel:
            grpc.channel_ready_future(channel).result(timeout=20)
            health = health_pb2_grpc.HealthStub(channel)
            assert (
                health.Check(health_pb2.HealthCheckRequest(), wait_for_ready=True, timeout=10).status
                == SERVING
            )
            nodes = net_grpc.NetworkServiceStub(channel).ListNodes(net_pb.ListNodesRequest()).nodes
            assert [n.id for n in nodes] == ["dc-run"]
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err.decode()
    assert b"clean exit" in out
