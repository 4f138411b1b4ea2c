# Cython declarations for kgw_l7/exchange.py (the source of truth; see scripts/build_ext.py).
# Each class with __slots__ becomes an extension type whose slots are C struct fields:
# attribute access on the per-request path is a pointer offset instead of a descriptor
# lookup. Fields are ``object`` or one of these extension types, and methods called on the
# hot path are ``cpdef`` (a C call between compiled modules); behaviour is the same
# compiled or not, which `make test` checks by running tests/l7 both ways (and
# tests/l7/test_exchange_phases.py checks that the enums below match the .py's).

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int64_t
from libc.string cimport memcmp, memcpy
from kgw_l7.ratelimit cimport LocalLimit
from kgw_l7.context cimport ListenerState, WorkerContext
from kgw_l7.events cimport RequestHead, ResponseHead
from kgw_l7.tracing cimport Trace
from kgw_l7.auth cimport AuthPipeline, AuthRequest, new_request
from kgw_l7.h1 cimport usual_spelling
from kgw_l7.router cimport (CompiledBackend, CompiledFilters, CompiledPolicy, CompiledRoute,
                            CompiledRule,
                            CompiledVirtualHost, HeaderOps, ListenerRouter, split_target)
from kgw_l7.streams cimport (PAUSE_BODY, PAUSE_UPSTREAM, DownstreamStream, OutRequest,
                             UpstreamOwner, UpstreamStream, out_request)

# The phases and events of exchange.py's tables (the same names and values).
cpdef enum RequestPhase:
    BUFFERING = 0
    STREAMING = 1
    DISCARDING = 2
    RECEIVED = 3
    LOST = 4

cpdef enum RequestEvent:
    SEND = 0
    DETACH = 1
    END = 2
    DISCARD = 3
    LOSE = 4

cpdef enum ResponsePhase:
    QUEUED = 0
    AWAITING = 1
    SENDING = 2
    RELAYED = 3
    ANSWERED = 4
    DONE = 5
    RELEASED = 6

cpdef enum ResponseEvent:
    FORWARD = 0
    RESPOND = 1
    COMMIT = 2
    COMPLETE = 3
    FINISH = 4
    RELEASE = 5

cdef const unsigned char[::1] _REQUEST_NEXT
cdef const unsigned char[::1] _RESPONSE_NEXT

cdef class _RequestIds:
    cdef public object _fmt
    cdef public unsigned long long _n
    cdef public bytes _high
    @cython.locals(n=cython.ulonglong, low=cython.uint)
    cpdef next(self)

cdef tuple _HEX_BYTE

cdef _RequestIds _REQUEST_IDS

cdef class Exchange(UpstreamOwner):
    cdef public DownstreamStream down
    cdef public RequestHead head
    cdef public WorkerContext ctx
    cdef public int req
    cdef public int resp
    cdef public double start_time
    cdef public double wall_start
    cdef public list body_buf
    cdef public Py_ssize_t buf_size
    cdef public object retained
    cdef public Py_ssize_t received
    cdef public tuple trailers
    cdef public UpstreamStream upstream
    cdef public OutRequest out
    cdef public CompiledBackend backend
    cdef public object head_fut
    cdef public object done_fut
    cdef public object early
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
    cdef public object request_id
    cdef public object body_waiters
    cdef public object detail
    cdef public UpstreamStream watch_up
    cdef public Py_ssize_t watch_reads
    cdef public double watch_since
    cdef public bint tunneled
    cdef public bint grpc
    cdef public double grpc_deadline
    cdef public bint resp_trailers
    cdef public object session
    cdef public object pinned
    cdef public bytes cookie_path
    cdef public Trace trace
    cdef public object lb_key
    cdef public Py_ssize_t body_limit
    cdef public object refusal
    cdef public object auth
    cdef public object auth_wait
    cdef public object auth_ops
    cdef public Py_ssize_t auth_body
    cdef public bint continued
    @cython.locals(after=int)
    cdef _request_to(self, int event)
    @cython.locals(after=int)
    cdef _response_to(self, int event)
    @cython.locals(n=Py_ssize_t, req=int)
    cpdef on_request_body(self, data)
    @cython.locals(streaming=bint)
    cpdef on_request_end(self, trailers)
    cdef _wake_body_waiters(self)
    cpdef on_client_lost(self)
    cpdef on_downstream_pause(self, bint paused)
    @cython.locals(up=UpstreamStream)
    cpdef bint sweep(self, double now, double client_idle, double idle_timeout,
                     double response_timeout) except -1
    @cython.locals(rule=CompiledRule, backend=CompiledBackend, up=UpstreamStream,
                   listener=ListenerState)
    cpdef start(self)
    @cython.locals(up=UpstreamStream)
    cpdef _fast_failed(self, status, reason)
    @cython.locals(rule=CompiledRule, head=RequestHead, listener=ListenerState,
                   relayed=bint, lost=bint, up=UpstreamStream)
    cpdef finish(self)
    cdef _release(self)
    @cython.locals(headers=list, data=list)
    cpdef respond(self, status, body=*, extra=*)
    @cython.locals(headers=list)
    cpdef respond_grpc(self, int status, bytes body, extra)
    cpdef grpc_head(self)
    cpdef deadline_trailers(self)
    @cython.locals(rule=CompiledRule, backend=CompiledBackend, route=CompiledRoute,
                   filters=CompiledFilters, bf=CompiledFilters, router=ListenerRouter,
                   vhost=CompiledVirtualHost, listener=ListenerState, head=RequestHead,
                   down=DownstreamStream, auth=AuthPipeline, areq=AuthRequest)
    cpdef route(self)
    @cython.locals(policy=CompiledPolicy, rl=LocalLimit, head=RequestHead,
                   listener=ListenerState, filters=CompiledFilters, backend=CompiledBackend,
                   bf=CompiledFilters)
    cpdef routed(self, CompiledRoute route, CompiledRule rule, path, query, claims)
    @cython.locals(head=RequestHead, limit=Py_ssize_t, rl=LocalLimit)
    cpdef bint police(self, CompiledPolicy policy) except -1
    cpdef bint limited(self, LocalLimit rl, int64_t left) except -1
    @cython.locals(rule=CompiledRule, backend=CompiledBackend, route=CompiledRoute,
                   bf=CompiledFilters, ops=HeaderOps, out=list, h=tuple, head=RequestHead,
                   down=DownstreamStream, listener=ListenerState)
    cpdef upstream_headers(self, route, rule, backend)
    @cython.locals(rule=CompiledRule, backend=CompiledBackend, route=CompiledRoute,
                   filters=CompiledFilters, bf=CompiledFilters, head=RequestHead,
                   out=OutRequest, auth=AuthRequest)
    cpdef prepare(self, route, rule, backend, path, query)
    @cython.locals(up=UpstreamStream)
    cpdef UpstreamStream detach(self)
    cpdef send(self, UpstreamStream up, bint first)
    @cython.locals(i=Py_ssize_t, early=list)
    cpdef on_upstream_events(self, UpstreamStream up, list events)
    @cython.locals(resp=int)
    cpdef on_upstream_event(self, UpstreamStream up, ev)
    @cython.locals(resp=int)
    cpdef on_upstream_lost(self, UpstreamStream up)
    @cython.locals(up=UpstreamStream)
    cpdef on_upstream_timeout(self, timeout)
    cpdef on_upstream_pause(self, bint paused)
    cpdef _done(self)
    @cython.locals(raw=bytes, end=Py_ssize_t, h=tuple, head=RequestHead, block=bytes,
                   headers=tuple)
    cpdef head_as_received(self, suffix, remove=*)
    @cython.locals(head=RequestHead, up=UpstreamStream, data=list, end=bint, broken=bint)
    cpdef bint commit(self, ResponseHead resp) except -1
    cpdef start_tunnel(self, UpstreamStream up, data)
    @cython.locals(rule=CompiledRule)
    cpdef tunnel_closed(self, Py_ssize_t from_client, Py_ssize_t to_client)

cdef class _Discard(UpstreamOwner):
    cdef public object done

# (a C global: ``in`` is a set lookup in C, not a module-dict lookup and a generic call)
cdef frozenset _REBUILD_HEAD

cdef extern from "<string.h>" nogil:
    # (glibc: Python.h defines _GNU_SOURCE before string.h is first included)
    void *memmem(const void *haystack, size_t haystacklen, const void *needle,
                 size_t needlelen)

# The cut of a token's line works on the received head's bytes in C: a bytes method
# call (find, startswith, a slice) costs ~1k instructions of argument parsing and
# object handling, more than the search or comparison it makes.

# raw.find(needle, start, end) for 0 <= start.
cdef inline Py_ssize_t _find(bytes raw, bytes needle, Py_ssize_t start, Py_ssize_t end):
    cdef const char *base = PyBytes_AS_STRING(raw)
    cdef const char *p
    cdef Py_ssize_t n = PyBytes_GET_SIZE(needle)
    if end > PyBytes_GET_SIZE(raw):
        end = PyBytes_GET_SIZE(raw)
    if end - start < n:
        return -1
    p = <const char *>memmem(base + start, <size_t>(end - start), PyBytes_AS_STRING(needle),
                             <size_t>n)
    return -1 if p == NULL else p - base

# raw.startswith(needle, at) for 0 <= at.
cdef inline bint _starts(bytes raw, bytes needle, Py_ssize_t at):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(needle)
    if at + n > PyBytes_GET_SIZE(raw):
        return False
    return memcmp(PyBytes_AS_STRING(raw) + at, PyBytes_AS_STRING(needle), <size_t>n) == 0

# raw[:at] + raw[end:size] for 0 <= at <= end <= size <= len(raw): one allocation.
cdef inline bytes _cut(bytes raw, Py_ssize_t at, Py_ssize_t end, Py_ssize_t size):
    cdef bytes out = PyBytes_FromStringAndSize(NULL, at + size - end)
    cdef char *dst = PyBytes_AS_STRING(out)
    cdef const char *src = PyBytes_AS_STRING(raw)
    memcpy(dst, src, <size_t>at)
    memcpy(dst + at, src + end, <size_t>(size - end))
    return out

@cython.locals(at=Py_ssize_t, size=Py_ssize_t, pos=Py_ssize_t, start=Py_ssize_t,
               end=Py_ssize_t, colon=Py_ssize_t, n=bytes, v=bytes, key=bytes)
cpdef object _without_fields(bytes block, tuple headers, object names)

@cython.locals(headers=tuple, size=Py_ssize_t, found=tuple, count=Py_ssize_t, at=Py_ssize_t,
               h=tuple, n=bytes, end=Py_ssize_t, block=bytes)
cpdef object _head_without(bytes raw, RequestHead head, object remove)
@cython.locals(n=bytes, v=bytes, spelled=bytes, at=Py_ssize_t, pos=Py_ssize_t,
               end=Py_ssize_t, c=cython.uchar, p=cython.p_uchar)
cpdef object _field_cut(bytes raw, Py_ssize_t size, tuple field, Py_ssize_t guess=*)
