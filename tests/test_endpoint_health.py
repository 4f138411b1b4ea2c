"""``kgw status``'s list of backend endpoints out of service (controller.statusview)."""

from __future__ import annotations

from controller.statusview import endpoint_health_text


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
