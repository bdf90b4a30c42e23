"""Flannel's vxlan backend, as entries per node pair."""

from __future__ import annotations

from collections.abc import Sequence

from netlab.plan.model import NodePlan, PeerEntry


def peer_entry(node: NodePlan, peer: NodePlan, direct_routing: bool) -> PeerEntry:
    """How `node` reaches `peer`'s pods. With DirectRouting, peers on the same
    rack (one L2 segment) get a plain route via the peer's underlay address."""
    kind = "direct" if direct_routing and node.rack == peer.rack else "vxlan"
    return PeerEntry(
        kind=kind,
        peer=peer.name,
        pod_cidr=peer.pod_cidr,
        vtep_ip=peer.vtep_ip,
        vtep_mac=peer.vtep_mac,
        underlay_ip=peer.address.ip,
    )


def peer_entries(
    node: NodePlan, nodes: Sequence[NodePlan], direct_routing: bool
) -> tuple[PeerEntry, ...]:
    """Every other node's entry on `node`, in node order."""
    return tuple(peer_entry(node, peer, direct_routing) for peer in nodes if peer.name != node.name)
