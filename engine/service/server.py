"""Server bootstrap: one grpc.aio server with the engine's services, health and reflection.

:func:`serve` runs inside an event loop the caller owns and does not own the
store: the caller starts it before and closes it after, so the store's last
journal flush happens after the last RPC finished. :func:`run` is the
synchronous entry point for the CLI: it installs uvloop, opens the store,
serves, and closes the store.

Shutdown (SIGTERM, SIGINT or the ``stop`` event) is graceful: health turns
NOT_SERVING first so load balancers stop routing here, then the server stops
accepting calls and gives the ones in flight ``grace_s`` to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Sequence

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

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
from engine.config import ServerConfig
from engine.core.carriers import default_carriers
from engine.service.interceptors import (
    AdmissionInterceptor,
    AdmissionLimiter,
    RequestIdGenerator,
    RequestIdInterceptor,
)
from engine.service.quoting import StorePromiser
from engine.service.servicers import AdminServicer, InventoryServicer, NetworkServicer, SupplyServicer
from engine.store.base import Store

__all__ = ["SERVICE_NAMES", "EngineServer", "run", "serve"]

log = logging.getLogger("engine.service")

SERVICE_NAMES: tuple[str, ...] = (
    inventory_service_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name,
    supply_service_pb2.DESCRIPTOR.services_by_name["SupplyService"].full_name,
    network_service_pb2.DESCRIPTOR.services_by_name["NetworkService"].full_name,
    admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
)

# "/inventory.v1.InventoryService/Reserve"... : every RPC of the engine's own services.
ENGINE_METHODS: tuple[str, ...] = tuple(
    f"/{service.full_name}/{method.name}"
    for module in (inventory_service_pb2, supply_service_pb2, network_service_pb2, admin_service_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
)


class _GenericHandlersOnly:
    """What the generated ``add_*Servicer_to_server`` functions register, as generic handlers only.

    They also register each method on its own (``add_registered_method_handlers``).
    grpc.aio's server then keeps one pending request per registered method and,
    for every RPC it accepts, waits on all of them at once (``asyncio.wait``
    over some 30 futures, in its ``_server_main_loop``): a cost per call that
    grows with the API. The generic handler serves the same methods through
    one pending request.
    """

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        """Left out on purpose (see the class)."""


class EngineServer:
    """The grpc.aio server with everything registered; create it inside the running loop."""

    def __init__(
        self,
        config: ServerConfig,
        store: Store,
        *,
        interceptors: Sequence[grpc.aio.ServerInterceptor] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.limiter = AdmissionLimiter(config.max_concurrent_rpcs)
        if interceptors is None:
            # Imported here, not at the top: the serve --workers supervisor imports
            # this module and must choose multiprocess metrics before any metric exists.
            from engine.service.metrics_interceptor import MetricsInterceptor

            # Metrics outermost, so they count what clients got, admission
            # rejections included; request ids next, so a rejection carries one too.
            interceptors = (
                MetricsInterceptor(),
                RequestIdInterceptor(RequestIdGenerator()),
                AdmissionInterceptor(self.limiter),
            )
            MetricsInterceptor.declare(ENGINE_METHODS)
        self._server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", config.max_message_bytes),
                ("grpc.max_send_message_length", config.max_message_bytes),
                # Off by default: two embedded engines sharing a port would split
                # traffic between two different ledgers.
                ("grpc.so_reuseport", 1 if config.reuse_port else 0),
            ],
        )
        # Promise dates read this clock (tests pin it); the store keeps its own
        # for holds and expiry.
        promiser = StorePromiser(
            store, carriers=config.carriers or default_carriers(), clock=clock, impl=config.promise_impl
        )
        handlers = _GenericHandlersOnly(self._server)
        inventory_service_pb2_grpc.add_InventoryServiceServicer_to_server(
            InventoryServicer(store, promiser), handlers
        )
        supply_service_pb2_grpc.add_SupplyServiceServicer_to_server(
            SupplyServicer(store, clock=clock), handlers
        )
        network_service_pb2_grpc.add_NetworkServiceServicer_to_server(
            NetworkServicer(store, carriers=promiser.configured_carriers), handlers
        )
        admin_service_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(store), handlers)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, handlers)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )
        self.port = 0

    async def start(self) -> int:
        """Bind ``config.listen``, start serving, mark every service SERVING; returns the port."""
        try:
            port = self._server.add_insecure_port(self.config.listen)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {self.config.listen}: {exc}") from exc
        if port == 0:
            raise OSError(f"cannot listen on {self.config.listen}")
        self.port = port
        await self._server.start()
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving on %s (port %d)", self.config.listen, port)
        return port

    async def stop(self, grace_s: float | None = None) -> None:
        """Health NOT_SERVING, refuse new calls, let in-flight calls finish within the grace."""
        await self.health.enter_graceful_shutdown()
        await self._server.stop(self.config.grace_s if grace_s is None else grace_s)
        log.info("stopped")


async def serve(
    config: ServerConfig,
    store: Store,
    *,
    started: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    on_bound: Callable[[int], object] | None = None,
    clock: Callable[[], float] = time.time,
) -> None:
    """Serve until ``stop`` is set or the process gets SIGTERM/SIGINT, then shut down gracefully.

    ``on_bound`` receives the bound port (useful with ``listen`` port 0) just
    before ``started`` is set. The store must be started; it is left open.
    ``clock`` dates quotes (the store has its own for holds).

    Metrics: with ``config.metrics_port`` the metrics endpoint is bound first (a
    taken port fails the start before any gRPC traffic is accepted) and closed
    last; the store sampler (engine/observability/sampler.py) runs meanwhile.
    """
    from engine.observability import metrics
    from engine.observability.exposition import MetricsEndpoint, metrics_host
    from engine.observability.sampler import StoreSampler

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    endpoint = MetricsEndpoint(metrics_host(config), config.metrics_port) if config.metrics_port else None
    sampler: asyncio.Task[None] | None = None
    installed: list[signal.Signals] = []
    try:
        server = EngineServer(config, store, clock=clock)
        port = await server.start()
        ledger = getattr(store, "ledger", None)
        metrics.set_worker_info(
            worker=config.worker_index,
            store=store.kind,
            ledger=str(getattr(ledger, "implementation", "none")),
        )
        audit_interval_s = config.audit_interval_s if config.worker_index == 0 else 0.0
        sampler = loop.create_task(
            StoreSampler(store, audit_interval_s=audit_interval_s).run(), name="metrics-sampler"
        )
        for sig in (signal.SIGTERM, signal.SIGINT):
            # Only the main thread may own signal handlers; elsewhere (tests) the
            # caller stops us through the event.
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
        try:
            if on_bound is not None:
                on_bound(port)
            if started is not None:
                started.set()
            await stop.wait()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            await server.stop()
    finally:
        if sampler is not None:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        if endpoint is not None:
            endpoint.close()


StoreFactory = Callable[[], "Store | Awaitable[Store]"]


def run(config: ServerConfig, store_factory: StoreFactory) -> None:
    """Blocking entry point: the event loop (uvloop unless configured off), the store, the server.

    ``store_factory`` is called inside the loop (stores bind loop resources) and
    returns a *started* store, or an awaitable of one: the factory may need the
    store running before serving (e.g. to load demo data). The store is closed
    after the server stopped, so its last journal flush follows the last RPC.
    """

    async def main() -> None:
        made = store_factory()
        store: Store = await made if inspect.isawaitable(made) else made
        try:
            await serve(config, store)
        finally:
            await store.close()

    if config.uvloop:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
