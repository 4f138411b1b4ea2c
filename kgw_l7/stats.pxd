# Cython declarations for kgw_l7/stats.py (the source of truth; see scripts/build_ext.py).
# Each class with __slots__ becomes an extension type whose slots are C struct fields:
# attribute access on the per-request path is a pointer offset instead of a descriptor
# lookup. Types stay ``object``, so behaviour is the same compiled or not.

cdef class WorkerStats:
    cdef public object _per
    cdef public object connect_failures
    cdef public object active_connections
    cdef public object generation
    cdef public object connections_total
    cdef public object rejected_connections
    cpdef request(self, gateway, route, backend, code, seconds)

cdef class AccessLog:
    cdef public object _out
    cdef public object _fd
    cdef public object _buf
    cdef public object _size
    cdef public object _owns
