cdef bytes _ids()
cdef bytes _span_id()

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
