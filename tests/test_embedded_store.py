"""The embedded store's own machinery: the journal and its group commit with real
fsync, snapshots, crash recovery (abandoned and SIGKILLed processes, torn and
corrupt journals, damaged snapshots), the data directory lock, expiry as the
journal records it, and running on uvloop.

The Store contract it shares with the Redis store (reservations, supply,
idempotency, failures changing nothing, expiry as clients see it) is tested
for every store in test_store_contract.py; the tests here look inside: at the
ledger, the journal files and the store's counters.

Most tests inject a fake clock so expiry is exact; the sweeper test and the
subprocess test use the real one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import uvloop
from ledger_helpers import normalized_state
from store_helpers import CALENDAR_NODE, T0, FakeClock, adjust, req, seed

from engine.config import EmbeddedStoreConfig
from engine.core.carriers import default_carriers, dump_carriers
from engine.core.errors import (
    IdempotencyMismatch,
    OutOfStock,
    StockRejected,
    StoreUnavailable,
    UnknownChannel,
    UnknownNode,
)
from engine.core.future_supply import InboundSupply
from engine.core.types import (
    Channel,
    LineRequest,
    Node,
    NodeType,
    ReservationState,
    ReserveRequest,
    SupplyKind,
    SupplyOp,
)
from engine.store.base import CarrierRecord
from engine.store.embedded import DataDirLocked, EmbeddedStore, RecoveryError
from engine.store.journal import HEADER_SIZE, JournalCorruption, list_segments
from engine.store.snapshot import list_snapshots, load_snapshot, publish_snapshot, write_snapshot_temp

pytestmark = pytest.mark.asyncio

# Both ledgers, never skipping the fast one (as in conftest.py): an unbuilt
# extension makes these tests error out loudly. ``-k pure`` runs the reference alone.
IMPLS = ["pure", "fast"]

HELD = ReservationState.HELD
COMMITTED = ReservationState.COMMITTED
RELEASED = ReservationState.RELEASED
EXPIRED = ReservationState.EXPIRED
REPO = Path(__file__).resolve().parent.parent


Opener = Callable[..., Awaitable[EmbeddedStore]]


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest_asyncio.fixture
async def open_store(tmp_path: Path, impl: str) -> AsyncIterator[Opener]:
    """Opens (and at teardown closes) stores; by default on ``tmp_path / "data"``."""
    opened: list[EmbeddedStore] = []

    async def opener(
        data_dir: Path | str | None = "default",
        *,
        clock: Callable[[], float] | None = None,
        **config: Any,
    ) -> EmbeddedStore:
        directory = tmp_path / "data" if data_dir == "default" else data_dir
        store = EmbeddedStore(
            EmbeddedStoreConfig(data_dir=directory, ledger_impl=impl, **config),
            clock=clock or FakeClock(),
        )
        await store.start()
        opened.append(store)
        return store

    yield opener
    for store in reversed(opened):
        await store.close()


async def workload(store: EmbeddedStore, clock: FakeClock | None = None) -> None:
    """A mix of every mutation, each acknowledged before the next."""
    await store.reserve(req("held", ("sku-a", 4)))
    await store.reserve(req("to-commit", ("sku-a", 8), ("sku-b", 1)))
    await store.commit("to-commit")
    await store.reserve(req("to-fulfill", ("sku-b", 2)))
    await store.commit("to-fulfill")
    await store.fulfill("to-fulfill", None)
    await store.reserve(req("to-release", ("sku-a", 1), ("sku-a", 1)))
    await store.release("to-release", [0])
    await store.reserve(req("another-hold", ("sku-a", 1)))
    await store.extend("held", 900.0)
    await store.apply_supply([SupplyOp(SupplyKind.SET, "sku-c", "store1", 7, 3, "count-1")])
    await store.apply_supply([SupplyOp(SupplyKind.SAFETY, "sku-c", "store1", 1, 0, None)])
    if clock is not None:
        await store.reserve(req("expiring", ("sku-a", 1), ttl=5.0))
        clock.now += 10
        await store.expire_now()


def state(store: EmbeddedStore) -> dict[str, Any]:
    return normalized_state(store.ledger.export_state())


def segments(directory: Path) -> list[Path]:
    return [path for _, path in list_segments(directory)]


def records(path: Path) -> list[tuple[int, int]]:
    """``(offset, payload length)`` of each record of a segment."""
    data, out, pos = path.read_bytes(), [], 0
    while pos < len(data):
        length = struct.unpack_from("<I", data, pos)[0]
        out.append((pos, length))
        pos += HEADER_SIZE + length
    return out


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x20
    path.write_bytes(bytes(data))


# ================================== what the journal records, and when replies wait


async def test_network_upserts_journal_only_real_changes(open_store: Opener) -> None:
    store = await open_store()
    await store.upsert_node(Node("b-store", NodeType.STORE, "B", latitude=1.5))
    await store.upsert_node(Node("a-dc", NodeType.DC))

    records_before = store.stats.journal_records
    with pytest.raises(UnknownNode):
        await store.upsert_channel(Channel("web", ("a-dc", "nowhere")))
    assert store.stats.journal_records == records_before  # a failed call writes nothing

    await store.upsert_channel(Channel("web", ("b-store", "a-dc")))
    assert store.ledger.channel_nodes("web") == ("b-store", "a-dc")

    # An identical upsert changes nothing and journals nothing; a changed one does.
    records_before = store.stats.journal_records
    await store.upsert_node(Node("a-dc", NodeType.DC))
    assert store.stats.journal_records == records_before
    await store.upsert_node(Node("a-dc", NodeType.DC, "renamed"))
    assert store.stats.journal_records == records_before + 1


async def test_failures_leave_the_ledger_alone_and_journal_nothing(open_store: Opener) -> None:
    store = await open_store()
    await seed(store)
    before, records_before = state(store), store.stats.journal_records

    with pytest.raises(OutOfStock):
        await store.reserve(req("too-much", ("sku-a", 100), ("sku-b", 1)))
    with pytest.raises(UnknownChannel):
        await store.reserve(ReserveRequest("x", "nowhere", (LineRequest("sku-a", 1),), 60.0))
    with pytest.raises(StockRejected):
        await store.apply_supply([adjust("sku-a", "dc1", 5), adjust("sku-b", "dc1", -99)])

    assert state(store) == before
    assert store.stats.journal_records == records_before
    assert not store.ledger.has_reservation("too-much")


async def test_idempotent_replays_journal_nothing(open_store: Opener) -> None:
    store = await open_store()
    await seed(store)
    await store.reserve(req("r", ("sku-a", 3)))
    records_before = store.stats.journal_records
    await store.reserve(req("r", ("sku-a", 3)))
    assert store.stats.journal_records == records_before
    with pytest.raises(IdempotencyMismatch):
        await store.reserve(req("r", ("sku-a", 4)))
    assert store.stats.journal_records == records_before

    await store.apply_supply([adjust("sku-b", "dc1", 1, "receipt-9")])
    records_before = store.stats.journal_records
    [again] = await store.apply_supply([adjust("sku-b", "dc1", 1, "receipt-9")])
    assert again.duplicate
    assert store.stats.journal_records == records_before


async def test_a_replay_waits_until_the_original_is_durable(open_store: Opener) -> None:
    store = await open_store()
    await seed(store)
    original = asyncio.create_task(store.reserve(req("r", ("sku-a", 1))))
    await asyncio.sleep(0)  # the original is applied and its record queued, not yet durable
    appended = store.stats.appended_seq
    assert store.stats.durable_seq < appended
    await store.reserve(req("r", ("sku-a", 1)))
    assert store.stats.durable_seq >= appended
    await original


async def test_a_cancelled_caller_does_not_cancel_the_batch(open_store: Opener, tmp_path: Path) -> None:
    store = await open_store()
    await seed(store)
    cancelled = asyncio.create_task(store.reserve(req("a", ("sku-a", 1))))
    other = asyncio.create_task(store.reserve(req("b", ("sku-a", 1))))
    await asyncio.sleep(0)
    cancelled.cancel()
    assert (await other).state == HELD
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await store.close()
    reopened = await open_store()
    assert reopened.ledger.has_reservation("a") and reopened.ledger.has_reservation("b")


async def test_memory_only_store_writes_no_files(open_store: Opener, tmp_path: Path) -> None:
    store = await open_store(None)
    await seed(store)
    await workload(store)
    assert (await store.audit()).ok
    assert store.stats.fsyncs == 0 and store.stats.journal_records == 0
    assert await store.snapshot() is None
    assert list(tmp_path.iterdir()) == []


async def test_one_process_per_data_directory(open_store: Opener) -> None:
    await open_store()
    with pytest.raises(DataDirLocked):
        await open_store()


# =================================================================== durability


async def test_everything_acknowledged_survives_close_and_reopen(open_store: Opener) -> None:
    clock = FakeClock()
    store = await open_store(clock=clock)
    await seed(store)
    await workload(store, clock)
    before, nodes, channels = state(store), await store.list_nodes(), await store.list_channels()
    await store.close()

    reopened = await open_store(clock=FakeClock())
    assert state(reopened) == before
    assert await reopened.list_nodes() == nodes
    assert await reopened.list_channels() == channels
    assert (await reopened.get_reservation("expiring")).state == EXPIRED
    assert (await reopened.audit()).ok
    assert reopened.stats.recovered_records > 0


async def test_everything_acknowledged_survives_an_abrupt_stop(open_store: Opener, tmp_path: Path) -> None:
    """The store is abandoned, not closed: the copy of its directory is exactly
    what a killed process leaves behind (the OS keeps what was written)."""
    clock = FakeClock()
    store = await open_store(clock=clock)
    await seed(store)
    await workload(store, clock)
    before = state(store)
    shutil.copytree(tmp_path / "data", tmp_path / "crashed")

    reopened = await open_store(tmp_path / "crashed")
    assert state(reopened) == before
    assert (await reopened.audit()).ok
    # ...and it goes on: new work survives the next restart too.
    await reopened.reserve(req("after-crash", ("sku-a", 1)))
    after = state(reopened)
    await reopened.close()
    assert state(await open_store(tmp_path / "crashed")) == after


async def test_the_clock_going_backwards_never_reaches_the_ledger(open_store: Opener) -> None:
    clock = FakeClock(1_000.0)
    store = await open_store(clock=clock)
    await seed(store)
    await store.reserve(req("a", ("sku-a", 1), ttl=100.0))
    clock.now = 900.0  # NTP stepped back
    b = await store.reserve(req("b", ("sku-a", 1), ttl=100.0))
    assert b.created_at == 1_000.0
    before = state(store)
    await store.close()

    reopened = await open_store(clock=FakeClock(0.0))  # restarted with a clock far behind
    assert state(reopened) == before
    c = await reopened.reserve(req("c", ("sku-a", 1), ttl=100.0))
    assert c.created_at == 1_000.0


async def test_an_expiry_seen_by_a_failed_call_is_journaled(open_store: Opener, tmp_path: Path) -> None:
    """A failed reserve runs after due holds expired; the store journals that
    expiry itself, so a restart shows the hold expired, as the clients saw it,
    even if the restarted clock is behind."""
    clock = FakeClock(1_000.0)
    store = await open_store(clock=clock, sweep_interval_s=1.0)
    await seed(store)
    await store.reserve(req("short", ("sku-a", 15), ttl=10.0))
    clock.now = 1_011.0
    with pytest.raises(OutOfStock):
        await store.reserve(req("big", ("sku-a", 21)))
    assert (await store.get_reservation("short")).state == EXPIRED
    shutil.copytree(tmp_path / "data", tmp_path / "crashed")

    reopened = await open_store(tmp_path / "crashed", clock=FakeClock(0.0))
    assert (await reopened.get_reservation("short")).state == EXPIRED
    assert (await reopened.stock("sku-a", "dc1")).reserved == 0


CHILD = r"""
import asyncio, sys
from pathlib import Path
from engine.config import EmbeddedStoreConfig
from engine.core.carriers import default_carriers, dump_carriers
from engine.core.types import Channel, LineRequest, Node, ReserveRequest, SupplyKind, SupplyOp
from engine.store.embedded import EmbeddedStore

def say(*words):
    sys.stdout.write(" ".join(words) + "\n")
    sys.stdout.flush()

async def main(data_dir, impl):
    store = EmbeddedStore(EmbeddedStoreConfig(
        data_dir=Path(data_dir), ledger_impl=impl, snapshot_every_records=60, sweep_interval_s=0.05))
    await store.start()
    await store.upsert_node(Node("dc1"))
    await store.upsert_channel(Channel("web", ("dc1",)))
    say("ready")

    async def worker(w):
        i = 0
        while True:
            sku = f"sku-{w}"
            if i % 10 == 0:
                event = f"rcpt-{w}-{i}"
                await store.apply_supply([SupplyOp(SupplyKind.ADJUST, sku, "dc1", 10, 0, event)])
                say("supplied", event, sku)
            rid = f"r-{w}-{i}"
            await store.reserve(ReserveRequest(rid, "web", (LineRequest(sku, 1),), 600.0))
            say("reserved", rid)
            if i % 3 == 0:
                await store.commit(rid)
                say("committed", rid)
            elif i % 3 == 1:
                await store.release(rid, None)
                say("released", rid)
            i += 1

    await asyncio.gather(*(worker(w) for w in range(8)))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_every_acknowledged_op_survives_sigkill_mid_traffic(
    open_store: Opener, tmp_path: Path, impl: str
) -> None:
    data_dir = tmp_path / "killed"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data_dir), impl],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    acked: list[list[str]] = []
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        while len(acked) < 400:
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else "child exited"
            acked.append(line.split())
    finally:
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    acked.extend(line.split() for line in rest.splitlines() if line.strip())

    store = await open_store(data_dir, clock=time.time)
    last_acked: dict[str, str] = {}
    supplied: dict[str, int] = {}
    for verb, *args in acked:
        if verb == "supplied":
            supplied[args[1]] = supplied.get(args[1], 0) + 10
        else:
            last_acked[args[0]] = verb
    for rid, verb in last_acked.items():
        res = await store.get_reservation(rid)  # raises NotFound if an acknowledged reserve was lost
        if verb == "committed":
            assert res.state == COMMITTED, rid
        elif verb == "released":
            assert res.state == RELEASED, rid
        else:  # a commit or release may have landed without its acknowledgement
            assert res.state in (HELD, COMMITTED, RELEASED), rid
    for sku, units in supplied.items():
        # Each receipt is acknowledged before that worker's next one, so at most
        # one unacknowledged receipt per SKU may have landed on top.
        assert (await store.stock(sku, "dc1")).on_hand in (units, units + 10), sku
    assert (await store.audit()).ok
    assert store.stats.recovered_records > 0
    assert list_snapshots(data_dir), "the child was meant to snapshot during the traffic"


# ============================================================== damaged journals


async def sequential_history(open_store: Opener) -> tuple[Path, dict[str, Any]]:
    """A closed store whose journal has one record per batch; returns the state
    before its last operation, which reserves ``last``."""
    store = await open_store()
    await seed(store)
    for i in range(5):
        await store.reserve(req(f"r{i}", ("sku-a", 1)))
    before_last = state(store)
    await store.reserve(req("last", ("sku-a", 1)))
    await store.close()
    [segment] = segments(store.config.data_dir)
    return segment, before_last


@pytest.mark.parametrize("damage", ["truncate", "flip"])
async def test_a_torn_last_record_is_dropped_and_the_rest_recovered(
    open_store: Opener, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    segment, before_last = await sequential_history(open_store)
    offset, length = records(segment)[-1]
    if damage == "truncate":
        with segment.open("r+b") as f:
            f.truncate(offset + HEADER_SIZE + length // 2)
    else:
        flip(segment, offset + HEADER_SIZE + length - 3)

    with caplog.at_level(logging.WARNING):
        store = await open_store()
    assert "torn" in caplog.text
    assert state(store) == before_last
    assert not store.ledger.has_reservation("last")
    assert store.stats.torn_bytes_dropped > 0
    assert (await store.audit()).ok

    # The id is free again, and the journal is whole after the repair.
    await store.reserve(req("last", ("sku-a", 2)))
    after = state(store)
    await store.close()
    assert state(await open_store()) == after


async def test_a_corrupt_record_in_the_middle_stops_startup(open_store: Opener, tmp_path: Path) -> None:
    segment, _ = await sequential_history(open_store)
    offset, _ = records(segment)[4]
    flip(segment, offset + HEADER_SIZE + 5)
    size = segment.stat().st_size

    with pytest.raises(JournalCorruption, match="acknowledged operations would be lost"):
        await open_store()
    assert segment.stat().st_size == size  # nothing was repaired away
    # The failed start released the directory lock: a second try fails the same
    # way (JournalCorruption is a RecoveryError), not with DataDirLocked.
    with pytest.raises(RecoveryError):
        await open_store()


# ==================================================================== snapshots


async def test_a_snapshot_keeps_node_calendars(open_store: Opener) -> None:
    store = await open_store()
    await store.upsert_node(CALENDAR_NODE)
    assert await store.snapshot() is not None
    await store.close()
    # Recovery starts from the snapshot alone: no journal record after it.
    reopened = await open_store()
    assert await reopened.list_nodes() == [CALENDAR_NODE]


async def test_inbound_supply_is_in_snapshots_and_replayed_from_the_journal(open_store: Opener) -> None:
    store = await open_store()
    await seed(store)
    eta = T0 + 86_400.0
    await store.upsert_inbound([InboundSupply(f"po-{i}", "sku-a", "dc1", i + 1, eta) for i in range(3)])
    seq = await store.snapshot()
    assert seq is not None
    # After the snapshot: a revision, a removal, a re-send (not journaled) and a new record.
    records_before = store.stats.journal_records
    await store.upsert_inbound([InboundSupply("po-0", "sku-a", "dc2", 7, eta + 60.0)])
    await store.remove_inbound(["po-1", "ghost"])
    await store.remove_inbound(["ghost"])
    await store.upsert_inbound(
        [InboundSupply("po-2", "sku-a", "dc1", 3, eta), InboundSupply("tr-1", "sku-b", "dc2", 1, eta)]
    )
    assert store.stats.journal_records - records_before == 3
    listed = await store.list_inbound(limit=10)
    await store.close()

    reopened = await open_store()
    assert reopened.stats.recovered_records == 3
    assert await reopened.list_inbound(limit=10) == listed
    assert [r.id for r in listed.records] == ["po-0", "po-2", "tr-1"]


async def test_a_snapshot_from_before_future_supply_loads_with_an_empty_book(
    open_store: Opener, tmp_path: Path
) -> None:
    store = await open_store()
    await seed(store)
    await store.upsert_inbound([InboundSupply("po-1", "sku-a", "dc1", 5, T0 + 86_400.0)])
    seq = await store.snapshot()
    await store.close()
    # Rewrite the snapshot as an engine without future supply wrote it: no "inbound" key.
    [(found_seq, path)] = list_snapshots(tmp_path / "data")
    assert found_seq == seq
    document = load_snapshot(path)
    del document["inbound"]
    publish_snapshot(write_snapshot_temp(tmp_path / "data", found_seq, document))

    reopened = await open_store()
    assert (await reopened.list_inbound()).records == ()
    assert (await reopened.stock("sku-a", "dc1")).on_hand == 10


async def test_a_snapshot_from_before_carrier_tables_and_capacity_loads_with_neither(
    open_store: Opener, tmp_path: Path
) -> None:
    store = await open_store()
    await seed(store)
    await store.upsert_node(Node("dc1", NodeType.DC, daily_capacity=1))
    await store.set_carrier_table(dump_carriers(default_carriers()))
    await store.reserve(req("o-1", ("sku-a", 1, "dc1")))
    await store.commit("o-1")
    seq = await store.snapshot()
    await store.close()
    # As an engine without either wrote it: no "carriers" nor "released" key.
    [(found_seq, path)] = list_snapshots(tmp_path / "data")
    assert found_seq == seq
    document = load_snapshot(path)
    assert document["carriers"]["version"] == 1 and document["released"] == [["dc1", "2033-05-18", 1]]
    del document["carriers"], document["released"]
    publish_snapshot(write_snapshot_temp(tmp_path / "data", found_seq, document))

    reopened = await open_store()
    assert await reopened.carrier_table() == CarrierRecord()  # the server's table applies
    assert await reopened.released([("dc1", "2033-05-18")]) == [0]
    assert (await reopened.get_reservation("o-1")).state == ReservationState.COMMITTED


async def test_snapshot_plus_journal_recovers_the_identical_state(open_store: Opener) -> None:
    clock = FakeClock()
    store = await open_store(clock=clock)
    await seed(store)
    await store.reserve(req("early", ("sku-a", 2)))
    seq = await store.snapshot()
    assert seq == store.stats.appended_seq
    assert await store.snapshot() is None  # nothing new
    await workload(store, clock)
    before = state(store)
    raw_before = store.ledger.export_state()
    after_snapshot = store.stats.appended_seq - seq
    await store.close()

    reopened = await open_store(clock=FakeClock())
    assert reopened.stats.last_snapshot_seq == seq
    assert reopened.stats.recovered_records == after_snapshot
    assert state(reopened) == before
    if reopened.ledger.implementation == "pure":
        assert reopened.ledger.export_state() == raw_before  # even the order
    assert (await reopened.audit()).ok


async def test_snapshots_by_record_count_rotate_and_prune_the_journal(open_store: Opener) -> None:
    store = await open_store(snapshot_every_records=10)
    await seed(store)
    for i in range(40):
        await store.reserve(req(f"r{i}", ("sku-a", 1)))
        await store.release(f"r{i}", None)
    while store._snapshot_task is not None and not store._snapshot_task.done():
        await asyncio.sleep(0.01)
    directory = store.config.data_dir
    assert store.stats.snapshots >= 3
    snaps = list_snapshots(directory)
    assert len(snaps) == 2  # the newest two
    # The journal goes back exactly to the older snapshot, not further.
    first_segment = list_segments(directory)[0][0]
    assert first_segment <= snaps[0][0] + 1
    before = state(store)
    await store.close()
    assert state(await open_store()) == before


async def test_snapshots_by_interval(open_store: Opener) -> None:
    store = await open_store(snapshot_interval_s=0.05, sweep_interval_s=0.02)
    await seed(store)
    deadline = time.monotonic() + 5.0
    while store.stats.last_snapshot_seq != store.stats.appended_seq:
        assert time.monotonic() < deadline, "no snapshot by interval"
        await asyncio.sleep(0.02)
    taken = store.stats.snapshots
    assert taken >= 1
    await asyncio.sleep(0.15)
    assert store.stats.snapshots == taken  # nothing new, no new snapshot


async def test_a_snapshot_interrupted_by_a_crash_is_ignored(open_store: Opener, tmp_path: Path) -> None:
    store = await open_store()
    await seed(store)
    await store.reserve(req("r", ("sku-a", 1)))
    before = state(store)
    await store.close()
    leftover = tmp_path / "data" / f"snapshot-{store.stats.appended_seq:020d}.snap.tmp"
    leftover.write_bytes(b"half a snapsh")

    reopened = await open_store()
    assert state(reopened) == before
    assert not leftover.exists()
    assert list_snapshots(tmp_path / "data") == []


async def test_a_damaged_newest_snapshot_falls_back_to_the_previous_one(
    open_store: Opener, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    store = await open_store(clock=clock)
    await seed(store)
    previous = await store.snapshot()
    await store.reserve(req("between", ("sku-a", 1)))
    newest = await store.snapshot()
    await workload(store, clock)
    before = state(store)
    await store.close()
    directory = store.config.data_dir
    newest_path = directory / f"snapshot-{newest:020d}.snap"
    flip(newest_path, newest_path.stat().st_size // 2)

    with caplog.at_level(logging.ERROR):
        reopened = await open_store(clock=FakeClock())
    assert "damaged" in caplog.text
    assert state(reopened) == before
    assert (directory / (newest_path.name + ".corrupt")).exists()
    assert [seq for seq, _ in list_snapshots(directory)] == [previous]
    assert reopened.stats.last_snapshot_seq == previous


async def test_a_damaged_snapshot_without_a_fallback_stops_startup(open_store: Opener) -> None:
    store = await open_store(snapshots_to_keep=1)
    await seed(store)
    await store.reserve(req("r", ("sku-a", 1)))
    seq = await store.snapshot()
    await store.reserve(req("s", ("sku-a", 1)))
    await store.snapshot()  # prunes the journal up to the first snapshot: no way back
    await store.close()
    directory = store.config.data_dir
    assert list_segments(directory)[0][0] > 1
    [(newest, path)] = list_snapshots(directory)
    assert newest > seq
    flip(path, path.stat().st_size - 2)

    with pytest.raises(RecoveryError, match="no usable snapshot"):
        await open_store()
    assert path.exists()  # not renamed away when recovery failed


@pytest.mark.parametrize(("writer", "reader"), [("pure", "fast"), ("fast", "pure")])
async def test_either_ledger_recovers_what_the_other_wrote(tmp_path: Path, writer: str, reader: str) -> None:
    """Snapshots and journals do not depend on the ledger implementation:
    switching ``ledger_impl`` on an existing data directory is safe."""
    clock = FakeClock()
    store = EmbeddedStore(EmbeddedStoreConfig(data_dir=tmp_path, ledger_impl=writer), clock=clock)
    await store.start()
    await seed(store)
    await store.reserve(req("before-snapshot", ("sku-a", 2)))
    await store.snapshot()
    await workload(store, clock)
    before = state(store)
    await store.close()

    other = EmbeddedStore(EmbeddedStoreConfig(data_dir=tmp_path, ledger_impl=reader), clock=FakeClock())
    await other.start()
    try:
        assert other.ledger.implementation == reader
        assert state(other) == before
        assert other.stats.recovered_records > 0
        assert (await other.audit()).ok
    finally:
        await other.close()


# ======================================================================= expiry


async def test_expired_holds_return_within_a_second_with_the_real_sweeper(open_store: Opener) -> None:
    store = await open_store(clock=time.time)  # default sweep interval
    await seed(store)
    res = await store.reserve(req("soon", ("sku-a", 3), ttl=0.3))
    # Watch the ledger directly: the store's own reads would expire the hold themselves.
    while store.ledger.stock("sku-a", "dc1").reserved:
        assert time.time() < res.expires_at + 1.0, "the hold outlived its expiry by a second"
        await asyncio.sleep(0.01)
    assert time.time() - res.expires_at < 1.0
    assert store.stats.expired_holds == 1
    assert (await store.get_reservation("soon")).state == EXPIRED
    assert (await store.audit()).ok


async def test_holds_that_expired_while_the_store_was_down_return_at_start(open_store: Opener) -> None:
    store = await open_store(clock=FakeClock(1_000.0))
    await seed(store)
    await store.reserve(req("r", ("sku-a", 5), ttl=10.0))
    await store.close()

    reopened = await open_store(clock=FakeClock(5_000.0))
    assert reopened.stats.expired_holds == 1
    assert reopened.ledger.stock("sku-a", "dc1").reserved == 0
    assert (await reopened.audit()).ok


async def test_expire_now_journals_one_record_only_when_something_expired(open_store: Opener) -> None:
    clock = FakeClock(100.0)
    store = await open_store(clock=clock, sweep_interval_s=1.0)
    await seed(store)
    await store.reserve(req("b", ("sku-a", 1), ttl=10.0))
    await store.reserve(req("a", ("sku-a", 1), ttl=10.0))
    await store.reserve(req("late", ("sku-a", 1), ttl=50.0))
    records_before = store.stats.journal_records
    assert await store.expire_now() == []
    assert store.stats.journal_records == records_before
    clock.now = 110.0
    assert await store.expire_now() == ["a", "b"]
    assert store.stats.journal_records == records_before + 1
    assert store.stats.durable_seq == store.stats.appended_seq


async def test_an_audit_reports_a_hold_the_sweeper_left_behind(open_store: Opener) -> None:
    clock = FakeClock(100.0)
    store = await open_store(clock=clock, sweep_interval_s=1.0)
    await seed(store)
    await store.reserve(req("r", ("sku-a", 1), ttl=10.0))
    clock.now = 112.0  # two seconds past due, no sweep yet
    report = await store.audit()
    assert not report.ok
    assert "still held" in report.violations[0]


# ================================================================ group commit


async def test_group_commit_batches_concurrent_writes(open_store: Opener) -> None:
    store = await open_store()
    await seed(store)
    await store.apply_supply([adjust("sku-z", "dc1", 1_000)])
    before = store.stats
    results = await asyncio.gather(*(store.reserve(req(f"r{i}", ("sku-z", 1))) for i in range(200)))
    after = store.stats
    assert all(r.state == HELD for r in results)
    records = after.journal_records - before.journal_records
    fsyncs = after.fsyncs - before.fsyncs
    assert records == 200
    assert 1 <= fsyncs <= 20, f"{fsyncs} fsyncs for {records} records"
    assert after.durable_seq == after.appended_seq
    assert after.last_fsync_seconds > 0


async def test_a_journal_failure_stops_writes_and_fails_the_waiters(open_store: Opener) -> None:
    store = await open_store()
    await seed(store)
    writer = store._writer
    assert writer is not None

    def broken(items: Any) -> Any:
        raise OSError(28, "No space left on device")

    writer.write_batch = broken  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable) as info:
        await store.reserve(req("r", ("sku-a", 1)))
    assert info.value.reason == "JOURNAL_FAILED"
    with pytest.raises(StoreUnavailable):
        await store.commit("r")
    assert not store.healthy
    assert (await store.stock("sku-a", "dc1")).on_hand == 10  # reads still answer
    report = await store.audit()
    assert any("journal failed" in v for v in report.violations)


# ========================================================================= loops


async def test_it_runs_on_uvloop(tmp_path: Path, impl: str) -> None:
    """The server runs the store on uvloop; this runs a store on one (in a thread
    of its own, as this suite's loop is the stdlib one)."""

    async def scenario() -> dict[str, Any]:
        store = EmbeddedStore(EmbeddedStoreConfig(data_dir=tmp_path, ledger_impl=impl), clock=FakeClock())
        await store.start()
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        await seed(store)
        await asyncio.gather(*(store.reserve(req(f"r{i}", ("sku-a", 1))) for i in range(10)))
        await store.expire_now()
        result = state(store)
        await store.close()
        return result

    async def reopened() -> dict[str, Any]:
        store = EmbeddedStore(EmbeddedStoreConfig(data_dir=tmp_path, ledger_impl=impl), clock=FakeClock())
        await store.start()
        try:
            return state(store)
        finally:
            await store.close()

    def on_uvloop() -> tuple[dict[str, Any], dict[str, Any]]:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(scenario()), runner.run(reopened())

    before, after = await asyncio.to_thread(on_uvloop)
    assert after == before
    assert before["reservations"]


async def test_recovery_log_line_names_the_snapshot_and_the_replay(
    open_store: Opener, caplog: pytest.LogCaptureFixture
) -> None:
    store = await open_store()
    await seed(store)
    await store.close()
    with caplog.at_level(logging.INFO, logger="engine.store.embedded"):
        await open_store()
    assert "snapshot at seq 0 + 6 journal records" in caplog.text


async def test_journal_records_are_compact_json(open_store: Opener) -> None:
    store = await open_store(clock=FakeClock(5.0))
    await store.upsert_node(Node("dc1", NodeType.DC))
    await store.close()
    [segment] = segments(store.config.data_dir)
    [(offset, length)] = records(segment)
    body = segment.read_bytes()[offset + HEADER_SIZE : offset + HEADER_SIZE + length]
    assert b" " not in body
    op, now, node = json.loads(body)
    assert (op, now, node["id"], node["type"]) == ("node", 5.0, "dc1", int(NodeType.DC))
