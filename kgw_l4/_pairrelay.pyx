# cython: language_level=3, boundscheck=False, wraparound=False
"""Copy connected socket pairs both ways in C, from the event loop's thread
(kgw_l4.pairrelay says when and why).

One epoll set holds both sockets of every pair; the event loop watches its fd and calls
``process`` when it is readable, which handles the ready sockets without the GIL: a read
from one socket is written to the other at once; what the other cannot take yet stays
in that direction's buffer (its source is not read meanwhile: backpressure is TCP's own).
Reads go to one scratch buffer; a direction holds memory only for what its destination
did not take (a handshake flight usually goes out whole: a pair costs no buffer then).
A socket's end of stream is passed on as ``shutdown(SHUT_WR)`` of the other once the
direction's buffer is empty; a pair is finished when both directions are, or at the first
error (then both are reset). Once a pair has moved ``handover`` bytes with both buffers
empty and neither direction ended, it leaves the set unclosed: a long stream for the
caller to hand to the kernel (sockmap splice).

Every pair ends in exactly one record returned by ``process``/``abort_all``:
(token, kind, bytes a->b, bytes b->a, fd a, fd b); kinds: FINISHED (both directions
ended, sockets closed), RESET (an error or a reset, sockets reset and closed), HANDOVER
(sockets left open, out of the set, owned by the caller again).
"""

from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset
from libc.errno cimport errno, EAGAIN, EINTR, ECONNRESET, EPIPE
from posix.unistd cimport close

cdef extern from "<sys/epoll.h>" nogil:
    cdef union epoll_data_t:
        void *ptr
        int fd
        unsigned long long u64
    cdef struct epoll_event:
        unsigned int events
        epoll_data_t data
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)
    enum:
        EPOLL_CLOEXEC
        EPOLL_CTL_ADD
        EPOLL_CTL_MOD
        EPOLL_CTL_DEL
        EPOLLIN
        EPOLLOUT
        EPOLLERR
        EPOLLHUP
        EPOLLRDHUP

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    ssize_t recv(int fd, void *buf, size_t n, int flags)
    ssize_t send(int fd, const void *buf, size_t n, int flags)
    int shutdown(int fd, int how)
    int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
    enum:
        SHUT_WR
        SOL_SOCKET
        SO_LINGER
        MSG_NOSIGNAL
        MSG_DONTWAIT
    cdef struct linger:
        int l_onoff
        int l_linger

cdef enum:
    K_FINISHED = 0
    K_RESET = 1
    K_HANDOVER = 2

FINISHED = K_FINISHED
RESET = K_RESET
HANDOVER = K_HANDOVER

DEF MAX_EVENTS = 256

cdef struct Pair:
    int fd[2]
    char *buf[2]          # buf[i]: read from fd[i], not taken by fd[1 - i] yet (or NULL)
    size_t off[2]
    size_t length[2]
    int eof[2]            # fd[i] sent its end of stream
    int shut[2]           # fd[i]'s write side was shut down by us
    int gone[2]           # fd[i]'s peer reset it (closing it needs no SO_LINGER to reset)
    unsigned int interest[2]
    unsigned long long moved[2]
    long long token
    int dead
    int kind              # how it ended (once dead)
    Pair *prev            # the live pairs' list (abort_all), then the dead ones' (next)
    Pair *next


cdef inline void _note_gone(Pair *p, int side) noexcept nogil:
    """After a failed recv/send on fd[side]: a reset or broken pipe means its peer is
    gone already."""
    if errno == ECONNRESET or errno == EPIPE:
        p.gone[side] = 1


cdef inline void *_tag(Pair *p, int side) noexcept nogil:
    return <void *>(<char *>p + side)


cdef class PairRelay:
    """Pairs of connected non-blocking sockets copied both ways (module docstring).
    ``capacity``: pairs at most (``add`` refuses more); ``bufsize``: bytes read at once
    (and so at most left over per direction); ``handover``: bytes after which a pair is given back (0: never)."""

    cdef int ep
    cdef size_t bufsize
    cdef char *scratch
    cdef unsigned long long handover
    cdef public int capacity
    cdef public int live
    cdef Pair *alive
    cdef Pair *dead
    cdef epoll_event events[MAX_EVENTS]

    def __cinit__(self, int capacity=65536, size_t bufsize=65536,
                  unsigned long long handover=0):
        self.ep = epoll_create1(EPOLL_CLOEXEC)
        if self.ep < 0:
            raise OSError(errno, "epoll_create1")
        self.capacity = capacity
        self.bufsize = bufsize
        self.scratch = <char *>malloc(bufsize)
        if self.scratch == NULL:
            raise MemoryError()
        self.handover = handover
        self.live = 0
        self.alive = NULL
        self.dead = NULL

    def __dealloc__(self):
        cdef Pair *p
        cdef Pair *q
        while self.alive != NULL:  # (dropped with pairs left: they are reset)
            self._end(self.alive, K_RESET)
        p = self.dead
        while p != NULL:
            q = p.next
            free(p.buf[0]); free(p.buf[1]); free(p)
            p = q
        if self.ep >= 0:
            close(self.ep)
        free(self.scratch)

    def fileno(self) -> int:
        return self.ep

    def add(self, int a, int b, long long token) -> bool:
        """Take over connected non-blocking sockets ``a`` and ``b`` (the caller gives up
        their fds unless a K_HANDOVER record returns them). False: full, nothing taken."""
        cdef Pair *p
        cdef epoll_event ev
        if self.live >= self.capacity:
            return False
        p = <Pair *>malloc(sizeof(Pair))
        if p == NULL:
            return False
        memset(p, 0, sizeof(Pair))
        p.fd[0] = a
        p.fd[1] = b
        p.token = token
        for side in range(2):
            p.interest[side] = EPOLLIN | EPOLLRDHUP
            ev.events = p.interest[side]
            ev.data.ptr = _tag(p, side)
            if epoll_ctl(self.ep, EPOLL_CTL_ADD, p.fd[side], &ev) < 0:
                err = errno
                if side == 1:
                    epoll_ctl(self.ep, EPOLL_CTL_DEL, p.fd[0], NULL)
                free(p)
                raise OSError(err, "epoll_ctl")
        p.next = self.alive
        if self.alive != NULL:
            self.alive.prev = p
        self.alive = p
        self.live += 1
        return True

    def process(self) -> list:
        """Serve the sockets that are ready now (never blocks); the pairs that ended."""
        cdef int n, i, side
        cdef Pair *p
        with nogil:
            n = epoll_wait(self.ep, self.events, MAX_EVENTS, 0)
            for i in range(n):
                p = <Pair *>(<size_t>self.events[i].data.ptr & ~(<size_t>1))
                side = <int>(<size_t>self.events[i].data.ptr & 1)
                if not p.dead:
                    self._serve(p, side, self.events[i].events)
        return self._collect()

    def moved(self) -> dict:
        """token -> (bytes a->b, bytes b->a) of every pair still here."""
        cdef Pair *p = self.alive
        out = {}
        while p != NULL:
            out[p.token] = (p.moved[0], p.moved[1])
            p = p.next
        return out

    def abort_all(self) -> list:
        """Reset every pair still here (shutdown: the drain's time is up)."""
        with nogil:
            while self.alive != NULL:
                self._end(self.alive, K_RESET)
        return self._collect()

    cdef list _collect(self):
        cdef Pair *p = self.dead
        cdef Pair *q
        out = []
        self.dead = NULL
        while p != NULL:
            q = p.next
            out.append((p.token, p.kind, p.moved[0], p.moved[1], p.fd[0], p.fd[1]))
            free(p.buf[0]); free(p.buf[1]); free(p)
            p = q
        return out

    cdef void _serve(self, Pair *p, int side, unsigned int ev) noexcept nogil:
        cdef int other = 1 - side
        if ev & EPOLLERR:
            p.gone[side] = 1
            self._end(p, K_RESET)
            return
        if (ev & EPOLLOUT) and p.length[other] > p.off[other]:
            if self._flush(p, other) < 0:
                self._end(p, K_RESET)
                return
        if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) and not p.eof[side] \
                and p.length[side] == p.off[side]:
            if self._pump(p, side, ev & EPOLLRDHUP) < 0:
                self._end(p, K_RESET)
                return
        if p.shut[0] and p.shut[1]:
            self._end(p, K_FINISHED)
            return
        if self.handover and p.moved[0] + p.moved[1] >= self.handover \
                and not p.eof[0] and not p.eof[1] \
                and p.length[0] == p.off[0] and p.length[1] == p.off[1]:
            self._end(p, K_HANDOVER)
            return
        self._watch(p, 0)
        self._watch(p, 1)

    cdef int _pump(self, Pair *p, int side, unsigned int ending) noexcept nogil:
        """Read fd[side] and write it to the other until it would block (or, ``ending``,
        to its end of stream); -1 on error."""
        cdef ssize_t n, m
        cdef size_t sent
        while True:
            n = recv(p.fd[side], self.scratch, self.bufsize, MSG_DONTWAIT)
            if n < 0:
                if errno == EAGAIN or errno == EINTR:
                    return 0
                _note_gone(p, side)
                return -1
            if n == 0:
                p.eof[side] = 1
                return self._eof_out(p, side)
            p.moved[side] += <unsigned long long>n
            sent = 0
            while sent < <size_t>n:
                m = send(p.fd[1 - side], self.scratch + sent, <size_t>n - sent,
                         MSG_NOSIGNAL | MSG_DONTWAIT)
                if m < 0:
                    if errno == EINTR:
                        continue
                    if errno != EAGAIN:
                        _note_gone(p, 1 - side)
                        return -1
                    # the other is full: keep the rest until it is writable
                    p.buf[side] = <char *>malloc(<size_t>n - sent)
                    if p.buf[side] == NULL:
                        return -1
                    memcpy(p.buf[side], self.scratch + sent, <size_t>n - sent)
                    p.off[side] = 0
                    p.length[side] = <size_t>n - sent
                    return 0
                sent += <size_t>m
            if <size_t>n < self.bufsize and not ending:
                return 0  # this read emptied the queue

    cdef int _flush(self, Pair *p, int side) noexcept nogil:
        """Write what direction ``side`` holds to the other socket; -1 on error."""
        cdef ssize_t n
        cdef int dst = p.fd[1 - side]
        while p.off[side] < p.length[side]:
            n = send(dst, p.buf[side] + p.off[side], p.length[side] - p.off[side],
                     MSG_NOSIGNAL | MSG_DONTWAIT)
            if n < 0:
                if errno == EAGAIN or errno == EINTR:
                    return 0
                _note_gone(p, 1 - side)
                return -1
            p.off[side] += <size_t>n
        p.off[side] = p.length[side] = 0
        free(p.buf[side])
        p.buf[side] = NULL
        if p.eof[side]:
            return self._eof_out(p, side)
        return 0

    cdef int _eof_out(self, Pair *p, int side) noexcept nogil:
        """fd[side] ended: pass it on once its direction's buffer is empty."""
        if p.length[side] != p.off[side] or p.shut[1 - side]:
            return 0
        if shutdown(p.fd[1 - side], SHUT_WR) < 0:
            return -1
        p.shut[1 - side] = 1
        return 0

    cdef void _watch(self, Pair *p, int side) noexcept nogil:
        cdef epoll_event ev
        cdef unsigned int want = 0
        if not p.eof[side] and p.length[side] == p.off[side]:
            want |= EPOLLIN | EPOLLRDHUP
        if p.length[1 - side] > p.off[1 - side]:
            want |= EPOLLOUT
        if want != p.interest[side]:
            ev.events = want
            ev.data.ptr = _tag(p, side)
            epoll_ctl(self.ep, EPOLL_CTL_MOD, p.fd[side], &ev)
            p.interest[side] = want

    cdef void _end(self, Pair *p, int kind) noexcept nogil:
        cdef linger lg
        cdef int side
        p.dead = 1
        p.kind = kind
        if p.prev != NULL:
            p.prev.next = p.next
        else:
            self.alive = p.next
        if p.next != NULL:
            p.next.prev = p.prev
        p.next = self.dead
        self.dead = p
        self.live -= 1
        for side in range(2):
            if kind == K_HANDOVER:
                epoll_ctl(self.ep, EPOLL_CTL_DEL, p.fd[side], NULL)
                continue
            if kind == K_RESET and not p.gone[side]:
                lg.l_onoff = 1
                lg.l_linger = 0
                setsockopt(p.fd[side], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg))
            close(p.fd[side])  # (which takes it out of the epoll set: no other fd refers
            #                     to the socket)
