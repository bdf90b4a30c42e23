"""The detailed view: one line per packet, decoded by scapy, named by the book.

Per packet: time, the interface it was captured on (from the file's
interface blocks), the underlay hop as node names with the VNI when it went
through VXLAN, the inner endpoints as pod or Service names, and what it
says: DNS questions and answers, HTTP request or status with the trace id it
carries, TCP flags, ICMP type, ARP who-has/is-at. A packet scapy cannot
decode still gets a line ("malformed: ...") and the rest of the file goes on.

Filters are checked twice: first on the struct-decoded addresses (cheap, see
frames.py), so scapy only sees packets that can still match, then on the
decoded packet.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from scapy.config import conf
from scapy.layers.dns import DNS
from scapy.layers.inet import ICMP, IP, TCP, UDP, icmpcodes, icmptypes
from scapy.layers.l2 import ARP
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Padding, Raw, bind_layers

from netlab.capture.addressbook import VXLAN_PORTS, AddressBook
from netlab.capture.pcapng import PacketFile
from netlab.inspect import frames, http
from netlab.inspect.tally import PROTOCOLS

DNS_RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
TCP_FLAG_LETTERS = (("S", 0x02), ("F", 0x01), ("R", 0x04), ("P", 0x08), ("U", 0x20), ("E", 0x40))
_bound_ports: set[int] = set()  # scapy's layer bindings are process-wide


def bind_vxlan(ports: Iterable[int]) -> None:
    """Decode UDP to or from these ports as VXLAN (scapy knows 4789 and 8472
    by default; a lab may use another port)."""
    for port in sorted(set(ports) - _bound_ports):
        bind_layers(UDP, VXLAN, dport=port)
        bind_layers(UDP, VXLAN, sport=port)
        _bound_ports.add(port)


@dataclass
class Outer:
    """The underlay hop of a tunnelled packet."""

    src: str
    dst: str
    src_name: str
    dst_name: str
    encapsulation: str  # "vxlan" or "ipip"
    vni: int | None = None


@dataclass
class PacketInfo:
    """One packet as the detailed view shows it."""

    file: str
    number: int  # 1-based, in its file
    ts_ns: int
    interface: str
    length: int  # on the wire
    captured: int
    protocol: str = ""  # the top protocol: http, dns, tcp, udp, icmp, arp, ...
    transport: str = ""  # tcp, udp, icmp, arp, ...
    src: str | None = None  # inner addresses when tunnelled
    dst: str | None = None
    sport: int | None = None
    dport: int | None = None
    src_name: str | None = None
    dst_name: str | None = None
    service: str | None = None  # the Service either end belongs to (VIP or endpoint)
    outer: Outer | None = None
    summary: str = ""
    tcp_flags: str | None = None
    dns: dict | None = None
    http: dict | None = None
    trace_id: str | None = None
    request_id: str | None = None
    malformed: str | None = None

    @property
    def outer_src(self) -> str | None:
        return self.outer.src if self.outer else None

    @property
    def outer_dst(self) -> str | None:
        return self.outer.dst if self.outer else None

    @property
    def connection(self) -> tuple | None:
        return connection(self.transport, self.src, self.sport, self.dst, self.dport)

    def to_dict(self, start_ns: int) -> dict:
        data = asdict(self)
        data["time"] = round((self.ts_ns - start_ns) / 1e9, 9)
        data["ts"] = iso(self.ts_ns)
        return data


def connection(proto, src, sport, dst, dport) -> tuple | None:
    """A direction-free key of a transport conversation (both ends, protocol)."""
    if src is None or dst is None:
        return None
    a, b = (src, sport or 0), (dst, dport or 0)
    return (proto, a, b) if a <= b else (proto, b, a)


def iso(ts_ns: int) -> str:
    stamp = datetime.fromtimestamp(ts_ns // 10**9, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{ts_ns % 10**9:09d}Z"


@dataclass
class Peek:
    """What the struct decoder tells about a packet before scapy runs."""

    transport: str
    src: str | None
    dst: str | None
    sport: int
    dport: int
    outer_src: str | None
    outer_dst: str | None
    interface: str

    @property
    def connection(self) -> tuple | None:
        return connection(self.transport, self.src, self.sport, self.dst, self.dport)


def _text_addr(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    if len(raw) == 4:
        return socket.inet_ntoa(raw)
    return ":".join(f"{b:02x}" for b in raw)


def peek(buf, offset: int, caplen: int, linktype: int, overlay, interface: str) -> Peek | None:
    found = frames.decode(buf, offset, caplen, linktype, overlay)
    if found is None:
        return None
    (proto, src, dst, sport, dport, osrc, odst, _tunnel), _flags = found
    return Peek(
        PROTOCOLS.get(proto, str(proto)),
        _text_addr(src),
        _text_addr(dst),
        sport,
        dport,
        _text_addr(osrc),
        _text_addr(odst),
        interface,
    )


class PacketReader:
    """The packets of one capture, decoded, filtered; `start_ns` is the time
    of the file's first packet (known once iteration has begun)."""

    def __init__(self, path: str | Path, book: AddressBook, filters=(), name: str | None = None):
        self.path = path
        self.name = name or str(path)
        self.book = book
        self.filters = list(filters)
        self.start_ns: int | None = None
        self.problems: list[str] = []
        self.packets = 0  # read, before filtering
        self.overlay = frozenset(book.overlay_ports) | frozenset(VXLAN_PORTS)
        bind_vxlan(self.overlay)

    def __iter__(self) -> Iterator[PacketInfo]:
        with PacketFile(self.path, self.name) as capture:
            interfaces = capture.interfaces
            try:
                for ifx, ticks, buf, offset, caplen, wirelen in capture.raw():
                    iface = interfaces[ifx]
                    ts_ns = iface.ts_ns(ticks)
                    if self.start_ns is None:
                        self.start_ns = ts_ns
                    self.packets = capture.packets
                    if self.filters:
                        glance = peek(
                            buf, offset, caplen, iface.linktype, self.overlay, iface.label
                        )
                        if glance is None or not all(f.keep(glance) for f in self.filters):
                            continue  # (frames it cannot decode have no address to match)
                    data = bytes(buf[offset : offset + caplen])
                    info = PacketInfo(
                        self.name, capture.packets, ts_ns, iface.label, wirelen, caplen
                    )
                    describe(info, data, iface.linktype, self.book, self.overlay)
                    if all(f.keep(info) for f in self.filters):
                        yield info
            finally:
                self.packets = capture.packets
                self.problems = list(capture.problems)


# ---------------------------------------------------------------- decoding


def describe(
    info: PacketInfo, data: bytes, linktype: int, book: AddressBook, overlay=VXLAN_PORTS
) -> PacketInfo:
    """Fill in `info` from the frame's bytes; never raises for bad packets."""
    try:
        cls = conf.l2types.get(linktype, Raw)
        _describe(info, cls(data), book, frozenset(overlay))
    except Exception as exc:  # scapy raises all sorts on damaged frames
        info.malformed = f"{type(exc).__name__}: {exc}"
        info.protocol = info.protocol or "malformed"
        info.summary = f"malformed: {info.malformed}"
    return info


def _describe(info: PacketInfo, pkt: Packet, book: AddressBook, overlay: frozenset) -> None:
    ip = pkt.getlayer(IP)
    layer: Packet | None = ip
    if ip is not None:
        udp = ip.getlayer(UDP)
        if (
            udp is not None
            and udp.underlayer is ip
            and isinstance(udp.payload, VXLAN)
            and (udp.sport in overlay or udp.dport in overlay)
        ):
            vx = udp.payload
            info.outer = _outer(book, ip, "vxlan", vx.vni)
            inner = vx.payload
            layer = inner.getlayer(IP) or inner.getlayer(ARP)
            if layer is None:
                info.protocol = info.transport = "vxlan"
                info.summary = f"VXLAN vni {vx.vni}: {inner.summary()}"
                return
        elif ip.proto == 4 and isinstance(ip.payload, IP):
            info.outer = _outer(book, ip, "ipip", None)
            layer = ip.payload
    else:
        layer = pkt.getlayer(ARP)
    if layer is None:
        info.protocol = info.transport = _ether_name(pkt)
        info.summary = pkt.summary()
        return
    if isinstance(layer, ARP):
        _arp(info, layer, book)
        return
    info.src, info.dst = layer.src, layer.dst
    info.src_name, info.dst_name = book.label(layer.src), book.label(layer.dst)
    l4 = layer.payload
    if isinstance(l4, TCP):
        _tcp(info, l4, book)
    elif isinstance(l4, UDP):
        _udp(info, l4, book)
    elif isinstance(l4, ICMP):
        _icmp(info, l4)
    else:
        info.protocol = info.transport = PROTOCOLS.get(layer.proto, f"ip proto {layer.proto}")
        if layer.frag:
            info.summary = f"fragment offset {layer.frag * 8} len {len(l4)}"
        elif layer.proto in PROTOCOLS:
            info.summary = f"{info.protocol} header cut short ({len(l4)} bytes)"
        else:
            info.summary = f"{info.protocol} len {len(l4)}"
    if info.captured < info.length:
        info.summary += f" (captured {info.captured} of {info.length} bytes)"


def _outer(book: AddressBook, ip, encapsulation: str, vni: int | None) -> Outer:
    return Outer(ip.src, ip.dst, book.label(ip.src), book.label(ip.dst), encapsulation, vni)


def _ether_name(pkt: Packet) -> str:
    name = getattr(pkt.payload, "name", "") or pkt.name
    return str(name).lower().replace(" ", "-")


def _ports(info: PacketInfo, l4, book: AddressBook) -> None:
    info.sport, info.dport = l4.sport, l4.dport
    info.service = book.service_for(info.dst, l4.dport) or book.service_for(info.src, l4.sport)


def _tcp(info: PacketInfo, tcp, book: AddressBook) -> None:
    info.transport = info.protocol = "tcp"
    _ports(info, tcp, book)
    flags = int(tcp.flags)
    info.tcp_flags = "".join(c for c, bit in TCP_FLAG_LETTERS if flags & bit) + (
        "." if flags & 0x10 else ""
    )
    payload = _load(tcp)
    head = http.parse(payload) if payload else None
    text = f"Flags [{info.tcp_flags}] seq {tcp.seq}"
    if flags & 0x10:
        text += f" ack {tcp.ack}"
    text += f" len {len(payload)}"
    if head is None:
        info.summary = text
        return
    info.protocol = "http"
    info.http = head.to_dict()
    info.trace_id, info.request_id = head.trace_id, head.request_id
    summary = head.summary()
    if info.trace_id:
        summary += f" trace={info.trace_id}"
    if info.request_id and info.request_id != info.trace_id:
        summary += f" request-id={info.request_id}"
    info.summary = summary


def _load(l4) -> bytes:
    """The transport payload, without Ethernet padding."""
    payload = l4.payload
    if isinstance(payload, Raw) and not isinstance(payload, Padding):
        return payload.load
    return b""


def _udp(info: PacketInfo, udp, book: AddressBook) -> None:
    info.transport = info.protocol = "udp"
    _ports(info, udp, book)
    dns = udp.getlayer(DNS)
    if dns is None or dns.underlayer is not udp:
        info.summary = f"len {max(0, (udp.len or 8) - 8)}"
        return
    info.protocol = "dns"
    info.dns = _dns(dns, book)
    info.summary = _dns_summary(info.dns)


def _dns(dns, book: AddressBook) -> dict:
    questions = [{"name": _dname(q.qname), "type": q.sprintf("%qtype%")} for q in _records(dns.qd)]
    answers = []
    for rr in _records(dns.an):
        data = rr.rdata
        if isinstance(data, bytes):
            data = _dname(data)
        elif isinstance(data, list):
            data = " ".join(_dname(x) if isinstance(x, bytes) else str(x) for x in data)
        else:
            data = str(data)
        answer = {"name": _dname(rr.rrname), "type": rr.sprintf("%type%"), "ttl": rr.ttl}
        answer["data"] = data
        named = book.label(data) if rr.type in (1, 28) else None
        answer["data_name"] = named if named != data else None
        answers.append(answer)
    return {
        "id": dns.id,
        "response": bool(dns.qr),
        "rcode": DNS_RCODES.get(dns.rcode, str(dns.rcode)),
        "questions": questions,
        "answers": answers,
    }


def _records(field) -> list:
    if field is None:
        return []
    if isinstance(field, list):
        return field
    out, rr = [], field
    while rr is not None and not isinstance(rr, Raw) and rr.name != "NoPayload":
        out.append(rr)
        rr = rr.payload if rr.payload else None
    return out


def _dname(name) -> str:
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    return str(name).rstrip(".") or "."


def _dns_summary(dns: dict) -> str:
    question = " ".join(f"{q['type']} {q['name']}" for q in dns["questions"]) or "(no question)"
    if not dns["response"]:
        return f"query {question}"
    answers = []
    for a in dns["answers"]:
        text = a["data"] if a["type"] in ("A", "AAAA") else f"{a['type']} {a['data']}"
        answers.append(f"{text} ({a['data_name']})" if a["data_name"] else text)
    tail = f" -> {', '.join(answers)}" if answers else ""
    return f"response {dns['rcode']} {question}{tail}"


def _icmp(info: PacketInfo, icmp) -> None:
    info.transport = info.protocol = "icmp"
    kind, code = int(icmp.type), int(icmp.code)
    name = icmptypes.get(kind, f"type {kind}")
    text = name
    codes = icmpcodes.get(kind)
    if codes:
        text += f" ({codes.get(code, f'code {code}')})"
    elif code:
        text += f" code {code}"
    if kind in (0, 8):
        text += f" id {icmp.id} seq {icmp.seq}"
    info.summary = text


def _arp(info: PacketInfo, arp, book: AddressBook) -> None:
    info.transport = info.protocol = "arp"
    info.src, info.dst = arp.psrc, arp.pdst
    info.src_name, info.dst_name = book.label(arp.psrc), book.label(arp.pdst)
    if arp.op == 1:
        info.summary = f"who-has {_named(arp.pdst, book)} tell {_named(arp.psrc, book)}"
    elif arp.op == 2:
        mac = arp.hwsrc
        named = book.mac_label(mac)
        who = f"{mac} ({named})" if named != mac else mac
        info.summary = f"{_named(arp.psrc, book)} is-at {who}"
    else:
        info.summary = f"op {arp.op}"


def _named(ip: str, book: AddressBook) -> str:
    label = book.label(ip)
    return ip if label == ip else f"{ip} ({label})"
