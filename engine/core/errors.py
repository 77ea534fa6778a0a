"""Domain errors, shared by both ledgers, both stores and the gRPC layer.

Both ledger implementations (pure Python and Cython) raise exactly these types,
so the contract tests and the servicer do not care which one is running.

Hierarchy (each class carries a stable ``reason`` in UPPER_SNAKE_CASE; the
servicer maps the class to a gRPC status code and the reason to ErrorInfo)::

    EngineError
    ├── InvalidArgument        INVALID_ARGUMENT     bad input; ``violations`` name the fields
    │   ├── UnknownChannel       reason CHANNEL_NOT_FOUND
    │   ├── UnknownNode          reason NODE_NOT_FOUND
    │   └── NodeNotEligible      reason NODE_NOT_ELIGIBLE
    ├── NotFound               NOT_FOUND            e.g. RESERVATION_NOT_FOUND
    ├── OutOfStock             FAILED_PRECONDITION  OUT_OF_STOCK, with every short line
    ├── IllegalTransition      FAILED_PRECONDITION  RESERVATION_EXPIRED, RESERVATION_RELEASED, ...
    ├── StockRejected          FAILED_PRECONDITION  NEGATIVE_ON_HAND, ON_HAND_LIMIT
    ├── NotAllowed             FAILED_PRECONDITION  BACKORDER_NOT_ALLOWED: the channel's settings refuse it
    ├── IdempotencyMismatch    ALREADY_EXISTS       same id, different body; nothing changed
    ├── EtagMismatch           ABORTED              a write based on a version that changed since
    └── StoreUnavailable       UNAVAILABLE          no effect happened; retry with the same id
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

__all__ = [
    "EngineError",
    "EtagMismatch",
    "FieldViolation",
    "IdempotencyMismatch",
    "IllegalTransition",
    "InvalidArgument",
    "NodeNotEligible",
    "NotAllowed",
    "NotFound",
    "OutOfStock",
    "Shortfall",
    "StockRejected",
    "StoreUnavailable",
    "UnknownChannel",
    "UnknownNode",
]


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


@dataclass(frozen=True, slots=True)
class Shortfall:
    """One line that could not be held in full."""

    line_index: int
    sku: str
    requested: int
    available: int


class EngineError(Exception):
    reason: str = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class InvalidArgument(EngineError):
    reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        violations: tuple[FieldViolation, ...] = (),
        *,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, reason=reason)
        self.violations = violations


class UnknownChannel(InvalidArgument):
    reason = "CHANNEL_NOT_FOUND"

    def __init__(self, channel: str, field: str = "channel") -> None:
        super().__init__(
            f"unknown channel {channel!r}",
            (FieldViolation(field, f"channel {channel!r} is not defined"),),
        )
        self.channel = channel


class UnknownNode(InvalidArgument):
    reason = "NODE_NOT_FOUND"

    def __init__(self, node: str, field: str = "node") -> None:
        super().__init__(
            f"unknown node {node!r}",
            (FieldViolation(field, f"node {node!r} is not defined"),),
        )
        self.node = node


class NodeNotEligible(InvalidArgument):
    reason = "NODE_NOT_ELIGIBLE"

    def __init__(self, node: str, channel: str, field: str = "node") -> None:
        super().__init__(
            f"node {node!r} is not eligible for channel {channel!r}",
            (FieldViolation(field, f"node {node!r} is not eligible for channel {channel!r}"),),
        )
        self.node = node
        self.channel = channel


class NotFound(EngineError):
    reason = "NOT_FOUND"


class OutOfStock(EngineError):
    reason = "OUT_OF_STOCK"

    def __init__(self, shortfalls: tuple[Shortfall, ...]) -> None:
        # The message is written when first read: a sold-out reject answers
        # with a status cached by its shortfalls and never reads it.
        Exception.__init__(self, shortfalls)
        self.shortfalls = shortfalls

    @functools.cached_property
    def message(self) -> str:  # type: ignore[override]
        skus = ", ".join(
            f"{s.sku} (requested {s.requested}, available {s.available})" for s in self.shortfalls
        )
        return f"not enough stock for: {skus}"

    def __str__(self) -> str:
        return self.message


class IllegalTransition(EngineError):
    reason = "ILLEGAL_TRANSITION"


class StockRejected(EngineError):
    reason = "STOCK_REJECTED"


class NotAllowed(EngineError):
    """The request is well formed, but what it asks for is switched off for
    its caller (e.g. backorders on a channel that does not take them)."""

    reason = "NOT_ALLOWED"

    def __init__(self, message: str, *, reason: str | None = None, subject: str = "") -> None:
        super().__init__(message, reason=reason)
        self.subject = subject


class IdempotencyMismatch(EngineError):
    reason = "IDEMPOTENCY_MISMATCH"


class EtagMismatch(EngineError):
    """An optimistic-concurrency write (AIP-154) named a version that is no longer current."""

    reason = "ETAG_MISMATCH"


class StoreUnavailable(EngineError):
    reason = "STORE_UNAVAILABLE"
