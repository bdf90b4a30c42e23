"""DNS constants and names in wire format (length-prefixed labels, then the root's zero byte).

Names inside labdns are lower-case wire bytes: that is what the packet fast
path compares, and it makes zone matching fall on label boundaries by itself.
"""

from __future__ import annotations

import functools

# RR types and response codes used here
A, NS, SOA, PTR, TXT, AAAA, SRV, OPT = 1, 2, 6, 12, 16, 28, 33, 41
IXFR, AXFR, ANY = 251, 252, 255
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16

REVERSE_ZONE = "in-addr.arpa"


@functools.lru_cache(maxsize=1 << 16)  # names repeat across rebuilds
def to_wire(name: str) -> bytes:
    """`a.b.` or `a.b` -> b'\\x01a\\x01b\\x00' (lower-cased). ValueError if not a valid name."""
    name = name.strip(".").lower()
    if not name:
        return b"\x00"
    out = bytearray()
    for label in name.split("."):
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad label {label!r} in {name!r}")
        out.append(len(raw))
        out += raw
    out.append(0)
    if len(out) > 255:
        raise ValueError(f"name too long: {name!r}")
    return bytes(out)


def labels(wire: bytes) -> list[bytes]:
    """The labels of a wire-format name (no compression pointers)."""
    out, i = [], 0
    while wire[i]:
        out.append(wire[i + 1 : i + 1 + wire[i]])
        i += wire[i] + 1
    return out


def to_text(wire: bytes) -> str:
    """b'\\x01a\\x01b\\x00' -> 'a.b.' (for logs, tests and dnslib)."""
    return ".".join(label.decode("ascii", "backslashreplace") for label in labels(wire)) + "."


def parent(wire: bytes) -> bytes:
    """The name without its first label (the root is its own parent)."""
    return wire[wire[0] + 1 :] if wire[0] else wire


@functools.lru_cache(maxsize=1 << 16)
def reverse_name(ip: str) -> bytes:
    """`10.244.1.5` -> wire of `5.1.244.10.in-addr.arpa`."""
    return to_wire(".".join(reversed(ip.split("."))) + "." + REVERSE_ZONE)
