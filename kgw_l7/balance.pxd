# Cython declarations for kgw_l7/balance.py (the source of truth; see scripts/build_ext.py).
# Compiled because the exchange calls Balancer.pick for every request to a backend with a
# load-balancing policy (bench/results/resilience.md measured what it costs): the
# classes become extension types (slots as C fields), the per-pick methods cpdef, and the
# hash and the slot search run on C integers.

cimport cython

cdef int _ROUND_ROBIN, _RANDOM, _LEAST_REQUEST, _HASH

cdef class EndpointState:
    cdef public object address
    cdef public object weight
    cdef public double added
    cdef public bint active_ok
    cdef public double ejected_until
    cdef public Py_ssize_t ejections
    cdef public double returned_at
    cdef public Py_ssize_t fails_5xx
    cdef public Py_ssize_t fails_local
    cdef public Py_ssize_t in_flight
    cpdef bint ejected(self, double now)

cdef class HealthBook:
    cdef public dict _states
    cdef public set _backends
    cdef public Py_ssize_t version
    cdef public Py_ssize_t ejections_total
    cdef public object clock
    cdef public frozenset _unhealthy

@cython.locals(h=cython.ulonglong)
cpdef object hash32(bytes key)

cdef class KeySource:
    cdef public bytes header
    cdef public bytes cookie
    cdef public bytes query
    cdef public bint source_ip
    @cython.locals(name=bytes)
    cpdef key(self, headers, bytes query, peer)

cdef class Balancer:
    cdef public str name
    cdef public tuple endpoints
    cdef public tuple states
    cdef public dict by_address
    cdef public int algorithm
    cdef public Py_ssize_t choices
    cdef public KeySource keys
    cdef public double slow_start
    cdef public double panic
    cdef public object outlier
    cdef public HealthBook book
    cdef public Py_ssize_t _rr
    cdef public Py_ssize_t _ver
    cdef public double _until
    cdef public tuple _usable
    cdef public list _ok
    cdef public list _table
    cdef public bint panicking
    cdef public bint tracks
    cdef public bint equal_weights
    @cython.locals(st=EndpointState, until=double)
    cpdef tuple refresh(self, double now)
    @cython.locals(now=double, usable=tuple, n=Py_ssize_t, algorithm=int, i=Py_ssize_t,
                   st=EndpointState)
    cpdef pick(self, key=*)
    @cython.locals(size=Py_ssize_t, slot=Py_ssize_t, j=Py_ssize_t, i=Py_ssize_t,
                   table=list, ok=list)
    cpdef _by_hash(self, bytes key)
