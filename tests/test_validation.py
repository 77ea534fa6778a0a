"""Input limits: each one at its boundary (accepted) and just past it (rejected with its field path)."""

from __future__ import annotations

import pytest

from engine.core.errors import InvalidArgument
from engine.core.types import (
    MAX_AVAILABILITY_SKUS,
    MAX_LINES,
    MAX_ON_HAND,
    MAX_QUANTITY,
    MAX_TTL_S,
    MIN_TTL_S,
    Channel,
    LineRequest,
    Node,
    NodeType,
    ReserveRequest,
    SupplyKind,
    SupplyOp,
)
from engine.core.validation import (
    MAX_ADJUST_DELTA,
    MAX_CHANNEL_NODES,
    MAX_SUPPLY_CHANGES,
    is_valid_request_id,
    validate_availability,
    validate_channel,
    validate_extend,
    validate_line_change,
    validate_node,
    validate_reservation_id,
    validate_reserve,
    validate_supply,
)


def fields(exc_info: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [v.field for v in exc_info.value.violations]


def reserve(
    *,
    reservation_id: str = "cart-1",
    channel: str = "web",
    lines: tuple[LineRequest, ...] = (LineRequest("SKU-1", 1),),
    ttl_s: float = 60.0,
) -> ReserveRequest:
    return ReserveRequest(reservation_id, channel, lines, ttl_s)


# --------------------------------------------------------------------- ids

ID_OK = ["a", "x" * 128, "!~", "order:123/abc{}", "A-b_c.d"]
ID_BAD = ["", "x" * 129, "has space", "tab\t", "new\nline", "caf\u00e9", "\x7f", "ü"]


@pytest.mark.parametrize("value", ID_OK)
def test_reservation_id_accepted(value: str) -> None:
    validate_reservation_id(value)
    validate_reserve(reserve(reservation_id=value))
    assert is_valid_request_id(value)


@pytest.mark.parametrize("value", ID_BAD)
def test_reservation_id_rejected(value: str) -> None:
    with pytest.raises(InvalidArgument) as exc_info:
        validate_reservation_id(value)
    assert fields(exc_info) == ["reservation_id"]
    assert not is_valid_request_id(value)


KEY_OK = ["a", "s" * 64, "SKU-1/red:XL", "|~!"]
KEY_BAD = ["", "s" * 65, "a b", "{tag}", "a}", "é", "a\x00"]


@pytest.mark.parametrize("value", KEY_OK)
def test_sku_and_node_ids_accepted(value: str) -> None:
    validate_reserve(reserve(lines=(LineRequest(value, 1, value),)))


@pytest.mark.parametrize("value", KEY_BAD)
def test_sku_and_node_ids_rejected(value: str) -> None:
    with pytest.raises(InvalidArgument) as exc_info:
        validate_reserve(reserve(lines=(LineRequest(value, 1, value),)))
    assert fields(exc_info) == ["lines[0].sku", "lines[0].node"]


@pytest.mark.parametrize(
    "value", ["web", "app", "pos", "callcenter", "marketplace:a", "marketplace:" + "m" * 64]
)
def test_channel_ids_accepted(value: str) -> None:
    validate_reserve(reserve(channel=value))


@pytest.mark.parametrize(
    "value",
    [
        "",
        "WEB",
        "shop",
        "marketplace",
        "marketplace:",
        "marketplace:" + "m" * 65,
        "marketplace:a b",
        "marketplace:{x}",
    ],
)
def test_channel_ids_rejected(value: str) -> None:
    with pytest.raises(InvalidArgument) as exc_info:
        validate_reserve(reserve(channel=value))
    assert fields(exc_info) == ["channel"]


# ------------------------------------------------------------- reservations


@pytest.mark.parametrize("quantity", [1, MAX_QUANTITY])
def test_quantity_boundaries_accepted(quantity: int) -> None:
    validate_reserve(reserve(lines=(LineRequest("A", quantity),)))


@pytest.mark.parametrize("quantity", [0, -1, MAX_QUANTITY + 1])
def test_quantity_past_boundaries_rejected(quantity: int) -> None:
    with pytest.raises(InvalidArgument) as exc_info:
        validate_reserve(reserve(lines=(LineRequest("A", 1), LineRequest("B", quantity))))
    assert fields(exc_info) == ["lines[1].quantity"]


def test_line_count_limits() -> None:
    validate_reserve(reserve(lines=tuple(LineRequest(f"S{i}", 1) for i in range(MAX_LINES))))
    with pytest.raises(InvalidArgument) as exc_info:
        validate_reserve(reserve(lines=tuple(LineRequest(f"S{i}", 1) for i in range(MAX_LINES + 1))))
    assert fields(exc_info) == ["lines"]
    with pytest.raises(InvalidArgument) as exc_info:
        validate_reserve(reserve(lines=()))
    assert fields(exc_info) == ["lines"]


@pytest.mark.parametrize("ttl_s", [MIN_TTL_S, MAX_TTL_S])
def test_ttl_boundaries_accepted(ttl_s: float) -> None:
    validate_reserve(reserve(ttl_s=ttl_s))
    validate_extend("cart-1", ttl_s)


@pytest.mark.parametrize("ttl_s", [0.0, MIN_TTL_S - 1e-9, MAX_TTL_S + 1e-9, -5.0])
def test_ttl_past_boundaries_rejected(ttl_s: float) -> None:
    with pytest.raises(InvalidArgument) as exc_info:
        validate_reserve(reserve(ttl_s=ttl_s))
    assert fields(exc_info) == ["ttl"]
    with pytest.raises(InvalidArgument) as exc_info:
        validate_extend("cart-1", ttl_s)
    assert fields(exc_info) == ["ttl"]


def test_every_violation_is_reported_at_once() -> None:
    request = ReserveRequest(
        "",
        "shop",
        (LineRequest("ok", 1), LineRequest("bad sku", 0, "{node}"), LineRequest("x" * 65, MAX_QUANTITY + 1)),
        0.5,
    )
    with pytest.raises(InvalidArgument) as exc_info:
        validate_reserve(request)
    assert fields(exc_info) == [
        "reservation_id",
        "channel",
        "lines[1].sku",
        "lines[1].quantity",
        "lines[1].node",
        "lines[2].sku",
        "lines[2].quantity",
        "ttl",
    ]
    assert exc_info.value.reason == "INVALID_ARGUMENT"
    assert "and 7 more" in exc_info.value.message


def test_line_indexes_limits() -> None:
    validate_line_change("cart-1", [])
    validate_line_change("cart-1", [0, MAX_LINES - 1])
    validate_line_change("cart-1", list(range(MAX_LINES)))
    with pytest.raises(InvalidArgument) as exc_info:
        validate_line_change("cart-1", [0, MAX_LINES, -1])
    assert fields(exc_info) == ["line_indexes[1]", "line_indexes[2]"]
    with pytest.raises(InvalidArgument) as exc_info:
        validate_line_change("cart-1", [0] * (MAX_LINES + 1))
    assert fields(exc_info) == ["line_indexes"]
    with pytest.raises(InvalidArgument) as exc_info:
        validate_line_change("", [1])
    assert fields(exc_info) == ["reservation_id"]


# -------------------------------------------------------------- availability


def test_availability_sku_count_limits() -> None:
    validate_availability([f"S{i}" for i in range(MAX_AVAILABILITY_SKUS)], "web", [])
    with pytest.raises(InvalidArgument) as exc_info:
        validate_availability([f"S{i}" for i in range(MAX_AVAILABILITY_SKUS + 1)], "web", [])
    assert fields(exc_info) == ["skus"]
    with pytest.raises(InvalidArgument) as exc_info:
        validate_availability([], "web", [])
    assert fields(exc_info) == ["skus"]


def test_availability_allows_repeated_skus() -> None:
    validate_availability(["A", "A", "B", "A"], "web", [])


def test_availability_needs_a_channel_or_nodes() -> None:
    validate_availability(["A"], None, ["dc1"])
    validate_availability(["A"], "pos", ["store-1"])
    with pytest.raises(InvalidArgument) as exc_info:
        validate_availability(["A"], None, [])
    assert fields(exc_info) == ["channel"]


def test_availability_collects_bad_ids() -> None:
    with pytest.raises(InvalidArgument) as exc_info:
        validate_availability(["A", "", "{b}"], "nope", ["dc1", "bad node"])
    assert fields(exc_info) == ["skus[1]", "skus[2]", "channel", "nodes[1]"]


def test_availability_node_count_limit() -> None:
    validate_availability(["A"], None, [f"N{i}" for i in range(MAX_CHANNEL_NODES)])
    with pytest.raises(InvalidArgument) as exc_info:
        validate_availability(["A"], None, [f"N{i}" for i in range(MAX_CHANNEL_NODES + 1)])
    assert fields(exc_info) == ["nodes"]


# -------------------------------------------------------------------- supply


def adjust(delta: int, **kw: object) -> SupplyOp:
    return SupplyOp(
        SupplyKind.ADJUST, str(kw.get("sku", "A")), str(kw.get("node", "dc1")), delta, 0, kw.get("event_id")
    )  # type: ignore[arg-type]


def test_supply_batch_size_limits() -> None:
    validate_supply([adjust(1)] * MAX_SUPPLY_CHANGES)
    with pytest.raises(InvalidArgument) as exc_info:
        validate_supply([adjust(1)] * (MAX_SUPPLY_CHANGES + 1))
    assert fields(exc_info) == ["changes"]
    with pytest.raises(InvalidArgument) as exc_info:
        validate_supply([])
    assert fields(exc_info) == ["changes"]


@pytest.mark.parametrize("delta", [1, -1, MAX_ADJUST_DELTA, -MAX_ADJUST_DELTA])
def test_adjust_delta_accepted(delta: int) -> None:
    validate_supply([adjust(delta)])


@pytest.mark.parametrize("delta", [0, MAX_ADJUST_DELTA + 1, -MAX_ADJUST_DELTA - 1])
def test_adjust_delta_rejected(delta: int) -> None:
    with pytest.raises(InvalidArgument) as exc_info:
        validate_supply([adjust(5), adjust(delta)])
    assert fields(exc_info) == ["changes[1].delta"]


def test_set_stock_limits() -> None:
    validate_supply(
        [SupplyOp(SupplyKind.SET, "A", "dc1", 0, 1), SupplyOp(SupplyKind.SET, "A", "dc1", MAX_ON_HAND, 1)]
    )
    with pytest.raises(InvalidArgument) as exc_info:
        validate_supply(
            [
                SupplyOp(SupplyKind.SET, "A", "dc1", MAX_ON_HAND + 1, 1),
                SupplyOp(SupplyKind.SET, "A", "dc1", -1, 1),
                SupplyOp(SupplyKind.SET, "A", "dc1", 5, 0),
            ]
        )
    assert fields(exc_info) == ["changes[0].on_hand", "changes[1].on_hand", "changes[2].version"]


def test_safety_stock_limits() -> None:
    validate_supply(
        [SupplyOp(SupplyKind.SAFETY, "A", "dc1", 0), SupplyOp(SupplyKind.SAFETY, "A", "dc1", MAX_ON_HAND)]
    )
    with pytest.raises(InvalidArgument) as exc_info:
        validate_supply(
            [
                SupplyOp(SupplyKind.SAFETY, "A", "dc1", -1),
                SupplyOp(SupplyKind.SAFETY, "A", "dc1", MAX_ON_HAND + 1),
            ]
        )
    assert fields(exc_info) == ["changes[0].safety_stock", "changes[1].safety_stock"]


def test_supply_ids_and_event_ids() -> None:
    validate_supply([adjust(1, event_id="e" * 128)])
    with pytest.raises(InvalidArgument) as exc_info:
        validate_supply([adjust(1, sku="{a}", node="", event_id="e" * 129)])
    assert fields(exc_info) == ["changes[0].sku", "changes[0].node", "changes[0].event_id"]


# ------------------------------------------------------------------- network


def test_node_limits() -> None:
    validate_node(Node("dc-1", NodeType.DC, "n" * 256, "r" * 64, 90.0, -180.0, "Europe/Berlin"))
    validate_node(Node("s", NodeType.VENDOR, latitude=-90.0, longitude=180.0, time_zone="UTC"))
    with pytest.raises(InvalidArgument) as exc_info:
        validate_node(
            Node("a b", 0, "n" * 257, "r" * 65, 90.5, float("nan"), "Not a zone!"),  # type: ignore[arg-type]
        )
    assert fields(exc_info) == [
        "node.id",
        "node.type",
        "node.name",
        "node.region",
        "node.latitude",
        "node.longitude",
        "node.time_zone",
    ]


def test_channel_limits() -> None:
    validate_channel(Channel("marketplace:zalando", ("dc1", "store-1"), "Zalando"))
    validate_channel(Channel("web", tuple(f"N{i}" for i in range(MAX_CHANNEL_NODES))))
    with pytest.raises(InvalidArgument) as exc_info:
        validate_channel(Channel("shop", ("dc1", "bad node", "dc1"), "n" * 257))
    assert fields(exc_info) == ["channel.id", "channel.name", "channel.nodes[1]", "channel.nodes[2]"]
    with pytest.raises(InvalidArgument) as exc_info:
        validate_channel(Channel("web", tuple(f"N{i}" for i in range(MAX_CHANNEL_NODES + 1))))
    assert fields(exc_info) == ["channel.nodes"]
