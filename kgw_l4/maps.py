"""Map access behind a small interface, with an in-memory fake (STYLE §4.2).

Keys and values cross this interface as bytes laid out per kgw_l4.abi (its encoders
make them); the programmer, the splicer and the inspect CLI never touch bcc or file
descriptors. ``FdMap`` talks to a real map (pinned, or one a loaded program owns, such as
the sockhash bcc's Python tables cannot handle) through libbcc's syscall wrappers;
``FakeMap`` keeps a dict and enforces the same capacity rules, so control logic is
unit-tested on any machine.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# enum bpf_map_type values used by kgw (include/uapi/linux/bpf.h)
MAP_HASH = 1
MAP_ARRAY = 2
MAP_PERCPU_ARRAY = 6
MAP_LRU_HASH = 9
MAP_SOCKHASH = 18

_PERCPU = {MAP_PERCPU_ARRAY, 5, 10}  # percpu array, percpu hash, lru percpu hash
_ARRAYS = {MAP_ARRAY, MAP_PERCPU_ARRAY}
BPF_ANY, BPF_NOEXIST = 0, 1


class MapError(OSError):
    pass


@dataclass(frozen=True, slots=True)
class MapInfo:
    map_type: int
    key_size: int
    value_size: int
    max_entries: int


class Map(Protocol):
    """What kgw needs from a BPF map."""

    info: MapInfo

    def lookup(self, key: bytes) -> bytes | None: ...
    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None: ...
    def delete(self, key: bytes) -> bool: ...
    def keys(self) -> Iterator[bytes]: ...
    def percpu(self, key: bytes) -> list[bytes]: ...
    def update_many(self, items: list[tuple[bytes, bytes]]) -> None: ...
    def lookup_range(self, start: int, count: int) -> bytes: ...


class MapSet(Protocol):
    def get(self, name: str) -> Map: ...


def possible_cpus() -> int:
    """Number of possible CPUs (per-CPU map values have one slot each)."""
    try:
        text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    except OSError:
        return os.cpu_count() or 1
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n += (int(hi) if hi else int(lo)) - int(lo) + 1
    return n


# ----------------------------------------------------------------------------- fake


class FakeMap:
    """A dict with BPF map semantics: arrays have every index, hashes have a capacity
    (LRU hashes evict the oldest insert instead of failing)."""

    def __init__(self, info: MapInfo, ncpus: int = 2):
        self.info = info
        self.ncpus = ncpus
        self._d: dict[bytes, bytes | list[bytes]] = {}
        self.writes = 0  # number of successful update() calls, for diff tests

    def _check(self, key: bytes) -> None:
        if len(key) != self.info.key_size:
            raise MapError(errno.EINVAL, f"key size {len(key)} != {self.info.key_size}")
        if self.info.map_type in _ARRAYS:
            if int.from_bytes(key, sys.byteorder) >= self.info.max_entries:
                raise MapError(errno.E2BIG, "array index out of range")

    def lookup(self, key: bytes) -> bytes | None:
        self._check(key)
        if self.info.map_type in _PERCPU:
            raise MapError(errno.EINVAL, "per-CPU map: use percpu()")
        v = self._d.get(key)
        if v is None and self.info.map_type in _ARRAYS:
            return bytes(self.info.value_size)
        return v  # type: ignore[return-value]

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        self._check(key)
        if self.info.map_type in _PERCPU:
            if len(value) != self.info.value_size:
                raise MapError(errno.EINVAL, "value size")
            self._d[key] = [value] * self.ncpus
            self.writes += 1
            return
        if len(value) != self.info.value_size:
            raise MapError(errno.EINVAL, f"value size {len(value)} != {self.info.value_size}")
        if flags == BPF_NOEXIST and key in self._d:
            raise MapError(errno.EEXIST, "exists")
        if key not in self._d and self.info.map_type not in _ARRAYS:
            if len(self._d) >= self.info.max_entries:
                if self.info.map_type == MAP_LRU_HASH:
                    self._d.pop(next(iter(self._d)))
                else:
                    raise MapError(errno.E2BIG, "map full")
        self._d[key] = value
        self.writes += 1

    def delete(self, key: bytes) -> bool:
        self._check(key)
        if self.info.map_type in _ARRAYS:
            raise MapError(errno.EINVAL, "cannot delete from an array")
        return self._d.pop(key, None) is not None

    def keys(self) -> Iterator[bytes]:
        if self.info.map_type in _ARRAYS:
            for i in range(self.info.max_entries):
                yield i.to_bytes(self.info.key_size, sys.byteorder)
        else:
            yield from list(self._d)

    def percpu(self, key: bytes) -> list[bytes]:
        self._check(key)
        v = self._d.get(key)
        if v is None:
            return [bytes(self.info.value_size)] * self.ncpus
        return list(v)  # type: ignore[arg-type]

    def update_many(self, items: list[tuple[bytes, bytes]]) -> None:
        for k, v in items:
            self.update(k, v)

    def lookup_range(self, start: int, count: int) -> bytes:
        """Values of array indexes start..start+count-1, concatenated (a per-CPU array:
        each index's value once per CPU, padded to 8 bytes, as the kernel returns it)."""
        if self.info.map_type not in _ARRAYS or start < 0 or start + count > self.info.max_entries:
            raise MapError(errno.EINVAL, "lookup_range: not an array, or out of range")
        ks = self.info.key_size
        if self.info.map_type in _PERCPU:
            pad = -self.info.value_size % 8
            return b"".join(v + bytes(pad) for i in range(start, start + count)
                            for v in self.percpu(i.to_bytes(ks, sys.byteorder)))
        return b"".join(self.lookup(i.to_bytes(ks, sys.byteorder)) or b""
                        for i in range(start, start + count))

    def set_percpu(self, key: bytes, values: list[bytes]) -> None:
        """Test helper: what the BPF program would have counted on each CPU."""
        self._d[key] = list(values)


class FakeMapSet:
    def __init__(self, infos: dict[str, MapInfo], ncpus: int = 2):
        self.maps = {name: FakeMap(info, ncpus) for name, info in infos.items()}

    def get(self, name: str) -> FakeMap:
        return self.maps[name]


# ----------------------------------------------------------------------------- real


class _BpfMapInfo(ctypes.Structure):
    # the leading fields of struct bpf_map_info (include/uapi/linux/bpf.h)
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
    ]


_libbcc = None


def _lib():  # imported lazily: bcc is optional
    global _libbcc
    if _libbcc is None:
        from bcc import libbcc

        _libbcc = libbcc.lib
    return _libbcc


def map_info_of_fd(fd: int) -> MapInfo:
    info = _BpfMapInfo()
    ln = ctypes.c_uint32(ctypes.sizeof(info))
    if _lib().bpf_obj_get_info(fd, ctypes.byref(info), ctypes.byref(ln)) != 0:
        raise MapError(ctypes.get_errno() or errno.EINVAL, "bpf_obj_get_info failed")
    return MapInfo(info.type, info.key_size, info.value_size, info.max_entries)


class FdMap:
    """A real BPF map, by file descriptor: opened from its pin (and closed by ``close``),
    or borrowed from the program that declares it (``owned=False``: the loader's bcc
    module closes it)."""

    def __init__(self, fd: int, name: str = "", owned: bool = True):
        self.fd = fd
        self.name = name
        self.owned = owned
        self.info = map_info_of_fd(fd)
        self._ncpus = possible_cpus()
        self._percpu = self.info.map_type in _PERCPU
        self._vsz = self.info.value_size
        self._batch_ok: bool | None = None
        if self._percpu:
            self._vsz = ((self.info.value_size + 7) // 8) * 8 * self._ncpus

    @classmethod
    def open_pinned(cls, path: str) -> FdMap:
        fd = _lib().bpf_obj_get(path.encode())
        if fd < 0:
            raise MapError(ctypes.get_errno() or errno.ENOENT, f"cannot open pinned map {path}")
        return cls(fd, os.path.basename(path))

    def close(self) -> None:
        if self.fd >= 0 and self.owned:
            os.close(self.fd)
        self.fd = -1

    def _kbuf(self, key: bytes) -> ctypes.Array:
        if len(key) != self.info.key_size:
            raise MapError(errno.EINVAL,
                           f"{self.name}: key size {len(key)} != {self.info.key_size}")
        return ctypes.create_string_buffer(key, len(key))

    def _raw_lookup(self, key: bytes) -> bytes | None:
        k = self._kbuf(key)
        v = ctypes.create_string_buffer(self._vsz)
        if _lib().bpf_lookup_elem(self.fd, k, v) != 0:
            return None
        return v.raw

    def lookup(self, key: bytes) -> bytes | None:
        if self._percpu:
            raise MapError(errno.EINVAL, "per-CPU map: use percpu()")
        return self._raw_lookup(key)

    def percpu(self, key: bytes) -> list[bytes]:
        raw = self._raw_lookup(key)
        step = ((self.info.value_size + 7) // 8) * 8
        if raw is None:
            return [bytes(self.info.value_size)] * self._ncpus
        return [raw[i * step:i * step + self.info.value_size] for i in range(self._ncpus)]

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        k = self._kbuf(key)
        if self._percpu:
            step = ((self.info.value_size + 7) // 8) * 8
            value = b"".join(value.ljust(step, b"\0") for _ in range(self._ncpus))
        if len(value) != self._vsz:
            raise MapError(errno.EINVAL, f"{self.name}: value size {len(value)} != {self._vsz}")
        v = ctypes.create_string_buffer(value, len(value))
        if _lib().bpf_update_elem(self.fd, k, v, flags) != 0:
            e = ctypes.get_errno()
            raise MapError(e, f"{self.name}: update failed: {os.strerror(e) if e else '?'}")

    def update_many(self, items: list[tuple[bytes, bytes]]) -> None:
        """One BPF_MAP_UPDATE_BATCH syscall per chunk (katran writes Maglev changes in
        a batch too); element by element where the kernel has no batch support."""
        if not items:
            return
        if self._percpu or self._batch_ok is False:
            for k, v in items:
                self.update(k, v)
            return
        chunk = 4096
        for i in range(0, len(items), chunk):
            part = items[i:i + chunk]
            keys = b"".join(k for k, _ in part)
            vals = b"".join(v for _, v in part)
            if len(keys) != len(part) * self.info.key_size or len(vals) != len(part) * self._vsz:
                raise MapError(errno.EINVAL, f"{self.name}: bad key or value size in batch")
            kb = ctypes.create_string_buffer(keys, len(keys))
            vb = ctypes.create_string_buffer(vals, len(vals))
            count = ctypes.c_uint32(len(part))
            if _lib().bpf_update_batch(self.fd, kb, vb, ctypes.byref(count)) == 0 and \
                    count.value == len(part):
                self._batch_ok = True
                continue
            self._batch_ok = False
            for k, v in part[count.value:] if count.value <= len(part) else part:
                self.update(k, v)

    def lookup_range(self, start: int, count: int) -> bytes:
        """Values of array indexes start..start+count-1, concatenated: one
        BPF_MAP_LOOKUP_BATCH syscall (element by element where the kernel has none), so
        that reading a whole Maglev row costs a copy, not 16381 syscalls. A per-CPU
        array gives each index's value once per possible CPU, padded to 8 bytes (the
        counters read at scrape time)."""
        info = self.info
        if (info.map_type not in _ARRAYS or info.key_size != 4 or start < 0
                or start + count > info.max_entries):
            raise MapError(errno.EINVAL,
                           f"{self.name}: lookup_range needs an array and indexes in range")
        if count == 0:
            return b""
        if self._batch_ok is not False:
            keys = ctypes.create_string_buffer(4 * count)
            vals = ctypes.create_string_buffer(self._vsz * count)
            n = ctypes.c_uint32(count)
            out = ctypes.c_uint32(0)
            # the batch starts after in_batch (NULL: at the first index)
            prev = ctypes.c_uint32(start - 1) if start else None
            rc = _lib().bpf_lookup_batch(self.fd, ctypes.byref(prev) if prev is not None else None,
                                         ctypes.byref(out), keys, vals, ctypes.byref(n))
            if (rc == 0 or ctypes.get_errno() == errno.ENOENT) and n.value == count:
                return vals.raw
            if rc != 0 and ctypes.get_errno() in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP,
                                                  errno.ENOSYS):
                self._batch_ok = False
        parts = []
        for i in range(start, start + count):
            v = self._raw_lookup(i.to_bytes(4, sys.byteorder))
            if v is None:
                raise MapError(ctypes.get_errno() or errno.EIO,
                               f"{self.name}: lookup of index {i} failed")
            parts.append(v)
        return b"".join(parts)

    def delete(self, key: bytes) -> bool:
        return _lib().bpf_delete_elem(self.fd, self._kbuf(key)) == 0

    def keys(self) -> Iterator[bytes]:
        """Snapshot of the keys (a hash map may change while we walk it)."""
        ks = self.info.key_size
        out: list[bytes] = []
        cur = ctypes.create_string_buffer(ks)
        nxt = ctypes.create_string_buffer(ks)
        if _lib().bpf_get_first_key(self.fd, cur, ks) != 0:
            return iter(out)
        out.append(cur.raw)
        limit = self.info.max_entries + 1
        while len(out) < limit and _lib().bpf_get_next_key(self.fd, cur, nxt) == 0:
            out.append(nxt.raw)
            ctypes.memmove(cur, nxt, ks)
        return iter(out)


class PinnedMapSet:
    """Maps opened from their pins under one directory."""

    def __init__(self, pin_dir: str):
        self.pin_dir = pin_dir
        self._maps: dict[str, FdMap] = {}

    def get(self, name: str) -> FdMap:
        m = self._maps.get(name)
        if m is None:
            m = self._maps[name] = FdMap.open_pinned(os.path.join(self.pin_dir, name))
        return m

    def close(self) -> None:
        for m in self._maps.values():
            m.close()
        self._maps.clear()
