# Cython declarations for kgw_l7/h1.py (the source of truth; see scripts/build_ext.py).
# Each class with __slots__ becomes an extension type whose slots are C struct fields:
# attribute access on the per-request path is a pointer offset instead of a descriptor
# lookup. Fields are ``object`` or one of these extension types, and methods called on the
# hot path are ``cpdef`` (a C call between compiled modules); behaviour is the same
# compiled or not, which `make test` checks by running tests/l7 both ways.

cimport cython
from kgw_l7.events cimport Body, EndOfMessage, RequestHead, ResponseHead

cdef frozenset _RESPONSE_FRAMING
cdef frozenset _REQUEST_FRAMING

cdef class RequestReader:
    cdef public object _parser
    cdef public object _events
    cdef public object _url
    cdef public object _headers
    cdef public object _in_head
    cdef public object _head_bytes
    cdef public object _header_count
    cdef public object _trailers
    cdef public object _failed
    cdef public object max_header_bytes
    cdef public object max_headers
    cdef public object _hdr_size
    cdef public object _fresh
    @cython.locals(events=list)
    cpdef list feed(self, data)
    cdef _fail(self, error)
    @cython.locals(data=bytes, at=Py_ssize_t, tail=bytes, url=list)
    cdef _version(self, data, bytes method)
    @cython.locals(name=bytes, value=bytes, host=bytes, authority=bytes, colon=Py_ssize_t,
                   url=list, framing=frozenset, method=bytes)
    cpdef on_headers_complete(self)
    @cython.locals(name=bytes, value=bytes)
    cpdef on_header(self, name, value)

cdef class ResponseReader:
    cdef public object _parser
    cdef public object _events
    cdef public object _headers
    cdef public object _trailers
    cdef public object _head_request
    cdef public object _body
    cdef public object _in_message
    cdef public object _failed
    cdef public object reusable
    cdef public object _head_bytes
    cdef public object _got_head
    cdef public object whole
    cdef public object _begins
    cdef public object _plain
    cdef public object _fresh
    @cython.locals(events=list)
    cpdef list feed(self, data)
    cpdef expect(self, head_request)
    cdef _fail(self, error)
    @cython.locals(name=bytes, value=bytes)
    cpdef on_headers_complete(self)
    @cython.locals(name=bytes, value=bytes)
    cpdef on_header(self, name, value)
