"""Listening sockets for the L4 proxies that accept connections themselves.

The splice proxy and the TLS passthrough proxy both keep one listening socket per
(address, port), opened and closed as the configuration changes, with an accept loop
handing each connection to ``serve``. Closing a listener leaves the connections it
accepted alone: they finish on their own.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping

Key = tuple[str, int]


class Acceptor:
    def __init__(self) -> None:
        self._listeners: dict[Key, tuple[socket.socket, asyncio.Task]] = {}
        self._tasks: set[asyncio.Task] = set()

    async def serve(self, key: Key, conn: socket.socket) -> None:
        raise NotImplementedError

    def listen(self, wanted: Mapping[Key, str]) -> dict[str, str]:
        """Listen on exactly ``wanted`` (address, port) -> name; return name -> error."""
        errors: dict[str, str] = {}
        for key in [k for k in self._listeners if k not in wanted]:
            ls, task = self._listeners.pop(key)
            task.cancel()
            ls.close()
        loop = asyncio.get_running_loop()
        for key, name in wanted.items():
            if key in self._listeners:
                continue
            ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                ls.bind(key)
                ls.listen(1024)
                ls.setblocking(False)
            except OSError as e:
                ls.close()
                errors[name] = f"cannot listen on {key[0]}:{key[1]}: {e.strerror or e}"
                continue
            self._listeners[key] = (ls, loop.create_task(self._accept_loop(key, ls)))
        return errors

    async def _accept_loop(self, key: Key, ls: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            c, _ = await loop.sock_accept(ls)
            t = loop.create_task(self.serve(key, c))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    def close_listeners(self) -> None:
        for ls, task in self._listeners.values():
            task.cancel()
            ls.close()
        self._listeners.clear()
        for t in list(self._tasks):
            t.cancel()
