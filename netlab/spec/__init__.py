"""The spec layer: what the user asked for, validated completely, as frozen dataclasses.

`load_lab("topologies/demo.yaml")` reads a lab file; `LabBuilder` builds the
same thing from Python. Both end in one validator and raise `SpecError`
listing every problem (path, what is wrong, how to fix it).
"""

from netlab.spec.builder import LabBuilder
from netlab.spec.load import check_documents, lab_from_documents, load_lab, parse_lab
from netlab.spec.model import (
    DEFAULT_NAMESPACE,
    DEFAULT_OVERLAY_NETWORK,
    DEFAULT_ROUTER,
    DEFAULT_SUBNET_LEN,
    DEFAULT_VNI,
    DEFAULT_VXLAN_PORT,
    HOSTNAME_LABEL,
    RESTART_POLICIES,
    ZONE_LABEL,
    ContainerPort,
    ContainerSpec,
    DeploymentSpec,
    LabSpec,
    LinkSpec,
    NodeSpec,
    OverlaySpec,
    PodSpec,
    PodTemplate,
    RackSpec,
    RouterSpec,
    frozen_map,
)

__all__ = [
    "DEFAULT_NAMESPACE",
    "DEFAULT_OVERLAY_NETWORK",
    "DEFAULT_ROUTER",
    "DEFAULT_SUBNET_LEN",
    "DEFAULT_VNI",
    "DEFAULT_VXLAN_PORT",
    "HOSTNAME_LABEL",
    "RESTART_POLICIES",
    "ZONE_LABEL",
    "ContainerPort",
    "ContainerSpec",
    "DeploymentSpec",
    "LabBuilder",
    "LabSpec",
    "LinkSpec",
    "NodeSpec",
    "OverlaySpec",
    "PodSpec",
    "PodTemplate",
    "RackSpec",
    "RouterSpec",
    "check_documents",
    "frozen_map",
    "lab_from_documents",
    "load_lab",
    "parse_lab",
]
