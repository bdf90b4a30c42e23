"""The plan layer: spec in, exact kernel objects out. Pure and deterministic."""

from netlab.plan.build import (
    PodPlacer,
    candidates_of,
    node_labels,
    plan_lab,
    plan_node,
    plan_pod,
)
from netlab.plan.model import (
    CNI_BRIDGE,
    NODE_UPLINK,
    POD_INTERFACE,
    UNDERLAY_MTU,
    VTEP_DEVICE,
    LabPlan,
    NodePlan,
    PeerEntry,
    PodPlan,
    RackPlan,
    Route,
    RouterPlan,
    RouterPort,
)
from netlab.plan.overlay import peer_entries, peer_entry

__all__ = [
    "CNI_BRIDGE",
    "NODE_UPLINK",
    "POD_INTERFACE",
    "UNDERLAY_MTU",
    "VTEP_DEVICE",
    "LabPlan",
    "NodePlan",
    "PeerEntry",
    "PodPlacer",
    "PodPlan",
    "RackPlan",
    "Route",
    "RouterPlan",
    "RouterPort",
    "candidates_of",
    "node_labels",
    "peer_entries",
    "peer_entry",
    "plan_lab",
    "plan_node",
    "plan_pod",
]
