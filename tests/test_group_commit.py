"""The embedded store's group commit: who waits for whom before an fsync.

Durability itself (fsync before the reply, recovery of everything acknowledged)
is tested in test_embedded_store.py; these tests pin the batching policy that
decides how many records share one fsync, and the record encoding on that path.
No test here measures time: they count batches and records.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from store_helpers import FakeClock, adjust, req, seed

from engine.config import EmbeddedStoreConfig
from engine.core.types import ReservationState
from engine.store import embedded
from engine.store.embedded import EmbeddedStore

Opener = Callable[..., Awaitable[EmbeddedStore]]


@pytest_asyncio.fixture
async def open_store(tmp_path: Path) -> AsyncIterator[Opener]:
    opened: list[EmbeddedStore] = []

    async def opener(**config: Any) -> EmbeddedStore:
        store = EmbeddedStore(EmbeddedStoreConfig(data_dir=tmp_path / "data", **config), clock=FakeClock())
        await store.start()
        opened.append(store)
        return store

    yield opener
    for store in reversed(opened):
        await store.close()


@pytest.mark.asyncio
async def test_a_lone_caller_never_waits_for_company(open_store: Opener) -> None:
    """One caller at a time: every record gets its own fsync at once, never a
    batch that waited for records that could not come (the caller is waiting
    for its reply before it sends the next)."""
    store = await open_store()
    await seed(store)
    await store.apply_supply([adjust("sku-z", "dc1", 1_000)])
    before = store.stats
    for i in range(30):
        await store.reserve(req(f"r{i}", ("sku-z", 1)))
    after = store.stats
    assert after.journal_records - before.journal_records == 30
    assert after.journal_batches - before.journal_batches == 30
    assert store._concurrency < embedded._GROUP_COMMIT_CONCURRENCY


@pytest.mark.asyncio
async def test_concurrent_callers_share_fsyncs(open_store: Opener) -> None:
    store = await open_store()
    await seed(store)
    await store.apply_supply([adjust("sku-z", "dc1", 10_000)])
    before = store.stats
    for wave in range(5):
        results = await asyncio.gather(
            *(store.reserve(req(f"w{wave}-{i}", ("sku-z", 1))) for i in range(100))
        )
        assert all(r.state == ReservationState.HELD for r in results)
    after = store.stats
    records = after.journal_records - before.journal_records
    assert records == 500
    assert after.fsyncs - before.fsyncs <= 25, f"{after.fsyncs - before.fsyncs} fsyncs for {records} records"
    assert after.durable_seq == after.appended_seq


@pytest.mark.asyncio
async def test_a_batch_that_waits_for_company_still_makes_everyone_durable(open_store: Opener) -> None:
    """Once callers were seen writing together, a batch waits a moment for more;
    a caller arriving alone after that still gets its reply, durable."""
    store = await open_store()
    await seed(store)
    await store.apply_supply([adjust("sku-z", "dc1", 1_000)])
    await asyncio.gather(*(store.reserve(req(f"c{i}", ("sku-z", 1))) for i in range(50)))
    await asyncio.gather(*(store.reserve(req(f"d{i}", ("sku-z", 1))) for i in range(50)))
    appended = store.stats.appended_seq
    alone = await store.reserve(req("alone", ("sku-z", 1)))
    assert alone.state == ReservationState.HELD
    assert store.stats.durable_seq >= appended + 1


@pytest.mark.asyncio
async def test_close_does_not_wait_for_company(open_store: Opener, tmp_path: Path) -> None:
    """Closing flushes what is pending and stops: the last records are on disk."""
    store = await open_store()
    await seed(store)
    await store.apply_supply([adjust("sku-z", "dc1", 1_000)])
    pending = [asyncio.create_task(store.reserve(req(f"p{i}", ("sku-z", 1)))) for i in range(20)]
    await asyncio.sleep(0)
    await store.close()
    for task in pending:
        assert (await task).state == ReservationState.HELD
    reopened = EmbeddedStore(EmbeddedStoreConfig(data_dir=tmp_path / "data"), clock=FakeClock())
    await reopened.start()
    try:
        for i in range(20):
            assert reopened.ledger.has_reservation(f"p{i}")
    finally:
        await reopened.close()


def test_journal_records_are_encoded_exactly_as_json_dumps_would() -> None:
    """The record encoder reuses one C encoder; its text must be the one the
    standard encoder writes with the same settings, for anything a record holds."""
    rng = random.Random(7)
    leaves = [
        None,
        True,
        False,
        0,
        -1,
        2**70,
        1.5,
        -0.0,
        1e300,
        1764052123.123456,
        'quote " and \\ backslash',
        "é€ \u2028",
        "\x00\n",
        "web",
    ]

    def value(depth: int = 0) -> Any:
        roll = rng.random()
        if depth < 3 and roll < 0.3:
            return [value(depth + 1) for _ in range(rng.randint(0, 4))]
        if depth < 3 and roll < 0.4:
            return tuple(value(depth + 1) for _ in range(rng.randint(0, 3)))
        if depth < 3 and roll < 0.5:
            return {rng.choice(["a", "b", "é"]): value(depth + 1) for _ in range(rng.randint(0, 3))}
        return rng.choice(leaves)

    reference = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)
    for _ in range(5_000):
        record = [value() for _ in range(rng.randint(1, 6))]
        assert embedded._encode(record) == reference.encode(record).encode("utf-8")
    with pytest.raises(TypeError):
        embedded._encode([object()])
