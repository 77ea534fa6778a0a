"""The Redis key layout: every key the store uses is named here.

The Lua scripts build the keys of a shard from its prefix with the same
suffixes (``scripts/lib.lua``, section "keys"); a test checks that the names
agree. Change one, change both, and bump :data:`FORMAT_VERSION`.

Shards and hash tags
--------------------
Every SKU belongs to shard ``k = crc32(sku) % shards``; every reservation id
to directory shard ``d = crc32(reservation_id) % shards``. All keys of shard
``k`` start with ``<ns>:{<tag k>}:``, so on a Redis Cluster they share one
slot and one script may touch any of them. Tags are not simply ``{k}``: with
256 shards those land 79/86/91 on the three masters of a default 3-master
cluster. Shard ``k`` instead gets the first of ``"k"``, ``"k.1"``, ``"k.2"``...
whose slot falls in band ``[k * 16384 // shards, (k + 1) * 16384 // shards)``,
so the shards are spread evenly over the slot range and therefore over the
masters of any cluster whose masters own contiguous slot ranges (what
``redis-cli --cluster create`` and rebalancing produce). The tags are a pure
function of ``shards``: every process computes the same ones.

Keys of shard ``k`` (``P = <ns>:{<tag k>}:``)
---------------------------------------------
``P s:<sku>``  HASH, the counters of every (sku, node) row of one SKU:
    fields ``<node>:oh`` on_hand, ``<node>:rs`` reserved, ``<node>:cm``
    committed, ``<node>:ss`` safety stock, ``<node>:v`` SetStock version. A row
    exists once a supply change touched it, or a backorder hold started it
    (on_hand 0; ``<node>:v`` is then present).
    ``<node> TAB <channel>``: channel_used, the units of that channel held or
    committed at the row, for every channel (whatever its allocation rules: a
    rule added later needs them, and no script can recount a shard), present
    only while not 0. TAB, not ':', since node and channel ids contain ':'.
``P skus``     SET of the SKUs of the shard that have rows (audit, resync).
``P r:<rid>``  HASH, the sub-reservation: the lines of reservation ``rid``
    whose SKU is in this shard. Fields ``ca`` created_at and ``ea`` expires_at
    (seconds, Python float repr), ``xm`` expires_at in ms, ``own`` the token of
    the engine process that created it (cross-slot reservations; empty
    otherwise), ``ch`` the reservation's channel (expiry and the transitions
    run in this shard and keep its channel_used), ``nw`` (cross-slot attempts
    only, when any) the rows its backorder holds started, ``sku TAB node ...``,
    which its compensation removes again if they are back to nothing, and one
    field ``L<index>`` per line:
    ``sku TAB quantity TAB requested_node TAB state TAB node TAB qty ...``
    (requested_node empty for none; then the allocations). Ids never contain
    whitespace, so TAB is a safe separator.
``P rids``     SET of the reservation ids that have a sub-reservation here (audit).
``P x``        ZSET, member rid, score expires_at in ms: the sub-reservations of
    this shard with HELD lines; expiry takes ``ZRANGEBYSCORE x -inf now``.
``P ev``       HASH event_id -> fingerprint ``kind TAB sku TAB node TAB value TAB
    version`` of the supply changes applied here: a redelivery is a duplicate,
    the same id with another body an IDEMPOTENCY_MISMATCH. Event ids are
    remembered in the shard of their change's SKU.
``P m``        HASH of shard counters: ``done`` = reservations whose directory
    entry (below) is in this shard and is complete.
``P feed``     STREAM, the change feed (format below).
``P d:<rid>``  HASH, the reservation directory entry of every ``rid`` whose
    directory shard is this one: ``b`` the canonical request body, JSON
    ``[channel, ttl repr, allow_partial, [[sku, quantity, node or null]...]]``
    (compared for IDEMPOTENCY_MISMATCH; the channel, TTL and line count are
    read from it), ``st`` DONE (or, for a reservation spanning Cluster slots
    that is not complete yet, PENDING / ABORTING), ``sh`` the shards holding its
    lines (comma-separated, ascending). An entry made by the cross-slot
    protocol also has ``ca``/``ea``/``xm``, the times of the attempt, and until
    DONE ``own``/``lease`` (ms), the engine process working on it (see
    ``engine/store/redis/crossslot.py``).

Global keys (no hash tag; each is one key in some slot)
-------------------------------------------------------
``<ns>:meta``     HASH ``shards``, ``format``: a store configured with another
    shard count or layout version refuses to start.
``<ns>:net``      HASH ``n:<node id>`` and ``c:<channel id>`` -> JSON of the Node
    or Channel (every dataclass field, so fields added later are stored too),
    ``ver`` a counter bumped by every change; processes cache the network and
    reload it when ``ver`` moves. ``cv`` the version of the carrier table set
    through the API (absent: never set).
``{<ns>:net}:carriers``  HASH ``doc`` the carrier table set through the API
    (JSON, :func:`engine.core.carriers.dump_carriers`; absent after a reset),
    ``v`` its version (= ``cv``), ``at`` when it was set. Its hash tag is the
    name of ``<ns>:net``, so both are in one Cluster slot and one script sets
    the table and moves ``ver``; it is a key of its own so the network reload
    that every quote does does not carry the table (read only when ``cv`` moved).
``<ns>:sweeper``  STRING, the expiry sweeper's lease: the token of the process
    that sweeps, with a PX expiry.

Daily capacity (``C = <ns>:{cap}:``, one hash tag)
--------------------------------------------------
``C d:<local date>:<node>``  STRING, orders the node released on that local
    date (ISO), counted on commit; expires a few days later.
``C r:<reservation id>``     STRING, set when the order was counted: a retried
    commit counts nothing (even after midnight); expires with the counters.
One slot, so ``capacity_count.lua`` counts an order at all its nodes in one
call and a quote reads today's counts with one MGET. Only nodes with a
``daily_capacity`` are counted, so a network without capacities writes none.

Future supply (``I = <ns>:{inb}:``, one hash tag for the whole inbound book)
---------------------------------------------------------------------------
``I rec``         HASH supply id -> the record's JSON
    (:func:`engine.core.future_supply.encode_inbound`; a re-sent record is
    recognised by comparing the text).
``I ids``         ZSET of every supply id, all scored 0: id order for listing
    pages (``ZRANGEBYLEX``).
``I s:<sku>``     ZSET (scored 0) of the ids of one SKU's records: what Quote
    reads, and the SKU filter of a listing.
``I n:<node>``    ZSET (scored 0) of the ids of one node's records: the node filter.

All of these share the tag ``{inb}``, so they live in ONE Cluster slot and one
script changes the book atomically, indexes included, on a Cluster too. That
puts all of it on one master, which is fine: inbound records are few next to
the (SKU, node) rows (open PO lines, not every SKU at every node), change
rarely (an ERP feed, not checkout traffic) and are read once per backorder
quote. The inbound scripts get the prefix ``I`` in ARGV and build the index
keys of the SKUs and nodes they meet (an updated record's old SKU is only
known inside the script) with the suffixes above, like ``lib.lua`` does for shards.

The change feed (``P feed``)
----------------------------
Every script that changes a row's counters appends ONE entry per changed row
(``XADD P feed MAXLEN ~ <feed_maxlen> * ...``), after its writes, with fields
``sku``, ``node``, ``oh``, ``rs``, ``cm``, ``ss``, ``v``: the row's NEW
absolute values as decimal integers; then one ``u:<channel>`` field per
channel_used counter of the row the change moved, with its new absolute value
(0 when it went away), so a view can compute channel allowances. Absolute values make a replayed or
duplicated entry harmless. Entries of one shard are in the order the changes
happened; there is no order across shards. A reader that finds its last read
id trimmed away (a gap) resyncs the shard from ``P s:*`` via ``P skus``
(:meth:`RedisStore.read_shard` returns the rows and the feed's last id
atomically). Rows are never deleted, so the feed has no delete entry.
"""

from __future__ import annotations

import binascii
import functools
import zlib

__all__ = ["FORMAT_VERSION", "CLUSTER_SLOTS", "KeySpace", "key_slot", "shard_tags"]

# Bump when the layout or the meaning of a key changes: old data then refuses to load.
# 2: channel_used fields in the row hashes, ``ch`` in sub-reservations, ``u:`` feed fields.
FORMAT_VERSION = 2
CLUSTER_SLOTS = 16384


def key_slot(tag: str) -> int:
    """The Redis Cluster slot of a hash tag (CRC16/XMODEM, as Redis computes it)."""
    return binascii.crc_hqx(tag.encode(), 0) % CLUSTER_SLOTS


@functools.lru_cache(maxsize=8)
def shard_tags(shards: int) -> tuple[str, ...]:
    """The hash tag of each shard: one tag per band of the slot range (see above)."""
    tags: list[str] = []
    for k in range(shards):
        low, high = k * CLUSTER_SLOTS // shards, (k + 1) * CLUSTER_SLOTS // shards
        candidate, n = str(k), 0
        while not low <= key_slot(candidate) < high:
            n += 1
            candidate = f"{k}.{n}"
        tags.append(candidate)
    return tuple(tags)


class KeySpace:
    """Key names for one namespace and shard count."""

    __slots__ = ("_prefixes", "carriers", "meta", "namespace", "net", "shards", "slots", "sweeper", "tags")

    def __init__(self, namespace: str, shards: int) -> None:
        self.namespace = namespace
        self.shards = shards
        self.tags = shard_tags(shards)
        self._prefixes = tuple(f"{namespace}:{{{tag}}}:" for tag in self.tags)
        self.slots = tuple(key_slot(tag) for tag in self.tags)
        self.meta = f"{namespace}:meta"
        self.net = f"{namespace}:net"
        self.sweeper = f"{namespace}:sweeper"
        self.carriers = f"{{{namespace}:net}}:carriers"

    # ------------------------------------------------------------- placement

    def shard_of_sku(self, sku: str) -> int:
        return zlib.crc32(sku.encode()) % self.shards

    def shard_of_reservation(self, reservation_id: str) -> int:
        return zlib.crc32(reservation_id.encode()) % self.shards

    # ------------------------------------------------------------ shard keys

    def prefix(self, shard: int) -> str:
        return self._prefixes[shard]

    def sku(self, shard: int, sku: str) -> str:
        return f"{self._prefixes[shard]}s:{sku}"

    def skus(self, shard: int) -> str:
        return self._prefixes[shard] + "skus"

    def sub(self, shard: int, reservation_id: str) -> str:
        return f"{self._prefixes[shard]}r:{reservation_id}"

    def rids(self, shard: int) -> str:
        return self._prefixes[shard] + "rids"

    def expiry(self, shard: int) -> str:
        """The ``x`` ZSET, also the key every per-shard script is routed by."""
        return self._prefixes[shard] + "x"

    def events(self, shard: int) -> str:
        return self._prefixes[shard] + "ev"

    def shard_meta(self, shard: int) -> str:
        return self._prefixes[shard] + "m"

    def feed(self, shard: int) -> str:
        return self._prefixes[shard] + "feed"

    def directory(self, reservation_id: str) -> str:
        return f"{self._prefixes[self.shard_of_reservation(reservation_id)]}d:{reservation_id}"

    # ---------------------------------------------------------- future supply

    @property
    def inbound_prefix(self) -> str:
        """``<ns>:{inb}:``, the prefix of every key of the inbound book (one slot)."""
        return f"{self.namespace}:{{inb}}:"

    def inbound_records(self) -> str:
        """The ``rec`` HASH, also the key the inbound scripts are routed by."""
        return self.inbound_prefix + "rec"

    def inbound_ids(self) -> str:
        return self.inbound_prefix + "ids"

    def inbound_sku(self, sku: str) -> str:
        return f"{self.inbound_prefix}s:{sku}"

    def inbound_node(self, node: str) -> str:
        return f"{self.inbound_prefix}n:{node}"

    # ----------------------------------------------------------- daily capacity

    def capacity_marker(self, reservation_id: str) -> str:
        return f"{self.namespace}:{{cap}}:r:{reservation_id}"

    def capacity_day(self, node: str, day: str) -> str:
        return f"{self.namespace}:{{cap}}:d:{day}:{node}"
