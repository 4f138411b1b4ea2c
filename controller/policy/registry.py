"""The sections of each policy kind: the one list to extend.

A new feature is a module exporting a ``SECTION`` (controller.policy.section) and one
line here. The order is the order of the fields in the CRD and in ``kgw translate``.
"""

from __future__ import annotations

from controller.policy import extauth, headertimeout, requestlimits
from controller.policy.section import Section

SECTIONS: dict[str, tuple[Section, ...]] = {
    "TrafficPolicy": (
        requestlimits.SECTION,
        headertimeout.SECTION,
    ),
    "SecurityPolicy": (
        extauth.SECTION,
    ),
}
