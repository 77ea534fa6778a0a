"""The relational baseline: stock reserved with row locks on a PostgreSQL of its own.

This is the approach most shops use today, written the way a careful team
would write it, so the comparison in ``bench rowlock`` is with a fair opponent:

- ``stock`` has one row per (SKU, node) with the same counters as the engine
  (``on_hand``, ``reserved``, ``committed``, ``safety_stock``);
  ``reservations`` and ``reservation_lines`` hold what was reserved.
- A reserve is one transaction: insert the reservation (its id is the primary
  key, so a replay or a concurrent duplicate finds the first one and changes
  nothing), ``SELECT ... FOR UPDATE`` the rows of its lines ordered by
  (sku, node) so that two reservations touching the same rows lock them in the
  same order and cannot deadlock, check every line's ATP under those locks,
  add to ``reserved``, insert the lines, commit. Any short line rolls the
  whole transaction back (all-or-nothing, as the engine's default).
- The server runs as a durable OLTP database: ``fsync`` and
  ``synchronous_commit`` on, so a reservation is on disk before its commit
  returns (the engine's embedded store fsyncs its journal before replying).

There is deliberately no CHECK constraint on ATP: the row lock is what keeps
stock from being oversold, and :func:`oversell_report` checks afterwards that it
did. :class:`PostgresServer` starts ``postgres`` from Debian's ``postgresql``
package (its binaries live in ``/usr/lib/postgresql/<version>/bin``, not on
PATH) in a temporary directory, on a free loopback port, and stops it again.
PostgreSQL refuses to run as root, so under root the server runs as the
package's ``postgres`` user.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from engine.launcher import free_port

__all__ = [
    "SCHEMA",
    "PostgresNotInstalled",
    "PostgresServer",
    "load_stock",
    "oversell_report",
    "postgres_bindir",
    "postgres_version",
    "reserve",
]

HOST = "127.0.0.1"
USER = "bench"
DATABASE = "postgres"

SCHEMA = """
CREATE TABLE stock (
    sku          text    NOT NULL,
    node         text    NOT NULL,
    on_hand      integer NOT NULL,
    reserved     integer NOT NULL DEFAULT 0,
    committed    integer NOT NULL DEFAULT 0,
    safety_stock integer NOT NULL DEFAULT 0,
    PRIMARY KEY (sku, node)
);
CREATE TABLE reservations (
    id         text        PRIMARY KEY,
    channel    text        NOT NULL,
    state      text        NOT NULL DEFAULT 'HELD',
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE reservation_lines (
    reservation_id text    NOT NULL REFERENCES reservations (id),
    line_no        integer NOT NULL,
    sku            text    NOT NULL,
    node           text    NOT NULL,
    quantity       integer NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (reservation_id, line_no)
);
"""

_INSERT_RESERVATION = """
INSERT INTO reservations (id, channel, expires_at)
VALUES ($1, $2, now() + make_interval(secs => $3))
ON CONFLICT (id) DO NOTHING
RETURNING id
"""
# ORDER BY under FOR UPDATE: rows are locked in the order they are returned,
# so every transaction takes its locks in (sku, node) order.
_LOCK_ROWS = """
SELECT sku, node, on_hand - reserved - committed - safety_stock AS atp
FROM stock
WHERE (sku, node) IN (SELECT * FROM unnest($1::text[], $2::text[]))
ORDER BY sku, node
FOR UPDATE
"""
_ADD_RESERVED = """
UPDATE stock AS s SET reserved = s.reserved + w.quantity
FROM unnest($1::text[], $2::text[], $3::integer[]) AS w (sku, node, quantity)
WHERE s.sku = w.sku AND s.node = w.node
"""
_INSERT_LINES = """
INSERT INTO reservation_lines (reservation_id, line_no, sku, node, quantity)
SELECT $1, l.line_no, l.sku, l.node, l.quantity
FROM unnest($2::text[], $3::text[], $4::integer[]) WITH ORDINALITY AS l (sku, node, quantity, line_no)
"""
_STORED_LINES = """
SELECT sku, node, quantity FROM reservation_lines WHERE reservation_id = $1 ORDER BY line_no
"""

Line = tuple[str, str, int]  # (sku, node, quantity)


class PostgresNotInstalled(RuntimeError):
    """Debian's ``postgresql`` package (its server binaries) is missing."""


class IdempotencyMismatch(RuntimeError):
    """A reservation id came back with a different body."""


class _Rejected(Exception):
    """Raised inside the transaction to roll it back: a line is short."""


def postgres_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` that has ``initdb`` and ``postgres``."""
    candidates = []
    for path in glob.glob("/usr/lib/postgresql/*/bin"):
        match = re.search(r"/postgresql/(\d+)/bin$", path)
        if match and os.access(f"{path}/initdb", os.X_OK) and os.access(f"{path}/postgres", os.X_OK):
            candidates.append((int(match[1]), Path(path)))
    if not candidates:
        raise PostgresNotInstalled(
            "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin. Install Debian's "
            "postgresql package (apt-get install postgresql); `make test` installs it when it "
            "runs as root (tools/ensure_system_deps.sh)."
        )
    return max(candidates)[1]


def postgres_version(bindir: Path | None = None) -> str:
    """The server's version, e.g. ``15.18``."""
    binary = (bindir or postgres_bindir()) / "postgres"
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"\d+(\.\d+)+", out)
    return match[0] if match else out.strip()


class PostgresServer:
    """``with PostgresServer() as pg: pg.dsn``: a throwaway durable PostgreSQL on loopback.

    initdb into a temporary directory, then ``postgres`` in the foreground (a
    child we can stop by its pid, unlike ``pg_ctl start``), listening on
    127.0.0.1 at a free port and on a unix socket inside the same directory.
    Trust authentication is enough: nothing but loopback can reach it and it
    lives for one benchmark or test.
    """

    def __init__(self, *, max_connections: int = 100, shared_buffers: str = "256MB") -> None:
        self.max_connections = max_connections
        self.shared_buffers = shared_buffers
        self.bindir = postgres_bindir()
        self.port = 0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://{USER}@{HOST}:{self.port}/{DATABASE}"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("PostgreSQL is not running")
        return self._process.pid

    def version(self) -> str:
        return postgres_version(self.bindir)

    def _as_owner(self) -> dict[str, Any]:
        """Popen arguments that run a server binary as a user PostgreSQL accepts."""
        if os.geteuid() != 0:
            return {}
        # PostgreSQL refuses to start as root; Debian's package creates this user.
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise PostgresNotInstalled("running as root and there is no postgres user") from exc
        return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}

    def start(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="inventory-pg-", ignore_cleanup_errors=True)
        root = Path(self._tmp.name)
        data, sockets = root / "data", root / "sockets"
        sockets.mkdir()
        owner = self._as_owner()
        if owner:
            for path in (root, sockets):
                os.chown(path, owner["user"], owner["group"])
        log = root / "postgres.log"
        with open(log, "wb") as out:
            if owner:
                os.chown(log, owner["user"], owner["group"])
            subprocess.run(
                [
                    str(self.bindir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust",
                    "--encoding=UTF8", "--no-locale", "--no-sync",
                ],
                stdout=out, stderr=subprocess.STDOUT, check=True, **owner,
            )  # fmt: skip
        for _ in range(5):
            self.port = free_port()
            # Durability as an OLTP shop would run it; the remaining settings are
            # PostgreSQL 15's defaults except the connection count a benchmark needs.
            settings = {
                "listen_addresses": HOST,
                "port": str(self.port),
                "unix_socket_directories": str(sockets),
                "fsync": "on",
                "synchronous_commit": "on",
                "full_page_writes": "on",
                "max_connections": str(self.max_connections),
                "shared_buffers": self.shared_buffers,
            }
            args = [str(self.bindir / "postgres"), "-D", str(data)]
            for key, value in settings.items():
                args += ["-c", f"{key}={value}"]
            with open(log, "ab") as out:
                self._process = subprocess.Popen(
                    args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **owner
                )
            if self._wait_ready(log):
                return
        self.stop()
        raise RuntimeError(f"PostgreSQL did not start; see its log:\n{log.read_text()[-2000:]}")

    def _wait_ready(self, log: Path, timeout_s: float = 60.0) -> bool:
        """True once it accepts connections; False if it exited (the port was taken)."""
        assert self._process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            ready = subprocess.run(
                [str(self.bindir / "pg_isready"), "-q", "-h", HOST, "-p", str(self.port), "-U", USER],
                check=False,
            )
            if ready.returncode == 0:
                return True
            time.sleep(0.1)
        raise RuntimeError(f"PostgreSQL did not accept connections in {timeout_s} s: {log}")

    def stop(self) -> None:
        if self._process is not None:
            if self._process.poll() is None:
                # SIGINT is PostgreSQL's "fast" shutdown: abort sessions, checkpoint, exit.
                self._process.send_signal(2)
                try:
                    self._process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
            self._process = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


async def load_stock(conn: Any, rows: Sequence[tuple[str, str, int]]) -> None:
    """Create the schema and load (sku, node, on_hand) rows with COPY."""
    await conn.execute(SCHEMA)
    await conn.copy_records_to_table("stock", records=list(rows), columns=["sku", "node", "on_hand"])
    await conn.execute("ANALYZE")


async def reserve(conn: Any, reservation_id: str, channel: str, lines: Sequence[Line], ttl_s: float) -> bool:
    """Hold every line or nothing; True if held (or already held under this id).

    False means a line was short (nothing changed). The same id with another
    body raises :class:`IdempotencyMismatch`, like the engine.
    """
    # One row update per (sku, node), even if two lines name the same row.
    need: dict[tuple[str, str], int] = {}
    for sku, node, quantity in lines:
        need[(sku, node)] = need.get((sku, node), 0) + quantity
    keys = sorted(need)
    try:
        async with conn.transaction():
            if await conn.fetchval(_INSERT_RESERVATION, reservation_id, channel, ttl_s) is None:
                # A replay: the first transaction with this id committed (a
                # concurrent one waits on the primary key until it has).
                stored = [tuple(r) for r in await conn.fetch(_STORED_LINES, reservation_id)]
                if stored != [tuple(line) for line in lines]:
                    raise IdempotencyMismatch(reservation_id)
                return True
            locked = await conn.fetch(_LOCK_ROWS, [k[0] for k in keys], [k[1] for k in keys])
            atp = {(r["sku"], r["node"]): r["atp"] for r in locked}
            if any(atp.get(key, 0) < quantity for key, quantity in need.items()):
                raise _Rejected
            await conn.execute(
                _ADD_RESERVED, [k[0] for k in keys], [k[1] for k in keys], [need[k] for k in keys]
            )
            await conn.execute(
                _INSERT_LINES,
                reservation_id,
                [line[0] for line in lines],
                [line[1] for line in lines],
                [line[2] for line in lines],
            )
    except _Rejected:
        return False
    return True


async def oversell_report(conn: Any) -> dict[str, int]:
    """What a DBA would check after the run; every count but the totals must be 0."""
    oversold = await conn.fetchval(
        "SELECT count(*) FROM stock"
        " WHERE reserved < 0 OR committed < 0 OR reserved + committed + safety_stock > on_hand"
    )
    # The counters agree with the reservations they stand for.
    disagreeing = await conn.fetchval(
        """
        SELECT count(*) FROM stock AS s
        LEFT JOIN (
            SELECT l.sku, l.node, sum(l.quantity) AS held
            FROM reservation_lines AS l JOIN reservations AS r ON r.id = l.reservation_id
            WHERE r.state = 'HELD' GROUP BY l.sku, l.node
        ) AS h ON h.sku = s.sku AND h.node = s.node
        WHERE s.reserved <> coalesce(h.held, 0)
        """
    )
    reserved = await conn.fetchval("SELECT coalesce(sum(reserved), 0) FROM stock")
    reservations = await conn.fetchval("SELECT count(*) FROM reservations")
    return {
        "oversold_rows": int(oversold),
        "rows_disagreeing_with_lines": int(disagreeing),
        "reserved_units": int(reserved),
        "reservations": int(reservations),
    }
