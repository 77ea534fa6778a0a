"""The error wire format, both ways: engine errors -> gRPC status, and back.

Server side, :func:`status_for` turns an exception into a ``grpc.Status``
carrying a ``google.rpc.Status`` (AIP-193) in the ``grpc-status-details-bin``
trailer. Its details are, in this order:

- always one ``google.rpc.ErrorInfo``: ``domain`` :data:`DOMAIN`, ``reason`` the
  error's UPPER_SNAKE_CASE reason, ``metadata`` with the ids involved;
- ``google.rpc.RequestInfo`` with the call's request id, when there is one;
- INVALID_ARGUMENT: ``google.rpc.BadRequest``, one field violation per problem,
  with field paths such as ``lines[3].quantity``;
- OUT_OF_STOCK: ``inventory.v1.OutOfStockDetail`` (every short line) and a
  ``google.rpc.PreconditionFailure`` violation per short line (type
  ``OUT_OF_STOCK``, subject ``lines[i]``) for clients that only know the
  standard types (that mirror stops earlier on very long orders);
- other FAILED_PRECONDITION: one ``PreconditionFailure`` violation (type the
  reason, subject the reservation id, or for NotAllowed what refused it:
  ``channels/web``);
- NOT_FOUND: ``google.rpc.ResourceInfo``;
- UNAVAILABLE and RESOURCE_EXHAUSTED: ``google.rpc.RetryInfo``.

Trailers are small: a default gRPC client refuses response metadata above
8 KiB, and a refused trailer turns a precise error into an opaque one. So the
message and the repeated details are capped (:data:`MESSAGE_LIMIT`,
:data:`DETAILS_BUDGET`): a 500-line order whose every line is short reports as
many lines as fit (about 50 with 64-character SKUs, 170 with 12-character
ones), and ``ErrorInfo.metadata`` says how many were left out
(``omitted_shortfalls``, ``omitted_field_violations``) next to the totals
(``short_lines``, ``field_violations``).

Client side, :func:`decode_error` reads all of that back from a failed call
(sync ``grpc.RpcError`` or ``grpc.aio.AioRpcError``) into :class:`ErrorDetails`,
and :func:`to_engine_error` rebuilds the engine exception.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import grpc
import grpc.aio
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from engine._proto.inventory.v1 import error_details_pb2 as inventory_error_details_pb2
from engine.core.errors import (
    EngineError,
    EtagMismatch,
    FieldViolation,
    IdempotencyMismatch,
    IllegalTransition,
    InvalidArgument,
    NodeNotEligible,
    NotAllowed,
    NotFound,
    OutOfStock,
    Shortfall,
    StockRejected,
    StoreUnavailable,
    UnknownChannel,
    UnknownNode,
)
from engine.service import status_wire

__all__ = [
    "DETAILS_BUDGET",
    "DOMAIN",
    "MESSAGE_LIMIT",
    "MIRROR_BUDGET",
    "DeadlineExceeded",
    "ErrorDetails",
    "InternalError",
    "Overloaded",
    "PreconditionViolation",
    "code_for",
    "decode_error",
    "set_status",
    "status_for",
    "to_engine_error",
]

DOMAIN = "inventory.engine"
# Characters of the human-readable message (sent twice: grpc-message and Status.message).
MESSAGE_LIMIT = 512
# Serialized bytes of the repeated details: BadRequest violations or OutOfStockDetail
# shortfalls, plus the PreconditionFailure mirror of the shortfalls. Base64 in the
# trailer makes them 4/3 bigger; together they keep the trailer well under 8 KiB
# (measured: a default client starts refusing trailers from ~9 KB of details).
DETAILS_BUDGET = 3584
MIRROR_BUDGET = 1024
RETRY_DELAY_S = 0.1
_DETAILS_KEY = "grpc-status-details-bin"
_REQUEST_ID_KEY = "x-request-id"


class DeadlineExceeded(EngineError):
    """The call's deadline passed before the engine touched the store."""

    reason = "DEADLINE_EXCEEDED"


class Overloaded(EngineError):
    """The admission limit is reached: nothing was done; retry after a pause."""

    reason = "OVERLOADED"


class InternalError(EngineError):
    """Rebuilt on the client from INTERNAL or any status the engine does not send."""

    reason = "INTERNAL"


# Most specific first: the first isinstance match wins.
_CODES: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (OutOfStock, grpc.StatusCode.FAILED_PRECONDITION),
    (IllegalTransition, grpc.StatusCode.FAILED_PRECONDITION),
    (StockRejected, grpc.StatusCode.FAILED_PRECONDITION),
    (NotAllowed, grpc.StatusCode.FAILED_PRECONDITION),
    (IdempotencyMismatch, grpc.StatusCode.ALREADY_EXISTS),
    (EtagMismatch, grpc.StatusCode.ABORTED),
    (StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
)


class _Status(grpc.Status):
    """A concrete grpc.Status (the grpc package only defines the interface)."""

    __slots__ = ("code", "details", "trailing_metadata")

    def __init__(
        self, code: grpc.StatusCode, details: str, trailing_metadata: tuple[tuple[str, str | bytes], ...]
    ) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


def code_for(exc: BaseException) -> grpc.StatusCode:
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def set_status(context: grpc.aio.ServicerContext, status: grpc.Status) -> None:
    """Answer the call with ``status``: its handler returns None next.

    grpc.aio sends a handler's non-OK code with its details and trailers and no
    message. ``context.abort_with_status`` would send the same, but it sends the
    status as a batch of its own and then unwinds an AbortError through
    grpc.aio: about 15 us more server CPU per refused call, measured side by
    side on a bare grpc.aio server answering the same precomputed status both
    ways (a throwaway script). Every sold-out reject takes this path.
    """
    context.set_code(status.code)
    context.set_details(status.details)
    context.set_trailing_metadata(status.trailing_metadata)


def status_for(
    exc: BaseException,
    *,
    request_id: str | None = None,
    metadata: Mapping[str, str] | None = None,
    trailing_metadata: Iterable[tuple[str, str | bytes]] = (),
) -> grpc.Status:
    """The gRPC status for ``exc``, with google.rpc.Status details.

    ``metadata`` goes into ErrorInfo.metadata (e.g. the reservation id);
    ``trailing_metadata`` (e.g. the request id the interceptor set) is kept next
    to the details trailer. Anything that is not an EngineError becomes
    INTERNAL without a word about what happened: internals stay in the log.
    """
    code = code_for(exc)
    info_metadata = dict(metadata) if metadata else {}
    more = extra = b""
    if type(exc) is OutOfStock:
        # Every sold-out reject comes here: all but the call's ids is cached.
        reason = exc.reason
        message, head, more, extra = _out_of_stock_parts(code.value[0], exc.shortfalls)
    else:
        if isinstance(exc, EngineError) and code is not grpc.StatusCode.INTERNAL:
            reason = exc.reason
            message = _capped(exc.message)
            extra = status_wire.details(status_wire.packed(d) for d in _details_for(exc, info_metadata))
        else:
            reason = "INTERNAL"
            message = _capped("internal error" + (f" (request id {request_id})" if request_id else ""))
        head = status_wire.status_head(code.value[0], message)
    anys = [status_wire.error_info(reason, DOMAIN, info_metadata.items(), more)]
    if request_id:
        anys.append(status_wire.request_info(request_id))
    # Serialized repeated fields concatenate: the other details go after these.
    details = head + status_wire.details(anys) + extra
    return _Status(code, message, (*trailing_metadata, (_DETAILS_KEY, details)))


def _capped(message: str) -> str:
    return message if len(message) <= MESSAGE_LIMIT else message[: MESSAGE_LIMIT - 3] + "..."


@functools.lru_cache(maxsize=1024)
def _out_of_stock_parts(code: int, shortfalls: tuple[Shortfall, ...]) -> tuple[str, bytes, bytes, bytes]:
    """What an OUT_OF_STOCK status says beyond the call's ids, encoded: its
    message, the Status's code and message, the ErrorInfo metadata entries it
    adds, and its other details. Every sold-out reject of a flash sale has the
    same shortfalls."""
    exc = OutOfStock(shortfalls)
    info_metadata: dict[str, str] = {}
    extra = status_wire.details(status_wire.packed(d) for d in _details_for(exc, info_metadata))
    message = _capped(exc.message)
    head = status_wire.status_head(code, message)
    return message, head, status_wire.map_entries(info_metadata.items()), extra


def _details_for(exc: EngineError, info_metadata: dict[str, str]) -> list[Message]:
    """The details after ErrorInfo and RequestInfo; adds to ``info_metadata``."""
    if isinstance(exc, InvalidArgument):
        if isinstance(exc, UnknownChannel):
            info_metadata["channel"] = exc.channel
        elif isinstance(exc, UnknownNode):
            info_metadata["node"] = exc.node
        elif isinstance(exc, NodeNotEligible):
            info_metadata["node"] = exc.node
            info_metadata["channel"] = exc.channel
        bad_request = error_details_pb2.BadRequest()
        budget = DETAILS_BUDGET
        for v in exc.violations:
            item = error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            budget -= item.ByteSize() + 3
            if budget < 0:
                break
            bad_request.field_violations.append(item)
        total = len(exc.violations)
        info_metadata["field_violations"] = str(total)
        if len(bad_request.field_violations) < total:
            info_metadata["omitted_field_violations"] = str(total - len(bad_request.field_violations))
        return [bad_request]
    if isinstance(exc, OutOfStock):
        detail = inventory_error_details_pb2.OutOfStockDetail()
        budget = DETAILS_BUDGET
        for s in exc.shortfalls:
            line = inventory_error_details_pb2.LineShortfall(
                line_index=s.line_index, sku=s.sku, requested=s.requested, available=s.available
            )
            budget -= line.ByteSize() + 3
            if budget < 0:
                break
            detail.shortfalls.append(line)
        # The standard mirror for generic clients: as many lines as its smaller budget allows.
        failure = error_details_pb2.PreconditionFailure()
        budget = MIRROR_BUDGET
        for s in exc.shortfalls:
            violation = error_details_pb2.PreconditionFailure.Violation(
                type="OUT_OF_STOCK",
                subject=f"lines[{s.line_index}]",
                description=f"SKU {s.sku}: requested {s.requested}, available {s.available}",
            )
            budget -= violation.ByteSize() + 3
            if budget < 0:
                break
            failure.violations.append(violation)
        total = len(exc.shortfalls)
        info_metadata["short_lines"] = str(total)
        if len(detail.shortfalls) < total:
            info_metadata["omitted_shortfalls"] = str(total - len(detail.shortfalls))
        return [detail, failure]
    if isinstance(exc, IllegalTransition | StockRejected | NotAllowed):
        subject = exc.subject if isinstance(exc, NotAllowed) else info_metadata.get("reservation_id", "")
        return [
            error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type=exc.reason, subject=subject, description=exc.message
                    )
                ]
            )
        ]
    if isinstance(exc, NotFound):
        rid = info_metadata.get("reservation_id")
        if rid is not None:
            return [
                error_details_pb2.ResourceInfo(
                    resource_type="inventory.v1.Reservation", resource_name=rid, description=exc.message
                )
            ]
        return []
    if isinstance(exc, StoreUnavailable | Overloaded):
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromNanoseconds(int(RETRY_DELAY_S * 1e9))
        return [retry]
    return []


# --------------------------------------------------------------------- client


@dataclass(frozen=True, slots=True)
class PreconditionViolation:
    type: str
    subject: str
    description: str


@dataclass(frozen=True, slots=True)
class ErrorDetails:
    """Everything a failed call said about why, decoded."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    field_violations: tuple[FieldViolation, ...] = ()
    shortfalls: tuple[Shortfall, ...] = ()
    precondition_violations: tuple[PreconditionViolation, ...] = ()
    resource_name: str = ""
    retry_delay_s: float | None = None
    request_id: str = ""

    @property
    def fields(self) -> tuple[str, ...]:
        """The paths of the offending fields, e.g. ``("lines[3].quantity",)``."""
        return tuple(v.field for v in self.field_violations)


def decode_error(error: grpc.RpcError) -> ErrorDetails:
    """Decode a failed call's status and google.rpc details.

    Works for sync ``grpc.RpcError`` (which are also ``grpc.Call``) and for
    ``grpc.aio.AioRpcError``. A call without details (a transport error, a
    server that is not this engine) decodes to its code and message alone.
    """
    code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
    message: str = error.details() or ""  # type: ignore[attr-defined]
    trailing = error.trailing_metadata() or ()  # type: ignore[attr-defined]
    raw: bytes | None = None
    request_id = ""
    for key, value in trailing:
        if key == _DETAILS_KEY:
            raw = value
        elif key == _REQUEST_ID_KEY:
            request_id = value
    if raw is None:
        return ErrorDetails(code=code, message=message, request_id=request_id)
    status = status_pb2.Status.FromString(raw)
    reason = domain = resource_name = ""
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    shortfalls: list[Shortfall] = []
    preconditions: list[PreconditionViolation] = []
    retry_delay_s: float | None = None
    for packed in status.details:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
        elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            packed.Unpack(bad)
            violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
        elif packed.Is(inventory_error_details_pb2.OutOfStockDetail.DESCRIPTOR):
            oos = inventory_error_details_pb2.OutOfStockDetail()
            packed.Unpack(oos)
            shortfalls.extend(
                Shortfall(s.line_index, s.sku, s.requested, s.available) for s in oos.shortfalls
            )
        elif packed.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            packed.Unpack(failure)
            preconditions.extend(
                PreconditionViolation(v.type, v.subject, v.description) for v in failure.violations
            )
        elif packed.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
            resource = error_details_pb2.ResourceInfo()
            packed.Unpack(resource)
            resource_name = resource.resource_name
        elif packed.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            packed.Unpack(retry)
            retry_delay_s = retry.retry_delay.ToNanoseconds() / 1e9
        elif packed.Is(error_details_pb2.RequestInfo.DESCRIPTOR):
            request_info = error_details_pb2.RequestInfo()
            packed.Unpack(request_info)
            request_id = request_info.request_id or request_id
    return ErrorDetails(
        code=code,
        message=status.message or message,
        reason=reason,
        domain=domain,
        metadata=metadata,
        field_violations=tuple(violations),
        shortfalls=tuple(shortfalls),
        precondition_violations=tuple(preconditions),
        resource_name=resource_name,
        retry_delay_s=retry_delay_s,
        request_id=request_id,
    )


def to_engine_error(details: ErrorDetails) -> EngineError:
    """The engine exception a decoded error stands for (for clients that prefer them)."""
    code, reason, message = details.code, details.reason or None, details.message
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        field_path = details.fields[0] if details.fields else ""
        if reason == UnknownChannel.reason and "channel" in details.metadata:
            return UnknownChannel(details.metadata["channel"], field_path or "channel")
        if reason == UnknownNode.reason and "node" in details.metadata:
            return UnknownNode(details.metadata["node"], field_path or "node")
        if reason == NodeNotEligible.reason and {"node", "channel"} <= details.metadata.keys():
            return NodeNotEligible(
                details.metadata["node"], details.metadata["channel"], field_path or "node"
            )
        return InvalidArgument(message, details.field_violations, reason=reason)
    if code is grpc.StatusCode.FAILED_PRECONDITION:
        if reason == OutOfStock.reason:
            return OutOfStock(details.shortfalls)
        if reason in ("NEGATIVE_ON_HAND", "ON_HAND_LIMIT", StockRejected.reason):
            return StockRejected(message, reason=reason)
        if reason in ("BACKORDER_NOT_ALLOWED", NotAllowed.reason):
            return NotAllowed(message, reason=reason)
        return IllegalTransition(message, reason=reason)
    simple: dict[grpc.StatusCode, type[EngineError]] = {
        grpc.StatusCode.NOT_FOUND: NotFound,
        grpc.StatusCode.ALREADY_EXISTS: IdempotencyMismatch,
        grpc.StatusCode.ABORTED: EtagMismatch,
        grpc.StatusCode.UNAVAILABLE: StoreUnavailable,
        grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
        grpc.StatusCode.RESOURCE_EXHAUSTED: Overloaded,
    }
    return simple.get(code, InternalError)(message, reason=reason)
