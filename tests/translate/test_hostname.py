"""Hostname intersection, per the Gateway API spec's examples (table)."""

import pytest

from controller.translate import hostname as hn

INTERSECT = [
    # listener, route, result
    (None, "foo.example.com", "foo.example.com"),
    (None, "*.example.com", "*.example.com"),
    ("foo.example.com", "foo.example.com", "foo.example.com"),
    ("foo.example.com", "bar.example.com", None),
    ("foo.example.com", "*.example.com", "foo.example.com"),
    ("foo.bar.example.com", "*.example.com", "foo.bar.example.com"),
    ("example.com", "*.example.com", None),  # a wildcard needs at least one more label
    ("*.example.com", "foo.example.com", "foo.example.com"),
    ("*.example.com", "foo.bar.example.com", "foo.bar.example.com"),
    ("*.example.com", "example.com", None),
    ("*.example.com", "*.example.com", "*.example.com"),
    ("*.example.com", "*.foo.example.com", "*.foo.example.com"),
    ("*.foo.example.com", "*.example.com", "*.foo.example.com"),
    ("*.example.com", "*.example.org", None),
    ("*.example.com", "fooexample.com", None),
    ("*.com", "*.example.com", "*.example.com"),
]


@pytest.mark.parametrize("listener,route,want", INTERSECT)
def test_intersect(listener, route, want):
    assert hn.intersect(listener, route) == want


@pytest.mark.parametrize("listener,routes,want", [
    (None, [], ["*"]),
    ("*.example.com", [], ["*.example.com"]),
    ("foo.example.com", ["*.example.com", "foo.example.com"], ["foo.example.com"]),
    ("*.example.com", ["a.example.com", "b.example.org"], ["a.example.com"]),
    ("*.example.com", ["b.example.org"], []),
])
def test_intersect_all(listener, routes, want):
    assert hn.intersect_all(listener, routes) == want


def test_specificity_orders_exact_then_longer_wildcard_then_any():
    order = sorted([None, "*.com", "*.example.com", "a.example.com"], key=hn.specificity,
                   reverse=True)
    assert order == ["a.example.com", "*.example.com", "*.com", None]
