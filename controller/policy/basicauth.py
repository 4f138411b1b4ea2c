"""SecurityPolicy ``basicAuth``: users and password hashes from an htpasswd file kept in a
Secret (its entry ``.htpasswd``), as Envoy Gateway.

::

    basicAuth:
      users: {name: htpasswd}          # Secret; lines "user:hash"
      forwardUsernameHeader: x-user    # optional: the user's name to the backend

Hashes: bcrypt (``$2y$``, ``$2b$``, ``$2a$``; ``htpasswd -B``) and ``{SHA}`` (``htpasswd
-s``). Lines with another hash (MD5 ``$apr1$``, crypt) are left out and logged: those users
cannot log in.
"""

from __future__ import annotations

import logging

from controller.policy import authcommon as ac
from controller.policy.section import Section
from controller.schema.nodes import Str, obj
from kgw_l7.auth_config import BasicAuth

log = logging.getLogger("kgw.policy.basicauth")

HTPASSWD_KEY = ".htpasswd"
_HASH_PREFIXES = ("$2y$", "$2b$", "$2a$", "{SHA}")

SCHEMA = obj({
    "users": ac.SECRET_REF,
    "forwardUsernameHeader": ac.HEADER_NAME,
    "realm": Str(min_len=1, max_len=128, pattern=r'^[^"\\]+$', pattern_hint="no quotes"),
}, required=["users"])


def parse_htpasswd(text: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(user, hash) pairs of the lines kgw can check, and the lines it cannot (why)."""
    users: list[tuple[str, str]] = []
    skipped: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user:
            skipped.append(f"line {n}: not user:hash")
        elif not hashed.startswith(_HASH_PREFIXES):
            skipped.append(f"line {n} ({user}): unsupported hash (bcrypt or {{SHA}} only)")
        else:
            users.append((user, hashed))
    return users, skipped


def compile_basic(value: dict, scope: str, refs: ac.Refs | None = None) -> BasicAuth:
    text = ac.secret_text(refs, value["users"]["name"], HTPASSWD_KEY) or ""
    users, skipped = parse_htpasswd(text)
    for s in skipped:
        log.warning("%s: basicAuth Secret %s: %s", scope, value["users"]["name"], s)
    return BasicAuth(tuple(users), value.get("forwardUsernameHeader"),
                     value.get("realm", "kgw"))


SECTION = Section("basicAuth", SCHEMA, compile_basic, "basic_auth", refs=True)
