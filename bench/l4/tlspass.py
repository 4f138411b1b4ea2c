"""TLS passthrough new-connection rate: kgw (SNI read, backend connect, sockmap splice)
against haproxy ``mode tcp`` routing by ``req.ssl_sni``, on the namespace topology
(client — gw — backend, vm_tests/topology.py), one run, bounded.

The backend is nginx with TLS (a self-signed P-256 certificate, TLS 1.3) answering
``return 200``; the client is ``wrk -H 'Connection: close'`` over https to the gateway, so
every request is a new TCP connection and a full TLS handshake passing through the
gateway. Both gateways pick the backend by SNI among two names (one route each; the
bench's SNI, ``bench.example``, is the second, so a linear scan would not be free).

Per mode: connections/s (median of --repeat runs of --seconds), the gateway process's CPU
per connection (utime+stime of the agent or haproxy over the wrk runs), every kworker
thread's CPU and the machine's softirq time per connection (kgw's spliced bytes are sent
by kworkers, haproxy's by itself; other jobs' share is in both columns), and the whole
machine's busy CPU per connection (client, backend and gateway: TLS handshakes dominate;
the busy CPUs of the idle second before each run are reported next to it, since the
machine is shared). With --profile the kgw agent runs under cProfile and the top
functions by own time are printed (for the breakdown in bench/results/l4.md).

  sudo .venv/bin/python -m bench.l4.tlspass [--seconds 3] [--repeat 3] [--rounds 1]
                                            [--modes a,b] [--connections 32] [--profile FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.l4.run import CLK, busy_jiffies, proc_cpu, stop  # noqa: E402
from kgw_l4 import loader  # noqa: E402
from vm_tests.topology import GW_CLIENT_ADDR, Topology  # noqa: E402

BACKEND = "10.201.2.11"
SNI = "bench.example"
PORT = 8443
#: kgw-tlspass: the default plane's passthrough (the compiled pair relay copies each
#: connection until it is a long stream, then sockmap splice: kgw_l4.pairrelay);
#: kgw-tlspass-splice: the same agent with KGW_NO_EXTENSIONS=1 (no pair relay: spliced
#: from the first byte, as before it); kgw-tlspass-copy: the agent with --mode userspace
#: (the interpreted relay copies the bytes: no kworker sends, more agent CPU)
#: haproxy-sni-1t: haproxy with ``nbthread 1`` (its default here is one thread per CPU;
#: kgw's passthrough path runs on one event loop thread)
MODES = ("kgw-tlspass", "haproxy-sni", "kgw-tlspass-copy", "kgw-tlspass-splice",
         "haproxy-sni-1t")


@dataclass
class Result:
    mode: str
    conn_rate: float = 0.0
    rates: tuple[float, ...] = ()
    errors: int = 0
    gw_cpu_us: float | None = None  # gateway process CPU per connection
    kworker_cpu_us: float = 0.0  # every kworker thread's CPU per connection
    softirq_us: float = 0.0  # the machine's softirq time per connection
    machine_cpu_us: float = 0.0
    bg_cpus: float = 0.0
    client_cpu_us: float = 0.0  # wrk's CPU per connection
    backend_cpu_us: float = 0.0  # nginx's (master and workers) per connection
    gw_segs: float = 0.0  # TCP segments in + out of the gateway's namespace per connection
    ctxt: float = 0.0  # the machine's context switches per connection
    conns: int = 0
    note: str = ""


#: the per-connection figures of Result, merged over rounds weighted by connections
PER_CONN = ("gw_cpu_us", "kworker_cpu_us", "softirq_us", "machine_cpu_us", "client_cpu_us",
            "backend_cpu_us", "gw_segs", "ctxt")


def merge(runs: list[Result]) -> Result:
    """One mode's rounds as one Result: every run's rate, figures weighted by connections."""
    ok = [r for r in runs if not r.note]
    if not ok:
        return runs[0]
    n = max(1, sum(r.conns for r in ok))
    rates = tuple(x for r in ok for x in r.rates)
    out = Result(ok[0].mode, round(statistics.median(rates)), rates, sum(r.errors for r in ok),
                 bg_cpus=max(r.bg_cpus for r in ok), conns=n,
                 note="; ".join(r.note for r in runs if r.note))
    for f in PER_CONN:
        setattr(out, f, round(sum((getattr(r, f) or 0) * r.conns for r in ok) / n, 1))
    return out


def make_cert(tmp: Path) -> tuple[Path, Path]:
    key, crt = tmp / "key.pem", tmp / "crt.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                    f"/CN={SNI}", "-addext", f"subjectAltName=DNS:{SNI}",
                    "-keyout", str(key), "-out", str(crt)], check=True, capture_output=True,
                   timeout=30)
    return key, crt


def start_backend(topo: Topology, tmp: Path) -> subprocess.Popen:
    key, crt = make_cert(tmp)
    conf = tmp / "nginx-tls.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx-tls.pid;
error_log {tmp}/nginx-tls.err;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  ssl_protocols TLSv1.3;
  ssl_session_cache off;
  ssl_session_tickets off;
  server {{
    listen {BACKEND}:443 ssl reuseport backlog=4096;
    ssl_certificate {crt};
    ssl_certificate_key {key};
    location / {{ return 200 "ok\\n"; }}
  }}
}}
""")
    p = topo.popen(topo.backend, "nginx", "-c", str(conf), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return p


def agent_config() -> dict:
    def route(name: str, host: str, port: int) -> dict:
        return {"name": name, "hostnames": [host],
                "backends": [{"name": "b", "weight": 1,
                              "endpoints": [{"address": BACKEND, "port": port}]}]}
    return {"tls_passthrough": [{"name": "tls", "address": GW_CLIENT_ADDR, "port": PORT,
                                 "routes": [route("other", "other.example", 444),
                                            route("bench", SNI, 443)]}]}


def start_agent(topo: Topology, tmp: Path, pin_dir: str, profile: str | None,
                plane: str = "splice", env: dict[str, str] | None = None) -> subprocess.Popen:
    cfg = tmp / "l4-tlspass.json"
    cfg.write_text(json.dumps(agent_config()))
    prof = ["-m", "bench.l4.cpuprofile", profile] if profile else []
    p = topo.popen(topo.gw, sys.executable, *prof, "-m", "kgw_l4", "agent", "--config",
                   str(cfg), "--mode", plane, "--interfaces", "gc,gb", "--pin-dir", pin_dir,
                   stdout=subprocess.PIPE, stderr=open(tmp / "agent-tlspass.log", "w"),
                   text=True, cwd=str(ROOT), env={**os.environ, **(env or {})})
    line = p.stdout.readline() if p.stdout else ""
    if not line or json.loads(line)["errors"]:
        raise RuntimeError(f"agent failed: {line} "
                           f"{(tmp / 'agent-tlspass.log').read_text()[-500:]}")
    return p


def start_haproxy(topo: Topology, tmp: Path, threads: int | None = None) -> subprocess.Popen:
    conf = tmp / "haproxy-sni.cfg"
    nbthread = f"  nbthread {threads}\n" if threads else ""
    conf.write_text(f"""
global
  maxconn 4000
{nbthread}defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend tls
  bind {GW_CLIENT_ADDR}:{PORT}
  tcp-request inspect-delay 5s
  tcp-request content accept if {{ req.ssl_hello_type 1 }}
  use_backend other if {{ req.ssl_sni -i other.example }}
  use_backend bench if {{ req.ssl_sni -i {SNI} }}
backend other
  server s1 {BACKEND}:444
backend bench
  server s1 {BACKEND}:443
""")
    p = topo.popen(topo.gw, "haproxy", "-db", "-f", str(conf), stdout=subprocess.DEVNULL,
                   stderr=open(tmp / "haproxy-sni.log", "w"))
    time.sleep(0.5)
    if p.poll() is not None:
        raise RuntimeError(f"haproxy exited: {(tmp / 'haproxy-sni.log').read_text()[-500:]}")
    return p


def kworker_cpu() -> float:
    """CPU seconds of every kworker thread so far: the kernel's workqueues run the
    sockmap redirects (a redirected skb is sent by the peer psock's work item), which
    the agent's own CPU does not include; other jobs' kworker time is in it too."""
    total = 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        if name.startswith("kworker/"):
            f = stat.rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
    return total / CLK


def softirq_seconds() -> float:
    with open("/proc/stat") as f:
        return int(f.readline().split()[7]) / CLK


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and every process below it (nginx's master and workers)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += proc_cpu(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo += [int(c) for c in task.read_text().split()]
            except OSError:
                pass
    return total


def tcp_segments(pid: int) -> int:
    """TCP segments received plus sent in the network namespace of ``pid``."""
    lines = [ln.split() for ln in Path(f"/proc/{pid}/net/snmp").read_text().splitlines()
             if ln.startswith("Tcp:")]
    row = dict(zip(lines[0][1:], lines[1][1:]))
    return int(row["InSegs"]) + int(row["OutSegs"])


def context_switches() -> int:
    with open("/proc/stat") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("ctxt "))


def wrk_tls(topo: Topology, hosts: Path, seconds: int, connections: int
            ) -> tuple[float, int, int]:
    """(requests/s, errors, requests) of https with ``Connection: close`` through the
    gateway. wrk sends the URL's host as SNI and has no --resolve: it runs in a private
    mount namespace whose /etc/hosts (``hosts``, bind-mounted) maps the name to the gateway."""
    r = topo.run(topo.client, "unshare", "--mount", "sh", "-c",
                 'mount --bind "$0" /etc/hosts && exec "$@"', str(hosts),
                 "wrk", "-t2", f"-c{connections}", f"-d{seconds}s",
                 "-H", "Connection: close", f"https://{SNI}:{PORT}/",
                 timeout=seconds + 30, check=False)
    m = re.search(r"Requests/sec:\s+([\d.]+)", r.stdout)
    total = re.search(r"(\d+) requests in", r.stdout)
    errs = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", r.stdout))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", r.stdout)
    if not m:
        raise RuntimeError(f"wrk failed: {r.stdout[-300:]} {r.stderr[-300:]}")
    return (float(m.group(1)), errs + (int(non2xx.group(1)) if non2xx else 0),
            int(total.group(1)) if total else 0)


def measure(topo: Topology, hosts: Path, mode: str, gw_pid: int, backend_pid: int,
            seconds: int, repeat: int, connections: int) -> Result:
    rates: list[float] = []
    conns = errors = jiffies = bg = segs = ctxt = 0
    cpu = kw = sirq = client = backend = 0.0
    for _ in range(repeat):
        b0 = busy_jiffies()
        time.sleep(1)
        bg += busy_jiffies() - b0
        c0, j0, k0, s0 = proc_cpu(gw_pid), busy_jiffies(), kworker_cpu(), softirq_seconds()
        w0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        n0, g0, x0 = tree_cpu(backend_pid), tcp_segments(gw_pid), context_switches()
        rate, errs, total = wrk_tls(topo, hosts, seconds, connections)
        cpu += proc_cpu(gw_pid) - c0
        kw += kworker_cpu() - k0
        sirq += softirq_seconds() - s0
        jiffies += busy_jiffies() - j0
        w1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        client += w1.ru_utime + w1.ru_stime - w0.ru_utime - w0.ru_stime
        backend += tree_cpu(backend_pid) - n0
        segs += tcp_segments(gw_pid) - g0
        ctxt += context_switches() - x0
        rates.append(rate)
        conns += total
        errors += errs
    n = max(conns, 1)
    return Result(mode, round(statistics.median(rates)), tuple(round(r) for r in rates), errors,
                  round(cpu / n * 1e6, 1), round(kw / n * 1e6, 1), round(sirq / n * 1e6, 1),
                  round(jiffies / CLK / n * 1e6, 1), round(bg / CLK / repeat, 2),
                  round(client / n * 1e6, 1), round(backend / n * 1e6, 1),
                  round(segs / n, 1), round(ctxt / n, 1), conns)


def run_mode(mode: str, seconds: int, repeat: int, connections: int, tmp: Path,
             profile: str | None) -> Result:
    with Topology(backends=1) as topo:
        hosts = tmp / f"hosts-{topo.tag}"
        hosts.write_text(f"{GW_CLIENT_ADDR} {SNI}\n127.0.0.1 localhost\n")
        backend = start_backend(topo, tmp)
        pin_dir = f"/sys/fs/bpf/kgw-bench-{topo.tag}"
        gw: subprocess.Popen | None = None
        try:
            gw = (start_agent(topo, tmp, pin_dir, profile) if mode == "kgw-tlspass"
                  else start_agent(topo, tmp, pin_dir, profile, "userspace")
                  if mode == "kgw-tlspass-copy"
                  else start_agent(topo, tmp, pin_dir, profile, env={"KGW_NO_EXTENSIONS": "1"})
                  if mode == "kgw-tlspass-splice"
                  else start_haproxy(topo, tmp, 1) if mode == "haproxy-sni-1t"
                  else start_haproxy(topo, tmp))
            return measure(topo, hosts, mode, gw.pid, backend.pid, seconds, repeat,
                           connections)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            return Result(mode, note=f"failed: {e}")
        finally:
            stop(gw)
            stop(backend)
            if mode.startswith("kgw-"):
                loader.remove_everything(pin_dir, [])
                loader.Loader(pin_dir).remove_pins()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.l4.tlspass")
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1,
                    help="run the modes in turn this many times (each --repeat runs), so "
                         "drift of the machine falls on every mode alike")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--modes", default=",".join(MODES[:2]))
    ap.add_argument("--profile", default=None,
                    help="run the kgw agent under cProfile, writing this file")
    ns = ap.parse_args(argv)
    wanted = [m.strip() for m in ns.modes.split(",") if m.strip()]
    if set(wanted) - set(MODES):
        ap.error(f"modes: {', '.join(MODES)}")
    reason = loader.unavailable_reason()
    missing = [t for t in ("wrk", "haproxy", "nginx", "openssl") if shutil.which(t) is None]
    if reason or missing:
        print(f"bench.l4.tlspass: cannot run: {reason or 'missing ' + ', '.join(missing)}",
              file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="kgw-bench-tls-"))
    print(f"load average at the start: {os.getloadavg()[0]:.2f}")
    rounds: list[list[Result]] = []
    for i in range(ns.rounds):
        rounds.append([run_mode(m, ns.seconds, ns.repeat, ns.connections, tmp, ns.profile)
                       for m in wanted])
        for r in rounds[-1]:
            print(f"round {i + 1} {r.mode}: {r.conn_rate:.0f} conns/s, CPU µs/conn gw "
                  f"{r.gw_cpu_us} client {r.client_cpu_us} backend {r.backend_cpu_us} "
                  f"machine {r.machine_cpu_us}, {r.gw_segs} segments, {r.ctxt} switches "
                  f"{r.note}", flush=True)
    results = [merge([rnd[i] for rnd in rounds]) for i in range(len(wanted))]
    print("| mode | conns/s (median) | runs | errors | gw process CPU µs/conn "
          "| kworker CPU µs/conn | softirq µs/conn | client CPU µs/conn "
          "| backend CPU µs/conn | machine CPU µs/conn | gw TCP segments/conn "
          "| context switches/conn | background CPUs | note |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        print(f"| {r.mode} | {r.conn_rate:.0f} | {', '.join(map(str, r.rates))} | {r.errors} "
              f"| {r.gw_cpu_us} | {r.kworker_cpu_us} | {r.softirq_us} | {r.client_cpu_us} "
              f"| {r.backend_cpu_us} | {r.machine_cpu_us} | {r.gw_segs} | {r.ctxt} "
              f"| {r.bg_cpus} | {r.note} |")
    by = {r.mode: r for r in results}
    if {"kgw-tlspass", "haproxy-sni"} <= set(by) and by["haproxy-sni"].conn_rate:
        k, h = by["kgw-tlspass"], by["haproxy-sni"]
        ki, hi = wanted.index("kgw-tlspass"), wanted.index("haproxy-sni")
        paired = [rnd[ki].conn_rate / rnd[hi].conn_rate for rnd in rounds
                  if rnd[hi].conn_rate and rnd[ki].conn_rate]
        print(f"\nkgw/haproxy connection rate: {k.conn_rate / h.conn_rate:.2f} (medians); "
              f"per round: {', '.join(f'{x:.2f}' for x in paired)}"
              + (f", median {statistics.median(paired):.2f}" if len(paired) > 1 else "")
              + f"; gateway CPU per connection: {(k.gw_cpu_us or 0) / (h.gw_cpu_us or 1):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
