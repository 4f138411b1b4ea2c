# Cython declarations for kgw_l7/upstream_h2.py (the source of truth; see scripts/build_ext.py).
# H2Stream subclasses the UpstreamStream interface with the same cpdef methods: the
# exchange's calls through a field typed UpstreamStream are C calls through the vtable.

cimport cython
from kgw_l7.streams cimport OutRequest, UpstreamOwner, UpstreamStream

cdef class H2Stream

cdef class H2Conn:
    cdef public object transport
    cdef public object h2
    cdef public object key
    cdef public object pool
    cdef public bint counted
    cdef public bint closed
    cdef public bint goaway
    cdef public object last_stream_id
    cdef public dict streams
    cdef public Py_ssize_t taken
    cdef public double idle_since
    cdef public bint write_paused
    cdef public bytes scheme
    cdef public Py_ssize_t served
    cdef public bint held
    cpdef bint has_room(self) except -1
    @cython.locals(st=H2Stream)
    cpdef H2Stream new_stream(self)
    cpdef stream_done(self, H2Stream st, double now)
    cpdef flush(self)
    cpdef write_out(self)
    @cython.locals(st=H2Stream, batches=dict, lost=list, streams=dict, evs=list)
    cpdef handle(self, list events)
    cpdef close(self)
    cpdef abort(self)
    cpdef abort_all(self)

cdef class H2Stream(UpstreamStream):
    cdef public H2Conn conn
    cdef public object sid
    cdef public list pending
    cdef public bint end_pending
    cdef public tuple trailers
    cdef public bint local_done
    cdef public bint remote_done
    cdef public bint got_head
    cdef public bint refused
    cdef public bint reset
    cdef public Py_ssize_t unacked
    cdef public bint send_paused
    cdef public bint is_head
    cdef public bint given_back
    cpdef init(self, H2Conn conn)
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
    cpdef push(self)
    cpdef update_send_pause(self)
    cpdef ack(self)
    cpdef lose(self)
    cpdef give_back(self, double now)

@cython.locals(fields=list, rest=list, head=list)
cpdef list request_headers(OutRequest out, bytes scheme)
