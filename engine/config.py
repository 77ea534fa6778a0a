"""Configuration value objects: frozen, keyword-only, parsed once at the edge.

The CLI (and only the CLI) reads argv and the environment and builds these;
everything below receives them ready-made.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["EmbeddedStoreConfig", "ServerConfig"]


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

    def __post_init__(self) -> None:
        if not self.listen or ":" not in self.listen:
            raise ValueError(f"listen must be host:port, got {self.listen!r}")
        if self.grace_s < 0:
            raise ValueError("grace_s must not be negative")
        if self.max_concurrent_rpcs < 1:
            raise ValueError("max_concurrent_rpcs must be at least 1")
        if self.max_message_bytes < 1024:
            raise ValueError("max_message_bytes must be at least 1024")
