"""Demo data: a small retailer's network and catalogue, loaded once into a store.

3 DCs, 20 stores, the channels web/app/pos/callcenter/marketplace:demo and
10,000 SKUs with stock. Deterministic (seeded), so a demo behaves the same on
every machine and the README examples keep working.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from engine.core.types import Channel, Node, NodeType, SupplyKind, SupplyOp
from engine.store.base import Store

__all__ = ["DEMO_SKUS", "demo_channels", "demo_nodes", "demo_supply", "load_demo"]

DEMO_SKUS = 10_000
_SUPPLY_BATCH = 1_000

# (id, name, region, lat, lon, time zone)
_DCS = [
    ("dc-east", "DC East (Newark)", "east", 40.7357, -74.1724, "America/New_York"),
    ("dc-central", "DC Central (Chicago)", "central", 41.8781, -87.6298, "America/Chicago"),
    ("dc-west", "DC West (Reno)", "west", 39.5296, -119.8138, "America/Los_Angeles"),
]
_STORE_CITIES = [
    ("Boston", "east", 42.3601, -71.0589, "America/New_York"),
    ("New York", "east", 40.7128, -74.0060, "America/New_York"),
    ("Philadelphia", "east", 39.9526, -75.1652, "America/New_York"),
    ("Washington", "east", 38.9072, -77.0369, "America/New_York"),
    ("Atlanta", "east", 33.7490, -84.3880, "America/New_York"),
    ("Miami", "east", 25.7617, -80.1918, "America/New_York"),
    ("Charlotte", "east", 35.2271, -80.8431, "America/New_York"),
    ("Detroit", "central", 42.3314, -83.0458, "America/Detroit"),
    ("Chicago", "central", 41.8781, -87.6298, "America/Chicago"),
    ("Minneapolis", "central", 44.9778, -93.2650, "America/Chicago"),
    ("St. Louis", "central", 38.6270, -90.1994, "America/Chicago"),
    ("Dallas", "central", 32.7767, -96.7970, "America/Chicago"),
    ("Houston", "central", 29.7604, -95.3698, "America/Chicago"),
    ("Denver", "west", 39.7392, -104.9903, "America/Denver"),
    ("Phoenix", "west", 33.4484, -112.0740, "America/Phoenix"),
    ("Salt Lake City", "west", 40.7608, -111.8910, "America/Denver"),
    ("Las Vegas", "west", 36.1699, -115.1398, "America/Los_Angeles"),
    ("Los Angeles", "west", 34.0522, -118.2437, "America/Los_Angeles"),
    ("San Francisco", "west", 37.7749, -122.4194, "America/Los_Angeles"),
    ("Seattle", "west", 47.6062, -122.3321, "America/Los_Angeles"),
]


def demo_nodes() -> list[Node]:
    nodes = [
        Node(id=i, type=NodeType.DC, name=n, region=r, latitude=la, longitude=lo, time_zone=tz)
        for i, n, r, la, lo, tz in _DCS
    ]
    for k, (city, region, lat, lon, tz) in enumerate(_STORE_CITIES, start=1):
        nodes.append(
            Node(
                id=f"store-{k:03d}",
                type=NodeType.STORE,
                name=f"{city} store",
                region=region,
                latitude=lat,
                longitude=lon,
                time_zone=tz,
            )
        )
    return nodes


def demo_channels() -> list[Channel]:
    dcs = tuple(d[0] for d in _DCS)
    stores = tuple(f"store-{k:03d}" for k in range(1, len(_STORE_CITIES) + 1))
    return [
        # Online ships from DCs first, then from stores (ship-from-store).
        Channel(id="web", name="Web shop", nodes=dcs + stores),
        Channel(id="app", name="Mobile app", nodes=dcs + stores),
        # A store terminal sells what the stores hold (its own and nearby ones).
        Channel(id="pos", name="Store POS", nodes=stores),
        Channel(id="callcenter", name="Call center", nodes=dcs),
        Channel(id="marketplace:demo", name="Demo marketplace", nodes=dcs),
    ]


def demo_sku(i: int) -> str:
    return f"SKU-{i:06d}"


def demo_supply(skus: int = DEMO_SKUS, seed: int = 7) -> Iterator[SupplyOp]:
    """Every SKU at each DC (a few sold out), and at a handful of stores."""
    rng = random.Random(seed)
    stores = [f"store-{k:03d}" for k in range(1, len(_STORE_CITIES) + 1)]
    for i in range(1, skus + 1):
        sku = demo_sku(i)
        for dc, *_ in _DCS:
            qty = 0 if rng.random() < 0.05 else rng.randint(5, 500)
            yield SupplyOp(SupplyKind.SET, sku, dc, qty, 1, f"demo:{sku}:{dc}")
        for store in rng.sample(stores, rng.randint(2, 8)):
            yield SupplyOp(SupplyKind.SET, sku, store, rng.randint(0, 12), 1, f"demo:{sku}:{store}")


async def load_demo(store: Store, skus: int = DEMO_SKUS) -> bool:
    """Load the demo network and stock unless the store already has nodes.

    Returns True when it loaded, False when the store was not empty (a restart
    with the same data directory keeps what the demo has become).
    """
    if await store.list_nodes():
        return False
    for node in demo_nodes():
        await store.upsert_node(node)
    for channel in demo_channels():
        await store.upsert_channel(channel)
    batch: list[SupplyOp] = []
    for op in demo_supply(skus):
        batch.append(op)
        if len(batch) == _SUPPLY_BATCH:
            await store.apply_supply(batch)
            batch = []
    if batch:
        await store.apply_supply(batch)
    return True
