"""The L4 data plane as the supervisor sees it: open_plane() picks the mode, apply()
programs it, errors() reports per-frontend problems, close() lets go.

Modes:
  tc         kernel NAT load balancer at TC ingress (the baseline)
  xdp        the same at XDP (native where the driver supports it), with TC behind it
  splice     accept + connect in userspace, bytes moved by a sockmap program
  userspace  asyncio L4 proxy (kgw_l4.userspace; UDP flows in kgw_l4.udp)
  auto       tc when BPF can run here, otherwise userspace, with one log line saying why

TLS passthrough listeners (L4Config.tls_passthrough) read the SNI and splice with
sockmap in the kernel modes, and copy in userspace in the userspace mode.

BPF is compiled lazily, on the first config that has a frontend, so a laptop with no
TCPRoutes never pays for it. close() leaves programs attached and maps pinned: a
restarted agent adopts them and established flows carry on. cleanup() removes all.

The kernel modes hold the pin directory's lock (kgw_l4.pinlock) while they use the pins,
until close(): from open_plane() when pins exist (adopting them is owning them: an
instance with nothing to program would otherwise remove another's frontends), else from
the first configuration that needs them. A second instance is refused: at open, or with
its L4 listeners reporting why. An instance with no TCP/UDP/passthrough listener never
touches the pins and takes no lock. While it runs, the kernel plane
re-reads what it programmed every DRIFT_INTERVAL seconds and rewrites anything changed
behind its back, reporting it (log, metrics, the affected listeners' status); and it
looks the backends' SNAT sources up again when the node's routes change (kgw_l4.snat).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from . import abi, loader as ld, netinfo, pinlock
from .acceptor import KEEPALIVE_IDLE
from .config import L4Config
from .health import L4Health, checked_groups
from .kernelstats import kernel_stats
from .metrics import L4Stats, render, sum_drops
from .programmer import ApplyResult, Drift, Programmer
from .snat import SnatSources
from .tlspass import TLSPassthroughProxy
from .udp import UdpProxy
from .userspace import UserspaceProxy

if TYPE_CHECKING:
    from .flowlog import FlowLog
    from .splice import SpliceProxy, Splicer

log = logging.getLogger("kgw.l4")

MODES = ("auto", "tc", "xdp", "splice", "userspace")
DEFAULT_MODE = "auto"
GC_INTERVAL = 5.0
#: seconds between two checks that the pinned maps still hold what was programmed
DRIFT_INTERVAL = float(os.environ.get("KGW_L4_DRIFT_INTERVAL", "5"))
#: Maglev rows read per check (~1.7 ms of CPU each at the default size); with more
#: frontends the rows are read in turn, each within ceil(frontends / 8) checks
DRIFT_MAGLEV_ROWS = 8
#: while every check finds changes, one warning per this many seconds
DRIFT_LOG_EVERY = 60.0
#: a burst of route or address changes is gathered this long into one SNAT refresh
ROUTE_SETTLE = 0.5
#: flows listed by the admin API's /l4 page (kgw-inspect flows in userspace mode) at most
INSPECT_FLOWS_MAX = 10000
#: while reading the counters fails at every scrape, one warning per this many seconds
STATS_LOG_EVERY = 60.0


class L4Plane:
    """Base: see open_plane()."""

    mode: str = ""

    async def apply(self, config: L4Config) -> None:
        raise NotImplementedError

    def errors(self) -> dict[str, str]:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def config_dump(self) -> dict:
        d: dict[str, Any] = {"mode": self.mode, "errors": self.errors()}
        if self.health is not None:
            d["health"] = self.health.view()
        return d

    #: The active health checks of L4 backends (kgw_l4.health), made on the first config.
    health: L4Health | None = None

    def _health_for(self, config: L4Config) -> None:
        """Probe what ``config`` asks for; verdicts go to ``_health_changed``."""
        if self.health is None:
            if next(checked_groups(config), None) is None:
                return
            self.health = L4Health(self._health_changed)
        self.health.update(config)

    def _health_changed(self, down: frozenset) -> None:
        """(On the event loop.) The endpoints failing their checks are now ``down``: the
        forwarding follows in a task (kept until done, cancelled by close())."""
        t = asyncio.get_running_loop().create_task(self._set_health(down))
        self._health_tasks.add(t)
        t.add_done_callback(self._health_tasks.discard)

    async def _set_health(self, down: frozenset) -> None:
        raise NotImplementedError

    async def _close_health(self) -> None:
        if self.health is not None:
            await self.health.close()
        for t in list(self._health_tasks):
            t.cancel()
        await asyncio.gather(*self._health_tasks, return_exceptions=True)

    #: verdict changes being written (_health_changed; each plane makes its own set)
    _health_tasks: set[asyncio.Task]

    def stats(self) -> L4Stats:
        """The plane's counters now (kgw_l4.metrics): what /metrics and /l4 report."""
        return L4Stats(self.mode)

    def metrics(self) -> bytes:
        """Prometheus text of the plane's metrics: the families of kgw_l4.metrics, from
        ``stats()`` (and the kernel plane's drift checks). Never raises: a scrape that
        cannot read the counters reports the mode alone and logs why."""
        try:
            stats = self.stats()
        except Exception as e:  # noqa: BLE001 — a scrape must not fail the admin API
            now = time.monotonic()
            if now - getattr(self, "_stats_logged", -STATS_LOG_EVERY) >= STATS_LOG_EVERY:
                self._stats_logged = now
                log.warning("reading the L4 counters failed: %s", e)
            stats = L4Stats(self.mode)
        text = render(stats)
        if self.flow_log is not None:
            text += self.flow_log.metrics()
        if self.health is not None:
            text += self.health.metrics().encode()
        return text

    def flows(self) -> list[dict]:
        """The flows a userspace path holds (kgw-inspect flows); the kernel's are in its
        maps, which kgw-inspect reads itself."""
        return []

    def inspect(self) -> dict:
        """The admin API's /l4 page: the counters, and the flows (at most
        INSPECT_FLOWS_MAX)."""
        flows = self.flows()
        return {"mode": self.mode, "stats": self.stats().to_dict(),
                "flows": flows[:INSPECT_FLOWS_MAX],
                "flows_truncated": max(0, len(flows) - INSPECT_FLOWS_MAX),
                "health": self.health.view() if self.health is not None else []}

    #: called (on the event loop) when errors() changed outside apply(): the supervisor
    #: sets it to recompute status
    on_errors_changed: Callable[[], None] | None = None

    #: The access log's flow events (kgw_l4.flowlog), written by the userspace paths.
    flow_log: FlowLog | None = None

    def set_flow_log(self, flow_log: FlowLog | None) -> None:
        self.flow_log = flow_log
        self._wire_flow_log()

    def _wire_flow_log(self) -> None:
        """Give the flow log to the proxies made so far (some are made on first use)."""
        for name in ("proxy", "udp", "tls"):
            proxy = getattr(self, name, None)
            if proxy is not None:
                proxy.flow_log = self.flow_log


def without_proxied_frontends(config: L4Config, mode: str) -> tuple[L4Config, dict[str, str]]:
    """The kernel NAT modes forward a TCP frontend's packets as they come: no byte can go
    to the backend ahead of the client's, so a PROXY header for the backends
    (``backend_proxy_protocol``) cannot be sent, nor can the client's header be taken off
    (``proxy_protocol``). Such a frontend is left out, with why (its listener's status
    says it), rather than served without what it asks for."""
    refused = {fe.name: f"backendProxyProtocol: the {mode} mode forwards packets in the "
                        "kernel and cannot write a PROXY header ahead of the client's bytes "
                        "(the splice and userspace L4 modes can: --l4-mode)"
               for fe in config.frontends if fe.backend_proxy_protocol}
    refused.update({fe.name: f"proxyProtocol: the {mode} mode forwards packets in the kernel "
                             "and cannot take a PROXY header off the client's bytes (the "
                             "splice and userspace L4 modes can: --l4-mode)"
                    for fe in config.frontends if fe.proxy_protocol})
    if not refused:
        return config, {}
    kept = tuple(fe for fe in config.frontends if fe.name not in refused)
    return dataclasses.replace(config, frontends=kept), refused


def _frontend_ports(config: L4Config) -> set[tuple[str, int]]:
    return {(f.address, f.port) for f in config.frontends if f.protocol == "TCP"}


class UserspacePlane(L4Plane):
    """TCP frontends in kgw_l4.userspace, UDP frontends in kgw_l4.udp (flows per client),
    TLS passthrough in kgw_l4.tlspass."""

    def __init__(self, keepalive: int = KEEPALIVE_IDLE) -> None:
        self.mode = "userspace"
        self.proxy = UserspaceProxy(udp=True, keepalive=keepalive)
        self.udp = UdpProxy()
        self.tls = TLSPassthroughProxy(None, keepalive=keepalive)
        self._limit_errors: dict[str, str] = {}
        self._health_tasks = set()

    async def apply(self, config: L4Config) -> None:
        # Only the kernel program sees SYNs before a socket does: without it a
        # connection rate limit is not enforced, and says so.
        self._limit_errors = {lim.name: "connection rate limit not enforced: it needs the "
                              "kernel data plane (L4 mode is userspace)"
                              for lim in config.connection_limits}
        self._health_for(config)
        if self.health is not None:
            self.proxy.down = self.tls.down = self.health.down()
        await self.proxy.apply(config)
        await self.udp.apply(config)
        await self.tls.apply(config, _frontend_ports(config))

    async def _set_health(self, down: frozenset) -> None:
        await self.proxy.set_health(down)
        await self.tls.set_health(down)

    def errors(self) -> dict[str, str]:
        return {**self.proxy.errors, **self.udp.errors, **self.tls.errors,
                **self._limit_errors}

    def config_dump(self) -> dict:
        d = super().config_dump()
        if self.udp.frontends:
            d["udp"] = {name: dataclasses.asdict(st) for name, st in self.udp.stats().items()}
        return d

    def stats(self) -> L4Stats:
        tcp_fes, tcp_bes = self.proxy.stats()
        udp_fes, udp_bes, tables = self.udp.l4_stats()
        tls_fes, tls_bes = self.tls.stats()
        fes = (*tcp_fes, *udp_fes, *tls_fes)
        return L4Stats(self.mode, fes, (*tcp_bes, *udp_bes, *tls_bes), sum_drops(fes), {}, tables)

    def flows(self) -> list[dict]:
        return [*self.proxy.flows(), *self.udp.flows(), *self.tls.flows()]

    async def close(self) -> None:
        await self._close_health()
        await self.proxy.close()
        await self.udp.close()
        await self.tls.close()


class PinUse:
    """This process's use of a pin directory: the lock, taken on first use."""

    def __init__(self, pin_dir: str):
        self.pin_dir = pin_dir
        self.lock: pinlock.PinDirLock | None = None

    def in_use(self) -> bool:
        """Pins are there (a running or an earlier instance's)."""
        try:
            return bool(os.listdir(self.pin_dir))
        except OSError:
            return False

    def take(self) -> None:
        """Lock the directory (made if needed, bpffs mounted first where the default
        place is meant); PinDirBusy when another process holds it."""
        if self.lock is None:
            if os.path.abspath(self.pin_dir).startswith("/sys/fs/bpf/"):
                ld.ensure_bpffs()
            self.lock = pinlock.acquire(self.pin_dir)
            log.info("holding the lock on %s (one kgw per pin directory)", self.pin_dir)

    def take_for(self, config: L4Config) -> dict[str, str]:
        """take(), or the listeners of ``config`` that cannot be served and why."""
        try:
            self.take()
            return {}
        except pinlock.PinDirBusy as e:
            msg = str(e)
        except (OSError, ld.BpfUnavailable) as e:
            msg = f"cannot use pin directory {self.pin_dir}: {e}"
        log.error("%s", msg)
        return dict.fromkeys([*(f.name for f in config.frontends),
                              *(t.name for t in config.tls_passthrough),
                              *(c.name for c in config.connection_limits)], msg)

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


class SplicePlane(L4Plane):
    """Frontends served by the sockmap splice acceptor (kgw_l4.splice)."""

    def __init__(self, pin_dir: str, sizes: Mapping[str, int],
                 keepalive: int = KEEPALIVE_IDLE):
        self.mode = "splice"
        self.keepalive = keepalive
        self.loader = ld.Loader(pin_dir, sizes)
        self.proxy: SpliceProxy | None = None
        self.tls: TLSPassthroughProxy | None = None
        self.pins = PinUse(pin_dir)
        self._busy_errors: dict[str, str] = {}
        self._health_tasks = set()
        if self.pins.in_use():
            self.pins.take()

    async def apply(self, config: L4Config) -> None:
        self._busy_errors = {}
        if self.proxy is None:
            if not config.frontends and not config.tls_passthrough:
                return
            self._busy_errors = self.pins.take_for(config)
            if self._busy_errors:
                return
            from .splice import SpliceProxy, Splicer

            splicer = await asyncio.to_thread(Splicer, self.loader)
            self.proxy = SpliceProxy(splicer, keepalive=self.keepalive)
            self.tls = TLSPassthroughProxy(splicer, keepalive=self.keepalive)
            self._wire_flow_log()
        self._health_for(config)
        if self.health is not None:
            self.proxy.down = self.tls.down = self.health.down()  # type: ignore[union-attr]
        await self.proxy.apply(config)
        await self.tls.apply(config, _frontend_ports(config))  # type: ignore[union-attr]

    async def _set_health(self, down: frozenset) -> None:
        if self.proxy is not None:
            await self.proxy.set_health(down)
        if self.tls is not None:
            await self.tls.set_health(down)

    def errors(self) -> dict[str, str]:
        if not self.proxy:
            return dict(self._busy_errors)
        return {**self.proxy.errors, **(self.tls.errors if self.tls else {})}

    def config_dump(self) -> dict:
        d = super().config_dump()
        if self.proxy is not None:
            d["spliced"] = self.proxy.splicer.spliced()
        if self.tls is not None:
            d["relayed"] = self.tls.relayed()
        return d

    def stats(self) -> L4Stats:
        """The sockmap program's global counters, and the frontends' and backends' of the
        splice proxy (kgw_l4.splice.SpliceProxy) and TLS passthrough."""
        if self.proxy is None:
            return L4Stats(self.mode)
        st = kernel_stats(self.mode, self.loader.maps(), (), L4Config(), self.loader.sizes)
        tcp_fes, tcp_bes = self.proxy.stats()
        tls_fes, tls_bes = self.tls.stats() if self.tls is not None else ([], [])
        fes = (*tcp_fes, *tls_fes)
        return dataclasses.replace(st, frontends=fes, backends=(*tcp_bes, *tls_bes),
                                   drops=sum_drops(fes, st.drops))

    async def close(self) -> None:
        await self._close_health()
        if self.proxy is not None:
            await self.proxy.close()
            if self.tls is not None:
                await self.tls.close()
            await self.proxy.splicer.close()
        self.loader.close()
        self.pins.release()


class _DriftMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.checks = Counter("kgw_l4_drift_checks_total",
                              "Checks that the pinned BPF maps hold what kgw programmed",
                              registry=r)
        self.repairs = Counter("kgw_l4_drift_repairs_total",
                               "Map entries found changed outside kgw and rewritten", ["map"],
                               registry=r)
        self.entries = Gauge("kgw_l4_drift_entries",
                             "Map entries the last check found changed outside kgw", registry=r)
        self.cpu = Gauge("kgw_l4_drift_check_cpu_seconds", "CPU time of the last drift check",
                         registry=r)
        self.refreshes = Counter("kgw_l4_snat_refreshes_total",
                                 "SNAT source lookups of every backend after a route or address "
                                 "change",
                                 registry=r)


class KernelPlane(L4Plane):
    def __init__(self, mode: str, interfaces: list[str], node_address: str | None,
                 pin_dir: str, sizes: Mapping[str, int], settings: Mapping[str, int] | None,
                 keepalive: int = KEEPALIVE_IDLE):
        self.mode = mode
        self.keepalive = keepalive
        self.interfaces = interfaces
        self.loader = ld.Loader(pin_dir, sizes)
        self.sizes = dict(sizes)
        self.settings = dict(settings or {})
        #: each backend's SNAT source: --node-address, else the route to it
        self.sources = SnatSources(node_address)
        self.programmer: Programmer | None = None
        self.pins = PinUse(pin_dir)
        self._attached = False
        self._errors: dict[str, str] = {}  # start failures, TLS passthrough
        self._program_errors: dict[str, str] = {}  # the programmer's, after apply or a refresh
        self._drift_errors: dict[str, str] = {}  # frontends whose maps were changed outside kgw
        #: apply, the SNAT refresh and the drift check take turns on the maps
        self._busy = asyncio.Lock()
        self._gc: asyncio.Task | None = None
        self._watchers: list[asyncio.Task] = []
        self._routes: netinfo.RouteChanges | None = None
        self.drift_metrics = _DriftMetrics()
        self.last_drift: dict = {}
        self._drift_streak = 0  # consecutive checks that found changes
        self._drift_logged = 0.0  # monotonic time of the last warning
        self.last_apply: ApplyResult | None = None
        #: the configuration last applied (metrics labels) and the last sweep's findings
        self._config = L4Config()
        self._sweep: ld.Sweep | None = None
        self.tls: TLSPassthroughProxy | None = None
        self._splicer: Splicer | None = None
        self._health_tasks = set()
        if self.pins.in_use():
            self.pins.take()  # PinDirBusy: another instance runs on these pins
            if self.loader.pinned() and self.loader.check_pins() is None:
                self._programmer()  # adopt now: the pinned maps are usable without compiling

    def _programmer(self) -> Programmer:
        if self.programmer is None:
            self.programmer = Programmer(self.loader.maps(), snat_for=self.sources,
                                         local_addrs=netinfo.local_ipv4, sizes=self.sizes)
            if self.loader.pinned():
                self.programmer.adopt()
        return self.programmer

    def _start(self) -> None:
        """Compile, load, attach (once per process). Attaching replaces a program left
        attached by an earlier process; both use the same pinned maps."""
        if self._attached:
            return
        # XDP mode runs TC too: XDP hands it what it cannot forward (see lb_xdp.c).
        hooks = ["tc"] if self.mode == "tc" else ["tc", "xdp"]
        for hook in hooks:
            self.loader.load(hook)
        # flags: with XDP attached, SYNs are rate-limited there only (bpf/nat.h).
        self.loader.set_settings(**self.settings,
                                 flags=abi.SETTINGS_F_XDP if "xdp" in hooks else 0)
        for hook in hooks:
            for ifname in self.interfaces:
                self.loader.attach(ifname, hook)
        self._attached = True
        self._programmer()

    async def apply(self, config: L4Config) -> None:
        if config.frontends and not self._watchers:
            self._watch()  # before the first lookups, so that no route change is missed
        async with self._busy:
            await self._apply(config)

    async def _apply(self, config: L4Config) -> None:
        config, refused = without_proxied_frontends(config, self.mode)
        self._errors = {}
        self._config = config
        # The programs run for frontends and for connection rate limits (on any port).
        kernel = bool(config.frontends or config.connection_limits)
        if kernel or config.tls_passthrough:
            busy = self.pins.take_for(config)
            if busy:
                self._errors = busy
                return
        self._errors.update(refused)
        self._health_for(config)
        if config.tls_passthrough or self.tls is not None:
            if self.tls is None:
                from .splice import Splicer

                self._splicer = await asyncio.to_thread(Splicer, self.loader)
                self.tls = TLSPassthroughProxy(self._splicer, keepalive=self.keepalive)
                self._wire_flow_log()
            if self.health is not None:
                self.tls.down = self.health.down()
            await self.tls.apply(config, _frontend_ports(config))
            self._errors.update(self.tls.errors)
        if kernel and not self._attached:
            try:
                await asyncio.to_thread(self._start)
            except Exception as e:  # noqa: BLE001 — report, keep the supervisor alive
                log.error("kernel L4 data plane failed to start: %s", e)
                self._errors.update({n: f"kernel data plane failed to start: {e}"
                                     for n in [*(fe.name for fe in config.frontends),
                                               *(c.name for c in config.connection_limits)]})
                return
            self._gc = asyncio.get_running_loop().create_task(self._gc_loop())
        if self.programmer is None:
            if kernel:
                self._programmer()
            else:
                return  # nothing programmed, nothing to remove: stay cheap
        result = await asyncio.to_thread(self._program, config)
        self.last_apply = result
        self._program_errors = dict(result.errors)

    async def _set_health(self, down: frozenset) -> None:
        """The TLS ports' pickers, then the Maglev slots of the endpoints whose verdict
        changed (after any apply in progress: the maps take one writer at a time)."""
        if self.tls is not None:
            await self.tls.set_health(down)
        async with self._busy:
            prog = self.programmer
            if prog is None or self.health is None:
                return
            down = self.health.down()  # the latest, should verdicts have changed meanwhile
            try:
                n = await asyncio.to_thread(prog.set_health, down)
            except Exception as e:  # noqa: BLE001 — a failed write is retried by check()
                log.error("writing health verdicts to the Maglev rows failed: %s", e)
                return
            if n:
                log.info("health verdicts: %d Maglev slots rewritten (%d endpoints down)",
                         n, len(down))

    def _program(self, config: L4Config) -> ApplyResult:
        """(In a thread.) Look up the SNAT sources of new backends, then write the diff."""
        addrs = set()
        for fe in config.frontends:
            for g in fe.backends:
                for ep in g.endpoints:
                    with contextlib.suppress(ValueError):
                        if ipaddress.ip_address(ep.address).version == 4:
                            addrs.add(ep.address)
        self.sources.resolve(addrs)
        self.sources.keep_only(addrs)
        if self.health is not None:
            self.programmer.down = self.health.down()  # type: ignore[union-attr]
        return self.programmer.apply(config)  # type: ignore[union-attr]

    # ---------------------------------------------------------------- while running

    def _watch(self) -> None:
        """Start the drift check, and the route watch when sources come from routes."""
        loop = asyncio.get_running_loop()
        self._watchers.append(loop.create_task(self._drift_loop()))
        if self.sources.fixed is None:
            try:
                self._routes = netinfo.RouteChanges()
            except OSError as e:
                log.warning("cannot watch route changes (%s): backends' SNAT sources are looked "
                            "up again only when the configuration changes", e)
                return
            changed = asyncio.Event()

            def readable() -> None:
                try:
                    if self._routes is not None and self._routes.drain():
                        changed.set()
                except OSError as e:
                    log.warning("route watch: %s", e)
                    changed.set()

            loop.add_reader(self._routes.fileno(), readable)
            self._watchers.append(loop.create_task(self._route_loop(changed)))

    async def _route_loop(self, changed: asyncio.Event) -> None:
        settle = ROUTE_SETTLE
        while True:
            await changed.wait()
            # one refresh for a burst of changes, and at most ~10% of the time refreshing
            # on a node whose routes never stop changing (a refresh costs ~0.3 ms a backend)
            await asyncio.sleep(settle)
            changed.clear()
            started = time.monotonic()
            try:
                await self.refresh_node()
            except Exception:  # noqa: BLE001 — the watch must never take the plane down
                log.exception("SNAT source refresh failed")
            settle = max(ROUTE_SETTLE, 9 * (time.monotonic() - started))

    async def refresh_node(self) -> int:
        """Look every backend's SNAT source up again and rewrite what changed (and the
        local addresses). Returns the entries rewritten."""
        async with self._busy:
            if self.programmer is None:
                return 0

            def work() -> int:
                self.sources.resolve([ep[0] for ep in self.programmer.be_ids], again=True)  # type: ignore[union-attr]
                return self.programmer.refresh_node()  # type: ignore[union-attr]

            n = await asyncio.to_thread(work)
            self.drift_metrics.refreshes.inc()
            before, self._program_errors = self._program_errors, dict(self.programmer.errors)
        if n:
            log.info("node routes or addresses changed: %d kernel map entries rewritten", n)
        if before != self._program_errors:
            self._errors_changed()
        return n

    async def _drift_loop(self) -> None:
        while True:
            await asyncio.sleep(DRIFT_INTERVAL)  # module global: tests may shorten it
            try:
                await self.check_drift()
            except Exception:  # noqa: BLE001 — the check must never take the plane down
                log.exception("kernel map drift check failed")

    async def check_drift(self) -> Drift | None:
        """Compare the pinned maps with what was programmed, rewrite what differs, and
        report it: a log line, the metrics, and the affected frontends' errors (their
        listeners are not Programmed) until a later check finds everything intact."""
        async with self._busy:
            if self.programmer is None or not self.programmer.views:
                return None

            def timed() -> tuple[Drift, float]:
                t0 = time.thread_time()
                d = self.programmer.check(repair=True, max_rows=DRIFT_MAGLEV_ROWS)  # type: ignore[union-attr]
                return d, time.thread_time() - t0

            drift, cpu = await asyncio.to_thread(timed)
        m = self.drift_metrics
        m.checks.inc()
        m.cpu.set(cpu)
        m.entries.set(drift.total)
        before = dict(self._drift_errors)
        at = time.strftime("%H:%M:%S")
        if drift:
            for name, n in drift.entries.items():
                m.repairs.labels(name).inc(n)
            self._drift_streak += 1
            now = time.monotonic()
            # something that keeps writing gets one line a minute, not one per check
            loud = self._drift_streak == 1 or now - self._drift_logged >= DRIFT_LOG_EVERY
            if loud:
                self._drift_logged = now
            streak = f" ({self._drift_streak} checks in a row)" if self._drift_streak > 1 else ""
            (log.warning if loud else log.debug)(
                "kernel maps under %s were changed outside kgw (%s entries wrong; frontends "
                "affected: %s): rewritten%s", self.loader.pin_dir, drift.describe(),
                ", ".join(drift.frontends) or "none", streak)
            msg = (f"kernel maps under {self.loader.pin_dir} were changed outside kgw "
                   f"({drift.describe()} entries wrong) and rewritten; Programmed again "
                   f"when the next check finds them intact")
            self._drift_errors = {name: msg for name in drift.frontends}
        else:
            self._drift_streak = 0
            if self._drift_errors:
                log.info("kernel maps intact again for %s", ", ".join(sorted(self._drift_errors)))
                self._drift_errors = {}
        self.last_drift = {"at": at, "cpu_seconds": round(cpu, 6), "entries": dict(drift.entries),
                           "frontends": list(drift.frontends)}
        if before != self._drift_errors:
            self._errors_changed()
        return drift

    def _errors_changed(self) -> None:
        if self.on_errors_changed is not None:
            self.on_errors_changed()

    def metrics(self) -> bytes:
        return generate_latest(self.drift_metrics.registry) + super().metrics()

    def stats(self) -> L4Stats:
        prog = self.programmer
        if prog is None:
            st = L4Stats(self.mode)
        else:
            s = self.sizes
            tables = {"kgw_frontends": (len(prog.fe_ids), s["KGW_MAX_FRONTENDS"]),
                      "kgw_backends": (len(prog.be_ids), s["KGW_MAX_BACKENDS"]),
                      "kgw_local_addrs": (len(prog.local), s["KGW_MAX_LOCAL_ADDRS"])}
            st = kernel_stats(self.mode, self.loader.maps(), list(prog.views.values()),
                              self._config, s, self._sweep, tables)
        if self.tls is not None:
            fes, bes = self.tls.stats()
            st = dataclasses.replace(st, frontends=(*st.frontends, *fes),
                                     backends=(*st.backends, *bes), drops=sum_drops(fes, st.drops))
        return st

    async def _gc_loop(self) -> None:
        while True:
            await asyncio.sleep(GC_INTERVAL)  # module global: the agent may tune it
            try:
                self._sweep = sweep = await asyncio.to_thread(ld.sweep_flows, self.loader.maps(),
                                                              self.loader.settings())
                n = sweep.removed
                if n:
                    log.debug("expired %d connection-table entries", n)
            except Exception:  # noqa: BLE001 — the sweep must never take the plane down
                log.exception("connection-table sweep failed")

    def errors(self) -> dict[str, str]:
        return {**self._program_errors, **self._errors, **self._drift_errors}

    def config_dump(self) -> dict:
        d = super().config_dump()
        d["interfaces"] = list(self.interfaces)
        d["pin_dir"] = self.loader.pin_dir
        d["snat_sources"] = ({"all": self.sources.fixed} if self.sources.fixed is not None
                             else self.sources.known())
        d["drift_check"] = {"interval_seconds": DRIFT_INTERVAL, "last": self.last_drift}
        if self._splicer is not None:
            d["spliced"] = self._splicer.spliced()
        if self.tls is not None:
            d["relayed"] = self.tls.relayed()
        if self.programmer is not None:
            d["frontends"] = [
                {"name": v.name, "address": v.address, "port": v.port, "protocol": v.protocol,
                 "fe_id": v.fe_id, "unhealthy": list(v.down), "panic": v.panic,
                 "endpoints": [{"backend_id": b, "endpoint": e, "weight": w}
                               for b, e, w in v.endpoints]}
                for v in self.programmer.views.values()]
        return d

    async def close(self) -> None:
        if self._routes is not None:
            asyncio.get_running_loop().remove_reader(self._routes.fileno())
            self._routes.close()
            self._routes = None
        for task in [self._gc, *self._watchers]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._watchers.clear()
        await self._close_health()
        if self.tls is not None:
            await self.tls.close()
        if self._splicer is not None:
            await self._splicer.close()
        self.loader.close()
        self.pins.release()


def sizes_with_splice_backlog(skbs: int) -> dict[str, int]:
    """abi.SIZES with splice backpressure at SKBS (0: off). `--l4-splice-backlog`."""
    if skbs < 0:
        raise ValueError(f"--l4-splice-backlog must be 0 (off) or a number of skbs, not {skbs}")
    return dict(abi.SIZES, KGW_SPLICE_BACKLOG_MAX=skbs)


async def open_plane(mode: str = DEFAULT_MODE, interfaces: Sequence[str] | None = None,
                     node_address: str | None = None, *, pin_dir: str = abi.PIN_DIR,
                     sizes: Mapping[str, int] = abi.SIZES,
                     settings: Mapping[str, int] | None = None,
                     keepalive: int = KEEPALIVE_IDLE) -> L4Plane:
    """Open the L4 data plane. Raises ValueError for bad arguments (unknown mode or
    interface, bad node address, negative keepalive) and loader.BpfUnavailable when tc/xdp
    is asked for explicitly and cannot run. ``settings``: kgw_settings fields (timeouts in
    ns); ``keepalive``: seconds of silence before the TCP keepalive probes of accepted
    connections start (kgw_l4.acceptor.set_keepalive; 0: off)."""
    if mode not in MODES:
        raise ValueError(f"unknown L4 mode {mode!r} (choose from {', '.join(MODES)})")
    if keepalive < 0:
        raise ValueError(f"--l4-tcp-keepalive must be 0 (off) or seconds, not {keepalive}")
    if node_address is not None:
        try:
            abi.ip_be(node_address)
        except ValueError:
            raise ValueError(f"node address {node_address!r} is not an IPv4 address") from None
    if mode in ("auto", "tc", "xdp", "splice"):
        reason = ld.unavailable_reason()
        if reason:
            if mode != "auto":
                raise ld.BpfUnavailable(f"L4 mode {mode} unavailable: {reason}")
            log.warning("kernel L4 data plane unavailable (%s): using the userspace L4 proxy",
                        reason)
            return UserspacePlane(keepalive)
        if mode == "auto":
            mode = "tc"
        if mode != "splice" and node_address is not None:
            SnatSources(node_address)  # ValueError for a loopback address
        ifs: list[str] = []
        if mode != "splice":
            # pyroute2 runs an event loop of its own: never on the caller's running loop
            ifs = list(interfaces) if interfaces is not None else await asyncio.to_thread(
                netinfo.up_interfaces)
            for i in ifs:
                ld.ifindex(i)  # ValueError("unknown interface ...")
        # both raise PinDirBusy when pins exist and another instance holds them
        if mode == "splice":
            log.info("L4 data plane: splice mode (accept, connect, sockmap)")
            return SplicePlane(pin_dir, sizes, keepalive)
        log.info("L4 data plane: %s mode on %s", mode, ", ".join(ifs) or "no interfaces")
        return KernelPlane(mode, ifs, node_address, pin_dir, sizes, settings, keepalive)
    log.info("L4 data plane: userspace proxy (asked for)")
    return UserspacePlane(keepalive)


def cleanup(pin_dir: str = abi.PIN_DIR, interfaces: Sequence[str] | None = None) -> None:
    """Detach kgw's programs and remove its pins: established flows stop."""
    ld.remove_everything(pin_dir, list(interfaces) if interfaces is not None else None)
