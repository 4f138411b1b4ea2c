cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize

@cython.locals(v=cython.ulonglong)
cdef bytes _span_id()

# The id generator (SplitMix64) on C integers: its state and constants.
cdef unsigned long long _M64
cdef unsigned long long _GOLDEN
cdef unsigned long long _MIX1
cdef unsigned long long _MIX2
cdef unsigned long long _state

@cython.locals(z=cython.ulonglong)
cdef unsigned long long _random64() noexcept

cpdef bint valid_ids(unsigned long long hi, unsigned long long lo, unsigned long long span)


# The traceparent value written straight into its 55 bytes (the interpreted form: a %x
# format, kgw_l7/tracing.py).
cdef inline void _hex64(char *p, unsigned long long v) noexcept:
    cdef const char *digits = b"0123456789abcdef"
    cdef int i
    for i in range(15, -1, -1):
        p[i] = digits[v & 15]
        v >>= 4


cdef inline bytes _hex16(unsigned long long v):
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 16)
    _hex64(PyBytes_AS_STRING(out), v)
    return out


cdef inline bytes _traceparent(unsigned long long hi, unsigned long long lo,
                               unsigned long long span, bint sampled):
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 55)
    cdef char *p = PyBytes_AS_STRING(out)
    p[0] = 48
    p[1] = 48
    p[2] = 45
    _hex64(p + 3, hi)
    _hex64(p + 19, lo)
    p[35] = 45
    _hex64(p + 36, span)
    p[52] = 45
    p[53] = 48
    p[54] = 49 if sampled else 48
    return out


# The request path's record of a trace as C fields (kgw_l7/tracing.py says what they hold):
# attribute sets on a Python object cost more than the rest of an unsampled trace.

cdef class Trace:
    cdef public object trace_id
    cdef public object parent_id
    cdef public object span_id
    cdef public bint sampled
    cdef public object tracestate
    cdef public bint had_context
    cdef public object start
    cdef public object tries
    cdef public object retries
    cdef public object try_span
    cdef public object line
    cdef public Py_ssize_t ntries
    cdef public object tracer

@cython.locals(hi=cython.ulonglong, lo=cython.ulonglong, span=cython.ulonglong,
               bound=cython.ulonglong, tp=bytes)
cdef Trace _new_trace(object tracer, bint had)

@cython.locals(tr=Trace)
cdef Trace _make(object trace_id, object parent_id, bint sampled, object tracestate,
                 bint had, object try_span, object tracer, object tp)
