"""Build a lab from Python, in the spirit of Mininet's Topo.

    b = LabBuilder("mylab")
    b.add_rack("rack1", "192.168.1.0/24")
    b.add_node("n1", rack="rack1")
    b.add_deployment("web", replicas=3, command=["python3", "-m", "http.server", "80"])
    b.add_service("web", ports=[(80, 80)], selector={"app": "web"})
    spec = b.build()

The builder only records what is asked for; `documents()` turns it into the
same dicts a lab file parses to, and `build()` runs the one validator on them
(`netlab.spec.load.check_documents`), so both routes accept and reject exactly
the same labs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from ipaddress import IPv4Network
from typing import Any

import yaml

from netlab.errors import Problem, SpecError
from netlab.spec.load import check_documents
from netlab.spec.model import (
    DEFAULT_DNS_TTL,
    DEFAULT_DNS_ZONE,
    DEFAULT_NAMESPACE,
    DEFAULT_OVERLAY_NETWORK,
    DEFAULT_SERVICE_NETWORK,
    DEFAULT_SUBNET_LEN,
    DEFAULT_VNI,
    DEFAULT_VXLAN_PORT,
    LabSpec,
)
from netlab.spec.validate import suggest

BUILDER_SOURCE = "<builder>"
Port = int | Mapping[str, Any]  # 80, or {"containerPort": 80, "name": "http"}
# A Service port: 80, (80, 8080), (80, 8080, "http"), (80, "http", "web") or
# {"port": 80, "targetPort": 8080, "name": "http", "protocol": "UDP"}
ServicePortArg = int | tuple | Mapping[str, Any]


class LabBuilder:
    """A lab assembled by method calls; `build()` validates it and returns a LabSpec."""

    def __init__(
        self,
        name: str,
        *,
        overlay_network: str | IPv4Network = DEFAULT_OVERLAY_NETWORK,
        subnet_len: int = DEFAULT_SUBNET_LEN,
        vni: int = DEFAULT_VNI,
        port: int = DEFAULT_VXLAN_PORT,
        direct_routing: bool = False,
        bandwidth: float | None = None,
        delay: str | None = None,
        loss: float | None = None,
        service_network: str | IPv4Network = DEFAULT_SERVICE_NETWORK,
        dns: bool = True,
        dns_zone: str = DEFAULT_DNS_ZONE,
        dns_ttl: int = DEFAULT_DNS_TTL,
        dns_replicas: int = 1,
    ) -> None:
        self.name = name
        self.overlay = {
            "Network": str(overlay_network),
            "SubnetLen": subnet_len,
            "Backend": {"Type": "vxlan", "VNI": vni, "Port": port, "DirectRouting": direct_routing},
        }
        links = {"bandwidth": bandwidth, "delay": delay, "loss": loss}
        self.links = {key: value for key, value in links.items() if value is not None}
        self.service_network = str(service_network)
        self.dns = {"zone": dns_zone, "ttl": dns_ttl, "replicas": dns_replicas, "enabled": dns}
        self._problems: list[Problem] = []
        self._racks: list[tuple[str, str]] = []
        self._nodes: list[tuple[str, str, dict[str, Any]]] = []  # name, rack, its other fields
        self._routers: list[dict[str, Any]] | None = None
        self._manifests: list[dict[str, Any]] = []

    # ------------------------------------------------------------ the fabric

    def add_rack(self, name: str, subnet: str | IPv4Network) -> str:
        """A rack (a switch with its own subnet); returns its name."""
        self._racks.append((name, str(subnet)))
        return name

    def add_node(
        self,
        name: str,
        rack: str,
        labels: Mapping[str, str] | None = None,
        allocatable: Mapping[str, Any] | None = None,
    ) -> str:
        """A node on a rack (added before or after the rack itself); returns its name.
        `allocatable`: what its pods may request, e.g. {"cpu": "2", "memory": "4Gi",
        "pods": 110} (the host's cpu and memory if not given)."""
        fields: dict[str, Any] = {}
        if labels:
            fields["labels"] = dict(labels)
        if allocatable:
            fields["allocatable"] = dict(allocatable)
        self._nodes.append((name, rack, fields))
        return name

    def add_router(self, name: str, racks: Sequence[str]) -> str:
        """A router with a gateway on each of racks. Without any, one 'spine' joins all racks."""
        self._routers = (self._routers or []) + [{"name": name, "racks": list(racks)}]
        return name

    # ------------------------------------------------------------ workloads

    def add_deployment(
        self,
        name: str,
        *,
        command: Sequence[str],
        replicas: int = 1,
        args: Sequence[str] | None = None,
        ports: Iterable[Port] | None = None,
        labels: Mapping[str, str] | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        node_selector: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        image: str | None = None,
        readiness_probe: Mapping[str, Any] | None = None,
    ) -> str:
        """A Deployment of one container named like it; labels default to {app: name}.

        readiness_probe is the manifest's form, e.g. {"httpGet": {"path": "/", "port": 80}}.
        """
        labels = dict(labels) if labels else {"app": name}
        container = _container(name, command, args, ports, env, image, readiness_probe)
        pod: dict[str, Any] = {"containers": [container]}
        if node_selector:
            pod["nodeSelector"] = dict(node_selector)
        self._manifests.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": dict(labels)},
                    "template": {"metadata": {"labels": dict(labels)}, "spec": pod},
                },
            }
        )
        return name

    def add_pod(
        self,
        name: str,
        *,
        command: Sequence[str],
        args: Sequence[str] | None = None,
        node_name: str | None = None,
        labels: Mapping[str, str] | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        node_selector: Mapping[str, str] | None = None,
        ports: Iterable[Port] | None = None,
        env: Mapping[str, str] | None = None,
        image: str | None = None,
        restart_policy: str | None = None,
        readiness_probe: Mapping[str, Any] | None = None,
    ) -> str:
        """A bare Pod of one container named like it."""
        container = _container(name, command, args, ports, env, image, readiness_probe)
        pod: dict[str, Any] = {"containers": [container]}
        if node_selector:
            pod["nodeSelector"] = dict(node_selector)
        if node_name is not None:
            pod["nodeName"] = node_name
        if restart_policy is not None:
            pod["restartPolicy"] = restart_policy
        metadata: dict[str, Any] = {"name": name, "namespace": namespace}
        if labels:
            metadata["labels"] = dict(labels)
        self._manifests.append(
            {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod}
        )
        return name

    def add_service(
        self,
        name: str,
        *,
        ports: Iterable[ServicePortArg] = (),
        selector: Mapping[str, str] | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        headless: bool = False,
        cluster_ip: str | None = None,
        session_affinity: str = "None",
        affinity_timeout: int | None = None,
        protocol: str = "TCP",
        labels: Mapping[str, str] | None = None,
    ) -> str:
        """A ClusterIP Service (headless: clusterIP None); protocol is the ports' default.

        ports: [(80, 8080)], [(80, 8080, "http")] or [{"port": 80, "targetPort": 8080,
        "name": "http"}]; a plain 80 targets port 80.
        """
        if headless and cluster_ip:
            self._problems.append(
                Problem(
                    f"add_service({name!r})",
                    f"headless and cluster_ip={cluster_ip!r} both given",
                    "a headless Service has no ClusterIP: drop one of them",
                )
            )
        spec: dict[str, Any] = {"ports": [_service_port(port, protocol) for port in ports]}
        if selector:
            spec["selector"] = dict(selector)
        if headless or cluster_ip:
            spec["clusterIP"] = "None" if headless else str(cluster_ip)
        if session_affinity != "None":
            spec["sessionAffinity"] = session_affinity
        if affinity_timeout is not None:
            spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": affinity_timeout}}
        metadata: dict[str, Any] = {"name": name, "namespace": namespace}
        if labels:
            metadata["labels"] = dict(labels)
        self._manifests.append(
            {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec}
        )
        return name

    def add_manifest(self, manifest: Mapping[str, Any]) -> None:
        """Any manifest (Pod, Deployment, Service), as the dict a YAML document would
        parse to (it is copied)."""
        self._manifests.append(copy.deepcopy(dict(manifest)))

    # ------------------------------------------------------------ output

    def documents(self) -> list[dict[str, Any]]:
        """The lab as the documents of a lab file: the `lab:` document, then the manifests."""
        racks = []
        for rack, subnet in self._racks:
            nodes: list[Any] = [
                {"name": node, **fields} if fields else node
                for node, on, fields in self._nodes
                if on == rack
            ]
            racks.append({"name": rack, "subnet": subnet, "nodes": nodes})
        lab: dict[str, Any] = {"name": self.name, "racks": racks}
        if self._routers is not None:
            lab["routers"] = copy.deepcopy(self._routers)
        lab["overlay"] = copy.deepcopy(self.overlay)
        if self.links:
            lab["links"] = dict(self.links)
        lab["serviceNetwork"] = self.service_network
        lab["dns"] = dict(self.dns)
        return [{"lab": lab}, *copy.deepcopy(self._manifests)]

    def to_yaml(self) -> str:
        """The lab as a YAML lab file (what `load_lab` would read back)."""
        return yaml.safe_dump_all(self.documents(), sort_keys=False)

    def build(self) -> LabSpec:
        """Validate and return the LabSpec; raise SpecError (source '<builder>') listing all problems."""
        problems = self._problems + self._orphans()
        spec, more = check_documents(self.documents(), BUILDER_SOURCE)
        if spec is None or problems:
            raise SpecError(problems + more, BUILDER_SOURCE)
        return spec

    def _orphans(self) -> list[Problem]:
        """Nodes whose rack was never added: they cannot be expressed as a lab file."""
        racks = [rack for rack, _ in self._racks]
        problems = []
        for node, rack, _ in self._nodes:
            if rack in racks:
                continue
            close = suggest(rack, racks)
            other = f"did you mean {close!r}?" if close else f"use one of: {', '.join(racks)}"
            problems.append(
                Problem(
                    f"add_node({node!r})",
                    f"node {node!r} is on no rack ({rack!r} does not exist)",
                    f"add_rack({rack!r}, <subnet>) first, or " + (other if racks else "add a rack"),
                )
            )
        return problems


def _container(
    name: str,
    command: Sequence[str],
    args: Sequence[str] | None,
    ports: Iterable[Port] | None,
    env: Mapping[str, str] | None,
    image: str | None,
    readiness_probe: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One container dict; a bad value (e.g. command as a string) is left for the validator."""
    container: dict[str, Any] = {"name": name}
    if image is not None:
        container["image"] = image
    container["command"] = command if isinstance(command, str) else list(command)
    if args:
        container["args"] = args if isinstance(args, str) else list(args)
    if ports:
        container["ports"] = [
            dict(port) if isinstance(port, Mapping) else {"containerPort": port} for port in ports
        ]
    if env:
        container["env"] = [{"name": key, "value": value} for key, value in env.items()]
    if readiness_probe is not None:
        container["readinessProbe"] = copy.deepcopy(dict(readiness_probe))
    return container


def _service_port(port: ServicePortArg, protocol: str) -> Any:
    """One spec.ports entry; a bad value (e.g. a string) is left for the validator."""
    if isinstance(port, Mapping):
        entry = dict(port)
        entry.setdefault("protocol", protocol)
        return entry
    if isinstance(port, tuple) and 2 <= len(port) <= 3:
        entry = {"port": port[0], "targetPort": port[1], "protocol": protocol}
        if len(port) == 3:
            entry["name"] = port[2]
        return entry
    if isinstance(port, int) and not isinstance(port, bool):
        return {"port": port, "protocol": protocol}
    return port
