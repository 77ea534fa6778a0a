"""Follow the shards' change feeds into this process's availability view.

Each shard's ``feed`` stream carries the new absolute counters of every row a
script changed (format in :mod:`engine.store.redis.keys`). The follower keeps
the last id it applied per shard and reads on from there:

- standalone Redis: one blocking ``XREAD`` over every shard's stream, so a
  change reaches the view as soon as it is written and an idle follower costs
  one command per ``block_ms``. Under load that command is sent many times a
  second with 2 x ``shards`` arguments, and redis-py re-encoding them each
  time cost more CPU than everything else a Reserve does (measured: 37% of a
  busy engine process). So the follower keeps the command encoded (RESP), on
  a connection of its own (a :class:`~engine.store.redis.resp.RespConnection`,
  or a redis-py connection where there is none: TLS), and re-encodes only the
  position of a shard that moved;
  A busy feed is read at most once per ``busy_interval_s``: one such
  ``XREAD`` costs Redis about the same whatever it brings (it looks at every
  shard's stream, and blocks on all of them when none has news: 360 us per
  call measured with ``INFO commandstats`` under a Reserve load, more than
  the reserve scripts' own time), and back to back it ran about once per
  four Reserves. Waiting a few ms between rounds lets one read bring the
  changes of many scripts; an idle feed still blocks, so a lone change
  reaches the view as soon as it is written;
- Redis Cluster: streams of different slots cannot share one ``XREAD``, so a
  pipeline of one non-blocking ``XREAD`` per shard every ``interval_s`` (the
  client splits it per master). Through redis-py such a round of 256
  commands took about 40 ms of the engine's CPU, so (``master_timeout_s``
  set) the follower instead keeps a connection of its own to each master
  (:class:`~engine.store.redis.resp.RespConnection`) and sends each its
  shards' reads as one pipeline, all masters at once. Which master serves a
  shard comes from redis-py's slot map; a redirection (the slot moved) or a
  lost master fails the round like any error, and the next round reads the
  topology again. A round costs the same whatever it brings, so a quiet feed
  is polled less and less often: the pause doubles after each round that
  brought nothing, up to ``idle_interval_s``, and is back to ``interval_s``
  after the first round that brings a change.

Gaps. Streams are trimmed to about ``feed_maxlen`` entries. Entries are only
ever trimmed from the head, so entries this follower has not read can only be
lost if more than ``maxlen`` arrived since its last read, and then its next
read returns a full batch. A full batch (and, as a backstop, every shard once
per ``check_every_s``, and every shard after a lost connection) is checked
with ``XINFO STREAM``: if its oldest entry is newer than our position (or it is
empty but has had entries added since), entries we never read were trimmed; if
its last id went backwards, Redis lost data. Either way the shard is resynced
from its rows, which ``read_shard`` returns together with the feed's last id
in one atomic script. Entries read again after a resync are harmless: they
carry absolute values.

The view is marked caught up after a round in which every shard was read to
its end; while the connection is down it goes stale (and so refuses nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.exceptions import RedisError

from engine.store.redis.keys import KeySpace
from engine.store.redis.resp import Endpoint, RespConnection, pack
from engine.store.view import AvailabilityView

__all__ = ["IDLE_INTERVAL_S", "FeedFollower", "Row", "ShardReader"]

# The longest pause between two polls of a quiet Cluster feed (see the module docstring).
IDLE_INTERVAL_S = 0.16

log = logging.getLogger("engine.store.redis.feed")

# (sku, node, on_hand, reserved, committed, safety_stock, version, channel_used by channel)
Row = tuple[str, str, int, int, int, int, int, dict[str, int]]
# read_shard(shard) -> (rows, last feed id at that moment), atomically.
ShardReader = Callable[[int], Awaitable[tuple[Sequence[Row], str]]]

ZERO_ID = "0-0"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bulk(value: str) -> bytes:
    """One RESP bulk string."""
    data = value.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _id_tuple(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


class FeedFollower:
    def __init__(
        self,
        client: Any,
        keys: KeySpace,
        view: AvailabilityView,
        read_shard: ShardReader,
        *,
        cluster: bool,
        batch: int = 1000,
        block_ms: int = 100,
        interval_s: float = 0.02,
        idle_interval_s: float = IDLE_INTERVAL_S,
        busy_interval_s: float = 0.005,
        check_every_s: float = 1.0,
        resp: RespConnection | None = None,
        master_timeout_s: float | None = None,
    ) -> None:
        """``resp``: the follower's own connection on standalone Redis (None: one from redis-py's pool).

        ``interval_s``, ``idle_interval_s``: the Cluster's polling interval
        while changes come, and the longest it grows to while none do;
        ``busy_interval_s``: on standalone Redis, the least time between the
        starts of two reads while they bring changes. ``master_timeout_s``:
        on a Cluster, read over connections of the follower's own to each
        master, with this timeout (None: through redis-py).
        """
        self._client = client
        self._resp = resp
        self._keys = keys
        self._view = view
        self._read_shard = read_shard
        self._cluster = cluster
        self._batch = batch
        self._block_ms = block_ms
        self._interval_s = interval_s
        self._idle_interval_s = idle_interval_s
        self._poll_s = interval_s  # the Cluster's pause after the current round
        self._busy_interval_s = busy_interval_s
        self._check_every_s = check_every_s
        self._streams = [keys.feed(k) for k in range(keys.shards)]
        self._shard_of = {name: k for k, name in enumerate(self._streams)}
        self._last: list[str] = [ZERO_ID] * keys.shards
        # XREAD COUNT <batch> BLOCK <ms> STREAMS <every stream> <every last id>, encoded:
        # the head and the stream names once, each id when it changes (standalone only).
        parts = ["XREAD", "COUNT", str(batch), "BLOCK", str(block_ms), "STREAMS"]
        self._xread_head = b"*%d\r\n" % (len(parts) + 2 * keys.shards) + b"".join(
            _bulk(x) for x in parts + self._streams
        )
        self._encoded_last = [_bulk(ZERO_ID)] * keys.shards
        self._xinfo = [pack("XINFO", "STREAM", name) for name in self._streams]
        self._conn: Any = None
        self._master_timeout_s = master_timeout_s
        # On a Cluster, with master_timeout_s: each master's connection and shards.
        self._masters: list[tuple[RespConnection, list[int]]] | None = None
        self._topology_suspect = False  # read the slot map again before regrouping
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._last_check = 0.0
        self.entries_applied = 0
        self.gaps = 0
        self.rounds = 0  # reads of the feed (every shard's stream once)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load every shard (so the view starts complete), then follow in the background."""
        started = time.monotonic()
        for shard in range(self._keys.shards):
            await self.resync(shard)
        self._view.caught_up(started)
        self._last_check = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="feed-follower")

    async def close(self) -> None:
        # The flag as well as the cancel: on Python 3.11, redis-py's use of
        # asyncio.wait_for can swallow a cancellation, and the loop must end anyway.
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})
            self._task = None
        await self._drop_connection()
        if self._resp is not None:
            await self._resp.close()

    async def resync(self, shard: int) -> None:
        rows, last_id = await self._read_shard(shard)
        view = self._view
        for sku, node, on_hand, reserved, committed, safety, version, used in rows:
            # Every channel's counter: the ones Redis no longer has are 0 now.
            view.apply(sku, node, on_hand, reserved, committed, safety, version, view.full_usage(used))
        self._set_last(shard, last_id or ZERO_ID)
        self._view.resyncs += 1

    def _set_last(self, shard: int, stream_id: str) -> None:
        self._last[shard] = stream_id
        self._encoded_last[shard] = _bulk(stream_id)

    # ------------------------------------------------------------ following

    async def _run(self) -> None:
        backoff = 0.05
        check_all = False
        while not self._closing:
            try:
                if check_all:
                    await self.check_gaps(range(self._keys.shards))
                    check_all = False
                    self._last_check = time.monotonic()
                # Everything acknowledged before this moment is in what the round reads.
                started = time.monotonic()
                applied = self.entries_applied
                full = await (self._round_cluster() if self._cluster else self._round_standalone())
                self.rounds += 1
                if full:
                    await self.check_gaps(full)
                elif time.monotonic() - self._last_check >= self._check_every_s:
                    await self.check_gaps(range(self._keys.shards))
                    self._last_check = time.monotonic()
                    self._view.caught_up(started)
                else:
                    self._view.caught_up(started)
                backoff = 0.05
                if not self._cluster and self.entries_applied != applied and not full:
                    # Busy: let the next read bring the changes of many scripts.
                    pause = started + self._busy_interval_s - time.monotonic()
                    if pause > 0:
                        await asyncio.sleep(pause)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._closing:
                    return
                # Refuse nothing on a view we cannot keep current; look for gaps once back.
                self._view.mark_stale()
                await self._drop_connection()
                check_all = True
                if isinstance(exc, RedisError | OSError):
                    log.warning("change feed unavailable (%s); retrying in %.2f s", exc, backoff)
                else:  # a bug or a malformed entry: keep following, loudly
                    log.exception("change feed follower failed; retrying in %.2f s", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _round_standalone(self) -> list[int]:
        command = self._xread_head + b"".join(self._encoded_last)
        if self._resp is not None:
            # The block time plus the usual timeout: an idle feed is no error.
            wait_s = self._block_ms / 1000 + self._resp.timeout_s
            [reply] = await self._resp.execute([command], timeout_s=wait_s)
        else:
            if self._conn is None:
                # A connection of the client's pool, kept for the follower's life: a
                # blocking read would hold any connection it borrowed anyway.
                self._conn = await self._client.connection_pool.get_connection()
            await self._conn.send_packed_command(command)
            reply = await self._conn.read_response(timeout=self._block_ms / 1000 + self._timeout_s())
        return self._apply_raw(reply)

    def _apply_raw(self, reply: Any) -> list[int]:
        """Apply an XREAD reply read raw; returns the shards whose batch was full (maybe behind)."""
        if isinstance(reply, Exception):
            raise reply
        # Raw reply: {stream: [[id, [field, value, ...]], ...], ...} or nil.
        full: list[int] = []
        view = self._view
        # RESP3 (redis-py's default from version 8) answers a map, RESP2 an array of pairs.
        streams = reply.items() if isinstance(reply, dict) else reply or ()
        for name, entries in streams:
            shard = self._shard_of[name]
            last = None
            for entry_id, f in entries:
                # Field order is fixed by the scripts' XADD (see keys.py): sku node oh rs cm ss v.
                if f[0] != "sku" or f[12] != "v":
                    raise ValueError(f"unexpected change feed entry in shard {shard}: {f!r}")
                view.apply(
                    f[1], f[3], int(f[5]), int(f[7]), int(f[9]), int(f[11]), int(f[13]),
                    # Then `u:<channel>`, value per channel counter the change moved.
                    {f[i][2:]: int(f[i + 1]) for i in range(14, len(f), 2)} if len(f) > 14 else None,
                )  # fmt: skip
                last = entry_id
            if last is not None:
                self._set_last(shard, last)
                self.entries_applied += len(entries)
            if len(entries) >= self._batch:
                full.append(shard)
        return full

    def _timeout_s(self) -> float:
        timeout = self._conn.socket_timeout if self._conn is not None else None
        return float(timeout) if timeout else 2.0

    async def _drop_connection(self) -> None:
        """Close the follower's own connections (after an error they may be mid-reply)."""
        masters, self._masters = self._masters, None
        if masters is not None:
            self._topology_suspect = True
            for master, _ in masters:
                await master.close()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect()
            with contextlib.suppress(Exception):
                await self._client.connection_pool.release(conn)

    async def _round_cluster(self) -> list[int]:
        full: list[int] = []
        applied = self.entries_applied
        if self._master_timeout_s is not None:
            masters = await self._by_master()
            batch = str(self._batch)
            replies = await asyncio.gather(*(
                conn.execute([pack("XREAD", "COUNT", batch, "STREAMS", self._streams[k], self._last[k])
                              for k in shards])
                for conn, shards in masters
            ))  # fmt: skip
            for per_master in replies:
                for reply in per_master:
                    full.extend(self._apply_raw(reply))
        else:
            pipe = self._client.pipeline(transaction=False)
            for name, last in zip(self._streams, self._last, strict=True):
                pipe.xread({name: last}, count=self._batch)
            for reply in await pipe.execute():
                full.extend(self._apply_reply(reply or []))
        if not full:
            if self.entries_applied != applied:
                self._poll_s = self._interval_s
            else:  # quiet: poll less often, up to idle_interval_s
                self._poll_s = min(self._poll_s * 2, self._idle_interval_s)
            await asyncio.sleep(self._poll_s)
        return full

    async def _by_master(self) -> list[tuple[RespConnection, list[int]]]:
        """Each master's connection and the shards it serves, by redis-py's slot map."""
        if self._masters is None:
            if self._topology_suspect:
                await self._client.nodes_manager.initialize()
                self._topology_suspect = False
            assert self._master_timeout_s is not None
            groups: dict[tuple[str, int], list[int]] = {}
            for shard, name in enumerate(self._streams):
                node = self._client.get_node_from_key(name)
                groups.setdefault((node.host, int(node.port)), []).append(shard)
            self._masters = [
                (RespConnection(Endpoint(host=host, port=port), timeout_s=self._master_timeout_s), shards)
                for (host, port), shards in groups.items()
            ]
        return self._masters

    async def _xinfo_by_master(self, listed: list[int]) -> list[Any]:
        """``XINFO STREAM`` of each listed shard's feed, one pipeline per master, in the listed order."""
        wanted = set(listed)
        asked: list[tuple[RespConnection, list[int]]] = []
        for conn, shards in await self._by_master():
            mine = [k for k in shards if k in wanted]
            if mine:
                asked.append((conn, mine))
        answers = await asyncio.gather(*(conn.execute([self._xinfo[k] for k in ks]) for conn, ks in asked))
        by_shard: dict[int, Any] = {}
        for (_, mine), got in zip(asked, answers, strict=True):
            by_shard.update(zip(mine, got, strict=True))
        return [by_shard[k] for k in listed]

    def _apply_reply(self, reply: Any) -> list[int]:
        """Apply XREAD results; returns the shards whose batch was full (maybe behind)."""
        full: list[int] = []
        # redis-py (RESP2, its default) gives [[stream, [(id, {field: value}), ...]], ...].
        view = self._view
        for name, entries in reply:
            shard = self._shard_of[_text(name)]
            for entry_id, fields in entries:
                f = {_text(k): _text(v) for k, v in fields.items()}
                used = {k[2:]: int(v) for k, v in f.items() if k.startswith("u:")}
                view.apply(
                    f["sku"], f["node"], int(f["oh"]), int(f["rs"]), int(f["cm"]), int(f["ss"]), int(f["v"]),
                    used or None,
                )  # fmt: skip
                self._set_last(shard, _text(entry_id))
                self.entries_applied += 1
            if len(entries) >= self._batch:
                full.append(shard)
        return full

    async def check_gaps(self, shards: Sequence[int] | range) -> None:
        """Resync every listed shard whose stream lost entries we had not read."""
        listed = list(shards)
        if self._resp is not None:
            # RESP3 answers XINFO STREAM with a map: the fields redis-py's parsing gives.
            infos = await self._resp.execute([self._xinfo[shard] for shard in listed])
        elif self._cluster and self._master_timeout_s is not None:
            infos = await self._xinfo_by_master(listed)
        else:
            pipe = self._client.pipeline(transaction=False)
            for shard in listed:
                pipe.xinfo_stream(self._streams[shard])
            infos = await pipe.execute(raise_on_error=False)
        for shard, info in zip(listed, infos, strict=True):
            if isinstance(info, Exception):
                if "no such key" in str(info).lower():
                    continue  # nothing written to this shard yet
                raise info
            ours = _id_tuple(self._last[shard])
            first = info.get("first-entry")
            newest = _id_tuple(_text(info.get("last-generated-id", ZERO_ID)))
            # Trimming (MAXLEN) removes entries from the head and, unlike XDEL,
            # does not move max-deleted-entry-id; so: entries we never read were
            # trimmed if the oldest one left is newer than ours, or if none is
            # left but some were added after ours. A resync that was not needed
            # costs one read of the shard and changes nothing.
            trimmed = _id_tuple(_text(first[0])) > ours if first else newest > ours
            if trimmed or newest < ours:
                self.gaps += 1
                log.warning("change feed gap in shard %d; resyncing it", shard)
                await self.resync(shard)
