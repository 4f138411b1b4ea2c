"""TLS echo server and client for the passthrough kernel test (stdlib ssl).

  serve ADDR PORT CERT KEY      greet with "ADDR\\n", then echo
  hello HOST PORT SNI NBYTES    print {"backend": ..., "ok": echo of NBYTES intact}
"""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import ssl
import sys
import threading


def serve(addr: str, port: int, cert: str, key: str) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, port))
    ls.listen(128)

    def handle(c: socket.socket) -> None:
        try:
            s = ctx.wrap_socket(c, server_side=True)
            s.sendall(addr.encode() + b"\n")
            while d := s.recv(65536):
                s.sendall(d)
            s.close()
        except (OSError, ssl.SSLError):
            c.close()

    def loop() -> None:
        while True:
            c, _ = ls.accept()
            threading.Thread(target=handle, args=(c,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


def hello(host: str, port: int, sni: str, n: int) -> dict:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection((host, port), timeout=10)
    try:
        s = ctx.wrap_socket(raw, server_hostname=sni)
    except (OSError, ssl.SSLError) as e:
        return {"backend": None, "error": type(e).__name__}
    f = s.makefile("rb")
    backend = f.readline().decode().strip()
    # One thread, chunk by chunk: an SSL socket must not be read and written from two
    # threads at once (OpenSSL's SSL object is not thread-safe).
    payload = hashlib.sha256(b"x").digest() * (n // 32)
    got = hashlib.sha256()
    received, error, chunk = 0, None, 64 * 1024
    try:
        for i in range(0, len(payload), chunk):
            part = payload[i:i + chunk]
            s.sendall(part)
            want = len(part)
            while want:
                d = f.read1(want)
                if not d:
                    raise EOFError("connection closed early")
                got.update(d)
                received += len(d)
                want -= len(d)
    except (OSError, ssl.SSLError, EOFError) as e:
        error = f"{type(e).__name__}: {e}"
    s.close()
    ok = got.digest() == hashlib.sha256(payload).digest()
    out = {"backend": backend, "ok": ok}
    if not ok:
        out.update(received=received, sent=len(payload), error=error)
    return out


if __name__ == "__main__":
    cmd, *a = sys.argv[1:]
    if cmd == "serve":
        serve(a[0], int(a[1]), a[2], a[3])
    else:
        print(json.dumps(hello(a[0], int(a[1]), a[2], int(a[3]))))
