"""Structured logs: one JSON object per line, and the RPC's request id on every line logged serving it."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from engine._proto.inventory.v1 import inventory_service_pb2 as inv_pb
from engine._proto.inventory.v1 import inventory_service_pb2_grpc as inv_grpc
from engine.config import EmbeddedStoreConfig, ServerConfig
from engine.core.types import ReserveRequest
from engine.launcher import free_port, wait_serving
from engine.observability.logs import configure_logging
from engine.service.errors import decode_error
from engine.service.testing import ServerThread
from engine.store.embedded import EmbeddedStore

store_log = logging.getLogger("tests.logs.store")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_lines_carry_the_fields_extras_and_tracebacks(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", "json", stream=stream)
    log = logging.getLogger("tests.logs")
    log.info("two\nlines", extra={"sku": "SKU-1", "units": 3})
    try:
        raise ValueError("broken")
    except ValueError:
        log.exception("it failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, "a record is always one line"
    first, second = map(json.loads, lines)
    assert first["message"] == "two\nlines"
    assert first["level"] == "INFO"
    assert first["logger"] == "tests.logs"
    assert first["sku"] == "SKU-1" and first["units"] == 3
    assert first["pid"] == os.getpid()
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert "request_id" not in first, "no RPC was being served"
    assert second["level"] == "ERROR"
    assert "ValueError: broken" in second["exception"]


def test_levels_and_formats(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("warning", "text", worker=2, stream=stream)
    logging.getLogger("tests.logs").info("hidden")
    logging.getLogger("tests.logs").warning("shown")
    assert stream.getvalue().count("\n") == 1
    assert "worker-2 " in stream.getvalue() and "WARNING tests.logs: shown" in stream.getvalue()
    with pytest.raises(ValueError):
        configure_logging("INFO", "xml")


class LoggingStore:
    """The real store; ``reserve`` logs a line, and fails when ``fail`` is set."""

    def __init__(self, inner: EmbeddedStore) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.fail = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def reserve(self, request: ReserveRequest) -> Any:
        store_log.info("reserving %s", request.reservation_id)
        if self.fail:
            raise RuntimeError("disk on fire")
        return await self.inner.reserve(request)


@pytest.fixture
def server() -> Iterator[ServerThread]:
    async def make() -> LoggingStore:
        inner = EmbeddedStore(EmbeddedStoreConfig(data_dir=None, ledger_impl="pure"))
        await inner.start()
        return LoggingStore(inner)

    with ServerThread(make, ServerConfig(listen="127.0.0.1:0", grace_s=1.0, audit_interval_s=0)) as running:
        yield running


def reserve(reservation_id: str) -> inv_pb.ReserveRequest:
    return inv_pb.ReserveRequest(
        reservation_id=reservation_id,
        channel="web",
        lines=[inv_pb.LineRequest(sku="A", quantity=1)],
        ttl=Duration(seconds=60),
    )


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_lines_logged_while_serving_an_rpc_carry_its_request_id(
    server: ServerThread, restore_logging: None, log_format: str
) -> None:
    stream = io.StringIO()
    configure_logging("INFO", log_format, stream=stream)

    async def break_store() -> None:
        server.store.fail = True  # type: ignore[union-attr]

    server.run(break_store())
    with grpc.insecure_channel(server.target) as channel:
        stub = inv_grpc.InventoryServiceStub(channel)
        # The client's own id...
        with pytest.raises(grpc.RpcError) as mine:
            stub.Reserve(reserve("r-1"), metadata=(("x-request-id", "checkout-42"),))
        # ...or one the server makes up and returns.
        with pytest.raises(grpc.RpcError) as theirs:
            stub.Reserve(reserve("r-2"))
    returned = dict(theirs.value.trailing_metadata())["x-request-id"]  # type: ignore[attr-defined]
    assert returned and returned != "checkout-42"
    assert decode_error(mine.value).request_id == "checkout-42"
    text = stream.getvalue()
    if log_format == "json":
        records = json_lines(text)
        by_request: dict[str, list[str]] = {}
        for record in records:
            by_request.setdefault(record.get("request_id", ""), []).append(record["message"])
        # The store's line and the servicer's error line (with its traceback), each under its call's id.
        assert by_request["checkout-42"][0] == "reserving r-1"
        assert by_request["checkout-42"][1].startswith("internal error serving request checkout-42")
        assert by_request[returned][0] == "reserving r-2"
        assert len(by_request[returned]) == 2
        assert all("RuntimeError: disk on fire" in r["exception"] for r in records if r["level"] == "ERROR")
    else:
        assert "reserving r-1 request_id=checkout-42" in text
        assert f"reserving r-2 request_id={returned}" in text


def test_serve_with_log_format_json_writes_only_json_lines() -> None:
    port = free_port()
    env = {**os.environ, "GRPC_VERBOSITY": "NONE"}
    process = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "--log-format", "json", "serve", "--memory",
         "--listen", f"127.0.0.1:{port}", "--metrics-port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )  # fmt: skip
    try:
        asyncio.run(wait_serving(f"127.0.0.1:{port}", process=process))
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err.decode()
    records = json_lines(err.decode())
    assert any(r["message"].startswith("serving on 127.0.0.1:") for r in records)
    assert all({"time", "level", "logger", "message", "pid"} <= r.keys() for r in records)
