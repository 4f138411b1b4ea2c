"""`make demo`: three echo backends and kgw serving examples/, with commands to try.

    .venv/bin/python examples/demo.py           # runs until Ctrl-C
    .venv/bin/python examples/demo.py --check   # sends the sample requests, exits 0 if all behave
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path

HERE = Path(__file__).resolve().parent
KGW = [sys.executable, "-m", "controller.cli"]
BACKENDS = (("store-v1", 9101), ("store-v2", 9102), ("search", 9103))
ADMIN = "127.0.0.1:9095"
GATEWAY = "http://127.0.0.1:8080"

TRY = f"""
kgw is serving examples/ on {GATEWAY}. Try:

  # path routing: /search is rewritten to /api/v1/search on the search backend
  curl -s -H 'Host: shop.example.com' {GATEWAY}/search | python3 -m json.tool

  # header routing + header rewriting: x-canary: always goes to store-v2 with x-routed-by set
  curl -s -H 'Host: shop.example.com' -H 'x-canary: always' {GATEWAY}/store | python3 -m json.tool

  # canary split: ~90% store-v1, ~10% store-v2
  for i in $(seq 100); do curl -s -H 'Host: shop.example.com' {GATEWAY}/store \\
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["pod"].rsplit("-",2)[0])'; done | sort | uniq -c

  # a redirect, and a host nobody serves (404)
  curl -si -H 'Host: shop.example.com' {GATEWAY}/old-search/x | head -3
  curl -si {GATEWAY}/ | head -1

  # what the gateway thinks
  .venv/bin/kgw status
  curl -s http://{ADMIN}/metrics | grep kgw_

Edit a file under examples/ and the change is live within a fraction of a second.
Ctrl-C stops everything.
"""  # noqa: E501 (data)


def request(path: str, headers: dict[str, str]) -> tuple[int, Message, bytes]:
    req = urllib.request.Request(GATEWAY + path, headers=headers)
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=5) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None


def check() -> list[str]:
    """The sample requests, with what each must show. Returns the failures."""
    host = {"Host": "shop.example.com"}
    failures = []
    code, _, body = request("/search", host)
    if code != 200 or json.loads(body)["path"] != "/api/v1/search":
        failures.append(f"/search: {code} {body[:200]!r}")
    code, _, body = request("/store", {**host, "x-canary": "always"})
    echoed = json.loads(body) if code == 200 else {}
    if not echoed.get("pod", "").startswith("store-v2") or echoed["headers"].get("X-Routed-By") != [
        "kgw-canary-header"]:
        failures.append(f"canary header: {code} {body[:300]!r}")
    pods = [json.loads(request("/store", host)[2])["pod"].split("-")[1] for _ in range(200)]
    share = pods.count("v2") / len(pods)
    if not 0.02 <= share <= 0.2:
        failures.append(f"canary split: v2 got {share:.0%}, expected about 10%")
    code, headers, _ = request("/old-search/x", host)
    if code != 301 or not headers.get("Location", "").endswith("/search/x"):
        failures.append(f"redirect: {code} {headers.get('Location')}")
    if request("/", {})[0] != 404:
        failures.append("unknown host: expected 404")
    return failures


def wait_ready(timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{ADMIN}/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise SystemExit("kgw did not become ready in time; see the log above")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="send the sample requests and exit")
    args = parser.parse_args()
    procs = []
    try:
        for name, port in BACKENDS:
            procs.append(subprocess.Popen(
                KGW + ["echo", "--address", "127.0.0.1", "--port", str(port),
                       "--pod", f"{name}-7d4b9c8f6-{port % 100:02d}x5k", "--namespace", "demo"],
                stdout=subprocess.DEVNULL))
        quiet = ["--access-log", "off"] if args.check else []
        procs.append(subprocess.Popen(
            KGW + ["run", "-c", str(HERE), "--admin-address", ADMIN, "--workers", "1"] + quiet))
        wait_ready()
        if args.check:
            failures = check()
            for f in failures:
                print("FAIL", f)
            print("demo check:", "ok" if not failures else f"{len(failures)} failed")
            return 1 if failures else 0
        print(TRY)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        print("a process exited; stopping the demo")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    os.chdir(HERE.parent)
    raise SystemExit(main())
