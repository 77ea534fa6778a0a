"""Quotes and endless-aisle lookups over a store: what the Quote and FindInStores RPCs run.

The domain (:mod:`engine.core.promising`) answers from a compiled
:class:`~engine.core.network.Network` and an ATP mapping; this module feeds it
from the store. Per call it reads the store's nodes and channels (each store
keeps them in memory or refreshes its copy), recompiles the network only when
the nodes changed (compiling builds every calendar and transit matrix, far
more than a quote costs), then reads the channel's stock with one
``availability`` call (and, for a quote that allows backorders, the SKUs'
inbound supply with one ``inbound`` call beside it) and lets the promiser
decide. Nothing is held or written.

Time comes from the clock the server was given, so tests pin it and get the
same dates everywhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from engine.core.carriers import CarrierTable
from engine.core.errors import FieldViolation, InvalidArgument, UnknownChannel, UnknownNode
from engine.core.future_supply import FutureSupply
from engine.core.network import Network
from engine.core.promising import (
    EndlessAisle,
    Promiser,
    Quote,
    QuoteRequest,
    validate_find_in_stores,
    validate_quote,
)
from engine.core.types import Channel, Node
from engine.core.validation import channel_violations
from engine.store.base import Store

__all__ = ["StorePromiser", "StoreAisle"]


@dataclass(frozen=True, slots=True)
class StoreAisle:
    """An endless-aisle answer with each listed store's time zone (for local dates)."""

    aisle: EndlessAisle
    time_zones: Mapping[str, str]


class _Compiled:
    """One version of the network, compiled, with its channels."""

    __slots__ = ("channels", "nodes", "promiser")

    def __init__(self, nodes: tuple[Node, ...], channels: dict[str, Channel], promiser: Promiser) -> None:
        self.nodes = nodes
        self.channels = channels
        self.promiser = promiser


class StorePromiser:
    """A :class:`Promiser` kept in step with the store's network.

    One per server (event loop): the promiser's scratch state is not shared
    across threads, and its calls never await, so two RPCs on one loop never
    interleave inside it.
    """

    def __init__(
        self,
        store: Store,
        *,
        carriers: CarrierTable,
        clock: Callable[[], float],
        impl: str = "fast",
    ) -> None:
        self._store = store
        self._carriers = carriers
        self._clock = clock
        self._impl = impl
        self._compiled: _Compiled | None = None

    async def quote(self, channel: str, request: QuoteRequest) -> Quote:
        compiled = await self._network()
        network = compiled.promiser.network
        eligible = _channel_nodes(compiled, channel, _quote_violations(request, network))
        skus = list(dict.fromkeys(line.sku for line in request.lines))
        if not request.allow_backorder:
            results = await self._store.availability(skus, channel, None, True)
            atp = {r.sku: {n.node: n.atp for n in r.nodes} for r in results}
            return compiled.promiser.quote(request, eligible=eligible, atp=atp)
        # Backorders also need the SKUs' inbound supply: read concurrently with
        # the stock (on Redis, two calls in one pipeline).
        results, records = await asyncio.gather(
            self._store.availability(skus, channel, None, True), self._store.inbound(skus)
        )
        atp = {r.sku: {n.node: n.atp for n in r.nodes} for r in results}
        # promised={}: nothing can be reserved against inbound supply yet, so
        # no units of it are spoken for; every backorder quote sees all of it.
        return compiled.promiser.quote(
            request, eligible=eligible, atp=atp, future=FutureSupply(records), promised={}
        )

    async def find_in_stores(
        self, channel: str, store: str, sku: str, *, quantity: int, limit: int
    ) -> StoreAisle:
        compiled = await self._network()
        network = compiled.promiser.network
        violations: list[FieldViolation] = []
        try:
            validate_find_in_stores(sku, store, quantity, limit, network)
        except InvalidArgument as exc:
            violations = _as_violations(exc)
        eligible = _channel_nodes(compiled, channel, violations)
        # The asking store's own stock counts even when the channel does not
        # sell from it (a POS terminal still wants to know what is on its shelf).
        nodes = [*eligible, store] if store not in eligible else list(eligible)
        results = await self._store.availability([sku], None, nodes, True)
        atp = {sku: {n.node: n.atp for n in results[0].nodes}}
        aisle = compiled.promiser.endless_aisle(
            sku, store, eligible=eligible, atp=atp, quantity=quantity, limit=limit
        )
        listed = (aisle.here, *aisle.nearby)
        zones = {s.node: network.node(s.node).time_zone for s in listed}
        return StoreAisle(aisle, zones)

    async def _network(self) -> _Compiled:
        nodes = tuple(await self._store.list_nodes())
        channels = await self._store.list_channels()
        compiled = self._compiled
        if compiled is not None and compiled.nodes == nodes:
            # Keep the cached channel tuples when unchanged: the sourcing loop
            # recognises a channel's node list by identity before hashing it.
            by_id: dict[str, Channel] = {}
            for channel in channels:
                kept = compiled.channels.get(channel.id)
                by_id[channel.id] = kept if kept is not None and kept == channel else channel
            if by_id != compiled.channels:
                compiled = self._compiled = _Compiled(nodes, by_id, compiled.promiser)
            return compiled
        network = Network(nodes, self._carriers)
        promiser = Promiser(network, clock=self._clock, impl=self._impl)
        compiled = self._compiled = _Compiled(nodes, {c.id: c for c in channels}, promiser)
        return compiled


def _quote_violations(request: QuoteRequest, network: Network) -> list[FieldViolation]:
    try:
        validate_quote(request, network)
    except InvalidArgument as exc:
        return _as_violations(exc)
    return []


def _as_violations(exc: InvalidArgument) -> list[FieldViolation]:
    """The violations of an error; a lone not-found error is kept whole to be re-raised."""
    if isinstance(exc, UnknownNode | UnknownChannel):
        return [_NotFoundViolation(v.field, v.description, exc) for v in exc.violations]
    return list(exc.violations)


@dataclass(frozen=True, slots=True)
class _NotFoundViolation(FieldViolation):
    error: InvalidArgument


def _channel_nodes(compiled: _Compiled, channel: str, violations: list[FieldViolation]) -> Sequence[str]:
    """The channel's eligible nodes, or one error listing every problem of the request.

    A request whose only problem is a name the network does not know fails
    with that name's reason (CHANNEL_NOT_FOUND, NODE_NOT_FOUND), as the other
    RPCs do; any other problem makes it a plain INVALID_ARGUMENT listing all.
    """
    problems = channel_violations(channel, "channel")
    found = compiled.channels.get(channel)
    not_found: InvalidArgument | None = None
    if not problems and found is None:
        not_found = UnknownChannel(channel)
        problems = [_NotFoundViolation("channel", f"channel {channel!r} is not defined", not_found)]
    problems.extend(violations)
    if not problems:
        assert found is not None
        return found.nodes
    if len(problems) == 1 and isinstance(problems[0], _NotFoundViolation):
        raise problems[0].error
    plain = tuple(FieldViolation(v.field, v.description) for v in problems)
    first = plain[0]
    more = f" (and {len(plain) - 1} more)" if len(plain) > 1 else ""
    raise InvalidArgument(f"{first.field} {first.description}{more}", plain)
