"""What a worker found wrong, while serving, with what a policy points at: a Redis address
of a global rate limit, a remote JWKS URL, an external authorization service.

Validation cannot know that a host does not resolve or refuses connections: the requests
(and the JWKS refresh) that use it find out. They report it here; the supervisor asks each
worker for the set (the plane's ``problems`` request, as for ``health``), and the
controller writes it into the status of every policy naming that thing
(controller/planestatus.py), until it works again.

Keys are ``(kind, name)`` with the names as the policies spell them, so that the
controller can match them without knowing the compiled config: ``("redis", "host:port")``,
``("jwks", uri)``, ``("extauth", "namespace/service:port")``. The set is bounded
(``MAX_PROBLEMS`` keys; further ones are counted in ``dropped``), deduplicated by key
(the latest failure's message wins) and a key leaves it at its first success. Standard
library only: the supervisor side imports it too.
"""

from __future__ import annotations

#: Distinct failing things a worker keeps (a policy set naming more is a bigger problem
#: than its status can describe; the rest are counted).
MAX_PROBLEMS = 64
#: Characters of a message kept (an exception's text can be long).
MAX_MESSAGE = 300

Key = tuple[str, str]


class Problems:
    """The worker's current runtime problems."""

    __slots__ = ("active", "dropped")

    def __init__(self) -> None:
        #: (kind, name) -> message of the latest failure
        self.active: dict[Key, str] = {}
        #: failures not kept because the set was full
        self.dropped = 0

    def fail(self, kind: str, name: str, message: str) -> None:
        key = (kind, name)
        if key not in self.active and len(self.active) >= MAX_PROBLEMS:
            self.dropped += 1
            return
        self.active[key] = message[:MAX_MESSAGE]

    def ok(self, kind: str, name: str) -> None:
        """``name`` worked: no longer a problem (cheap when nothing fails)."""
        if self.active:
            self.active.pop((kind, name), None)

    def view(self) -> dict[Key, str]:
        return dict(self.active)


def merge(views: list[dict[Key, str]]) -> dict[Key, str]:
    """The workers' sets as one (the first worker's message for a key shared), bounded."""
    out: dict[Key, str] = {}
    for view in views:
        for key, message in view.items():
            if key not in out and len(out) < MAX_PROBLEMS:
                out[key] = message[:MAX_MESSAGE]
    return out


#: This worker's set (one per process, as the JWKS caches in ``kgw_l7.auth``).
PROBLEMS = Problems()
