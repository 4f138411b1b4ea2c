"""Gateway API status for people: one line of conditions per object, listener and parent
(``kubectl get``-style rows for ``kgw_cli.output.table``), and every failing condition
with its message. ``kgw validate`` and ``kgw status`` show a directory's or a running
gateway's status with these.
"""

from __future__ import annotations

from typing import Any

from kgw_cli.output import table

NEGATIVE_WHEN_TRUE = {"Conflicted"}


def conditions_text(conditions: Any) -> str:
    """"Accepted=True Programmed=False(Invalid)": reasons shown only where it went wrong."""
    parts = []
    for c in conditions or []:
        if not isinstance(c, dict):
            continue
        t, s = c.get("type", "?"), c.get("status", "?")
        bad = (s == "True") if t in NEGATIVE_WHEN_TRUE else (s != "True")
        parts.append(f"{t}={s}({c.get('reason', '')})" if bad else f"{t}={s}")
    return " ".join(parts) or "-"


def is_unhealthy(conditions: Any) -> bool:
    for c in conditions or []:
        if not isinstance(c, dict):
            continue
        t, s = c.get("type"), c.get("status")
        if (t in NEGATIVE_WHEN_TRUE and s == "True") or (t not in NEGATIVE_WHEN_TRUE
                                                         and s == "False"):
            return True
    return False


def _ref_text(ref: dict[str, Any]) -> str:
    text = f"{ref.get('namespace', '')}/{ref.get('name', '')}".lstrip("/")
    if ref.get("sectionName"):
        text += f"/{ref['sectionName']}"
    if ref.get("port"):
        text += f":{ref['port']}"
    return text


def status_rows(status_list: dict[str, Any]) -> list[list[str]]:
    """One row per object, plus one per Gateway listener and per route parent."""
    rows: list[list[str]] = []
    for item in status_list.get("items", []):
        meta, status, kind = item.get("metadata", {}), item.get("status") or {}, item.get("kind",
                                                                                          "")
        gen = str(meta.get("generation", ""))
        name, ns = meta.get("name", ""), meta.get("namespace", "")
        if kind in ("GatewayClass", "Gateway") or "conditions" in status:
            addrs = ",".join(a.get("value", "") for a in status.get("addresses") or [])
            rows.append([kind, ns, name, gen, addrs, conditions_text(status.get("conditions"))])
        elif kind == "Ingress":  # no conditions: its addresses say whether it is served
            lbs = (status.get("loadBalancer") or {}).get("ingress") or []
            addrs = ",".join(a.get("ip") or a.get("hostname") or "" for a in lbs)
            rows.append([kind, ns, name, gen, addrs, "served" if addrs else "not served"])
        for listener in status.get("listeners") or []:
            rows.append(["", "", f"  listener {listener.get('name')}", "",
                         f"routes={listener.get('attachedRoutes', 0)}",
                         conditions_text(listener.get("conditions"))])
        for parent in status.get("parents") or []:
            rows.append([kind, ns, name, gen, f"parent {_ref_text(parent.get('parentRef') or {})}",
                         conditions_text(parent.get("conditions"))])
        for anc in status.get("ancestors") or []:
            rows.append([kind, ns, name, gen, f"ancestor {_ref_text(anc.get('ancestorRef') or {})}",
                         conditions_text(anc.get("conditions"))])
    return rows


STATUS_HEADERS = ("KIND", "NAMESPACE", "NAME", "GEN", "WHERE", "CONDITIONS")


def unhealthy_objects(status_list: dict[str, Any]) -> list[str]:
    """Names of objects any of whose conditions says something is wrong."""
    bad = []
    for item in status_list.get("items", []):
        status = item.get("status") or {}
        groups = [status.get("conditions")]
        groups += [x.get("conditions") for k in ("listeners", "parents", "ancestors")
                   for x in status.get(k) or []]
        if any(is_unhealthy(g) for g in groups):
            meta = item.get("metadata", {})
            bad.append(f"{item.get('kind')} "
                       f"{meta.get('namespace', '') + '/' if meta.get('namespace') else ''}"
                       f"{meta.get('name')}")
    return bad


def failing_conditions(status_list: dict[str, Any]) -> list[str]:
    """One line per condition that says something is wrong, with its message (the table
    shows only the reason): "HTTPRoute shop/web: parent default/gw: Accepted=False
    (NotAllowedByListeners): listener http is not accepted (...)"."""
    lines = []
    for item in status_list.get("items", []):
        meta, status = item.get("metadata", {}), item.get("status") or {}
        obj = (
            f"{item.get('kind')} "
            f"{meta.get('namespace', '') + '/' if meta.get('namespace') else ''}{meta.get('name')}")
        groups: list[tuple[str, Any]] = [("", status.get("conditions"))]
        groups += [(f"listener {x.get('name')}: ", x.get("conditions"))
                   for x in status.get("listeners") or []]
        groups += [(f"parent {_ref_text(x.get('parentRef') or {})}: ", x.get("conditions"))
                   for x in status.get("parents") or []]
        groups += [(f"ancestor {_ref_text(x.get('ancestorRef') or {})}: ", x.get("conditions"))
                   for x in status.get("ancestors") or []]
        for where, conds in groups:
            for c in conds or []:
                if isinstance(c, dict) and is_unhealthy([c]):
                    lines.append(f"{obj}: {where}{c.get('type')}={c.get('status')} "
                                 f"({c.get('reason')}): {c.get('message', '')}")
    return lines


def endpoint_health_text(health: dict[str, Any]) -> str:
    """``kgw status``: the endpoints of backends with health checking that are out of
    service (failing active checks, or ejected in some worker), after the status table;
    empty when there are none."""
    lines = []
    for v in health.get("active", []):
        if not v.get("healthy", True):
            lines.append(f"  {v['backend']} {v['endpoint']}: fails its {v.get('type', '')} "
                         f"health check ({v.get('last_error') or 'no detail'})")
    for w in health.get("workers", []):
        for backend, endpoints in sorted((w.get("backends") or {}).items()):
            for e in endpoints:
                if e.get("ejected"):
                    lines.append(f"  {backend} {e['address']}: ejected by outlier detection "
                                 f"in worker {w.get('worker')} (ejection {e.get('ejections')})")
    if not lines:
        return ""
    return "\n\nBackend endpoints out of service:\n" + "\n".join(lines)


L4_HEALTH_HEADERS = ("FRONTEND", "ROUTE", "BACKEND", "ENDPOINT", "HEALTH", "SINCE", "LAST ERROR")
#: kgw_l4.health's states as ``kgw status`` says them
_L4_WORDS = {"healthy": "up", "unhealthy": "down", "unknown": "unknown"}


def l4_health_rows(page: dict[str, Any]) -> list[dict[str, str]]:
    """``kgw status``: each probed endpoint of each L4 frontend and TLS route (a TCP
    frontend, a TLS port's route) with its health (up / down / unknown: not probed yet)
    and since when, from the admin API's /l4 page (its ``config`` and ``health``, what
    ``kgw-inspect frontends`` reads too). Only groups with a health check are listed."""
    states = {(e.get("backend"), e.get("endpoint")): e for e in page.get("health") or []
              if isinstance(e, dict)}
    cfg = page.get("config") or {}
    places: list[tuple[str, str, list[dict]]] = [
        (f"{fe.get('name', '')} ({fe.get('address')}:{fe.get('port')}/{fe.get('protocol')})",
         fe.get("route", ""), fe.get("backends") or []) for fe in cfg.get("frontends") or []]
    places += [(f"{_listener(r) or t.get('name', '')} ({t.get('address')}:{t.get('port')}/TLS)",
                r.get("name", ""), r.get("backends") or [])
               for t in cfg.get("tls_passthrough") or [] for r in t.get("routes") or []]
    rows = []
    for frontend, route, groups in places:
        for g in groups:
            if not g.get("health_check"):
                continue
            for ep in g.get("endpoints") or []:
                endpoint = f"{ep.get('address')}:{ep.get('port')}"
                st = states.get((g.get("name"), endpoint), {})
                health = st.get("health", "unknown")
                rows.append({"frontend": frontend, "route": route or "-",
                             "backend": g.get("name", ""), "endpoint": endpoint,
                             "health": _L4_WORDS.get(health, health),
                             "since": st.get("since") or "-",
                             "last_error": (st.get("last_error") or "-")
                             if health == "unhealthy" else "-"})
    return rows


def _listener(route: dict[str, Any]) -> str:
    """A TLS route's Gateway listener ("ns/gateway/listener"; "" when not known)."""
    gw, lis = route.get("gateway"), route.get("listener")
    return f"{gw}/{lis}" if gw and lis else ""


def l4_health_text(rows: list[dict[str, str]]) -> str:
    """The table of ``l4_health_rows`` after the status table; empty when none."""
    if not rows:
        return ""
    return "\n\nL4 backend endpoints (active health checks):\n" + table(
        L4_HEALTH_HEADERS, ([r["frontend"], r["route"], r["backend"], r["endpoint"], r["health"],
                             r["since"], r["last_error"]] for r in rows))


def status_text(problems: list[str], status_list: dict[str, Any]) -> str:
    """The table form of ``kgw validate`` and ``kgw status``: the problems no status can
    show, one row per object, listener and parent, then each failing condition's message."""
    lines = [f"error: {p}" for p in problems]
    if problems:
        lines.append("")
    lines.append(table(STATUS_HEADERS, status_rows(status_list)))
    failing = failing_conditions(status_list)
    if failing:
        lines.append("")
        lines += [f"  {line}" for line in failing]
    return "\n".join(lines)
