"""Service virtual IPs and target ports: pure, deterministic, no kernel.

ClusterIPs come from the lab's service network. The DNS Service
(kube-system/kube-dns) always gets the network's address + 10 (10.96.0.10);
an explicitly requested clusterIP is honoured; every other Service gets an
address derived from a hash of "namespace/name", so adding or removing one
Service never moves another (short of a hash collision, which is resolved by
probing to the next free address, in (namespace, name) order). For Services
applied to a running lab, pass the VIPs already in use as `taken`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network

from netlab.errors import NetlabError
from netlab.plan.addressing import AddressExhausted
from netlab.spec.model import (
    DNS_HOST_OFFSET,
    DNS_SERVICE_NAME,
    DNS_SERVICE_NAMESPACE,
    ContainerSpec,
    DnsSpec,
    ServicePort,
    ServiceSpec,
    frozen_map,
)

DNS_SERVICE = (DNS_SERVICE_NAMESPACE, DNS_SERVICE_NAME)  # (namespace, name)
DNS_LABELS = {"k8s-app": "kube-dns"}  # the DNS Service's selector and labels
DNS_PORT = 53

Key = tuple[str, str]  # (namespace, name)


class ServiceNetworkFull(AddressExhausted):
    """The service network has no free address left for a Service's ClusterIP."""


class ClusterIPUnavailable(NetlabError):
    """An explicitly requested clusterIP is outside the network, reserved or taken."""


def dns_ip(network: IPv4Network) -> IPv4Address:
    """The DNS Service's ClusterIP: the network's address + 10 (10.96.0.10)."""
    return network.network_address + DNS_HOST_OFFSET


def hash_offset(namespace: str, name: str, size: int) -> int:
    """A stable offset in [0, size) for a Service (sha256 of "namespace/name")."""
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % size


def allocate_cluster_ips(
    services: Sequence[ServiceSpec],
    network: IPv4Network,
    taken: Iterable[IPv4Address] = (),
    dns: bool = True,
) -> dict[Key, IPv4Address]:
    """(namespace, name) -> ClusterIP for every Service that is not headless.

    Explicit clusterIPs first (ClusterIPUnavailable if one is outside network,
    its network/broadcast address, the DNS address while dns, taken or asked
    for twice); then the DNS Service (when dns) at `dns_ip`; then the rest at
    their hashed address or the next free one after it (ServiceNetworkFull if
    there is none). A Service listed twice is allocated once.
    """
    size = network.num_addresses
    base = int(network.network_address)
    used = set(taken)
    reserved = {network.network_address, network.broadcast_address}
    if dns:
        reserved.add(dns_ip(network))
    result: dict[Key, IPv4Address] = {}
    wanted: dict[Key, ServiceSpec] = {}
    for service in services:
        key = (service.namespace, service.name)
        if not service.headless and key not in wanted:
            wanted[key] = service
    for key, service in wanted.items():
        address = service.cluster_ip
        if address is None:
            continue
        where = f"clusterIP {address} of Service {key[0]}/{key[1]}"
        if address not in network:
            raise ClusterIPUnavailable(f"{where} is outside the service network {network}")
        if address in reserved and not (dns and key == DNS_SERVICE and address == dns_ip(network)):
            raise ClusterIPUnavailable(f"{where} is reserved in {network}")
        if address in used:
            raise ClusterIPUnavailable(f"{where} is already in use")
        used.add(address)
        result[key] = address
    if dns and DNS_SERVICE in wanted and DNS_SERVICE not in result:
        result[DNS_SERVICE] = dns_ip(network)
        used.add(result[DNS_SERVICE])
    blocked = used | reserved
    for key in sorted(key for key in wanted if key not in result):
        start = hash_offset(*key, size)
        for step in range(size):
            address = IPv4Address(base + (start + step) % size)
            if address not in blocked:
                break
        else:
            raise ServiceNetworkFull(
                f"service network {network} has no free address for Service {key[0]}/{key[1]}"
            )
        result[key] = address
        blocked.add(address)
    return result


def resolve_target_port(port: ServicePort, containers: Sequence[ContainerSpec]) -> int | None:
    """The pod port a Service port sends to: a number as is; a name -> the
    containerPort of that name and the same protocol, else None (then the pod
    is no endpoint for this port, as in Kubernetes)."""
    if isinstance(port.target_port, int):
        return port.target_port
    for container in containers:
        for declared in container.ports:
            if declared.name == port.target_port and declared.protocol == port.protocol:
                return declared.container_port
    return None


def dns_service_spec(dns: DnsSpec) -> ServiceSpec:
    """The lab's DNS Service, kube-system/kube-dns: UDP and TCP 53 to pods labelled
    k8s-app=kube-dns. Its ClusterIP comes from `allocate_cluster_ips` (`dns_ip`);
    nothing in it depends on `dns` today (zone and TTL are the server's business)."""
    namespace, name = DNS_SERVICE
    ports = (
        ServicePort(DNS_PORT, DNS_PORT, "UDP", "dns"),
        ServicePort(DNS_PORT, DNS_PORT, "TCP", "dns-tcp"),
    )
    manifest = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(DNS_LABELS),
        },
        "spec": {
            "selector": dict(DNS_LABELS),
            "ports": [
                {
                    "name": p.name,
                    "port": p.port,
                    "targetPort": p.target_port,
                    "protocol": p.protocol,
                }
                for p in ports
            ],
        },
    }
    return ServiceSpec(
        name,
        namespace,
        ports,
        selector=frozen_map(DNS_LABELS),
        labels=frozen_map(DNS_LABELS),
        manifest=manifest,
    )
