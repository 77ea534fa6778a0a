"""Who calls the engine on a peak day, as Locust users (abstract: scenarios pick and weigh them).

- :class:`Shopper` - web or app checkout: browse availability, maybe quote a
  delivery date, hold the cart, then pay (commit; the DC ships some orders
  during the run: fulfill), give the cart back (release) or walk away (a short
  hold that must expire by itself);
- :class:`PosTerminal` - a store's till: endless aisle (this store and the
  nearest others), shelf checks, and in-store sales reported as stock
  adjustments (the unit left the shelf; no reservation involved);
- :class:`CallCenterAgent` - multi-line phone orders, held while the customer
  talks, sometimes extended, mostly committed;
- :class:`MarketplacePoller` - a marketplace syncing its listing: availability
  of hundreds of SKUs per call, walking the catalogue;
- :class:`ErpFeed` - receipts (idempotent by event id, sometimes redelivered:
  the duplicate must be recognised) and cycle counts (versioned SetStock).

Every reservation call goes through :class:`EngineUser`'s journaled helpers.
Supply changes journal the rows they touch (their on_hand is then the feed's,
not the checker's to predict).
"""

from __future__ import annotations

import time
from typing import Any

from locust import task

from engine._proto.inventory.v1 import inventory_service_pb2 as inv_pb
from engine._proto.inventory.v1 import supply_service_pb2 as supply_pb
from loadtests.grpc_user import EngineUser, RpcFailure
from loadtests.traffic import CATALOGUE_SIZE, DCS, POSTAL_CODES, STORES, IdMaker, Zipf, sku

__all__ = [
    "FLASH_SKU_RANGE",
    "CallCenterAgent",
    "ErpFeed",
    "MarketplacePoller",
    "PosTerminal",
    "Shopper",
]

# SKU-000001..SKU-000010 belong to flash sales: their stock is set and checked
# exactly, so everyday traffic (and the feeds) leave them alone.
FLASH_SKU_RANGE = range(1, 11)
POPULARITY = Zipf(exclude=FLASH_SKU_RANGE)


class Shopper(EngineUser):
    """A web or app checkout session."""

    abstract = True
    channel = "web"
    wait_range = (0.5, 2.0)
    # What becomes of a held cart; the rest of 1.0 is "abandoned" (short hold,
    # left to expire). Shares of a peak day with compressed time.
    commit_share = 0.6
    release_share = 0.15
    # Of committed orders, how many a DC ships while the run lasts.
    fulfill_share = 0.4
    extend_share = 0.1
    quote_share = 0.3
    checkout_ttl_s = 900.0
    # Abandoned carts get short holds, so that expiry happens inside the run.
    abandon_ttl_s = (2.0, 4.0)

    @task
    def checkout_session(self) -> None:
        rng = self.rng
        browsed = [sku(i) for i in POPULARITY.draw_distinct(rng, rng.randint(1, 4))]
        self.call(
            "GetAvailability (product page)",
            self.inventory.GetAvailability,
            inv_pb.GetAvailabilityRequest(skus=browsed, channel=self.channel),
        )
        cart = browsed[: rng.randint(1, min(3, len(browsed)))]
        quantities = [1 if rng.random() < 0.8 else 2 for _ in cart]
        if rng.random() < self.quote_share:
            self.call(
                "Quote",
                self.inventory.Quote,
                inv_pb.QuoteRequest(
                    channel=self.channel,
                    lines=[
                        inv_pb.QuoteLine(sku=s, quantity=q) for s, q in zip(cart, quantities, strict=True)
                    ],
                    destination=inv_pb.Destination(postal_code=rng.choice(POSTAL_CODES)),
                ),
            )
        self.think(0.2, 0.8)
        fate = rng.random()
        abandoned = fate >= self.commit_share + self.release_share
        ttl_s = rng.uniform(*self.abandon_ttl_s) if abandoned else self.checkout_ttl_s
        rid, hold = self.reserve(
            self.channel, [(s, q, "") for s, q in zip(cart, quantities, strict=True)], ttl_s
        )
        if hold is None:
            return
        if abandoned:
            self.abandon(rid, hold)
            return
        self.think(0.3, 1.5)
        if fate < self.commit_share:
            if rng.random() < self.extend_share:
                self.extend(rid, self.checkout_ttl_s)
            order = self.commit(rid)
            if order is not None and rng.random() < self.fulfill_share:
                self.think(0.2, 1.0)
                self.fulfill(rid)
        else:
            self.release(rid)


class PosTerminal(EngineUser):
    """A till in one store."""

    abstract = True
    wait_range = (1.0, 3.0)

    def on_start(self) -> None:
        self.store = self.rng.choice(STORES)
        self.event_ids = IdMaker("pos")

    @task(3)
    def endless_aisle(self) -> None:
        self.call(
            "FindInStores",
            self.inventory.FindInStores,
            inv_pb.FindInStoresRequest(
                channel="pos",
                store=self.store,
                sku=sku(POPULARITY.draw(self.rng)),
                quantity=1,
                max_stores=3,
            ),
        )

    @task(3)
    def shelf_check(self) -> None:
        skus = [sku(i) for i in POPULARITY.draw_distinct(self.rng, self.rng.randint(1, 3))]
        self.call(
            "GetAvailability (store)",
            self.inventory.GetAvailability,
            inv_pb.GetAvailabilityRequest(skus=skus, channel="pos", nodes=[self.store]),
        )

    @task(2)
    def till_sale(self) -> None:
        item = sku(POPULARITY.draw(self.rng))
        answer = self.call(
            "GetAvailability (store)",
            self.inventory.GetAvailability,
            inv_pb.GetAvailabilityRequest(skus=[item], channel="pos", nodes=[self.store]),
        )
        # Sell what the store may sell: a unit promised to a ship-from-store
        # order stays on the shelf. (A race with such an order is possible and
        # shows as a reported shortage on this row, which the checker allows.)
        if answer.response is None or answer.response.availabilities[0].atp < 1:
            return
        self.journal.supply_changed(item, self.store, "adjust", -1)
        self.call(
            "AdjustStock (till sale)",
            self.supply.AdjustStock,
            supply_pb.AdjustStockRequest(
                changes=[
                    supply_pb.StockAdjustment(
                        sku=item, node=self.store, delta=-1, event_id=self.event_ids.next("sale")
                    )
                ]
            ),
            expected=("NEGATIVE_ON_HAND",),
        )


class CallCenterAgent(EngineUser):
    """Phone orders: several lines, held while the customer talks."""

    abstract = True
    wait_range = (2.0, 5.0)

    @task
    def phone_order(self) -> None:
        rng = self.rng
        lines = [(sku(i), rng.randint(1, 3), "") for i in POPULARITY.draw_distinct(rng, rng.randint(2, 5))]
        rid, hold = self.reserve("callcenter", lines, 120.0)
        if hold is None:
            return
        self.think(0.5, 2.0)
        if rng.random() < 0.3:
            self.extend(rid, 300.0)
            self.think(0.2, 1.0)
        if rng.random() < 0.85:
            self.commit(rid)
        else:
            self.release(rid)


class MarketplacePoller(EngineUser):
    """A marketplace's listing sync: the catalogue in batches of hundreds of SKUs."""

    abstract = True
    wait_range = (1.0, 3.0)

    def on_start(self) -> None:
        # Pollers start at different places so that several do not move in lockstep.
        self.cursor = self.rng.randrange(CATALOGUE_SIZE)

    @task
    def poll(self) -> None:
        size = self.rng.randint(200, 500)
        skus = [sku(1 + (self.cursor + k) % CATALOGUE_SIZE) for k in range(size)]
        self.cursor = (self.cursor + size) % CATALOGUE_SIZE
        self.call(
            "GetAvailability (marketplace batch)",
            self.inventory.GetAvailability,
            inv_pb.GetAvailabilityRequest(skus=skus, channel="marketplace:demo"),
        )


class ErpFeed(EngineUser):
    """The ERP/WMS: DC receipts (sometimes redelivered) and cycle counts."""

    abstract = True
    wait_range = (1.0, 3.0)

    def on_start(self) -> None:
        self.event_ids = IdMaker("erp")
        self.last_receipt: supply_pb.AdjustStockRequest | None = None

    def _everyday_sku(self) -> str:
        return sku(self.rng.randint(FLASH_SKU_RANGE.stop, CATALOGUE_SIZE))

    @task(3)
    def receipts(self) -> None:
        rng = self.rng
        if self.last_receipt is not None and rng.random() < 0.1:
            # A feed redelivers a message: nothing may be applied twice.
            answer = self.call("AdjustStock (redelivery)", self.supply.AdjustStock, self.last_receipt)
            if answer.response is not None and not all(r.duplicate for r in answer.response.results):
                self._fire("redelivered receipt is a duplicate", 0.0, 0, RpcFailure("applied twice"))
            return
        changes = []
        for _ in range(rng.randint(10, 50)):
            item, dc, delta = self._everyday_sku(), rng.choice(DCS), rng.randint(1, 50)
            self.journal.supply_changed(item, dc, "adjust", delta)
            changes.append(
                supply_pb.StockAdjustment(sku=item, node=dc, delta=delta, event_id=self.event_ids.next("asn"))
            )
        request = supply_pb.AdjustStockRequest(changes=changes)
        if self.call("AdjustStock (receipts)", self.supply.AdjustStock, request).ok:
            self.last_receipt = request

    @task(1)
    def cycle_count(self) -> None:
        rng = self.rng
        dc = rng.choice(DCS)
        skus = sorted({self._everyday_sku() for _ in range(20)})
        answer: Any = self.call(
            "GetAvailability (count sheet)",
            self.inventory.GetAvailability,
            inv_pb.GetAvailabilityRequest(skus=skus, nodes=[dc], include_nodes=True),
        )
        if answer.response is None:
            return
        # Counters found what the system expected, now and then a few units
        # more (found stock). The version is the count's time: a count that
        # loses a race to a newer one is not applied, which is its contract.
        version = time.time_ns() // 1000
        changes = []
        for availability in answer.response.availabilities:
            if len(availability.nodes) != 1:
                continue
            row = availability.nodes[0]
            self.journal.supply_changed(availability.sku, dc, "set", row.on_hand)
            found = rng.randint(1, 3) if rng.random() < 0.2 else 0
            changes.append(
                supply_pb.StockCount(
                    sku=availability.sku,
                    node=dc,
                    on_hand=row.on_hand + found,
                    version=version,
                    event_id=self.event_ids.next("count"),
                )
            )
        if changes:
            self.call(
                "SetStock (cycle count)", self.supply.SetStock, supply_pb.SetStockRequest(changes=changes)
            )
