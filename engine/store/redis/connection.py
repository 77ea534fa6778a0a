"""Building the redis-py client, and checking the server settings the store relies on.

The clients never retry by themselves: redis-py's default is to resend a
command after a connection error or timeout, and a script whose reply was lost
may already have run (an adjustment without an event id would be applied
twice). The store reports StoreUnavailable instead and leaves the retry to the
caller, who knows whether the operation is idempotent.
"""

from __future__ import annotations

import logging

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from engine.config import RedisStoreConfig

__all__ = ["WANTED_SETTINGS", "check_settings", "make_client"]

log = logging.getLogger("engine.store.redis")

# setting -> (acceptable values, why)
WANTED_SETTINGS: dict[str, tuple[frozenset[str], str]] = {
    "maxmemory-policy": (
        frozenset({"noeviction"}),
        "Redis may evict keys when memory is full: reservations and stock counters would vanish",
    ),
    "appendonly": (
        frozenset({"yes"}),
        "without AOF a Redis restart loses every write since the last RDB snapshot, "
        "acknowledged reservations included",
    ),
    "appendfsync": (
        frozenset({"always", "everysec"}),
        "with appendfsync no, the OS decides when the AOF reaches the disk: a machine crash "
        "can lose many seconds of acknowledged writes (everysec: up to one second; always: none)",
    ),
}


def make_client(config: RedisStoreConfig) -> Redis | RedisCluster:
    common = {
        "decode_responses": True,
        "socket_timeout": config.socket_timeout_s,
        "socket_connect_timeout": config.socket_timeout_s,
        "retry": Retry(NoBackoff(), 0),
    }
    if config.url is not None:
        return Redis.from_url(config.url, retry_on_error=[], **common)  # type: ignore[arg-type]
    nodes = []
    for address in config.cluster_nodes:
        host, _, port = address.rpartition(":")
        nodes.append(ClusterNode(host, int(port)))
    return RedisCluster(startup_nodes=nodes, require_full_coverage=True, **common)  # type: ignore[arg-type]


async def _servers(client: Redis | RedisCluster) -> list[tuple[str, dict[str, object]]]:
    if isinstance(client, RedisCluster):
        return [(node.name, {"target_nodes": node}) for node in client.get_primaries()]
    kwargs = client.connection_pool.connection_kwargs
    return [(f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}", {})]


async def check_settings(client: Redis | RedisCluster) -> list[str]:
    """Log (and return) a warning for each server setting that puts data at risk."""
    warnings: list[str] = []
    for name, target in await _servers(client):
        for setting, (wanted, why) in WANTED_SETTINGS.items():
            try:
                reply = await client.execute_command("CONFIG GET", setting, **target)
            except rx.ResponseError as exc:
                # CONFIG is often renamed or disabled on managed Redis.
                message = (
                    f"Redis {name}: could not check {setting} ({exc}); make sure it is one of "
                    f"{', '.join(sorted(wanted))}: {why}"
                )
                warnings.append(message)
                log.warning(message)
                continue
            value = reply.get(setting) if isinstance(reply, dict) else None
            if value not in wanted:
                message = f"Redis {name}: {setting} is {value!r}, want {' or '.join(sorted(wanted))}: {why}"
                warnings.append(message)
                log.warning(message)
    return warnings
