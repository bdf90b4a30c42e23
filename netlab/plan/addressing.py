"""Underlay addresses, static routes between racks, and overlay leases."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from netlab.errors import NetlabError
from netlab.plan.model import Route
from netlab.spec.model import OverlaySpec, RackSpec, RouterSpec


class AddressExhausted(NetlabError):
    """A subnet or the overlay network has no free address/lease left."""


def gateway_addresses(
    racks: Sequence[RackSpec], routers: Sequence[RouterSpec]
) -> dict[tuple[str, str], IPv4Interface]:
    """(router, rack) -> the router's address on that rack: the rack's first
    host addresses, one per router in the order the routers are listed."""
    result: dict[tuple[str, str], IPv4Interface] = {}
    for rack in racks:
        hosts = rack.subnet.hosts()
        for router in routers:
            if rack.name in router.racks:
                result[(router.name, rack.name)] = IPv4Interface(
                    f"{next(hosts)}/{rack.subnet.prefixlen}"
                )
    return result


def routers_on(rack: str, routers: Sequence[RouterSpec]) -> int:
    return sum(1 for router in routers if rack in router.racks)


def node_address(
    rack: RackSpec, routers: Sequence[RouterSpec], taken: Iterable[IPv4Address]
) -> IPv4Interface:
    """The lowest free host address after the rack's gateways."""
    used = set(taken)
    skip = routers_on(rack.name, routers)
    for index, host in enumerate(rack.subnet.hosts()):
        if index >= skip and host not in used:
            return IPv4Interface(f"{host}/{rack.subnet.prefixlen}")
    raise AddressExhausted(f"rack {rack.name} ({rack.subnet}) has no free address for a node")


def next_hops(
    racks: Sequence[RackSpec],
    routers: Sequence[RouterSpec],
    gateways: dict[tuple[str, str], IPv4Interface],
) -> tuple[dict[tuple[str, str], IPv4Address], dict[tuple[str, str], IPv4Address]]:
    """Shortest paths over the rack/router graph, by breadth-first search from
    every destination rack. Returns
    - rack_hop[(rack, dst_rack)]: the gateway a node on `rack` uses for dst_rack;
    - router_hop[(router, dst_rack)]: the next router's address, for racks the
      router has no port on.
    Ties go to the router listed first."""
    racks_of = {r.name: list(r.racks) for r in routers}
    routers_of: dict[str, list[str]] = {rack.name: [] for rack in racks}
    for router in routers:
        for rack in router.racks:
            routers_of[rack].append(router.name)
    rack_hop: dict[tuple[str, str], IPv4Address] = {}
    router_hop: dict[tuple[str, str], IPv4Address] = {}
    for dst in racks:
        # BFS outward from dst: each router/rack learns the hop toward dst.
        seen_routers: set[str] = set()
        seen_racks = {dst.name}
        queue: deque[str] = deque([dst.name])
        while queue:
            rack = queue.popleft()
            for router in routers_of[rack]:
                if router in seen_routers:
                    continue
                seen_routers.add(router)
                if rack != dst.name:
                    # reach dst via the router that brought us to `rack`'s hop
                    router_hop[(router, dst.name)] = rack_hop[(rack, dst.name)]
                for neighbour in racks_of[router]:
                    if neighbour in seen_racks:
                        continue
                    seen_racks.add(neighbour)
                    rack_hop[(neighbour, dst.name)] = gateways[(router, neighbour)].ip
                    queue.append(neighbour)
    return rack_hop, router_hop


def node_routes(
    rack: str, racks: Sequence[RackSpec], rack_hop: dict[tuple[str, str], IPv4Address]
) -> tuple[Route, ...]:
    return tuple(
        Route(other.subnet, rack_hop[(rack, other.name)])
        for other in racks
        if other.name != rack and (rack, other.name) in rack_hop
    )


def router_routes(
    router: RouterSpec,
    racks: Sequence[RackSpec],
    router_hop: dict[tuple[str, str], IPv4Address],
) -> tuple[Route, ...]:
    return tuple(
        Route(rack.subnet, router_hop[(router.name, rack.name)])
        for rack in racks
        if rack.name not in router.racks and (router.name, rack.name) in router_hop
    )


def lease_capacity(overlay: OverlaySpec) -> int:
    """Leases in the network: Flannel skips the first subnet (SubnetMin)."""
    return 2 ** (overlay.subnet_len - overlay.network.prefixlen) - 1


def allocate_lease(overlay: OverlaySpec, taken: Iterable[IPv4Network]) -> IPv4Network:
    """The lowest free node subnet, from the second one on (as Flannel's SubnetMin)."""
    used = set(taken)
    for index, subnet in enumerate(overlay.network.subnets(new_prefix=overlay.subnet_len)):
        if index > 0 and subnet not in used:
            return subnet
    raise AddressExhausted(
        f"overlay network {overlay.network} has no free /{overlay.subnet_len} lease left"
    )


def allocate_pod_address(
    cidr: IPv4Network, taken: Iterable[IPv4Address], last: IPv4Address | None = None
) -> IPv4Interface:
    """The next free pod address after `last` (wrapping around), as the CNI
    host-local IPAM does, so a new pod does not take the address a deleted
    pod just gave up; .1 is cni0, pods start at .2."""
    used = set(taken)
    hosts = list(cidr.hosts())[1:]
    start = 0
    if last is not None and last in cidr:
        start = next((i + 1 for i, host in enumerate(hosts) if host == last), 0)
    for offset in range(len(hosts)):
        host = hosts[(start + offset) % len(hosts)]
        if host not in used:
            return IPv4Interface(f"{host}/{cidr.prefixlen}")
    raise AddressExhausted(f"node subnet {cidr} has no free pod address left")
