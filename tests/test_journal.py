"""The journal and snapshot file formats, on real files: framing, checksums,
torn tails, corruption that must stop recovery, rotation and retention."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import pytest

from engine.store.clock import MonotonicClock
from engine.store.journal import (
    HEADER_SIZE,
    JournalCorruption,
    JournalReader,
    JournalWriter,
    Rotation,
    encode_record,
    list_segments,
    segment_name,
)
from engine.store.snapshot import (
    SnapshotCorrupt,
    list_snapshots,
    load_snapshot,
    prune,
    publish_snapshot,
    remove_temporaries,
    snapshot_name,
    write_snapshot_temp,
)

_HEADER = struct.Struct("<IIQQ")


def payload(seq: int) -> bytes:
    return f'["op",{seq},"record number {seq}"]'.encode()


def write_batches(directory: Path, batches: list[list[int]], first: int = 1) -> JournalWriter:
    """One ``write_batch`` (one fsync) per inner list of seqs."""
    writer = JournalWriter(directory, first)
    for batch in batches:
        writer.write_batch([(seq, payload(seq)) for seq in batch])
    return writer


def read_all(directory: Path, after: int = 0) -> tuple[list[int], JournalReader]:
    reader = JournalReader(directory, after)
    seqs = []
    for seq, body in reader:
        assert body == payload(seq)
        seqs.append(seq)
    return seqs, reader


def offsets(path: Path) -> list[tuple[int, int]]:
    """``(offset, payload length)`` of every record in a well-formed segment."""
    data = path.read_bytes()
    out, pos = [], 0
    while pos < len(data):
        length = _HEADER.unpack_from(data, pos)[0]
        out.append((pos, length))
        pos += HEADER_SIZE + length
    return out


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def only_segment(directory: Path) -> Path:
    segments = list_segments(directory)
    assert len(segments) == 1
    return segments[0][1]


# ------------------------------------------------------------------ round trips


def test_records_come_back_in_order_across_batches_and_segments(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path, 1)
    writer.write_batch([(1, payload(1)), (2, payload(2))])
    writer.write_batch([(3, payload(3)), Rotation(4), (4, payload(4))])
    writer.write_batch([Rotation(5)])
    writer.write_batch([(5, payload(5))])
    writer.close()

    assert [first for first, _ in list_segments(tmp_path)] == [1, 4, 5]
    seqs, reader = read_all(tmp_path)
    assert seqs == [1, 2, 3, 4, 5]
    assert reader.last_seq == 5
    assert reader.torn is None


def test_reading_after_a_snapshot_starts_at_the_segment_holding_the_next_record(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path, 1)
    writer.write_batch([(1, payload(1)), (2, payload(2)), Rotation(3), (3, payload(3)), (4, payload(4))])
    writer.close()
    # Damage the first segment: a reader that needs nothing from it must not open it.
    flip(tmp_path / segment_name(1), HEADER_SIZE + 2)

    seqs, reader = read_all(tmp_path, after=3)
    assert seqs == [4]
    assert reader.last_seq == 4
    seqs, _ = read_all(tmp_path, after=4)
    assert seqs == []


def test_batch_result_counts_one_fsync_per_batch(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path, 1)
    result = writer.write_batch([(seq, payload(seq)) for seq in range(1, 101)])
    assert (result.records, result.fsyncs) == (100, 1)
    assert result.bytes == sum(len(encode_record(s, 0, payload(s))) for s in range(1, 101))
    assert writer.durable == 100
    writer.close()


def test_each_record_carries_the_watermark_of_what_was_durable_before_its_batch(tmp_path: Path) -> None:
    write_batches(tmp_path, [[1, 2], [3], [4, 5]]).close()
    data = only_segment(tmp_path).read_bytes()
    watermarks = [_HEADER.unpack_from(data, off)[3] for off, _ in offsets(only_segment(tmp_path))]
    assert watermarks == [0, 0, 2, 3, 3]


def test_a_restarted_writer_continues_in_a_new_segment(tmp_path: Path) -> None:
    write_batches(tmp_path, [[1, 2]]).close()
    write_batches(tmp_path, [[3]], first=3).close()
    assert [first for first, _ in list_segments(tmp_path)] == [1, 3]
    assert read_all(tmp_path)[0] == [1, 2, 3]


# --------------------------------------------------------------------- torn tails


@pytest.mark.parametrize("cut", ["mid-header", "mid-payload", "last-byte"])
def test_a_torn_last_record_is_reported_and_truncated(
    tmp_path: Path, cut: str, caplog: pytest.LogCaptureFixture
) -> None:
    write_batches(tmp_path, [[1], [2], [3]]).close()
    segment = only_segment(tmp_path)
    last, length = offsets(segment)[-1]
    size = segment.stat().st_size
    keep = {"mid-header": last + 10, "mid-payload": last + HEADER_SIZE + length // 2, "last-byte": size - 1}
    with segment.open("r+b") as f:
        f.truncate(keep[cut])

    seqs, reader = read_all(tmp_path)
    assert seqs == [1, 2]
    assert reader.torn is not None
    assert (reader.torn.offset, reader.torn.first_seq) == (last, 3)
    with caplog.at_level(logging.WARNING, logger="engine.store.journal"):
        reader.finish()
    assert "torn" in caplog.text
    assert segment.stat().st_size == last

    # The journal goes on from there, and reads back whole.
    write_batches(tmp_path, [[3], [4]], first=3).close()
    assert read_all(tmp_path)[0] == [1, 2, 3, 4]


@pytest.mark.parametrize("where", ["length", "crc", "seq", "payload"])
def test_a_damaged_last_record_is_dropped_like_a_torn_one(tmp_path: Path, where: str) -> None:
    write_batches(tmp_path, [[1], [2], [3]]).close()
    segment = only_segment(tmp_path)
    last, _ = offsets(segment)[-1]
    flip(segment, last + {"length": 0, "crc": 5, "seq": 8, "payload": HEADER_SIZE + 3}[where])

    seqs, reader = read_all(tmp_path)
    assert seqs == [1, 2]
    assert reader.torn is not None and reader.torn.first_seq == 3
    reader.finish()
    assert read_all(tmp_path)[0] == [1, 2]


def test_garbage_after_the_last_record_is_a_torn_tail(tmp_path: Path) -> None:
    write_batches(tmp_path, [[1], [2]]).close()
    segment = only_segment(tmp_path)
    size = segment.stat().st_size
    with segment.open("ab") as f:
        f.write(b"\0" * 4096)  # what a crash can leave after an extended file size

    seqs, reader = read_all(tmp_path)
    assert seqs == [1, 2]
    assert reader.torn is not None and reader.torn.dropped_bytes == 4096
    reader.finish()
    assert segment.stat().st_size == size


def test_damage_inside_the_last_unsynced_batch_is_a_torn_tail(tmp_path: Path) -> None:
    """A crash during a batch's write can persist its pages in any order, so valid
    records may follow a torn one; none of the batch was acknowledged, and their
    watermark shows it: the batch is dropped, recovery goes on."""
    write_batches(tmp_path, [[1], [2, 3, 4, 5]]).close()
    segment = only_segment(tmp_path)
    flip(segment, offsets(segment)[2][0] + HEADER_SIZE + 1)  # record 3 of the batch 2..5

    seqs, reader = read_all(tmp_path)
    assert seqs == [1, 2]
    assert reader.torn is not None and reader.torn.first_seq == 3
    reader.finish()
    assert read_all(tmp_path)[0] == [1, 2]


# ---------------------------------------------------------------- fatal corruption


@pytest.mark.parametrize("where", ["payload", "length", "crc"])
def test_damage_followed_by_later_batches_stops_recovery(tmp_path: Path, where: str) -> None:
    write_batches(tmp_path, [[1], [2], [3], [4], [5]]).close()
    segment = only_segment(tmp_path)
    before = segment.read_bytes()
    third = offsets(segment)[2][0]
    flip(segment, third + {"payload": HEADER_SIZE + 2, "length": 2, "crc": 4}[where])

    with pytest.raises(JournalCorruption, match="acknowledged operations would be lost"):
        read_all(tmp_path)
    # Nothing was cut off: the evidence stays for an operator.
    assert len(segment.read_bytes()) == len(before)


def test_damage_in_an_earlier_segment_stops_recovery(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path, 1)
    writer.write_batch([(1, payload(1)), (2, payload(2)), Rotation(3), (3, payload(3))])
    writer.close()
    first = tmp_path / segment_name(1)
    flip(first, offsets(first)[-1][0] + HEADER_SIZE)

    with pytest.raises(JournalCorruption, match="later segment"):
        read_all(tmp_path)


def test_a_missing_segment_stops_recovery(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path, 1)
    writer.write_batch([(1, payload(1)), Rotation(2), (2, payload(2)), Rotation(3), (3, payload(3))])
    writer.close()
    (tmp_path / segment_name(2)).unlink()

    with pytest.raises(JournalCorruption, match="missing"):
        read_all(tmp_path)


def test_a_journal_that_starts_after_the_snapshot_stops_recovery(tmp_path: Path) -> None:
    write_batches(tmp_path, [[5], [6]], first=5).close()
    with pytest.raises(JournalCorruption, match="missing"):
        read_all(tmp_path, after=2)


def test_a_record_out_of_sequence_stops_recovery(tmp_path: Path) -> None:
    segment = tmp_path / segment_name(1)
    segment.write_bytes(encode_record(1, 0, payload(1)) + encode_record(3, 1, payload(3)))
    with pytest.raises(JournalCorruption, match="expected 2"):
        read_all(tmp_path)


# ------------------------------------------------------------------------ snapshots


def test_snapshot_round_trip(tmp_path: Path) -> None:
    document = {"seq": 7, "format": 1, "data": ["ä", 1.5, None]}
    temp = write_snapshot_temp(tmp_path, 7, document)
    assert list_snapshots(tmp_path) == []  # not visible until published
    final = publish_snapshot(temp)
    assert final.name == snapshot_name(7)
    assert list_snapshots(tmp_path) == [(7, final)]
    assert load_snapshot(final) == document


@pytest.mark.parametrize("damage", ["flip-body", "flip-header", "truncate", "wrong-seq"])
def test_a_damaged_snapshot_is_refused(tmp_path: Path, damage: str) -> None:
    final = publish_snapshot(write_snapshot_temp(tmp_path, 7, {"seq": 7, "x": list(range(100))}))
    if damage == "flip-body":
        flip(final, final.stat().st_size - 5)
    elif damage == "flip-header":
        flip(final, 9)
    elif damage == "truncate":
        with final.open("r+b") as f:
            f.truncate(final.stat().st_size - 1)
    else:
        final = final.rename(tmp_path / snapshot_name(8))
    with pytest.raises(SnapshotCorrupt):
        load_snapshot(final)


def test_leftover_temporaries_are_removed(tmp_path: Path) -> None:
    write_snapshot_temp(tmp_path, 3, {"seq": 3})
    assert [p.name for p in remove_temporaries(tmp_path)] == [snapshot_name(3) + ".tmp"]
    assert list(tmp_path.iterdir()) == []


def test_prune_keeps_two_snapshots_and_the_journal_since_the_older(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path, 1)
    writer.write_batch([(1, payload(1)), (2, payload(2)), Rotation(3), (3, payload(3))])
    publish_snapshot(write_snapshot_temp(tmp_path, 2, {"seq": 2}))
    assert prune(tmp_path, keep=2) == []  # one snapshot: the journal from seq 1 is its fallback

    writer.write_batch([(4, payload(4)), Rotation(5), (5, payload(5))])
    publish_snapshot(write_snapshot_temp(tmp_path, 4, {"seq": 4}))
    removed = prune(tmp_path, keep=2)
    assert [p.name for p in removed] == [segment_name(1)]

    writer.write_batch([(6, payload(6)), Rotation(7), (7, payload(7))])
    publish_snapshot(write_snapshot_temp(tmp_path, 6, {"seq": 6}))
    removed = prune(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == sorted([snapshot_name(2), segment_name(3)])
    writer.close()

    assert [seq for seq, _ in list_snapshots(tmp_path)] == [4, 6]
    # Both remaining snapshots can still be recovered from.
    assert read_all(tmp_path, after=4)[0] == [5, 6, 7]
    assert read_all(tmp_path, after=6)[0] == [7]


# --------------------------------------------------------------------------- clock


def test_the_store_clock_never_goes_backwards() -> None:
    times = iter([10.0, 12.0, 11.0, 12.5, 3.0])
    clock = MonotonicClock(lambda: next(times))
    assert [clock() for _ in range(5)] == [10.0, 12.0, 12.0, 12.5, 12.5]
    clock.advance(20.0)
    assert clock.last == 20.0
