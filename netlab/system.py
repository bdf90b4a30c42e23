"""The lab's own workloads, added to every lab as kube-system is to a cluster:
the DNS server (`labdns`, in the role of CoreDNS) as a Deployment in
`kube-system` behind the `kube-dns` Service at the service network's .10.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from netlab.plan.services import dns_service_spec
from netlab.spec.model import (
    ContainerPort,
    ContainerSpec,
    DeploymentSpec,
    LabSpec,
    PodTemplate,
    frozen_map,
)

DNS_DEPLOYMENT = "netlab-dns"
DNS_NAMESPACE = "kube-system"
DNS_LABELS = {"k8s-app": "kube-dns"}


def dns_deployment(spec: LabSpec, api_socket: Path) -> DeploymentSpec:
    """The DNS server's Deployment: it watches the lab API over the unix
    socket (the filesystem is shared; only the network is namespaced) and
    binds port 53 once its first sync is done, so its readiness (TCP 53
    accepts) means "answers are complete"."""
    command = (
        sys.executable,
        "-m",
        "labdns",
        "--listen",
        "0.0.0.0:53",
        "--zone",
        spec.dns.zone,
        "--ttl",
        str(spec.dns.ttl),
        "--api-socket",
        str(api_socket),
    )
    container = ContainerSpec(
        name="dns",
        command=command,
        ports=(ContainerPort(53, "dns", "UDP"), ContainerPort(53, "dns-tcp", "TCP")),
        image="netlab/labdns",
    )
    template = PodTemplate(labels=frozen_map(DNS_LABELS), containers=(container,))
    return DeploymentSpec(
        name=DNS_DEPLOYMENT,
        namespace=DNS_NAMESPACE,
        replicas=spec.dns.replicas,
        match_labels=frozen_map(DNS_LABELS),
        template=template,
        labels=frozen_map(DNS_LABELS),
    )


def with_system_workloads(spec: LabSpec, api_socket: Path) -> LabSpec:
    """The spec plus the lab's DNS Deployment and Service (when enabled)."""
    if not spec.dns.enabled:
        return spec
    return dataclasses.replace(
        spec,
        deployments=(*spec.deployments, dns_deployment(spec, api_socket)),
        services=(*spec.services, dns_service_spec(spec.dns)),
    )
