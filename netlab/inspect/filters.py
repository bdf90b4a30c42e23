"""`--filter EXPR` of `netlab inspect`: what each means, for packets and flows.

Filters are ANDed. Each one answers for a packet twice: first for a `Peek`
(addresses and ports from the struct decoder, before scapy runs: True means
"may match"), then for the decoded `PacketInfo`. Names resolve through the
capture's address book; a bare IP address works for pod= and node= too.
`trace=ID` needs a first pass over each file (see `for_file`): it keeps every
packet of the TCP connections whose HTTP messages carry the id (W3C or B3
trace id, or x-request-id).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from netlab.capture.addressbook import AddressBook
from netlab.capture.pcapng import PacketFile
from netlab.errors import NetlabError

VALID = (
    "pod=NAME",
    "service=NAME",
    "node=NAME",
    "trace=ID",
    "dns",
    "http",
    "proto=tcp|udp|icmp|arp",
    "port=N",
)
PROTOS = ("tcp", "udp", "icmp", "arp")


def _is_peek(p) -> bool:
    return not hasattr(p, "summary")


class Filter:
    """Keeps a packet (or a Peek of one) or a flow; `text` is how it was written."""

    text: str

    def keep(self, p) -> bool:
        raise NotImplementedError

    def keep_flow(self, flow) -> bool:
        raise NetlabError(f"filter {self.text} applies to packets, not to --flows")

    def for_file(self, path: str | Path, overlay) -> Filter:
        """The filter to use on one file (most need no preparation)."""
        return self


@dataclass
class Addresses(Filter):
    """pod=NAME: either end (inner) is one of the pod's addresses."""

    text: str
    ips: frozenset[str]

    def keep(self, p) -> bool:
        return p.src in self.ips or p.dst in self.ips

    def keep_flow(self, flow) -> bool:
        return flow.client in self.ips or flow.server in self.ips


@dataclass
class Service(Filter):
    """service=NAME: to or from the Service's VIP:port or its endpoints' target ports."""

    text: str
    label: str
    book: AddressBook

    def _of(self, ip, port) -> bool:
        return ip is not None and port is not None and self.book.service_for(ip, port) == self.label

    def keep(self, p) -> bool:
        return self._of(p.dst, p.dport) or self._of(p.src, p.sport)

    def keep_flow(self, flow) -> bool:
        return flow.service == self.label


@dataclass
class Node(Filter):
    """node=NAME: through the node's underlay address (the outer header),
    captured on one of its interfaces, or to/from its pods, VTEP and cni0."""

    text: str
    name: str
    underlay: frozenset[str]  # the node's own address
    inner: frozenset[str]  # its pods, VTEP, cni0

    def __post_init__(self) -> None:
        self.ends = self.inner | self.underlay

    def _interface(self, label: str) -> bool:
        return label.startswith((f"node/{self.name}:", f"{self.name}:"))

    def keep(self, p) -> bool:
        return (
            p.outer_src in self.underlay
            or p.outer_dst in self.underlay
            or p.src in self.ends
            or p.dst in self.ends
            or self._interface(p.interface)
        )

    def keep_flow(self, flow) -> bool:
        return (
            bool({flow.client, flow.server} & self.ends)
            or any(f"node/{self.name}" in pair for pair in flow.underlay)
            or any(self._interface(i) for i in flow.interfaces)
        )


@dataclass
class Dns(Filter):
    text: str = "dns"

    def keep(self, p) -> bool:
        if _is_peek(p):
            return 53 in (p.sport, p.dport) or 5353 in (p.sport, p.dport)
        return p.dns is not None

    def keep_flow(self, flow) -> bool:
        return 53 in (flow.client_port, flow.server_port)


@dataclass
class Http(Filter):
    text: str = "http"

    def keep(self, p) -> bool:
        return p.transport == "tcp" if _is_peek(p) else p.http is not None


@dataclass
class Proto(Filter):
    text: str
    name: str

    def keep(self, p) -> bool:
        return p.transport == self.name

    def keep_flow(self, flow) -> bool:
        return flow.protocol == self.name


@dataclass
class Port(Filter):
    text: str
    port: int

    def keep(self, p) -> bool:
        return self.port in (p.sport, p.dport)

    def keep_flow(self, flow) -> bool:
        return self.port in (flow.client_port, flow.server_port)


@dataclass
class Trace(Filter):
    """trace=ID: per file, the connections whose HTTP messages carry ID."""

    text: str
    trace: str
    connections: frozenset | None = None  # set by for_file

    def keep(self, p) -> bool:
        if self.connections is None:
            raise RuntimeError("trace filter used before for_file()")
        return p.connection in self.connections

    def for_file(self, path: str | Path, overlay) -> Trace:
        return Trace(self.text, self.trace, frozenset(carrying(path, self.trace, overlay)))


def carrying(path: str | Path, trace: str, overlay) -> set[tuple]:
    """The connections of a capture whose packets carry the trace id (or
    x-request-id) in an HTTP head: a byte search over the mapped file, and
    scapy only on the packets that contain the id."""
    from netlab.inspect.packets import PacketInfo, describe  # scapy: only when needed

    wanted = trace.strip()
    needles = {wanted.encode(), wanted.lower().encode()}
    found: set[tuple] = set()
    book = AddressBook.empty()
    with PacketFile(path) as capture:
        for ifx, _ticks, buf, offset, caplen, wirelen in capture.raw():
            end = offset + caplen
            if not any(buf.find(n, offset, end) >= 0 for n in needles):
                continue
            iface = capture.interfaces[ifx]
            info = PacketInfo(str(path), capture.packets, 0, iface.label, wirelen, caplen)
            describe(info, bytes(buf[offset:end]), iface.linktype, book, overlay)
            ids = {info.trace_id, info.request_id}
            if (wanted in ids or wanted.lower() in ids) and info.connection:
                found.add(info.connection)
    return found


# ---------------------------------------------------------------- parsing


def parse(expressions: list[str] | None, book: AddressBook) -> list[Filter]:
    """The filters of `--filter EXPR ...`, names resolved through the book."""
    return [parse_one(e, book) for e in expressions or []]


def parse_one(expr: str, book: AddressBook) -> Filter:
    text = expr.strip()
    key, sep, value = text.partition("=")
    key, value = key.strip().lower(), value.strip()
    if not sep and key in ("dns", "http"):
        return Dns() if key == "dns" else Http()
    if sep and value:
        if key == "pod":
            return Addresses(text, _pod_ips(value, book, text))
        if key == "service":
            return Service(text, _service(value, book, text), book)
        if key == "node":
            return _node(value, book, text)
        if key == "trace":
            return Trace(text, value)
        if key == "proto" and value.lower() in PROTOS:
            return Proto(text, value.lower())
        if key == "port" and value.isdigit() and 0 <= int(value) <= 65535:
            return Port(text, int(value))
    raise NetlabError(f"unknown filter {expr!r}; valid filters: {', '.join(VALID)}")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _no_such(kind: str, name: str, text: str, book: AddressBook, known: list[str]) -> NetlabError:
    if book.is_empty():
        return NetlabError(
            f"filter {text}: no address book, so names are unavailable; pass --names"
            f" BOOK.json (written beside a capture as FILE.names.json) or use an address"
        )
    listing = ", ".join(sorted(known)[:12]) + (" ..." if len(known) > 12 else "")
    return NetlabError(f"filter {text}: no {kind} {name!r} in the address book (known: {listing})")


def _pod_ips(name: str, book: AddressBook, text: str) -> frozenset[str]:
    if _is_ip(name):
        return frozenset({name})
    pods = {ip: e for ip, e in book.addresses.items() if e.kind == "pod"}
    ips = {
        ip
        for ip, e in pods.items()
        if name in (e.name, e.label, f"{e.namespace}/{e.name}", f"pod/{e.name}")
    }
    if not ips:
        raise _no_such("pod", name, text, book, [e.label for e in pods.values()])
    return frozenset(ips)


def _service(name: str, book: AddressBook, text: str) -> str:
    labels = [s.label for s in book.services]
    candidates = (name, f"svc/{name}", f"svc/{name.removeprefix('default/')}")
    for label in labels:
        if label in candidates:
            return label
    raise _no_such("service", name, text, book, labels)


def _node(name: str, book: AddressBook, text: str) -> Node:
    name = name.removeprefix("node/")
    if _is_ip(name):
        entry = book.lookup(name)
        if entry is None or entry.kind != "node":
            return Node(text, name, frozenset({name}), frozenset())
        name = entry.name
    underlay = {ip for ip, e in book.addresses.items() if e.kind == "node" and e.name == name}
    inner = {
        ip
        for ip, e in book.addresses.items()
        if e.kind in ("pod", "vtep", "cni") and e.node == name
    }
    if not underlay and not inner:
        nodes = [e.name for e in book.addresses.values() if e.kind == "node"]
        if book.is_empty():
            return Node(text, name, frozenset(), frozenset())  # interface names still match
        raise _no_such("node", name, text, book, nodes)
    return Node(text, name, frozenset(underlay), frozenset(inner))
