"""Service planning: ClusterIP allocation, target ports, the DNS Service. Pure functions."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from netlab.errors import NetlabError
from netlab.plan import (
    DNS_SERVICE,
    ClusterIPUnavailable,
    ServiceNetworkFull,
    allocate_cluster_ips,
    dns_ip,
    dns_service_spec,
    resolve_target_port,
)
from netlab.plan.addressing import AddressExhausted
from netlab.plan.services import hash_offset
from netlab.spec import (
    ContainerPort,
    ContainerSpec,
    DnsSpec,
    LabBuilder,
    ServicePort,
    ServiceSpec,
)

NET = IPv4Network("10.96.0.0/12")
SMALL = IPv4Network("10.96.0.0/28")  # 14 hosts, one of them (.10) the DNS address


def svc(name: str, namespace: str = "default", **fields) -> ServiceSpec:
    return ServiceSpec(name, namespace, (ServicePort(80, 80),), **fields)


def ip(text: str) -> IPv4Address:
    return IPv4Address(text)


@pytest.mark.parametrize(
    ("network", "expected"),
    [
        ("10.96.0.0/12", "10.96.0.10"),
        ("172.20.0.0/16", "172.20.0.10"),
        ("192.168.100.0/28", "192.168.100.10"),
    ],
)
def test_dns_ip(network: str, expected: str) -> None:
    assert dns_ip(IPv4Network(network)) == ip(expected)


def test_dns_service_spec() -> None:
    spec = dns_service_spec(DnsSpec())
    assert (spec.namespace, spec.name) == DNS_SERVICE == ("kube-system", "kube-dns")
    assert spec.ports == (
        ServicePort(53, 53, "UDP", "dns"),
        ServicePort(53, 53, "TCP", "dns-tcp"),
    )
    assert dict(spec.selector) == {"k8s-app": "kube-dns"}
    assert (spec.headless, spec.cluster_ip, spec.session_affinity) == (False, None, "None")
    assert spec.manifest["metadata"] == {
        "name": "kube-dns",
        "namespace": "kube-system",
        "labels": {"k8s-app": "kube-dns"},
    }
    assert dns_service_spec(DnsSpec(zone="lab", ttl=1)) == spec


def test_dns_service_passes_the_spec_validator() -> None:
    """Its manifest is a valid Service (in a lab where the DNS name is free)."""
    b = LabBuilder("t", dns=False)
    b.add_rack("rack1", "192.168.1.0/24")
    b.add_node("n1", rack="rack1")
    b.add_manifest(dns_service_spec(DnsSpec()).manifest)
    (loaded,) = b.build().services
    assert loaded == dns_service_spec(DnsSpec())


# ---------------------------------------------------------------- allocation


def test_dns_service_gets_dot_ten() -> None:
    vips = allocate_cluster_ips([svc("web"), dns_service_spec(DnsSpec())], NET)
    assert vips[DNS_SERVICE] == ip("10.96.0.10")
    assert vips[("default", "web")] != ip("10.96.0.10")


def test_every_non_headless_service_gets_a_distinct_host_address() -> None:
    services = [svc(f"s{i}", f"ns{i % 3}") for i in range(200)] + [svc("h", headless=True)]
    vips = allocate_cluster_ips(services, NET)
    assert set(vips) == {(s.namespace, s.name) for s in services if not s.headless}
    assert len(set(vips.values())) == 200
    assert all(
        v in NET and v not in (NET.network_address, NET.broadcast_address) for v in vips.values()
    )
    assert dns_ip(NET) not in vips.values()


@pytest.mark.parametrize(("network", "count"), [(NET, 50), (IPv4Network("172.20.0.0/24"), 20)])
def test_adding_a_service_moves_no_other(network: IPv4Network, count: int) -> None:
    services = [svc(f"s{i}") for i in range(count)]
    before = allocate_cluster_ips(services, network)
    after = allocate_cluster_ips([*services, svc("new"), svc("new", "other")], network)
    assert {key: after[key] for key in before} == before
    fewer = allocate_cluster_ips(services[::2], network)
    assert {key: before[key] for key in fewer} == fewer


def test_allocation_ignores_input_order_and_is_reproducible() -> None:
    services = [svc(f"s{i}") for i in range(30)]
    assert allocate_cluster_ips(services, SMALL.supernet(4)) == allocate_cluster_ips(
        services[::-1], SMALL.supernet(4)
    )


def test_address_comes_from_the_hash() -> None:
    (vip,) = allocate_cluster_ips([svc("web")], NET).values()
    assert vip == NET.network_address + hash_offset("default", "web", NET.num_addresses)


def colliding_names(network: IPv4Network, count: int) -> list[str]:
    """count Service names (in namespace default) whose hash picks the same address."""
    groups: dict[int, list[str]] = {}
    for i in range(10_000):
        name = f"s{i}"
        offset = hash_offset("default", name, network.num_addresses)
        if offset not in (0, 10, network.num_addresses - 1):  # a plain host address
            groups.setdefault(offset, []).append(name)
            if len(groups[offset]) == count:
                return groups[offset]
    raise AssertionError("no collision found")


def test_collision_probes_to_the_next_free_address() -> None:
    first, second = sorted(colliding_names(SMALL, 2))
    vips = allocate_cluster_ips([svc(second), svc(first)], SMALL, dns=False)
    home = SMALL.network_address + hash_offset("default", first, SMALL.num_addresses)
    assert vips[("default", first)] == home  # (namespace, name) order decides
    assert vips[("default", second)] not in (home, SMALL.network_address)
    # the next address after home that is not the broadcast address (wrapping around)
    expected = home + 1 if home + 1 != SMALL.broadcast_address else SMALL.network_address + 1
    assert vips[("default", second)] == expected


# (taken addresses, dns, where a hashed Service must never land)
@pytest.mark.parametrize(
    ("taken", "dns", "never"),
    [
        ((), True, {"10.96.0.0", "10.96.0.15", "10.96.0.10"}),
        ((), False, {"10.96.0.0", "10.96.0.15"}),
        (("10.96.0.1", "10.96.0.2", "10.96.0.3"), True, {"10.96.0.1", "10.96.0.2", "10.96.0.3"}),
    ],
    ids=["reserved", "dns-off", "taken"],
)
def test_reserved_and_taken_addresses_are_skipped(
    taken: tuple[str, ...], dns: bool, never: set[str]
) -> None:
    room = 14 - (1 if dns else 0) - len(taken)
    services = [svc(f"s{i}") for i in range(room)]
    vips = allocate_cluster_ips(services, SMALL, [ip(t) for t in taken], dns=dns)
    assert len(set(vips.values())) == room
    assert not {str(v) for v in vips.values()} & never


def test_dns_off_frees_dot_ten() -> None:
    services = [svc(f"s{i}") for i in range(14)]
    vips = allocate_cluster_ips(services, SMALL, dns=False)
    assert ip("10.96.0.10") in vips.values()


def test_explicit_addresses_are_honoured_first() -> None:
    name = colliding_names(SMALL, 1)[0]
    home = SMALL.network_address + hash_offset("default", name, SMALL.num_addresses)
    vips = allocate_cluster_ips([svc(name), svc("pinned", cluster_ip=home)], SMALL)
    assert vips[("default", "pinned")] == home
    assert vips[("default", name)] != home


@pytest.mark.parametrize(
    ("network", "count", "taken", "dns"),
    [
        (SMALL, 14, (), True),  # 13 free host addresses
        (SMALL, 13, ("10.96.0.4",), True),
        (SMALL, 15, (), False),
        (IPv4Network("10.96.0.0/30"), 3, (), False),
    ],
    ids=["dns-reserved", "taken", "no-dns", "tiny"],
)
def test_full_network(network: IPv4Network, count: int, taken: tuple[str, ...], dns: bool) -> None:
    services = [svc(f"s{i}") for i in range(count)]
    with pytest.raises(ServiceNetworkFull, match=f"service network {network} has no free address"):
        allocate_cluster_ips(services, network, [ip(t) for t in taken], dns=dns)
    assert issubclass(ServiceNetworkFull, AddressExhausted)
    allocate_cluster_ips(services[:-1], network, [ip(t) for t in taken], dns=dns)  # one fewer fits


# (id, requested, taken, dns, message)
EXPLICIT_ERRORS = [
    ("outside", "10.0.0.1", (), True, "clusterIP 10.0.0.1 of Service default/x is outside"),
    ("network", "10.96.0.0", (), True, "is reserved"),
    ("broadcast", "10.96.0.15", (), True, "is reserved"),
    ("dns", "10.96.0.10", (), True, "is reserved"),
    ("taken", "10.96.0.5", ("10.96.0.5",), True, "is already in use"),
]


@pytest.mark.parametrize(
    ("requested", "taken", "dns", "message"),
    [c[1:] for c in EXPLICIT_ERRORS],
    ids=[c[0] for c in EXPLICIT_ERRORS],
)
def test_unavailable_explicit_address(
    requested: str, taken: tuple[str, ...], dns: bool, message: str
) -> None:
    with pytest.raises(ClusterIPUnavailable, match=message) as info:
        allocate_cluster_ips(
            [svc("x", cluster_ip=ip(requested))], SMALL, [ip(t) for t in taken], dns=dns
        )
    assert isinstance(info.value, NetlabError)


def test_explicit_address_requested_twice() -> None:
    services = [svc("a", cluster_ip=ip("10.96.0.5")), svc("b", cluster_ip=ip("10.96.0.5"))]
    with pytest.raises(ClusterIPUnavailable, match="default/b is already in use"):
        allocate_cluster_ips(services, SMALL)


def test_dns_address_is_free_for_explicit_use_without_dns() -> None:
    vips = allocate_cluster_ips([svc("x", cluster_ip=ip("10.96.0.10"))], SMALL, dns=False)
    assert vips == {("default", "x"): ip("10.96.0.10")}


def test_applied_later_keeps_clear_of_taken() -> None:
    """A running lab passes the VIPs in use; the new Service gets a different one."""
    first = allocate_cluster_ips([svc(f"s{i}") for i in range(12)], SMALL)
    later = allocate_cluster_ips([svc("late")], SMALL, first.values())
    assert later[("default", "late")] not in first.values()


def test_headless_and_duplicate_services() -> None:
    assert allocate_cluster_ips([svc("h", headless=True)], NET) == {}
    assert allocate_cluster_ips([svc("a"), svc("a")], NET) == allocate_cluster_ips([svc("a")], NET)


# ---------------------------------------------------------------- target ports

WEB = ContainerSpec(
    "web",
    ports=(
        ContainerPort(8080, "http"),
        ContainerPort(5353, "dns", "UDP"),
        ContainerPort(9090),
    ),
)
SIDE = ContainerSpec("side", ports=(ContainerPort(9000, "metrics"), ContainerPort(5354, "dns-tcp")))


# (id, Service port, containers, expected)
TARGETS = [
    ("number", ServicePort(80, 8080), (WEB,), 8080),
    ("number-undeclared", ServicePort(80, 7777), (WEB,), 7777),
    ("number-no-containers", ServicePort(80, 80), (), 80),
    ("name", ServicePort(80, "http"), (WEB,), 8080),
    ("name-in-second-container", ServicePort(80, "metrics"), (WEB, SIDE), 9000),
    ("name-udp", ServicePort(53, "dns", "UDP"), (WEB,), 5353),
    ("name-protocol-mismatch", ServicePort(53, "dns", "TCP"), (WEB,), None),
    ("name-tcp-in-sidecar", ServicePort(53, "dns-tcp", "TCP"), (WEB, SIDE), 5354),
    ("name-unknown", ServicePort(80, "https"), (WEB, SIDE), None),
    ("name-no-containers", ServicePort(80, "http"), (), None),
]


@pytest.mark.parametrize(
    ("port", "containers", "expected"), [c[1:] for c in TARGETS], ids=[c[0] for c in TARGETS]
)
def test_resolve_target_port(
    port: ServicePort, containers: tuple[ContainerSpec, ...], expected: int | None
) -> None:
    assert resolve_target_port(port, containers) == expected
