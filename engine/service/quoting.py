"""Quotes and endless-aisle lookups over a store: what the Quote and FindInStores RPCs
run, and the ranking of a Reserve with a fulfillment context.

The domain (:mod:`engine.core.promising`) answers from a compiled
:class:`~engine.core.network.Network` and an ATP mapping; this module feeds it
from the store. Per call it reads the store's nodes and channels (each store
keeps them in memory or refreshes its copy) and the carrier table's version,
recompiles the network only when the nodes or the carrier table changed
(compiling builds every calendar and transit matrix, far more than a quote
costs), reads today's release counts of the nodes that have a daily capacity
(none: no read), then reads the channel's stock with one
``availability`` call (and, for a quote that allows backorders, the SKUs'
inbound supply with one ``inbound`` call beside it) and lets the promiser
decide. Nothing is held or written.

Carriers: a table set through ``NetworkService.SetCarrierTable`` (kept by
the store, shared by every engine process) overrides the one the server was
started with (``serve --carriers FILE``, else the sample table); resetting it
brings the server's own back.

Time comes from the clock the server was given, so tests pin it and get the
same dates everywhere.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from engine.core.allocation_rules import ruled_nodes as channel_ruled_nodes
from engine.core.capacity import capacity_days
from engine.core.carriers import CarrierTable, parse_carriers
from engine.core.errors import FieldViolation, InvalidArgument, NotAllowed, UnknownChannel, UnknownNode
from engine.core.future_supply import FutureSupply, backorder_basis
from engine.core.network import Network
from engine.core.promising import (
    EndlessAisle,
    Promiser,
    Quote,
    QuoteRequest,
    ReserveFulfillment,
    ReserveRanking,
    validate_find_in_stores,
    validate_quote,
    validate_reserve_fulfillment,
)
from engine.core.types import Channel, LineRequest, Node, SkuAvailability
from engine.core.validation import channel_violations
from engine.store.base import CarrierRecord, Store

__all__ = ["StorePromiser", "StoreAisle"]

log = logging.getLogger("engine.service")


@dataclass(frozen=True, slots=True)
class StoreAisle:
    """An endless-aisle answer with each listed store's time zone (for local dates)."""

    aisle: EndlessAisle
    time_zones: Mapping[str, str]


class _Compiled:
    """One version of the network, compiled, with its channels."""

    __slots__ = ("_ruled", "carriers_version", "channels", "nodes", "promiser", "with_capacity")

    def __init__(
        self,
        nodes: tuple[Node, ...],
        channels: dict[str, Channel],
        promiser: Promiser,
        carriers_version: int,
    ) -> None:
        self.nodes = nodes
        self.channels = channels
        self.promiser = promiser
        self.carriers_version = carriers_version  # the store's CarrierRecord.version compiled in
        # Nodes whose daily capacity a quote must check (usually none).
        self.with_capacity = tuple(n.id for n in nodes if n.daily_capacity is not None)
        self._ruled: dict[str, frozenset[str]] = {}

    def ruled_nodes(self, channel: str) -> frozenset[str]:
        """The channel's nodes where one of its allocation rules applies: it
        takes no backorders there (``allocation_rules.ruled_nodes``)."""
        found = self._ruled.get(channel)
        if found is None:
            by_id = {n.id: n for n in self.nodes}
            found = self._ruled[channel] = channel_ruled_nodes(self.channels.get(channel), by_id)
        return found


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

    @property
    def configured_carriers(self) -> CarrierTable:
        """The table the server was started with: what applies while none is set over the API."""
        return self._carriers

    async def quote(self, channel: str, request: QuoteRequest) -> Quote:
        compiled = await self._network()
        network = compiled.promiser.network
        eligible = _channel_nodes(compiled, channel, _quote_violations(request, network))
        skus = list(dict.fromkeys(line.sku for line in request.lines))
        full = await self._full(compiled)
        if not request.allow_backorder:
            results = await self._store.availability(skus, channel, None, True)
            atp = {r.sku: {n.node: n.atp for n in r.nodes} for r in results}
            return compiled.promiser.quote(request, eligible=eligible, atp=atp, full=full)
        _check_backorders(compiled, channel)
        results, future, promised = await self._stock_and_supply(skus, channel, compiled.ruled_nodes(channel))
        atp = {r.sku: {n.node: n.atp for n in r.nodes} for r in results}
        return compiled.promiser.quote(
            request, eligible=eligible, atp=atp, future=future, promised=promised, full=full
        )

    async def rank_reserve(
        self, channel: str, lines: Sequence[LineRequest], fulfillment: ReserveFulfillment
    ) -> ReserveRanking:
        """Promise-driven sourcing of a Reserve: each line's ranked candidate
        nodes and the promise at each, from the channel's availability now.

        Only a read: the store's hold that follows is the final check, so stock
        taken in between makes a line short there, never oversold.
        """
        compiled = await self._network()
        network = compiled.promiser.network
        violations: list[FieldViolation] = []
        try:
            validate_reserve_fulfillment(fulfillment, lines, network)
        except InvalidArgument as exc:
            violations = _as_violations(exc)
        eligible = _channel_nodes(compiled, channel, violations)
        if fulfillment.allow_backorder:
            _check_backorders(compiled, channel)
        skus = list(dict.fromkeys(line.sku for line in lines if line.node is None))
        atp: dict[str, dict[str, int]] = {}
        future: FutureSupply | None = None
        promised: dict[tuple[str, str], int] | None = None
        if skus and fulfillment.allow_backorder:
            results, future, promised = await self._stock_and_supply(
                skus, channel, compiled.ruled_nodes(channel)
            )
            atp = {r.sku: {n.node: n.atp for n in r.nodes} for r in results}
        elif skus:
            results = await self._store.availability(skus, channel, None, True)
            atp = {r.sku: {n.node: n.atp for n in r.nodes} for r in results}
        # Nodes whose orders for today are used up release tomorrow: ranked as Quote dates them.
        full = await self._full(compiled)
        return compiled.promiser.rank_reserve(
            lines, fulfillment, eligible=eligible, atp=atp, full=full, future=future, promised=promised
        )

    async def ruled_nodes(self, channel: str) -> frozenset[str]:
        """The channel's nodes where one of its allocation rules applies, from
        the store's network: it takes no backorders there, so its availability
        by date counts no supply there (GetAvailability ``include_future``)."""
        return (await self._network()).ruled_nodes(channel)

    async def _stock_and_supply(
        self, skus: Sequence[str], channel: str, ruled_at: frozenset[str]
    ) -> tuple[list[SkuAvailability], FutureSupply, dict[tuple[str, str], int]]:
        """The channel's stock of the SKUs and the inbound supply it may take
        backorders on, read concurrently (on Redis, in one pipeline), and the
        units per (SKU, node) already promised beyond the shelf
        (``future_supply.backorder_basis``). ``ruled_at``: the channel's
        nodes with an allocation rule, whose supply it may not count on (the
        ledgers hold no backorder of it there).
        """
        results, records = await asyncio.gather(
            self._store.availability(skus, channel, None, True), self._store.inbound(skus)
        )
        promised, ruled = backorder_basis(results, ruled_at)
        future = FutureSupply(rec for rec in records if (rec.sku, rec.node) not in ruled)
        return results, future, promised

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
        # What the channel may take at its nodes (its allocation rules applied,
        # as its Reserve would see them); the asking store's own stock counts
        # even when the channel does not sell from it (a POS terminal still
        # wants to know what is on its shelf), at its plain ATP then.
        (level,) = await self._store.availability([sku], channel, None, True)
        at_node = {n.node: n.atp for n in level.nodes}
        if store not in at_node:
            (own,) = await self._store.availability([sku], None, [store], True)
            at_node.update((n.node, n.atp) for n in own.nodes)
        atp = {sku: at_node}
        full = await self._full(compiled)
        aisle = compiled.promiser.endless_aisle(
            sku, store, eligible=eligible, atp=atp, quantity=quantity, limit=limit, full=full
        )
        listed = (aisle.here, *aisle.nearby)
        zones = {s.node: network.node(s.node).time_zone for s in listed}
        return StoreAisle(aisle, zones)

    async def _full(self, compiled: _Compiled) -> frozenset[str]:
        """Nodes whose daily capacity is used up today (each in its own time zone)."""
        if not compiled.with_capacity:
            return frozenset()
        network = compiled.promiser.network
        by_id = {n: network.node(n) for n in compiled.with_capacity}
        days = capacity_days(compiled.with_capacity, by_id, self._clock())
        counts = await self._store.released(days)
        return network.at_capacity(dict(zip(compiled.with_capacity, counts, strict=True)))

    def _table(self, record: CarrierRecord) -> CarrierTable:
        """The table in force: the one set through the API, else the server's own."""
        if record.document is None:
            return self._carriers
        try:
            return parse_carriers(record.document, source="the carrier table set through the API")
        except InvalidArgument as exc:
            # Checked when it was set; only a table written by another engine
            # version could fail here. Quotes go on with the server's table.
            log.error("ignoring the stored carrier table (version %d): %s", record.version, exc)
            return self._carriers

    async def _network(self) -> _Compiled:
        nodes = tuple(await self._store.list_nodes())
        channels = await self._store.list_channels()
        record = await self._store.carrier_table()
        compiled = self._compiled
        if compiled is not None and compiled.nodes == nodes and compiled.carriers_version == record.version:
            # Keep the cached channel tuples when unchanged: the sourcing loop
            # recognises a channel's node list by identity before hashing it.
            by_id: dict[str, Channel] = {}
            for channel in channels:
                kept = compiled.channels.get(channel.id)
                by_id[channel.id] = kept if kept is not None and kept == channel else channel
            if by_id != compiled.channels:
                compiled = self._compiled = _Compiled(nodes, by_id, compiled.promiser, record.version)
            return compiled
        network = Network(nodes, self._table(record))
        promiser = Promiser(network, clock=self._clock, impl=self._impl)
        compiled = self._compiled = _Compiled(nodes, {c.id: c for c in channels}, promiser, record.version)
        return compiled


def _check_backorders(compiled: _Compiled, channel: str) -> None:
    """Backorders only for a channel set to take them (Channel.allow_backorder)."""
    found = compiled.channels.get(channel)
    if found is not None and not found.allow_backorder:
        raise NotAllowed(
            f"channel {channel!r} does not take backorders (Channel.allow_backorder)",
            reason="BACKORDER_NOT_ALLOWED",
            subject=f"channels/{channel}",
        )


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
