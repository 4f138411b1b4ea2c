# Cython declarations for kgw_l7/stats.py (the source of truth; see scripts/build_ext.py).
# Each class with __slots__ becomes an extension type whose slots are C struct fields:
# attribute access on the per-request path is a pointer offset instead of a descriptor
# lookup. Fields are ``object`` or one of these extension types, and methods called on the
# hot path are ``cpdef`` (a C call between compiled modules); behaviour is the same
# compiled or not, which `make test` checks by running tests/l7 both ways.

cimport cython

cdef class WorkerStats:
    cdef public dict _per
    cdef public object connect_failures
    cdef public object active_connections
    cdef public object generation
    cdef public object connections_total
    cdef public object rejected_connections
    cdef public object tls_refusals
    cdef public object upstream_overflows
    cdef public object http2_errors
    cdef public object http2_connections
    cdef public dict retries
    cdef public dict connect_times
    @cython.locals(h=list, buckets=tuple, n=Py_ssize_t, i=Py_ssize_t)
    cpdef request(self, listener, gateway, route, backend, code, double seconds,
                  Py_ssize_t received=*, Py_ssize_t sent=*)

cdef class LogLimiter:
    cdef public object _log
    cdef public object interval
    cdef public object _last
    cdef public object _held
