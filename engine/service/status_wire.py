"""The ``grpc-status-details-bin`` trailer, written in protobuf's wire format.

Every refused call answers with a google.rpc.Status whose details start with an
ErrorInfo carrying the call's ids and a RequestInfo with its request id. Those
two change with every call, so they cannot be cached, and building them as
protobuf objects (construct, fill the map, pack each into an Any, serialize)
was most of what a refusal cost the server beyond gRPC's own error answer.
Measured on the engine's failing no-op (the refusal `bench flash-sale`
compares against) as server CPU per call above the OK no-op's, alternating
phases on one server (a throwaway script): about 16 us with a status computed
once, about 51 us building it per call with protobuf objects (the
OUT_OF_STOCK details already cached), about 38 us writing it here. An
OUT_OF_STOCK's code, message and own ErrorInfo entries are also kept encoded
(``errors._out_of_stock_parts``), so a sold-out reject writes only its ids.

The messages involved are flat (strings, one int32, a string map), so writing
their bytes directly is a few concatenations. Anything richer (BadRequest,
OutOfStockDetail, ...) is still built with the protobuf library and packed
here (:func:`packed`). tests/test_status_wire.py parses what these functions
write with the protobuf library and compares it with the same messages built
there.
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.message import Message

__all__ = ["details", "error_info", "map_entries", "packed", "request_info", "status_head"]

_TYPE_URL_PREFIX = "type.googleapis.com/"
_ERROR_INFO_URL = (_TYPE_URL_PREFIX + "google.rpc.ErrorInfo").encode()
_REQUEST_INFO_URL = (_TYPE_URL_PREFIX + "google.rpc.RequestInfo").encode()

# Tags of the fields written here: (field number << 3) | wire type.
_VARINT_1 = 0x08  # Status.code
_BYTES_1 = 0x0A  # ErrorInfo.reason, RequestInfo.request_id, Any.type_url, map entry key
_BYTES_2 = 0x12  # Status.message, ErrorInfo.domain, Any.value, map entry value
_BYTES_3 = 0x1A  # Status.details, ErrorInfo.metadata

_ONE_BYTE = [bytes((n,)) for n in range(128)]


def _varint(n: int) -> bytes:
    if n < 128:
        return _ONE_BYTE[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field; an empty one is left out, as proto3 serializers do."""
    if not payload:
        return b""
    return _ONE_BYTE[tag] + _varint(len(payload)) + payload


def _any(type_url: bytes, value: bytes) -> bytes:
    return _field(_BYTES_1, type_url) + _field(_BYTES_2, value)


def map_entries(metadata: Iterable[tuple[str, str]]) -> bytes:
    """ErrorInfo.metadata entries, to pass to :func:`error_info` (cacheable)."""
    out = b""
    for key, value in metadata:
        # A map entry is a message of its own (key = 1, value = 2) whose
        # fields the library writes even when empty.
        k, v = key.encode(), value.encode()
        entry = _ONE_BYTE[_BYTES_1] + _varint(len(k)) + k + _ONE_BYTE[_BYTES_2] + _varint(len(v)) + v
        out += _ONE_BYTE[_BYTES_3] + _varint(len(entry)) + entry
    return out


def error_info(reason: str, domain: str, metadata: Iterable[tuple[str, str]], more: bytes = b"") -> bytes:
    """google.protobuf.Any holding ``google.rpc.ErrorInfo``; ``more``: further
    metadata entries already encoded by :func:`map_entries`."""
    body = _field(_BYTES_1, reason.encode()) + _field(_BYTES_2, domain.encode())
    body += map_entries(metadata) + more
    return _any(_ERROR_INFO_URL, body)


def request_info(request_id: str) -> bytes:
    """google.protobuf.Any holding ``google.rpc.RequestInfo`` (no serving data)."""
    return _any(_REQUEST_INFO_URL, _field(_BYTES_1, request_id.encode()))


def packed(detail: Message) -> bytes:
    """google.protobuf.Any holding ``detail``, as ``Any.Pack`` would."""
    url = (_TYPE_URL_PREFIX + detail.DESCRIPTOR.full_name).encode()
    return _any(url, detail.SerializeToString())


def details(anys: Iterable[bytes]) -> bytes:
    """``Status.details`` entries for ``anys``; serialized repeated fields
    concatenate, so these can be cached and appended after a :func:`status_head`
    and the call's own details."""
    return b"".join(_ONE_BYTE[_BYTES_3] + _varint(len(a)) + a for a in anys)


def status_head(code: int, message: str) -> bytes:
    """The start of a ``google.rpc.Status``: its code and message (cacheable);
    the details follow (:func:`details`)."""
    head = _ONE_BYTE[_VARINT_1] + _varint(code) if code else b""
    return head + _field(_BYTES_2, message.encode())
