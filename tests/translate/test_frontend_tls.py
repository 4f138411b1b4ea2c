"""Gateway spec.tls.frontend -> listener status and the L7 listeners' client validation."""

from __future__ import annotations

import base64
import json

import pytest

from controller.objects import ObjectKey
from controller.source import Event, EventType
from controller.translate import Options, Translator, translate
from controller.translate.frontendtls import raw_validation
from tests.translate.tlsgen import ca_configmap, self_signed, tls_secret
from tests.translate.worlds import (CLASS, gateway, grant, http_route, norm, service, slice_,
                                    store_of)

CA_A = self_signed("client-ca-a", ("client-ca-a",))[0]
CA_B = self_signed("client-ca-b", ("client-ca-b",))[0]
GW = ObjectKey("Gateway", "default", "gw")


def https(name: str, port: int, hostname: str | None = None, cert: str = "cert") -> dict:
    lis: dict = {"name": name, "port": port, "protocol": "HTTPS",
                 "tls": {"certificateRefs": [{"name": cert}]}}
    if hostname:
        lis["hostname"] = hostname
    return lis


HTTP = {"name": "http", "port": 80, "protocol": "HTTP"}


def cm_ref(name: str, **extra: str) -> dict:
    return {"group": "", "kind": "ConfigMap", "name": name, **extra}


def frontend(default: dict | None = None, per_port: dict[int, dict | None] | None = None) -> dict:
    """spec.tls with a frontend stanza; a per_port value of None is an entry without
    validation."""
    out: dict = {}
    if default is not None:
        out["default"] = {"validation": default}
    if per_port:
        out["perPort"] = [{"port": p, "tls": {"validation": v} if v is not None else {}}
                          for p, v in per_port.items()]
    return {"frontend": out}


def world(listeners: list[dict], tls: dict, *extra: dict) -> list[dict]:
    return [CLASS, gateway("gw", listeners, tls=tls), tls_secret("cert", "default"),
            ca_configmap("ca-a", "default", CA_A), ca_configmap("ca-b", "default", CA_B),
            service("svc"), slice_("svc", ["10.0.0.1"]), http_route("r", [{"name": "gw"}]), *extra]


def l7_by_port(t) -> dict:
    return {lis.port: lis for lis in t.l7.listeners}


def listener_status(t, name: str, gw: ObjectKey = GW) -> dict[str, dict]:
    lis = next(x for x in t.statuses[gw]["listeners"] if x["name"] == name)
    return {c["type"]: c for c in lis["conditions"]}


def gateway_conds(t, gw: ObjectKey = GW) -> dict[str, dict]:
    return {c["type"]: c for c in t.statuses[gw]["conditions"]}


# -- which validation a port gets -----------------------------------------------------------

def test_default_applies_to_https_ports_and_per_port_overrides():
    tls = frontend({"caCertificateRefs": [cm_ref("ca-a")]},
                   {8443: {"caCertificateRefs": [cm_ref("ca-b")]},
                    80: {"caCertificateRefs": [cm_ref("ca-b")]}})
    t = translate(store_of(world([HTTP, https("a", 443), https("b", 8443, "b.example.com"),
                                  https("c", 8443, "c.example.com")], tls)))
    ports = l7_by_port(t)
    assert ports[80].client_validation is None  # HTTP is never validated
    assert ports[443].client_validation.ca_pem.strip() == CA_A.strip()
    assert ports[443].client_validation.mode == "AllowValidOnly"
    assert ports[8443].client_validation.ca_pem.strip() == CA_B.strip()
    for name in ("http", "a", "b", "c"):
        conds = listener_status(t, name)
        assert all(conds[k]["status"] == "True"
                   for k in ("Accepted", "ResolvedRefs", "Programmed")), name
    assert "InsecureFrontendValidationMode" not in gateway_conds(t)
    assert gateway_conds(t)["Accepted"]["reason"] == "Accepted"


def test_per_port_entry_without_validation_turns_it_off_for_that_port():
    tls = frontend({"caCertificateRefs": [cm_ref("ca-a")]}, {8443: None})
    t = translate(store_of(world([https("a", 443), https("b", 8443)], tls)))
    ports = l7_by_port(t)
    assert ports[443].client_validation is not None
    assert ports[8443].client_validation is None


def test_no_frontend_means_no_validation():
    t = translate(store_of(world([https("a", 443)], {})))
    assert l7_by_port(t)[443].client_validation is None
    assert raw_validation({}, 443) is None


def test_secret_and_several_refs_make_one_bundle():
    b64 = base64.b64encode(CA_B.encode()).decode()
    secret = {"kind": "Secret", "metadata": {"name": "ca-secret", "namespace": "default"},
              "type": "Opaque", "data": {"ca.crt": b64}}
    tls = frontend({"caCertificateRefs": [cm_ref("ca-a"),
                                          {"group": "", "kind": "Secret", "name": "ca-secret"}]})
    t = translate(store_of(world([https("a", 443)], tls, secret)))
    pem = l7_by_port(t)[443].client_validation.ca_pem
    assert CA_A.strip() in pem and CA_B.strip() in pem
    assert listener_status(t, "a")["ResolvedRefs"]["status"] == "True"


def test_cross_namespace_ref_needs_a_grant():
    other = ca_configmap("ca-x", "other", CA_A)
    tls = frontend({"caCertificateRefs": [cm_ref("ca-x", namespace="other")]})
    t = translate(store_of(world([https("a", 443)], tls, other)))
    assert listener_status(t, "a")["ResolvedRefs"]["reason"] == "RefNotPermitted"
    assert 443 not in l7_by_port(t)
    g = grant("g", "other", "Gateway", "default", to_kind="ConfigMap")
    t = translate(store_of(world([https("a", 443)], tls, other, g)))
    assert listener_status(t, "a")["ResolvedRefs"]["status"] == "True"
    assert l7_by_port(t)[443].client_validation.ca_pem.strip() == CA_A.strip()


# -- bad references -------------------------------------------------------------------------

BAD_REFS = [
    ("missing", cm_ref("nope"), "InvalidCACertificateRef"),
    ("no-ca.crt", cm_ref("empty"), "InvalidCACertificateRef"),
    ("not-pem", cm_ref("junk"), "InvalidCACertificateRef"),
    ("service", {"group": "", "kind": "Service", "name": "svc"}, "InvalidCACertificateKind"),
    ("other-group", {"group": "example.com", "kind": "ConfigMap", "name": "ca-a"},
     "InvalidCACertificateKind"),
    ("no-kind", {"name": "ca-a"}, "InvalidCACertificateKind"),
    ("missing-secret", {"group": "", "kind": "Secret", "name": "nope"}, "InvalidCACertificateRef"),
    ("no-grant", cm_ref("ca-a", namespace="other"), "RefNotPermitted"),
]
EXTRA = [{"kind": "ConfigMap", "metadata": {"name": "empty", "namespace": "default"},
          "data": {"other": "x"}},
         ca_configmap("junk", "default",
                      "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"),
         ca_configmap("ca-a", "other", CA_A)]


@pytest.mark.parametrize("ref,reason", [(r, why) for _, r, why in BAD_REFS],
                         ids=[i for i, _, _ in BAD_REFS])
def test_invalid_ref_rejects_only_the_https_listeners_of_its_port(ref, reason):
    tls = frontend({"caCertificateRefs": [ref]}, {8443: {"caCertificateRefs": [cm_ref("ca-b")]}})
    t = translate(store_of(world([HTTP, https("a", 443), https("b", 443, "b.example.com"),
                                  https("c", 8443)],
                                 tls, *EXTRA)))
    for name in ("a", "b"):
        conds = listener_status(t, name)
        assert (conds["ResolvedRefs"]["status"], conds["ResolvedRefs"]["reason"]) == ("False",
                                                                                      reason)
        assert (conds["Accepted"]["status"],
                conds["Accepted"]["reason"]) == ("False", "NoValidCACertificate")
        assert conds["Programmed"]["status"] == "False"
        assert conds["ResolvedRefs"]["message"]
    for name in ("http", "c"):
        conds = listener_status(t, name)
        assert all(conds[k]["status"] == "True"
                   for k in ("Accepted", "ResolvedRefs", "Programmed")), name
    ports = l7_by_port(t)
    assert 443 not in ports  # never served without the validation it asks for
    assert ports[80].client_validation is None and ports[8443].client_validation is not None
    gw = gateway_conds(t)
    assert (gw["Accepted"]["status"], gw["Accepted"]["reason"]) == ("True", "ListenersNotValid")
    # The route still attaches to the listeners that serve.
    assert t.statuses[ObjectKey("HTTPRoute", "default", "r")]["parents"][0]["conditions"][0][
        "status"] == "True"


def test_some_refs_valid_serves_with_those_and_reports_the_bad_one():
    tls = frontend({"caCertificateRefs": [cm_ref("nope"), cm_ref("ca-a")]})
    t = translate(store_of(world([https("a", 443)], tls)))
    conds = listener_status(t, "a")
    assert (conds["ResolvedRefs"]["status"],
            conds["ResolvedRefs"]["reason"]) == ("False", "InvalidCACertificateRef")
    assert "nope" in conds["ResolvedRefs"]["message"]
    assert conds["Accepted"]["status"] == "True" and conds["Programmed"]["status"] == "True"
    assert l7_by_port(t)[443].client_validation.ca_pem.strip() == CA_A.strip()


def test_no_refs_or_unsupported_mode_rejects_the_listener():
    t = translate(store_of(world([https("a", 443)], frontend({"caCertificateRefs": []}))))
    conds = listener_status(t, "a")
    assert conds["ResolvedRefs"]["reason"] == "InvalidCACertificateRef"
    assert conds["Accepted"]["reason"] == "NoValidCACertificate"
    t = translate(store_of(world(
        [https("a", 443)], frontend({"mode": "Sometimes", "caCertificateRefs": [cm_ref("ca-a")]}))))
    conds = listener_status(t, "a")
    assert (conds["Accepted"]["status"], conds["Accepted"]["reason"]) == ("False",
                                                                          "UnsupportedValue")
    assert 443 not in l7_by_port(t)


def test_a_bad_certificate_ref_keeps_its_own_reason():
    tls = frontend({"caCertificateRefs": [cm_ref("nope")]})
    t = translate(store_of(world([https("a", 443, cert="missing-cert")], tls)))
    conds = listener_status(t, "a")
    assert conds["ResolvedRefs"]["reason"] == "InvalidCertificateRef"
    assert conds["Accepted"]["reason"] == "NoValidCACertificate"


@pytest.mark.parametrize("tls", [
    {"frontend": []}, {"frontend": {"default": "x"}}, {"frontend": {"perPort": "x"}},
    {"frontend": {"perPort": [None, 3, {"port": "x"}]}},
    {"frontend": {"default": {"validation": {"caCertificateRefs": "ca-a"}}}},
    {"frontend": {"default": {"validation": {"caCertificateRefs": [None, 1, {"kind": 3}]}}}},
    {"frontend": {"default": {"validation": {"mode": 5, "caCertificateRefs": [cm_ref("ca-a")]}}}},
])
def test_malformed_frontend_never_raises(tls):
    t = translate(store_of(world([HTTP, https("a", 443)], tls)))
    assert listener_status(t, "http")["Programmed"]["status"] == "True"
    assert "a" in {x["name"] for x in t.statuses[GW]["listeners"]}


# -- AllowInsecureFallback ------------------------------------------------------------------

@pytest.mark.parametrize("tls,expected", [
    (frontend({"mode": "AllowInsecureFallback", "caCertificateRefs": [cm_ref("ca-a")]}), True),
    (frontend({"caCertificateRefs": [cm_ref("ca-a")]},
              {8443: {"mode": "AllowInsecureFallback", "caCertificateRefs": [cm_ref("ca-b")]}}),
     True),
    # A fallback port without an HTTPS listener changes nothing.
    (frontend({"caCertificateRefs": [cm_ref("ca-a")]},
              {9443: {"mode": "AllowInsecureFallback", "caCertificateRefs": [cm_ref("ca-b")]}}),
     False),
    (frontend({"mode": "AllowValidOnly", "caCertificateRefs": [cm_ref("ca-a")]}), False),
])
def test_insecure_fallback_condition(tls, expected):
    t = translate(store_of(world([HTTP, https("a", 443), https("b", 8443)], tls)))
    cond = gateway_conds(t).get("InsecureFrontendValidationMode")
    if not expected:
        assert cond is None
        return
    assert (cond["status"], cond["reason"]) == ("True", "ConfigurationChanged")
    modes = {p: lis.client_validation.mode for p, lis in l7_by_port(t).items()
             if lis.client_validation}
    assert "AllowInsecureFallback" in modes.values()


# -- Gateways sharing a socket, and changes --------------------------------------------------

def test_gateways_sharing_a_port_get_the_strictest_validation():
    strict = gateway("strict", [https("s", 443, "s.example.com")],
                     tls=frontend({"caCertificateRefs": [cm_ref("ca-a")]}))
    loose = gateway("loose", [https("l", 443, "l.example.com")])
    fallback = gateway("fallback", [https("f", 443, "f.example.com")],
                       tls=frontend({"mode": "AllowInsecureFallback",
                                     "caCertificateRefs": [cm_ref("ca-b")]}))
    objs = [CLASS, tls_secret("cert", "default"), ca_configmap("ca-a", "default", CA_A),
            ca_configmap("ca-b", "default", CA_B)]
    t = translate(store_of(objs + [loose, fallback, strict]))
    v = l7_by_port(t)[443].client_validation
    assert v.mode == "AllowValidOnly" and v.ca_pem.strip() == CA_A.strip()
    t = translate(store_of(objs + [loose, fallback]))
    assert l7_by_port(t)[443].client_validation.mode == "AllowInsecureFallback"
    t = translate(store_of(objs + [loose]))
    assert l7_by_port(t)[443].client_validation is None


def test_changed_or_deleted_ca_configmap_is_picked_up_incrementally():
    objs = world([https("a", 443)], frontend({"caCertificateRefs": [cm_ref("ca-a")]}))
    store = store_of(objs)
    tr = Translator(Options())
    t = tr.update(store, set())
    assert l7_by_port(t)[443].client_validation.ca_pem.strip() == CA_A.strip()
    changed = norm(ca_configmap("ca-a", "default", CA_B))
    key = ObjectKey.of(changed)
    store.apply([Event(EventType.MODIFIED, key, changed, "2", 2)])
    t = tr.update(store, {key})
    assert l7_by_port(t)[443].client_validation.ca_pem.strip() == CA_B.strip()
    store.apply([Event(EventType.DELETED, key, changed, "3", 3)])
    t = tr.update(store, {key})
    assert listener_status(t, "a")["ResolvedRefs"]["reason"] == "InvalidCACertificateRef"
    assert 443 not in l7_by_port(t)


# -- the conformance suite's own status checks ----------------------------------------------

FRONTEND_CASES = ["GatewayFrontendClientCertificateValidation",
                  "GatewayFrontendClientCertificateValidationInsecureFallback",
                  "GatewayFrontendInvalidDefaultClientCertificateValidation",
                  "GatewayInvalidFrontendClientCertificateValidation"]


@pytest.mark.parametrize("name", FRONTEND_CASES)
def test_conformance_status_checks(name):
    from tests.translate.conformance_checks import CheckFailed, evaluate
    from tests.translate.conformance_load import (conformance_dir, gateway_addresses, make_store,
                                                  objects_for)

    root = conformance_dir()
    if root is None:
        pytest.skip("conformance data not found")
    case = json.loads((root / "cases" / f"{name}.json").read_text())
    store = make_store(objects_for(case, root))
    objects = {k: store.get_key(k) for k in store.keys()}
    t = translate(store, Options(gateway_addresses=gateway_addresses(store)))
    failures = []
    for check in case["statusChecks"]:
        try:
            evaluate(check, t.statuses, objects)
        except CheckFailed as e:
            failures.append(f"{check['helper']}: {e}")
    assert not failures, "\n".join(failures)
