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
extend, expiry) on C data laid out for few cache misses and few instructions
(see ledger.pxd). Python objects are created only for results and errors, and
even those skip the interpreter where they safely can (see "Results and
errors without __init__" below). ``binding=False`` keeps the methods plain
method descriptors: the cheapest call path CPython has. Errors are raised from
the public methods themselves, not from helpers: every Cython frame an
exception passes through costs a traceback entry (~1,000 instructions).
"""

cimport cython
from cpython.dict cimport PyDict_GetItemWithError
from cpython.list cimport PyList_CheckExact
from cpython.long cimport PyLong_CheckExact
from cpython.mem cimport PyMem_RawFree, PyMem_RawMalloc, PyMem_RawRealloc
from cpython.object cimport Py_EQ, PyObject_RichCompareBool
from cpython.ref cimport Py_INCREF, Py_XDECREF, PyObject
from cpython.tuple cimport PyTuple_Check, PyTuple_CheckExact, PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.unicode cimport PyUnicode_CheckExact, PyUnicode_DATA, PyUnicode_GET_LENGTH
from libc.math cimport NAN
from libc.stdint cimport INT64_MAX, INT64_MIN, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset

import dataclasses
import types

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
from engine._fast.allocation cimport RK_NONE, channel_allowance_c
from engine.core.ledger import (
    FOLLOW_NODE_DEFAULT,
    STATE_FORMAT,
    check_node_safety,
    check_backorder,
    check_channel_rules,
    resolved_rule_list,
    row_violations,
    usage_violations,
)
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
    ctypedef struct PyTypeObject_:
        PyObject* (*tp_alloc)(PyTypeObject_*, Py_ssize_t) except NULL
    ctypedef struct PyMemberDef:
        int type
        Py_ssize_t offset
    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member
    PyObject* PySequence_Fast_GET_ITEM(object o, Py_ssize_t i)
    Py_ssize_t PySequence_Fast_GET_SIZE(object o)
    long long PyLong_AsLongLongAndOverflow(object o, int* overflow) except? -1

cdef extern from "structmember.h":
    enum: T_OBJECT_EX

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

    /* hash(o) without the call when o is a str that has already been hashed
       (a str caches its hash; every id a request carries has been). */
    static inline Py_hash_t fastledger_hash(PyObject *o) {
        if (PyUnicode_CheckExact(o)) {
            Py_hash_t h = ((PyASCIIObject *)o)->hash;
            if (h != -1) return h;
        }
        return PyObject_Hash(o);
    }

    /* The 16-byte inline form of an id (see StrRec in ledger.pxd): a length
       byte, then the characters of a compact ASCII str of up to 15, zero
       padded; or a first byte of 255 when the id has no inline form. Two ids
       with inline forms are equal exactly when these 16 bytes are. */
    static inline uint64_t fastledger_load(const unsigned char *p, int size) {
        uint64_t v = 0;  /* little endian: the first byte is the lowest */
        if (size == 8) { memcpy(&v, p, 8); }
        else if (size == 4) { uint32_t w; memcpy(&w, p, 4); v = w; }
        else if (size == 2) { uint16_t w; memcpy(&w, p, 2); v = w; }
        else { v = p[0]; }
        return v;
    }
    static inline int fastledger_key16(PyObject *o, uint64_t *out) {
    #if !PY_LITTLE_ENDIAN
        unsigned char buf[16];
        memset(buf, 0, sizeof buf);
        if (PyUnicode_CheckExact(o) && PyUnicode_IS_COMPACT_ASCII(o) && PyUnicode_GET_LENGTH(o) <= 15) {
            buf[0] = (unsigned char)PyUnicode_GET_LENGTH(o);
            memcpy(buf + 1, PyUnicode_DATA(o), (size_t)PyUnicode_GET_LENGTH(o));
            memcpy(out, buf, sizeof buf);
            return 1;
        }
        buf[0] = 255;
        memcpy(out, buf, sizeof buf);
        return 0;
    #else
        if (PyUnicode_CheckExact(o) && PyUnicode_IS_COMPACT_ASCII(o)) {
            Py_ssize_t n = PyUnicode_GET_LENGTH(o);
            const unsigned char *d = (const unsigned char *)PyUnicode_DATA(o);
            uint64_t lo, hi = 0, v = 0;
            if (n <= 15) {
                /* Byte 0 the length, bytes 1..n the characters, the rest 0,
                   from two overlapping loads that never read past the string:
                   no byte-by-byte loop, no call. */
                if (n >= 8) {
                    v = fastledger_load(d, 8);
                    hi = fastledger_load(d + n - 8, 8) >> (8 * (15 - n));
                } else if (n >= 4) {
                    v = fastledger_load(d, 4) | (fastledger_load(d + n - 4, 4) << (8 * (n - 4)));
                } else if (n >= 2) {
                    v = fastledger_load(d, 2) | (fastledger_load(d + n - 2, 2) << (8 * (n - 2)));
                } else if (n == 1) {
                    v = d[0];
                }
                lo = (uint64_t)n | (v << 8);
                out[0] = lo;
                out[1] = hi;
                return 1;
            }
        }
        out[0] = 255;  /* first byte 255: no inline form */
        out[1] = 0;
        return 0;
    #endif
    }
    static inline int fastledger_key16_inline(const uint64_t *key) {
        return ((const unsigned char *)key)[0] != 255;
    }
    /* ``stored`` points at a length byte followed by 15 characters. */
    static inline int fastledger_key16_eq(const void *stored, const uint64_t *key) {
        uint64_t a[2];
        memcpy(a, stored, sizeof a);
        return a[0] == key[0] && a[1] == key[1];
    }

    /* A new instance of a slotted class with its slots set to ``values``
       (new references taken); see "Results and errors without __init__". */
    static PyObject *fastledger_make(PyObject *cls, const Py_ssize_t *offsets, int n, PyObject **values) {
        PyTypeObject *t = (PyTypeObject *)cls;
        PyObject *o = t->tp_alloc(t, 0);
        if (o == NULL) return NULL;
        for (int i = 0; i < n; i++) {
            Py_INCREF(values[i]);
            *(PyObject **)((char *)o + offsets[i]) = values[i];
        }
        return o;
    }
    /* A new exception instance whose args are (message,), as BaseException's
       constructor makes it, without running __init__. */
    static PyObject *fastledger_new_error(PyObject *cls, PyObject *message) {
        PyTypeObject *t = (PyTypeObject *)cls;
        PyObject *args = PyTuple_Pack(1, message);
        if (args == NULL) return NULL;
        PyObject *o = t->tp_new(t, args, NULL);
        Py_DECREF(args);
        return o;
    }

    /* Random access to tens of MB of rows and hash slots is dominated by TLB
       misses (and, in a VM, by nested page walks); 2 MiB pages cut those by
       orders of magnitude. Linux only, advisory, and only the 2 MiB-aligned
       interior of a block can use them. Used for the rows and their index
       only, which are big, built in bulk and read at random: a region advised
       this way that grows while the ledger serves makes each first touch of a
       2 MiB page wait for the kernel to find (compact) one, which on the
       benchmark VM costs ~4 ns a byte against ~0.7 for small pages. */
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
    Py_hash_t fastledger_hash(object o) except? -1
    Py_hash_t fastledger_hash_ptr "fastledger_hash"(PyObject* o) except? -1
    bint fastledger_key16(object o, uint64_t* out) noexcept
    bint fastledger_key16_ptr "fastledger_key16"(PyObject* o, uint64_t* out) noexcept
    bint fastledger_key16_inline(const uint64_t* key) noexcept nogil
    bint fastledger_key16_eq(const void* stored, const uint64_t* key) noexcept nogil
    object fastledger_make(PyObject* t, const Py_ssize_t* offsets, int n, PyObject** values)
    object fastledger_new_error(PyObject* t, object message)
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
    PREFETCH_LINES = 8
    MAX_FIELDS = 8
    # A record handle is the segment number << SEG_SHIFT | the record's offset / 8,
    # so a segment holds at most 8 MiB (1 << (SEG_SHIFT + 3)) of records, except a
    # segment made for one record larger than that (at offset 0). Segments start
    # small (a ledger in a test needs little) and double up to the largest size.
    SEG_SHIFT = 20
    SEG_MASK = 1048575
    SEG_FIRST = 65536
    SEG_LARGEST = 8388608
    MAX_SEGMENTS = 4095  # handles stay below 0xFFFFFFFF: slots store handle + 1

# Values beyond this cannot come from a valid request; they take the Python-int
# path so C arithmetic never overflows where the reference has big ints.
cdef int64_t SAFE_LIMIT = 4611686018427387904  # 2**62
cdef int64_t MAX_ON_HAND = _PY_MAX_ON_HAND
cdef int64_t FOLLOW_DEFAULT_C = FOLLOW_NODE_DEFAULT
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


cdef inline bint _int_in(object value, int64_t low, int64_t high) except -1:
    """Whether ``value`` is an exact int in low..high; False sends the caller to the reference's checks."""
    cdef int overflow = 0
    cdef long long v
    if not PyLong_CheckExact(value):
        return False
    v = PyLong_AsLongLongAndOverflow(value, &overflow)
    return overflow == 0 and low <= v <= high


cdef bint _usage_in_range(object channel_used) except -1:
    """``usage_violations`` has nothing to say (a dict of exact ints in range, or nothing)."""
    if not channel_used:
        return True
    if type(channel_used) is not dict:
        return False
    for used in (<dict>channel_used).values():
        if not _int_in(used, 0, 2 * MAX_ON_HAND):
            return False
    return True

cdef object _ADJUST = SupplyKind.ADJUST
cdef object _SET = SupplyKind.SET
cdef object _SAFETY = SupplyKind.SAFETY


cdef inline object _state(int state):
    return <object>PyTuple_GET_ITEM(_STATES, state)


# ------------------------------------------------------------------ memory


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


cdef Slot* _new_slots(uint64_t count, bint huge=False) except NULL:
    cdef Slot* slots = <Slot*>PyMem_RawMalloc(count * sizeof(Slot))
    if slots == NULL:
        raise MemoryError()
    if huge and count * sizeof(Slot) >= HUGE_MIN:
        fastledger_advise_huge(slots, count * sizeof(Slot))  # before the memset touches it
    memset(slots, 0, count * sizeof(Slot))
    return slots


# ------------------------------------------------- interned ids (StrTable)


cdef int _st_init(StrTable* t) except -1:
    t.n = 0
    t.cap = 0
    t.recs = <StrRec*>_grow(NULL, &t.cap, 16, sizeof(StrRec))
    t.slots = _new_slots(MIN_SLOTS)
    t.mask = MIN_SLOTS - 1
    return 0


cdef void _st_free(StrTable* t) noexcept:
    cdef Py_ssize_t i
    if t.recs != NULL:
        for i in range(t.n):
            Py_XDECREF(t.recs[i].name)
    PyMem_RawFree(t.recs)
    PyMem_RawFree(t.slots)
    t.recs = NULL
    t.slots = NULL
    t.n = t.cap = 0
    t.mask = 0


cdef inline int _rec_matches(StrRec* rec, PyObject* key, Py_hash_t h, const uint64_t* k) except -1:
    """Dict-key equality: identity, else the inline forms, else hash and ``==``."""
    if rec.name == key:
        return 1
    if rec.key_len != INLINE_NONE and fastledger_key16_inline(k):
        # Both are exact compact ASCII strs: equal exactly when their bytes are.
        return fastledger_key16_eq(&rec.key_len, k)
    if rec.hash != h:
        return 0
    return PyObject_RichCompareBool(<object>rec.name, <object>key, Py_EQ)


cdef int32_t _st_find(StrTable* t, PyObject* key, Py_hash_t h, const uint64_t* k) except -2:
    """The number of ``key`` (hash ``h``, inline form ``k``), or -1."""
    cdef uint64_t f = fastledger_fmix(<uint64_t>h)
    cdef uint64_t mask = t.mask
    cdef uint64_t i = f & mask
    cdef uint32_t tag = <uint32_t>(f >> 32)
    cdef Slot* slot
    while True:
        slot = &t.slots[i]
        if slot.ref == 0:
            return -1
        if slot.tag == tag and _rec_matches(&t.recs[slot.ref - 1], key, h, k):
            return <int32_t>(slot.ref - 1)
        i = (i + 1) & mask


cdef int _st_rehash(StrTable* t, uint64_t slot_count) except -1:
    cdef Slot* slots = _new_slots(slot_count)
    cdef uint64_t mask = slot_count - 1
    cdef uint64_t f, i
    cdef Py_ssize_t s
    for s in range(t.n):
        f = fastledger_fmix(<uint64_t>t.recs[s].hash)
        i = f & mask
        while slots[i].ref != 0:
            i = (i + 1) & mask
        slots[i].ref = <uint32_t>(s + 1)
        slots[i].tag = <uint32_t>(f >> 32)
    PyMem_RawFree(t.slots)
    t.slots = slots
    t.mask = mask
    return 0


cdef int32_t _st_add(StrTable* t, object key, Py_hash_t h, const uint64_t* k) except -2:
    """Append ``key``, known to be absent; returns its number."""
    cdef Py_ssize_t idx = t.n
    cdef uint64_t f, i
    cdef StrRec* rec
    if idx >= 0x7FFFFFFE:
        raise OverflowError("too many ids for one ledger")
    if (idx + 1) * 2 > <Py_ssize_t>(t.mask + 1):
        _st_rehash(t, (t.mask + 1) * 2)
    t.recs = <StrRec*>_grow(t.recs, &t.cap, idx + 1, sizeof(StrRec))
    rec = &t.recs[idx]
    rec.hash = h
    Py_INCREF(key)
    rec.name = <PyObject*>key
    memcpy(&rec.key_len, k, 16)
    t.n = idx + 1
    f = fastledger_fmix(<uint64_t>h)
    i = f & t.mask
    while t.slots[i].ref != 0:
        i = (i + 1) & t.mask
    t.slots[i].ref = <uint32_t>(idx + 1)
    t.slots[i].tag = <uint32_t>(f >> 32)
    return <int32_t>idx


cdef int32_t _st_lookup(StrTable* t, object key) except -2:
    """The number of ``key``, or -1 (hashing it; for the cold paths)."""
    cdef uint64_t k[2]
    fastledger_key16(key, k)
    return _st_find(t, <PyObject*>key, fastledger_hash(key), k)


cdef int32_t _st_intern(StrTable* t, object key) except -2:
    cdef uint64_t k[2]
    cdef Py_hash_t h = fastledger_hash(key)
    cdef int32_t idx
    fastledger_key16(key, k)
    idx = _st_find(t, <PyObject*>key, h, k)
    if idx >= 0:
        return idx
    return _st_add(t, key, h, k)


# --------------------------------------------------------- record layout


cdef inline char* _id_bytes(ResHead* head) noexcept nogil:
    return <char*>head + sizeof(ResHead)


cdef inline LineRec* _lines_of(ResHead* head) noexcept nogil:
    return <LineRec*>(<char*>head + sizeof(ResHead) + head.key_space)


cdef inline AllocRec* _allocs_of(ResHead* head) noexcept nogil:
    return <AllocRec*>(<char*>head + sizeof(ResHead) + head.key_space + head.n_lines * sizeof(LineRec))


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


cdef int _fits_i64(object value, int64_t* out) except -1:
    """1 and the value when it fits in 64 bits; 0 when it is an int too large to."""
    try:
        out[0] = value
    except OverflowError:
        return 0
    return 1


# --------------------------------------------- results and errors without __init__
#
# A frozen dataclass's generated __init__ sets each field through
# object.__setattr__ in Python: ~1 us for a Reservation, several for one with
# lines. Results are built here by allocating the instance and storing the
# fields into their slots, which is all that __init__ ends up doing for these
# classes; errors likewise get their (message,) args and attributes directly
# instead of running three levels of Python __init__. Both are checked at import
# against the classes' own constructors, field by field; if a class ever does
# more (a __post_init__, an extra attribute, another layout), the check fails
# and that class is built the ordinary way, so the shortcut can never change a
# result.


ctypedef struct Maker:
    PyObject* cls
    int n
    bint direct
    Py_ssize_t offsets[MAX_FIELDS]


cdef Maker _M_ALLOCATION, _M_LINE, _M_RESERVATION, _M_LEVEL, _M_CHANGE, _M_NODE_AV, _M_SKU_AV, _M_SHORTFALL


cdef object _build(Maker* m, PyObject** values):
    """An instance of ``m.cls`` with ``values`` as its fields (in field order)."""
    cdef int i
    if m.direct:
        return fastledger_make(m.cls, m.offsets, m.n, values)
    return (<object>m.cls)(*[<object>values[i] for i in range(m.n)])


cdef int _maker_init(Maker* m, object cls) except -1:
    cdef PyObject* ptrs[MAX_FIELDS]
    cdef int i
    names = tuple(f.name for f in dataclasses.fields(cls))
    m.cls = <PyObject*>cls  # a module global of engine.core.types: never freed
    m.n = len(names)
    m.direct = False
    if m.n > MAX_FIELDS or hasattr(cls, "__post_init__") or not getattr(cls, "__slots__", None):
        return 0
    for i in range(m.n):
        descr = cls.__dict__.get(names[i])
        if type(descr) is not types.MemberDescriptorType:
            return 0
        if (<PyMemberDescrObject*>descr).d_member.type != T_OBJECT_EX:
            return 0
        m.offsets[i] = (<PyMemberDescrObject*>descr).d_member.offset
    values = tuple(object() for _ in names)
    for i in range(m.n):
        ptrs[i] = <PyObject*>values[i]
    m.direct = True
    fast = _build(m, ptrs)
    usual = cls(*values)
    m.direct = type(fast) is type(usual) and all(
        getattr(fast, name) is getattr(usual, name) for name in names
    ) and fast == usual
    return 0


_maker_init(&_M_ALLOCATION, Allocation)
_maker_init(&_M_LINE, ReservationLine)
_maker_init(&_M_RESERVATION, Reservation)
_maker_init(&_M_LEVEL, StockLevel)
_maker_init(&_M_CHANGE, StockChange)
_maker_init(&_M_NODE_AV, NodeAvailability)
_maker_init(&_M_SKU_AV, SkuAvailability)
_maker_init(&_M_SHORTFALL, Shortfall)


cdef object _error(object cls, str message, object reason, str attr, object value):
    """``cls(message, reason=reason)`` (``reason`` None: not passed), plus ``attr = value``
    when ``attr`` is given, built without __init__ when the import check allows."""
    if _FAST_ERRORS:
        exc = fastledger_new_error(<PyObject*>cls, message)
        exc.message = message
        if reason is not None:
            exc.reason = reason
        if attr is not None:
            setattr(exc, attr, value)
        return exc
    if reason is not None:
        return cls(message, reason=reason)
    return cls(message)


cdef object _out_of_stock(tuple shortfalls):
    """OutOfStock(shortfalls), as its constructor makes it: args (shortfalls,),
    and the message left to be written when first read."""
    if not _FAST_ERRORS:
        return OutOfStock(shortfalls)
    exc = fastledger_new_error(<PyObject*>OutOfStock, shortfalls)
    exc.shortfalls = shortfalls
    return exc


cdef object _not_found(object reservation_id):
    return _error(NotFound, f"reservation {reservation_id!r} not found", "RESERVATION_NOT_FOUND", None, None)


cdef object _illegal(object reservation_id, int state, str wanted):
    # Same messages and reasons as engine.core.ledger._illegal.
    cdef str name = _STATE_NAMES[state]
    if wanted is not None and (state == RS_HELD or state == RS_COMMITTED):
        return _error(
            IllegalTransition,
            f"reservation {reservation_id!r} is {name.lower()}, not {wanted}",
            "NOT_COMMITTED" if wanted == "committed" else f"RESERVATION_{name}",
            None,
            None,
        )
    return _error(
        IllegalTransition, f"reservation {reservation_id!r} is {name.lower()}", f"RESERVATION_{name}", None, None
    )


cdef bint _FAST_ERRORS = False


def _same_error(a, b):
    return type(a) is type(b) and a.args == b.args and list(vars(a).items()) == list(vars(b).items())


cdef bint _check_fast_errors() except -1:
    global _FAST_ERRORS
    shortfalls = (Shortfall(0, "sku-a", 3, 1), Shortfall(2, "sku-b", 5, 0))
    cases = [
        (lambda: _out_of_stock(shortfalls), lambda: OutOfStock(shortfalls)),
        (lambda: _not_found("r-1"), lambda: NotFound("reservation 'r-1' not found", reason="RESERVATION_NOT_FOUND")),
        (lambda: _illegal("r-1", RS_HELD, "committed"),
         lambda: IllegalTransition("reservation 'r-1' is held, not committed", reason="NOT_COMMITTED")),
        (lambda: _error(IdempotencyMismatch, "m", None, None, None), lambda: IdempotencyMismatch("m")),
        (lambda: _error(StockRejected, "m", "ON_HAND_LIMIT", None, None),
         lambda: StockRejected("m", reason="ON_HAND_LIMIT")),
    ]
    _FAST_ERRORS = True
    for fast, usual in cases:
        if not _same_error(fast(), usual()):
            _FAST_ERRORS = False
            return False
    return True


_check_fast_errors()


def _shortcuts():
    """Which results and errors are built without __init__ (for tests)."""
    return {
        "errors": _FAST_ERRORS,
        "Allocation": _M_ALLOCATION.direct,
        "ReservationLine": _M_LINE.direct,
        "Reservation": _M_RESERVATION.direct,
        "StockLevel": _M_LEVEL.direct,
        "StockChange": _M_CHANGE.direct,
        "NodeAvailability": _M_NODE_AV.direct,
        "SkuAvailability": _M_SKU_AV.direct,
        "Shortfall": _M_SHORTFALL.direct,
    }


def _build_like(cls, *values):
    """Build ``cls(*values)`` the way this module builds its results (for tests)."""
    cdef PyObject* ptrs[MAX_FIELDS]
    cdef Maker* m
    if cls is Allocation:
        m = &_M_ALLOCATION
    elif cls is ReservationLine:
        m = &_M_LINE
    elif cls is Reservation:
        m = &_M_RESERVATION
    elif cls is StockLevel:
        m = &_M_LEVEL
    elif cls is StockChange:
        m = &_M_CHANGE
    elif cls is NodeAvailability:
        m = &_M_NODE_AV
    elif cls is SkuAvailability:
        m = &_M_SKU_AV
    elif cls is Shortfall:
        m = &_M_SHORTFALL
    else:
        raise TypeError(f"{cls!r} is not a result type of this ledger")
    if len(values) != m.n:
        raise TypeError(f"{cls.__name__} has {m.n} fields")
    for i in range(m.n):
        ptrs[i] = <PyObject*>values[i]
    return _build(m, ptrs)


def _errors_like():
    """The errors this module builds, next to the same errors built by their classes (for tests)."""
    shortfalls = (Shortfall(1, "x", 2, 0),)
    return [
        (_out_of_stock(shortfalls), OutOfStock(shortfalls)),
        (_not_found("id"), NotFound("reservation 'id' not found", reason="RESERVATION_NOT_FOUND")),
        (_illegal("id", RS_EXPIRED, None), IllegalTransition("reservation 'id' is expired", reason="RESERVATION_EXPIRED")),
        (_illegal("id", RS_COMMITTED, "held"),
         IllegalTransition("reservation 'id' is committed, not held", reason="RESERVATION_COMMITTED")),
    ]


cdef inline object _shortfall(Py_ssize_t index, object sku, object requested, int64_t available):
    cdef PyObject* v[4]
    cdef object index_obj, available_obj
    index_obj = index
    available_obj = available
    v[0] = <PyObject*>index_obj
    v[1] = <PyObject*>sku
    v[2] = <PyObject*>requested
    v[3] = <PyObject*>available_obj
    return _build(&_M_SHORTFALL, v)


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
        self._channels = {}
        self._events = {}
        _st_init(&self._node_t)
        _st_init(&self._ch_t)
        _st_init(&self._sku_t)
        self._node_defined = <uint8_t*>_grow(NULL, &self._node_cap, 16, sizeof(uint8_t))
        self._node_safety = <int64_t*>_realloc(NULL, self._node_cap * sizeof(int64_t))
        self._own_safety = NULL
        self._own_cap = 0
        self._ch_nodes = <int32_t**>_grow(NULL, &self._ch_cap, 8, sizeof(int32_t*))
        self._ch_len = <Py_ssize_t*>_realloc(NULL, self._ch_cap * sizeof(Py_ssize_t))
        self._ch_elig = <uint8_t**>_realloc(NULL, self._ch_cap * sizeof(uint8_t*))
        self._ch_elig_len = <Py_ssize_t*>_realloc(NULL, self._ch_cap * sizeof(Py_ssize_t))
        self._ch_rule = <RuleRec**>_realloc(NULL, self._ch_cap * sizeof(RuleRec*))
        self._ch_tracked = <uint8_t*>_realloc(NULL, self._ch_cap * sizeof(uint8_t))
        self._rules = {}
        self._tracked = set()
        self._use = NULL
        self._use_n = 0
        self._use_rebuild(16, -1)
        self._plan_ch = -1
        self._pages = <Row**>_grow(NULL, &self._pages_cap, 16, sizeof(Row*))
        self._page_blocks = <void**>_realloc(NULL, self._pages_cap * sizeof(void*))
        self._row_slots = _new_slots(MIN_SLOTS)
        self._row_mask = MIN_SLOTS - 1
        self._segs = <char**>_grow(NULL, &self._segs_cap, 16, sizeof(char*))
        self._seg_used = <Py_ssize_t*>_realloc(NULL, self._segs_cap * sizeof(Py_ssize_t))
        self._seg_size = <Py_ssize_t*>_realloc(NULL, self._segs_cap * sizeof(Py_ssize_t))
        self._n_segs = 0
        self._res_slots = _new_slots(MIN_SLOTS)
        self._res_mask = MIN_SLOTS - 1
        self._res_hint_mask = 0  # no hint: a fresh table
        self._heap_cap = 0
        self._grow_heap()
        self._live_exp = <double*>_grow(NULL, &self._live_cap, 64, sizeof(double))
        self._res_hash = <Py_hash_t*>_realloc(NULL, self._live_cap * sizeof(Py_hash_t))
        self._res_handle = <uint32_t*>_realloc(NULL, self._live_cap * sizeof(uint32_t))
        self._plan = <PlanLine*>_grow(NULL, &self._plan_cap, 16, sizeof(PlanLine))
        self._plan_lines = <LineRec*>_grow(NULL, &self._plan_lines_cap, 16, sizeof(LineRec))
        self._short_alloc = <int64_t*>_realloc(NULL, self._plan_lines_cap * sizeof(int64_t))
        self._plan_allocs = <AllocRec*>_grow(NULL, &self._plan_allocs_cap, 64, sizeof(AllocRec))
        self._free_cap = 16
        self._free_row = <int64_t*>_realloc(NULL, 16 * sizeof(int64_t))
        self._free_atp = <int64_t*>_realloc(NULL, 16 * sizeof(int64_t))
        self._free_node = <int32_t*>_realloc(NULL, 16 * sizeof(int32_t))
        self._due = <HeapEntry*>_grow(NULL, &self._due_cap, 64, sizeof(HeapEntry))
        self._idx_buf = <Py_ssize_t*>_grow(NULL, &self._idx_cap, 16, sizeof(Py_ssize_t))
        self._contexts = {}
        self._cand_buf = NULL
        self._cand_cap = 0
        self._cand_mark = NULL
        self._cand_mark_cap = 0
        return 0

    cdef void _free_storage(self) noexcept:
        cdef Py_ssize_t i
        cdef ResHead* head
        if self._page_blocks != NULL:
            for i in range(self._n_pages):
                PyMem_RawFree(self._page_blocks[i])
            PyMem_RawFree(self._page_blocks)
        PyMem_RawFree(self._pages)
        if self._ch_nodes != NULL:
            for i in range(self._ch_t.n):
                PyMem_RawFree(self._ch_nodes[i])
                PyMem_RawFree(self._ch_elig[i])
                PyMem_RawFree(self._ch_rule[i])
            PyMem_RawFree(self._ch_nodes)
        if self._segs != NULL and self._res_handle != NULL:
            for i in range(self._n_res):
                head = self._head(self._res_handle[i])
                Py_XDECREF(head.id)
                Py_XDECREF(head.channel)
        if self._segs != NULL:
            for i in range(self._n_segs):
                PyMem_RawFree(self._segs[i])
        PyMem_RawFree(self._segs)
        PyMem_RawFree(self._seg_used)
        PyMem_RawFree(self._seg_size)
        _st_free(&self._node_t)
        _st_free(&self._ch_t)
        _st_free(&self._sku_t)
        PyMem_RawFree(self._ch_len)
        PyMem_RawFree(self._ch_elig)
        PyMem_RawFree(self._ch_elig_len)
        PyMem_RawFree(self._ch_rule)
        PyMem_RawFree(self._ch_tracked)
        PyMem_RawFree(self._use)
        PyMem_RawFree(self._node_defined)
        PyMem_RawFree(self._node_safety)
        PyMem_RawFree(self._own_safety)
        PyMem_RawFree(self._row_slots)
        PyMem_RawFree(self._res_slots)
        PyMem_RawFree(self._heap_block)
        PyMem_RawFree(self._live_exp)
        PyMem_RawFree(self._res_hash)
        PyMem_RawFree(self._res_handle)
        PyMem_RawFree(self._plan)
        PyMem_RawFree(self._plan_lines)
        PyMem_RawFree(self._short_alloc)
        PyMem_RawFree(self._plan_allocs)
        PyMem_RawFree(self._free_row)
        PyMem_RawFree(self._free_atp)
        PyMem_RawFree(self._free_node)
        PyMem_RawFree(self._due)
        PyMem_RawFree(self._idx_buf)
        PyMem_RawFree(self._cand_buf)
        PyMem_RawFree(self._cand_mark)
        self._cand_buf = NULL
        self._cand_mark = NULL
        self._cand_cap = self._cand_mark_cap = 0
        self._pages = NULL
        self._page_blocks = NULL
        self._ch_nodes = NULL
        self._ch_len = NULL
        self._ch_elig = NULL
        self._ch_elig_len = NULL
        self._ch_rule = NULL
        self._ch_tracked = NULL
        self._use = NULL
        self._use_n = 0
        self._use_mask = 0
        self._node_defined = NULL
        self._node_safety = NULL
        self._own_safety = NULL
        self._own_cap = 0
        self._row_slots = NULL
        self._segs = NULL
        self._seg_used = NULL
        self._seg_size = NULL
        self._res_slots = NULL
        self._heap = NULL
        self._heap_block = NULL
        self._live_exp = NULL
        self._res_hash = NULL
        self._res_handle = NULL
        self._plan = NULL
        self._plan_lines = NULL
        self._short_alloc = NULL
        self._plan_allocs = NULL
        self._free_row = NULL
        self._free_atp = NULL
        self._free_node = NULL
        self._due = NULL
        self._idx_buf = NULL
        self._n_pages = self._pages_cap = self._n_rows = 0
        self._ch_cap = 0
        self._node_cap = 0
        self._n_segs = self._segs_cap = self._n_res = 0
        self._heap_n = self._heap_cap = self._live_cap = 0
        self._plan_cap = self._plan_lines_cap = self._plan_allocs_cap = self._n_plan_allocs = 0
        self._free_cap = self._due_cap = self._idx_cap = 0

    # -------------------------------------------------------------- interning

    cdef int32_t _sku_of(self, object sku) except -2:
        """The interned number of ``sku``, or -1 when it was never seen."""
        return _st_lookup(&self._sku_t, sku)

    cdef int32_t _intern_sku(self, object sku) except -2:
        return _st_intern(&self._sku_t, sku)

    cdef int32_t _intern_node(self, object node) except -2:
        cdef Py_ssize_t n = self._node_t.n
        cdef int32_t idx = _st_intern(&self._node_t, node)
        if idx == n:  # new
            if idx >= self._node_cap:
                self._node_defined = <uint8_t*>_grow(self._node_defined, &self._node_cap, idx + 1, sizeof(uint8_t))
                self._node_safety = <int64_t*>_realloc(self._node_safety, self._node_cap * sizeof(int64_t))
            self._node_defined[idx] = 0
            self._node_safety[idx] = 0
        return idx

    cdef int32_t _node_of(self, object node) except -2:
        return _st_lookup(&self._node_t, node)

    cdef int32_t _defined_node_of(self, object node) except -2:
        cdef int32_t idx = _st_lookup(&self._node_t, node)
        return idx if idx >= 0 and self._node_defined[idx] else -1

    cdef object _node_name(self, int32_t node):
        return <object>self._node_t.recs[node].name

    # ------------------------------------------------------------------- rows

    cdef Row* _row(self, int64_t r) noexcept nogil:
        return self._pages[r >> PAGE_SHIFT] + (r & PAGE_MASK)

    cdef int64_t _find(self, int32_t sku, int32_t node) noexcept nogil:
        """The row of (interned SKU, node), or -1."""
        cdef uint64_t k = fastledger_row_hkey(self._sku_t.recs[sku].hash, node)
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

    cdef int64_t _find_key(self, PyObject* sku, Py_hash_t h, const uint64_t* key, int32_t node,
                           uint64_t k) except -2:
        """The row of (the caller's SKU object with hash ``h`` and inline form ``key``, node), or -1.

        ``k`` is ``fastledger_row_hkey(h, node)`` (the caller often has it). The
        hot path of reserve: no SKU interning lookup; a short ASCII id is
        compared with the copy in the row, which has to be loaded anyway.
        """
        cdef uint64_t mask = self._row_mask
        cdef uint64_t i = k & mask
        cdef uint32_t tag = <uint32_t>(k >> 32)
        cdef Slot* slot
        cdef Row* row
        cdef StrRec* rec
        cdef bint inline = fastledger_key16_inline(key)
        while True:
            slot = &self._row_slots[i]
            if slot.ref == 0:
                return -1
            if slot.tag == tag:
                row = self._row(slot.ref - 1)
                if row.node == node:
                    if inline and row.key_len != INLINE_NONE:
                        if fastledger_key16_eq(&row.key_len, key):
                            return slot.ref - 1
                    else:
                        rec = &self._sku_t.recs[row.sku]
                        if _rec_matches(rec, sku, h, key):
                            return slot.ref - 1
            i = (i + 1) & mask

    cdef int _rehash_rows(self, uint64_t slot_count) except -1:
        cdef Slot* slots = _new_slots(slot_count, True)
        cdef uint64_t mask = slot_count - 1
        cdef uint64_t k, i
        cdef int64_t r
        cdef Row* row
        for r in range(self._n_rows):
            row = self._row(r)
            k = fastledger_row_hkey(self._sku_t.recs[row.sku].hash, row.node)
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
        row.safety = self._node_safety[node]  # a new row follows its node's default
        memcpy(&row.key_len, &self._sku_t.recs[sku].key_len, 16)
        self._n_rows = r + 1
        k = fastledger_row_hkey(self._sku_t.recs[sku].hash, node)
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
                raise KeyError((<object>self._sku_t.recs[sku].name, self._node_name(a.node)))
            a.row = <int32_t>r
        return self._row(r)

    cdef object _level(self, object sku, object node, int64_t r):
        cdef Row* row
        cdef PyObject* v[7]
        cdef object on_hand, reserved, committed, safety, version
        if r < 0:
            on_hand = reserved = committed = safety = version = 0
        else:
            row = self._row(r)
            on_hand = row.on_hand
            reserved = row.reserved
            committed = row.committed
            safety = row.safety
            version = row.version
        v[0] = <PyObject*>sku
        v[1] = <PyObject*>node
        v[2] = <PyObject*>on_hand
        v[3] = <PyObject*>reserved
        v[4] = <PyObject*>committed
        v[5] = <PyObject*>safety
        v[6] = <PyObject*>version
        return _build(&_M_LEVEL, v)

    cdef bint _is_own(self, int64_t r) noexcept nogil:
        return r < self._own_cap and self._own_safety[r] != 0

    cdef int _set_own(self, int64_t r, bint own) except -1:
        cdef Py_ssize_t cap = self._own_cap
        if r >= cap:
            if not own:
                return 0
            cap = cap * 2 if cap else 1024
            while cap <= r:
                cap *= 2
            self._own_safety = <uint8_t*>_realloc(self._own_safety, cap * sizeof(uint8_t))
            memset(self._own_safety + self._own_cap, 0, cap - self._own_cap)
            self._own_cap = cap
        self._own_safety[r] = 1 if own else 0
        return 0

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

    def define_node(self, node_id, default_safety_stock=0):
        cdef int64_t quantity = check_node_safety(node_id, default_safety_stock)
        cdef int32_t idx = self._intern_node(node_id)
        cdef int64_t r
        cdef Row* row
        self._nodes[node_id] = None
        self._node_defined[idx] = 1
        if self._node_safety[idx] == quantity:
            return
        self._node_safety[idx] = quantity
        # A rare network change: one pass over the rows keeps every reader of
        # Row.safety (the reserve path above all) free of the lookup.
        for r in range(self._n_rows):
            row = self._row(r)
            if row.node == idx and not self._is_own(r):
                row.safety = quantity

    cdef int64_t _row_of(self, object sku, object node) except -2:
        """The row index of (sku, node), -1 when there is none."""
        cdef int32_t s = self._sku_of(sku)
        cdef int32_t nd
        if s < 0:
            return -1
        nd = self._node_of(node)
        return self._find(s, nd) if nd >= 0 else -1

    def has_own_safety_stock(self, sku, node):
        cdef int64_t r = self._row_of(sku, node)
        return r >= 0 and self._is_own(r)

    def node_safety_stock(self, node_id):
        cdef int32_t idx = _st_lookup(&self._node_t, node_id) if isinstance(node_id, str) else -1
        return self._node_safety[idx] if idx >= 0 else 0

    def define_channel(self, channel_id, node_ids, rules=None, track_usage=False):
        """Define (or redefine) a channel, with optional resolved rules (see the reference)."""
        cdef Py_ssize_t i, n, ch, n_known
        cdef int32_t* arr
        cdef uint8_t* elig
        cdef RuleRec* rule_arr = NULL
        cdef bint tracked, was_tracked
        resolved = check_channel_rules(node_ids, rules)
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
        # Every node of the channel is interned by now, so its number is below n_known.
        n_known = self._node_t.n
        elig = <uint8_t*>_realloc(NULL, (n_known if n_known > 0 else 1) * sizeof(uint8_t))
        memset(elig, 0, (n_known if n_known > 0 else 1) * sizeof(uint8_t))
        for i in range(n):
            elig[arr[i]] = 1
        if resolved:
            rule_arr = <RuleRec*>_realloc(NULL, (n_known if n_known > 0 else 1) * sizeof(RuleRec))
            memset(rule_arr, 0, (n_known if n_known > 0 else 1) * sizeof(RuleRec))
            for i in range(n):
                kind_value = resolved.get(nodes[i])
                if kind_value is not None:
                    rule_arr[arr[i]].kind = kind_value[0]
                    rule_arr[arr[i]].value = kind_value[1]
        if n > self._free_cap:
            self._grow_free(n)
        ch = _st_lookup(&self._ch_t, channel_id)
        if ch >= 0:
            PyMem_RawFree(self._ch_nodes[ch])
            PyMem_RawFree(self._ch_elig[ch])
            PyMem_RawFree(self._ch_rule[ch])
            self._ch_rule[ch] = NULL
        else:
            ch = self._ch_t.n
            if ch + 1 > self._ch_cap:
                self._ch_nodes = <int32_t**>_grow(self._ch_nodes, &self._ch_cap, ch + 1, sizeof(int32_t*))
                self._ch_len = <Py_ssize_t*>_realloc(self._ch_len, self._ch_cap * sizeof(Py_ssize_t))
                self._ch_elig = <uint8_t**>_realloc(self._ch_elig, self._ch_cap * sizeof(uint8_t*))
                self._ch_elig_len = <Py_ssize_t*>_realloc(self._ch_elig_len, self._ch_cap * sizeof(Py_ssize_t))
                self._ch_rule = <RuleRec**>_realloc(self._ch_rule, self._ch_cap * sizeof(RuleRec*))
                self._ch_tracked = <uint8_t*>_realloc(self._ch_tracked, self._ch_cap * sizeof(uint8_t))
            self._ch_nodes[ch] = NULL
            self._ch_elig[ch] = NULL
            self._ch_rule[ch] = NULL
            self._ch_tracked[ch] = 0
            _st_intern(&self._ch_t, channel_id)
        self._ch_nodes[ch] = arr
        self._ch_len[ch] = n
        self._ch_elig[ch] = elig
        self._ch_elig_len[ch] = n_known
        self._ch_rule[ch] = rule_arr
        self._channels[channel_id] = nodes
        if resolved:
            self._rules[channel_id] = resolved
        else:
            self._rules.pop(channel_id, None)
        tracked = bool(resolved) or bool(track_usage)
        was_tracked = self._ch_tracked[ch]
        if tracked and not was_tracked:
            self._ch_tracked[ch] = 1
            self._tracked.add(channel_id)
            self._recount_channel(<int32_t>ch)
        elif not tracked and was_tracked:
            self._ch_tracked[ch] = 0
            self._tracked.discard(channel_id)
            self._use_rebuild(self._use_mask + 1, <int32_t>ch)

    def channel_rules(self, channel_id):
        """The channel's resolved rules by node (nodes without a rule left out)."""
        if channel_id not in self._channels:
            raise UnknownChannel(channel_id)
        return dict(self._rules.get(channel_id, {}))

    def channel_usage(self, sku, node):
        """channel_used of the row by tracked channel, non-zero ones only, sorted by channel."""
        cdef int32_t s = self._sku_of(sku)
        cdef int32_t nd = self._defined_node_of(node) if isinstance(node, str) else -1
        cdef int64_t r = self._find(s, nd) if s >= 0 and nd >= 0 else -1
        cdef int64_t used
        out = {}
        if r < 0:
            return out
        for channel in sorted(self._tracked):
            used = self._use_get(r, <int32_t>_st_lookup(&self._ch_t, channel))
            if used != 0:
                out[channel] = used
        return out

    # ----------------------------------------------------------- channel_used

    cdef int64_t _use_get(self, int64_t row, int32_t ch) noexcept nogil:
        cdef uint64_t i = fastledger_row_key(<int32_t>row, ch) & self._use_mask
        cdef UseRec* e
        while True:
            e = &self._use[i]
            if e.row < 0:
                return 0
            if e.row == row and e.ch == ch:
                return e.used
            i = (i + 1) & self._use_mask

    cdef int _use_add(self, int64_t row, int32_t ch, int64_t delta) except -1:
        """Add ``delta`` to the counter, creating it (the table at most half full)."""
        cdef uint64_t i = fastledger_row_key(<int32_t>row, ch) & self._use_mask
        cdef UseRec* e
        while True:
            e = &self._use[i]
            if e.row < 0:
                break
            if e.row == row and e.ch == ch:
                e.used += delta
                return 0
            i = (i + 1) & self._use_mask
        if delta == 0:
            return 0
        if 2 * (self._use_n + 1) > <Py_ssize_t>(self._use_mask + 1):
            self._use_rebuild((self._use_mask + 1) * 2, -1)
            return self._use_add(row, ch, delta)
        e.row = <int32_t>row
        e.ch = ch
        e.used = delta
        self._use_n += 1
        return 0

    cdef int _use_rebuild(self, uint64_t slot_count, int32_t drop_ch) except -1:
        """Rehash into ``slot_count`` slots, leaving out zero counters and those of ``drop_ch``."""
        cdef UseRec* old = self._use
        cdef uint64_t old_count = self._use_mask + 1 if old != NULL else 0
        cdef UseRec* table
        cdef uint64_t j, i, mask
        cdef Py_ssize_t kept = 0
        if old != NULL:
            for j in range(old_count):
                if old[j].row >= 0 and old[j].used != 0 and old[j].ch != drop_ch:
                    kept += 1
        while <Py_ssize_t>slot_count < 2 * kept + 2:
            slot_count *= 2
        table = <UseRec*>_realloc(NULL, slot_count * sizeof(UseRec))
        for j in range(slot_count):
            table[j].row = -1
        mask = slot_count - 1
        if old != NULL:
            for j in range(old_count):
                if old[j].row >= 0 and old[j].used != 0 and old[j].ch != drop_ch:
                    i = fastledger_row_key(old[j].row, old[j].ch) & mask
                    while table[i].row >= 0:
                        i = (i + 1) & mask
                    table[i] = old[j]
        PyMem_RawFree(old)
        self._use = table
        self._use_mask = mask
        self._use_n = kept
        return 0

    cdef int _recount_channel(self, int32_t ch) except -1:
        """channel_used of ``ch`` from its live holds and committed lines (a channel that starts being tracked)."""
        cdef Py_ssize_t seq
        cdef int32_t k, j
        cdef int64_t r
        cdef ResHead* head
        cdef LineRec* line
        cdef AllocRec* a
        self._use_rebuild(self._use_mask + 1, ch)
        for seq in range(self._n_res):
            head = self._head(self._res_handle[seq])
            if head.ch != ch:
                continue
            for k in range(head.n_lines):
                line = &_lines_of(head)[k]
                if line.state != RS_HELD and line.state != RS_COMMITTED:
                    continue
                for j in range(line.alloc_first, line.alloc_first + line.alloc_count):
                    a = &_allocs_of(head)[j]
                    r = a.row if a.row >= 0 else self._find(line.sku, a.node)
                    if r >= 0:
                        self._use_add(r, ch, a.quantity)
        return 0

    cdef int _untrack_lines(self, ResHead* head, LineRec* line) except -1:
        """A held or committed line leaves: its units no longer count for its channel."""
        cdef int32_t j
        cdef AllocRec* a
        cdef AllocRec* allocs = _allocs_of(head)
        for j in range(line.alloc_first, line.alloc_first + line.alloc_count):
            a = &allocs[j]
            if a.row < 0:
                self._alloc_row_ptr(a, line.sku)
            self._use_add(a.row, head.ch, -a.quantity)
        return 0

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
        cdef PyObject* pv[3]
        cdef object level, applied, duplicate

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
                        # Staged as the row's own value, FOLLOW_NODE_DEFAULT if none.
                        st.values[3] = row.safety if self._is_own(r) else FOLLOW_NODE_DEFAULT
                        st.values[4] = row.version
                    else:
                        memset(st.values, 0, sizeof(st.values))
                        st.values[3] = FOLLOW_NODE_DEFAULT
                st = &stages[s]
                op_stage[i] = s

                # Same dispatch as `kind == SupplyKind.X` in the reference.
                if isinstance(kind, int) or kind == ikind:
                    code = ikind if SC_ADJUST <= ikind <= SC_SAFETY_DEFAULT else SC_INVALID
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
                elif code == SC_SAFETY_DEFAULT:
                    st.values[3] = FOLLOW_NODE_DEFAULT
                    flags[i] = F_APPLIED
                    continue  # applied, but creates no row: a missing row follows already
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
                if st.values[3] == FOLLOW_NODE_DEFAULT:
                    row.safety = self._node_safety[st.node]
                    self._set_own(st.row, False)
                else:
                    row.safety = st.values[3]
                    self._set_own(st.row, True)
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
                level = self._level(sku, node, r)
                applied = True if flags[i] & F_APPLIED else False
                duplicate = True if flags[i] & F_DUPLICATE else False
                pv[0] = <PyObject*>level
                pv[1] = <PyObject*>applied
                pv[2] = <PyObject*>duplicate
                out.append(_build(&_M_CHANGE, pv))
            return out
        finally:
            PyMem_RawFree(table)
            PyMem_RawFree(stages)
            PyMem_RawFree(op_stage)
            PyMem_RawFree(flags)

    def stock(self, sku, node):
        return self._level(sku, node, self._row_of(sku, node))

    def set_row(self, sku, node, on_hand, reserved, committed, safety_stock, version, channel_used=None):
        """Overwrite (or create) the counters of one row (see the reference)."""
        cdef int32_t nidx = self._defined_node_of(node)
        cdef int32_t s, ch
        cdef int64_t r
        cdef Row* row
        if nidx < 0:
            raise UnknownNode(node)
        # Every feed entry lands here: plain ints in range pass in C, and
        # anything else gets the reference's checks (and its exact errors).
        if not (
            _int_in(on_hand, 0, MAX_ON_HAND)
            and _int_in(reserved, 0, MAX_ON_HAND)
            and _int_in(committed, 0, MAX_ON_HAND)
            and _int_in(safety_stock, FOLLOW_DEFAULT_C, MAX_ON_HAND)
            and _int_in(version, 0, INT64_MAX)
            and _usage_in_range(channel_used)
        ):
            violations = row_violations(on_hand, reserved, committed, safety_stock, version)
            violations += usage_violations(channel_used)
            if violations:
                raise InvalidArgument(f"counters of {sku}@{node} are out of range", violations)
        s = self._intern_sku(sku)
        r = self._find(s, nidx)
        if r < 0:
            r = self._insert_row(s, nidx)
        row = self._row(r)
        row.on_hand = on_hand
        row.reserved = reserved
        row.committed = committed
        if safety_stock == FOLLOW_NODE_DEFAULT:
            row.safety = self._node_safety[nidx]
            self._set_own(r, False)
        else:
            row.safety = safety_stock
            self._set_own(r, True)
        row.version = version
        if channel_used and self._tracked:
            for channel, used in channel_used.items():
                if channel in self._tracked:
                    ch = <int32_t>_st_lookup(&self._ch_t, channel)
                    self._use_add(r, ch, used - self._use_get(r, ch))

    # ----------------------------------------------------------- reservations

    cdef ResHead* _head(self, uint32_t handle) noexcept nogil:
        return <ResHead*>(self._segs[handle >> SEG_SHIFT] + (<size_t>(handle & SEG_MASK) << 3))

    cdef int _new_segment(self, Py_ssize_t need) except -1:
        """Start a segment with room for at least ``need`` bytes of records."""
        cdef Py_ssize_t seg = self._n_segs
        cdef Py_ssize_t size = SEG_FIRST if seg == 0 else self._seg_size[seg - 1] * 2
        cdef char* block
        if seg >= MAX_SEGMENTS:
            raise OverflowError("too many reservations for one ledger")
        if size > SEG_LARGEST:
            size = SEG_LARGEST
        if size < need:
            size = need  # one record larger than a segment gets one of its own
        if seg >= self._segs_cap:
            self._segs = <char**>_grow(self._segs, &self._segs_cap, seg + 1, sizeof(char*))
            self._seg_used = <Py_ssize_t*>_realloc(self._seg_used, self._segs_cap * sizeof(Py_ssize_t))
            self._seg_size = <Py_ssize_t*>_realloc(self._seg_size, self._segs_cap * sizeof(Py_ssize_t))
        # Small pages (see fastledger_advise_huge): segments are touched for the
        # first time while the ledger serves.
        block = <char*>PyMem_RawMalloc(size)
        if block == NULL:
            raise MemoryError()
        self._segs[seg] = block
        self._seg_used[seg] = 0
        self._seg_size[seg] = size
        self._n_segs = seg + 1
        return 0

    cdef int64_t _res_lookup(self, object reservation_id, Py_hash_t h) except -2:
        """The record handle of ``reservation_id`` (hash ``h``), or -1."""
        cdef uint64_t k = fastledger_fmix(<uint64_t>h)
        cdef uint64_t mask = self._res_mask
        cdef uint64_t i = k & mask
        cdef uint32_t tag = <uint32_t>(k >> 32)
        cdef Slot* slot
        cdef ResHead* head
        cdef bint ascii = _is_ascii_str(reservation_id)
        cdef Py_ssize_t n = PyUnicode_GET_LENGTH(reservation_id) if ascii else -1
        cdef const char* data = <const char*>PyUnicode_DATA(reservation_id) if ascii else NULL
        while True:
            slot = &self._res_slots[i]
            if slot.ref == 0:
                # A reserve inserts the id right here next (see _res_index_insert).
                self._res_hint = i
                self._res_hint_hash = h
                self._res_hint_mask = mask
                return -1
            if slot.tag == tag:
                head = self._head(slot.ref - 1)
                # Lines and allocations start in the record's next cache line:
                # load it together with the head instead of after it.
                fastledger_prefetch(<char*>head + 64)
                if head.id == <PyObject*>reservation_id:
                    return slot.ref - 1
                if head.key_len != ID_NOT_INLINE and ascii:
                    # Two compact ASCII strs are equal exactly when their bytes are.
                    if n == head.key_len and memcmp(data, _id_bytes(head), n) == 0:
                        return slot.ref - 1
                elif PyObject_RichCompareBool(<object>head.id, reservation_id, Py_EQ):
                    return slot.ref - 1
            i = (i + 1) & mask

    cdef int _res_index_insert(self, uint32_t handle, Py_hash_t h) except -1:
        cdef uint64_t k, i
        if (self._n_res + 1) * 2 > <int64_t>(self._res_mask + 1):
            self._rehash_res((self._res_mask + 1) * 2)
        k = fastledger_fmix(<uint64_t>h)
        i = self._res_hint
        if (self._res_hint_hash == h and self._res_hint_mask == self._res_mask and i <= self._res_mask
                and self._res_slots[i].ref == 0):
            # The lookup that found this id absent ended on this empty slot, and
            # the table has not changed since: no second probe (and no second miss).
            self._res_slots[i].ref = handle + 1
            self._res_slots[i].tag = <uint32_t>(k >> 32)
            return 0
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
        cdef Py_ssize_t seq
        for seq in range(self._n_res):
            k = fastledger_fmix(<uint64_t>self._res_hash[seq])
            i = k & mask
            while slots[i].ref != 0:
                i = (i + 1) & mask
            slots[i].ref = self._res_handle[seq] + 1
            slots[i].tag = <uint32_t>(k >> 32)
        PyMem_RawFree(self._res_slots)
        self._res_slots = slots
        self._res_mask = mask
        self._res_hint_mask = 0  # a hint into the old table is void
        return 0

    cdef uint32_t _append_record(self, object reservation_id, Py_hash_t h, object channel, double ttl_s,
                                 double created_at, double expires_at, bint allow_partial,
                                 LineRec* lines, Py_ssize_t n_lines, AllocRec* allocs,
                                 Py_ssize_t n_allocs, bint held, int32_t ch) except? 0xFFFFFFFF:
        """Append one reservation record and index it; returns its handle.
        ``held``: whether any of its lines is HELD."""
        cdef Py_ssize_t key_len = ID_NOT_INLINE, key_space = 0
        cdef Py_ssize_t size, off, seg = self._n_segs - 1
        cdef Py_ssize_t seq = self._n_res, i
        cdef uint32_t handle
        cdef ResHead* head
        cdef LineRec* dst_lines
        cdef AllocRec* dst_allocs
        if _is_ascii_str(reservation_id) and PyUnicode_GET_LENGTH(reservation_id) <= ID_INLINE_MAX:
            key_len = PyUnicode_GET_LENGTH(reservation_id)
            key_space = (key_len + 7) & ~7
        size = sizeof(ResHead) + key_space + n_lines * sizeof(LineRec) + n_allocs * sizeof(AllocRec)
        if seg < 0 or self._seg_used[seg] + size > self._seg_size[seg]:
            self._new_segment(size)
            seg = self._n_segs - 1
        off = self._seg_used[seg]
        handle = <uint32_t>((seg << SEG_SHIFT) | (off >> 3))
        if seq >= self._live_cap:
            self._live_exp = <double*>_grow(self._live_exp, &self._live_cap, seq + 1, sizeof(double))
            self._res_hash = <Py_hash_t*>_realloc(self._res_hash, self._live_cap * sizeof(Py_hash_t))
            self._res_handle = <uint32_t*>_realloc(self._res_handle, self._live_cap * sizeof(uint32_t))
        self._res_hash[seq] = h
        self._res_handle[seq] = handle
        head = <ResHead*>(self._segs[seg] + off)
        head.ttl_s = ttl_s
        head.created_at = created_at
        head.expires_at = expires_at
        Py_INCREF(reservation_id)
        head.id = <PyObject*>reservation_id
        Py_INCREF(channel)
        head.channel = <PyObject*>channel
        head.n_lines = <int32_t>n_lines
        head.n_allocs = <int32_t>n_allocs
        head.seq = <uint32_t>seq
        head.allow_partial = allow_partial
        head.key_len = <uint16_t>key_len
        head.key_space = <uint16_t>key_space
        head.ch = ch
        if key_space:
            memcpy(_id_bytes(head), PyUnicode_DATA(reservation_id), key_len)
        # Typed copies: a few records each, inlined (a memcpy call costs more).
        dst_lines = _lines_of(head)
        for i in range(n_lines):
            dst_lines[i] = lines[i]
        dst_allocs = _allocs_of(head)
        for i in range(n_allocs):
            dst_allocs[i] = allocs[i]
        self._seg_used[seg] = off + size
        self._res_index_insert(handle, h)
        self._n_res = seq + 1
        self._live_exp[seq] = expires_at if held else NAN
        return handle

    cdef void _set_live(self, ResHead* head) noexcept:
        """Record whether the expiry heap's entries for this reservation can still fire."""
        self._live_exp[head.seq] = head.expires_at if _any_held(head) else NAN

    cdef int _source(self, PlanLine* pl, int64_t quantity, int32_t* candidates,
                     Py_ssize_t count, int64_t* allocated, RuleRec* rules, int32_t ch, bint whole) except -1:
        """Deterministic sourcing, as the reference's ``_source``: the first
        candidate covering the whole line, else (unless ``whole``) greedy in
        candidate order.

        Holds are added to ``reserved`` as they are planned, which is what the
        reference's ``taken`` map subtracts for later lines of the same request;
        a refused request rolls them back (``_rollback_holds``). Free ATP is
        read for every candidate before any of this line's holds are added, as
        in the reference (define_channel refuses a node listed twice, so no
        node is counted twice).

        ``rules`` (NULL for a channel without rules) replaces a node's ATP by
        the channel's allowance where it has a rule; ``ch`` (-1 for an
        untracked channel) is the channel whose channel_used the holds add to,
        as they are planned, like ``reserved``.
        """
        cdef Py_ssize_t c, nfree = 0
        cdef int64_t r, atp, take, remaining
        cdef Row* row
        cdef AllocRec* a
        cdef Py_hash_t h = pl.hash
        cdef Py_ssize_t j
        cdef uint64_t k
        allocated[0] = 0
        for c in range(count):
            if c == 0 and pl.parsed and candidates[0] == pl.first:
                k = pl.hkey0
            else:
                k = fastledger_row_hkey(h, candidates[c])
            r = self._find_key(pl.sku, h, pl.key, candidates[c], k)
            if r >= 0:
                row = self._row(r)
                if rules != NULL and rules[candidates[c]].kind != RK_NONE:
                    atp = channel_allowance_c(row.on_hand, row.reserved, row.committed, row.safety,
                                              rules[candidates[c]].kind, rules[candidates[c]].value,
                                              self._use_get(r, ch))
                else:
                    atp = row.on_hand - row.reserved - row.committed - row.safety
                if atp > 0:
                    if atp >= quantity:
                        a = &self._plan_allocs[self._n_plan_allocs]
                        self._n_plan_allocs += 1
                        a.quantity = quantity
                        a.row = <int32_t>r
                        a.node = candidates[c]
                        row.reserved += quantity
                        if ch >= 0:
                            self._use_add(r, ch, quantity)
                        allocated[0] = quantity
                        return 0
                    self._free_row[nfree] = r
                    self._free_atp[nfree] = atp
                    self._free_node[nfree] = candidates[c]
                    nfree += 1
            if c == 0:
                # The first candidate (whose row was prefetched) usually covers
                # the line; when it does not, start loading every other
                # candidate's slot at once rather than one miss at a time.
                for j in range(1, count):
                    fastledger_prefetch(&self._row_slots[fastledger_row_hkey(h, candidates[j]) & self._row_mask])
        if whole:
            return 0  # no single node covers the line, and it may not split
        remaining = quantity
        for c in range(nfree):
            take = self._free_atp[c] if self._free_atp[c] < remaining else remaining
            a = &self._plan_allocs[self._n_plan_allocs]
            self._n_plan_allocs += 1
            a.quantity = take
            a.row = <int32_t>self._free_row[c]
            a.node = self._free_node[c]
            self._row(self._free_row[c]).reserved += take
            if ch >= 0:
                self._use_add(self._free_row[c], ch, take)
            remaining -= take
            allocated[0] += take
            if remaining == 0:
                break
        return 0

    cdef int _hold_backorder(self, PlanLine* pl, int64_t quantity, int32_t* candidates, Py_ssize_t count,
                             object units, int64_t* allocated, RuleRec* rules, int32_t ch) except -1:
        """A line allowed ``units`` of expected inbound supply at its one node
        (``candidates[0]``; ``count`` is 0 when its one candidate is not
        usable): held whole there or not at all, as the reference's
        ``_hold_backorder``. ``allocated`` gets the line's quantity when it is
        held, else what it could take as an ordinary line (``w``, what its
        shortfall reports).

        At an existing row, this request's earlier holds are on the row
        already (``reserved`` and channel_used), which is what the reference's
        ``t`` subtracts; the hold is added the same way. At a missing row (all
        zeros), ``t`` is what ``_bo_pending`` planned there, and so is the hold:
        the row is created only once the request has passed every check
        (``_create_pending_rows``), so a refused request leaves no row behind.
        ``units`` stays a Python int: the comparison with ``a + units`` is
        exact whatever the caller passed. A channel with a rule at the node
        (any kind) takes no backorders there: its line is held only if ``w``
        covers it, as an ordinary line.
        """
        cdef int64_t r, a, w, t = 0
        cdef int32_t node
        cdef Row* row
        cdef AllocRec* al
        cdef bint ruled
        allocated[0] = 0
        if count == 0:
            return 0
        node = candidates[0]
        ruled = rules != NULL and rules[node].kind != RK_NONE
        r = self._find_key(pl.sku, pl.hash, pl.key, node, fastledger_row_hkey(pl.hash, node))
        key = None
        if r >= 0:
            row = self._row(r)
            a = row.on_hand - row.reserved - row.committed - row.safety
            if ruled:
                w = channel_allowance_c(row.on_hand, row.reserved, row.committed, row.safety,
                                        rules[node].kind, rules[node].value, self._use_get(r, ch))
            else:
                w = a
        else:
            key = (<object>pl.sku, node)
            t = self._bo_pending.get(key, 0)
            a = -t - self._node_safety[node]  # the row will follow its node's default
            w = 0  # the allowance of a row with no ATP, under any rule or none
        if w < 0:
            w = 0
        if not (quantity <= w or (not ruled and quantity <= a + units)):
            allocated[0] = w
            return 0
        if r >= 0 and ch >= 0:
            # Before the hold is recorded: if this fails, nothing of it is on the row.
            self._use_add(r, ch, quantity)
        al = &self._plan_allocs[self._n_plan_allocs]
        self._n_plan_allocs += 1
        al.quantity = quantity
        al.row = <int32_t>r
        al.node = node
        if r >= 0:
            self._row(r).reserved += quantity
        else:
            self._bo_pending[key] = t + quantity
        allocated[0] = quantity
        return 0

    cdef int _create_pending_rows(self, Py_ssize_t n) except -1:
        """Put the backorder holds planned at missing rows on new rows, once the
        request has passed every check (its lines' SKUs are interned by then).
        Rows are created in line order, as the reference's writes create them.
        Each hold is recorded on its row only once all of its updates are in,
        so a failure part way leaves ``_rollback_holds`` exactly what to undo."""
        cdef Py_ssize_t li, k
        cdef int64_t r
        cdef LineRec* line
        cdef AllocRec* a
        for li in range(n):
            line = &self._plan_lines[li]
            for k in range(line.alloc_first, line.alloc_first + line.alloc_count):
                a = &self._plan_allocs[k]
                if a.row >= 0:
                    continue
                r = self._find(line.sku, a.node)
                if r < 0:
                    r = self._insert_row(line.sku, a.node)
                if self._plan_ch >= 0:
                    self._use_add(r, self._plan_ch, a.quantity)
                self._row(r).reserved += a.quantity
                a.row = <int32_t>r
        return 0

    cdef Py_ssize_t _candidate_nodes(self, object ranked, uint8_t* elig, Py_ssize_t n_elig) except -1:
        """One line's explicit candidates as node numbers in ``_cand_buf``, in
        their order, without nodes the channel does not sell from (``elig``)
        nor repeats, as the reference's ``usable_candidates``. Returns how many."""
        cdef Py_ssize_t n = 0, i, m = len(ranked)
        cdef Py_ssize_t n_nodes = self._node_t.n
        cdef int32_t nid
        if m > self._cand_cap:
            self._cand_buf = <int32_t*>_grow(self._cand_buf, &self._cand_cap, m, sizeof(int32_t))
        if n_nodes > self._cand_mark_cap:
            self._cand_mark = <uint8_t*>_realloc(self._cand_mark, n_nodes * sizeof(uint8_t))
            memset(self._cand_mark + self._cand_mark_cap, 0, n_nodes - self._cand_mark_cap)
            self._cand_mark_cap = n_nodes
        try:
            for node in ranked:
                if n >= m:
                    break  # a sequence that grew while being read: keep what fits
                if not PyUnicode_CheckExact(node):
                    continue  # never an eligible node's id
                nid = _st_lookup(&self._node_t, node)
                if nid < 0 or nid >= n_elig or not elig[nid] or self._cand_mark[nid]:
                    continue
                self._cand_mark[nid] = 1
                self._cand_buf[n] = nid
                n += 1
        finally:
            for i in range(n):
                self._cand_mark[self._cand_buf[i]] = 0
        if n > self._free_cap:
            self._grow_free(n)
        return n

    cdef int _rollback_holds(self) noexcept:
        cdef Py_ssize_t k
        cdef AllocRec* a
        for k in range(self._n_plan_allocs):
            a = &self._plan_allocs[k]
            if a.row < 0:
                continue  # a backorder hold planned at a missing row: it never reached a row
            self._row(a.row).reserved -= a.quantity
            if self._plan_ch >= 0:
                self._use_add(a.row, self._plan_ch, -a.quantity)  # the entry exists: cannot fail
        self._n_plan_allocs = 0
        return 0

    cdef void _prefetch_rows(self, Py_ssize_t n) noexcept:
        """Second stage of the prefetch ``_plan_request`` started: read the row
        slots (waiting for them if need be) and start loading the rows they
        point at."""
        cdef Py_ssize_t li, probe
        cdef PlanLine* pl
        cdef uint64_t k, i
        cdef uint32_t tag
        cdef Slot* slot
        for li in range(n if n < PREFETCH_LINES else PREFETCH_LINES):
            pl = &self._plan[li]
            if not pl.parsed or pl.first < 0:
                continue
            k = pl.hkey0
            i = k & self._row_mask
            tag = <uint32_t>(k >> 32)
            for probe in range(4):
                slot = &self._row_slots[i]
                if slot.ref == 0:
                    break
                if slot.tag == tag:
                    fastledger_prefetch(self._row(slot.ref - 1))
                    break
                i = (i + 1) & self._row_mask

    cdef Py_ssize_t _plan_request(self, object lines, Py_ssize_t ch) except -1:
        """First pass over a reserve request: what each line names, found without
        raising anything (errors come later, in the reference's order), and the
        row slot of each line's first candidate prefetched. Lines that are not a
        plain (str, int, str or None) tuple are left for the slow path. Returns
        the number of lines, or -1 when ``lines`` is not a list or tuple."""
        cdef Py_ssize_t n, li
        cdef PlanLine* pl
        cdef PyObject* item
        cdef int32_t first, nidx
        cdef uint64_t nk[2]
        if not (PyList_CheckExact(lines) or PyTuple_CheckExact(lines)):
            return -1
        n = PySequence_Fast_GET_SIZE(lines)
        if n > self._plan_cap:
            self._plan = <PlanLine*>_grow(self._plan, &self._plan_cap, n, sizeof(PlanLine))
        for li in range(n):
            pl = &self._plan[li]
            pl.parsed = 0
            item = PySequence_Fast_GET_ITEM(lines, li)
            if not (PyTuple_Check(<object>item) and PyTuple_GET_SIZE(<object>item) == 3):
                continue
            pl.sku = PyTuple_GET_ITEM(<object>item, 0)
            pl.qty = PyTuple_GET_ITEM(<object>item, 1)
            pl.node = PyTuple_GET_ITEM(<object>item, 2)
            if not (PyUnicode_CheckExact(<object>pl.sku) and PyLong_CheckExact(<object>pl.qty)):
                continue
            if pl.node == <PyObject*>None:
                pl.nidx = -1
                first = self._ch_nodes[ch][0] if self._ch_len[ch] else -1
            elif PyUnicode_CheckExact(<object>pl.node):
                fastledger_key16_ptr(pl.node, nk)
                nidx = _st_find(&self._node_t, pl.node, fastledger_hash_ptr(pl.node), nk)
                pl.nidx = nidx if nidx >= 0 and self._node_defined[nidx] else -2
                first = pl.nidx
            else:
                continue
            pl.hash = fastledger_hash_ptr(pl.sku)
            fastledger_key16_ptr(pl.sku, pl.key)
            pl.first = first
            if first >= 0:
                pl.hkey0 = fastledger_row_hkey(pl.hash, first)
                if li < PREFETCH_LINES:
                    fastledger_prefetch(&self._row_slots[pl.hkey0 & self._row_mask])
            pl.parsed = 1
        return n

    def reserve(self, reservation_id, channel, lines, double ttl_s, bint allow_partial, double now,
                candidates=None, bint whole_lines=False, context=None, backorder=None):
        """Hold stock for every line (all or nothing unless ``allow_partial``).

        ``candidates``, ``whole_lines``, ``context``: promise-driven sourcing,
        and ``backorder``: backorder holds, as the reference's ``reserve``
        documents them."""
        cdef Py_hash_t h = fastledger_hash(reservation_id)
        cdef uint64_t ck[2]
        cdef Py_ssize_t ch = -2, n = -1
        cdef int64_t handle
        cdef ResHead* head
        # The id's slot and each line's row slot are almost always cache misses
        # that do not depend on each other: start loading all of them now.
        # (Only side-effect-free work here: errors are raised in the
        # reference's order below.)
        fastledger_prefetch(&self._res_slots[fastledger_fmix(<uint64_t>h) & self._res_mask])
        if PyUnicode_CheckExact(channel):  # hashing a str cannot fail
            fastledger_key16(channel, ck)
            ch = _st_find(&self._ch_t, <PyObject*>channel, fastledger_hash(channel), ck)
            if ch >= 0:
                n = self._plan_request(lines, ch)
                # Waits for the row slots while the id's slot is still on its
                # way, so the rows start loading before the lookup, not after.
                self._prefetch_rows(n)
        if self._heap_n and self._heap[0].expires_at <= now:
            self._expire(now, False)
        handle = self._res_lookup(reservation_id, h)
        if handle >= 0:
            head = self._head(<uint32_t>handle)
            if not self._same_request(head, channel, lines, ttl_s, allow_partial) or (
                # Only reservations made with a context are in the dict: while it
                # is empty, a plain replay pays one test here.
                (context is not None or self._contexts) and self._contexts.get(reservation_id) != context
            ):
                raise _error(
                    IdempotencyMismatch,
                    f"reservation {reservation_id!r} exists with a different request",
                    None,
                    None,
                    None,
                )
            return _state(_aggregate(head))
        if ch == -2:
            ch = _st_lookup(&self._ch_t, channel)
            if ch >= 0:
                n = self._plan_request(lines, ch)
        if ch < 0:
            raise UnknownChannel(channel)
        if candidates is not None and len(candidates) != len(lines):
            raise InvalidArgument(
                "give one candidate list per line",
                (FieldViolation("candidates", f"{len(candidates)} candidate lists for {len(lines)} lines"),),
            )
        if backorder is None:
            error = self._reserve_new(
                reservation_id, h, channel, ch, lines, n, ttl_s, allow_partial, now, candidates, whole_lines
            )
        else:
            # Backorder allowances, checked by the reference's own check, reach
            # the planning through fields (see ledger.pxd); None when no line
            # may be backordered, which is then an ordinary reserve.
            self._bo_units = check_backorder(lines, candidates, backorder)
            self._bo_pending = {} if self._bo_units is not None else None
            try:
                error = self._reserve_new(
                    reservation_id, h, channel, ch, lines, n, ttl_s, allow_partial, now, candidates, whole_lines
                )
            finally:
                self._bo_units = None
                self._bo_pending = None
        if error is not None:
            raise error
        if context is not None:
            self._contexts[reservation_id] = context
        return _state(RS_HELD)

    cdef bint _same_request(self, ResHead* head, object channel, object lines, double ttl_s,
                            bint allow_partial) except -1:
        """Whether a replayed reserve carries the stored request (the reference's ``_same_request``)."""
        cdef LineRec* line
        cdef Py_ssize_t i
        if <object>head.channel != channel or head.ttl_s != ttl_s or head.allow_partial != allow_partial:
            return False
        if head.n_lines != len(lines):
            return False
        for i, (sku, quantity, node) in enumerate(lines):
            line = &_lines_of(head)[i]
            stored_node = None if line.node < 0 else self._node_name(line.node)
            if not (
                <object>self._sku_t.recs[line.sku].name == sku
                and line.quantity == quantity
                and stored_node == node
            ):
                return False
        return True

    cdef object _reserve_new(self, object reservation_id, Py_hash_t h, object channel, Py_ssize_t ch,
                             object lines, Py_ssize_t n, double ttl_s, bint allow_partial, double now,
                             object candidates, bint whole):
        """Plan, check and record a new reservation (``lines`` planned by
        ``_plan_request``, ``n`` its result). Returns None, or the domain error
        to raise: the caller raises it (see the module docstring).
        ``candidates`` (None, or one node tuple or None per line) and ``whole``:
        promise-driven sourcing (see ``reserve``). ``_bo_units``: None, or the
        backorder allowance of each line, checked (see ``_hold_backorder``)."""
        cdef Py_ssize_t li, k, ncand, n_short = 0
        cdef int32_t sku_idx, nid
        cdef int32_t* cand
        cdef int32_t* eligible = self._ch_nodes[ch]
        cdef Py_ssize_t n_eligible = self._ch_len[ch]
        cdef uint8_t* elig = self._ch_elig[ch]
        cdef Py_ssize_t n_elig = self._ch_elig_len[ch]
        cdef int64_t quantity, allocated
        cdef PlanLine* pl
        cdef LineRec* line
        cdef bint unknown_skus = False
        cdef uint32_t handle
        cdef list keep = None
        cdef RuleRec* rules = self._ch_rule[ch]
        cdef int32_t track_ch = <int32_t>ch if self._ch_tracked[ch] else -1

        self._plan_ch = track_ch
        if n < 0:
            lines = list(lines)
            n = self._plan_request(lines, ch)
        if n > self._plan_lines_cap:
            self._plan_lines = <LineRec*>_grow(self._plan_lines, &self._plan_lines_cap, n, sizeof(LineRec))
            self._short_alloc = <int64_t*>_realloc(self._short_alloc, self._plan_lines_cap * sizeof(int64_t))
        self._n_plan_allocs = 0
        try:
            for li in range(n):
                pl = &self._plan[li]
                if not pl.parsed:
                    # Anything but a plain tuple: unpacked the way the reference does,
                    # and kept alive here (the pointers below borrow them).
                    sku, qty, node = lines[li]
                    if keep is None:
                        keep = []
                    keep.append((sku, qty, node))
                    pl.sku = <PyObject*>sku
                    pl.qty = <PyObject*>qty
                    pl.node = <PyObject*>node
                    if node is None:
                        pl.nidx = -1
                    else:
                        nid = self._defined_node_of(node)
                        pl.nidx = nid if nid >= 0 else -2
                if pl.node != <PyObject*>None:
                    if pl.nidx < 0:
                        self._rollback_holds()
                        return UnknownNode(<object>pl.node, field=f"lines[{li}].node")
                    if not (pl.nidx < n_elig and elig[pl.nidx]):
                        self._rollback_holds()
                        return NodeNotEligible(<object>pl.node, channel, field=f"lines[{li}].node")
                    cand = &pl.nidx
                    ncand = 1
                elif candidates is None or candidates[li] is None:
                    cand = eligible
                    ncand = n_eligible
                else:
                    ncand = self._candidate_nodes(candidates[li], elig, n_elig)
                    cand = self._cand_buf
                if not pl.parsed:
                    pl.hash = fastledger_hash_ptr(pl.sku)
                    fastledger_key16_ptr(pl.sku, pl.key)
                quantity = <object>pl.qty
                if self._n_plan_allocs + ncand > self._plan_allocs_cap:
                    self._plan_allocs = <AllocRec*>_grow(
                        self._plan_allocs, &self._plan_allocs_cap, self._n_plan_allocs + ncand, sizeof(AllocRec)
                    )
                line = &self._plan_lines[li]
                line.alloc_first = <int32_t>self._n_plan_allocs
                if self._bo_units is None or not self._bo_units[li]:
                    self._source(pl, quantity, cand, ncand, &allocated, rules, track_ch, whole)
                    line.alloc_count = <int32_t>(self._n_plan_allocs - line.alloc_first)
                    if line.alloc_count > 0:
                        # Every allocation is a row of this SKU: it names the SKU's number.
                        sku_idx = self._row(self._plan_allocs[line.alloc_first].row).sku
                    else:
                        sku_idx = _st_find(&self._sku_t, pl.sku, pl.hash, pl.key)
                        if sku_idx < 0:
                            # Never stocked anywhere: interned only if the reservation is recorded.
                            unknown_skus = True
                else:
                    # A backorder line; ``allocated`` is what a shortfall reports.
                    self._hold_backorder(pl, quantity, cand, ncand, self._bo_units[li], &allocated, rules,
                                         track_ch)
                    line.alloc_count = <int32_t>(self._n_plan_allocs - line.alloc_first)
                    # Its hold may be planned at a row that does not exist yet (no row to ask).
                    sku_idx = _st_find(&self._sku_t, pl.sku, pl.hash, pl.key)
                    if sku_idx < 0:
                        unknown_skus = True
                line.quantity = quantity
                line.sku = sku_idx
                line.node = pl.nidx if pl.nidx >= 0 else -1
                line.state = RS_HELD if line.alloc_count > 0 else RS_RELEASED
                line.mark = 0
                if allocated < quantity:
                    self._short_alloc[li] = allocated
                    n_short += 1
                else:
                    self._short_alloc[li] = -1
            if n_short and (not allow_partial or self._n_plan_allocs == 0):
                shortfalls = []
                for li in range(n):
                    if self._short_alloc[li] >= 0:
                        pl = &self._plan[li]
                        shortfalls.append(_shortfall(li, <object>pl.sku, <object>pl.qty, self._short_alloc[li]))
                self._rollback_holds()
                return _out_of_stock(tuple(shortfalls))
            # Checks passed: the holds are already on the rows; record the reservation.
            if unknown_skus:
                for li in range(n):
                    if self._plan_lines[li].sku < 0:
                        self._plan_lines[li].sku = self._intern_sku(<object>self._plan[li].sku)
            if self._bo_pending:
                self._create_pending_rows(n)
            handle = self._append_record(
                reservation_id, h, channel, ttl_s, now, now + ttl_s, allow_partial,
                self._plan_lines, n, self._plan_allocs, self._n_plan_allocs,
                self._n_plan_allocs > 0,  # a line is HELD exactly when it got units
                <int32_t>ch,
            )
        except BaseException:
            self._rollback_holds()
            raise
        self._n_plan_allocs = 0
        self._heap_push(now + ttl_s, handle, self._head(handle).seq)
        return None

    def commit(self, reservation_id, double now):
        """Turn every held line into a committed order line."""
        cdef Py_hash_t h = fastledger_hash(reservation_id)
        cdef int64_t handle
        cdef ResHead* head
        cdef LineRec* line
        cdef AllocRec* allocs
        cdef AllocRec* a
        cdef Row* row
        cdef int32_t k, j
        cdef int state
        # Start loading the id's slot before the expiry work that precedes the lookup.
        fastledger_prefetch(&self._res_slots[fastledger_fmix(<uint64_t>h) & self._res_mask])
        if self._heap_n and self._heap[0].expires_at <= now:
            self._expire(now, False)
        handle = self._res_lookup(reservation_id, h)
        if handle < 0:
            raise _not_found(reservation_id)
        head = self._head(<uint32_t>handle)
        state = _aggregate(head)
        if state == RS_COMMITTED or state == RS_FULFILLED:
            return _state(state)  # already done: a replay
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
        self._live_exp[head.seq] = NAN  # nothing held is left to expire
        return _state(_aggregate(head))

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
        cdef Py_hash_t h = fastledger_hash(reservation_id)
        cdef int64_t handle
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
        fastledger_prefetch(&self._res_slots[fastledger_fmix(<uint64_t>h) & self._res_mask])
        if self._heap_n and self._heap[0].expires_at <= now:
            self._expire(now, False)
        handle = self._res_lookup(reservation_id, h)
        if handle < 0:
            raise _not_found(reservation_id)
        head = self._head(<uint32_t>handle)
        lines = _lines_of(head)
        allocs = _allocs_of(head)
        if not explicit:
            if _aggregate(head) == RS_FULFILLED:
                raise _error(
                    IllegalTransition, f"reservation {reservation_id!r} is fulfilled", "RESERVATION_FULFILLED",
                    None, None,
                )
        else:
            count = self._select(head, line_indexes)
            for k in range(count):
                if lines[self._idx_buf[k]].state == RS_FULFILLED:
                    raise _error(
                        IllegalTransition,
                        f"line {self._idx_buf[k]} of reservation {reservation_id!r} is fulfilled",
                        "LINE_FULFILLED",
                        None,
                        None,
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
                if head.ch >= 0 and self._ch_tracked[head.ch]:
                    self._untrack_lines(head, line)
                line.state = RS_RELEASED
        finally:
            if explicit:
                for k in range(head.n_lines):
                    lines[k].mark = 0
            self._set_live(head)
        return _state(_aggregate(head))

    cdef object _shipping_error(self, ResHead* head, bint explicit):
        """The error for shipping more of a row than is on hand (a recount left a
        shortage), or None.

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
                sku = <object>self._sku_t.recs[row.sku].name
                node = self._node_name(row.node)
                return _error(
                    StockRejected,
                    f"cannot ship {ship[s].quantity} of {sku}@{node}: only {row.on_hand} on hand",
                    "NEGATIVE_ON_HAND",
                    None,
                    None,
                )
        return None

    def fulfill(self, reservation_id, line_indexes, double now):
        """Ship committed lines: the units leave on_hand and committed."""
        cdef Py_hash_t h = fastledger_hash(reservation_id)
        cdef int64_t handle
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
        fastledger_prefetch(&self._res_slots[fastledger_fmix(<uint64_t>h) & self._res_mask])
        if self._heap_n and self._heap[0].expires_at <= now:
            self._expire(now, False)
        handle = self._res_lookup(reservation_id, h)
        if handle < 0:
            raise _not_found(reservation_id)
        head = self._head(<uint32_t>handle)
        lines = _lines_of(head)
        allocs = _allocs_of(head)
        if not explicit:
            state = _aggregate(head)
            if state == RS_FULFILLED:
                return _state(state)
            if state != RS_COMMITTED:
                raise _illegal(reservation_id, state, "committed")
        else:
            count = self._select(head, line_indexes)
            for k in range(count):
                state = lines[self._idx_buf[k]].state
                if state == RS_COMMITTED or state == RS_FULFILLED:
                    continue
                if state == RS_HELD:
                    raise _error(
                        IllegalTransition,
                        f"line {self._idx_buf[k]} of reservation {reservation_id!r} is not committed",
                        "NOT_COMMITTED",
                        None,
                        None,
                    )
                name = _STATE_NAMES[state]
                raise _error(
                    IllegalTransition,
                    f"line {self._idx_buf[k]} of reservation {reservation_id!r} is {name.lower()}",
                    f"LINE_{name}",
                    None,
                    None,
                )
            for k in range(count):
                lines[self._idx_buf[k]].mark = 1
        for j in range(head.n_allocs):
            if allocs[j].row >= 0:
                fastledger_prefetch(self._row(allocs[j].row))
        try:
            error = self._shipping_error(head, explicit)
            if error is not None:
                raise error
            for k in range(head.n_lines):
                line = &lines[k]
                if (explicit and not line.mark) or line.state != RS_COMMITTED:
                    continue
                for j in range(line.alloc_first, line.alloc_first + line.alloc_count):
                    a = &allocs[j]
                    row = self._row(a.row) if a.row >= 0 else self._alloc_row_ptr(a, line.sku)
                    row.committed -= a.quantity
                    row.on_hand -= a.quantity
                if head.ch >= 0 and self._ch_tracked[head.ch]:
                    self._untrack_lines(head, line)
                line.state = RS_FULFILLED
        finally:
            if explicit:
                for k in range(head.n_lines):
                    lines[k].mark = 0
        return _state(_aggregate(head))

    def extend(self, reservation_id, double ttl_s, double now):
        """Move a held reservation's expiry to ``now + ttl_s``; returns the new expiry."""
        cdef Py_hash_t h = fastledger_hash(reservation_id)
        cdef int64_t handle
        cdef ResHead* head
        cdef int state
        # Start loading the id's slot before the expiry work that precedes the lookup.
        fastledger_prefetch(&self._res_slots[fastledger_fmix(<uint64_t>h) & self._res_mask])
        if self._heap_n and self._heap[0].expires_at <= now:
            self._expire(now, False)
        handle = self._res_lookup(reservation_id, h)
        if handle < 0:
            raise _not_found(reservation_id)
        head = self._head(<uint32_t>handle)
        state = _aggregate(head)
        if state != RS_HELD:
            raise _illegal(reservation_id, state, "held")
        head.expires_at = now + ttl_s
        # The old entry goes stale; an extend onto an expiry already in the heap
        # leaves a twin entry, which the expiry skips once the first is taken.
        self._live_exp[head.seq] = head.expires_at
        self._heap_push(head.expires_at, <uint32_t>handle, head.seq)
        return head.expires_at

    # ----------------------------------------------------------------- expiry

    cdef int _grow_heap(self) except -1:
        """Double the heap's room. Entry i lives at 48 + 16 * i bytes past a
        64-byte boundary, so the four children 4i+1..4i+4 of any entry share one
        cache line: a 4-ary heap then touches half the lines of a binary one."""
        cdef Py_ssize_t cap = self._heap_cap * 2 if self._heap_cap else 64
        cdef size_t size = cap * sizeof(HeapEntry) + 128  # alignment slack: up to 63 + 48 bytes
        cdef char* block = <char*>PyMem_RawMalloc(size)
        cdef HeapEntry* heap
        if block == NULL:
            raise MemoryError()
        heap = <HeapEntry*>(((<size_t>block + 63) & ~(<size_t>63)) + 48)
        if self._heap_n:
            memcpy(heap, self._heap, self._heap_n * sizeof(HeapEntry))
        PyMem_RawFree(self._heap_block)
        self._heap_block = block
        self._heap = heap
        self._heap_cap = cap
        return 0

    cdef int _heap_push(self, double expires_at, uint32_t handle, uint32_t seq) except -1:
        cdef Py_ssize_t i, parent
        cdef HeapEntry* heap
        if self._heap_n >= self._heap_cap:
            self._grow_heap()
        heap = self._heap
        i = self._heap_n
        self._heap_n = i + 1
        while i > 0:
            parent = (i - 1) >> 2
            if heap[parent].expires_at <= expires_at:
                break
            heap[i] = heap[parent]
            i = parent
        heap[i].expires_at = expires_at
        heap[i].res = handle
        heap[i].seq = seq
        return 0

    cdef HeapEntry _heap_pop(self) noexcept nogil:
        cdef HeapEntry* heap = self._heap
        cdef HeapEntry top = heap[0]
        cdef Py_ssize_t n = self._heap_n - 1
        cdef HeapEntry last = heap[n]
        cdef Py_ssize_t i = 0, c, m, k, end
        self._heap_n = n
        if n == 0:
            return top
        while True:
            c = 4 * i + 1
            if c >= n:
                break
            end = c + 4 if c + 4 <= n else n
            m = c
            for k in range(c + 1, end):
                if heap[k].expires_at < heap[m].expires_at:
                    m = k
            if heap[m].expires_at >= last.expires_at:
                break
            heap[i] = heap[m]
            i = m
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
        cdef double* live = self._live_exp
        while self._heap_n and self._heap[0].expires_at <= now:
            e = self._heap_pop()
            if live[e.seq] != e.expires_at:
                # Stale (extended, committed, released or expired since, or the
                # twin an extend onto the same expiry left): decided without
                # loading the record, which is cold by now.
                continue
            live[e.seq] = NAN  # collected: a twin entry is stale from here on
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
                    run = sorted([
                        (<object>self._head(self._due[k].res).id, self._due[k].res, self._due[k].seq)
                        for k in range(i, j)
                    ])
                    for k in range(j - i):
                        self._due[i + k].res = run[k][1]
                        self._due[i + k].seq = run[k][2]
                i = j
        out = [] if want_ids else None
        for k in range(nd):
            head = self._head(self._due[k].res)
            allocs = _allocs_of(head)
            for m in range(head.n_lines):
                line = &_lines_of(head)[m]
                if line.state == RS_HELD:
                    for q in range(line.alloc_first, line.alloc_first + line.alloc_count):
                        a = &allocs[q]
                        row = self._row(a.row) if a.row >= 0 else self._alloc_row_ptr(a, line.sku)
                        row.reserved -= a.quantity
                    if head.ch >= 0 and self._ch_tracked[head.ch]:
                        self._untrack_lines(head, line)
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
        cdef int64_t handle = self._res_lookup(reservation_id, fastledger_hash(reservation_id))
        cdef ResHead* head
        cdef LineRec* line
        cdef AllocRec* allocs
        cdef int32_t k, j
        cdef PyObject* v[8]
        cdef object node, quantity, index, sku, requested, requested_node, allocations, line_state
        cdef object res_lines, state, allow_partial, ttl_s, created_at, expires_at
        if handle < 0:
            raise _not_found(reservation_id)
        head = self._head(<uint32_t>handle)
        allocs = _allocs_of(head)
        out_lines = []
        for k in range(head.n_lines):
            line = &_lines_of(head)[k]
            line_allocs = []
            for j in range(line.alloc_first, line.alloc_first + line.alloc_count):
                node = self._node_name(allocs[j].node)
                quantity = allocs[j].quantity
                v[0] = <PyObject*>node
                v[1] = <PyObject*>quantity
                line_allocs.append(_build(&_M_ALLOCATION, v))
            index = k
            sku = <object>self._sku_t.recs[line.sku].name
            requested = line.quantity
            requested_node = None if line.node < 0 else self._node_name(line.node)
            allocations = tuple(line_allocs)
            line_state = _state(line.state)
            v[0] = <PyObject*>index
            v[1] = <PyObject*>sku
            v[2] = <PyObject*>requested
            v[3] = <PyObject*>requested_node
            v[4] = <PyObject*>allocations
            v[5] = <PyObject*>line_state
            out_lines.append(_build(&_M_LINE, v))
        res_lines = tuple(out_lines)
        state = _state(_aggregate(head))
        allow_partial = True if head.allow_partial else False
        ttl_s = head.ttl_s
        created_at = head.created_at
        expires_at = head.expires_at
        v[0] = head.id
        v[1] = head.channel
        v[2] = <PyObject*>state
        v[3] = <PyObject*>res_lines
        v[4] = <PyObject*>allow_partial
        v[5] = <PyObject*>ttl_s
        v[6] = <PyObject*>created_at
        v[7] = <PyObject*>expires_at
        return _build(&_M_RESERVATION, v)

    def has_reservation(self, reservation_id):
        return self._res_lookup(reservation_id, fastledger_hash(reservation_id)) >= 0
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
        cdef RuleRec* rules = NULL
        cdef int32_t ch = -1
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
        if channel is not None:
            # A channel with rules sees, at each node with a rule, its allowance.
            ch = <int32_t>_st_lookup(&self._ch_t, channel)
            rules = self._ch_rule[ch]
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
                            breakdown.append(_node_availability(selected[k], 0, 0, 0, 0, 0))
                        continue
                    row = self._row(r)
                    if rules != NULL and rules[idxs[k]].kind != RK_NONE:
                        atp = channel_allowance_c(row.on_hand, row.reserved, row.committed, row.safety,
                                                  rules[idxs[k]].kind, rules[idxs[k]].value, self._use_get(r, ch))
                    else:
                        atp = row.on_hand - row.reserved - row.committed - row.safety
                        if atp < 0:
                            atp = 0
                    total += atp
                    if per_node:
                        breakdown.append(
                            _node_availability(selected[k], row.on_hand, row.reserved, row.committed, row.safety, atp)
                        )
                out.append(_sku_availability(sku, total, tuple(breakdown) if per_node else ()))
            return out
        finally:
            PyMem_RawFree(idxs)

    # ------------------------------------------------------------------ audit

    def audit(self, double now):
        """Check the invariants; returns one message per violation (empty = healthy)."""
        cdef int64_t* held = NULL
        cdef int64_t* committed = NULL
        cdef Py_ssize_t n_rows = self._n_rows
        cdef Py_ssize_t seq
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
            for seq in range(self._n_res):
                head = self._head(self._res_handle[seq])
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
                            key = (<object>self._sku_t.recs[line.sku].name, self._node_name(a.node))
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
                    bad.append((<object>self._sku_t.recs[row.sku].name, self._node_name(row.node), row.reserved,
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
            violations += self._audit_usage()
            return violations
        finally:
            PyMem_RawFree(held)
            PyMem_RawFree(committed)

    def _audit_usage(self):
        """channel_used of every tracked channel against its held and committed lines (the reference's)."""
        cdef Py_ssize_t seq
        cdef uint64_t i
        cdef int32_t k, j
        cdef int64_t r
        cdef ResHead* head
        cdef LineRec* line
        cdef AllocRec* a
        cdef Row* row
        cdef UseRec* e
        lines_hold = {}
        for seq in range(self._n_res):
            head = self._head(self._res_handle[seq])
            if head.ch < 0 or not self._ch_tracked[head.ch]:
                continue
            for k in range(head.n_lines):
                line = &_lines_of(head)[k]
                if line.state != RS_HELD and line.state != RS_COMMITTED:
                    continue
                for j in range(line.alloc_first, line.alloc_first + line.alloc_count):
                    a = &_allocs_of(head)[j]
                    r = a.row if a.row >= 0 else self._find(line.sku, a.node)
                    if r >= 0:
                        key = (r, head.ch)
                        lines_hold[key] = lines_hold.get(key, 0) + a.quantity
        stored = {}
        for i in range(self._use_mask + 1):
            e = &self._use[i]
            if e.row >= 0 and e.used != 0:
                stored[(e.row, e.ch)] = e.used
        named = {}
        for r, k in set(stored) | set(lines_hold):
            row = self._row(r)
            named[(<object>self._sku_t.recs[row.sku].name, self._node_name(row.node),
                   <object>self._ch_t.recs[k].name)] = (r, k)
        violations = []
        sums = {}
        for name in sorted(named):
            sku, node, channel = name
            used = stored.get(named[name], 0)
            held = lines_hold.get(named[name], 0)
            where = f"{sku}@{node}"
            if used < 0:
                violations.append(f"{where}: channel_used of {channel} is negative ({used})")
            if used != held:
                violations.append(f"{where}: channel_used of {channel} {used} != its held and committed lines {held}")
            sums[(sku, node)] = (named[name][0], sums.get((sku, node), (0, 0))[1] + used)
        for (sku, node), (r, total) in sorted(sums.items()):
            row = self._row(r)
            if total > row.reserved + row.committed:
                violations.append(
                    f"{sku}@{node}: channel_used sums to {total} > reserved + committed {row.reserved + row.committed}"
                )
        return violations

    def shortages(self):
        """Rows where on_hand no longer covers reserved + committed."""
        cdef int64_t r
        cdef Row* row
        keys = []
        for r in range(self._n_rows):
            row = self._row(r)
            if row.on_hand < row.reserved + row.committed:
                keys.append((<object>self._sku_t.recs[row.sku].name, self._node_name(row.node), r))
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
            keys.append((<object>self._sku_t.recs[row.sku].name, self._node_name(row.node), r))
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
        cdef Py_ssize_t seq
        cdef int32_t k, j
        cdef ResHead* head
        cdef LineRec* line
        cdef AllocRec* a
        rows = []
        for r in range(self._n_rows):
            row = self._row(r)
            rows.append([<object>self._sku_t.recs[row.sku].name, self._node_name(row.node), row.on_hand,
                         row.reserved, row.committed,
                         row.safety if self._is_own(r) else FOLLOW_NODE_DEFAULT, row.version])
        reservations = []
        for seq in range(self._n_res):
            head = self._head(self._res_handle[seq])
            out_lines = []
            for k in range(head.n_lines):
                line = &_lines_of(head)[k]
                allocs = []
                for j in range(line.alloc_first, line.alloc_first + line.alloc_count):
                    a = &_allocs_of(head)[j]
                    allocs.append([self._node_name(a.node), a.quantity])
                out_lines.append([
                    <object>self._sku_t.recs[line.sku].name,
                    line.quantity,
                    None if line.node < 0 else self._node_name(line.node),
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
            "node_safety": {n: self.node_safety_stock(n) for n in self._nodes if self.node_safety_stock(n)},
            "rows": rows,
            "reservations": reservations,
            "events": {e: list(fp) for e, fp in self._events.items()},
            "contexts": dict(self._contexts),
            # channel_used is not stored: it is derived from the reservations on load.
            "channel_rules": {
                c: [[n, kind, value] for n, (kind, value) in rules.items()] for c, rules in self._rules.items()
            },
            "track_usage": sorted(c for c in self._tracked if c not in self._rules),
        }

    def load_state(self, state):
        """Replace this ledger's contents with an exported image."""
        cdef int32_t s, nd
        cdef int64_t r
        cdef Row* row
        cdef Py_ssize_t k, n_allocs
        cdef LineRec* line
        cdef AllocRec* a
        cdef uint32_t handle
        image_format = state.get("format")
        if image_format not in (1, STATE_FORMAT):
            raise ValueError(f"unsupported ledger state format {image_format!r}")
        self._free_storage()
        self._init_storage()
        node_safety = state.get("node_safety", {})
        for node in state["nodes"]:
            self.define_node(node, node_safety.get(node, 0))
        channel_rules = state.get("channel_rules", {})
        track_usage = set(state.get("track_usage", ()))
        for channel, nodes in state["channels"].items():
            self.define_channel(
                channel, nodes, resolved_rule_list(nodes, channel_rules.get(channel)), channel in track_usage
            )
        for sku, node, *values in state["rows"]:
            values = [int(v) for v in values]
            s = self._intern_sku(sku)
            nd = self._intern_node(node)
            r = self._find(s, nd)
            if r < 0:
                r = self._insert_row(s, nd)
            row = self._row(r)
            row.on_hand, row.reserved, row.committed, row.safety, row.version = values
            # (see the reference: a format-1 image's 0 predates node defaults)
            if row.safety == FOLLOW_NODE_DEFAULT or (image_format == 1 and row.safety == 0):
                row.safety = self._node_safety[nd]
                self._set_own(r, False)
            else:
                self._set_own(r, True)
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
                self._short_alloc = <int64_t*>_realloc(self._short_alloc, self._plan_lines_cap * sizeof(int64_t))
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
                rid, fastledger_hash(rid), channel, ttl_s, created_at, expires_at, allow_partial,
                self._plan_lines, len(spec), self._plan_allocs, n_allocs,
                any(line_spec[4] == RS_HELD for line_spec in spec),
                <int32_t>_st_lookup(&self._ch_t, channel) if isinstance(channel, str) else -1,
            )
        for expires_at, rid in heap_entries:
            handle = <uint32_t>self._res_lookup(rid, fastledger_hash(rid))
            self._heap_push(expires_at, handle, self._head(handle).seq)
        self._events = {e: tuple(fp) for e, fp in state["events"].items()}
        contexts = state.get("contexts", {})  # absent in images written before promise-driven sourcing
        self._contexts = {rid: contexts[rid] for rid in records if contexts.get(rid) is not None}
        for channel in sorted(self._tracked):
            self._recount_channel(<int32_t>_st_lookup(&self._ch_t, channel))


cdef object _node_availability(object node, int64_t on_hand, int64_t reserved, int64_t committed, int64_t safety,
                               int64_t atp):
    cdef PyObject* v[6]
    cdef object on_hand_obj, reserved_obj, committed_obj, safety_obj, atp_obj
    on_hand_obj = on_hand
    reserved_obj = reserved
    committed_obj = committed
    safety_obj = safety
    atp_obj = atp
    v[0] = <PyObject*>node
    v[1] = <PyObject*>on_hand_obj
    v[2] = <PyObject*>reserved_obj
    v[3] = <PyObject*>committed_obj
    v[4] = <PyObject*>safety_obj
    v[5] = <PyObject*>atp_obj
    return _build(&_M_NODE_AV, v)


cdef object _sku_availability(object sku, int64_t atp, tuple nodes):
    cdef PyObject* v[3]
    cdef object atp_obj
    atp_obj = atp
    v[0] = <PyObject*>sku
    v[1] = <PyObject*>atp_obj
    v[2] = <PyObject*>nodes
    return _build(&_M_SKU_AV, v)
