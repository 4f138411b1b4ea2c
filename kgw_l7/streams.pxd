# Cython declarations for kgw_l7/streams.py (the source of truth; see scripts/build_ext.py).
# The interfaces are extension types with cpdef methods: an implementation subclasses
# them (proxy.pxd, upstream.pxd) and declares the same methods, and a call through a field
# or variable typed with the interface is a C call through the type's vtable.

cimport cython

cpdef enum:
    PAUSE_BODY = 1
    PAUSE_UPSTREAM = 2

cdef class OutRequest:
    cdef public bytes method
    cdef public bytes target
    cdef public list headers
    cdef public bytes raw
    cdef public str body

@cython.locals(out=OutRequest)
cpdef OutRequest out_request(bytes method, bytes target, list headers, bytes raw, str body)

cdef class UpstreamStream

cdef class UpstreamOwner:
    cpdef on_upstream_events(self, UpstreamStream up, list events)
    cpdef on_upstream_lost(self, UpstreamStream up)
    cpdef on_upstream_pause(self, bint paused)

cdef class UpstreamStream:
    cdef public UpstreamOwner owner
    cdef public bint reused
    cdef public Py_ssize_t reads
    cdef public bint read_paused
    cdef public str lost_reason
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

cdef class DownstreamStream:
    cdef public object listener
    cdef public bytes peer
    cdef public bytes remote
    cdef public object ssl_context
    cdef public bytes forwarded
    cdef public bint closing
    cdef public bint write_paused
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
