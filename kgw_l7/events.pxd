# Cython declarations for kgw_l7/events.py (the source of truth; see scripts/build_ext.py).
# The per-request events become extension types with read-only typed fields: the proxy
# reads them as struct members, and nothing can change an event after it is made.

cimport cython

cdef class _Record:
    pass

cdef class RequestHead(_Record):
    cdef readonly bytes method
    cdef readonly bytes target
    cdef readonly bytes version
    cdef readonly tuple headers
    cdef readonly bytes host
    cdef readonly bytes authority
    cdef readonly bint keep_alive
    cdef readonly str body
    cdef readonly object content_length
    cdef readonly bint expect_continue
    cdef readonly bint upgrade
    cdef readonly bytes raw

cdef class ResponseHead(_Record):
    cdef readonly object status
    cdef readonly bytes version
    cdef readonly tuple headers
    cdef readonly bint keep_alive
    cdef readonly str body
    cdef readonly object content_length

cdef class Body(_Record):
    cdef readonly bytes data

cdef class EndOfMessage(_Record):
    cdef readonly tuple trailers

@cython.locals(head=RequestHead)
cpdef RequestHead request_head(bytes method, bytes target, bytes version, tuple headers,
                               bytes host, bytes authority, bint keep_alive, str body,
                               object content_length, bint expect_continue, bint upgrade,
                               bytes raw)
@cython.locals(head=ResponseHead)
cpdef ResponseHead response_head(object status, bytes version, tuple headers,
                                 bint keep_alive, str body, object content_length)
@cython.locals(ev=Body)
cpdef Body body_event(bytes data)
