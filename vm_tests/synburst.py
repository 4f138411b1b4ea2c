"""Open N TCP connections at once from one source address (stdlib only: it runs under
the system python3 in the client namespace) and report how many completed the
handshake within WAIT seconds: what a per-source SYN rate limit lets through.

  synburst.py SRC HOST PORT N WAIT   prints {"connected": K, "pending": N - K}
"""

from __future__ import annotations

import errno
import json
import selectors
import socket
import sys
import time


def main() -> None:
    src, host, port, n, wait = (sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                                float(sys.argv[5]))
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind((src, 0))
        s.setblocking(False)
        rc = s.connect_ex((host, port))
        if rc not in (0, errno.EINPROGRESS):
            raise SystemExit(f"connect: {errno.errorcode.get(rc, rc)}")
        sel.register(s, selectors.EVENT_WRITE)
        socks.append(s)
    connected = 0
    end = time.monotonic() + wait
    while sel.get_map() and time.monotonic() < end:
        for key, _ in sel.select(max(0.0, end - time.monotonic())):
            s = key.fileobj
            sel.unregister(s)
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                connected += 1
    print(json.dumps({"connected": connected, "pending": n - connected}))
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
