"""The lab's hot rtnetlink messages, packed with struct and sent in batches.

A 64-node lab needs 63 peers x 3 overlay entries per node, and every pod a
veth, an address, a route and two neighbour entries; through pyroute2's
request pipeline each message costs about 0.25 ms of Python, which was most
of a big lab's bring-up. These few message shapes are fixed, so they are
packed here, many to one datagram, and the kernel's ACKs are read back in
bulk (every error is still reported, per message).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from netlab.errors import RealizeError
from netlab.plan import PeerEntry
from netlab.realize import netns
from netlab.realize.netlink import RTNH_F_ONLINK

RTM_NEWLINK = 16
RTM_GETLINK = 18
RTM_SETLINK = 19
RTM_NEWADDR = 20
RTM_NEWROUTE = 24
RTM_NEWNEIGH = 28
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NEW_FLAGS = NLM_F_REQUEST | NLM_F_ACK | NLM_F_REPLACE | NLM_F_CREATE
CREATE_FLAGS = NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE
SET_FLAGS = NLM_F_REQUEST | NLM_F_ACK

IFF_UP = 0x1
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_MASTER = 10
IFLA_PROTINFO = 12
IFLA_LINKINFO = 18
IFLA_BRPORT_MODE = 4  # hairpin
NLA_F_NESTED = 0x8000
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
IFA_ADDRESS = 1
IFA_LOCAL = 2

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


def _message(kind: int, body: bytes, flags: int = NEW_FLAGS) -> bytes:
    """A netlink message; its sequence number is stamped when it is sent."""
    return struct.pack("=IHHII", 16 + len(body), kind, flags, 0, 0) + body


def _ifinfo(index: int = 0, up: bool = False) -> bytes:
    flags = IFF_UP if up else 0
    return struct.pack("=BBHiII", socket.AF_UNSPEC, 0, 0, index, flags, IFF_UP if up else 0)


def _name(text: str) -> bytes:
    return text.encode() + b"\0"


def _mac(text: str) -> bytes:
    return bytes(int(part, 16) for part in text.split(":"))


def neighbour(ifindex: int, ip: IPv4Address, mac: str) -> bytes:
    """`ip neigh replace IP lladdr MAC dev IFINDEX nud permanent`"""
    body = struct.pack("=BBHiHBB", socket.AF_INET, 0, 0, ifindex, NUD_PERMANENT, 0, 0)
    body += _attr(NDA_DST, ip.packed) + _attr(NDA_LLADDR, _mac(mac))
    return _message(RTM_NEWNEIGH, body)


def fdb(ifindex: int, mac: str, dst: IPv4Address) -> bytes:
    """`bridge fdb replace MAC dev IFINDEX dst DST self permanent`"""
    body = struct.pack("=BBHiHBB", AF_BRIDGE, 0, 0, ifindex, NUD_PERMANENT, NTF_SELF, 0)
    body += _attr(NDA_LLADDR, _mac(mac)) + _attr(NDA_DST, dst.packed)
    return _message(RTM_NEWNEIGH, body)


def veth(
    ifname: str, master: int, mtu: int, peer_ifname: str, peer_mac: str, peer_netns_fd: int
) -> bytes:
    """`ip link add IFNAME mtu MTU master MASTER up type veth peer PEER address
    PEER_MAC mtu MTU netns FD`: both ends made, this one enslaved and up, in one
    request. (The peer cannot be set up here: a veth opened before its pair
    is joined fails with ENOTCONN.)"""
    peer = _ifinfo() + b"".join(
        [
            _attr(IFLA_IFNAME, _name(peer_ifname)),
            _attr(IFLA_MTU, struct.pack("=I", mtu)),
            _attr(IFLA_ADDRESS, _mac(peer_mac)),
            _attr(IFLA_NET_NS_FD, struct.pack("=I", peer_netns_fd)),
        ]
    )
    info = _attr(IFLA_INFO_KIND, _name("veth")) + _attr(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer))
    body = _ifinfo(up=True) + b"".join(
        [
            _attr(IFLA_IFNAME, _name(ifname)),
            _attr(IFLA_MTU, struct.pack("=I", mtu)),
            _attr(IFLA_MASTER, struct.pack("=I", master)),
            _attr(IFLA_LINKINFO, info),
        ]
    )
    return _message(RTM_NEWLINK, body, CREATE_FLAGS)


def hairpin(index: int) -> bytes:
    """`bridge link set dev INDEX hairpin on`: a frame may leave by the port it
    came in on (a pod reaching its own Service through br_netfilter's DNAT)."""
    body = struct.pack("=BBHiII", AF_BRIDGE, 0, 0, index, 0, 0)
    body += _attr(IFLA_PROTINFO | NLA_F_NESTED, _attr(IFLA_BRPORT_MODE, b"\1"))
    return _message(RTM_SETLINK, body, SET_FLAGS)


def link_up(index: int) -> bytes:
    """`ip link set dev INDEX up`"""
    return _message(RTM_NEWLINK, _ifinfo(index, up=True), SET_FLAGS)


def get_link(ifname: str) -> bytes:
    """`ip link show IFNAME` (the answer carries its index)."""
    return _message(RTM_GETLINK, _ifinfo() + _attr(IFLA_IFNAME, _name(ifname)), NLM_F_REQUEST)


def address(index: int, interface: IPv4Interface) -> bytes:
    """`ip address replace ADDRESS/PREFIX dev INDEX`"""
    body = struct.pack("=BBBBI", socket.AF_INET, interface.network.prefixlen, 0, 0, index)
    body += _attr(IFA_LOCAL, interface.ip.packed) + _attr(IFA_ADDRESS, interface.ip.packed)
    return _message(RTM_NEWADDR, body)


def route(dst: IPv4Network, gateway: IPv4Address, oif: int | None, onlink: bool) -> bytes:
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
    if dst.prefixlen:
        body += _attr(RTA_DST, dst.network_address.packed)
    body += _attr(RTA_GATEWAY, gateway.packed)
    if oif is not None:
        body += _attr(RTA_OIF, struct.pack("=I", oif))
    return _message(RTM_NEWROUTE, body)


def peer_messages(entries: Iterable[PeerEntry], vtep: int) -> list[bytes]:
    """Flannel's order per peer: neighbour, FDB, onlink route (or one plain route)."""
    messages = []
    for entry in entries:
        if entry.kind == "direct":
            messages.append(route(entry.pod_cidr, entry.underlay_ip, None, onlink=False))
            continue
        messages.append(neighbour(vtep, entry.vtep_ip, entry.vtep_mac))
        messages.append(fdb(vtep, entry.vtep_mac, entry.underlay_ip))
        messages.append(route(entry.pod_cidr, entry.vtep_ip, vtep, onlink=True))
    return messages


class Channel:
    """One NETLINK_ROUTE socket in a namespace, for batches of the messages above."""

    def __init__(self, netns_path: str | os.PathLike) -> None:
        self.path = str(netns_path)
        self.sock = netns.netlink_socket(netns_path)
        self.sock.bind((0, 0))
        self.seq = 0

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def request(self, messages: Sequence[bytes]) -> list[int]:
        """Send the messages in order; the errno of each (0 = done)."""
        codes = [0] * len(messages)
        for start in range(0, len(messages), BATCH):
            chunk = messages[start : start + BATCH]
            first = self.seq + 1
            stamped = bytearray()
            for offset, message in enumerate(chunk):
                stamped += message
                struct.pack_into("=I", stamped, len(stamped) - len(message) + 8, first + offset)
            self.seq += len(chunk)
            self.sock.send(stamped)
            for seq, code, _ in self._answers(set(range(first, first + len(chunk)))):
                codes[start + seq - first] = code
        return codes

    def send(self, messages: Sequence[bytes], what: str = "entries") -> None:
        """Send the messages; raise if the kernel refused any of them."""
        codes = self.request(messages)
        failed = [(i, code) for i, code in enumerate(codes) if code]
        if failed:
            index, code = failed[0]
            raise RealizeError(
                f"the kernel refused {len(failed)} of {len(messages)} {what} in {self.path} "
                f"(first: message {index + 1}: {errno.errorcode.get(code, code)})"
            )

    def link_index(self, ifname: str) -> int:
        """The index of the named link in this namespace."""
        self.seq += 1
        message = bytearray(get_link(ifname))
        struct.pack_into("=I", message, 8, self.seq)
        self.sock.send(message)
        for _, code, index in self._answers({self.seq}):
            if code:
                raise RealizeError(
                    f"no link {ifname} in {self.path}: {errno.errorcode.get(code, code)}"
                )
            return index
        raise RealizeError(f"no answer about link {ifname} in {self.path}")

    def _answers(self, pending: set[int]) -> list[tuple[int, int, int]]:
        """Read until every sequence number in `pending` is answered:
        (seq, errno, ifindex of a link answer)."""
        answers = []
        while pending:
            data = self.sock.recv(1 << 16)
            offset = 0
            while offset + 16 <= len(data):
                length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", data, offset)
                if seq in pending and kind == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", data, offset + 16)
                    pending.discard(seq)
                    answers.append((seq, -code, 0))
                elif seq in pending and kind == RTM_NEWLINK:
                    (index,) = struct.unpack_from("=i", data, offset + 20)
                    pending.discard(seq)
                    answers.append((seq, 0, index))
                offset += (length + 3) & ~3 if length else len(data)
        return answers


def send(netns_path: str, messages: Sequence[bytes], what: str = "overlay entries") -> None:
    """Send the messages in batches on one netlink socket in the namespace;
    raise if the kernel refused any of them."""
    with Channel(netns_path) as channel:
        channel.send(messages, what)
