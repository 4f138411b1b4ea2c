# Cython declarations for kgw_l7/accesslog.py (the source of truth; see scripts/build_ext.py).
# The formatter's loop runs on C ints, and the escaping checks are C loops over the
# bytes; AccessLog.log is a C call from the exchange (context.pxd types the field).

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memcpy

from kgw_l7.events cimport RequestHead

# kgw_l7.logformat's operator codes (the same names and values; tests/l7/test_accesslog.py).
cdef enum LogOp:
    LITERAL = 0
    START_TIME = 1
    METHOD = 2
    PATH = 3
    PROTOCOL = 4
    RESPONSE_CODE = 5
    RESPONSE_FLAGS = 6
    RESPONSE_CODE_DETAILS = 7
    LISTENER = 8
    BYTES_RECEIVED = 9
    BYTES_SENT = 10
    DURATION = 11
    UPSTREAM_HOST = 12
    REQUEST_ID = 13
    AUTHORITY = 14
    ROUTE_NAME = 15
    DOWNSTREAM_REMOTE_ADDRESS = 16
    DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT = 17
    HEADER = 18
    REDACTED = 19

# The line's parts into one bytes object: their sizes summed, one allocation, a memcpy
# each (bytes.join, for a list of ~37 short parts, costs ~100 instructions a part).
@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline bytes _join(list parts, Py_ssize_t n):
    cdef Py_ssize_t i, size, total
    cdef bytes part, out
    cdef char *dst
    total = PyBytes_GET_SIZE(<bytes>parts[0])  # (n >= 1: a line ends with its newline)
    for i in range(1, n):
        total += PyBytes_GET_SIZE(<bytes>parts[i])
    out = PyBytes_FromStringAndSize(NULL, total)
    dst = PyBytes_AS_STRING(out)
    for i in range(n):
        part = <bytes>parts[i]
        size = PyBytes_GET_SIZE(part)
        memcpy(dst, PyBytes_AS_STRING(part), size)
        dst += size
    return out

cdef tuple _NUMBERS
cdef tuple _MILLIS
cdef tuple _HEX

cdef bytes _CLEAN

@cython.locals(c=cython.uchar, t=cython.p_uchar)
cpdef bint json_clean(bytes v)

@cython.locals(c=cython.uchar, out=bytearray)
cpdef bytes json_escape(bytes v)

@cython.locals(c=cython.uchar, t=cython.p_uchar)
cpdef bint text_clean(bytes v)

@cython.locals(c=cython.uchar, out=bytearray)
cpdef bytes text_escape(bytes v)

cdef class Formatter:
    cdef public bint json
    cdef public bytes ops
    cdef public Py_ssize_t slots
    cdef public list args
    cdef public list lits
    cdef public tuple ends
    cdef public long long _sec
    cdef public bytes _stamp
    cdef public dict _names
    cdef public dict _protocols
    @cython.locals(sec=cython.longlong, ms=cython.int)
    cpdef bytes stamp(self, double start)
    cpdef bytes _name(self, key)
    @cython.locals(ops=bytes, args=list, lits=list, parts=list, i=Py_ssize_t, j=Py_ssize_t,
                   code=cython.uchar, prev=cython.int, name=bytes, raw=bytes, done=bytes,
                   is_json=bint, number=bint, h=tuple)
    cpdef bytes line(self, double start, RequestHead head, int status, Py_ssize_t received,
                     Py_ssize_t sent, double duration, upstream, route, bytes request_id,
                     flags, listener, details, bytes remote)

cdef class LogSettings:
    cdef public Formatter formatter
    cdef public int min_status
    cdef public double sample
    cdef public bint off

cdef class AccessLog:
    cdef public Formatter formatter
    cdef public int min_status
    cdef public double sample
    cdef public object target
    cdef public list _chunk
    cdef public Py_ssize_t _lines
    cdef public Py_ssize_t _size
    cdef public object _pending
    cdef public Py_ssize_t _pending_bytes
    cdef public object _cond
    cdef public object _thread
    cdef public bint _closed
    cdef public int _fd
    cdef public bint _pipe
    cdef public object _failing
    cdef public dict dropped
    cdef public Py_ssize_t write_errors
    cdef public Py_ssize_t lines
    cdef public bint _full
    cdef public object _sink
    cdef public str name
    cdef public str counter
    @cython.locals(line=bytes, formatter=Formatter, min_status=int, sample=double)
    cpdef log(self, double start, RequestHead head, int status, Py_ssize_t received,
              Py_ssize_t sent, double duration, upstream, route, bytes request_id,
              flags, listener, details, bytes remote, LogSettings settings=*)
    cpdef append(self, bytes line)
    cpdef flush(self)

cpdef bytes _number(long long n)
