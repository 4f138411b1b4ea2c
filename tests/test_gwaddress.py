"""controller/gwaddress.py: the node's local table and the Gateways' hostnames, as
Options for translation."""

from __future__ import annotations

import asyncio
import ipaddress
import time

from controller.gwaddress import RESOLVE_TTL_S, NodeView, gateway_hostnames, local_networks, resolve
from controller.store import Store
from controller.translate import Options


def store_with(*addresses: dict) -> Store:
    from controller.objects import ObjectKey
    from controller.source import Event, EventType

    s = Store()
    gw = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
          "metadata": {"name": "gw", "namespace": "default"},
          "spec": {"gatewayClassName": "kgw", "addresses": list(addresses), "listeners": []}}
    s.apply((Event(EventType.ADDED, ObjectKey.of(gw), gw, "1", 1),))
    return s


def test_local_table_holds_loopback_prefix() -> None:
    nets = local_networks()
    assert nets is not None
    assert any(ipaddress.ip_address("127.3.4.5") in ipaddress.ip_network(n) for n in nets)
    assert not any(ipaddress.ip_address("198.51.100.1") in ipaddress.ip_network(n) for n in nets)


def test_resolve_localhost_and_nothing() -> None:
    assert "127.0.0.1" in resolve("localhost")
    assert resolve("no-such-host.invalid") == ()


def test_hostnames_of_gateways_normalised() -> None:
    s = store_with({"type": "Hostname", "value": "GW.Example.com."},
                   {"type": "IPAddress", "value": "10.0.0.1"})
    assert gateway_hostnames(s) == ["gw.example.com"]


def test_refresh_caches_answers_for_the_ttl() -> None:
    asked: list[str] = []
    now = [time.monotonic()]

    def resolver(name: str) -> tuple[str, ...]:
        asked.append(name)
        return ("127.0.0.9",) if name == "gw.example.com" else ()

    view = NodeView(read_local=lambda: ("127.0.0.0/8",), resolver=resolver, clock=lambda: now[0])
    s = store_with({"type": "Hostname", "value": "gw.example.com"},
                   {"type": "Hostname", "value": "gone.test"})
    opts = asyncio.run(view.refresh(s, Options()))
    assert opts.local_addresses == ("127.0.0.0/8",)
    assert opts.resolved_hostnames == (("gw.example.com", ("127.0.0.9",)),
                                       ), "unresolved names are left out"
    asyncio.run(view.refresh(s, opts))
    assert asked == ["gone.test", "gw.example.com"], "answers are kept for the TTL"
    now[0] += RESOLVE_TTL_S + 1
    asyncio.run(view.refresh(s, opts))
    assert len(asked) == 4


def test_offline_options_resolve_hostnames_and_take_every_ip_as_usable() -> None:
    from controller.gwaddress import offline_options

    s = store_with({"type": "Hostname", "value": "localhost"})
    opts = offline_options(s)
    assert opts.local_addresses is None
    assert dict(opts.resolved_hostnames)["localhost"][0] == "127.0.0.1"


async def test_supervisor_looks_at_the_node_again_on_every_batch() -> None:
    """An address the node gains later is served from the next batch on, even one that
    changes nothing (a SIGHUP rescan)."""
    from controller.source import Batch
    from controller.supervisor import Supervisor
    from tests.test_confloop import HTTP, L7, ListSource, _added, _settle
    from tests.translate.worlds import CLASS, gateway

    local = [("127.0.0.0/8",)]
    src, l7 = ListSource(), L7()
    sup = Supervisor(src, l7=l7, node=NodeView(read_local=lambda: local[0], resolver=lambda n: ()))
    runner = asyncio.create_task(sup.run())
    try:
        gw = gateway("gw", [HTTP], addresses=[{"type": "IPAddress", "value": "192.0.2.50"}])
        src.queue.put_nowait(Batch((_added(CLASS, 1), _added(gw, 2)), (), 0.0))
        await _settle(sup, lambda: sup.translation is not None)
        assert [lis.address for lis in sup.translation.l7.listeners] == []
        local[0] = ("127.0.0.0/8", "192.0.2.50/32")
        src.queue.put_nowait(Batch((), (), 0.0))
        await _settle(
            sup, lambda: [lis.address for lis in sup.translation.l7.listeners] == ["192.0.2.50"])
    finally:
        src.queue.put_nowait(None)
        await asyncio.wait_for(runner, 5)
