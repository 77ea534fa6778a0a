"""The audit: the reference ledger's invariants, checked on what Redis holds.

Each shard is read by one script (``audit.lua``), atomically, and every
invariant is local to a shard: a row's ``reserved`` and ``committed`` are
compared with the live lines of the sub-reservations in the same shard. The
messages are the reference ledger's, so a report reads the same on both stores.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.core.future_supply import uncovered_shortages
from engine.core.types import StockLevel
from engine.store.base import AuditReport
from engine.store.redis.network import NetworkCopy

__all__ = ["ShardAudit", "build_report"]

# A hold more than this past its expiry means the sweeper is not doing its job.
SWEEP_SLACK_S = 1.0


@dataclass(frozen=True, slots=True)
class ShardAudit:
    # (level, held by live lines, committed by live lines)
    rows: list[tuple[StockLevel, int, int]]
    # (sku, node, held, committed) of lines on rows that do not exist
    unbacked: list[tuple[str, str, int, int]]
    # (rid, expires_at) of sub-reservations holding units
    holding: list[tuple[str, float]]
    unscheduled: list[str]
    subs: int
    done: int
    # (sku, node, channel, channel_used, units of the channel's live lines)
    usage: list[tuple[str, str, str, int, int]]

    @classmethod
    def from_reply(cls, reply: Sequence[Any]) -> ShardAudit:
        flat_rows, flat_unbacked, flat_holding, unscheduled, subs, done, flat_usage = reply
        rows = [
            (StockLevel(flat_rows[i], flat_rows[i + 1], *map(int, flat_rows[i + 2 : i + 7])),
             int(flat_rows[i + 7]), int(flat_rows[i + 8]))
            for i in range(0, len(flat_rows), 9)
        ]  # fmt: skip
        unbacked = [
            (flat_unbacked[i], flat_unbacked[i + 1], int(flat_unbacked[i + 2]), int(flat_unbacked[i + 3]))
            for i in range(0, len(flat_unbacked), 4)
        ]
        holding = [(flat_holding[i], float(flat_holding[i + 1])) for i in range(0, len(flat_holding), 3)]
        usage = [
            (
                flat_usage[i],
                flat_usage[i + 1],
                flat_usage[i + 2],
                int(flat_usage[i + 3]),
                int(flat_usage[i + 4]),
            )
            for i in range(0, len(flat_usage), 5)
        ]
        return cls(rows, unbacked, holding, list(unscheduled), int(subs), int(done), usage)


def build_report(
    shards: Sequence[ShardAudit],
    now: float,
    network: NetworkCopy,
    expected: Mapping[tuple[str, str], int] | None = None,
) -> AuditReport:
    """The report; ``expected``: units of inbound supply expected per (SKU,
    node). A row's shortage is reported only beyond them, as the embedded store
    reports it: backorder holds leave on_hand < reserved + committed by design,
    up to the supply on its way (``future_supply.uncovered_shortages``)."""
    violations: list[str] = []
    # A reservation spanning shards is held in several of them: report it once.
    stale = sorted({(at, rid) for shard in shards for rid, at in shard.holding if at < now - SWEEP_SLACK_S})
    for at, rid in stale:
        violations.append(f"reservation {rid} expired at {at:.3f} but is still held")
    for rid in sorted({rid for shard in shards for rid in shard.unscheduled}):
        violations.append(f"reservation {rid} holds units but is not scheduled to expire")

    checks: list[tuple[str, str, int, int, int, int]] = []
    shortages: list[StockLevel] = []
    for shard in shards:
        for level, held, committed in shard.rows:
            checks.append((level.sku, level.node, level.reserved, level.committed, held, committed))
            if level.on_hand < level.reserved + level.committed:
                # Reported as the ledgers report it: with the safety stock in effect.
                safety = network.safety_in_effect(level.node, level.safety_stock)
                shortages.append(dataclasses.replace(level, safety_stock=safety))
        for sku, node, held, committed in shard.unbacked:
            checks.append((sku, node, 0, 0, held, committed))
    for sku, node, reserved, committed_qty, held, committed in sorted(checks):
        where = f"{sku}@{node}"
        if reserved < 0:
            violations.append(f"{where}: reserved is negative ({reserved})")
        if committed_qty < 0:
            violations.append(f"{where}: committed is negative ({committed_qty})")
        if reserved != held:
            violations.append(f"{where}: reserved {reserved} != sum of live holds {held}")
        if committed_qty != committed:
            violations.append(f"{where}: committed {committed_qty} != sum of committed lines {committed}")

    violations += _usage_violations(shards)

    for channel_id, channel in sorted(network.channels.items()):
        missing = [node for node in channel.nodes if node not in network.nodes]
        if missing:
            violations.append(f"channel {channel_id}: nodes {', '.join(missing)} are not defined")
    return AuditReport(
        violations=tuple(violations),
        shortages=tuple(
            uncovered_shortages(sorted(shortages, key=lambda level: (level.sku, level.node)), expected or {})
        ),
        rows=sum(len(shard.rows) for shard in shards),
        reservations=sum(shard.done for shard in shards),
    )


def _usage_violations(shards: Sequence[ShardAudit]) -> list[str]:
    """channel_used against the lines, as the reference ledger words it; and,
    since Redis counts every channel, the sum over channels against the row."""
    violations: list[str] = []
    sums: dict[tuple[str, str], int] = {}
    for sku, node, channel, used, lines in sorted(u for shard in shards for u in shard.usage):
        where = f"{sku}@{node}"
        if used < 0:
            violations.append(f"{where}: channel_used of {channel} is negative ({used})")
        if used != lines:
            violations.append(
                f"{where}: channel_used of {channel} {used} != its held and committed lines {lines}"
            )
        sums[(sku, node)] = sums.get((sku, node), 0) + used
    for shard in shards:
        for level, _, _ in shard.rows:
            total = sums.get((level.sku, level.node), 0)
            if total != level.reserved + level.committed:
                violations.append(
                    f"{level.sku}@{level.node}: channel_used sums to {total} != reserved + committed "
                    f"{level.reserved + level.committed}"
                )
    return violations
