"""Locust users that speak the engine's gRPC API, and the per-process plumbing they share.

Locust runs users as gevent greenlets; grpcio's C core blocks a greenlet's whole
thread unless ``grpc.experimental.gevent.init_gevent()`` ran first (after
gevent patched the standard library, which importing ``locust`` does, and
before any channel exists). This module does both on import, so a locustfile
must import it before it makes any gRPC object.

Locust's documented gRPC pattern is a ``User`` holding a stub and a wrapper
that fires ``events.request`` with a name, a response time, a response length
and an exception. :meth:`EngineUser.call` is that wrapper, with one addition:
an engine error the scenario expects (``OUT_OF_STOCK`` in a flash sale,
``NEGATIVE_ON_HAND`` for a till sale of the last unit someone else took) is an
answer, not a failure. It is reported as a success under its own name
(``Reserve: OUT_OF_STOCK``) so that the failure count, and Locust's exit code,
mean "the engine misbehaved".

Every reservation call is journaled (:mod:`loadtests.journal`): the intent
before the call, the answer after it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import gevent
import grpc
import grpc.experimental.gevent as grpc_gevent
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from locust import User, events
from locust.env import Environment
from locust.exception import LocustError
from locust.runners import MasterRunner, WorkerRunner

# Before any channel exists, after locust's monkey-patching (the import above).
grpc_gevent.init_gevent()

from engine._proto.inventory.v1 import (  # noqa: E402
    inventory_service_pb2 as inv_pb,
)
from engine._proto.inventory.v1 import (  # noqa: E402
    inventory_service_pb2_grpc as inv_grpc,
)
from engine._proto.inventory.v1 import (  # noqa: E402
    supply_service_pb2_grpc as supply_grpc,
)
from loadtests.journal import HELD, Journal, Snapshot, snapshot_from_pb  # noqa: E402
from loadtests.traffic import IdMaker  # noqa: E402

__all__ = [
    "Answer",
    "EngineUser",
    "RpcFailure",
    "is_setup_process",
    "on_run_start",
    "record_setup",
    "setup_channel",
    "setup_journal",
]

log = logging.getLogger("loadtests")
R = TypeVar("R")

# Codes after which the call may or may not have taken effect. The engine
# itself answers UNAVAILABLE only when nothing happened, but a dropped
# connection looks the same to the client, so the journal stays cautious.
AMBIGUOUS = frozenset({
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
})  # fmt: skip
# How late past its expiry a hold may still be HELD (ARCHITECTURE.md: expired
# units return within a second), plus room for the watcher's own call.
EXPIRY_GRACE_S = 1.0
EXPIRY_MARGIN_S = 0.3


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("inventory engine")
    group.add_argument(
        "--journal-dir",
        default="build/loadtest/journal",
        help="directory of this run's outcome journals, one JSONL file per process (for loadtests.check)",
    )
    group.add_argument("--call-timeout", type=float, default=5.0, help="deadline of each gRPC call, seconds")
    group.add_argument(
        "--think-scale",
        type=float,
        default=1.0,
        help="multiplies every wait and think time (0.5: users act twice as fast)",
    )
    group.add_argument(
        "--expiry-checks-per-s",
        type=float,
        default=20.0,
        help="abandoned holds per second per process checked to be EXPIRED once due (0: none)",
    )


class RpcFailure(Exception):
    """An engine answer the scenario did not expect: a failure in Locust's statistics."""


class ExpiryLag(Exception):
    """A hold still HELD more than a second past its expiry."""


@dataclass(frozen=True)
class Answer(Generic[R]):
    """A call's outcome: the response, or the status code and the engine's reason."""

    response: R | None
    code: grpc.StatusCode = grpc.StatusCode.OK
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.response is not None

    @property
    def ambiguous(self) -> bool:
        return self.code in AMBIGUOUS


def _reason(error: grpc.RpcError) -> str:
    """The ErrorInfo reason of a failed call ('' for a transport error)."""
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except ValueError:
        return ""
    if status is None:
        return ""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""


class _Process:
    """What every user of one load process shares: channel, stubs, journal, ids, expiry watch."""

    def __init__(self, environment: Environment) -> None:
        options = environment.parsed_options
        self.environment = environment
        self.timeout = float(getattr(options, "call_timeout", 5.0))
        self.think_scale = float(getattr(options, "think_scale", 1.0))
        # One channel per process, shared by its users: one HTTP/2 connection
        # multiplexing all of them, like a checkout service's client pool, and
        # the cheapest client on a machine that also runs the engine.
        self.channel = grpc.insecure_channel(str(environment.host))
        self.inventory = inv_grpc.InventoryServiceStub(self.channel)
        self.supply = supply_grpc.SupplyServiceStub(self.channel)
        role = "worker" if isinstance(environment.runner, WorkerRunner) else "local"
        self.journal = Journal(
            Path(getattr(options, "journal_dir", "build/loadtest/journal")), run_id=run_id(), role=role
        )
        self.ids = IdMaker("lt")
        self.rng = random.Random()
        self._expiry_rate = float(getattr(options, "expiry_checks_per_s", 20.0))
        self._due: list[tuple[float, str]] = []
        self._watcher = gevent.spawn(self._watch_expiry) if self._expiry_rate > 0 else None

    def watch_expiry(self, reservation_id: str, expire_at: float) -> None:
        """Check, once it is due, that this abandoned hold really expired."""
        if self._watcher is not None:
            self._due.append((expire_at + EXPIRY_GRACE_S + EXPIRY_MARGIN_S, reservation_id))

    def _watch_expiry(self) -> None:
        # Holds are queued roughly in expiry order (TTLs of one scenario are
        # alike), so a sorted pass now and then is enough.
        while True:
            gevent.sleep(0.5)
            now = time.time()
            self._due.sort()
            due = 0
            while due < len(self._due) and self._due[due][0] <= now:
                due += 1
            batch, self._due = self._due[:due], self._due[due:]
            budget = max(1, int(self._expiry_rate * 0.5))
            for _, rid in self.rng.sample(batch, min(budget, len(batch))):
                self._check_expired(rid)

    def _check_expired(self, reservation_id: str) -> None:
        start = time.perf_counter()
        exception: Exception | None = None
        length = 0
        try:
            reservation = self.inventory.GetReservation(
                inv_pb.GetReservationRequest(reservation_id=reservation_id), timeout=self.timeout
            )
            length = reservation.ByteSize()
            state = snapshot_from_pb(reservation)
            if state.state == HELD:
                late = time.time() - state.expire_at
                exception = ExpiryLag(f"{reservation_id} still HELD {late:.2f} s past its expiry")
        except grpc.RpcError as error:
            exception = RpcFailure(f"{error.code().name} {_reason(error)}")  # type: ignore[attr-defined]
        self.environment.events.request.fire(
            request_type="check",
            name="expired hold is gone",
            response_time=(time.perf_counter() - start) * 1000,
            response_length=length,
            exception=exception,
            context={},
        )

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.kill(block=False)
        self.journal.close()
        self.channel.close()


_RUN_ID = f"{time.strftime('%Y%m%dT%H%M%S')}-{random.randrange(16**6):06x}"
_process: _Process | None = None


def run_id() -> str:
    return _RUN_ID


def process(environment: Environment) -> _Process:
    """This load process's shared state, created on first use (after options arrive from a master)."""
    global _process
    if _process is None:
        if not environment.host:
            raise LocustError("give the engine's address: --host HOST:PORT")
        _process = _Process(environment)
    return _process


def is_setup_process(environment: Environment) -> bool:
    """True where once-per-run setup belongs: a local run, or the master of a distributed one."""
    return not isinstance(environment.runner, WorkerRunner)


def setup_channel(environment: Environment) -> grpc.Channel:
    """A channel for run setup (the flash sale's stock) from the local or master process."""
    if not environment.host:
        raise LocustError("give the engine's address: --host HOST:PORT")
    return grpc.insecure_channel(str(environment.host))


def setup_journal(environment: Environment) -> Journal:
    """Where run setup records what it did: the local process's journal, or the master's own."""
    if isinstance(environment.runner, MasterRunner):
        global _master_journal
        if _master_journal is None:
            directory = Path(getattr(environment.parsed_options, "journal_dir", "build/loadtest/journal"))
            _master_journal = Journal(directory, run_id=run_id(), role="master")
        return _master_journal
    return process(environment).journal


_master_journal: Journal | None = None


def record_setup(environment: Environment) -> None:
    """Journal that the run's setup ran: the checker wants exactly one such record per run."""
    journal = setup_journal(environment)
    journal.setup()
    journal.flush()


def on_run_start(setup: Callable[[Environment], None]) -> Callable[[Environment], None]:
    """Run ``setup`` once per run (local process or master) when the test starts.

    A failed setup must not leave a run measuring the wrong thing (a flash sale
    whose stock was never set): it ends the run at once with exit code 2.
    """

    @events.test_start.add_listener
    def _start(environment: Environment, **_: Any) -> None:
        if not is_setup_process(environment):
            return
        try:
            setup(environment)
        except Exception:
            log.exception("run setup failed: stopping the run")
            environment.process_exit_code = 2
            if environment.runner is not None:
                gevent.spawn_later(0, environment.runner.quit)

    return setup


@events.test_stop.add_listener
def _flush(environment: Environment, **_: Any) -> None:
    if _process is not None:
        _process.journal.flush()
    if _master_journal is not None:
        _master_journal.flush()


@events.quitting.add_listener
def _close(environment: Environment, **_: Any) -> None:
    if _process is not None:
        _process.close()
    if _master_journal is not None:
        _master_journal.close()


def ttl(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


class EngineUser(User):
    """A Locust user with the engine's stubs, a journal and journaled reservation calls."""

    abstract = True
    # Seconds between two tasks (sessions), scaled by --think-scale.
    wait_range: tuple[float, float] = (1.0, 3.0)

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.engine = process(environment)
        self.inventory = self.engine.inventory
        self.supply = self.engine.supply
        self.journal = self.engine.journal
        self.rng = random.Random()

    def wait_time(self) -> float:
        low, high = self.wait_range
        return self.rng.uniform(low, high) * self.engine.think_scale

    # ------------------------------------------------------------ the wrapper

    def call(
        self,
        name: str,
        method: Callable[..., R],
        request: Any,
        *,
        expected: Iterable[str] = (),
    ) -> Answer[R]:
        """Call ``method(request)``, report it to Locust, return its outcome.

        An error whose reason is in ``expected`` is a legitimate answer
        (reported as ``name: REASON``); any other error is a failure.
        """
        start = time.perf_counter()
        try:
            response = method(request, timeout=self.engine.timeout)
        except grpc.RpcError as error:
            elapsed = (time.perf_counter() - start) * 1000
            code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
            reason = _reason(error)
            if reason and reason in expected:
                self._fire(f"{name}: {reason}", elapsed, 0, None)
            else:
                details = error.details()  # type: ignore[attr-defined]
                self._fire(name, elapsed, 0, RpcFailure(f"{code.name} {reason} {details}".strip()))
            return Answer(None, code, reason)
        self._fire(name, (time.perf_counter() - start) * 1000, response.ByteSize(), None)  # type: ignore[attr-defined]
        return Answer(response)

    def _fire(self, name: str, elapsed_ms: float, length: int, exception: Exception | None) -> None:
        self.environment.events.request.fire(
            request_type="grpc",
            name=name,
            response_time=elapsed_ms,
            response_length=length,
            exception=exception,
            context={},
        )

    # ------------------------------------------------- journaled reservations

    def reserve(
        self,
        channel: str,
        lines: Sequence[tuple[str, int, str]],
        ttl_s: float,
        *,
        name: str = "Reserve",
        expected: Iterable[str] = ("OUT_OF_STOCK",),
    ) -> tuple[str, Snapshot | None]:
        """Hold ``(sku, quantity, node or '')`` lines; the new id and the hold (None if refused)."""
        rid = self.engine.ids.next("r")
        self.journal.attempt(rid, "reserve", ch=channel, lines=[list(ln) for ln in lines], ttl=ttl_s)
        request = inv_pb.ReserveRequest(
            reservation_id=rid,
            channel=channel,
            lines=[inv_pb.LineRequest(sku=s, quantity=q, node=n) for s, q, n in lines],
            ttl=ttl(ttl_s),
        )
        return rid, self._journaled(rid, "reserve", name, self.inventory.Reserve, request, expected)

    def commit(self, rid: str, *, name: str = "Commit") -> Snapshot | None:
        # RESERVATION_EXPIRED: the shopper paid after the hold ran out (think
        # times are random, holds short); the engine must refuse, and says so.
        request = inv_pb.CommitRequest(reservation_id=rid)
        return self._journaled(rid, "commit", name, self.inventory.Commit, request, ("RESERVATION_EXPIRED",))

    def release(self, rid: str, *, name: str = "Release") -> Snapshot | None:
        request = inv_pb.ReleaseRequest(reservation_id=rid)
        return self._journaled(rid, "release", name, self.inventory.Release, request, ())

    def fulfill(self, rid: str, *, name: str = "Fulfill") -> Snapshot | None:
        request = inv_pb.FulfillRequest(reservation_id=rid)
        return self._journaled(rid, "fulfill", name, self.inventory.Fulfill, request, ())

    def extend(self, rid: str, ttl_s: float, *, name: str = "ExtendReservation") -> Snapshot | None:
        request = inv_pb.ExtendReservationRequest(reservation_id=rid, ttl=ttl(ttl_s))
        return self._journaled(
            rid, "extend", name, self.inventory.ExtendReservation, request, ("RESERVATION_EXPIRED",)
        )

    def abandon(self, rid: str, hold: Snapshot) -> None:
        """Walk away from a hold: it must expire by itself, which the process checks."""
        self.engine.watch_expiry(rid, hold.expire_at)

    def _journaled(
        self,
        rid: str,
        op: str,
        name: str,
        method: Callable[..., Any],
        request: Any,
        expected: Iterable[str],
    ) -> Snapshot | None:
        if op != "reserve":
            self.journal.attempt(rid, op)
        answer = self.call(name, method, request, expected=expected)
        if answer.ok:
            snapshot = snapshot_from_pb(answer.response)
            self.journal.told(rid, op, snapshot)
            return snapshot
        if answer.ambiguous or not answer.reason:
            # No engine reason: a transport failure or a deadline; it may have
            # happened. The checker accepts either outcome for this id.
            self.journal.unknown(rid, op, answer.code.name)
        else:
            self.journal.refused(rid, op, answer.reason)
        return None

    def think(self, low: float, high: float) -> None:
        """A pause inside a session (the task's own wait_time spaces sessions)."""
        gevent.sleep(self.rng.uniform(low, high) * self.engine.think_scale)
