"""A lean pipelined connection to one Redis server, for the store's hot paths.

Why it exists: the engine sends a pipeline for every turn of its event loop
(see ``runner.py``), and under gRPC traffic most pipelines carry one to three
script calls. redis-py's asyncio ``Pipeline`` does a lot per pipeline (pool
checkout, Python-level packing, an ``asyncio.wait_for`` task per write,
per-reply bookkeeping): in a profile of a busy engine on standalone Redis,
``Pipeline.execute`` was a fifth of the process's CPU per Reserve. Here
commands are packed by hiredis (C), a pipeline is one ``write``, and replies
are parsed by a hiredis ``Reader`` in ``data_received`` and handed back per
pipeline. ``inventory-engine bench grpc --backend redis`` measured the
engine's CPU per Reserve at 732 µs before and 549 µs after.

It keeps what the store relies on from redis-py as the store configures it:

- the same replies: RESP3 (``HELLO 3``, redis-py 8's default) decoded as
  UTF-8 (``decode_responses=True``);
- error replies come back in place, as redis-py's exception classes
  (``NoScriptError``, ``ReadOnlyError``, ``ResponseError``), as
  ``Pipeline.execute(raise_on_error=False)`` returns them;
- no retries: a timeout or a lost connection fails every pipeline in flight on
  the connection with redis-py's ``TimeoutError`` / ``ConnectionError`` (which
  the store maps to StoreUnavailable; a script whose reply was lost may have
  run), and the next pipeline connects afresh.

Plain TCP and Unix sockets only: a ``rediss://`` (TLS) URL has no
:class:`Endpoint`, and the store keeps redis-py for it. On a Redis Cluster
the runner and the change feed keep one per master, and leave following
MOVED/ASK redirections and reading the topology to redis-py.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import hiredis
from redis import exceptions as rx
from redis.connection import parse_url

__all__ = ["Endpoint", "RespConnection", "pack"]

Arg = str | int | float | bytes

# Error replies with a class of their own in redis-py that the store tells apart
# (runner.py: NOSCRIPT reloads; READONLY means a failover, so "unavailable").
_ERROR_CLASSES: tuple[tuple[str, type[rx.ResponseError]], ...] = (
    ("NOSCRIPT ", rx.NoScriptError),
    ("READONLY ", rx.ReadOnlyError),
)


def pack(*parts: Arg) -> bytes:
    """One command in RESP, packed in C. Raises TypeError for a value that is no str, int, float or bytes."""
    return hiredis.pack_command(parts)  # type: ignore[arg-type,no-any-return]


def _error(reply: rx.ResponseError) -> rx.ResponseError:
    message = str(reply)
    for prefix, cls in _ERROR_CLASSES:
        if message.startswith(prefix):
            return cls(message[len(prefix) :])
    return reply


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to connect: a ``redis://`` or ``unix://`` URL taken apart."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None  # a Unix socket instead of host:port
    db: int = 0
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_url(cls, url: str) -> Endpoint | None:
        """The endpoint of ``url`` as redis-py reads it; None for TLS (``rediss://``)."""
        if url.startswith("rediss://"):
            return None
        parts = parse_url(url)
        return cls(
            host=parts.get("host") or "localhost",
            port=int(parts.get("port") or 6379),
            path=parts.get("path"),
            db=int(parts.get("db") or 0),
            username=parts.get("username"),
            password=parts.get("password"),
        )

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"


class _Pipeline:
    __slots__ = ("count", "future", "replies", "timer")

    def __init__(self, future: asyncio.Future[list[Any]], count: int) -> None:
        self.future = future
        self.count = count
        self.replies: list[Any] = []
        self.timer: asyncio.TimerHandle | None = None


class _Protocol(asyncio.Protocol):
    """One socket: pipelines in the order they were written, replies in the same order."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        self._reader = hiredis.Reader(encoding="utf-8", replyError=rx.ResponseError)
        self.pending: collections.deque[_Pipeline] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but they are the same thing.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        pending = self.pending
        try:
            while pending:
                reply = reader.gets()
                if reply is False:
                    return  # the rest of this reply is still on its way
                pipeline = pending[0]
                pipeline.replies.append(_error(reply) if isinstance(reply, rx.ResponseError) else reply)
                if len(pipeline.replies) == pipeline.count:
                    pending.popleft()
                    if pipeline.timer is not None:
                        pipeline.timer.cancel()
                    if not pipeline.future.done():  # not if its caller was cancelled
                        pipeline.future.set_result(pipeline.replies)
            if reader.gets() is not False:
                self.fail(rx.ConnectionError(f"Redis {self._endpoint} sent a reply nobody asked for"))
        except hiredis.ProtocolError as exc:
            self.fail(rx.ConnectionError(f"Redis {self._endpoint} sent malformed data: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        why = f": {exc}" if exc else ""
        self.fail(rx.ConnectionError(f"connection to Redis {self._endpoint} lost{why}"))

    def fail(self, error: BaseException) -> None:
        """Close the socket and fail every pipeline in flight: their replies can no longer be matched."""
        if self.lost is None:
            self.lost = error
        if self.transport is not None:
            self.transport.abort()
        while self.pending:
            pipeline = self.pending.popleft()
            if pipeline.timer is not None:
                pipeline.timer.cancel()
            if not pipeline.future.done():
                pipeline.future.set_exception(error)


class RespConnection:
    """Pipelines over one socket to one Redis server, connected on first use and after a loss.

    ``execute`` may be called by many tasks at once: each pipeline is written
    whole and its replies are matched in order. ``timeout_s`` bounds the wait
    for a pipeline's replies (``execute`` may give a longer one, e.g. for a
    blocking read); when it passes, the connection is dropped and every
    pipeline in flight on it fails.
    """

    def __init__(
        self, endpoint: Endpoint, *, timeout_s: float, connect_timeout_s: float | None = None
    ) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.connect_timeout_s = timeout_s if connect_timeout_s is None else connect_timeout_s
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None
        self.connects = 0  # sockets opened (tests check reconnects by it)

    @property
    def connected(self) -> bool:
        return self._protocol is not None and self._protocol.lost is None

    async def execute(self, commands: Sequence[bytes], *, timeout_s: float | None = None) -> list[Any]:
        """Send packed ``commands`` as one pipeline; their replies, errors in place."""
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            protocol = await self._connect()
        return await self._send(protocol, b"".join(commands), len(commands), timeout_s)

    async def close(self) -> None:
        """Drop the socket, failing what is in flight on it; a later ``execute`` connects again."""
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.fail(rx.ConnectionError(f"connection to Redis {self.endpoint} closed"))

    def _send(
        self, protocol: _Protocol, payload: bytes, count: int, timeout_s: float | None
    ) -> asyncio.Future[list[Any]]:
        loop = asyncio.get_running_loop()
        pipeline = _Pipeline(loop.create_future(), count)
        protocol.pending.append(pipeline)
        assert protocol.transport is not None
        protocol.transport.write(payload)
        wait = self.timeout_s if timeout_s is None else timeout_s
        pipeline.timer = loop.call_later(wait, self._timed_out, protocol, wait)
        return pipeline.future

    def _timed_out(self, protocol: _Protocol, wait: float) -> None:
        protocol.fail(rx.TimeoutError(f"Redis {self.endpoint} did not answer within {wait:g} s"))

    async def _connect(self) -> _Protocol:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            protocol = self._protocol
            if protocol is not None and protocol.lost is None:
                return protocol  # another task connected while this one waited
            protocol = self._protocol = await self._open()
            return protocol

    async def _open(self) -> _Protocol:
        endpoint = self.endpoint
        loop = asyncio.get_running_loop()
        protocol = _Protocol(endpoint)
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                if endpoint.path is not None:
                    await loop.create_unix_connection(lambda: protocol, endpoint.path)
                else:
                    await loop.create_connection(lambda: protocol, endpoint.host, endpoint.port)
        except TimeoutError:
            raise rx.TimeoutError(f"connecting to Redis {endpoint} timed out") from None
        except OSError as exc:
            raise rx.ConnectionError(f"cannot connect to Redis {endpoint}: {exc}") from exc
        self.connects += 1
        hello: list[Arg] = ["HELLO", 3]
        if endpoint.password is not None:
            hello += ["AUTH", endpoint.username or "default", endpoint.password]
        handshake = [pack(*hello)]
        if endpoint.db:
            handshake.append(pack("SELECT", endpoint.db))
        try:
            replies = await self._send(protocol, b"".join(handshake), len(handshake), None)
        except BaseException:
            protocol.fail(rx.ConnectionError(f"connection to Redis {endpoint} dropped during the handshake"))
            raise
        for reply in replies:
            if isinstance(reply, rx.ResponseError):
                protocol.fail(rx.ConnectionError(f"Redis {endpoint} refused the handshake"))
                # A wrong password is AuthenticationError, as redis-py raises it.
                raise (rx.AuthenticationError if "WRONGPASS" in str(reply) or "NOAUTH" in str(reply)
                       else rx.ResponseError)(f"Redis {endpoint}: {reply}")  # fmt: skip
        return protocol
