"""The engine's own pipelined Redis connection (engine/store/redis/resp.py), against real Redis servers.

What the store relies on: replies matched to the right pipeline however many
tasks share the connection, error replies in place as redis-py's classes, the
same RESP3 values redis-py gives, a timeout or a lost socket failing exactly
the pipelines in flight and the next one connecting again, and the URL's
password, database and Unix socket honoured.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from redis import exceptions as rx
from redis.asyncio import Redis
from store_helpers import unique_namespace

from engine.redis_launcher import RedisServer
from engine.store.redis.resp import Endpoint, RespConnection, pack

pytestmark = [pytest.mark.asyncio, pytest.mark.redis]


@pytest_asyncio.fixture
async def conn(redis_server: RedisServer) -> AsyncIterator[RespConnection]:
    endpoint = Endpoint.from_url(redis_server.url)
    assert endpoint is not None
    connection = RespConnection(endpoint, timeout_s=5.0)
    yield connection
    await connection.close()


def key(name: str) -> str:
    return f"{unique_namespace('resp')}:{name}"


async def test_a_pipeline_gets_its_replies_in_order_with_errors_in_place(conn: RespConnection) -> None:
    k, h = key("k"), key("h")
    replies = await conn.execute(
        [
            pack("SET", k, "v"),
            pack("HSET", h, "a", 1, "b", "x y"),
            pack("EVALSHA", "0" * 40, 0),  # no such script
            pack("INCR", k),  # wrong type: "v" is no integer
            pack("HGETALL", h),
            pack("EVAL", "return {1, 'two', {3}}", 0),
            pack("GET", key("absent")),
        ]
    )
    assert replies[0] == "OK"
    assert replies[1] == 2
    assert isinstance(replies[2], rx.NoScriptError)
    assert type(replies[3]) is rx.ResponseError and "not an integer" in str(replies[3])
    assert replies[4] == {"a": "1", "b": "x y"}  # RESP3: a map, decoded, as redis-py gives it
    assert replies[5] == [1, "two", [3]]
    assert replies[6] is None


async def test_replies_are_those_of_a_redis_py_connection(
    conn: RespConnection, redis_server: RedisServer
) -> None:
    """The change feed read raw replies from a redis-py connection before; they are the same."""
    stream = key("feed")
    client = Redis.from_url(redis_server.url, decode_responses=True)
    try:
        await client.xadd(stream, {"sku": "A", "oh": "5"})
        commands = [("XREAD", "COUNT", 10, "STREAMS", stream, "0-0"), ("XINFO", "STREAM", stream)]
        ours = await conn.execute([pack(*command) for command in commands])
        raw = await client.connection_pool.get_connection()
        try:
            theirs = []
            for command in commands:
                await raw.send_command(*command)
                theirs.append(await raw.read_response())
        finally:
            await client.connection_pool.release(raw)
        assert ours == theirs
        assert list(ours[0]) == [stream] and ours[0][stream][0][1] == ["sku", "A", "oh", "5"]
        assert ours[1]["first-entry"][0] == ours[1]["last-generated-id"]
    finally:
        await client.aclose()


async def test_many_tasks_share_the_connection_and_each_gets_its_own_replies(conn: RespConnection) -> None:
    prefix = key("n")

    async def one(i: int) -> None:
        for step in range(5):
            name = f"{prefix}:{i}"
            got = await conn.execute([pack("SET", name, f"{i}-{step}"), pack("GET", name)])
            assert got == ["OK", f"{i}-{step}"]

    await asyncio.gather(*(one(i) for i in range(200)))
    assert conn.connects == 1


async def test_a_timeout_fails_everything_in_flight_and_the_next_call_reconnects(
    redis_server: RedisServer,
) -> None:
    endpoint = Endpoint.from_url(redis_server.url)
    assert endpoint is not None
    conn = RespConnection(endpoint, timeout_s=0.3)
    try:
        blocked = asyncio.ensure_future(conn.execute([pack("BLPOP", key("never"), 30)]))
        await asyncio.sleep(0.05)
        behind = asyncio.ensure_future(conn.execute([pack("PING")]))  # queued behind the blocked read
        with pytest.raises(rx.TimeoutError):
            await blocked
        with pytest.raises(rx.TimeoutError):
            await behind
        assert await conn.execute([pack("PING")]) == ["PONG"]
        assert conn.connects == 2
        # A longer wait of its own for a blocking read.
        assert await conn.execute([pack("BLPOP", key("never"), 0.5)], timeout_s=3.0) == [None]
    finally:
        await conn.close()


async def test_a_killed_connection_fails_what_is_in_flight_and_the_next_call_reconnects(
    conn: RespConnection, redis_server: RedisServer
) -> None:
    [client_id] = await conn.execute([pack("CLIENT", "ID")])
    blocked = asyncio.ensure_future(conn.execute([pack("BLPOP", key("never"), 30)]))
    await asyncio.sleep(0.05)
    admin = Redis.from_url(redis_server.url)
    try:
        assert await admin.execute_command("CLIENT", "KILL", "ID", client_id) == 1
    finally:
        await admin.aclose()
    with pytest.raises(rx.ConnectionError):
        await blocked
    assert await conn.execute([pack("PING")]) == ["PONG"]
    assert conn.connects == 2


async def test_close_fails_what_is_in_flight_and_a_later_call_connects_again(conn: RespConnection) -> None:
    blocked = asyncio.ensure_future(conn.execute([pack("BLPOP", key("never"), 30)]))
    await asyncio.sleep(0.05)
    await conn.close()
    with pytest.raises(rx.ConnectionError):
        await blocked
    assert not conn.connected
    assert await conn.execute([pack("PING")]) == ["PONG"]


async def test_nothing_listening_is_a_connection_error(redis_server: RedisServer) -> None:
    from engine.launcher import free_port

    conn = RespConnection(Endpoint(host="127.0.0.1", port=free_port()), timeout_s=1.0)
    with pytest.raises(rx.ConnectionError):
        await conn.execute([pack("PING")])


async def test_user_password_database_and_unix_socket_from_the_url(tmp_path: Path) -> None:
    socket_path = tmp_path / "redis.sock"
    config = {"unixsocket": str(socket_path), "unixsocketperm": "700"}
    with RedisServer(tmp_path / "data", extra_config=config) as server:
        admin = Redis(host=server.host, port=server.port, db=3, decode_responses=True)
        try:
            await admin.execute_command("ACL", "SETUSER", "engine", "on", ">s3cret", "~*", "+@all")
            over_tcp = Endpoint.from_url(f"redis://engine:s3cret@{server.host}:{server.port}/3")
            over_unix = Endpoint.from_url(f"unix://engine:s3cret@{socket_path}?db=3")
            wrong = Endpoint.from_url(f"redis://engine:nope@{server.host}:{server.port}/0")
            assert over_tcp is not None and over_unix is not None and wrong is not None
            assert (over_tcp.db, over_tcp.username, over_unix.path) == (3, "engine", str(socket_path))
            tcp = RespConnection(over_tcp, timeout_s=5.0)
            unix = RespConnection(over_unix, timeout_s=5.0)
            try:
                assert await tcp.execute([pack("SET", "shared", "from-tcp")]) == ["OK"]
                assert await unix.execute([pack("GET", "shared")]) == ["from-tcp"]
                assert await admin.get("shared") == "from-tcp"  # database 3, not 0
                with pytest.raises(rx.AuthenticationError):
                    await RespConnection(wrong, timeout_s=5.0).execute([pack("PING")])
            finally:
                await tcp.close()
                await unix.close()
        finally:
            await admin.aclose()


async def test_tls_urls_are_left_to_redis_py() -> None:
    assert Endpoint.from_url("rediss://cache.example:6380/0") is None
    plain = Endpoint.from_url("redis://cache.example:6380/2")
    assert plain == Endpoint(host="cache.example", port=6380, db=2)
    assert str(plain) == "cache.example:6380"


async def test_pack_refuses_what_redis_py_would_refuse() -> None:
    assert pack("EVALSHA", "abc", 1, "k", 2.5) == (
        b"*5\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n$1\r\n1\r\n$1\r\nk\r\n$3\r\n2.5\r\n"
    )
    with pytest.raises(TypeError):
        pack("SET", "k", None)  # type: ignore[arg-type]
