"""Shared fixtures."""

from __future__ import annotations

import pytest

from engine.ledgers import make_ledger


@pytest.fixture(params=["pure", "fast"])
def ledger(request: pytest.FixtureRequest):
    """An empty ledger of each implementation.

    The fast one is never skipped: an unbuilt extension makes ``make_ledger``
    raise, so those tests error out loudly (CI builds it). Run ``-k pure`` to
    work on the reference alone.
    """
    return make_ledger(request.param)
