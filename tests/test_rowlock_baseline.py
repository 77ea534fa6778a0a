"""The PostgreSQL row-lock baseline of `bench rowlock` reserves correctly.

A comparison is only worth making against an opponent that is right: these
tests run the baseline's reserve on a real PostgreSQL (Debian's package,
started by the test in a temporary directory) and check what a shop would
check: no oversell under contention, all-or-nothing lines, idempotency by
reservation id, no deadlock between reservations that lock rows in opposite
orders, and no server left running. A missing PostgreSQL is an error here, not
a skip (`make test` installs it: tools/ensure_system_deps.sh).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from engine.bench.postgres import (
    IdempotencyMismatch,
    PostgresServer,
    load_stock,
    oversell_report,
    reserve,
)

CONCURRENCY = 100


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with PostgresServer(max_connections=CONCURRENCY + 20, shared_buffers="32MB") as server:
        yield server


async def _fresh_db(pg: PostgresServer, name: str, rows: list[tuple[str, str, int]]) -> str:
    """A new database with the schema and ``rows`` of stock; returns its DSN."""
    admin = await asyncpg.connect(pg.dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = pg.dsn.rsplit("/", 1)[0] + f"/{name}"
    conn = await asyncpg.connect(dsn)
    try:
        await load_stock(conn, rows)
    finally:
        await conn.close()
    return dsn


async def _stock(conn: Any, sku: str, node: str) -> tuple[int, int]:
    row = await conn.fetchrow("SELECT on_hand, reserved FROM stock WHERE sku = $1 AND node = $2", sku, node)
    return row["on_hand"], row["reserved"]


def test_hundred_buyers_for_fifty_units_exactly_fifty_succeed(pg: PostgresServer) -> None:
    async def scenario() -> tuple[list[bool], dict[str, int], tuple[int, int]]:
        dsn = await _fresh_db(pg, "contention", [("HOT", "dc-1", 50)])
        conns = [await asyncpg.connect(dsn) for _ in range(CONCURRENCY)]
        try:
            one_unit = [("HOT", "dc-1", 1)]
            outcomes = await asyncio.gather(
                *(reserve(conns[k], f"buyer-{k}", "web", one_unit, 600) for k in range(CONCURRENCY))
            )
            return list(outcomes), await oversell_report(conns[0]), await _stock(conns[0], "HOT", "dc-1")
        finally:
            for conn in conns:
                await conn.close()

    outcomes, report, (on_hand, reserved) = asyncio.run(scenario())
    assert outcomes.count(True) == 50
    assert (on_hand, reserved) == (50, 50)
    assert report == {
        "oversold_rows": 0,
        "rows_disagreeing_with_lines": 0,
        "reserved_units": 50,
        "reservations": 50,
    }


def test_a_short_line_holds_nothing_and_a_replay_changes_nothing(pg: PostgresServer) -> None:
    async def scenario() -> None:
        dsn = await _fresh_db(pg, "lines", [("A", "dc-1", 5), ("B", "dc-1", 1)])
        conn = await asyncpg.connect(dsn)
        try:
            # B is short: the whole reservation is refused, A keeps its 5 units.
            assert not await reserve(conn, "r1", "web", [("A", "dc-1", 2), ("B", "dc-1", 2)], 600)
            assert await _stock(conn, "A", "dc-1") == (5, 0)
            assert await conn.fetchval("SELECT count(*) FROM reservations") == 0
            # A row that does not exist is short too.
            assert not await reserve(conn, "r1", "web", [("NOPE", "dc-1", 1)], 600)

            assert await reserve(conn, "r2", "web", [("A", "dc-1", 2), ("B", "dc-1", 1)], 600)
            assert await reserve(conn, "r2", "web", [("A", "dc-1", 2), ("B", "dc-1", 1)], 600)  # a retry
            assert await _stock(conn, "A", "dc-1") == (5, 2)
            with pytest.raises(IdempotencyMismatch):
                await reserve(conn, "r2", "web", [("A", "dc-1", 3)], 600)
            assert await _stock(conn, "A", "dc-1") == (5, 2)
            assert (await oversell_report(conn))["rows_disagreeing_with_lines"] == 0
        finally:
            await conn.close()

    asyncio.run(scenario())


def test_opposite_line_orders_do_not_deadlock(pg: PostgresServer) -> None:
    """Rows are locked in (sku, node) order whatever the order of the lines."""

    async def scenario() -> None:
        dsn = await _fresh_db(pg, "ordering", [("A", "dc-1", 1000), ("B", "dc-1", 1000), ("C", "dc-2", 1000)])
        conns = [await asyncpg.connect(dsn) for _ in range(40)]
        try:
            orders = ([("A", "dc-1", 1), ("B", "dc-1", 1), ("C", "dc-2", 1)],
                      [("C", "dc-2", 1), ("B", "dc-1", 1), ("A", "dc-1", 1)])  # fmt: skip
            for round_ in range(5):
                outcomes = await asyncio.gather(
                    *(
                        reserve(conn, f"r{round_}-{k}", "web", orders[k % 2], 600)
                        for k, conn in enumerate(conns)
                    )
                )
                assert all(outcomes)
            assert await _stock(conns[0], "B", "dc-1") == (1000, 200)
            assert (await oversell_report(conns[0]))["rows_disagreeing_with_lines"] == 0
        finally:
            for conn in conns:
                await conn.close()

    asyncio.run(scenario())


def test_the_server_runs_durably_on_loopback_and_leaves_nothing_behind() -> None:
    with PostgresServer(max_connections=10, shared_buffers="16MB") as server:
        pid = server.pid

        async def settings() -> dict[str, str]:
            conn = await asyncpg.connect(server.dsn)
            try:
                names = ("fsync", "synchronous_commit", "listen_addresses", "data_directory")
                return {n: await conn.fetchval(f"SHOW {n}") for n in names}
            finally:
                await conn.close()

        shown = asyncio.run(settings())
        data_dir = Path(shown["data_directory"])
        assert shown["fsync"] == "on"
        assert shown["synchronous_commit"] == "on"
        assert shown["listen_addresses"] == "127.0.0.1"
        assert data_dir.is_dir()
    assert not os.path.exists(f"/proc/{pid}") or b"postgres" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert not data_dir.exists()
