"""The RPC metrics interceptor: count, latency and in-flight per method and status code.

It covers the unary-unary methods of the engine's own services, like the other
interceptors (engine/service/interceptors.py): health checks and reflection are
left out so that probes never skew the engine's latency or error ratio.

It goes outermost in the chain, so what it sees is what the client got:
admission rejections (RESOURCE_EXHAUSTED) and request-id handling are inside
the measured time and codes.

The status code of a finished call comes from where grpc.aio keeps it:

- the handler returned: OK, unless it set another code with ``set_code``, which
  is how every engine error leaves a servicer (``errors.set_status``);
- the handler aborted (``abort``/``abort_with_status``): the code it aborted
  with, read from the context;
- the handler raised anything else: UNKNOWN, which is what grpc.aio answers;
- the handler was cancelled: DEADLINE_EXCEEDED if the call's deadline has
  passed, else CANCELLED (the client went away).

Per-call cost is a few microseconds (two clock reads, a gauge up and down, a
counter, a histogram observation), on label children resolved once per method.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc
import grpc.aio

from engine.observability import metrics

__all__ = ["MetricsInterceptor", "split_method"]

ENGINE_METHODS = "/inventory.v1."

_Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def split_method(method: str) -> tuple[str, str]:
    """``/inventory.v1.InventoryService/Reserve`` -> (``inventory.v1.InventoryService``, ``Reserve``)."""
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self, *, method_prefix: str = ENGINE_METHODS, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self._method_prefix = method_prefix
        self._clock = clock
        # method -> (handler we were given, handler we return): built once per method.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        if (
            handler is None
            or not method.startswith(self._method_prefix)
            or handler.request_streaming
            or handler.response_streaming
            or handler.unary_unary is None
        ):
            return handler
        wrapped = grpc.unary_unary_rpc_method_handler(
            self._wrap(method, handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    @staticmethod
    def declare(methods: Iterable[str]) -> None:
        """Export each method's OK count, latency and in-flight series at 0 before its first call.

        A series that first appears at 1 hides that call from ``rate()`` and
        ``increase()``; the server declares all its methods when it starts.
        """
        for method in methods:
            service, name = split_method(method)
            metrics.RPC_HANDLED.labels(service, name, "OK")
            metrics.RPC_DURATION.labels(service, name)
            metrics.RPC_IN_FLIGHT.labels(service, name)

    def _wrap(self, method: str, behavior: _Behavior) -> _Behavior:
        service, name = split_method(method)
        duration = metrics.RPC_DURATION.labels(service, name)
        in_flight = metrics.RPC_IN_FLIGHT.labels(service, name)
        handled = {grpc.StatusCode.OK: metrics.RPC_HANDLED.labels(service, name, "OK")}
        clock = self._clock
        ok = grpc.StatusCode.OK

        def count(code: grpc.StatusCode) -> None:
            counter = handled.get(code)
            if counter is None:
                counter = handled[code] = metrics.RPC_HANDLED.labels(service, name, code.name)
            counter.inc()

        async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            in_flight.inc()
            started = clock()
            code = ok
            try:
                response = await behavior(request, context)
                code = context.code() or ok
                return response
            except asyncio.CancelledError:
                remaining = context.time_remaining()
                expired = remaining is not None and remaining <= 0
                code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
                raise
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except BaseException:
                code = grpc.StatusCode.UNKNOWN
                raise
            finally:
                duration.observe(clock() - started)
                in_flight.dec()
                count(code)

        return observed
