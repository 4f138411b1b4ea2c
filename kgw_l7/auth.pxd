# Cython declarations for kgw_l7/auth.py (the source of truth; see scripts/build_ext.py).
# The records a request's checks pass around become extension types (their slots C struct
# fields) and the steps a repeated token takes are cpdef methods; the checks themselves
# (Check and its subclasses) stay Python classes, which kgw_l7.oidc extends and tests
# patch.

cimport cython

cdef class LastToken

cdef class Denial:
    cdef public object status
    cdef public object headers
    cdef public object body
    cdef public object detail

cdef class AuthRequest:
    cdef public object method
    cdef public object path
    cdef public object query
    cdef public tuple headers
    cdef public object peer
    cdef public object claims
    cdef public object principal
    cdef public list set_headers
    cdef public set remove
    cdef public object new_query
    cdef public list reply
    cdef public object pending
    cdef public bint retried
    cpdef fill(self, method, path, query, tuple headers, peer)
    @cython.locals(n=bytes)
    cpdef object header(self, bytes name)
    cpdef set_header(self, bytes name, bytes value)
    cpdef list upstream(self, list headers)
    cpdef object head_suffix(self, bytes suffix)

@cython.locals(req=AuthRequest)
cpdef AuthRequest new_request(method, path, query, tuple headers, peer)

cdef class AuthPipeline:
    cdef public tuple checks
    cdef public tuple memos
    @cython.locals(i=Py_ssize_t, memo=LastToken)
    cpdef object run(self, AuthRequest req, Py_ssize_t start=*)

cdef class _Source:
    cdef public object kind
    cdef public bytes name
    cdef public bytes prefix
    cpdef object take(self, AuthRequest req)

@cython.locals(s=_Source)
cpdef object _first(tuple sources, AuthRequest req)

cdef class LRU:
    cdef public object data
    cdef public Py_ssize_t size
    cpdef object get(self, object key)
    cpdef put(self, object key, object value)
    cpdef pop(self, object key)

cdef class JwksKey:
    cdef public object kid
    cdef public object alg
    cdef public object key

cdef class Provider:
    cdef public object cfg
    cdef public object name
    cdef public list local
    cdef public object remote
    cdef public set algorithms
    cdef public tuple claim_headers
    cdef public object audience
    cdef public bytes hmac_secret
    cpdef object generation(self)

cdef class _Grant:
    cdef public object claims
    cdef public object principal
    cdef public tuple set_headers
    cdef public frozenset remove
    cdef public _Source drop
    cpdef apply(self, AuthRequest req)

cdef class _Verified:
    cdef public object claims
    cdef public Provider provider
    cdef public object generation
    cdef public double until
    cdef public _Source source
    cdef public _Grant grant

cdef class LastToken:
    cdef public bytes field
    cdef public object clock
    cdef public bytes raw
    cdef public _Verified verified
    cdef public _Grant grant
    cpdef bint repeated(self, AuthRequest req, double now) except -1
    cpdef remember(self, AuthRequest req, _Verified verified, _Grant grant)
