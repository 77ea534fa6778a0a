# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: binding=False
"""The Cython reservation ledger: same interface and results as ``PureLedger``.

``engine.core.ledger.PureLedger`` is the reference; every observable result of
this class (return values, error types/reasons/details/messages, ``expire_due``
order, ``export_state`` including its list and dict order) is meant to be
identical, and a differential test holds it to that. Where the reference has a
known quirk, this ledger reproduces it on purpose so both stay
interchangeable; those places are marked REFERENCE QUIRK.

Speed comes from keeping the hot paths (reserve, commit, release, fulfill,
extend, expiry) on C data laid out for few cache misses (see ledger.pxd).
Python objects are created only for results and errors. ``binding=False``
keeps the methods plain method descriptors: the cheapest call path CPython has.
"""

cimport cython
from cpython.dict cimport PyDict_GetItemWithError
from cpython.list cimport PyList_CheckExact
from cpython.long cimport PyLong_AsSsize_t
from cpython.mem cimport PyMem_RawFree, PyMem_RawMalloc, PyMem_RawRealloc
from cpython.object cimport Py_EQ, PyObject_RichCompareBool
from cpython.ref cimport Py_INCREF, Py_XDECREF, PyObject
from cpython.tuple cimport PyTuple_Check, PyTuple_CheckExact, PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.unicode cimport PyUnicode_CheckExact, PyUnicode_DATA, PyUnicode_GET_LENGTH
from libc.stdint cimport INT64_MIN, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset

from engine.core.errors import (
    FieldViolation,
    IdempotencyMismatch,
    IllegalTransition,
    InvalidArgument,
    NodeNotEligible,
    NotFound,
    OutOfStock,
    Shortfall,
    StockRejected,
    UnknownChannel,
    UnknownNode,
)
from engine.core.ledger import STATE_FORMAT
from engine.core.types import (
    MAX_ON_HAND as _PY_MAX_ON_HAND,
    Allocation,
    NodeAvailability,
    Reservation,
    ReservationLine,
    ReservationState,
    SkuAvailability,
    StockChange,
    StockLevel,
    SupplyKind,
    aggregate_state,
)

__all__ = ["FastLedger"]

cdef extern from "Python.h":
    bint PyUnicode_IS_COMPACT_ASCII(object o)

cdef extern from *:
    """
    /* MurmurHash3's 64-bit finalizer: dense interned ids and Python's small-int
       hashes must not cluster in linear-probing tables indexed by the low bits. */
    static inline uint64_t fastledger_fmix(uint64_t k) {
        k ^= k >> 33;
        k *= 0xff51afd7ed558ccdULL;
        k ^= k >> 33;
        k *= 0xc4ceb9fe1a85ec53ULL;
        k ^= k >> 33;
        return k;
    }
    static inline uint64_t fastledger_row_key(int32_t sku, int32_t node) {
        return fastledger_fmix(((uint64_t)(uint32_t)sku << 32) | (uint64_t)(uint32_t)node);
    }
    static inline uint64_t fastledger_row_hkey(Py_hash_t sku_hash, int32_t node) {
        return fastledger_fmix((uint64_t)sku_hash ^ ((uint64_t)(uint32_t)node * 0x9e3779b97f4a7c15ULL));
    }
    #define fastledger_prefetch(p) __builtin_prefetch((const void *)(p))

    /* Random access to tens of MB of rows and hash slots is dominated by TLB
       misses (and, in a VM, by nested page walks); 2 MiB pages cut those by
       orders of magnitude. Linux only, advisory, and only the 2 MiB-aligned
       interior of a block can use them. */
    #if defined(__linux__)
    #include <sys/mman.h>
    #endif
    static void fastledger_advise_huge(void *p, size_t size) {
    #if defined(__linux__) && defined(MADV_HUGEPAGE)
        const uintptr_t huge = (uintptr_t)1 << 21;
        uintptr_t start = ((uintptr_t)p + huge - 1) & ~(huge - 1);
        uintptr_t end = ((uintptr_t)p + size) & ~(huge - 1);
        if (end > start) (void)madvise((void *)start, end - start, MADV_HUGEPAGE);
    #else
        (void)p; (void)size;
    #endif
    }
    """
    uint64_t fastledger_fmix(uint64_t k) noexcept nogil
    uint64_t fastledger_row_key(int32_t sku, int32_t node) noexcept nogil
    uint64_t fastledger_row_hkey(Py_hash_t sku_hash, int32_t node) noexcept nogil
    void fastledger_prefetch(const void* p) noexcept nogil
    void fastledger_advise_huge(void* p, size_t size) noexcept nogil

cdef enum:
    # 131072 rows (8 MiB) a page: growing never copies rows, and a page holds at
    # least three aligned 2 MiB extents for huge pages. Untouched rows of the
    # last page cost address space, not memory.
    PAGE_SHIFT = 17
    PAGE_ROWS = 131072
    PAGE_MASK = 131071
    MIN_SLOTS = 64
    INLINE_MAX = 15
    INLINE_NONE = 255
    ID_INLINE_MAX = 256
    ID_NOT_INLINE = 65535
    F_APPLIED = 1
    F_DUPLICATE = 2

# Values beyond this cannot come from a valid request; they take the Python-int
# path so C arithmetic never overflows where the reference has big ints.
cdef int64_t SAFE_LIMIT = 4611686018427387904  # 2**62
cdef int64_t MAX_ON_HAND = _PY_MAX_ON_HAND

# Enum members indexed by the C state, so a mutation returns the same
# ReservationState object as the reference without creating anything.
cdef tuple _STATES = (
    None,
    ReservationState.HELD,
    ReservationState.COMMITTED,
    ReservationState.FULFILLED,
    ReservationState.RELEASED,
    ReservationState.EXPIRED,
)
cdef tuple _STATE_NAMES = (None, "HELD", "COMMITTED", "FULFILLED", "RELEASED", "EXPIRED")

cdef object _ADJUST = SupplyKind.ADJUST
cdef object _SET = SupplyKind.SET
cdef object _SAFETY = SupplyKind.SAFETY


cdef void* _grow(void* ptr, Py_ssize_t* cap, Py_ssize_t need, size_t item) except NULL:
    """Make room for ``need`` items (doubling); returns the possibly moved block."""
    cdef Py_ssize_t new_cap = cap[0]
    cdef void* p
    if need <= new_cap and ptr != NULL:
        return ptr
    if new_cap < 16:
        new_cap = 16
    while new_cap < need:
        new_cap *= 2
    p = PyMem_RawRealloc(ptr, <size_t>new_cap * item)
    if p == NULL:
        raise MemoryError()
    cap[0] = new_cap
    return p


cdef void* _realloc(void* ptr, size_t size) except NULL:
    cdef void* p = PyMem_RawRealloc(ptr, size)
    if p == NULL:
        raise MemoryError()
    return p


cdef size_t HUGE_MIN = 4 << 20  # below this a block is cheap to map with small pages


cdef Slot* _new_slots(uint64_t count) except NULL:
    cdef Slot* slots = <Slot*>PyMem_RawMalloc(count * sizeof(Slot))
    if slots == NULL:
        raise MemoryError()
    if count * sizeof(Slot) >= HUGE_MIN:
        fastledger_advise_huge(slots, count * sizeof(Slot))  # before the memset touches it
    memset(slots, 0, count * sizeof(Slot))
    return slots


cdef inline char* _id_bytes(ResHead* head) noexcept nogil:
    return <char*>head + sizeof(ResHead)


cdef inline LineRec* _lines_of(ResHead* head) noexcept nogil:
    return <LineRec*>(<char*>head + sizeof(ResHead) + head.key_space)


cdef inline AllocRec* _allocs_of(ResHead* head) noexcept nogil:
    return <AllocRec*>(<char*>head + sizeof(ResHead) + head.key_space + head.n_lines * sizeof(LineRec))


cdef inline Py_ssize_t _record_size(ResHead* head) noexcept nogil:
    return (sizeof(ResHead) + head.key_space + head.n_lines * sizeof(LineRec)
            + head.n_allocs * sizeof(AllocRec))


cdef inline bint _is_ascii_str(object key) noexcept:
    return PyUnicode_CheckExact(key) and PyUnicode_IS_COMPACT_ASCII(key)


# The reservation state for every set of line states, computed once from
# engine.core.types.aggregate_state itself, so the rule has a single source
# (it depends only on which states occur: it starts from ``set(line_states)``).
cdef uint8_t _AGGREGATE[64]


cdef int _fill_aggregate_table() except -1:
    cdef int mask
    for mask in range(64):
        _AGGREGATE[mask] = int(aggregate_state([st for st in range(RS_HELD, RS_EXPIRED + 1) if mask & (1 << st)]))
    return 0


_fill_aggregate_table()


cdef int _aggregate(ResHead* head) noexcept nogil:
    cdef uint32_t seen = 0
    cdef LineRec* lines = _lines_of(head)
    cdef int32_t k
    for k in range(head.n_lines):
        seen |= (<uint32_t>1) << lines[k].state
    return _AGGREGATE[seen & 63]


cdef bint _any_held(ResHead* head) noexcept nogil:
    cdef LineRec* lines = _lines_of(head)
    cdef int32_t k
    for k in range(head.n_lines):
        if lines[k].state == RS_HELD:
            return True
    return False


cdef object _illegal(object reservation_id, int state, str wanted):
    # Same messages and reasons as engine.core.ledger._illegal.
    cdef str name = _STATE_NAMES[state]
    if wanted is not None and (state == RS_HELD or state == RS_COMMITTED):
        return IllegalTransition(
            f"reservation {reservation_id!r} is {name.lower()}, not {wanted}",
            reason="NOT_COMMITTED" if wanted == "committed" else f"RESERVATION_{name}",
        )
    return IllegalTransition(
        f"reservation {reservation_id!r} is {name.lower()}", reason=f"RESERVATION_{name}"
    )


cdef int _fits_i64(object value, int64_t* out) except -1:
    """1 and the value when it fits in 64 bits; 0 when it is an int too large to."""
    try:
        out[0] = value
    except OverflowError:
        return 0
    return 1


cdef inline int _key_matches(PyObject* stored, uint8_t key_len, const char* inline_key,
                             object key) except -1:
    """Dict-key equality: identity, else the inline ASCII copy, else ``==``."""
    cdef Py_ssize_t n
    if stored == <PyObject*>key:
        return 1
    if key_len != INLINE_NONE and PyUnicode_CheckExact(key) and PyUnicode_IS_COMPACT_ASCII(key):
        # Two compact ASCII strs are equal exactly when their bytes are.
        n = PyUnicode_GET_LENGTH(key)
        return n == key_len and memcmp(PyUnicode_DATA(key), inline_key, n) == 0
    return PyObject_RichCompareBool(<object>stored, key, Py_EQ)


@cython.final
cdef class FastLedger:
    """Counters per (SKU, node), reservations, expiry, idempotency (Cython)."""

    implementation = "fast"

    def __cinit__(self):
        self._init_storage()

    def __dealloc__(self):
        self._free_storage()

    # ---------------------------------------------------------------- storage

    cdef int _init_storage(self) except -1:
        self._nodes = {}
        self._node_index = {}
        self._node_names = []
        self._channels = {}
        self._channel_index = {}
        self._events = {}
        self._node_defined = <uint8_t*>_grow(NULL, &self._node_cap, 16, sizeof(uint8_t))
        self._ch_nodes = <int32_t**>_grow(NULL, &self._ch_cap, 8, sizeof(int32_t*))
        self._ch_len = <Py_ssize_t*>_realloc(NULL, self._ch_cap * sizeof(Py_ssize_t))
        self._skus = <SkuRec*>_grow(NULL, &self._skus_cap, 16, sizeof(SkuRec))
        self._sku_slots = _new_slots(MIN_SLOTS)
        self._sku_mask = MIN_SLOTS - 1
        self._pages = <Row**>_grow(NULL, &self._pages_cap, 16, sizeof(Row*))
        self._page_blocks = <void**>_realloc(NULL, self._pages_cap * sizeof(void*))
        self._row_slots = _new_slots(MIN_SLOTS)
        self._row_mask = MIN_SLOTS - 1
        self._arena = <char*>_grow(NULL, &self._arena_cap, 4096, 1)
        self._res_slots = _new_slots(MIN_SLOTS)
        self._res_mask = MIN_SLOTS - 1
        self._heap = <HeapEntry*>_grow(NULL, &self._heap_cap, 64, sizeof(HeapEntry))
        self._plan_lines = <LineRec*>_grow(NULL, &self._plan_lines_cap, 16, sizeof(LineRec))
        self._plan_allocs = <AllocRec*>_grow(NULL, &self._plan_allocs_cap, 64, sizeof(AllocRec))
        self._free_cap = 16
        self._free_row = <int64_t*>_realloc(NULL, 16 * sizeof(int64_t))
        self._free_atp = <int64_t*>_realloc(NULL, 16 * sizeof(int64_t))
        self._free_node = <int32_t*>_realloc(NULL, 16 * sizeof(int32_t))
        self._due = <HeapEntry*>_grow(NULL, &self._due_cap, 64, sizeof(HeapEntry))
        self._idx_buf = <Py_ssize_t*>_grow(NULL, &self._idx_cap, 16, sizeof(Py_ssize_t))
        return 0

    cdef void _free_storage(self) noexcept:
        cdef Py_ssize_t i, off = 0
        cdef ResHead* head
        if self._page_blocks != NULL:
            for i in range(self._n_pages):
                PyMem_RawFree(self._page_blocks[i])
            PyMem_RawFree(self._page_blocks)
        PyMem_RawFree(self._pages)
        if self._ch_nodes != NULL:
            for i in range(self._ch_count):
                PyMem_RawFree(self._ch_nodes[i])
            PyMem_RawFree(self._ch_nodes)
        if self._skus != NULL:
            for i in range(self._n_skus):
                Py_XDECREF(self._skus[i].name)
            PyMem_RawFree(self._skus)
        if self._arena != NULL:
            while off < self._arena_len:
                head = <ResHead*>(self._arena + off)
                Py_XDECREF(head.id)
                Py_XDECREF(head.channel)
                off += _record_size(head)
            PyMem_RawFree(self._arena)
        PyMem_RawFree(self._ch_len)
        PyMem_RawFree(self._node_defined)
        PyMem_RawFree(self._sku_slots)
        PyMem_RawFree(self._row_slots)
        PyMem_RawFree(self._res_slots)
        PyMem_RawFree(self._heap)
        PyMem_RawFree(self._plan_lines)
        PyMem_RawFree(self._plan_allocs)
        PyMem_RawFree(self._free_row)
        PyMem_RawFree(self._free_atp)
        PyMem_RawFree(self._free_node)
        PyMem_RawFree(self._due)
        PyMem_RawFree(self._idx_buf)
        self._pages = NULL
        self._page_blocks = NULL
        self._ch_nodes = NULL
        self._ch_len = NULL
        self._node_defined = NULL
        self._skus = NULL
        self._sku_slots = NULL
        self._row_slots = NULL
        self._arena = NULL
        self._res_slots = NULL
        self._heap = NULL
        self._plan_lines = NULL
        self._plan_allocs = NULL
        self._free_row = NULL
        self._free_atp = NULL
        self._free_node = NULL
        self._due = NULL
        self._idx_buf = NULL
        self._n_pages = self._pages_cap = self._n_rows = 0
        self._ch_count = self._ch_cap = 0
        self._node_cap = 0
        self._n_skus = self._skus_cap = 0
        self._arena_len = self._arena_cap = self._n_res = 0
        self._heap_n = self._heap_cap = 0
        self._plan_lines_cap = self._plan_allocs_cap = self._n_plan_allocs = 0
        self._free_cap = self._due_cap = self._idx_cap = 0

    # -------------------------------------------------------------- interning

    cdef int32_t _sku_of(self, object sku) except -2:
        """The interned index of ``sku``, or -1 when it was never seen."""
        cdef Py_hash_t h = hash(sku)
        cdef uint64_t k = fastledger_fmix(<uint64_t>h)
        cdef uint64_t mask = self._sku_mask
        cdef uint64_t i = k & mask
        cdef uint32_t tag = <uint32_t>(k >> 32)
        cdef Slot* slot
        cdef SkuRec* rec
        while True:
            slot = &self._sku_slots[i]
            if slot.ref == 0:
                return -1
            if slot.tag == tag:
                rec = &self._skus[slot.ref - 1]
                if rec.hash == h and _key_matches(rec.name, rec.key_len, rec.key, sku):
                    return <int32_t>(slot.ref - 1)
            i = (i + 1) & mask

    cdef int32_t _intern_sku(self, object sku) except -2:
        cdef int32_t idx = self._sku_of(sku)
        cdef Py_hash_t h
        cdef uint64_t k, i
        cdef SkuRec* rec
        cdef Py_ssize_t n
        if idx >= 0:
            return idx
        idx = <int32_t>self._n_skus
        if idx >= 0x7FFFFFFE:
            raise OverflowError("too many SKUs for one ledger")
        if (idx + 1) * 2 > <int64_t>(self._sku_mask + 1):
            self._rehash_skus((self._sku_mask + 1) * 2)
        h = hash(sku)
        self._skus = <SkuRec*>_grow(self._skus, &self._skus_cap, idx + 1, sizeof(SkuRec))
        rec = &self._skus[idx]
        rec.hash = h
        Py_INCREF(sku)
        rec.name = <PyObject*>sku
        rec.key_len = INLINE_NONE
        if PyUnicode_CheckExact(sku) and PyUnicode_IS_COMPACT_ASCII(sku):
            n = PyUnicode_GET_LENGTH(sku)
            if n <= INLINE_MAX:
                rec.key_len = <uint8_t>n
                memcpy(rec.key, PyUnicode_DATA(sku), n)
        self._n_skus = idx + 1
        k = fastledger_fmix(<uint64_t>h)
        i = k & self._sku_mask
        while self._sku_slots[i].ref != 0:
            i = (i + 1) & self._sku_mask
        self._sku_slots[i].ref = <uint32_t>(idx + 1)
        self._sku_slots[i].tag = <uint32_t>(k >> 32)
        return idx

    cdef int _rehash_skus(self, uint64_t slot_count) except -1:
        cdef Slot* slots = _new_slots(slot_count)
        cdef uint64_t mask = slot_count - 1
        cdef uint64_t k, i
        cdef Py_ssize_t s
        for s in range(self._n_skus):
            k = fastledger_fmix(<uint64_t>self._skus[s].hash)
            i = k & mask
            while slots[i].ref != 0:
                i = (i + 1) & mask
            slots[i].ref = <uint32_t>(s + 1)
            slots[i].tag = <uint32_t>(k >> 32)
        PyMem_RawFree(self._sku_slots)
        self._sku_slots = slots
        self._sku_mask = mask
        return 0

    cdef int32_t _intern_node(self, object node) except -2:
        cdef PyObject* p = PyDict_GetItemWithError(self._node_index, node)
        cdef Py_ssize_t idx
        if p != NULL:
            return <int32_t>PyLong_AsSsize_t(<object>p)
        idx = len(self._node_names)
        self._node_defined = <uint8_t*>_grow(self._node_defined, &self._node_cap, idx + 1, sizeof(uint8_t))
        self._node_defined[idx] = 0
        self._node_index[node] = idx
        self._node_names.append(node)
        return <int32_t>idx

    cdef int32_t _node_of(self, object node) except -2:
        cdef PyObject* p = PyDict_GetItemWithError(self._node_index, node)
        if p == NULL:
            return -1
        return <int32_t>PyLong_AsSsize_t(<object>p)

    cdef int32_t _defined_node_of(self, object node) except -2:
        cdef PyObject* p = PyDict_GetItemWithError(self._node_index, node)
        cdef Py_ssize_t idx
        if p == NULL:
            return -1
        idx = PyLong_AsSsize_t(<object>p)
        return <int32_t>idx if self._node_defined[idx] else -1

    # ------------------------------------------------------------------- rows

    cdef Row* _row(self, int64_t r) noexcept nogil:
        return self._pages[r >> PAGE_SHIFT] + (r & PAGE_MASK)

    cdef int64_t _find(self, int32_t sku, int32_t node) noexcept nogil:
        """The row of (interned SKU, node), or -1."""
        cdef uint64_t k = fastledger_row_hkey(self._skus[sku].hash, node)
        cdef uint64_t mask = self._row_mask
        cdef uint64_t i = k & mask
        cdef uint32_t tag = <uint32_t>(k >> 32)
        cdef Slot* slot
        cdef Row* row
        while True:
            slot = &self._row_slots[i]
            if slot.ref == 0:
                return -1
            if slot.tag == tag:
                row = self._row(slot.ref - 1)
                if row.sku == sku and row.node == node:
                    return slot.ref - 1
            i = (i + 1) & mask

    cdef int64_t _find_obj(self, object sku, Py_hash_t h, int32_t node) except -2:
        """The row of (the caller's SKU object with hash ``h``, node), or -1.

        The hot path of reserve: no SKU interning lookup; a short ASCII id is
        compared with the copy in the row, which has to be loaded anyway.
        """
        cdef uint64_t k = fastledger_row_hkey(h, node)
        cdef uint64_t mask = self._row_mask
        cdef uint64_t i = k & mask
        cdef uint32_t tag = <uint32_t>(k >> 32)
        cdef Slot* slot
        cdef Row* row
        cdef SkuRec* rec
        while True:
            slot = &self._row_slots[i]
            if slot.ref == 0:
                return -1
            if slot.tag == tag:
                row = self._row(slot.ref - 1)
                if row.node == node:
                    if row.key_len != INLINE_NONE and _is_ascii_str(sku):
                        if (PyUnicode_GET_LENGTH(sku) == row.key_len
                                and memcmp(PyUnicode_DATA(sku), row.key, row.key_len) == 0):
                            return slot.ref - 1
                    else:
                        rec = &self._skus[row.sku]
                        if rec.hash == h and _key_matches(rec.name, rec.key_len, rec.key, sku):
                            return slot.ref - 1
            i = (i + 1) & mask

    cdef int _rehash_rows(self, uint64_t slot_count) except -1:
        cdef Slot* slots = _new_slots(slot_count)
        cdef uint64_t mask = slot_count - 1
        cdef uint64_t k, i
        cdef int64_t r
        cdef Row* row
        for r in range(self._n_rows):
            row = self._row(r)
            k = fastledger_row_hkey(self._skus[row.sku].hash, row.node)
            i = k & mask
            while slots[i].ref != 0:
                i = (i + 1) & mask
            slots[i].ref = <uint32_t>(r + 1)
            slots[i].tag = <uint32_t>(k >> 32)
        PyMem_RawFree(self._row_slots)
        self._row_slots = slots
        self._row_mask = mask
        return 0

    cdef int64_t _insert_row(self, int32_t sku, int32_t node) except -1:
        """Append a zero row for a key known to be absent; rows are never removed."""
        cdef int64_t r = self._n_rows
        cdef Py_ssize_t page = r >> PAGE_SHIFT
        cdef uint64_t k, i
        cdef Row* row
        cdef char* block
        if r >= 0x7FFFFFFE:
            raise OverflowError("too many rows for one ledger")
        # Load factor under 3/4 keeps probe chains short.
        if (r + 1) * 4 > <int64_t>(self._row_mask + 1) * 3:
            self._rehash_rows((self._row_mask + 1) * 2)
        if page >= self._n_pages:
            if page + 1 > self._pages_cap:
                self._pages = <Row**>_grow(self._pages, &self._pages_cap, page + 1, sizeof(Row*))
                self._page_blocks = <void**>_realloc(self._page_blocks, self._pages_cap * sizeof(void*))
            block = <char*>PyMem_RawMalloc(PAGE_ROWS * sizeof(Row) + 64)
            if block == NULL:
                raise MemoryError()
            self._page_blocks[page] = block
            self._pages[page] = <Row*>((<size_t>block + 63) & ~(<size_t>63))
            self._n_pages = page + 1
            if page >= 1:
                # A second page means a big ledger: huge pages for it and the first.
                fastledger_advise_huge(self._pages[page], PAGE_ROWS * sizeof(Row))
                if page == 1:
                    fastledger_advise_huge(self._pages[0], PAGE_ROWS * sizeof(Row))
        row = self._row(r)
        memset(row, 0, sizeof(Row))
        row.sku = sku
        row.node = node
        row.key_len = self._skus[sku].key_len
        memcpy(row.key, self._skus[sku].key, sizeof(row.key))
        self._n_rows = r + 1
        k = fastledger_row_hkey(self._skus[sku].hash, node)
        i = k & self._row_mask
        while self._row_slots[i].ref != 0:
            i = (i + 1) & self._row_mask
        self._row_slots[i].ref = <uint32_t>(r + 1)
        self._row_slots[i].tag = <uint32_t>(k >> 32)
        return r

    cdef Row* _alloc_row_ptr(self, AllocRec* a, int32_t sku) except NULL:
        # Only a loaded image can name a row that does not exist (the reference
        # raises KeyError there too); if the row was created since, use it.
        cdef int64_t r = a.row
        if r < 0:
            r = self._find(sku, a.node)
            if r < 0:
                raise KeyError((<object>self._skus[sku].name, self._node_names[a.node]))
            a.row = <int32_t>r
        return self._row(r)

    cdef object _level(self, object sku, object node, int64_t r):
        cdef Row* row
        if r < 0:
            return StockLevel(sku, node, 0, 0, 0, 0, 0)
        row = self._row(r)
        return StockLevel(sku, node, row.on_hand, row.reserved, row.committed, row.safety, row.version)

    cdef int _grow_free(self, Py_ssize_t n) except -1:
        # Sourcing scratch: one slot per candidate node of the longest channel.
        cdef Py_ssize_t cap = self._free_cap
        while cap < n:
            cap *= 2
        self._free_row = <int64_t*>_realloc(self._free_row, cap * sizeof(int64_t))
        self._free_atp = <int64_t*>_realloc(self._free_atp, cap * sizeof(int64_t))
        self._free_node = <int32_t*>_realloc(self._free_node, cap * sizeof(int32_t))
        self._free_cap = cap
        return 0

    # ---------------------------------------------------------------- network

    def define_node(self, node_id):
        cdef int32_t idx = self._intern_node(node_id)
        self._nodes[node_id] = None
        self._node_defined[idx] = 1

    def define_channel(self, channel_id, node_ids):
        cdef Py_ssize_t i, n, ch
        cdef int32_t* arr
        cdef PyObject* p
        for i, node in enumerate(node_ids):
            if node not in self._nodes:
                raise UnknownNode(node, field=f"nodes[{i}]")
            if node in node_ids[:i]:
                # Sourcing would count the node's ATP twice and oversell it.
                raise InvalidArgument(
                    f"node {node!r} is listed twice",
                    (FieldViolation(f"nodes[{i}]", f"node {node!r} is listed twice"),),
                )
        nodes = tuple(node_ids)
        n = len(nodes)
        arr = <int32_t*>_realloc(NULL, (n if n > 0 else 1) * sizeof(int32_t))
        for i in range(n):
            arr[i] = self._intern_node(nodes[i])
        if n > self._free_cap:
            self._grow_free(n)
        p = PyDict_GetItemWithError(self._channel_index, channel_id)
        if p != NULL:
            ch = PyLong_AsSsize_t(<object>p)
            PyMem_RawFree(self._ch_nodes[ch])
        else:
            ch = self._ch_count
            if ch + 1 > self._ch_cap:
                self._ch_nodes = <int32_t**>_grow(self._ch_nodes, &self._ch_cap, ch + 1, sizeof(int32_t*))
                self._ch_len = <Py_ssize_t*>_realloc(self._ch_len, self._ch_cap * sizeof(Py_ssize_t))
            self._ch_count = ch + 1
            self._channel_index[channel_id] = ch
        self._ch_nodes[ch] = arr
        self._ch_len[ch] = n
        self._channels[channel_id] = nodes

    def has_node(self, node_id):
        return node_id in self._nodes

    def has_channel(self, channel_id):
        return channel_id in self._channels

    def channel_nodes(self, channel_id):
        try:
            return self._channels[channel_id]
        except KeyError:
            raise UnknownChannel(channel_id) from None

    # ----------------------------------------------------------------- supply

    def apply_supply(self, ops, double now):
        """Apply a batch of supply changes atomically: all of them or none."""
        return self._supply(ops, now)

    def adjust_stock(self, sku, node, delta, event_id, double now):
        return self._supply(((_ADJUST, sku, node, delta, 0, event_id),), now)[0]

    def set_stock(self, sku, node, on_hand, version, event_id, double now):
        return self._supply(((_SET, sku, node, on_hand, version, event_id),), now)[0]

    def set_safety_stock(self, sku, node, quantity, event_id, double now):
        return self._supply(((_SAFETY, sku, node, quantity, 0, event_id),), now)[0]

    cdef object _supply(self, object ops, double now):
        cdef Py_ssize_t n, i, n_stage = 0, s
        cdef uint64_t table_size = 4, mask, h
        cdef int32_t* table = NULL
        cdef StageRec* stages = NULL
        cdef StageRec* st
        cdef int64_t* op_stage = NULL
        cdef uint8_t* flags = NULL
        cdef int32_t sku_idx, nidx
        cdef int64_t r, v, ver, on_hand
        cdef int code, fits
        cdef Row* row
        cdef dict batch_events = None
        cdef list out

        if self._heap_n and self._heap[0].expires_at <= now:
            self._expire(now, False)
        seq = ops if (PyList_CheckExact(ops) or PyTuple_CheckExact(ops)) else list(ops)
        n = len(seq)
        while table_size < <uint64_t>(2 * n):
            table_size *= 2
        mask = table_size - 1
        try:
            # Every op is checked against the rows as the earlier ops of the batch
            # left them (the staged copies); nothing is written until all passed.
            table = <int32_t*>PyMem_RawMalloc(table_size * sizeof(int32_t))
            stages = <StageRec*>PyMem_RawMalloc((n if n > 0 else 1) * sizeof(StageRec))
            op_stage = <int64_t*>PyMem_RawMalloc((n if n > 0 else 1) * sizeof(int64_t))
            flags = <uint8_t*>PyMem_RawMalloc((n if n > 0 else 1) * sizeof(uint8_t))
            if table == NULL or stages == NULL or op_stage == NULL or flags == NULL:
                raise MemoryError()
            memset(table, 0xFF, table_size * sizeof(int32_t))
            for i in range(n):
                kind, sku, node, value, version, event_id = seq[i]
                nidx = self._defined_node_of(node)
                if nidx < 0:
                    raise UnknownNode(node, field=f"changes[{i}].node")
                ikind = int(kind)  # the reference computes int(kind) for every op
                op_stage[i] = -1
                flags[i] = 0
                if event_id is not None:
                    fingerprint = (ikind, sku, node, value, version)
                    seen = None
                    if batch_events is not None:
                        seen = batch_events.get(event_id)
                    if seen is None:
                        seen = self._events.get(event_id)
                    if seen is not None:
                        if seen != fingerprint:
                            raise IdempotencyMismatch(f"event {event_id!r} was applied with a different body")
                        flags[i] = F_DUPLICATE
                        continue
                    if batch_events is None:
                        batch_events = {}
                    batch_events[event_id] = fingerprint

                # The staged copy of this row: found in the batch table or made now.
                sku_idx = self._intern_sku(sku)
                h = fastledger_row_key(sku_idx, nidx) & mask
                while table[h] >= 0:
                    st = &stages[table[h]]
                    if st.sku == sku_idx and st.node == nidx:
                        break
                    h = (h + 1) & mask
                if table[h] >= 0:
                    s = table[h]
                else:
                    s = n_stage
                    n_stage += 1
                    table[h] = <int32_t>s
                    st = &stages[s]
                    st.sku = sku_idx
                    st.node = nidx
                    st.applied = 0
                    r = self._find(sku_idx, nidx)
                    st.row = r
                    if r >= 0:
                        row = self._row(r)
                        st.values[0] = row.on_hand
                        st.values[1] = row.reserved
                        st.values[2] = row.committed
                        st.values[3] = row.safety
                        st.values[4] = row.version
                    else:
                        memset(st.values, 0, sizeof(st.values))
                st = &stages[s]
                op_stage[i] = s

                # Same dispatch as `kind == SupplyKind.X` in the reference.
                if isinstance(kind, int) or kind == ikind:
                    code = ikind if SC_ADJUST <= ikind <= SC_SAFETY else SC_INVALID
                else:
                    code = SC_INVALID
                if code == SC_ADJUST:
                    fits = _fits_i64(value, &v)
                    if not fits or v > SAFE_LIMIT or v < -SAFE_LIMIT:
                        big = st.values[0] + value
                        if big < 0:
                            raise StockRejected(
                                f"adjusting {sku}@{node} by {value} would make on_hand negative ({big})",
                                reason="NEGATIVE_ON_HAND",
                            )
                        raise StockRejected(
                            f"on_hand of {sku}@{node} would exceed {_PY_MAX_ON_HAND}", reason="ON_HAND_LIMIT"
                        )
                    on_hand = st.values[0] + v
                    if on_hand < 0:
                        raise StockRejected(
                            f"adjusting {sku}@{node} by {value} would make on_hand negative ({on_hand})",
                            reason="NEGATIVE_ON_HAND",
                        )
                    if on_hand > MAX_ON_HAND:
                        raise StockRejected(
                            f"on_hand of {sku}@{node} would exceed {_PY_MAX_ON_HAND}", reason="ON_HAND_LIMIT"
                        )
                    st.values[0] = on_hand
                    flags[i] = F_APPLIED
                elif code == SC_SET:
                    fits = _fits_i64(value, &v)
                    if not fits or not 0 <= v <= MAX_ON_HAND:
                        raise StockRejected(f"on_hand must be 0..{_PY_MAX_ON_HAND}", reason="ON_HAND_LIMIT")
                    if not _fits_i64(version, &ver):
                        if version > 0:
                            raise OverflowError("a stock count version must fit in 64 bits")
                        ver = INT64_MIN  # older than anything stored
                    if ver > st.values[4]:
                        st.values[0] = v
                        st.values[4] = ver
                        flags[i] = F_APPLIED
                    # else: a count older than the one applied must not win; it is
                    # still recorded (batch_events) so a redelivery is a duplicate.
                elif code == SC_SAFETY:
                    fits = _fits_i64(value, &v)
                    if not fits or not 0 <= v <= MAX_ON_HAND:
                        raise StockRejected(
                            f"safety stock must be 0..{_PY_MAX_ON_HAND}", reason="ON_HAND_LIMIT"
                        )
                    st.values[3] = v
                    flags[i] = F_APPLIED
                else:
                    raise InvalidArgument(
                        f"unknown supply kind {kind!r}",
                        (FieldViolation(f"changes[{i}]", "unknown kind"),),
                    )
                if flags[i] & F_APPLIED:
                    st.applied = 1

            # Every op passed: write the rows (new ones in first-touch order, like
            # the reference's overlay dict) and remember the events.
            for s in range(n_stage):
                st = &stages[s]
                if st.row < 0:
                    if not st.applied:
                        continue  # a rejected-as-stale SET on a missing row creates nothing
                    st.row = self._insert_row(st.sku, st.node)
                row = self._row(st.row)
                row.on_hand = st.values[0]
                row.reserved = st.values[1]
                row.committed = st.values[2]
                row.safety = st.values[3]
                row.version = st.values[4]
            if batch_events is not None:
                self._events.update(batch_events)

            out = []
            for i in range(n):
                op = seq[i]
                sku = op[1]
                node = op[2]
                s = op_stage[i]
                if s >= 0:
                    r = stages[s].row
                else:
                    sku_idx = self._sku_of(sku)
                    nidx = self._node_of(node)
                    r = self._find(sku_idx, nidx) if sku_idx >= 0 and nidx >= 0 else -1
                out.append(
                    StockChange(
                        self._level(sku, node, r),
                        True if flags[i] & F_APPLIED else False,
                        True if flags[i] & F_DUPLICATE else False,
                    )
                )
            return out
        finally:
            PyMem_RawFree(table)
            PyMem_RawFree(stages)
            PyMem_RawFree(op_stage)
            PyMem_RawFree(flags)

    def stock(self, sku, node):
        cdef int32_t s = self._sku_of(sku)
        cdef int32_t nd
        cdef int64_t r = -1
        if s >= 0:
            nd = self._node_of(node)
            if nd >= 0:
                r = self._find(s, nd)
        return self._level(sku, node, r)

    # ----------------------------------------------------------- reservations

    cdef ResHead* _head(self, uint32_t handle) noexcept nogil:
        return <ResHead*>(self._arena + (<size_t>handle << 3))

    cdef int64_t _res_lookup(self, object reservation_id, Py_hash_t h) except -2:
        """The record handle of ``reservation_id``, or -1."""
        cdef uint64_t k = fastledger_fmix(<uint64_t>h)
        cdef uint64_t mask = self._res_mask
        cdef uint64_t i = k & mask
        cdef uint32_t tag = <uint32_t>(k >> 32)
        cdef Slot* slot
        cdef ResHead* head
        while True:
            slot = &self._res_slots[i]
            if slot.ref == 0:
                return -1
            if slot.tag == tag:
                head = self._head(slot.ref - 1)
                # Lines and allocations start in the record's next cache line:
                # load it together with the head instead of after it.
                fastledger_prefetch(<char*>head + 64)
                if head.hash == h:
                    if head.id == <PyObject*>reservation_id:
                        return slot.ref - 1
                    if head.key_len != ID_NOT_INLINE and _is_ascii_str(reservation_id):
                        # Two compact ASCII strs are equal exactly when their bytes are.
                        if (PyUnicode_GET_LENGTH(reservation_id) == head.key_len
                                and memcmp(PyUnicode_DATA(reservation_id), _id_bytes(head), head.key_len) == 0):
                            return slot.ref - 1
                    elif PyObject_RichCompareBool(<object>head.id, reservation_id, Py_EQ):
                        return slot.ref - 1
            i = (i + 1) & mask

    cdef int64_t _res_of(self, object reservation_id) except -2:
        cdef int64_t handle = self._res_lookup(reservation_id, hash(reservation_id))
        if handle < 0:
            raise NotFound(f"reservation {reservation_id!r} not found", reason="RESERVATION_NOT_FOUND")
        return handle

    cdef int _res_index_insert(self, uint32_t handle, Py_hash_t h) except -1:
        cdef uint64_t k, i
        if (self._n_res + 1) * 2 > <int64_t>(self._res_mask + 1):
            self._rehash_res((self._res_mask + 1) * 2)
        k = fastledger_fmix(<uint64_t>h)
        i = k & self._res_mask
        while self._res_slots[i].ref != 0:
            i = (i + 1) & self._res_mask
        self._res_slots[i].ref = handle + 1
        self._res_slots[i].tag = <uint32_t>(k >> 32)
        return 0

    cdef int _rehash_res(self, uint64_t slot_count) except -1:
        cdef Slot* slots = _new_slots(slot_count)
        cdef uint64_t mask = slot_count - 1
        cdef uint64_t k, i
        cdef Py_ssize_t off = 0
        cdef ResHead* head
        while off < self._arena_len:
            head = <ResHead*>(self._arena + off)
            k = fastledger_fmix(<uint64_t>head.hash)
            i = k & mask
            while slots[i].ref != 0:
                i = (i + 1) & mask
            slots[i].ref = <uint32_t>((off >> 3) + 1)
            slots[i].tag = <uint32_t>(k >> 32)
            off += _record_size(head)
        PyMem_RawFree(self._res_slots)
        self._res_slots = slots
        self._res_mask = mask
        return 0

    cdef uint32_t _append_record(self, object reservation_id, Py_hash_t h, object channel, double ttl_s,
                                 double created_at, double expires_at, bint allow_partial,
                                 LineRec* lines, Py_ssize_t n_lines, AllocRec* allocs,
                                 Py_ssize_t n_allocs) except? 0xFFFFFFFF:
        """Append one reservation record and index it; returns its handle."""
        cdef Py_ssize_t key_len = ID_NOT_INLINE, key_space = 0
        cdef Py_ssize_t size
        cdef Py_ssize_t off = self._arena_len
        cdef ResHead* head
        if _is_ascii_str(reservation_id) and PyUnicode_GET_LENGTH(reservation_id) <= ID_INLINE_MAX:
            key_len = PyUnicode_GET_LENGTH(reservation_id)
            key_space = (key_len + 7) & ~7
        size = sizeof(ResHead) + key_space + n_lines * sizeof(LineRec) + n_allocs * sizeof(AllocRec)
        if (off + size) >> 3 >= 0xFFFFFFFE:
            raise OverflowError("too many reservations for one ledger")
        if off + size > self._arena_cap:
            self._arena = <char*>_grow(self._arena, &self._arena_cap, off + size, 1)
            if <size_t>self._arena_cap >= HUGE_MIN:
                fastledger_advise_huge(self._arena, self._arena_cap)
        head = <ResHead*>(self._arena + off)
        head.ttl_s = ttl_s
        head.created_at = created_at
        head.expires_at = expires_at
        Py_INCREF(reservation_id)
        head.id = <PyObject*>reservation_id
        Py_INCREF(channel)
        head.channel = <PyObject*>channel
        head.hash = h
        head.n_lines = <int32_t>n_lines
        head.n_allocs = <int32_t>n_allocs
        head.allow_partial = allow_partial
        head.due = 0
        head.key_len = <uint16_t>key_len
        head.key_space = <uint16_t>key_space
        if key_space:
            memcpy(_id_bytes(head), PyUnicode_DATA(reservation_id), key_len)
        memcpy(_lines_of(head), lines, n_lines * sizeof(LineRec))
        memcpy(_allocs_of(head), allocs, n_allocs * sizeof(AllocRec))
        self._arena_len = off + size
        self._res_index_insert(<uint32_t>(off >> 3), h)
        self._n_res += 1
        return <uint32_t>(off >> 3)

    cdef int _source(self, object sku, Py_hash_t h, int64_t quantity, int32_t* candidates,
                     Py_ssize_t count, int64_t* allocated) except -1:
        """Deterministic sourcing, as the reference's ``_source``: the first
        candidate covering the whole line, else greedy in priority order.

        Holds are added to ``reserved`` as they are planned, which is what the
        reference's ``taken`` map subtracts for later lines of the same request;
        a refused request rolls them back (``_rollback_holds``). Free ATP is
        read for every candidate before any of this line's holds are added, as
        in the reference (define_channel refuses a node listed twice, so no
        node is counted twice).
        """
        cdef Py_ssize_t c, nfree = 0
        cdef int64_t r, atp, take, remaining
        cdef Row* row
        cdef AllocRec* a
        allocated[0] = 0
        for c in range(count):
            if c + 1 < count:
                # The next candidate is only needed when this one cannot cover
                # the line; its slot costs nothing to start loading.
                fastledger_prefetch(&self._row_slots[fastledger_row_hkey(h, candidates[c + 1]) & self._row_mask])
            r = self._find_obj(sku, h, candidates[c])
            if r < 0:
                continue
            row = self._row(r)
            atp = row.on_hand - row.reserved - row.committed - row.safety
            if atp <= 0:
                continue
            if atp >= quantity:
                a = &self._plan_allocs[self._n_plan_allocs]
                self._n_plan_allocs += 1
                a.quantity = quantity
                a.row = <int32_t>r
                a.node = candidates[c]
                row.reserved += quantity
                allocated[0] = quantity
                return 0
            self._free_row[nfree] = r
            self._free_atp[nfree] = atp
            self._free_node[nfree] = candidates[c]
            nfree += 1
        remaining = quantity
        for c in range(nfree):
            take = self._free_atp[c] if self._free_atp[c] < remaining else remaining
            a = &self._plan_allocs[self._n_plan_allocs]
            self._n_plan_allocs += 1
            a.quantity = take
            a.row = <int32_t>self._free_row[c]
            a.node = self._free_node[c]
            self._row(self._free_row[c]).reserved += take
            remaining -= take
            allocated[0] += take
            if remaining == 0:
                break
        return 0

    cdef int _rollback_holds(self) except -1:
        cdef Py_ssize_t k
        cdef AllocRec* a
        for k in range(self._n_plan_allocs):
            a = &self._plan_allocs[k]
            self._row(a.row).reserved -= a.quantity
        self._n_plan_allocs = 0
        return 0

    def reserve(self, reservation_id, channel, lines, double ttl_s, bint allow_partial, double now):
        """Hold stock for every line (all or nothing unless ``allow_partial``)."""
        cdef Py_hash_t h = hash(reservation_id)
        cdef uint64_t k = fastledger_fmix(<uint64_t>h)
        cdef int64_t handle
        cdef PyObject* p
        cdef PyObject* pn
        cdef Py_ssize_t li, n, ch = -1
        cdef int32_t first_node
        # The id's slot and each line's row slot are almost always cache misses
        # that do not depend on each other: start loading all of them now.
        # (Only side-effect-free work here: errors are raised in the
        # reference's order below.)
        fastledger_prefetch(&self._res_slots[k & self._res_mask])
        p = PyDict_GetItemWithError(self._channel_index, channel)
        if p != NULL:
            ch = PyLong_AsSsize_t(<object>p)
            if PyList_CheckExact(lines) or PyTuple_CheckExact(lines):
                n = len(lines)
                for li in range(n if n < 8 else 8):
                    item = lines[li]
                    if not (PyTuple_Check(item) and PyTuple_GET_SIZE(item) == 3):
                        continue
                    sku = <object>PyTuple_GET_ITEM(item, 0)
                    node = <object>PyTuple_GET_ITEM(item, 2)
                    if not PyUnicode_CheckExact(sku):  # hashing a str cannot fail
                        continue
                    if node is None:
                        if self._ch_len[ch] == 0:
                            continue
                        first_node = self._ch_nodes[ch][0]
                    elif PyUnicode_CheckExact(node):
                        pn = PyDict_GetItemWithError(self._node_index, node)
                        if pn == NULL:
                            continue
                        first_node = <int32_t>PyLong_AsSsize_t(<object>pn)
                    else:
                        continue
                    fastledger_prefetch(
                        &self._row_slots[fastledger_row_hkey(hash(sku), first_node) & self._row_mask]
                    )
        if self._heap_n and self._heap[0].expires_at <= now:
            self._expire(now, False)
        handle = self._res_lookup(reservation_id, h)
        if handle >= 0:
            return self._replay(<uint32_t>handle, reservation_id, channel, lines, ttl_s, allow_partial)
        if ch < 0:
            raise UnknownChannel(channel)
        return self._reserve_new(reservation_id, h, channel, ch, lines, ttl_s, allow_partial, now)

    cdef object _replay(self, uint32_t handle, object reservation_id, object channel, object lines,
                        double ttl_s, bint allow_partial):
        cdef ResHead* head = self._head(handle)
        cdef LineRec* line
        cdef Py_ssize_t i
        cdef bint same = True
        if <object>head.channel != channel or head.ttl_s != ttl_s or head.allow_partial != allow_partial:
            same = False
        elif head.n_lines != len(lines):
            same = False
        else:
            for i, (sku, quantity, node) in enumerate(lines):
                line = &_lines_of(head)[i]
                stored_node = None if line.node < 0 else self._node_names[line.node]
                if not (
                    <object>self._skus[line.sku].name == sku
                    and line.quantity == quantity
                    and stored_node == node
                ):
                    same = False
                    break
        if not same:
            raise IdempotencyMismatch(f"reservation {reservation_id!r} exists with a different request")
        return _STATES[_aggregate(head)]

    cdef object _reserve_new(self, object reservation_id, Py_hash_t h, object channel, Py_ssize_t ch,
                             object lines, double ttl_s, bint allow_partial, double now):
        cdef Py_ssize_t n, li, k, ncand
        cdef int32_t nidx, sku_idx
        cdef Py_hash_t sku_hash
        cdef int32_t* cand
        cdef int32_t* eligible = self._ch_nodes[ch]
        cdef Py_ssize_t n_eligible = self._ch_len[ch]
        cdef int64_t quantity, allocated
        cdef LineRec* line
        cdef list shortfalls = None
        cdef list unknown_skus = None
        cdef bint ok
        cdef uint32_t handle

        seq = lines if (PyList_CheckExact(lines) or PyTuple_CheckExact(lines)) else list(lines)
        n = len(seq)
        if n > self._plan_lines_cap:
            self._plan_lines = <LineRec*>_grow(self._plan_lines, &self._plan_lines_cap, n, sizeof(LineRec))
        self._n_plan_allocs = 0
        try:
            for li in range(n):
                item = seq[li]
                if PyTuple_Check(item) and PyTuple_GET_SIZE(item) == 3:
                    sku = <object>PyTuple_GET_ITEM(item, 0)
                    qty = <object>PyTuple_GET_ITEM(item, 1)
                    node = <object>PyTuple_GET_ITEM(item, 2)
                else:
                    sku, qty, node = item
                if node is not None:
                    nidx = self._defined_node_of(node)
                    if nidx < 0:
                        raise UnknownNode(node, field=f"lines[{li}].node")
                    ok = False
                    for k in range(n_eligible):
                        if eligible[k] == nidx:
                            ok = True
                            break
                    if not ok:
                        raise NodeNotEligible(node, channel, field=f"lines[{li}].node")
                    cand = &nidx
                    ncand = 1
                else:
                    nidx = -1
                    cand = eligible
                    ncand = n_eligible
                quantity = qty
                sku_hash = hash(sku)
                if self._n_plan_allocs + ncand > self._plan_allocs_cap:
                    self._plan_allocs = <AllocRec*>_grow(
                        self._plan_allocs, &self._plan_allocs_cap, self._n_plan_allocs + ncand, sizeof(AllocRec)
                    )
                line = &self._plan_lines[li]
                line.alloc_first = <int32_t>self._n_plan_allocs
                self._source(sku, sku_hash, quantity, cand, ncand, &allocated)
                line.alloc_count = <int32_t>(self._n_plan_allocs - line.alloc_first)
                if line.alloc_count > 0:
                    # Every allocation is a row of this SKU: it names the SKU's index.
                    sku_idx = self._row(self._plan_allocs[line.alloc_first].row).sku
                else:
                    sku_idx = self._sku_of(sku)
                    if sku_idx < 0:
                        # Never stocked anywhere: interned only if the reservation is recorded.
                        if unknown_skus is None:
                            unknown_skus = []
                        unknown_skus.append((li, sku))
                line.quantity = quantity
                line.sku = sku_idx
                line.node = nidx
                line.state = RS_HELD if line.alloc_count > 0 else RS_RELEASED
                line.mark = 0
                if allocated < quantity:
                    if shortfalls is None:
                        shortfalls = []
                    shortfalls.append(Shortfall(li, sku, qty, allocated))
            if shortfalls is not None and (not allow_partial or self._n_plan_allocs == 0):
                raise OutOfStock(tuple(shortfalls))
            # Checks passed: the holds are already on the rows; record the reservation.
            if unknown_skus is not None:
                for li, sku in unknown_skus:
                    self._plan_lines[li].sku = self._intern_sku(sku)
            handle = self._append_record(
                reservation_id, h, channel, ttl_s, now, now + ttl_s, allow_partial,
                self._plan_lines, n, self._plan_allocs, self._n_plan_allocs,
            )
        except BaseException:
            self._rollback_holds()
            raise
        self._n_plan_allocs = 0
        self._heap_push(now + ttl_s, handle)
        return _STATES[RS_HELD]

    def commit(self, reservation_id, double now):
        """Turn every held line into a committed order line."""
        cdef ResHead* head
        cdef LineRec* line
        cdef AllocRec* allocs
        cdef AllocRec* a
        cdef Row* row
        cdef int32_t k, j
        cdef int state
        # Start loading the id's slot before the expiry work that precedes the lookup.
        fastledger_prefetch(&self._res_slots[fastledger_fmix(<uint64_t>hash(reservation_id)) & self._res_mask])
        if self._heap_n and self._heap[0].expires_at <= now:
            self._expire(now, False)
        head = self._head(<uint32_t>self._res_of(reservation_id))
        state = _aggregate(head)
        if state == RS_COMMITTED or state == RS_FULFILLED:
            return _STATES[state]  # already done: a replay
        if state != RS_HELD:
            raise _illegal(reservation_id, state, None)
        allocs = _allocs_of(head)
        for j in range(head.n_allocs):
            if allocs[j].row >= 0:
                fastledger_prefetch(self._row(allocs[j].row))
        for k in range(head.n_lines):
            line = &_lines_of(head)[k]
            if line.state == RS_HELD:
                for j in range(line.alloc_first, line.alloc_first + line.alloc_count):
                    a = &allocs[j]
                    row = self._row(a.row) if a.row >= 0 else self._alloc_row_ptr(a, line.sku)
                    row.reserved -= a.quantity
                    row.committed += a.quantity
                line.state = RS_COMMITTED
        return _STATES[_aggregate(head)]

    cdef Py_ssize_t _select(self, ResHead* head, object line_indexes) except -1:
        """Validate explicit line indexes into ``_idx_buf`` (given order, repeats kept)."""
        cdef Py_ssize_t count = 0, i
        cdef Py_ssize_t n_lines = head.n_lines
        if not line_indexes:
            raise InvalidArgument(
                "line_indexes must not be empty",
                (FieldViolation("line_indexes", "give at least one line, or none for all"),),
            )
        for obj in line_indexes:
            try:
                i = obj
            except OverflowError:
                i = -1
            if not 0 <= i < n_lines:
                stored_id = <object>head.id
                raise InvalidArgument(
                    f"line index {obj} is out of range",
                    (FieldViolation("line_indexes", f"{obj} is not a line of reservation {stored_id!r}"),),
                )
            if count >= self._idx_cap:
                self._idx_buf = <Py_ssize_t*>_grow(self._idx_buf, &self._idx_cap, count + 1, sizeof(Py_ssize_t))
            self._idx_buf[count] = i
            count += 1
        return count

    def release(self, reservation_id, line_indexes, double now):
        """Give back held or committed units, for the whole reservation or some lines."""
        cdef Py_ssize_t count, k
        cdef ResHead* head
        cdef LineRec* line
        cdef LineRec* lines
        cdef AllocRec* allocs
        cdef AllocRec* a
        cdef Row* row
        cdef int32_t j
        cdef bint explicit = line_indexes is not None
        # Start loading the id's slot before the expiry work that precedes the lookup.
        fastledger_prefetch(&self._res_slots[fastledger_fmix(<uint64_t>hash(reservation_id)) & self._res_mask])
        if self._heap_n and self._heap[0].expires_at <= now:
            self._expire(now, False)
        head = self._head(<uint32_t>self._res_of(reservation_id))
        lines = _lines_of(head)
        allocs = _allocs_of(head)
        if not explicit:
            if _aggregate(head) == RS_FULFILLED:
                raise IllegalTransition(
                    f"reservation {reservation_id!r} is fulfilled", reason="RESERVATION_FULFILLED"
                )
        else:
            count = self._select(head, line_indexes)
            for k in range(count):
                if lines[self._idx_buf[k]].state == RS_FULFILLED:
                    raise IllegalTransition(
                        f"line {self._idx_buf[k]} of reservation {reservation_id!r} is fulfilled",
                        reason="LINE_FULFILLED",
                    )
            for k in range(count):
                lines[self._idx_buf[k]].mark = 1
        for j in range(head.n_allocs):
            if allocs[j].row >= 0:
                fastledger_prefetch(self._row(allocs[j].row))
        try:
            # The selected lines in line order, each once (the reference sorts them).
            for k in range(head.n_lines):
                line = &lines[k]
                if explicit and not line.mark:
                    continue
                if line.state == RS_HELD:
                    for j in range(line.alloc_first, line.alloc_first + line.alloc_count):
                        a = &allocs[j]
                        row = self._row(a.row) if a.row >= 0 else self._alloc_row_ptr(a, line.sku)
                        row.reserved -= a.quantity
                elif line.state == RS_COMMITTED:
                    for j in range(line.alloc_first, line.alloc_first + line.alloc_count):
                        a = &allocs[j]
                        row = self._row(a.row) if a.row >= 0 else self._alloc_row_ptr(a, line.sku)
                        row.committed -= a.quantity
                else:
                    continue  # already released or expired: releasing again changes nothing
                line.state = RS_RELEASED
        finally:
            if explicit:
                for k in range(head.n_lines):
                    lines[k].mark = 0
        return _STATES[_aggregate(head)]

    cdef int _check_shipping(self, ResHead* head, bint explicit) except -1:
        """Refuse to ship more of a row than is on hand (a recount left a shortage).

        Totals per row over the selected committed lines, checked in first-seen
        order like the reference, so the same row is named when several are short.
        """
        cdef LineRec* lines = _lines_of(head)
        cdef AllocRec* allocs = _allocs_of(head)
        cdef LineRec* line
        cdef AllocRec* a
        cdef AllocRec* ship
        cdef Row* row
        cdef Py_ssize_t n_ship = 0, s
        cdef int32_t k, j
        if head.n_allocs > self._plan_allocs_cap:
            self._plan_allocs = <AllocRec*>_grow(
                self._plan_allocs, &self._plan_allocs_cap, head.n_allocs, sizeof(AllocRec)
            )
        ship = self._plan_allocs  # reserve() is not running: its scratch is free
        for k in range(head.n_lines):
            line = &lines[k]
            if (explicit and not line.mark) or line.state != RS_COMMITTED:
                continue
            for j in range(line.alloc_first, line.alloc_first + line.alloc_count):
                a = &allocs[j]
                if a.row < 0:
                    self._alloc_row_ptr(a, line.sku)
                for s in range(n_ship):
                    if ship[s].row == a.row:
                        ship[s].quantity += a.quantity
                        break
                else:
                    ship[n_ship].row = a.row
                    ship[n_ship].node = a.node
                    ship[n_ship].quantity = a.quantity
                    n_ship += 1
        for s in range(n_ship):
            row = self._row(ship[s].row)
            if row.on_hand < ship[s].quantity:
                sku = <object>self._skus[row.sku].name
                node = self._node_names[row.node]
                raise StockRejected(
                    f"cannot ship {ship[s].quantity} of {sku}@{node}: only {row.on_hand} on hand",
                    reason="NEGATIVE_ON_HAND",
                )
        return 0

    def fulfill(self, reservation_id, line_indexes, double now):
        """Ship committed lines: the units leave on_hand and committed."""
        cdef Py_ssize_t count, k
        cdef ResHead* head
        cdef LineRec* line
        cdef LineRec* lines
        cdef AllocRec* allocs
        cdef AllocRec* a
        cdef Row* row
        cdef int32_t j
        cdef int state
        cdef str name
        cdef bint explicit = line_indexes is not None
        # Start loading the id's slot before the expiry work that precedes the lookup.
        fastledger_prefetch(&self._res_slots[fastledger_fmix(<uint64_t>hash(reservation_id)) & self._res_mask])
        if self._heap_n and self._heap[0].expires_at <= now:
            self._expire(now, False)
        head = self._head(<uint32_t>self._res_of(reservation_id))
        lines = _lines_of(head)
        allocs = _allocs_of(head)
        if not explicit:
            state = _aggregate(head)
            if state == RS_FULFILLED:
                return _STATES[state]
            if state != RS_COMMITTED:
                raise _illegal(reservation_id, state, "committed")
        else:
            count = self._select(head, line_indexes)
            for k in range(count):
                state = lines[self._idx_buf[k]].state
                if state == RS_COMMITTED or state == RS_FULFILLED:
                    continue
                if state == RS_HELD:
                    raise IllegalTransition(
                        f"line {self._idx_buf[k]} of reservation {reservation_id!r} is not committed",
                        reason="NOT_COMMITTED",
                    )
                name = _STATE_NAMES[state]
                raise IllegalTransition(
                    f"line {self._idx_buf[k]} of reservation {reservation_id!r} is {name.lower()}",
                    reason=f"LINE_{name}",
                )
            for k in range(count):
                lines[self._idx_buf[k]].mark = 1
        for j in range(head.n_allocs):
            if allocs[j].row >= 0:
                fastledger_prefetch(self._row(allocs[j].row))
        try:
            self._check_shipping(head, explicit)
            for k in range(head.n_lines):
                line = &lines[k]
                if (explicit and not line.mark) or line.state != RS_COMMITTED:
                    continue
                for j in range(line.alloc_first, line.alloc_first + line.alloc_count):
                    a = &allocs[j]
                    row = self._row(a.row) if a.row >= 0 else self._alloc_row_ptr(a, line.sku)
                    row.committed -= a.quantity
                    row.on_hand -= a.quantity
                line.state = RS_FULFILLED
        finally:
            if explicit:
                for k in range(head.n_lines):
                    lines[k].mark = 0
        return _STATES[_aggregate(head)]

    def extend(self, reservation_id, double ttl_s, double now):
        """Move a held reservation's expiry to ``now + ttl_s``; returns the new expiry."""
        cdef int64_t handle
        cdef ResHead* head
        cdef int state
        # Start loading the id's slot before the expiry work that precedes the lookup.
        fastledger_prefetch(&self._res_slots[fastledger_fmix(<uint64_t>hash(reservation_id)) & self._res_mask])
        if self._heap_n and self._heap[0].expires_at <= now:
            self._expire(now, False)
        handle = self._res_of(reservation_id)
        head = self._head(<uint32_t>handle)
        state = _aggregate(head)
        if state != RS_HELD:
            raise _illegal(reservation_id, state, "held")
        head.expires_at = now + ttl_s
        # An extend onto an expiry already in the heap leaves a twin entry; the
        # expiry skips it (``due``), like the reference's ``due_set``.
        self._heap_push(head.expires_at, <uint32_t>handle)
        return head.expires_at

    # ----------------------------------------------------------------- expiry

    cdef int _heap_push(self, double expires_at, uint32_t handle) except -1:
        cdef Py_ssize_t i, parent
        cdef HeapEntry* heap
        if self._heap_n >= self._heap_cap:
            self._heap = <HeapEntry*>_grow(self._heap, &self._heap_cap, self._heap_n + 1, sizeof(HeapEntry))
            if self._heap_cap * sizeof(HeapEntry) >= HUGE_MIN:
                fastledger_advise_huge(self._heap, self._heap_cap * sizeof(HeapEntry))
        heap = self._heap
        i = self._heap_n
        self._heap_n = i + 1
        while i > 0:
            parent = (i - 1) >> 1
            if heap[parent].expires_at <= expires_at:
                break
            heap[i] = heap[parent]
            i = parent
        heap[i].expires_at = expires_at
        heap[i].res = handle
        return 0

    cdef HeapEntry _heap_pop(self) noexcept nogil:
        cdef HeapEntry* heap = self._heap
        cdef HeapEntry top = heap[0]
        cdef Py_ssize_t n = self._heap_n - 1
        cdef HeapEntry last = heap[n]
        cdef Py_ssize_t i = 0, c
        self._heap_n = n
        if n == 0:
            return top
        while True:
            c = 2 * i + 1
            if c >= n:
                break
            if c + 1 < n and heap[c + 1].expires_at < heap[c].expires_at:
                c += 1
            if heap[c].expires_at >= last.expires_at:
                break
            heap[i] = heap[c]
            i = c
        heap[i] = last
        return top

    cdef object _expire(self, double now, bint want_ids):
        """Expire every due hold; the ids (a list) only when ``want_ids``."""
        cdef Py_ssize_t nd = 0, i, j, k
        cdef HeapEntry e
        cdef ResHead* head
        cdef LineRec* line
        cdef AllocRec* allocs
        cdef AllocRec* a
        cdef Row* row
        cdef int32_t m, q
        while self._heap_n and self._heap[0].expires_at <= now:
            e = self._heap_pop()
            head = self._head(e.res)
            if head.expires_at != e.expires_at:
                continue  # stale: extended since
            if head.due or not _any_held(head):
                # stale: committed, released or expired since, or the twin left
                # by an extend onto the same expiry (already collected)
                continue
            head.due = 1
            if nd >= self._due_cap:
                self._due = <HeapEntry*>_grow(self._due, &self._due_cap, nd + 1, sizeof(HeapEntry))
            self._due[nd] = e
            nd += 1
        if nd == 0:
            return [] if want_ids else None
        if want_ids:
            # Popped in expires_at order; the reference orders ties by id.
            i = 0
            while i < nd:
                j = i + 1
                while j < nd and self._due[j].expires_at == self._due[i].expires_at:
                    j += 1
                if j - i > 1:
                    run = sorted([(<object>self._head(self._due[k].res).id, self._due[k].res) for k in range(i, j)])
                    for k in range(j - i):
                        self._due[i + k].res = run[k][1]
                i = j
        out = [] if want_ids else None
        for k in range(nd):
            head = self._head(self._due[k].res)
            head.due = 0
            allocs = _allocs_of(head)
            for m in range(head.n_lines):
                line = &_lines_of(head)[m]
                if line.state == RS_HELD:
                    for q in range(line.alloc_first, line.alloc_first + line.alloc_count):
                        a = &allocs[q]
                        row = self._row(a.row) if a.row >= 0 else self._alloc_row_ptr(a, line.sku)
                        row.reserved -= a.quantity
                    line.state = RS_EXPIRED
            if want_ids:
                out.append(<object>head.id)
        return out

    def expire_due(self, double now):
        """Expire every held reservation whose expiry is at or before ``now``.

        Returns their ids ordered by (expires_at, id).
        """
        if not self._heap_n or self._heap[0].expires_at > now:
            return []
        return self._expire(now, True)

    def next_expiry(self):
        """Earliest pending expiry (possibly stale); None when nothing is held."""
        return self._heap[0].expires_at if self._heap_n else None

    def get_reservation(self, reservation_id):
        cdef ResHead* head = self._head(<uint32_t>self._res_of(reservation_id))
        cdef LineRec* line
        cdef AllocRec* a
        cdef int32_t k, j
        out_lines = []
        for k in range(head.n_lines):
            line = &_lines_of(head)[k]
            allocs = []
            for j in range(line.alloc_first, line.alloc_first + line.alloc_count):
                a = &_allocs_of(head)[j]
                allocs.append(Allocation(self._node_names[a.node], a.quantity))
            out_lines.append(
                ReservationLine(
                    index=k,
                    sku=<object>self._skus[line.sku].name,
                    requested=line.quantity,
                    requested_node=None if line.node < 0 else self._node_names[line.node],
                    allocations=tuple(allocs),
                    state=_STATES[line.state],
                )
            )
        return Reservation(
            id=<object>head.id,
            channel=<object>head.channel,
            state=_STATES[_aggregate(head)],
            lines=tuple(out_lines),
            allow_partial=True if head.allow_partial else False,
            ttl_s=head.ttl_s,
            created_at=head.created_at,
            expires_at=head.expires_at,
        )

    def has_reservation(self, reservation_id):
        return self._res_lookup(reservation_id, hash(reservation_id)) >= 0

    # ----------------------------------------------------------- availability

    def availability(self, skus, channel, nodes, bint per_node):
        """What may be sold of each SKU from the selected nodes (see the reference)."""
        cdef Py_ssize_t m, k
        cdef int32_t s
        cdef int32_t* idxs = NULL
        cdef int64_t r, atp, total
        cdef Row* row
        cdef PyObject* p
        cdef list out, breakdown
        cdef tuple selected
        eligible = None
        if channel is not None:
            p = PyDict_GetItemWithError(self._channels, channel)
            if p == NULL:
                raise UnknownChannel(channel)
            eligible = <object>p
        elif not nodes:
            raise InvalidArgument(
                "give a channel, nodes, or both",
                (FieldViolation("channel", "a channel or at least one node is required"),),
            )
        if channel is not None and not nodes:
            selected = eligible
        else:
            seen = set()
            for i, node in enumerate(nodes):
                if node not in self._nodes:
                    raise UnknownNode(node, field=f"nodes[{i}]")
                if channel is not None and node not in eligible:
                    raise NodeNotEligible(node, channel, field=f"nodes[{i}]")
                if node in seen:
                    # Counting a node twice would double its ATP.
                    raise InvalidArgument(
                        f"node {node!r} is listed twice",
                        (FieldViolation(f"nodes[{i}]", f"node {node!r} is listed twice"),),
                    )
                seen.add(node)
            selected = tuple(nodes)
        m = len(selected)
        idxs = <int32_t*>_realloc(NULL, (m if m > 0 else 1) * sizeof(int32_t))
        try:
            for k in range(m):
                idxs[k] = self._defined_node_of(selected[k])
            out = []
            for sku in skus:
                s = self._sku_of(sku)
                total = 0
                breakdown = [] if per_node else None
                for k in range(m):
                    r = self._find(s, idxs[k]) if s >= 0 else -1
                    if r < 0:
                        if per_node:
                            breakdown.append(NodeAvailability(selected[k], 0, 0, 0, 0, 0))
                        continue
                    row = self._row(r)
                    atp = row.on_hand - row.reserved - row.committed - row.safety
                    if atp < 0:
                        atp = 0
                    total += atp
                    if per_node:
                        breakdown.append(
                            NodeAvailability(selected[k], row.on_hand, row.reserved, row.committed, row.safety, atp)
                        )
                out.append(SkuAvailability(sku, total, tuple(breakdown) if per_node else ()))
            return out
        finally:
            PyMem_RawFree(idxs)

    # ------------------------------------------------------------------ audit

    def audit(self, double now):
        """Check the invariants; returns one message per violation (empty = healthy)."""
        cdef int64_t* held = NULL
        cdef int64_t* committed = NULL
        cdef Py_ssize_t n_rows = self._n_rows
        cdef Py_ssize_t off = 0
        cdef int32_t k, j
        cdef ResHead* head
        cdef LineRec* line
        cdef AllocRec* a
        cdef Row* row
        cdef int64_t r, reserved, committed_qty, held_sum, committed_sum
        cdef dict missing = {}  # (sku, node) named by a hold but without a row: [held, committed]
        violations = []
        held = <int64_t*>PyMem_RawMalloc((n_rows if n_rows > 0 else 1) * sizeof(int64_t))
        committed = <int64_t*>PyMem_RawMalloc((n_rows if n_rows > 0 else 1) * sizeof(int64_t))
        try:
            if held == NULL or committed == NULL:
                raise MemoryError()
            memset(held, 0, (n_rows if n_rows > 0 else 1) * sizeof(int64_t))
            memset(committed, 0, (n_rows if n_rows > 0 else 1) * sizeof(int64_t))
            while off < self._arena_len:
                head = <ResHead*>(self._arena + off)
                off += _record_size(head)
                for k in range(head.n_lines):
                    line = &_lines_of(head)[k]
                    if line.state != RS_HELD and line.state != RS_COMMITTED:
                        continue
                    for j in range(line.alloc_first, line.alloc_first + line.alloc_count):
                        a = &_allocs_of(head)[j]
                        r = a.row if a.row >= 0 else self._find(line.sku, a.node)
                        if r >= 0:
                            if line.state == RS_HELD:
                                held[r] += a.quantity
                            else:
                                committed[r] += a.quantity
                        else:
                            key = (<object>self._skus[line.sku].name, self._node_names[a.node])
                            sums = missing.setdefault(key, [0, 0])
                            sums[0 if line.state == RS_HELD else 1] += a.quantity
                if _aggregate(head) == RS_HELD and head.expires_at < now - 1.0:
                    stored_id = <object>head.id
                    violations.append(
                        f"reservation {stored_id} expired at {head.expires_at:.3f} but is still held"
                    )
            # Only keys with a violation produce messages, so sorting just those
            # gives the reference's order over all keys.
            bad = []
            for r in range(n_rows):
                row = self._row(r)
                if row.reserved < 0 or row.committed < 0 or row.reserved != held[r] or row.committed != committed[r]:
                    bad.append((<object>self._skus[row.sku].name, self._node_names[row.node], row.reserved,
                                row.committed, held[r], committed[r]))
            for key, sums in missing.items():
                if sums[0] != 0 or sums[1] != 0:
                    bad.append((key[0], key[1], 0, 0, sums[0], sums[1]))
            bad.sort(key=lambda t: (t[0], t[1]))
            for sku, node, reserved, committed_qty, held_sum, committed_sum in bad:
                where = f"{sku}@{node}"
                if reserved < 0:
                    violations.append(f"{where}: reserved is negative ({reserved})")
                if committed_qty < 0:
                    violations.append(f"{where}: committed is negative ({committed_qty})")
                if reserved != held_sum:
                    violations.append(f"{where}: reserved {reserved} != sum of live holds {held_sum}")
                if committed_qty != committed_sum:
                    violations.append(
                        f"{where}: committed {committed_qty} != sum of committed lines {committed_sum}"
                    )
            return violations
        finally:
            PyMem_RawFree(held)
            PyMem_RawFree(committed)

    def shortages(self):
        """Rows where on_hand no longer covers reserved + committed."""
        cdef int64_t r
        cdef Row* row
        keys = []
        for r in range(self._n_rows):
            row = self._row(r)
            if row.on_hand < row.reserved + row.committed:
                keys.append((<object>self._skus[row.sku].name, self._node_names[row.node], r))
        keys.sort(key=lambda t: (t[0], t[1]))
        return [self._level(sku, node, r) for sku, node, r in keys]

    def row_count(self):
        return self._n_rows

    def reservation_count(self):
        return self._n_res

    def iter_rows(self):
        cdef int64_t r
        cdef Row* row
        keys = []
        for r in range(self._n_rows):
            row = self._row(r)
            keys.append((<object>self._skus[row.sku].name, self._node_names[row.node], r))
        keys.sort(key=lambda t: (t[0], t[1]))
        for sku, node, r in keys:
            yield self._level(sku, node, r)

    # -------------------------------------------------------------- snapshots

    def export_state(self):
        """A JSON-able image of the whole ledger, loadable by either implementation.

        Lists and dicts come out in the reference's order: nodes, channels and
        events by first definition; rows by creation; reservations by creation.
        """
        cdef int64_t r
        cdef Row* row
        cdef Py_ssize_t off = 0
        cdef int32_t k, j
        cdef ResHead* head
        cdef LineRec* line
        cdef AllocRec* a
        rows = []
        for r in range(self._n_rows):
            row = self._row(r)
            rows.append([<object>self._skus[row.sku].name, self._node_names[row.node], row.on_hand,
                         row.reserved, row.committed, row.safety, row.version])
        reservations = []
        while off < self._arena_len:
            head = <ResHead*>(self._arena + off)
            off += _record_size(head)
            out_lines = []
            for k in range(head.n_lines):
                line = &_lines_of(head)[k]
                allocs = []
                for j in range(line.alloc_first, line.alloc_first + line.alloc_count):
                    a = &_allocs_of(head)[j]
                    allocs.append([self._node_names[a.node], a.quantity])
                out_lines.append([
                    <object>self._skus[line.sku].name,
                    line.quantity,
                    None if line.node < 0 else self._node_names[line.node],
                    allocs,
                    <int>line.state,
                ])
            reservations.append([
                <object>head.id,
                <object>head.channel,
                head.ttl_s,
                True if head.allow_partial else False,
                head.created_at,
                head.expires_at,
                out_lines,
            ])
        return {
            "format": STATE_FORMAT,
            "nodes": list(self._nodes),
            "channels": {c: list(n) for c, n in self._channels.items()},
            "rows": rows,
            "reservations": reservations,
            "events": {e: list(fp) for e, fp in self._events.items()},
        }

    def load_state(self, state):
        """Replace this ledger's contents with an exported image."""
        cdef int32_t s, nd
        cdef int64_t r
        cdef Row* row
        cdef Py_ssize_t k, n_allocs
        cdef LineRec* line
        cdef AllocRec* a
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"unsupported ledger state format {state.get('format')!r}")
        self._free_storage()
        self._init_storage()
        for node in state["nodes"]:
            self.define_node(node)
        for channel, nodes in state["channels"].items():
            self.define_channel(channel, nodes)
        for sku, node, *values in state["rows"]:
            values = [int(v) for v in values]
            s = self._intern_sku(sku)
            nd = self._intern_node(node)
            r = self._find(s, nd)
            if r < 0:
                r = self._insert_row(s, nd)
            row = self._row(r)
            row.on_hand, row.reserved, row.committed, row.safety, row.version = values
        # Like the reference's dict: a repeated id keeps the first position and the
        # last body, while every held version leaves its heap entry behind.
        records = {}
        heap_entries = []
        for rid, channel, ttl_s, allow_partial, created_at, expires_at, lines in state["reservations"]:
            spec = [
                (sku, int(qty), node, [(n, int(q)) for n, q in allocs], int(ReservationState(st)))
                for sku, qty, node, allocs, st in lines
            ]
            records[rid] = (channel, float(ttl_s), bool(allow_partial), float(created_at), float(expires_at), spec)
            if aggregate_state([line_spec[4] for line_spec in spec]) == ReservationState.HELD:
                heap_entries.append((float(expires_at), rid))
        for rid, (channel, ttl_s, allow_partial, created_at, expires_at, spec) in records.items():
            n_allocs = sum(len(line_spec[3]) for line_spec in spec)
            if len(spec) > self._plan_lines_cap:
                self._plan_lines = <LineRec*>_grow(
                    self._plan_lines, &self._plan_lines_cap, len(spec), sizeof(LineRec)
                )
            if n_allocs > self._plan_allocs_cap:
                self._plan_allocs = <AllocRec*>_grow(
                    self._plan_allocs, &self._plan_allocs_cap, n_allocs, sizeof(AllocRec)
                )
            n_allocs = 0
            for k, (sku, qty, node, allocs, st) in enumerate(spec):
                line = &self._plan_lines[k]
                line.sku = self._intern_sku(sku)
                line.quantity = qty
                line.node = -1 if node is None else self._intern_node(node)
                line.state = st
                line.mark = 0
                line.alloc_first = <int32_t>n_allocs
                line.alloc_count = len(allocs)
                for n, q in allocs:
                    a = &self._plan_allocs[n_allocs]
                    a.node = self._intern_node(n)
                    a.quantity = q
                    a.row = <int32_t>self._find(line.sku, a.node)
                    n_allocs += 1
            self._append_record(
                rid, hash(rid), channel, ttl_s, created_at, expires_at, allow_partial,
                self._plan_lines, len(spec), self._plan_allocs, n_allocs,
            )
        for expires_at, rid in heap_entries:
            self._heap_push(expires_at, <uint32_t>self._res_lookup(rid, hash(rid)))
        self._events = {e: tuple(fp) for e, fp in state["events"].items()}
