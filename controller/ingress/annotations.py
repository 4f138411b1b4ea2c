"""ingress-nginx annotations: which kgw carries, and what each becomes.

A migrating user must see what is not carried: every annotation under the
``nginx.ingress.kubernetes.io/`` prefix that is not in MAPPED is listed as ignored by
``kgw validate`` (with the reason when kgw knows one), and so is a mapped annotation
whose value kgw cannot express.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NGINX = "nginx.ingress.kubernetes.io/"

#: Annotations translated (their meaning is the same in kgw), without the prefix.
MAPPED = frozenset({
    "rewrite-target", "use-regex", "ssl-redirect", "force-ssl-redirect",
    "canary", "canary-weight", "canary-weight-total", "canary-by-header",
    "canary-by-header-value",
    "enable-cors", "cors-allow-origin", "cors-allow-methods", "cors-allow-headers",
    "cors-expose-headers", "cors-allow-credentials", "cors-max-age", "proxy-body-size",
})

#: Known annotations kgw cannot carry, and why.
REASONS = {
    "proxy-read-timeout": "nginx times each read from the backend; kgw has no per-read "
                          "timeout (only a whole-request one, HTTPRoute timeouts)",
}

#: nginx's size syntax (client_max_body_size): a number, optionally k, m or g.
_SIZE = re.compile(r"([0-9]{1,12})([kmg]?)")
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}

#: ingress-nginx's enable-cors defaults (docs: user-guide/nginx-configuration/annotations).
CORS_DEFAULT_METHODS = ("GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS")
CORS_DEFAULT_HEADERS = ("DNT", "Keep-Alive", "User-Agent", "X-Requested-With",
                        "If-Modified-Since", "Cache-Control", "Content-Type", "Range",
                        "Authorization")
CORS_DEFAULT_MAX_AGE = 1728000


@dataclass(frozen=True, slots=True)
class Annotations:
    """The nginx annotations of one Ingress, parsed (the ones kgw carries)."""

    values: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, annotations: object) -> Annotations:
        if not isinstance(annotations, dict):
            return cls(())
        return cls(tuple(sorted((k[len(NGINX):], str(v)) for k, v in annotations.items()
                                if isinstance(k, str) and k.startswith(NGINX))))

    def get(self, name: str) -> str | None:
        for k, v in self.values:
            if k == name:
                return v
        return None

    def flag(self, name: str) -> bool:
        return (self.get(name) or "").strip().lower() == "true"

    def ignored(self) -> list[tuple[str, str]]:
        """(annotation, why) for each annotation kgw does not carry."""
        out = []
        for k, _v in self.values:
            if k not in MAPPED:
                out.append((NGINX + k, REASONS.get(k, "not carried by kgw")))
        return out

    def body_size(self) -> int | None:
        """proxy-body-size in bytes (nginx's units: k, m, g, powers of 1024); None when
        absent, 0 (nginx: no limit) or not a size (reported with ``bad_body_size``)."""
        v = (self.get("proxy-body-size") or "").strip().lower()
        m = _SIZE.fullmatch(v)
        if not m:
            return None
        n = int(m.group(1)) * _SIZE_UNITS[m.group(2)]
        return n or None

    def bad_body_size(self) -> bool:
        v = self.get("proxy-body-size")
        return v is not None and not _SIZE.fullmatch(v.strip().lower())

    def cors(self) -> dict | None:
        """The HTTPRoute CORS filter enable-cors asks for, with nginx's defaults."""
        if not self.flag("enable-cors"):
            return None
        origins = _split(self.get("cors-allow-origin")) or ["*"]
        methods = _split(self.get("cors-allow-methods")) or list(CORS_DEFAULT_METHODS)
        headers = _split(self.get("cors-allow-headers")) or list(CORS_DEFAULT_HEADERS)
        out: dict = {"allowOrigins": origins, "allowMethods": [m.upper() for m in methods],
                     "allowHeaders": headers,
                     "allowCredentials": (self.get("cors-allow-credentials") or "true")
                     .strip().lower() == "true"}
        expose = _split(self.get("cors-expose-headers"))
        if expose:
            out["exposeHeaders"] = expose
        max_age = (self.get("cors-max-age") or "").strip()
        out["maxAge"] = int(max_age) if max_age.isdigit() else CORS_DEFAULT_MAX_AGE
        return out


def _split(value: str | None) -> list[str]:
    return [p.strip() for p in (value or "").split(",") if p.strip()]


#: nginx's usual capture idiom: path "/x(/|$)(.*)" with rewrite-target "/$2" strips "/x".
_STRIP_PREFIX = re.compile(r"^(/[^()$*+?\[\]\\{}|^]*?)\(/\|\$\)\(\.\*\)$")


def rewrite(target: str, path: str, path_type: str) -> tuple[str, dict] | str:
    """(the path match, the URLRewrite path modifier) for rewrite-target on ``path``, or
    why it cannot be carried. Capture groups are carried in the idiom nginx documents
    (``/x(/|$)(.*)`` to ``/$2``); a target without groups replaces the matched prefix
    (Prefix) or the whole path (Exact)."""
    if "$" in target:
        m = _STRIP_PREFIX.match(path)
        if m and target in ("/$2", "/$2/") and m.group(1):
            return (m.group(1), {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"})
        return (f"rewrite-target {target!r} with path {path!r}: kgw carries capture groups "
                "only as '/<prefix>(/|$)(.*)' rewritten to '/$2'")
    if path_type == "Exact":
        return (path, {"type": "ReplaceFullPath", "replaceFullPath": target})
    return (path, {"type": "ReplacePrefixMatch", "replacePrefixMatch": target})
