"""A process-local availability view: (SKU, node) counters copied from the truth.

In Redis mode every engine process keeps one, fed by the store's change feed
(absolute counter values, so applying an entry twice is harmless). It answers
availability queries and sourcing reads without a Redis round trip, and lets
a reserve that is sure to fail be refused without running a script (the
sold-out fast path). It is never the final check: a reserve that the view lets
through is decided by the store's atomic script.

The counters live in a ledger (Cython by default) used only through
``set_row`` and ``availability``, so the view computes availability with exactly
the code the embedded store uses.

Freshness: the feed follower calls :meth:`caught_up` whenever it has read every
shard's feed to its end. ``lag_s`` is the time since then, and the view is
*fresh* while that is at most ``max_lag_s``. A stale view still answers
availability (its lag is exported), but never refuses a reserve.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from engine.core.allocation_rules import resolve_channel_rules
from engine.core.errors import Shortfall
from engine.core.ledger import FOLLOW_NODE_DEFAULT
from engine.core.ledger_protocol import Ledger
from engine.core.types import Channel, LineRequest, Node, NodeAvailability, SkuAvailability
from engine.ledgers import make_ledger

__all__ = ["AvailabilityView"]

# (view version, the store's channel definition, channel, allow_partial, lines, shortfalls)
_SoldOutVerdict = tuple[int, Channel | None, str, bool, tuple[LineRequest, ...], tuple[Shortfall, ...]]


class AvailabilityView:
    def __init__(
        self,
        impl: str = "fast",
        *,
        max_lag_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ledger: Ledger = make_ledger(impl)
        self._nodes: set[str] = set()
        self._channels: dict[str, tuple[str, ...]] = {}
        # The network as last given, to resolve rules by node type and to tell
        # whether the view's rules are the store's (see channel_is).
        self._node_defs: dict[str, Node] = {}
        self._channel_defs: dict[str, Channel] = {}
        self._clock = clock
        self.max_lag_s = max_lag_s
        # Never caught up yet: stale until the first complete read of the feed.
        self._caught_up_at = float("-inf")
        self.rows_applied = 0
        self.resyncs = 0
        # Counters the feed gave for channels this view does not know yet (one
        # created by another process): {channel: {(sku, node): used}}, nonzero
        # only. Redis counts every channel, and a row's counter is only sent
        # again when it changes, so these are what a channel starts from here.
        self._unknown_used: dict[str, dict[tuple[str, str], int]] = {}
        # Bumped by every change to the counters or the network: a sold-out
        # verdict computed at one version holds until the next (see
        # sold_out_shortfalls), which spares a flash sale's rejects the walk.
        self._version = 0
        self._last_sold_out: _SoldOutVerdict | None = None

    # ------------------------------------------------------------- feeding

    def set_network(self, nodes: Iterable[Node], channels: Iterable[Channel]) -> None:
        self._version += 1
        retyped = False
        for node in nodes:
            # A changed default applies at once to the rows that follow it.
            self._ledger.define_node(node.id, node.default_safety_stock)
            self._nodes.add(node.id)
            previous = self._node_defs.get(node.id)
            retyped |= previous is not None and previous.type != node.type
            self._node_defs[node.id] = node
        redefine = {c.id: c for c in channels}
        if retyped:
            # Rules by node type resolve differently now.
            for channel in self._channel_defs.values():
                if channel.allocation_rules:
                    redefine.setdefault(channel.id, channel)
        for channel in redefine.values():
            for node_id in channel.nodes:
                self._define_node(node_id)
            # Every channel is tracked, rules or not: the feed brings every
            # channel's counters, and a rule added later must find them here.
            self._ledger.define_channel(
                channel.id, channel.nodes, resolve_channel_rules(channel, self._node_defs), True
            )
            self._channels[channel.id] = tuple(channel.nodes)
            self._channel_defs[channel.id] = channel
            self._adopt_unknown_used(channel.id)

    def _adopt_unknown_used(self, channel: str) -> None:
        """Give a channel just defined here the counters the feed brought before."""
        pending = self._unknown_used.pop(channel, None)
        if not pending:
            return
        ledger = self._ledger
        for (sku, node), used in pending.items():
            level = ledger.stock(sku, node)
            own = ledger.has_own_safety_stock(sku, node)
            ledger.set_row(
                sku, node, level.on_hand, level.reserved, level.committed,
                level.safety_stock if own else FOLLOW_NODE_DEFAULT, level.version, {channel: used},
            )  # fmt: skip

    def _define_node(self, node_id: str) -> None:
        if node_id not in self._nodes:
            self._ledger.define_node(node_id)
            self._nodes.add(node_id)

    def apply(
        self,
        sku: str,
        node: str,
        on_hand: int,
        reserved: int,
        committed: int,
        safety: int,
        version: int,
        channel_used: Mapping[str, int] | None = None,
    ) -> None:
        """One row's new absolute counters, from the feed or a resync.

        ``channel_used`` holds the absolute counters of the channels a feed
        entry names (those that changed); a resync names every channel the
        view knows (see :meth:`full_usage`).
        """
        # The feed can name a node before this process refreshed its network copy.
        self._define_node(node)
        if channel_used:
            known = self._channels
            if any(ch not in known for ch in channel_used):
                channel_used = self._keep_unknown_used(sku, node, channel_used)
        self._ledger.set_row(sku, node, on_hand, reserved, committed, safety, version, channel_used)
        self._version += 1
        self.rows_applied += 1

    def _keep_unknown_used(self, sku: str, node: str, channel_used: Mapping[str, int]) -> dict[str, int]:
        """Set aside the counters of channels not defined here yet; returns the others."""
        known: dict[str, int] = {}
        for ch, used in channel_used.items():
            if ch in self._channels:
                known[ch] = used
                continue
            rows = self._unknown_used.setdefault(ch, {})
            if used:
                rows[(sku, node)] = used
            else:
                rows.pop((sku, node), None)
        return known

    def full_usage(self, given: Mapping[str, int]) -> dict[str, int]:
        """A resynced row's counters: the ones Redis has, zero for every other channel."""
        return {**dict.fromkeys(self._channels, 0), **given}

    def channel_is(self, channel: Channel) -> bool:
        """Whether the view has this very definition of the channel (its rules included)."""
        return self._channel_defs.get(channel.id) == channel

    def caught_up(self, at: float | None = None) -> None:
        self._caught_up_at = self._clock() if at is None else at

    def mark_stale(self) -> None:
        """A gap in the feed (or a lost connection): refuse nothing until resynced."""
        self._caught_up_at = float("-inf")

    # ------------------------------------------------------------- reading

    @property
    def caught_up_at(self) -> float:
        return self._caught_up_at

    @property
    def lag_s(self) -> float:
        return max(0.0, self._clock() - self._caught_up_at)

    @property
    def fresh(self) -> bool:
        return self.lag_s <= self.max_lag_s

    def covers(self, written_at: float) -> bool:
        """Fresh, and caught up by a read that began after ``written_at``.

        A process records when its own writes were acknowledged; a read of the
        feed that began later has seen them, so the view never contradicts what
        this process just told a client (read-your-writes).
        """
        return self.fresh and self._caught_up_at > written_at

    def knows_channel(self, channel: str) -> bool:
        return channel in self._channels

    def knows_nodes(self, nodes: Iterable[str]) -> bool:
        known = self._nodes
        return all(node in known for node in nodes)

    def availability(
        self, skus: Sequence[str], channel: str | None, nodes: Sequence[str] | None, per_node: bool
    ) -> list[SkuAvailability]:
        return self._ledger.availability(skus, channel, nodes, per_node)

    def sold_out_shortfalls(
        self,
        channel: str,
        lines: Sequence[LineRequest],
        allow_partial: bool,
        definition: Channel | None = None,
    ) -> tuple[Shortfall, ...] | None:
        """The shortfalls if this reserve is sure to fail on the view's counters, else None.

        "Sure" means the view is fresh, knows the channel and every named node,
        and shows zero for a line (for an all-or-nothing request) or for every
        line (for a partial one), with stock on hand that holds, orders or
        safety stock have taken. It takes lines in order as the ledger does, so
        two lines of one SKU share its units, and reports every short line with
        what the view could have given it, as the script would.

        For a channel with allocation rules (``definition``, the store's copy)
        what a node can give is the channel's allowance, so the view decides
        only when its rules are those of the store.
        """
        eligible = self._channels.get(channel)
        if eligible is None or not self.fresh:
            return None
        asked = tuple(lines)
        last = self._last_sold_out
        if (
            last is not None
            and last[0] == self._version
            and last[1] is definition
            and last[2] == channel
            and last[3] == allow_partial
            and last[4] == asked
        ):
            return last[5]
        ruled = definition is not None and bool(definition.allocation_rules)
        if ruled and not self.channel_is(definition):  # type: ignore[arg-type]
            return None
        if _surely_covered(self._ledger, channel, lines):
            return None
        taken: dict[tuple[str, str], int] = {}
        shortfalls: list[Shortfall] = []
        any_zero = False
        all_zero = True
        for index, (sku, quantity, node) in enumerate(lines):
            if node is not None and (node not in self._nodes or node not in eligible):
                return None  # let the store raise the precise error
            candidates = (node,) if node is not None else eligible
            (level,) = self._ledger.availability([sku], channel if ruled else None, candidates, True)
            free = _source(sku, quantity, level.nodes, taken)
            if free == 0 and not any(n.on_hand > 0 for n in level.nodes):
                # No stock seen at all: perhaps a row whose first receipt the
                # feed has not brought yet. Sold out means units the view saw
                # being taken; anything else goes to the script.
                return None
            if free < quantity:
                shortfalls.append(Shortfall(index, sku, quantity, free))
            if free == 0:
                any_zero = True
            else:
                all_zero = False
        sure = all_zero if allow_partial else any_zero
        if not sure:
            return None
        verdict = tuple(shortfalls)
        self._last_sold_out = (self._version, definition, channel, allow_partial, asked, verdict)
        return verdict


def _surely_covered(ledger: Ledger, channel: str, lines: Sequence[LineRequest]) -> bool:
    """Whether the view's stock over the channel's nodes covers every line at once.

    Most reserves are nowhere near sold out, and one total per SKU (no
    per-node breakdown, no checks of the node list) shows that in a fraction
    of the full walk below. True means the full walk would find nothing short;
    False only means it must be done. Lines naming a node are left to the walk.
    """
    needed: dict[str, int] = {}
    for sku, quantity, node in lines:
        if node is not None:
            return False
        needed[sku] = needed.get(sku, 0) + quantity
    # The view's own copy of the channel and its rules: should they differ from
    # the store's, a wrong True only sends the reserve to the script, which decides.
    levels = ledger.availability(list(needed), channel, (), False)
    return all(level.atp >= needed[level.sku] for level in levels)


def _source(
    sku: str, quantity: int, nodes: Sequence[NodeAvailability], taken: dict[tuple[str, str], int]
) -> int:
    """Units the ledger would allocate to this line, with its sourcing rule.

    The same rule as the ledgers' (the first node that covers the whole line,
    else greedily in priority order), so a later line of the same SKU sees the
    same leftovers the script would. Records what it takes in ``taken``.
    """
    free: list[tuple[str, int]] = []
    for n in nodes:
        left = n.atp - taken.get((sku, n.node), 0)
        if left <= 0:
            continue
        if left >= quantity:
            taken[(sku, n.node)] = taken.get((sku, n.node), 0) + quantity
            return quantity
        free.append((n.node, left))
    granted = 0
    for node, left in free:
        grant = min(left, quantity - granted)
        taken[(sku, node)] = taken.get((sku, node), 0) + grant
        granted += grant
        if granted == quantity:
            break
    return granted
