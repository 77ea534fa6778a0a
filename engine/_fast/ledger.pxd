# Declarations of the Cython ledger: its C records and the fields of FastLedger.
#
# The hot paths are bound by memory latency (1M rows and every reservation ever
# made do not fit in any cache), so the layout is chosen to touch as few cache
# lines per operation as possible:
#   - a reservation is one contiguous record [ResHead | LineRec... | AllocRec...]
#     in an append-only arena, found through an open-addressing table whose
#     slots carry a hash tag (no dict, no boxed index, no stray records touched);
#   - SKU ids are interned through the same kind of table, with short ASCII ids
#     copied into the record so a lookup needs no string object;
#   - (SKU, node) counters are one-cache-line rows in fixed-size pages, found
#     through a tagged open-addressing table keyed by (the SKU's str hash,
#     node), so a reservation goes from the caller's SKU string to its row in
#     two dependent memory accesses (slot, row), the first one prefetched.
# Everything is allocated with PyMem_Raw* so tracemalloc sees it (bench core
# reports bytes per row from that). Python objects appear at the edges only:
# ids a caller passes in, and results built on the way out.

cimport cython
from cpython.ref cimport PyObject
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t


# Same numbering as engine.core.types.ReservationState (an IntEnum), so a state
# read from a C record indexes the tuple of enum members directly.
cdef enum ResState:
    RS_HELD = 1
    RS_COMMITTED = 2
    RS_FULFILLED = 3
    RS_RELEASED = 4
    RS_EXPIRED = 5


# Same numbering as engine.core.types.SupplyKind.
cdef enum SupplyCode:
    SC_INVALID = 0
    SC_ADJUST = 1
    SC_SET = 2
    SC_SAFETY = 3


# One slot of an open-addressing table: ``ref`` is the stored index + 1 (0 =
# empty); ``tag`` is the high half of the key's hash, compared before the
# record is touched.
ctypedef struct Slot:
    uint32_t tag
    uint32_t ref


# One (SKU, node) counter row: one 64-byte cache line, stored line-aligned (at
# 48 bytes half the rows would straddle two lines). The rest of the line holds a
# copy of the SKU's inline id (see SkuRec), so finding a row by the caller's SKU
# string needs no other memory than the slot and the row itself.
ctypedef struct Row:
    int64_t on_hand
    int64_t reserved
    int64_t committed
    int64_t safety
    int64_t version
    int32_t sku
    int32_t node
    uint8_t key_len
    char key[15]


# An interned SKU id. ``key``/``key_len`` hold a copy of a compact ASCII id of up
# to 15 characters (INLINE_NONE otherwise): equality without touching ``name``.
ctypedef struct SkuRec:
    Py_hash_t hash
    PyObject* name        # owned reference
    uint8_t key_len
    char key[15]


# Head of a reservation record (64 bytes). The id's characters (when it is a
# compact ASCII str of up to ID_INLINE_MAX), padded to 8 bytes, then the lines
# and the allocations follow it in the arena, so a lookup by id compares bytes
# on the cache lines it loads anyway instead of a cold string object.
# ``id`` and ``channel`` are owned references.
ctypedef struct ResHead:
    double ttl_s
    double created_at
    double expires_at
    PyObject* id
    PyObject* channel
    Py_hash_t hash
    int32_t n_lines
    int32_t n_allocs
    uint8_t allow_partial
    uint8_t due           # transient: already collected by the expiry in progress
    uint16_t key_len      # inline id length, or ID_NOT_INLINE
    uint16_t key_space    # bytes between the head and the lines


ctypedef struct LineRec:
    int64_t quantity
    int32_t sku
    int32_t node          # requested node, -1 for None
    int32_t alloc_first   # index into the record's allocations
    int32_t alloc_count
    uint8_t state
    uint8_t mark          # transient: selected by explicit line indexes


ctypedef struct AllocRec:
    int64_t quantity
    int32_t row           # -1 only for a loaded image naming a row that does not exist
    int32_t node


# Expiry heap entry; stale entries (after extend/commit/release) are skipped
# lazily, exactly like the reference's heapq of (expires_at, id).
ctypedef struct HeapEntry:
    double expires_at
    uint32_t res          # record handle (arena offset / 8)


# A supply batch stages its rows here before writing anything.
ctypedef struct StageRec:
    int64_t values[5]     # on_hand, reserved, committed, safety, version
    int64_t row           # existing row, or -1 for a row the batch may create
    int32_t sku
    int32_t node
    uint8_t applied


@cython.final
cdef class FastLedger:
    # --- network: small, so plain dicts (their int values are cached small ints)
    cdef dict _nodes              # defined node id -> None, in definition order (like the reference)
    cdef dict _node_index         # every node id seen (defined or named by a loaded image) -> index
    cdef list _node_names
    cdef uint8_t* _node_defined
    cdef Py_ssize_t _node_cap
    cdef dict _channels           # channel id -> tuple of node ids (priority order)
    cdef dict _channel_index      # channel id -> index into _ch_nodes/_ch_len
    cdef int32_t** _ch_nodes
    cdef Py_ssize_t* _ch_len
    cdef Py_ssize_t _ch_count
    cdef Py_ssize_t _ch_cap

    # --- SKU interning
    cdef SkuRec* _skus
    cdef Py_ssize_t _n_skus
    cdef Py_ssize_t _skus_cap
    cdef Slot* _sku_slots
    cdef uint64_t _sku_mask

    # --- rows
    cdef Row** _pages             # line-aligned pages of PAGE_ROWS rows
    cdef void** _page_blocks      # the blocks they were carved from (to free)
    cdef Py_ssize_t _n_pages
    cdef Py_ssize_t _pages_cap
    cdef Py_ssize_t _n_rows
    cdef Slot* _row_slots
    cdef uint64_t _row_mask

    # --- reservations
    cdef char* _arena
    cdef Py_ssize_t _arena_len
    cdef Py_ssize_t _arena_cap
    cdef Py_ssize_t _n_res
    cdef Slot* _res_slots
    cdef uint64_t _res_mask
    cdef HeapEntry* _heap
    cdef Py_ssize_t _heap_n
    cdef Py_ssize_t _heap_cap

    # --- supply idempotency: event id -> fingerprint tuple (cold path, Python is fine)
    cdef dict _events

    # --- scratch buffers reused across calls
    cdef LineRec* _plan_lines
    cdef Py_ssize_t _plan_lines_cap
    cdef AllocRec* _plan_allocs
    cdef Py_ssize_t _plan_allocs_cap
    cdef Py_ssize_t _n_plan_allocs
    cdef int64_t* _free_row
    cdef int64_t* _free_atp
    cdef int32_t* _free_node
    cdef Py_ssize_t _free_cap
    cdef HeapEntry* _due
    cdef Py_ssize_t _due_cap
    cdef Py_ssize_t* _idx_buf
    cdef Py_ssize_t _idx_cap

    # --- lifecycle
    cdef int _init_storage(self) except -1
    cdef void _free_storage(self) noexcept

    # --- interning
    cdef int32_t _sku_of(self, object sku) except -2
    cdef int32_t _intern_sku(self, object sku) except -2
    cdef int _rehash_skus(self, uint64_t slot_count) except -1
    cdef int32_t _intern_node(self, object node) except -2
    cdef int32_t _defined_node_of(self, object node) except -2
    cdef int32_t _node_of(self, object node) except -2

    # --- rows
    cdef Row* _row(self, int64_t r) noexcept nogil
    cdef int64_t _find(self, int32_t sku, int32_t node) noexcept nogil
    cdef int64_t _find_obj(self, object sku, Py_hash_t h, int32_t node) except -2
    cdef int64_t _insert_row(self, int32_t sku, int32_t node) except -1
    cdef int _rehash_rows(self, uint64_t slot_count) except -1
    cdef Row* _alloc_row_ptr(self, AllocRec* a, int32_t sku) except NULL
    cdef object _level(self, object sku, object node, int64_t r)
    cdef int _grow_free(self, Py_ssize_t n) except -1

    # --- reservations
    cdef ResHead* _head(self, uint32_t handle) noexcept nogil
    cdef int64_t _res_lookup(self, object reservation_id, Py_hash_t h) except -2
    cdef int64_t _res_of(self, object reservation_id) except -2
    cdef int _res_index_insert(self, uint32_t handle, Py_hash_t h) except -1
    cdef int _rehash_res(self, uint64_t slot_count) except -1
    cdef uint32_t _append_record(self, object reservation_id, Py_hash_t h, object channel, double ttl_s,
                                 double created_at, double expires_at, bint allow_partial,
                                 LineRec* lines, Py_ssize_t n_lines, AllocRec* allocs,
                                 Py_ssize_t n_allocs) except? 0xFFFFFFFF
    cdef int _source(self, object sku, Py_hash_t h, int64_t quantity, int32_t* candidates,
                     Py_ssize_t count, int64_t* allocated) except -1
    cdef int _rollback_holds(self) except -1
    cdef object _reserve_new(self, object reservation_id, Py_hash_t h, object channel, Py_ssize_t ch,
                             object lines, double ttl_s, bint allow_partial, double now)
    cdef object _replay(self, uint32_t handle, object reservation_id, object channel, object lines,
                        double ttl_s, bint allow_partial)
    cdef Py_ssize_t _select(self, ResHead* head, object line_indexes) except -1
    cdef int _check_shipping(self, ResHead* head, bint explicit) except -1
    cdef int _heap_push(self, double expires_at, uint32_t handle) except -1
    cdef HeapEntry _heap_pop(self) noexcept nogil
    cdef object _expire(self, double now, bint want_ids)
    cdef object _supply(self, object ops, double now)
