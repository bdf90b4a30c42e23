"""Kubernetes objects -> DNS record sets (pure: no sockets, no packing).

Follows the Kubernetes DNS-based service discovery spec (version 1.1.0) the way
CoreDNS's kubernetes plugin serves it ("pods verified" mode). Names are kept in
lower-case DNS wire format (length-prefixed labels, ending in the root's zero
byte): that is what the packet fast path looks them up by.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from labdns.wire import (
    AAAA,
    ANY,
    NOERROR,
    NXDOMAIN,
    PTR,
    REFUSED,
    REVERSE_ZONE,
    SOA,
    SRV,
    TXT,
    A,
    parent,
    reverse_name,
    to_wire,
)

SPEC_VERSION = "1.1.0"
SOA_TIMERS = (7200, 1800, 86400)  # refresh, retry, expire (CoreDNS's values)


class RR(NamedTuple):
    """One record. data: A/AAAA the address text; PTR the target (wire); SRV
    (priority, weight, port, target wire); TXT a tuple of strings; SOA
    (mname wire, rname wire, serial, refresh, retry, expire, minimum)."""

    name: bytes
    rtype: int
    ttl: int
    data: object


class Result(NamedTuple):
    """What a question resolves to, before packing."""

    rcode: int
    aa: bool
    answer: tuple[RR, ...] = ()
    authority: tuple[RR, ...] = ()
    additional: tuple[RR, ...] = ()


REFUSED_RESULT = Result(REFUSED, False)


@dataclass
class Table:
    """Every name of the served zones (empty non-terminals map to an empty dict)."""

    zone: bytes
    ttl: int
    nodes: dict[bytes, dict[int, dict]] = field(default_factory=dict)  # type -> ordered set
    soas: dict[bytes, RR] = field(default_factory=dict)  # apex -> its SOA record
    stats: dict[str, int] = field(default_factory=dict)

    def zone_of(self, name: bytes) -> bytes | None:
        """The apex of the served zone that holds `name` (label boundaries only)."""
        i, n = 0, len(name)
        while i < n:
            if name[i:] in self.soas:
                return name[i:]
            i += name[i] + 1
        return None

    def resolve(self, qname: bytes, qtype: int) -> Result:
        """Answer for a lower-case wire name, in canonical order (rotation is the caller's)."""
        apex = self.zone_of(qname)
        if apex is None:
            return REFUSED_RESULT
        node = self.nodes.get(qname)
        if node is None:
            return Result(NXDOMAIN, True, authority=(self.soas[apex],))
        ttl = self.ttl
        if qtype == ANY:
            answer = tuple(RR(qname, t, ttl, d) for t, ds in node.items() for d in ds)
        else:
            answer = tuple(RR(qname, qtype, ttl, d) for d in node.get(qtype, ()))
        if not answer:
            return Result(NOERROR, True, authority=(self.soas[apex],))
        return Result(NOERROR, True, answer, (), self._glue(answer))

    def _glue(self, answer: tuple[RR, ...]) -> tuple[RR, ...]:
        """A/AAAA records of SRV targets, for the additional section."""
        out: list[RR] = []
        seen: set[bytes] = set()
        for rr in answer:
            if rr.rtype != SRV or rr.data[3] in seen:
                continue
            target = rr.data[3]
            seen.add(target)
            node = self.nodes.get(target, {})
            for t in (A, AAAA):
                out.extend(RR(target, t, self.ttl, d) for d in node.get(t, ()))
        return tuple(out)


# -- building -----------------------------------------------------------------------


def split_objects(items: Iterable[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """Services, Endpoints and Pods out of a mixed list (by `kind`, else by shape)."""
    services, endpoints, pods = [], [], []
    for obj in items:
        if not isinstance(obj, dict):
            continue
        kind = obj.get("kind") or _guess_kind(obj)
        if kind == "Service":
            services.append(obj)
        elif kind == "Endpoints":
            endpoints.append(obj)
        elif kind == "Pod":
            pods.append(obj)
    return services, endpoints, pods


def _guess_kind(obj: dict) -> str:
    status, spec = obj.get("status"), obj.get("spec")
    if "subsets" in obj:
        return "Endpoints"
    if isinstance(status, dict) and "podIP" in status:
        return "Pod"
    if isinstance(spec, dict) and "clusterIP" in spec:
        return "Service"
    return ""


def _meta(obj: dict) -> tuple[str, str]:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    return str(meta.get("name") or ""), str(meta.get("namespace") or "default")


@functools.lru_cache(maxsize=1 << 16)
def _ip(text: str) -> str | None:
    """The canonical text of an IP address, or None if `text` is not one."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _dashed(ip: str) -> str:
    return ip.replace(".", "-").replace(":", "-")


class Part(NamedTuple):
    """What one object (a Service with its Endpoints, or a Pod) adds to the zone."""

    records: tuple[tuple[bytes, int, object], ...]  # (owner, type, data)
    ptrs: tuple[tuple[bytes, bytes], ...]  # (reverse name, target)
    names: tuple[bytes, ...]  # names that exist without records of their own (ancestors)
    kind: str  # "service", "pod" or "" (not counted)
    skipped: int


class Memo:
    """The parts of objects seen by the last build, reused while the objects are the same.

    Objects are matched by identity: a changed object must be a new dict (as
    watch events and file reloads give), never one mutated in place.
    """

    def __init__(self) -> None:
        self.zone = ""
        self.parts: dict[tuple[int, int], tuple[object, object, Part]] = {}


class _PartBuilder:
    def __init__(self, zone: str):
        self.zone = zone
        self.apex = to_wire(zone)
        self.apexes = (self.apex, to_wire(REVERSE_ZONE))
        self.records: list[tuple[bytes, int, object]] = []
        self.ptrs: list[tuple[bytes, bytes]] = []
        self.names: set[bytes] = set()
        self.skipped = 0

    def name(self, *parts: str) -> bytes | None:
        """`<part>.<part>...<zone>` with each part one label; None (and counted) if not a name."""
        try:
            if any("." in part for part in parts):
                raise ValueError("a dot inside a label")
            return to_wire(".".join((*parts, self.zone)))
        except (ValueError, UnicodeError):
            self.skipped += 1
            return None

    def add(self, name: bytes, rtype: int, data: object) -> None:
        self.records.append((name, rtype, data))

    def address(self, name: bytes, ip: str) -> None:
        self.add(name, AAAA if ":" in ip else A, ip)

    def ptr(self, ip: str, target: bytes) -> None:
        if ":" not in ip:
            self.ptrs.append((reverse_name(ip), target))

    def part(self, kind: str) -> Part:
        names, apexes = self.names, self.apexes
        for name in [r[0] for r in self.records] + [p[0] for p in self.ptrs]:
            while name not in apexes and len(name) > 1:  # ancestors up to the zone's apex
                name = parent(name)
                if name in names:
                    break
                names.add(name)
        return Part(tuple(self.records), tuple(self.ptrs), tuple(names), kind, self.skipped)


def build_table(
    services: Iterable[dict],
    endpoints: Iterable[dict],
    pods: Iterable[dict],
    zone: str = "cluster.local",
    ttl: int = 5,
    serial: int = 1,
    memo: Memo | None = None,
) -> Table:
    """All record sets for these objects; malformed objects and bad names are skipped.

    `memo` (optional) carries each object's records over to the next build, so a
    rebuild after one event costs a merge, not a recomputation of everything.
    """
    zone = zone.strip(".").lower()
    memo = memo if memo is not None else Memo()
    if memo.zone != zone:
        memo.zone, memo.parts = zone, {}
    old, new = memo.parts, {}
    eps = {_meta(e): e for e in endpoints if isinstance(e, dict)}
    parts = [_static_part(zone)]
    for obj, make in [(s, _service) for s in services] + [(p, _pod) for p in pods]:
        ep = eps.get(_meta(obj)) if make is _service else None
        key = (id(obj), id(ep))
        hit = old.get(key)
        if hit is None or hit[0] is not obj or hit[1] is not ep:
            b = _PartBuilder(zone)
            try:
                kind = make(b, obj, ep)
            except (AttributeError, TypeError, ValueError):  # malformed: skip it, serve the rest
                b = _PartBuilder(zone)
                b.skipped, kind = 1, ""
            hit = (obj, ep, b.part(kind))
        new[key] = hit
        parts.append(hit[2])
    memo.parts = new
    return _merge(parts, zone, ttl, serial)


def _static_part(zone: str) -> Part:
    b = _PartBuilder(zone)
    for sub in ("svc", "pod"):
        b.names.add(b.name(sub) or b.apex)
    b.add(b.name("dns-version") or b.apex, TXT, (SPEC_VERSION,))
    return b.part("")


def _service(b: _PartBuilder, svc: dict, endpoints: dict | None) -> str:
    name, ns = _meta(svc)
    fqdn = b.name(name, ns, "svc")
    ns_node = b.name(ns, "svc")
    if fqdn is None or ns_node is None:
        return ""
    b.names.add(ns_node)
    spec = svc.get("spec") or {}
    cluster_ip = str(spec.get("clusterIP") or "")
    if cluster_ip == "None":
        _headless(b, fqdn, endpoints or {})
    elif cluster_ip:
        _cluster_ip(b, fqdn, spec, cluster_ip)
    return "service"


def _pod(b: _PartBuilder, pod: dict, _: object) -> str:
    _, ns = _meta(pod)
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return ""  # a finished pod no longer holds its IP
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return ""
    ips = [p.get("ip") for p in status.get("podIPs") or [] if isinstance(p, dict)]
    ns_node = b.name(ns, "pod")
    if ns_node is None:
        return ""
    b.names.add(ns_node)
    for text in ips or [status.get("podIP")]:
        ip = _ip(str(text))
        fqdn = b.name(_dashed(ip), ns, "pod") if ip else None
        if ip and fqdn:
            b.address(fqdn, ip)
            b.ptr(ip, fqdn)
    return "pod"


def _port(port: dict) -> int | None:
    value = port.get("port")
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535:
        return value
    return None


def _cluster_ip(b: _PartBuilder, fqdn: bytes, spec: dict, cluster_ip: str) -> None:
    for text in spec.get("clusterIPs") or [cluster_ip]:
        ip = _ip(str(text))
        if ip is not None:
            b.address(fqdn, ip)
            b.ptr(ip, fqdn)
    for port in spec.get("ports") or []:
        srv = _srv_name(b, port, fqdn)
        if srv is not None and _port(port) is not None:
            b.add(srv, SRV, (0, 100, _port(port), fqdn))


def _srv_name(b: _PartBuilder, port: dict, fqdn: bytes) -> bytes | None:
    """`_<port>._<proto>.<svc fqdn>` for a named port, else None."""
    pname = str(port.get("name") or "").lower()
    proto = str(port.get("protocol") or "TCP").lower()
    if not pname:
        return None
    try:
        name = to_wire(f"_{pname}._{proto}")[:-1] + fqdn
    except (ValueError, UnicodeError):
        name = b""
    if not 0 < len(name) <= 255:
        b.skipped += 1
        return None
    return name


def _headless(b: _PartBuilder, fqdn: bytes, endpoints: dict) -> None:
    srvs: dict[bytes, dict[tuple[int, bytes], None]] = {}
    for subset in endpoints.get("subsets") or []:
        ports = subset.get("ports") or []
        for addr in subset.get("addresses") or []:
            ip = _ip(str(addr.get("ip")))
            if ip is None:
                continue
            host = str(addr.get("hostname") or _dashed(ip)).lower()
            try:
                target = to_wire(host)[:-1] + fqdn
            except (ValueError, UnicodeError):
                target = b""
            if not 0 < len(target) <= 255 or "." in host:
                b.skipped += 1
                continue
            b.address(fqdn, ip)
            b.address(target, ip)
            b.ptr(ip, target)
            for port in ports:
                srv = _srv_name(b, port, fqdn)
                if srv is not None and _port(port) is not None:
                    srvs.setdefault(srv, {})[(_port(port), target)] = None
    for srv, entries in srvs.items():
        weight = 100 // len(entries)  # CoreDNS: the weights of one priority share 100
        for port, target in entries:
            b.add(srv, SRV, (0, weight, port, target))


def _merge(parts: list[Part], zone: str, ttl: int, serial: int) -> Table:
    apex, rev_apex = to_wire(zone), to_wire(REVERSE_ZONE)
    table = Table(zone=apex, ttl=ttl)
    nodes: dict[bytes, dict[int, dict]] = table.nodes
    counts = {"service": 0, "pod": 0, "": 0}
    skipped = 0
    claimed: set[bytes] = set()  # reverse names a Service or endpoint answers for
    for part in parts:
        counts[part.kind] += 1
        skipped += part.skipped
        for name, rtype, data in part.records:
            node = nodes.get(name)
            if node is None:
                node = nodes[name] = {}
            rdatas = node.get(rtype)
            if rdatas is None:
                rdatas = node[rtype] = {}
            rdatas[data] = None  # an ordered set: first seen first
        if part.kind == "service":
            claimed.update(rev for rev, _ in part.ptrs)
    for part in parts:  # PTRs: Services and endpoints first; pod names only for the rest
        for rev, target in part.ptrs:
            if part.kind == "service" or rev not in claimed:
                nodes.setdefault(rev, {}).setdefault(PTR, {})[target] = None
    mname = to_wire("ns.dns." + zone) if len(apex) < 248 else apex
    rname = to_wire("hostmaster." + zone) if len(apex) < 244 else apex
    soa = (mname, rname, serial & 0xFFFFFFFF, *SOA_TIMERS, ttl)
    for z in (apex, rev_apex):
        table.soas[z] = RR(z, SOA, ttl, soa)
        nodes.setdefault(z, {})[SOA] = {soa: None}
    for part in parts:  # names that exist without records of their own
        for name in part.names:
            nodes.setdefault(name, {})
    records = sum(len(ds) for node in nodes.values() for ds in node.values())
    table.stats = {
        "services": counts["service"],
        "pods": counts["pod"],
        "names": len(nodes),
        "records": records,
        "skipped": skipped,
    }
    return table
