# Declarations of the Cython sourcing loop (twin of engine.core.sourcing.PureSourcer).
#
# Everything read per candidate node lives in C arrays indexed by the node's
# position in the compiled Network: coordinates, region, capability bits, the
# cached ship window, and per-call scratch (promise day, distance, a stamp
# saying whether this call computed them yet). Python objects appear only at
# the edges: the caller's ATP mappings on the way in, the plan tuples on the
# way out, and a calendar call when the clock leaves a node's cached window.

from libc.stdint cimport int32_t, int64_t, uint32_t


# A sort entry of the split pool: ordered by (primary, dist, prio), all
# ascending, with ``primary`` = -ATP (largest stock first).
ctypedef struct SortKey:
    int64_t primary
    double dist
    int32_t prio
    int32_t pos


cdef class FastSourcer:
    cdef readonly str implementation
    cdef object _net
    cdef tuple _node_ids
    cdef tuple _calendars
    cdef dict _index
    cdef dict _priorities         # eligible tuple -> array('i') of positions by node, -1 = not eligible
    cdef object _last_eligible    # the eligible object of the previous call and its array: a channel
    cdef object _last_priority    # passes the same tuple every time, and hashing 500 ids is not free
    cdef Py_ssize_t _n
    cdef Py_ssize_t _n_regions

    # per node, fixed
    cdef double* _lat
    cdef double* _lon
    cdef double* _cos
    cdef int32_t* _region
    cdef int32_t* _caps

    # per node, the cached ship window (NodeCalendar.ship_window)
    cdef double* _valid_from
    cdef double* _valid_until
    cdef int32_t* _ship
    cdef int32_t* _ship_full

    # service levels: matrix [s][origin][destination], bands [band_start[s] .. band_start[s+1])
    cdef Py_ssize_t _n_services
    cdef int32_t* _matrix
    cdef int32_t* _band_start
    cdef double* _band_km
    cdef int32_t* _band_days
    cdef int32_t* _default_days
    cdef int32_t* _weekday_mask

    # per node, per call
    cdef uint32_t _call
    cdef uint32_t* _stamp
    cdef int32_t* _day
    cdef int32_t* _ship_day
    # per node, per destination: consecutive calls for the same order (one per
    # service level) reuse the distances
    cdef double* _dist
    cdef uint32_t* _dist_stamp
    cdef uint32_t _dest_epoch
    cdef double _dest_lat
    cdef double _dest_lon
    cdef bint _dest_known
    cdef int32_t* _cover
    cdef int32_t* _touched

    # per call, grown on demand: candidates (node, working ATP) grouped by SKU
    cdef int32_t* _cand_node
    cdef int64_t* _cand_atp
    cdef Py_ssize_t _cand_cap
    cdef SortKey* _keys
    cdef Py_ssize_t _keys_cap
    cdef int32_t* _group_start
    cdef int32_t* _group_len
    cdef int32_t* _line_group
    cdef int64_t* _line_qty
    cdef int32_t* _line_best
    cdef int32_t* _single
    cdef int32_t* _split
    cdef Py_ssize_t _lines_cap

    cdef int32_t _node_day(self, Py_ssize_t k, double now, Py_ssize_t service, double dlat, double dlon,
                           double dcos, bint has_coords, int32_t dregion, object full, bint has_full) except -2
    cdef object _priority(self, object eligible)
    cdef int32_t _cover_day(self, Py_ssize_t g, int64_t qty) noexcept
    cdef int _grow_lines(self, Py_ssize_t n) except -1
    cdef int _grow_cands(self, Py_ssize_t n) except -1
    cdef int _grow_keys(self, Py_ssize_t n) except -1
