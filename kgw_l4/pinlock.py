"""One kgw per pin directory.

Two processes programming the same pinned maps undo each other's work: the second
adopts the first one's maps and rewrites them with its own configuration, and neither
notices. So a process that uses a pin directory holds an exclusive ``flock`` on it for as
long as it runs. The lock is on the directory itself (bpffs holds only pins and
directories: no lock file can be created in it), and the kernel releases it when the
process exits, however it exits (kill -9 included), so a crashed kgw never blocks the
next one. The holder's PID is read back from /proc/locks for the refusal message.
"""

from __future__ import annotations

import errno
import fcntl
import os
from dataclasses import dataclass


class PinDirBusy(OSError):
    """Another process holds the pin directory; the message names it and the way out."""

    def __str__(self) -> str:
        return str(self.strerror)


@dataclass
class PinDirLock:
    path: str
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the only descriptor drops the flock
            self.fd = -1


def holder(path: str) -> int | None:
    """PID of the process holding an flock on ``path`` (as this process's PID namespace
    numbers it), or None when it cannot be told."""
    try:
        st = os.stat(path)
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 00:29:66095 0 EOF"; waiters have a "->" field
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == ident and parts[4].isdigit():
            pid = int(parts[4])
            return pid or None
    return None


def busy_message(path: str, pid: int | None) -> str:
    who = f"another kgw (PID {pid})" if pid else "another process"
    return (f"{who} is running the kernel data plane with pin directory {path}: two instances "
            f"on the same pins would overwrite each other's maps. Stop it, or give this "
            f"instance its own directory with --l4-pin-dir")


def acquire(path: str) -> PinDirLock:
    """Create ``path`` if needed and lock it exclusively, without waiting. Raises
    PinDirBusy when another process holds it, OSError when the directory cannot be made."""
    for _ in range(5):
        os.makedirs(path, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise PinDirBusy(errno.EBUSY, busy_message(path, holder(path))) from None
        # the directory may have been removed and made again between open and flock
        # (a cleanup): then the lock is on an orphan, and we try again
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return PinDirLock(path, fd)
        os.close(fd)
    raise OSError(errno.EAGAIN, f"{path} keeps being removed and made again: cannot lock it")

