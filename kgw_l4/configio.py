"""L4Config from its JSON form (the inverse of config.to_dict), for the agent's
--config file and for tests. Unknown keys and wrong types raise ValueError naming
the field."""

from __future__ import annotations

from typing import Any

from kgw_l7.config import HealthCheck

from .config import (
    BackendGroup, BackendTLS, ConnectionRateLimit, Endpoint, Frontend, L4Config, ServingCert,
    SNIRoute, Termination, TLSPassthrough,
)


def _req(d: dict, key: str, typ: type, where: str) -> Any:
    if key not in d:
        raise ValueError(f"{where}: missing {key!r}")
    v = d[key]
    if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
        raise ValueError(f"{where}.{key}: expected {typ.__name__}, got {type(v).__name__}")
    return v


def _opt(d: dict, key: str, where: str) -> str:
    """An optional string field ("" when absent)."""
    return _req(d, key, str, where) if key in d else ""


def _health(h: Any, where: str) -> HealthCheck | None:
    if h is None:
        return None
    if not isinstance(h, dict):
        raise ValueError(f"{where}.health_check: expected dict, got {type(h).__name__}")
    try:
        statuses = tuple((int(lo), int(hi)) for lo, hi in h.get("expected_statuses", ((200, 299),)))
        return HealthCheck(**{**h, "expected_statuses": statuses})
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}.health_check: {e}") from None


def _groups(items: list, where: str) -> tuple[BackendGroup, ...]:
    out = []
    for i, g in enumerate(items):
        w = f"{where}.backends[{i}]"
        eps = tuple(Endpoint(_req(e, "address", str, w), _req(e, "port", int, w))
                    for e in g.get("endpoints", []))
        out.append(BackendGroup(_req(g, "name", str, w), g.get("weight", 1), eps,
                                _health(g.get("health_check"), w)))
    return tuple(out)


def _termination(t: Any, where: str) -> Termination | None:
    if t is None:
        return None
    if not isinstance(t, dict):
        raise ValueError(f"{where}.terminate: expected dict, got {type(t).__name__}")
    w = f"{where}.terminate"
    certs = tuple(ServingCert(tuple(c.get("server_names", [])), _req(c, "cert_pem", str, w),
                              _req(c, "key_pem", str, w))
                  for c in t.get("certificates", []))
    btls = []
    for name, b in t.get("backend_tls", []):
        w = f"{where}.terminate.backend_tls"
        btls.append((name, BackendTLS(_req(b, "hostname", str, w), _opt(b, "ca_pem", w),
                                      tuple(b.get("subject_alt_names", [])),
                                      _opt(b, "client_cert_pem", w), _opt(b, "client_key_pem", w))))
    return Termination(certs, tuple(btls))


def from_dict(d: dict[str, Any]) -> L4Config:
    fes = []
    for i, f in enumerate(d.get("frontends", [])):
        w = f"frontends[{i}]"
        fes.append(Frontend(_req(f, "name", str, w), _req(f, "address", str, w),
                            _req(f, "port", int, w), f.get("protocol", "TCP"),
                            _groups(f.get("backends", []), w), _opt(f, "gateway", w),
                            _opt(f, "listener", w), _opt(f, "route", w)))
    tls = []
    for i, t in enumerate(d.get("tls_passthrough", [])):
        w = f"tls_passthrough[{i}]"
        routes = tuple(SNIRoute(_req(r, "name", str, w), tuple(r.get("hostnames", [])),
                                _groups(r.get("backends", []), w), _opt(r, "gateway", w),
                                _opt(r, "listener", w), _termination(r.get("terminate"), w))
                       for r in t.get("routes", []))
        tls.append(TLSPassthrough(_req(t, "name", str, w), _req(t, "address", str, w),
                                  _req(t, "port", int, w), routes))
    limits = []
    for i, c in enumerate(d.get("connection_limits", [])):
        w = f"connection_limits[{i}]"
        rate = c.get("per_second")
        if not isinstance(rate, (int, float)) or isinstance(rate, bool):
            raise ValueError(f"{w}.per_second: expected a number, got {type(rate).__name__}")
        limits.append(ConnectionRateLimit(_req(c, "name", str, w), _req(c, "address", str, w),
                                          _req(c, "port", int, w), float(rate),
                                          _req(c, "burst", int, w), _opt(c, "gateway", w),
                                          _opt(c, "listener", w)))
    return L4Config(tuple(fes), tuple(tls), d.get("generation", 0), tuple(limits))
