"""Scenario 3, soak: steady everyday load for a long time, with many abandoned carts.

Four in ten held carts are abandoned with a hold of 2-5 seconds, so expiry runs
all the time; each load process checks (``--expiry-checks-per-s``, 20 by
default) that abandoned holds are gone within a second of their expiry, as a
failing ``check: expired hold is gone`` line in Locust's statistics, and the
run-level check at the end checks every one of them. Run it for as long as a
shift, e.g.

    locust -f loadtests/scenarios/soak.py --headless -u 40 -r 10 -t 30m --host 127.0.0.1:50051

and watch memory and latency stay flat (the engine's metrics, deploy/grafana).
"""

from __future__ import annotations

import sys
from pathlib import Path

# `locust -f` puts this file's directory on sys.path, not the project root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from loadtests.grpc_user import on_run_start, record_setup
from loadtests.users import ErpFeed, MarketplacePoller, PosTerminal, Shopper

on_run_start(record_setup)


class SoakShopper(Shopper):
    weight = 20
    wait_range = (1.0, 3.0)
    commit_share = 0.45
    release_share = 0.15
    abandon_ttl_s = (2.0, 5.0)


class SoakAppShopper(SoakShopper):
    weight = 10
    channel = "app"


class SoakTill(PosTerminal):
    weight = 5


class SoakMarketplace(MarketplacePoller):
    weight = 1


class SoakErp(ErpFeed):
    weight = 1
