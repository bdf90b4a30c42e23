"""Flannel's vxlan backend on one node, through netlink.

Per node: `flannel.1` (VXLAN, no learning, MTU = underlay - 50, the lease's
.0/32) and the `cni0` bridge (the lease's .1). Per peer, in Flannel's order:
permanent neighbour, `self permanent` FDB entry, `onlink` route. With
DirectRouting, a peer on the same rack gets a plain route instead.
"""

from __future__ import annotations

from ipaddress import IPv4Network

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl import ndmsg

from netlab.plan import CNI_BRIDGE, NODE_UPLINK, VTEP_DEVICE, NodePlan, PeerEntry
from netlab.realize import netlink
from netlab.spec.model import OverlaySpec

NUD_PERMANENT = ndmsg.states["permanent"]


def setup_node(ipr: IPRoute, node: NodePlan, overlay: OverlaySpec, mtu: int) -> None:
    """flannel.1 and cni0 on a node (replacing stale ones)."""
    for name in (VTEP_DEVICE, CNI_BRIDGE):
        netlink.ignore_missing(ipr.link, "del", ifname=name)
    uplink = netlink.index(ipr, NODE_UPLINK)
    ipr.link(
        "add",
        ifname=VTEP_DEVICE,
        kind="vxlan",
        vxlan_id=overlay.vni,
        vxlan_local=str(node.address.ip),
        vxlan_port=overlay.port,
        vxlan_link=uplink,
        vxlan_learning=0,
        address=node.vtep_mac,
        mtu=mtu,
    )
    vtep = netlink.index(ipr, VTEP_DEVICE)
    ipr.addr("replace", index=vtep, address=str(node.vtep_ip), prefixlen=32)
    ipr.link("set", index=vtep, state="up")
    ipr.link(
        "add",
        ifname=CNI_BRIDGE,
        kind="bridge",
        mtu=mtu,
        address=node.cni_mac,  # fixed: pods hold a permanent neighbour entry for it
        br_stp_state=0,
        br_forward_delay=0,
    )
    bridge = netlink.index(ipr, CNI_BRIDGE)
    netlink.set_address(ipr, bridge, node.cni_address)
    ipr.link("set", index=bridge, state="up")


def route_services(ipr: IPRoute, network: IPv4Network) -> None:
    """The service network via cni0, so that the node's own connections to a
    Service VIP find a route (nodes have no default route) and reach the
    nftables output hook, which rewrites them to an endpoint."""
    bridge = netlink.index(ipr, CNI_BRIDGE)
    ipr.route("replace", dst=str(network), oif=bridge)


def remove_peer(ipr: IPRoute, entry: PeerEntry) -> None:
    """Undo a peer's entries (see rtnl_batch.peer_messages), in reverse order."""
    netlink.ignore_missing(ipr.route, "del", dst=str(entry.pod_cidr))
    if entry.kind == "direct":
        return
    vtep = netlink.index(ipr, VTEP_DEVICE)
    netlink.ignore_missing(
        ipr.fdb, "del", ifindex=vtep, lladdr=entry.vtep_mac, dst=str(entry.underlay_ip)
    )
    netlink.ignore_missing(
        ipr.neigh, "del", ifindex=vtep, dst=str(entry.vtep_ip), lladdr=entry.vtep_mac
    )
