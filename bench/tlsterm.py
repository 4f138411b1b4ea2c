"""TLS termination to plain TCP (a TLS listener in Terminate mode), on loopback, bounded:
kgw against haproxy (`mode tcp`, `ssl crt`) and nginx (`stream`, `ssl`), one process
(one thread) each, the same certificate (ECDSA P-256) and the same cipher (the client
offers only TLS 1.2 ECDHE-ECDSA-AES128-GCM-SHA256).

Per proxy, each REPEAT times (median reported):
  up      the client sends BYTES over TLS, the backend reads them (plain TCP) and answers
  down    the backend sends BYTES, the client reads them over TLS
  hs      TLS handshakes per second, one client connection at a time for SECONDS (each
          connection: handshake, one byte each way, close)
and the proxy process's own CPU (user + system, /proc/PID/stat) per GB moved in up and
down, and per handshake. The client and the backend are Python (blocking sockets,
1 MB buffers) on the same machine: they bound the rates, not the CPU figures.

kgw runs as `kgw run -c DIR --l4-mode userspace` (the termination path is the same in
every L4 mode: kgw_l4/tlsterm.py), with its admin API and L7 worker on ports of their own;
its CPU is the supervisor process's, where the L4 plane runs.

  .venv/bin/python -m bench.tlsterm [--bytes 268435456] [--repeat 3] [--seconds 3]
                                    [--proxies kgw,haproxy,nginx] [--out bench/results/tlsterm.md]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.report import save

ROOT = Path(__file__).resolve().parents[1]
CLK = os.sysconf("SC_CLK_TCK")
CIPHER = "ECDHE-ECDSA-AES128-GCM-SHA256"
CHUNK = 1 << 20
SERVER_NAME = "bench.example.com"
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cert_pair(d: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(
        key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(
                now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), critical=False)
            .sign(key, hashes.SHA256()))
    c, k = d / "tls.crt", d / "tls.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return c, k


# -- the backend: plain TCP, "U n" -> read n bytes then answer, "D n" -> send n bytes, "P" -> one
# byte

def backend(ls: socket.socket, stop: threading.Event) -> None:
    ls.settimeout(0.5)
    payload = memoryview(b"x" * CHUNK)
    while not stop.is_set():
        try:
            c, _ = ls.accept()
        except TimeoutError:
            continue
        threading.Thread(target=_serve, args=(c, bytearray(CHUNK), payload), daemon=True).start()


def _serve(c: socket.socket, buf: bytearray, payload: memoryview) -> None:
    with c:
        c.settimeout(60)
        line = b""
        while b"\n" not in line:
            got = c.recv(64)
            if not got:
                return
            line += got
        line, _, rest = line.partition(b"\n")
        op, _, n = line.strip().partition(b" ")
        if op == b"U":
            left = int(n) - len(rest)
            while left > 0:
                got = c.recv_into(buf)
                if not got:
                    return
                left -= got
            c.sendall(b"K")
        elif op == b"D":
            left = int(n)
            while left > 0:
                k = c.send(payload[:min(left, CHUNK)])
                left -= k
        elif op == b"P":
            c.sendall(b"K")


# -- the client


def client_context(ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(CIPHER)
    return ctx


def connect(port: int, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    t = ctx.wrap_socket(s, server_hostname=SERVER_NAME)
    assert t.cipher()[0] == CIPHER, t.cipher()
    return t


def run_up(port: int, ctx: ssl.SSLContext, n: int) -> float:
    with connect(port, ctx) as t:
        data = memoryview(b"y" * CHUNK)
        t0 = time.perf_counter()
        t.sendall(f"U {n}\n".encode())
        left = n
        while left > 0:
            k = min(left, CHUNK)
            t.sendall(data[:k])
            left -= k
        if t.recv(1) != b"K":
            raise RuntimeError("upload not acknowledged")
        return time.perf_counter() - t0


def run_down(port: int, ctx: ssl.SSLContext, n: int) -> float:
    with connect(port, ctx) as t:
        buf = bytearray(CHUNK)
        t0 = time.perf_counter()
        t.sendall(f"D {n}\n".encode())
        left = n
        while left > 0:
            got = t.recv_into(buf)
            if not got:
                raise RuntimeError(f"download ended {left} bytes short")
            left -= got
        return time.perf_counter() - t0


def run_handshakes(port: int, ctx: ssl.SSLContext, seconds: float) -> tuple[int, float]:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        with connect(port, ctx) as t:
            t.sendall(b"P\n")
            if t.recv(1) != b"K":
                raise RuntimeError("no answer")
        n += 1
    return n, time.perf_counter() - t0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


# -- the proxies


@dataclass
class Proxy:
    name: str
    port: int
    proc: subprocess.Popen
    pid: int  # whose CPU is counted


def wait_tls(port: int, ctx: ssl.SSLContext, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}")
        try:
            with connect(port, ctx) as t:
                t.sendall(b"P\n")
                if t.recv(1) == b"K":
                    return
        except (OSError, ssl.SSLError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"not serving on {port} after {START_TIMEOUT}s")


def start_kgw(d: Path, crt: Path, key: Path, bport: int) -> Proxy:
    import base64

    port = free_port()
    b64 = lambda p: base64.b64encode(p.read_bytes()).decode()  # noqa: E731
    conf = d / "kgw"
    conf.mkdir()
    (conf / "gw.yaml").write_text(f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: kgw}}
spec: {{controllerName: kgw.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: bench}}
spec:
  gatewayClassName: kgw
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
  - {{name: tls, protocol: TLS, port: {port}, tls: {{mode: Terminate, certificateRefs: [{{name: cert}}]}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: cert, namespace: bench}}
type: kubernetes.io/tls
data: {{tls.crt: {b64(crt)}, tls.key: {b64(key)}}}
---
apiVersion: v1
kind: Service
metadata: {{name: sink, namespace: bench}}
spec: {{ports: [{{name: p, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: sink-1, namespace: bench, labels: {{kubernetes.io/service-name: sink}}}}
addressType: IPv4
ports: [{{name: p, port: {bport}}}]
endpoints: [{{addresses: [127.0.0.1]}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {{name: sink, namespace: bench}}
spec:
  parentRefs: [{{name: gw}}]
  rules: [{{backendRefs: [{{name: sink, port: 80}}]}}]
""")  # noqa: E501 (data)
    exe = Path(sys.executable).with_name("kgw")
    proc = subprocess.Popen([str(exe), "run", "-c", str(conf), "--l4-mode", "userspace",
                             "--workers", "1",
                             "--access-log", "off", "--admin-address", f"127.0.0.1:{free_port()}"],
                            stdout=subprocess.DEVNULL, stderr=(d / "kgw.log").open("w"), cwd=ROOT)
    return Proxy("kgw", port, proc, proc.pid)


def start_haproxy(d: Path, crt: Path, key: Path, bport: int) -> Proxy:
    port = free_port()
    pem = d / "haproxy.pem"
    pem.write_bytes(crt.read_bytes() + key.read_bytes())
    cfg = d / "haproxy.cfg"
    cfg.write_text(f"""\
global
    nbthread 1
    maxconn 1000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend tls
    bind 127.0.0.1:{port} ssl crt {pem} ciphers {CIPHER}
    default_backend sink
backend sink
    server s1 127.0.0.1:{bport}
""")
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=(d / "haproxy.log").open("w"))
    return Proxy("haproxy", port, proc, proc.pid)


def start_nginx(d: Path, crt: Path, key: Path, bport: int) -> Proxy:
    port = free_port()
    cfg = d / "nginx.conf"
    mods = sorted(Path("/usr/lib/nginx/modules").glob("ngx_stream_module.so"))
    load = f"load_module {mods[0]};\n" if mods else ""
    cfg.write_text(f"""\
{load}worker_processes 1;
daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/nginx.log;
events {{ worker_connections 1024; }}
stream {{
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {crt};
        ssl_certificate_key {key};
        ssl_ciphers {CIPHER};
        proxy_pass 127.0.0.1:{bport};
    }}
}}
""")
    proc = subprocess.Popen(["nginx", "-c", str(cfg), "-p", str(d)], stdout=subprocess.DEVNULL,
                            stderr=(d / "nginx.err").open("w"))
    return Proxy("nginx", port, proc, proc.pid)


STARTERS: dict[str, Callable[[Path, Path, Path, int], Proxy]] = {
    "kgw": start_kgw, "haproxy": start_haproxy, "nginx": start_nginx}


@contextlib.contextmanager
def running(p: Proxy) -> Iterator[Proxy]:
    try:
        yield p
    finally:
        p.proc.terminate()
        try:
            p.proc.wait(15)
        except subprocess.TimeoutExpired:
            p.proc.kill()
            p.proc.wait()


@dataclass
class Row:
    proxy: str
    up_mbs: float
    up_cpu_s_gb: float
    down_mbs: float
    down_cpu_s_gb: float
    hs_per_s: float
    cpu_ms_hs: float
    note: str = ""


def measure(p: Proxy, ctx: ssl.SSLContext, nbytes: int, repeat: int, seconds: float) -> Row:
    ups, upc, downs, downc, hss, hsc = [], [], [], [], [], []
    gb = nbytes / 1e9
    for _ in range(repeat):
        c0 = cpu_seconds(p.pid)
        secs = run_up(p.port, ctx, nbytes)
        ups.append(nbytes / secs / 1e6)
        upc.append((cpu_seconds(p.pid) - c0) / gb)
        c0 = cpu_seconds(p.pid)
        secs = run_down(p.port, ctx, nbytes)
        downs.append(nbytes / secs / 1e6)
        downc.append((cpu_seconds(p.pid) - c0) / gb)
        c0 = cpu_seconds(p.pid)
        n, secs = run_handshakes(p.port, ctx, seconds)
        hss.append(n / secs)
        hsc.append((cpu_seconds(p.pid) - c0) / n * 1000)
    med = statistics.median
    return Row(p.name, round(med(ups)), round(med(upc), 2), round(med(downs)), round(med(downc), 2),
               round(med(hss)), round(med(hsc), 3))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bytes", type=int, default=256 << 20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--proxies", default="kgw,haproxy,nginx")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="kgw-bench-tls-") as tmp:
        d = Path(tmp)
        crt, key = cert_pair(d)
        ctx = client_context(crt)
        ls = socket.create_server(("127.0.0.1", 0))
        bport = ls.getsockname()[1]
        stop = threading.Event()
        threading.Thread(target=backend, args=(ls, stop), daemon=True).start()
        for name in args.proxies.split(","):
            if name != "kgw" and shutil.which(name) is None:
                rows.append(
                    Row(name, 0, 0, 0, 0, 0, 0, f"{name} not installed (scripts/setup.sh bench)"))
                continue
            sub = d / name
            sub.mkdir()
            p = STARTERS[name](sub, crt, key, bport)
            with running(p):
                try:
                    wait_tls(p.port, ctx, p.proc)
                    rows.append(measure(p, ctx, args.bytes, args.repeat, args.seconds))
                except (RuntimeError, OSError, ssl.SSLError) as e:
                    rows.append(Row(name, 0, 0, 0, 0, 0, 0, f"failed: {e}"))
            print(rows[-1], flush=True)
        stop.set()
        ls.close()
    text = render(rows, args)
    print(text)
    if args.out:
        save(args.out, text)
    return 0


def render(rows: list[Row], args: argparse.Namespace) -> str:
    import platform

    cmd = (f"`.venv/bin/python -m bench.tlsterm --bytes {args.bytes} --repeat {args.repeat} "
           f"--seconds {args.seconds} --proxies {args.proxies}`")
    lines = [
        "# TLS Terminate benchmark (TLS in, plain TCP out)", "",
        f"Command: {cmd}. Generated by bench/tlsterm.py on "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, kernel {platform.release()}, "
        f"{os.cpu_count()} CPUs, OpenSSL {ssl.OPENSSL_VERSION}.", "",
        f"Loopback; certificate ECDSA P-256; cipher TLS 1.2 {CIPHER} (the only one the client "
        "offers); "
        f"up/down move {args.bytes / 2**20:.0f} MiB per run; median of {args.repeat} runs. CPU is "
        "the proxy process's own (user + system).", "",
        "| proxy | up MB/s | up CPU s/GB | down MB/s | down CPU s/GB | handshakes/s | CPU "
        "ms/handshake | note |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r.proxy} | {r.up_mbs} | {r.up_cpu_s_gb} | {r.down_mbs} | "
                     f"{r.down_cpu_s_gb} | {r.hs_per_s} | {r.cpu_ms_hs} | {r.note} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
