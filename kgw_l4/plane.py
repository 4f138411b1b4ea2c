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
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import Mapping, Sequence

from . import abi, loader as ld, netinfo
from .config import L4Config
from .programmer import ApplyResult, Programmer
from .tlspass import TLSPassthroughProxy
from .udp import UdpProxy
from .userspace import UserspaceProxy

log = logging.getLogger("kgw.l4")

MODES = ("auto", "tc", "xdp", "splice", "userspace")
GC_INTERVAL = 5.0


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
        return {"mode": self.mode, "errors": self.errors()}


def _frontend_ports(config: L4Config) -> set[tuple[str, int]]:
    return {(f.address, f.port) for f in config.frontends if f.protocol == "TCP"}


class UserspacePlane(L4Plane):
    """TCP frontends in kgw_l4.userspace, UDP frontends in kgw_l4.udp (flows per client),
    TLS passthrough in kgw_l4.tlspass."""

    def __init__(self) -> None:
        self.mode = "userspace"
        self.proxy = UserspaceProxy(udp=True)
        self.udp = UdpProxy()
        self.tls = TLSPassthroughProxy(None)

    async def apply(self, config: L4Config) -> None:
        await self.proxy.apply(config)
        await self.udp.apply(config)
        await self.tls.apply(config, _frontend_ports(config))

    def errors(self) -> dict[str, str]:
        return {**self.proxy.errors, **self.udp.errors, **self.tls.errors}

    def config_dump(self) -> dict:
        d = super().config_dump()
        if self.udp.frontends:
            d["udp"] = {name: dataclasses.asdict(st) for name, st in self.udp.stats().items()}
        return d

    async def close(self) -> None:
        await self.proxy.close()
        await self.udp.close()
        await self.tls.close()


class SplicePlane(L4Plane):
    """Frontends served by the sockmap splice acceptor (kgw_l4.splice)."""

    def __init__(self, pin_dir: str, sizes: Mapping[str, int]):
        self.mode = "splice"
        self.loader = ld.Loader(pin_dir, sizes)
        self.proxy = None
        self.tls: TLSPassthroughProxy | None = None

    async def apply(self, config: L4Config) -> None:
        if self.proxy is None:
            if not config.frontends and not config.tls_passthrough:
                return
            from .splice import SpliceProxy, Splicer

            splicer = await asyncio.to_thread(Splicer, self.loader)
            self.proxy = SpliceProxy(splicer)
            self.tls = TLSPassthroughProxy(splicer)
        await self.proxy.apply(config)
        await self.tls.apply(config, _frontend_ports(config))  # type: ignore[union-attr]

    def errors(self) -> dict[str, str]:
        if not self.proxy:
            return {}
        return {**self.proxy.errors, **(self.tls.errors if self.tls else {})}

    def config_dump(self) -> dict:
        d = super().config_dump()
        if self.proxy is not None:
            d["spliced"] = self.proxy.splicer.spliced()
        return d

    async def close(self) -> None:
        if self.proxy is not None:
            await self.proxy.close()
            if self.tls is not None:
                await self.tls.close()
            await self.proxy.splicer.close()
        self.loader.close()


class KernelPlane(L4Plane):
    def __init__(self, mode: str, interfaces: list[str], node_address: str | None,
                 pin_dir: str, sizes: Mapping[str, int], settings: Mapping[str, int] | None):
        self.mode = mode
        self.interfaces = interfaces
        self.loader = ld.Loader(pin_dir, sizes)
        self.sizes = dict(sizes)
        self.settings = dict(settings or {})
        snat = (lambda _addr: node_address) if node_address else netinfo.source_for
        self.programmer: Programmer | None = None
        self._snat = snat
        self._attached = False
        self._errors: dict[str, str] = {}
        self._gc: asyncio.Task | None = None
        self.last_apply: ApplyResult | None = None
        self.tls: TLSPassthroughProxy | None = None
        self._splicer = None
        if self.loader.pinned() and self.loader.check_pins() is None:
            self._programmer()  # adopt now: the pinned maps are usable without compiling

    def _programmer(self) -> Programmer:
        if self.programmer is None:
            self.programmer = Programmer(self.loader.maps(), snat_for=self._snat,
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
        if self.settings:
            self.loader.set_settings(**self.settings)
        for hook in hooks:
            for ifname in self.interfaces:
                self.loader.attach(ifname, hook)
        self._attached = True
        self._programmer()

    async def apply(self, config: L4Config) -> None:
        self._errors = {}
        if config.tls_passthrough or self.tls is not None:
            if self.tls is None:
                from .splice import Splicer

                self._splicer = await asyncio.to_thread(Splicer, self.loader)
                self.tls = TLSPassthroughProxy(self._splicer)
            await self.tls.apply(config, _frontend_ports(config))
            self._errors.update(self.tls.errors)
        if config.frontends and not self._attached:
            try:
                await asyncio.to_thread(self._start)
            except Exception as e:  # noqa: BLE001 — report, keep the supervisor alive
                log.error("kernel L4 data plane failed to start: %s", e)
                self._errors.update({fe.name: f"kernel data plane failed to start: {e}"
                                     for fe in config.frontends})
                return
            self._gc = asyncio.get_running_loop().create_task(self._gc_loop())
        if self.programmer is None:
            if config.frontends:
                self._programmer()
            else:
                return  # nothing programmed, nothing to remove: stay cheap
        result = await asyncio.to_thread(self.programmer.apply, config)  # type: ignore[union-attr]
        self.last_apply = result
        self._errors.update(result.errors)

    async def _gc_loop(self) -> None:
        while True:
            await asyncio.sleep(GC_INTERVAL)  # module global: the agent may tune it
            try:
                n = await asyncio.to_thread(ld.expire_flows, self.loader.maps(),
                                            self.loader.settings())
                if n:
                    log.debug("expired %d connection-table entries", n)
            except Exception:  # noqa: BLE001 — the sweep must never take the plane down
                log.exception("connection-table sweep failed")

    def errors(self) -> dict[str, str]:
        return dict(self._errors)

    def config_dump(self) -> dict:
        d = super().config_dump()
        d["interfaces"] = list(self.interfaces)
        d["pin_dir"] = self.loader.pin_dir
        if self._splicer is not None:
            d["spliced"] = self._splicer.spliced()
        if self.programmer is not None:
            d["frontends"] = [
                {"name": v.name, "address": v.address, "port": v.port, "protocol": v.protocol,
                 "fe_id": v.fe_id,
                 "endpoints": [{"backend_id": b, "endpoint": e, "weight": w} for b, e, w in v.endpoints]}
                for v in self.programmer.views.values()]
        return d

    async def close(self) -> None:
        if self._gc:
            self._gc.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gc
        if self.tls is not None:
            await self.tls.close()
        if self._splicer is not None:
            await self._splicer.close()
        self.loader.close()


def sizes_with_splice_backlog(skbs: int) -> dict[str, int]:
    """abi.SIZES with splice backpressure at SKBS (0: off). `--l4-splice-backlog`."""
    if skbs < 0:
        raise ValueError(f"--l4-splice-backlog must be 0 (off) or a number of skbs, not {skbs}")
    return dict(abi.SIZES, KGW_SPLICE_BACKLOG_MAX=skbs)


async def open_plane(mode: str = "auto", interfaces: Sequence[str] | None = None,
                     node_address: str | None = None, *, pin_dir: str = abi.PIN_DIR,
                     sizes: Mapping[str, int] = abi.SIZES,
                     settings: Mapping[str, int] | None = None) -> L4Plane:
    """Open the L4 data plane. Raises ValueError for bad arguments (unknown mode or
    interface, bad node address) and loader.BpfUnavailable when tc/xdp is asked for
    explicitly and cannot run. ``settings``: kgw_settings fields (timeouts in ns)."""
    if mode not in MODES:
        raise ValueError(f"unknown L4 mode {mode!r} (choose from {', '.join(MODES)})")
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
            return UserspacePlane()
        if mode == "auto":
            mode = "tc"
        if mode == "splice":
            log.info("L4 data plane: splice mode (accept, connect, sockmap)")
            return SplicePlane(pin_dir, sizes)
        # pyroute2 runs an event loop of its own: never on the caller's running loop
        ifs = list(interfaces) if interfaces is not None else await asyncio.to_thread(netinfo.up_interfaces)
        for i in ifs:
            ld.ifindex(i)  # ValueError("unknown interface ...")
        log.info("L4 data plane: %s mode on %s", mode, ", ".join(ifs) or "no interfaces")
        return KernelPlane(mode, ifs, node_address, pin_dir, sizes, settings)
    log.info("L4 data plane: userspace proxy (asked for)")
    return UserspacePlane()


def cleanup(pin_dir: str = abi.PIN_DIR, interfaces: Sequence[str] | None = None) -> None:
    """Detach kgw's programs and remove its pins: established flows stop."""
    ld.remove_everything(pin_dir, list(interfaces) if interfaces is not None else None)
