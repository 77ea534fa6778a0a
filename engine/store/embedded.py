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
   thread (group commit: while one fsync runs, the next batch gathers), then
   wakes the batch's waiters. The reply is sent only after that fsync.

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
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from engine.config import EmbeddedStoreConfig
from engine.core.errors import EngineError, StoreUnavailable
from engine.core.ledger_protocol import Ledger
from engine.core.types import (
    Channel,
    Node,
    NodeType,
    Reservation,
    ReserveRequest,
    SkuAvailability,
    StockChange,
    StockLevel,
    SupplyOp,
)
from engine.ledgers import make_ledger
from engine.store.base import AuditReport
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


def _encode(record: Sequence[Any]) -> bytes:
    return _ENCODER.encode(record).encode("utf-8")


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
    return data


def _decode_channel(data: dict[str, Any]) -> Channel:
    return Channel(**{**data, "nodes": tuple(data["nodes"])})


class EmbeddedStore:
    """The Store port over an in-process ledger, a journal and snapshots."""

    kind = "embedded"

    def __init__(self, config: EmbeddedStoreConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = MonotonicClock(clock)
        self._ledger: Ledger = make_ledger(config.ledger_impl)
        self._nodes: dict[str, Node] = {}
        self._channels: dict[str, Channel] = {}
        self._stats = EmbeddedStoreStats()
        self._phase = "new"  # new -> starting -> running -> closing -> closed
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._directory: Path | None = None
        self._lock_fd = -1
        # Journal, loop side. ``_seq`` is the newest record appended; records wait
        # in ``_pending`` for the flusher, whose batches resolve ``_pending_done``
        # (the batch being gathered) and ``_inflight_done`` (the batch being
        # written) with None, or with the exception that stopped the journal.
        self._writer: JournalWriter | None = None
        self._seq = 0
        self._pending: list[tuple[int, bytes] | Rotation] = []
        self._pending_done: asyncio.Future[BaseException | None] | None = None
        self._inflight_done: asyncio.Future[BaseException | None] | None = None
        self._wake: asyncio.Event | None = None
        self._draining = False
        self._io: ThreadPoolExecutor | None = None  # journal writes, recovery
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
            self._io = ThreadPoolExecutor(1, thread_name_prefix="journal")
            self._snapshot_io = ThreadPoolExecutor(1, thread_name_prefix="snapshot")
            try:
                # Nothing else touches the ledger until start() returns, so the
                # replay can run off the loop.
                await loop.run_in_executor(self._io, self._recover, directory)
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
                await self._loop.run_in_executor(self._io, self._writer.close)
        self._shutdown_threads()
        self._unlock_data_dir()
        self._phase = "closed"

    def _shutdown_threads(self) -> None:
        for executor in (self._io, self._snapshot_io):
            if executor is not None:
                executor.shutdown(wait=True)
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
            rid, channel, lines, ttl_s, allow_partial = args
            return ledger.reserve(
                rid, channel, [(sku, q, node) for sku, q, node in lines], ttl_s, allow_partial, now
            )
        if op == "commit":
            return ledger.commit(args[0], now)
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
            ledger.define_node(node.id)
            self._nodes[node.id] = node
            return node
        if op == "channel":
            channel = _decode_channel(args[0])
            ledger.define_channel(channel.id, channel.nodes)
            self._channels[channel.id] = channel
            return channel
        raise JournalCorruption(f"unknown journal operation {op!r}")

    # ------------------------------------------------------------------- helpers

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

    def _expire(self, now: float) -> tuple[list[str], asyncio.Future[BaseException | None] | None]:
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
        if self._writer is None:
            return expired, None  # memory only: nothing to journal
        return expired, self._enqueue(_encode(["expire", now, expired]))

    def _enqueue(self, payload: bytes) -> asyncio.Future[BaseException | None] | None:
        """Queue a record of an applied mutation; returns what resolves once durable."""
        if self._writer is None:
            return None  # memory only
        self._seq += 1
        self._pending.append((self._seq, payload))
        self._stats.journal_records += 1
        self._stats.appended_seq = self._seq
        if self._seq >= self._next_snapshot_seq:
            self._request_snapshot()
        return self._pending_batch()

    def _pending_batch(self) -> asyncio.Future[BaseException | None]:
        done = self._pending_done
        if done is None:
            assert self._loop is not None and self._wake is not None
            done = self._pending_done = self._loop.create_future()
            self._wake.set()
        return done

    def _journal_end(self) -> asyncio.Future[BaseException | None] | None:
        """What resolves once everything appended so far is durable."""
        return self._pending_done or self._inflight_done

    async def _durable(self, done: asyncio.Future[BaseException | None] | None) -> None:
        if done is not None:
            # shield: a cancelled caller must not cancel the batch for everyone else.
            error = await asyncio.shield(done)
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
        assert self._loop is not None and self._wake is not None and self._writer is not None
        loop, wake, writer = self._loop, self._wake, self._writer
        while True:
            if not self._pending:
                if self._draining:
                    return
                wake.clear()
                await wake.wait()
                continue
            items, self._pending = self._pending, []
            done, self._pending_done = self._pending_done, None
            assert done is not None
            self._inflight_done = done
            try:
                result = await loop.run_in_executor(self._io, writer.write_batch, items)
            except Exception as exc:
                self._inflight_done = None
                self._halt(exc)
                done.set_result(exc)
                return
            stats = self._stats
            stats.journal_batches += 1
            stats.journal_bytes += result.bytes
            stats.fsyncs += result.fsyncs
            stats.last_batch_records = result.records
            if result.fsyncs:
                stats.last_fsync_seconds = result.fsync_seconds
            stats.durable_seq = writer.durable
            self._inflight_done = None
            done.set_result(None)

    def _halt(self, exc: BaseException) -> None:
        """The journal failed: refuse writes from now on, fail everyone waiting."""
        if self._failure is None:
            self._failure = exc
            log.critical(
                "journal write failed; the embedded store takes no more writes until restarted",
                exc_info=exc,
            )
        self._pending = []
        if self._pending_done is not None:
            self._pending_done.set_result(exc)
            self._pending_done = None

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
        is_replay = self._ledger.has_reservation(rid)
        return await self._write(
            "reserve",
            args,
            changed_nothing=lambda _: is_replay,
            answer=lambda _: self._ledger.get_reservation(rid),
        )

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
        if self._failure is not None:
            violations.append(f"journal failed, writes stopped: {self._failure!r}")
        return AuditReport(
            violations=tuple(violations),
            shortages=tuple(ledger.shortages()),
            rows=ledger.row_count(),
            reservations=ledger.reservation_count(),
        )
