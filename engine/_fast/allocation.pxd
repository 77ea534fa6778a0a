# Channel allocation rules in C: the twin of engine.core.allocation_rules.channel_allowance.
#
# Inline and free of Python objects so a Cython ledger can `cimport` it and
# check a channel's allowance inside its reserve loop at C speed. The numbers
# of RuleKind are those of engine.core.allocation_rules.RuleKind.

from libc.stdint cimport int64_t


cdef enum RuleKindCode:
    RK_NONE = 0
    RK_SHARE = 1
    RK_CAP = 2
    RK_PROTECT = 3


cdef inline int64_t channel_allowance_c(int64_t on_hand, int64_t reserved, int64_t committed,
                                        int64_t safety_stock, int kind, int64_t value,
                                        int64_t channel_used) noexcept nogil:
    # Units the channel may still take at the node; never more than max(ATP, 0)
    # (see the invariants in engine/core/allocation_rules.py).
    cdef int64_t atp = on_hand - reserved - committed - safety_stock
    cdef int64_t sellable, quota, room
    if atp <= 0:
        return 0
    if kind == RK_SHARE:
        sellable = on_hand - safety_stock
        quota = sellable * value // 100 if sellable > 0 else 0
        room = quota - channel_used
    elif kind == RK_CAP:
        room = value - channel_used
    elif kind == RK_PROTECT:
        room = atp - value
    else:
        return atp
    if room <= 0:
        return 0
    return room if room < atp else atp
