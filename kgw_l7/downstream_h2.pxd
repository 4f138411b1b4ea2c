# Cython declarations for kgw_l7/downstream_h2.py (the source of truth; see
# scripts/build_ext.py). H2Stream implements the DownstreamStream interface (streams.pxd):
# the exchange's calls on it are C calls through the vtable.

cimport cython
from kgw_l7.context cimport WorkerContext
from kgw_l7.exchange cimport Exchange
from kgw_l7.streams cimport DownstreamStream, UpstreamStream

cdef class H2Conn

cdef class H2Stream(DownstreamStream):
    cdef public H2Conn conn
    cdef public object sid
    cdef public Exchange ex
    cdef public list pending
    cdef public Py_ssize_t pending_size
    cdef public bint end_pending
    cdef public tuple trailers
    cdef public bint request_open
    cdef public bint response_open
    cdef public Py_ssize_t held
    cdef public int paused
    cdef public double last_activity
    cdef public double blocked_since
    cdef public bint done
    cdef public bint reset
    cpdef bint send_response(self, int status, list headers, str body, list data, bint end,
                             tuple trailers, bint close) except -1
    cpdef bint send_raw(self, bytes data) except -1
    cpdef send_body(self, bytes data)
    cpdef send_end(self, tuple trailers)
    cpdef send_continue(self)
    cpdef pause(self, int reason)
    cpdef resume(self, int reason)
    cpdef abort(self)
    cpdef exchange_done(self, ex)
    cpdef bint start_tunnel(self, UpstreamStream up, bytes data) except -1

cdef class H2Conn:
    cdef public WorkerContext ctx
    cdef public object listener
    cdef public object transport
    cdef public object h2
    cdef public dict streams
    cdef public bytes peer
    cdef public bytes remote
    cdef public object ssl_context
    cdef public bint closing
    cdef public bint write_paused
    cdef public double last_activity
    cdef public double started
    cdef public bint in_read
    cdef public object goaway_id
    cdef public double window_start
    cdef public Py_ssize_t resets
    cdef public Py_ssize_t pings
    cdef public Py_ssize_t settings_frames
    cdef public Py_ssize_t window_updates
    cdef public bint preface_done
    cdef public double head_since
    cdef public bint counted
    cdef public bint lingering
    cpdef push(self, H2Stream st)
    cpdef settle(self, H2Stream st)
    cpdef release_held(self, H2Stream st)
    cpdef reset_stream(self, H2Stream st, int code)
    cpdef flush(self)
