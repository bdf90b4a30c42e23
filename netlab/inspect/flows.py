"""The flow summary: who talked to whom, how much, through the overlay or not.

The counting is tally.py's (the hot path, struct over the mapped file); names
come from the address book once per flow, here, at the end. Two views of the
same counts:

- `flows()`: conversations by protocol and ports, inner addresses when
  encapsulated (client = the SYN sender, else whoever sent first), with
  the overlay (VXLAN, VNI, node pairs, racks crossed) they travelled.
- `ip_conversations()`: what `tshark -q -z conv,ip -d udp.port==8472,vxlan`
  prints. tshark counts an encapsulated frame in *both* IPv4 conversations
  it carries, the outer node pair and the inner pod pair, with the whole
  frame's length in each; inner frames that are not IPv4 (ARP) count in the
  outer pair only; ICMP errors' quoted headers count nowhere; an IPv4 header
  cut short or invalid (IHL < 5, total length < header) counts nowhere.
  A is the source of the pair's first frame in file order.
"""

from __future__ import annotations

import socket
from dataclasses import asdict, dataclass

from netlab.capture.addressbook import AddressBook
from netlab.capture.pcapng import PacketFile
from netlab.inspect.tally import (
    BYTES,
    FIRST,
    LAST,
    ORDER,
    PACKETS,
    PROTOCOLS,
    SYN,
    Tally,
    merge,
    scan,
)

__all__ = [
    "Conversation",
    "Flow",
    "Tally",
    "flows",
    "ip_conversations",
    "merge",
    "scan",
    "summarize",
]

# ---------------------------------------------------------------- views


@dataclass
class Flow:
    """One conversation, named; bytes are frame lengths on the wire."""

    protocol: str
    client: str
    client_port: int
    server: str
    server_port: int
    client_name: str
    server_name: str
    service: str | None
    packets: int
    bytes: int
    packets_to_server: int
    bytes_to_server: int
    packets_to_client: int
    bytes_to_client: int
    first_ns: int
    last_ns: int
    encapsulation: str | None  # "vxlan", "ipip" or None
    vni: int | None
    underlay: list[list[str]]  # [outer src, outer dst] names, client side first
    cross_rack: bool | None  # None: not tunnelled, or racks unknown
    interfaces: list[str]

    @property
    def overlay(self) -> bool:
        return self.encapsulation == "vxlan"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["overlay"] = self.overlay
        return data


@dataclass
class Conversation:
    """One line of tshark's conv,ip: A is the source of the pair's first frame."""

    a: str
    b: str
    frames_a_to_b: int = 0
    bytes_a_to_b: int = 0
    frames_b_to_a: int = 0
    bytes_b_to_a: int = 0
    first_ns: int = 0
    last_ns: int = 0

    @property
    def frames(self) -> int:
        return self.frames_a_to_b + self.frames_b_to_a

    @property
    def bytes(self) -> int:
        return self.bytes_a_to_b + self.bytes_b_to_a

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(frames=self.frames, bytes=self.bytes)
        return data


def _addr(raw: bytes | None) -> str:
    if raw is None:
        return "?"
    if len(raw) == 4:
        return socket.inet_ntoa(raw)
    return ":".join(f"{b:02x}" for b in raw)


def ip_conversations(tally: Tally) -> list[Conversation]:
    """The IPv4 conversations as tshark's conv,ip counts them, most frames first."""
    convs: dict[
        tuple, tuple[list, dict]
    ] = {}  # (low, high) -> ([order, a, first, last], by sender)
    for key, stats in tally.table.items():
        ifx, proto, src, dst, _sp, _dp, osrc, odst, _tunnel = key
        pairs = [(osrc, odst)] if osrc is not None else []
        if isinstance(proto, int):
            pairs.append((src, dst))
        to_ns = tally.ticks_to_ns[ifx]
        first, last = to_ns(stats[FIRST]), to_ns(stats[LAST])
        for s, d in pairs:
            pair = (s, d) if s <= d else (d, s)
            if pair not in convs:
                convs[pair] = ([stats[ORDER], s, first, last], {})
            head, senders = convs[pair]
            if stats[ORDER] < head[0]:
                head[0], head[1] = stats[ORDER], s
            head[2], head[3] = min(head[2], first), max(head[3], last)
            sent = senders.setdefault(s, [0, 0])
            sent[0] += stats[PACKETS]
            sent[1] += stats[BYTES]
    out = []
    for (low, high), ((_order, a, first, last), senders) in convs.items():
        b = high if a == low else low
        ab, ba = senders.get(a, [0, 0]), senders.get(b, [0, 0]) if b != a else [0, 0]
        out.append(Conversation(_addr(a), _addr(b), *ab, *ba, first, last))
    out.sort(key=lambda c: (-c.frames, -c.bytes, c.a, c.b))
    return out


def flows(tally: Tally, book: AddressBook | None = None) -> list[Flow]:
    """The conversations by protocol and ports, named, busiest first."""
    book = book or AddressBook.empty()
    groups: dict[tuple, list[tuple[tuple, list]]] = {}
    for key, stats in tally.table.items():
        _ifx, proto, src, dst, sport, dport = key[:6]
        ends = ((src or b"", sport), (dst or b"", dport))
        groups.setdefault((proto, min(ends), max(ends)), []).append((key, stats))
    return sorted(
        (_flow(tally, book, members) for members in groups.values()),
        key=lambda f: (-f.bytes, f.first_ns),
    )


def _client_first(members: list[tuple[tuple, list]]) -> tuple[bytes | None, int]:
    """(address, port) of the client: the pure-SYN sender, else the one a
    SYN-ACK went to, else the sender of the first packet."""
    for key, stats in members:
        if stats[SYN] & 1:
            return key[2], key[4]
    for key, stats in members:
        if stats[SYN] & 2:
            return key[3], key[5]
    key, _ = min(members, key=lambda m: m[1][ORDER])
    return key[2], key[4]


def _flow(tally: Tally, book: AddressBook, members: list[tuple[tuple, list]]) -> Flow:
    client = _client_first(members)
    key0 = members[0][0]
    proto = key0[1]
    c_addr, c_port = client
    if (key0[2], key0[4]) == client:
        s_addr, s_port = key0[3], key0[5]
    else:
        s_addr, s_port = key0[2], key0[4]
    up = [0, 0]
    down = [0, 0]
    first = last = None
    tunnels, underlay, ifaces = set(), [], []
    for key, stats in members:
        ifx, _p, src, _d, sport, _dp, osrc, odst, tunnel = key
        side = up if (src, sport) == client else down
        side[0] += stats[PACKETS]
        side[1] += stats[BYTES]
        to_ns = tally.ticks_to_ns[ifx]
        f, la = to_ns(stats[FIRST]), to_ns(stats[LAST])
        first = f if first is None else min(first, f)
        last = la if last is None else max(last, la)
        if tunnel is not None:
            tunnels.add(tunnel)
            pair = (osrc, odst) if side is up else (odst, osrc)
            if pair not in underlay:
                underlay.append(pair)
        if tally.interfaces[ifx] not in ifaces:
            ifaces.append(tally.interfaces[ifx])
    vni = next((t for t in tunnels if isinstance(t, int)), None)
    encapsulation = "vxlan" if vni is not None else ("ipip" if tunnels else None)
    cross = None
    for a, b in underlay:
        ra, rb = book.rack_of(_addr(a)), book.rack_of(_addr(b))
        if ra and rb:
            cross = bool(cross) or ra != rb
    client_ip, server_ip = _addr(c_addr), _addr(s_addr)
    service = book.service_for(server_ip, s_port) if isinstance(proto, int) else None
    return Flow(
        protocol=PROTOCOLS.get(proto, str(proto)),
        client=client_ip,
        client_port=c_port,
        server=server_ip,
        server_port=s_port,
        client_name=_label(book, c_addr),
        server_name=_label(book, s_addr),
        service=service,
        packets=up[0] + down[0],
        bytes=up[1] + down[1],
        packets_to_server=up[0],
        bytes_to_server=up[1],
        packets_to_client=down[0],
        bytes_to_client=down[1],
        first_ns=first or 0,
        last_ns=last or 0,
        encapsulation=encapsulation,
        vni=vni,
        underlay=[[_label(book, a), _label(book, b)] for a, b in underlay],
        cross_rack=cross,
        interfaces=ifaces,
    )


def _label(book: AddressBook, raw: bytes | None) -> str:
    if raw is None:
        return "?"
    if len(raw) == 6:
        return book.mac_label(_addr(raw))
    return book.label(_addr(raw))


def summarize(path, book: AddressBook | None = None) -> tuple[Tally, list[Flow]]:
    """Read one capture (path or stream) and name its flows."""
    book = book or AddressBook.empty()
    with PacketFile(path) as packets:
        tally = scan(packets, book.overlay_ports)
    return tally, flows(tally, book)
