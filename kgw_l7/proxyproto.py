"""The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2): sans-IO.

A load balancer in front of kgw that passes TCP through (a cloud network load balancer,
HAProxy, another kgw) starts each connection with a header naming the client it accepted
the connection from; kgw then takes that address as the client's (X-Forwarded-For,
access logs, rate-limit keys, access rules). ``parse`` reads the header from the first
bytes of a connection; ``encode_v2`` writes one for a backend that asks for it.

No I/O here: ``parse`` is given whatever has arrived and answers "need more", a
``ProxyHeader`` (with how many bytes it took), or raises ``ProxyProtocolError`` naming
what is wrong. The caller bounds the wait (a connection that sends nothing is closed by
the header timeout) and never buffers more than ``MAX_HEADER`` bytes for it.

Limits, from the specification: a v1 line is at most 107 bytes with its CRLF; a v2
header is 16 bytes and a length, here at most ``MAX_V2_PAYLOAD`` (the addresses of
any family fit in 216, the rest are TLVs: HAProxy itself accepts what fits its buffer;
AWS and GCP send well under 1 KiB).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: The longest v1 line, CRLF included (the specification's 107).
V1_MAX = 107
#: The largest v2 payload (addresses and TLVs) accepted.
MAX_V2_PAYLOAD = 2048
MAX_HEADER = 16 + MAX_V2_PAYLOAD

_V2_HEAD = struct.Struct("!12sBBH")
#: v2 family nibble -> (name, address block size); UNSPEC and UNIX carry no IP.
_V2_FAMILIES = {0x0: ("UNSPEC", 0), 0x1: ("TCP4", 12), 0x2: ("TCP6", 36), 0x3: ("UNIX", 216)}
_V2_TRANSPORTS = {0x0: "UNSPEC", 0x1: "STREAM", 0x2: "DGRAM"}
_V2_COMMANDS = {0x0: "LOCAL", 0x1: "PROXY"}


class ProxyProtocolError(ValueError):
    """The connection's first bytes are not a valid PROXY protocol header (the message
    says what is wrong); the connection is closed."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A parsed header. ``source``/``destination`` are (address, port) of the client as
    the sender saw it; None when the header carries no IP address (v1 UNKNOWN, v2
    LOCAL -- a health check from the balancer itself --, UNSPEC or UNIX): the
    connection's own addresses stand."""

    version: int
    size: int  # bytes of the connection the header took
    source: tuple[str, int] | None = None
    destination: tuple[str, int] | None = None


def parse(data: bytes) -> ProxyHeader | None:
    """The header at the start of ``data``; None when more bytes are needed to tell."""
    if data[:1] == b"P":
        return _parse_v1(data)
    if data[:1] == b"\r":
        return _parse_v2(data)
    if not data:
        return None
    raise ProxyProtocolError("no PROXY protocol header (the connection does not start with "
                             "one: v1 'PROXY ' or the v2 signature)")


def _port(raw: bytes) -> int:
    if not raw.isdigit() or len(raw) > 5 or (len(raw) > 1 and raw[:1] == b"0"):
        raise ProxyProtocolError(f"v1: bad port {raw[:8]!r}")
    port = int(raw)
    if port > 65535:
        raise ProxyProtocolError(f"v1: port {port} out of range")
    return port


def _address(raw: bytes, family: bytes) -> str:
    try:
        ip = ipaddress.ip_address(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ProxyProtocolError(f"v1: bad {family.decode()} address {raw[:40]!r}") from None
    if ip.version != (4 if family == b"TCP4" else 6):
        raise ProxyProtocolError(f"v1: {raw.decode()} is not a {family.decode()} address")
    return str(ip)


def _parse_v1(data: bytes) -> ProxyHeader | None:
    if len(data) < len(V1_PREFIX):
        if V1_PREFIX.startswith(data):
            return None
        raise ProxyProtocolError("no PROXY protocol header")
    if not data.startswith(V1_PREFIX):
        raise ProxyProtocolError("no PROXY protocol header")
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyProtocolError(f"v1: no CRLF within {V1_MAX} bytes")
        if b"\n" in data or b"\r" in data[:-1]:
            raise ProxyProtocolError("v1: line not ended by CRLF")
        return None
    fields = data[len(V1_PREFIX):end].split(b" ")
    size = end + 2
    if fields[0] == b"UNKNOWN":
        return ProxyHeader(1, size)  # (whatever follows UNKNOWN is ignored, as specified)
    if fields[0] not in (b"TCP4", b"TCP6"):
        raise ProxyProtocolError(f"v1: unknown protocol family {fields[0][:16]!r}")
    if len(fields) != 5:
        raise ProxyProtocolError(f"v1: {len(fields) - 1} fields after {fields[0].decode()}, "
                                 "not 4 (source, destination, their ports)")
    fam = fields[0]
    return ProxyHeader(1, size, (_address(fields[1], fam), _port(fields[3])),
                       (_address(fields[2], fam), _port(fields[4])))


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < _V2_HEAD.size:
        if V2_SIGNATURE.startswith(data[:12]):
            return None
        raise ProxyProtocolError("v2: bad signature")
    sig, ver_cmd, fam_proto, length = _V2_HEAD.unpack_from(data)
    if sig != V2_SIGNATURE:
        raise ProxyProtocolError("v2: bad signature")
    if ver_cmd >> 4 != 2:
        raise ProxyProtocolError(f"v2: version {ver_cmd >> 4}, not 2")
    command = _V2_COMMANDS.get(ver_cmd & 0xF)
    if command is None:
        raise ProxyProtocolError(f"v2: unknown command {ver_cmd & 0xF}")
    family = _V2_FAMILIES.get(fam_proto >> 4)
    if family is None:
        raise ProxyProtocolError(f"v2: unknown address family {fam_proto >> 4}")
    if (fam_proto & 0xF) not in _V2_TRANSPORTS:
        raise ProxyProtocolError(f"v2: unknown transport protocol {fam_proto & 0xF}")
    if length > MAX_V2_PAYLOAD:
        raise ProxyProtocolError(f"v2: length {length} over the {MAX_V2_PAYLOAD} accepted")
    name, need = family
    if command == "PROXY" and length < need:
        raise ProxyProtocolError(f"v2: length {length} too short for {name} addresses "
                                 f"({need} bytes)")
    size = _V2_HEAD.size + length
    if len(data) < size:
        return None
    if command == "LOCAL" or name in ("UNSPEC", "UNIX"):
        return ProxyHeader(2, size)
    body = data[_V2_HEAD.size:size]
    if name == "TCP4":
        src, dst, sport, dport = struct.unpack_from("!4s4sHH", body)
    else:
        src, dst, sport, dport = struct.unpack_from("!16s16sHH", body)
    return ProxyHeader(2, size, (str(ipaddress.ip_address(src)), sport),
                       (str(ipaddress.ip_address(dst)), dport))


def encode_v2(source: tuple[str, int] | None, destination: tuple[str, int] | None) -> bytes:
    """A v2 PROXY header for a backend: the client ``source`` as kgw accepted it, and the
    address it connected to. Without both, or when their families differ (an IPv4
    client of an IPv6 listener is a mapped address), a LOCAL header: the backend uses
    the connection's own addresses."""
    if source is None or destination is None:
        return V2_SIGNATURE + b"\x20\x00\x00\x00"
    src = ipaddress.ip_address(source[0])
    dst = ipaddress.ip_address(destination[0])
    if isinstance(src, ipaddress.IPv6Address) and src.ipv4_mapped is not None:
        src = src.ipv4_mapped
    if isinstance(dst, ipaddress.IPv6Address) and dst.ipv4_mapped is not None:
        dst = dst.ipv4_mapped
    if src.version != dst.version:
        return V2_SIGNATURE + b"\x20\x00\x00\x00"
    if src.version == 4:
        body = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
        return V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", len(body)) + body
    body = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
    return V2_SIGNATURE + b"\x21\x21" + struct.pack("!H", len(body)) + body


def encode_v1(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """A v1 line (for tests and tools: kgw sends v2)."""
    fam = b"TCP4" if ipaddress.ip_address(source[0]).version == 4 else b"TCP6"
    return b"PROXY %s %s %s %d %d\r\n" % (fam, source[0].encode(), destination[0].encode(),
                                          source[1], destination[1])
