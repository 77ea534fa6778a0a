# Declarations of the Cython ledger: its C records and the fields of FastLedger.
#
# The hot paths are bound by two things: memory latency (1M rows and every
# reservation ever made do not fit in any cache) and, once that is hidden by
# prefetching, plain instruction count. So:
#   - a reservation is one contiguous record [ResHead | id | LineRec... | AllocRec...]
#     starting on a cache line in append-only segments (never moved, so growth
#     copies nothing), found through an open-addressing table whose slots carry
#     a hash tag (no dict, no boxed index, no stray records touched);
#   - SKU, node and channel ids are interned through the same kind of table
#     (StrTable), with short ASCII ids copied into the record as 16 bytes, so a
#     lookup by the caller's string compares two words instead of calling into
#     the interpreter (a str dict lookup costs ~120 instructions);
#   - (SKU, node) counters are one-cache-line rows in fixed-size pages, found
#     through a tagged open-addressing table keyed by (the SKU's str hash,
#     node), so a reservation goes from the caller's SKU string to its row in
#     two dependent memory accesses (slot, row), both prefetched while the
#     reservation id's own slot is being loaded;
#   - the expiry heap is 4-ary with each group of siblings on one cache line,
#     and decides whether an entry is stale from a dense array of live expiries
#     (8 bytes a reservation, mostly cache-resident) instead of loading the
#     reservation's record, which is cold by the time it expires.
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
    SC_SAFETY_DEFAULT = 4


# One slot of an open-addressing table: ``ref`` is the stored index + 1 (0 =
# empty); ``tag`` is the high half of the key's hash, compared before the
# record is touched.
ctypedef struct Slot:
    uint32_t tag
    uint32_t ref


# An interned id. ``key_len``/``key`` hold a compact ASCII id of up to 15
# characters, zero padded (key_len INLINE_NONE otherwise): with the length byte
# they are 16 bytes, compared as two 64-bit words. ``name`` is an owned reference.
ctypedef struct StrRec:
    Py_hash_t hash
    PyObject* name
    uint8_t key_len
    char key[15]


# Interned ids in first-seen order (the index is the id's number), and the
# hash index over them.
ctypedef struct StrTable:
    StrRec* recs
    Py_ssize_t n
    Py_ssize_t cap
    Slot* slots
    uint64_t mask


# One (SKU, node) counter row: one 64-byte cache line, stored line-aligned (at
# 48 bytes half the rows would straddle two lines). The rest of the line holds a
# copy of the SKU's 16-byte inline id (see StrRec), so finding a row by the
# caller's SKU string needs no other memory than the slot and the row itself.
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


# Head of a reservation record (64 bytes). The id's characters (when it is a
# compact ASCII str of up to ID_INLINE_MAX), padded to 8 bytes, then the lines
# and the allocations follow it in its segment, so a lookup by id compares bytes
# on the cache lines it loads anyway instead of a cold string object.
# ``id`` and ``channel`` are owned references. ``seq`` numbers records in
# arena order: it indexes the ledger's array of live expiries.
ctypedef struct ResHead:
    double ttl_s
    double created_at
    double expires_at
    PyObject* id
    PyObject* channel
    int32_t n_lines
    int32_t n_allocs
    uint32_t seq
    uint8_t allow_partial
    uint16_t key_len      # inline id length, or ID_NOT_INLINE
    uint16_t key_space    # bytes between the head and the lines
    int32_t ch            # the channel's number (-1: a loaded image's undefined channel); fills the 64 bytes


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
    int32_t row           # -1 only for a loaded image naming a row that does not exist, or (while a
                          # reserve is planned) a backorder hold at a row not created yet
    int32_t node


# Expiry heap entry. Stale entries (after extend/commit/release/expiry) are
# skipped lazily, like the reference's heapq of (expires_at, id); an entry is
# live exactly when ``_live_exp[seq] == expires_at``.
ctypedef struct HeapEntry:
    double expires_at
    uint32_t res          # record handle (segment << SEG_SHIFT | offset / 8)
    uint32_t seq


# One line of a reserve request as the hot path reads it, filled by a first
# pass over the request (borrowed references: the caller's list holds them).
ctypedef struct PlanLine:
    PyObject* sku
    PyObject* qty
    PyObject* node
    Py_hash_t hash
    uint64_t key[2]       # the SKU's 16-byte inline id (see StrRec), or key_len INLINE_NONE
    int32_t nidx          # the node's number, -1 for None, -2 for an unknown node
    int32_t first         # the first candidate node, -1 if none is known
    uint64_t hkey0        # the row-index hash of (this SKU, first)
    uint8_t parsed        # 0: not a plain (str, int, str|None) tuple; unpacked the slow way


# A channel's allocation rule at one node (engine/_fast/allocation.pxd codes).
ctypedef struct RuleRec:
    int64_t value
    int32_t kind          # RK_NONE where the channel has no rule at the node
    int32_t pad


# One channel_used counter: units of channel ``ch`` held or committed at row
# ``row`` (-1: an empty slot). Kept in an open-addressing table apart from the
# rows, and only for tracked channels (those with rules), so a ledger without
# rules keeps no such entry and its Row stays one cache line.
ctypedef struct UseRec:
    int32_t row
    int32_t ch
    int64_t used


# A supply batch stages its rows here before writing anything.
ctypedef struct StageRec:
    int64_t values[5]     # on_hand, reserved, committed, safety, version
    int64_t row           # existing row, or -1 for a row the batch may create
    int32_t sku
    int32_t node
    uint8_t applied


@cython.final
cdef class FastLedger:
    # --- network. Nodes and channels are interned like SKUs for the hot path;
    # the dicts keep the reference's order and answer the cold queries.
    cdef dict _nodes              # defined node id -> None, in definition order (like the reference)
    cdef StrTable _node_t         # every node id seen (defined or named by a loaded image)
    cdef uint8_t* _node_defined
    cdef int64_t* _node_safety    # per node number: its default safety stock (0: none)
    cdef Py_ssize_t _node_cap
    cdef dict _channels           # channel id -> tuple of node ids (priority order)
    cdef StrTable _ch_t           # channel ids; the index selects _ch_nodes/_ch_len/_ch_elig
    cdef int32_t** _ch_nodes
    cdef Py_ssize_t* _ch_len
    cdef uint8_t** _ch_elig       # per channel: node number -> 1 if eligible
    cdef Py_ssize_t* _ch_elig_len
    cdef Py_ssize_t _ch_cap
    cdef RuleRec** _ch_rule       # per channel: node number -> its rule; NULL for a channel without rules
    cdef uint8_t* _ch_tracked     # per channel: 1 if its channel_used is kept
    cdef dict _rules              # channel id -> {node id: (kind, value)}, as the reference keeps them
    cdef set _tracked             # ids of the tracked channels

    # --- channel_used of tracked channels (see UseRec)
    cdef UseRec* _use
    cdef uint64_t _use_mask
    cdef Py_ssize_t _use_n
    cdef int32_t _plan_ch         # the tracked channel of the reserve being planned, else -1

    # --- a reserve with backorder allowances, while it is planned (both None
    # otherwise). Fields, not arguments: a reserve without allowances then pays
    # no reference counting for them, only a test per line.
    cdef tuple _bo_units          # each line's allowance, as check_backorder returns them
    cdef dict _bo_pending         # (SKU, node number) -> units held there by backorder holds
                                  # planned at rows that do not exist yet

    # --- safety stock: Row.safety is always the effective value (so no ATP
    # reader changes); 1 here for a row with a value of its own, the others
    # follow _node_safety and are rewritten when it changes. Grown only when a
    # row gets its own value, so rows past _own_cap follow their default.
    cdef uint8_t* _own_safety
    cdef Py_ssize_t _own_cap

    # --- SKU interning
    cdef StrTable _sku_t

    # --- rows
    cdef Row** _pages             # line-aligned pages of PAGE_ROWS rows
    cdef void** _page_blocks      # the blocks they were carved from (to free)
    cdef Py_ssize_t _n_pages
    cdef Py_ssize_t _pages_cap
    cdef Py_ssize_t _n_rows
    cdef Slot* _row_slots
    cdef uint64_t _row_mask

    # --- reservations: records in segments that are never moved or copied
    # (growing one big block by realloc copied it, and zeroed fresh pages for
    # the copy, every time it doubled)
    cdef char** _segs
    cdef Py_ssize_t* _seg_used
    cdef Py_ssize_t* _seg_size
    cdef Py_ssize_t _n_segs
    cdef Py_ssize_t _segs_cap
    cdef Py_ssize_t _n_res
    cdef Slot* _res_slots
    cdef uint64_t _res_mask
    cdef HeapEntry* _heap          # 4-ary, each group of 4 siblings on one cache line
    cdef void* _heap_block
    cdef Py_ssize_t _heap_n
    cdef Py_ssize_t _heap_cap
    cdef uint64_t _res_hint       # the empty slot where the last failed lookup ended...
    cdef Py_hash_t _res_hint_hash # ...for this hash...
    cdef uint64_t _res_hint_mask  # ...in a table of this size
    # By record seq: the expiry of a reservation with a held line, else NaN;
    # the id's hash and the record's handle (so growing the id table reads
    # these dense arrays, not every record and id object).
    cdef double* _live_exp
    cdef Py_hash_t* _res_hash
    cdef uint32_t* _res_handle
    cdef Py_ssize_t _live_cap

    # --- supply idempotency: event id -> fingerprint tuple (cold path, Python is fine)
    cdef dict _events
    # --- reservation id -> fulfillment context, only for reservations made with
    # one (promise-driven sourcing): a dict beside the records keeps ResHead at
    # 64 bytes and costs a plain reserve nothing while it is empty.
    cdef dict _contexts

    # --- scratch buffers reused across calls
    cdef PlanLine* _plan
    cdef Py_ssize_t _plan_cap
    cdef LineRec* _plan_lines
    cdef Py_ssize_t _plan_lines_cap
    cdef AllocRec* _plan_allocs
    cdef Py_ssize_t _plan_allocs_cap
    cdef Py_ssize_t _n_plan_allocs
    cdef int64_t* _short_alloc    # per line: units allocated (for the shortfalls)
    cdef int64_t* _free_row
    cdef int64_t* _free_atp
    cdef int32_t* _free_node
    cdef Py_ssize_t _free_cap
    cdef HeapEntry* _due
    cdef Py_ssize_t _due_cap
    cdef Py_ssize_t* _idx_buf
    cdef Py_ssize_t _idx_cap
    cdef int32_t* _cand_buf       # one line's explicit candidates, filtered (see _candidate_nodes)
    cdef Py_ssize_t _cand_cap
    cdef uint8_t* _cand_mark      # node number -> 1 while listed in _cand_buf (all 0 between calls)
    cdef Py_ssize_t _cand_mark_cap

    # --- lifecycle
    cdef int _init_storage(self) except -1
    cdef void _free_storage(self) noexcept

    # --- interning
    cdef int32_t _sku_of(self, object sku) except -2
    cdef int32_t _intern_sku(self, object sku) except -2
    cdef int32_t _intern_node(self, object node) except -2
    cdef int32_t _defined_node_of(self, object node) except -2
    cdef int32_t _node_of(self, object node) except -2
    cdef object _node_name(self, int32_t node)

    # --- rows
    cdef Row* _row(self, int64_t r) noexcept nogil
    cdef int64_t _find(self, int32_t sku, int32_t node) noexcept nogil
    cdef int64_t _row_of(self, object sku, object node) except -2
    cdef int64_t _find_key(self, PyObject* sku, Py_hash_t h, const uint64_t* key, int32_t node,
                           uint64_t k) except -2
    cdef int64_t _insert_row(self, int32_t sku, int32_t node) except -1
    cdef int _rehash_rows(self, uint64_t slot_count) except -1
    cdef Row* _alloc_row_ptr(self, AllocRec* a, int32_t sku) except NULL
    cdef object _level(self, object sku, object node, int64_t r)
    cdef bint _is_own(self, int64_t r) noexcept nogil
    cdef int _set_own(self, int64_t r, bint own) except -1
    cdef int _grow_free(self, Py_ssize_t n) except -1

    # --- channel_used
    cdef int64_t _use_get(self, int64_t row, int32_t ch) noexcept nogil
    cdef int _use_add(self, int64_t row, int32_t ch, int64_t delta) except -1
    cdef int _use_rebuild(self, uint64_t slot_count, int32_t drop_ch) except -1
    cdef int _recount_channel(self, int32_t ch) except -1
    cdef int _untrack_lines(self, ResHead* head, LineRec* line) except -1

    # --- reservations
    cdef ResHead* _head(self, uint32_t handle) noexcept nogil
    cdef int _new_segment(self, Py_ssize_t need) except -1
    cdef int64_t _res_lookup(self, object reservation_id, Py_hash_t h) except -2
    cdef int _res_index_insert(self, uint32_t handle, Py_hash_t h) except -1
    cdef int _rehash_res(self, uint64_t slot_count) except -1
    cdef uint32_t _append_record(self, object reservation_id, Py_hash_t h, object channel, double ttl_s,
                                 double created_at, double expires_at, bint allow_partial,
                                 LineRec* lines, Py_ssize_t n_lines, AllocRec* allocs,
                                 Py_ssize_t n_allocs, bint held, int32_t ch) except? 0xFFFFFFFF
    cdef int _source(self, PlanLine* pl, int64_t quantity, int32_t* candidates,
                     Py_ssize_t count, int64_t* allocated, RuleRec* rules, int32_t ch, bint whole) except -1
    cdef int _hold_backorder(self, PlanLine* pl, int64_t quantity, int32_t* candidates, Py_ssize_t count,
                             object units, int64_t* allocated, RuleRec* rules, int32_t ch) except -1
    cdef int _create_pending_rows(self, Py_ssize_t n) except -1
    cdef Py_ssize_t _candidate_nodes(self, object ranked, uint8_t* elig, Py_ssize_t n_elig) except -1
    cdef int _rollback_holds(self) noexcept
    cdef void _prefetch_rows(self, Py_ssize_t n) noexcept
    cdef Py_ssize_t _plan_request(self, object lines, Py_ssize_t ch) except -1
    cdef object _reserve_new(self, object reservation_id, Py_hash_t h, object channel, Py_ssize_t ch,
                             object lines, Py_ssize_t n, double ttl_s, bint allow_partial, double now,
                             object candidates, bint whole)
    cdef bint _same_request(self, ResHead* head, object channel, object lines, double ttl_s,
                            bint allow_partial) except -1
    cdef Py_ssize_t _select(self, ResHead* head, object line_indexes) except -1
    cdef object _shipping_error(self, ResHead* head, bint explicit)
    cdef void _set_live(self, ResHead* head) noexcept
    cdef int _grow_heap(self) except -1
    cdef int _heap_push(self, double expires_at, uint32_t handle, uint32_t seq) except -1
    cdef HeapEntry _heap_pop(self) noexcept nogil
    cdef object _expire(self, double now, bint want_ids)
    cdef object _supply(self, object ops, double now)
