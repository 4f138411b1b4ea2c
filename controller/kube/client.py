"""How kgw reaches the API server: configuration, and raw JSON over the official client.

Objects stay the plain dicts the API server sends (``controller.objects``), so list,
watch and discovery go through the client's HTTP layer (``ApiClient.param_serialize`` +
``call_api``: its TLS, auth, token refresh and proxies) and keep the JSON as is, for
Gateway API kinds and core kinds alike. Typed models are used where the shape is fixed
and kgw builds the object itself (Leases).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.watch.watch import iter_resp_lines

log = logging.getLogger("kgw.kube")

#: (connect, read) seconds for ordinary requests. An API server slower than this is
#: treated as down for that request; the caller retries with backoff.
REQUEST_TIMEOUT = (5.0, 30.0)
POOL_SIZE = 32


def make_api_client(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """An ApiClient for ``kubeconfig`` if given, else in-cluster, else the default kubeconfig.

    In a pod the service account token is mounted and refreshed by the kubelet; the
    client re-reads it (``load_incluster_config(try_refresh_token=True)``).
    """
    cfg = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
    else:
        try:
            config.load_incluster_config(client_configuration=cfg)
        except ConfigException:
            config.load_kube_config(context=context, client_configuration=cfg)
    # One connection per watched kind stays open, plus requests of the status writer,
    # the Lease and Secret reads: more than urllib3's default pool of 10.
    cfg.connection_pool_maxsize = POOL_SIZE
    return client.ApiClient(cfg)


def open_request(api: client.ApiClient, method: str, path: str,
                 query: Sequence[tuple[str, Any]] = (), body: Any = None,
                 timeout: Any = REQUEST_TIMEOUT) -> Any:
    """Send one request; return the unread urllib3 response, or raise ApiException.

    Raises ``ApiException`` (status 0 for transport errors is the client's convention;
    urllib3 errors pass through) for anything but 2xx.
    """
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    method_, url, headers, body_, post = api.param_serialize(
        method, path, query_params=list(query) or None, header_params=headers, body=body,
        auth_settings=["BearerToken"])
    resp = api.call_api(method_, url, headers, body_, post, _request_timeout=timeout)
    if not 200 <= resp.status <= 299:
        resp.read()
        raise ApiException.from_response(http_resp=resp, body=None, data=None)
    return resp.response


def get_json(api: client.ApiClient, path: str, query: Sequence[tuple[str, Any]] = (),
             timeout: Any = REQUEST_TIMEOUT) -> Any:
    resp = open_request(api, "GET", path, query, timeout=timeout)
    try:
        return json.loads(resp.data)
    finally:
        resp.release_conn()


def lines(resp: Any) -> Iterator[str]:
    """The lines of a streaming (watch) response, split as the client's Watch does."""
    return iter_resp_lines(resp)


def status_code(exc: BaseException) -> int:
    return int(getattr(exc, "status", 0) or 0)


def describe(exc: BaseException) -> str:
    """One line for a log or /readyz: the API's own message when there is one."""
    if isinstance(exc, ApiException):
        body = getattr(exc, "body", None)
        try:
            message = json.loads(body).get("message") if body else None
        except (ValueError, AttributeError):
            message = None
        return f"HTTP {exc.status} {exc.reason or ''}".strip() + (f": {message}" if message else "")
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]
