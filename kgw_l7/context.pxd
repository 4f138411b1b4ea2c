# Cython declarations for kgw_l7/context.py (the source of truth; see scripts/build_ext.py).
# Each class with __slots__ becomes an extension type whose slots are C struct fields:
# attribute access on the per-request path is a pointer offset instead of a descriptor
# lookup. Fields are ``object`` or one of these extension types, and methods called on the
# hot path are ``cpdef`` (a C call between compiled modules); behaviour is the same
# compiled or not, which `make test` checks by running tests/l7 both ways.

from kgw_l7.accesslog cimport AccessLog, LogSettings
from kgw_l7.stats cimport WorkerStats
from kgw_l7.upstream cimport Pool

cdef class ListenerState:
    cdef public object name
    cdef public object record
    cdef public object router
    cdef public object scheme
    cdef public object port
    cdef public object certs
    cdef public object conns
    cdef public object server
    cdef public object sock
    cdef public object gateway
    cdef public int proxy_mode
    cdef public double header_timeout
    cdef public LogSettings log
    cdef public object tracer

cdef class WorkerContext:
    cdef public object loop
    cdef public object options
    cdef public WorkerStats stats
    cdef public object tls
    cdef public Pool pool
    cdef public AccessLog access_log
    cdef public Py_ssize_t max_connections
    cdef public object conns
    cdef public object listeners
    cdef public object errors
    cdef public object cache
    cdef public double now
    cdef public bint stopping
    cdef public object _tasks
    cdef public object _sweeper
    cdef public object _interval
    cdef public object clock
    cdef public object limiter
    cdef public Py_ssize_t fd_limit
    cdef public Py_ssize_t fd_base
    cdef public double fd_short_at
    cdef public bint draining
    cdef public bint ignore_client_abort
    cdef public object tracer
    cdef public object global_limiter
    cdef public dict _log_settings
    cdef public dict _tracers
    cdef public dict _exports
