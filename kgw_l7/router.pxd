# Cython declarations for kgw_l7/router.py (the source of truth; see scripts/build_ext.py).
# Each class with __slots__ becomes an extension type whose slots are C struct fields:
# attribute access on the per-request path is a pointer offset instead of a descriptor
# lookup. Fields are ``object`` or one of these extension types, and methods called on the
# hot path are ``cpdef`` (a C call between compiled modules); behaviour is the same
# compiled or not, which `make test` checks by running tests/l7 both ways.

cimport cython
from kgw_l7.balance cimport Balancer, KeySource
from kgw_l7.ratelimit cimport LocalLimit

cdef class HeaderOps:
    cdef public object drop
    cdef public object append
    cpdef apply(self, headers)

cdef class PathAction:
    cdef public object full
    cdef public object value

cdef class RedirectAction:
    cdef public object scheme
    cdef public object hostname
    cdef public object port
    cdef public object path
    cdef public object status

cdef class CorsPolicy:
    cdef public object any_origin
    cdef public object exact
    cdef public object patterns
    cdef public object methods
    cdef public object any_method
    cdef public object headers
    cdef public object any_header
    cdef public object expose
    cdef public object credentials
    cdef public object max_age

cdef class CompiledFilters:
    cdef public object req_ops
    cdef public object resp_ops
    cdef public object redirect
    cdef public object rewrite_host
    cdef public object rewrite_path
    cdef public object mirrors
    cdef public object cors
    cdef public object ext_auth

cdef class CompiledBackend:
    cdef public object name
    cdef public object weight
    cdef public object endpoints
    cdef public object protocol
    cdef public object tls
    cdef public object error_status
    cdef public object req_ops
    cdef public object resp_ops
    cdef public object _rr
    cdef public object record
    cdef public object filters
    cdef public bint h2
    cdef public Balancer balancer
    cdef public object breaker
    cdef public KeySource keys
    cdef public bint fast
    @cython.locals(bal=Balancer)
    cpdef pick(self, key=*)
    cpdef usable(self, endpoint)
    cpdef pick_untried(self, list tried, key=*)

cdef class CompiledPolicy:
    cdef public Py_ssize_t max_body_size
    cdef public Py_ssize_t max_headers
    cdef public LocalLimit local_limit
    cdef public object global_limit

cdef class CompiledRule:
    cdef public dict head_suffix_for
    cdef public object name
    cdef public object route
    cdef public object gateway
    cdef public object filters
    cdef public object backends
    cdef public object _cum
    cdef public object _total
    cdef public object direct_status
    cdef public object request_timeout
    cdef public object backend_timeout
    cdef public object retry_attempts
    cdef public object retry_codes
    cdef public object retry_backoff
    cdef public object needs_body_copy
    cdef public dict resp_ops_for
    cdef public object _schedule
    cdef public object _pos
    cdef public bint no_deadline
    cdef public bint default_timeout
    cdef public object session
    cdef public bint proxy_send
    cdef public CompiledPolicy policy
    cdef public object auth
    cpdef pick_backend(self)

cdef class CompiledRoute:
    cdef public object path_kind
    cdef public object path
    cdef public object path_slash
    cdef public object regex
    cdef public object method
    cdef public object headers
    cdef public object query
    cdef public object rule
    cdef public object matched_prefix
    cdef public object cookie_path
    cpdef matches(self, path, method, headers, query)

cdef class CompiledVirtualHost:
    cdef public object hostname
    cdef public object routes
    @cython.locals(route=CompiledRoute)
    cpdef find(self, path, method, headers, query)

cdef class ListenerRouter:
    cdef public dict exact
    cdef public object wildcards
    cdef public object catch_all
    cdef public object listener
    @cython.locals(host=bytes, vh=CompiledVirtualHost, suffix=bytes)
    cpdef vhost(self, host)

@cython.locals(target=bytes, q=Py_ssize_t)
cpdef tuple split_target(target)
