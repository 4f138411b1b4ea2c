"""Condition types and reasons, with the Gateway API's own spelling.

Translation records conditions as plain dicts in the shape the Kubernetes API stores
them, minus ``lastTransitionTime``: the status writer stamps that when a condition's
status actually changes, so translation stays a pure function.
"""

from __future__ import annotations

# -- types ------------------------------------------------------------------------
ACCEPTED = "Accepted"
PROGRAMMED = "Programmed"
RESOLVED_REFS = "ResolvedRefs"
CONFLICTED = "Conflicted"
SUPPORTED_VERSION = "SupportedVersion"
INSECURE_FRONTEND_VALIDATION_MODE = "InsecureFrontendValidationMode"
OVERLAPPING_TLS_CONFIG = "OverlappingTLSConfig"

# -- reasons ----------------------------------------------------------------------
R_ACCEPTED = "Accepted"
R_PROGRAMMED = "Programmed"
R_RESOLVED_REFS = "ResolvedRefs"
R_NO_CONFLICTS = "NoConflicts"
R_SUPPORTED_VERSION = "SupportedVersion"
R_INVALID = "Invalid"
R_INVALID_PARAMETERS = "InvalidParameters"
R_LISTENERS_NOT_VALID = "ListenersNotValid"
R_UNSUPPORTED_ADDRESS = "UnsupportedAddress"
R_ADDRESS_NOT_USABLE = "AddressNotUsable"
R_UNSUPPORTED_PROTOCOL = "UnsupportedProtocol"
R_UNSUPPORTED_VALUE = "UnsupportedValue"
R_PROTOCOL_CONFLICT = "ProtocolConflict"
R_HOSTNAME_CONFLICT = "HostnameConflict"
R_PORT_UNAVAILABLE = "PortUnavailable"
R_INVALID_ROUTE_KINDS = "InvalidRouteKinds"
R_INVALID_CERTIFICATE_REF = "InvalidCertificateRef"
R_REF_NOT_PERMITTED = "RefNotPermitted"
R_NOT_ALLOWED_BY_LISTENERS = "NotAllowedByListeners"
R_NO_MATCHING_PARENT = "NoMatchingParent"
R_NO_MATCHING_LISTENER_HOSTNAME = "NoMatchingListenerHostname"
R_BACKEND_NOT_FOUND = "BackendNotFound"
R_INVALID_KIND = "InvalidKind"
R_CONFLICTED = "Conflicted"
R_NO_VALID_CA_CERTIFICATE = "NoValidCACertificate"
R_INVALID_CA_CERTIFICATE_REF = "InvalidCACertificateRef"
R_INVALID_CA_CERTIFICATE_KIND = "InvalidCACertificateKind"
R_CONFIGURATION_CHANGED = "ConfigurationChanged"
R_INVALID_CLIENT_CERTIFICATE_REF = "InvalidClientCertificateRef"
R_OVERLAPPING_HOSTNAMES = "OverlappingHostnames"
R_OVERLAPPING_CERTIFICATES = "OverlappingCertificates"


def condition(type_: str, ok: bool, reason: str, message: str, generation: int) -> dict:
    """One condition as the API holds it (without lastTransitionTime)."""
    return {
        "type": type_,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }
