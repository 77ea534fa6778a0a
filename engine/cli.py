"""The ``inventory-engine`` command: run the server, talk to it, audit, benchmark.

This is the edge: the only module that reads argv and the environment
(``ENGINE_IMPL``). It builds the frozen config objects and hands them down.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

DEFAULT_TARGET = "127.0.0.1:50051"
log = logging.getLogger("engine.cli")


# ---------------------------------------------------------------------- serve


def _ledger_impl(args: argparse.Namespace) -> str:
    impl: str = args.impl or os.environ.get("ENGINE_IMPL", "fast")
    if impl not in ("fast", "pure"):
        raise SystemExit(f"ENGINE_IMPL must be 'fast' or 'pure', not {impl!r}")
    return impl


def _redis_config(args: argparse.Namespace) -> Any:
    """The RedisStoreConfig for ``--redis``/``--redis-cluster``, or None for the embedded store."""
    from engine.config import RedisStoreConfig

    if args.redis and args.redis_cluster:
        raise SystemExit("give --redis or --redis-cluster, not both")
    if args.redis:
        return RedisStoreConfig(url=args.redis, namespace=args.redis_namespace)
    if args.redis_cluster:
        nodes = tuple(n.strip() for n in args.redis_cluster.split(",") if n.strip())
        return RedisStoreConfig(cluster_nodes=nodes, namespace=args.redis_namespace)
    return None


def _carriers(path: str | None, option: str = "--carriers ") -> Any:
    """The carrier table of ``serve --carriers`` (or ``carriers set``), checked
    before anything starts (or is sent)."""
    if path is None:
        return None
    from engine.core.carriers import load_carriers
    from engine.core.errors import InvalidArgument

    try:
        return load_carriers(path)
    except OSError as exc:
        raise SystemExit(f"{option}{path}: {exc.strerror or exc}") from None
    except InvalidArgument as exc:
        problems = "\n".join(f"  {v.field or '(document)'}: {v.description}" for v in exc.violations)
        raise SystemExit(f"{option}{path}: {exc.message}\n{problems}") from None


async def _maybe_load_demo(store: Any, wanted: bool) -> None:
    from engine.demo import load_demo

    if not wanted:
        return
    if await load_demo(store):
        log.info("loaded the demo network and catalogue")
    else:
        log.info("the store already has a network; demo data not reloaded")


def _load_demo_into_redis(redis_config: Any) -> None:
    """Before the workers start: one process loads the demo, not N racing ones."""
    import asyncio

    from engine.store.redis import RedisStore

    async def load() -> None:
        store = RedisStore(redis_config)
        await store.start()
        try:
            await _maybe_load_demo(store, True)
        finally:
            await store.close()

    asyncio.run(load())


def cmd_serve(args: argparse.Namespace) -> int:
    from engine.config import EmbeddedStoreConfig, ServerConfig

    server_config = ServerConfig(
        listen=args.listen,
        grace_s=args.grace,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        audit_interval_s=args.audit_interval,
        carriers=_carriers(args.carriers),
    )
    redis_config = _redis_config(args)
    if args.workers != 1:
        if redis_config is None:
            raise SystemExit(
                "--workers needs --redis or --redis-cluster: embedded stores in several "
                "processes would be several different ledgers"
            )
        return _serve_workers(args, server_config, redis_config)

    async def make_store() -> Any:
        store: Any
        if redis_config is not None:
            from engine.store.redis import RedisStore

            store = RedisStore(redis_config)
        else:
            from engine.store.embedded import EmbeddedStore

            store = EmbeddedStore(
                EmbeddedStoreConfig(
                    data_dir=None if args.memory else Path(args.data_dir),
                    ledger_impl=_ledger_impl(args),
                    fsync=not args.no_fsync,
                )
            )
        await store.start()
        await _maybe_load_demo(store, args.demo)
        return store

    from engine.service.server import run

    run(server_config, make_store)
    return 0


def _serve_workers(args: argparse.Namespace, server_config: Any, redis_config: Any) -> int:
    from engine.observability.exposition import (
        create_multiprocess_dir,
        enable_multiprocess,
        remove_multiprocess_dir,
    )

    # Multiprocess metrics are chosen before anything defines a metric (see
    # engine/observability/exposition.py), so before the engine's modules load.
    metrics_dir = create_multiprocess_dir() if args.metrics_port else None
    if metrics_dir is not None:
        enable_multiprocess(metrics_dir)
    try:
        from engine.service.workers import WorkerSupervisor

        if args.demo:
            _load_demo_into_redis(redis_config)
        supervisor = WorkerSupervisor(
            args.workers,
            server_config,
            redis_config,
            log_level=args.log_level.upper(),
            log_format=args.log_format,
            metrics_dir=metrics_dir,
        )
        return supervisor.run()
    finally:
        if metrics_dir is not None:
            remove_multiprocess_dir(metrics_dir)


# -------------------------------------------------------------------- clients


def _stubs(target: str) -> Any:
    import grpc

    from engine._proto.inventory.v1 import (
        admin_service_pb2_grpc,
        inventory_service_pb2_grpc,
        network_service_pb2_grpc,
        supply_service_pb2_grpc,
    )

    channel = grpc.insecure_channel(target)

    class Stubs:
        inventory = inventory_service_pb2_grpc.InventoryServiceStub(channel)
        supply = supply_service_pb2_grpc.SupplyServiceStub(channel)
        network = network_service_pb2_grpc.NetworkServiceStub(channel)
        admin = admin_service_pb2_grpc.AdminServiceStub(channel)

    return Stubs


def _to_dict(message: Any) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def _print(args: argparse.Namespace, message: Any, human: Callable[[Any], str]) -> None:
    if args.json:
        print(json.dumps(_to_dict(message), sort_keys=True))
    else:
        print(human(message))


def _error_text(exc: Any) -> dict[str, Any]:
    """A gRPC error and its google.rpc.Status details, for people and scripts."""
    from engine.service.errors import decode_error

    details = decode_error(exc)
    out: dict[str, Any] = {"code": details.code.name, "message": details.message, "reason": details.reason}
    if details.request_id:
        out["request_id"] = details.request_id
    if details.field_violations:
        out["field_violations"] = [
            {"field": v.field, "description": v.description} for v in details.field_violations
        ]
    if details.shortfalls:
        out["shortfalls"] = [
            {"line_index": s.line_index, "sku": s.sku, "requested": s.requested, "available": s.available}
            for s in details.shortfalls
        ]
    return out


def _call(args: argparse.Namespace, fn: Callable[[], Any], human: Callable[[Any], str]) -> int:
    import grpc

    try:
        response = fn()
    except grpc.RpcError as exc:
        err = _error_text(exc)
        if args.json:
            print(json.dumps({"error": err}, sort_keys=True))
        else:
            print(f"error: {err['code']} {err.get('reason', '')}: {err['message']}", file=sys.stderr)
            for v in err.get("field_violations", []):
                print(f"  {v['field']}: {v['description']}", file=sys.stderr)
            for s in err.get("shortfalls", []):
                print(
                    f"  line {s['line_index']} {s['sku']}: requested {s['requested']},"
                    f" available {s['available']}",
                    file=sys.stderr,
                )
        return 2
    _print(args, response, human)
    return 0


def _reservation_text(r: Any) -> str:
    from engine._proto.inventory.v1 import inventory_service_pb2 as pb

    state = pb.ReservationState.Name(r.state).removeprefix("RESERVATION_STATE_")
    lines = [f"reservation {r.reservation_id} [{r.channel}] {state} expires {r.expire_time.ToJsonString()}"]
    for line in r.lines:
        allocs = ", ".join(f"{a.quantity}@{a.node}" for a in line.allocations) or "-"
        line_state = pb.ReservationState.Name(line.state).removeprefix("RESERVATION_STATE_")
        # Promise dates come only in Reserve's answer to a request with a fulfillment context.
        promise = ""
        if line.HasField("ready_time"):
            promise = f", ready {_local_time(line.ready_time, line.ready_time_zone)}"
        elif line.HasField("promise_date"):
            promise = f", delivered {_pb_date(line.promise_date)}"
        if line.backorder:
            arrivals = [
                a.available_time.ToJsonString() for a in line.allocations if a.HasField("available_time")
            ]
            promise += f", backorder: supply {' '.join(arrivals) or '?'}"
        lines.append(
            f"  [{line.line_index}] {line.sku} x{line.requested_quantity}: {allocs} ({line_state}{promise})"
        )
    return "\n".join(lines)


def _parse_line(text: str) -> tuple[str, int, str]:
    """SKU:QTY or SKU:QTY@NODE."""
    try:
        sku, rest = text.rsplit(":", 1)
        qty, _, node = rest.partition("@")
        return sku, int(qty), node
    except ValueError:
        raise SystemExit(f"--line {text!r}: expected SKU:QTY or SKU:QTY@NODE") from None


def cmd_availability(args: argparse.Namespace) -> int:
    from engine._proto.inventory.v1 import inventory_service_pb2 as pb

    stubs = _stubs(args.target)
    request = pb.GetAvailabilityRequest(
        skus=args.skus,
        channel=args.channel or "",
        nodes=args.node or [],
        include_nodes=args.nodes,
        include_future=args.future,
    )

    def dated(steps: Any, indent: str) -> list[str]:
        return [
            f"{indent}from {s.time.ToJsonString()}: {s.atp}"
            + (f"  ({', '.join(s.supply_ids)})" if s.supply_ids else "")
            for s in steps
        ]

    def human(resp: Any) -> str:
        out = []
        for a in resp.availabilities:
            out.append(f"{a.sku}: {a.atp}")
            out.extend(dated(a.future, "  "))
            for n in a.nodes:
                out.append(
                    f"  {n.node:<12} atp {n.atp:>6}  on_hand {n.on_hand:>6}  reserved {n.reserved:>5}"
                    f"  committed {n.committed:>5}  safety {n.safety_stock:>4}"
                )
                out.extend(dated(n.future, "    "))
        return "\n".join(out)

    return _call(args, lambda: stubs.inventory.GetAvailability(request, timeout=args.timeout), human)


def _pb_date(d: Any) -> str:
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}" if d.year else "-"


def _local_time(ts: Any, zone: str) -> str:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    return datetime.fromtimestamp(ts.ToSeconds(), ZoneInfo(zone or "UTC")).strftime("%Y-%m-%d %H:%M %Z")


def _quote_text(resp: Any) -> str:
    from engine._proto.inventory.v1 import inventory_service_pb2 as pb

    out = [f"quote at {resp.quote_time.ToJsonString()}"]
    for line in resp.lines:
        out.append(f"[{line.line_index}] {line.sku} x{line.quantity}")
        if not line.options:
            out.append("  no option: not enough stock for any accepted method")
        for o in line.options:
            method = pb.FulfillmentMethod.Name(o.method).removeprefix("FULFILLMENT_METHOD_")
            when = (
                f"ready {_local_time(o.ready_time, o.ready_time_zone)}"
                if o.HasField("ready_time")
                else f"delivered {_pb_date(o.promise_date)}"
            )
            parts = []
            for a in o.allocations:
                source = pb.SupplySource.Name(a.source).removeprefix("SUPPLY_SOURCE_").lower()
                where = f"{a.quantity}@{a.node} {source}"
                if a.HasField("ship_date"):
                    where += f", leaves {_pb_date(a.ship_date)}"
                if a.HasField("distance_km"):
                    where += f", {a.distance_km:.0f} km"
                if a.HasField("available_time"):
                    where += f", arrives {a.available_time.ToJsonString()} ({', '.join(a.supply_ids)})"
                parts.append(where)
            split = " (split)" if o.split else ""
            split += " (backorder)" if o.backorder else ""
            out.append(f"  {method:<6} {o.service_level or '-':<9} {when}{split}: {'; '.join(parts)}")
    return "\n".join(out)


def cmd_quote(args: argparse.Namespace) -> int:
    from engine._proto.inventory.v1 import inventory_service_pb2 as pb

    stubs = _stubs(args.target)
    lines = []
    for text in args.line:
        sku, qty, node = _parse_line(text)
        if node:
            raise SystemExit(f"--line {text!r}: a quote takes SKU:QTY (the engine chooses the nodes)")
        lines.append(pb.QuoteLine(sku=sku, quantity=qty))
    request = pb.QuoteRequest(
        channel=args.channel,
        lines=lines,
        pickup_store=args.pickup or "",
        methods=[pb.FulfillmentMethod.Value(f"FULFILLMENT_METHOD_{m.upper()}") for m in args.method or []],
        service_levels=args.service_level or [],
        allow_split=args.split,
        allow_backorder=args.backorder,
    )
    if args.postal_code or args.lat is not None or args.lon is not None or args.region:
        request.destination.postal_code = args.postal_code or ""
        request.destination.region = args.region or ""
        if args.lat is not None:
            request.destination.latitude = args.lat
        if args.lon is not None:
            request.destination.longitude = args.lon
    return _call(args, lambda: stubs.inventory.Quote(request, timeout=args.timeout), _quote_text)


def cmd_find_in_stores(args: argparse.Namespace) -> int:
    from engine._proto.inventory.v1 import inventory_service_pb2 as pb

    stubs = _stubs(args.target)
    request = pb.FindInStoresRequest(
        channel=args.channel,
        store=args.store,
        sku=args.sku,
        quantity=args.quantity,
        max_stores=args.max_stores,
    )

    def row(s: Any) -> str:
        ready = _local_time(s.pickup_time, s.time_zone) if s.HasField("pickup_time") else "-"
        return f"  {s.node:<12} {s.name:<24} atp {s.atp:>5}  {s.distance_km:>7.0f} km  pickup {ready}"

    def human(resp: Any) -> str:
        out = [f"{resp.sku} x{resp.quantity} at {resp.store.node}:", row(resp.store), "nearby:"]
        out.extend(row(s) for s in resp.nearby_stores)
        if not resp.nearby_stores:
            out.append("  none holds the quantity")
        return "\n".join(out)

    return _call(args, lambda: stubs.inventory.FindInStores(request, timeout=args.timeout), human)


def cmd_reserve(args: argparse.Namespace) -> int:
    from google.protobuf.duration_pb2 import Duration

    from engine._proto.inventory.v1 import inventory_service_pb2 as pb

    stubs = _stubs(args.target)
    lines = [pb.LineRequest(sku=s, quantity=q, node=n) for s, q, n in map(_parse_line, args.line)]
    request = pb.ReserveRequest(
        reservation_id=args.reservation_id,
        channel=args.channel,
        lines=lines,
        ttl=Duration(seconds=args.ttl),
        allow_partial=args.partial,
    )
    if args.ship_to and args.pickup:
        raise SystemExit("give --ship-to or --pickup, not both")
    if args.ship_to or args.pickup:
        # A fulfillment context: the engine sources by promise and dates the answer.
        f = request.fulfillment
        if args.ship_to:
            f.method = pb.FULFILLMENT_METHOD_SHIP
            f.destination.postal_code = args.ship_to
        else:
            f.method = pb.FULFILLMENT_METHOD_PICKUP
            f.pickup_store = args.pickup
        f.service_level = args.service_level or ""
        f.allow_split = args.split
        f.allow_backorder = args.backorder
    elif args.service_level or args.split or args.backorder:
        raise SystemExit("--service-level, --split and --backorder need --ship-to or --pickup")
    return _call(args, lambda: stubs.inventory.Reserve(request, timeout=args.timeout), _reservation_text)


def _simple_reservation_call(method: str, with_lines: bool) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        from engine._proto.inventory.v1 import inventory_service_pb2 as pb

        stubs = _stubs(args.target)
        request_type = getattr(pb, f"{method}Request")
        kwargs: dict[str, Any] = {"reservation_id": args.reservation_id}
        if with_lines:
            kwargs["line_indexes"] = args.line or []
        request = request_type(**kwargs)
        rpc = getattr(stubs.inventory, method)
        return _call(args, lambda: rpc(request, timeout=args.timeout), _reservation_text)

    return command


def cmd_extend(args: argparse.Namespace) -> int:
    from google.protobuf.duration_pb2 import Duration

    from engine._proto.inventory.v1 import inventory_service_pb2 as pb

    stubs = _stubs(args.target)
    request = pb.ExtendReservationRequest(reservation_id=args.reservation_id, ttl=Duration(seconds=args.ttl))
    return _call(
        args, lambda: stubs.inventory.ExtendReservation(request, timeout=args.timeout), _reservation_text
    )


def _supply_text(resp: Any) -> str:
    out = []
    for r in resp.results:
        lvl = r.level
        flag = "applied" if r.applied else ("duplicate" if r.duplicate else "ignored (stale version)")
        short = f"  SHORTAGE {lvl.shortage}" if lvl.shortage else ""
        out.append(
            f"{lvl.sku}@{lvl.node}: on_hand {lvl.on_hand} reserved {lvl.reserved} committed {lvl.committed}"
            f" safety {lvl.safety_stock} atp {lvl.atp} v{lvl.version} [{flag}]{short}"
        )
    return "\n".join(out)


def cmd_stock(args: argparse.Namespace) -> int:
    from engine._proto.inventory.v1 import supply_service_pb2 as pb

    stubs = _stubs(args.target)
    event_id = args.event_id or ""
    if args.stock_command == "set":
        request = pb.SetStockRequest(
            changes=[
                pb.StockCount(
                    sku=args.sku,
                    node=args.node,
                    on_hand=args.quantity,
                    version=args.version,
                    event_id=event_id,
                )
            ]
        )
        rpc = stubs.supply.SetStock
    elif args.stock_command == "adjust":
        request = pb.AdjustStockRequest(
            changes=[pb.StockAdjustment(sku=args.sku, node=args.node, delta=args.delta, event_id=event_id)]
        )
        rpc = stubs.supply.AdjustStock
    else:
        request = pb.SetSafetyStockRequest(
            changes=[
                pb.SafetyStockSetting(
                    sku=args.sku,
                    node=args.node,
                    safety_stock=args.quantity or 0,
                    event_id=event_id,
                    use_node_default=args.use_node_default,
                )
            ]
        )
        rpc = stubs.supply.SetSafetyStock
    return _call(args, lambda: rpc(request, timeout=args.timeout), _supply_text)


def _eta_seconds(args: argparse.Namespace) -> float:
    """--eta (ISO 8601; without an offset: UTC) or --in-days (from now)."""
    import time
    from datetime import UTC, datetime

    if args.in_days is not None:
        return float(round(time.time() + args.in_days * 86_400.0))  # whole seconds: an ETA people can read
    try:
        eta = datetime.fromisoformat(args.eta)
    except ValueError:
        raise SystemExit(f"--eta {args.eta!r}: expected ISO 8601, e.g. 2026-12-01T10:00:00+01:00") from None
    return (eta if eta.tzinfo is not None else eta.replace(tzinfo=UTC)).timestamp()


def _inbound_text(record: Any) -> str:
    from engine._proto.inventory.v1 import supply_service_pb2 as pb

    kind = pb.InboundKind.Name(record.kind).removeprefix("INBOUND_KIND_").lower()
    return (
        f"{record.id:<20} {record.sku:<12} x{record.quantity:<6} at {record.node:<12}"
        f" eta {record.eta.ToJsonString()}  {kind}"
    )


def cmd_inbound(args: argparse.Namespace) -> int:
    from engine._proto.inventory.v1 import supply_service_pb2 as pb

    stubs = _stubs(args.target)
    if args.inbound_command == "add":
        record = pb.InboundSupply(
            id=args.supply_id,
            sku=args.sku,
            node=args.node,
            quantity=args.quantity,
            kind=pb.INBOUND_KIND_TRANSFER if args.transfer else pb.INBOUND_KIND_PURCHASE_ORDER,
        )
        eta = _eta_seconds(args)
        record.eta.seconds = int(eta // 1)
        record.eta.nanos = int((eta - eta // 1) * 1e9)
        upsert = pb.UpsertInboundSupplyRequest(records=[record])

        def added(resp: Any) -> str:
            out = []
            for r in resp.results:
                outcome = pb.InboundOutcome.Name(r.outcome).removeprefix("INBOUND_OUTCOME_").lower()
                out.append(f"{_inbound_text(r.record)}  [{outcome}]")
            return "\n".join(out)

        return _call(args, lambda: stubs.supply.UpsertInboundSupply(upsert, timeout=args.timeout), added)
    if args.inbound_command == "remove":
        delete = pb.DeleteInboundSupplyRequest(ids=args.supply_ids)

        def removed(resp: Any) -> str:
            out = [f"removed {i}" for i in resp.deleted_ids]
            out += [f"not found {i}" for i in resp.not_found_ids]
            return "\n".join(out)

        return _call(args, lambda: stubs.supply.DeleteInboundSupply(delete, timeout=args.timeout), removed)

    def listing() -> Any:
        # --all follows the page tokens and answers with one response of every record.
        request = pb.ListInboundSupplyRequest(
            sku=args.sku or "",
            node=args.node or "",
            page_size=args.page_size,
            page_token=args.page_token or "",
        )
        response = stubs.supply.ListInboundSupply(request, timeout=args.timeout)
        while args.all and response.next_page_token:
            request.page_token = response.next_page_token
            page = stubs.supply.ListInboundSupply(request, timeout=args.timeout)
            response.records.extend(page.records)
            response.next_page_token = page.next_page_token
        return response

    def listed(resp: Any) -> str:
        out = [_inbound_text(r) for r in resp.records] or ["no inbound supply"]
        if resp.next_page_token:
            out.append(f"more: --page-token {resp.next_page_token}")
        return "\n".join(out)

    return _call(args, listing, listed)


def cmd_carriers(args: argparse.Namespace) -> int:
    """``carriers get`` prints the table in force in the file format (YAML, with
    its etag and source in comments), so ``carriers set`` takes it back."""
    import yaml

    from engine._proto.inventory.v1 import network_service_pb2 as pb
    from engine.service.convert import carrier_document, carrier_table_pb
    from engine.store.base import CarrierRecord

    stubs = _stubs(args.target)

    def human(table: Any) -> str:
        source = pb.CarrierTableSource.Name(table.source).removeprefix("CARRIER_TABLE_SOURCE_").lower()
        head = [f"# etag: {table.etag}", f"# source: {source}"]
        if table.HasField("update_time"):
            head.append(f"# updated: {table.update_time.ToJsonString()}")
        body = yaml.safe_dump(carrier_document(table), sort_keys=False, default_flow_style=None)
        return "\n".join(head) + "\n" + body.rstrip("\n")

    if args.carriers_command == "get":
        request = pb.GetCarrierTableRequest()
        return _call(args, lambda: stubs.network.GetCarrierTable(request, timeout=args.timeout), human)
    if args.carriers_command == "reset":
        reset = pb.ResetCarrierTableRequest(etag=args.etag or "")
        return _call(args, lambda: stubs.network.ResetCarrierTable(reset, timeout=args.timeout), human)
    # set: the file is checked here first, so its problems come with the file's own paths.
    table = carrier_table_pb(_carriers(args.file, option=""), CarrierRecord())
    table.ClearField("source")
    table.etag = args.etag or ""
    replace = pb.SetCarrierTableRequest(carrier_table=table)

    def done(resp: Any) -> str:
        return f"carrier table set: etag {resp.etag}, {len(resp.service_levels)} service levels"

    return _call(args, lambda: stubs.network.SetCarrierTable(replace, timeout=args.timeout), done)


def cmd_nodes(args: argparse.Namespace) -> int:
    from engine._proto.inventory.v1 import network_service_pb2 as pb

    stubs = _stubs(args.target)

    def human(resp: Any) -> str:
        return "\n".join(
            f"{n.id:<12} {pb.NodeType.Name(n.type).removeprefix('NODE_TYPE_'):<7} {n.region:<8} {n.name}"
            + (f"  (default safety stock {n.default_safety_stock})" if n.default_safety_stock else "")
            for n in resp.nodes
        )

    return _call(args, lambda: stubs.network.ListNodes(pb.ListNodesRequest(), timeout=args.timeout), human)


def cmd_channels(args: argparse.Namespace) -> int:
    from engine._proto.inventory.v1 import network_service_pb2 as pb

    stubs = _stubs(args.target)

    def rule_text(rule: Any) -> str:
        kind = pb.AllocationRuleKind.Name(rule.kind).removeprefix("ALLOCATION_RULE_KIND_").lower()
        amount = f"{rule.value}%" if rule.kind == pb.ALLOCATION_RULE_KIND_SHARE else str(rule.value)
        if rule.node:
            scope = f"at {rule.node}"
        elif rule.node_type:
            scope = f"at every {pb.NodeType.Name(rule.node_type).removeprefix('NODE_TYPE_')}"
        else:
            scope = "everywhere"
        kept = f" (kept for {rule.protects})" if rule.protects else ""
        return f"{kind} {amount} {scope}{kept}"

    def human(resp: Any) -> str:
        lines = []
        for c in resp.channels:
            backorders = "  (takes backorders)" if c.allow_backorder else ""
            lines.append(f"{c.id:<18} {c.name:<18} {' '.join(c.nodes)}{backorders}")
            lines.extend(f"{'':<18} rule: {rule_text(rule)}" for rule in c.allocation_rules)
        return "\n".join(lines)

    return _call(
        args, lambda: stubs.network.ListChannels(pb.ListChannelsRequest(), timeout=args.timeout), human
    )


# ---------------------------------------------------------------------- audit


def cmd_audit(args: argparse.Namespace) -> int:
    """Exit 0 when every invariant holds, 1 on any violation, 2 when it could not check."""
    if args.data_dir:
        report = asyncio.run(_audit_data_dir(Path(args.data_dir), _ledger_impl(args)))
        result = {
            "ok": report.ok,
            "violations": list(report.violations),
            "shortages": [
                {
                    "sku": s.sku,
                    "node": s.node,
                    "on_hand": s.on_hand,
                    "reserved": s.reserved,
                    "committed": s.committed,
                    "shortage": s.shortage,
                }
                for s in report.shortages
            ],
            "row_count": report.rows,
            "reservation_count": report.reservations,
        }
    else:
        import grpc

        from engine._proto.inventory.v1 import admin_service_pb2 as pb

        try:
            response = _stubs(args.target).admin.Audit(pb.AuditRequest(), timeout=args.timeout)
        except grpc.RpcError as exc:
            print(f"audit: cannot reach {args.target}: {exc.code().name} {exc.details()}", file=sys.stderr)
            return 2
        result = _to_dict(response)
        result.setdefault("violations", [])
        result.setdefault("shortages", [])
        result["ok"] = not result["violations"]
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(
            f"audit: {'OK' if result['ok'] else 'VIOLATIONS'}; rows {result.get('row_count', 0)},"
            f" reservations {result.get('reservation_count', 0)}, shortages {len(result['shortages'])}"
        )
        for v in result["violations"]:
            print(f"  violation: {v}")
        for s in result["shortages"]:
            print(f"  shortage: {s['sku']}@{s['node']} short by {s.get('shortage', 0)}")
    return 0 if result["ok"] else 1


async def _audit_data_dir(data_dir: Path, impl: str) -> Any:
    from engine.config import EmbeddedStoreConfig
    from engine.store.embedded import EmbeddedStore

    if not data_dir.is_dir():
        raise SystemExit(f"audit: no data directory at {data_dir}")
    store = EmbeddedStore(EmbeddedStoreConfig(data_dir=data_dir, ledger_impl=impl))
    await store.start()
    try:
        return await store.audit()
    finally:
        await store.close()


# ---------------------------------------------------------------------- bench


def cmd_bench(args: argparse.Namespace) -> int:
    if args.bench_command == "core":
        from engine.bench.core import run as run_core
        from engine.bench.core import run_memory

        if args.memory_only:
            result = run_memory(args.rows, impls=tuple(args.impl or ["fast"]))
        elif args.per_op:
            from engine.bench.core import run_per_op

            result = run_per_op(rows=args.rows)
        else:
            result = run_core(rows=args.rows)
    elif args.bench_command == "promise":
        from engine.bench.promise import run as run_promise

        result = run_promise(nodes=args.nodes, lines=args.lines, quotes=args.quotes)
    elif args.bench_command == "redis":
        from engine.bench.redis_scripts import run as run_redis

        result = run_redis(count=args.count, rounds=args.rounds)
    elif args.bench_command == "flash-sale":
        from engine.bench.flash_sale import run as run_flash_sale

        result = run_flash_sale(
            stock=args.stock, buyers_per_unit=args.buyers_per_unit, concurrency=args.concurrency
        )
    elif args.bench_command == "rowlock":
        from engine.bench.rowlock import run as run_rowlock

        result = run_rowlock(
            duration_s=args.duration, rounds=args.rounds, concurrency=args.concurrency, skus=args.skus
        )
    else:
        from engine.bench.rpc import run as run_rpc

        result = run_rpc(
            duration_s=args.duration,
            concurrency=args.concurrency,
            rounds=args.rounds,
            memory=args.memory,
            backend=args.backend,
        )
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        for key, value in result.items():
            print(f"{key:>24}: {value}")
    return 0


# --------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from engine.observability.exposition import DEFAULT_METRICS_PORT
    from engine.observability.logs import LOG_FORMATS

    parser = argparse.ArgumentParser(
        prog="inventory-engine",
        description="Inventory and availability engine: one source of truth for every sales channel.",
    )
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--log-format", choices=LOG_FORMATS, default="text", help="text, or one JSON object per line"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def client(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--target", default=DEFAULT_TARGET, help="engine address HOST:PORT")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")
        return p

    serve = sub.add_parser("serve", help="run the gRPC server (embedded store, or Redis)")
    serve.add_argument("--listen", default=DEFAULT_TARGET, help="HOST:PORT (default %(default)s)")
    serve.add_argument("--data-dir", default="inventory-data", help="journal and snapshots")
    serve.add_argument("--memory", action="store_true", help="no data directory: nothing survives a stop")
    serve.add_argument("--demo", action="store_true", help="load the demo network once (if empty)")
    serve.add_argument(
        "--carriers", metavar="FILE",
        help="carrier service levels for Quote, YAML or JSON (default: the sample US table)",
    )  # fmt: skip
    serve.add_argument("--impl", choices=["fast", "pure"], help="ledger (default: $ENGINE_IMPL or fast)")
    serve.add_argument("--no-fsync", action="store_true", help="skip fsync (benchmarks only: unsafe)")
    serve.add_argument("--grace", type=float, default=5.0, help="seconds for in-flight RPCs on shutdown")
    serve.add_argument(
        "--redis", metavar="URL", help="Redis store on a standalone server, e.g. redis://HOST:PORT"
    )
    serve.add_argument("--redis-cluster", metavar="HOST:PORT[,...]", help="Redis store on a Redis Cluster")
    serve.add_argument("--redis-namespace", default="inv", help="key prefix in Redis (default %(default)s)")
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes sharing the port (Redis stores only)"
    )
    serve.add_argument(
        "--metrics-port",
        type=int,
        default=DEFAULT_METRICS_PORT,
        help="Prometheus /metrics port; 0 turns it off (default %(default)s)",
    )
    serve.add_argument("--metrics-host", help="host the metrics port binds (default: the --listen host)")
    serve.add_argument(
        "--audit-interval",
        type=float,
        default=60.0,
        help="seconds between audits exported as metrics (violations, shortages); 0: none",
    )
    serve.set_defaults(func=cmd_serve)

    from engine.local_stack import add_subcommand as add_local_stack

    add_local_stack(sub)

    p = client("availability", "what a channel (or nodes) can sell of some SKUs")
    p.add_argument("skus", nargs="+", metavar="SKU")
    p.add_argument("--channel")
    p.add_argument("--node", action="append", help="restrict to this node (repeatable)")
    p.add_argument("--nodes", action="store_true", help="show the per-node breakdown")
    p.add_argument("--future", action="store_true", help="also show availability by date (inbound supply)")
    p.set_defaults(func=cmd_availability)

    p = client("quote", "delivery and pickup dates for an order, holding nothing")
    p.add_argument("--channel", required=True)
    p.add_argument("--line", action="append", required=True, help="SKU:QTY (repeatable)")
    p.add_argument("--postal-code", help="ship to this postal code")
    p.add_argument("--lat", type=float, help="ship to this latitude (with --lon)")
    p.add_argument("--lon", type=float, help="ship to this longitude (with --lat)")
    p.add_argument("--region", help="the destination's carrier region (overrides the postal code's)")
    p.add_argument("--pickup", metavar="STORE", help="collect at this store")
    p.add_argument(
        "--method", action="append", choices=["ship", "pickup"],
        help="accepted method (repeatable; default: those the destination and --pickup give)",
    )  # fmt: skip
    p.add_argument("--service-level", action="append", help="carrier level, e.g. express (repeatable)")
    p.add_argument("--split", action="store_true", help="allow a line to come from several nodes")
    p.add_argument("--backorder", action="store_true", help="promise lines without stock from inbound supply")
    p.set_defaults(func=cmd_quote)

    p = client("find-in-stores", "endless aisle: a SKU at a store and the nearest stores holding it")
    p.add_argument("sku")
    p.add_argument("--store", required=True, help="the asking store")
    p.add_argument("--channel", default="pos", help="channel whose stores are searched (default %(default)s)")
    p.add_argument("--quantity", type=int, default=1)
    p.add_argument("--max-stores", type=int, default=5, help="nearby stores to list (default %(default)s)")
    p.set_defaults(func=cmd_find_in_stores)

    p = client("reserve", "hold stock for a cart or order")
    p.add_argument("reservation_id")
    p.add_argument("--channel", required=True)
    p.add_argument("--line", action="append", required=True, help="SKU:QTY or SKU:QTY@NODE (repeatable)")
    p.add_argument("--ttl", type=int, default=900, help="hold time in seconds (default %(default)s)")
    p.add_argument("--partial", action="store_true", help="hold what is available")
    p.add_argument("--ship-to", metavar="POSTAL", help="ship to this postal code: source by promise date")
    p.add_argument("--pickup", metavar="STORE", help="collect at this store: its shelf first, then transfers")
    p.add_argument("--service-level", help="carrier level to promise by (with --ship-to; default the first)")
    p.add_argument("--split", action="store_true", help="let a line come from several nodes")
    p.add_argument(
        "--backorder", action="store_true", help="hold a line no stock covers against inbound supply"
    )
    p.set_defaults(func=cmd_reserve)

    for name, help_text, with_lines in (
        ("commit", "turn a hold into an order", False),
        ("release", "give back held or committed units", True),
        ("fulfill", "ship committed units", True),
        ("get", "show a reservation", False),
    ):
        p = client(name, help_text)
        p.add_argument("reservation_id")
        if with_lines:
            p.add_argument("--line", type=int, action="append", help="line index (repeatable; default all)")
        method = {"get": "GetReservation"}.get(name, name.capitalize())
        p.set_defaults(func=_simple_reservation_call(method, with_lines))

    p = client("extend", "move a hold's expiry")
    p.add_argument("reservation_id")
    p.add_argument("--ttl", type=int, required=True)
    p.set_defaults(func=cmd_extend)

    stock = sub.add_parser("stock", help="supply changes: set, adjust, safety")
    stock_sub = stock.add_subparsers(dest="stock_command", required=True)
    for name in ("set", "adjust", "safety"):
        p = stock_sub.add_parser(name)
        p.add_argument("--target", default=DEFAULT_TARGET)
        p.add_argument("--json", action="store_true")
        p.add_argument("--timeout", type=float, default=10.0)
        p.add_argument("--event-id", help="idempotency key of this change")
        p.add_argument("sku")
        p.add_argument("node")
        if name == "adjust":
            p.add_argument("delta", type=int)
        elif name == "safety":
            p.add_argument("quantity", type=int, nargs="?", help="the row's own safety stock")
            p.add_argument(
                "--use-node-default",
                action="store_true",
                help="drop the row's own safety stock: follow the node's default_safety_stock",
            )
        else:
            p.add_argument("quantity", type=int)
        if name == "set":
            p.add_argument("--version", type=int, required=True, help="monotonic count version")
        p.set_defaults(func=cmd_stock)

    inbound = sub.add_parser("inbound", help="future supply: inbound purchase orders and transfers")
    inbound_sub = inbound.add_subparsers(dest="inbound_command", required=True)
    for name, help_text in (
        ("add", "add or revise an inbound record (by its id)"),
        ("remove", "forget inbound records (received, or cancelled)"),
        ("list", "list inbound records in id order"),
    ):
        p = inbound_sub.add_parser(name, help=help_text)
        p.add_argument("--target", default=DEFAULT_TARGET)
        p.add_argument("--json", action="store_true")
        p.add_argument("--timeout", type=float, default=10.0)
        p.set_defaults(func=cmd_inbound)
        if name == "add":
            p.add_argument("supply_id", help="e.g. PO-4711/1")
            p.add_argument("sku")
            p.add_argument("node")
            p.add_argument("quantity", type=int)
            when = p.add_mutually_exclusive_group(required=True)
            when.add_argument("--eta", help="ISO 8601 time the units can be sold (no offset: UTC)")
            when.add_argument("--in-days", type=float, help="ETA this many days from now")
            p.add_argument("--transfer", action="store_true", help="a transfer, not a purchase order")
        elif name == "remove":
            p.add_argument("supply_ids", nargs="+", metavar="SUPPLY_ID")
        else:
            p.add_argument("--sku")
            p.add_argument("--node")
            p.add_argument("--page-size", type=int, default=0, help="records per page (default 100)")
            p.add_argument("--page-token", help="next_page_token of the previous page")
            p.add_argument("--all", action="store_true", help="every page")

    carriers = sub.add_parser(
        "carriers", help="the carrier table: the one set over the API overrides serve --carriers"
    )
    carriers_sub = carriers.add_subparsers(dest="carriers_command", required=True)
    for name, help_text in (
        ("get", "print the table in force (YAML, as a --carriers file; --json: the API message)"),
        ("set", "replace the whole table with a YAML or JSON file, for every engine process"),
        ("reset", "drop the table set with 'set': the server's own applies again"),
    ):
        p = carriers_sub.add_parser(name, help=help_text)
        p.add_argument("--target", default=DEFAULT_TARGET)
        p.add_argument("--json", action="store_true")
        p.add_argument("--timeout", type=float, default=10.0)
        p.set_defaults(func=cmd_carriers)
        if name == "set":
            p.add_argument("file", help="a carrier table (format in engine/core/carriers.py)")
        if name != "get":
            p.add_argument("--etag", help="only if the table in force still has this etag (from get)")

    client("nodes", "list nodes").set_defaults(func=cmd_nodes)
    client("channels", "list channels").set_defaults(func=cmd_channels)

    p = client("audit", "check the invariants of a running engine (or a data dir); exit 1 on violations")
    p.add_argument("--data-dir", help="open this data directory instead (engine must be stopped)")
    p.add_argument("--impl", choices=["fast", "pure"])
    p.set_defaults(func=cmd_audit)

    bench = sub.add_parser("bench", help="benchmarks that print JSON figures")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    p = bench_sub.add_parser("core", help="pure vs Cython ledger on the same operation mix")
    p.add_argument("--json", action="store_true")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument(
        "--memory-only", action="store_true", help="only bytes per row: load the rows, run no operations"
    )
    p.add_argument(
        "--per-op", action="store_true", help="nanoseconds per call of each operation kind, both ledgers"
    )
    p.add_argument(
        "--impl", action="append", choices=["fast", "pure"], help="ledger(s) for --memory-only (default fast)"
    )
    p.set_defaults(func=cmd_bench)
    p = bench_sub.add_parser("grpc", help="Reserve vs a no-op RPC on the same server stack")
    p.add_argument("--json", action="store_true")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per measured phase")
    p.add_argument("--rounds", type=int, default=3, help="alternating noop/reserve rounds")
    p.add_argument("--concurrency", type=int, default=64, help="calls in flight")
    p.add_argument("--memory", action="store_true", help="server without a journal (what durability costs)")
    p.add_argument(
        "--backend",
        choices=["embedded", "redis", "redis-cluster"],
        default="embedded",
        help="the server's store; redis and redis-cluster start their own Redis (AOF on)",
    )
    p.set_defaults(func=cmd_bench)
    p = bench_sub.add_parser("promise", help="Quote with the pure vs the Cython sourcing loop")
    p.add_argument("--json", action="store_true")
    p.add_argument("--nodes", type=int, default=500)
    p.add_argument("--lines", type=int, default=5, help="lines per order")
    p.add_argument("--quotes", type=int, default=2_000, help="orders quoted by each implementation")
    p.set_defaults(func=cmd_bench)
    p = bench_sub.add_parser("redis", help="the reserve Lua script vs a bare 2-key EVALSHA")
    p.add_argument("--json", action="store_true")
    p.add_argument("--count", type=int, default=100_000, help="commands of each kind per round")
    p.add_argument("--rounds", type=int, default=3, help="alternating bare/reserve rounds")
    p.set_defaults(func=cmd_bench)
    p = bench_sub.add_parser("flash-sale", help="one hot SKU on Redis, 20x more buyers than units")
    p.add_argument("--json", action="store_true")
    p.add_argument("--stock", type=int, default=10_000, help="units of the hot SKU")
    p.add_argument("--buyers-per-unit", type=int, default=20)
    p.add_argument("--concurrency", type=int, default=64, help="calls in flight")
    p.set_defaults(func=cmd_bench)
    p = bench_sub.add_parser(
        "rowlock", help="the engine (embedded, Redis) vs PostgreSQL SELECT ... FOR UPDATE, same run"
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per measured phase")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds over the three systems")
    p.add_argument("--concurrency", type=int, default=64, help="calls in flight, for every system")
    p.add_argument("--skus", type=int, default=10_000, help="SKUs of the spread scenario (x 3 nodes)")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from engine.observability.logs import configure_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(str(args.log_level), args.log_format)
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # The reader went away (`... | head`): what it read is what it wanted.
        # Point stdout at /dev/null so the interpreter's final flush is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
