# Cython declarations for kgw_l7/exchange.py (the source of truth; see scripts/build_ext.py).
# Each class with __slots__ becomes an extension type whose slots are C struct fields:
# attribute access on the per-request path is a pointer offset instead of a descriptor
# lookup. Fields are ``object`` or one of these extension types, and methods called on the
# hot path are ``cpdef`` (a C call between compiled modules); behaviour is the same
# compiled or not, which `make test` checks by running tests/l7 both ways.

cimport cython
from kgw_l7.context cimport ListenerState, WorkerContext
from kgw_l7.events cimport RequestHead, ResponseHead
from kgw_l7.router cimport (CompiledBackend, CompiledFilters, CompiledRoute, CompiledRule,
                            CompiledVirtualHost, HeaderOps, ListenerRouter, split_target)
from kgw_l7.streams cimport PAUSE_BODY, PAUSE_UPSTREAM, DownstreamStream
from kgw_l7.upstream cimport UpstreamConn

cdef class _RequestIds:
    cdef public object _fmt
    cdef public unsigned long long _n
    cdef public bytes _high
    @cython.locals(n=cython.ulonglong, low=cython.uint)
    cpdef next(self)

cdef tuple _HEX_BYTE

cdef _RequestIds _REQUEST_IDS

cdef class Exchange:
    cdef public DownstreamStream conn
    cdef public RequestHead head
    cdef public WorkerContext ctx
    cdef public double start_time
    cdef public double wall_start
    cdef public object body_buf
    cdef public Py_ssize_t buf_size
    cdef public object retained
    cdef public Py_ssize_t received
    cdef public bint request_done
    cdef public object trailers
    cdef public UpstreamConn upstream
    cdef public bint streaming
    cdef public bint chunked_up
    cdef public object head_fut
    cdef public object done_fut
    cdef public object early
    cdef public bint committed
    cdef public bint down_chunked
    cdef public bint close_after
    cdef public int status
    cdef public Py_ssize_t sent
    cdef public CompiledRule rule
    cdef public object backend_name
    cdef public object upstream_host
    cdef public object flags
    cdef public object resp_extra
    cdef public object resp_ops
    cdef public object task
    cdef public bint client_lost
    cdef public object request_id
    cdef public object body_waiters
    cdef public object resp_body
    cdef public bint finished
    cdef public bint up_done
    cdef public bint released
    cdef public object fast
    cdef public object detail
    cpdef on_request_body(self, data)
    cpdef on_request_end(self, trailers)
    @cython.locals(rule=CompiledRule, backend=CompiledBackend)
    cpdef start(self)
    cpdef _fast_failed(self, status, reason)
    @cython.locals(rule=CompiledRule, head=RequestHead, listener=ListenerState)
    cpdef finish(self)
    cpdef respond(self, status, body=*, extra=*)
    @cython.locals(rule=CompiledRule, backend=CompiledBackend, route=CompiledRoute,
                   filters=CompiledFilters, bf=CompiledFilters, router=ListenerRouter,
                   vhost=CompiledVirtualHost, listener=ListenerState, head=RequestHead)
    cpdef route(self)
    @cython.locals(rule=CompiledRule, backend=CompiledBackend, route=CompiledRoute,
                   bf=CompiledFilters, ops=HeaderOps, out=list, h=tuple, head=RequestHead)
    cpdef upstream_headers(self, route, rule, backend)
    @cython.locals(rule=CompiledRule, backend=CompiledBackend, route=CompiledRoute,
                   filters=CompiledFilters, bf=CompiledFilters, head=RequestHead)
    cpdef prepare(self, route, rule, backend, path, query)
    cpdef UpstreamConn detach(self)
    cpdef send(self, UpstreamConn up, request_head, first)
    @cython.locals(i=Py_ssize_t, events=list, early=list)
    cpdef on_upstream_events(self, up, events)
    cpdef _done(self)
    @cython.locals(raw=bytes, end=Py_ssize_t, h=tuple, head=RequestHead)
    cpdef head_as_received(self, suffix)
    @cython.locals(head=RequestHead)
    cpdef commit(self, ResponseHead resp)

cdef class _Discard:
    cdef public object done
