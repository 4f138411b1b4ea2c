"""kgw-inspect: what the L4 plane is doing, from its pinned maps and the admin API.

  kgw-inspect frontends            frontends, backends, weights, Maglev share, counters,
                                   each endpoint's health (healthy/unhealthy/unknown, since)
  kgw-inspect flows [filters]      connection-table entries with age and counters
  kgw-inspect counters             global counters (drops by reason, new flows, ...)
  kgw-inspect maps                 fill level of every table
  kgw-inspect spliced              connections spliced by the sockmap program
  kgw-inspect relayed              TLS passthrough connections the pair relay copies (not
                                   spliced yet: the handshake and short exchanges)
  kgw-inspect flow SRC:PORT DST:PORT   which backend this flow gets
  kgw-inspect cleanup              detach kgw's programs and remove its pins

Maps are read through kgw_l4.loader's accessors, never decoded here. A kgw whose L4
plane keeps its flows in userspace (``--l4-mode userspace``, what ``auto`` falls back to
without root or bcc; splice) has no frontends in kernel maps: when its admin API's ``/l4``
page says so, every command answers from that page instead (its frontends, flows,
counters and flow tables; ``flow`` asks the userspace proxy's own Maglev picker). ``-o
json`` and ``-o yaml`` are stable and uncoloured for scripts; table output is the
default. The CLI itself (exit codes, streams, rendering, the command table) is kgw_cli's,
as for ``kgw``.

Endpoint health (active checks, kgw_l4.health) is not in the maps: it comes from the
admin API (``/config_dump`` or ``/l4``); without it every endpoint reads ``unknown``. A
down endpoint holds no Maglev slot (share 0) but is still listed.
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
import os
import sys
import time
import urllib.error
from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kgw_cli.admin import ADMIN_ADDRESS, get_json
from kgw_cli.commands import Command, add_commands, output_arg, parse
from kgw_cli import output
from kgw_cli.env import Environment, ExitStatus

from . import abi, configio, loader as ld, maglev
from .maps import MapSet, PinnedMapSet
from .userspace import picker

DEFAULT_ADMIN = f"http://{ADMIN_ADDRESS}"
#: Seconds to wait for the admin API (it answers on the node's loopback).
ADMIN_TIMEOUT = 2.0
#: L4 modes whose frontends and flows are not in kernel maps: shown from the admin API
ADMIN_MODES = ("userspace", "splice")


@dataclass
class Env(Environment):
    """Where output goes (``Environment``), and how to reach the state (tests swap these)."""

    maps_factory: Callable[[str], MapSet] | None = None
    admin_get: Callable[[str], dict] | None = None
    sizes: dict[str, int] = field(default_factory=lambda: dict(abi.SIZES))
    now_ns: Callable[[], int] = field(default_factory=lambda: (
        lambda: time.clock_gettime_ns(time.CLOCK_MONOTONIC)))


class InspectError(Exception):
    def __init__(self, msg: str, status: ExitStatus = ExitStatus.ERROR):
        super().__init__(msg)
        self.status = status


# ----------------------------------------------------------------------------- state


def _maps(env: Env, ns: argparse.Namespace) -> MapSet:
    if env.maps_factory is not None:
        return env.maps_factory(ns.pin_dir)
    if not os.path.exists(os.path.join(ns.pin_dir, "kgw_ct")):
        raise InspectError(f"no kgw maps pinned under {ns.pin_dir}, and no kgw answers at "
                           f"{ns.admin}: is kgw running (kgw-inspect --admin URL, --pin-dir DIR)?",
                           ExitStatus.UNAVAILABLE)
    return PinnedMapSet(ns.pin_dir)


def _admin(env: Env, ns: argparse.Namespace, page: str = "/config_dump") -> dict | None:
    get = env.admin_get or _http_get
    try:
        return get(ns.admin.rstrip("/") + page)
    except (OSError, ValueError, urllib.error.URLError):
        return None


def _userspace(env: Env, ns: argparse.Namespace) -> dict | None:
    """The admin API's /l4 page when the running kgw's L4 plane keeps its frontends and
    flows outside kernel maps (ADMIN_MODES), else None: the maps are the truth."""
    page = _admin(env, ns, "/l4")
    if isinstance(page, dict) and page.get("mode") in ADMIN_MODES and isinstance(page.get("stats"),
                                                                                 dict):
        return page
    return None


def _http_get(url: str) -> dict:
    return get_json(url, ADMIN_TIMEOUT)


def _health_of(entries: Any) -> dict[tuple[str, str], dict]:
    """The active health checks' states (kgw_l4.health.L4Health.view) by (backend group,
    endpoint), and by ("", endpoint) for a caller that does not know the group."""
    out: dict[tuple[str, str], dict] = {}
    for e in entries if isinstance(entries, list) else []:
        if isinstance(e, dict) and {"backend", "endpoint", "health"} <= e.keys():
            out[(e["backend"], e["endpoint"])] = e
            prev = out.get(("", e["endpoint"]))
            if prev is None or e["health"] == "unhealthy":
                out[("", e["endpoint"])] = e
    return out


def _split(endpoint: str) -> tuple[str, int]:
    addr, _, port = endpoint.rpartition(":")
    return addr, int(port)


def _health_cols(health: dict[tuple[str, str], dict], group: str, endpoint: str) -> dict:
    """An endpoint's health columns: healthy / unhealthy / unknown (no verdict yet, or not
    checked at all), and since when (ISO 8601; "" when not checked)."""
    e = health.get((group, endpoint))
    if e is None:
        return {"health": "unknown", "health_since": ""}
    return {"health": e["health"], "health_since": e.get("since", "")}


def _l4_names(admin: dict | None) -> dict[tuple[str, int, str], str]:
    names: dict[tuple[str, int, str], str] = {}
    l4 = (admin or {}).get("l4") or {}
    for fe in l4.get("frontends", []) if isinstance(l4, dict) else []:
        if isinstance(fe, dict) and {"address", "port", "name"} <= fe.keys():
            names[(fe["address"], fe["port"], fe.get("protocol", "TCP"))] = fe["name"]
    return names


# ----------------------------------------------------------------------------- commands


def cmd_frontends(env: Env, ns: argparse.Namespace) -> list[dict]:
    page = _userspace(env, ns)
    if page is not None:
        return _us_frontends(page)
    maps = _maps(env, ns)
    admin = _admin(env, ns)
    names = _l4_names(admin)
    l4 = (admin or {}).get("l4") or {}
    health = _health_of(l4.get("health") if isinstance(l4, dict) else None)
    programmed = _programmed_endpoints(l4)
    bes = ld.backends(maps, env.sizes)
    size = env.sizes["KGW_MAGLEV_SIZE"]
    rows = []
    fes = ld.frontends(maps)
    st = ld.stats(maps, [f[3] for f in fes], bes, env.sizes)
    for addr, port, proto, fe_id in fes:
        shares = Tally(ld.maglev_row(maps, fe_id, env.sizes))
        c = st.frontends[fe_id]
        backends = []
        # the endpoints programmed (a down one has no slot, but is listed) and any other
        # backend the row holds
        ids = set(programmed.get((addr, port, proto), ())) | set(shares)
        for bid in sorted(ids):
            if bid == abi.NO_BACKEND:
                continue
            a, p, snat = bes.get(bid, ("?", 0, "?"))
            b = st.backends.get(bid)
            backends.append({"backend_id": bid, "endpoint": f"{a}:{p}", "snat": snat,
                             "maglev_share": round(shares.get(bid, 0) / size, 4),
                             "flows": b.flows if b else 0,
                             "packets": _both(b, 0), "bytes": _both(b, 1),
                             **_health_cols(health, "", f"{a}:{p}")})
        rows.append({"name": names.get((addr, port, proto), ""),
                     "frontend": f"{addr}:{port}/{proto}",
                     "fe_id": fe_id, "flows": c.flows, "packets": _both(c, 0), "bytes": _both(c, 1),
                     "drops": sum(p for p, _ in c.drops.values()), "backends": backends})
    return rows


def _programmed_endpoints(l4: Any) -> dict[tuple[str, int, str], list[int]]:
    """(address, port, protocol) -> the backend ids programmed for it (the admin API's
    config dump: the programmer's views)."""
    out: dict[tuple[str, int, str], list[int]] = {}
    for fe in l4.get("frontends", []) if isinstance(l4, dict) else []:
        if isinstance(fe, dict) and {"address", "port"} <= fe.keys():
            out[(fe["address"], fe["port"], fe.get("protocol", "TCP"))] = [
                e["backend_id"] for e in fe.get("endpoints", [])
                if isinstance(e, dict) and isinstance(e.get("backend_id"), int)]
    return out


def _both(c: ld.FrontendCounts | ld.BackendCounts | None, i: int) -> int:
    """Packets (i=0) or bytes (1) of a frontend's or backend's flows, both ways."""
    return c.to_backend[i] + c.to_client[i] if c is not None else 0


def _parse_endpoint(s: str) -> tuple[str, int | None]:
    host, sep, port = s.rpartition(":")
    if not sep:
        host, port = s, ""
    try:
        ipaddress.IPv4Address(host)
        return host, int(port) if port else None
    except ValueError:
        raise InspectError(f"{s!r} is not ADDRESS[:PORT] with an IPv4 address",
                           ExitStatus.INVALID) from None


def cmd_flows(env: Env, ns: argparse.Namespace) -> list[dict]:
    src = _parse_endpoint(ns.src) if ns.src else None
    dst = _parse_endpoint(ns.dst) if ns.dst else None
    page = _userspace(env, ns)
    if page is not None:
        return _us_flows(page, ns, src, dst)
    maps = _maps(env, ns)
    now = env.now_ns()
    rows = []
    for f in ld.flows(maps):
        if ns.reply is False and f.reply:
            continue
        if ns.frontend is not None and f.fe_id != ns.frontend:
            continue
        if ns.backend is not None and f.backend_id != ns.backend:
            continue
        if src and (f.saddr != src[0] or (src[1] is not None and f.sport != src[1])):
            continue
        if dst and (f.daddr != dst[0] or (dst[1] is not None and f.dport != dst[1])):
            continue
        state = ("closing" if f.flags & (abi.CT_F_FIN | abi.CT_F_RST) else
                 "embryonic" if f.flags & abi.CT_F_EMBRYONIC else "established")
        rows.append({"table": f.table, "dir": "reply" if f.reply else "orig",
                     "from": f"{f.saddr}:{f.sport}", "to": f"{f.daddr}:{f.dport}", "proto": f.proto,
                     "rewrite": f"{f.new_saddr}:{f.new_sport} -> {f.new_daddr}:{f.new_dport}",
                     "fe_id": f.fe_id, "backend_id": f.backend_id, "state": state,
                     "age_s": round(max(0, now - f.created_ns) / 1e9, 1),
                     "idle_s": round(max(0, now - f.last_seen_ns) / 1e9, 1),
                     "packets": f.packets, "bytes": f.bytes})
    rows.sort(key=lambda r: (r["fe_id"], r["from"], r["dir"]))
    return rows[:ns.limit] if ns.limit else rows


def cmd_counters(env: Env, ns: argparse.Namespace) -> list[dict]:
    page = _userspace(env, ns)
    if page is not None:
        return _us_counters(page, ns)
    maps = _maps(env, ns)
    return [{"counter": name, "packets": p, "bytes": b}
            for name, (p, b) in ld.counters(maps, env.sizes).items() if p or b or ns.all]


def cmd_maps(env: Env, ns: argparse.Namespace) -> list[dict]:
    page = _userspace(env, ns)
    levels = ({n: tuple(v) for n, v in page["stats"].get("tables", {}).items()} if page is not None
              else ld.fill_levels(_maps(env, ns)))
    return [{"map": n, "entries": e, "capacity": c, "fill": round(e / c, 4) if c else 0}
            for n, (e, c) in levels.items()]


def cmd_spliced(env: Env, ns: argparse.Namespace, what: str = "spliced") -> list[dict]:
    """The agent's list ``what`` (``spliced``, ``relayed``) from the admin API."""
    admin = _admin(env, ns)
    if admin is None:
        raise InspectError(f"admin API at {ns.admin} unreachable: {what} connections live in "
                           f"the agent, not in pinned maps")
    l4 = admin.get("l4") or {}
    return list(l4.get(what, [])) if isinstance(l4, dict) else []


def cmd_flow(env: Env, ns: argparse.Namespace) -> list[dict]:
    src, sport = _parse_endpoint(ns.src)
    dst, dport = _parse_endpoint(ns.dst)
    if sport is None or dport is None:
        raise InspectError("flow needs SRC:PORT and DST:PORT", ExitStatus.INVALID)
    page = _userspace(env, ns)
    if page is not None:
        return _us_flow(page, ns, (src, sport), (dst, dport))
    maps = _maps(env, ns)
    proto = abi.PROTO[ns.proto.upper()]
    for table in ("kgw_ct", "kgw_ct_syn"):
        e = ld.ct_entry(maps, table, src, sport, dst, dport, proto)
        if e is not None:
            return [{"flow": f"{src}:{sport} -> {dst}:{dport}/{ns.proto.upper()}",
                     "source": f"existing entry in {table.removeprefix('kgw_')}",
                     "backend_id": e.backend_id,
                     "backend": f"{abi.ip_str(e.new_daddr)}:{abi.port_host(e.new_dport)}",
                     "snat": f"{abi.ip_str(e.new_saddr)}:{abi.port_host(e.new_sport)}"}]
    fe_id = None
    fes = ld.frontends(maps)
    for addr, port, p, fid in fes:
        if port == dport and p == ns.proto.upper() and addr == dst:
            fe_id = fid
    if fe_id is None:
        for addr, port, p, fid in fes:
            if port == dport and p == ns.proto.upper() and addr == "0.0.0.0":
                if ld.is_local(maps, dst):
                    fe_id = fid
    if fe_id is None:
        raise InspectError(f"no frontend matches {dst}:{dport}/{ns.proto.upper()}: the packet "
                           f"would pass to the stack", ExitStatus.NOT_FOUND)
    size = env.sizes["KGW_MAGLEV_SIZE"]
    slot = maglev.flow_slot(src, sport, dst, dport, proto, size)
    bid = ld.maglev_slot(maps, fe_id, slot, env.sizes)
    be = ld.backends(maps, env.sizes).get(bid)
    return [{"flow": f"{src}:{sport} -> {dst}:{dport}/{ns.proto.upper()}",
             "source": "new flow: Maglev slot computed with kgw_l4.maglev.flow_hash (the "
                       "Python mirror of bpf/hash.h; bcc 0.26 has no BPF_PROG_TEST_RUN)",
             "fe_id": fe_id, "slot": slot,
             "backend_id": None if bid == abi.NO_BACKEND else bid,
             "backend": f"{be[0]}:{be[1]}" if be else "none (no backend with weight > 0: dropped)",
             "snat": f"{be[2]}:<allocated>" if be else ""}]


# ----------------------------------------------------------------------------- userspace mode
# From the admin API's /l4 page: {"mode", "stats" (kgw_l4.metrics.L4Stats as a dict),
# "flows", "flows_truncated", "config" (the L4Config now live)}.


def _us_frontends(page: dict) -> list[dict]:
    """Each frontend's counters (a TLS passthrough port: one row per route) with its
    backend endpoints: weight from the configuration, counters from the page."""
    st = page["stats"]
    cfg = configio.from_dict(page.get("config") or {})
    names = {(f"{fe.address}:{fe.port}/{fe.protocol}", fe.route): (fe.name, fe.backends)
             for fe in cfg.frontends}
    for t in cfg.tls_passthrough:
        for r in t.routes:
            names[(f"{t.address}:{t.port}/TLS", r.name)] = (t.name, r.backends)
    bes = {b["endpoint"]: b for b in st.get("backends", [])}
    health = _health_of(page.get("health"))
    rows = []
    for f in st.get("frontends", []):
        name, groups = names.get((f["frontend"], f["route"]), ("", ()))
        row = {"name": name, "frontend": f["frontend"], "route": f["route"], "flows": f["flows"],
               "active": f["active"], **_ways("bytes", f["bytes"]),
               **_ways("packets", f["packets"]), "drops": sum(f["drops"].values())}
        backends = []
        for g in groups:
            for ep in g.endpoints:
                b = bes.get(f"{ep.address}:{ep.port}", {})
                backends.append({"endpoint": f"{ep.address}:{ep.port}", "backend": g.name,
                                 "weight": g.weight, "flows": b.get("flows", 0),
                                 **_ways("bytes", b.get("bytes")),
                                 **_health_cols(health, g.name, f"{ep.address}:{ep.port}")})
        row["backends"] = backends
        rows.append(row)
    return rows


def _ways(what: str, pair: list[int] | None) -> dict:
    """A (to backend, to client) pair as two columns; nothing where it is not counted."""
    return {} if pair is None else {f"{what}_to_backend": pair[0], f"{what}_to_client": pair[1]}


def _us_flows(page: dict, ns: argparse.Namespace, src: tuple[str, int | None] | None,
              dst: tuple[str, int | None] | None) -> list[dict]:
    if ns.frontend is not None or ns.backend is not None:
        raise InspectError(f"--frontend and --backend take kernel ids, and this kgw's L4 plane "
                           f"runs in {page['mode']} mode: use --dst and --src", ExitStatus.INVALID)

    def match(endpoint: str, want: tuple[str, int | None] | None) -> bool:
        if want is None:
            return True
        host, _, port = endpoint.split("/")[0].rpartition(":")
        return host == want[0] and (want[1] is None or int(port) == want[1])

    rows = [f for f in page.get("flows", []) if match(f["client"], src)
            and match(f["frontend"], dst)]
    rows.sort(key=lambda r: (r["frontend"], r["client"]))
    return rows[:ns.limit] if ns.limit else rows


def _us_counters(page: dict, ns: argparse.Namespace) -> list[dict]:
    """Flows given a backend and drops by reason, summed over frontends: the userspace
    proxies count connections (TCP) and datagrams (UDP), not packets."""
    st = page["stats"]
    rows = [{"counter": "NEW_FLOWS", "count": sum(f["flows"] for f in st.get("frontends", []))}]
    rows += [{"counter": f"DROP_{reason.upper()}", "count": n}
             for reason, n in sorted(st.get("drops", {}).items())]
    return [r for r in rows if r["count"] or ns.all]


def _us_flow(page: dict, ns: argparse.Namespace, src: tuple[str, int],
             dst: tuple[str, int]) -> list[dict]:
    """Which backend the userspace proxy gives (or gave) this flow: an open flow's own, or
    its Maglev pick (kgw_l4.userspace.picker, the proxy's own code)."""
    proto = ns.proto.upper()
    flow = f"{src[0]}:{src[1]} -> {dst[0]}:{dst[1]}/{proto}"
    for f in page.get("flows", []):
        if f["client"] == f"{src[0]}:{src[1]}" and f["frontend"] in (
                f"{dst[0]}:{dst[1]}/{proto}", f"0.0.0.0:{dst[1]}/{proto}"):
            return [{"flow": flow, "source": f"open flow in the {page['mode']} proxy",
                     "backend": f["backend"]}]
    cfg = configio.from_dict(page.get("config") or {})
    fes = [fe for fe in cfg.frontends if fe.port == dst[1] and fe.protocol == proto]
    fe = next((f for f in fes if f.address == dst[0]), None) or next(
        (f for f in fes if f.address == "0.0.0.0"), None)
    if fe is None:
        raise InspectError(f"no frontend matches {dst[0]}:{dst[1]}/{proto}", ExitStatus.NOT_FOUND)
    down = {(g, *_split(e)) for (g, e), st in _health_of(page.get("health")).items()
            if g and st["health"] == "unhealthy"}
    be = picker(fe, down).choose(src, dst, abi.PROTO[proto])
    return [{"flow": flow, "source": f"new flow: the {page['mode']} proxy's Maglev pick "
                                     f"(kgw_l4.userspace.picker)", "frontend": fe.name,
             "backend": f"{be[0]}:{be[1]}" if be else "none (no backend with weight > 0: refused)"}]


def cmd_cleanup(env: Env, ns: argparse.Namespace) -> list[dict]:
    ld.remove_everything(ns.pin_dir)
    return [{"removed": ns.pin_dir}]


# ----------------------------------------------------------------------------- CLI table

Handler = Callable[[Env, argparse.Namespace], list[dict]]

#: name -> the command and its handler
COMMANDS: dict[str, Command[Handler]] = {
    "frontends": Command("frontends, backends, weights and Maglev shares", cmd_frontends),
    "flows": Command("connection-table entries", cmd_flows, (
        (("--frontend",), {"type": int, "help": "fe_id"}),
        (("--backend",), {"type": int, "help": "backend_id"}),
        (("--src",), {"help": "ADDRESS[:PORT] of the packet's source"}),
        (("--dst",), {"help": "ADDRESS[:PORT] of the packet's destination"}),
        (("--no-reply",), {"dest": "reply", "action": "store_false", "default": None,
                           "help": "only the client -> frontend direction"}),
        (("--limit",), {"type": int, "default": 0}),
    )),
    "counters": Command("global counters", cmd_counters, (
        (("--all",), {"action": "store_true", "help": "include counters at zero"}),)),
    "maps": Command("fill level of every table", cmd_maps),
    "spliced": Command("connections spliced by sockmap (from the admin API)", cmd_spliced),
    "relayed": Command("TLS passthrough connections copied by the pair relay, not spliced yet "
                       "(from the admin API)", functools.partial(cmd_spliced, what="relayed")),
    "flow": Command("which backend a flow gets", cmd_flow, (
        (("src",), {"metavar": "SRC:PORT"}), (("dst",), {"metavar": "DST:PORT"}),
        (("--proto",), {"default": "tcp", "choices": ["tcp", "udp", "TCP", "UDP"]}))),
    "cleanup": Command("detach kgw's programs and remove its pins (flows stop)", cmd_cleanup),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kgw-inspect", description=__doc__.split("\n")[0])
    # A table by default, even on a pipe (unlike kgw's -o): scripts ask for -o json.
    flags, options = output_arg(default="table")
    p.add_argument(*flags, **options)
    p.add_argument("--pin-dir", default=abi.PIN_DIR)
    p.add_argument("--admin", default=DEFAULT_ADMIN, help="admin API base URL")
    p.add_argument("--cleanup", action="store_true", help="same as the cleanup command")
    add_commands(p.add_subparsers(dest="command"), COMMANDS)
    return p


def rows_table(rows: list[dict[str, Any]]) -> str:
    """Records as a table: a column per key (in order of appearance), and each list-valued
    field (a frontend's backends) as indented rows under its record."""
    if not rows:
        return "(none)"
    flat: list[dict[str, str]] = []
    for r in rows:
        nested = {k: v for k, v in r.items() if isinstance(v, list)}
        flat.append({k: "" if v is None else str(v) for k, v in r.items() if k not in nested})
        for k, items in nested.items():
            for it in items:
                flat.append({"": f"  {k[:-1] if k.endswith('s') else k}",
                             **{kk: str(vv) for kk, vv in it.items()}})
    cols: list[str] = []
    for r in flat:
        for k in r:
            if k not in cols:
                cols.append(k)
    return output.table([c.upper() for c in cols], ([r.get(c, "") for c in cols] for r in flat),
                        gap=2)


def main(argv: list[str] | None = None, env: Env | None = None) -> int:
    env = env or Env()
    parser = build_parser()
    ns = parse(parser, argv, env)
    if isinstance(ns, ExitStatus):
        return ns
    command = "cleanup" if ns.cleanup else ns.command
    if command is None:
        parser.print_help(env.stderr)
        return ExitStatus.INVALID
    try:
        rows = COMMANDS[command].handler(env, ns)
    except InspectError as e:
        env.err(f"kgw-inspect: {e}")
        return e.status
    except PermissionError as e:
        env.err(f"kgw-inspect: {e} (reading BPF maps needs root)")
        return ExitStatus.ERROR
    except OSError as e:
        env.err(f"kgw-inspect: {e}")
        return ExitStatus.ERROR
    if ns.output == "table":
        env.out(rows_table(rows))
    else:
        env.out(output.dump(rows, ns.output, sort_keys=True))
    return ExitStatus.SUCCESS


if __name__ == "__main__":
    sys.exit(main())
