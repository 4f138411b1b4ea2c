# cython: language_level=3
"""HPACK (RFC 7541) from libnghttp2: ``Deflater`` and ``Inflater``, drop-in replacements
for the ``hpack`` package's ``Encoder`` and ``Decoder`` as the ``h2`` library uses them;
and ``ServerSession`` / ``ClientSession``, a whole HTTP/2 connection (nghttp2_session)
with the interface of h2's ``H2Connection`` as ``kgw_l7.downstream_h2`` (clients) and
``kgw_l7.upstream_h2`` (backends) use it (below).

Why: hpack is pure Python, and encoding a response head and decoding a request head were
a large part of the instructions an HTTP/2 request cost kgw (bench/results/h2.md). nghttp2
is the C library curl, nginx's peers and Apache use; its ``nghttp2_hd_*`` API is a
sans-IO HPACK context, so it fits under h2's state machine unchanged. Only
``kgw_l7.hpack_codec`` imports this module (and only for the compiled build); the
interface is hpack's, errors included (``HPACKDecodingError``, ``OversizedHeaderListError``,
which h2 turns into a connection error).

Built by scripts/build_ext.py (``-lnghttp2``, Debian ``libnghttp2-dev``).
"""

from libc.stdint cimport int32_t, uint8_t, uint32_t
from libc.string cimport memcpy
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, \
    PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc

import base64

import h2.events
import h2.exceptions
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


# -- the server session ------------------------------------------------------------------
# ``ServerSession`` and ``ClientSession``: an HTTP/2 connection's framing, stream states and
# flow control from ``nghttp2_session`` (sans-IO: mem_recv/mem_send), with the interface
# ``kgw_l7.downstream_h2.H2Conn`` / ``kgw_l7.upstream_h2.H2Conn`` use of h2's
# ``H2Connection``, so each H2Conn drives either; ``kgw_l7.hpack_codec.server_session`` /
# ``client_session`` pick. Both are a ``_Session``: the callbacks, the header conversion
# (``_submit``), the outboxes DATA is framed from and the flow control are theirs.

cdef extern from "nghttp2/nghttp2.h":
    ctypedef struct nghttp2_session:
        pass
    ctypedef struct nghttp2_session_callbacks:
        pass
    ctypedef struct nghttp2_option:
        pass
    ctypedef struct nghttp2_frame_hd:
        size_t length
        int32_t stream_id
        uint8_t type
        uint8_t flags
    ctypedef enum nghttp2_headers_category:
        NGHTTP2_HCAT_REQUEST
        NGHTTP2_HCAT_RESPONSE
        NGHTTP2_HCAT_PUSH_RESPONSE
        NGHTTP2_HCAT_HEADERS
    ctypedef struct nghttp2_headers:
        nghttp2_frame_hd hd
        nghttp2_headers_category cat
    ctypedef struct nghttp2_rst_stream:
        nghttp2_frame_hd hd
        uint32_t error_code
    ctypedef struct nghttp2_settings_entry:
        int32_t settings_id
        uint32_t value
    ctypedef struct nghttp2_settings:
        nghttp2_frame_hd hd
        size_t niv
        nghttp2_settings_entry *iv
    ctypedef struct nghttp2_goaway:
        nghttp2_frame_hd hd
        int32_t last_stream_id
        uint32_t error_code
    ctypedef union nghttp2_frame:
        nghttp2_frame_hd hd
        nghttp2_headers headers
        nghttp2_rst_stream rst_stream
        nghttp2_settings settings
        nghttp2_goaway goaway
    ctypedef union nghttp2_data_source:
        int fd
        void *ptr
    ctypedef Py_ssize_t (*nghttp2_data_source_read_callback)(
        nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
        uint32_t *data_flags, nghttp2_data_source *source, void *user_data) noexcept
    ctypedef struct nghttp2_data_provider:
        nghttp2_data_source source
        nghttp2_data_source_read_callback read_callback
    enum:
        NGHTTP2_DATA
        NGHTTP2_HEADERS
        NGHTTP2_PRIORITY
        NGHTTP2_RST_STREAM
        NGHTTP2_SETTINGS
        NGHTTP2_PUSH_PROMISE
        NGHTTP2_PING
        NGHTTP2_GOAWAY
        NGHTTP2_WINDOW_UPDATE
        NGHTTP2_CONTINUATION
        NGHTTP2_FLAG_NONE
        NGHTTP2_FLAG_END_STREAM
        NGHTTP2_FLAG_END_HEADERS
        NGHTTP2_FLAG_ACK
        NGHTTP2_DATA_FLAG_EOF
        NGHTTP2_DATA_FLAG_NO_END_STREAM
        NGHTTP2_ERR_DEFERRED
        NGHTTP2_ERR_CALLBACK_FAILURE
        NGHTTP2_ERR_BAD_CLIENT_MAGIC
        NGHTTP2_ERR_FLOODED
        NGHTTP2_ERR_TOO_MANY_CONTINUATIONS
        NGHTTP2_ERR_FLOW_CONTROL
        NGHTTP2_ERR_HEADER_COMP
        NGHTTP2_SETTINGS_MAX_FRAME_SIZE
        NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS
        NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE
    int nghttp2_session_callbacks_new(nghttp2_session_callbacks **callbacks_ptr)
    void nghttp2_session_callbacks_del(nghttp2_session_callbacks *callbacks)
    void nghttp2_session_callbacks_set_on_begin_frame_callback(
        nghttp2_session_callbacks *cbs,
        int (*cb)(nghttp2_session *, const nghttp2_frame_hd *, void *) noexcept)
    void nghttp2_session_callbacks_set_on_begin_headers_callback(
        nghttp2_session_callbacks *cbs,
        int (*cb)(nghttp2_session *, const nghttp2_frame *, void *) noexcept)
    void nghttp2_session_callbacks_set_on_header_callback(
        nghttp2_session_callbacks *cbs,
        int (*cb)(nghttp2_session *, const nghttp2_frame *, const uint8_t *, size_t,
                  const uint8_t *, size_t, uint8_t, void *) noexcept)
    void nghttp2_session_callbacks_set_on_frame_recv_callback(
        nghttp2_session_callbacks *cbs,
        int (*cb)(nghttp2_session *, const nghttp2_frame *, void *) noexcept)
    void nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
        nghttp2_session_callbacks *cbs,
        int (*cb)(nghttp2_session *, uint8_t, int32_t, const uint8_t *, size_t,
                  void *) noexcept)
    void nghttp2_session_callbacks_set_on_stream_close_callback(
        nghttp2_session_callbacks *cbs,
        int (*cb)(nghttp2_session *, int32_t, uint32_t, void *) noexcept)
    void nghttp2_session_callbacks_set_on_frame_send_callback(
        nghttp2_session_callbacks *cbs,
        int (*cb)(nghttp2_session *, const nghttp2_frame *, void *) noexcept)
    void nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(
        nghttp2_session_callbacks *cbs,
        int (*cb)(nghttp2_session *, const nghttp2_frame *, int, void *) noexcept)
    void nghttp2_session_callbacks_set_error_callback2(
        nghttp2_session_callbacks *cbs,
        int (*cb)(nghttp2_session *, int, const char *, size_t, void *) noexcept)
    int nghttp2_option_new(nghttp2_option **option_ptr)
    void nghttp2_option_del(nghttp2_option *option)
    void nghttp2_option_set_no_auto_window_update(nghttp2_option *option, int val)
    void nghttp2_option_set_no_http_messaging(nghttp2_option *option, int val)
    int nghttp2_session_server_new2(nghttp2_session **session_ptr,
                                    const nghttp2_session_callbacks *callbacks,
                                    void *user_data, const nghttp2_option *option)
    int nghttp2_session_client_new2(nghttp2_session **session_ptr,
                                    const nghttp2_session_callbacks *callbacks,
                                    void *user_data, const nghttp2_option *option)
    int32_t nghttp2_submit_request(nghttp2_session *session, const void *pri_spec,
                                   const nghttp2_nv *nva, size_t nvlen,
                                   const nghttp2_data_provider *data_prd,
                                   void *stream_user_data)
    void nghttp2_session_del(nghttp2_session *session)
    Py_ssize_t nghttp2_session_mem_recv(nghttp2_session *session, const uint8_t *data,
                                        size_t inlen)
    Py_ssize_t nghttp2_session_mem_send(nghttp2_session *session, const uint8_t **data_ptr)
    int nghttp2_session_want_read(nghttp2_session *session)
    int nghttp2_submit_settings(nghttp2_session *session, uint8_t flags,
                                const nghttp2_settings_entry *iv, size_t niv)
    int nghttp2_session_set_local_window_size(nghttp2_session *session, uint8_t flags,
                                              int32_t stream_id, int32_t window_size)
    int nghttp2_session_upgrade2(nghttp2_session *session, const uint8_t *settings_payload,
                                 size_t settings_payloadlen, int head_request,
                                 void *stream_user_data)
    int nghttp2_submit_response(nghttp2_session *session, int32_t stream_id,
                                const nghttp2_nv *nva, size_t nvlen,
                                const nghttp2_data_provider *data_prd)
    int nghttp2_submit_headers(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                               const void *pri_spec, const nghttp2_nv *nva, size_t nvlen,
                               void *stream_user_data)
    int nghttp2_submit_data(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                            const nghttp2_data_provider *data_prd)
    int nghttp2_submit_trailer(nghttp2_session *session, int32_t stream_id,
                               const nghttp2_nv *nva, size_t nvlen)
    int nghttp2_submit_rst_stream(nghttp2_session *session, uint8_t flags,
                                  int32_t stream_id, uint32_t error_code)
    int nghttp2_session_terminate_session(nghttp2_session *session, uint32_t error_code)
    int nghttp2_session_resume_data(nghttp2_session *session, int32_t stream_id)
    int nghttp2_session_consume(nghttp2_session *session, int32_t stream_id, size_t size)
    int32_t nghttp2_session_get_stream_remote_window_size(nghttp2_session *session,
                                                          int32_t stream_id)
    int32_t nghttp2_session_get_remote_window_size(nghttp2_session *session)
    uint32_t nghttp2_session_get_remote_settings(nghttp2_session *session, int id)
    int32_t nghttp2_session_get_last_proc_stream_id(nghttp2_session *session)
    uint32_t nghttp2_session_get_next_stream_id(nghttp2_session *session)

#: The most DATA payload nghttp2 puts in one frame without a length callback.
cdef Py_ssize_t DATA_PAYLOAD = 16384

cdef object _DataReceived = h2.events.DataReceived
cdef object _RequestReceived = h2.events.RequestReceived
cdef object _ResponseReceived = h2.events.ResponseReceived
cdef object _TrailersReceived = h2.events.TrailersReceived
cdef object _StreamEnded = h2.events.StreamEnded
cdef object _WindowUpdated = h2.events.WindowUpdated
cdef object _StreamReset = h2.events.StreamReset
cdef object _RemoteSettingsChanged = h2.events.RemoteSettingsChanged
cdef object _PingReceived = h2.events.PingReceived
cdef object _ConnectionTerminated = h2.events.ConnectionTerminated
cdef object _ProtocolError = h2.exceptions.ProtocolError
cdef object _StreamClosedError = h2.exceptions.StreamClosedError
cdef object _TooManyStreamsError = h2.exceptions.TooManyStreamsError


class NgProtocolError(h2.exceptions.ProtocolError):
    """The client broke the connection (nghttp2 ended it, or a kgw bound in a callback
    did); ``reason`` is kgw_l7_http2_errors_total's label."""

    def __init__(self, reason, msg):
        super().__init__(msg)
        self.reason = reason


cdef class _Outbox:
    """A stream's response DATA handed to nghttp2 and not yet framed (its data provider
    reads it while mem_send runs), then its end and trailers."""
    cdef list chunks
    cdef Py_ssize_t offset  # (bytes of chunks[0] already framed)
    cdef Py_ssize_t size
    cdef bint end
    cdef list trailers
    cdef bint deferred

    def __cinit__(self):
        self.chunks = []


cdef inline object _Event(object cls):
    return cls.__new__(cls)


cdef int _on_begin_frame(nghttp2_session *s, const nghttp2_frame_hd *hd,
                         void *ud) noexcept:
    """The frames that cost the server work but bring no request (the same rule as
    downstream_h2.ServerConnection._receive_frame)."""
    cdef ServerSession self = <ServerSession>ud
    cdef uint8_t t = hd.type
    cdef bint counted
    if t == NGHTTP2_HEADERS:
        self.block_open = not (hd.flags & NGHTTP2_FLAG_END_HEADERS)
        return 0
    if t == NGHTTP2_WINDOW_UPDATE and self.window_credit > 0:
        self.window_credit -= 1
        return 0
    counted = t != NGHTTP2_DATA or (hd.length == 0 and not hd.flags & NGHTTP2_FLAG_END_STREAM)
    if hd.stream_id and t != NGHTTP2_PRIORITY \
            and hd.stream_id <= nghttp2_session_get_last_proc_stream_id(s) \
            and hd.stream_id not in self.open_streams:
        self.closed_stream_frames += 1
        counted = True
    if counted:
        self.control_frames += 1
    return 0


cdef int _on_begin_headers(nghttp2_session *s, const nghttp2_frame *frame,
                           void *ud) noexcept:
    cdef _Session self = <_Session>ud
    try:
        self.fields = []
        self.fields_size = 0
        if frame.headers.cat == NGHTTP2_HCAT_REQUEST:
            self.open_streams.add(frame.hd.stream_id)
    except BaseException:
        return NGHTTP2_ERR_CALLBACK_FAILURE
    return 0


cdef int _on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                    size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                    void *ud) noexcept:
    cdef _Session self = <_Session>ud
    self.fields_size += <Py_ssize_t>(namelen + valuelen + 32)
    if self.fields_size > self.max_header_list:
        # (decoding goes on through the whole block: a bound per field is not enough)
        self.failure = ("hpack_bomb", "Oversized header block: more than %d bytes "
                        "decoded" % self.max_header_list)
        return NGHTTP2_ERR_CALLBACK_FAILURE
    try:
        self.fields.append((PyBytes_FromStringAndSize(<char *>name, namelen),
                            PyBytes_FromStringAndSize(<char *>value, valuelen)))
    except BaseException:
        return NGHTTP2_ERR_CALLBACK_FAILURE
    return 0


cdef int _on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data,
                        size_t length, void *ud) noexcept:
    cdef _Session self = <_Session>ud
    try:
        ev = _Event(_DataReceived)
        ev.stream_id = sid
        ev.data = PyBytes_FromStringAndSize(<char *>data, length)
        ev.flow_controlled_length = length
        ev.stream_ended = None
        self.events.append(ev)
    except BaseException:
        return NGHTTP2_ERR_CALLBACK_FAILURE
    return 0


cdef int _on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *ud) noexcept:
    cdef _Session self = <_Session>ud
    cdef uint8_t t = frame.hd.type
    cdef int32_t sid = frame.hd.stream_id
    cdef bint ended = frame.hd.flags & NGHTTP2_FLAG_END_STREAM
    cdef size_t i
    try:
        events = self.events
        if t == NGHTTP2_HEADERS:
            self.block_open = False
            fields, self.fields = self.fields, None
            if frame.headers.cat == NGHTTP2_HCAT_REQUEST:
                ev = _Event(_RequestReceived)
                ev.stream_id = sid
                ev.headers = fields
                ev.stream_ended = True if ended else None
                ev.priority_updated = None
                events.append(ev)
                return 0
            if self.live.get(sid) == 0:  # (a client's stream awaiting its response head)
                if _interim(fields):
                    return 0  # (dropped, as H2Conn drops h2's InformationalResponseReceived)
                self.live[sid] = 1
                ev = _Event(_ResponseReceived)
                ev.stream_id = sid
                ev.headers = fields
                ev.stream_ended = True if ended else None
                ev.priority_updated = None
                events.append(ev)
                if ended:
                    del self.live[sid]
                    ev = _Event(_StreamEnded)
                    ev.stream_id = sid
                    events.append(ev)
                return 0
            ev = _Event(_TrailersReceived)
            ev.stream_id = sid
            ev.headers = fields
            ev.stream_ended = None
            ev.priority_updated = None
            events.append(ev)
        elif t == NGHTTP2_DATA:
            pass
        elif t == NGHTTP2_WINDOW_UPDATE:
            ev = _Event(_WindowUpdated)
            ev.stream_id = sid
            ev.delta = None
            events.append(ev)
            return 0
        elif t == NGHTTP2_RST_STREAM:
            self.live.pop(sid, None)
            ev = _Event(_StreamReset)
            ev.stream_id = sid
            ev.error_code = frame.rst_stream.error_code
            ev.remote_reset = True
            events.append(ev)
            return 0
        elif t == NGHTTP2_SETTINGS:
            if frame.hd.flags & NGHTTP2_FLAG_ACK:
                return 0
            changed = {}
            for i in range(frame.settings.niv):
                changed[frame.settings.iv[i].settings_id] = frame.settings.iv[i].value
            ev = _Event(_RemoteSettingsChanged)
            ev.changed_settings = changed
            events.append(ev)
            return 0
        elif t == NGHTTP2_PING:
            if not frame.hd.flags & NGHTTP2_FLAG_ACK:
                ev = _Event(_PingReceived)
                ev.ping_data = None
                events.append(ev)
            return 0
        elif t == NGHTTP2_GOAWAY:
            self.peer_goaway = True
            # (nghttp2 closes the streams above last_stream_id next: refused, which the
            # GOAWAY says, not reset)
            for k in [k for k in self.live if k > frame.goaway.last_stream_id]:
                del self.live[k]
            ev = _Event(_ConnectionTerminated)
            ev.error_code = frame.goaway.error_code
            ev.last_stream_id = frame.goaway.last_stream_id
            ev.additional_data = None
            events.append(ev)
            return 0
        else:
            return 0
        if ended:
            self.live.pop(sid, None)
            ev = _Event(_StreamEnded)
            ev.stream_id = sid
            events.append(ev)
    except BaseException:
        return NGHTTP2_ERR_CALLBACK_FAILURE
    return 0


cdef bint _interim(list fields):
    """Is this response head a 1xx (``:status`` comes first; nghttp2 checks it is there)?"""
    cdef bytes status
    for n, v in fields:
        if n == b":status":
            status = <bytes>v
            return len(status) == 3 and status[:1] == b"1"
    return False


cdef int _on_stream_close(nghttp2_session *s, int32_t sid, uint32_t code, void *ud) noexcept:
    cdef _Session self = <_Session>ud
    cdef _Outbox out
    try:
        self.open_streams.discard(sid)
        out = self.outboxes.pop(sid, None)
        if out is not None:
            self.queued -= out.size
        if self.live.pop(sid, -1) >= 0:
            # A client's stream closed before its response ended, and not by the
            # backend's RST_STREAM: nghttp2 reset it (a malformed response: PROTOCOL_ERROR)
            # or could not send its HEADERS. Its owner must hear of it as of a reset.
            ev = _Event(_StreamReset)
            ev.stream_id = sid
            ev.error_code = code if code else 2  # (INTERNAL_ERROR)
            ev.remote_reset = False
            self.events.append(ev)
    except BaseException:
        return NGHTTP2_ERR_CALLBACK_FAILURE
    return 0


cdef int _on_frame_send(nghttp2_session *s, const nghttp2_frame *frame, void *ud) noexcept:
    cdef _Session self = <_Session>ud
    if frame.hd.type == NGHTTP2_GOAWAY:
        self.goaway_sent = <int>frame.goaway.error_code
    return 0


cdef int _on_invalid_frame(nghttp2_session *s, const nghttp2_frame *frame, int code,
                           void *ud) noexcept:
    cdef _Session self = <_Session>ud
    self.last_lib_error = code
    return 0


cdef int _on_error(nghttp2_session *s, int code, const char *msg, size_t length,
                   void *ud) noexcept:
    cdef _Session self = <_Session>ud
    self.last_lib_error = code
    try:
        self.last_message = PyBytes_FromStringAndSize(msg, length).decode("ascii", "replace")
    except BaseException:
        return NGHTTP2_ERR_CALLBACK_FAILURE
    return 0


cdef Py_ssize_t _read_data(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t length,
                           uint32_t *data_flags, nghttp2_data_source *source,
                           void *ud) noexcept:
    """nghttp2 frames DATA: up to ``length`` bytes of the stream's outbox, then its end
    (with trailers: the END_STREAM goes on them)."""
    cdef _Session self = <_Session>ud
    cdef _Outbox out = self.outboxes.get(sid)
    cdef Py_ssize_t room = <Py_ssize_t>length
    cdef Py_ssize_t n, done = 0
    cdef bytes chunk
    if out is None:
        data_flags[0] |= NGHTTP2_DATA_FLAG_EOF
        return 0
    try:
        while out.chunks and room > 0:
            chunk = <bytes>out.chunks[0]
            n = PyBytes_GET_SIZE(chunk) - out.offset
            if n > room:
                n = room
            memcpy(buf + done, PyBytes_AS_STRING(chunk) + out.offset, n)
            done += n
            room -= n
            out.offset += n
            if out.offset == PyBytes_GET_SIZE(chunk):
                del out.chunks[0]
                out.offset = 0
        out.size -= done
        self.queued -= done
        if not out.chunks:
            if out.end:
                data_flags[0] |= NGHTTP2_DATA_FLAG_EOF
                if out.trailers is not None:
                    data_flags[0] |= NGHTTP2_DATA_FLAG_NO_END_STREAM
                    if self._submit(sid, out.trailers, 2) != 0:
                        return NGHTTP2_ERR_CALLBACK_FAILURE
                del self.outboxes[sid]
            elif done == 0:
                out.deferred = True
                return NGHTTP2_ERR_DEFERRED
    except BaseException:
        return NGHTTP2_ERR_CALLBACK_FAILURE
    return done


cdef class _Session:
    """One HTTP/2 connection in nghttp2, either side: ``receive_data`` returns h2's
    events, ``data_to_send`` the bytes to write, and the ``send_*`` calls queue frames
    as h2's do (``local_flow_control_window`` counts what is queued and not framed).
    Subclasses make the ``nghttp2_session`` (``__cinit__``) with the callbacks above.

    nghttp2's automatic WINDOW_UPDATE is off: ``acknowledge_received_data`` reopens
    windows as the exchange reads, so a slow reader holds at most a window per stream."""

    cdef nghttp2_session *session
    cdef public Py_ssize_t max_header_list
    cdef list events
    cdef list fields
    cdef Py_ssize_t fields_size
    cdef set open_streams
    #: A client's streams whose response has not ended: 0 before its final head, 1
    #: after (always empty on a server).
    cdef dict live
    cdef dict outboxes
    cdef Py_ssize_t queued
    cdef bint block_open
    cdef bint peer_goaway
    cdef bint terminated
    cdef object failure
    cdef int last_lib_error
    #: The error code of the GOAWAY sent (-1: none yet).
    cdef int goaway_sent
    #: Frames nghttp2 made while reading (sent first by ``data_to_send``).
    cdef list out
    cdef str last_message
    cdef bint client
    cdef public bint flooded

    def __cinit__(self, *args, **kwargs):
        self.events = []
        self.open_streams = set()
        self.live = {}
        self.outboxes = {}
        self.max_header_list = DEFAULT_MAX_HEADER_LIST_SIZE
        self.last_message = ""
        self.goaway_sent = -1
        self.out = []

    def __dealloc__(self):
        if self.session is not NULL:
            nghttp2_session_del(self.session)
            self.session = NULL

    cdef int _open(self, bint client) except -1:
        """Make the ``nghttp2_session`` of one side with the callbacks above. A server
        also counts frames as they begin (``_on_begin_frame``: the flood bounds) and
        leaves HTTP messaging checks to kgw (RFC 9113 §8.2 in ``H2Conn``, with its
        counters); a client keeps nghttp2's checks on a backend's responses."""
        cdef nghttp2_session_callbacks *cbs
        cdef nghttp2_option *opt
        cdef int rv
        if nghttp2_session_callbacks_new(&cbs) != 0:
            raise MemoryError()
        if nghttp2_option_new(&opt) != 0:
            nghttp2_session_callbacks_del(cbs)
            raise MemoryError()
        if not client:
            nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, _on_begin_frame)
        nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, _on_begin_headers)
        nghttp2_session_callbacks_set_on_header_callback(cbs, _on_header)
        nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, _on_frame_recv)
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, _on_data_chunk)
        nghttp2_session_callbacks_set_on_stream_close_callback(cbs, _on_stream_close)
        nghttp2_session_callbacks_set_on_frame_send_callback(cbs, _on_frame_send)
        nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, _on_invalid_frame)
        nghttp2_session_callbacks_set_error_callback2(cbs, _on_error)
        nghttp2_option_set_no_auto_window_update(opt, 1)
        if client:
            rv = nghttp2_session_client_new2(&self.session, cbs, <void *>self, opt)
        else:
            nghttp2_option_set_no_http_messaging(opt, 1)
            rv = nghttp2_session_server_new2(&self.session, cbs, <void *>self, opt)
        nghttp2_session_callbacks_del(cbs)
        nghttp2_option_del(opt)
        if rv != 0:
            raise MemoryError()
        self.client = client
        return 0

    # -- starting -------------------------------------------------------------------------
    def start(self, dict settings, int connection_window, object upgrade_settings=None):
        """Queue this side's SETTINGS (``{SettingCodes: value}``) and open the connection
        window to ``connection_window``; ``upgrade_settings`` (a server's) is an h2c
        upgrade's HTTP2-Settings value (stream 1 is then the upgraded request,
        half-closed)."""
        cdef nghttp2_settings_entry iv[8]
        cdef size_t n = 0
        cdef bytes payload
        for k, v in settings.items():
            if n == 8:
                raise ValueError("too many settings")
            iv[n].settings_id = int(k)
            iv[n].value = v
            n += 1
        self._check(nghttp2_submit_settings(self.session, NGHTTP2_FLAG_NONE, iv, n))
        self._check(nghttp2_session_set_local_window_size(self.session, NGHTTP2_FLAG_NONE, 0,
                                                          connection_window))
        if upgrade_settings is not None:
            value = _as_bytes(upgrade_settings).strip()
            payload = base64.urlsafe_b64decode(value + b"=" * (-len(value) % 4))
            self._check(nghttp2_session_upgrade2(self.session, <uint8_t *>payload,
                                                 PyBytes_GET_SIZE(payload), 0, NULL))
            self.open_streams.add(1)

    cdef _check(self, int rv):
        if rv != 0:
            raise _ProtocolError("nghttp2: " + nghttp2_strerror(rv).decode())

    # -- receiving ------------------------------------------------------------------------
    def receive_data(self, bytes data):
        """The events ``data`` brings (h2's classes and fields; with any a ``data_to_send``
        caused: a stream nghttp2 closed). Raises ``NgProtocolError``
        (an h2 ProtocolError) when the connection must end; a GOAWAY is then queued."""
        cdef Py_ssize_t rv
        rv = nghttp2_session_mem_recv(self.session, <const uint8_t *>PyBytes_AS_STRING(data),
                                      PyBytes_GET_SIZE(data))
        if rv < 0:
            events, self.events = self.events, []
            if rv == NGHTTP2_ERR_FLOODED and not self.client:
                # (nghttp2 stops at 1000 queued ACKs: a PING or SETTINGS flood within
                # one read; H2Conn answers it as any flood)
                self.flooded = True
                return events
            raise self._error(<int>rv)
        # (the frames the read caused, now: a GOAWAY among them means nghttp2 found a
        # connection error, which H2Conn must hear of; a stream it reset closes once its
        # RST_STREAM is out, and a client's owner must hear of that too)
        self._send_into(self.out)
        events, self.events = self.events, []
        if self.goaway_sent >= 0 and not self.terminated:
            raise self._error(0)
        return events

    cdef object _error(self, int code):
        self.terminated = True
        if code == 0:  # (nghttp2 sent a GOAWAY of its own)
            code = self.last_lib_error
            if self.goaway_sent == 9:
                code = NGHTTP2_ERR_HEADER_COMP
            elif self.goaway_sent == 3:
                code = NGHTTP2_ERR_FLOW_CONTROL
        if code == NGHTTP2_ERR_CALLBACK_FAILURE and self.failure is not None:
            reason, msg = self.failure
        elif code == NGHTTP2_ERR_BAD_CLIENT_MAGIC:
            reason, msg = "invalid_preface", "invalid connection preamble"
        elif code == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS:
            reason, msg = "continuation_flood", "too many CONTINUATION frames"
        elif code == NGHTTP2_ERR_FLOW_CONTROL:
            reason, msg = "flow_control", "flow control error"
        elif code == NGHTTP2_ERR_HEADER_COMP:
            # (a field over nghttp2's 64 KiB among them)
            reason, msg = "header_compression", "header block not decodable"
        else:
            reason, msg = "protocol_error", "protocol error"
        if self.last_message:
            msg += " (nghttp2: %s)" % self.last_message
        if code < 0:  # (a GOAWAY of nghttp2's own, if queued, goes first)
            nghttp2_session_terminate_session(self.session, 1)  # PROTOCOL_ERROR
        return NgProtocolError(reason, msg)

    def acknowledge_received_data(self, Py_ssize_t n, int32_t sid):
        nghttp2_session_consume(self.session, sid, n)

    # -- sending --------------------------------------------------------------------------
    cdef int _submit(self, int32_t sid, list fields, int how) except -2:
        """HEADERS on stream ``sid``: how 0 a response head with a data provider (the
        stream's outbox), 1 a response head ending the stream, 2 trailers, 3 an interim
        (1xx) head; 4 a request head with a data provider, 5 a request head ending the
        stream (``sid`` unused: the stream id nghttp2 gives it is returned)."""
        cdef Py_ssize_t n = len(fields), i
        cdef nghttp2_nv *nva = <nghttp2_nv *>PyMem_Malloc(max(n, 1) * sizeof(nghttp2_nv))
        cdef nghttp2_data_provider prd
        cdef bytes name, value
        cdef int rv
        if nva is NULL:
            raise MemoryError()
        try:
            for i in range(n):
                name = <bytes>fields[i][0]
                value = <bytes>fields[i][1]
                nva[i].name = <uint8_t *>PyBytes_AS_STRING(name)
                nva[i].namelen = PyBytes_GET_SIZE(name)
                nva[i].value = <uint8_t *>PyBytes_AS_STRING(value)
                nva[i].valuelen = PyBytes_GET_SIZE(value)
                nva[i].flags = NGHTTP2_NV_FLAG_NONE
            if how == 0:
                prd.source.ptr = NULL
                prd.read_callback = _read_data
                rv = nghttp2_submit_response(self.session, sid, nva, n, &prd)
            elif how == 1:
                rv = nghttp2_submit_response(self.session, sid, nva, n, NULL)
            elif how == 2:
                rv = nghttp2_submit_trailer(self.session, sid, nva, n)
            elif how == 4:
                prd.source.ptr = NULL
                prd.read_callback = _read_data
                rv = nghttp2_submit_request(self.session, NULL, nva, n, &prd, NULL)
            elif how == 5:
                rv = nghttp2_submit_request(self.session, NULL, nva, n, NULL, NULL)
            else:
                rv = nghttp2_submit_headers(self.session, NGHTTP2_FLAG_NONE, sid, NULL, nva, n,
                                            NULL)
        finally:
            PyMem_Free(nva)
        return rv

    cdef _Outbox _outbox(self, int32_t sid):
        cdef _Outbox out = self.outboxes.get(sid)
        cdef nghttp2_data_provider prd
        cdef int rv
        if out is not None:
            return out
        if sid not in self.open_streams:
            raise _StreamClosedError(sid)
        out = _Outbox()
        self.outboxes[sid] = out
        prd.source.ptr = NULL
        prd.read_callback = _read_data
        rv = nghttp2_submit_data(self.session, NGHTTP2_FLAG_END_STREAM, sid, &prd)
        if rv != 0:
            del self.outboxes[sid]
            raise _ProtocolError("nghttp2: " + nghttp2_strerror(rv).decode())
        return out

    cdef _wake(self, int32_t sid, _Outbox out):
        if out.deferred:
            out.deferred = False
            nghttp2_session_resume_data(self.session, sid)

    def send_data(self, int32_t sid, bytes data, bint end_stream=False):
        cdef _Outbox out = self._outbox(sid)
        if PyBytes_GET_SIZE(data):
            out.chunks.append(data)
            out.size += PyBytes_GET_SIZE(data)
            self.queued += PyBytes_GET_SIZE(data)
        if end_stream:
            out.end = True
        self._wake(sid, out)

    def end_stream(self, int32_t sid):
        cdef _Outbox out = self._outbox(sid)
        out.end = True
        self._wake(sid, out)

    def local_flow_control_window(self, int32_t sid):
        """What stream ``sid`` may still send: both windows, less what is queued."""
        cdef _Outbox out = self.outboxes.get(sid)
        cdef Py_ssize_t stream = nghttp2_session_get_stream_remote_window_size(self.session, sid)
        cdef Py_ssize_t conn = nghttp2_session_get_remote_window_size(self.session)
        if sid not in self.open_streams:
            raise _StreamClosedError(sid)
        if stream < 0:
            if not self.client:
                raise _StreamClosedError(sid)
            # (a request whose HEADERS are still queued: nghttp2 makes its stream when it
            # sends them, with the backend's initial window)
            stream = nghttp2_session_get_remote_settings(self.session,
                                                         NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE)
        if out is not None:
            stream -= out.size
        conn -= self.queued
        return stream if stream < conn else conn

    @property
    def outbound_flow_control_window(self):
        """The connection's send window (h2's name), less what is queued."""
        return nghttp2_session_get_remote_window_size(self.session) - self.queued

    @property
    def max_outbound_frame_size(self):
        cdef Py_ssize_t size = nghttp2_session_get_remote_settings(
            self.session, NGHTTP2_SETTINGS_MAX_FRAME_SIZE)
        return size if size < DATA_PAYLOAD else DATA_PAYLOAD

    def reset_stream(self, int32_t sid, uint32_t code):
        cdef _Outbox out = self.outboxes.pop(sid, None)
        if out is not None:
            self.queued -= out.size
        if sid not in self.open_streams:
            raise _StreamClosedError(sid)
        self.live.pop(sid, None)  # (its owner is gone: no event when it closes)
        self._check(nghttp2_submit_rst_stream(self.session, NGHTTP2_FLAG_NONE, sid, code))

    def close_connection(self, uint32_t code=0, additional_data=None):
        """GOAWAY ``code`` naming the last stream processed; nothing is read after it."""
        self.terminated = True
        nghttp2_session_terminate_session(self.session, code)

    def closed(self):
        """Has the connection been ended (a GOAWAY sent for an error)?"""
        return self.terminated

    cdef _send_into(self, list parts):
        cdef const uint8_t *p
        cdef Py_ssize_t n
        while True:
            n = nghttp2_session_mem_send(self.session, &p)
            if n <= 0:
                if n < 0:
                    self.terminated = True
                return
            parts.append(PyBytes_FromStringAndSize(<char *>p, n))

    def data_to_send(self):
        """Everything queued, as one bytes (one write)."""
        cdef list parts = self.out
        self._send_into(parts)
        if not parts:
            return b""
        self.out = []
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    def error_reason(self, exc):
        return getattr(exc, "reason", "protocol_error")


cdef class ServerSession(_Session):
    """The server side of one HTTP/2 connection in nghttp2 (kgw_l7.downstream_h2).

    nghttp2's own HTTP checks are off (kgw's ``request_problem`` counts each malformed
    request by reason) and so is its automatic WINDOW_UPDATE (``acknowledge_received_data``
    reopens windows as the exchange reads). What nghttp2 1.52 does not bound, kgw does
    here: the decoded header list (``max_header_list``: HPACK bombs) and the frames
    counted in ``control_frames`` / ``closed_stream_frames`` (floods: ``H2Conn`` decides).
    nghttp2 bounds the CONTINUATION frames of one header block (8, Debian's backport of
    CVE-2024-28182) and the ACKs a client makes it queue (``flooded``)."""

    cdef public Py_ssize_t control_frames
    cdef public Py_ssize_t closed_stream_frames
    cdef public Py_ssize_t window_credit

    def __cinit__(self):
        self._open(False)

    def header_block_open(self):
        """Is a request's header block incomplete (CONTINUATION awaited)?"""
        return self.block_open

    @property
    def highest_inbound_stream_id(self):
        return nghttp2_session_get_last_proc_stream_id(self.session)

    def send_headers(self, int32_t sid, list fields, bint end_stream=False):
        """A response head (interim when its status is 1xx), or trailers once the
        response's DATA has begun."""
        cdef _Outbox out = self.outboxes.get(sid)
        cdef int rv
        if sid not in self.open_streams:
            raise _StreamClosedError(sid)
        if out is not None:
            out.trailers = fields
            out.end = True
            self._wake(sid, out)
            return
        status = fields[0][1] if fields and fields[0][0] == b":status" else b""
        if status[:1] == b"1" and len(status) == 3:
            rv = self._submit(sid, fields, 3)
        elif end_stream:
            rv = self._submit(sid, fields, 1)
        else:
            out = _Outbox()
            out.deferred = False
            self.outboxes[sid] = out
            rv = self._submit(sid, fields, 0)
            if rv != 0:
                del self.outboxes[sid]
        if rv != 0:
            raise _ProtocolError("nghttp2: " + nghttp2_strerror(rv).decode())


cdef class ClientSession(_Session):
    """The client side of one HTTP/2 connection in nghttp2: kgw to a backend
    (kgw_l7.upstream_h2). ``open_stream`` sends a request's HEADERS and gives its stream
    id; its body goes out of the stream's outbox (``send_data``, ``end_stream``,
    ``send_headers`` for trailers) within the windows, as on the server side.

    nghttp2's HTTP checks are on here: a backend's response is validated as h2 did
    (``:status``, connection-specific fields, content-length against the DATA, a 1xx
    then the final head), a malformed one resets its stream (PROTOCOL_ERROR), which the
    stream's owner hears of as a ``StreamReset``. Interim (1xx) heads are dropped."""

    def __cinit__(self):
        self._open(True)

    def stream_limit(self):
        """The backend's SETTINGS_MAX_CONCURRENT_STREAMS (nghttp2 assumes 100 until its
        SETTINGS arrive)."""
        return nghttp2_session_get_remote_settings(self.session,
                                                   NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS)

    @property
    def highest_outbound_stream_id(self):
        """The id of the last stream opened (0: none), as h2's."""
        cdef uint32_t nxt = nghttp2_session_get_next_stream_id(self.session)
        return nxt - 2 if nxt > 1 else 0

    def open_stream(self, list fields, bint end_stream):
        """Queue a request's HEADERS (``fields``: pseudo-fields first); the new stream's
        id. Raises ``TooManyStreamsError`` when the backend's stream limit is reached
        (it may lower it at any time) and ``ProtocolError`` once the connection ends."""
        cdef int32_t sid
        cdef _Outbox out
        if self.terminated or self.peer_goaway:
            raise _ProtocolError("the connection is closing")
        if len(self.open_streams) >= <Py_ssize_t>nghttp2_session_get_remote_settings(
                self.session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS):
            raise _TooManyStreamsError("the backend's stream limit is reached")
        sid = self._submit(0, fields, 5 if end_stream else 4)
        if sid < 0:
            raise _ProtocolError("nghttp2: " + nghttp2_strerror(sid).decode())
        if not end_stream:
            out = _Outbox()
            self.outboxes[sid] = out
        self.open_streams.add(sid)
        self.live[sid] = 0
        return sid

    def send_headers(self, int32_t sid, list fields, bint end_stream=True):
        """Trailers, ending the request (its head went with ``open_stream``)."""
        cdef _Outbox out = self.outboxes.get(sid)
        if out is None or sid not in self.open_streams:
            raise _StreamClosedError(sid)
        out.trailers = fields
        out.end = True
        self._wake(sid, out)
