"""Scenario 1, flash sale: a few hot SKUs with little stock and 20 times as much demand.

At the start (once per run: the local process or the master) the scenario sets
the hot SKUs' stock to an exact amount (SetStock with a version newer than any
before, every node of the network: half at dc-east, the rest at the other DCs,
none in stores) and journals it, so the check can prove that what buyers were
told they got never exceeds it and that on_hand went down by exactly what was
shipped.

Buyers view the product page and click "buy" (1 unit, sometimes 2) on the web
or in the app until the run's demand is spent: ``--demand-factor`` times the
stock, in units, shared by ``--flash-processes`` load processes. Most holds
are paid (committed; half of them shipped during the run), some given back,
some abandoned with a hold of a few seconds: those units come back to the sale
by expiry. Once the demand is spent, buyers keep refreshing the product page,
as people do when something sold out.

    locust -f loadtests/scenarios/flash_sale.py --headless -u 40 -r 20 -t 20s --host 127.0.0.1:50051
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

# `locust -f` puts this file's directory on sys.path, not the project root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from locust import events, task
from locust.env import Environment

from engine._proto.inventory.v1 import inventory_service_pb2 as inv_pb
from engine._proto.inventory.v1 import supply_service_pb2 as supply_pb
from engine._proto.inventory.v1 import supply_service_pb2_grpc as supply_grpc
from loadtests.grpc_user import (
    EngineUser,
    on_run_start,
    record_setup,
    setup_channel,
    setup_journal,
)
from loadtests.traffic import DCS, STORES, Zipf, pick_weighted, sku
from loadtests.users import FLASH_SKU_RANGE


@events.init_command_line_parser.add_listener
def _arguments(parser: object) -> None:
    group = parser.add_argument_group("flash sale")  # type: ignore[attr-defined]
    group.add_argument("--hot-skus", type=int, default=3, help="SKUs on sale (1-10: SKU-000001..)")
    group.add_argument("--hot-stock", type=int, default=40, help="units of each hot SKU")
    group.add_argument("--demand-factor", type=float, default=20.0, help="units demanded per unit of stock")
    group.add_argument(
        "--flash-processes",
        type=int,
        default=1,
        help="load processes sharing the demand (distributed: the number of workers)",
    )


def _options(environment: Environment) -> tuple[list[str], int]:
    options = environment.parsed_options
    count = int(getattr(options, "hot_skus", 3))
    if not 1 <= count <= len(FLASH_SKU_RANGE):
        raise ValueError(f"--hot-skus must be 1..{len(FLASH_SKU_RANGE)}")
    return [sku(i) for i in range(1, count + 1)], int(getattr(options, "hot_stock", 40))


def _placement(units: int) -> list[tuple[str, int]]:
    """Every node of the network and its share of a hot SKU: DCs only, half at dc-east."""
    east = units // 2
    central = (units - east) // 2
    return [(DCS[0], east), (DCS[1], central), (DCS[2], units - east - central)] + [(s, 0) for s in STORES]


@on_run_start
def set_hot_stock(environment: Environment) -> None:
    skus, units = _options(environment)
    journal = setup_journal(environment)
    # Newer than any count before (the demo's are version 1, an earlier run's
    # an earlier time), so it is applied.
    version = time.time_ns() // 1000
    changes = [
        supply_pb.StockCount(sku=s, node=node, on_hand=qty, version=version)
        for s in skus
        for node, qty in _placement(units)
    ]
    with setup_channel(environment) as channel:
        response = supply_grpc.SupplyServiceStub(channel).SetStock(
            supply_pb.SetStockRequest(changes=changes), timeout=30
        )
    for change, result in zip(changes, response.results, strict=True):
        if not result.applied:
            raise RuntimeError(f"stock of {change.sku}@{change.node} was not set: a newer count exists")
        journal.stock_set(change.sku, change.node, change.on_hand)
    record_setup(environment)


class _Demand:
    """Units this process's buyers may still ask for (the process's share of the run's demand)."""

    remaining: float | None = None

    @classmethod
    def take(cls, environment: Environment, units: int) -> bool:
        if cls.remaining is None:
            options = environment.parsed_options
            skus, stock = _options(environment)
            factor = float(getattr(options, "demand_factor", 20.0))
            processes = max(1, int(getattr(options, "flash_processes", 1)))
            cls.remaining = factor * stock * len(skus) / processes
        if cls.remaining <= 0:
            return False
        cls.remaining -= units
        return True


class FlashSaleBuyer(EngineUser):
    """A shopper on the sale's product page."""

    wait_range = (0.05, 0.3)

    def on_start(self) -> None:
        self.hot_skus, _ = _options(self.environment)
        # The first item of a sale draws the crowd: Zipf over the hot SKUs.
        self.popularity = Zipf(len(self.hot_skus), seed=1)

    @task
    def buy(self) -> None:
        rng = self.rng
        item = self.hot_skus[self.popularity.draw(rng) - 1]
        channel = pick_weighted(rng, [("web", 0.6), ("app", 0.4)])
        self.call(
            "GetAvailability (sale page)",
            self.inventory.GetAvailability,
            inv_pb.GetAvailabilityRequest(skus=[item], channel=channel),
        )
        quantity = 1 if rng.random() < 0.85 else 2
        if not _Demand.take(self.environment, quantity):
            return
        abandoned = rng.random() < 0.1
        rid, hold = self.reserve(
            channel,
            [(item, quantity, "")],
            rng.uniform(2.0, 4.0) if abandoned else 60.0,
            name="Reserve (sale)",
        )
        if hold is None:
            return
        if abandoned:
            self.abandon(rid, hold)
            return
        self.think(0.2, 1.0)
        if rng.random() < 0.9:
            if self.commit(rid, name="Commit (sale)") is not None and rng.random() < 0.5:
                self.fulfill(rid, name="Fulfill (sale)")
        else:
            self.release(rid, name="Release (sale)")
