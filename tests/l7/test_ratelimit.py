"""The node's token buckets (kgw_l7.ratelimit): GCRA's arithmetic, the table's slots,
and the point of it all: processes sharing one table share one limit, exactly (compiled:
compare-and-swap; interpreted: a record lock)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import kgw_l7
from kgw_l7.auth import claim_key
from kgw_l7.config import LocalRateLimit
from kgw_l7.ratelimit import LocalLimit, SharedBuckets, client_ip
from kgw_l7.ratetable import PROBES, create_table_fd

ROOT = Path(__file__).resolve().parents[2]


def test_burst_then_one_per_interval() -> None:
    t = SharedBuckets()
    h = t.key_hash(b"k")
    emission = 10_000_000  # 10 s per token: nothing refills during the test
    got = [t.take(h, emission, emission * 4) for _ in range(7)]
    assert got[:5] == [4, 3, 2, 1, 0]
    assert all(-emission <= w < 0 for w in got[5:]), got  # refused: the wait until a token


def test_keys_are_separate_buckets() -> None:
    t = SharedBuckets()
    a, b = t.key_hash(b"a"), t.key_hash(b"b")
    assert t.take(a, 10_000_000, 0) == 0
    assert t.take(a, 10_000_000, 0) < 0
    assert t.take(b, 10_000_000, 0) == 0


def test_refill_after_the_emission_interval() -> None:
    t = SharedBuckets()
    h = t.key_hash(b"k")
    assert t.take(h, 50_000, 0) == 0
    wait = -t.take(h, 50_000, 0)
    assert 0 < wait <= 50_000
    time.sleep(wait / 1e6 + 0.01)
    assert t.take(h, 50_000, 0) == 0


def test_expired_buckets_free_their_slot_and_a_full_neighbourhood_lets_through() -> None:
    fd = create_table_fd(PROBES)  # the smallest table: one neighbourhood
    try:
        t = SharedBuckets(fd)
        keys = [t.key_hash(b"%d" % i) for i in range(PROBES + 1)]
        for h in keys[:PROBES]:
            assert t.take(h, 60_000_000, 0) == 0  # PROBES live buckets
        assert t.take(keys[PROBES], 60_000_000, 0) == 0 and t.full == 1  # no slot: let through
        for h in keys[:PROBES]:
            assert t.take(h, 1, 0) < 0  # still refused (60 s to go): their slots hold
        t2 = SharedBuckets(fd)
        t2.take(keys[0], 1, 0)
    finally:
        os.close(fd)
    # Buckets that expire (full again) give their slot to the next key.
    t = SharedBuckets(create_table_fd(PROBES))
    for i in range(PROBES):
        t.take(t.key_hash(b"%d" % i), 1000, 0)
    time.sleep(0.01)
    assert t.take(t.key_hash(b"new"), 60_000_000, 0) == 0 and t.full == 0


def test_client_ip_trusts_only_the_configured_hops() -> None:
    xff = ((b"x-forwarded-for", b"1.1.1.1, 2.2.2.2"), (b"x-forwarded-for", b"3.3.3.3"))
    assert client_ip(xff, b"9.9.9.9", 0) == b"9.9.9.9"
    assert client_ip(xff, b"9.9.9.9", 1) == b"3.3.3.3"
    assert client_ip(xff, b"9.9.9.9", 2) == b"2.2.2.2"
    assert client_ip(xff, b"9.9.9.9", 4) == b"9.9.9.9"  # fewer entries: not through them


def test_local_limit_keys_and_refusal_headers() -> None:
    by_header = LocalLimit(LocalRateLimit(1, 1, 60.0, key="header", header="X-Key", scope="s"))
    h = ((b"x-key", b"a"),)
    assert by_header.take(h, b"1.1.1.1") == 0
    assert by_header.take(h, b"2.2.2.2") < 0  # same header value, another client: one bucket
    assert by_header.take(((b"x-key", b"b"),), b"1.1.1.1") == 0
    assert by_header.take((), b"1.1.1.1") == 0 and by_header.take((), b"1.1.1.1") < 0
    per_ip = LocalLimit(LocalRateLimit(1, 1, 60.0, key="client_ip", scope="s2"))
    assert per_ip.take((), b"1.1.1.1") == 0 and per_ip.take((), b"2.2.2.2") == 0
    assert per_ip.take((), b"1.1.1.1") < 0
    fields = dict(per_ip.refusal_headers(1_500_000))
    assert fields[b"retry-after"] == b"2"
    assert fields[b"ratelimit-policy"] == b'"local";q=1;w=60'
    assert fields[b"ratelimit"] == b'"local";r=0;t=2'
    half = LocalLimit(LocalRateLimit(10, 5, 0.5, scope="s3"))
    assert half.policy_header == b'"local";q=10;w=1'


def test_claim_key_is_taken_after_auth_with_the_claims_value() -> None:
    by_claim = LocalLimit(LocalRateLimit(1, 1, 60.0, key="claim", claim="org.id", scope="c"))
    assert by_claim.after_auth and by_claim.claim == ["org", "id"]
    assert not LocalLimit(LocalRateLimit(1, 1, 60.0, key="header", header="x")).after_auth
    acme = claim_key({"sub": "a", "org": {"id": "acme"}}, by_claim.claim)
    assert acme == b"acme" and claim_key({"org": {"id": 7}}, by_claim.claim) == b"7"
    assert claim_key(None, by_claim.claim) == claim_key({"org": "flat"}, by_claim.claim) == b""
    assert by_claim.take_value(acme) == 0 and by_claim.take_value(acme) < 0
    assert by_claim.take_value(b"init") == 0
    assert by_claim.take_value(b"") == 0
    assert by_claim.take((), b"1.1.1.1") < 0  # (without claims: the no-claim bucket)


HAMMER = """
import sys, time
from kgw_l7.ratelimit import SharedBuckets
t = SharedBuckets(int(sys.argv[1]))
h = t.key_hash(b"shared")
start = float(sys.argv[2])
while time.time() < start:
    pass
allowed = 0
while time.time() < start + float(sys.argv[3]):
    if t.take(h, 2000, 2000 * 499) >= 0:
        allowed += 1
print(allowed, {compiled})
"""


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "interpreted"])
def test_processes_sharing_the_table_share_one_limit(compiled: bool) -> None:
    """Four processes take from one bucket (500 per second, burst 500) as fast as they can
    for 2 s: together they never get more than one would (give or take a token), and not
    much less (the burst covers a process's scheduling gaps on a loaded machine)."""
    if compiled and not kgw_l7.build_is_fresh():
        pytest.skip("no fresh compiled build (scripts/build_ext.py)")
    fd = create_table_fd()
    # (one hash secret, as the plane gives its workers: kgw_l7.plane._worker_env)
    env = {**os.environ, "KGW_NO_EXTENSIONS": "0" if compiled else "1",
           "PYTHONHASHSEED": "12345"}
    start, seconds = time.time() + 1.5, 2.0
    code = HAMMER.replace("{compiled}", "__import__('kgw_l7.ratelimit').ratelimit.__file__")
    try:
        procs = [subprocess.Popen([sys.executable, "-c", code, str(fd), str(start), str(seconds)],
                                  pass_fds=(fd,), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  text=True) for _ in range(4)]
        outs = [p.communicate(timeout=60)[0].split() for p in procs]
    finally:
        os.close(fd)
    assert all(p.returncode == 0 for p in procs)
    assert all(o[1].endswith(".py") != compiled for o in outs), outs  # the build asked for
    total = sum(int(o[0]) for o in outs)
    expected = 500 + seconds * 500
    assert expected * 0.9 <= total <= expected + 2, (total, [o[0] for o in outs])


KEYS = """
import sys
from kgw_l7.ratelimit import SharedBuckets
t = SharedBuckets(int(sys.argv[1]))
print(t.key_hash(b"10.0.0.1"), t.key_hash(b"10.0.0.1", t.scope_salt(b"limit")),
      __import__('kgw_l7.ratelimit').ratelimit.__file__)
"""


def test_a_key_has_one_bucket_in_every_worker_with_the_planes_hash_seed() -> None:
    """The bucket of a key is the same in every process given the plane's one
    PYTHONHASHSEED (compiled or interpreted: a worker restarted on a stale build), and
    another seed (another plane's secret) puts it elsewhere."""
    from kgw_l7.plane import _worker_env

    fd = create_table_fd()
    try:
        def keys(seed: str, compiled: bool) -> tuple[str, ...]:
            env = {**_worker_env("k", seed), "KGW_NO_EXTENSIONS": "0" if compiled else "1"}
            out = subprocess.run([sys.executable, "-c", KEYS, str(fd)], pass_fds=(fd,),
                                 cwd=ROOT, env=env, capture_output=True, text=True,
                                 timeout=60, check=True).stdout.split()
            return out[0], out[1]
        first = keys("4242", True)
        assert keys("4242", False) == first
        assert keys("4242", True) == first
        other = keys("4243", True)
        assert other[0] != first[0] and other[1] != first[1]
        assert first[0] != first[1]  # the limit's scope: its own buckets
    finally:
        os.close(fd)
