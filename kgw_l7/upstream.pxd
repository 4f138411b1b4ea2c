# Cython declarations for kgw_l7/upstream.py (the source of truth; see scripts/build_ext.py).
# Each class with __slots__ becomes an extension type whose slots are C struct fields:
# attribute access on the per-request path is a pointer offset instead of a descriptor
# lookup. Fields are ``object`` or one of these extension types, and methods called on the
# hot path are ``cpdef`` (a C call between compiled modules); behaviour is the same
# compiled or not, which `make test` checks by running tests/l7 both ways.

cimport cython
from kgw_l7.h1 cimport ResponseReader
from kgw_l7.streams cimport OutRequest, UpstreamOwner, UpstreamStream
from kgw_l7.upstream_h2 cimport H2Conn, H2Stream
from kgw_l7.router cimport CompiledBackend

cdef double IDLE_TIMEOUT
cdef Py_ssize_t MAX_IDLE_PER_ENDPOINT

cdef class UpstreamConn(UpstreamStream):
    cdef public object transport
    cdef public ResponseReader reader
    cdef public object key
    cdef public bint closed
    cdef public double idle_since
    cdef public object tunnel
    cdef public bint write_paused
    cdef public object pool
    cdef public bint counted
    cdef public bint chunked
    cpdef send_request(self, UpstreamOwner owner, OutRequest out, list chunks, bint end,
                       tuple trailers)
    cpdef send_body(self, bytes data)
    cpdef send_end(self, tuple trailers)
    cpdef pause_reading(self)
    cpdef resume_reading(self)
    cpdef abort(self)
    cpdef bint stale(self) except -1
    cpdef bint reusable(self) except -1
    cpdef object response_as_received(self)
    cpdef close(self)

cdef class Pool:
    cdef public dict _idle
    cdef public object _tls
    cdef public dict _open
    cdef public Py_ssize_t open_total
    cdef public Py_ssize_t max_per_endpoint
    cdef public object room
    cdef public dict _h2
    cdef public dict _h2_opening
    cdef public object stats
    cdef public bint corked
    cdef public list held
    cpdef bint cork(self) except -1
    @cython.locals(conn=H2Conn, held=list)
    cpdef uncork(self)
    @cython.locals(conn=UpstreamConn, idle=list, h=H2Conn, conns=list, tls=object)
    cpdef take_idle(self, address, port, CompiledBackend backend, now)
    @cython.locals(conn=UpstreamConn, idle=list, st=H2Stream)
    cpdef release(self, up, now)
