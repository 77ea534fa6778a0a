"""Script replies -> domain objects and domain errors.

The scripts answer with codes and values; the messages, reasons and fields
are made here, word for word as the reference ledger (``engine/core/ledger.py``)
makes them, so a client cannot tell the stores apart by their errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.core.errors import (
    EngineError,
    FieldViolation,
    IdempotencyMismatch,
    IllegalTransition,
    InvalidArgument,
    NodeNotEligible,
    NotFound,
    OutOfStock,
    Shortfall,
    StockRejected,
    StoreUnavailable,
    UnknownChannel,
    UnknownNode,
)
from engine.core.types import (
    MAX_ON_HAND,
    Allocation,
    Reservation,
    ReservationLine,
    ReservationState,
    StockChange,
    StockLevel,
    aggregate_state,
)

__all__ = [
    "assemble_reservation",
    "illegal",
    "not_found",
    "reservation_error",
    "shortfalls",
    "stock_changes",
    "supply_error",
    "transition_error",
]

HELD = ReservationState.HELD
COMMITTED = ReservationState.COMMITTED


def not_found(reservation_id: str) -> NotFound:
    return NotFound(f"reservation {reservation_id!r} not found", reason="RESERVATION_NOT_FOUND")


def assemble_reservation(
    reservation_id: str,
    channel: str,
    ttl_s: float,
    allow_partial: bool,
    subs: Sequence[Sequence[Any]],
) -> Reservation:
    """A Reservation from the sub-reservation replies of every shard holding its lines.

    Every sub-reservation carries the same times, except after an interrupted
    cross-slot extend; the earliest expiry is then reported (the first moment
    some of the holds may lapse) until a retried extend evens them out.
    """
    lines: list[ReservationLine] = []
    created_at = expires_at = float("inf")
    for created, expires, sub_lines in subs:
        created_at = min(created_at, float(created))
        expires_at = min(expires_at, float(expires))
        for index, sku, quantity, node, state, allocs in sub_lines:
            lines.append(
                ReservationLine(
                    index=int(index),
                    sku=sku,
                    requested=int(quantity),
                    requested_node=node or None,
                    allocations=tuple(
                        Allocation(allocs[i], int(allocs[i + 1])) for i in range(0, len(allocs), 2)
                    ),
                    state=ReservationState(int(state)),
                )
            )
    lines.sort(key=lambda line: line.index)
    return Reservation(
        id=reservation_id,
        channel=channel,
        state=aggregate_state([line.state for line in lines]),
        lines=tuple(lines),
        allow_partial=allow_partial,
        ttl_s=ttl_s,
        created_at=created_at,
        expires_at=expires_at,
    )


def shortfalls(items: Sequence[Sequence[Any]]) -> list[Shortfall]:
    """In line order (a script reports them shard by shard), as the ledger lists them."""
    found = [Shortfall(int(i), sku, int(requested), int(available)) for i, sku, requested, available in items]
    return sorted(found, key=lambda shortfall: shortfall.line_index)


def illegal(reservation_id: str, state: int, wanted: str | None = None) -> IllegalTransition:
    """The reference ledger's ``_illegal``."""
    name = ReservationState(state).name
    if wanted and state in (HELD, COMMITTED):
        return IllegalTransition(
            f"reservation {reservation_id!r} is {name.lower()}, not {wanted}",
            reason="NOT_COMMITTED" if wanted == "committed" else f"RESERVATION_{name}",
        )
    return IllegalTransition(
        f"reservation {reservation_id!r} is {name.lower()}", reason=f"RESERVATION_{name}"
    )


def _illegal_line(reservation_id: str, index: int, state: int) -> IllegalTransition:
    if state == HELD:
        return IllegalTransition(
            f"line {index} of reservation {reservation_id!r} is not committed", reason="NOT_COMMITTED"
        )
    name = ReservationState(state).name
    return IllegalTransition(
        f"line {index} of reservation {reservation_id!r} is {name.lower()}", reason=f"LINE_{name}"
    )


def _inconsistent(reservation_id: str) -> EngineError:
    return EngineError(
        f"reservation {reservation_id!r} is complete in its directory but a sub-reservation is "
        "missing in Redis; run the audit",
        reason="STORE_INCONSISTENT",
    )


def reservation_error(reservation_id: str, channel: str, reply: Sequence[Any]) -> EngineError:
    """The error of a refused reserve (reserve, reserve_begin or reserve_slot)."""
    code = reply[0]
    if code == "MISMATCH":
        return IdempotencyMismatch(f"reservation {reservation_id!r} exists with a different request")
    if code == "OOS":
        return OutOfStock(tuple(shortfalls(reply[1])))
    if code == "CHANNEL":
        return UnknownChannel(channel)
    if code == "UNKNOWN_NODE":
        return UnknownNode(reply[1], field=reply[2])
    if code == "NOT_ELIGIBLE":
        return NodeNotEligible(reply[1], channel, field=reply[2])
    if code == "BUSY":
        return StoreUnavailable(
            f"reservation {reservation_id!r} is being created by another engine process; retry",
            reason="RESERVATION_IN_PROGRESS",
        )
    if code == "MISSING":
        return _inconsistent(reservation_id)
    raise ValueError(f"unexpected reply from a reserve script: {reply!r}")


def transition_error(reservation_id: str, reply: Sequence[Any]) -> EngineError:
    """The error of a refused commit, release, fulfill or extend."""
    code = reply[0]
    if code == "ILLEGAL":
        _, variant, state, index, wanted = reply
        if variant == "line":
            return _illegal_line(reservation_id, int(index), int(state))
        return illegal(reservation_id, int(state), wanted or None)
    if code == "EMPTY_INDEXES":
        return InvalidArgument(
            "line_indexes must not be empty",
            (FieldViolation("line_indexes", "give at least one line, or none for all"),),
        )
    if code == "INDEX_RANGE":
        index = int(reply[1])
        return InvalidArgument(
            f"line index {index} is out of range",
            (FieldViolation("line_indexes", f"{index} is not a line of reservation {reservation_id!r}"),),
        )
    if code == "NEGATIVE":
        _, quantity, sku, node, on_hand, _ = reply
        return StockRejected(
            f"cannot ship {quantity} of {sku}@{node}: only {on_hand} on hand", reason="NEGATIVE_ON_HAND"
        )
    if code == "MISSING":
        return _inconsistent(reservation_id)
    raise ValueError(f"unexpected reply from a reservation script: {reply!r}")


def supply_error(reply: Sequence[Any]) -> EngineError:
    code, index = reply[0], int(reply[1])
    if code == "UNKNOWN_NODE":
        return UnknownNode(reply[2], field=f"changes[{index}].node")
    if code == "EVENT_MISMATCH":
        return IdempotencyMismatch(f"event {reply[2]!r} was applied with a different body")
    if code == "NEGATIVE_ON_HAND":
        _, _, sku, node, value, on_hand = reply
        return StockRejected(
            f"adjusting {sku}@{node} by {value} would make on_hand negative ({on_hand})",
            reason="NEGATIVE_ON_HAND",
        )
    if code == "ADJUST_LIMIT":
        return StockRejected(
            f"on_hand of {reply[2]}@{reply[3]} would exceed {MAX_ON_HAND}", reason="ON_HAND_LIMIT"
        )
    if code == "SET_RANGE":
        return StockRejected(f"on_hand must be 0..{MAX_ON_HAND}", reason="ON_HAND_LIMIT")
    if code == "SAFETY_RANGE":
        return StockRejected(f"safety stock must be 0..{MAX_ON_HAND}", reason="ON_HAND_LIMIT")
    if code == "UNKNOWN_KIND":
        kind = int(reply[2]) if str(reply[2]).lstrip("-").isdigit() else reply[2]
        return InvalidArgument(
            f"unknown supply kind {kind!r}", (FieldViolation(f"changes[{index}]", "unknown kind"),)
        )
    raise ValueError(f"unexpected reply from the supply script: {reply!r}")


def stock_changes(keys: Sequence[tuple[str, str]], outcomes: Sequence[Sequence[int]]) -> list[StockChange]:
    return [
        StockChange(
            StockLevel(sku, node, oh, rs, cm, ss, v), applied=bool(applied), duplicate=bool(duplicate)
        )
        for (sku, node), (oh, rs, cm, ss, v, applied, duplicate) in zip(keys, outcomes, strict=True)
    ]
