"""TLS passthrough long streams: one connection's throughput and the gateway's CPU per GB,
through the passthrough listener of bench.l4.tlspass (same topology, agent and routes).

bench.l4.run's iperf3 cannot go through a passthrough listener (the listener routes by
the ClientHello's SNI), so the client here sends a ClientHello for the bench's SNI and
then streams zeros for --seconds; the backend reads and discards. The gateway never
looks past the hello, so the stream is what a long TLS transfer is to it. Modes:
kgw-tlspass (the pair relay copies the first HANDOVER_BYTES, then the splice),
kgw-tlspass-splice (KGW_NO_EXTENSIONS=1: spliced from the first byte), haproxy-sni.

  sudo .venv/bin/python -m bench.l4.tlsstream [--seconds 5] [--repeat 3] [--modes a,b]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.l4.run import proc_cpu, stop  # noqa: E402
from bench.l4.tlspass import BACKEND, PORT, SNI, start_agent, start_haproxy  # noqa: E402
from kgw_l4 import loader  # noqa: E402
from vm_tests.topology import GW_CLIENT_ADDR, Topology  # noqa: E402

MODES = ("kgw-tlspass", "kgw-tlspass-splice", "haproxy-sni")
CHUNK = 1 << 20


def sink(addr: str, port: int) -> None:
    """Accept connections one after another and discard what they send."""
    ls = socket.create_server((addr, port), reuse_port=True)
    print("ready", flush=True)
    buf = bytearray(CHUNK)
    while True:
        c, _ = ls.accept()
        with c:
            while c.recv_into(buf):
                pass


def send(addr: str, port: int, seconds: float) -> None:
    """Send the bench SNI's ClientHello, then zeros for ``seconds``; print the bytes."""
    from tests.l4.tlshelp import client_hello

    data = memoryview(bytes(CHUNK))
    s = socket.create_connection((addr, port), timeout=10)
    s.sendall(client_hello(SNI))
    sent, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        s.sendall(data)
        sent += CHUNK
    s.shutdown(socket.SHUT_WR)
    s.recv(1)  # until the gateway passes on the backend's close
    took = time.monotonic() - start
    print(json.dumps({"bytes": sent, "seconds": took}), flush=True)


def run_mode(mode: str, seconds: float, repeat: int, tmp: Path) -> dict:
    with Topology(backends=1) as topo:
        backend = topo.popen(topo.backend, sys.executable, "-m", "bench.l4.tlsstream", "sink",
                             BACKEND, "443", stdout=subprocess.PIPE, text=True, cwd=str(ROOT))
        pin_dir = f"/sys/fs/bpf/kgw-bench-{topo.tag}"
        gw: subprocess.Popen | None = None
        try:
            assert backend.stdout is not None and backend.stdout.readline().strip() == "ready"
            gw = (start_agent(topo, tmp, pin_dir, None) if mode == "kgw-tlspass"
                  else start_agent(topo, tmp, pin_dir, None, env={"KGW_NO_EXTENSIONS": "1"})
                  if mode == "kgw-tlspass-splice" else start_haproxy(topo, tmp))
            rates, cpu_gb = [], []
            for _ in range(repeat):
                cpu0 = proc_cpu(gw.pid)
                r = topo.run(topo.client, sys.executable, "-m", "bench.l4.tlsstream", "send",
                             GW_CLIENT_ADDR, str(PORT), str(seconds), timeout=seconds + 60)
                out = json.loads(r.stdout)
                gb = out["bytes"] / 1e9
                rates.append(round(out["bytes"] * 8 / out["seconds"] / 1e9, 2))
                cpu_gb.append(round((proc_cpu(gw.pid) - cpu0) / gb, 4))
            return {"mode": mode, "gbit": statistics.median(rates), "runs": rates,
                    "cpu_s_per_gb": statistics.median(cpu_gb), "cpu_runs": cpu_gb}
        finally:
            stop(gw)
            stop(backend)
            if mode.startswith("kgw-"):
                loader.remove_everything(pin_dir, [])
                loader.Loader(pin_dir).remove_pins()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sink"]:
        sink(argv[1], int(argv[2]))
        return 0
    if argv[:1] == ["send"]:
        send(argv[1], int(argv[2]), float(argv[3]))
        return 0
    ap = argparse.ArgumentParser(prog="bench.l4.tlsstream")
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--modes", default=",".join(MODES))
    ns = ap.parse_args(argv)
    wanted = [m.strip() for m in ns.modes.split(",") if m.strip()]
    if set(wanted) - set(MODES):
        ap.error(f"modes: {', '.join(MODES)}")
    tmp = Path(tempfile.mkdtemp(prefix="kgw-bench-tlsstream-"))
    print("| mode | Gbit/s (median) | runs | gw process CPU s/GB (median) | runs |")
    print("|---|---:|---|---:|---|")
    for m in wanted:
        r = run_mode(m, ns.seconds, ns.repeat, tmp)
        print(f"| {m} | {r['gbit']} | {', '.join(map(str, r['runs']))} | {r['cpu_s_per_gb']} "
              f"| {', '.join(map(str, r['cpu_runs']))} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
