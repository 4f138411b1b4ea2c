# Cython declarations for kgw_l7/h1.py (the source of truth; see scripts/build_ext.py).
# Each class with __slots__ becomes an extension type whose slots are C struct fields:
# attribute access on the per-request path is a pointer offset instead of a descriptor
# lookup. Types stay ``object``, so behaviour is the same compiled or not.

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
    cpdef list feed(self, data)
    cdef _fail(self, error)
    cdef _version(self)

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
    cpdef list feed(self, data)
    cpdef expect(self, head_request)
    cdef _fail(self, error)
