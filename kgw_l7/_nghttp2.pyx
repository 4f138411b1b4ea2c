# cython: language_level=3
"""HPACK (RFC 7541) from libnghttp2: ``Deflater`` and ``Inflater``, drop-in replacements
for the ``hpack`` package's ``Encoder`` and ``Decoder`` as the ``h2`` library uses them.

Why: hpack is pure Python, and encoding a response head and decoding a request head were
a large part of the instructions an HTTP/2 request cost kgw (bench/results/h2.md). nghttp2
is the C library curl, nginx's peers and Apache use; its ``nghttp2_hd_*`` API is a
sans-IO HPACK context, so it fits under h2's state machine unchanged. Only
``kgw_l7.hpack_codec`` imports this module (and only for the compiled build); the
interface is hpack's, errors included (``HPACKDecodingError``, ``OversizedHeaderListError``,
which h2 turns into a connection error).

Built by scripts/build_ext.py (``-lnghttp2``, Debian ``libnghttp2-dev``).
"""

from libc.stdint cimport uint8_t
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, \
    PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc

from hpack import Decoder, HeaderTuple, NeverIndexedHeaderTuple
from hpack.exceptions import HPACKDecodingError, InvalidTableSizeError, \
    OversizedHeaderListError

cdef extern from "nghttp2/nghttp2.h":
    ctypedef struct nghttp2_hd_deflater:
        pass
    ctypedef struct nghttp2_hd_inflater:
        pass
    ctypedef struct nghttp2_nv:
        uint8_t *name
        uint8_t *value
        size_t namelen
        size_t valuelen
        uint8_t flags
    enum:
        NGHTTP2_NV_FLAG_NONE
        NGHTTP2_NV_FLAG_NO_INDEX
        NGHTTP2_HD_INFLATE_FINAL
        NGHTTP2_HD_INFLATE_EMIT
    int nghttp2_hd_deflate_new(nghttp2_hd_deflater **deflater_ptr,
                               size_t max_deflate_dynamic_table_size)
    void nghttp2_hd_deflate_del(nghttp2_hd_deflater *deflater)
    int nghttp2_hd_deflate_change_table_size(nghttp2_hd_deflater *deflater,
                                             size_t settings_max_dynamic_table_size)
    Py_ssize_t nghttp2_hd_deflate_hd(nghttp2_hd_deflater *deflater, uint8_t *buf,
                                     size_t buflen, const nghttp2_nv *nva, size_t nvlen)
    size_t nghttp2_hd_deflate_bound(nghttp2_hd_deflater *deflater, const nghttp2_nv *nva,
                                    size_t nvlen)
    int nghttp2_hd_inflate_new(nghttp2_hd_inflater **inflater_ptr)
    void nghttp2_hd_inflate_del(nghttp2_hd_inflater *inflater)
    int nghttp2_hd_inflate_change_table_size(nghttp2_hd_inflater *inflater,
                                             size_t settings_max_dynamic_table_size)
    Py_ssize_t nghttp2_hd_inflate_hd2(nghttp2_hd_inflater *inflater, nghttp2_nv *nv_out,
                                      int *inflate_flags, const uint8_t *input,
                                      size_t inlen, int in_final)
    int nghttp2_hd_inflate_end_headers(nghttp2_hd_inflater *inflater)
    size_t nghttp2_hd_inflate_get_dynamic_table_size(nghttp2_hd_inflater *inflater)
    size_t nghttp2_hd_inflate_get_max_dynamic_table_size(nghttp2_hd_inflater *inflater)
    size_t nghttp2_hd_inflate_get_num_table_entries(nghttp2_hd_inflater *inflater)
    const nghttp2_nv *nghttp2_hd_inflate_get_table_entry(nghttp2_hd_inflater *inflater,
                                                         size_t idx)
    size_t nghttp2_hd_deflate_get_dynamic_table_size(nghttp2_hd_deflater *deflater)
    const char *nghttp2_strerror(int lib_error_code)

#: The HPACK table size both ends start with (RFC 9113 §6.5.2), and the most this encoder
#: keeps whatever a peer allows: a bigger table costs memory per connection for little.
DEFAULT_TABLE_SIZE = 4096
#: hpack's default bound on a decoded header list (h2 sets its own).
DEFAULT_MAX_HEADER_LIST_SIZE = 2 ** 16
#: Header blocks from this size on are decoded by hpack (``Inflater.decode``): nghttp2
#: refuses any field longer than 64 KiB (NGHTTP2_HD_MAX_NV) as a compression error, which
#: ends the connection, where kgw answers a large but bounded header list with 431. A
#: shorter block cannot carry such a field (Huffman codes are 5 bits at least, names
#: taken from the 4 KiB table).
LARGE_BLOCK = 32 * 1024


cdef bytes _as_bytes(object s):
    if type(s) is bytes:
        return <bytes>s
    if isinstance(s, str):
        return (<str>s).encode("utf-8")
    return bytes(s)


cdef class Deflater:
    """hpack's ``Encoder``: ``encode(headers)`` -> one header block; setting
    ``header_table_size`` (the peer's SETTINGS_HEADER_TABLE_SIZE) makes the next block
    start with a table size update. Fields given as hpack's ``NeverIndexedHeaderTuple``
    or as ``(name, value, True)`` are sent never-indexed (RFC 7541 §6.2.3)."""

    cdef nghttp2_hd_deflater *ctx
    cdef size_t table_size

    def __cinit__(self):
        if nghttp2_hd_deflate_new(&self.ctx, DEFAULT_TABLE_SIZE) != 0:
            raise MemoryError()
        self.table_size = DEFAULT_TABLE_SIZE

    def __dealloc__(self):
        if self.ctx is not NULL:
            nghttp2_hd_deflate_del(self.ctx)
            self.ctx = NULL

    @property
    def header_table_size(self):
        return self.table_size

    @header_table_size.setter
    def header_table_size(self, value):
        cdef int rv = nghttp2_hd_deflate_change_table_size(self.ctx, value)
        if rv != 0:
            raise InvalidTableSizeError(nghttp2_strerror(rv).decode())
        self.table_size = value

    def encode(self, headers, huffman=True):
        """One header block for ``headers`` (an iterable of 2- or 3-tuples, or a dict).
        nghttp2 Huffman-codes every string whose code is shorter; ``huffman`` is
        accepted for hpack's signature."""
        cdef list keep = []
        cdef Py_ssize_t n, i
        cdef nghttp2_nv *nva
        cdef bytes name, value, out
        cdef Py_ssize_t written
        cdef size_t bound
        if isinstance(headers, dict):
            headers = list(headers.items())
        elif not isinstance(headers, (list, tuple)):
            headers = list(headers)
        n = len(headers)
        nva = <nghttp2_nv *>PyMem_Malloc(max(n, 1) * sizeof(nghttp2_nv))
        if nva is NULL:
            raise MemoryError()
        try:
            for i in range(n):
                h = headers[i]
                name = _as_bytes(h[0])
                value = _as_bytes(h[1])
                keep.append(name)
                keep.append(value)
                nva[i].name = <uint8_t *>PyBytes_AS_STRING(name)
                nva[i].namelen = PyBytes_GET_SIZE(name)
                nva[i].value = <uint8_t *>PyBytes_AS_STRING(value)
                nva[i].valuelen = PyBytes_GET_SIZE(value)
                if isinstance(h, HeaderTuple):
                    sensitive = not h.indexable
                else:
                    sensitive = len(h) > 2 and h[2]
                nva[i].flags = NGHTTP2_NV_FLAG_NO_INDEX if sensitive else NGHTTP2_NV_FLAG_NONE
            bound = nghttp2_hd_deflate_bound(self.ctx, nva, n)
            out = PyBytes_FromStringAndSize(NULL, bound)
            written = nghttp2_hd_deflate_hd(self.ctx, <uint8_t *>PyBytes_AS_STRING(out),
                                            bound, nva, n)
        finally:
            PyMem_Free(nva)
        if written < 0:
            # (only out of memory or a broken context: no input is refused)
            raise RuntimeError("nghttp2 HPACK: " + nghttp2_strerror(<int>written).decode())
        return out[:written]


cdef class Inflater:
    """hpack's ``Decoder``: ``decode(block)`` -> the list of ``(name, value)`` byte
    tuples (never-indexed fields as ``NeverIndexedHeaderTuple``). A block decoding to
    more than ``max_header_list_size`` (RFC 7541 §4.1 sizes) raises
    ``OversizedHeaderListError`` as soon as it is exceeded; any error leaves the context
    unusable, as for hpack: the connection must end (h2 does so)."""

    cdef nghttp2_hd_inflater *ctx
    cdef public Py_ssize_t max_header_list_size
    cdef size_t allowed_table_size
    #: hpack's decoder, with nghttp2's dynamic table copied, from the first block of
    #: ``LARGE_BLOCK`` bytes on (the connection's decoding stays with it).
    cdef object fallback

    def __cinit__(self, max_header_list_size=DEFAULT_MAX_HEADER_LIST_SIZE):
        if nghttp2_hd_inflate_new(&self.ctx) != 0:
            raise MemoryError()
        self.max_header_list_size = max_header_list_size
        self.allowed_table_size = DEFAULT_TABLE_SIZE

    def __dealloc__(self):
        if self.ctx is not NULL:
            nghttp2_hd_inflate_del(self.ctx)
            self.ctx = NULL

    @property
    def max_allowed_table_size(self):
        """The SETTINGS_HEADER_TABLE_SIZE this side announced (and the peer
        acknowledged): a table size update above it is a decoding error."""
        return self.allowed_table_size

    @max_allowed_table_size.setter
    def max_allowed_table_size(self, value):
        cdef int rv = nghttp2_hd_inflate_change_table_size(self.ctx, value)
        if rv != 0:
            raise InvalidTableSizeError(nghttp2_strerror(rv).decode())
        self.allowed_table_size = value
        if self.fallback is not None:
            self.fallback.max_allowed_table_size = value

    @property
    def header_table_size(self):
        """The dynamic table's current size in bytes (entries + 32 each)."""
        if self.fallback is not None:
            return self.fallback.header_table._current_size
        return nghttp2_hd_inflate_get_dynamic_table_size(self.ctx)

    def _hand_over(self):
        """hpack's decoder in the state nghttp2's is in: the same table size limits and
        dynamic table entries (added oldest first)."""
        cdef size_t idx
        cdef const nghttp2_nv *nv
        dec = Decoder(self.max_header_list_size)
        dec.max_allowed_table_size = self.allowed_table_size
        dec.header_table_size = nghttp2_hd_inflate_get_max_dynamic_table_size(self.ctx)
        idx = nghttp2_hd_inflate_get_num_table_entries(self.ctx)
        while idx > 61:
            nv = nghttp2_hd_inflate_get_table_entry(self.ctx, idx)
            dec.header_table.add(PyBytes_FromStringAndSize(<char *>nv.name, nv.namelen),
                                 PyBytes_FromStringAndSize(<char *>nv.value, nv.valuelen))
            idx -= 1
        self.fallback = dec

    def decode(self, data, raw=True):
        """``raw`` False decodes names and values as UTF-8 (hpack's default); h2 passes
        True."""
        cdef bytes block = _as_bytes(data)
        if self.fallback is None and PyBytes_GET_SIZE(block) >= LARGE_BLOCK:
            self._hand_over()
        if self.fallback is not None:
            self.fallback.max_header_list_size = self.max_header_list_size
            return self.fallback.decode(block, raw=raw)
        cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(block)
        cdef size_t left = <size_t>PyBytes_GET_SIZE(block)
        cdef nghttp2_nv nv
        cdef int flags
        cdef Py_ssize_t used
        cdef Py_ssize_t size = 0
        cdef list headers = []
        while True:
            flags = 0
            used = nghttp2_hd_inflate_hd2(self.ctx, &nv, &flags, p, left, 1)
            if used < 0:
                raise HPACKDecodingError(
                    "nghttp2 HPACK: " + nghttp2_strerror(<int>used).decode())
            p += used
            left -= <size_t>used
            if flags & NGHTTP2_HD_INFLATE_EMIT:
                size += <Py_ssize_t>(nv.namelen + nv.valuelen + 32)
                if size > self.max_header_list_size:
                    raise OversizedHeaderListError(
                        "A header list larger than %d has been received"
                        % self.max_header_list_size)
                name = PyBytes_FromStringAndSize(<char *>nv.name, nv.namelen)
                value = PyBytes_FromStringAndSize(<char *>nv.value, nv.valuelen)
                if not raw:
                    try:
                        name = name.decode("utf-8")
                        value = value.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        raise HPACKDecodingError("Unable to decode headers as UTF-8") \
                            from exc
                if nv.flags & NGHTTP2_NV_FLAG_NO_INDEX:
                    headers.append(NeverIndexedHeaderTuple(name, value))
                else:
                    headers.append((name, value))
            if flags & NGHTTP2_HD_INFLATE_FINAL:
                nghttp2_hd_inflate_end_headers(self.ctx)
                break
            if used == 0 and not flags & NGHTTP2_HD_INFLATE_EMIT:
                raise HPACKDecodingError("nghttp2 HPACK: header block not finished")
        return headers
