"""Config deltas to workers: what crosses, and what the worker rebuilds."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from kgw_l7 import snapshot
from kgw_l7.config import L7Config, Listener, Route, RouteMatch, Rule, VirtualHost
from kgw_l7.router import RouterCache


def vhost(i: int, path_rules: int = 1) -> VirtualHost:
    rule = Rule(name=f"ns/r{i}/0", route=f"ns/r{i}", gateway="ns/gw")
    return VirtualHost(f"h{i}.example.com",
                       tuple(Route(RouteMatch(), rule) for _ in range(path_rules)))


def config(vhosts: tuple[VirtualHost, ...], generation: int) -> L7Config:
    return L7Config((Listener("0.0.0.0:80", "0.0.0.0", 80, virtual_hosts=vhosts),), generation)


def test_delta_carries_only_changed_hosts_and_round_trips() -> None:
    hosts = tuple(vhost(i) for i in range(100))
    old = config(hosts, 1)
    changed = hosts[:10] + (vhost(10, 2),) + hosts[11:] + (vhost(100),)
    new = config(changed, 2)
    delta = snapshot.diff(old, new)
    sent = [vh for vh in delta.listeners[0].virtual_hosts if not isinstance(vh, int)]
    assert [vh.hostname for vh in sent] == ["h10.example.com", "h100.example.com"]
    # the receiver holds its own copy of `old` (another process): rebuild from that
    held = pickle.loads(pickle.dumps(old))
    rebuilt = snapshot.patch(held, pickle.loads(pickle.dumps(delta)))
    assert rebuilt == new
    assert rebuilt.listeners[0].virtual_hosts[0] is held.listeners[0].virtual_hosts[
        0], "unchanged hosts are kept"
    assert len(pickle.dumps(delta)) * 10 < len(pickle.dumps(new))


def test_full_snapshot_and_base_mismatch() -> None:
    cfg = config((vhost(1),), 5)
    assert snapshot.patch(None, snapshot.diff(None, cfg)) == cfg
    delta = snapshot.diff(cfg, dataclasses.replace(cfg, generation=6))
    with pytest.raises(snapshot.BaseMismatch):
        snapshot.patch(None, delta)
    with pytest.raises(snapshot.BaseMismatch):
        snapshot.patch(dataclasses.replace(cfg, generation=4), delta)


def test_router_cache_recompiles_only_new_hosts() -> None:
    hosts = tuple(vhost(i) for i in range(50))
    cache = RouterCache()
    cache.build(config(hosts, 1))
    assert cache.compiled_vhosts == 50
    cache.build(config(hosts[:-1] + (vhost(49, 3),), 2))
    assert cache.compiled_vhosts == 1
    equal_but_new = tuple(vhost(i) for i in range(50))  # equal records, other objects
    cache.build(config(equal_but_new, 3))
    assert cache.compiled_vhosts == 50, "identity decides reuse of a whole host"
