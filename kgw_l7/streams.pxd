# Cython declarations for kgw_l7/streams.py (the source of truth; see scripts/build_ext.py).
# The interfaces are extension types with cpdef methods: an implementation subclasses
# them (proxy.pxd), and a call through a field typed with the interface is a C call
# through the type's vtable.

cpdef enum:
    PAUSE_BODY = 1
    PAUSE_UPSTREAM = 2

cdef class DownstreamStream:
    cdef public object listener
    cdef public bytes peer
    cdef public object ssl_context
    cdef public bytes forwarded
    cdef public bint closing
    cdef public bint write_paused
    cpdef write(self, data)
    cpdef pause(self, int reason)
    cpdef resume(self, int reason)
    cpdef abort(self)
    cpdef exchange_done(self, ex)
    cpdef bint start_tunnel(self, up, data) except -1
