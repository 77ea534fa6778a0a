"""What the store works out in Python before a script runs: which shards and
slots a request touches, and its script arguments."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from engine.store.redis.runner import Arg

__all__ = ["ReservationFacts", "ReservePlan", "Line", "line_args", "ms", "seconds"]

# One encoder for every body: json.dumps with non-default options builds a new
# JSONEncoder per call, a measurable part of a Reserve's Python time.
_encode_body = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

# (index, sku, quantity, requested node or ''), and with promise-driven
# sourcing the candidate count (-1: the channel's order) and the candidates,
# then, when some line of the request may be backordered, the line's backorder
# allowance (units of expected inbound supply, 0: from the shelf only).
Line = tuple[Arg, ...]


def seconds(t: float) -> str:
    """A time in seconds as stored: the float's repr, read back exactly."""
    return repr(float(t))


def ms(t: float) -> str:
    """A time in ms, as scripts compare it (ZSET scores, leases)."""
    return repr(float(t) * 1000.0)


@dataclass(frozen=True, slots=True)
class ReservationFacts:
    """What never changes about a reservation once it exists, so a process may
    cache it: where its lines are and the request's parameters."""

    shards: tuple[int, ...]
    channel: str
    ttl_s: float
    allow_partial: bool
    lines: int


@dataclass(frozen=True, slots=True)
class ReservePlan:
    reservation_id: str
    body: str  # canonical request, compared for IDEMPOTENCY_MISMATCH
    facts: ReservationFacts
    lines_by_shard: dict[int, list[Line]]
    groups: list[list[int]]  # shards per slot (one group on standalone Redis)
    eligible: tuple[str, ...]
    # The channel's rules for the scripts: count, then (node, kind, value) per ruled node.
    rule_args: tuple[Arg, ...]
    refusal: tuple[str, str, str]  # ('', '', '') or (code, a, b), see reserve.lua
    now: float
    expires_at: float
    # '' sources in the channel's order; '0'/'1' promise-driven (lines carry
    # their candidates; '1': whole lines only), with a 'b' after it when the
    # lines carry backorder allowances too ('0b'/'1b'), see reserve.lua.
    sourcing: str = ""

    @property
    def backorder(self) -> bool:
        """Some line may be held against inbound supply (an allowance above 0)."""
        return self.sourcing.endswith("b")

    @staticmethod
    def canonical_body(
        channel: str,
        ttl_s: float,
        allow_partial: bool,
        lines: Iterable[tuple[str, int, str | None]],
        context: str | None = None,
    ) -> str:
        # Equal exactly when the reference ledger's _same_request says equal
        # (ttl compared as a float, quantities as ints, no node as null, the
        # fulfillment context as text). Without a context the body is what it
        # was before promise-driven sourcing, so stored reservations still match.
        body: list[object] = [
            channel,
            repr(float(ttl_s)),
            bool(allow_partial),
            [[s, int(q), n] for s, q, n in lines],
        ]
        if context is not None:
            body.append(context)
        return _encode_body(body)

    @staticmethod
    def facts_from_body(body: str, shards: str) -> ReservationFacts:
        """The facts of a stored reservation, from its directory entry's body and shards."""
        channel, ttl, allow_partial, lines, *_context = json.loads(body)
        return ReservationFacts(
            shards=tuple(int(k) for k in shards.split(",")),
            channel=channel,
            ttl_s=float(ttl),
            allow_partial=bool(allow_partial),
            lines=len(lines),
        )

    def group_args(self, shards: Sequence[int]) -> list[Arg]:
        args: list[Arg] = []
        for shard in shards:
            args.extend(line_args(self.lines_by_shard[shard]))
        return args


def line_args(lines: Sequence[Line]) -> list[Arg]:
    args: list[Arg] = [len(lines)]
    for line in lines:
        args.extend(line)
    return args
