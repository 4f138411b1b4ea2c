"""Key material stays out of everything kgw renders: /config_dump, `kgw translate`, reprs
(logs, tracebacks), and the messages for refused files."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import yaml

from controller.cli import main
from kgw_cli.env import Environment, ExitStatus
from controller.files import FileSource
from controller.supervisor import Supervisor
from controller.translate import translate
from controller.store import Store
from tests.translate.tlsgen import self_signed, tls_secret

CLASS = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
         "metadata": {"name": "kgw"}, "spec": {"controllerName": "kgw.dev/gateway-controller"}}
GATEWAY = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
           "metadata": {"name": "gw", "namespace": "default"},
           "spec": {"gatewayClassName": "kgw",
                    "tls": {"backend": {"clientCertificateRef": {"name": "client"}}},
                    "listeners": [{"name": "https", "port": 8443, "protocol": "HTTPS",
                                   "tls": {"certificateRefs": [{"name": "serving"}]}}]}}
ROUTE = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
         "metadata": {"name": "r", "namespace": "default"},
         "spec": {"parentRefs": [{"name": "gw"}],
                  "rules": [{"backendRefs": [{"name": "svc", "port": 443}]}]}}
SERVICE = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "svc", "namespace": "default"},
           "spec": {"ports": [{"name": "https", "port": 443}]}}
POLICY = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "BackendTLSPolicy",
          "metadata": {"name": "p", "namespace": "default"},
          "spec": {"targetRefs": [{"group": "", "kind": "Service", "name": "svc"}],
                   "validation": {"hostname": "svc.example.com",
                                  "wellKnownCACertificates": "System"}}}
SERVING = self_signed("serving.example.com", ("serving.example.com",))
CLIENT = self_signed("client.example.com", ("client.example.com",))


def _write(directory: Path) -> None:
    docs = [CLASS, GATEWAY, ROUTE, SERVICE, POLICY,
            tls_secret("serving", "default", *SERVING), tls_secret("client", "default", *CLIENT)]
    (directory / "all.yaml").write_text(yaml.safe_dump_all(docs))


def _key_body(pem: str) -> str:
    return "".join(pem.strip().splitlines()[1:-1])


def _assert_no_keys(text: str) -> None:
    for pem in (SERVING[1], CLIENT[1]):
        body = _key_body(pem)
        assert body[:40] not in text and "PRIVATE KEY" not in text


def test_config_dump_shows_key_fingerprints_only(tmp_path: Path) -> None:
    _write(tmp_path)

    async def dump() -> bytes:
        sup = Supervisor(FileSource(tmp_path, watch=False))
        await sup.run()
        status, _ctype, body = await sup._config_dump()
        assert status == 200
        return body

    body = asyncio.run(dump()).decode()
    _assert_no_keys(body)
    config = json.loads(body)
    (listener,) = config["l7"]["listeners"]
    (cert,) = listener["certificates"]
    assert cert["cert_pem"] == SERVING[0]  # certificates are public: shown
    assert cert["key_pem"].startswith("[redacted: ")
    backend = listener["virtual_hosts"][0]["routes"][0]["rule"]["backends"][0]
    assert backend["tls"]["client_key_pem"].startswith("[redacted: ")


def test_translate_command_redacts_keys(tmp_path: Path) -> None:
    _write(tmp_path)
    for fmt in ("json", "yaml"):
        out = io.StringIO()
        assert main(["translate", "-c", str(tmp_path), "-o", fmt],
                    Environment(stdout=out)) == ExitStatus.SUCCESS
        _assert_no_keys(out.getvalue())
        assert "[redacted: " in out.getvalue()


def test_records_keep_keys_out_of_their_repr(tmp_path: Path) -> None:
    """What a log line or a traceback prints of a config record or the IR."""
    _write(tmp_path)
    batch = FileSource(tmp_path, watch=False).load()
    store = Store()
    store.apply(batch.events)
    t = translate(store)
    _assert_no_keys(repr(t.l7))
    from controller.translate import Translator
    tr = Translator()
    tr.update(store, set())
    _assert_no_keys(repr(tr._gateways))


def test_yaml_errors_do_not_quote_the_file(tmp_path: Path) -> None:
    """A broken Secret: the message says where and what kind of error, never its text."""
    secret = "c2VjcmV0"  # what the user would not want in a log
    cases = {
        "escape.yaml": f'apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\nstringData: '
                       f'{{k: "{secret}\\q"}}\n',
        "tab.yaml": f"apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\ndata:\n  k: "
                    f"{secret}\n\t@x: 1\n",
        "tag.yaml": f"apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\ndata: "
                    f"{{k: !{secret} x}}\n",
    }
    for name, text in cases.items():
        d = tmp_path / name.replace(".yaml", "")
        d.mkdir()
        (d / name).write_text(text)
        problems = FileSource(d, watch=False).load().problems
        assert problems, name
        for p in problems:
            assert secret not in str(p), (name, str(p))
            assert "invalid YAML" in p.message and f"{name}:" in p.origin, str(p)


def test_security_policy_secrets_are_redacted() -> None:
    """An OIDC client secret and cookie keys, a JWT HMAC secret: fingerprints in what
    kgw renders (the cookie keys are bytes: rendered at all only so)."""
    import json

    from controller.redact import redact
    from kgw_l7.auth_config import JWT, OIDC, JWTProvider
    from kgw_l7.config import RulePolicy, to_dict

    policy = RulePolicy(
        jwt=JWT((JWTProvider("p", hmac_secret=b"hmac-secret-value"),)),
        oidc=OIDC("https://op", "kgw", "client-secret-value", "https://app/cb",
                  (b"k" * 32, b"j" * 32)))
    shown = json.dumps(redact(to_dict(policy)))
    for secret in ("hmac-secret-value", "client-secret-value", "kkkk", "jjjj"):
        assert secret not in shown
    assert shown.count("[redacted: ") == 4
