# Cython declarations for kgw_l7/h1.py (the source of truth; see scripts/build_ext.py).
# Each class with __slots__ becomes an extension type whose slots are C struct fields:
# attribute access on the per-request path is a pointer offset instead of a descriptor
# lookup. Fields are ``object`` or one of these extension types, and methods called on the
# hot path are ``cpdef`` (a C call between compiled modules); behaviour is the same
# compiled or not, which `make test` checks by running tests/l7 both ways.

cimport cython
from kgw_l7.events cimport (Body, EndOfMessage, RequestHead, ResponseHead, body_event,
                             request_head, response_head)

cdef frozenset _RESPONSE_FRAMING
cdef frozenset _CUTTABLE
cdef frozenset _PLAIN_CONNECTION
cdef frozenset _PLAIN_CONNECTION_VALUES

cpdef bint _plain_connection(bytes value)
cdef dict _USUAL_SPELLING
cdef Py_ssize_t _SPELLINGS_KEPT
@cython.locals(spelled=bytes)
cpdef bytes usual_spelling(bytes name)
@cython.locals(at=Py_ssize_t, stop=Py_ssize_t, pos=Py_ssize_t, low=bytes, spans=list,
               parts=list, pattern=bytes)
cpdef bytes without_fields(bytes data, list names, Py_ssize_t head_size)
cdef frozenset _REQUEST_FRAMING

cdef class RequestReader:
    cdef public object _parser
    cdef public object _events
    cdef public object _url
    cdef public object _headers
    cdef public bint _in_head
    cdef public Py_ssize_t _head_bytes
    cdef public Py_ssize_t _header_count
    cdef public object _trailers
    cdef public bint _failed
    cdef public Py_ssize_t max_header_bytes
    cdef public Py_ssize_t max_headers
    cdef public Py_ssize_t _hdr_size
    cdef public object _fresh
    cdef public object _feed
    cdef public object _method
    cdef public object _keep_alive
    cdef public object _upgrade
    cdef public object _h2c
    cdef public bint _hidden
    cdef public bint http2_preface
    cdef public bint h2c_upgrade
    cdef public object h2c_head
    cdef public object h2c_settings
    @cython.locals(events=list)
    cpdef list feed(self, bytes data)
    cdef _upgraded(self, bytes data, exc)
    cdef _more(self, bytes data)
    cdef _parse_error(self, exc)
    cdef _fail(self, error)
    @cython.locals(data=bytes, at=Py_ssize_t, url=list)
    cdef _version(self, data, bytes method)
    @cython.locals(name=bytes, value=bytes, host=bytes, authority=bytes, colon=Py_ssize_t,
                   url=list, framing=frozenset, method=bytes, asked=bint, keep_alive=bint,
                   upgrade=bint)
    cpdef on_headers_complete(self)
    @cython.locals(name=bytes, value=bytes)
    cpdef on_header(self, name, value)

cdef class ResponseReader:
    cdef public object _parser
    cdef public object _events
    cdef public object _headers
    cdef public object _trailers
    cdef public bint _head_request
    cdef public object _body
    cdef public bint in_message
    cdef public bint _failed
    cdef public bint reusable
    cdef public Py_ssize_t _head_bytes
    cdef public bint got_head
    cdef public object whole
    cdef public Py_ssize_t _begins
    cdef public bint _plain
    cdef public bint _fresh
    cdef public object _cut
    cdef public Py_ssize_t _length
    cdef public object _feed
    cdef public object _status
    cdef public object _keep_alive
    cdef public Py_ssize_t _finals
    @cython.locals(events=list)
    cpdef list feed(self, bytes data)
    cpdef expect(self, head_request)
    cdef _fail(self, error)
    @cython.locals(name=bytes, value=bytes)
    cpdef on_headers_complete(self)
    @cython.locals(name=bytes, value=bytes)
    cpdef on_header(self, name, value)
