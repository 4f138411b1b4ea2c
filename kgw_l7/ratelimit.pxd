# Cython declarations for kgw_l7/ratelimit.py (the source of truth; see scripts/build_ext.py).
# The three C functions are what the interpreted module does with ctypes and a file lock:
# compiled, the table's words are loaded and swapped with the C11 atomic builtins, so the
# workers (separate processes) share buckets without a lock.

cimport cython
from libc.stdint cimport int64_t, uint64_t

cdef extern from *:
    """
    #include <stdint.h>
    #include <time.h>
    #define KGW_RL_HEADER 64
    static inline uint64_t kgw_load(size_t addr, Py_ssize_t i) {
        return __atomic_load_n((uint64_t *)(addr + KGW_RL_HEADER) + i, __ATOMIC_ACQUIRE);
    }
    static inline int kgw_cas(size_t addr, Py_ssize_t i, uint64_t expected,
                              uint64_t desired) {
        return __atomic_compare_exchange_n((uint64_t *)(addr + KGW_RL_HEADER) + i, &expected,
                                           desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    }
    static inline uint64_t kgw_monotonic_us(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    }
    """
    uint64_t kgw_load(size_t addr, Py_ssize_t i) nogil
    bint kgw_cas(size_t addr, Py_ssize_t i, uint64_t expected, uint64_t desired) nogil
    uint64_t kgw_monotonic_us() nogil

cdef int _TAG_SHIFT
cdef uint64_t _TAT_MASK
cdef object _HASH_MASK

cdef class SharedBuckets:
    cdef public object mm
    cdef public size_t addr
    cdef public uint64_t mask
    cdef public uint64_t base
    cdef public bytes secret
    cdef public object salt
    cdef public int fd
    cdef public Py_ssize_t full
    cdef public object _view
    cpdef uint64_t key_hash(self, bytes key, object salt=*) except? 0
    cpdef object scope_salt(self, bytes scope)
    cpdef int64_t take(self, uint64_t h, int64_t emission, int64_t tau) except? -1
    @cython.locals(addr=size_t, mask=uint64_t, tag=uint64_t, start=uint64_t, now=int64_t,
                   slot=int64_t, free=int64_t, old=uint64_t, w=uint64_t, i=uint64_t,
                   p=int, tat=int64_t, new_tat=int64_t)
    cdef int64_t _take(self, uint64_t h, int64_t emission, int64_t tau) except? -1

cdef class LocalLimit:
    cdef public int64_t emission
    cdef public int64_t tau
    cdef public int key
    cdef public bytes header
    cdef public int hops
    cdef public bytes scope
    cdef public object salt
    cdef public uint64_t fixed
    cdef public bytes policy_header
    cdef public object name
    cdef public SharedBuckets table
    cdef public list claim
    cdef public bint after_auth
    cpdef uint64_t bucket(self, tuple headers, bytes peer) except? 0
    cpdef int64_t take(self, tuple headers, bytes peer) except? -1
    cpdef int64_t take_value(self, bytes value) except? -1
    cpdef list refusal_headers(self, int64_t wait_us)

cpdef bytes client_ip(tuple headers, bytes peer, int hops)
