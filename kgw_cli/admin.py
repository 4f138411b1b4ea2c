"""A running gateway's admin API, as the CLIs reach it."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

#: Where ``kgw run`` and ``kgw agent`` serve the admin API unless told otherwise
#: (``--admin-address``), and so where ``kgw status`` and ``kgw-inspect`` look for it.
ADMIN_ADDRESS = "127.0.0.1:9095"


def get_json(url: str, timeout: float) -> Any:
    """GET ``url`` and decode its JSON body (raises OSError, urllib.error.URLError or
    ValueError)."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 -- an admin URL
        return json.load(resp)
