"""What kgw claims to support: the one list the lead edits as features land.

A test runs only when every feature it needs is claimed here; otherwise it is reported
as skipped (upstream does the same with its SupportedFeatures). A profile whose core
features are not all claimed is skipped as a whole.
"""

from __future__ import annotations

#: SupportedFeatures kgw claims (names as in upstream pkg/features).
SUPPORTED_FEATURES: frozenset[str] = frozenset({
    # core
    "Gateway",
    "HTTPRoute",
    "ReferenceGrant",
    # Gateway extended
    "GatewayPort8080",
    # HTTPRoute extended, as implemented by kgw_l7
    "HTTPRouteQueryParamMatching",
    "HTTPRouteMethodMatching",
    "HTTPRouteResponseHeaderModification",
    "HTTPRoutePortRedirect",
    "HTTPRouteSchemeRedirect",
    "HTTPRoutePathRedirect",
    "HTTPRouteHostRewrite",
    "HTTPRoutePathRewrite",
    "HTTPRouteRequestMirror",
    "HTTPRouteRequestMultipleMirrors",
    "HTTPRouteRequestPercentageMirror",
    "HTTPRouteRequestTimeout",
    "HTTPRouteBackendTimeout",
    "HTTPRouteCORS",
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode",
    "HTTPRouteBackendRequestHeaderModification",
    "HTTPRouteParentRefPort",
    "HTTPRouteDestinationPortMatching",
    "HTTPRouteNamedRouteRule",
    "HTTPRouteBackendRequestRedirect",
    "HTTPRouteBackendURLRewrite",
    "HTTPRouteRetry",
    "HTTPRouteRetryConnectionError",
    "HTTPRouteRetryBackendTimeout",
    "HTTPRouteBackendProtocolWebSocket",
    "HTTPRouteBackendProtocolH2C",
    "GatewayHTTPSListenerDetectMisdirectedRequests",
    "GatewayHTTPListenerIsolation",
    "GatewayAddressEmpty",
    "GatewayStaticAddresses",
    # Backend TLS (BackendTLSPolicy; Gateway spec.tls.backend client certificate)
    "BackendTLSPolicy",
    "BackendTLSPolicySANValidation",
    "GatewayBackendClientCertificate",
    # Gateway spec.tls.frontend: client certificate validation (mTLS) on HTTPS listeners
    "GatewayFrontendClientCertificateValidation",
    "GatewayFrontendClientCertificateValidationInsecureFallback",
    "ListenerSet",
    # L4: TCPRoute through kgw_l4, TLSRoute passthrough by SNI
    "TCPRoute",
    "TLSRoute",
    "UDPRoute",
    # TLSRoute on Terminate listeners (kgw_l4.tlsterm), and Passthrough + Terminate on one port
    "TLSRouteModeTerminate",
    "TLSRouteModeMixed",
    # GRPCRoute: gRPC over HTTP/2 (h2c prior knowledge on HTTP listeners, ALPN h2 on HTTPS)
    "GRPCRoute",
})

#: Tests upstream returns from at once when the named feature is claimed (they check
#: what an implementation without it reports): reported passed then, as upstream does,
#: with that reason.
ONLY_WITHOUT: dict[str, str] = {
    "TLSRouteListenerTerminateNotSupported": "TLSRouteModeTerminate",
    "TLSRouteListenerMixedTerminationNotSupported": "TLSRouteModeMixed",
}

#: Core features of each conformance profile (upstream conformance/utils/suite/profiles.go).
PROFILE_CORE_FEATURES: dict[str, frozenset[str]] = {
    "GATEWAY-HTTP": frozenset({"Gateway", "ReferenceGrant", "HTTPRoute"}),
    "GATEWAY-TLS": frozenset({"Gateway", "ReferenceGrant", "TLSRoute"}),
    "GATEWAY-GRPC": frozenset({"Gateway", "ReferenceGrant", "GRPCRoute"}),
    "GATEWAY-TCP": frozenset({"Gateway", "ReferenceGrant", "TCPRoute"}),
    "GATEWAY-UDP": frozenset({"Gateway", "ReferenceGrant", "UDPRoute"}),
}

PROFILES: tuple[str, ...] = tuple(PROFILE_CORE_FEATURES)


def profile_supported(profile: str, supported: frozenset[str] = SUPPORTED_FEATURES) -> bool:
    return PROFILE_CORE_FEATURES[profile] <= supported


def missing_features(features: list[str] | tuple[str, ...],
                     supported: frozenset[str] = SUPPORTED_FEATURES) -> list[str]:
    """The features a test needs that kgw does not claim (empty: the test can run)."""
    return sorted(set(features) - supported)
