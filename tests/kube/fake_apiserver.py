"""A small Kubernetes API server that speaks the real HTTP protocol, for the kube tests.

The real ``kubernetes`` client talks to it over loopback: discovery (/api, /apis,
/apis/GROUP, /apis/GROUP/VERSION), list with resourceVersion and limit/continue, watch
streams (chunked JSON lines) from a resourceVersion with bookmarks and ``410 Gone`` for
compacted versions (as an ERROR event, as the API server's watch cache does), label and
field selectors (a watch with a label selector sends DELETED/ADDED when an object leaves
or enters the selection), create/replace/merge-patch/delete with resourceVersion
preconditions (409), the status subresource, metadata.generation bumps on spec changes,
and Leases. Every request is recorded (verb, group, resource, subresource, namespace,
name) so tests can check RBAC against what the code really calls.

Test controls: ``create``/``update``/``delete`` (the same paths as HTTP clients),
``compact`` (older versions answer 410), ``drop_watches`` (cut streams mid-chunk),
``inject`` (a raw line into watch streams: malformed events), ``pause``/``resume``
(every request answers 503, as an overloaded or restarting API server).
"""

from __future__ import annotations

import base64
import copy
import datetime
import json
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from controller.objects import KINDS, STATUS_GROUPS

TOKEN = "kgw-test-token"


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    status: bool  # has a status subresource

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


def default_resources(versions: dict[str, str | None] | None = None) -> list[Resource]:
    """Every kind kgw reads at its newest version (``versions`` overrides; None: not served),
    and Leases."""
    versions = versions or {}
    out = []
    for k in KINDS.values():
        v = versions.get(k.kind, k.versions[0])
        if v is None:
            continue
        out.append(Resource(k.group, v, k.kind, k.plural, k.namespaced,
                            k.group in STATUS_GROUPS))
    out.append(Resource("coordination.k8s.io", "v1", "Lease", "leases", True, False))
    return out


@dataclass
class Request:
    method: str
    path: str
    verb: str  # get list watch create update patch delete; "" for discovery
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    user_agent: str = ""
    query: str = ""
    #: The response's status code (200 for a watch stream, whatever it then sends).
    code: int = 0


@dataclass
class _Entry:
    rv: int
    group: str
    plural: str
    type: str = ""
    obj: dict[str, Any] | None = None
    prev: dict[str, Any] | None = None
    raw: bytes | None = None  # injected line


@dataclass
class _Watcher:
    sock: socket.socket
    dropped: bool = False


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def _split_terms(selector: str) -> list[str]:
    terms, depth, cur = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        terms.append(cur.strip())
    return terms


def label_match(selector: str, labels: dict[str, str]) -> bool:
    for term in _split_terms(selector or ""):
        if m := re.fullmatch(r"([\w./-]+)\s+(in|notin)\s+\((.*)\)", term):
            values = {v.strip() for v in m.group(3).split(",")}
            inside = labels.get(m.group(1)) in values
            if inside != (m.group(2) == "in"):
                return False
        elif "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, v = re.split("==?", term, maxsplit=1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


def field_match(selector: str, obj: dict[str, Any]) -> bool:
    meta = obj.get("metadata") or {}
    for term in _split_terms(selector or ""):
        k, v = re.split("==?", term, maxsplit=1)
        path = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace", "")}
        if k.strip() not in path or path[k.strip()] != v.strip():
            return False
    return True


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def _spec(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


class FakeAPIServer:
    def __init__(self, resources: list[Resource] | None = None, bookmark_interval: float = 0.2,
                 token: str = TOKEN) -> None:
        self.resources = resources if resources is not None else default_resources()
        self.bookmark_interval = bookmark_interval
        self.token = token
        self.cond = threading.Condition()
        self.rv = 100
        self.compacted = 0
        self.objects: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = {}
        self.log: list[_Entry] = []
        self.requests: list[Request] = []
        self.paused = False
        #: Called with each Request once answered (not for watches): a test's way to race.
        self.after: list[Any] = []
        self._watchers: list[_Watcher] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> FakeAPIServer:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self.drop_watches()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def kubeconfig(self) -> str:
        return json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": self.token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        })

    # -- test controls --------------------------------------------------------------------

    def resource_for(self, api_version: str, kind: str) -> Resource:
        group = api_version.rpartition("/")[0]
        for r in self.resources:
            if r.group == group and r.kind == kind:
                return r
        raise KeyError(f"{api_version} {kind} is not served")

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        r = self.resource_for(obj["apiVersion"], obj["kind"])
        code, out = self._create(r, obj["metadata"].get("namespace", "") if r.namespaced else "",
                                 obj)
        assert code == 201, out
        return out

    def update(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Replace the object (ignoring resourceVersion), as ``kubectl apply`` ends up doing."""
        r = self.resource_for(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        body = copy.deepcopy(obj)
        body["metadata"].pop("resourceVersion", None)
        code, out = self._update(r, meta.get("namespace", "") if r.namespaced else "", meta["name"],
                                 body, False)
        assert code == 200, out
        return out

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        r = self.resource_for(api_version, kind)
        code, out = self._delete(r, namespace, name)
        assert code == 200, out

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        r = self.resource_for(api_version, kind)
        with self.cond:
            obj = self.objects.get((r.group, r.plural), {}).get((namespace, name))
            return copy.deepcopy(obj) if obj else None

    def compact(self, keep_current: bool = False) -> None:
        """Forget history: watches from any version before now get 410 Gone.

        ``keep_current``: a watch from exactly the current version (a bookmark's) still works.
        """
        with self.cond:
            self.compacted = self.rv if keep_current else self.rv + 1

    def drop_watches(self) -> None:
        with self.cond:
            watchers = list(self._watchers)
        for w in watchers:
            w.dropped = True
            try:
                w.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def inject(self, api_version: str, kind: str, line: bytes) -> None:
        r = self.resource_for(api_version, kind)
        with self.cond:
            self.log.append(_Entry(self.rv, r.group, r.plural, raw=line))
            self.cond.notify_all()

    def pause(self) -> None:
        self.paused = True
        self.drop_watches()

    def resume(self) -> None:
        self.paused = False

    def status_writes(self) -> list[Request]:
        return [q for q in self.requests if q.subresource == "status"
                and q.verb in ("update", "patch")]

    # -- storage ------------------------------------------------------------------------------

    def _next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def _record(self, r: Resource, type_: str, obj: dict[str, Any],
                prev: dict[str, Any] | None) -> None:
        self.log.append(_Entry(self.rv, r.group, r.plural, type_, copy.deepcopy(obj),
                               copy.deepcopy(prev) if prev else None))
        self.cond.notify_all()

    def _create(self, r: Resource, ns: str, body: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(body, dict) or not isinstance(body.get("metadata"),
                                                        dict) or not body["metadata"].get("name"):
            return 422, _status(422, "Invalid", "metadata.name: Required value")
        with self.cond:
            store = self.objects.setdefault((r.group, r.plural), {})
            name = body["metadata"]["name"]
            if (ns, name) in store:
                return 409, _status(409, "AlreadyExists", f'{r.plural} "{name}" already exists')
            obj = copy.deepcopy(body)
            obj["apiVersion"], obj["kind"] = r.api_version, r.kind
            if r.status:
                obj.pop("status", None)
            meta = obj["metadata"]
            if r.namespaced:
                meta["namespace"] = ns
            else:
                meta.pop("namespace", None)
            meta.update(uid=str(uuid.uuid4()), generation=1, resourceVersion=str(self._next_rv()),
                        creationTimestamp=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            store[(ns, name)] = obj
            self._record(r, "ADDED", obj, None)
            return 201, copy.deepcopy(obj)

    def _update(self, r: Resource, ns: str, name: str, body: Any, status_only: bool,
                patch: bool = False) -> tuple[int, dict[str, Any]]:
        with self.cond:
            store = self.objects.setdefault((r.group, r.plural), {})
            old = store.get((ns, name))
            if old is None:
                return 404, _status(404, "NotFound", f'{r.plural} "{name}" not found')
            if not isinstance(body, dict):
                return 400, _status(400, "BadRequest", "body must be an object")
            want_rv = (body.get("metadata") or {}).get("resourceVersion")
            if want_rv and want_rv != old["metadata"]["resourceVersion"]:
                return 409, _status(409, "Conflict",
                                    f'Operation cannot be fulfilled on {r.plural} "{name}": '
                                    "the object has been modified; please apply your changes to "
                                    "the latest version and try again")
            if patch:
                body = merge_patch(old, body)
            new = copy.deepcopy(old)
            if status_only:
                new["status"] = copy.deepcopy(body.get("status"))
                if new["status"] is None:
                    new.pop("status")
            else:
                for k in list(new):
                    if k not in ("metadata", "status"):
                        del new[k]
                for k, v in body.items():
                    if k not in ("metadata", "status"):
                        new[k] = copy.deepcopy(v)
                if not r.status and "status" in body:
                    new["status"] = copy.deepcopy(body["status"])
                meta_in = body.get("metadata") or {}
                for f in ("labels", "annotations"):
                    if f in meta_in:
                        new["metadata"][f] = copy.deepcopy(meta_in[f])
                    else:
                        new["metadata"].pop(f, None)
                if _spec(new) != _spec(old):
                    new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
            new["apiVersion"], new["kind"] = r.api_version, r.kind
            if new == old:
                # a no-op update changes nothing, not even resourceVersion
                return 200, copy.deepcopy(old)
            new["metadata"]["resourceVersion"] = str(self._next_rv())
            store[(ns, name)] = new
            self._record(r, "MODIFIED", new, old)
            return 200, copy.deepcopy(new)

    def _delete(self, r: Resource, ns: str, name: str) -> tuple[int, dict[str, Any]]:
        with self.cond:
            store = self.objects.setdefault((r.group, r.plural), {})
            old = store.pop((ns, name), None)
            if old is None:
                return 404, _status(404, "NotFound", f'{r.plural} "{name}" not found')
            gone = copy.deepcopy(old)
            gone["metadata"]["resourceVersion"] = str(self._next_rv())
            self._record(r, "DELETED", gone, old)
            return 200, gone


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_fake: FakeAPIServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # -- plumbing ---------------------------------------------------------------------------

    def _send(self, code: int, body: Any) -> None:
        if self._request is not None:
            self._request.code = code
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- routing -----------------------------------------------------------------------------

    _request: Request | None = None

    def _dispatch(self, method: str) -> None:
        fake = self.server_fake
        self._request = None
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        body = self._body() if method in ("POST", "PUT", "PATCH") else None
        if fake.paused:
            self._send(503, _status(503, "ServiceUnavailable",
                                    "the server is currently unable to handle the request"))
            return
        if self.headers.get("Authorization") != f"Bearer {fake.token}":
            self._send(401, _status(401, "Unauthorized", "Unauthorized"))
            return
        parts = [p for p in url.path.split("/") if p]
        # discovery
        if parts in (["api"], ["apis"]) or (parts[:1] == ["api"] and len(parts) == 2) or \
                (parts[:1] == ["apis"] and len(parts) in (2, 3)):
            self._request = Request(method, url.path, "",
                                    user_agent=self.headers.get("User-Agent", ""))
            fake.requests.append(self._request)
            self._discovery(parts)
            return
        if parts[:1] == ["api"]:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"]:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            self._send(404,
                       _status(404, "NotFound", "the server could not find the requested resource"))
            return
        ns = ""
        if len(rest) >= 3 and rest[0] == "namespaces":
            ns, rest = rest[1], rest[2:]
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        r = next((r for r in fake.resources if r.group == group and r.version == version
                  and r.plural == plural), None)
        if method == "GET":
            verb = "get" if name else ("watch" if query.get("watch") in ("true", "1") else "list")
        else:
            verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]
        self._request = Request(method, url.path, verb, group, plural, sub, ns, name,
                                self.headers.get("User-Agent", ""), url.query)
        fake.requests.append(self._request)
        if r is None or (sub and (sub != "status" or not r.status)):
            self._send(404,
                       _status(404, "NotFound", "the server could not find the requested resource"))
            return
        if verb == "watch":
            self._watch(r, ns, query)
        elif verb == "list":
            self._list(r, ns, query)
        elif verb == "get":
            with fake.cond:
                obj = fake.objects.get((group, plural), {}).get((ns, name))
                obj = copy.deepcopy(obj)
            if obj is None:
                self._send(404, _status(404, "NotFound", f'{plural} "{name}" not found'))
            else:
                obj["apiVersion"] = r.api_version
                self._send(200, obj)
        elif verb == "create":
            self._send(*fake._create(r, ns, body))
        elif verb == "update":
            self._send(*fake._update(r, ns, name, body, status_only=sub == "status"))
        elif verb == "patch":
            ctype = self.headers.get("Content-Type", "")
            if ctype != "application/merge-patch+json":
                self._send(415, _status(415, "UnsupportedMediaType",
                                        f"the fake speaks merge-patch only, not {ctype}"))
                return
            self._send(*fake._update(r, ns, name, body, status_only=sub == "status", patch=True))
        elif verb == "delete":
            self._send(*fake._delete(r, ns, name))
        for hook in list(fake.after):
            hook(self._request)

    def _discovery(self, parts: list[str]) -> None:
        fake = self.server_fake
        groups: dict[str, list[str]] = {}
        for r in fake.resources:
            groups.setdefault(r.group, [])
            if r.version not in groups[r.group]:
                groups[r.group].append(r.version)
        if parts == ["api"]:
            self._send(200, {"kind": "APIVersions", "versions": groups.get("", [])})
            return
        if parts == ["apis"]:
            self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                 "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}}
                for g, vs in groups.items() if g]})
            return
        if parts[0] == "apis" and len(parts) == 2:
            vs = groups.get(parts[1])
            if not vs:
                self._send(404, _status(404, "NotFound",
                                        "the server could not find the requested resource"))
                return
            self._send(200, {"kind": "APIGroup", "apiVersion": "v1", "name": parts[1], "versions": [
                {"groupVersion": f"{parts[1]}/{v}", "version": v} for v in vs]})
            return
        group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
        rs = [r for r in fake.resources if r.group == group and r.version == version]
        if not rs:
            self._send(404,
                       _status(404, "NotFound", "the server could not find the requested resource"))
            return
        resources = []
        for r in rs:
            resources.append({"name": r.plural, "singularName": r.kind.lower(),
                              "namespaced": r.namespaced,
                              "kind": r.kind, "verbs": ["create", "delete", "get", "list", "patch",
                                                        "update", "watch"]})
            if r.status:
                resources.append({"name": f"{r.plural}/status", "singularName": "",
                                  "namespaced": r.namespaced,
                                  "kind": r.kind, "verbs": ["get", "patch", "update"]})
        self._send(200, {"kind": "APIResourceList", "apiVersion": "v1",
                         "groupVersion": f"{group}/{version}" if group else version,
                         "resources": resources})

    def _visible(self, r: Resource, ns: str, query: dict[str, str],
                 obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata") or {}
        if ns and meta.get("namespace", "") != ns:
            return False
        return label_match(query.get("labelSelector", ""), meta.get("labels") or {}) and \
            field_match(query.get("fieldSelector", ""), obj)

    def _out(self, r: Resource, obj: dict[str, Any], in_list: bool) -> dict[str, Any]:
        out = copy.deepcopy(obj)
        if in_list and r.group in ("", "discovery.k8s.io", "coordination.k8s.io"):
            # The API server leaves kind/apiVersion out of built-in list items.
            out.pop("kind", None)
            out.pop("apiVersion", None)
        else:
            out["apiVersion"] = r.api_version
        return out

    def _list(self, r: Resource, ns: str, query: dict[str, str]) -> None:
        fake = self.server_fake
        with fake.cond:
            items = [o for (_, _), o in sorted(fake.objects.get((r.group, r.plural), {}).items())
                     if self._visible(r, ns, query, o)]
            rv = fake.rv
        start = 0
        if query.get("continue"):
            token = json.loads(base64.b64decode(query["continue"]))
            rv, start = token["rv"], token["start"]
        limit = int(query.get("limit") or 0)
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        page = items[start:]
        if limit and len(page) > limit:
            page = page[:limit]
            meta["continue"] = base64.b64encode(
                json.dumps({"rv": rv, "start": start + limit}).encode()).decode()
        self._send(200, {"kind": f"{r.kind}List", "apiVersion": r.api_version, "metadata": meta,
                         "items": [self._out(r, o, True) for o in page]})

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _watch(self, r: Resource, ns: str, query: dict[str, str]) -> None:
        fake = self.server_fake
        timeout = min(int(query.get("timeoutSeconds") or 60), 600)
        bookmarks = query.get("allowWatchBookmarks") == "true"
        rv_q = query.get("resourceVersion") or ""
        if self._request is not None:
            self._request.code = 200
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        watcher = _Watcher(self.connection)
        with fake.cond:
            initial: list[bytes] = []
            if rv_q not in ("", "0") and int(rv_q) < fake.compacted:
                gone = _status(410, "Expired",
                               f"too old resource version: {rv_q} ({fake.compacted})")
                initial.append(json.dumps({"type": "ERROR", "object": gone}).encode())
                pos = None
            else:
                if rv_q in ("", "0"):
                    start_rv = fake.rv
                    for o in sorted(fake.objects.get((r.group, r.plural), {}).values(),
                                    key=lambda o: o["metadata"]["resourceVersion"]):
                        if self._visible(r, ns, query, o):
                            initial.append(json.dumps(
                                {"type": "ADDED", "object": self._out(r, o, False)}).encode())
                else:
                    start_rv = int(rv_q)
                pos = next((i for i, e in enumerate(fake.log) if e.rv > start_rv and e.raw is None),
                           len(fake.log))
                fake._watchers.append(watcher)
        try:
            for line in initial:
                self._chunk(line + b"\n")
            if pos is None:
                self._chunk(b"")
                return
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and not watcher.dropped:
                out: list[bytes] = []
                with fake.cond:
                    if pos >= len(fake.log):
                        fake.cond.wait(fake.bookmark_interval)
                    entries, pos = fake.log[pos:], len(fake.log)
                    current = fake.rv
                for e in entries:
                    if e.group != r.group or e.plural != r.plural:
                        continue
                    if e.raw is not None:
                        out.append(e.raw)
                        continue
                    now_in = self._visible(r, ns, query, e.obj) and e.type != "DELETED"
                    was_in = self._visible(r, ns, query, e.prev)
                    if e.type == "DELETED":
                        type_ = "DELETED" if was_in else ""
                    elif now_in and not was_in:
                        type_ = "ADDED"
                    elif now_in:
                        type_ = "MODIFIED"
                    elif was_in:
                        type_ = "DELETED"
                    else:
                        type_ = ""
                    if type_:
                        assert e.obj is not None
                        out.append(json.dumps(
                            {"type": type_, "object": self._out(r, e.obj, False)}).encode())
                if not out and bookmarks:
                    out.append(json.dumps({"type": "BOOKMARK", "object": {
                        "kind": r.kind, "apiVersion": r.api_version,
                        "metadata": {"resourceVersion": str(current)}}}).encode())
                for line in out:
                    self._chunk(line + b"\n")
            if not watcher.dropped:
                self._chunk(b"")
        except OSError:
            self.close_connection = True
        finally:
            with fake.cond:
                if watcher in fake._watchers:
                    fake._watchers.remove(watcher)
            if watcher.dropped:
                self.close_connection = True
