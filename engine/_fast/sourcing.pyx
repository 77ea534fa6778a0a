# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: binding=False
"""The Cython sourcing loop: same plans as ``engine.core.sourcing.PureSourcer``.

The pure twin is the reference and documents the algorithm; this one follows
it step by step on C arrays (see sourcing.pxd), and a differential test holds
the two to identical output on random networks and orders. Where the order
of floating-point operations matters (the distance), it is the same order as
``engine.core.geo.haversine_rad``, with the same libm functions, and the
extension is compiled with ``-ffp-contract=off`` so no fused multiply-add
changes a last bit and with it a ranking tie.

Use it through ``engine.core.sourcing.make_sourcer``.
"""

cimport cython
from cpython cimport array
from cpython.dict cimport PyDict_GetItemWithError
from cpython.long cimport PyLong_AsSsize_t
from cpython.mem cimport PyMem_RawFree, PyMem_RawMalloc, PyMem_RawRealloc
from cpython.ref cimport PyObject
from libc.math cimport INFINITY, asin, sin, sqrt
from libc.stdint cimport INT32_MAX, int32_t, int64_t, uint32_t
from libc.stdlib cimport qsort
from libc.string cimport memset

import array as _array

from engine.core.geo import EARTH_DIAMETER_KM as _PY_EARTH_DIAMETER_KM

__all__ = ["FastSourcer"]

cdef double EARTH_DIAMETER_KM = _PY_EARTH_DIAMETER_KM
cdef int32_t NO_DAY = -1
cdef int32_t INF_DAY = INT32_MAX
cdef Py_ssize_t PRIORITY_CACHE = 64


cdef void* _alloc(Py_ssize_t n, size_t item) except NULL:
    cdef void* p = PyMem_RawMalloc((n if n > 0 else 1) * item)
    if p == NULL:
        raise MemoryError()
    return p


cdef void* _realloc(void* old, Py_ssize_t n, size_t item) except NULL:
    cdef void* p = PyMem_RawRealloc(old, (n if n > 0 else 1) * item)
    if p == NULL:
        raise MemoryError()
    return p


cdef inline int32_t _add_delivery_days(int32_t d, int32_t days, int32_t mask) noexcept nogil:
    # Ordinal 1 was a Monday; bit (ISO weekday - 1) of the mask is set on delivery days.
    if days == 0:
        while not ((mask >> ((d - 1) % 7)) & 1):
            d += 1
        return d
    while days > 0:
        d += 1
        if (mask >> ((d - 1) % 7)) & 1:
            days -= 1
    return d


cdef int _compare_keys(const void* a, const void* b) noexcept nogil:
    cdef const SortKey* x = <const SortKey*>a
    cdef const SortKey* y = <const SortKey*>b
    if x.primary != y.primary:
        return -1 if x.primary < y.primary else 1
    if x.dist < y.dist:
        return -1
    if x.dist > y.dist:
        return 1
    if x.prio != y.prio:
        return -1 if x.prio < y.prio else 1
    return -1 if x.pos < y.pos else (1 if x.pos > y.pos else 0)


@cython.final
cdef class FastSourcer:
    """The sourcing loop over C arrays (see engine.core.sourcing for the algorithm)."""

    def __cinit__(self, network):
        cdef Py_ssize_t k, s, o, b, n_bands
        self.implementation = "fast"
        self._net = network
        self._node_ids = tuple(network.node_ids)
        self._calendars = tuple(network.calendars)
        self._index = dict(network.index)
        self._priorities = {}
        self._n = len(self._node_ids)
        self._n_regions = network.n_regions
        n = self._n
        self._lat = <double*>_alloc(n, sizeof(double))
        self._lon = <double*>_alloc(n, sizeof(double))
        self._cos = <double*>_alloc(n, sizeof(double))
        self._region = <int32_t*>_alloc(n, sizeof(int32_t))
        self._caps = <int32_t*>_alloc(n, sizeof(int32_t))
        self._valid_from = <double*>_alloc(n, sizeof(double))
        self._valid_until = <double*>_alloc(n, sizeof(double))
        self._ship = <int32_t*>_alloc(n, sizeof(int32_t))
        self._ship_full = <int32_t*>_alloc(n, sizeof(int32_t))
        self._stamp = <uint32_t*>_alloc(n, sizeof(uint32_t))
        self._day = <int32_t*>_alloc(n, sizeof(int32_t))
        self._ship_day = <int32_t*>_alloc(n, sizeof(int32_t))
        self._dist = <double*>_alloc(n, sizeof(double))
        self._dist_stamp = <uint32_t*>_alloc(n, sizeof(uint32_t))
        self._cover = <int32_t*>_alloc(n, sizeof(int32_t))
        self._touched = <int32_t*>_alloc(n, sizeof(int32_t))
        for k in range(n):
            self._lat[k] = network.lat[k]
            self._lon[k] = network.lon[k]
            self._cos[k] = network.cos_lat[k]
            self._region[k] = network.region[k]
            self._caps[k] = network.caps[k]
            self._valid_from[k] = INFINITY
            self._valid_until[k] = -INFINITY
            self._ship[k] = 0
            self._ship_full[k] = 0
            self._stamp[k] = 0
            self._dist_stamp[k] = 0
            self._cover[k] = 0
        self._call = 0
        self._dest_epoch = 0
        self._dest_known = False
        self._last_eligible = None
        self._last_priority = None

        services = network.services
        self._n_services = len(services)
        r = self._n_regions
        n_bands = sum(len(svc.band_km) for svc in services)
        self._matrix = <int32_t*>_alloc(self._n_services * r * r, sizeof(int32_t))
        self._band_start = <int32_t*>_alloc(self._n_services + 1, sizeof(int32_t))
        self._band_km = <double*>_alloc(n_bands, sizeof(double))
        self._band_days = <int32_t*>_alloc(n_bands, sizeof(int32_t))
        self._default_days = <int32_t*>_alloc(self._n_services, sizeof(int32_t))
        self._weekday_mask = <int32_t*>_alloc(self._n_services, sizeof(int32_t))
        b = 0
        for s in range(self._n_services):
            svc = services[s]
            for o in range(r * r):
                self._matrix[s * r * r + o] = svc.matrix[o]
            self._band_start[s] = <int32_t>b
            for j in range(len(svc.band_km)):
                self._band_km[b] = svc.band_km[j]
                self._band_days[b] = svc.band_days[j]
                b += 1
            self._default_days[s] = svc.default_days
            self._weekday_mask[s] = svc.weekday_mask
        self._band_start[self._n_services] = <int32_t>b

        self._cand_cap = 0
        self._keys_cap = 0
        self._lines_cap = 0
        self._grow_cands(64)
        self._grow_keys(64)
        self._grow_lines(8)

    def __dealloc__(self):
        PyMem_RawFree(self._lat)
        PyMem_RawFree(self._lon)
        PyMem_RawFree(self._cos)
        PyMem_RawFree(self._region)
        PyMem_RawFree(self._caps)
        PyMem_RawFree(self._valid_from)
        PyMem_RawFree(self._valid_until)
        PyMem_RawFree(self._ship)
        PyMem_RawFree(self._ship_full)
        PyMem_RawFree(self._stamp)
        PyMem_RawFree(self._day)
        PyMem_RawFree(self._ship_day)
        PyMem_RawFree(self._dist)
        PyMem_RawFree(self._dist_stamp)
        PyMem_RawFree(self._cover)
        PyMem_RawFree(self._touched)
        PyMem_RawFree(self._matrix)
        PyMem_RawFree(self._band_start)
        PyMem_RawFree(self._band_km)
        PyMem_RawFree(self._band_days)
        PyMem_RawFree(self._default_days)
        PyMem_RawFree(self._weekday_mask)
        PyMem_RawFree(self._cand_node)
        PyMem_RawFree(self._cand_atp)
        PyMem_RawFree(self._keys)
        PyMem_RawFree(self._group_start)
        PyMem_RawFree(self._group_len)
        PyMem_RawFree(self._line_group)
        PyMem_RawFree(self._line_qty)
        PyMem_RawFree(self._line_best)
        PyMem_RawFree(self._single)
        PyMem_RawFree(self._split)

    # --------------------------------------------------------------- scratch

    cdef int _grow_lines(self, Py_ssize_t n) except -1:
        if n <= self._lines_cap:
            return 0
        n = max(n, 2 * self._lines_cap)
        self._group_start = <int32_t*>_realloc(self._group_start, n, sizeof(int32_t))
        self._group_len = <int32_t*>_realloc(self._group_len, n, sizeof(int32_t))
        self._line_group = <int32_t*>_realloc(self._line_group, n, sizeof(int32_t))
        self._line_qty = <int64_t*>_realloc(self._line_qty, n, sizeof(int64_t))
        self._line_best = <int32_t*>_realloc(self._line_best, n, sizeof(int32_t))
        self._single = <int32_t*>_realloc(self._single, n, sizeof(int32_t))
        self._split = <int32_t*>_realloc(self._split, n, sizeof(int32_t))
        self._lines_cap = n
        return 0

    cdef int _grow_cands(self, Py_ssize_t n) except -1:
        if n <= self._cand_cap:
            return 0
        n = max(n, 2 * self._cand_cap)
        self._cand_node = <int32_t*>_realloc(self._cand_node, n, sizeof(int32_t))
        self._cand_atp = <int64_t*>_realloc(self._cand_atp, n, sizeof(int64_t))
        self._cand_cap = n
        return 0

    cdef int _grow_keys(self, Py_ssize_t n) except -1:
        if n <= self._keys_cap:
            return 0
        n = max(n, 2 * self._keys_cap)
        self._keys = <SortKey*>_realloc(self._keys, n, sizeof(SortKey))
        self._keys_cap = n
        return 0

    cdef object _priority(self, object eligible):
        """Position of each node in the channel's list, by node index; -1 = not eligible."""
        if eligible is self._last_eligible:
            return self._last_priority
        key = eligible if type(eligible) is tuple else tuple(eligible)
        prio = self._priorities.get(key)
        if prio is None:
            if len(self._priorities) >= PRIORITY_CACHE:
                self._priorities.clear()
            prio = _array.array("i", [-1]) * (self._n if self._n > 0 else 1)
            for p, node_id in enumerate(key):
                k = self._index.get(node_id)
                if k is not None and prio[k] < 0:
                    prio[k] = p
            self._priorities[key] = prio
        if type(eligible) is tuple:  # immutable: safe to recognise by identity next time
            self._last_eligible = eligible
            self._last_priority = prio
        return prio

    # ------------------------------------------------------------------ nodes

    cdef int32_t _node_day(self, Py_ssize_t k, double now, Py_ssize_t service, double dlat, double dlon,
                           double dcos, bint has_coords, int32_t dregion, object full, bint has_full) except -2:
        """Promise day of node ``k`` for this call (NO_DAY: the service does not serve it)."""
        cdef double km, s_lat, s_lon, a
        cdef int32_t ship, transit = -1
        cdef Py_ssize_t b, r = self._n_regions
        if not (self._valid_from[k] <= now and now < self._valid_until[k]):
            window = self._calendars[k].ship_window(now)
            self._valid_from[k] = window[0]
            self._valid_until[k] = window[1]
            self._ship[k] = window[3]
            self._ship_full[k] = window[4]
        if has_full and self._node_ids[k] in full:
            ship = self._ship_full[k]
        else:
            ship = self._ship[k]
        if not has_coords:
            km = INFINITY
        elif self._dist_stamp[k] == self._dest_epoch:
            km = self._dist[k]
        else:
            s_lat = sin((self._lat[k] - dlat) * 0.5)
            s_lon = sin((self._lon[k] - dlon) * 0.5)
            a = s_lat * s_lat + dcos * self._cos[k] * s_lon * s_lon
            if a > 1.0:
                a = 1.0
            km = EARTH_DIAMETER_KM * asin(sqrt(a))
            self._dist_stamp[k] = self._dest_epoch
        self._ship_day[k] = ship
        self._dist[k] = km
        transit = self._matrix[(service * r + self._region[k]) * r + dregion]
        if transit < 0:
            if km < INFINITY:
                for b in range(self._band_start[service], self._band_start[service + 1]):
                    if km <= self._band_km[b]:
                        transit = self._band_days[b]
                        break
            if transit < 0:
                transit = self._default_days[service]
        if transit < 0:
            return NO_DAY
        return _add_delivery_days(ship, transit, self._weekday_mask[service])

    cdef int32_t _cover_day(self, Py_ssize_t g, int64_t qty) noexcept:
        """Earliest day by which the group's nodes together hold ``qty``.

        The pure twin sorts the candidates by day; here each pass finds the
        next distinct day and what it adds, which needs no sort: a line is
        covered within a few distinct days, so a few linear passes win.
        """
        cdef Py_ssize_t start = self._group_start[g], end = start + self._group_len[g], c
        cdef int32_t current = -1, following, d
        cdef int64_t acc = 0, adds, q
        cdef int32_t* day = self._day
        cdef int32_t* node = self._cand_node
        cdef int64_t* atp = self._cand_atp
        while True:
            following = INF_DAY
            adds = 0
            for c in range(start, end):
                q = atp[c]
                if q > 0:
                    d = day[node[c]]
                    if d > current:
                        if d < following:
                            following = d
                            adds = q
                        elif d == following:
                            adds += q
            if following == INF_DAY:
                return INF_DAY
            acc += adds
            if acc >= qty:
                return following
            current = following

    # ------------------------------------------------------------------- plan

    def plan(self, double now, Py_ssize_t service, destination, eligible, lines, bint allow_split,
             int capabilities, full=()):
        cdef Py_ssize_t n_lines = len(lines), i, j, c, g, n_groups = 0, n_cand = 0, start, end
        cdef Py_ssize_t n_single = 0, n_split = 0, n_wait, n_next, n_touched, t, k, m
        cdef int32_t d, best, chosen, latest
        cdef int64_t qty, q, take, remaining
        cdef double dlat, dlon, dcos
        cdef bint has_coords, has_full = bool(full), taken
        cdef int32_t dregion
        cdef array.array prio_arr
        cdef int* prio
        cdef PyObject* p
        cdef SortKey* keys
        cdef SortKey key
        cdef int32_t* cover = self._cover
        cdef int32_t* day = self._day
        cdef int64_t* atp_of = self._cand_atp
        cdef uint32_t call
        if not 0 <= service < self._n_services:
            raise IndexError(f"service level {service} out of range")
        dlat, dlon, dcos, has_coords, dregion = destination
        if not (has_coords and self._dest_known and dlat == self._dest_lat and dlon == self._dest_lon):
            # A new destination (or none: this call writes inf distances over
            # the cache): distances cached for the previous one are stale.
            self._dest_epoch += 1
            if self._dest_epoch == 0:
                memset(self._dist_stamp, 0, (self._n if self._n > 0 else 1) * sizeof(uint32_t))
                self._dest_epoch = 1
            self._dest_lat, self._dest_lon, self._dest_known = dlat, dlon, has_coords
        prio_arr = self._priority(eligible)
        prio = prio_arr.data.as_ints
        self._grow_lines(n_lines)
        self._call += 1
        if self._call == 0:  # wrapped: stamps from 2**32 calls ago would look current
            memset(self._stamp, 0, (self._n if self._n > 0 else 1) * sizeof(uint32_t))
            self._call = 1
        call = self._call

        # Candidates per SKU (see the pure twin).
        groups = {}
        for i in range(n_lines):
            sku, quantity, atp = lines[i]
            self._line_qty[i] = quantity
            g_obj = groups.get(sku)
            if g_obj is not None:
                self._line_group[i] = g_obj
                continue
            g = n_groups
            n_groups += 1
            groups[sku] = g
            self._group_start[g] = <int32_t>n_cand
            for node_id, q_obj in atp.items():
                q = q_obj
                if q <= 0:
                    continue
                p = PyDict_GetItemWithError(self._index, node_id)
                if p == NULL:
                    continue
                k = PyLong_AsSsize_t(<object>p)
                if prio[k] < 0 or not (self._caps[k] & capabilities):
                    continue
                if self._stamp[k] != call:
                    d = self._node_day(k, now, service, dlat, dlon, dcos, has_coords, dregion, full, has_full)
                    day[k] = d
                    self._stamp[k] = call
                else:
                    d = day[k]
                if d == NO_DAY:
                    continue
                if n_cand == self._cand_cap:
                    self._grow_cands(n_cand + 1)
                    atp_of = self._cand_atp
                self._cand_node[n_cand] = <int32_t>k
                atp_of[n_cand] = q
                n_cand += 1
            self._group_len[g] = <int32_t>(n_cand - self._group_start[g])
            self._line_group[i] = <int32_t>g

        plans = [None] * n_lines
        node_ids = self._node_ids

        # 1. single node or split, per line
        for i in range(n_lines):
            g = self._line_group[i]
            qty = self._line_qty[i]
            start = self._group_start[g]
            end = start + self._group_len[g]
            best = INF_DAY
            for c in range(start, end):
                if atp_of[c] >= qty and day[self._cand_node[c]] < best:
                    best = day[self._cand_node[c]]
            if allow_split and self._cover_day(g, qty) < best:
                self._split[n_split] = <int32_t>i
                n_split += 1
            elif best < INF_DAY:
                self._single[n_single] = <int32_t>i
                n_single += 1

        # 2. consolidate single-node lines
        while n_single > 0:
            n_wait = 0
            for j in range(n_single):
                i = self._single[j]
                g = self._line_group[i]
                qty = self._line_qty[i]
                start = self._group_start[g]
                end = start + self._group_len[g]
                best = INF_DAY
                for c in range(start, end):
                    if atp_of[c] >= qty and day[self._cand_node[c]] < best:
                        best = day[self._cand_node[c]]
                if best == INF_DAY:
                    if allow_split:
                        self._split[n_split] = <int32_t>i
                        n_split += 1
                    continue
                self._line_best[i] = best
                self._single[n_wait] = <int32_t>i
                n_wait += 1
            if n_wait == 0:
                break
            n_touched = 0
            for j in range(n_wait):
                i = self._single[j]
                g = self._line_group[i]
                qty = self._line_qty[i]
                best = self._line_best[i]
                start = self._group_start[g]
                end = start + self._group_len[g]
                for c in range(start, end):
                    k = self._cand_node[c]
                    if atp_of[c] >= qty and day[k] == best:
                        if cover[k] == 0:
                            self._touched[n_touched] = <int32_t>k
                            n_touched += 1
                        cover[k] += 1
            chosen = self._touched[0]
            for t in range(1, n_touched):
                k = self._touched[t]
                if cover[k] != cover[chosen]:
                    if cover[k] > cover[chosen]:
                        chosen = <int32_t>k
                elif self._dist[k] != self._dist[chosen]:
                    if self._dist[k] < self._dist[chosen]:
                        chosen = <int32_t>k
                elif prio[k] < prio[chosen]:
                    chosen = <int32_t>k
            for t in range(n_touched):
                cover[self._touched[t]] = 0
            n_next = 0
            for j in range(n_wait):
                i = self._single[j]
                g = self._line_group[i]
                qty = self._line_qty[i]
                start = self._group_start[g]
                end = start + self._group_len[g]
                taken = False
                for c in range(start, end):
                    if self._cand_node[c] == chosen:
                        if atp_of[c] >= qty and day[chosen] == self._line_best[i]:
                            atp_of[c] -= qty
                            plans[i] = (
                                self._line_best[i],
                                ((node_ids[chosen], qty, self._ship_day[chosen], self._line_best[i],
                                  self._dist[chosen]),),
                            )
                            taken = True
                        break
                if not taken:
                    self._single[n_next] = <int32_t>i
                    n_next += 1
            n_single = n_next

        # 3. split lines, in line order
        for j in range(1, n_split):  # insertion sort: a handful of lines
            t = self._split[j]
            m = j - 1
            while m >= 0 and self._split[m] > t:
                self._split[m + 1] = self._split[m]
                m -= 1
            self._split[m + 1] = <int32_t>t
        for j in range(n_split):
            i = self._split[j]
            g = self._line_group[i]
            qty = self._line_qty[i]
            best = self._cover_day(g, qty)
            if best == INF_DAY:
                continue
            start = self._group_start[g]
            end = start + self._group_len[g]
            self._grow_keys(end - start)
            keys = self._keys
            m = 0
            for c in range(start, end):
                k = self._cand_node[c]
                if atp_of[c] > 0 and day[k] <= best:
                    keys[m].primary = -atp_of[c]
                    keys[m].dist = self._dist[k]
                    keys[m].prio = prio[k]
                    keys[m].pos = <int32_t>c
                    m += 1
            if m <= 24:  # the usual pool: a few nodes reach the line by that day
                for t in range(1, m):
                    key = keys[t]
                    c = t - 1
                    while c >= 0 and _compare_keys(&keys[c], &key) > 0:
                        keys[c + 1] = keys[c]
                        c -= 1
                    keys[c + 1] = key
            else:
                qsort(keys, m, sizeof(SortKey), _compare_keys)
            allocations = []
            remaining = qty
            latest = 0
            for t in range(m):
                c = keys[t].pos
                k = self._cand_node[c]
                take = atp_of[c] if atp_of[c] < remaining else remaining
                atp_of[c] -= take
                remaining -= take
                allocations.append((node_ids[k], take, self._ship_day[k], day[k], self._dist[k]))
                if day[k] > latest:
                    latest = day[k]
                if remaining == 0:
                    break
            plans[i] = (latest, tuple(allocations))
        return plans
