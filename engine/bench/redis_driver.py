"""A pipelined Redis load driver that costs the client almost nothing per command.

What ``redis-benchmark -P`` does, for commands we build ourselves (whole
reservations with unique ids and their exact keys, which redis-benchmark's
``__rand_int__`` placeholders cannot express): every command is encoded to
RESP (``engine.store.redis.resp.pack``) before the clock starts, each
connection writes ``depth`` of them in one ``write`` and parses the replies
with hiredis (C). The Python cost per command is then a small fraction of what
Redis spends on it, so the figure measures the server, and two command kinds
driven the same way compare fairly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import hiredis

__all__ = ["DriveResult", "drive"]


class DriveResult:
    __slots__ = ("commands", "errors", "first_error", "seconds")

    def __init__(self, commands: int, errors: int, first_error: str | None, seconds: float) -> None:
        self.commands = commands
        self.errors = errors
        self.first_error = first_error
        self.seconds = seconds

    @property
    def ops_per_s(self) -> float:
        return self.commands / self.seconds if self.seconds > 0 else 0.0


async def _connection(host: str, port: int, chunks: list[bytes], sizes: list[int], errors: list[str]) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    parser = hiredis.Reader()
    done = 0
    try:
        for chunk, size in zip(chunks, sizes, strict=True):
            writer.write(chunk)
            got = 0
            while got < size:
                reply = parser.gets()
                if reply is False:
                    data = await reader.read(1 << 16)
                    if not data:
                        raise ConnectionError("redis closed the connection")
                    parser.feed(data)
                    continue
                if isinstance(reply, hiredis.ReplyError):
                    errors.append(str(reply))
                got += 1
            done += size
    finally:
        writer.close()
        await writer.wait_closed()
    return done


async def drive(
    host: str, port: int, commands: Sequence[bytes], *, connections: int = 8, depth: int = 32
) -> DriveResult:
    """Send ``commands`` over ``connections`` sockets, ``depth`` in flight on each."""
    per_conn: list[tuple[list[bytes], list[int]]] = [([], []) for _ in range(connections)]
    # Deal pipelines round-robin so every connection gets the same share.
    for n, start in enumerate(range(0, len(commands), depth)):
        batch = commands[start : start + depth]
        chunks, sizes = per_conn[n % connections]
        chunks.append(b"".join(batch))
        sizes.append(len(batch))
    errors: list[str] = []
    started = time.perf_counter()
    counts = await asyncio.gather(
        *(_connection(host, port, chunks, sizes, errors) for chunks, sizes in per_conn if chunks)
    )
    seconds = time.perf_counter() - started
    return DriveResult(sum(counts), len(errors), errors[0] if errors else None, seconds)
