"""Start an engine server as a child process and wait until it serves.

Used by the benchmarks, the crash tests and the load tests: anything that needs
a real server in its own process (its own GIL, killable with SIGKILL).
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

__all__ = ["free_port", "free_ports", "start_server", "wait_serving"]


def free_port() -> int:
    """A free loopback TCP port (the kernel's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback TCP ports.

    The sockets stay bound until all are chosen, so the kernel cannot hand out
    the same port twice (separate ``free_port()`` calls may).
    """
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def start_server(
    port: int,
    data_dir: str | None,
    extra: Sequence[str] = (),
    *,
    log_level: str = "WARNING",
    stderr: int | None = None,
    metrics_port: int = 0,
) -> subprocess.Popen[bytes]:
    """``inventory-engine serve`` on 127.0.0.1:port (``data_dir=None``: memory only)."""
    store_args = ["--data-dir", data_dir] if data_dir is not None else ["--memory"]
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "--log-level",
            log_level,
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            *store_args,
            # Off unless asked: the CLI's default port would collide between servers.
            "--metrics-port",
            str(metrics_port),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )


async def wait_serving(
    target: str, timeout_s: float = 60.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll the standard health service until it answers SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"server process exited with {process.returncode} before serving")
            try:
                resp = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server at {target} did not become ready in {timeout_s} s")
            await asyncio.sleep(0.05)
