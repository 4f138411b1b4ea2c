"""Session persistence tokens (kgw_l7.session), without sockets."""

from __future__ import annotations

import base64

import pytest

from kgw_l7 import session as s
from kgw_l7.config import Backend, Endpoint, Rule, SessionPersistence
from kgw_l7.router import CompiledBackend, CompiledRule

KEY = b"k" * 32
T0 = 1_800_000_000


def rule(sp: SessionPersistence, *backends: Backend, key: bytes = KEY) -> CompiledRule:
    return CompiledRule(Rule("ns/r/0", "ns/r", "gw", backends=backends, session=sp),
                        CompiledBackend, key)


def two_backends() -> tuple[Backend, Backend]:
    return (Backend("ns/a:80", endpoints=(Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80))),
            Backend("ns/b:80", endpoints=(Endpoint("10.0.1.1", 80),)))


def cookie(field: tuple[bytes, bytes]) -> tuple[tuple[bytes, bytes], ...]:
    """The request Cookie field a browser sends back for a Set-Cookie ``field``."""
    assert field[0] == b"set-cookie"
    return ((b"cookie", b"other=1; " + field[1].split(b";")[0]),)


def test_a_token_round_trips_and_names_its_endpoint():
    r = rule(SessionPersistence(), *two_backends())
    pol = r.session
    b = r.backends[1]
    field = pol.response_header(None, b, ("10.0.1.1", 80), b"/app", T0)
    assert field[1].startswith(b"kgw-session=")
    assert field[1].endswith(b"; Path=/app; HttpOnly")  # Session lifetime: no Max-Age
    found = pol.find(cookie(field), T0 + 5)
    assert found.backend is b and found.endpoint == ("10.0.1.1", 80)
    assert found.created == T0
    # unchanged and no idle timeout: nothing to send again
    assert pol.response_header(found, b, ("10.0.1.1", 80), b"/app", T0 + 5) is None
    # served elsewhere (its endpoint failed, a retry went on): a new session there
    other = pol.response_header(found, r.backends[0], ("10.0.0.2", 80), b"/app", T0 + 6)
    moved = pol.find(cookie(other), T0 + 6)
    assert moved.endpoint == ("10.0.0.2", 80) and moved.created == T0 + 6


def test_the_token_does_not_show_the_address():
    r = rule(SessionPersistence(), *two_backends())
    field = r.session.response_header(None, r.backends[0], ("10.0.0.1", 80), b"/", T0)
    token = field[1].split(b"=", 1)[1].split(b";")[0]
    assert len(token) == s.TOKEN_SIZE
    raw = base64.urlsafe_b64decode(token + b"=")
    assert bytes([10, 0, 0, 1]) not in raw and b"10.0.0.1" not in raw


def forged(token: bytes, at: int, byte: int) -> bytes:
    raw = bytearray(base64.urlsafe_b64decode(token + b"="))
    raw[at] ^= byte
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=")


@pytest.mark.parametrize("change", [
    "created moved", "last use moved", "endpoint id changed", "mac changed", "truncated",
    "too long", "not base64", "empty", "other key", "bad version"])
def test_tampered_or_foreign_tokens_are_refused(change):
    sp = SessionPersistence(type="Header", name="X-Sess", idle_timeout=60)
    r = rule(sp, *two_backends())
    name, token = r.session.response_header(None, r.backends[0], ("10.0.0.1", 80), b"/", T0)
    assert name == b"x-sess"
    assert r.session.find(((b"x-sess", token),), T0 + 1) is not None
    bad = {
        "created moved": lambda: forged(token, 2, 1),
        "last use moved": lambda: forged(token, 8, 1),
        "endpoint id changed": lambda: forged(token, 10, 0x80),
        "mac changed": lambda: forged(token, 30, 1),
        "truncated": lambda: token[:-1],
        "too long": lambda: token + b"A",
        "not base64": lambda: b"!" * s.TOKEN_SIZE,
        "empty": lambda: b"",
        "other key": lambda: (o := rule(sp, *two_backends(), key=b"x" * 32)).session
        .response_header(None, o.backends[0], ("10.0.0.1", 80), b"/", T0)[1],
        "bad version": lambda: s.encode(KEY, T0, T0, r.session._ids[
            (r.backends[0], ("10.0.0.1", 80))]).replace(b"AW", b"Ag", 1),
    }[change]()
    assert r.session.find(((b"x-sess", bad),), T0 + 1) is None


def test_a_token_of_another_rule_or_a_gone_endpoint_finds_nothing():
    a, b = two_backends()
    r1 = rule(SessionPersistence(), a, b)
    field = r1.session.response_header(None, r1.backends[0], ("10.0.0.2", 80), b"/", T0)
    other = CompiledRule(Rule("ns/r/1", "ns/r", "gw", backends=(a, b),
                              session=SessionPersistence()), CompiledBackend, KEY)
    assert other.session.find(cookie(field), T0) is None  # same key, same backends
    shrunk = rule(SessionPersistence(), Backend(a.name, endpoints=a.endpoints[:1]), b)
    assert shrunk.session.find(cookie(field), T0) is None  # 10.0.0.2 went away
    kept = rule(SessionPersistence(), Backend(a.name, endpoints=a.endpoints + (
        Endpoint("10.0.0.3", 80),)), b)
    assert kept.session.find(cookie(field), T0).endpoint == ("10.0.0.2", 80)


def test_absolute_timeout_counts_from_creation():
    r = rule(SessionPersistence(absolute_timeout=100), *two_backends())
    ep = ("10.0.0.1", 80)
    f = r.session.response_header(None, r.backends[0], ep, b"/", T0)
    assert r.session.find(cookie(f), T0 + 99) is not None
    assert r.session.find(cookie(f), T0 + 100) is None


def test_idle_timeout_counts_from_last_use_and_each_use_renews():
    r = rule(SessionPersistence(idle_timeout=10, absolute_timeout=25), *two_backends())
    pol, b, ep = r.session, r.backends[0], ("10.0.0.1", 80)
    f = pol.response_header(None, b, ep, b"/", T0)
    assert pol.find(cookie(f), T0 + 10) is None  # idle too long
    found = pol.find(cookie(f), T0 + 9)
    assert pol.response_header(found, b, ep, b"/", T0) is None  # same second: no renewal
    renewed = pol.response_header(found, b, ep, b"/", T0 + 9)
    again = pol.find(cookie(renewed), T0 + 18)
    assert again is not None and again.created == T0 and again.last == T0 + 9
    renewed = pol.response_header(again, b, ep, b"/", T0 + 18)
    assert pol.find(cookie(renewed), T0 + 24) is not None
    assert pol.find(cookie(renewed), T0 + 25) is None  # absolute still counts from T0


def test_permanent_cookie_has_what_is_left_of_the_absolute_timeout():
    r = rule(SessionPersistence(name="sid", absolute_timeout=3600, idle_timeout=600,
                                permanent=True), *two_backends())
    pol, b, ep = r.session, r.backends[0], ("10.0.0.1", 80)
    f = pol.response_header(None, b, ep, b"/", T0)
    assert f[1].endswith(b"; Max-Age=3600")
    f = pol.response_header(pol.find(cookie(f), T0 + 100), b, ep, b"/", T0 + 100)
    assert f[1].startswith(b"sid=") and f[1].endswith(b"; Max-Age=3500")


@pytest.mark.parametrize("value,expect", [
    (b"kgw-session=T", b"T"), (b"a=1; kgw-session=T; b=2", b"T"), (b"a=1;kgw-session=T", b"T"),
    (b'kgw-session="T"', b"T"), (b"xkgw-session=T", None), (b"kgw-session", None),
    (b"a=kgw-session=T", None)])
def test_cookie_value(value, expect):
    assert s.cookie_value(((b"host", b"x"), (b"cookie", value)), b"kgw-session") == expect


def test_cookie_value_across_split_fields():
    headers = ((b"cookie", b"a=1"), (b"cookie", b"kgw-session=T"))
    assert s.cookie_value(headers, b"kgw-session") == b"T"


def test_a_header_session_reads_its_field_case_insensitively():
    r = rule(SessionPersistence(type="Header", name="Session-ID"), *two_backends())
    name, token = r.session.response_header(None, r.backends[1], ("10.0.1.1", 80), b"/", T0)
    assert name == b"session-id"
    assert r.session.find(((b"session-id", token),), T0).endpoint == ("10.0.1.1", 80)
    assert r.session.find(((b"cookie", b"Session-ID=" + token),), T0) is None


def test_the_key_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(s.KEY_ENV, "shared secret")
    assert s.key_from_env() == s.key_from_env()
    monkeypatch.delenv(s.KEY_ENV)
    assert s.key_from_env() != s.key_from_env()


def test_an_endpoint_the_balancer_does_not_use_now_is_no_session():
    """Ejected by outlier detection or failing its health check (CompiledBackend.usable
    false): the request is balanced anew (and given a new token), as if it were gone."""

    class Backend_:
        name = "ns/a:80"
        endpoints = (("10.0.0.1", 80), ("10.0.0.2", 80))
        down: set[tuple[str, int]] = set()

        def usable(self, endpoint: tuple[str, int]) -> bool:
            return endpoint not in self.down

    b = Backend_()
    pol = s.SessionPolicy(SessionPersistence(), "ns/r/0", (b,), KEY)
    field = pol.response_header(None, b, ("10.0.0.2", 80), b"/", T0)
    assert pol.find(cookie(field), T0).endpoint == ("10.0.0.2", 80)
    b.down = {("10.0.0.2", 80)}
    assert pol.find(cookie(field), T0) is None
    b.down = set()
    assert pol.find(cookie(field), T0) is not None  # back: the token is good again
