"""Compile, load, pin and attach kgw's BPF programs (bcc for compiling and XDP,
pyroute2 for TC), and read the pinned maps through named accessors (STYLE §4.4).

Everything persistent lives under one pin directory: maps are pinned by the programs'
BPF_TABLE_PINNED declarations (bcc reuses a pin that exists), programs are pinned by
``Loader.load``. Attachments outlive the process (a tc filter and an XDP program hold
their program), which is what lets established flows survive an agent restart;
``detach``/``cleanup`` remove them explicitly, and ``attached()`` is the
context-managed pair for tests and benchmarks.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import abi, kernel_btf, pinlock
from .csource import program_source
from .maps import MapInfo, MapSet, PinnedMapSet, FdMap, MAP_ARRAY, MAP_HASH, MAP_LRU_HASH, \
    MAP_PERCPU_ARRAY, MAP_SOCKHASH

log = logging.getLogger("kgw.l4.loader")

BPF_PROG_TYPE_SCHED_CLS = 3
BPF_PROG_TYPE_XDP = 6
BPF_PROG_TYPE_SK_SKB = 14
BPF_SK_SKB_STREAM_VERDICT = 5  # enum bpf_attach_type
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
TC_INGRESS_PARENT = "ffff:fff2"
TC_PRIO = 0xC0DE & 0x7FFF  # our filter's priority; one filter per device
TC_HANDLE = 1

#: program name -> (source file, function, bcc program type)
PROGRAMS: dict[str, tuple[str, str, int]] = {
    "tc": ("lb_tc.c", "kgw_tc", BPF_PROG_TYPE_SCHED_CLS),
    "xdp": ("lb_xdp.c", "kgw_xdp", BPF_PROG_TYPE_XDP),
    "sockmap": ("sockmap.c", "kgw_sk_verdict", BPF_PROG_TYPE_SK_SKB),
}

DEFAULT_TIMEOUTS = {
    "ct_timeout_syn_ns": 30 * 10**9,
    "ct_timeout_est_ns": 3600 * 10**9,
    "ct_timeout_closing_ns": 30 * 10**9,
}
#: SNAT ports: the whole unprivileged range, so that a client's own source port can be
#: kept (bpf/nat.h). A port the node itself uses towards the same backend is skipped
#: (socket lookup on the reply tuple).
DEFAULT_NAT_PORTS = (1024, 65535)


class BpfUnavailable(RuntimeError):
    """The kernel data plane cannot run here; the message says why."""


def unavailable_reason() -> str | None:
    """Why BPF cannot be used on this machine, or None."""
    if os.geteuid() != 0:
        return "not running as root"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "bcc is not installed (Debian: python3-bpfcc)"
    if os.path.exists("/sys/kernel/kheaders.tar.xz"):
        return None  # bcc unpacks the kernel's own headers
    mod = f"/lib/modules/{os.uname().release}"
    build, source = f"{mod}/build", f"{mod}/source"
    if not os.path.isdir(os.path.join(build, "include")):
        return f"no kernel headers ({build} is missing)"
    # bcc compiles against `source` when it exists (Debian splits the headers into an
    # arch tree, `build`, and a -common tree, `source`), else against `build`.
    tree = source if os.path.exists(source) else build
    if not os.path.exists(os.path.join(tree, "include/linux/kconfig.h")):
        return (f"kernel headers incomplete: {tree}/include/linux/kconfig.h is missing "
                f"(on Debian, {source} must point at the linux-headers-*-common tree)")
    return None


def ensure_bpffs(path: str = "/sys/fs/bpf") -> None:
    """Mount bpffs at /sys/fs/bpf if it is not (pins need it)."""
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and parts[1] == path and parts[2] == "bpf":
                return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"bpf", path.encode(), b"bpf", 0, None) != 0:
        e = ctypes.get_errno()
        raise BpfUnavailable(f"cannot mount bpffs at {path}: {os.strerror(e)}")


#: Maps whose contents may be lost (counters, a cache): when only these differ from the
#: pinned ones (a counter was added), they are recreated alone on load.
REPLACEABLE_MAPS = frozenset({"kgw_stats", "kgw_fib_cache"})


def expected_maps(sizes: Mapping[str, int] = abi.SIZES) -> dict[str, MapInfo]:
    """Type, key size, value size and capacity of every map, from the ABI."""
    s = ctypes.sizeof
    return {
        "kgw_frontends": MapInfo(MAP_HASH, s(abi.FeKey), s(abi.FeVal), sizes["KGW_MAX_FRONTENDS"]),
        "kgw_backends": MapInfo(MAP_ARRAY, 4, s(abi.Backend), sizes["KGW_MAX_BACKENDS"]),
        "kgw_maglev": MapInfo(MAP_ARRAY, 4, 4,
                              sizes["KGW_MAX_FRONTENDS"] * sizes["KGW_MAGLEV_SIZE"]),
        "kgw_ct": MapInfo(MAP_LRU_HASH, s(abi.FlowKey), s(abi.CtEntry), sizes["KGW_CT_SIZE"]),
        "kgw_ct_syn": MapInfo(MAP_LRU_HASH, s(abi.FlowKey), s(abi.CtEntry),
                              sizes["KGW_CT_SYN_SIZE"]),
        "kgw_local_addrs": MapInfo(MAP_HASH, 4, 4, sizes["KGW_MAX_LOCAL_ADDRS"]),
        "kgw_settings": MapInfo(MAP_ARRAY, 4, s(abi.Settings), 1),
        "kgw_syn_limits": MapInfo(MAP_HASH, s(abi.FeKey), s(abi.SynLimit),
                                  sizes["KGW_MAX_SYN_LIMITS"]),
        "kgw_syn_sources": MapInfo(MAP_LRU_HASH, s(abi.SynSrcKey), s(abi.SynSrc),
                                   sizes["KGW_SYN_SOURCES"]),
        "kgw_stats": MapInfo(MAP_PERCPU_ARRAY, 4, s(abi.CounterVal), abi.stats_size(sizes)),
        "kgw_fib_cache": MapInfo(MAP_PERCPU_ARRAY, 4, s(abi.FibEntry), sizes["KGW_FIB_CACHE_SIZE"]),
    }


def splice_maps(sizes: Mapping[str, int] = abi.SIZES) -> dict[str, MapInfo]:
    """The maps of bpf/sockmap.c (declared in kgw_splice.h), keyed by socket cookie.
    Not pinned: they hold sockets of this process only (Loader.table)."""
    s = ctypes.sizeof
    n = sizes["KGW_SOCKHASH_SIZE"]
    return {
        "kgw_sockhash": MapInfo(MAP_SOCKHASH, 8, 4, n),
        "kgw_splice_peer": MapInfo(MAP_HASH, 8, s(abi.SplicePeer), n),
        "kgw_splice_hold": MapInfo(MAP_HASH, 8, 8, n),
    }


@dataclass(frozen=True, slots=True)
class Attachment:
    ifname: str
    hook: str  # "tc" | "xdp"
    xdp_mode: str = ""  # "native" | "generic"


def ifindex(ifname: str) -> int:
    """Index of an interface in this network namespace; ValueError names it if absent."""
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        raise ValueError(f"unknown interface {ifname!r}") from None


class Loader:
    def __init__(self, pin_dir: str = abi.PIN_DIR, sizes: Mapping[str, int] = abi.SIZES):
        self.pin_dir = pin_dir
        self.sizes = dict(sizes)
        self._bpf: dict[str, Any] = {}  # program name -> bcc.BPF (keeps fds alive)
        self.prog_fds: dict[str, int] = {}
        self._maps: PinnedMapSet | None = None

    # ----------------------------------------------------------------- state

    def pinned(self) -> bool:
        return os.path.exists(os.path.join(self.pin_dir, "kgw_ct"))

    def pin_mismatches(self) -> dict[str, str]:
        """Pinned maps that do not match this ABI: name -> what differs."""
        out: dict[str, str] = {}
        for name, want in expected_maps(self.sizes).items():
            path = os.path.join(self.pin_dir, name)
            if not os.path.exists(path):
                continue
            try:
                m = FdMap.open_pinned(path)
            except OSError as e:
                out[name] = str(e)
                continue
            got = m.info
            m.close()
            if got != want:
                out[name] = f"pinned {got}, expected {want}"
        return out

    def check_pins(self) -> str | None:
        """None if the pinned maps match this ABI, else what differs."""
        diff = self.pin_mismatches()
        return "; ".join(f"{n}: {r}" for n, r in diff.items()) or None

    def maps(self) -> MapSet:
        if self._maps is None:
            self._maps = PinnedMapSet(self.pin_dir)
        return self._maps

    # ----------------------------------------------------------------- load

    def load(self, name: str) -> int:
        """Compile and load one program (once per process), pin it, return its fd."""
        if name in self.prog_fds:
            return self.prog_fds[name]
        reason = unavailable_reason()
        if reason:
            raise BpfUnavailable(reason)
        from bcc import BPF, libbcc

        ensure_bpffs()
        os.makedirs(self.pin_dir, exist_ok=True)
        diff = self.pin_mismatches()
        if diff and set(diff) <= REPLACEABLE_MAPS:
            # e.g. a new counter: only those maps are recreated; the connection table
            # and the configuration maps stay, so established flows carry on.
            log.warning("pinned %s under %s do not match this build (%s): replacing "
                        "them, keeping the other maps", ", ".join(sorted(diff)),
                        self.pin_dir, "; ".join(f"{n}: {r}" for n, r in diff.items()))
            self._unpin(diff)
        elif diff:
            log.warning("pinned maps under %s do not match this build (%s): removing them",
                        self.pin_dir, "; ".join(f"{n}: {r}" for n, r in diff.items()))
            self.remove_pins(keep_dir=True)  # the directory carries this process's lock
        src, func, ptype = PROGRAMS[name]
        t0 = time.monotonic()
        extra = list(kernel_btf.splice_cflags()) if name == "sockmap" else []
        b = BPF(text=program_source(src), cflags=abi.cflags(self.sizes, self.pin_dir) + extra + [
            "-Wno-incompatible-pointer-types-discards-qualifiers", "-Wno-macro-redefined"])
        fn = b.load_func(func, ptype)
        self._bpf[name] = b
        self.prog_fds[name] = fn.fd
        pin = os.path.join(self.pin_dir, f"prog_{name}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pin)
        if libbcc.lib.bpf_obj_pin(fn.fd, pin.encode()) != 0:
            raise BpfUnavailable(f"cannot pin program at {pin}")
        log.info("compiled and loaded %s (%s) in %.1fs", src, func, time.monotonic() - t0)
        self._init_settings()
        return fn.fd

    def table(self, prog: str, table: str) -> FdMap:
        """A map a loaded program declares without pinning (the splice maps), behind the
        same interface as the pinned ones. bcc 0.26's Python tables do not support
        SOCKHASH, so every such map is reached by its fd from libbcc; the program's bcc
        module keeps owning the fd."""
        from bcc import libbcc

        b = self._bpf[prog]
        fd = libbcc.lib.bpf_table_fd(b.module, table.encode())
        if fd < 0:
            raise KeyError(f"{prog} has no map {table}")
        return FdMap(fd, table, owned=False)

    def attach_verdict(self, prog: str, sockhash: FdMap) -> None:
        """Attach a loaded SK_SKB program as the stream verdict of a sockhash (no stream
        parser: the kernel hands it whole skbs off the receive queue, tcp_read_skb)."""
        from bcc import libbcc

        if libbcc.lib.bpf_prog_attach(self.prog_fds[prog], sockhash.fd,
                                      BPF_SK_SKB_STREAM_VERDICT, 0) != 0:
            raise OSError(f"cannot attach the {prog} verdict program")

    def ring_buffer(self, prog: str, table: str,
                    on_record: Callable[[bytes], None]) -> tuple[int, Callable[[], None]]:
        """Open a ring buffer a loaded program writes to: returns its fd (readable while
        records wait) and a function that hands each waiting record to ``on_record``."""
        b = self._bpf[prog]
        rb = b[table]
        rb.open_ring_buffer(lambda _ctx, data, size: on_record(ctypes.string_at(data, size)))
        return rb.map_fd, b.ring_buffer_consume

    def _init_settings(self) -> None:
        if self.settings().ct_timeout_est_ns == 0:  # fresh map: defaults; adopted: keep
            self.set_settings()

    def set_settings(self, **kw: int) -> None:
        """Write kgw_settings (timeouts in ns, nat_port_min/max, flags); unspecified fields keep
        their current value, or the default on a fresh map."""
        cur = self.settings()
        defaults = dict(DEFAULT_TIMEOUTS, nat_port_min=DEFAULT_NAT_PORTS[0],
                        nat_port_max=DEFAULT_NAT_PORTS[1])
        for name, default in defaults.items():
            value = kw.get(name, getattr(cur, name) or default)
            setattr(cur, name, value)
        if "flags" in kw:
            cur.flags = kw["flags"]
        self.maps().get("kgw_settings").update(abi.SETTINGS_KEY, bytes(cur))

    def settings(self) -> abi.Settings:
        return settings(self.maps())

    # ----------------------------------------------------------------- attach

    def attach_tc(self, ifname: str) -> Attachment:
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        idx = ifindex(ifname)
        fd = self.load("tc")
        with IPRoute() as ipr:
            try:
                ipr.tc("add", "clsact", idx)
            except NetlinkError as e:
                if e.code != errno.EEXIST:
                    raise
            ipr.tc("replace-filter", "bpf", idx, TC_HANDLE, fd=fd, name="kgw_tc",
                   parent=TC_INGRESS_PARENT, prio=TC_PRIO, classid=1, direct_action=True)
        log.info("attached kgw_tc at tc ingress of %s", ifname)
        return Attachment(ifname, "tc")

    def detach_tc(self, ifname: str) -> None:
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            idx = ifindex(ifname)
        except ValueError:
            return
        with IPRoute() as ipr, contextlib.suppress(NetlinkError):
            ipr.tc("del-filter", "bpf", idx, TC_HANDLE, parent=TC_INGRESS_PARENT, prio=TC_PRIO)

    def attach_xdp(self, ifname: str, mode: str = "native") -> Attachment:
        """Attach at XDP, native (driver) mode first; ``mode="auto"`` falls back to
        generic mode where the driver has no XDP support."""
        from bcc import libbcc

        ifindex(ifname)
        fd = self.load("xdp")
        modes = {"native": [XDP_FLAGS_DRV_MODE], "generic": [XDP_FLAGS_SKB_MODE],
                 "auto": [XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE]}[mode]
        for flags in modes:
            if libbcc.lib.bpf_attach_xdp(ifname.encode(), fd, flags) == 0:
                got = "native" if flags == XDP_FLAGS_DRV_MODE else "generic"
                log.info("attached kgw_xdp at XDP (%s) on %s", got, ifname)
                return Attachment(ifname, "xdp", got)
        raise OSError(f"cannot attach XDP ({mode}) on {ifname}")

    def detach_xdp(self, ifname: str) -> None:
        from bcc import libbcc

        with contextlib.suppress(ValueError):
            ifindex(ifname)
            for flags in (XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE):
                libbcc.lib.bpf_attach_xdp(ifname.encode(), -1, flags)

    def attach(self, ifname: str, hook: str) -> Attachment:
        return self.attach_tc(ifname) if hook == "tc" else self.attach_xdp(ifname, "auto")

    def detach(self, att: Attachment) -> None:
        (self.detach_tc if att.hook == "tc" else self.detach_xdp)(att.ifname)

    @contextlib.contextmanager
    def attached(self, ifnames: list[str], hook: str) -> Iterator[list[Attachment]]:
        """Attach on every interface; detach them all on exit, whatever happens."""
        done: list[Attachment] = []
        try:
            for ifname in ifnames:
                done.append(self.attach(ifname, hook))
            yield done
        finally:
            for att in reversed(done):
                self.detach(att)

    # ----------------------------------------------------------------- cleanup

    def _unpin(self, names: Iterable[str]) -> None:
        if self._maps is not None:
            self._maps.close()
            self._maps = None
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.pin_dir, name))

    def remove_pins(self, keep_dir: bool = False) -> None:
        if self._maps is not None:
            self._maps.close()
            self._maps = None
        if os.path.isdir(self.pin_dir):
            for name in os.listdir(self.pin_dir):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.pin_dir, name))
            if not keep_dir:
                with contextlib.suppress(OSError):
                    os.rmdir(self.pin_dir)

    def close(self) -> None:
        """Release this process's handles; attachments and pins stay."""
        if self._maps is not None:
            self._maps.close()
            self._maps = None
        for b in self._bpf.values():
            with contextlib.suppress(Exception):
                b.cleanup()
        self._bpf.clear()
        self.prog_fds.clear()


# --------------------------------------------------------------------- accessors
# The inspect CLI and the tests read state only through these (STYLE §4.4/§4.5); the
# bytes are taken apart by kgw_l4.abi's decoders.

def settings(maps: MapSet) -> abi.Settings:
    """kgw_settings (all zero in a fresh map)."""
    raw = maps.get("kgw_settings").lookup(abi.SETTINGS_KEY)
    return abi.Settings.from_buffer_copy(raw) if raw else abi.Settings()


def frontends(maps: MapSet) -> list[tuple[str, int, str, int]]:
    """(address, port, protocol, fe_id) of every kgw_frontends entry, by fe_id."""
    m = maps.get("kgw_frontends")
    out = []
    for k in m.keys():
        v = m.lookup(k)
        if v is not None:
            out.append(abi.fe_entry(k, v))
    return sorted(out, key=lambda t: t[3])


def backend_entries(maps: MapSet, sizes: Mapping[str, int] = abi.SIZES) -> dict[int, bytes]:
    """backend_id -> kgw_backends value of every used slot (one batched read)."""
    return abi.backends_of(maps.get("kgw_backends").lookup_range(0, sizes["KGW_MAX_BACKENDS"]))


def backends(maps: MapSet, sizes: Mapping[str, int] = abi.SIZES) -> dict[int, tuple[str, int, str]]:
    """backend_id -> (address, port, SNAT address) of every used kgw_backends slot."""
    return {bid: abi.backend_of(raw) for bid, raw in backend_entries(maps, sizes).items()}


def maglev_row(maps: MapSet, fe_id: int, sizes: Mapping[str, int] = abi.SIZES) -> list[int]:
    """A frontend's Maglev row: the backend id of every slot (one batched read)."""
    n = sizes["KGW_MAGLEV_SIZE"]
    return abi.u32s_of(maps.get("kgw_maglev").lookup_range(abi.maglev_index(fe_id, 0, n), n))


def maglev_slot(maps: MapSet, fe_id: int, slot: int, sizes: Mapping[str, int] = abi.SIZES) -> int:
    """The backend id in one slot of a frontend's Maglev row (NO_BACKEND if unreadable)."""
    idx = abi.maglev_index(fe_id, slot, sizes["KGW_MAGLEV_SIZE"])
    raw = maps.get("kgw_maglev").lookup(abi.u32(idx))
    return abi.u32_of(raw) if raw else abi.NO_BACKEND


def local_addrs(maps: MapSet) -> set[str]:
    """The node addresses in kgw_local_addrs (where frontends on 0.0.0.0 match)."""
    return {abi.local_addr_of(k) for k in maps.get("kgw_local_addrs").keys()}


def is_local(maps: MapSet, address: str) -> bool:
    return bool(maps.get("kgw_local_addrs").lookup(abi.local_addr_key(address)))


def ct_entry(maps: MapSet, table: str, saddr: str, sport: int, daddr: str, dport: int,
             proto: int) -> abi.CtEntry | None:
    """The entry of a tuple in a connection table (kgw_ct or kgw_ct_syn), if any."""
    raw = maps.get(table).lookup(abi.flow_key(saddr, sport, daddr, dport, proto))
    return abi.CtEntry.from_buffer_copy(raw) if raw else None


def counter(maps: MapSet, c: abi.Counter, sizes: Mapping[str, int] = abi.SIZES) -> tuple[int, int]:
    """(packets, bytes) of a global counter, summed over CPUs."""
    return _slot(maps, abi.global_base(sizes) + int(c))


def counters(maps: MapSet, sizes: Mapping[str, int] = abi.SIZES) -> dict[str, tuple[int, int]]:
    return {c.name: counter(maps, c, sizes) for c in abi.Counter}


def _slot(maps: MapSet, idx: int) -> tuple[int, int]:
    return abi.counter_total(maps.get("kgw_stats").percpu(abi.u32(idx)))


@dataclass(frozen=True, slots=True)
class FrontendCounts:
    """A frontend's slots of kgw_stats, summed over CPUs; (packets, bytes) pairs."""

    to_backend: tuple[int, int]
    to_client: tuple[int, int]
    flows: int
    #: drop reason (abi.FE_DROPS, by name) -> (packets, bytes)
    drops: Mapping[str, tuple[int, int]]


@dataclass(frozen=True, slots=True)
class BackendCounts:
    to_backend: tuple[int, int]
    to_client: tuple[int, int]
    flows: int


@dataclass(frozen=True, slots=True)
class Stats:
    frontends: Mapping[int, FrontendCounts]
    backends: Mapping[int, BackendCounts]
    #: every global counter by name -> (packets, bytes)
    counters: Mapping[str, tuple[int, int]]


def stats(maps: MapSet, fe_ids: Iterable[int], backend_ids: Iterable[int],
          sizes: Mapping[str, int] = abi.SIZES) -> Stats:
    """The counters of these frontends and backends and the global ones, in six batched
    reads of kgw_stats (each range only up to the highest id asked for): what a scrape of
    /metrics costs the kernel plane, whatever the traffic."""
    lay = abi.StatsLayout(sizes)
    m = maps.get("kgw_stats")
    fes, bes = sorted(set(fe_ids)), sorted(set(backend_ids))
    nfe = fes[-1] + 1 if fes else 0
    nbe = bes[-1] + 1 if bes else 0
    ndrop = len(abi.FE_DROPS)

    def read(start: int, count: int) -> list[tuple[int, int]]:
        return abi.counter_totals(m.lookup_range(start, count), count) if count else []

    fe_dir, fe_flows = read(lay.fe_base, 2 * nfe), read(lay.fe_flows_base, nfe)
    fe_drops = read(lay.fe_drops_base, ndrop * nfe)
    be_dir, be_flows = read(lay.backend_base, 2 * nbe), read(lay.be_flows_base, nbe)
    glob = read(lay.global_base, abi.COUNTER_COUNT)
    return Stats(
        {i: FrontendCounts(fe_dir[2 * i], fe_dir[2 * i + 1], fe_flows[i][0],
                           {c.name: fe_drops[i * ndrop + j] for j, c in enumerate(abi.FE_DROPS)})
         for i in fes},
        {i: BackendCounts(be_dir[2 * i], be_dir[2 * i + 1], be_flows[i][0]) for i in bes},
        {c.name: glob[c.value] for c in abi.Counter})


@dataclass(frozen=True, slots=True)
class Flow:
    table: str  # "ct" | "ct_syn"
    saddr: str
    sport: int
    daddr: str
    dport: int
    proto: str
    new_saddr: str
    new_sport: int
    new_daddr: str
    new_dport: int
    fe_id: int
    backend_id: int
    flags: int
    created_ns: int
    last_seen_ns: int
    packets: int
    bytes: int

    @property
    def reply(self) -> bool:
        return bool(self.flags & abi.CT_F_REPLY)


def flows(maps: MapSet, tables: tuple[str, ...] = ("kgw_ct", "kgw_ct_syn")) -> list[Flow]:
    out = []
    for t in tables:
        m = maps.get(t)
        for k in m.keys():
            raw = m.lookup(k)
            if raw is None:
                continue
            key, e = abi.FlowKey.from_buffer_copy(k), abi.CtEntry.from_buffer_copy(raw)
            out.append(Flow(t.removeprefix("kgw_"), abi.ip_str(key.saddr), abi.port_host(key.sport),
                            abi.ip_str(key.daddr), abi.port_host(key.dport),
                            abi.PROTO_NAME.get(key.proto, str(key.proto)),
                            abi.ip_str(e.new_saddr), abi.port_host(e.new_sport),
                            abi.ip_str(e.new_daddr), abi.port_host(e.new_dport),
                            e.fe_id, e.backend_id, e.flags, e.created_ns, e.last_seen_ns,
                            e.packets, e.bytes))
    return out


def fill_levels(maps: MapSet, names: tuple[str, ...] = ("kgw_frontends", "kgw_ct", "kgw_ct_syn",
                                                          "kgw_local_addrs")) -> dict[
                                                              str, tuple[int, int]]:
    """(entries, capacity) of each hash map."""
    out = {}
    for n in names:
        m = maps.get(n)
        out[n] = (sum(1 for _ in m.keys()), m.info.max_entries)
    return out


@dataclass(frozen=True, slots=True)
class Sweep:
    """What a pass over the connection tables found."""

    removed: int = 0
    #: table -> entries left (both directions of each flow)
    entries: Mapping[str, int] = field(default_factory=dict)
    #: fe_id -> flows left (forward entries)
    flows: Mapping[int, int] = field(default_factory=dict)


def sweep_flows(maps: MapSet, settings: abi.Settings, now_ns: int | None = None) -> Sweep:
    """Delete connection-table entries past their timeout (the programs also ignore
    them on lookup; this sweep keeps fill levels honest), and count what is left: the
    tables' fill levels and each frontend's flows, which /metrics reports from the last
    sweep (counting a table of 262144 entries at every scrape would cost as much as the
    sweep itself)."""
    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) if now_ns is None else now_ns
    n = 0
    entries: dict[str, int] = {}
    flows: dict[int, int] = {}
    for t in ("kgw_ct", "kgw_ct_syn"):
        m = maps.get(t)
        left = 0
        for k in m.keys():
            raw = m.lookup(k)
            if raw is None:
                continue
            e = abi.CtEntry.from_buffer_copy(raw)
            if e.flags & (abi.CT_F_FIN | abi.CT_F_RST):
                timeout = settings.ct_timeout_closing_ns
            elif e.flags & abi.CT_F_EMBRYONIC:
                timeout = settings.ct_timeout_syn_ns
            else:
                timeout = settings.ct_timeout_est_ns
            if now > e.last_seen_ns and now - e.last_seen_ns > timeout:
                n += m.delete(k)
                continue
            left += 1
            if not e.flags & abi.CT_F_REPLY:
                flows[e.fe_id] = flows.get(e.fe_id, 0) + 1
        entries[t] = left
    return Sweep(n, entries, flows)


def remove_everything(pin_dir: str = abi.PIN_DIR, interfaces: list[str] | None = None) -> None:
    """Detach kgw from the given interfaces (default: every interface) and remove pins.
    Refused (pinlock.PinDirBusy) while a kgw holds the pin directory: its flows would stop
    while it still reported them Programmed."""
    if os.path.isdir(pin_dir):
        try:
            lock = pinlock.acquire(pin_dir)
        except pinlock.PinDirBusy:
            pid = pinlock.holder(pin_dir)
            who = f"kgw (PID {pid})" if pid else "another process"
            raise pinlock.PinDirBusy(errno.EBUSY, f"{who} is running with pin directory {pin_dir}: "
                                                  f"stop it before removing its pins") from None
        try:
            _remove_everything(pin_dir, interfaces)
        finally:
            lock.release()
    else:
        _remove_everything(pin_dir, interfaces)


def _remove_everything(pin_dir: str, interfaces: list[str] | None) -> None:
    loader = Loader(pin_dir)
    names = interfaces if interfaces is not None else [n for _, n in socket.if_nameindex()]
    for n in names:
        with contextlib.suppress(Exception):
            loader.detach_tc(n)
        if _xdp_is_ours(n, pin_dir):
            with contextlib.suppress(Exception):
                loader.detach_xdp(n)
    loader.remove_pins()
    shutil.rmtree(pin_dir, ignore_errors=True)


def _xdp_is_ours(ifname: str, pin_dir: str) -> bool:
    """True when the XDP program on ifname is kgw's (by name)."""
    from pyroute2 import IPRoute

    try:
        with IPRoute() as ipr:
            link = ipr.get_links(ifname)[0]
    except Exception:  # noqa: BLE001
        return False
    xdp = link.get_attr("IFLA_XDP")
    if not xdp:
        return False
    prog_id = xdp.get_attr("IFLA_XDP_PROG_ID")
    if not prog_id:
        return False
    try:
        import subprocess

        out = subprocess.run(["bpftool", "prog", "show", "id", str(prog_id)],
                             capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "kgw_xdp" in out
