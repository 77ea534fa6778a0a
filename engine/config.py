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


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    listen: str = "127.0.0.1:50051"
    # Seconds in-flight RPCs get to finish on shutdown.
    grace_s: float = 5.0
    # Admission limit: RPCs beyond this many in flight are answered RESOURCE_EXHAUSTED.
    max_concurrent_rpcs: int = 10_000
    max_message_bytes: int = 16 * 1024 * 1024
    # Use uvloop for the event loop (the default); off only to debug with the stdlib loop.
    uvloop: bool = True
