"""The embedded store's write-ahead journal: append-only, checksummed segment files.

File layout
-----------
A data directory holds segments named ``journal-<seq of first record, 20 digits>.wal``.
A segment is a run of records, each::

    u32 length | u32 crc32 | u64 seq | u64 durable | payload (length bytes)

little endian, 24 header bytes. ``crc32`` covers length, seq, durable and the
payload, so a torn or flipped header is caught like a torn payload. ``seq``
numbers records 1, 2, 3... across segments without gaps; a segment's name is the
seq of its first record, which is how recovery finds where to start after a
snapshot (and notices a missing segment). The payload is opaque here (the store
writes compact JSON).

``durable`` is the writer's commit watermark: the highest seq already fsynced
when the record's batch was written. It is what lets recovery tell a torn tail
from lost acknowledged data without guessing:

* Records are acknowledged only after the fsync of their whole batch, and a
  batch is written only after the previous one was fsynced.
* If record ``c`` is found invalid, either (a) the crash interrupted the write of
  ``c``'s batch: nothing from that batch was acknowledged, and whatever valid
  records follow on disk belong to the same batch, so their ``durable`` is below
  ``c`` (a disk may persist the pages of an unsynced write in any order, so valid
  records *after* a torn one are normal); or (b) ``c`` had been fsynced and was
  damaged later: then every later batch carries ``durable >= c``, and a segment
  is only started after the previous one was fsynced.
* So a valid record after ``c`` with ``durable >= c``, or any valid record in a
  later segment, proves (b): :class:`JournalCorruption` stops recovery loudly
  instead of silently dropping acknowledged operations. Otherwise it is (a):
  the tail from ``c`` on is reported (:class:`TornTail`, logged as a warning)
  and truncated away, never half-applied. (Damage to the very last batch *after*
  its fsync, with nothing written since, looks exactly like (a); like any
  write-ahead log, the end of the log is the first invalid record.)

Threading: :class:`JournalWriter` is used by one thread at a time (the store's
journal thread); :class:`JournalReader` runs during recovery, before the writer
exists.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import struct
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "HEADER_SIZE",
    "MAX_RECORD_BYTES",
    "BatchResult",
    "JournalCorruption",
    "JournalReader",
    "JournalWriter",
    "RecoveryError",
    "Rotation",
    "TornTail",
    "encode_record",
    "fsync_directory",
    "list_segments",
    "segment_name",
]

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<IIQQ")  # length, crc32, seq, durable
_CRC_PREFIX = struct.Struct("<IQQ")  # what the crc covers before the payload
HEADER_SIZE = _HEADER.size
# A sanity bound on one record (a 500-line reservation or a large supply batch is
# far below it); a bigger length field is garbage, not a record.
MAX_RECORD_BYTES = 64 * 1024 * 1024

_F_FULLFSYNC: int | None = getattr(fcntl, "F_FULLFSYNC", None)

_SEGMENT_RE = re.compile(r"^journal-(\d{20})\.wal$")


class RecoveryError(RuntimeError):
    """The data directory cannot be recovered safely: the store refuses to start."""


class JournalCorruption(RecoveryError):
    """The journal is damaged where acknowledged operations live, or has a gap."""


@dataclass(frozen=True, slots=True)
class TornTail:
    """An unacknowledged, partially written end of the journal, cut off on recovery."""

    segment: Path
    offset: int
    dropped_bytes: int
    first_seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class Rotation:
    """A marker in a write batch: close the active segment, start one at ``first_seq``."""

    first_seq: int


@dataclass(frozen=True, slots=True)
class BatchResult:
    records: int
    bytes: int
    fsyncs: int
    fsync_seconds: float


def segment_name(first_seq: int) -> str:
    return f"journal-{first_seq:020d}.wal"


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """The segments in ``directory``, ordered by the seq of their first record."""
    found = []
    for entry in os.scandir(directory):
        m = _SEGMENT_RE.match(entry.name)
        if m:
            found.append((int(m.group(1)), Path(entry.path)))
    found.sort()
    return found


def encode_record(seq: int, durable: int, payload: bytes) -> bytes:
    length = len(payload)
    crc = zlib.crc32(payload, zlib.crc32(_CRC_PREFIX.pack(length, seq, durable)))
    return _HEADER.pack(length, crc, seq, durable) + payload


def _record_at(buf: bytes, pos: int) -> tuple[int, int, int] | None:
    """``(seq, durable, end)`` of a valid record starting at ``pos``, else None."""
    if pos + HEADER_SIZE > len(buf):
        return None
    length, crc, seq, durable = _HEADER.unpack_from(buf, pos)
    end = pos + HEADER_SIZE + length
    if length > MAX_RECORD_BYTES or end > len(buf):
        return None
    body = memoryview(buf)[pos + HEADER_SIZE : end]
    if zlib.crc32(body, zlib.crc32(_CRC_PREFIX.pack(length, seq, durable))) != crc:
        return None
    return seq, durable, end


def _describe_invalid(buf: bytes, pos: int) -> str:
    if pos + HEADER_SIZE > len(buf):
        return f"short header ({len(buf) - pos} of {HEADER_SIZE} bytes)"
    length = _HEADER.unpack_from(buf, pos)[0]
    if length > MAX_RECORD_BYTES:
        return f"bad length {length}"
    if pos + HEADER_SIZE + length > len(buf):
        return f"short record ({len(buf) - pos - HEADER_SIZE} of {length} payload bytes)"
    return "checksum mismatch"


def _acknowledged_after(buf: bytes, bad: int, bad_seq: int) -> int | None:
    """Offset of a valid record after ``bad`` proving that record ``bad_seq`` had
    been made durable (the record's ``durable >= bad_seq``), or None.

    If only the payload at ``bad`` is damaged, its length still points at the
    next record: try that first. Otherwise resynchronize byte by byte; from a
    valid record, walk on record by record. This only runs on a damaged journal,
    and in the torn case the tail is at most one batch.
    """
    n = len(buf)
    pending: int | None = None
    if bad + HEADER_SIZE <= n:
        length = _HEADER.unpack_from(buf, bad)[0]
        if length <= MAX_RECORD_BYTES:
            pending = bad + HEADER_SIZE + length
    pos = bad + 1
    while True:
        if pending is not None:
            start, pending = pending, None
        elif pos + HEADER_SIZE <= n:
            start, pos = pos, pos + 1
        else:
            return None
        rec = _record_at(buf, start)
        if rec is None or rec[0] <= bad_seq:
            continue
        while rec is not None:
            _, durable, end = rec
            if durable >= bad_seq:
                return start
            start = end
            rec = _record_at(buf, start)
        pos = max(pos, start + 1)


class JournalReader:
    """Reads the records after ``after_seq``, checking framing, checksums and order.

    Iterate to get ``(seq, payload)`` in order; afterwards ``last_seq`` is the
    last valid seq seen (``after_seq`` if none) and ``torn`` describes a torn
    tail, if any. Nothing on disk changes until :meth:`finish`, so a replay that
    fails halfway leaves the files as they were.
    """

    def __init__(self, directory: Path, after_seq: int) -> None:
        self.directory = directory
        self.after_seq = after_seq
        self.last_seq = after_seq
        self.torn: TornTail | None = None
        self.segments_read: list[Path] = []
        self._stale: list[Path] = []
        self._empty: list[tuple[int, Path]] = []
        self._done = False

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        if self._done:
            raise RuntimeError("a JournalReader is iterated once")
        self._done = True
        segments = list_segments(self.directory)
        start = 0
        for i, (first, _) in enumerate(segments):
            if first <= self.after_seq + 1:
                start = i
        segments = segments[start:]
        if segments and segments[0][0] > self.after_seq + 1:
            raise JournalCorruption(
                f"journal starts at seq {segments[0][0]} but recovery needs it from "
                f"seq {self.after_seq + 1}: a segment is missing from {self.directory}"
            )
        expected: int | None = None  # seq the next record must carry
        for index, (first, path) in enumerate(segments):
            buf = path.read_bytes()
            self.segments_read.append(path)
            if not buf:
                # A rotation or a restart with no write since; only the last may be empty.
                self._empty.append((first, path))
                continue
            if self._empty:
                raise JournalCorruption(
                    f"{path.name}: follows empty segment {self._empty[-1][1].name}; "
                    "the journal directory was tampered with"
                )
            if expected is not None and first != expected:
                raise JournalCorruption(
                    f"{path.name}: segment should start at seq {expected}; a segment is missing"
                )
            expected = first
            pos = 0
            while pos < len(buf):
                rec = _record_at(buf, pos)
                if rec is None:
                    self._tail_or_fail(segments[index + 1 :], path, buf, pos, expected)
                    return
                seq, _, end = rec
                if seq != expected:
                    raise JournalCorruption(
                        f"{path.name} at offset {pos}: record seq {seq}, expected {expected}"
                    )
                if seq > self.after_seq:
                    yield seq, buf[pos + HEADER_SIZE : end]
                    self.last_seq = seq
                expected = seq + 1
                pos = end

    def _tail_or_fail(
        self, later: Sequence[tuple[int, Path]], path: Path, buf: bytes, pos: int, bad_seq: int
    ) -> None:
        reason = _describe_invalid(buf, pos)
        where = f"{path.name} at offset {pos} (seq {bad_seq}): {reason}"
        for _, later_path in later:
            if later_path.stat().st_size:
                raise JournalCorruption(
                    f"journal damaged in {where}, and later segment {later_path.name} holds "
                    "records: acknowledged operations would be lost; refusing to start"
                )
        proof = _acknowledged_after(buf, pos, bad_seq)
        if proof is not None:
            raise JournalCorruption(
                f"journal damaged in {where}, followed by a record written after it was "
                f"made durable (offset {proof}): acknowledged operations would be lost; "
                "refusing to start"
            )
        self.torn = TornTail(path, pos, len(buf) - pos, bad_seq, reason)
        self._stale = [p for _, p in later]
        self.last_seq = max(self.last_seq, bad_seq - 1)

    def finish(self, *, fsync: bool = True) -> None:
        """Cut off the torn tail and make everything read durable before new writes.

        The records just replayed may never have been fsynced (a killed process
        leaves them in the page cache); new records go to a new segment, so the
        old one is synced first or a power cut could lose it while keeping the
        newer one.
        """
        if self.torn is not None:
            log.warning(
                "journal: dropping a torn, unacknowledged tail: %d bytes from offset %d of %s "
                "(seq %d on: %s)",
                self.torn.dropped_bytes,
                self.torn.offset,
                self.torn.segment.name,
                self.torn.first_seq,
                self.torn.reason,
            )
            os.truncate(self.torn.segment, self.torn.offset)
            for stale in self._stale:
                stale.unlink()
        # Empty segments left behind are replaced by the writer's, named next_seq.
        next_seq = self.last_seq + 1
        for first, path in self._empty:
            if first != next_seq and path.exists():
                path.unlink()
        if fsync:
            for path in self.segments_read:
                if path.exists():
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        _sync(fd)
                    finally:
                        os.close(fd)
            fsync_directory(self.directory)


def _sync(fd: int) -> None:
    if _F_FULLFSYNC is not None:
        # On macOS fsync does not flush the drive's cache; F_FULLFSYNC does.
        fcntl.fcntl(fd, _F_FULLFSYNC)
    elif hasattr(os, "fdatasync"):
        # Appends change the size, which fdatasync flushes too; it skips the mtime.
        os.fdatasync(fd)
    else:  # pragma: no cover - non-Linux
        os.fsync(fd)


def fsync_directory(directory: Path) -> None:
    """Make file creations, renames and deletions in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class JournalWriter:
    """Appends batches to the active segment. One thread at a time.

    ``next_seq`` is the seq of the next record; the active segment is named by
    it (reused if it already exists, which recovery guarantees is empty).
    """

    def __init__(self, directory: Path, next_seq: int, *, fsync: bool = True) -> None:
        self.directory = directory
        self.fsync = fsync
        self.durable = next_seq - 1  # everything before next_seq is on disk (recovery synced it)
        self.segment: Path | None = None
        self._fd = -1
        self._open(next_seq)

    def _open(self, first_seq: int) -> None:
        self.segment = self.directory / segment_name(first_seq)
        self._fd = os.open(self.segment, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if self.fsync:
            fsync_directory(self.directory)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def write_batch(self, items: Sequence[tuple[int, bytes] | Rotation]) -> BatchResult:
        """Write ``(seq, payload)`` records and rotations in order, then fsync once.

        Returns only when everything is durable (or raises: then nothing of the
        batch may be considered durable, and the store stops taking writes).
        """
        chunks: list[bytes] = []
        records = nbytes = fsyncs = 0
        fsync_seconds = 0.0
        durable = self.durable
        last_seq = durable
        for item in items:
            if isinstance(item, Rotation):
                if chunks:
                    data = b"".join(chunks)
                    self._write(data)
                    nbytes += len(data)
                    chunks = []
                # The old segment is synced even if this batch wrote nothing to
                # it: recovery relies on every segment before the last being whole.
                if self.fsync:
                    t0 = time.perf_counter()
                    _sync(self._fd)
                    fsync_seconds = time.perf_counter() - t0
                    fsyncs += 1
                os.close(self._fd)
                self._fd = -1
                # Everything before the rotation is now on disk.
                self.durable = durable = last_seq
                self._open(item.first_seq)
                continue
            seq, payload = item
            chunks.append(encode_record(seq, durable, payload))
            last_seq = seq
            records += 1
        if chunks:
            data = b"".join(chunks)
            self._write(data)
            nbytes += len(data)
        if self.fsync and chunks:
            t0 = time.perf_counter()
            _sync(self._fd)
            fsync_seconds = time.perf_counter() - t0
            fsyncs += 1
        self.durable = last_seq
        return BatchResult(records, nbytes, fsyncs, fsync_seconds)

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            if self.fsync:
                _sync(self._fd)
        finally:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
