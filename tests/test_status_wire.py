"""The hand-written status trailer parses as the protobuf library's own messages."""

from __future__ import annotations

from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from hypothesis import given
from hypothesis import strategies as st

from engine._proto.inventory.v1 import error_details_pb2 as inventory_error_details_pb2
from engine.service import status_wire

# Any text, including multi-byte characters and strings long enough for
# multi-byte length prefixes (the shortest such string is 128 bytes).
texts = st.text(max_size=300)
metadata = st.dictionaries(texts, texts, max_size=6)


@given(
    code=st.integers(min_value=0, max_value=16),
    message=texts,
    reason=texts,
    domain=texts,
    info_metadata=metadata,
    request_id=texts,
    shortfall_skus=st.lists(texts, max_size=40),
    cached=st.integers(min_value=0, max_value=6),
)
def test_a_written_status_parses_as_the_librarys(
    code: int,
    message: str,
    reason: str,
    domain: str,
    info_metadata: dict[str, str],
    request_id: str,
    shortfall_skus: list[str],
    cached: int,
) -> None:
    shortfalls = inventory_error_details_pb2.OutOfStockDetail(
        shortfalls=[
            inventory_error_details_pb2.LineShortfall(line_index=i, sku=sku, requested=i + 1, available=i)
            for i, sku in enumerate(shortfall_skus)
        ]
    )
    retry = error_details_pb2.RetryInfo()
    retry.retry_delay.FromNanoseconds(100_000_000)
    # The last `cached` metadata entries come encoded beforehand, as an
    # OUT_OF_STOCK's own entries do.
    items = list(info_metadata.items())
    split = max(0, len(items) - cached)
    more = status_wire.map_entries(items[split:])
    written = (
        status_wire.status_head(code, message)
        + status_wire.details(
            [
                status_wire.error_info(reason, domain, items[:split], more),
                status_wire.request_info(request_id),
            ]
        )
        + status_wire.details([status_wire.packed(shortfalls), status_wire.packed(retry)])
    )

    expected = [
        error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=info_metadata),
        error_details_pb2.RequestInfo(request_id=request_id),
        shortfalls,
        retry,
    ]
    parsed = status_pb2.Status.FromString(written)
    assert (parsed.code, parsed.message) == (code, message)
    # Each detail unpacks to its type and value, as a client reading the
    # trailer does (compared as messages: a map's entries have no set order).
    assert len(parsed.details) == len(expected)
    for any_, message_ in zip(parsed.details, expected, strict=True):
        unpacked = type(message_)()
        assert any_.Unpack(unpacked), any_.type_url
        assert unpacked == message_


def test_lengths_past_one_byte_are_varints() -> None:
    # 300 bytes needs a two-byte length prefix (0xAC 0x02).
    written = status_wire.request_info("r" * 300)
    assert b"\xac\x02" + b"r" * 300 in written
    any_ = any_pb2.Any.FromString(written)
    info = error_details_pb2.RequestInfo()
    assert any_.Unpack(info) and info.request_id == "r" * 300
