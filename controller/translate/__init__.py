"""Gateway API objects -> L7Config, L4Config and status (kgateway-style translator).

``translate(store)`` is a pure function; ``Translator.update(store, changed)`` gives the
same result while re-resolving only what ``changed`` affects. Bad user input never
raises: it becomes a condition in the returned statuses.

One module per hop:

    gateway.py     GatewayClass / Gateway -> GatewayIR (addresses, conflicts, port sharing)
    listener.py    one listener: protocol, route kinds, TLS certificates, allowedRoutes
    listenerset.py ListenerSets: allowedListeners, merge into the Gateway, precedence, status
    route.py       parentRef attachment (any route kind) -> RouteResult
    httproute.py   HTTPRoute / GRPCRoute rules and matches
    filters.py     HTTPRoute filters -> kgw_l7 Filters
    backend.py     backendRef -> Service port -> ready endpoints
    backendtls.py  BackendTLSPolicy -> UpstreamTLS, policy conditions
    refgrant.py    ReferenceGrant checks
    hostname.py    hostname matching / intersection
    precedence.py  match precedence (the one place it lives)
    emit_l7.py     IR -> L7Config (virtual hosts, listener isolation)
    emit_l4.py     IR -> L4Config (TCP/UDP frontends, TLS passthrough)
    status.py      IR -> status stanzas; conditions.py: types and reasons
    translator.py  the full / incremental driver, Options, Translation

Choices where the spec leaves room (or kgw cannot do something yet):

* An ExtensionRef filter can never be resolved (kgw has no custom filters): the rule
  answers 500 and the route gets ResolvedRefs=False, reason InvalidKind.
* TLS listeners in Terminate mode: the L4 plane terminates TLS with the listener's
  certificates and forwards the decrypted stream to the TLSRoute's backends (emit_l4.py).
* Several TCPRoutes/UDPRoutes on one listener: all Accepted; the oldest carries traffic.
* RegularExpression paths rank between Exact and PathPrefix (like Envoy Gateway).
* Gateways share sockets: without spec.addresses (or Options.gateway_addresses) every
  Gateway binds 0.0.0.0; listeners of different Gateways on one port merge when their
  protocols are compatible, else the younger one gets Accepted=False PortUnavailable.

The configs carry ``generation`` 0; the publisher numbers the configs it sends.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from controller.translate.translator import Options, Translation, Translator, translate

__all__ = ["Options", "Translation", "Translator", "translate"]


def __getattr__(name: str) -> Any:
    """The driver's names, imported on first use: the hop modules (``util`` above all) are
    imported by ``controller.policy`` too, and an eager import of the driver here made
    ``import controller.policy.attach`` circular when it came first."""
    if name in __all__:
        from controller.translate import translator
        return getattr(translator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
