"""Operations whose keys span Redis Cluster slots: one script per slot.

On standalone Redis, and on a Cluster when every key of an operation is in
one slot, an operation is ONE script call: atomic. Otherwise a Lua script
cannot reach all the keys, and this module runs the protocol below. It never
oversells, because each unit is held by a script that checked it atomically in
its slot; what it gives up is atomicity *across* slots, and the gaps are
written down here, with what a crash leaves and how a retry completes it.

Reserve across slots
--------------------
``d`` is the directory shard of the reservation id, the other shards hold its
lines (by SKU). ``owner`` is the token of this engine process.

1. **Begin** (``reserve_begin.lua``, slot of ``d``). No entry: create it
   PENDING with the request body, the attempt's times, ``owner`` and a lease,
   and a Redis key TTL of ttl + 1 h so an attempt nobody finishes is
   forgotten. An entry with another body: IDEMPOTENCY_MISMATCH. DONE: a
   replay, the stored reservation is read and returned. PENDING or ABORTING:
   resumed if this process owns it or its owner's lease lapsed (the owner
   died); if the attempt's holds have expired meanwhile it starts afresh
   with new times; if another live process owns it, this one waits for it a
   little and then answers UNAVAILABLE (RESERVATION_IN_PROGRESS).
2. **Hold, per slot** (``reserve_slot.lua``), all slots concurrently: hold
   the slot's lines, all-or-nothing inside the slot unless allow_partial, as
   a sub-reservation carrying the attempt's created_at and ``owner``.
   Idempotent per (reservation, shard): a sub-reservation of this attempt is
   adopted (owner set to ours) and returned unchanged; one of an abandoned
   older attempt (another created_at) gives its held units back and is
   replaced.
3. **Out of stock** in some slot (or, with allow_partial, nothing held
   anywhere): mark the entry ABORTING (only if still ours), delete the
   sub-reservations we own in every slot (``reserve_cancel.lua``, idempotent,
   giving their units back), delete the entry, raise OutOfStock with the
   short lines of every slot. If the entry is no longer ours, another process
   took the attempt over: start again from 1 (which will then replay or wait).
   A backorder hold may have started a row that did not exist (in a slot that
   held while another refused): the sub-reservation lists the rows it started,
   and the compensation removes those that are back to nothing, so a refused
   reservation leaves no row behind, as on one slot. (An attempt abandoned by
   a crash leaves such a row at zero when its holds expire: it reads as no row.)
4. **Done** (``reserve_finish.lua``): the entry becomes DONE (PERSIST) only
   if still PENDING and ours; else start again from 1.

Holds are never counted twice: a sub-reservation exists once per (reservation,
shard) and holds its units once. A crash anywhere between 1 and 4 leaves a
PENDING entry and holds that expire by their TTL like any hold (the sweeper
returns the units); a retry with the same id in this process resumes at once,
in another process after the dead owner's lease (``lease_ms``), and completes
the reservation, adopting the holds still live. Compensation deletes only
sub-reservations owned by the compensating attempt, and the DONE step checks
ownership, so a process that stalled past its lease cannot undo or complete
an attempt another process has taken over. A Redis error (StoreUnavailable)
during 2-4 triggers the compensation, best effort; what it cannot undo
expires by TTL.

Commit, release, fulfill, extend across slots
---------------------------------------------
1. **Read** every slot's sub-reservation (``get.lua``, which expires what is
   due), for the state of every line.
2. **Check** (fulfill only): ``fulfill.lua`` as a dry run in every slot, all
   concurrently, given the other slots' line states from step 1: it decides
   exactly as in step 3, checks on_hand for the lines it would ship, and
   writes nothing but the expiry (as supply.lua's dry run). If any slot
   refuses, the refusal is raised and nothing changed: a decision on the whole
   reservation first, else the NEGATIVE_ON_HAND of the first short row in line
   order, the one the reference ledger names.
3. **Apply** per slot, all concurrently: the same script as on one slot,
   given the states of the other slots' lines from step 1, so every slot
   makes the same decision the reference ledger would make for the whole
   reservation, and applies it to its own lines. Every step is idempotent
   per line (commit skips lines already committed, release lines already
   released, fulfill lines already shipped; extend sets the same expiry).

Why only fulfill is checked first: commit, release and extend refuse only on
the whole reservation's line states (the same, from step 1, in every slot)
and on their arguments, so without a racing call every slot decides the same:
all refuse, or none does. Fulfill also depends on each slot's own stock: a
backordered line whose units have not arrived refuses in its slot while a
shelf line in another slot could ship. A check pass would not close the
windows the others have (a racing call can land between a check and the
apply as well as between the read and the apply), so they keep two steps.

Between the check and the apply another client can change the stock (a
recount, an adjustment) or the reservation (a racing release), and a slot
may then refuse in step 3 after other slots shipped. The apply is not made
lenient (shipping anyway would drive on_hand negative, which is what the
refusal guards against); instead the engine compensates: ``unfulfill.lua`` in
every slot that shipped puts back exactly the lines this call shipped (the
fulfill reply lists them; a line no longer FULFILLED is left alone), their
units back in on_hand and committed, and then the refusal is raised, so the
refused call has in the end changed nothing. Until the compensation lands a
reader may see those lines FULFILLED, and the change feed carries both the
shipment and its undoing (the only way a FULFILLED line becomes COMMITTED
again). A Redis error in the compensation leaves what it could not put back
shipped, as a crash would (below).

If the check (or, for the others, every slot) refuses, nothing changed. A
crash or Redis error between the slots of step 3 leaves some slots done and
others not; the reservation then shows the mixed line states (e.g. some lines
COMMITTED, others still HELD, and those expire by their TTL if nothing else
happens), and retrying the same call completes it, because the aggregate
state still permits it (a partly committed reservation is still HELD; a
partly shipped one still COMMITTED; a fulfill retry is checked again and
ships the rest once their stock is there). Two calls on the same reservation
racing each other, or a hold expiring (by the sweeper's later clock) between
the read and the apply, can interleave per slot (the lines of one slot
committed, another's expired); single-slot reservations are linearizable.

Supply batches across slots
---------------------------
A dry run of the batch in every slot (expiry only, no writes), then the real
run in every slot. A refusal in the dry run (the first one in batch order is
raised) changes nothing. A change racing in between can make one slot refuse
in the real run after others applied: the error is raised and the other
slots' changes stay. Changes with an event id are safe to resend (applied
ones come back as duplicates); an adjustment without one is not.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from engine.core.errors import OutOfStock, StoreUnavailable
from engine.core.types import Reservation, StockChange, SupplyOp
from engine.observability import metrics
from engine.store.redis import replies
from engine.store.redis.keys import KeySpace
from engine.store.redis.plans import ReservationFacts, ReservePlan, ms, seconds
from engine.store.redis.runner import Arg, ScriptRunner, unavailable

__all__ = ["DRY_RUN_OPS", "CrossSlot", "StepHook"]

# Tests inject failures here: awaited before each step of a cross-slot
# operation with the step's name ("slot"; for fulfill also "check" and "undo";
# "finish") and its first shard; an exception it raises propagates as if the
# process had crashed there.
StepHook = Callable[[str, int], Awaitable[None]]

# The transition scripts whose last ARGV is dry_run (1: check only, write
# nothing but the expiry): across slots they are checked in every slot before
# any slot applies. The others need no check pass (see the module docstring).
DRY_RUN_OPS = frozenset({"fulfill"})

# A PENDING directory entry outlives its attempt's TTL by this much, then Redis drops it.
ENTRY_MARGIN_MS = 3_600_000
# A reserve that finds a PENDING entry may start over this many times before giving up.
MAX_ATTEMPTS = 5


class CrossSlot:
    def __init__(
        self,
        runner: ScriptRunner,
        keys: KeySpace,
        *,
        owner: str,
        feed_maxlen: int,
        socket_timeout_s: float,
        hook: Callable[[], StepHook | None],
    ) -> None:
        self._runner = runner
        self._keys = keys
        self._owner = owner
        self._feedmax = str(feed_maxlen)
        self._wait_s = socket_timeout_s
        # An owner's lease covers a whole attempt (a few script calls, each
        # bounded by the socket timeout); a live owner never loses it in practice,
        # and if it does, the ownership checks keep the outcome correct.
        self.lease_ms = int(max(1.0, 3 * socket_timeout_s) * 1000)
        self._hook = hook
        # Attempts on one reservation id in this process run one after the
        # other: they share the owner token, which must not act twice at once.
        self._locks: dict[str, asyncio.Lock] = {}

    def _xkeys(self, shards: Sequence[int]) -> list[str]:
        return [self._keys.expiry(k) for k in shards]

    async def _step(self, name: str, shard: int) -> None:
        hook = self._hook()
        if hook is not None:
            await hook(name, shard)

    # ----------------------------------------------------------------- reserve

    async def reserve(self, plan: ReservePlan) -> Reservation:
        rid = plan.reservation_id
        lock = self._locks.setdefault(rid, asyncio.Lock())
        try:
            async with lock:
                return await self._reserve(plan)
        finally:
            if not lock.locked() and self._locks.get(rid) is lock:
                del self._locks[rid]

    async def _reserve(self, plan: ReservePlan) -> Reservation:
        rid, facts = plan.reservation_id, plan.facts
        directory = self._keys.directory(rid)
        dir_shard = self._keys.shard_of_reservation(rid)
        deadline = time.monotonic() + self._wait_s
        attempts = 0
        while attempts < MAX_ATTEMPTS:
            now = plan.now
            begin = await self._runner.call(
                "reserve_begin",
                [directory],
                [
                    ms(now), plan.body, seconds(now), seconds(plan.expires_at), ms(plan.expires_at),
                    ",".join(map(str, facts.shards)), self._owner, self.lease_ms,
                    int(facts.ttl_s * 1000) + ENTRY_MARGIN_MS, *plan.refusal,
                ],
            )  # fmt: skip
            code = begin[0]
            if code == "DONE":
                return await self.read(rid, facts, plan.groups, now)
            if code == "BUSY" and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
                continue
            if code not in ("NEW", "RESUME"):
                raise replies.reservation_error(rid, facts.channel, begin)
            attempts += 1
            ca, ea, xm = begin[1], begin[2], begin[3]
            try:
                outcome = await self._hold(plan, ca, ea, xm, now)
                if isinstance(outcome, OutOfStock):
                    if not await self._finish(directory, dir_shard, "abort", now):
                        continue  # taken over: start again (replay or wait)
                    await self._cancel(plan, now)
                    await self._finish(directory, dir_shard, "drop", now)
                    raise outcome
                await self._step("finish", dir_shard)
                if not await self._finish(directory, dir_shard, "done", now):
                    continue
            except StoreUnavailable:
                await self._compensate_quietly(plan, directory, dir_shard, now)
                raise
            reservation = replies.assemble_reservation(
                rid, facts.channel, facts.ttl_s, facts.allow_partial, outcome
            )
            # This call completed the attempt (a new one, or one it resumed after
            # an earlier call failed part-way): the reservation took effect now.
            metrics.record_held(reservation)
            return reservation
        raise StoreUnavailable(
            f"reservation {rid!r} keeps being taken over by other engine processes; retry",
            reason="RESERVATION_IN_PROGRESS",
        )

    async def _hold(self, plan: ReservePlan, ca: str, ea: str, xm: str, now: float) -> list[Any] | OutOfStock:
        """Step 2 in every slot; the sub-reservations, or the OutOfStock to raise."""
        facts = plan.facts

        async def hold(shards: list[int]) -> Any:
            await self._step("slot", shards[0])
            return await self._runner.call(
                "reserve_slot",
                self._xkeys(shards),
                [
                    ms(now), self._feedmax, plan.reservation_id, ca, ea, xm, self._owner,
                    int(facts.allow_partial), len(plan.eligible), *plan.eligible,
                    facts.channel, *plan.rule_args, plan.sourcing, *plan.group_args(shards),
                ],
            )  # fmt: skip

        outcomes = _results(await asyncio.gather(*(hold(g) for g in plan.groups), return_exceptions=True))
        short: list[Any] = []
        refused, took = False, False
        subs: list[Any] = []
        for reply in outcomes:
            if reply[0] == "OOS":
                refused = True
                short.extend(reply[1])
            elif reply[0] == "OK":
                took = took or bool(reply[1])
                short.extend(reply[2])
                subs.extend(reply[3])
            else:
                raise replies.reservation_error(plan.reservation_id, facts.channel, reply)
        if refused or (short and not took):
            return OutOfStock(tuple(replies.shortfalls(short)))
        return subs

    async def _finish(self, directory: str, dir_shard: int, op: str, now: float) -> bool:
        reply = await self._runner.call(
            "reserve_finish",
            [directory, self._keys.shard_meta(dir_shard)],
            [ms(now), self._owner, op, self.lease_ms],
        )
        return bool(reply[0] == "OK")

    async def _cancel(self, plan: ReservePlan, now: float) -> None:
        await asyncio.gather(
            *(
                self._runner.call(
                    "reserve_cancel",
                    self._xkeys(shards),
                    [ms(now), self._feedmax, plan.reservation_id, self._owner],
                )
                for shards in plan.groups
            )
        )

    async def _compensate_quietly(
        self, plan: ReservePlan, directory: str, dir_shard: int, now: float
    ) -> None:
        try:
            if await self._finish(directory, dir_shard, "abort", now):
                await self._cancel(plan, now)
                await self._finish(directory, dir_shard, "drop", now)
        except Exception as exc:
            if unavailable(exc) is None:
                raise
            # Redis is still away: the holds expire by their TTL.

    # ------------------------------------------------------ reads and transitions

    async def read(
        self, rid: str, facts: ReservationFacts, groups: Sequence[Sequence[int]], now: float
    ) -> Reservation:
        subs = [sub for reply in await self._read(rid, facts, groups, now) for sub in reply[1]]
        return replies.assemble_reservation(rid, facts.channel, facts.ttl_s, facts.allow_partial, subs)

    async def _read(
        self, rid: str, facts: ReservationFacts, groups: Sequence[Sequence[int]], now: float
    ) -> list[Any]:
        read = await asyncio.gather(
            *(
                self._runner.call("get", self._xkeys(g), [ms(now), self._feedmax, rid, facts.lines, 0])
                for g in groups
            )
        )
        for reply in read:
            if reply[0] != "OK":
                raise replies.transition_error(rid, reply)
        return list(read)

    async def transition(
        self,
        op: str,
        rid: str,
        facts: ReservationFacts,
        groups: Sequence[Sequence[int]],
        now: float,
        extra: Sequence[Arg],
    ) -> Reservation:
        read = await self._read(rid, facts, groups, now)
        states = [[(line[0], line[4]) for sub in reply[1] for line in sub[2]] for reply in read]
        # Each slot's script gets the states of the other slots' lines.
        foreign: list[list[Arg]] = [
            [arg for j, other in enumerate(states) if j != i for pair in other for arg in pair]
            for i in range(len(groups))
        ]

        async def run(
            script: str, step: str, shards: Sequence[int], others: list[Arg], more: Sequence[Arg]
        ) -> Any:
            await self._step(step, shards[0])
            return await self._runner.call(
                script,
                self._xkeys(shards),
                [ms(now), self._feedmax, rid, facts.lines, len(others) // 2, *others, *more],
            )

        async def every_slot(step: str, more: Sequence[Arg]) -> list[Any]:
            return _results(
                await asyncio.gather(
                    *(run(op, step, g, foreign[i], more) for i, g in enumerate(groups)),
                    return_exceptions=True,
                )
            )

        checked = op in DRY_RUN_OPS
        if checked:
            refusals = [reply for reply in await every_slot("check", [*extra, 1]) if reply[0] != "OK"]
            if refusals:
                raise replies.transition_error(rid, _first_refusal(refusals))
        outcomes = await every_slot("slot", [*extra, 0] if checked else extra)
        refusals = [reply for reply in outcomes if reply[0] != "OK"]
        if refusals:
            if op == "fulfill":
                # Stock (or the reservation) changed between the check and
                # here: put back what the other slots just shipped.
                shipped = [
                    (g, reply[2]) for g, reply in zip(groups, outcomes, strict=True) if reply[0] == "OK"
                ]
                _results(
                    await asyncio.gather(
                        *(
                            run("unfulfill", "undo", g, [], [len(lines), *lines])
                            for g, lines in shipped
                            if lines
                        ),
                        return_exceptions=True,
                    )
                )
            raise replies.transition_error(rid, _first_refusal(refusals))
        subs = [sub for reply in outcomes for sub in reply[1]]
        return replies.assemble_reservation(rid, facts.channel, facts.ttl_s, facts.allow_partial, subs)

    # ------------------------------------------------------------------ supply

    async def supply(
        self,
        ops: Sequence[SupplyOp],
        head: Sequence[Arg],
        calls: Sequence[tuple[list[int], list[int], list[Arg]]],
    ) -> list[StockChange]:
        """``head``: now, feed MAXLEN, max on_hand; ``calls``: per slot, its shards,
        the batch indexes of its changes and their arguments (see supply.lua)."""

        async def run(shards: list[int], changes: list[Arg], dry: int) -> Any:
            await self._step("slot", shards[0])
            return await self._runner.call("supply", self._xkeys(shards), [*head, dry, *changes])

        checks = _results(
            await asyncio.gather(
                *(run(shards, changes, 1) for shards, _, changes in calls), return_exceptions=True
            )
        )
        refusals = [reply for reply in checks if reply[0] != "OK"]
        if refusals:
            raise replies.supply_error(min(refusals, key=lambda reply: int(reply[1])))
        applied = _results(
            await asyncio.gather(
                *(run(shards, changes, 0) for shards, _, changes in calls), return_exceptions=True
            )
        )
        refusals = [reply for reply in applied if reply[0] != "OK"]
        if refusals:
            raise replies.supply_error(min(refusals, key=lambda reply: int(reply[1])))
        outcomes: list[Any] = [None] * len(ops)
        for (_, indexes, _), reply in zip(calls, applied, strict=True):
            for i, outcome in zip(indexes, reply[1], strict=True):
                outcomes[i] = outcome
        return replies.stock_changes([(op.sku, op.node) for op in ops], outcomes)


def _first_refusal(refusals: Sequence[Any]) -> Any:
    """The refusal to raise among the slots': a decision on the whole
    reservation (the same in every slot) first, else the NEGATIVE of the row
    the reference ledger checks first (the lowest line index)."""
    for reply in refusals:
        if reply[0] != "NEGATIVE":
            return reply
    return min(refusals, key=lambda reply: int(reply[5]))


def _results(outcomes: Sequence[Any]) -> list[Any]:
    """The replies of concurrent steps, all of which ran to their end (so none
    is left running unobserved); the first exception, if any, is raised."""
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return list(outcomes)
