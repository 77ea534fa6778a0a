"""Demo data: a small retailer's network and catalogue, loaded once into a store.

3 DCs, 20 stores, the channels web/app/pos/callcenter/marketplace:demo,
10,000 SKUs with stock and purchase orders for one SKU in 20 (web and app take
backorders on them). Deterministic (seeded), so a demo behaves the same on
every machine and the README examples keep working.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

from engine.core.future_supply import MAX_INBOUND_BATCH, InboundSupply
from engine.core.types import Capability, Channel, Node, NodeType, SupplyKind, SupplyOp
from engine.store.base import Store

__all__ = ["DEMO_SKUS", "demo_channels", "demo_nodes", "demo_supply", "load_demo"]

DEMO_SKUS = 10_000
_SUPPLY_BATCH = 1_000

# (id, name, region, lat, lon, time zone, ZIP prefix). Regions and ZIP
# prefixes are those of the sample carrier table (engine/data/carriers.yaml).
_DCS = [
    ("dc-east", "DC East (Newark)", "east", 40.7357, -74.1724, "America/New_York", "071"),
    ("dc-central", "DC Central (Chicago)", "central", 41.8781, -87.6298, "America/Chicago", "606"),
    ("dc-west", "DC West (Reno)", "west", 39.5296, -119.8138, "America/Los_Angeles", "895"),
]
_STORE_CITIES = [
    ("Boston", "east", 42.3601, -71.0589, "America/New_York", "021"),
    ("New York", "east", 40.7128, -74.0060, "America/New_York", "100"),
    ("Philadelphia", "east", 39.9526, -75.1652, "America/New_York", "191"),
    ("Washington", "east", 38.9072, -77.0369, "America/New_York", "200"),
    ("Atlanta", "east", 33.7490, -84.3880, "America/New_York", "303"),
    ("Miami", "east", 25.7617, -80.1918, "America/New_York", "331"),
    ("Charlotte", "east", 35.2271, -80.8431, "America/New_York", "282"),
    ("Detroit", "central", 42.3314, -83.0458, "America/Detroit", "482"),
    ("Chicago", "central", 41.8781, -87.6298, "America/Chicago", "606"),
    ("Minneapolis", "central", 44.9778, -93.2650, "America/Chicago", "554"),
    ("St. Louis", "central", 38.6270, -90.1994, "America/Chicago", "631"),
    ("Dallas", "central", 32.7767, -96.7970, "America/Chicago", "752"),
    ("Houston", "central", 29.7604, -95.3698, "America/Chicago", "770"),
    ("Denver", "west", 39.7392, -104.9903, "America/Denver", "802"),
    ("Phoenix", "west", 33.4484, -112.0740, "America/Phoenix", "850"),
    ("Salt Lake City", "west", 40.7608, -111.8910, "America/Denver", "841"),
    ("Las Vegas", "west", 36.1699, -115.1398, "America/Los_Angeles", "891"),
    ("Los Angeles", "west", 34.0522, -118.2437, "America/Los_Angeles", "900"),
    ("San Francisco", "west", 37.7749, -122.4194, "America/Los_Angeles", "941"),
    ("Seattle", "west", 47.6062, -122.3321, "America/Los_Angeles", "981"),
]

# Closed days of the demo's years: DCs stop on the federal holidays; stores
# close only on Thanksgiving, Christmas and New Year's Day.
_DC_HOLIDAYS = (
    "2026-01-01", "2026-05-25", "2026-07-03", "2026-09-07", "2026-11-26", "2026-12-25",
    "2027-01-01", "2027-05-31", "2027-07-05", "2027-09-06", "2027-11-25", "2027-12-24",
)  # fmt: skip
_STORE_HOLIDAYS = ("2026-11-26", "2026-12-25", "2027-01-01", "2027-11-25", "2027-12-25")


def demo_nodes() -> list[Node]:
    # DCs: parcels only, Monday to Friday, orders until 17:00 local leave the
    # same day. Stores: open every day from 10:00, click & collect ready an
    # hour after the order, ship-from-store parcels packed by the next working
    # day (a store packs between customers), orders until 15:00.
    nodes = [
        Node(
            id=i,
            type=NodeType.DC,
            name=n,
            region=r,
            latitude=la,
            longitude=lo,
            time_zone=tz,
            capabilities=Capability.SHIP,
            postal_prefix=zip3,
            processing_days=0,
            cutoff="17:00",
            opens_at="06:00",
            open_weekdays=(1, 2, 3, 4, 5),
            holidays=_DC_HOLIDAYS,
        )
        for i, n, r, la, lo, tz, zip3 in _DCS
    ]
    for k, (city, region, lat, lon, tz, zip3) in enumerate(_STORE_CITIES, start=1):
        nodes.append(
            Node(
                id=f"store-{k:03d}",
                type=NodeType.STORE,
                name=f"{city} store",
                region=region,
                latitude=lat,
                longitude=lon,
                time_zone=tz,
                capabilities=Capability.PICKUP | Capability.SHIP_FROM_STORE,
                postal_prefix=zip3,
                processing_days=1,
                pickup_minutes=60,
                cutoff="15:00",
                opens_at="10:00",
                open_weekdays=(1, 2, 3, 4, 5, 6, 7),
                holidays=_STORE_HOLIDAYS,
            )
        )
    return nodes


def demo_channels() -> list[Channel]:
    dcs = tuple(d[0] for d in _DCS)
    stores = tuple(f"store-{k:03d}" for k in range(1, len(_STORE_CITIES) + 1))
    return [
        # Online ships from DCs first, then from stores (ship-from-store), and
        # takes backorders on purchase orders (demo_inbound).
        Channel(id="web", name="Web shop", nodes=dcs + stores, allow_backorder=True),
        Channel(id="app", name="Mobile app", nodes=dcs + stores, allow_backorder=True),
        # A store terminal sells what the stores hold (its own and nearby ones).
        Channel(id="pos", name="Store POS", nodes=stores),
        Channel(id="callcenter", name="Call center", nodes=dcs),
        Channel(id="marketplace:demo", name="Demo marketplace", nodes=dcs),
    ]


def demo_inbound(skus: int = DEMO_SKUS, now: float | None = None, seed: int = 11) -> Iterator[InboundSupply]:
    """A purchase order line for one SKU in 20 at one DC, due in 3 to 21 days
    from ``now``: the supply web and app orders may be backordered on."""
    rng = random.Random(seed)
    start = time.time() if now is None else now
    for i in range(1, skus + 1, 20):
        dc = rng.choice(_DCS)[0]
        yield InboundSupply(
            id=f"PO-DEMO-{i:06d}",
            sku=demo_sku(i),
            node=dc,
            quantity=rng.randint(20, 200),
            eta=start + rng.randint(3, 21) * 86_400.0,
        )


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
    inbound = list(demo_inbound(skus))
    for k in range(0, len(inbound), MAX_INBOUND_BATCH):
        await store.upsert_inbound(inbound[k : k + MAX_INBOUND_BATCH])
    return True
