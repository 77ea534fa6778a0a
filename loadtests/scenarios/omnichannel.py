"""Scenario 2, an omnichannel day: every kind of caller at once, in peak-season proportions.

Web and app checkouts (reserve, then commit and sometimes ship, or give back,
or abandon a short hold that must expire), POS terminals in the 20 stores
(endless aisle, shelf checks, till sales as stock adjustments), call-center
phone orders, a marketplace polling availability in batches of hundreds of
SKUs, and the ERP sending receipts and cycle counts. Behaviours are in
``loadtests/users.py``; this file only weighs them (Locust spreads ``-u`` users
over the classes by weight).

    locust -f loadtests/scenarios/omnichannel.py --headless -u 60 -r 30 -t 20s --host 127.0.0.1:50051
"""

from __future__ import annotations

import sys
from pathlib import Path

# `locust -f` puts this file's directory on sys.path, not the project root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from loadtests.grpc_user import on_run_start, record_setup
from loadtests.users import (
    CallCenterAgent,
    ErpFeed,
    MarketplacePoller,
    PosTerminal,
    Shopper,
)

on_run_start(record_setup)


class WebShopper(Shopper):
    weight = 30
    channel = "web"


class AppShopper(Shopper):
    weight = 20
    channel = "app"


class StoreTill(PosTerminal):
    weight = 12


class PhoneAgent(CallCenterAgent):
    weight = 5


class Marketplace(MarketplacePoller):
    weight = 2


class Erp(ErpFeed):
    weight = 1
