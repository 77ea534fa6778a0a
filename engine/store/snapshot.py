"""Checksummed snapshot files of the embedded store, and the retention of old files.

A snapshot is ``snapshot-<seq, 20 digits>.snap``: the whole state after journal
record ``seq``. The file is::

    8 bytes magic "INVSNAP1" | u32 crc32 of the body | u64 body length | body

with a compact JSON body (a document the store builds; opaque here apart from its
``seq``). It is written to ``.tmp``, fsynced, renamed into place and the directory
fsynced, so a crash leaves either the old set of snapshots or the new one, never a
half file under a snapshot name; a damaged one is still caught by the checksum.

Retention (:func:`prune`) keeps the newest ``keep`` snapshots (two by default)
and every journal segment with a record after the oldest one kept. So if the
newest snapshot turns out damaged, recovery can fall back to the previous one
and replay the journal from there. With fewer than ``keep`` snapshots nothing is
pruned: then the journal still goes back to the first record.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import struct
import zlib
from pathlib import Path
from typing import Any

from engine.store.journal import fsync_directory, list_segments

__all__ = [
    "SnapshotCorrupt",
    "discard_snapshot",
    "list_snapshots",
    "load_snapshot",
    "prune",
    "publish_snapshot",
    "remove_temporaries",
    "snapshot_name",
    "write_snapshot_temp",
]

MAGIC = b"INVSNAP1"
_HEADER = struct.Struct("<8sIQ")  # magic, crc32 of the body, body length
_SNAPSHOT_RE = re.compile(r"^snapshot-(\d{20})\.snap$")
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)


class SnapshotCorrupt(Exception):
    """A snapshot file failed its checks; recovery falls back to an older one."""


def snapshot_name(seq: int) -> str:
    return f"snapshot-{seq:020d}.snap"


def list_snapshots(directory: Path) -> list[tuple[int, Path]]:
    """Published snapshots, oldest first."""
    found = []
    for entry in os.scandir(directory):
        m = _SNAPSHOT_RE.match(entry.name)
        if m:
            found.append((int(m.group(1)), Path(entry.path)))
    found.sort()
    return found


def remove_temporaries(directory: Path) -> list[Path]:
    """Delete ``.tmp`` leftovers of snapshots a crash interrupted."""
    removed = []
    for entry in os.scandir(directory):
        if entry.name.endswith(".tmp"):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def write_snapshot_temp(directory: Path, seq: int, document: dict[str, Any], *, fsync: bool = True) -> Path:
    """Serialize and write ``document`` to a temporary file, fsynced; returns its path.

    Runs in a worker thread: the document must not be shared with the ledger.
    """
    body = _ENCODER.encode(document).encode("utf-8")
    temp = directory / (snapshot_name(seq) + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        data = memoryview(_HEADER.pack(MAGIC, zlib.crc32(body), len(body)) + body)
        while data:
            data = data[os.write(fd, data) :]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    return temp


def publish_snapshot(temp: Path, *, fsync: bool = True) -> Path:
    """Atomically give a written temporary snapshot its final name."""
    final = temp.with_name(temp.name.removesuffix(".tmp"))
    os.replace(temp, final)
    if fsync:
        fsync_directory(final.parent)
    return final


def load_snapshot(path: Path) -> dict[str, Any]:
    """Read and verify a snapshot; raises SnapshotCorrupt if anything is off."""
    m = _SNAPSHOT_RE.match(path.name)
    if not m:
        raise SnapshotCorrupt(f"{path.name} is not a snapshot file name")
    data = path.read_bytes()
    if len(data) < _HEADER.size:
        raise SnapshotCorrupt(f"{path.name}: truncated header ({len(data)} bytes)")
    magic, crc, length = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SnapshotCorrupt(f"{path.name}: bad magic {magic!r}")
    body = memoryview(data)[_HEADER.size :]
    if len(body) != length:
        raise SnapshotCorrupt(f"{path.name}: body is {len(body)} bytes, header says {length}")
    if zlib.crc32(body) != crc:
        raise SnapshotCorrupt(f"{path.name}: checksum mismatch")
    try:
        document = json.loads(bytes(body))
    except ValueError as exc:
        raise SnapshotCorrupt(f"{path.name}: undecodable body: {exc}") from None
    if not isinstance(document, dict) or document.get("seq") != int(m.group(1)):
        raise SnapshotCorrupt(f"{path.name}: body does not describe seq {int(m.group(1))}")
    return document


def discard_snapshot(path: Path) -> Path:
    """Rename a damaged snapshot out of the way (kept for inspection, never loaded)."""
    target = path.with_name(path.name + ".corrupt")
    os.replace(path, target)
    fsync_directory(path.parent)
    return target


def prune(directory: Path, keep: int, *, fsync: bool = True) -> list[Path]:
    """Delete snapshots beyond the newest ``keep`` and the segments none of them needs.

    Call only once the newest snapshot is published, and the journal rotation
    that went with it is durable.
    """
    if keep < 1:
        raise ValueError("keep at least one snapshot")
    snapshots = list_snapshots(directory)
    if len(snapshots) < keep:
        return []
    removed = [path for _, path in snapshots[:-keep]]
    oldest_kept = snapshots[-keep][0]
    segments = list_segments(directory)
    # A segment's records end where the next segment begins; the last segment
    # (the active one) is never removed.
    for (_, path), (next_first, _) in itertools.pairwise(segments):
        if next_first <= oldest_kept + 1:
            removed.append(path)
    for path in removed:
        os.unlink(path)
    if removed and fsync:
        fsync_directory(directory)
    return removed
