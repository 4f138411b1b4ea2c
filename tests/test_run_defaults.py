"""README's own command, ``kgw run -c examples/``, with every other flag at its default.

It runs in a private host (tests/netns.py): admin API on 127.0.0.1:9095, the Gateway's
port 8080, the access log on stdout, one worker per CPU, ``--l4-mode auto``, the default
pin directory. Other tests pass flags to isolate themselves; this one is what a new user
gets.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.helpers import eventually, http_get
from tests.netns import Host, kgw_argv

pytestmark = pytest.mark.slow

BACKENDS = (("store-v1", 9101), ("store-v2", 9102), ("search", 9103))


def test_readme_command_serves_examples(host: Host) -> None:
    for name, port in BACKENDS:
        host.popen(kgw_argv("echo", "--port", str(port), "--pod", f"{name}-x", "--namespace",
                            "demo"),
                   stdout=subprocess.DEVNULL)
    kgw = host.popen(kgw_argv("run", "-c", "examples/"), stdout=subprocess.PIPE,
                     stderr=subprocess.DEVNULL)
    eventually(lambda: host.call(http_get, "http://127.0.0.1:9095/readyz")[0] == 200, timeout=30)

    def search() -> dict:
        import urllib.request

        req = urllib.request.Request("http://127.0.0.1:8080/search",
                                     headers={"Host": "shop.example.com"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    echoed = eventually(lambda: host.call(search), timeout=10)
    assert echoed["path"] == "/api/v1/search"
    assert echoed["pod"] == "search-x"
    kgw.terminate()
    out, _ = kgw.communicate(timeout=20)
    # the default access log is stdout, one JSON line per request
    lines = [json.loads(line) for line in out.splitlines() if line.startswith(b"{")]
    assert any(line["path"] == "/search" and line["response_code"] == 200
               for line in lines), out[-2000:]
