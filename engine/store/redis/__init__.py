"""The Redis store: the Store contract on standalone Redis or a Redis Cluster.

Redis is the truth, shared by every engine process on every host; a process
keeps nothing that matters but caches (the network, the immutable facts of
reservations it has seen). ``RedisStore(RedisStoreConfig(url=...))`` for a
standalone Redis, ``RedisStoreConfig(cluster_nodes=(...))`` for a Cluster; the
results, errors and objects are those of the embedded store (the same contract
suite runs on both).

Layout (``keys.py``): SKUs are spread over ``shards`` hash-tag shards; every
key of a shard carries its tag, so one script can touch all of them, on a
Cluster too. A reservation's lines live in the shards of their SKUs as
sub-reservations; its directory entry (idempotency, status) lives in the shard
of its id.

Mutations (``scripts/*.lua``, one file per script with a KEYS/ARGV/returns
header): one mutation is ONE Lua script per slot, which first expires the holds
due in its shards (lazy expiry), then checks everything, then writes, and
appends one change-feed entry per row it changed. Scripts are loaded with
SCRIPT LOAD at start (on every master), called by SHA, and reloaded on
NOSCRIPT. On standalone Redis every operation is a single script call, fully
atomic: a reservation's directory entry and all its shards in one call. On a
Cluster an operation whose keys share a slot is one call too; one whose keys
span slots runs the protocol of ``crossslot.py`` (one script per slot,
idempotent per line, compensation, orphans expiring by their TTL). The
directory entry of a complete reservation never changes, so commit, release,
fulfill, extend and get read it once per process (a cached lookup) and then
run as one script on the reservation's shards.

Time: every script gets ``now`` (ms) in ARGV from the injected clock (clamped
so it never goes backwards, as in the embedded store); scripts never call
TIME, so expiry is decided by the engines' clocks. Engine hosts must keep
their clocks synchronized (NTP): a host whose clock runs ahead expires holds
early, one behind keeps them late. Redis's own clock only times leases and
key expiry of abandoned attempts.

Expiry: every script that touches a shard expires that shard's due holds
first, so no operation or read ever sees a hold past its expiry; the sweeper
returns the units of holds nobody touches: one process at a time (a lease
key, ``<ns>:sweeper``) runs the expire script on every shard each
``sweep_interval_s``, and another takes over within three intervals when it
stops. ``expire_now()`` runs a sweep on demand.

Calls (``runner.py``): every script call goes through one runner, which sends
the calls made in one event-loop turn as one pipeline (per master on a
Cluster) and counts pipelines and calls for the metrics layer
(``RedisStore.stats``). Connection refused, reset or timed out -> the domain
error StoreUnavailable. A script whose reply timed out may have run:
reservations (by id) and supply changes with an event id are idempotent and
safe to retry; an adjustment without an event id is not.

Durability is Redis's: run it with ``maxmemory-policy noeviction`` and AOF
(``appendfsync always`` for no loss at all, ``everysec`` for at most one second
on a machine crash). The store checks these at start and logs a warning for
each deviation (``config.check_settings``).
"""

from engine.store.redis.store import NamespaceMismatch, RedisStore, RedisStoreStats

__all__ = ["NamespaceMismatch", "RedisStore", "RedisStoreStats"]
