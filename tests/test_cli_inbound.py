"""`inventory-engine inbound add|remove|list` and `quote --backorder` against a real server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import grpc
import pytest
from store_helpers import backing_for, store_factory

from engine._proto.inventory.v1 import network_service_pb2 as net_pb
from engine._proto.inventory.v1 import network_service_pb2_grpc as net_grpc
from engine.cli import main
from engine.service.testing import ServerThread


@pytest.fixture(scope="module")
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    backing = backing_for("embedded-pure", request, tmp_path_factory.mktemp("cli-inbound"))
    with ServerThread(store_factory(backing)) as server:
        with grpc.insecure_channel(server.target) as channel:
            network = net_grpc.NetworkServiceStub(channel)
            network.UpsertNode(net_pb.UpsertNodeRequest(
                node=net_pb.Node(id="dc-east", type=net_pb.NODE_TYPE_DC, latitude=40.7, longitude=-74.0,
                                 time_zone="America/New_York")))  # fmt: skip
            network.UpsertChannel(
                net_pb.UpsertChannelRequest(
                    channel=net_pb.Channel(id="web", nodes=["dc-east"], allow_backorder=True)
                )
            )
        yield server.target


def run(capsys: pytest.CaptureFixture[str], target: str, *argv: str) -> tuple[int, Any]:
    code = main([*argv, "--target", target, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_inbound_commands(capsys: pytest.CaptureFixture[str], target: str) -> None:
    code, added = run(capsys, target, "inbound", "add", "PO-1/1", "SKU-1", "dc-east", "40", "--in-days", "5")
    assert code == 0
    [result] = added["results"]
    assert result["outcome"] == "INBOUND_OUTCOME_CREATED"
    assert result["record"]["kind"] == "INBOUND_KIND_PURCHASE_ORDER"
    # --eta with an offset; the engine answers in UTC.
    local = datetime.fromtimestamp(int(time.time()) + 10 * 86_400, timezone(timedelta(hours=-5)))
    code, added = run(capsys, target, "inbound", "add", "TR-9", "SKU-2", "dc-east", "3", "--eta",
                      local.isoformat(), "--transfer")  # fmt: skip
    [result] = added["results"]
    assert code == 0 and result["record"]["kind"] == "INBOUND_KIND_TRANSFER"
    assert result["record"]["eta"] == local.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    code, listed = run(capsys, target, "inbound", "list", "--sku", "SKU-1")
    assert code == 0 and [r["id"] for r in listed["records"]] == ["PO-1/1"]

    code, quoted = run(capsys, target, "quote", "--channel", "web", "--line", "SKU-1:10",
                       "--postal-code", "10001", "--backorder", "--service-level", "standard")  # fmt: skip
    [option] = quoted["lines"][0]["options"]
    assert option["backorder"] and option["allocations"][0]["supply_ids"] == ["PO-1/1"]

    code, removed = run(capsys, target, "inbound", "remove", "PO-1/1", "nope")
    assert (code, removed["deleted_ids"], removed["not_found_ids"]) == (0, ["PO-1/1"], ["nope"])

    code, failed = run(capsys, target, "inbound", "add", "PO-2", "SKU-1", "dc-zz", "1", "--in-days", "1")
    assert code == 2 and failed["error"]["reason"] == "NODE_NOT_FOUND"
