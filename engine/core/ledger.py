"""The pure-Python reservation ledger: the reference implementation.

The Cython ledger in ``engine/_fast`` implements the same interface
(:class:`engine.core.ledger_protocol.Ledger`) with the same results, and is
tested against this one operation by operation. Keep this one plain and obvious;
speed belongs to the other.

Determinism matters: the embedded store recovers by replaying its journal of
``(operation, arguments, now)`` through a fresh ledger, so every method is a pure
function of the ledger state and its arguments. Every mutating method first
expires the holds due at ``now`` (so no stale hold can block stock), then checks
everything, then writes: a raised error leaves the state as it was.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from engine.core.allocation_rules import MAX_UNITS, RuleKind, channel_allowance
from engine.core.errors import (
    FieldViolation,
    IdempotencyMismatch,
    IllegalTransition,
    InvalidArgument,
    NodeNotEligible,
    NotFound,
    OutOfStock,
    Shortfall,
    StockRejected,
    UnknownChannel,
    UnknownNode,
)
from engine.core.types import (
    MAX_ON_HAND,
    Allocation,
    NodeAvailability,
    Reservation,
    ReservationLine,
    ReservationState,
    SkuAvailability,
    StockChange,
    StockLevel,
    SupplyKind,
    SupplyOp,
    aggregate_state,
)

__all__ = [
    "MAX_VERSION",
    "PureLedger",
    "STATE_FORMAT",
    "check_backorder",
    "check_channel_rules",
    "row_violations",
    "usable_candidates",
    "usage_violations",
]

HELD = ReservationState.HELD
COMMITTED = ReservationState.COMMITTED
FULFILLED = ReservationState.FULFILLED
RELEASED = ReservationState.RELEASED
EXPIRED = ReservationState.EXPIRED

# Row layout: [on_hand, reserved, committed, safety_stock, version]
ON_HAND, RESERVED, COMMITTED_QTY, SAFETY, VERSION = range(5)

# 2: a row's safety stock in an image is -1 while the row follows its node's
# default (FOLLOW_NODE_DEFAULT), and "node_safety" holds the defaults. A format-1
# image predates node defaults: its rows' 0 is read as "follows" (0 meant none).
STATE_FORMAT = 2
# A row's safety stock as stored outside the ledger (images, Redis rows, the
# feed, set_row) while the row has none of its own and follows its node's default.
FOLLOW_NODE_DEFAULT = -1

# A row's version is a 64-bit count version (SetStock versions come from int64 fields).
MAX_VERSION = 2**63 - 1
_ROW_LIMITS = (
    ("on_hand", MAX_ON_HAND),
    ("reserved", MAX_ON_HAND),
    ("committed", MAX_ON_HAND),
    ("safety_stock", MAX_ON_HAND),
    ("version", MAX_VERSION),
)
_ROW_MINIMA = (0, 0, 0, FOLLOW_NODE_DEFAULT, 0)


def row_violations(*values: object) -> tuple[FieldViolation, ...]:
    """What is wrong with ``set_row``'s counters (on_hand, reserved, committed,
    safety_stock, version), one violation per field: each must be an int in
    0..its limit (safety_stock may also be FOLLOW_NODE_DEFAULT). Shared by both
    ledgers so they refuse exactly the same rows."""
    return tuple(
        FieldViolation(name, f"must be an integer in {low}..{limit}, got {value!r}")
        for (name, limit), low, value in zip(_ROW_LIMITS, _ROW_MINIMA, values, strict=True)
        if not isinstance(value, int) or not low <= value <= limit
    )


def check_node_safety(node_id: str, quantity: object) -> int:
    """Validate ``define_node``'s default safety stock. Shared by both ledgers."""
    if type(quantity) is not int or not 0 <= quantity <= MAX_ON_HAND:
        raise InvalidArgument(
            f"default safety stock of node {node_id!r} must be 0..{MAX_ON_HAND}",
            (FieldViolation("default_safety_stock", f"must be 0..{MAX_ON_HAND}, got {quantity!r}"),),
        )
    return quantity


def check_channel_rules(
    node_ids: Sequence[str], rules: Sequence[tuple[int, int]] | None
) -> dict[str, tuple[int, int]]:
    """Validate ``define_channel``'s resolved rules and return the real ones by
    node. Shared by both ledgers so they accept and refuse exactly the same."""
    if rules is None:
        return {}
    if len(rules) != len(node_ids):
        raise InvalidArgument(
            "give one rule per eligible node",
            (FieldViolation("rules", f"{len(rules)} rules for {len(node_ids)} nodes"),),
        )
    out: dict[str, tuple[int, int]] = {}
    for i, (node, rule) in enumerate(zip(node_ids, rules, strict=True)):
        kind, value = rule
        limit = 100 if kind == RuleKind.SHARE else MAX_UNITS
        if not isinstance(kind, int) or kind not in (0, 1, 2, 3):
            raise InvalidArgument(
                f"rule {i} has an unknown kind", (FieldViolation(f"rules[{i}]", f"unknown kind {kind!r}"),)
            )
        if not isinstance(value, int) or not 0 <= value <= limit:
            raise InvalidArgument(
                f"rule {i} is out of range", (FieldViolation(f"rules[{i}]", f"value must be 0..{limit}"),)
            )
        if kind != RuleKind.NONE:
            out[node] = (int(kind), int(value))
    return out


def check_backorder(
    lines: Sequence[tuple[str, int, str | None]],
    candidates: Sequence[Sequence[str] | None] | None,
    backorder: Sequence[int] | None,
) -> tuple[int, ...] | None:
    """Validate ``reserve``'s backorder allowances and return them as a tuple,
    or None when no line may be backordered (none given, or all 0), so that
    such a request takes exactly the path of one without them. Shared by both
    ledgers so they accept and refuse exactly the same.

    A line with an allowance is held at one node, or it could not be told
    which node's inbound supply it counts on: its named node, or its one
    candidate. Only the number of candidates is checked here; whether that
    candidate is usable is sourcing's business (an unusable one gets nothing).
    """
    if backorder is None:
        return None
    if len(backorder) != len(lines):
        raise InvalidArgument(
            "give one backorder allowance per line",
            (FieldViolation("backorder", f"{len(backorder)} allowances for {len(lines)} lines"),),
        )
    out: list[int] = []
    for i, units in enumerate(backorder):
        if not isinstance(units, int) or units < 0:
            raise InvalidArgument(
                f"backorder allowance {i} is not a non-negative integer",
                (FieldViolation(f"backorder[{i}]", f"must be a non-negative integer, got {units!r}"),),
            )
        if units and lines[i][2] is None:
            ranked = candidates[i] if candidates is not None else None
            if ranked is None or len(ranked) != 1:
                raise InvalidArgument(
                    "a backorder line is held at one node",
                    (
                        FieldViolation(
                            f"backorder[{i}]",
                            "a backorder line is held at one node: name it, or give exactly one candidate",
                        ),
                    ),
                )
        out.append(int(units))
    return tuple(out) if any(out) else None


def resolved_rule_list(
    node_ids: Sequence[str], by_node: Sequence[Sequence[Any]] | None
) -> list[tuple[int, int]] | None:
    """``define_channel``'s rules from an exported ``[[node, kind, value]...]``."""
    if not by_node:
        return None
    table = {node: (int(kind), int(value)) for node, kind, value in by_node}
    return [table.get(node, (int(RuleKind.NONE), 0)) for node in node_ids]


def usage_violations(channel_used: Mapping[str, int] | None) -> tuple[FieldViolation, ...]:
    """What is wrong with ``set_row``'s per-channel counters (each an int in 0..2 * MAX_ON_HAND)."""
    if not channel_used:
        return ()
    limit = 2 * MAX_ON_HAND
    return tuple(
        FieldViolation(f"channel_used[{channel}]", f"must be an integer in 0..{limit}, got {used!r}")
        for channel, used in channel_used.items()
        if not isinstance(used, int) or not 0 <= used <= limit
    )


class _Line:
    __slots__ = ("sku", "quantity", "node", "allocations", "state")

    def __init__(
        self,
        sku: str,
        quantity: int,
        node: str | None,
        allocations: list[tuple[str, int]],
        state: int,
    ) -> None:
        self.sku = sku
        self.quantity = quantity
        self.node = node
        self.allocations = allocations
        self.state = state


class _Reservation:
    __slots__ = ("id", "channel", "ttl_s", "allow_partial", "created_at", "expires_at", "lines", "context")

    def __init__(
        self,
        id: str,
        channel: str,
        ttl_s: float,
        allow_partial: bool,
        created_at: float,
        expires_at: float,
        lines: list[_Line],
        context: str | None = None,
    ) -> None:
        self.id = id
        self.channel = channel
        self.ttl_s = ttl_s
        self.allow_partial = allow_partial
        self.created_at = created_at
        self.expires_at = expires_at
        self.lines = lines
        self.context = context

    def state(self) -> ReservationState:
        return aggregate_state([line.state for line in self.lines])


class PureLedger:
    """Counters per (SKU, node), reservations, expiry, idempotency."""

    implementation = "pure"

    def __init__(self) -> None:
        self._nodes: dict[str, None] = {}
        self._channels: dict[str, tuple[str, ...]] = {}
        self._rows: dict[tuple[str, str], list[int]] = {}
        self._reservations: dict[str, _Reservation] = {}
        self._expiry: list[tuple[float, str]] = []
        self._events: dict[str, tuple[Any, ...]] = {}
        # Channel allocation: each ruled channel's resolved rule per eligible
        # node, (kind, value), rule-less nodes left out; and channel_used, the
        # units of a channel at a row that are held or committed, kept only for
        # tracked channels (those with rules, or defined with track_usage) so a
        # ledger without rules pays nothing. Zero entries are dropped.
        self._rules: dict[str, dict[str, tuple[int, int]]] = {}
        self._tracked: set[str] = set()
        self._used: dict[tuple[str, str, str], int] = {}
        # Safety stock: every row holds its effective value in row[SAFETY] (so
        # nothing that reads ATP needs to know where it came from); the rows
        # with a value of their own are listed here, the others follow their
        # node's default (_node_safety, absent = 0) and are rewritten when it
        # changes.
        self._node_safety: dict[str, int] = {}
        self._own_safety: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ network

    def define_node(self, node_id: str, default_safety_stock: int = 0) -> None:
        """Define (or redefine) a node; ``default_safety_stock`` applies at
        once to every row of the node without a safety stock of its own."""
        quantity = check_node_safety(node_id, default_safety_stock)
        self._nodes[node_id] = None
        if self._node_safety.get(node_id, 0) == quantity:
            return
        if quantity:
            self._node_safety[node_id] = quantity
        else:
            self._node_safety.pop(node_id, None)
        own = self._own_safety
        for key, row in self._rows.items():
            if key[1] == node_id and key not in own:
                row[SAFETY] = quantity

    def has_own_safety_stock(self, sku: str, node: str) -> bool:
        """Whether the row has a safety stock of its own (else it follows its node's default)."""
        return (sku, node) in self._own_safety

    def node_safety_stock(self, node_id: str) -> int:
        """The node's default safety stock (0 for none or an unknown node)."""
        return self._node_safety.get(node_id, 0)

    def define_channel(
        self,
        channel_id: str,
        node_ids: Sequence[str],
        rules: Sequence[tuple[int, int]] | None = None,
        track_usage: bool = False,
    ) -> None:
        """Define (or redefine) a channel: its eligible nodes in priority order and,
        optionally, the allocation rule resolved for each of them (``rules[i]`` is
        the ``(RuleKind, value)`` for ``node_ids[i]``, ``RuleKind.NONE`` for none).

        A channel with a rule is *tracked*: the ledger keeps its channel_used per
        row. ``track_usage`` tracks a channel without rules too (an availability
        view fed with counters by ``set_row``). A channel that starts being
        tracked gets its counters from its live holds and committed lines.
        """
        resolved = check_channel_rules(node_ids, rules)
        for i, node in enumerate(node_ids):
            if node not in self._nodes:
                raise UnknownNode(node, field=f"nodes[{i}]")
            if node in node_ids[:i]:
                # Sourcing would count the node's ATP twice and oversell it.
                raise InvalidArgument(
                    f"node {node!r} is listed twice",
                    (FieldViolation(f"nodes[{i}]", f"node {node!r} is listed twice"),),
                )
        self._channels[channel_id] = tuple(node_ids)
        if resolved:
            self._rules[channel_id] = resolved
        else:
            self._rules.pop(channel_id, None)
        tracked = bool(resolved) or bool(track_usage)
        if tracked and channel_id not in self._tracked:
            self._tracked.add(channel_id)
            self._recount_channel(channel_id)
        elif not tracked and channel_id in self._tracked:
            self._tracked.discard(channel_id)
            for key in [k for k in self._used if k[2] == channel_id]:
                del self._used[key]

    def channel_rules(self, channel_id: str) -> dict[str, tuple[int, int]]:
        """The channel's resolved rules by node (nodes without a rule left out)."""
        if channel_id not in self._channels:
            raise UnknownChannel(channel_id)
        return dict(self._rules.get(channel_id, {}))

    def channel_usage(self, sku: str, node: str) -> dict[str, int]:
        """channel_used of the row by tracked channel, non-zero ones only, sorted by channel."""
        return {
            channel: used
            for (s, n, channel), used in sorted(self._used.items(), key=lambda kv: kv[0][2])
            if s == sku and n == node and used != 0
        }

    def _recount_channel(self, channel_id: str) -> None:
        used = self._used
        for key in [k for k in used if k[2] == channel_id]:
            del used[key]
        for res in self._reservations.values():
            if res.channel != channel_id:
                continue
            for line in res.lines:
                if line.state in (HELD, COMMITTED):
                    for node, q in line.allocations:
                        if (line.sku, node) in self._rows:
                            self._add_used(line.sku, node, channel_id, q)

    def _add_used(self, sku: str, node: str, channel: str, delta: int) -> None:
        key = (sku, node, channel)
        value = self._used.get(key, 0) + delta
        if value:
            self._used[key] = value
        else:
            self._used.pop(key, None)

    def has_node(self, node_id: str) -> bool:
        return node_id in self._nodes

    def has_channel(self, channel_id: str) -> bool:
        return channel_id in self._channels

    def channel_nodes(self, channel_id: str) -> tuple[str, ...]:
        try:
            return self._channels[channel_id]
        except KeyError:
            raise UnknownChannel(channel_id) from None

    # ------------------------------------------------------------------ supply

    def apply_supply(self, ops: Sequence[SupplyOp], now: float) -> list[StockChange]:
        """Apply a batch of supply changes atomically: all of them or none.

        Each op is checked against the rows as the earlier ops of the batch left
        them; nothing is written until every op has passed.
        """
        self.expire_due(now)
        overlay: dict[tuple[str, str], list[int]] = {}
        batch_events: dict[str, tuple[Any, ...]] = {}
        # (row, creates the row, duplicate, applied)
        outcomes: list[tuple[tuple[str, str], bool, bool, bool]] = []
        for i, op in enumerate(ops):
            kind, sku, node, value, version, event_id = op
            if node not in self._nodes:
                raise UnknownNode(node, field=f"changes[{i}].node")
            key = (sku, node)
            fingerprint = (int(kind), sku, node, value, version)
            if event_id is not None:
                seen = batch_events.get(event_id, self._events.get(event_id))
                if seen is not None:
                    if seen != fingerprint:
                        raise IdempotencyMismatch(f"event {event_id!r} was applied with a different body")
                    outcomes.append((key, False, True, False))
                    continue
                batch_events[event_id] = fingerprint
            row = overlay.get(key)
            if row is None:
                # Staged with the row's own safety stock, FOLLOW_NODE_DEFAULT if none.
                stored = self._rows.get(key)
                row = overlay[key] = list(stored) if stored is not None else [0, 0, 0, FOLLOW_NODE_DEFAULT, 0]
                if key not in self._own_safety:
                    row[SAFETY] = FOLLOW_NODE_DEFAULT
            applied = True
            if kind == SupplyKind.ADJUST:
                on_hand = row[ON_HAND] + value
                if on_hand < 0:
                    raise StockRejected(
                        f"adjusting {sku}@{node} by {value} would make on_hand negative ({on_hand})",
                        reason="NEGATIVE_ON_HAND",
                    )
                if on_hand > MAX_ON_HAND:
                    raise StockRejected(
                        f"on_hand of {sku}@{node} would exceed {MAX_ON_HAND}", reason="ON_HAND_LIMIT"
                    )
                row[ON_HAND] = on_hand
            elif kind == SupplyKind.SET:
                if not 0 <= value <= MAX_ON_HAND:
                    raise StockRejected(f"on_hand must be 0..{MAX_ON_HAND}", reason="ON_HAND_LIMIT")
                if version <= row[VERSION]:
                    # A count older than the one applied must not win; it is still
                    # recorded so a redelivery of the event is a duplicate.
                    applied = False
                else:
                    row[ON_HAND] = value
                    row[VERSION] = version
            elif kind == SupplyKind.SAFETY:
                if not 0 <= value <= MAX_ON_HAND:
                    raise StockRejected(f"safety stock must be 0..{MAX_ON_HAND}", reason="ON_HAND_LIMIT")
                row[SAFETY] = value
            elif kind == SupplyKind.SAFETY_DEFAULT:
                row[SAFETY] = FOLLOW_NODE_DEFAULT
            else:
                raise InvalidArgument(
                    f"unknown supply kind {kind!r}",
                    (FieldViolation(f"changes[{i}]", "unknown kind"),),
                )
            outcomes.append((key, applied and kind != SupplyKind.SAFETY_DEFAULT, False, applied))

        # Every op passed: write the rows and remember the events. A row is
        # created by an applied change, except SAFETY_DEFAULT: a missing row
        # follows its node's default already.
        for key, row in overlay.items():
            own = row[SAFETY]
            if own == FOLLOW_NODE_DEFAULT:
                self._own_safety.discard(key)
                row[SAFETY] = self._node_safety.get(key[1], 0)
            stored = self._rows.get(key)
            if stored is None:
                if not any(k == key and creates for k, creates, _, _ in outcomes):
                    continue  # e.g. a rejected-as-stale SET on a missing row creates nothing
                self._rows[key] = row
            else:
                stored[:] = row
            if own != FOLLOW_NODE_DEFAULT:
                self._own_safety.add(key)
        self._events.update(batch_events)
        return [
            StockChange(self.stock(*key), applied=applied, duplicate=duplicate)
            for key, _, duplicate, applied in outcomes
        ]

    def adjust_stock(self, sku: str, node: str, delta: int, event_id: str | None, now: float) -> StockChange:
        return self.apply_supply([SupplyOp(SupplyKind.ADJUST, sku, node, delta, 0, event_id)], now)[0]

    def set_stock(
        self, sku: str, node: str, on_hand: int, version: int, event_id: str | None, now: float
    ) -> StockChange:
        return self.apply_supply([SupplyOp(SupplyKind.SET, sku, node, on_hand, version, event_id)], now)[0]

    def set_safety_stock(
        self, sku: str, node: str, quantity: int, event_id: str | None, now: float
    ) -> StockChange:
        return self.apply_supply([SupplyOp(SupplyKind.SAFETY, sku, node, quantity, 0, event_id)], now)[0]

    def set_row(
        self,
        sku: str,
        node: str,
        on_hand: int,
        reserved: int,
        committed: int,
        safety_stock: int,
        version: int,
        channel_used: Mapping[str, int] | None = None,
    ) -> None:
        """Overwrite (or create) the counters of one row with absolute values.

        For a ledger used as an availability view (Redis mode), fed by a change
        feed of counters: no reservation is involved and nothing expires, and
        ``availability()`` then sees the row exactly as if supply operations
        had built it. The node must be defined; every value must be an int in
        0..its limit (``row_violations``). On a ledger that holds reservations,
        ``audit()`` reports any difference this makes between ``reserved`` or
        ``committed`` and the holds.

        ``safety_stock`` FOLLOW_NODE_DEFAULT makes the row follow its node's
        default safety stock; any other value is the row's own.

        ``channel_used`` sets the row's counters of the channels it names (the
        units each holds or has committed there, which a channel's allowance
        depends on) to absolute values; the other channels' counters stay. A
        feed entry names the channels whose counters changed. Channels the
        ledger does not track are ignored.
        """
        self._require_node(node)
        violations = row_violations(on_hand, reserved, committed, safety_stock, version)
        violations += usage_violations(channel_used)
        if violations:
            raise InvalidArgument(f"counters of {sku}@{node} are out of range", violations)
        for channel, used in (channel_used or {}).items():
            if channel in self._tracked:
                self._used.pop((sku, node, channel), None)
                if used:
                    self._used[(sku, node, channel)] = used
        key = (sku, node)
        if safety_stock == FOLLOW_NODE_DEFAULT:
            self._own_safety.discard(key)
            safety_stock = self._node_safety.get(node, 0)
        else:
            self._own_safety.add(key)
        values = [on_hand, reserved, committed, safety_stock, version]
        row = self._rows.get((sku, node))
        if row is None:
            self._rows[(sku, node)] = values
        else:
            row[:] = values

    def stock(self, sku: str, node: str) -> StockLevel:
        row = self._rows.get((sku, node))
        if row is None:
            return StockLevel(sku, node, 0, 0, 0, 0, 0)
        return StockLevel(sku, node, row[0], row[1], row[2], row[3], row[4])

    # ------------------------------------------------------------ reservations

    def reserve(
        self,
        reservation_id: str,
        channel: str,
        lines: Sequence[tuple[str, int, str | None]],
        ttl_s: float,
        allow_partial: bool,
        now: float,
        candidates: Sequence[Sequence[str] | None] | None = None,
        whole_lines: bool = False,
        context: str | None = None,
        backorder: Sequence[int] | None = None,
    ) -> int:
        """Hold stock for every line (all or nothing unless ``allow_partial``).

        Returns the reservation's state. Replaying the same request returns the
        stored reservation's current state; the same id with another body raises
        IdempotencyMismatch.

        Promise-driven sourcing (a request with a fulfillment context): each
        line without a node takes its nodes from ``candidates[i]`` (an ordered
        tuple, ranked by the caller) instead of the channel's priority order; a
        ``None`` entry keeps the channel's order. Candidates the channel does
        not sell from (it may have been redefined since the caller ranked
        them) and repeats are skipped, so no node is counted twice.
        ``whole_lines``: a line is taken whole by one node or not at all (no
        split, and no partial line either). ``context`` is an opaque text
        (the canonical fulfillment context) kept with the reservation and
        compared on a replay like the rest of the body; the candidates are
        not: they depend on the stock at the time, and a replay returns the
        stored result without sourcing again.

        Backorder holds: ``backorder`` (None: no line may be backordered) gives
        per line the units of inbound supply expected at the line's one node
        (its named node, or its single candidate); 0 holds the line from the
        shelf only. A line with an allowance is held whole or not at all, and
        may push its row's ATP below zero down to minus its allowance (see
        ``_hold_backorder``). Like the candidates, the allowances are not part
        of the body compared on a replay.
        """
        self.expire_due(now)
        existing = self._reservations.get(reservation_id)
        if existing is not None:
            if not self._same_request(existing, channel, lines, ttl_s, allow_partial, context):
                raise IdempotencyMismatch(f"reservation {reservation_id!r} exists with a different request")
            return existing.state()
        eligible = self._channels.get(channel)
        if eligible is None:
            raise UnknownChannel(channel)
        if candidates is not None and len(candidates) != len(lines):
            raise InvalidArgument(
                "give one candidate list per line",
                (FieldViolation("candidates", f"{len(candidates)} candidate lists for {len(lines)} lines"),),
            )
        allowances = check_backorder(lines, candidates, backorder)

        taken: dict[tuple[str, str], int] = {}
        planned: list[tuple[str, int, str | None, list[tuple[str, int]]]] = []
        shortfalls: list[Shortfall] = []
        for index, (sku, quantity, node) in enumerate(lines):
            if node is not None:
                if node not in self._nodes:
                    raise UnknownNode(node, field=f"lines[{index}].node")
                if node not in eligible:
                    raise NodeNotEligible(node, channel, field=f"lines[{index}].node")
                nodes: Sequence[str] = (node,)
            elif candidates is not None and (ranked := candidates[index]) is not None:
                nodes = usable_candidates(ranked, eligible)
            else:
                nodes = eligible
            units = allowances[index] if allowances is not None else 0
            if units:
                allocations, available = self._hold_backorder(sku, quantity, nodes, taken, channel, units)
            else:
                allocations = self._source(sku, quantity, nodes, taken, channel, whole_lines)
                available = sum(q for _, q in allocations)
            if available < quantity:
                shortfalls.append(Shortfall(index, sku, quantity, available))
            for n, q in allocations:
                taken[(sku, n)] = taken.get((sku, n), 0) + q
            planned.append((sku, quantity, node, allocations))

        if shortfalls and (not allow_partial or not taken):
            raise OutOfStock(tuple(shortfalls))

        # Computed before the first write, so a bad TTL cannot leave a stray hold.
        expires_at = now + ttl_s
        # Checks passed: write.
        new_lines: list[_Line] = []
        tracked = channel in self._tracked
        for sku, quantity, node, allocations in planned:
            for n, q in allocations:
                row = self._rows.get((sku, n))
                if row is None:
                    # Only a backorder hold is planned at a missing row: it starts
                    # the row, with nothing on hand yet.
                    row = self._rows[(sku, n)] = [0, 0, 0, self._node_safety.get(n, 0), 0]
                row[RESERVED] += q
                if tracked:
                    self._add_used(sku, n, channel, q)
            state = HELD if allocations else RELEASED
            new_lines.append(_Line(sku, quantity, node, allocations, state))
        self._reservations[reservation_id] = _Reservation(
            reservation_id, channel, ttl_s, allow_partial, now, expires_at, new_lines, context
        )
        heapq.heappush(self._expiry, (expires_at, reservation_id))
        return HELD

    def commit(self, reservation_id: str, now: float) -> int:
        """Turn every held line into a committed order line."""
        self.expire_due(now)
        res = self._get(reservation_id)
        state = res.state()
        if state in (COMMITTED, FULFILLED):
            return state  # already done: a replay
        if state != HELD:
            raise _illegal(reservation_id, state)
        for line in res.lines:
            if line.state == HELD:
                for node, q in line.allocations:
                    row = self._rows[(line.sku, node)]
                    row[RESERVED] -= q
                    row[COMMITTED_QTY] += q
                line.state = COMMITTED
        return res.state()

    def release(self, reservation_id: str, line_indexes: Sequence[int] | None, now: float) -> int:
        """Give back held or committed units, for the whole reservation or some lines."""
        self.expire_due(now)
        res = self._get(reservation_id)
        if line_indexes is None:
            state = res.state()
            if state == FULFILLED:
                raise IllegalTransition(
                    f"reservation {reservation_id!r} is fulfilled", reason="RESERVATION_FULFILLED"
                )
            selected = [line for line in res.lines if line.state in (HELD, COMMITTED)]
        else:
            selected = self._select(res, line_indexes)
            for i in line_indexes:
                if res.lines[i].state == FULFILLED:
                    raise IllegalTransition(
                        f"line {i} of reservation {reservation_id!r} is fulfilled",
                        reason="LINE_FULFILLED",
                    )
        tracked = res.channel in self._tracked
        for line in selected:
            if line.state == HELD:
                column = RESERVED
            elif line.state == COMMITTED:
                column = COMMITTED_QTY
            else:
                continue  # already released or expired: releasing again changes nothing
            for node, q in line.allocations:
                self._rows[(line.sku, node)][column] -= q
                if tracked:
                    self._add_used(line.sku, node, res.channel, -q)
            line.state = RELEASED
        return res.state()

    def fulfill(self, reservation_id: str, line_indexes: Sequence[int] | None, now: float) -> int:
        """Ship committed lines: the units leave on_hand and committed."""
        self.expire_due(now)
        res = self._get(reservation_id)
        if line_indexes is None:
            state = res.state()
            if state == FULFILLED:
                return state
            if state != COMMITTED:
                raise _illegal(reservation_id, state, wanted="committed")
            selected = [line for line in res.lines if line.state == COMMITTED]
        else:
            selected = self._select(res, line_indexes)
            for i in line_indexes:
                line_state = res.lines[i].state
                if line_state in (COMMITTED, FULFILLED):
                    continue
                if line_state == HELD:
                    raise IllegalTransition(
                        f"line {i} of reservation {reservation_id!r} is not committed",
                        reason="NOT_COMMITTED",
                    )
                name = ReservationState(line_state).name
                raise IllegalTransition(
                    f"line {i} of reservation {reservation_id!r} is {name.lower()}",
                    reason=f"LINE_{name}",
                )
        # A recount may have left fewer units on the shelf than were committed
        # (a shortage): shipping them would drive on_hand negative. Refuse, and
        # let the stock be corrected (or the line released) first.
        shipping: dict[tuple[str, str], int] = {}
        for line in selected:
            if line.state == COMMITTED:
                for node, q in line.allocations:
                    shipping[(line.sku, node)] = shipping.get((line.sku, node), 0) + q
        for (sku, node), q in shipping.items():
            on_hand = self._rows[(sku, node)][ON_HAND]
            if on_hand < q:
                raise StockRejected(
                    f"cannot ship {q} of {sku}@{node}: only {on_hand} on hand",
                    reason="NEGATIVE_ON_HAND",
                )
        tracked = res.channel in self._tracked
        for line in selected:
            if line.state != COMMITTED:
                continue
            for node, q in line.allocations:
                row = self._rows[(line.sku, node)]
                row[COMMITTED_QTY] -= q
                row[ON_HAND] -= q
                if tracked:
                    self._add_used(line.sku, node, res.channel, -q)
            line.state = FULFILLED
        return res.state()

    def extend(self, reservation_id: str, ttl_s: float, now: float) -> float:
        """Move a held reservation's expiry to ``now + ttl_s``; returns the new expiry."""
        self.expire_due(now)
        res = self._get(reservation_id)
        state = res.state()
        if state != HELD:
            raise _illegal(reservation_id, state, wanted="held")
        res.expires_at = now + ttl_s
        heapq.heappush(self._expiry, (res.expires_at, reservation_id))
        return res.expires_at

    def expire_due(self, now: float) -> list[str]:
        """Expire every held reservation whose expiry is at or before ``now``.

        Returns their ids ordered by (expires_at, id). Each hold's units return
        exactly once: a reservation leaves the heap when it expires, and stale
        heap entries (after extend, commit or release) are skipped.
        """
        heap = self._expiry
        if not heap or heap[0][0] > now:
            return []
        due: list[tuple[float, str]] = []
        due_set: set[tuple[float, str]] = set()
        while heap and heap[0][0] <= now:
            expires_at, rid = heapq.heappop(heap)
            res = self._reservations.get(rid)
            # Skip stale entries (the hold was extended, or this entry is a twin
            # left by an extend onto the same expiry).
            if res is None or res.expires_at != expires_at or (expires_at, rid) in due_set:
                continue
            if not any(line.state == HELD for line in res.lines):
                continue
            due.append((expires_at, rid))
            due_set.add((expires_at, rid))
        due.sort()
        for _, rid in due:
            res = self._reservations[rid]
            tracked = res.channel in self._tracked
            for line in res.lines:
                if line.state == HELD:
                    for node, q in line.allocations:
                        self._rows[(line.sku, node)][RESERVED] -= q
                        if tracked:
                            self._add_used(line.sku, node, res.channel, -q)
                    line.state = EXPIRED
        return [rid for _, rid in due]

    def next_expiry(self) -> float | None:
        """Earliest pending expiry (possibly stale); None when nothing is held."""
        return self._expiry[0][0] if self._expiry else None

    def get_reservation(self, reservation_id: str) -> Reservation:
        res = self._get(reservation_id)
        return Reservation(
            id=res.id,
            channel=res.channel,
            state=res.state(),
            lines=tuple(
                ReservationLine(
                    index=i,
                    sku=line.sku,
                    requested=line.quantity,
                    requested_node=line.node,
                    allocations=tuple(Allocation(n, q) for n, q in line.allocations),
                    state=ReservationState(line.state),
                )
                for i, line in enumerate(res.lines)
            ),
            allow_partial=res.allow_partial,
            ttl_s=res.ttl_s,
            created_at=res.created_at,
            expires_at=res.expires_at,
        )

    def has_reservation(self, reservation_id: str) -> bool:
        return reservation_id in self._reservations

    # ------------------------------------------------------------ availability

    def availability(
        self,
        skus: Sequence[str],
        channel: str | None,
        nodes: Sequence[str] | None,
        per_node: bool,
    ) -> list[SkuAvailability]:
        """What may be sold of each SKU from the selected nodes.

        With a channel, the channel's eligible nodes; with nodes too, those
        nodes, each of which must be eligible; with nodes only, those nodes.
        """
        selected = self._select_nodes(channel, nodes)
        out: list[SkuAvailability] = []
        rows = self._rows
        # A channel with rules sees, at each node with a rule, its allowance.
        rules = self._rules.get(channel) if channel is not None else None
        for sku in skus:
            total = 0
            breakdown: list[NodeAvailability] = []
            for node in selected:
                row = rows.get((sku, node))
                if row is None:
                    atp = 0
                    if per_node:
                        breakdown.append(NodeAvailability(node, 0, 0, 0, 0, 0))
                    continue
                rule = rules.get(node) if rules else None
                if rule is not None:
                    assert channel is not None
                    atp = channel_allowance(
                        row[ON_HAND], row[RESERVED], row[COMMITTED_QTY], row[SAFETY],
                        rule[0], rule[1], self._used.get((sku, node, channel), 0),
                    )  # fmt: skip
                else:
                    atp = row[ON_HAND] - row[RESERVED] - row[COMMITTED_QTY] - row[SAFETY]
                    if atp < 0:
                        atp = 0
                total += atp
                if per_node:
                    breakdown.append(
                        NodeAvailability(
                            node, row[ON_HAND], row[RESERVED], row[COMMITTED_QTY], row[SAFETY], atp
                        )
                    )
            out.append(SkuAvailability(sku, total, tuple(breakdown)))
        return out

    # ------------------------------------------------------------------- audit

    def audit(self, now: float) -> list[str]:
        """Check the invariants; returns one message per violation (empty = healthy)."""
        violations: list[str] = []
        held: dict[tuple[str, str], int] = {}
        committed: dict[tuple[str, str], int] = {}
        for res in self._reservations.values():
            for line in res.lines:
                target = held if line.state == HELD else committed if line.state == COMMITTED else None
                if target is not None:
                    for node, q in line.allocations:
                        target[(line.sku, node)] = target.get((line.sku, node), 0) + q
            if res.state() == HELD and res.expires_at < now - 1.0:
                violations.append(f"reservation {res.id} expired at {res.expires_at:.3f} but is still held")
        for key in sorted(set(self._rows) | set(held) | set(committed)):
            row = self._rows.get(key)
            reserved = row[RESERVED] if row else 0
            committed_qty = row[COMMITTED_QTY] if row else 0
            where = f"{key[0]}@{key[1]}"
            if reserved < 0:
                violations.append(f"{where}: reserved is negative ({reserved})")
            if committed_qty < 0:
                violations.append(f"{where}: committed is negative ({committed_qty})")
            if reserved != held.get(key, 0):
                violations.append(f"{where}: reserved {reserved} != sum of live holds {held.get(key, 0)}")
            if committed_qty != committed.get(key, 0):
                violations.append(
                    f"{where}: committed {committed_qty} != sum of committed lines {committed.get(key, 0)}"
                )
        violations += self._audit_usage()
        return violations

    def _audit_usage(self) -> list[str]:
        """channel_used of every tracked channel against its held and committed lines."""
        lines_hold: dict[tuple[str, str, str], int] = {}
        for res in self._reservations.values():
            if res.channel not in self._tracked:
                continue
            for line in res.lines:
                if line.state in (HELD, COMMITTED):
                    for node, q in line.allocations:
                        if (line.sku, node) in self._rows:
                            key = (line.sku, node, res.channel)
                            lines_hold[key] = lines_hold.get(key, 0) + q
        violations: list[str] = []
        sums: dict[tuple[str, str], int] = {}
        for key in sorted(set(self._used) | set(lines_hold)):
            sku, node, channel = key
            used = self._used.get(key, 0)
            where = f"{sku}@{node}"
            if used < 0:
                violations.append(f"{where}: channel_used of {channel} is negative ({used})")
            if used != lines_hold.get(key, 0):
                violations.append(
                    f"{where}: channel_used of {channel} {used} != its held and committed lines "
                    f"{lines_hold.get(key, 0)}"
                )
            sums[(sku, node)] = sums.get((sku, node), 0) + used
        for (sku, node), total in sorted(sums.items()):
            row = self._rows.get((sku, node))
            taken = row[RESERVED] + row[COMMITTED_QTY] if row else 0
            if total > taken:
                violations.append(
                    f"{sku}@{node}: channel_used sums to {total} > reserved + committed {taken}"
                )
        return violations

    def shortages(self) -> list[StockLevel]:
        """Rows where on_hand no longer covers reserved + committed."""
        return [
            self.stock(sku, node)
            for (sku, node), row in sorted(self._rows.items())
            if row[ON_HAND] < row[RESERVED] + row[COMMITTED_QTY]
        ]

    def row_count(self) -> int:
        return len(self._rows)

    def reservation_count(self) -> int:
        return len(self._reservations)

    def iter_rows(self) -> Iterable[StockLevel]:
        for sku, node in sorted(self._rows):
            yield self.stock(sku, node)

    # --------------------------------------------------------------- snapshots

    def export_state(self) -> dict[str, Any]:
        """A JSON-able image of the whole ledger, loadable by either implementation."""
        own = self._own_safety
        return {
            "format": STATE_FORMAT,
            "nodes": list(self._nodes),
            "channels": {c: list(n) for c, n in self._channels.items()},
            "node_safety": dict(self._node_safety),
            "rows": [
                [
                    sku,
                    node,
                    *row[:SAFETY],
                    row[SAFETY] if (sku, node) in own else FOLLOW_NODE_DEFAULT,
                    row[VERSION],
                ]
                for (sku, node), row in self._rows.items()
            ],
            "reservations": [
                [
                    r.id,
                    r.channel,
                    r.ttl_s,
                    r.allow_partial,
                    r.created_at,
                    r.expires_at,
                    [
                        [
                            line.sku,
                            line.quantity,
                            line.node,
                            [list(a) for a in line.allocations],
                            int(line.state),
                        ]
                        for line in r.lines
                    ],
                ]
                for r in self._reservations.values()
            ],
            "events": {e: list(fp) for e, fp in self._events.items()},
            # The fulfillment context of each reservation made with one (compared on replay).
            "contexts": {r.id: r.context for r in self._reservations.values() if r.context is not None},
            # channel_used is not stored: it is derived from the reservations on load.
            "channel_rules": {
                c: [[n, kind, value] for n, (kind, value) in rules.items()]
                for c, rules in self._rules.items()
            },
            "track_usage": sorted(c for c in self._tracked if c not in self._rules),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Replace this ledger's contents with an exported image."""
        image_format = state.get("format")
        if image_format not in (1, STATE_FORMAT):
            raise ValueError(f"unsupported ledger state format {image_format!r}")
        self.__init__()  # type: ignore[misc]
        node_safety = state.get("node_safety", {})
        for node in state["nodes"]:
            self.define_node(node, node_safety.get(node, 0))
        channel_rules = state.get("channel_rules", {})
        track_usage = set(state.get("track_usage", ()))
        for channel, nodes in state["channels"].items():
            self.define_channel(
                channel, nodes, resolved_rule_list(nodes, channel_rules.get(channel)), channel in track_usage
            )
        for sku, node, *row in state["rows"]:
            values = [int(v) for v in row]
            if values[SAFETY] == FOLLOW_NODE_DEFAULT or (image_format == 1 and values[SAFETY] == 0):
                values[SAFETY] = self._node_safety.get(node, 0)
                self._own_safety.discard((sku, node))
            else:
                self._own_safety.add((sku, node))
            self._rows[(sku, node)] = values
        contexts = state.get("contexts", {})  # absent in images written before promise-driven sourcing
        for rid, channel, ttl_s, allow_partial, created_at, expires_at, lines in state["reservations"]:
            res = _Reservation(
                rid,
                channel,
                ttl_s,
                allow_partial,
                created_at,
                expires_at,
                [
                    _Line(sku, qty, node, [(n, q) for n, q in allocs], ReservationState(st))
                    for sku, qty, node, allocs, st in lines
                ],
                contexts.get(rid),
            )
            self._reservations[rid] = res
            if res.state() == HELD:
                self._expiry.append((expires_at, rid))
        heapq.heapify(self._expiry)
        self._events = {e: tuple(fp) for e, fp in state["events"].items()}
        for channel in sorted(self._tracked):
            self._recount_channel(channel)

    # ----------------------------------------------------------------- helpers

    def _require_node(self, node: str) -> None:
        if node not in self._nodes:
            raise UnknownNode(node)

    def _source(
        self,
        sku: str,
        quantity: int,
        candidates: Sequence[str],
        taken: dict[tuple[str, str], int],
        channel: str,
        whole: bool = False,
    ) -> list[tuple[str, int]]:
        """Deterministic sourcing: the first candidate that covers the whole line,
        else (unless ``whole``) fill greedily across candidates in their order.
        What a node can give is its ATP, or the channel's allowance where the
        channel has a rule there (``taken`` by this request counts as the
        channel's, for both)."""
        free: list[tuple[str, int]] = []
        rules = self._rules.get(channel)
        for node in candidates:
            row = self._rows.get((sku, node))
            if row is None:
                continue
            t = taken.get((sku, node), 0)
            rule = rules.get(node) if rules else None
            if rule is not None:
                used = self._used.get((sku, node, channel), 0) + t
                atp = channel_allowance(
                    row[ON_HAND], row[RESERVED] + t, row[COMMITTED_QTY], row[SAFETY], rule[0], rule[1], used
                )
            else:
                atp = row[ON_HAND] - row[RESERVED] - row[COMMITTED_QTY] - row[SAFETY] - t
            if atp <= 0:
                continue
            if atp >= quantity:
                return [(node, quantity)]
            free.append((node, atp))
        if whole:
            return []
        allocations: list[tuple[str, int]] = []
        remaining = quantity
        for node, atp in free:
            q = min(atp, remaining)
            allocations.append((node, q))
            remaining -= q
            if remaining == 0:
                break
        return allocations

    def _hold_backorder(
        self,
        sku: str,
        quantity: int,
        nodes: Sequence[str],
        taken: dict[tuple[str, str], int],
        channel: str,
        units: int,
    ) -> tuple[list[tuple[str, int]], int]:
        """A line allowed ``units`` of expected inbound supply at its one node:
        held whole there, or not at all (the backorder rule).

        Returns its allocations and the figure a shortfall reports: the line's
        quantity when held, else what it could take as an ordinary line (``w``).
        ``nodes`` is the line's one node, or nothing when its one candidate is
        not usable. With ``a`` the row's raw ATP less what this request already
        took there (``taken``), and ``w`` what an ordinary line could take
        (the channel's allowance where it has a rule there, else ``a``; never
        below 0), the line is held when ``w`` covers it, or else when the
        channel has no allocation rule at the node and the shelf plus the
        supply not yet spoken for covers it (``quantity <= a + units``): then
        the row's ATP ends at no less than ``-units``. A channel with a rule at
        the node (any kind: SHARE, CAP, PROTECT) takes no backorders there: its
        line is held only as an ordinary one (``quantity <= w``), since the
        rule bounds what it may take of the shelf and says nothing of the
        supply (a cap of 5 must not hold 100 units on a purchase order). A
        missing row counts as all zeros but for its node's default safety
        stock (it is created by the hold, following that default).
        """
        if not nodes:
            return [], 0
        (node,) = nodes
        row = self._rows.get((sku, node))
        on_hand, reserved, committed, safety = (
            (row[ON_HAND], row[RESERVED], row[COMMITTED_QTY], row[SAFETY])
            if row
            else (0, 0, 0, self._node_safety.get(node, 0))
        )
        t = taken.get((sku, node), 0)
        a = on_hand - reserved - committed - safety - t
        rules = self._rules.get(channel)
        rule = rules.get(node) if rules else None
        if rule is not None:
            # ``t`` counts as the channel's, exactly as in ``_source``.
            used = self._used.get((sku, node, channel), 0) + t
            w = max(channel_allowance(on_hand, reserved + t, committed, safety, rule[0], rule[1], used), 0)
            # A ruled channel takes no backorders here: an ordinary line only.
            held = quantity <= w
        else:
            w = max(a, 0)
            held = quantity <= w or quantity <= a + units
        if held:
            return [(node, quantity)], quantity
        return [], w

    def _get(self, reservation_id: str) -> _Reservation:
        res = self._reservations.get(reservation_id)
        if res is None:
            raise NotFound(f"reservation {reservation_id!r} not found", reason="RESERVATION_NOT_FOUND")
        return res

    @staticmethod
    def _select(res: _Reservation, line_indexes: Sequence[int]) -> list[_Line]:
        if not line_indexes:
            raise InvalidArgument(
                "line_indexes must not be empty",
                (FieldViolation("line_indexes", "give at least one line, or none for all"),),
            )
        for i in line_indexes:
            if not 0 <= i < len(res.lines):
                raise InvalidArgument(
                    f"line index {i} is out of range",
                    (FieldViolation("line_indexes", f"{i} is not a line of reservation {res.id!r}"),),
                )
        return [res.lines[i] for i in sorted(set(line_indexes))]

    @staticmethod
    def _same_request(
        res: _Reservation,
        channel: str,
        lines: Sequence[tuple[str, int, str | None]],
        ttl_s: float,
        allow_partial: bool,
        context: str | None,
    ) -> bool:
        if res.channel != channel or res.ttl_s != ttl_s or res.allow_partial != allow_partial:
            return False
        if res.context != context:
            return False
        if len(res.lines) != len(lines):
            return False
        return all(
            (line.sku, line.quantity, line.node) == (sku, quantity, node)
            for line, (sku, quantity, node) in zip(res.lines, lines, strict=True)
        )

    def _select_nodes(self, channel: str | None, nodes: Sequence[str] | None) -> Sequence[str]:
        eligible: tuple[str, ...] | None = None
        if channel is not None:
            eligible = self._channels.get(channel)
            if eligible is None:
                raise UnknownChannel(channel)
            if not nodes:
                return eligible
        elif not nodes:
            raise InvalidArgument(
                "give a channel, nodes, or both",
                (FieldViolation("channel", "a channel or at least one node is required"),),
            )
        seen: set[str] = set()
        for i, node in enumerate(nodes):
            if node not in self._nodes:
                raise UnknownNode(node, field=f"nodes[{i}]")
            if channel is not None and eligible is not None and node not in eligible:
                raise NodeNotEligible(node, channel, field=f"nodes[{i}]")
            if node in seen:
                # Counting a node twice would double its ATP.
                raise InvalidArgument(
                    f"node {node!r} is listed twice",
                    (FieldViolation(f"nodes[{i}]", f"node {node!r} is listed twice"),),
                )
            seen.add(node)
        return nodes


def usable_candidates(candidates: Sequence[str], eligible: Sequence[str]) -> list[str]:
    """A line's candidates in order, without nodes the channel does not sell from, nor repeats."""
    out: list[str] = []
    for node in candidates:
        if node in eligible and node not in out:
            out.append(node)
    return out


def _illegal(reservation_id: str, state: int, wanted: str | None = None) -> IllegalTransition:
    name = ReservationState(state).name
    if wanted is not None and state in (HELD, COMMITTED):
        return IllegalTransition(
            f"reservation {reservation_id!r} is {name.lower()}, not {wanted}",
            reason="NOT_COMMITTED" if wanted == "committed" else f"RESERVATION_{name}",
        )
    return IllegalTransition(
        f"reservation {reservation_id!r} is {name.lower()}", reason=f"RESERVATION_{name}"
    )
