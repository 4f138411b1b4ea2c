"""What a JWT check adds to a request: the proxy's per-request work without sockets
(``bench.l7.hotpath``'s in-memory transports), with the bench's /plain route requiring a
JWT (RS256, 2048-bit key, inline JWKS).

Modes: ``none`` (no check: the baseline), ``repeated`` (every request carries the same
token: after the first, the worker's verified-token cache answers), ``fresh`` (every
request a token never seen: parsed and its signature verified each time; tokens are
signed before the batch is timed), ``oidc`` (the route requires an OIDC login and every
request carries a session cookie: opened (AES-256-GCM), its ID token's claims read, the
access token forwarded, the cookie removed; no provider is called).

Usage: ``.venv/bin/python -m bench.l7.auth [--requests 2000] [--repeat 10]
[--mode none|repeated|fresh|oidc] [--keys FILE]`` (default: the three modes); prints the best
microseconds per request of ``--repeat`` batches, elapsed and CPU time (the process's: on a
loaded machine the less inflated of the two). ``--keys FILE``: the signing key and
enough signed tokens are read from FILE (written there first when it does not exist), so
that no signature is made in the measured process. For instruction counts (the
machine's load does not change them): ``valgrind --tool=callgrind`` two runs of one mode
with different ``--requests``, ``--repeat 1`` and the same ``--keys``, and take the
difference per request.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import jwt  # noqa: E402
import uvloop  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

import kgw_l7  # noqa: E402
from bench.l7.hotpath import RESPONSES, MemoryTransport  # noqa: E402
from bench.l7.run import bench_config  # noqa: E402
from kgw_l7.auth_config import JWT, OIDC, JWTProvider  # noqa: E402
from kgw_l7.channel import WorkerOptions  # noqa: E402
from kgw_l7.config import L7Config, RulePolicy  # noqa: E402
from kgw_l7.context import ListenerState, WorkerContext  # noqa: E402
from kgw_l7.proxy import DownstreamConn  # noqa: E402
from kgw_l7.upstream import UpstreamConn  # noqa: E402

KEY: Any = None
#: Tokens signed ahead (``--keys``), taken in order by ``token``.
SIGNED: list[str] = []


#: The OIDC mode's cookie key and session (an ID token as a provider signs one: the check
#: reads its claims, it verified the signature when the session was made).
COOKIE_KEY = bytes(range(32))
OIDC_POLICY = RulePolicy(oidc=OIDC(
    issuer="http://127.0.0.1:9/op", client_id="bench", client_secret="s",
    redirect_url="http://127.0.0.1:8080/callback", cookie_keys=(COOKIE_KEY,),
    forward_access_token=True))


def session_cookie() -> bytes:
    from kgw_l7.oidc import Sealer
    id_token = token(0)
    return b"kgw-oidc-session=" + Sealer((COOKIE_KEY,)).seal(b"kgw-oidc-session", {
        "at": "a" * 43, "it": id_token, "rt": "r" * 43, "exp": time.time() + 3600})


def secured(config: L7Config, mode: str = "repeated") -> L7Config:
    """``config`` with every rule requiring a JWT signed by KEY (or, mode oidc, a login)."""
    pub = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key()))
    provider = JWTProvider("bench", issuer="https://issuer.bench", audiences=("bench",),
                           local_jwks=json.dumps({"keys": [{**pub, "kid": "k1"}]}))
    security = RulePolicy(jwt=JWT((provider,))) if mode != "oidc" else OIDC_POLICY
    listeners = []
    for lst in config.listeners:
        vhs = []
        for vh in lst.virtual_hosts:
            routes = tuple(dataclasses.replace(r, rule=dataclasses.replace(
                r.rule, policy=security)) for r in vh.routes)
            vhs.append(dataclasses.replace(vh, routes=routes))
        listeners.append(dataclasses.replace(lst, virtual_hosts=tuple(vhs)))
    return dataclasses.replace(config, listeners=tuple(listeners))


def token(n: int) -> str:
    if n < len(SIGNED):
        return SIGNED[n]
    return jwt.encode({"iss": "https://issuer.bench", "aud": "bench", "sub": f"user{n}",
                       "exp": int(time.time()) + 3600}, KEY, algorithm="RS256",
                      headers={"kid": "k1"})


def run(mode: str, requests: int, repeat: int) -> tuple[float, float]:
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    ctx = WorkerContext(loop, WorkerOptions(access_log="off"))
    config = bench_config(8080, 9)
    if mode != "none":
        config = secured(config, mode)
    listener = ListenerState("bench", config.listeners[0], ctx.cache.build(config)["bench"],
                             None)
    conn = DownstreamConn(ctx, listener)
    client = MemoryTransport()
    conn.connection_made(client)  # type: ignore[arg-type]
    up = UpstreamConn(("127.0.0.1", 9, None))
    backend = MemoryTransport()
    up.connection_made(backend)  # type: ignore[arg-type]
    ctx.pool.release(up, ctx.now)
    response = RESPONSES["echo"]

    def req(tok: str | None) -> bytes:
        auth = b"Authorization: Bearer %s\r\n" % tok.encode() if tok else b""
        return b"GET /plain HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n%s\r\n" % auth

    same = req(token(0) if mode not in ("none", "oidc") else None)
    if mode == "oidc":
        same = b"GET /plain HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nCookie: %s\r\n\r\n" \
            % session_cookie()
    conn.data_received(same)
    up.data_received(response)
    assert client.out[-1].startswith(b"HTTP/1.1 200 OK\r\n"), client.out[-1][:200]
    best = best_cpu = float("inf")
    for r in range(repeat):
        batch = [req(token(r * requests + i + 1)) for i in range(requests)] \
            if mode == "fresh" else [same] * requests
        client.out.clear()
        t0, c0 = time.perf_counter(), time.process_time()
        for data in batch:
            conn.data_received(data)
            up.data_received(response)
        best_cpu = min(best_cpu, (time.process_time() - c0) / requests)
        best = min(best, (time.perf_counter() - t0) / requests)
        assert len(client.out) == requests
        assert all(o.startswith(b"HTTP/1.1 200 OK\r\n") for o in client.out)
    ctx.close()
    loop.close()
    return best, best_cpu


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--mode", choices=("none", "repeated", "fresh", "oidc"), action="append")
    p.add_argument("--keys", type=Path, default=None)
    args = p.parse_args(argv)
    global KEY
    if args.keys is not None and args.keys.exists():
        saved = json.loads(args.keys.read_text())
        KEY = serialization.load_pem_private_key(saved["key"].encode(), None)
        SIGNED[:] = saved["tokens"]
    else:
        KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if args.keys is not None:
            SIGNED[:] = [token(n) for n in range(args.requests * args.repeat + 1)]
            args.keys.write_text(json.dumps({"key": KEY.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()).decode(), "tokens": SIGNED}))
    print(f"kgw_l7 {'compiled' if kgw_l7.extension_in_use('exchange') else 'interpreted'}")
    for mode in args.mode or ("none", "repeated", "fresh"):
        best, best_cpu = run(mode, args.requests, args.repeat)
        print(f"{mode:8}  {best * 1e6:8.2f} us/request  {best_cpu * 1e6:8.2f} us CPU/request",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
