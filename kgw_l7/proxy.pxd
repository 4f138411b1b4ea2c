# Cython declarations for kgw_l7/proxy.py (the source of truth; see scripts/build_ext.py).
# Each class with __slots__ becomes an extension type whose slots are C struct fields:
# attribute access on the per-request path is a pointer offset instead of a descriptor
# lookup. Fields are ``object`` or one of these extension types, and methods called on the
# hot path are ``cpdef`` (a C call between compiled modules); behaviour is the same
# compiled or not, which `make test` checks by running tests/l7 both ways.

cimport cython
from kgw_l7.context cimport ListenerState, WorkerContext
from kgw_l7.exchange cimport Exchange
from kgw_l7.downstream_h2 cimport H2Conn
from kgw_l7.h1 cimport RequestReader
from kgw_l7.streams cimport DownstreamStream, UpstreamStream
from kgw_l7.upstream cimport UpstreamConn

cdef int _PAUSE_PIPELINE

cdef class DownstreamConn(DownstreamStream):
    cdef public WorkerContext ctx
    cdef public object transport
    cdef public RequestReader reader
    cdef public object queue
    cdef public Exchange parsing
    cdef public Exchange current
    cdef public int paused
    cdef public bint chunked
    cdef public double last_activity
    cdef public double head_started
    cdef public UpstreamConn tunnel
    cdef public object _pending_tunnel
    cdef public object _write
    cdef public object _is_closing
    cdef public bint h2_sniff
    cdef public bytes _sniffed
    cdef public Exchange tunnel_ex
    cdef public Py_ssize_t tunnel_in
    cdef public object tunnel_out
    cdef public bint proxy_wait
    cdef public bytes _proxy_buf
    cdef public object proxy_source
    @cython.locals(ex=Exchange, n=Py_ssize_t, now=double)
    cpdef data_received(self, data)
    @cython.locals(ex=Exchange, version=bytes, chunked=bint, head=bytes, parts=list)
    cpdef bint send_response(self, int status, list headers, str body, list data, bint end,
                             tuple trailers, bint close) except -1
    cpdef bint send_raw(self, bytes data) except -1
    cpdef send_body(self, bytes data)
    cpdef send_end(self, tuple trailers)
    cpdef send_continue(self)
    cpdef pause(self, int reason)
    cpdef resume(self, int reason)
    cpdef abort(self)
    cpdef bint start_tunnel(self, UpstreamStream up, bytes data) except -1
    @cython.locals(e=Exchange)
    cpdef exchange_done(self, ex)
    cpdef write(self, data)
    cpdef close(self)
