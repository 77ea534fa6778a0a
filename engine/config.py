"""Configuration value objects: frozen, keyword-only, parsed once at the edge.

The CLI (and only the CLI) reads argv and the environment and builds these;
everything below receives them ready-made.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.core.carriers import CarrierTable

__all__ = ["EmbeddedStoreConfig", "RedisStoreConfig", "ServerConfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class EmbeddedStoreConfig:
    # None keeps everything in memory (tests, benchmarks of the ledger alone).
    data_dir: Path | None = Path("inventory-data")
    ledger_impl: str = "fast"
    # fsync the journal before acknowledging; only benchmarks turn this off.
    fsync: bool = True
    # A snapshot bounds recovery time: take one after this many journal records...
    snapshot_every_records: int = 200_000
    # ...or after this many seconds with at least one record.
    snapshot_interval_s: float = 300.0
    # How often the sweeper expires due holds (expiry must land within 1 s).
    sweep_interval_s: float = 0.1
    # Snapshots kept on disk, with the journal back to the oldest of them: with 2,
    # a damaged newest snapshot still leaves the previous one plus its journal.
    snapshots_to_keep: int = 2

    def __post_init__(self) -> None:
        if self.ledger_impl not in ("fast", "pure"):
            raise ValueError(f"ledger_impl must be 'fast' or 'pure', not {self.ledger_impl!r}")
        if self.snapshot_every_records < 1:
            raise ValueError("snapshot_every_records must be at least 1")
        if not self.snapshot_interval_s > 0:
            raise ValueError("snapshot_interval_s must be positive")
        if not 0 < self.sweep_interval_s <= 1.0:
            raise ValueError("sweep_interval_s must be in (0, 1]: expired holds return within 1 s")
        if self.snapshots_to_keep < 1:
            raise ValueError("snapshots_to_keep must be at least 1")


# A key prefix must not contain '{' or '}' (it would become the hash tag of
# every key) nor whitespace.
_NAMESPACE = re.compile(r"[!-z|~]{1,64}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisStoreConfig:
    # redis://host:port[/db] for a standalone Redis...
    url: str | None = None
    # ...or the startup nodes ("host:port", ...) of a Redis Cluster. Exactly one of the two.
    cluster_nodes: tuple[str, ...] = ()
    # Prefix of every key; two engines with different namespaces share nothing.
    namespace: str = "inv"
    # SKUs are spread over this many hash-tag shards (a script touches one shard's
    # keys per slot). Fixed for the life of a namespace: it is stored in Redis and
    # a store configured otherwise refuses to start.
    shards: int = 256
    # How often the sweeper (one process at a time) expires due holds; expired
    # holds must return within 1 s.
    sweep_interval_s: float = 0.2
    # Approximate MAXLEN of each shard's change-feed stream.
    feed_maxlen: int = 100_000
    # The longest a script call waits for others to share its pipeline, only
    # while calls come fast enough to expect company (see engine.store.redis.runner).
    pipeline_linger_s: float = 0.003
    # On standalone Redis, the least time between two reads of a busy change
    # feed (each read costs Redis about the same however much it brings; see
    # engine.store.redis.feed). Adds at most this much to the view's lag.
    feed_busy_interval_s: float = 0.005
    socket_timeout_s: float = 2.0
    # Check maxmemory-policy, appendonly and appendfsync at start and warn.
    check_settings: bool = True
    # The per-process availability view fed by the change feed (sold-out fast path).
    view: bool = True
    # The view refuses a reserve only while it caught up with Redis this recently.
    view_max_lag_s: float = 0.5
    view_impl: str = "fast"
    # Script pipelines and the change feed on standalone Redis go over the
    # engine's own connections (engine.store.redis.resp), at a fraction of
    # redis-py's CPU per pipeline. False keeps redis-py for them, as TLS
    # (rediss://) and Redis Cluster always do.
    lean_transport: bool = True

    def __post_init__(self) -> None:
        if (self.url is None) == (not self.cluster_nodes):
            raise ValueError("give exactly one of url (standalone) and cluster_nodes (Redis Cluster)")
        if self.url is not None and not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"url must be redis://host:port[/db], got {self.url!r}")
        for node in self.cluster_nodes:
            host, _, port = node.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"cluster_nodes entries must be host:port, got {node!r}")
        if _NAMESPACE.fullmatch(self.namespace) is None:
            raise ValueError(
                "namespace must be 1-64 printable ASCII characters without whitespace, '{' or '}', "
                f"got {self.namespace!r}"
            )
        # Each shard gets a hash tag in a band of slots of its own (see
        # engine.store.redis.keys); more than 1024 shards would make those bands
        # too narrow to find tags for quickly, and more shards than that buy nothing.
        if not 1 <= self.shards <= 1024:
            raise ValueError("shards must be 1..1024")
        if not 0 < self.sweep_interval_s <= 1.0:
            raise ValueError("sweep_interval_s must be in (0, 1]: expired holds return within 1 s")
        if self.feed_maxlen < 1:
            raise ValueError("feed_maxlen must be at least 1")
        if not self.socket_timeout_s > 0:
            raise ValueError("socket_timeout_s must be positive")
        if not self.view_max_lag_s > 0:
            raise ValueError("view_max_lag_s must be positive")
        if not 0 <= self.pipeline_linger_s <= 0.1:
            raise ValueError("pipeline_linger_s must be in [0, 0.1]")
        if not 0 <= self.feed_busy_interval_s < self.view_max_lag_s:
            raise ValueError("feed_busy_interval_s must be at least 0 and below view_max_lag_s")
        if self.view_impl not in ("fast", "pure"):
            raise ValueError(f"view_impl must be 'fast' or 'pure', not {self.view_impl!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    # host:port; loopback by default, port 0 picks a free port (tests).
    listen: str = "127.0.0.1:50051"
    # Seconds in-flight RPCs get to finish on shutdown.
    grace_s: float = 5.0
    # Admission limit: RPCs beyond this many in flight are answered RESOURCE_EXHAUSTED.
    max_concurrent_rpcs: int = 10_000
    max_message_bytes: int = 16 * 1024 * 1024
    # Use uvloop for the event loop (the default); off only to debug with the stdlib loop.
    uvloop: bool = True
    # SO_REUSEPORT: several processes share the port (Redis mode only; two embedded
    # engines on one port would split traffic between two ledgers).
    reuse_port: bool = False
    # Prometheus metrics over HTTP (GET /metrics) on this port; 0: no endpoint in this
    # process. Off here so that library users and tests bind nothing unasked; the CLI
    # defaults to 9464. With serve --workers the supervisor serves every worker's metrics.
    metrics_port: int = 0
    # Host the metrics endpoint binds; None: the host of ``listen``.
    metrics_host: str | None = None
    # Seconds between the audits that export invariant violations and shortages as
    # metrics (run by worker 0 only: the audit walks every row); 0: none.
    audit_interval_s: float = 60.0
    # Which worker of serve --workers this process is (0 when alone); labels its metrics.
    worker_index: int = 0
    # Carrier service levels for Quote (serve --carriers FILE); None: the sample
    # table shipped with the engine (engine/data/carriers.yaml).
    carriers: CarrierTable | None = None
    # The sourcing loop behind Quote: "fast" (Cython) or "pure" (the reference).
    promise_impl: str = "fast"

    def __post_init__(self) -> None:
        if not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port must be 0..65535, got {self.metrics_port}")
        if self.audit_interval_s < 0:
            raise ValueError("audit_interval_s must not be negative")
        if self.worker_index < 0:
            raise ValueError("worker_index must not be negative")
        if self.promise_impl not in ("fast", "pure"):
            raise ValueError(f"promise_impl must be 'fast' or 'pure', not {self.promise_impl!r}")
        if not self.listen or ":" not in self.listen:
            raise ValueError(f"listen must be host:port, got {self.listen!r}")
        if self.grace_s < 0:
            raise ValueError("grace_s must not be negative")
        if self.max_concurrent_rpcs < 1:
            raise ValueError("max_concurrent_rpcs must be at least 1")
        if self.max_message_bytes < 1024:
            raise ValueError("max_message_bytes must be at least 1024")
