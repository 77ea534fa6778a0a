"""The shape of peak-season traffic: which SKUs, which channels, how long people think.

Nothing here talks to the engine or imports Locust; the users draw from these.

- SKU popularity is Zipf-distributed: the rank-r SKU is asked for in proportion
  to 1/r^s. Real catalogues look like this (a few bestsellers, a long tail), and
  it is what makes contention: the head rows see most of the holds. Ranks map to
  catalogue SKUs through a fixed shuffle, the same in every load process, so the
  bestsellers are not simply SKU-000001, -000002, ... (which the flash sale uses).
- Time is compressed: a shopper who would spend minutes between "add to cart"
  and "pay" spends about a second, so that a 20 s run holds many whole sessions.
"""

from __future__ import annotations

import bisect
import itertools
import os
import random
import secrets
from collections.abc import Sequence
from typing import TypeVar

__all__ = [
    "CATALOGUE_SIZE",
    "DCS",
    "POSTAL_CODES",
    "STORES",
    "IdMaker",
    "Zipf",
    "pick_weighted",
    "sku",
]

T = TypeVar("T")

# The demo network (engine/demo.py): SKU-000001..SKU-010000, 3 DCs, 20 stores.
CATALOGUE_SIZE = 10_000
DCS = ("dc-east", "dc-central", "dc-west")
STORES = tuple(f"store-{k:03d}" for k in range(1, 21))
# Destinations across the carrier table's regions (engine/data/carriers.yaml).
POSTAL_CODES = ("10001", "02108", "19103", "30303", "60601", "75201", "80202", "94103", "98101")


def sku(index: int) -> str:
    """The demo SKU id of a 1-based catalogue index."""
    return f"SKU-{index:06d}"


class Zipf:
    """Draws 1-based catalogue indexes with Zipf popularity over ``n`` items.

    ``exclude`` keeps indexes out of the draw (the flash sale's hot SKUs, whose
    stock a scenario owns and checks exactly).
    """

    def __init__(
        self, n: int = CATALOGUE_SIZE, s: float = 1.0, *, seed: int = 20261127, exclude: Sequence[int] = ()
    ) -> None:
        excluded = set(exclude)
        items = [i for i in range(1, n + 1) if i not in excluded]
        # The same seed in every process: they all agree on the bestsellers.
        random.Random(seed).shuffle(items)
        self._items = items
        self._cumulative = list(itertools.accumulate(1.0 / (r**s) for r in range(1, len(items) + 1)))

    def draw(self, rng: random.Random) -> int:
        at = rng.random() * self._cumulative[-1]
        return self._items[min(bisect.bisect_left(self._cumulative, at), len(self._items) - 1)]

    def draw_distinct(self, rng: random.Random, k: int) -> list[int]:
        """``k`` different indexes (a cart never has the same SKU on two lines)."""
        picked: dict[int, None] = {}
        while len(picked) < k:
            picked[self.draw(rng)] = None
        return list(picked)

    def head(self, k: int) -> list[int]:
        """The ``k`` most popular indexes."""
        return self._items[:k]


def pick_weighted(rng: random.Random, weighted: Sequence[tuple[T, float]]) -> T:
    """One value of ``(value, weight)`` pairs, by weight."""
    total = sum(w for _, w in weighted)
    at = rng.random() * total
    for value, w in weighted:
        at -= w
        if at < 0:
            return value
    return weighted[-1][0]


class IdMaker:
    """Reservation and event ids unique across processes, hosts and runs.

    A random token per process (not the pid alone: two hosts or two runs can
    share a pid) plus a counter. Ids stay short: they travel in every call.
    """

    def __init__(self, prefix: str) -> None:
        self._prefix = f"{prefix}-{secrets.token_hex(4)}-{os.getpid()}"
        self._counter = itertools.count(1)

    def next(self, kind: str) -> str:
        return f"{self._prefix}-{kind}{next(self._counter)}"
