"""The lab's own workloads, added to every lab as kube-system is to a cluster:
the DNS server (`labdns`, in the role of CoreDNS) as a Deployment in
`kube-system` behind the `kube-dns` Service at the service network's .10; when
the mesh is on, the trace collector (`mesh.collector`, in the role of Istio's
Zipkin addon) behind `kube-system/zipkin`; and the sidecar injection (Istio's
mutating webhook): a meshed pod template gets the `netlab-proxy` container.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from pathlib import Path

from netlab.objects import container_manifest
from netlab.plan.interception import ADMIN_PORT, INBOUND_PORT, OUTBOUND_PORT, SIDECAR_MARK
from netlab.plan.services import dns_service_spec
from netlab.spec.autoscale import settings_of
from netlab.spec.mesh import (
    COLLECTOR_LABELS,
    COLLECTOR_NAME,
    COLLECTOR_NAMESPACE,
    COLLECTOR_PORT,
    collector_service,
    injected,
)
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
SIDECAR_CONTAINER = "netlab-proxy"  # Istio's is istio-proxy


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


def collector_deployment() -> DeploymentSpec:
    """The trace collector: Zipkin's v2 API and OTLP/HTTP JSON on 9411."""
    container = ContainerSpec(
        name="collector",
        command=(sys.executable, "-m", "mesh.collector", "--listen", f"0.0.0.0:{COLLECTOR_PORT}"),
        ports=(ContainerPort(COLLECTOR_PORT, "http-query", "TCP"),),
        image="netlab/collector",
    )
    labels = frozen_map(COLLECTOR_LABELS)
    template = PodTemplate(labels=labels, containers=(container,))
    return DeploymentSpec(COLLECTOR_NAME, COLLECTOR_NAMESPACE, 1, labels, template, labels)


ACTIVATOR_NAME, ACTIVATOR_NAMESPACE = "netlab-activator", "kube-system"
ACTIVATOR_PORT = 8012
ACTIVATOR_LABELS = {"app": "activator"}


def activator_deployment(api_socket: Path) -> DeploymentSpec:
    """Knative's activator: holds requests for autoscaled Deployments at zero pods."""
    container = ContainerSpec(
        name="activator",
        command=(
            sys.executable,
            "-m",
            "mesh.activator",
            "--api-socket",
            str(api_socket),
            "--port",
            str(ACTIVATOR_PORT),
            "--admin-port",
            str(ADMIN_PORT),
        ),  # fmt: skip
        ports=(
            ContainerPort(ACTIVATOR_PORT, "http", "TCP"),
            ContainerPort(ADMIN_PORT, "admin", "TCP"),
        ),
        image="netlab/activator",
    )
    labels = frozen_map(ACTIVATOR_LABELS)
    template = PodTemplate(labels=labels, containers=(container,))
    return DeploymentSpec(ACTIVATOR_NAME, ACTIVATOR_NAMESPACE, 1, labels, template, labels)


def scales_to_zero(deployment: DeploymentSpec) -> bool:
    annotations = (deployment.manifest.get("metadata") or {}).get("annotations") or {}
    settings = settings_of(annotations)
    return settings is not None and settings.min_scale == 0


def sidecar_container(spec: LabSpec, api_socket: Path) -> ContainerSpec:
    """The injected proxy: it watches the lab API for its routes (as Envoy
    watches istiod) and binds its admin port, which the readiness check
    probes, once its first table is built."""
    command = (
        sys.executable,
        "-m",
        "mesh",
        "--api-socket",
        str(api_socket),
        "--zone",
        spec.dns.zone,
        "--sampling",
        f"{spec.mesh.sampling:g}",
        "--mark",
        f"{SIDECAR_MARK:#x}",
        "--outbound-port",
        str(OUTBOUND_PORT),
        "--inbound-port",
        str(INBOUND_PORT),
        "--admin-port",
        str(ADMIN_PORT),
    )
    return ContainerSpec(
        name=SIDECAR_CONTAINER,
        command=command,
        ports=(ContainerPort(ADMIN_PORT, "proxy-admin", "TCP"),),
        image="netlab/proxy",
    )


def is_meshed(template: PodTemplate) -> bool:
    return any(c.name == SIDECAR_CONTAINER for c in template.containers)


def inject(
    template: PodTemplate,
    namespace_labels: Mapping[str, str],
    spec: LabSpec,
    api_socket: Path,
) -> PodTemplate:
    """The template with the sidecar added when it or its namespace asks for one."""
    if is_meshed(template) or not injected(template.labels, namespace_labels):
        return template
    containers = (*template.containers, sidecar_container(spec, api_socket))
    return dataclasses.replace(template, containers=containers)


def inject_all(
    spec: LabSpec,
    api_socket: Path,
    deployments: tuple[DeploymentSpec, ...],
    pods: tuple,
    namespace_labels: Mapping[str, Mapping[str, str]],
) -> tuple[tuple[DeploymentSpec, ...], tuple]:
    """Deployments and Pods with their sidecars injected."""

    def one(item):
        labels = namespace_labels.get(item.namespace, {})
        return dataclasses.replace(item, template=inject(item.template, labels, spec, api_socket))

    return tuple(one(d) for d in deployments), tuple(one(p) for p in pods)


def mesh_enabled(spec: LabSpec) -> bool:
    """lab.mesh.enabled, or (auto) whether anything in the lab file is meshed."""
    if spec.mesh.enabled is not None:
        return spec.mesh.enabled
    labels = {ns.name: ns.labels for ns in spec.namespaces}
    templates = [
        (w.namespace, w.template) for w in (*spec.deployments, *spec.pods, *spec.statefulsets)
    ]
    return bool(spec.policies) or any(injected(t.labels, labels.get(ns, {})) for ns, t in templates)


def with_manifest(deployment: DeploymentSpec) -> DeploymentSpec:
    """A Deployment the lab makes itself, with the manifest a user would have written
    for it: the store serves it whole, and its controller (or a supervisor taking the
    lab over) compiles its template from there like any other."""
    containers = [container_manifest(c) for c in deployment.template.containers]
    labels = dict(deployment.template.labels)
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment.name,
            "namespace": deployment.namespace,
            "labels": dict(deployment.labels),
        },
        "spec": {
            "replicas": deployment.replicas,
            "selector": {"matchLabels": dict(deployment.match_labels)},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": containers}},
        },
    }
    return dataclasses.replace(deployment, manifest=manifest)


def with_system_workloads(spec: LabSpec, api_socket: Path) -> LabSpec:
    """The spec plus the lab's DNS and collector, and sidecars injected."""
    deployments, services = list(spec.deployments), list(spec.services)
    if spec.dns.enabled:
        deployments.append(with_manifest(dns_deployment(spec, api_socket)))
        services.append(dns_service_spec(spec.dns))
    if mesh_enabled(spec):
        deployments.append(with_manifest(collector_deployment()))
        services.append(collector_service())
    if any(scales_to_zero(d) for d in spec.deployments):
        deployments.append(with_manifest(activator_deployment(api_socket)))
    labels = {ns.name: ns.labels for ns in spec.namespaces}
    injected_deployments, pods = inject_all(spec, api_socket, tuple(deployments), spec.pods, labels)
    return dataclasses.replace(
        spec, deployments=injected_deployments, pods=pods, services=tuple(services)
    )
