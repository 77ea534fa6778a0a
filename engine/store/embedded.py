"""The embedded store: one process owns the state (the default, zero setup).

The in-memory ledger is the state; a checksummed journal makes it durable and
snapshots bound recovery time. Files live in ``config.data_dir`` (see
:mod:`engine.store.journal` and :mod:`engine.store.snapshot` for their formats);
``data_dir=None`` keeps everything in memory.

How a mutation runs (all on the event loop, so mutations are serialized and
atomic without locks):

1. ``now`` comes from the injected clock, clamped so it never goes backwards
   (:class:`~engine.store.clock.MonotonicClock`). Holds already due at ``now``
   are expired first, as their own journal record.
2. The journal record ``[op, now, *args]`` is encoded *before* the ledger is
   touched, so a mutation that could not be journaled never happens.
3. The ledger applies it through :meth:`EmbeddedStore._apply`, the same code
   that replays the journal on recovery, so what is logged is exactly what was
   applied. A raised domain error means no effect and no record.
4. The record joins the pending batch, and the caller awaits its durability:
   one flusher task writes every pending record and fsyncs once, in the journal
   thread (group commit: while one fsync runs, the next batch gathers; while
   callers write concurrently, a batch also waits a moment for company before
   its fsync starts, see ``_gather_company``), then wakes the batch's waiters.
   The reply is sent only after that fsync.

The journal is one ordered log and batches become durable in order, so
durability is always a prefix: an operation that depends on another one's
effect (a hold on units another caller just released) is logged after it and
can never survive a crash without it. The result returned to a caller is taken
right after its own mutation, before awaiting, so a reply never shows a later
operation's effect that may not be durable yet. An idempotent replay that
changes nothing (a reserve with an existing id, a duplicate supply event) is not
journaled, but still waits until the journal is durable up to its current end,
since the original may still be in flight.

Reads (``get_reservation``, ``availability``, ``stock``, ``list_*``) never wait.
They may see effects that are applied but not yet durable, as any single-writer
engine with group commit does; no client is *told* of an effect before it is
durable.

Expiry: every mutation first expires the holds due at its ``now`` as a record
of its own (rather than leaving it to the ledger's implicit expiry, which a
failing call would do without a record); the sweeper (every
``sweep_interval_s``), ``start()`` (for holds that expired while the store was
down) and the reads that look at holds do the same, so units return within one
sweep interval even when nothing else happens, and no read shows a hold past its
expiry. An expire record is journaled only when something expired.

Snapshots: after ``snapshot_every_records`` records or ``snapshot_interval_s``,
the ledger is exported on the loop (it is not thread-safe; that export is the
only pause), serialized and written to a temporary file in the snapshot thread,
and published (rename + directory fsync) only once the journal is durable up to
the snapshot's seq; the journal starts a new segment at that point. Old files are
pruned keeping two snapshots and the journal since the older one.

If writing the journal fails (disk full, I/O error), the ledger in memory may
hold effects that will not survive a restart: the store stops taking writes
(``StoreUnavailable``; the waiting callers get it too), keeps serving reads, and
``audit()`` reports it. Restart it to recover from what is on disk; a retry with
the same reservation id or event id is then safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import functools
import json
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from engine.config import EmbeddedStoreConfig
from engine.core.allocation_rules import RuleKind, decode_rules, encode_rules, resolve_channel_rules
from engine.core.capacity import CAPACITY_RETENTION_DAYS, capacity_nodes, local_day
from engine.core.errors import EngineError, EtagMismatch, StoreUnavailable
from engine.core.future_supply import (
    FutureSupply,
    InboundOutcome,
    InboundPage,
    InboundSupply,
    check_inbound_batch,
    decode_inbound,
    encode_inbound,
    page_of,
    uncovered_shortages,
)
from engine.core.ledger_protocol import Ledger
from engine.core.types import (
    Channel,
    Node,
    NodeType,
    Reservation,
    ReservationState,
    ReserveRequest,
    SkuAvailability,
    StockChange,
    StockLevel,
    SupplyOp,
)
from engine.ledgers import make_ledger
from engine.observability import metrics
from engine.store.base import AuditReport, CarrierRecord
from engine.store.clock import MonotonicClock
from engine.store.journal import (
    JournalCorruption,
    JournalReader,
    JournalWriter,
    RecoveryError,
    Rotation,
    list_segments,
)
from engine.store.snapshot import (
    SnapshotCorrupt,
    discard_snapshot,
    list_snapshots,
    load_snapshot,
    prune,
    publish_snapshot,
    remove_temporaries,
    write_snapshot_temp,
)

__all__ = ["DataDirLocked", "EmbeddedStore", "EmbeddedStoreStats", "RecoveryError"]

log = logging.getLogger(__name__)

SNAPSHOT_FORMAT = 1
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)
# JSONEncoder.encode builds a new C encoder for every call; one built once with
# the same settings (what iterencode passes it) writes the same text at half
# the cost, on the path of every mutation. None where the C accelerator is absent.
_C_MAKE_ENCODER = getattr(json.encoder, "c_make_encoder", None)
_C_ENCODER = (
    _C_MAKE_ENCODER(
        None,  # no circular-reference markers (check_circular=False)
        _ENCODER.default,
        json.encoder.encode_basestring,  # ensure_ascii=False
        None,  # no indent
        ":",
        ",",
        False,  # sort_keys
        False,  # skipkeys
        True,  # allow_nan
    )
    if _C_MAKE_ENCODER is not None
    else None
)


class DataDirLocked(RuntimeError):
    """Another engine process owns this data directory."""


@dataclass(slots=True)
class EmbeddedStoreStats:
    """Counters for a metrics layer; ``EmbeddedStore.stats`` returns a copy."""

    journal_records: int = 0  # records appended since start
    journal_bytes: int = 0
    journal_batches: int = 0  # group commits written
    fsyncs: int = 0
    last_fsync_seconds: float = 0.0
    last_batch_records: int = 0
    appended_seq: int = 0  # seq of the newest record in memory
    durable_seq: int = 0  # seq up to which the journal is fsynced
    expired_holds: int = 0  # reservations expired since start
    snapshots: int = 0
    snapshot_failures: int = 0
    last_snapshot_seq: int = 0
    last_snapshot_seconds: float = 0.0
    recovered_records: int = 0  # journal records replayed at start
    recovery_seconds: float = 0.0
    torn_bytes_dropped: int = 0
    replay_divergences: int = 0  # an expiry on replay differed from the journaled one


# Group commit tuning (see EmbeddedStore._gather_company). Multiples of a
# millisecond: uvloop's timers have that resolution.
_GROUP_COMMIT_MAX_WAIT_S = 0.003  # longest a record waits for company before its fsync starts
_GROUP_COMMIT_GAP_S = 0.001  # a gap this long with no new record ends the wait
_GROUP_COMMIT_MAX_RECORDS = 256  # a batch this large does not wait for more
_GROUP_COMMIT_CONCURRENCY = 0.5  # wait only while at least this share of batches had company
_GROUP_COMMIT_SMOOTHING = 0.25  # weight of the latest batch in that share


def _encode(record: Sequence[Any]) -> bytes:
    if _C_ENCODER is not None:
        return "".join(_C_ENCODER(record, 0)).encode("utf-8")
    return _ENCODER.encode(record).encode("utf-8")


class _JournalThread:
    """The thread that does the journal's file I/O (recovery, batch writes, close).

    Jobs run one at a time in submission order. Compared with a one-thread
    ThreadPoolExecutor, a job costs one queue put, one thread wake-up and one
    ``call_soon_threadsafe`` back, without a concurrent.futures.Future, its
    condition variable and the callback chain that wraps it in an asyncio
    future: less Python run, and fewer GIL hand-overs, per group commit.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._jobs: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]] | None]
        self._jobs = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="journal", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        done = self._loop.create_future()
        self._jobs.put((fn, args, done))
        return done

    def shutdown(self) -> None:
        """Let the jobs already submitted finish, then stop the thread."""
        self._jobs.put(None)
        self._thread.join()

    def _run(self) -> None:
        jobs, call_back = self._jobs, self._loop.call_soon_threadsafe
        while True:
            job = jobs.get()
            if job is None:
                return
            fn, args, done = job
            result: Any = None
            error: BaseException | None = None
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the awaiting coroutine, which decides
                error = exc
            # RuntimeError: the loop is closed, so nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                call_back(_settle, done, result, error)
            del job, fn, args, done, result, error


def _settle(done: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if done.cancelled():
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(result)


class _NotYet:
    """The error of a batch that has not finished (None means it succeeded)."""


_NOT_YET: Any = _NotYet()


class _Batch:
    """Records that become durable with one write and fsync, and who waits for them.

    Callers wait on futures of their own (see ``EmbeddedStore._durable``), which
    is cheaper than shielding one shared future per caller.
    """

    __slots__ = ("error", "waiters")

    def __init__(self) -> None:
        self.error: BaseException | None = _NOT_YET
        self.waiters: list[asyncio.Future[None]] = []

    def finish(self, error: BaseException | None) -> None:
        self.error = error
        for waiter in self.waiters:
            if not waiter.done():  # a cancelled caller's waiter is done already
                waiter.set_result(None)
        self.waiters = []


# Network objects are stored field by field, so a new scalar field of Node or
# Channel is persisted without touching this module (old files get its default).
def _encode_node(node: Node) -> dict[str, Any]:
    data = {f.name: getattr(node, f.name) for f in fields(Node)}
    data["type"] = int(node.type)
    return data


def _decode_node(data: dict[str, Any]) -> Node:
    return Node(**{**data, "type": NodeType(data["type"])})


def _encode_channel(channel: Channel) -> dict[str, Any]:
    data = {f.name: getattr(channel, f.name) for f in fields(Channel)}
    data["nodes"] = list(channel.nodes)
    data["allocation_rules"] = encode_rules(channel.allocation_rules)
    return data


def _decode_channel(data: dict[str, Any]) -> Channel:
    return Channel(
        **{
            **data,
            "nodes": tuple(data["nodes"]),
            # Journals and snapshots from before allocation rules have none.
            "allocation_rules": decode_rules(data["id"], data.get("allocation_rules", ())),
        }
    )


def _rules_by_node(channel: Channel, nodes: dict[str, Node]) -> dict[str, tuple[int, int]]:
    resolved = resolve_channel_rules(channel, nodes)
    if resolved is None:
        return {}
    return {
        node: rule for node, rule in zip(channel.nodes, resolved, strict=True) if rule[0] != RuleKind.NONE
    }


class EmbeddedStore:
    """The Store port over an in-process ledger, a journal and snapshots."""

    kind = "embedded"

    def __init__(self, config: EmbeddedStoreConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = MonotonicClock(clock)
        self._ledger: Ledger = make_ledger(config.ledger_impl)
        self._nodes: dict[str, Node] = {}
        self._channels: dict[str, Channel] = {}
        # Future supply (inbound POs and transfers): journaled as "inbound" /
        # "inbound_remove" records, in snapshots under "inbound".
        self._inbound = FutureSupply()
        # The carrier table set through the API: journaled as "carriers"
        # records, in snapshots under "carriers" (older files: none set).
        self._carriers = CarrierRecord()
        # Orders released per (node, local ISO date), counted by the "commit"
        # records themselves (see _count_release), in snapshots under "released".
        self._released: dict[tuple[str, str], int] = {}
        self._stats = EmbeddedStoreStats()
        self._phase = "new"  # new -> starting -> running -> closing -> closed
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._directory: Path | None = None
        self._lock_fd = -1
        # Journal, loop side. ``_seq`` is the newest record appended; records wait
        # in ``_pending`` for the flusher, which makes them durable as one batch:
        # ``_gathering`` (the batch being gathered) and ``_inflight`` (the batch
        # being written) finish with None, or with the exception that stopped
        # the journal.
        self._writer: JournalWriter | None = None
        self._seq = 0
        self._pending: list[tuple[int, bytes] | Rotation] = []
        self._first_pending_at = 0.0  # loop time of the oldest pending record
        self._gathering: _Batch | None = None
        self._inflight: _Batch | None = None
        self._concurrency = 0.0  # see _gather_company
        self._wake: asyncio.Event | None = None
        self._draining = False
        self._io: _JournalThread | None = None  # journal writes, recovery
        # Snapshot writes get their own thread so a large one never delays an fsync.
        self._snapshot_io: ThreadPoolExecutor | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._snapshot_task: asyncio.Task[None] | None = None
        self._snapshot_lock: asyncio.Lock | None = None
        self._snapshot_seq = 0  # seq of the newest published snapshot
        self._next_snapshot_seq = config.snapshot_every_records
        self._last_snapshot_at = time.monotonic()

    # ----------------------------------------------------------------- lifecycle

    @property
    def ledger(self) -> Ledger:
        """The ledger, for inspection (tests, benchmarks); mutate only through the store."""
        return self._ledger

    @property
    def stats(self) -> EmbeddedStoreStats:
        return dataclasses.replace(self._stats)

    @property
    def healthy(self) -> bool:
        """Running and taking writes."""
        return self._phase == "running" and self._failure is None

    async def start(self) -> None:
        """Recover the state from ``data_dir`` and start the background tasks."""
        if self._phase != "new":
            raise RuntimeError("EmbeddedStore.start() is called once")
        self._phase = "starting"
        loop = self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._snapshot_lock = asyncio.Lock()
        if self.config.data_dir is not None:
            directory = self._directory = Path(self.config.data_dir)
            directory.mkdir(parents=True, exist_ok=True)
            self._lock_data_dir(directory)
            self._io = _JournalThread(loop)
            self._snapshot_io = ThreadPoolExecutor(1, thread_name_prefix="snapshot")
            try:
                # Nothing else touches the ledger until start() returns, so the
                # replay can run off the loop.
                await self._io.submit(self._recover, directory)
            except BaseException:
                self._shutdown_threads()
                self._unlock_data_dir()
                self._phase = "closed"
                raise
            self._flusher = loop.create_task(self._flush_loop(), name="embedded-store-flusher")
        self._sweeper = loop.create_task(self._sweep_loop(), name="embedded-store-sweeper")
        self._last_snapshot_at = time.monotonic()
        self._phase = "running"
        # Holds that expired while the store was down return now, before anyone
        # (an audit right after start, say) can see them still held.
        await self._durable(self._expire(self._clock())[1])

    async def close(self) -> None:
        """Stop the background tasks, write and fsync what is pending, close the files."""
        if self._phase in ("new", "closed"):
            self._phase = "closed"
            return
        if self._phase == "closing":
            return
        self._phase = "closing"  # new operations are refused from here on
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._snapshot_task is not None:
            # Let a snapshot in progress finish: it is bounded, and its journal
            # rotation must reach the disk before the flusher stops.
            with contextlib.suppress(Exception):
                await self._snapshot_task
        if self._flusher is not None:
            assert self._wake is not None and self._loop is not None and self._writer is not None
            self._draining = True
            self._wake.set()
            await self._flusher
            with contextlib.suppress(OSError):
                assert self._io is not None
                await self._io.submit(self._writer.close)
        self._shutdown_threads()
        self._unlock_data_dir()
        self._phase = "closed"

    def _shutdown_threads(self) -> None:
        if self._io is not None:
            self._io.shutdown()
        if self._snapshot_io is not None:
            self._snapshot_io.shutdown(wait=True)
        self._io = self._snapshot_io = None

    def _lock_data_dir(self, directory: Path) -> None:
        # Two processes appending to one journal would interleave records: refuse.
        # flock is released by the kernel when the process dies, even by SIGKILL.
        fd = os.open(directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirLocked(f"{directory} is in use by another engine process") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _unlock_data_dir(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    # ------------------------------------------------------------------ recovery

    def _recover(self, directory: Path) -> None:
        """Newest valid snapshot + the journal after it. Runs in the journal thread."""
        started = time.perf_counter()
        remove_temporaries(directory)
        segments = list_segments(directory)
        earliest = segments[0][0] if segments else None
        snapshots = list_snapshots(directory)
        damaged: list[Path] = []
        document: dict[str, Any] | None = None
        base_seq = 0
        for seq, path in reversed(snapshots):
            if earliest is not None and earliest > seq + 1:
                log.error(
                    "snapshot %s cannot be used: the journal after it was pruned (starts at seq %d)",
                    path.name,
                    earliest,
                )
                continue
            try:
                document = load_snapshot(path)
            except SnapshotCorrupt as exc:
                log.error("snapshot damaged, trying an older one: %s", exc)
                damaged.append(path)
                continue
            base_seq = seq
            break
        if document is None and snapshots and earliest != 1:
            raise RecoveryError(
                f"no usable snapshot in {directory} and the journal does not go back to the "
                f"first record (starts at {earliest}); refusing to start with lost data"
            )
        if document is not None:
            self._load_document(document)
        reader = JournalReader(directory, base_seq)
        replayed = 0
        for seq, payload in reader:
            self._replay(seq, payload)
            replayed += 1
        reader.finish(fsync=self.config.fsync)
        for path in damaged:
            kept = discard_snapshot(path)
            log.error("damaged snapshot kept for inspection as %s", kept.name)
        if reader.torn is not None:
            self._stats.torn_bytes_dropped = reader.torn.dropped_bytes
        self._seq = max(base_seq, reader.last_seq)
        self._snapshot_seq = base_seq
        self._next_snapshot_seq = base_seq + self.config.snapshot_every_records
        self._writer = JournalWriter(directory, self._seq + 1, fsync=self.config.fsync)
        self._stats.appended_seq = self._stats.durable_seq = self._seq
        self._stats.last_snapshot_seq = base_seq
        self._stats.recovered_records = replayed
        self._stats.recovery_seconds = time.perf_counter() - started
        log.info(
            "embedded store recovered from %s: snapshot at seq %d + %d journal records, "
            "%d rows, %d reservations, in %.3f s",
            directory,
            base_seq,
            replayed,
            self._ledger.row_count(),
            self._ledger.reservation_count(),
            self._stats.recovery_seconds,
        )

    def _load_document(self, document: dict[str, Any]) -> None:
        if document.get("format") != SNAPSHOT_FORMAT:
            raise RecoveryError(f"unsupported snapshot format {document.get('format')!r}")
        self._ledger.load_state(document["ledger"])
        self._nodes = {n.id: n for n in map(_decode_node, document["nodes"])}
        self._channels = {c.id: c for c in map(_decode_channel, document["channels"])}
        # Optional key: snapshots written before future supply have none (format 1 either way).
        self._inbound = FutureSupply(map(decode_inbound, document.get("inbound", ())))
        # Optional keys: snapshots written before carrier tables over the API and
        # daily capacity counts have none (no table set: the server's applies).
        carriers = document.get("carriers")
        if carriers is not None:
            self._carriers = CarrierRecord(carriers["document"], carriers["version"], carriers["updated_at"])
        self._released = {(node, day): count for node, day, count in document.get("released", ())}
        if document.get("now") is not None:
            self._clock.advance(document["now"])

    def _replay(self, seq: int, payload: bytes) -> None:
        try:
            op, now, *args = json.loads(payload)
        except (ValueError, TypeError) as exc:
            raise JournalCorruption(f"journal record {seq} does not decode: {exc}") from None
        self._clock.advance(now)
        try:
            result = self._apply(op, now, args)
        except EngineError as exc:
            raise RecoveryError(
                f"journal record {seq} ({op}) failed on replay with {exc.reason}: {exc}; "
                "the ledger did not behave as when the record was written"
            ) from exc
        if op == "expire" and result != args[0]:
            self._stats.replay_divergences += 1
            log.error(
                "journal record %d: replay expired %d holds where %d were journaled",
                seq,
                len(result),
                len(args[0]),
            )

    def _snapshot_document(self, seq: int) -> dict[str, Any]:
        last = self._clock.last
        return {
            "format": SNAPSHOT_FORMAT,
            "seq": seq,
            "now": last if math.isfinite(last) else None,
            "ledger_impl": self._ledger.implementation,
            "ledger": self._ledger.export_state(),
            "nodes": [_encode_node(n) for _, n in sorted(self._nodes.items())],
            "channels": [_encode_channel(c) for _, c in sorted(self._channels.items())],
            "inbound": [encode_inbound(r) for r in self._inbound],
            "carriers": dataclasses.asdict(self._carriers),
            "released": [[node, day, count] for (node, day), count in sorted(self._released.items())],
        }

    # -------------------------------------------------------- apply (live and replay)

    def _apply(self, op: str, now: float, args: Sequence[Any]) -> Any:
        """Apply one journal record's operation: the only way the state changes.

        Live mutations and recovery both come through here with the same
        arguments (live as Python values, on replay as decoded JSON), so replay
        repeats exactly what was done.
        """
        ledger = self._ledger
        if op == "reserve":
            # Lines are (sku, quantity, node) tuples live and 3-element lists on
            # replay; both ledgers take either.
            rid, channel, lines, ttl_s, allow_partial, *ranked = args
            if ranked:
                # Promise-driven sourcing: the candidates the promiser ranked
                # when the reserve was made are in the record, so a replay takes
                # the same nodes whatever the promiser would say today.
                # The backorder allowances too: the inbound supply of that moment.
                candidates, whole_lines, context, *backorder = ranked
                return ledger.reserve(
                    rid,
                    channel,
                    lines,
                    ttl_s,
                    allow_partial,
                    now,
                    candidates,
                    whole_lines,
                    context,
                    backorder[0] if backorder else None,
                )
            return ledger.reserve(rid, channel, lines, ttl_s, allow_partial, now)
        if op == "commit":
            # Capacity counts the HELD -> COMMITTED transition only: a commit
            # replayed by a retrying client finds it COMMITTED and counts nothing.
            rid = args[0]
            was_held = (
                ledger.has_reservation(rid) and ledger.get_reservation(rid).state == ReservationState.HELD
            )
            result = ledger.commit(rid, now)
            if was_held:
                self._count_release(rid, now)
            return result
        if op == "release":
            return ledger.release(args[0], args[1], now)
        if op == "fulfill":
            return ledger.fulfill(args[0], args[1], now)
        if op == "extend":
            return ledger.extend(args[0], args[1], now)
        if op == "supply":
            return ledger.apply_supply([SupplyOp(*op_args) for op_args in args[0]], now)
        if op == "expire":
            return ledger.expire_due(now)
        if op == "node":
            node = _decode_node(args[0])
            ledger.define_node(node.id, node.default_safety_stock)
            previous = self._nodes.get(node.id)
            self._nodes[node.id] = node
            if previous is not None and previous.type != node.type:
                # Rules by node type resolve differently now (the ledger keeps them
                # resolved per node); redefining keeps each channel's counters.
                for channel in self._channels.values():
                    if channel.allocation_rules and node.id in channel.nodes:
                        self._define_channel(channel)
            return node
        if op == "channel":
            channel = _decode_channel(args[0])
            self._define_channel(channel)
            self._channels[channel.id] = channel
            return channel
        if op == "inbound":
            # args[0]: the records that change, as encode_inbound text (the
            # caller left out those re-sent unchanged).
            self._inbound.upsert([decode_inbound(text) for text in args[0]])
            return None
        if op == "inbound_remove":
            for supply_id in args[0]:
                self._inbound.remove(supply_id)
            return None
        if op == "carriers":
            # args: the document (None: reset to the server's table), the new version.
            self._carriers = CarrierRecord(args[0], args[1], now)
            return self._carriers
        raise JournalCorruption(f"unknown journal operation {op!r}")

    # ------------------------------------------------------------------- helpers

    def _count_release(self, rid: str, now: float) -> None:
        """One order released today by each node with a daily capacity that the
        just-committed reservation allocates from (engine/core/capacity.py).

        Runs inside ``_apply``, so replaying the journal counts exactly what was
        counted live, with the nodes (capacity, time zone) of that moment.
        """
        reservation = self._ledger.get_reservation(rid)
        if reservation.state != ReservationState.COMMITTED:
            return
        released = self._released
        for node_id in capacity_nodes(reservation, self._nodes):
            key = (node_id, local_day(self._nodes[node_id].time_zone, now))
            if key not in released:
                # A new day: forget days no promise reads any more. ISO dates
                # compare as strings; UTC is within a day of every local date.
                oldest = local_day("UTC", now - CAPACITY_RETENTION_DAYS * 86_400.0)
                for stale in [k for k in released if k[1] < oldest]:
                    del released[stale]
            released[key] = released.get(key, 0) + 1

    def _define_channel(self, channel: Channel) -> None:
        self._ledger.define_channel(channel.id, channel.nodes, resolve_channel_rules(channel, self._nodes))

    def _check_open(self) -> None:
        if self._phase != "running":
            raise StoreUnavailable(f"the embedded store is {self._phase}", reason="STORE_NOT_RUNNING")

    def _check_writable(self) -> None:
        self._check_open()
        if self._failure is not None:
            raise StoreUnavailable(
                f"the journal failed ({self._failure!r}); the store takes no writes until restarted",
                reason="JOURNAL_FAILED",
            )

    def _expire_for_read(self) -> None:
        """Reads look at holds as of now: due ones are expired (and journaled,
        without waiting) first, so no read shows a hold past its expiry."""
        self._expire(self._clock())

    def _expire(self, now: float) -> tuple[list[str], _Batch | None]:
        """Expire the holds due at ``now`` as a journal record of its own.

        Mutations call this before the ledger (whose implicit expiry then finds
        nothing to do), so the journal stays faithful even when the mutation
        fails after the ledger expired something.
        """
        if self._failure is not None:
            return [], None
        due = self._ledger.next_expiry()
        if due is None or due > now:
            return [], None
        expired = self._ledger.expire_due(now)
        if not expired:
            return [], None  # the heap's head was stale (extended, committed, released)
        self._stats.expired_holds += len(expired)
        # Live only: recovery replays expiries through _apply, uncounted (the
        # process that lived them counted them). Counted as the Redis store
        # counts them (its lines live in several shards, each expiring on its
        # own): a reservation whose first line was held until it expired.
        ledger = self._ledger
        first_line_expired = (ledger.get_reservation(rid) for rid in expired)
        metrics.record_expired(
            r.channel for r in first_line_expired if r.lines[0].state == ReservationState.EXPIRED
        )
        if self._writer is None:
            return expired, None  # memory only: nothing to journal
        return expired, self._enqueue(_encode(["expire", now, expired]))

    def _enqueue(self, payload: bytes) -> _Batch | None:
        """Queue a record of an applied mutation; returns the batch it becomes durable with."""
        if self._writer is None:
            return None  # memory only
        self._seq += 1
        if not self._pending:
            assert self._loop is not None
            self._first_pending_at = self._loop.time()
        self._pending.append((self._seq, payload))
        self._stats.journal_records += 1
        self._stats.appended_seq = self._seq
        if self._seq >= self._next_snapshot_seq:
            self._request_snapshot()
        return self._pending_batch()

    def _pending_batch(self) -> _Batch:
        batch = self._gathering
        if batch is None:
            assert self._wake is not None
            batch = self._gathering = _Batch()
            self._wake.set()
        return batch

    def _journal_end(self) -> _Batch | None:
        """The batch whose durability covers everything appended so far."""
        return self._gathering or self._inflight

    async def _durable(self, batch: _Batch | None) -> None:
        if batch is not None:
            if batch.error is _NOT_YET:
                # A waiter of its own, not the batch's: a cancelled caller cancels
                # only its own wait, never the batch everyone else waits for.
                assert self._loop is not None
                waiter = self._loop.create_future()
                batch.waiters.append(waiter)
                await waiter
            error = batch.error
            if error is not None:
                raise StoreUnavailable(
                    f"the journal write failed ({error!r}); the store takes no writes until restarted",
                    reason="JOURNAL_FAILED",
                ) from error
        elif self._failure is not None:
            self._check_writable()

    async def _write(
        self,
        op: str,
        args: list[Any],
        *,
        expire: bool = True,
        changed_nothing: Callable[[Any], bool] | None = None,
        answer: Callable[[Any], Any] | None = None,
    ) -> Any:
        """One mutation: expire due holds, encode, apply, queue, await durability.

        Everything up to the await runs in one step of the loop, so mutations are
        atomic and serialized. ``changed_nothing(result)`` marks an idempotent
        replay: no record, but it waits for the journal's current end.
        ``answer(result)`` builds the reply right after applying, before the
        await, so it shows this mutation's effect and no later one.
        """
        self._check_writable()
        now = self._clock()
        expiry = self._expire(now)[1] if expire else None
        # Memory only: no journal, so no record to encode on this hot path.
        payload = _encode([op, now, *args]) if self._writer is not None else b""
        try:
            result = self._apply(op, now, args)
        except EngineError:
            # No effect, but the error may reflect the expiry just done (a commit
            # refused as RESERVATION_EXPIRED): it is only told once durable.
            await self._durable(expiry)
            raise
        if changed_nothing is not None and changed_nothing(result):
            done = self._journal_end()
        else:
            done = self._enqueue(payload)
        reply = answer(result) if answer is not None else result
        await self._durable(done)
        return reply

    # ------------------------------------------------------------ group commit

    async def _flush_loop(self) -> None:
        assert self._wake is not None and self._writer is not None and self._io is not None
        wake, writer, io = self._wake, self._writer, self._io
        while True:
            if not self._pending:
                if self._draining:
                    return
                wake.clear()
                await wake.wait()
                continue
            if self._concurrency >= _GROUP_COMMIT_CONCURRENCY and not self._draining:
                await self._gather_company()
            items, self._pending = self._pending, []
            batch, self._gathering = self._gathering, None
            assert batch is not None
            self._inflight = batch
            try:
                result = await io.submit(writer.write_batch, items)
            except Exception as exc:
                self._inflight = None
                self._halt(exc)
                batch.finish(exc)
                return
            # Records that arrived while this batch was written, or a batch of
            # several, mean callers are writing concurrently (see _gather_company).
            together = 1.0 if self._pending or result.records > 1 else 0.0
            self._concurrency += (together - self._concurrency) * _GROUP_COMMIT_SMOOTHING
            stats = self._stats
            stats.journal_batches += 1
            stats.journal_bytes += result.bytes
            stats.fsyncs += result.fsyncs
            stats.last_batch_records = result.records
            metrics.observe_journal_batch(result.records)
            if result.fsyncs:
                stats.last_fsync_seconds = result.fsync_seconds
                metrics.observe_journal_fsync(result.fsync_seconds)
            stats.durable_seq = writer.durable
            self._inflight = None
            batch.finish(None)

    async def _gather_company(self) -> None:
        """Let a batch wait briefly for more records before its fsync starts.

        An fsync costs the same for one record as for fifty (on the 2-core VM the
        benchmarks run on, ~100 us of CPU in the kernel, ~250-400 us of wall
        time), while a record costs a few microseconds. With one fsync in flight
        at a time (plain group commit), a batch holds what arrived during the
        previous fsync: about one record when the fsync is faster than the
        arrivals, so every reply pays a whole fsync. Waiting, as PostgreSQL's
        ``commit_delay`` and MySQL's ``binlog_group_commit_sync_delay`` do, lets
        concurrent callers share it. The wait only happens while callers are
        seen writing concurrently (``_concurrency``, a moving average of "this
        batch had company"): a lone caller's next record cannot arrive before its
        reply, so it is never delayed. The wait ends as soon as a gap passes
        with no new record, at the latest ``_GROUP_COMMIT_MAX_WAIT_S`` after the
        batch's first record, or at ``_GROUP_COMMIT_MAX_RECORDS``. The reply
        still follows the fsync of its record; only when that fsync starts moves.
        """
        assert self._loop is not None
        loop = self._loop
        deadline = self._first_pending_at + _GROUP_COMMIT_MAX_WAIT_S
        while not self._draining and len(self._pending) < _GROUP_COMMIT_MAX_RECORDS:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            seen = len(self._pending)
            await asyncio.sleep(min(_GROUP_COMMIT_GAP_S, remaining))
            if len(self._pending) == seen:
                return  # nobody else is writing right now

    def _halt(self, exc: BaseException) -> None:
        """The journal failed: refuse writes from now on, fail everyone waiting."""
        if self._failure is None:
            self._failure = exc
            log.critical(
                "journal write failed; the embedded store takes no more writes until restarted",
                exc_info=exc,
            )
        self._pending = []
        if self._gathering is not None:
            self._gathering.finish(exc)
            self._gathering = None

    # ------------------------------------------------------------------- sweeper

    async def _sweep_loop(self) -> None:
        interval = self.config.sweep_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                self._expire(self._clock())
                if (
                    self._writer is not None
                    and self._seq > self._snapshot_seq
                    and time.monotonic() - self._last_snapshot_at >= self.config.snapshot_interval_s
                ):
                    self._request_snapshot()
            except Exception:  # a sweep must never kill the sweeper
                log.exception("expiry sweep failed")

    async def expire_now(self) -> list[str]:
        """Run one sweep now; returns the expired reservation ids once journaled."""
        self._check_writable()
        expired, done = self._expire(self._clock())
        await self._durable(done)
        return expired

    # ----------------------------------------------------------------- snapshots

    def _request_snapshot(self) -> None:
        if self._phase != "running" or self._failure is not None:
            return
        if self._snapshot_task is None or self._snapshot_task.done():
            assert self._loop is not None
            self._snapshot_task = self._loop.create_task(self._snapshot_quietly(), name="embedded-snapshot")

    async def _snapshot_quietly(self) -> None:
        try:
            await self.snapshot()
        except Exception:
            log.exception("snapshot failed; the journal keeps everything, will retry later")

    async def snapshot(self) -> int | None:
        """Write a snapshot of the current state now.

        Returns its seq, or None when there is nothing new since the last one or
        the store is memory-only.
        """
        self._check_writable()
        if self._writer is None:
            return None
        assert self._snapshot_lock is not None and self._loop is not None and self._directory is not None
        async with self._snapshot_lock:
            seq = self._seq
            if seq == self._snapshot_seq:
                return None
            # Move the triggers first, so a failing snapshot is retried later, not
            # on every record.
            self._next_snapshot_seq = seq + self.config.snapshot_every_records
            self._last_snapshot_at = time.monotonic()
            started = time.perf_counter()
            fsync = self.config.fsync
            try:
                # The export is the one part on the loop: the ledger is not thread-safe.
                document = self._snapshot_document(seq)
                # The journal moves to a new segment at seq + 1; its batch fsyncs
                # the old segment, so once it is durable the journal holds every
                # record up to seq. The snapshot is published only after that, so
                # a snapshot never covers a record the journal could still lose.
                self._pending.append(Rotation(seq + 1))
                rotated = self._pending_batch()
                temp = await self._loop.run_in_executor(
                    self._snapshot_io,
                    functools.partial(write_snapshot_temp, self._directory, seq, document, fsync=fsync),
                )
                del document
                try:
                    await self._durable(rotated)
                    await self._loop.run_in_executor(
                        self._snapshot_io, functools.partial(publish_snapshot, temp, fsync=fsync)
                    )
                except BaseException:
                    with contextlib.suppress(OSError):
                        temp.unlink()
                    raise
                self._snapshot_seq = seq
                removed = await self._loop.run_in_executor(
                    self._snapshot_io,
                    functools.partial(prune, self._directory, self.config.snapshots_to_keep, fsync=fsync),
                )
            except BaseException:
                self._stats.snapshot_failures += 1
                raise
            self._stats.snapshots += 1
            self._stats.last_snapshot_seq = seq
            self._stats.last_snapshot_seconds = time.perf_counter() - started
            log.info(
                "snapshot at seq %d written in %.3f s; pruned %d files",
                seq,
                self._stats.last_snapshot_seconds,
                len(removed),
            )
            return seq

    # -------------------------------------------------------------------- network

    async def upsert_node(self, node: Node) -> Node:
        if self._nodes.get(node.id) == node:
            self._check_writable()
            await self._durable(self._journal_end())
            return node
        return await self._write("node", [_encode_node(node)], expire=False)

    async def upsert_channel(self, channel: Channel) -> Channel:
        if self._channels.get(channel.id) == channel:
            self._check_writable()
            await self._durable(self._journal_end())
            return channel
        return await self._write("channel", [_encode_channel(channel)], expire=False)

    async def list_nodes(self) -> list[Node]:
        self._check_open()
        return [node for _, node in sorted(self._nodes.items())]

    async def carrier_table(self) -> CarrierRecord:
        self._check_open()
        return self._carriers

    async def set_carrier_table(
        self, document: dict[str, Any] | None, *, expected_version: int | None = None
    ) -> CarrierRecord:
        self._check_writable()
        current = self._carriers
        if expected_version is not None and expected_version != current.version:
            raise EtagMismatch(
                f"the carrier table is at version {current.version}, not {expected_version}; "
                "read it again and reapply the change"
            )
        if document == current.document:
            await self._durable(self._journal_end())
            return current
        return await self._write("carriers", [document, current.version + 1], expire=False)

    async def released(self, days: Sequence[tuple[str, str]]) -> list[int]:
        self._check_open()
        return [self._released.get((node, day), 0) for node, day in days]

    async def list_channels(self) -> list[Channel]:
        self._check_open()
        return [channel for _, channel in sorted(self._channels.items())]

    # --------------------------------------------------------------------- supply

    async def apply_supply(self, ops: Sequence[SupplyOp]) -> list[StockChange]:
        encoded = [[int(op.kind), op.sku, op.node, int(op.value), int(op.version), op.event_id] for op in ops]
        return await self._write(
            "supply",
            [encoded],
            # A batch of duplicate events changed nothing; it still waits for the originals.
            changed_nothing=lambda changes: all(change.duplicate for change in changes),
        )

    async def stock(self, sku: str, node: str) -> StockLevel:
        self._check_open()
        self._expire_for_read()
        return self._ledger.stock(sku, node)

    # --------------------------------------------------------------- reservations

    async def reserve(self, request: ReserveRequest) -> Reservation:
        rid = request.reservation_id
        lines = [(line.sku, int(line.quantity), line.node) for line in request.lines]
        args = [rid, request.channel, lines, float(request.ttl_s), bool(request.allow_partial)]
        sourcing = request.sourcing
        if sourcing is not None:
            # Only then: a plain reserve's record stays as it always was.
            ranked = [None if c is None else list(c) for c in sourcing.candidates]
            args += [ranked, bool(sourcing.whole_lines), sourcing.context]
            if sourcing.backorder is not None:
                # Only then, too: older records have three sourcing fields.
                args.append([int(units) for units in sourcing.backorder])
        is_replay = self._ledger.has_reservation(rid)
        reservation: Reservation = await self._write(
            "reserve",
            args,
            changed_nothing=lambda _: is_replay,
            answer=lambda _: self._ledger.get_reservation(rid),
        )
        if not is_replay:
            metrics.record_held(reservation)
        return reservation

    async def commit(self, reservation_id: str) -> Reservation:
        return await self._transition("commit", [reservation_id])

    async def release(self, reservation_id: str, line_indexes: Sequence[int] | None) -> Reservation:
        indexes = None if line_indexes is None else [int(i) for i in line_indexes]
        return await self._transition("release", [reservation_id, indexes])

    async def fulfill(self, reservation_id: str, line_indexes: Sequence[int] | None) -> Reservation:
        indexes = None if line_indexes is None else [int(i) for i in line_indexes]
        return await self._transition("fulfill", [reservation_id, indexes])

    async def extend(self, reservation_id: str, ttl_s: float) -> Reservation:
        return await self._transition("extend", [reservation_id, float(ttl_s)])

    async def _transition(self, op: str, args: list[Any]) -> Reservation:
        # Replays of these (commit of a committed reservation...) are journaled
        # like any success: telling them apart would cost more than the record,
        # and replaying a no-op is a no-op.
        return await self._write(op, args, answer=lambda _: self._ledger.get_reservation(args[0]))

    async def get_reservation(self, reservation_id: str) -> Reservation:
        self._check_open()
        self._expire_for_read()
        return self._ledger.get_reservation(reservation_id)

    async def availability(
        self,
        skus: Sequence[str],
        channel: str | None,
        nodes: Sequence[str] | None,
        per_node: bool,
    ) -> list[SkuAvailability]:
        self._check_open()
        self._expire_for_read()
        return self._ledger.availability(skus, channel, nodes, per_node)

    # ------------------------------------------------------------- future supply

    async def upsert_inbound(self, records: Sequence[InboundSupply]) -> list[InboundOutcome]:
        self._check_writable()
        check_inbound_batch(records, self._nodes.__contains__)
        book = self._inbound
        outcomes: list[InboundOutcome] = []
        changed: list[str] = []
        for record in records:
            text = encode_inbound(record)
            old = book.get(record.id)
            if old is not None and encode_inbound(old) == text:
                outcomes.append(InboundOutcome.UNCHANGED)
                continue
            outcomes.append(InboundOutcome.CREATED if old is None else InboundOutcome.UPDATED)
            changed.append(text)
        if not changed:
            # A re-sent batch: nothing to journal, but its first delivery may
            # still be on its way to the disk.
            await self._durable(self._journal_end())
            return outcomes
        return await self._write("inbound", [changed], expire=False, answer=lambda _: outcomes)

    async def remove_inbound(self, ids: Sequence[str]) -> list[bool]:
        self._check_writable()
        present: dict[str, None] = {}  # ordered: the journal record lists them as asked
        found: list[bool] = []
        for supply_id in ids:
            # In order: an id repeated in the batch is gone by its second mention.
            there = self._inbound.get(supply_id) is not None and supply_id not in present
            found.append(there)
            if there:
                present[supply_id] = None
        if not present:
            await self._durable(self._journal_end())
            return found
        return await self._write("inbound_remove", [list(present)], expire=False, answer=lambda _: found)

    async def inbound(self, skus: Sequence[str]) -> list[InboundSupply]:
        self._check_open()
        book = self._inbound
        return [r for sku in dict.fromkeys(skus) for rs in book.for_sku(sku).values() for r in rs]

    async def list_inbound(
        self, *, sku: str | None = None, node: str | None = None, after: str | None = None, limit: int = 100
    ) -> InboundPage:
        self._check_open()
        # Sorted per call: inbound records are few next to rows (thousands of
        # open PO lines, not millions), and a listing is an operator's call.
        candidates = await self.inbound([sku]) if sku is not None else self._inbound
        return page_of(candidates, sku=sku, node=node, after=after, limit=limit)

    # ---------------------------------------------------------------------- audit

    async def audit(self) -> AuditReport:
        """The ledger's invariants, plus the store's own agreement with the ledger.

        Deliberately does not expire due holds first: a hold left more than a
        second past its expiry means the sweeper is not doing its job, and the
        ledger's audit reports exactly that.
        """
        self._check_open()
        now = self._clock()
        ledger = self._ledger
        violations = list(ledger.audit(now))
        for node_id in sorted(self._nodes):
            if not ledger.has_node(node_id):
                violations.append(f"node {node_id} is known to the store but not to the ledger")
        for channel_id, channel in sorted(self._channels.items()):
            if not ledger.has_channel(channel_id) or ledger.channel_nodes(channel_id) != channel.nodes:
                violations.append(f"channel {channel_id}: the ledger's nodes differ from the store's")
            elif ledger.channel_rules(channel_id) != _rules_by_node(channel, self._nodes):
                violations.append(
                    f"channel {channel_id}: the ledger's allocation rules differ from the store's"
                )
        if self._failure is not None:
            violations.append(f"journal failed, writes stopped: {self._failure!r}")
        return AuditReport(
            violations=tuple(violations),
            shortages=tuple(uncovered_shortages(ledger.shortages(), self._inbound.expected())),
            rows=ledger.row_count(),
            reservations=ledger.reservation_count(),
        )
