"""`inventory-engine bench core`: the pure and the Cython ledger on the same operation mix.

Both ledgers get the same catalogue (``rows`` (SKU, node) rows: SKUs x 20 nodes,
loaded with SetStock/SafetyStock batches; loading is not timed) and then run the
same pre-generated program through their public methods: reserve (1-3 lines,
with and without an explicit node, a few large lines that split across nodes,
some out-of-stock and partial requests, some idempotent replays), commit,
release (whole and per line), fulfill (whole and per line), extend, and
explicit expire_due calls while ``now`` advances, so holds also expire inside
the mutations. The program comes from a simple model of the reservation
lifecycle, so most operations succeed the way a checkout's would; whatever
fails (out of stock, a hold that expired first) fails identically in both
ledgers, and the run checks that.

SKUs are drawn uniformly: every operation lands on cold rows, the hard case
for both ledgers. Each operation has its own id and SKU string objects (equal
to the stored ones, never the same objects), as a server's freshly decoded
requests would.

The program is cut into 5 blocks that run alternately (pure block 1, fast
block 1, pure block 2, ...), so both ledgers see the same machine noise while
each keeps its own working set warm within a block; the figures are medians
over blocks, and ``ratio`` is the median of the per-block ratios. Inside a
block, every chunk of 250 calls has its arguments touched (untimed) before it
runs: a server hands the ledger a request it has just decoded, hot in cache,
while a pre-generated program is cold, and those misses cost both ledgers the
same, measuring the harness rather than the ledger. (Chunks used to be 5,000
calls, about 1.6 MB of argument objects: more than the 512 KiB L2 cache of the
2-core VM this runs on, so by its turn a call's arguments had been evicted
again. ``driver_ops_per_s`` showed it: the no-op loop ran at about 4 M calls a
second with 5,000-call chunks and about 8 M with 250, the difference being
cache misses on the arguments alone. At 250 the two clock reads per chunk cost
under 10 ns a call.) The dispatch loop is the same for both; its own cost is
``driver_ops_per_s`` (the same loop over no-op Python methods). Time is this
process's CPU time (``time.process_time``), not wall time: on a shared machine
a neighbour's burst would otherwise land in whichever ledger happened to be
running. Operations per second are per CPU-second.

``bytes_per_row`` is the tracemalloc delta of loading the catalogue into a fresh
Cython ledger, divided by rows. The Cython ledger allocates its C arrays with
PyMem_Raw*, which tracemalloc traces, so the figure covers the rows, the hash
table, page slack and the interning of ids (the SKU strings themselves, the
id -> index tables), everything the ledger keeps for its rows.
``pure_bytes_per_row`` is the same measure for the reference ledger.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from engine.core.errors import EngineError
from engine.core.types import SupplyKind, SupplyOp
from engine.ledgers import make_ledger

__all__ = ["run"]

_NODES_PER_SKU = 20
_T0 = 1_700_000_000.0
_TICK_S = 0.002  # simulated time between operations: ~500 operations a second
_TTLS = (30.0, 60.0, 120.0)
_LOAD_BATCH = 10_000
_CHUNK_OPS = 250  # small enough that a warmed chunk's arguments stay in cache (see the docstring)
_BLOCKS = 5  # each ledger runs a fifth of the program, then the other one does

_RESERVE, _COMMIT, _RELEASE, _FULFILL, _EXTEND, _EXPIRE = range(6)
_METHODS = ("reserve", "commit", "release", "fulfill", "extend", "expire_due")

Program = list[tuple[int, tuple[Any, ...]]]


# --------------------------------------------------------------------------- catalogue


class _Catalogue:
    """Network and stock levels, generated once and loaded into each ledger."""

    def __init__(self, rows: int, seed: int) -> None:
        rng = random.Random(seed)
        n_nodes = max(1, min(_NODES_PER_SKU, rows))
        self.n_skus = max(1, rows // n_nodes)
        n_dcs = max(1, n_nodes // 5)
        self.nodes = [f"DC-{i:02d}" for i in range(n_dcs)] + [f"ST-{i:03d}" for i in range(n_nodes - n_dcs)]
        dcs, stores = self.nodes[:n_dcs], self.nodes[n_dcs:] or self.nodes[:n_dcs]
        self.channels = {
            "web": tuple(dcs + stores),
            "app": tuple(stores[: len(stores) // 2] + dcs),
            "pos": tuple(stores),
        }
        # 1% of SKUs are sold out everywhere: the out-of-stock attempts use them.
        self.sold_out = set(rng.sample(range(self.n_skus), max(1, self.n_skus // 100)))
        self.on_hand = [
            0 if i in self.sold_out else rng.randint(20, 200)
            for i in range(self.n_skus)
            for _ in range(n_nodes)
        ]
        self.safety = [rng.randint(1, 3) if rng.random() < 0.05 else 0 for _ in range(len(self.on_hand))]

    @staticmethod
    def sku_name(i: int) -> str:
        return f"SKU-{i:07d}"

    def load(self, ledger: Any) -> None:
        """Define the network and load every row (SKU names are created here, so a
        memory measurement around this call includes them)."""
        for node in self.nodes:
            ledger.define_node(node)
        for channel, nodes in self.channels.items():
            ledger.define_channel(channel, nodes)
        n_nodes = len(self.nodes)
        batch: list[SupplyOp] = []
        for i in range(self.n_skus):
            sku = self.sku_name(i)
            base = i * n_nodes
            for j, node in enumerate(self.nodes):
                batch.append(SupplyOp(SupplyKind.SET, sku, node, self.on_hand[base + j], 1, None))
                if self.safety[base + j]:
                    batch.append(SupplyOp(SupplyKind.SAFETY, sku, node, self.safety[base + j], 0, None))
            if len(batch) >= _LOAD_BATCH:
                ledger.apply_supply(batch, _T0)
                batch = []
        if batch:
            ledger.apply_supply(batch, _T0)


# --------------------------------------------------------------------------- program


def _make_program(cat: _Catalogue, n_ops: int, seed: int) -> Program:
    """A lifecycle-shaped operation mix; see the module docstring.

    Every operation gets its own id and SKU string objects, built in program
    order, the way a server hands each request's freshly decoded strings to the
    ledger: equal to the ones the ledger stored, never the same objects, and
    not shared across the program (shared objects would be cold cache lines that
    both ledgers pay for on every call, measuring the harness, not the ledger).
    """
    rng = random.Random(seed + 1)
    in_stock = [i for i in range(cat.n_skus) if i not in cat.sold_out]
    sold_out = sorted(cat.sold_out)
    sku_name = cat.sku_name
    channel_names = ("web", "web", "web", "pos", "pos", "app")
    held: list[list[Any]] = []  # [reservation number, expires_at, n_lines]
    committed: list[list[Any]] = []  # [reservation number, n_lines]
    partly_shipped: list[int] = []
    done: list[tuple[Any, ...]] = []  # successful reserve requests, for replays
    program: Program = []
    now = _T0
    next_id = 0

    def rid(n: int) -> str:
        return f"bench-{n:09d}"

    def take(pool: list[list[Any]], live: Callable[[list[Any]], bool]) -> list[Any] | None:
        for _ in range(4):
            if not pool:
                return None
            k = rng.randrange(len(pool))
            item = pool[k]
            pool[k] = pool[-1]
            pool.pop()
            if live(item):
                return item
        return None

    def is_live(item: list[Any]) -> bool:
        return bool(item[1] > now + _TICK_S)

    def reserve_call(
        n: int, channel: str, specs: list[tuple[int, int, str | None]], ttl: float, partial: bool
    ) -> tuple[int, tuple[Any, ...]]:
        lines = [(sku_name(i), q, node) for i, q, node in specs]
        return (_RESERVE, (rid(n), channel, lines, ttl, partial, now))

    def reserve() -> None:
        nonlocal next_id
        next_id += 1
        channel = rng.choice(channel_names)
        eligible = cat.channels[channel]
        specs: list[tuple[int, int, str | None]] = []
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
            i = rng.choice(in_stock)
            if rng.random() < 0.02:
                specs.append((i, rng.randint(100, 250), None))  # splits across nodes
            elif rng.random() < 0.5:
                specs.append((i, rng.randint(1, 3), rng.choice(eligible)))
            else:
                specs.append((i, rng.randint(1, 3), None))
        partial = False
        fails = False
        if rng.random() < 0.03:
            specs.append((rng.choice(sold_out), 1, None))
            partial = rng.random() < 0.3
            fails = not partial
        ttl = rng.choice(_TTLS)
        program.append(reserve_call(next_id, channel, specs, ttl, partial))
        if not fails:
            held.append([next_id, now + ttl, len(specs)])
            done.append((next_id, channel, specs, ttl, partial))

    for _ in range(n_ops):
        now += _TICK_S
        x = rng.random()
        if x < 0.47:
            reserve()
        elif x < 0.49 and done:
            program.append(reserve_call(*rng.choice(done)))  # a client retry
        elif x < 0.67:
            item = take(held, is_live)
            if item is None:
                reserve()
                continue
            program.append((_COMMIT, (rid(item[0]), now)))
            committed.append([item[0], item[2]])
        elif x < 0.72:
            item = take(held, is_live)
            if item is None:
                reserve()
                continue
            program.append((_RELEASE, (rid(item[0]), None, now)))
        elif x < 0.74:
            item = take(committed, lambda _: True)
            if item is None:
                reserve()
                continue
            program.append((_RELEASE, (rid(item[0]), None, now)))  # an order cancelled
        elif x < 0.77:
            item = take(held, is_live)
            if item is None:
                reserve()
                continue
            program.append((_RELEASE, (rid(item[0]), [rng.randrange(item[2])], now)))
            held.append(item)  # the rest of the cart stays held
        elif x < 0.88:
            if partly_shipped and rng.random() < 0.3:
                n = partly_shipped.pop()
            else:
                item = take(committed, lambda _: True)
                if item is None:
                    reserve()
                    continue
                n = item[0]
            program.append((_FULFILL, (rid(n), None, now)))
        elif x < 0.91:
            item = take(committed, lambda _: True)
            if item is None:
                reserve()
                continue
            program.append((_FULFILL, (rid(item[0]), [rng.randrange(item[1])], now)))
            partly_shipped.append(item[0])
        elif x < 0.95:
            item = take(held, is_live)
            if item is None:
                reserve()
                continue
            ttl = rng.choice(_TTLS)
            program.append((_EXTEND, (rid(item[0]), ttl, now)))
            item[1] = now + ttl
            held.append(item)
        elif x < 0.97:
            program.append((_EXPIRE, (now,)))
        else:
            reserve()
    return program


def _prehash(program: Program) -> None:
    """Hash every id string once: the first call to see a string would pay for
    hashing it, and that should not depend on which ledger runs a chunk first."""
    for _, args in program:
        for a in args:
            if isinstance(a, str):
                hash(a)
            elif isinstance(a, list):
                for line in a:
                    if isinstance(line, tuple):
                        hash(line[0])
                        if line[2] is not None:
                            hash(line[2])


# --------------------------------------------------------------------------- timing


def _bind(ledger: Any, program: Program) -> list[tuple[Callable[..., Any], tuple[Any, ...]]]:
    methods = [getattr(ledger, name) for name in _METHODS]
    return [(methods[code], args) for code, args in program]


def _warm(calls: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> None:
    """Touch every object the calls pass in (ids, lines, SKU strings, floats).

    A server hands the ledger a request it has just decoded: hot in cache. A
    pre-generated program of a few hundred thousand calls is cold, and every
    call would start with a handful of cache and TLB misses on its own
    arguments that cost the same in both ledgers, so they measure the harness.
    Each chunk is warmed, untimed, right before each ledger runs it.
    """
    for _fn, args in calls:
        for a in args:
            if type(a) is list:
                for line in a:
                    hash(line)  # a tuple: reads every element
            elif a is not None:
                hash(a)


def _timed_block(calls: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> tuple[float, int]:
    """CPU seconds and failed calls of a block, run as warmed chunks (see ``_warm``)."""
    seconds = 0.0
    failed = 0
    for lo in range(0, len(calls), _CHUNK_OPS):
        chunk = calls[lo : lo + _CHUNK_OPS]
        _warm(chunk)
        s, f = _timed(chunk)
        seconds += s
        failed += f
    return seconds, failed


def _timed(calls: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> tuple[float, int]:
    errors = 0
    t0 = time.process_time()
    for fn, args in calls:
        try:
            fn(*args)
        except EngineError:
            errors += 1
    return time.process_time() - t0, errors


class _Noop:
    """Same signatures as the ledger, no work: the cost of the dispatch loop itself."""

    def reserve(self, rid: Any, channel: Any, lines: Any, ttl: Any, partial: Any, now: Any) -> int:
        return 1

    def commit(self, rid: Any, now: Any) -> int:
        return 2

    def release(self, rid: Any, lines: Any, now: Any) -> int:
        return 4

    def fulfill(self, rid: Any, lines: Any, now: Any) -> int:
        return 3

    def extend(self, rid: Any, ttl: Any, now: Any) -> float:
        return 0.0

    def expire_due(self, now: Any) -> list[str]:
        return []


def _load_measured(impl: str, cat: _Catalogue) -> tuple[Any, int]:
    """A fresh ledger with the catalogue loaded, and the bytes it kept (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        ledger = make_ledger(impl)
        cat.load(ledger)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return ledger, after - before


def run(rows: int = 1_000_000, ops: int = 350_000, seed: int = 0) -> dict[str, Any]:
    """Load both ledgers, run the same program through each, return the figures."""
    cat = _Catalogue(rows, seed)
    program = _make_program(cat, ops, seed)
    _prehash(program)

    fast, fast_bytes = _load_measured("fast", cat)
    pure, pure_bytes = _load_measured("pure", cat)
    n_rows = fast.row_count()
    if pure.row_count() != n_rows:
        raise RuntimeError("the two ledgers loaded different catalogues")
    pure_calls, fast_calls, noop_calls = _bind(pure, program), _bind(fast, program), _bind(_Noop(), program)
    # The catalogue and the program are long-lived: keep the collector from
    # re-walking them in every full collection during the timed phases. What
    # each ledger allocates while it runs is still collected as usual.
    gc.collect()
    gc.freeze()
    bounds = [len(program) * k // _BLOCKS for k in range(_BLOCKS + 1)]
    rates: dict[str, list[float]] = {"pure": [], "fast": [], "noop": []}
    errors = {"pure": 0, "fast": 0, "noop": 0}
    try:
        for k in range(_BLOCKS):
            for name, calls in (("pure", pure_calls), ("fast", fast_calls), ("noop", noop_calls)):
                seconds, failed = _timed_block(calls[bounds[k] : bounds[k + 1]])
                rates[name].append((bounds[k + 1] - bounds[k]) / seconds)
                errors[name] += failed
    finally:
        gc.unfreeze()

    # Same program, same answers: a different error count or end state means the
    # comparison is not apples to apples (and the ledgers disagree).
    if errors["pure"] != errors["fast"] or pure.reservation_count() != fast.reservation_count():
        raise RuntimeError(f"the ledgers diverged on the benchmark program: {errors}")
    for i in range(0, cat.n_skus, max(1, cat.n_skus // 200)):
        sku = cat.sku_name(i)
        for node in cat.nodes[:3]:
            if pure.stock(sku, node) != fast.stock(sku, node):
                raise RuntimeError(f"the ledgers diverged on {sku}@{node}")

    ratios = [f / p for f, p in zip(rates["fast"], rates["pure"], strict=True)]
    return {
        "rows": n_rows,
        "ops": len(program),
        "blocks": _BLOCKS,
        "pure_ops_per_s": round(statistics.median(rates["pure"])),
        "fast_ops_per_s": round(statistics.median(rates["fast"])),
        "ratio": round(statistics.median(ratios), 2),
        "driver_ops_per_s": round(statistics.median(rates["noop"])),
        "error_ops": errors["fast"],
        "bytes_per_row": round(fast_bytes / n_rows, 1),
        "pure_bytes_per_row": round(pure_bytes / n_rows, 1),
        "reservations": fast.reservation_count(),
    }


def run_memory(rows: int, impls: tuple[str, ...] = ("fast",), seed: int = 0) -> dict[str, Any]:
    """Bytes per (SKU, node) row only: load ``rows`` into a fresh ledger of each kind, no op mix.

    The same catalogue and the same tracemalloc measure as ``run``'s
    ``bytes_per_row``, without generating and running the program, so it
    reaches row counts (10,000,000) where the op mix would take too long. Each
    ledger is dropped before the next one loads, so peak memory is one ledger
    plus the catalogue.
    """
    cat = _Catalogue(rows, seed)
    out: dict[str, Any] = {"rows": cat.n_skus * len(cat.nodes), "skus": cat.n_skus, "nodes": len(cat.nodes)}
    for impl in impls:
        t0 = time.perf_counter()
        ledger, used = _load_measured(impl, cat)
        n_rows = ledger.row_count()
        out[f"{impl}_bytes_per_row"] = round(used / n_rows, 1)
        out[f"{impl}_load_s"] = round(time.perf_counter() - t0, 1)
        del ledger
        gc.collect()
    return out


def run_per_op(rows: int = 1_000_000, ops: int = 350_000, seed: int = 0) -> dict[str, Any]:
    """Nanoseconds per call of each operation kind, both ledgers, on ``run``'s program.

    Each call is timed alone (``perf_counter_ns`` around it, so both ledgers
    carry the same ~80 ns of timer), in the same warmed chunks as ``run``:
    where the fast ledger's time goes, by kind, next to the pure one's. Wall
    time, not CPU time: use ``run`` for the ratio, this for the breakdown.
    """
    cat = _Catalogue(rows, seed)
    program = _make_program(cat, ops, seed)
    _prehash(program)
    spent: dict[str, list[int]] = {}
    counts = [0] * len(_METHODS)
    for impl in ("fast", "pure"):
        ledger = make_ledger(impl)
        cat.load(ledger)
        calls = _bind(ledger, program)
        totals = [0] * len(_METHODS)
        gc.collect()
        gc.freeze()
        try:
            for lo in range(0, len(calls), _CHUNK_OPS):
                chunk = calls[lo : lo + _CHUNK_OPS]
                _warm(chunk)
                for (fn, args), (code, _) in zip(chunk, program[lo : lo + _CHUNK_OPS], strict=True):
                    t0 = time.perf_counter_ns()
                    # try/except, not contextlib.suppress: a context manager per
                    # call would cost more than the fast ledger's operation.
                    try:  # noqa: SIM105
                        fn(*args)
                    except EngineError:
                        pass
                    totals[code] += time.perf_counter_ns() - t0
                    if impl == "fast":
                        counts[code] += 1
        finally:
            gc.unfreeze()
        spent[impl] = totals
        del ledger, calls
        gc.collect()
    fast_total = sum(spent["fast"])
    out: dict[str, Any] = {"rows": cat.n_skus * len(cat.nodes), "ops": len(program)}
    for code, name in enumerate(_METHODS):
        n = counts[code]
        if n:
            out[name] = {
                "calls": n,
                "fast_ns": round(spent["fast"][code] / n),
                "pure_ns": round(spent["pure"][code] / n),
                "ratio": round(spent["pure"][code] / spent["fast"][code], 1),
                "share_of_fast_time": round(spent["fast"][code] / fast_total, 3),
            }
    out["ratio"] = round(sum(spent["pure"]) / fast_total, 2)
    return out
