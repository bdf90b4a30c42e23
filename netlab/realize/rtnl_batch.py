"""Flannel's per-peer entries, encoded once and sent in batches.

A node of a 64-node lab needs 63 peers x 3 entries; through pyroute2's
request pipeline each message costs about 0.25 ms of Python, and the overlay
of a big lab took half its bring-up time. These three message shapes are
fixed, so they are packed here with struct, many to one datagram, and the
kernel's ACKs are read back in bulk (every error is still reported).
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network

from netlab.errors import RealizeError
from netlab.plan import PeerEntry
from netlab.realize import netns
from netlab.realize.netlink import RTNH_F_ONLINK

RTM_NEWROUTE = 24
RTM_NEWNEIGH = 28
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_REPLACE = 0x100
NLM_F_CREATE = 0x400
NEW_FLAGS = NLM_F_REQUEST | NLM_F_ACK | NLM_F_REPLACE | NLM_F_CREATE

AF_BRIDGE = 7
NDA_DST = 1
NDA_LLADDR = 2
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RT_TABLE_MAIN = 254
RTPROT_STATIC = 4
RT_SCOPE_UNIVERSE = 0
RTN_UNICAST = 1

BATCH = 64  # messages per datagram; their ACKs fit the default receive buffer


def _attr(kind: int, data: bytes) -> bytes:
    length = 4 + len(data)
    return struct.pack("=HH", length, kind) + data + b"\0" * (-length % 4)


def _message(kind: int, seq: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, NEW_FLAGS, seq, 0) + body


def _mac(text: str) -> bytes:
    return bytes(int(part, 16) for part in text.split(":"))


def neighbour(seq: int, ifindex: int, ip: IPv4Address, mac: str) -> bytes:
    """`ip neigh replace IP lladdr MAC dev IFINDEX nud permanent`"""
    body = struct.pack("=BBHiHBB", socket.AF_INET, 0, 0, ifindex, NUD_PERMANENT, 0, 0)
    body += _attr(NDA_DST, ip.packed) + _attr(NDA_LLADDR, _mac(mac))
    return _message(RTM_NEWNEIGH, seq, body)


def fdb(seq: int, ifindex: int, mac: str, dst: IPv4Address) -> bytes:
    """`bridge fdb replace MAC dev IFINDEX dst DST self permanent`"""
    body = struct.pack("=BBHiHBB", AF_BRIDGE, 0, 0, ifindex, NUD_PERMANENT, NTF_SELF, 0)
    body += _attr(NDA_LLADDR, _mac(mac)) + _attr(NDA_DST, dst.packed)
    return _message(RTM_NEWNEIGH, seq, body)


def route(seq: int, dst: IPv4Network, gateway: IPv4Address, oif: int | None, onlink: bool) -> bytes:
    """`ip route replace DST via GATEWAY [dev OIF] [onlink]`"""
    flags = RTNH_F_ONLINK if onlink else 0
    body = struct.pack(
        "=BBBBBBBBI",
        socket.AF_INET,
        dst.prefixlen,
        0,
        0,
        RT_TABLE_MAIN,
        RTPROT_STATIC,
        RT_SCOPE_UNIVERSE,
        RTN_UNICAST,
        flags,
    )
    body += _attr(RTA_DST, dst.network_address.packed) + _attr(RTA_GATEWAY, gateway.packed)
    if oif is not None:
        body += _attr(RTA_OIF, struct.pack("=I", oif))
    return _message(RTM_NEWROUTE, seq, body)


def peer_messages(entries: Iterable[PeerEntry], vtep: int, first_seq: int = 1) -> list[bytes]:
    """Flannel's order per peer: neighbour, FDB, onlink route (or one plain route)."""
    messages = []
    seq = first_seq
    for entry in entries:
        if entry.kind == "direct":
            messages.append(route(seq, entry.pod_cidr, entry.underlay_ip, None, onlink=False))
            seq += 1
            continue
        messages.append(neighbour(seq, vtep, entry.vtep_ip, entry.vtep_mac))
        messages.append(fdb(seq + 1, vtep, entry.vtep_mac, entry.underlay_ip))
        messages.append(route(seq + 2, entry.pod_cidr, entry.vtep_ip, vtep, onlink=True))
        seq += 3
    return messages


def _acks(sock: socket.socket, pending: set[int]) -> list[tuple[int, int]]:
    """Read ACKs until every sequence number in `pending` is answered."""
    errors = []
    while pending:
        data = sock.recv(1 << 16)
        offset = 0
        while offset + 16 <= len(data):
            length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", data, offset)
            if kind == NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", data, offset + 16)
                pending.discard(seq)
                if code:
                    errors.append((seq, -code))
            offset += (length + 3) & ~3 if length else len(data)
    return errors


def send(netns_path: str, messages: Sequence[bytes]) -> None:
    """Send the messages in batches on one netlink socket in the namespace;
    raise if the kernel refused any of them."""
    sock = netns.netlink_socket(netns_path)
    try:
        sock.bind((0, 0))
        errors = []
        for start in range(0, len(messages), BATCH):
            chunk = messages[start : start + BATCH]
            sock.send(b"".join(chunk))
            errors += _acks(sock, {struct.unpack_from("=I", m, 8)[0] for m in chunk})
    finally:
        sock.close()
    if errors:
        seq, code = errors[0]
        raise RealizeError(
            f"the kernel refused {len(errors)} overlay entries in {netns_path} "
            f"(first: message {seq}: {errno.errorcode.get(code, code)})"
        )
