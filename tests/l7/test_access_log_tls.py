"""Failed TLS handshakes get an access log line (flag DTF, the reason) and are counted
with their listener, whatever failed: the server name, the protocol version, the client
certificate."""

from __future__ import annotations

import json
import socket
import ssl
import warnings
from pathlib import Path

import pytest

from kgw_l7.config import Certificate, ClientValidation, L7Config, Listener

from .conftest import PlaneRunner, eventually, free_port, self_signed
from .test_plane import simple_vhost

pytestmark = pytest.mark.slow


def handshake(port: int, sni: str | None, version: ssl.TLSVersion | None = None) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if version is not None:
        with warnings.catch_warnings():  # (the old versions are deprecated: that's the test)
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ctx.maximum_version = version
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw_sock:
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            with ctx.wrap_socket(raw_sock, server_hostname=sni) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n")
                if not s.recv(1024):
                    raise ConnectionError("closed")


def test_failed_handshakes_are_logged_and_counted_per_listener(echoes, tmp_path: Path):
    log = tmp_path / "access.log"
    runner = PlaneRunner(workers=1, access_log=str(log))
    plain, strict = free_port(), free_port()
    cert = Certificate(("a.example.com",), *self_signed(["a.example.com"]))
    client_ca = self_signed(["client-ca"])[0]
    try:
        runner.apply(L7Config((
            Listener("tls", "127.0.0.1", plain, "HTTPS", (cert,),
                     (simple_vhost("a.example.com", echoes["v1"]),)),
            Listener("mtls", "127.0.0.1", strict, "HTTPS", (cert,),
                     (simple_vhost("a.example.com", echoes["v1"]),),
                     client_validation=ClientValidation(client_ca)),
        ), 1))
        handshake(plain, "b.example.com")
        handshake(plain, None)
        handshake(plain, "a.example.com", ssl.TLSVersion.TLSv1)
        handshake(strict, "a.example.com")  # no client certificate
        text = eventually(lambda: (t := runner.metrics()) and
                          'reason="client_certificate"' in t and t, timeout=10)
        for listener, reason in (("tls", "unknown_server_name"), ("tls", "no_server_name"),
                                 ("tls", "protocol_version"), ("mtls", "client_certificate")):
            assert (f'kgw_l7_tls_handshake_refusals_total{{listener="{listener}",'
                    f'reason="{reason}"}} 1.0') in text, text
    finally:
        runner.close()
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [(x["listener"], x["response_flags"], x["response_code"]) for x in lines] == \
        [("tls", "DTF", 0)] * 3 + [("mtls", "DTF", 0)]
    details = [x["response_code_details"] for x in lines]
    assert details[0] == "tls unknown_server_name: server name 'b.example.com'"
    assert details[1] == "tls no_server_name: no server name sent"
    assert details[2].startswith("tls protocol_version: ")
    assert details[3].startswith("tls client_certificate: ")
