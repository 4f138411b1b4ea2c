"""Config snapshots sent to workers as deltas against the previous one.

Pickling a whole L7Config costs about 0.1 ms per virtual host each way, so at 10k
routes a full snapshot takes seconds to cross to a worker. A route change touches one
virtual host, and the producer hands out the *same* VirtualHost object for everything
unchanged, so the supervisor sends, per listener, the new virtual hosts and, for the
others, their index in the previous snapshot. The worker rebuilds the full config from
its own previous one — keeping those unchanged objects, which in turn lets its router
cache reuse their compiled form by identity.

Identity, not equality, decides reuse here: it is O(1) per virtual host, and an equal
but distinct object is merely sent again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from kgw_l7.config import L7Config, Listener, VirtualHost


@dataclass(frozen=True, slots=True)
class ListenerDelta:
    #: The listener record with ``virtual_hosts`` emptied.
    listener: Listener
    #: Each entry: a VirtualHost, or the index of the same object in the previous
    #: snapshot's listener of the same name.
    virtual_hosts: tuple[int | VirtualHost, ...]


@dataclass(frozen=True, slots=True)
class Delta:
    generation: int
    #: Generation of the snapshot the indexes point into; None for a full snapshot.
    base: int | None
    listeners: tuple[ListenerDelta, ...]


class BaseMismatch(ValueError):
    """The receiver does not hold the snapshot a delta was computed against."""


def diff(previous: L7Config | None, config: L7Config) -> Delta:
    """A delta from ``previous`` (what the receiver holds) to ``config``."""
    before = {lst.name: lst for lst in previous.listeners} if previous is not None else {}
    out = []
    for lst in config.listeners:
        old = before.get(lst.name)
        index = {id(vh): i for i, vh in enumerate(old.virtual_hosts)} if old is not None else {}
        vhs = tuple(index.get(id(vh), vh) for vh in lst.virtual_hosts)
        out.append(ListenerDelta(dataclasses.replace(lst, virtual_hosts=()), vhs))
    return Delta(config.generation, previous.generation if previous is not None else None,
                 tuple(out))


def patch(previous: L7Config | None, delta: Delta) -> L7Config:
    """The config ``delta`` describes, given the receiver's ``previous`` snapshot."""
    if delta.base is not None and (previous is None or previous.generation != delta.base):
        raise BaseMismatch(f"delta against generation {delta.base}, but holding "
                           f"{previous.generation if previous is not None else 'nothing'}")
    before = {lst.name: lst for lst in previous.listeners} if previous is not None else {}
    listeners = []
    for ld in delta.listeners:
        old = before.get(ld.listener.name)
        vhs = []
        for vh in ld.virtual_hosts:
            if isinstance(vh, int):
                if old is None or not 0 <= vh < len(old.virtual_hosts):
                    raise BaseMismatch(f"listener {ld.listener.name}: no virtual host #{vh} "
                                       f"to reuse")
                vhs.append(old.virtual_hosts[vh])
            else:
                vhs.append(vh)
        listeners.append(dataclasses.replace(ld.listener, virtual_hosts=tuple(vhs)))
    return L7Config(listeners=tuple(listeners), generation=delta.generation)
