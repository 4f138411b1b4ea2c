# Cython declarations for kgw_l7/proxy.py (the source of truth; see scripts/build_ext.py).
# Each class with __slots__ becomes an extension type whose slots are C struct fields:
# attribute access on the per-request path is a pointer offset instead of a descriptor
# lookup. Fields are ``object`` or one of these extension types, and methods called on the
# hot path are ``cpdef`` (a C call between compiled modules); behaviour is the same
# compiled or not, which `make test` checks by running tests/l7 both ways.

cimport cython
from kgw_l7.h1 cimport RequestReader
from kgw_l7.exchange cimport Exchange
from kgw_l7.upstream cimport UpstreamConn
from kgw_l7.worker cimport WorkerContext

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

cdef class DownstreamConn:
    cdef public WorkerContext ctx
    cdef public ListenerState listener
    cdef public object transport
    cdef public RequestReader reader
    cdef public object queue
    cdef public Exchange parsing
    cdef public int paused
    cdef public bint write_paused
    cdef public bint closing
    cdef public object peer
    cdef public double last_activity
    cdef public double head_started
    cdef public object ssl_context
    cdef public UpstreamConn tunnel
    cdef public object _pending_tunnel
    cdef public object _write
    cdef public object _is_closing
    cdef public bytes forwarded
    @cython.locals(ex=Exchange, n=Py_ssize_t, now=double)
    cpdef data_received(self, data)
    cpdef pause(self, reason)
    cpdef resume(self, reason)
    cpdef write(self, data)
    cpdef close(self)
    cpdef exchange_done(self, Exchange ex)
