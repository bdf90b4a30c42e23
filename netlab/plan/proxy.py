"""Service VIPs as nftables rules: kube-proxy's nftables mode, with strict round-robin.

Pure: `render` turns the ready endpoints of every Service port into a
`Ruleset` (chains of rule lines, affinity sets, map elements), and
`transaction` turns a previous and a desired Ruleset into one `nft -f -`
script that changes only what differs. Chains whose rules did not change are
left alone, so the `numgen inc` counter of an unchanged Service keeps its
place in the rotation while other Services come and go.

Every node gets the same table `ip netlab`:

    nat-prerouting / nat-output (dstnat)  -> services: vmap @service-ips
        -> svc-<hash>: affinity lookups, then numgen inc mod N -> ep-<hash>
        -> ep-<hash>: hairpin mark, affinity update, dnat to endpoint
    nat-postrouting (srcnat)              -> masquerading: marked packets
    filter-prerouting / filter-output (dstnat - 10), new connections
        -> service-endpoints-check: vmap @no-endpoint-services -> reject-chain
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address

TABLE = "netlab"
FAMILY = "ip"
MASQUERADE_MARK = 0x4000
SERVICE_MAP = "service-ips"
NO_ENDPOINT_MAP = "no-endpoint-services"
REJECT_CHAIN = "reject-chain"
PROTOCOLS = {"TCP": "tcp", "UDP": "udp"}
NAME_LIMIT = 31  # kernels before 4.13 allowed 32 bytes with the NUL; ours are far shorter
COMMENT_LIMIT = 128  # the kernel keeps up to 256 bytes of user data per object
_HASH_LEN = 16  # hex digits: 64 bits, no collision among a lab's Service ports

_T = f"{FAMILY} {TABLE}"
_KEY_TYPE = "type ipv4_addr . inet_proto . inet_service : verdict"

# The fixed part, made once per namespace. Reject works at prerouting on this
# kernel (6.x), so a packet to a VIP without endpoints is refused before DNAT
# or routing; nodes' own connections are refused at output. nft 1.0.6 knows
# the names dstnat (-100) and srcnat (100) only at prerouting and postrouting.
BASE = f"""table {_T} {{
\tcomment "netlab: Service VIPs (kube-proxy nftables mode, round-robin)"
\tmap {SERVICE_MAP} {{ {_KEY_TYPE}; comment "VIP . protocol . port -> svc chain"; }}
\tmap {NO_ENDPOINT_MAP} {{ {_KEY_TYPE}; comment "Service ports with no ready endpoint"; }}
\tchain nat-prerouting {{ type nat hook prerouting priority dstnat; policy accept; jump services; }}
\tchain nat-output {{ type nat hook output priority -100; policy accept; jump services; }}
\tchain nat-postrouting {{ type nat hook postrouting priority srcnat; policy accept; jump masquerading; }}
\tchain masquerading {{
\t\tmeta mark & {MASQUERADE_MARK:#x} == 0 return
\t\tmeta mark set meta mark ^ {MASQUERADE_MARK:#x}
\t\tmasquerade fully-random
\t}}
\tchain services {{ ip daddr . meta l4proto . th dport vmap @{SERVICE_MAP}; }}
\tchain filter-prerouting {{
\t\ttype filter hook prerouting priority dstnat - 10; policy accept;
\t\tct state new jump service-endpoints-check
\t}}
\tchain filter-output {{
\t\ttype filter hook output priority -110; policy accept;
\t\tct state new jump service-endpoints-check
\t}}
\tchain service-endpoints-check {{ ip daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_MAP}; }}
\tchain {REJECT_CHAIN} {{
\t\tmeta l4proto tcp reject with tcp reset
\t\treject with icmp type port-unreachable
\t}}
}}
"""


@dataclass(frozen=True)
class Endpoint:
    ip: IPv4Address
    port: int


@dataclass(frozen=True)
class ServiceRule:
    """One port of one Service, with its ready endpoints."""

    namespace: str
    name: str
    port_name: str | None
    vip: IPv4Address
    protocol: str  # "TCP" | "UDP"
    port: int
    endpoints: tuple[Endpoint, ...]  # ready endpoints, sorted by (ip, port)
    affinity_timeout: int | None = None  # seconds, when sessionAffinity: ClientIP

    @property
    def title(self) -> str:
        """`ns/name:port-name` (or `ns/name` for an unnamed port), as kube-proxy says it."""
        base = f"{self.namespace}/{self.name}"
        return f"{base}:{self.port_name}" if self.port_name else base


@dataclass(frozen=True)
class Chain:
    name: str
    comment: str
    rules: tuple[str, ...]


@dataclass(frozen=True)
class AffinitySet:
    name: str
    timeout: int  # seconds


@dataclass(frozen=True)
class Ruleset:
    """The per-Service part of the table: what `transaction` compares."""

    chains: tuple[Chain, ...] = ()  # sorted by name
    sets: tuple[AffinitySet, ...] = ()  # sorted by name
    service_ips: tuple[str, ...] = ()  # map elements `vip . proto . port : goto svc-…`
    no_endpoints: tuple[str, ...] = ()  # map elements `vip . proto . port : goto reject-chain`


def _digest(*parts: object) -> str:
    text = "\0".join(str(p) for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_LEN]


def _service_key(rule: ServiceRule) -> tuple[str, str, str, str]:
    return (rule.namespace, rule.name, rule.port_name or "", rule.protocol)


def service_chain(rule: ServiceRule) -> str:
    """`svc-<hash>`: stable for a Service port whatever its VIP or endpoints."""
    return "svc-" + _digest(*_service_key(rule))


def endpoint_chain(rule: ServiceRule, endpoint: Endpoint) -> str:
    """`ep-<hash>`: stable while the endpoint stays in the Service port."""
    return "ep-" + _digest(*_service_key(rule), f"{endpoint.ip}:{endpoint.port}")


def affinity_set(rule: ServiceRule, endpoint: Endpoint, timeout: int) -> str:
    """`aff-<hash>`: a set's timeout cannot change in place, so it is part of the name."""
    return "aff-" + _digest(*_service_key(rule), f"{endpoint.ip}:{endpoint.port}", timeout)


def _comment(text: str) -> str:
    return text.replace('"', "'")[:COMMENT_LIMIT]


def _endpoint_chain(rule: ServiceRule, ep: Endpoint, proto: str, aff: str | None) -> Chain:
    rules = [f"ip saddr {ep.ip} meta mark set meta mark | {MASQUERADE_MARK:#x}"]
    if aff:
        rules.append(f"update @{aff} {{ ip saddr }}")
    rules.append(f"meta l4proto {proto} dnat to {ep.ip}:{ep.port}")
    comment = _comment(f"{rule.title} {rule.protocol} -> {ep.ip}:{ep.port}")
    return Chain(endpoint_chain(rule, ep), comment, tuple(rules))


def _service_chain(rule: ServiceRule, targets: list[tuple[str, str | None]]) -> Chain:
    rules = [f"ip saddr @{aff} goto {ep}" for ep, aff in targets if aff]
    if len(targets) == 1:
        rules.append(f"goto {targets[0][0]}")
    else:
        arms = ", ".join(f"{i} : goto {ep}" for i, (ep, _) in enumerate(targets))
        rules.append(f"numgen inc mod {len(targets)} vmap {{ {arms} }}")
    comment = _comment(f"{rule.title} {rule.protocol}")  # set once: only what the name hashes
    return Chain(service_chain(rule), comment, tuple(rules))


def render(rules: Sequence[ServiceRule]) -> Ruleset:
    """The desired per-Service state for every node. Raises ValueError on input
    the kernel would refuse (unknown protocol, a VIP port listed twice)."""
    chains: dict[str, Chain] = {}
    sets: dict[str, AffinitySet] = {}
    service_ips: list[str] = []
    no_endpoints: list[str] = []
    keys: dict[tuple[IPv4Address, str, int], str] = {}
    for rule in rules:
        proto = PROTOCOLS.get(rule.protocol)
        if proto is None:
            raise ValueError(f"{rule.title}: protocol {rule.protocol!r} is not TCP or UDP")
        if rule.affinity_timeout is not None and rule.affinity_timeout <= 0:
            raise ValueError(f"{rule.title}: affinity timeout must be positive")
        key = (rule.vip, proto, rule.port)
        if key in keys:
            raise ValueError(f"{rule.title}: {rule.vip}:{rule.port}/{proto} is {keys[key]}'s too")
        keys[key] = rule.title
        element = f"{rule.vip} . {proto} . {rule.port}"
        endpoints = sorted(set(rule.endpoints), key=lambda e: (e.ip, e.port))
        if not endpoints:
            no_endpoints.append(f"{element} : goto {REJECT_CHAIN}")
            continue
        targets: list[tuple[str, str | None]] = []
        for ep in endpoints:
            aff = None
            if rule.affinity_timeout is not None:
                aff = affinity_set(rule, ep, rule.affinity_timeout)
                sets[aff] = AffinitySet(aff, rule.affinity_timeout)
            chain = _endpoint_chain(rule, ep, proto, aff)
            chains[chain.name] = chain
            targets.append((chain.name, aff))
        svc = _service_chain(rule, targets)
        if svc.name in chains:
            raise ValueError(f"{rule.title}: the same Service port is listed twice")
        chains[svc.name] = svc
        service_ips.append(f"{element} : goto {svc.name}")
    return Ruleset(
        chains=tuple(chains[n] for n in sorted(chains)),
        sets=tuple(sets[n] for n in sorted(sets)),
        service_ips=tuple(sorted(service_ips)),
        no_endpoints=tuple(sorted(no_endpoints)),
    )


def _quote(text: str) -> str:
    return f'"{text}"'


def _refill(name: str, before: tuple[str, ...], after: tuple[str, ...]) -> list[str]:
    if before == after:
        return []
    lines = [f"flush map {_T} {name}"]
    if after:
        lines.append(f"add element {_T} {name} {{ {', '.join(after)} }}")
    return lines


def _deletion_order(names: Iterable[str]) -> list[str]:
    """Service chains before endpoint chains: a chain goes after whatever jumps to it."""
    return sorted(names, key=lambda n: (not n.startswith("svc-"), n))


def transaction(previous: Ruleset | None, desired: Ruleset) -> str:
    """One nft script taking a namespace from `previous` to `desired` ('' if equal).

    `previous=None` means the namespace's state is unknown: the table is
    deleted (if there) and made anew in the same transaction. nft applies a
    script atomically, so on failure the kernel still holds `previous`.
    """
    lines: list[str] = []
    if previous is None:
        lines += [f"add table {_T}", f"delete table {_T}", BASE.rstrip("\n")]
        previous = Ruleset()
    old_sets = {s.name for s in previous.sets}
    new_sets = {s.name for s in desired.sets}
    old = {c.name: c for c in previous.chains}
    new = {c.name: c for c in desired.chains}
    for s in desired.sets:
        if s.name not in old_sets:
            lines.append(
                f"add set {_T} {s.name} {{ type ipv4_addr; flags dynamic,timeout; "
                f"timeout {s.timeout}s; }}"
            )
    for c in desired.chains:
        if c.name not in old:
            lines.append(f"add chain {_T} {c.name} {{ comment {_quote(c.comment)}; }}")
    # Flush what changed or goes away first: that drops its jumps and set references.
    for name in _deletion_order(old):
        after = new.get(name)
        if after is None or old[name].rules != after.rules:
            lines.append(f"flush chain {_T} {name}")
    # Endpoint chains' rules before the service chains' that jump to them.
    for c in sorted(desired.chains, key=lambda c: (c.name.startswith("svc-"), c.name)):
        before = old.get(c.name)
        if before is None or before.rules != c.rules:
            lines += [f"add rule {_T} {c.name} {rule}" for rule in c.rules]
    lines += _refill(SERVICE_MAP, previous.service_ips, desired.service_ips)
    lines += _refill(NO_ENDPOINT_MAP, previous.no_endpoints, desired.no_endpoints)
    lines += [f"delete chain {_T} {n}" for n in _deletion_order(old.keys() - new.keys())]
    lines += [f"delete set {_T} {n}" for n in sorted(old_sets - new_sets)]
    return "\n".join(lines) + "\n" if lines else ""


def teardown() -> str:
    """Delete the table (and everything in it); fine when it is not there."""
    return f"add table {_T}\ndelete table {_T}\n"
