"""Small TCP server and clients the kernel tests run inside their namespaces
(stdlib only, so they run under the system python3 via nsenter).

  serve ADDR...            on each ADDR: port 9000 greets with "ADDR\\n" then echoes
                           (half-close aware: EOF from the peer -> finish echoing, then
                           shut down); port 9001 sends "ADDR\\n" and closes first.
  transfer HOST PORT N [READ_DELAY]  send N bytes while reading the echo, then SHUT_WR
                           and read to EOF; prints {"sent","received","ok","backend"}.
                           With READ_DELAY, the echo is first left unread for that many
                           seconds: "sent_unread" says how far the sender got meanwhile.
  flood HOST PORT N        send up to N bytes to the echo and never read; prints {"sent",
                           "error"}: how far it got before the connection failed or a send
                           blocked for 5 s, and why.
  sink HOST PORT N DELAY [PACE]  send N bytes to port 9002's sink, which reads nothing
                           for DELAY seconds, then everything (with PACE, sleeping PACE
                           seconds after each read: a slow reader), and answers with its
                           count and hash; prints {"sent","received","ok","sent_unread"}.
  whoami HOST PORT N [SPORT0]  N sequential connections (fixed source ports from SPORT0
                           if given); prints the list of backends.
  uping HOST PORT FLOWS N  UDP: FLOWS sockets send N datagrams each to the UDP echo
                           (port 9053 on every ADDR); prints backends, lost, moved.
  hold HOST PORT CONNS SECONDS  keep CONNS connections, ping each every 50 ms, print
                           {"backends", "rounds", "failures"}; stops early on SIGTERM.
"""

from __future__ import annotations

import hashlib
import json
import random
import signal
import socket
import sys
import threading
import time

CHUNK = 256 * 1024


def _pattern(n: int) -> bytes:
    """Bytes that never repeat in any window a test could look at: a repeated or skipped
    piece of the stream changes the content at once, whatever its length (a periodic
    pattern hides shifts by a multiple of its period)."""
    rng = random.Random(0x6B6777)  # (randbytes takes at most 2**31 bits at a time)
    return b"".join(rng.randbytes(min(n - i, 1 << 24)) for i in range(0, n, 1 << 24))


def _first_difference(sent: bytes, received: bytes, at: int) -> dict:
    """Where the received stream first differs from what was sent, and where in the
    sent stream the bytes received there come from (their offset minus ``at``: negative
    when bytes were repeated, positive when some were skipped)."""
    sample = received[:64]
    origin = sent.find(sample, max(0, at - 8 * 1024 * 1024), at + 8 * 1024 * 1024)
    return {"offset": at, "shift": origin - at if origin >= 0 else None}


def _differs(sent: bytes, d: bytes, at: int) -> dict | None:
    """_first_difference when ``d``, received at offset ``at``, is not what was sent there."""
    if d == sent[at:at + len(d)]:
        return None
    i = next(i for i in range(len(d)) if at + i >= len(sent) or d[i] != sent[at + i])
    return _first_difference(sent, d[i:], at + i)


def _readline(s: socket.socket) -> str:
    buf = b""
    while not buf.endswith(b"\n"):
        c = s.recv(1)
        if not c:
            break
        buf += c
    return buf.decode().strip()


def _echo(c: socket.socket, addr: str) -> None:
    try:
        c.sendall(addr.encode() + b"\n")
        while True:
            d = c.recv(CHUNK)
            if not d:
                break
            c.sendall(d)
        c.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        c.close()


def _listen(addr: str, port: int, handler) -> None:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(4096)
    while True:
        c, _ = s.accept()
        threading.Thread(target=handler, args=(c, addr), daemon=True).start()


def _sink(c: socket.socket, addr: str) -> None:
    """First line: "DELAY N [PACE]": seconds to wait before reading, how many bytes of
    _pattern come, and seconds to sleep after each read; then read to EOF and answer
    {"received", "sha256"} and where the bytes first differ from the pattern, if they
    do."""
    try:
        delay, size, *pace = _readline(c).split()
        want = _pattern(int(size))
        nap = float(pace[0]) if pace else 0.0
        time.sleep(float(delay))
        got, n, first_difference = hashlib.sha256(), 0, None
        while d := c.recv(CHUNK):
            got.update(d)
            first_difference = first_difference or _differs(want, d, n)
            n += len(d)
            if nap:
                time.sleep(nap)
        c.sendall(json.dumps({"received": n, "sha256": got.hexdigest(),
                              "first_difference": first_difference}).encode())
    except OSError:
        pass
    finally:
        c.close()


def _whoami(c: socket.socket, addr: str) -> None:
    try:
        c.sendall(addr.encode() + b"\n")
    finally:
        c.close()


def _udp_echo(addr: str, port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    while True:
        data, peer = s.recvfrom(65535)
        s.sendto(addr.encode() + b" " + data, peer)


def serve(addrs: list[str]) -> None:
    for a in addrs:
        threading.Thread(target=_listen, args=(a, 9000, _echo), daemon=True).start()
        threading.Thread(target=_listen, args=(a, 9001, _whoami), daemon=True).start()
        threading.Thread(target=_listen, args=(a, 9002, _sink), daemon=True).start()
        threading.Thread(target=_udp_echo, args=(a, 9053), daemon=True).start()
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


def transfer(host: str, port: int, n: int, read_delay: float = 0.0) -> dict:
    s = socket.create_connection(
        (host, port), timeout=float(__import__("os").environ.get("NETAPP_TIMEOUT", "20")))
    backend = _readline(s)
    data = _pattern(n)
    sent_hash = hashlib.sha256(data).hexdigest()
    got = hashlib.sha256()
    received = 0
    first_difference = None
    sent = 0
    sent_unread = None

    def reader() -> None:
        nonlocal received, first_difference, sent_unread
        if read_delay:
            time.sleep(read_delay)
            sent_unread = sent
        while True:
            d = s.recv(CHUNK)
            if not d:
                return
            got.update(d)
            first_difference = first_difference or _differs(data, d, received)
            received += len(d)

    t = threading.Thread(target=reader)
    t.start()
    view = memoryview(data)
    for i in range(0, n, CHUNK):
        s.sendall(view[i:i + CHUNK])
        sent = min(n, i + CHUNK)
    s.shutdown(socket.SHUT_WR)  # half-close: the echo must still arrive in full
    t.join(60 + read_delay)
    s.close()
    out = {"sent": n, "received": received, "ok": got.hexdigest() == sent_hash and received == n,
           "backend": backend}
    if first_difference is not None:
        out["first_difference"] = first_difference
    if sent_unread is not None:
        out["sent_unread"] = sent_unread
    return out


def flood(host: str, port: int, n: int) -> dict:
    s = socket.create_connection((host, port), timeout=5)  # blocked that long: held back
    chunk = _pattern(CHUNK)
    sent, error = 0, None
    try:
        while sent < n:
            s.sendall(chunk)
            sent += len(chunk)
    except OSError as e:
        error = type(e).__name__
    s.close()
    return {"sent": sent, "error": error}


def sink(host: str, port: int, n: int, delay: float, pace: float = 0.0) -> dict:
    data = _pattern(n)
    s = socket.create_connection((host, port), timeout=60 + delay)
    s.sendall(f"{delay} {n} {pace}\n".encode())
    start = time.monotonic()
    sent, sent_unread = 0, None
    view = memoryview(data)
    for i in range(0, n, CHUNK):
        s.sendall(view[i:i + CHUNK])
        sent = min(n, i + CHUNK)
        if sent_unread is None and time.monotonic() - start >= delay:
            sent_unread = sent
    if sent_unread is None:  # everything went before the sink started reading
        sent_unread = n
    s.shutdown(socket.SHUT_WR)
    answer = json.loads(b"".join(iter(lambda: s.recv(CHUNK), b"")) or b"{}")
    s.close()
    out = {"sent": n, "received": answer.get("received"), "sent_unread": sent_unread,
           "ok": answer.get("sha256") == hashlib.sha256(data).hexdigest()}
    if answer.get("first_difference"):
        out["first_difference"] = answer["first_difference"]
    return out


def whoami(host: str, port: int, n: int, sport0: int | None) -> list[str]:
    out = []
    for i in range(n):
        s = socket.socket()
        s.settimeout(5)
        if sport0 is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", sport0 + i))
        try:
            s.connect((host, port))
            out.append(_readline(s))
        except OSError as e:
            out.append(f"error:{e.__class__.__name__}")
        finally:
            s.close()
    return out


def hold(host: str, port: int, conns: int, seconds: float) -> dict:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    socks = [socket.create_connection((host, port), timeout=5) for _ in range(conns)]
    backends = [_readline(s) for s in socks]
    print(json.dumps({"backends": backends}), flush=True)
    rounds = failures = 0
    deadline = time.monotonic() + seconds
    while not stop.is_set() and time.monotonic() < deadline:
        for i, s in enumerate(socks):
            msg = f"ping {rounds} {i}\n".encode()
            try:
                s.sendall(msg)
                got = b""
                while len(got) < len(msg):
                    d = s.recv(len(msg) - len(got))
                    if not d:
                        break
                    got += d
                if got != msg:
                    failures += 1
            except OSError:
                failures += 1
        rounds += 1
        time.sleep(0.05)
    return {"backends": backends, "rounds": rounds, "failures": failures}


def uping(host: str, port: int, flows: int, per_flow: int) -> dict:
    """`flows` UDP sockets (distinct source ports), `per_flow` datagrams each; every
    reply must name the same backend for a given socket.

    All sockets stay open until the end: a socket closed early frees its port, and the
    kernel may hand the same port to a later socket, which would make two "flows" one
    5-tuple (one connection-table pair instead of two)."""
    backends, lost, moved = [], 0, 0
    held = []
    for f in range(flows):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        held.append(s)
        s.settimeout(1)
        first = None
        for i in range(per_flow):
            msg = f"{f}-{i}".encode()
            s.sendto(msg, (host, port))
            try:
                data, peer = s.recvfrom(65535)
            except TimeoutError:
                lost += 1
                continue
            who, _, echo = data.partition(b" ")
            if echo != msg or peer != (host, port):
                lost += 1
                continue
            first = first or who.decode()
            moved += who.decode() != first
        backends.append(first)
    for s in held:
        s.close()
    return {"backends": backends, "lost": lost, "moved": moved}


def main(argv: list[str]) -> None:
    cmd, *a = argv
    if cmd == "serve":
        serve(a)
    elif cmd == "transfer":
        print(json.dumps(transfer(a[0], int(a[1]), int(a[2]), float(a[3]) if len(a) > 3 else 0.0)))
    elif cmd == "flood":
        print(json.dumps(flood(a[0], int(a[1]), int(a[2]))))
    elif cmd == "sink":
        print(json.dumps(sink(a[0], int(a[1]), int(a[2]), float(a[3]),
                              float(a[4]) if len(a) > 4 else 0.0)))
    elif cmd == "whoami":
        print(json.dumps(whoami(a[0], int(a[1]), int(a[2]), int(a[3]) if len(a) > 3 else None)))
    elif cmd == "uping":
        print(json.dumps(uping(a[0], int(a[1]), int(a[2]), int(a[3]))))
    elif cmd == "hold":
        print(json.dumps(hold(a[0], int(a[1]), int(a[2]), float(a[3]))), flush=True)
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv[1:])
