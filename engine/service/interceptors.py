"""Server interceptors: request ids and the admission limit.

Each interceptor gets its collaborators injected (an id generator, a limiter),
so tests and other deployments can swap them. Both wrap only unary-unary
handlers of the engine's own services (``/inventory.v1.*``): health checks and
reflection must answer even when the engine is saturated, and streaming
handlers (health Watch) are long-lived by design.

Per-call cost matters (a gRPC call is ~200 us of CPU; the benchmark compares
Reserve with a no-op through this same stack), so a method's wrapped handler is
built once and cached, and the per-call work is a metadata scan and a counter.
"""

from __future__ import annotations

import contextvars
import itertools
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from engine.core.validation import is_valid_request_id
from engine.service.errors import Overloaded, set_status, status_for

__all__ = [
    "REQUEST_ID_HEADER",
    "AdmissionInterceptor",
    "AdmissionLimiter",
    "RequestIdGenerator",
    "RequestIdInterceptor",
    "current_request_id",
]

REQUEST_ID_HEADER = "x-request-id"
ENGINE_METHODS = "/inventory.v1."

# The request id of the call being served (set by RequestIdInterceptor); each
# call runs in its own contextvars.Context, so calls never see each other's.
current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

_Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class _UnaryWrapper(grpc.aio.ServerInterceptor):
    """Wraps the unary-unary handlers of the covered methods, once per method."""

    def __init__(self, method_prefix: str = ENGINE_METHODS) -> None:
        self._method_prefix = method_prefix
        # method -> (handler we were given, handler we return)
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
            self._wrap(handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, behavior: _Behavior) -> _Behavior:
        raise NotImplementedError


class RequestIdGenerator:
    """Unique ids without a uuid4 per call: a random per-process prefix and a counter."""

    def __init__(self, prefix: str | None = None) -> None:
        self._prefix = prefix if prefix is not None else secrets.token_hex(8)
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}-{next(self._counter):x}"


class RequestIdInterceptor(_UnaryWrapper):
    """Takes the caller's ``x-request-id`` (or makes one) and returns it.

    The id goes back in the trailing metadata, on success and failure alike,
    and into :data:`current_request_id` for logs and error details. A caller's
    id that is not 1-128 printable ASCII characters is replaced by a fresh one
    rather than failing the call: tracing must never cost a sale.
    """

    def __init__(
        self,
        new_request_id: Callable[[], str] | None = None,
        *,
        header: str = REQUEST_ID_HEADER,
        method_prefix: str = ENGINE_METHODS,
    ) -> None:
        super().__init__(method_prefix)
        self._new_request_id = new_request_id or RequestIdGenerator()
        self._header = header

    def _wrap(self, behavior: _Behavior) -> _Behavior:
        header = self._header
        new_request_id = self._new_request_id
        set_current = current_request_id.set

        async def with_request_id(request: Any, context: grpc.aio.ServicerContext) -> Any:
            request_id = None
            for key, value in context.invocation_metadata() or ():
                if key == header:
                    request_id = value
                    break
            if request_id is None or not is_valid_request_id(request_id):
                request_id = new_request_id()
            set_current(request_id)
            context.set_trailing_metadata(((header, request_id),))
            return await behavior(request, context)

        return with_request_id


class AdmissionLimiter:
    """Counts calls in flight; the event loop is single-threaded, so a plain int will do."""

    def __init__(self, max_in_flight: int) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.rejected = 0


class AdmissionInterceptor(_UnaryWrapper):
    """Answers RESOURCE_EXHAUSTED / OVERLOADED once ``max_in_flight`` calls are running.

    Shedding at the door keeps latency bounded for the calls already admitted;
    a rejected call did nothing and may be retried (RetryInfo says when).
    """

    def __init__(self, limiter: AdmissionLimiter, *, method_prefix: str = ENGINE_METHODS) -> None:
        super().__init__(method_prefix)
        self._limiter = limiter

    def _wrap(self, behavior: _Behavior) -> _Behavior:
        limiter = self._limiter

        async def admitted(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if limiter.in_flight >= limiter.max_in_flight:
                limiter.rejected += 1
                error = Overloaded(f"more than {limiter.max_in_flight} calls in flight; retry later")
                status = status_for(
                    error,
                    request_id=current_request_id.get() or None,
                    metadata={"max_in_flight": str(limiter.max_in_flight)},
                    trailing_metadata=tuple(context.trailing_metadata() or ()),
                )
                set_status(context, status)  # not abort: shedding must stay cheap
                return None
            limiter.in_flight += 1
            try:
                return await behavior(request, context)
            finally:
                limiter.in_flight -= 1

        return admitted
