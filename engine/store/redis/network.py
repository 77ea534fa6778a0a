"""Nodes and channels in Redis (``<ns>:net``) and each process's copy of them.

Nodes and channels are stored as JSON of every dataclass field, so a field
added to :class:`~engine.core.types.Node` or :class:`~engine.core.types.Channel`
is stored and read back without touching this module; a field this process
does not know (written by a newer engine) is ignored when reading.

Every process keeps a copy of the network (:class:`NetworkCopy`): the reserve
script gets the channel's eligible nodes in ARGV from it, and node checks are
made against it. The copy is reloaded when the network's version counter
moves: the sweeper looks at it every tick, and a reference to a channel or
node the copy does not know reloads it before the engine says "unknown". A
change made by another process is therefore seen within one sweep interval,
or at once when it introduces a name.
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from engine.core.allocation_rules import decode_rules, encode_rules
from engine.core.ledger import FOLLOW_NODE_DEFAULT
from engine.core.types import Channel, Node, NodeType

__all__ = ["NetworkCopy", "decode_channel", "decode_node", "encode_channel", "encode_node"]

_NODE_FIELDS = frozenset(f.name for f in fields(Node))
_CHANNEL_FIELDS = frozenset(f.name for f in fields(Channel))
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _plain(value: Any) -> Any:
    # IntEnum/IntFlag become ints, tuples lists: plain JSON, deterministic text
    # (an identical upsert is recognized by comparing it).
    if isinstance(value, bool | str | float) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    raise TypeError(f"cannot store a {type(value).__name__} in the network")


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def encode_node(node: Node) -> str:
    return _ENCODER.encode({f.name: _plain(getattr(node, f.name)) for f in fields(Node)})


def decode_node(text: str) -> Node:
    data = {k: _tuples(v) for k, v in json.loads(text).items() if k in _NODE_FIELDS}
    data["type"] = NodeType(data.get("type", NodeType.STORE))
    return Node(**data)


def encode_channel(channel: Channel) -> str:
    data = {f.name: _plain(getattr(channel, f.name)) for f in fields(Channel) if f.name != "allocation_rules"}
    data["allocation_rules"] = encode_rules(channel.allocation_rules)
    return _ENCODER.encode(data)


def decode_channel(text: str) -> Channel:
    raw = json.loads(text)
    data = {k: _tuples(v) for k, v in raw.items() if k in _CHANNEL_FIELDS and k != "allocation_rules"}
    # A channel stored before allocation rules has none.
    data["allocation_rules"] = decode_rules(raw["id"], raw.get("allocation_rules", ()))
    return Channel(**data)


class NetworkCopy:
    """This process's copy of ``<ns>:net``."""

    __slots__ = ("carrier_version", "channels", "nodes", "version")

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.channels: dict[str, Channel] = {}
        self.version = -1  # never loaded
        # The version of the carrier table set through the API (``cv``; 0: never
        # set). The table itself is a key of its own, read when this moves.
        self.carrier_version = 0

    def safety_in_effect(self, node: str, stored: int) -> int:
        """The safety stock in effect at a row whose ``ss`` is ``stored``: its
        own, or (FOLLOW_NODE_DEFAULT) its node's default in this copy."""
        if stored != FOLLOW_NODE_DEFAULT:
            return stored
        definition = self.nodes.get(node)
        return definition.default_safety_stock if definition is not None else 0

    def load(self, raw: dict[str, str]) -> None:
        """Replace the copy with the fields of ``<ns>:net`` (HGETALL)."""
        nodes: dict[str, Node] = {}
        channels: dict[str, Channel] = {}
        for field, value in raw.items():
            if field.startswith("n:"):
                nodes[field[2:]] = decode_node(value)
            elif field.startswith("c:"):
                channels[field[2:]] = decode_channel(value)
        self.nodes, self.channels = nodes, channels
        self.version = int(raw.get("ver", 0))
        self.carrier_version = int(raw.get("cv", 0))
