"""Channel allocation: what share of a node's ATP each sales channel may take.

A rule belongs to one channel and covers one node, every node of a type, or
every node (most specific wins). Three kinds:

- ``SHARE`` (percent, 0..100): the channel may hold up to that percentage of
  the node's sellable stock (``on_hand - safety_stock``), rounded down.
  "Marketplaces get 30% of DC stock."
- ``CAP`` (units): the channel may hold at most that many units at the node.
  "The call center never holds more than 5 units of a store's stock."
- ``PROTECT`` (units, with the channel it protects): the channel may not take
  the last N units of ATP; they stay for the protected channel. "Web cannot
  take a store's last 2 units: they are for walk-in POS customers." The
  protected channel itself has no such rule, so it can sell them.

"Holds" means units of this channel at the node that are reserved or
committed (``channel_used``): the ledger keeps that counter per (SKU, node,
channel) so a share is a share of the stock, not of what others left over.

:func:`channel_allowance` is the whole decision, a pure function of integers,
so the ledgers (pure, Cython via ``engine/_fast/allocation.pxd``, and the
Redis Lua scripts) all compute the same number.

Invariants (for any counters and any rules), with ``ATP = on_hand - reserved
- committed - safety_stock``:

1. ``0 <= channel_allowance(...) <= max(ATP, 0)``. A ledger that refuses a
   take larger than the allowance and applies the check and the take
   atomically therefore never drives ATP below zero: **the sum of what all
   channels take from a node never exceeds the node's ATP**, however many
   channels reserve concurrently and whatever their rules say (even shares
   adding up to more than 100%, which is allowed: shares overlap, stock does
   not).
2. With ``SHARE`` or ``CAP``, ``channel_used`` after an allowed take is at
   most the channel's quota: no channel exceeds its share.
3. With ``PROTECT n``, an allowed take leaves ``ATP >= min(n, ATP before)``:
   the restricted channel never takes the protected units.

What a channel *sees* (its availability) is its allowance; allowances of
different channels overlap where they share stock, so they are not meant to
add up to ATP — takes are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum

from engine.core.errors import FieldViolation, InvalidArgument
from engine.core.types import Channel, Node, NodeType

__all__ = [
    "AllocationPolicy",
    "AllocationRule",
    "RuleKind",
    "channel_allowance",
    "decode_rules",
    "encode_rules",
    "resolve_channel_rules",
    "rule_violations",
    "ruled_nodes",
]

MAX_UNITS = 1_000_000_000_000
_CHANNEL = re.compile(r"web|app|pos|callcenter|marketplace:[!-z|~]{1,64}")


class RuleKind(IntEnum):
    """Same numbers as the ``RK_*`` constants of engine/_fast/allocation.pxd."""

    NONE = 0
    SHARE = 1
    CAP = 2
    PROTECT = 3


def channel_allowance(
    on_hand: int,
    reserved: int,
    committed: int,
    safety_stock: int,
    kind: int,
    value: int,
    channel_used: int,
) -> int:
    """Units the channel may still take at the node under its rule (see the module doc).

    ``kind``/``value`` come from the channel's rule (``RuleKind.NONE`` and any
    value when it has none); ``channel_used`` is what the channel already holds
    there (reserved + committed).
    """
    atp = on_hand - reserved - committed - safety_stock
    if atp <= 0:
        return 0
    if kind == RuleKind.SHARE:
        sellable = on_hand - safety_stock
        quota = sellable * value // 100 if sellable > 0 else 0
        room = quota - channel_used
    elif kind == RuleKind.CAP:
        room = value - channel_used
    elif kind == RuleKind.PROTECT:
        room = atp - value
    else:
        return atp
    if room <= 0:
        return 0
    return room if room < atp else atp


@dataclass(frozen=True, slots=True, kw_only=True)
class AllocationRule:
    """One channel's rule at one node, a node type, or (neither given) every node."""

    channel: str
    kind: RuleKind
    value: int  # percent for SHARE, units for CAP and PROTECT
    node: str | None = None
    node_type: NodeType | None = None
    protects: str | None = None  # PROTECT: the channel the units are kept for (documentation)

    @property
    def scope(self) -> tuple[str, str | None, NodeType | None]:
        return (self.channel, self.node, self.node_type)


def rule_violations(rules: Iterable[AllocationRule], prefix: str = "rules") -> list[FieldViolation]:
    v: list[FieldViolation] = []
    seen: dict[tuple[str, str | None, NodeType | None], int] = {}
    for i, rule in enumerate(rules):
        at = f"{prefix}[{i}]"
        if not isinstance(rule.channel, str) or _CHANNEL.fullmatch(rule.channel) is None:
            v.append(
                FieldViolation(f"{at}.channel", "must be web, app, pos, callcenter or marketplace:<name>")
            )
        if rule.kind not in (RuleKind.SHARE, RuleKind.CAP, RuleKind.PROTECT):
            v.append(FieldViolation(f"{at}.kind", "must be SHARE, CAP or PROTECT"))
        elif rule.kind == RuleKind.SHARE and not (type(rule.value) is int and 0 <= rule.value <= 100):
            v.append(FieldViolation(f"{at}.value", "a share is a whole percentage 0..100"))
        elif rule.kind != RuleKind.SHARE and not (type(rule.value) is int and 0 <= rule.value <= MAX_UNITS):
            v.append(FieldViolation(f"{at}.value", f"must be 0..{MAX_UNITS} units"))
        if rule.node is not None and rule.node_type is not None:
            v.append(FieldViolation(at, "give a node or a node type, not both"))
        if rule.protects is not None:
            if rule.kind != RuleKind.PROTECT:
                v.append(FieldViolation(f"{at}.protects", "only a PROTECT rule protects a channel"))
            elif rule.protects == rule.channel:
                v.append(FieldViolation(f"{at}.protects", "a channel cannot protect units from itself"))
        if rule.scope in seen:
            v.append(FieldViolation(at, f"same channel and scope as {prefix}[{seen[rule.scope]}]"))
        else:
            seen[rule.scope] = i
    return v


class AllocationPolicy:
    """Every channel's rules, resolved per (channel, node): node rule, else node-type rule,
    else the channel-wide rule, else none (the channel sees the node's whole ATP)."""

    __slots__ = ("_by_node", "_by_type", "_by_channel", "rules")

    def __init__(self, rules: Iterable[AllocationRule] = ()) -> None:
        self.rules = tuple(rules)
        v = rule_violations(self.rules)
        if v:
            first = v[0]
            raise InvalidArgument(f"{first.field} {first.description}", tuple(v))
        self._by_node: dict[tuple[str, str], AllocationRule] = {}
        self._by_type: dict[tuple[str, NodeType], AllocationRule] = {}
        self._by_channel: dict[str, AllocationRule] = {}
        for rule in self.rules:
            if rule.node is not None:
                self._by_node[(rule.channel, rule.node)] = rule
            elif rule.node_type is not None:
                self._by_type[(rule.channel, rule.node_type)] = rule
            else:
                self._by_channel[rule.channel] = rule

    def rule_for(self, channel: str, node: Node) -> AllocationRule | None:
        return self.rule_at(channel, node.id, node.type)

    def rule_at(self, channel: str, node_id: str, node_type: NodeType | None) -> AllocationRule | None:
        """The rule for a node given by id and type (None: a type no type rule matches)."""
        rule = self._by_node.get((channel, node_id))
        if rule is None and node_type is not None:
            rule = self._by_type.get((channel, node_type))
        if rule is None:
            rule = self._by_channel.get(channel)
        return rule

    def allowance(
        self,
        channel: str,
        node: Node,
        on_hand: int,
        reserved: int,
        committed: int,
        safety_stock: int,
        channel_used: int = 0,
    ) -> int:
        rule = self.rule_for(channel, node)
        if rule is None:
            return channel_allowance(on_hand, reserved, committed, safety_stock, RuleKind.NONE, 0, 0)
        return channel_allowance(
            on_hand, reserved, committed, safety_stock, rule.kind, rule.value, channel_used
        )

    def channel_atp(
        self,
        channel: str,
        nodes: Mapping[str, Node],
        levels: Iterable[tuple[str, int, int, int, int, int]],
    ) -> dict[str, int]:
        """ATP by node as the channel may see it, from ``(node, on_hand, reserved,
        committed, safety_stock, channel_used)`` rows: what the promiser's ATP
        source should return for this channel."""
        out: dict[str, int] = {}
        for node_id, on_hand, reserved, committed, safety, used in levels:
            q = self.allowance(channel, nodes[node_id], on_hand, reserved, committed, safety, used)
            if q > 0:
                out[node_id] = q
        return out


def resolve_channel_rules(channel: Channel, nodes: Mapping[str, Node]) -> list[tuple[int, int]] | None:
    """The channel's rule at each of its eligible nodes, as the ledgers'
    ``define_channel`` takes it: ``(kind, value)`` per node in ``channel.nodes``
    order, ``(NONE, 0)`` where no rule applies; None for a channel without rules.

    Resolution needs the node's type, so a store resolves again when a node's
    type changes. A node missing from ``nodes`` resolves by its id and the
    channel-wide rule only.
    """
    if not channel.allocation_rules:
        return None
    policy = AllocationPolicy(channel.allocation_rules)
    out: list[tuple[int, int]] = []
    for node_id in channel.nodes:
        node = nodes.get(node_id)
        rule = policy.rule_at(channel.id, node_id, node.type if node is not None else None)
        out.append((int(rule.kind), int(rule.value)) if rule is not None else (int(RuleKind.NONE), 0))
    return out


def ruled_nodes(channel: Channel | None, nodes: Mapping[str, Node]) -> frozenset[str]:
    """The eligible nodes of ``channel`` where one of its allocation rules
    applies (any kind), resolved as :func:`resolve_channel_rules` resolves
    them. The channel takes no backorders there (the ledgers hold its lines at
    such a node from its allowance only), so the promiser counts no inbound
    supply there for it either. Empty for no channel or one without rules.
    """
    if channel is None:
        return frozenset()
    resolved = resolve_channel_rules(channel, nodes)
    if resolved is None:
        return frozenset()
    return frozenset(
        node for node, (kind, _) in zip(channel.nodes, resolved, strict=True) if kind != RuleKind.NONE
    )


def encode_rules(rules: Iterable[AllocationRule]) -> list[dict[str, object]]:
    """JSON-able rules, for the stores' network records (the channel id is the record's)."""
    return [
        {
            "kind": int(rule.kind),
            "value": rule.value,
            "node": rule.node,
            "node_type": None if rule.node_type is None else int(rule.node_type),
            "protects": rule.protects,
        }
        for rule in rules
    ]


def decode_rules(channel: str, data: Iterable[Mapping[str, object]]) -> tuple[AllocationRule, ...]:
    out: list[AllocationRule] = []
    for item in data:
        node_type = item.get("node_type")
        out.append(
            AllocationRule(
                channel=channel,
                kind=RuleKind(int(item["kind"])),  # type: ignore[call-overload]
                value=int(item["value"]),  # type: ignore[call-overload]
                node=item.get("node"),  # type: ignore[arg-type]
                node_type=None if node_type is None else NodeType(int(node_type)),  # type: ignore[call-overload]
                protects=item.get("protects"),  # type: ignore[arg-type]
            )
        )
    return tuple(out)
