"""`inventory-engine bench redis`: the reserve script against a bare 2-key EVALSHA.

One run starts its own ``redis-server`` (AOF ``everysec``, as the README
recommends), loads a catalogue through the Redis store, and then drives two
kinds of command the same way with the pipelined driver of
:mod:`engine.bench.redis_driver`, in alternating rounds:

- ``reserve``: the exact ``EVALSHA`` the store sends for a one-line
  reservation (taken from :meth:`RedisStore.reserve_script_call`, so keys and
  arguments are the real ones), each with its own reservation id, on SKUs
  spread over the shards, every one of which succeeds (stock is ample);
- ``bare``: ``EVALSHA`` of a script that only returns, with 2 keys.

``ratio = script_ops_per_s / bare_ops_per_s`` is what the reserve script's
own work costs on top of Redis' per-call overhead for a script.

A third kind, ``floor``, explains that ratio: a script that makes the same
Redis commands as a one-line reserve (expiry scan, directory and row reads,
row, hold, expiry index, directory and counter writes, one feed entry) on
keys of the same shape, with no logic between them. ``floor_ops_per_s`` is
what any reserve script issuing those commands can reach, so
``script_ops_per_s / floor_ops_per_s`` (``logic_ratio``) is the share left
to our Lua code, and ``floor_ops_per_s / bare_ops_per_s`` the share Redis
itself takes for the commands.

Where a script's time goes inside Redis, from ``INFO commandstats`` over each
round (statistics reset before it): ``reserve_redis_us`` is the reserve
``EVALSHA``'s own time per call as Redis measures it, ``reserve_commands_us``
the part of it spent in the commands the script makes (their own entries in
the statistics), so ``reserve_lua_us``, the difference, is the script's code
(reading its arguments, building strings and tables, converting its reply)
plus what each ``redis.call`` costs around its command. ``floor_redis_us``
and ``floor_commands_us`` are the same for the floor script.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import tempfile
from typing import Any

from engine.bench.redis_driver import drive
from engine.store.redis.resp import pack

__all__ = ["run"]

_SKUS = 5_000
_NODES = ("dc-1", "dc-2", "dc-3")


async def _commands(url: str, count: int, rounds: int) -> tuple[list[list[bytes]], str]:
    from engine.config import RedisStoreConfig
    from engine.core.types import Channel, LineRequest, Node, NodeType, ReserveRequest, SupplyKind, SupplyOp
    from engine.store.redis import RedisStore

    store = RedisStore(RedisStoreConfig(url=url, namespace="bench", check_settings=False))
    await store.start()
    try:
        for node in _NODES:
            await store.upsert_node(Node(id=node, type=NodeType.DC))
        await store.upsert_channel(Channel(id="web", nodes=_NODES))
        ops = [
            SupplyOp(SupplyKind.SET, f"B-{i:05d}", node, 1_000_000_000, 1)
            for i in range(_SKUS)
            for node in _NODES
        ]
        for start in range(0, len(ops), 500):
            await store.apply_supply(ops[start : start + 500])
        rng = random.Random(7)
        batches: list[list[bytes]] = []
        for r in range(rounds):
            batch = []
            for i in range(count):
                request = ReserveRequest(
                    reservation_id=f"bench-{r}-{i}",
                    channel="web",
                    lines=(LineRequest(f"B-{rng.randrange(_SKUS):05d}", 1),),
                    ttl_s=3600.0,
                )
                sha, keys, args = store.reserve_script_call(request)
                batch.append(pack("EVALSHA", sha, len(keys), *keys, *args))
            batches.append(batch)
        return batches, await store.client.script_load("return 1")
    finally:
        await store.close()


# The commands of a one-line reserve, as reserve.lua makes them (see lib.lua).
_FLOOR_SCRIPT = """
local now, rid = ARGV[1], ARGV[2]
redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
redis.call('HMGET', KEYS[1], 'b', 'st')
local r = redis.call('HMGET', KEYS[4], 'n:oh', 'n:rs', 'n:cm', 'n:ss', 'n:v')
redis.call('HSET', KEYS[5], 'ca', now, 'ea', now, 'xm', now, 'L0', rid .. '\t1\tn\t1\tn\t1')
redis.call('SADD', KEYS[6], rid)
redis.call('ZADD', KEYS[3], now + 3600000, rid)
redis.call('HSET', KEYS[1], 'b', rid, 'st', 'DONE', 'sh', '1')
redis.call('HINCRBY', KEYS[2], 'done', 1)
redis.call('HSET', KEYS[4], 'n:rs', tonumber(r[2] or 0) + 1)
redis.call('XADD', KEYS[7], 'MAXLEN', '~', 100000, '*', 'sku', rid, 'node', 'n', 'oh', '1', 'rs', '1',
  'cm', '0', 'ss', '0', 'v', '1')
return 1
"""


def _floor_commands(sha: str, count: int, r: int) -> list[bytes]:
    out = []
    for i in range(count):
        rid = f"floor-{r}-{i}"
        tag = f"{{f{i % 256}}}"  # 256 shards, like the store's
        keys = [f"fl:{tag}:d:{rid}", f"fl:{tag}:m", f"fl:{tag}:x", f"fl:{tag}:s:S{i % _SKUS}",
                f"fl:{tag}:r:{rid}", f"fl:{tag}:rids", f"fl:{tag}:feed"]  # fmt: skip
        out.append(pack("EVALSHA", sha, len(keys), *keys, 1_700_000_000_000 + i, rid))
    return out


def _split(commandstats: dict[str, Any]) -> tuple[float, float]:
    """Per EVALSHA since the statistics were reset: its own time (us) as Redis
    measures it, and the time of the commands the scripts made inside it."""
    evalsha = commandstats["cmdstat_evalsha"]
    inner = sum(
        entry["usec"]
        for name, entry in commandstats.items()
        # Everything else in the round ran inside the scripts, but our own statistics calls.
        if name not in ("cmdstat_evalsha", "cmdstat_info") and not name.startswith("cmdstat_config")
    )
    calls = int(evalsha["calls"])
    return float(evalsha["usec"]) / calls, inner / calls


async def _bench(host: str, port: int, url: str, count: int, rounds: int) -> dict[str, Any]:
    import redis.asyncio as aioredis

    reserve_rounds, bare_sha = await _commands(url, count, rounds)
    script_rates: list[float] = []
    bare_rates: list[float] = []
    floor_rates: list[float] = []
    # (script's own time, its commands' time) per call, by round, from INFO commandstats.
    script_split: list[tuple[float, float]] = []
    floor_split: list[tuple[float, float]] = []
    stats = aioredis.Redis(host=host, port=port)
    try:
        floor_sha = await stats.script_load(_FLOOR_SCRIPT)
        for r in range(rounds):
            bare = [
                pack("EVALSHA", bare_sha, 2, f"bench:{{b}}:k{i}", f"bench:{{b}}:j{i}")
                for i in range(count)
            ]
            result = await drive(host, port, bare)
            bare_rates.append(result.ops_per_s)
            for name, commands, rates, split in (
                ("reserve", reserve_rounds[r], script_rates, script_split),
                ("floor", _floor_commands(floor_sha, count, r), floor_rates, floor_split),
            ):
                await stats.config_resetstat()
                result = await drive(host, port, commands)
                if result.errors:
                    raise RuntimeError(f"{name} script failed {result.errors} times: {result.first_error}")
                rates.append(result.ops_per_s)
                split.append(_split(await stats.info("commandstats")))
    finally:
        await stats.aclose()
    script = statistics.median(script_rates)
    bare_ops = statistics.median(bare_rates)
    floor = statistics.median(floor_rates)
    reserve_us = statistics.median(total for total, _ in script_split)
    reserve_commands_us = statistics.median(commands for _, commands in script_split)
    return {
        "reserve_redis_us": round(reserve_us, 2),
        "reserve_commands_us": round(reserve_commands_us, 2),
        "reserve_lua_us": round(reserve_us - reserve_commands_us, 2),
        "floor_redis_us": round(statistics.median(total for total, _ in floor_split), 2),
        "floor_commands_us": round(statistics.median(commands for _, commands in floor_split), 2),
        "script_ops_per_s": round(script, 1),
        "bare_evalsha_ops_per_s": round(bare_ops, 1),
        "ratio": round(script / bare_ops, 3),
        "floor_ops_per_s": round(floor, 1),
        "logic_ratio": round(script / floor, 3),
        "floor_ratio": round(floor / bare_ops, 3),
        "rounds": rounds,
        "commands_per_round": count,
        "script_rounds": [round(x, 1) for x in script_rates],
        "bare_rounds": [round(x, 1) for x in bare_rates],
    }


def run(count: int = 100_000, rounds: int = 3) -> dict[str, Any]:
    """Start Redis, measure, stop it; returns the figures (see module docstring)."""
    from engine.redis_launcher import RedisServer

    with tempfile.TemporaryDirectory(prefix="inventory-bench-redis-") as tmp, RedisServer(tmp) as redis:
        result = asyncio.run(_bench(redis.host, redis.port, redis.url, count, rounds))
    result.update({"store": "redis", "appendfsync": "everysec", "cpus": os.cpu_count()})
    result["target_met"] = result["ratio"] >= 0.7
    return result
