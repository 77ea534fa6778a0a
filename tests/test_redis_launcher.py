"""engine.redis_launcher: real redis-server processes, alone and as a Redis Cluster.

Each test checks what a user of the launcher relies on: the settings the engine
needs, loopback only, data surviving ``restart()`` (clean or after SIGKILL),
clear errors, and no process left behind.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.cluster import ClusterNode, RedisCluster

import engine.redis_launcher as launcher
from engine.redis_launcher import (
    CLUSTER_SLOTS,
    LocalRedisCluster,
    RedisLauncherError,
    RedisNotInstalled,
    RedisServer,
)

pytestmark = pytest.mark.redis

REPO = Path(__file__).resolve().parent.parent


def is_redis_process(pid: int | None) -> bool:
    """Whether ``pid`` is (still) a redis-server, robust to the pid being reused."""
    if pid is None:
        return False
    try:
        return b"redis-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def dbsize(server: RedisServer) -> int:
    with server.client() as client:
        return int(client.dbsize())


@pytest.fixture
def listening_socket() -> Iterator[socket.socket]:
    """A loopback port somebody else is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


def test_a_server_runs_with_the_settings_the_engine_needs(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as server:
        assert server.running and is_redis_process(server.pid)
        assert (server.host, server.url) == ("127.0.0.1", f"redis://127.0.0.1:{server.port}/0")
        assert server.address == f"127.0.0.1:{server.port}"
        with server.client() as client:
            config = client.config_get("*")
            assert client.ping()
        assert config["bind"] == "127.0.0.1"  # loopback only
        assert config["maxmemory-policy"] == "noeviction"
        assert (config["appendonly"], config["appendfsync"], config["save"]) == ("yes", "everysec", "")
        assert config["cluster-enabled"] == "no"
        assert Path(config["dir"]) == (tmp_path / "redis").resolve()
        assert server.config_file.exists() and server.log_file.exists()
        pid = server.pid
    assert not server.running
    assert not is_redis_process(pid)


def test_restart_replays_the_aof_after_a_clean_stop_and_after_sigkill(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", appendfsync="always").start()
    try:
        port = server.port
        with server.client() as client:
            assert client.config_get("appendfsync")["appendfsync"] == "always"
            client.set("before-stop", "1")
        server.stop()  # raises unless Redis exited cleanly
        assert not server.running
        server.stop()  # a no-op now

        server.restart()
        assert server.port == port
        with server.client() as client:
            assert client.get("before-stop") == "1"
            client.set("before-kill", "2")
        killed = server.pid
        server.kill()
        assert not is_redis_process(killed)
        server.kill()  # a no-op now

        server.restart()
        assert server.port == port
        with server.client() as client:
            assert (client.get("before-stop"), client.get("before-kill")) == ("1", "2")
        # restart() of a running server stops it cleanly first.
        running = server.pid
        server.restart()
        assert server.pid != running and not is_redis_process(running)
        with server.client() as client:
            assert client.get("before-kill") == "2"
    finally:
        server.stop()


def test_restart_of_a_server_never_started_starts_it(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    try:
        server.restart()
        assert server.running and server.port
    finally:
        server.stop()


def test_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="appendfsync"):
        RedisServer(tmp_path, appendfsync="no")
    with pytest.raises(ValueError, match="3 masters"):
        LocalRedisCluster(tmp_path, masters=2)


def test_a_given_port_that_is_taken_is_a_clear_error(tmp_path: Path, listening_socket: socket.socket) -> None:
    port = listening_socket.getsockname()[1]
    server = RedisServer(tmp_path / "redis", port=port)
    with pytest.raises(RedisLauncherError, match="taken"):
        server.start()
    assert not server.running


def test_a_picked_port_taken_meanwhile_is_picked_again(
    tmp_path: Path, listening_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = listening_socket.getsockname()[1]
    real = launcher.free_ports
    calls: list[int] = []

    def first_one_taken(count: int) -> list[int]:
        calls.append(count)
        return [taken] if len(calls) == 1 else real(count)

    monkeypatch.setattr(launcher, "free_ports", first_one_taken)
    with RedisServer(tmp_path / "redis") as server:
        assert server.port != taken
        assert len(calls) == 2


def test_missing_binaries_name_the_package_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(RedisNotInstalled, match="redis-server package") as info:
        RedisServer(tmp_path / "redis").start()
    assert "apt-get install redis-server redis-tools" in str(info.value)

    # redis-server alone is not enough for a cluster: redis-cli (redis-tools) creates it,
    # and it is checked before any server starts.
    redis_server = shutil.which("redis-server", path=os.defpath + ":/usr/bin:/usr/local/bin")
    assert redis_server is not None
    (empty / "redis-server").symlink_to(redis_server)
    cluster = LocalRedisCluster(tmp_path / "cluster")
    with pytest.raises(RedisNotInstalled, match="redis-tools package"):
        cluster.start()
    assert not any(node.running for node in cluster.nodes)


def test_servers_left_running_are_killed_when_their_owner_exits(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from engine.redis_launcher import RedisServer\n"
        "print(RedisServer(sys.argv[1]).start().pid, flush=True)\n"  # and never stopped
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "redis")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    pid = int(done.stdout)
    assert not is_redis_process(pid)


# ===================================================================== cluster


def test_the_session_cluster_has_three_masters_covering_every_slot(redis_cluster: LocalRedisCluster) -> None:
    nodes = redis_cluster.nodes
    assert len(nodes) == 3 and len(set(redis_cluster.startup_nodes)) == 3
    assert all(address.startswith("127.0.0.1:") for address in redis_cluster.startup_nodes)
    owners: dict[int, str] = {}
    config_files = set()
    for node in nodes:
        with node.client() as client:
            info = client.execute_command("CLUSTER", "INFO")
            config = client.config_get("*")
            for start, end, master, *replicas in client.execute_command("CLUSTER", "SLOTS"):
                assert replicas == []  # masters only
                for slot in range(start, end + 1):
                    owners[slot] = f"{master[0]}:{master[1]}"
        text = info if isinstance(info, str) else info.decode()
        assert "cluster_state:ok" in text and f"cluster_slots_ok:{CLUSTER_SLOTS}" in text
        assert (config["cluster-enabled"], config["bind"], config["appendonly"]) == (
            "yes",
            "127.0.0.1",
            "yes",
        )
        assert config["maxmemory-policy"] == "noeviction"
        config_files.add(config["cluster-config-file"])
    assert len(config_files) == 3  # one nodes.conf per node
    assert sorted(owners) == list(range(CLUSTER_SLOTS))
    assert set(owners.values()) == set(redis_cluster.startup_nodes)


def test_a_cluster_master_restarted_after_sigkill_rejoins_with_its_data(tmp_path: Path) -> None:
    cluster = LocalRedisCluster(tmp_path / "cluster", appendfsync="always", node_timeout_ms=1000)
    with cluster:
        client = RedisCluster(startup_nodes=[ClusterNode(*a.split(":")) for a in cluster.startup_nodes])
        try:
            for i in range(30):
                client.set(f"key-{i}", str(i))
            sizes = [dbsize(node) for node in cluster.nodes]
            assert all(sizes), f"30 keys should land on every master: {sizes}"
            victim = cluster.nodes[1]
            victim.kill()
            victim.restart()
            cluster.wait_ready()
            assert dbsize(victim) == sizes[1]
            assert [client.get(f"key-{i}") for i in range(30)] == [str(i).encode() for i in range(30)]
        finally:
            client.close()
        pids = [node.pid for node in cluster.nodes]
    assert not cluster.running
    assert not any(is_redis_process(pid) for pid in pids)
