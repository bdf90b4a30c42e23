"""YAML stream -> documents -> LabSpec: the entry points of the spec layer.

A lab file is a YAML stream: one document holds `lab:` (racks, routers,
overlay, links, serviceNetwork, dns), the others are Kubernetes manifests.
Everything is checked before a LabSpec exists; all problems are reported
together in one SpecError. `parse_manifests` checks manifests applied to a
lab that is already running.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import yaml

from mesh.compile import parse_duration
from netlab.errors import Problem, SpecError
from netlab.spec.configdata import ConfigDataSpec
from netlab.spec.jobs import JobSpec
from netlab.spec.manifests import MESH_KINDS, check_scheduling, read_manifests
from netlab.spec.mesh import MeshContext, check_mesh, collector_service, read_mesh
from netlab.spec.model import (
    DEFAULT_DNS_TTL,
    DEFAULT_DNS_ZONE,
    DEFAULT_OVERLAY_NETWORK,
    DEFAULT_SERVICE_NETWORK,
    DEFAULT_SUBNET_LEN,
    DEFAULT_VNI,
    DEFAULT_VXLAN_PORT,
    ControlPlaneSpec,
    DeploymentSpec,
    DnsSpec,
    LabSpec,
    LinkSpec,
    NamespaceSpec,
    OverlaySpec,
    PodSpec,
    PolicySpec,
    RackSpec,
    RouterSpec,
    ServiceSpec,
)
from netlab.spec.services import check_services
from netlab.spec.statefulset import StatefulSetSpec
from netlab.spec.storage import DEFAULT_CLASS, check_claim_classes, claims_in
from netlab.spec.validate import (
    Checker,
    DraftRack,
    LabDraft,
    describe,
    is_dns_name,
    join,
    parse_network,
    suggest,
    validate_lab,
)

OVERLAY_FIELDS = ("Network", "SubnetLen", "Backend")
BACKEND_FIELDS = ("Type", "VNI", "Port", "DirectRouting")
LINK_FIELDS = ("bandwidth", "delay", "loss")
DNS_FIELDS = ("zone", "ttl", "replicas", "enabled")
MAX_SUBNET_LEN = 28
MAX_SERVICE_PREFIX = 28  # room for the DNS address (.10) and a few Services
DNS_TTL_MAX = 3600
DNS_REPLICAS_MAX = 10
VNI_MAX = 2**24 - 1
DELAY_RE = re.compile(r"^\d+(\.\d+)?(us|ms|s)$")
_MERGE_TAG = "tag:yaml.org,2002:merge"


# ---------------------------------------------------------------- entry points


def load_lab(path: str | os.PathLike[str]) -> LabSpec:
    """Read and validate a lab file; raise SpecError naming every problem in it."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else f"not UTF-8 text ({err.reason})"
        problem = Problem("file", f"cannot read it: {reason}", "check the path")
        raise SpecError([problem], source) from err
    return parse_lab(text, source)


def parse_lab(text: str, source: str | None = None) -> LabSpec:
    """Validate a lab given as YAML text; source names it in messages and in LabSpec.source."""
    documents, problems = _parse_yaml(text)
    if documents is None:
        raise SpecError(problems, source)
    spec, more = check_documents(documents, source)
    if spec is None or problems:
        raise SpecError(problems + more, source)
    return spec


def lab_from_documents(documents: Iterable[Any], source: str | None = None) -> LabSpec:
    """Validate already-parsed documents (dicts; None entries are empty documents)."""
    spec, problems = check_documents(documents, source)
    if spec is None:
        raise SpecError(problems, source)
    return spec


def check_documents(
    documents: Iterable[Any], source: str | None = None
) -> tuple[LabSpec | None, list[Problem]]:
    """The single validator: (LabSpec, []) if the documents are valid, else (None, problems)."""
    checker = Checker()
    lab_docs: list[tuple[int, dict]] = []
    manifests: list[tuple[int, dict]] = []
    for index, doc in enumerate(documents):
        where = f"documents[{index}]"
        if doc is None:
            continue
        if not isinstance(doc, dict):
            checker.add(where, f"expected a mapping, got {describe(doc)}", _DOC_FIX)
        elif "lab" in doc:
            lab_docs.append((index, doc))
        elif "kind" in doc or "apiVersion" in doc:
            manifests.append((index, doc))
        else:
            close = [suggest(key, ["lab", "kind", "apiVersion"]) for key in doc]
            hint = next((f"did you mean {text!r}?" for text in close if text), _DOC_FIX)
            checker.add(where, "neither a lab: section nor a Kubernetes manifest", hint)
    before = len(checker.problems)
    lab = _lab(lab_docs, checker)
    lab_ok = lab is not None and len(checker.problems) == before
    found = read_manifests(manifests, checker)
    if lab is not None and lab_ok:
        check_scheduling(lab, found, checker)
        check_services(lab, found["Service"], checker)
        check_mesh(_policies(found), mesh_context(lab, found), checker)
    _check_storage(found, (), checker)
    if checker.problems or lab is None:
        return None, checker.problems
    pods, deployments = tuple(found["Pod"]), tuple(found["Deployment"])
    services = tuple(found["Service"])
    return replace(
        lab,
        pods=pods,
        deployments=deployments,
        services=services,
        policies=_policies(found),
        namespaces=tuple(found["Namespace"]),
        jobs=tuple(found["Job"]),
        configmaps=tuple(found["ConfigMap"]),
        secrets=tuple(found["Secret"]),
        storage_classes=tuple(found["StorageClass"]),
        claims=tuple(found["PersistentVolumeClaim"]),
        volumes=tuple(found["PersistentVolume"]),
        statefulsets=tuple(found["StatefulSet"]),
        source=source,
    ), []


def _check_storage(found: dict[str, list], classes: Collection[str], checker: Checker) -> None:
    """Claims name StorageClasses that exist: the lab's own, the ones read with them,
    and `classes` (those of the running lab)."""
    known = {DEFAULT_CLASS, *classes, *(c.name for c in found["StorageClass"])}
    check_claim_classes(claims_in(found), known, checker)


def _policies(found: dict[str, list]) -> tuple[PolicySpec, ...]:
    return tuple(p for kind in MESH_KINDS for p in found[kind])


def mesh_context(
    lab: LabSpec, found: dict[str, list], existing: MeshContext | None = None
) -> MeshContext:
    """The Services and DestinationRules that policies may name: the running lab's
    (`existing`, for `netlab apply`), the trace collector's and the new ones."""
    services = dict(existing.services) if existing else {}
    for service in (collector_service(), *found["Service"]):
        services[(service.namespace, service.name)] = service
    new = {(p.kind, p.namespace, p.name) for p in _policies(found)}

    def merged(kind: str, old: list[PolicySpec]) -> list[PolicySpec]:
        kept = [p for p in old if (p.kind, p.namespace, p.name) not in new]
        return kept + list(found[kind])

    return MeshContext(
        services,
        merged("DestinationRule", existing.rules if existing else []),
        merged("VirtualService", existing.virtual_services if existing else []),
        lab.dns.zone,
    )


@dataclass(frozen=True)
class ManifestSet:
    """Manifests validated against a running lab (`parse_manifests`), in document order."""

    pods: tuple[PodSpec, ...] = ()
    deployments: tuple[DeploymentSpec, ...] = ()
    services: tuple[ServiceSpec, ...] = ()
    policies: tuple[PolicySpec, ...] = ()
    namespaces: tuple[NamespaceSpec, ...] = ()
    jobs: tuple[JobSpec, ...] = ()
    configmaps: tuple[ConfigDataSpec, ...] = ()
    secrets: tuple[ConfigDataSpec, ...] = ()
    storage_classes: tuple = ()  # StorageClassSpec (netlab.spec.storage)
    claims: tuple = ()  # ClaimObjectSpec
    volumes: tuple = ()  # VolumeObjectSpec
    statefulsets: tuple[StatefulSetSpec, ...] = ()


def parse_manifests(
    text: str,
    lab: LabSpec,
    source: str | None = None,
    existing: MeshContext | None = None,
    classes: Collection[str] = (),
) -> ManifestSet:
    """Validate a YAML stream of manifests (no `lab:` section) against an existing lab:
    the same checks as in a lab file, scheduling and clusterIPs included; SpecError if
    anything is wrong. Conflicts with what already runs (a clusterIP in use) are the
    caller's to find. `classes`: the StorageClasses the lab already has."""
    documents, problems = _parse_yaml(text)
    if documents is None:
        raise SpecError(problems, source)
    checker = Checker()
    manifests: list[tuple[int, dict]] = []
    for index, doc in enumerate(documents):
        where = f"documents[{index}]"
        if doc is None:
            continue
        if not isinstance(doc, dict):
            checker.add(where, f"expected a mapping, got {describe(doc)}", _MANIFEST_FIX)
        elif "lab" in doc:
            checker.add(where, "a 'lab:' section cannot be applied to a running lab", "remove it")
        else:
            manifests.append((index, doc))
    found = read_manifests(manifests, checker)
    check_scheduling(lab, found, checker)
    check_services(lab, found["Service"], checker)
    check_mesh(_policies(found), mesh_context(lab, found, existing), checker)
    _check_storage(found, classes, checker)
    if problems or checker.problems:
        raise SpecError(problems + checker.problems, source)
    return ManifestSet(
        tuple(found["Pod"]),
        tuple(found["Deployment"]),
        tuple(found["Service"]),
        _policies(found),
        tuple(found["Namespace"]),
        tuple(found["Job"]),
        tuple(found["ConfigMap"]),
        tuple(found["Secret"]),
        tuple(found["StorageClass"]),
        tuple(found["PersistentVolumeClaim"]),
        tuple(found["PersistentVolume"]),
        tuple(found["StatefulSet"]),
    )


_MANIFEST_FIX = "each document is a Kubernetes manifest with apiVersion, kind and metadata"
_DOC_FIX = "a document is either 'lab:' (one per file) or a manifest with apiVersion and kind"


# ---------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """A SafeLoader that records duplicate keys instead of silently keeping the last."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[Problem] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str | int | float | bool) and key in seen:
                self.duplicates.append(
                    Problem(
                        f"line {key_node.start_mark.line + 1}",
                        f"duplicate key {key!r} (YAML keeps only the last one)",
                        "remove one of them",
                    )
                )
            elif isinstance(key, str | int | float | bool):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(text: str) -> tuple[list[Any] | None, list[Problem]]:
    """The documents of a YAML stream and the duplicate keys in it; None on a syntax error."""
    loader = _Loader(text)
    documents: list[Any] = []
    try:
        while loader.check_data():
            documents.append(loader.get_data())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        what = getattr(err, "problem", None) or str(err)
        context, context_mark = getattr(err, "context", None), getattr(err, "context_mark", None)
        if context and context_mark is not None and context_mark is not mark:
            what += f" ({context} on line {context_mark.line + 1})"
        fix = "check the indentation and quoting there and on the line above"
        return None, [Problem(where, f"YAML syntax error: {what}", fix)]
    finally:
        loader.dispose()
    return documents, loader.duplicates


# ---------------------------------------------------------------- the lab: section


def _lab(lab_docs: list[tuple[int, dict]], checker: Checker) -> LabSpec | None:
    """The lab section checked field by field and as a whole; None if it has problems."""
    if not lab_docs:
        checker.add("lab", "no document has a 'lab:' section", "add one with name and racks")
        return None
    first, doc = lab_docs[0]
    for index, _ in lab_docs[1:]:
        where = f"documents[{index}]"
        checker.add(where, f"a second 'lab:' section (the first is documents[{first}])", "keep one")
    for key in doc:
        if key != "lab":
            checker.add(
                f"documents[{first}]: {key}",
                f"unknown key {key!r} next to 'lab:'",
                "the lab document holds only 'lab:'; put a manifest in its own document after ---",
            )
    before = len(checker.problems)
    draft = validate_lab(doc["lab"], checker)
    if draft is None:
        return None
    overlay, overlay_ok = _overlay(draft.lab.get("overlay"), checker)
    links = _links(draft.lab.get("links"), checker)
    _check_reachable(draft, checker)
    _check_subnets(draft, overlay.network if overlay_ok else None, checker)
    if overlay_ok:
        _check_pod_cidr(overlay, sum(rack.node_count for rack in draft.racks), checker)
    service_network = _service_network(draft, overlay.network if overlay_ok else None, checker)
    dns = _dns(draft.lab.get("dns"), checker)
    mesh = read_mesh(draft.lab.get("mesh"), checker)
    control_plane = _control_plane(draft.lab.get("controlPlane"), checker)
    store = _store(draft.lab.get("store"), checker)
    if len(checker.problems) > before or service_network is None:
        return None
    racks = tuple(RackSpec(r.name, r.subnet, tuple(r.nodes)) for r in draft.racks)
    return LabSpec(
        draft.name,
        racks,
        tuple(draft.routers),
        overlay,
        links,
        service_network=service_network,
        dns=dns,
        mesh=mesh,
        control_plane=control_plane,
        store=store,
    )


def _store(value: Any, checker: Checker) -> str:
    """lab.store: embedded (the supervisor's memory), etcd (a 3-member cluster inside
    the lab), or etcd://HOST:PORT[,...] (an etcd the user runs, on loopback)."""
    if value is None:
        return "embedded"
    problem = check_store_url(value)
    if problem:
        checker.add("lab.store", problem, "write embedded, etcd, or etcd://127.0.0.1:2379")
        return "embedded"
    return value


def check_store_url(value: Any) -> str | None:
    """What is wrong with a store setting (also `netlab up --store`); None if nothing."""
    if value in ("embedded", "etcd"):
        return None
    if not isinstance(value, str) or not value.startswith("etcd://"):
        return f"{value!r} is not a store"
    for host in value[len("etcd://") :].strip("/").split(","):
        name, _, port = host.rpartition(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            return f"{host!r} in {value!r} has no port"
        if name not in ("localhost", "[::1]") and not name.startswith("127."):
            return (
                f"{name!r} is not a loopback address: the supervisor talks only to loopback "
                "and to the lab's own namespaces (store: etcd runs etcd inside the lab)"
            )
    return None


CONTROL_PLANE_FIELDS = ("heartbeatInterval", "nodeGracePeriod", "jobBackoff")


def _control_plane(value: Any, checker: Checker) -> ControlPlaneSpec:
    """lab.controlPlane: the node agents' heartbeat, the grace period before a
    silent node is NotReady and its pods move, and the first step of a failing Job's
    back-off (durations: 200ms, 1s, 40s)."""
    if value is None:
        return ControlPlaneSpec()
    path = "lab.controlPlane"
    conf = checker.mapping(value, path, CONTROL_PLANE_FIELDS) or {}
    default = ControlPlaneSpec()
    seconds = {}
    for key, fallback in (
        ("heartbeatInterval", default.heartbeat),
        ("nodeGracePeriod", default.node_grace),
        ("jobBackoff", default.job_backoff),
    ):
        raw = conf.get(key)
        parsed = fallback if raw is None else parse_duration(raw)
        if parsed is None or parsed <= 0 or parsed > 3600:
            checker.add(
                join(path, key),
                f"{raw!r} is not a duration between 1ms and 1h",
                'write a duration such as "200ms", "1s" or "40s"',
            )
            parsed = fallback
        seconds[key] = parsed
    if seconds["nodeGracePeriod"] <= seconds["heartbeatInterval"]:
        checker.add(
            join(path, "nodeGracePeriod"),
            "the grace period must be longer than the heartbeat interval, or every node "
            "would be NotReady between two heartbeats",
            "make nodeGracePeriod several heartbeats long (Kubernetes: 40s for a 10s heartbeat)",
        )
    return ControlPlaneSpec(
        seconds["heartbeatInterval"], seconds["nodeGracePeriod"], seconds["jobBackoff"]
    )


def _overlay(value: Any, checker: Checker) -> tuple[OverlaySpec, bool]:
    """The overlay (defaults where absent) and whether Network/SubnetLen are usable."""
    if value is None:
        return OverlaySpec(), True
    conf = checker.mapping(value, "lab.overlay", OVERLAY_FIELDS) or {}
    path, before, fields = "lab.overlay", len(checker.problems), {}
    network = DEFAULT_OVERLAY_NETWORK
    if conf.get("Network") is not None:
        network = parse_network(checker, conf["Network"], join(path, "Network"))
    length = checker.take(conf, "SubnetLen", path, "integer", default=DEFAULT_SUBNET_LEN)
    if (
        length is not None
        and network is not None
        and not network.prefixlen < length <= MAX_SUBNET_LEN
    ):
        checker.add(
            join(path, "SubnetLen"),
            f"SubnetLen {length} must be longer than the Network's /{network.prefixlen} "
            f"and at most {MAX_SUBNET_LEN}",
            f"use {network.prefixlen + 1}..{MAX_SUBNET_LEN}, e.g. 24",
        )
    usable = len(checker.problems) == before
    backend = checker.take(conf, "Backend", path, "mapping", default={}) or {}
    bpath = join(path, "Backend")
    checker.mapping(backend, bpath, BACKEND_FIELDS)
    kind = checker.take(backend, "Type", bpath, "string", default="vxlan")
    if kind is not None and kind != "vxlan":
        checker.add(
            join(bpath, "Type"), f"backend {kind!r} is not emulated", "use vxlan (the only one)"
        )
    fields["vni"] = checker.int_in(backend, "VNI", bpath, 1, VNI_MAX, DEFAULT_VNI)
    fields["port"] = checker.int_in(backend, "Port", bpath, 1, 65535, DEFAULT_VXLAN_PORT)
    fields["direct_routing"] = checker.take(
        backend, "DirectRouting", bpath, "boolean", default=False
    )
    fields = {key: val for key, val in fields.items() if val is not None}
    if usable:
        fields.update(network=network, subnet_len=length)
    return OverlaySpec(**fields), usable


def _links(value: Any, checker: Checker) -> LinkSpec:
    if value is None:
        return LinkSpec()
    path = "lab.links"
    links = checker.mapping(value, path, LINK_FIELDS) or {}
    bandwidth = checker.take(links, "bandwidth", path, "number")
    if bandwidth is not None and bandwidth <= 0:
        checker.add(join(path, "bandwidth"), f"{bandwidth} Mbit/s is not > 0", "use e.g. 1000")
    delay = checker.take(links, "delay", path, "string")
    if delay is not None and not DELAY_RE.fullmatch(delay):
        checker.add(join(path, "delay"), f"{delay!r} is not a delay", "write e.g. 100us, 5ms or 1s")
    loss = checker.take(links, "loss", path, "number")
    if loss is not None and not 0 <= loss <= 100:
        checker.add(join(path, "loss"), f"{loss}% is out of range", "use a percent 0..100")
    return LinkSpec(
        float(bandwidth) if bandwidth is not None else None,
        delay,
        float(loss) if loss is not None else None,
    )


def _service_network(
    draft: LabDraft, overlay: IPv4Network | None, checker: Checker
) -> IPv4Network | None:
    """lab.serviceNetwork (default 10.96.0.0/12): a /28 or larger, clear of racks and overlay."""
    path, value = "lab.serviceNetwork", draft.lab.get("serviceNetwork")
    network = DEFAULT_SERVICE_NETWORK
    what = f"the default serviceNetwork {network}" if value is None else str(value)
    if value is not None:
        network = parse_network(checker, value, path)
    if network is None:
        return None
    fix = "set lab.serviceNetwork to a range outside the racks' subnets and lab.overlay.Network"
    if network.prefixlen > MAX_SERVICE_PREFIX:
        checker.add(
            path,
            f"{network} is too small for Services (at most /{MAX_SERVICE_PREFIX})",
            f"use a /{MAX_SERVICE_PREFIX} or larger network, e.g. 10.96.0.0/12",
        )
        return None
    ok = True
    for rack in draft.racks:
        if rack.subnet is not None and network.overlaps(rack.subnet):
            checker.add(path, f"{what} overlaps rack {rack.name!r} ({rack.subnet})", fix)
            ok = False
    if overlay is not None and network.overlaps(overlay):
        checker.add(path, f"{what} overlaps the overlay Network ({overlay})", fix)
        ok = False
    return network if ok else None


def _dns(value: Any, checker: Checker) -> DnsSpec:
    """lab.dns: the cluster DNS's zone, record TTL, replicas, and whether it runs at all."""
    if value is None:
        return DnsSpec()
    path = "lab.dns"
    conf = checker.mapping(value, path, DNS_FIELDS) or {}
    zone = checker.take(conf, "zone", path, "string", default=DEFAULT_DNS_ZONE)
    if zone is not None and zone.endswith(".") and is_dns_name(zone[:-1]):
        checker.add(join(path, "zone"), f"{zone!r} ends in a dot", f"write {zone[:-1]}")
    elif zone is not None and not is_dns_name(zone):
        checker.add(
            join(path, "zone"),
            f"zone {zone!r} is not a valid DNS name",
            "use lowercase labels of letters, digits and '-' (each at most 63) joined by dots, "
            "e.g. cluster.local",
        )
    ttl = checker.int_in(conf, "ttl", path, 0, DNS_TTL_MAX, DEFAULT_DNS_TTL)
    replicas = checker.int_in(conf, "replicas", path, 0, DNS_REPLICAS_MAX, 1)
    enabled = checker.take(conf, "enabled", path, "boolean", default=True)
    return DnsSpec(
        zone or DEFAULT_DNS_ZONE,
        DEFAULT_DNS_TTL if ttl is None else ttl,
        1 if replicas is None else replicas,
        True if enabled is None else enabled,
    )


def _check_reachable(draft: LabDraft, checker: Checker) -> None:
    """Every rack must reach every other through the rack/router graph."""
    routers = draft.routers
    names = [rack.name for rack in draft.racks if rack.name is not None]
    if len(names) < 2:
        return
    parent = {name: name for name in names}

    def root(name: str) -> str:
        while parent[name] != name:
            name = parent[name]
        return name

    for router in routers:
        for rack in router.racks[1:]:
            parent[root(rack)] = root(router.racks[0])
    on_router = {rack for router in routers for rack in router.racks}
    groups: dict[str, list[str]] = {}
    for name in names:
        if name in on_router:
            groups.setdefault(root(name), []).append(name)
    main = max(groups.values(), key=len, default=[])
    for name in names:
        if name not in on_router:
            checker.add(
                "lab.routers",
                f"rack {name!r} is on no router, so no other rack can reach it",
                "add it to a router's racks",
            )
        elif name not in main:
            checker.add(
                "lab.routers",
                f"rack {name!r} cannot reach rack {main[0]!r}: no chain of routers joins them",
                f"add it to a router's racks (one that also joins {main[0]!r})",
            )


def _check_subnets(draft: LabDraft, overlay: IPv4Network | None, checker: Checker) -> None:
    """No overlaps (rack/rack, rack/overlay); room for the nodes and the router gateways."""
    racks: list[DraftRack] = draft.racks
    routers: list[RouterSpec] = draft.routers
    for i, rack in enumerate(racks):
        if rack.subnet is None:
            continue
        path = join(rack.path, "subnet")
        for other in racks[:i]:
            if other.subnet is not None and rack.subnet.overlaps(other.subnet):
                checker.add(
                    path,
                    f"{rack.subnet} overlaps rack {other.name!r} ({other.subnet})",
                    "give each rack its own subnet",
                )
        if overlay is not None and rack.subnet.overlaps(overlay):
            checker.add(
                path,
                f"{rack.subnet} overlaps the overlay Network ({overlay})",
                "give racks subnets outside lab.overlay.Network",
            )
        gateways = sum(rack.name in router.racks for router in routers)
        need, room = rack.node_count + gateways, rack.subnet.num_addresses - 2
        if need > room:
            prefix = 32 - (need + 1).bit_length()
            checker.add(
                path,
                f"{rack.subnet} has {room} host addresses but rack {rack.name!r} needs {need} "
                f"({rack.node_count} nodes + {gateways} router gateway{'s' * (gateways != 1)})",
                f"use a /{prefix} or larger subnet",
            )


def _check_pod_cidr(overlay: OverlaySpec, nodes: int, checker: Checker) -> None:
    # Flannel never leases the network's first subnet (SubnetMin): one fewer.
    subnets = 2 ** (overlay.subnet_len - overlay.network.prefixlen) - 1
    if subnets < nodes:
        checker.add(
            "lab.overlay",
            f"pod CIDR too small for the nodes: /{overlay.network.prefixlen} with SubnetLen "
            f"{overlay.subnet_len} gives {subnets} node subnets (Flannel skips the first) "
            f"for {nodes} nodes",
            "use a larger Network or a longer SubnetLen",
        )
