"""Served certificates against the clock: translation records each HTTPS listener's
certificates with their validity, /metrics reports their expiry, and an expired or
not-yet-valid one is a warning in its listener's ResolvedRefs message while the listener
stays Programmed (kgw still serves it)."""

from __future__ import annotations

import datetime

from prometheus_client.parser import text_string_to_metric_families

from controller import certexpiry
from controller.objects import ObjectKey
from controller.translate import translate
from controller.translate.tlscert import ServedCertificate
from tests.translate.tlsgen import self_signed, tls_secret
from tests.translate.worlds import CLASS, gateway, listener_set, store_of

UTC = datetime.UTC
GW = ObjectKey("Gateway", "default", "gw")
T0 = datetime.datetime(2030, 6, 1, tzinfo=UTC)
EXPIRED = self_signed("old.example.com", ("old.example.com",), T0 - datetime.timedelta(days=90),
                      T0 - datetime.timedelta(days=1))
FUTURE = self_signed("new.example.com", ("new.example.com",), T0 + datetime.timedelta(days=2),
                     T0 + datetime.timedelta(days=90))
GOOD = self_signed("ok.example.com", ("ok.example.com",), T0 - datetime.timedelta(days=1),
                   T0 + datetime.timedelta(days=30))


def https(name: str, secret: str, port: int = 443, hostname: str | None = None) -> dict:
    lis: dict = {"name": name, "port": port, "protocol": "HTTPS",
                 "hostname": hostname or f"{name}.example.com",
                 "tls": {"certificateRefs": [{"name": secret}]}}
    return lis


def world() -> list[dict]:
    gw = gateway("gw", [https("old", "old"), https("new", "new"), https("ok", "ok")],
                 allowedListeners={"namespaces": {"from": "Same"}})
    return [CLASS, gw, tls_secret("old", "default", *EXPIRED),
            tls_secret("new", "default", *FUTURE), tls_secret("ok", "default", *GOOD),
            listener_set("extra", "gw", [https("ls", "old", 8443)])]


def _listener(statuses, owner: ObjectKey, name: str) -> dict[str, dict]:
    lis = next(x for x in statuses[owner]["listeners"] if x["name"] == name)
    return {c["type"]: c for c in lis["conditions"]}


def test_translation_records_validity_and_still_serves_an_expired_certificate():
    t = translate(store_of(world()))
    got = {(c.owner.kind, c.listener): c for c in t.certificates}
    old = got[("Gateway", "old")]
    assert (old.gateway, old.secret) == ("default/gw", "default/old")
    assert old.not_after == (T0 - datetime.timedelta(days=1)).timestamp()
    assert got[("Gateway", "new")].not_before == (T0 + datetime.timedelta(days=2)).timestamp()
    assert got[("ListenerSet", "ls")].owner == ObjectKey("ListenerSet", "default", "extra")
    # served: Programmed, references resolved; the proxy has its certificate
    conds = _listener(t.statuses, GW, "old")
    assert conds["Programmed"]["status"] == "True" and conds["ResolvedRefs"]["status"] == "True"
    assert any(c.cert_pem == EXPIRED[0] for lis in t.l7.listeners for c in lis.certificates)
    # translation itself does not look at the clock
    assert "warning" not in conds["ResolvedRefs"]["message"]


def test_status_warns_about_expired_and_not_yet_valid_certificates():
    t = translate(store_of(world()))
    now = T0.timestamp()
    out = certexpiry.overlay(t.statuses, t.certificates, now)
    old = _listener(out, GW, "old")
    assert old["ResolvedRefs"]["status"] == "True" and old["Programmed"]["status"] == "True"
    msg = old["ResolvedRefs"]["message"]
    assert "Secret default/old expired at 2030-05-31T00:00:00Z" in msg and "still served" in msg
    assert "not valid before 2030-06-03T00:00:00Z" in _listener(out, GW,
                                                                "new")["ResolvedRefs"]["message"]
    assert "warning" not in _listener(out, GW, "ok")["ResolvedRefs"]["message"]
    ls = _listener(out, ObjectKey("ListenerSet", "default", "extra"), "ls")
    assert "expired" in ls["ResolvedRefs"]["message"]
    # the input is left alone
    assert "warning" not in _listener(t.statuses, GW, "old")["ResolvedRefs"]["message"]
    # the next change: FUTURE becomes valid
    assert certexpiry.next_change(t.certificates,
                                  now) == (T0 + datetime.timedelta(days=2)).timestamp()
    later = (T0 + datetime.timedelta(days=3)).timestamp()
    later_status = certexpiry.overlay(t.statuses, t.certificates, later)
    assert "warning" not in _listener(later_status, GW, "new")["ResolvedRefs"]["message"]


def test_expiry_gauges():
    certs = (ServedCertificate(GW, "default/gw", "https", "default/a", 100.0, 2000.0),
             ServedCertificate(GW, "default/gw", "https", "default/b", 50.0, 1000.0),
             # the same labels twice (a ListenerSet listener named like the Gateway's): the
             # sooner expiry is reported, once
             ServedCertificate(ObjectKey("ListenerSet", "default", "x"), "default/gw", "https",
                               "default/a", 10.0, 1500.0))
    fams = {f.name: f for f in text_string_to_metric_families(certexpiry.render(certs).decode())}
    exp = {s.labels["secret"]: s.value
           for s in fams["kgw_tls_certificate_expiry_timestamp_seconds"].samples}
    assert exp == {"default/a": 1500.0, "default/b": 1000.0}
    s = fams["kgw_tls_certificate_not_before_timestamp_seconds"].samples[0]
    assert s.labels == {"gateway": "default/gw", "listener": "https", "secret": "default/a"}
