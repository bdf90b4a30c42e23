"""`kind: Service` -> ServiceSpec, and the Service checks that need the lab section.

Only type ClusterIP is emulated: a virtual IP from `lab.serviceNetwork` (or
none, for a headless Service) in front of the ready pods its selector picks.
`read_service` is the Service row of `netlab.spec.manifests.KINDS`;
`check_services` runs once the `lab:` section is known to be valid. Like
every reader, both record problems on a `Checker` and never raise.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import TYPE_CHECKING, Any

from netlab.spec.model import (
    DEFAULT_AFFINITY_TIMEOUT,
    DNS_HOST_OFFSET,
    DNS_SERVICE_NAME,
    DNS_SERVICE_NAMESPACE,
    SERVICE_PROTOCOLS,
    SESSION_AFFINITIES,
    LabSpec,
    ServicePort,
    ServiceSpec,
    frozen_map,
)
from netlab.spec.validate import (
    DNS_LABEL_MAX,
    DNS_LABEL_RE,
    Checker,
    did_you_mean,
    item,
    join,
)

if TYPE_CHECKING:
    from netlab.spec.manifests import Manifest

SERVICE_FIELDS = (
    "selector",
    "ports",
    "type",
    "clusterIP",
    "sessionAffinity",
    "sessionAffinityConfig",
)
SERVICE_PORT_FIELDS = ("name", "protocol", "port", "targetPort")
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
HEADLESS = "None"  # spec.clusterIP: None
AFFINITY_TIMEOUT_MAX = 86400
_IP_FIX = "write an IPv4 address inside lab.serviceNetwork, or leave clusterIP out to get one"


def read_service(manifest: Manifest, value: Any, checker: Checker) -> ServiceSpec | None:
    """A Service's spec (the KINDS reader); None if it has problems."""
    path = manifest.prefix + "spec"
    spec = checker.mapping(value, path, SERVICE_FIELDS)
    if spec is None:
        return None
    before = len(checker.problems)
    kind = checker.take(spec, "type", path, "string", default="ClusterIP")
    if kind in SERVICE_TYPES[1:]:
        checker.add(
            join(path, "type"),
            f"type {kind} is not emulated: netlab emulates only ClusterIP Services",
            "remove type (ClusterIP is the default) and reach the Service at its ClusterIP "
            "from inside the lab",
        )
    elif kind is not None and kind != "ClusterIP":
        checker.add(
            join(path, "type"),
            f"{kind!r} is not a Service type",
            did_you_mean(kind, SERVICE_TYPES, "use ClusterIP; Service types are"),
        )
    selector = checker.labels(spec, "selector", path)
    headless, cluster_ip = _cluster_ip(spec, path, checker)
    ports = _ports(spec.get("ports"), join(path, "ports"), headless, checker)
    affinity, timeout = _affinity(spec, path, checker)
    if len(checker.problems) > before or selector is None or ports is None:
        return None
    return ServiceSpec(
        manifest.name,
        manifest.namespace,
        tuple(ports),
        frozen_map(selector),
        headless,
        cluster_ip,
        affinity,
        timeout,
        frozen_map(manifest.labels),
        manifest.body,
    )


def _cluster_ip(spec: dict, path: str, checker: Checker) -> tuple[bool, IPv4Address | None]:
    """(headless, the requested address): "None" is headless, "" or absent is allocated."""
    value = checker.take(spec, "clusterIP", path, "string", default="")
    if value is None or value == "":
        return False, None
    if value == HEADLESS:
        return True, None
    if value.lower() == HEADLESS.lower():
        checker.add(
            join(path, "clusterIP"),
            f"{value!r} is not an IPv4 address",
            "write None (capital N) for a headless Service",
        )
        return False, None
    try:
        return False, IPv4Address(value)
    except ValueError:
        checker.add(
            join(path, "clusterIP"),
            f"{value!r} is not an IPv4 address",
            _IP_FIX + ", or None for a headless Service",
        )
        return False, None


def _ports(value: Any, path: str, headless: bool, checker: Checker) -> list[ServicePort] | None:
    """spec.ports: a name each when there are several, (port, protocol) unique."""
    if value is None or value == []:
        if not headless:
            checker.add(
                path,
                "a Service needs at least one port",
                "add e.g. ports: [{port: 80, targetPort: 8080}], or make it headless with "
                "clusterIP: None",
            )
        return [] if headless else None
    if not checker.check_type(value, path, "list"):
        return None
    ports: list[ServicePort] = []
    names: dict[str, int] = {}
    numbers: dict[tuple[int, str], int] = {}
    for i, entry in enumerate(value):
        here = item(path, i)
        before = len(checker.problems)
        port = checker.mapping(entry, here, (*SERVICE_PORT_FIELDS, "nodePort"), ["port"])
        if port is None:
            continue
        if port.get("nodePort") is not None:
            checker.add(
                join(here, "nodePort"),
                "nodePort belongs to type NodePort, which is not emulated",
                "remove nodePort",
            )
        name = _port_name(port, here, i, len(value), names, checker)
        protocol = _protocol(port, here, checker)
        number = checker.int_in(port, "port", here, 1, 65535)
        target = checker.port_ref(port, "targetPort", here, default=number)
        if number is not None and protocol is not None:
            first = numbers.setdefault((number, protocol), i)
            if first != i:
                checker.add(
                    join(here, "port"),
                    f"port {number}/{protocol} is already used by ports[{first}]",
                    "give each port its own number (or protocol)",
                )
        if len(checker.problems) == before:
            ports.append(ServicePort(number, target, protocol, name))
    return ports


def _port_name(
    port: dict, path: str, index: int, count: int, names: dict[str, int], checker: Checker
) -> str | None:
    """The port's name; None if it has none (a problem if there are several ports)."""
    if port.get("name") is None:
        if count > 1:
            checker.add(
                join(path, "name"),
                "required when a Service has more than one port",
                "name each port, e.g. name: http",
            )
        return None
    name = checker.take(port, "name", path, "string")
    if name is None:
        return None
    if len(name) > DNS_LABEL_MAX or not DNS_LABEL_RE.fullmatch(name):
        # a Service's port names are DNS labels (a container's are IANA service names)
        checker.add(
            join(path, "name"),
            f"port name {name!r} is not a valid name",
            f"use at most {DNS_LABEL_MAX} lowercase letters, digits and '-', starting and "
            "ending with a letter or digit",
        )
        return None
    first = names.setdefault(name, index)
    if first != index:
        checker.add(
            join(path, "name"),
            f"port name {name!r} is already used by ports[{first}]",
            "give each port its own name",
        )
        return None
    return name


def _protocol(port: dict, path: str, checker: Checker) -> str | None:
    protocol = checker.take(port, "protocol", path, "string", default="TCP")
    if protocol == "SCTP":
        checker.add(join(path, "protocol"), "SCTP is not supported", "use TCP or UDP")
        return None
    if protocol is not None and protocol not in SERVICE_PROTOCOLS:
        fix = did_you_mean(protocol, SERVICE_PROTOCOLS, "use one of")
        checker.add(join(path, "protocol"), f"{protocol!r} is not a protocol", fix)
        return None
    return protocol


def _affinity(spec: dict, path: str, checker: Checker) -> tuple[str, int]:
    """sessionAffinity and its timeout (sessionAffinityConfig.clientIP.timeoutSeconds)."""
    affinity = checker.take(spec, "sessionAffinity", path, "string", default="None")
    if affinity is not None and affinity not in SESSION_AFFINITIES:
        checker.add(
            join(path, "sessionAffinity"),
            f"{affinity!r} is not a session affinity",
            did_you_mean(affinity, SESSION_AFFINITIES, "use one of"),
        )
    timeout = DEFAULT_AFFINITY_TIMEOUT
    if spec.get("sessionAffinityConfig") is None:
        return affinity or "None", timeout
    here = join(path, "sessionAffinityConfig")
    config = checker.mapping(spec["sessionAffinityConfig"], here, ("clientIP",)) or {}
    client = checker.take(config, "clientIP", here, "mapping", default={}) or {}
    checker.mapping(client, join(here, "clientIP"), ("timeoutSeconds",))
    timeout = checker.int_in(
        client, "timeoutSeconds", join(here, "clientIP"), 1, AFFINITY_TIMEOUT_MAX, timeout
    )
    if affinity == "None":
        checker.add(
            here,
            "set, but sessionAffinity is None",
            "set sessionAffinity: ClientIP, or remove sessionAffinityConfig",
        )
    return affinity or "None", timeout or DEFAULT_AFFINITY_TIMEOUT


def check_services(lab: LabSpec, services: list[ServiceSpec], checker: Checker) -> None:
    """What needs the lab section: requested clusterIPs, and the DNS Service's name."""
    network: IPv4Network = lab.service_network
    dns_ip = network.network_address + DNS_HOST_OFFSET
    requested: dict[IPv4Address, ServiceSpec] = {}
    for service in services:
        prefix = f"Service/{service.name}: "
        if lab.dns.enabled and (service.namespace, service.name) == (
            DNS_SERVICE_NAMESPACE,
            DNS_SERVICE_NAME,
        ):
            checker.add(
                prefix + "metadata.name",
                f"Service {DNS_SERVICE_NAME!r} in namespace {DNS_SERVICE_NAMESPACE!r} is the "
                "lab's DNS (lab.dns is enabled)",
                "rename this Service, or set lab.dns.enabled: false to run your own DNS",
            )
        address = service.cluster_ip
        if address is None:
            continue
        path = prefix + "spec.clusterIP"
        if address not in network:
            checker.add(path, f"{address} is outside lab.serviceNetwork ({network})", _IP_FIX)
        elif address in (network.network_address, network.broadcast_address):
            what = "network" if address == network.network_address else "broadcast"
            checker.add(
                path, f"{address} is lab.serviceNetwork's {what} address", "use a host address"
            )
        elif lab.dns.enabled and address == dns_ip:
            checker.add(
                path,
                f"{address} is reserved for the lab's DNS ({DNS_SERVICE_NAMESPACE}/"
                f"{DNS_SERVICE_NAME})",
                "use another address, or leave clusterIP out to get one",
            )
        elif address in requested:
            first = requested[address]
            checker.add(
                path,
                f"{address} is already requested by Service {first.namespace}/{first.name}",
                "give each Service its own clusterIP, or leave it out to get one",
            )
        else:
            requested[address] = service
