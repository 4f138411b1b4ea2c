"""``kgw status``'s list of backend endpoints out of service (controller.statusview)."""

from __future__ import annotations

from controller.statusview import endpoint_health_text, l4_health_rows, l4_health_text


def test_status_text_lists_endpoints_out_of_service():
    health = {"active": [
        {"backend": "ns/a:80", "endpoint": "10.0.0.1:80", "type": "HTTP", "healthy": False,
         "last_error": "status 503"},
        {"backend": "ns/a:80", "endpoint": "10.0.0.2:80", "type": "HTTP", "healthy": True}],
        "workers": [{"worker": 1, "backends": {"ns/b:80": [
            {"address": "10.0.1.1:80", "ejected": True, "ejections": 2},
            {"address": "10.0.1.2:80", "ejected": False, "ejections": 0}]}}]}
    text = endpoint_health_text(health)
    assert "ns/a:80 10.0.0.1:80: fails its HTTP health check (status 503)" in text
    assert "ns/b:80 10.0.1.1:80: ejected by outlier detection in worker 1 (ejection 2)" in text
    assert "10.0.0.2" not in text and "10.0.1.2" not in text
    assert endpoint_health_text({"active": [], "workers": []}) == ""


def test_status_lists_l4_endpoint_health_per_frontend_and_route():
    """From the admin API's /l4 page: every endpoint of a group with a health check, of a
    TCP frontend and of a TLS port's route, up / down / unknown and since when."""
    check = {"type": "TCP", "interval": 1.0}
    page = {
        "config": {
            "frontends": [{"name": "ns/gw/db", "address": "0.0.0.0", "port": 5000,
                           "protocol": "TCP", "route": "ns/db", "backends": [
                               {"name": "ns/db:7000", "health_check": check, "endpoints": [
                                   {"address": "10.0.0.1", "port": 9300},
                                   {"address": "10.0.0.2", "port": 9300}]},
                               {"name": "ns/other:7000", "endpoints": [
                                   {"address": "10.0.0.9", "port": 9300}]}]}],
            "tls_passthrough": [{"name": "ns/gw/tls", "address": "0.0.0.0", "port": 8443,
                                 "routes": [{"name": "ns/app", "gateway": "ns/gw",
                                             "listener": "tls", "backends": [
                                     {"name": "ns/app:443", "health_check": check,
                                      "endpoints": [{"address": "10.0.1.1", "port": 443}]}]}]}]},
        "health": [
            {"backend": "ns/db:7000", "endpoint": "10.0.0.1:9300", "health": "healthy",
             "since": "2026-12-07T12:00:00+00:00", "last_error": ""},
            {"backend": "ns/db:7000", "endpoint": "10.0.0.2:9300", "health": "unhealthy",
             "since": "2026-12-07T12:01:00+00:00", "last_error": "connection refused"}]}
    rows = l4_health_rows(page)
    assert [(r["frontend"], r["route"], r["endpoint"], r["health"], r["since"]) for r in rows] == [
        ("ns/gw/db (0.0.0.0:5000/TCP)", "ns/db", "10.0.0.1:9300", "up",
         "2026-12-07T12:00:00+00:00"),
        ("ns/gw/db (0.0.0.0:5000/TCP)", "ns/db", "10.0.0.2:9300", "down",
         "2026-12-07T12:01:00+00:00"),
        ("ns/gw/tls (0.0.0.0:8443/TLS)", "ns/app", "10.0.1.1:443", "unknown", "-")]
    text = l4_health_text(rows)
    assert "L4 backend endpoints (active health checks):" in text
    [down] = [line for line in text.splitlines() if "10.0.0.2:9300" in line]
    assert "down" in down and "connection refused" in down
    assert "10.0.0.9" not in text  # its group has no check
    assert l4_health_text(l4_health_rows({"mode": "tc", "health": []})) == ""
