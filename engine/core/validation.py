"""Input limits, checked at the edge before anything reaches a store.

The ledgers trust their inputs (they check stock, not shapes), so every request
passes through one of these functions first. Each function looks at the whole
request and raises one :class:`~engine.core.errors.InvalidArgument` listing every
violation, each with the path of the offending field as the API spells it
(``lines[3].quantity``, ``changes[0].event_id``): a client fixes all of them
in one round trip instead of one per call.

The limits:

- reservation, event and request ids: 1-128 printable ASCII characters, no
  whitespace (``!`` to ``~``);
- SKU and node ids: 1-64 of the same characters except ``{`` and ``}`` (Redis
  Cluster hash tags are built from them);
- channel ids: ``web``, ``app``, ``pos``, ``callcenter`` or ``marketplace:<name>``
  with ``<name>`` a valid node id;
- quantities 1..1e9, at most 500 lines per reservation, TTL 1 s to 7 days,
  line indexes 0..499 and at most 500 of them;
- availability: 1..10,000 SKUs per call. Repeated SKUs are allowed: the answer
  is positional (entry ``i`` answers ``skus[i]``), which clients batching
  several carts rely on, and a repeat costs no more than any other SKU;
- supply batches: 1..1,000 changes; SetStock on_hand 0..1e12 and version >= 1;
  an adjustment's delta non-zero with ``|delta| <= 1e9``; safety stock 0..1e12.

Whether a channel or node *exists* is the store's business (it raises
UnknownChannel / UnknownNode, which are InvalidArgument too).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from engine.core.allocation_rules import rule_violations
from engine.core.errors import FieldViolation, InvalidArgument
from engine.core.network import node_violations
from engine.core.types import (
    MAX_AVAILABILITY_SKUS,
    MAX_LINES,
    MAX_ON_HAND,
    MAX_QUANTITY,
    MAX_TTL_S,
    MIN_TTL_S,
    Channel,
    Node,
    NodeType,
    ReserveRequest,
    SupplyKind,
    SupplyOp,
)

__all__ = [
    "MAX_ADJUST_DELTA",
    "MAX_CHANNEL_NODES",
    "MAX_ID_LENGTH",
    "MAX_KEY_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_REGION_LENGTH",
    "MAX_SUPPLY_CHANGES",
    "channel_violations",
    "is_valid_request_id",
    "validate_availability",
    "validate_channel",
    "validate_extend",
    "validate_line_change",
    "validate_node",
    "validate_reservation_id",
    "validate_reserve",
    "validate_supply",
]

MAX_ID_LENGTH = 128
MAX_KEY_LENGTH = 64
MAX_SUPPLY_CHANGES = 1_000
MAX_ADJUST_DELTA = MAX_QUANTITY
MAX_CHANNEL_NODES = MAX_AVAILABILITY_SKUS
MAX_NAME_LENGTH = 256
MAX_REGION_LENGTH = 64

# Printable ASCII without space is exactly '!'..'~'.
_ID = re.compile(rf"[!-~]{{1,{MAX_ID_LENGTH}}}")
# The same without '{' (0x7b) and '}' (0x7d).
_KEY = re.compile(rf"[!-z|~]{{1,{MAX_KEY_LENGTH}}}")
_CHANNEL = re.compile(rf"web|app|pos|callcenter|marketplace:[!-z|~]{{1,{MAX_KEY_LENGTH}}}")
_TIME_ZONE = re.compile(r"[A-Za-z0-9_+\-/]{1,64}")

_ID_RULE = f"must be 1-{MAX_ID_LENGTH} printable ASCII characters without whitespace"
_KEY_RULE = f"must be 1-{MAX_KEY_LENGTH} printable ASCII characters without whitespace, '{{' or '}}'"
_CHANNEL_RULE = (
    "must be web, app, pos, callcenter or marketplace:<name>, "
    f"<name> being 1-{MAX_KEY_LENGTH} printable ASCII characters without whitespace, '{{' or '}}'"
)


def is_valid_request_id(value: str) -> bool:
    """True for a usable ``x-request-id`` (the same rule as reservation ids)."""
    return _ID.fullmatch(value) is not None


def channel_violations(channel: str, field: str = "channel") -> list[FieldViolation]:
    """What is wrong with a channel id's form (whether it exists is the store's business)."""
    if _CHANNEL.fullmatch(channel) is None:
        return [_id_violation(field, channel, _CHANNEL_RULE)]
    return []


def validate_reservation_id(reservation_id: str) -> None:
    """For the calls that only name a reservation (Commit, GetReservation)."""
    if _ID.fullmatch(reservation_id) is None:
        _fail([_id_violation("reservation_id", reservation_id, _ID_RULE)])


def validate_reserve(request: ReserveRequest) -> None:
    v: list[FieldViolation] = []
    if _ID.fullmatch(request.reservation_id) is None:
        v.append(_id_violation("reservation_id", request.reservation_id, _ID_RULE))
    if _CHANNEL.fullmatch(request.channel) is None:
        v.append(_id_violation("channel", request.channel, _CHANNEL_RULE))
    lines = request.lines
    if not lines:
        v.append(FieldViolation("lines", "at least one line is required"))
    elif len(lines) > MAX_LINES:
        v.append(FieldViolation("lines", f"at most {MAX_LINES} lines, got {len(lines)}"))
    key = _KEY.fullmatch
    for i, (sku, quantity, node) in enumerate(lines):
        if key(sku) is None:
            v.append(_id_violation(f"lines[{i}].sku", sku, _KEY_RULE))
        if not 1 <= quantity <= MAX_QUANTITY:
            v.append(FieldViolation(f"lines[{i}].quantity", f"must be 1..{MAX_QUANTITY}, got {quantity}"))
        if node is not None and key(node) is None:
            v.append(_id_violation(f"lines[{i}].node", node, _KEY_RULE))
    _check_ttl(v, "ttl", request.ttl_s)
    if v:
        _fail(v)


def validate_line_change(reservation_id: str, line_indexes: Sequence[int]) -> None:
    """Release and Fulfill: a reservation id and optional line indexes (empty = all)."""
    v: list[FieldViolation] = []
    if _ID.fullmatch(reservation_id) is None:
        v.append(_id_violation("reservation_id", reservation_id, _ID_RULE))
    if len(line_indexes) > MAX_LINES:
        v.append(FieldViolation("line_indexes", f"at most {MAX_LINES} indexes, got {len(line_indexes)}"))
    for i, index in enumerate(line_indexes):
        if not 0 <= index < MAX_LINES:
            v.append(FieldViolation(f"line_indexes[{i}]", f"must be 0..{MAX_LINES - 1}, got {index}"))
    if v:
        _fail(v)


def validate_extend(reservation_id: str, ttl_s: float | None) -> None:
    v: list[FieldViolation] = []
    if _ID.fullmatch(reservation_id) is None:
        v.append(_id_violation("reservation_id", reservation_id, _ID_RULE))
    _check_ttl(v, "ttl", ttl_s)
    if v:
        _fail(v)


def validate_sku(sku: str, field: str = "sku") -> None:
    if _KEY.fullmatch(sku) is None:
        _fail([_id_violation(field, sku, _KEY_RULE)])


def validate_availability(skus: Sequence[str], channel: str | None, nodes: Sequence[str]) -> None:
    v: list[FieldViolation] = []
    if not skus:
        v.append(FieldViolation("skus", "at least one SKU is required"))
    elif len(skus) > MAX_AVAILABILITY_SKUS:
        v.append(FieldViolation("skus", f"at most {MAX_AVAILABILITY_SKUS} SKUs, got {len(skus)}"))
    key = _KEY.fullmatch
    for i, sku in enumerate(skus):
        if key(sku) is None:
            v.append(_id_violation(f"skus[{i}]", sku, _KEY_RULE))
    if channel is not None and _CHANNEL.fullmatch(channel) is None:
        v.append(_id_violation("channel", channel, _CHANNEL_RULE))
    if len(nodes) > MAX_CHANNEL_NODES:
        v.append(FieldViolation("nodes", f"at most {MAX_CHANNEL_NODES} nodes, got {len(nodes)}"))
    for i, node in enumerate(nodes):
        if key(node) is None:
            v.append(_id_violation(f"nodes[{i}]", node, _KEY_RULE))
    if channel is None and not nodes:
        v.append(FieldViolation("channel", "give a channel, nodes, or both"))
    if v:
        _fail(v)


# The request field that carries SupplyOp.value, per kind.
_VALUE_FIELD = {
    SupplyKind.ADJUST: "delta",
    SupplyKind.SET: "on_hand",
    SupplyKind.SAFETY: "safety_stock",
    SupplyKind.SAFETY_DEFAULT: "safety_stock",
}


def validate_supply(ops: Sequence[SupplyOp]) -> None:
    """A batch of supply changes, as the ``changes`` field of a Supply request."""
    v: list[FieldViolation] = []
    if not ops:
        v.append(FieldViolation("changes", "at least one change is required"))
    elif len(ops) > MAX_SUPPLY_CHANGES:
        v.append(FieldViolation("changes", f"at most {MAX_SUPPLY_CHANGES} changes, got {len(ops)}"))
    key = _KEY.fullmatch
    for i, (kind, sku, node, value, version, event_id) in enumerate(ops):
        at = f"changes[{i}]"
        if key(sku) is None:
            v.append(_id_violation(f"{at}.sku", sku, _KEY_RULE))
        if key(node) is None:
            v.append(_id_violation(f"{at}.node", node, _KEY_RULE))
        if event_id is not None and _ID.fullmatch(event_id) is None:
            v.append(_id_violation(f"{at}.event_id", event_id, _ID_RULE))
        value_field = f"{at}.{_VALUE_FIELD.get(kind, 'value')}"
        if kind == SupplyKind.ADJUST:
            if value == 0:
                v.append(FieldViolation(value_field, "must not be zero"))
            elif abs(value) > MAX_ADJUST_DELTA:
                v.append(FieldViolation(value_field, f"must be within ±{MAX_ADJUST_DELTA}, got {value}"))
        elif kind == SupplyKind.SET:
            if not 0 <= value <= MAX_ON_HAND:
                v.append(FieldViolation(value_field, f"must be 0..{MAX_ON_HAND}, got {value}"))
            if version < 1:
                v.append(FieldViolation(f"{at}.version", f"must be at least 1, got {version}"))
        elif kind == SupplyKind.SAFETY:
            if not 0 <= value <= MAX_ON_HAND:
                v.append(FieldViolation(value_field, f"must be 0..{MAX_ON_HAND}, got {value}"))
        elif kind == SupplyKind.SAFETY_DEFAULT:
            if value != 0:
                v.append(FieldViolation(value_field, f"must be 0 when use_node_default is set, got {value}"))
        else:
            v.append(FieldViolation(at, f"unknown supply kind {kind!r}"))
    if v:
        _fail(v)


def validate_node(node: Node, prefix: str = "node") -> None:
    v: list[FieldViolation] = []
    if _KEY.fullmatch(node.id) is None:
        v.append(_id_violation(f"{prefix}.id", node.id, _KEY_RULE))
    if node.type not in _NODE_TYPES:
        v.append(FieldViolation(f"{prefix}.type", "must be DC, STORE or VENDOR"))
    if len(node.name) > MAX_NAME_LENGTH:
        v.append(FieldViolation(f"{prefix}.name", f"at most {MAX_NAME_LENGTH} characters"))
    if len(node.region) > MAX_REGION_LENGTH:
        v.append(FieldViolation(f"{prefix}.region", f"at most {MAX_REGION_LENGTH} characters"))
    if not (math.isfinite(node.latitude) and -90.0 <= node.latitude <= 90.0):
        v.append(FieldViolation(f"{prefix}.latitude", f"must be -90..90, got {node.latitude}"))
    if not (math.isfinite(node.longitude) and -180.0 <= node.longitude <= 180.0):
        v.append(FieldViolation(f"{prefix}.longitude", f"must be -180..180, got {node.longitude}"))
    if _TIME_ZONE.fullmatch(node.time_zone) is None:
        v.append(
            FieldViolation(f"{prefix}.time_zone", "must be an IANA time zone name such as Europe/Berlin")
        )
    # The fulfillment fields (calendar, capabilities, capacity); a field refused
    # above (a malformed time zone) is not reported twice.
    reported = {violation.field for violation in v}
    v.extend(x for x in node_violations(node, prefix) if x.field not in reported)
    if v:
        _fail(v)


def validate_channel(channel: Channel, prefix: str = "channel") -> None:
    v: list[FieldViolation] = []
    if _CHANNEL.fullmatch(channel.id) is None:
        v.append(_id_violation(f"{prefix}.id", channel.id, _CHANNEL_RULE))
    if len(channel.name) > MAX_NAME_LENGTH:
        v.append(FieldViolation(f"{prefix}.name", f"at most {MAX_NAME_LENGTH} characters"))
    if len(channel.nodes) > MAX_CHANNEL_NODES:
        v.append(
            FieldViolation(f"{prefix}.nodes", f"at most {MAX_CHANNEL_NODES} nodes, got {len(channel.nodes)}")
        )
    first_seen: dict[str, int] = {}
    for i, node in enumerate(channel.nodes):
        if _KEY.fullmatch(node) is None:
            v.append(_id_violation(f"{prefix}.nodes[{i}]", node, _KEY_RULE))
        elif node in first_seen:
            v.append(FieldViolation(f"{prefix}.nodes[{i}]", f"repeats nodes[{first_seen[node]}]"))
        else:
            first_seen[node] = i
    v.extend(allocation_rule_violations(channel, prefix))
    if v:
        _fail(v)


def allocation_rule_violations(channel: Channel, prefix: str = "channel") -> list[FieldViolation]:
    """A channel's allocation rules: well-formed (rule_violations), its own, and
    about its eligible nodes (a rule for a node it cannot sell from is a mistake)."""
    at = f"{prefix}.allocation_rules"
    v = rule_violations(channel.allocation_rules, prefix=at)
    eligible = set(channel.nodes)
    for i, rule in enumerate(channel.allocation_rules):
        if rule.channel != channel.id:
            v.append(FieldViolation(f"{at}[{i}].channel", f"must be the channel's id {channel.id!r}"))
        if rule.node is not None and rule.node not in eligible:
            v.append(
                FieldViolation(f"{at}[{i}].node", f"{rule.node!r} is not an eligible node of the channel")
            )
        if rule.node_type is not None and rule.node_type not in set(NodeType):
            v.append(FieldViolation(f"{at}[{i}].node_type", "unknown node type"))
        if rule.protects is not None and _CHANNEL.fullmatch(rule.protects) is None:
            v.append(_id_violation(f"{at}[{i}].protects", rule.protects, _CHANNEL_RULE))
    return v


_NODE_TYPES = frozenset(NodeType)


def _check_ttl(v: list[FieldViolation], field: str, ttl_s: float | None) -> None:
    if ttl_s is None:
        v.append(FieldViolation(field, "is required"))
    elif not MIN_TTL_S <= ttl_s <= MAX_TTL_S:
        v.append(
            FieldViolation(field, f"must be {MIN_TTL_S:g} s to {MAX_TTL_S:g} s (7 days), got {ttl_s:g} s")
        )


def _id_violation(field: str, value: str, rule: str) -> FieldViolation:
    if not value:
        return FieldViolation(field, "is required")
    return FieldViolation(field, rule)


def _fail(violations: list[FieldViolation]) -> None:
    first = violations[0]
    more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
    raise InvalidArgument(f"{first.field} {first.description}{more}", tuple(violations))
