"""`inventory-engine bench promise`: Quote with the pure and the Cython sourcing loop.

The network: ``nodes`` nodes (5% DCs, the rest stores) spread over the
continental US, in the four US time zones, with carrier regions by longitude,
Monday-Friday DCs and Monday-Saturday stores, a few holidays, cutoffs between
12:00 and 18:00 and 0-1 processing days; the carriers are the demo sample
(``engine/data/carriers.yaml``: standard by distance band, express by region
pair). Every SKU is at most DCs and at about 30% of the stores, so a line has
~150 candidate nodes and a 5-line order touches most of the network.

The orders: ``lines``-line carts (a few lines ask for more than any one node
holds, and about a third of the orders allow splitting) shipped to random
points, quoted for every customer service level (two sourcing passes each),
from a channel that sees all nodes in priority order (DCs first). The clock
advances 20 s per quote across business days, so cached ship windows expire
at cutoffs and midnights as in a live server.

Both promisers quote the same orders, in alternating blocks (pure block 1,
fast block 1, pure block 2, ...) so both see the same machine noise; figures
are medians over blocks and ``ratio`` is the median of per-block ratios.
Time is this process's CPU time. After timing, the two quote lists are
compared: the run fails if the twins disagree on any quote.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

from engine.core.carriers import default_carriers
from engine.core.network import Destination, Network
from engine.core.promising import Promiser, Quote, QuoteLine, QuoteRequest
from engine.core.types import Node, NodeType

__all__ = ["run"]

_T0 = 1_718_010_000.0  # Monday 2024-06-10, 09:00 UTC
_TICK_S = 20.0
_BLOCKS = 5
_ZONES = (  # (west edge longitude, IANA zone, carrier region)
    (-125.0, "America/Los_Angeles", "west"),
    (-114.0, "America/Denver", "west"),
    (-102.0, "America/Chicago", "central"),
    (-87.0, "America/New_York", "east"),
)


def _network(n_nodes: int, rng: random.Random) -> Network:
    n_dcs = max(1, n_nodes // 20)
    nodes: list[Node] = []
    for k in range(n_nodes):
        lon = rng.uniform(-123.0, -70.0)
        lat = rng.uniform(27.0, 48.0)
        zone, region = next((z, r) for edge, z, r in reversed(_ZONES) if lon >= edge)
        is_dc = k < n_dcs
        nodes.append(
            Node(
                f"dc-{k:03d}" if is_dc else f"store-{k:03d}",
                type=NodeType.DC if is_dc else NodeType.STORE,
                region=region,
                latitude=lat,
                longitude=lon,
                time_zone=zone,
                processing_days=rng.choice((0, 0, 1)) if is_dc else 0,
                cutoff=rng.choice(("12:00", "14:00", "15:00", "18:00")),
                open_weekdays=(1, 2, 3, 4, 5) if is_dc else (1, 2, 3, 4, 5, 6),
                holidays=("2024-07-04",) + (("2024-06-19",) if rng.random() < 0.3 else ()),
            )
        )
    return Network(nodes, default_carriers())


def _catalogue(network: Network, n_skus: int, rng: random.Random) -> dict[str, dict[str, int]]:
    atp: dict[str, dict[str, int]] = {}
    for i in range(n_skus):
        stock: dict[str, int] = {}
        for node in network.nodes:
            share = 0.9 if node.type == NodeType.DC else 0.3
            if rng.random() < share:
                stock[node.id] = (
                    0 if rng.random() < 0.05 else rng.randint(1, 40 if node.type == NodeType.DC else 6)
                )
        atp[f"SKU-{i:05d}"] = stock
    return atp


def _orders(n: int, lines: int, skus: list[str], rng: random.Random) -> list[QuoteRequest]:
    orders = []
    for _ in range(n):
        order_lines = tuple(
            QuoteLine(rng.choice(skus), rng.randint(20, 60) if rng.random() < 0.05 else rng.randint(1, 3))
            for _ in range(lines)
        )
        orders.append(
            QuoteRequest(
                lines=order_lines,
                destination=Destination(
                    latitude=rng.uniform(27.0, 48.0), longitude=rng.uniform(-123.0, -70.0)
                ),
                allow_split=rng.random() < 0.35,
            )
        )
    return orders


def _timed(
    promiser: Promiser,
    orders: list[QuoteRequest],
    eligible: tuple[str, ...],
    atp: Mapping[str, Mapping[str, int]],
    clock: list[float],
    start: int,
) -> tuple[float, list[Quote]]:
    quote = promiser.quote
    out: list[Quote] = []
    append = out.append
    t0 = time.process_time()
    for k, request in enumerate(orders):
        clock[0] = _T0 + (start + k) * _TICK_S
        append(quote(request, eligible=eligible, atp=atp))
    return time.process_time() - t0, out


def run(
    nodes: int = 500, lines: int = 5, quotes: int = 2_000, skus: int = 2_000, seed: int = 0
) -> dict[str, Any]:
    """Quote the same orders with both promisers; return the figures."""
    rng = random.Random(seed)
    network = _network(nodes, rng)
    atp = _catalogue(network, skus, rng)
    orders = _orders(quotes, lines, sorted(atp), rng)
    eligible = network.node_ids  # DCs first: they come first in the network

    clocks = {"pure": [_T0], "fast": [_T0]}
    promisers = {
        impl: Promiser(network, clock=_clock_of(clocks[impl]), impl=impl) for impl in ("pure", "fast")
    }
    # Warm both (windows computed, priority arrays cached) on a few orders outside the timing.
    for impl, p in promisers.items():
        _timed(p, orders[:20], eligible, atp, clocks[impl], 0)

    bounds = [len(orders) * k // _BLOCKS for k in range(_BLOCKS + 1)]
    rates: dict[str, list[float]] = {"pure": [], "fast": []}
    results: dict[str, list[Quote]] = {"pure": [], "fast": []}
    gc.collect()
    gc.freeze()
    try:
        for k in range(_BLOCKS):
            block = orders[bounds[k] : bounds[k + 1]]
            for impl in ("pure", "fast"):
                seconds, out = _timed(promisers[impl], block, eligible, atp, clocks[impl], bounds[k])
                rates[impl].append(len(block) / seconds)
                results[impl].extend(out)
    finally:
        gc.unfreeze()

    if results["pure"] != results["fast"]:
        first = next(
            i for i, (a, b) in enumerate(zip(results["pure"], results["fast"], strict=True)) if a != b
        )
        raise RuntimeError(f"the sourcing twins disagree on quote {first}")
    options = [len(line.options) for q in results["fast"] for line in q.lines]
    splits = sum(1 for q in results["fast"] for line in q.lines for o in line.options if o.split)
    ratios = [f / p for f, p in zip(rates["fast"], rates["pure"], strict=True)]
    return {
        "nodes": nodes,
        "lines_per_quote": lines,
        "quotes": len(orders),
        "blocks": _BLOCKS,
        "service_levels": sum(1 for s in network.services if not s.internal),
        "pure_quotes_per_s": round(statistics.median(rates["pure"]), 1),
        "fast_quotes_per_s": round(statistics.median(rates["fast"]), 1),
        "ratio": round(statistics.median(ratios), 2),
        "lines_without_option": sum(1 for n in options if n == 0),
        "split_options": splits,
    }


def _clock_of(cell: list[float]) -> Callable[[], float]:
    return lambda: cell[0]
