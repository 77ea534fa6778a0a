"""Randomized differential test: the Cython ledger against the pure reference.

A hypothesis state machine drives both ledgers with the same random operations
(set_row, the availability view's feed, among them)
and, after every step, requires identical answers (return value or error type,
reason, shortfalls and field violations), identical exported state, identical
availability, and the ledger invariants of ARCHITECTURE.md, recomputed here from
the reservations rather than taken from ``audit()``. Some reserves carry
backorder allowances: the one hold allowed to take a row's ATP below zero, to
no less than minus the allowance it was held with.

``LEDGER_DIFF_CANDIDATE=pure`` runs the machine pure against pure: a development
aid for working on the machine itself while the extension does not build. CI
leaves it unset, so the candidate is the Cython ledger, and an unbuilt extension
fails the test.
"""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from ledger_helpers import normalized_state, outcome

from engine.core.allocation_rules import RuleKind
from engine.core.ledger_protocol import Ledger
from engine.core.types import ReservationState, SupplyKind, SupplyOp, aggregate_state
from engine.ledgers import make_ledger

REFERENCE = "pure"
CANDIDATE = os.environ.get("LEDGER_DIFF_CANDIDATE", "fast")

HELD = ReservationState.HELD
COMMITTED = ReservationState.COMMITTED
TERMINAL = {ReservationState.FULFILLED, ReservationState.RELEASED, ReservationState.EXPIRED}

SKUS = ("A", "B", "C")
NODES = ("n1", "n2", "n3", "n4")
CHANNELS = ("web", "pos", "solo")
UNKNOWN_NODE = "ghost"
UNKNOWN_CHANNEL = "fax"
MISSING_RESERVATION = "never-reserved"

# Small numbers on purpose: three SKUs over four nodes run out, go short and
# collide within a few steps. Bad input (unknown node, channel or reservation,
# negative counts, bad line indexes) is drawn rarely, so that most steps reach
# the interesting paths while every error path is still visited.
ttls = st.sampled_from([1.0, 2.0, 5.0, 10.0, 30.0, 120.0])
clock_steps = st.sampled_from([0.0, 0.001, 0.5, 1.0, 1.0, 2.0, 3.0, 5.0, 30.0, 500.0])


# A channel's allocation rule at one node, as define_channel takes it resolved:
# mostly none, else a share, a cap or a protection with small values, so rules
# bite within a few steps.
node_rules = st.one_of(
    st.just((int(RuleKind.NONE), 0)),
    st.just((int(RuleKind.NONE), 0)),
    st.tuples(st.just(int(RuleKind.SHARE)), st.sampled_from([0, 25, 50, 100])),
    st.tuples(st.just(int(RuleKind.CAP)), st.integers(0, 6)),
    st.tuples(st.just(int(RuleKind.PROTECT)), st.integers(0, 4)),
)


def rarely(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``common`` about nine times in ten, else ``rare``."""
    return st.integers(0, 9).flatmap(lambda n: rare if n == 0 else common)


@st.composite
def supply_ops(draw: st.DrawFn) -> SupplyOp:
    kind = draw(
        st.sampled_from(
            [
                SupplyKind.ADJUST,
                SupplyKind.ADJUST,
                SupplyKind.SET,
                SupplyKind.SAFETY,
                SupplyKind.SAFETY_DEFAULT,
            ]
        )
    )
    node = draw(rarely(st.sampled_from(NODES), st.just(UNKNOWN_NODE)))
    if kind == SupplyKind.ADJUST:
        value = draw(st.integers(-5, 12))
    elif kind == SupplyKind.SET:
        value = draw(rarely(st.integers(0, 15), st.just(-1)))
    else:
        value = draw(rarely(st.integers(0, 3), st.just(-1)))
    version = draw(st.integers(0, 6)) if kind == SupplyKind.SET else 0
    if kind == SupplyKind.SAFETY_DEFAULT:
        value = 0
    return SupplyOp(kind, draw(st.sampled_from(SKUS)), node, value, version, None)


class LedgerDifferential(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ref: Ledger = make_ledger(REFERENCE)
        self.cand: Ledger = make_ledger(CANDIDATE)
        self.now = 0.0
        # Time of the latest mutation: every mutation first expires what is due,
        # so no hold may still be live past it.
        self.synced = 0.0
        self.requests: dict[str, tuple[str, list[tuple[str, int, str | None]], float, bool, str | None]] = {}
        self.events: dict[str, SupplyOp] = {}
        self.terminal: dict[str, Any] = {}
        self.counter = 0
        self.channel_nodes: dict[str, list[str]] = {}
        self.channel_rules: dict[str, list[tuple[int, int]] | None] = {}

    # ------------------------------------------------------------------ driving

    def both(self, call: Any) -> tuple[str, Any]:
        """Run ``call`` on both ledgers; they must answer identically."""
        expected = outcome(lambda: call(self.ref))
        actual = outcome(lambda: call(self.cand))
        assert actual == expected, f"{CANDIDATE} answered {actual!r}, {REFERENCE} answered {expected!r}"
        return expected

    def mutate(self, call: Any) -> tuple[str, Any]:
        result = self.both(call)
        self.synced = self.now
        return result

    def known_ids(self) -> list[str]:
        return sorted(self.requests)

    def live_reservations(self, ledger: Ledger) -> dict[str, Any]:
        return {rid: ledger.get_reservation(rid) for rid in self.known_ids() if ledger.has_reservation(rid)}

    def pick_reservation(self, data: st.DataObject, *states: ReservationState) -> str:
        """Mostly a reservation in one of ``states``, else one that exists; sometimes
        any id ever tried (failed attempts included) or one never seen."""
        reservations = self.live_reservations(self.ref)
        preferred = [rid for rid, res in reservations.items() if res.state in states] or sorted(reservations)
        anything = st.sampled_from([*self.known_ids(), MISSING_RESERVATION])
        if preferred:
            return data.draw(rarely(st.sampled_from(preferred), anything))
        return data.draw(anything)

    def pick_line_indexes(self, data: st.DataObject, rid: str) -> list[int] | None:
        """None (the whole reservation) or some of its lines; rarely a bad list."""
        count = len(self.ref.get_reservation(rid).lines) if self.ref.has_reservation(rid) else 1
        some_lines = st.lists(st.integers(0, count - 1), min_size=1, max_size=3)
        bad = st.lists(st.integers(-1, count), max_size=3)
        return data.draw(rarely(st.one_of(st.none(), some_lines), bad))

    def fresh_id(self) -> str:
        self.counter += 1
        return f"r{self.counter}"

    # ------------------------------------------------------------------ rules

    @initialize(order=st.permutations(NODES), data=st.data())
    def define_network(self, order: list[str], data: st.DataObject) -> None:
        # Channel priority orders differ from run to run; node definition order too.
        nodes = {"web": order[:3], "pos": order[2:], "solo": order[1:2]}
        self.channel_nodes = nodes
        self.channel_rules = {
            c: data.draw(
                st.one_of(st.none(), st.lists(node_rules, min_size=len(nodes[c]), max_size=len(nodes[c])))
            )
            for c in CHANNELS
        }
        for ledger in (self.ref, self.cand):
            for node in reversed(order):
                ledger.define_node(node)
            for channel in CHANNELS:
                ledger.define_channel(channel, nodes[channel], self.channel_rules[channel])
        # Start with some stock so reservations succeed early in a run.
        self.mutate(
            lambda ledger: ledger.apply_supply(
                [SupplyOp(SupplyKind.ADJUST, sku, node, 8) for sku in SKUS for node in order[:3]], 0.0
            )
        )
        # And some open carts: hypothesis switches rules off at random per run, and
        # a run without the reserve rule would otherwise have nothing to commit,
        # release, fulfill or extend.
        for _ in range(data.draw(st.integers(1, 4))):
            self.reserve(data=data, allow_partial=data.draw(st.booleans()), ttl=data.draw(ttls))

    @rule(step=clock_steps)
    def advance_clock(self, step: float) -> None:
        self.now += step

    @rule(data=st.data())
    def advance_onto_an_expiry(self, data: st.DataObject) -> None:
        """Land the clock exactly on (or just around) a live hold's expiry."""
        expiries = sorted(
            res.expires_at for res in self.live_reservations(self.ref).values() if res.state == HELD
        )
        if not expiries:
            return
        target = data.draw(st.sampled_from(expiries)) + data.draw(
            st.sampled_from([-0.001, 0.0, 0.0, 1.0, 1.5])
        )
        self.now = max(self.now, target)

    @rule(step=st.sampled_from([0.0, 0.0, 1.0, 5.0, 30.0]))
    def expire_due(self, step: float) -> None:
        """What the store's expiry timer does: move on, then expire what is due.

        Mutations expire implicitly too; this is where several holds expire in
        one call, so where the (expires_at, id) order shows."""
        self.now += step
        before = self.live_reservations(self.ref)
        due = {rid for rid, res in before.items() if res.state == HELD and res.expires_at <= self.now}
        kind, expired = self.mutate(lambda ledger: ledger.expire_due(self.now))
        assert kind == "ok"
        assert len(expired) == len(set(expired)), f"an id expired twice: {expired}"
        assert set(expired) == due
        order = [(before[rid].expires_at, rid) for rid in expired]
        assert order == sorted(order)

    @rule(data=st.data(), channel=st.sampled_from(CHANNELS))
    def change_rules(self, data: st.DataObject, channel: str) -> None:
        """An UpsertChannel that changes the rules: tracking starts (counting the
        channel's live holds), stops, or the rules move under existing holds."""
        count = len(self.channel_nodes[channel])
        rules = data.draw(
            st.one_of(
                st.none(),
                st.lists(node_rules, min_size=count, max_size=count),
                # rarely a bad list: wrong length or a value out of range
                rarely(st.none(), st.just([(int(RuleKind.SHARE), 101)] * count)),
                rarely(st.none(), st.just([(int(RuleKind.CAP), 1)] * (count + 1))),
            )
        )
        kind, _ = self.both(lambda ledger: ledger.define_channel(channel, self.channel_nodes[channel], rules))
        if kind == "ok":
            self.channel_rules[channel] = rules

    @rule(data=st.data(), count=st.integers(1, 3))
    def supply(self, data: st.DataObject, count: int) -> None:
        ops = []
        for _ in range(count):
            op = data.draw(supply_ops())
            mode = data.draw(
                st.sampled_from(["none", "new", "replay", "reuse"] if self.events else ["none", "new"])
            )
            if mode == "new":
                # Two "new" ops of one batch share the id: a duplicate or a
                # mismatch inside the batch, which is worth visiting too.
                op = op._replace(event_id=f"e{len(self.events)}")
            elif mode == "replay":  # the same event again, same body: a duplicate
                op = self.events[data.draw(st.sampled_from(sorted(self.events)))]
            elif mode == "reuse":  # the same event id with (usually) another body: a mismatch
                op = op._replace(event_id=data.draw(st.sampled_from(sorted(self.events))))
            ops.append(op)
        now = self.now
        if count == 1 and data.draw(st.booleans()):
            # The single-op entry points, which the service calls most.
            kind, sku, node, value, version, event_id = ops[0]
            if kind == SupplyKind.ADJUST:
                result = self.mutate(lambda ledger: ledger.adjust_stock(sku, node, value, event_id, now))
            elif kind == SupplyKind.SET:
                result = self.mutate(
                    lambda ledger: ledger.set_stock(sku, node, value, version, event_id, now)
                )
            else:
                result = self.mutate(lambda ledger: ledger.set_safety_stock(sku, node, value, event_id, now))
        else:
            result = self.mutate(lambda ledger: ledger.apply_supply(ops, now))
        if result[0] == "ok":
            for op in ops:
                if op.event_id is not None:
                    self.events.setdefault(op.event_id, op)

    @rule(data=st.data(), allow_partial=st.booleans(), ttl=ttls)
    def reserve(self, data: st.DataObject, allow_partial: bool, ttl: float) -> None:
        channel = data.draw(rarely(st.sampled_from(CHANNELS), st.just(UNKNOWN_CHANNEL)))
        eligible = self.channel_nodes.get(channel, ())
        node = st.one_of(
            st.none(),
            st.none(),
            st.sampled_from(eligible) if eligible else st.none(),
            rarely(st.none(), st.sampled_from([*NODES, UNKNOWN_NODE])),
        )
        lines = data.draw(
            st.lists(st.tuples(st.sampled_from(SKUS), st.integers(1, 6), node), min_size=1, max_size=4)
        )
        # Promise-driven sourcing, sometimes: explicit candidates per line (any
        # order, with repeats, foreign and unknown nodes the ledgers must skip),
        # no-split, and a fulfillment context kept for replays.
        candidates, whole, context = None, False, None
        if data.draw(st.integers(0, 2)) == 0:
            ranked = st.one_of(
                st.none(),
                st.lists(st.sampled_from([*NODES, UNKNOWN_NODE]), max_size=5).map(tuple),
                st.permutations(list(eligible)).map(tuple) if eligible else st.none(),
            )
            candidates = data.draw(st.lists(ranked, min_size=len(lines), max_size=len(lines)))
            whole = data.draw(st.booleans())
            context = data.draw(st.sampled_from([None, "ship|10001", "pickup|store-1"]))
        backorder = None
        if data.draw(st.integers(0, 3)) == 0:
            candidates, backorder = self.draw_backorder(data, lines, candidates, eligible)
        self.do_reserve(
            self.fresh_id(), channel, lines, ttl, allow_partial, candidates, whole, context, backorder
        )

    def draw_backorder(
        self,
        data: st.DataObject,
        lines: list[tuple[str, int, str | None]],
        candidates: list[tuple[str, ...] | None] | None,
        eligible: tuple[str, ...] | list[str],
    ) -> tuple[list[tuple[str, ...] | None] | None, list[int]]:
        """Backorder allowances for a request, and the candidates that give its
        node-less lines one node each (mostly; mostly an eligible one, rarely
        one the ledgers must drop). Rarely a bad list: a negative allowance,
        an allowance on a line without one node, or the wrong length."""
        usual = st.sampled_from(list(eligible) or NODES)
        ranked = list(candidates) if candidates is not None else [None] * len(lines)
        allowances: list[int] = []
        for index, (_, _, node) in enumerate(lines):
            if node is None and data.draw(st.integers(0, 4)) > 0:
                ranked[index] = (data.draw(rarely(usual, st.sampled_from([*NODES, UNKNOWN_NODE]))),)
            one_node = node is not None or (ranked[index] is not None and len(ranked[index]) == 1)
            units = data.draw(st.sampled_from([0, 1, 2, 4, 8])) if one_node else 0
            allowances.append(data.draw(rarely(st.just(units), st.sampled_from([-1, 3]))))
        if data.draw(st.integers(0, 19)) == 0:
            allowances = allowances[:-1] if data.draw(st.booleans()) else [*allowances, 1]
        return ranked, allowances

    @rule(data=st.data())
    def replay_reserve(self, data: st.DataObject) -> None:
        if not self.requests:
            return
        rid = data.draw(st.sampled_from(self.known_ids()))
        channel, lines, ttl, allow_partial, context = self.requests[rid]
        change = data.draw(
            st.sampled_from(
                [
                    "same",
                    "same",
                    "quantity",
                    "ttl",
                    "partial",
                    "channel",
                    "extra-line",
                    "context",
                    "ranked",
                    "backorder",
                ]
            )
        )
        candidates: list[tuple[str, ...] | None] | None = None
        backorder: list[int] | None = None
        if change == "quantity":
            lines = [(lines[0][0], lines[0][1] + 1, lines[0][2]), *lines[1:]]
        elif change == "ttl":
            ttl += 1.0
        elif change == "partial":
            allow_partial = not allow_partial
        elif change == "channel":
            channel = "pos" if channel != "pos" else "web"
        elif change == "extra-line":
            lines = [*lines, ("A", 1, None)]
        elif change == "context":
            context = "ship|94105" if context != "ship|94105" else None
        elif change == "ranked":
            # Other candidates are no other request: a replay does not source again.
            candidates = [tuple(reversed(NODES))] * len(lines)
        elif change == "backorder":
            # Nor are other backorder allowances (here, ones a new request would
            # refuse for its node-less lines).
            backorder = [3] * len(lines)
        whole = data.draw(st.booleans())
        self.do_reserve(rid, channel, lines, ttl, allow_partial, candidates, whole, context, backorder)

    def do_reserve(
        self,
        rid: str,
        channel: str,
        lines: list[tuple[str, int, str | None]],
        ttl: float,
        allow_partial: bool,
        candidates: list[tuple[str, ...] | None] | None = None,
        whole: bool = False,
        context: str | None = None,
        backorder: list[int] | None = None,
    ) -> None:
        existed = self.ref.has_reservation(rid)
        ledgers = (self.ref, self.cand)
        rules = dict(
            zip(self.channel_nodes.get(channel, ()), self.channel_rules.get(channel) or (), strict=False)
        )
        now = self.now
        # The rows as the reserve sees them: it first expires the holds due at
        # ``now``, so they are read from a copy that did the same (both ledgers
        # hold the same state: see same_state).
        seen = make_ledger(REFERENCE)
        seen.load_state(self.ref.export_state())
        seen.expire_due(now)
        levels_before = {(r.sku, r.node): r for r in seen.iter_rows()}
        if candidates is None and not whole and context is None and backorder is None:
            # The plain call, exactly as every caller made it before promise-driven sourcing.
            kind, _ = self.mutate(lambda ledger: ledger.reserve(rid, channel, lines, ttl, allow_partial, now))
        elif backorder is None:
            # As callers made it before backorder holds.
            kind, _ = self.mutate(
                lambda ledger: ledger.reserve(
                    rid, channel, lines, ttl, allow_partial, now, candidates, whole, context
                )
            )
        else:
            kind, _ = self.mutate(
                lambda ledger: ledger.reserve(
                    rid, channel, lines, ttl, allow_partial, now, candidates, whole, context, backorder
                )
            )
        body = (channel, lines, ttl, allow_partial, context)
        if kind == "ok" and not existed:
            self.requests[rid] = body  # the body the ledger stored
        else:
            self.requests.setdefault(rid, body)
        if kind != "ok" or existed:
            return
        # The largest backorder allowance held at each row by this request.
        allowed: dict[tuple[str, str], int] = {}
        for ledger in ledgers:
            for index, line in enumerate(ledger.get_reservation(rid).lines):
                if whole and line.allocations:
                    # No split: one node took the whole line.
                    assert [a.quantity for a in line.allocations] == [line.requested]
                ranked = candidates[index] if candidates is not None else None
                if line.requested_node is None and ranked is not None:
                    assert {a.node for a in line.allocations} <= set(ranked)
                units = backorder[index] if backorder is not None else 0
                if units and line.allocations:
                    # A backorder line is whole, at its one node.
                    node = line.requested_node or (ranked or ("",))[0]
                    assert [(a.node, a.quantity) for a in line.allocations] == [(node, line.requested)]
                    key = (line.sku, node)
                    allowed[key] = max(allowed.get(key, 0), units)
        for ledger in ledgers:
            for line in ledger.get_reservation(rid).lines:
                for alloc in line.allocations:
                    key = (line.sku, alloc.node)
                    level = ledger.stock(*key)
                    after = level.atp
                    seen_level = levels_before.get(key)
                    before = seen_level.atp if seen_level is not None else 0
                    used = ledger.channel_usage(*key).get(channel, 0)
                    kind, value = rules.get(alloc.node, (int(RuleKind.NONE), 0))
                    where = f"{ledger.implementation}: hold {rid} took {line.sku}@{alloc.node} to ATP {after}"
                    if after < min(before, 0):
                        # Only a backorder hold takes a row's ATP below zero (or
                        # further below): to no less than minus the allowance it
                        # was held with, and only where the channel has no
                        # allocation rule (a ruled channel takes no backorders).
                        assert after >= -allowed.get(key, 0), where
                        assert kind == RuleKind.NONE, where
                        continue
                    # Otherwise a new hold never pushes a row's ATP below zero
                    # (unless it was already).
                    assert after >= 0 or before < 0, where
                    # The channel's rule held: a share or a cap is not exceeded by
                    # a take, and a protection leaves the protected units.
                    if kind == RuleKind.SHARE:
                        assert used <= max(level.on_hand - level.safety_stock, 0) * value // 100
                    elif kind == RuleKind.CAP:
                        assert used <= value
                    elif kind == RuleKind.PROTECT:
                        assert after >= min(value, before)

    @rule(data=st.data())
    def commit(self, data: st.DataObject) -> None:
        rid = self.pick_reservation(data, HELD)
        now = self.now
        self.mutate(lambda ledger: ledger.commit(rid, now))

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        rid = self.pick_reservation(data, HELD, COMMITTED, ReservationState.FULFILLED)
        line_indexes = self.pick_line_indexes(data, rid)
        now = self.now
        self.mutate(lambda ledger: ledger.release(rid, line_indexes, now))

    @rule(data=st.data())
    def fulfill(self, data: st.DataObject) -> None:
        rid = self.pick_reservation(data, COMMITTED)
        line_indexes = self.pick_line_indexes(data, rid)
        now = self.now
        self.mutate(lambda ledger: ledger.fulfill(rid, line_indexes, now))

    @rule(data=st.data(), ttl=ttls, retried=st.booleans())
    def extend(self, data: st.DataObject, ttl: float, retried: bool) -> None:
        rid = self.pick_reservation(data, HELD)
        now = self.now
        if self.ref.has_reservation(rid) and data.draw(st.integers(0, 3)) == 0:
            # Exactly the time left: the new expiry equals the current one.
            remaining = self.ref.get_reservation(rid).expires_at - now
            if remaining > 0:
                ttl = remaining
        self.mutate(lambda ledger: ledger.extend(rid, ttl, now))
        if retried:  # a client retrying after a lost reply: same request, same instant
            self.mutate(lambda ledger: ledger.extend(rid, ttl, now))

    @rule(node=st.sampled_from(NODES), units=rarely(st.integers(0, 4), st.just(-1)))
    def set_node_default(self, node: str, units: int) -> None:
        """An UpsertNode changing the node's default safety stock: every row of
        the node without its own follows at once (-1: refused, by both)."""
        self.both(lambda ledger: ledger.define_node(node, units))  # expires nothing, as define_channel

    @rule(sku=st.sampled_from(SKUS), node=st.sampled_from(NODES))
    def clear_own_safety(self, sku: str, node: str) -> None:
        """SetSafetyStock with use_node_default: the row follows its node again."""
        now = self.now
        op = SupplyOp(SupplyKind.SAFETY_DEFAULT, sku, node, 0, 0, None)
        self.mutate(lambda ledger: ledger.apply_supply([op], now))
        assert self.cand.has_own_safety_stock(sku, node) is False
        assert self.ref.has_own_safety_stock(sku, node) is False

    @rule(data=st.data())
    def set_row(self, data: st.DataObject) -> None:
        """What the availability view does with a change-feed entry: absolute counters.

        ``reserved`` and ``committed`` keep their values (the rows here carry
        holds, and the invariants recompute them from the reservations); on_hand,
        safety stock and version move freely, so rows go short, get created, and
        reservations then meet them. Nothing expires: no ``now`` is involved.
        """
        sku = data.draw(st.sampled_from([*SKUS, "view-only"]))
        node = data.draw(rarely(st.sampled_from(NODES), st.just(UNKNOWN_NODE)))
        level = self.ref.stock(sku, node)
        # The channel counters a feed entry carries: kept as they are, plus a
        # channel the ledger does not track (which it ignores).
        usage = {**self.ref.channel_usage(sku, node), "callcenter": data.draw(st.integers(0, 3))}
        on_hand = data.draw(rarely(st.integers(0, 15), st.just(-1)))
        # -1: the row follows its node's default (a Redis row's ss, as the feed gives it)
        safety = data.draw(st.integers(-1, 3))
        version = data.draw(st.integers(0, 6))
        self.both(
            lambda ledger: ledger.set_row(
                sku, node, on_hand, level.reserved, level.committed, safety, version, usage
            )
        )

    @rule(
        channel=st.sampled_from([None, *CHANNELS, UNKNOWN_CHANNEL]),
        nodes=st.one_of(
            st.none(), st.lists(st.sampled_from([*NODES, UNKNOWN_NODE]), max_size=3, unique=True)
        ),
        per_node=st.booleans(),
    )
    def query_availability(self, channel: str | None, nodes: list[str] | None, per_node: bool) -> None:
        self.both(lambda ledger: ledger.availability([*SKUS, "never-stocked"], channel, nodes, per_node))

    @rule()
    def swap_through_snapshots(self) -> None:
        """Each implementation continues from the other's exported image (via JSON)."""
        ref_image = json.loads(json.dumps(self.ref.export_state()))
        cand_image = json.loads(json.dumps(self.cand.export_state()))
        self.ref = make_ledger(REFERENCE)
        self.ref.load_state(cand_image)
        self.cand = make_ledger(CANDIDATE)
        self.cand.load_state(ref_image)

    # ------------------------------------------------------------------ checks

    @invariant()
    def same_state(self) -> None:
        assert normalized_state(self.cand.export_state()) == normalized_state(self.ref.export_state())
        assert list(self.cand.iter_rows()) == list(self.ref.iter_rows())
        assert self.cand.shortages() == self.ref.shortages()
        assert self.cand.row_count() == self.ref.row_count()
        for node in NODES:
            assert self.cand.node_safety_stock(node) == self.ref.node_safety_stock(node)
        assert self.cand.reservation_count() == self.ref.reservation_count()

    @invariant()
    def same_availability(self) -> None:
        skus = [*SKUS, "never-stocked"]
        assert self.cand.availability(skus, None, NODES, True) == self.ref.availability(
            skus, None, NODES, True
        )
        for channel in CHANNELS:
            assert self.cand.availability(skus, channel, None, True) == self.ref.availability(
                skus, channel, None, True
            )

    @invariant()
    def same_audit(self) -> None:
        assert self.ref.audit(self.synced) == []
        assert self.cand.audit(self.synced) == []
        # Past the last mutation, both flag the same overdue holds.
        assert self.cand.audit(self.now) == self.ref.audit(self.now)

    @invariant()
    def counters_agree_with_reservations(self) -> None:
        """Recompute reserved/committed per row from the reservations themselves."""
        ref_reservations = self.live_reservations(self.ref)
        cand_reservations = self.live_reservations(self.cand)
        assert cand_reservations == ref_reservations
        for ledger, reservations in ((self.ref, ref_reservations), (self.cand, cand_reservations)):
            held: dict[tuple[str, str], int] = {}
            committed: dict[tuple[str, str], int] = {}
            earliest_hold = None
            for rid, res in reservations.items():
                assert res.state == aggregate_state([line.state for line in res.lines])
                if res.state == HELD:
                    assert res.expires_at > self.synced, f"{rid} is still held after its expiry"
                    if earliest_hold is None or res.expires_at < earliest_hold:
                        earliest_hold = res.expires_at
                for line in res.lines:
                    assert 0 <= line.allocated <= line.requested
                    if not res.allow_partial and line.state != ReservationState.RELEASED:
                        assert line.allocated == line.requested
                    if line.state in (HELD, COMMITTED):
                        assert line.allocated > 0
                    target = held if line.state == HELD else committed if line.state == COMMITTED else None
                    if target is not None:
                        for alloc in line.allocations:
                            assert alloc.quantity > 0
                            key = (line.sku, alloc.node)
                            target[key] = target.get(key, 0) + alloc.quantity
            rows = {(r.sku, r.node): r for r in ledger.iter_rows()}
            for key in set(rows) | set(held) | set(committed):
                row = rows.get(key)
                assert row is not None, f"{ledger.implementation}: units promised from a missing row {key}"
                assert row.reserved >= 0 and row.committed >= 0 and row.on_hand >= 0
                assert row.reserved == held.get(key, 0), f"{ledger.implementation}: reserved of {key}"
                assert row.committed == committed.get(key, 0), f"{ledger.implementation}: committed of {key}"
            if earliest_hold is not None:
                pending = ledger.next_expiry()
                assert pending is not None and pending <= earliest_hold

    @invariant()
    def channel_used_agrees_with_reservations(self) -> None:
        """Per tracked channel (one with rules) and row: held + committed units of its lines."""
        expected: dict[tuple[str, str], dict[str, int]] = {}
        for res in self.live_reservations(self.ref).values():
            if not any(k != RuleKind.NONE for k, _ in self.channel_rules.get(res.channel) or ()):
                continue
            for line in res.lines:
                if line.state in (HELD, COMMITTED):
                    for alloc in line.allocations:
                        per = expected.setdefault((line.sku, alloc.node), {})
                        per[res.channel] = per.get(res.channel, 0) + alloc.quantity
        for sku in [*SKUS, "view-only"]:
            for node in NODES:
                want = dict(sorted(expected.get((sku, node), {}).items()))
                assert self.ref.channel_usage(sku, node) == want
                assert self.cand.channel_usage(sku, node) == want

    @invariant()
    def terminal_reservations_never_change(self) -> None:
        for rid, res in self.live_reservations(self.ref).items():
            if rid in self.terminal:
                assert res == self.terminal[rid], f"{rid} changed after reaching {self.terminal[rid].state!r}"
            elif res.state in TERMINAL:
                self.terminal[rid] = res


LedgerDifferential.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestLedgerDifferential = LedgerDifferential.TestCase
