"""Kubernetes manifests -> Pod/Deployment/ServiceSpec, and whether the lab can schedule them.

Each supported kind is a row of `KINDS` (apiVersion, name limit, where its pod
spec sits, reader, name rule); Services are read in `netlab.spec.services`.
Readers record problems on a `Checker` and never raise.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from netlab.node.imagepolicy import is_host_image
from netlab.node.imageref import parse as parse_image
from netlab.node.imagetools import ImageError
from netlab.spec.autoscale import settings_of
from netlab.spec.compute import read_resources
from netlab.spec.configdata import CONFIG_MAP_FIELDS, SECRET_FIELDS, read_config_map, read_secret
from netlab.spec.mesh import (
    ISTIO_API,
    ISTIO_GROUP,
    ISTIO_VERSIONS,
    RATE_LIMIT_API,
    read_destination_rule,
    read_rate_limit,
    read_virtual_service,
)
from netlab.spec.model import (
    DEFAULT_NAMESPACE,
    HOSTNAME_LABEL,
    PROBE_HANDLERS,
    RESTART_POLICIES,
    ZONE_LABEL,
    ContainerPort,
    ContainerSpec,
    DeploymentSpec,
    LabSpec,
    NamespaceSpec,
    PodSpec,
    PodTemplate,
    ProbeSpec,
    frozen_map,
)
from netlab.spec.security import read_container_security, read_pod_security
from netlab.spec.services import read_service
from netlab.spec.strategy import check_strategy
from netlab.spec.validate import (
    DNS_1035_LABEL_RE,
    DNS_LABEL_MAX,
    DNS_LABEL_RE,
    DNS_NAME_MAX,
    DNS_SUBDOMAIN_RE,
    IANA_SVC_NAME_RULE,
    Checker,
    did_you_mean,
    is_iana_svc_name,
    item,
    join,
    suggest,
)
from netlab.spec.volumes import (
    ClaimSource,
    VolumeSpec,
    read_env,
    read_env_from,
    read_mounts,
    read_volumes,
)

TOP_FIELDS = ("apiVersion", "kind", "metadata", "spec", "status")  # status: the lab's to write
# what the store manages: accepted (kubectl replace sends an object as it was read), not kept
MANAGED_METADATA = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "ownerReferences",
    "finalizers",
    "selfLink",
    "generateName",
)
METADATA_FIELDS = ("name", "namespace", "labels", "annotations", *MANAGED_METADATA)
# Fields kubectl's generators and Kubernetes' defaults write that the lab takes and keeps
# in the object as written: field -> its JSON kind. Most are not acted on (yet);
# securityContext, hostname and shareProcessNamespace are also read into typed fields.
RECORDED_POD_FIELDS = {
    "dnsPolicy": "string",
    "terminationGracePeriodSeconds": "integer",
    "schedulerName": "string",
    "securityContext": "mapping",
    "serviceAccountName": "string",
    "serviceAccount": "string",
    "automountServiceAccountToken": "boolean",
    "enableServiceLinks": "boolean",
    "preemptionPolicy": "string",
    "priority": "integer",
    "priorityClassName": "string",
    "tolerations": "list",
    "affinity": "mapping",
    "imagePullSecrets": "list",
    "hostname": "string",
    "subdomain": "string",
    "dnsConfig": "mapping",
    "runtimeClassName": "string",
    "topologySpreadConstraints": "list",
    "resources": "mapping",
    "shareProcessNamespace": "boolean",
}
RECORDED_CONTAINER_FIELDS = {
    "imagePullPolicy": "string",
    "terminationMessagePath": "string",
    "terminationMessagePolicy": "string",
    "securityContext": "mapping",
    "stdin": "boolean",
    "stdinOnce": "boolean",
    "tty": "boolean",
}
POD_FIELDS = (
    "containers",
    "nodeSelector",
    "nodeName",
    "restartPolicy",
    "volumes",
    *RECORDED_POD_FIELDS,
)
CONTAINER_FIELDS = (
    "name",
    "image",
    "command",
    "args",
    "env",
    "ports",
    "readinessProbe",
    "resources",
    "volumeMounts",
    "envFrom",
    *RECORDED_CONTAINER_FIELDS,
)
PORT_FIELDS = ("containerPort", "name", "protocol")
PROTOCOLS = ("TCP", "UDP", "SCTP")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
PROBE_FIELDS = (
    *PROBE_HANDLERS,
    "initialDelaySeconds",
    "periodSeconds",
    "timeoutSeconds",
    "successThreshold",
    "failureThreshold",
)
HANDLER_FIELDS = {"tcpSocket": ("port",), "httpGet": ("path", "port"), "exec": ("command",)}
PROBE_SECONDS_MAX = 3600
PROBE_PERIOD_MIN = 0.1  # fractional seconds are allowed (Kubernetes: whole seconds, >= 1)
PROBE_THRESHOLD_MAX = 100
RECORDED_DEPLOYMENT_FIELDS = {"minReadySeconds": "integer", "progressDeadlineSeconds": "integer"}
DEPLOYMENT_FIELDS = (
    "replicas",
    "selector",
    "template",
    "strategy",
    "revisionHistoryLimit",
    *RECORDED_DEPLOYMENT_FIELDS,
)
TEMPLATE_FIELDS = ("metadata", "spec")
# a template's name and creationTimestamp (kubectl create deployment sends null) are ignored
TEMPLATE_METADATA_FIELDS = ("labels", "annotations", "name", "namespace", "creationTimestamp")
DEPLOYMENT_NAME_MAX = DNS_NAME_MAX  # generated pod names are cut to fit 63, as Kubernetes does
POD_OVERHEAD = 3  # per pod subnet: .0 (VTEP), .1 (node's bridge), broadcast


@dataclass(frozen=True)
class Manifest:
    """A manifest whose kind and metadata have been read."""

    kind: str
    name: str
    namespace: str
    labels: dict[str, str]
    body: dict[str, Any]  # a copy of the document, metadata.namespace filled in
    prefix: str  # "Deployment/web: ", the start of every path in it


@dataclass(frozen=True)
class Kind:
    """How one kind is checked."""

    api_version: str
    max_name: int  # metadata.name length limit
    pod_path: str | None  # where its pod spec sits, for scheduling messages
    read: Callable[[Manifest, Any, Checker], Any]  # (manifest, its spec, checker) -> a spec
    name_re: re.Pattern[str] = DNS_LABEL_RE  # metadata.name's rule (Services: DNS-1035)
    also: tuple[str, ...] = ()  # other apiVersions accepted (Istio's v1beta1, v1alpha3)
    needs_spec: bool = True  # a Namespace has none
    top: tuple[str, ...] | None = None  # its top-level fields, if not TOP_FIELDS (ConfigMap)


def _ports(container: dict, path: str, checker: Checker, names: dict) -> list[ContainerPort]:
    entries = checker.take(container, "ports", path, "list", default=[]) or []
    ports = []
    for i, entry in enumerate(entries):
        here = item(join(path, "ports"), i)
        port = checker.mapping(entry, here, PORT_FIELDS, required=("containerPort",))
        if port is None:
            continue
        number = checker.int_in(port, "containerPort", here, 1, 65535)
        name = checker.take(port, "name", here, "string")
        protocol = checker.take(port, "protocol", here, "string", default="TCP")
        if name is not None and not is_iana_svc_name(name):
            checker.add(
                join(here, "name"),
                f"port name {name!r} is not a valid IANA service name",
                IANA_SVC_NAME_RULE,
            )
        elif name is not None and name in names:
            checker.add(
                join(here, "name"),
                f"port name {name!r} is already used in this pod at {names[name]}",
                "give each port its own name",
            )
        elif name is not None:
            names[name] = here[here.rindex("containers[") :]
        if protocol is not None and protocol not in PROTOCOLS:
            checker.add(
                join(here, "protocol"), f"{protocol!r} is not a protocol", "use TCP, UDP or SCTP"
            )
        if number is not None and protocol in PROTOCOLS:
            ports.append(ContainerPort(number, name, protocol))
    return ports


def _port_protocols(container: dict) -> dict[str, Any]:
    """The container's port names as written -> their protocol (for probes' named ports)."""
    entries = container.get("ports")
    found: dict[str, Any] = {}
    for entry in entries if isinstance(entries, list) else ():
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            found.setdefault(entry["name"], entry.get("protocol", "TCP"))
    return found


def _probe_handler(
    probe: dict, kind: str, path: str, ports: dict[str, Any], checker: Checker
) -> dict[str, Any] | None:
    """The handler's fields as ProbeSpec keyword arguments; None if invalid."""
    here = join(path, kind)
    needed = ("command",) if kind == "exec" else ("port",)
    handler = checker.mapping(probe[kind], here, HANDLER_FIELDS[kind], required=needed)
    if handler is None:
        return None
    if kind == "exec":
        command = checker.str_list(handler, "command", here)
        if command == [] and "command" in handler:
            checker.add(
                join(here, "command"), "an empty command", "give it e.g. [test, -f, /ready]"
            )
        return {"command": tuple(command)} if command else None
    port = checker.port_ref(handler, "port", here)
    if isinstance(port, str) and port not in ports:
        fix = did_you_mean(port, list(ports), "this container's port names are")
        checker.add(
            join(here, "port"),
            f"no port named {port!r} in this container",
            fix or "add it to the container's ports, or give the port number",
        )
        return None
    if isinstance(port, str) and ports[port] != "TCP":
        checker.add(
            join(here, "port"),
            f"port {port!r} is {ports[port]}, but a {kind} probe connects over TCP",
            "name a TCP port, or give the port number",
        )
        return None
    fields: dict[str, Any] = {"port": port}
    if kind == "httpGet":
        url = checker.take(handler, "path", here, "string", default="/")
        if url is not None and not url.startswith("/"):
            checker.add(join(here, "path"), f"{url!r} is not an absolute path", f"write /{url}")
            url = None
        fields["path"] = url
    return None if None in fields.values() else fields


def _probe(container: dict, path: str, checker: Checker) -> ProbeSpec | None:
    """A container's readinessProbe (None if absent or invalid; problems are recorded)."""
    if container.get("readinessProbe") is None:
        return None
    path = join(path, "readinessProbe")
    probe = checker.mapping(container["readinessProbe"], path, (*PROBE_FIELDS, "grpc"))
    if probe is None:
        return None
    if probe.get("grpc") is not None:
        checker.add(join(path, "grpc"), "grpc probes are not emulated", "use tcpSocket or httpGet")
    handlers = [kind for kind in PROBE_HANDLERS if probe.get(kind) is not None]
    if len(handlers) > 1 or not (handlers or probe.get("grpc") is not None):
        found = " and ".join(handlers) if handlers else "none"
        checker.add(
            path,
            f"a readinessProbe needs exactly one handler, found {found}",
            "keep one of tcpSocket, httpGet or exec" if handlers else "add tcpSocket: {port: 80}",
        )
    fields = {
        "initial_delay": checker.number_in(
            probe, "initialDelaySeconds", path, 0, PROBE_SECONDS_MAX, 0.0
        ),
        "period": checker.number_in(
            probe, "periodSeconds", path, PROBE_PERIOD_MIN, PROBE_SECONDS_MAX, 1.0
        ),
        "timeout": checker.number_in(
            probe, "timeoutSeconds", path, PROBE_PERIOD_MIN, PROBE_SECONDS_MAX, 1.0
        ),
        "success_threshold": checker.int_in(
            probe, "successThreshold", path, 1, PROBE_THRESHOLD_MAX, 1
        ),
        "failure_threshold": checker.int_in(
            probe, "failureThreshold", path, 1, PROBE_THRESHOLD_MAX, 1
        ),
    }
    ports = _port_protocols(container)
    read = [_probe_handler(probe, kind, path, ports, checker) for kind in handlers]
    if len(handlers) != 1 or read[0] is None or None in fields.values():
        return None
    return ProbeSpec(handlers[0], **read[0], **fields)


def _containers(
    value: Any, path: str, checker: Checker, volumes: dict[str, VolumeSpec] | None = None
) -> list[ContainerSpec]:
    """The containers; their volumeMounts must name one of `volumes` (None: unchecked)."""
    if value is None or not checker.check_type(value, path, "list"):
        return []
    if not value:
        checker.add(path, "a pod needs at least one container", "add one with a name and a command")
    containers: list[ContainerSpec] = []
    seen: dict[str, int] = {}
    port_names: dict[str, str] = {}
    for i, entry in enumerate(value):
        here = item(path, i)
        spec = checker.mapping(entry, here, CONTAINER_FIELDS, required=("name",))
        if spec is None:
            continue
        name = spec.get("name")
        if name is not None and checker.name(
            name, join(here, "name"), "container name", DNS_LABEL_MAX, DNS_LABEL_RE
        ):
            if name in seen:
                checker.add(
                    join(here, "name"),
                    f"container name {name!r} is already used by containers[{seen[name]}]",
                    "give each container its own name",
                )
            seen.setdefault(name, i)
        image = checker.take(spec, "image", here, "string")
        if isinstance(image, str) and not is_host_image(image):
            try:
                parse_image(image)
            except ImageError as exc:
                checker.add(
                    join(here, "image"),
                    str(exc),
                    "name an image as Docker does, e.g. busybox or busybox:1.36",
                )
        if isinstance(spec.get("imagePullPolicy"), str):  # its type is checked where it is kept
            checker.choice(spec, "imagePullPolicy", here, PULL_POLICIES)
        command = checker.str_list(spec, "command", here)
        args = checker.str_list(spec, "args", here)
        if command == [] and args == [] and is_host_image(image):
            checker.add(
                join(here, "command"),
                "no command: the default image (a view of the host's root) has no entrypoint",
                "give the container a command, e.g. command: [sleep, infinity], "
                "or an image with one (`netlab image ls`)",
            )
        env, env_refs = read_env(spec, here, checker)
        env_from = read_env_from(spec, here, checker)
        mounts = read_mounts(spec, here, volumes, checker)
        ports = _ports(spec, here, checker, port_names)
        probe = _probe(spec, here, checker)
        recorded = _recorded(spec, here, RECORDED_CONTAINER_FIELDS, checker)
        security = read_container_security(
            recorded.get("securityContext"), join(here, "securityContext"), checker
        )
        resources = read_resources(spec.get("resources"), join(here, "resources"), checker)
        if isinstance(name, str):
            argv = (tuple(command or ()), tuple(args or ()))
            containers.append(
                ContainerSpec(
                    name,
                    *argv,
                    tuple(env),
                    tuple(ports),
                    image,
                    probe,
                    recorded,
                    security,
                    resources,
                    mounts,
                    env_refs,
                    env_from,
                )
            )
    return containers


def pod_template(
    value: Any,
    path: str,
    labels: dict[str, str],
    checker: Checker,
    *,
    always: bool = False,
    claims: Sequence[str] = (),
) -> PodTemplate | None:
    """A pod spec at path (`spec` of a Pod, `spec.template.spec` of a Deployment);
    `claims`: a StatefulSet's volumeClaimTemplates, which its containers may mount."""
    if value is None:  # reported as a missing required field by the caller
        return None
    spec = checker.mapping(value, path, POD_FIELDS, required=("containers",))
    if spec is None:
        return None
    before = len(checker.problems)
    volumes = read_volumes(spec.get("volumes"), join(path, "volumes"), checker)
    declared = {v.name: v for v in volumes} if len(checker.problems) == before else None
    for claim in claims if declared is not None else ():
        declared.setdefault(claim, VolumeSpec(claim, ClaimSource(claim)))
    containers = _containers(spec.get("containers"), join(path, "containers"), checker, declared)
    selector = checker.labels(spec, "nodeSelector", path)
    node_name = checker.take(spec, "nodeName", path, "string")
    policy = checker.take(spec, "restartPolicy", path, "string", default="Always")
    if policy is not None and policy not in RESTART_POLICIES:
        fix = did_you_mean(policy, RESTART_POLICIES, "use one of")
        checker.add(join(path, "restartPolicy"), f"{policy!r} is not a restart policy", fix)
    elif always and policy != "Always":
        checker.add(
            join(path, "restartPolicy"),
            f"a Deployment's pods must use restartPolicy Always, not {policy!r}",
            "remove restartPolicy (Always is the default) or use a bare Pod",
        )
    recorded = _recorded(spec, path, RECORDED_POD_FIELDS, checker)
    hostname = recorded.get("hostname")
    if hostname is not None:
        checker.name(hostname, join(path, "hostname"), "hostname", DNS_LABEL_MAX, DNS_LABEL_RE)
    subdomain = recorded.get("subdomain")
    if subdomain is not None:
        checker.name(subdomain, join(path, "subdomain"), "subdomain", DNS_LABEL_MAX, DNS_LABEL_RE)
    return PodTemplate(
        frozen_map(labels),
        tuple(containers),
        frozen_map(selector),
        node_name,
        policy or "Always",
        recorded,
        read_pod_security(recorded.get("securityContext"), join(path, "securityContext"), checker),
        hostname,
        bool(recorded.get("shareProcessNamespace", False)),
        volumes,
        subdomain,
    )


def _recorded(spec: dict, path: str, fields: dict[str, str], checker: Checker) -> MappingProxyType:
    """The fields the lab records but does not act on, each of the right JSON kind."""
    kept = {}
    for key, kind in fields.items():
        value = checker.take(spec, key, path, kind)
        if value is not None:
            kept[key] = copy.deepcopy(value)
    return frozen_map(kept)


def _pod(manifest: Manifest, spec: Any, checker: Checker) -> PodSpec | None:
    template = pod_template(spec, manifest.prefix + "spec", manifest.labels, checker)
    if template is None:
        return None
    return PodSpec(manifest.name, manifest.namespace, template, manifest.body)


def read_replicas(spec: dict, path: str, checker: Checker) -> int | None:
    """`replicas` (1 if absent), 0 or more."""
    replicas = checker.take(spec, "replicas", path, "integer", default=1)
    if replicas is not None and replicas < 0:
        checker.add(
            join(path, "replicas"),
            f"Invalid value: {replicas}: must be greater than or equal to 0",
            "use 0 to run no pods",
        )
        return None
    return replicas


def read_selector(spec: dict, path: str, checker: Checker) -> dict[str, str] | None:
    """`selector.matchLabels`, not empty (it would select every pod)."""
    selector = spec.get("selector")
    here = join(path, "selector")
    if selector is None or not checker.mapping(
        selector, here, ("matchLabels",), required=("matchLabels",)
    ):
        return None
    match = checker.labels(selector, "matchLabels", here)
    if match == {}:
        checker.add(
            join(here, "matchLabels"),
            "an empty selector would select every pod",
            "list the template's labels in matchLabels, e.g. app: web",
        )
        return None
    return match


def read_template(
    spec: dict, path: str, checker: Checker, match: dict[str, str] | None = None
) -> tuple[dict | None, dict[str, str] | None]:
    """`spec.template` of a workload (a mapping with a `spec`) and its labels, which
    must include every `match` (the selector's) entry."""
    tpath = join(path, "template")
    raw = spec.get("template")
    template = None if raw is None else checker.mapping(raw, tpath, TEMPLATE_FIELDS, ["spec"])
    if template is None:
        return None, None
    labels: dict[str, str] | None = {}
    if template.get("metadata") is not None:
        meta = checker.mapping(
            template["metadata"], join(tpath, "metadata"), TEMPLATE_METADATA_FIELDS
        )
        labels = checker.labels(meta or {}, "labels", join(tpath, "metadata"))
    if match and labels is not None:
        missing = [f"{k}={v}" for k, v in match.items() if labels.get(k) != v]
        if missing:
            checker.add(
                join(path, "selector.matchLabels"),
                f"selector does not match template labels: {', '.join(missing)} not in "
                "spec.template.metadata.labels",
                "make spec.template.metadata.labels include every matchLabels entry",
            )
    return template, labels


def _deployment(manifest: Manifest, value: Any, checker: Checker) -> DeploymentSpec | None:
    path = manifest.prefix + "spec"
    spec = checker.mapping(value, path, DEPLOYMENT_FIELDS, required=("selector", "template"))
    if spec is None:
        return None
    replicas = read_replicas(spec, path, checker)
    _recorded(spec, path, RECORDED_DEPLOYMENT_FIELDS, checker)
    for field, message, fix in check_strategy(spec.get("strategy")):
        checker.add(join(path, field), message, fix)
    try:
        settings_of(manifest.body.get("metadata", {}).get("annotations") or {})
    except ValueError as exc:
        checker.add(
            manifest.prefix + "metadata.annotations",
            str(exc),
            "write minScale/maxScale as whole numbers, target as requests per pod, window as 6s",
        )
    limit = spec.get("revisionHistoryLimit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        checker.add(
            join(path, "revisionHistoryLimit"),
            f"must be a whole number 0 or more, got {limit!r}",
            "keep 10 old revisions (the default) or fewer",
        )
    match = read_selector(spec, path, checker)
    template, labels = read_template(spec, path, checker, match)
    if template is None:
        return None
    tpath = join(path, "template")
    pod = pod_template(
        template.get("spec"), join(tpath, "spec"), labels or {}, checker, always=True
    )
    if pod is None or replicas is None or match is None:
        return None
    return DeploymentSpec(
        manifest.name,
        manifest.namespace,
        replicas,
        frozen_map(match),
        pod,
        frozen_map(manifest.labels),
        manifest.body,
    )


def _namespace(manifest: Manifest, value: Any, checker: Checker) -> NamespaceSpec | None:
    """A Namespace: its name and labels (`netlab.io/inject: "true"` meshes its pods);
    `spec.finalizers` (kube-apiserver's `kubernetes`, as the stored object shows it) is
    taken and not acted on."""
    spec = checker.mapping(value or {}, manifest.prefix + "spec", ("finalizers",))
    if spec is not None:
        checker.str_list(spec, "finalizers", manifest.prefix + "spec")
    notes = (manifest.body.get("metadata") or {}).get("annotations") or {}
    return NamespaceSpec(manifest.name, frozen_map(manifest.labels), frozen_map(dict(notes)))


_ISTIO_ALSO = tuple(
    f"{ISTIO_GROUP}/{v}" for v in ISTIO_VERSIONS if f"{ISTIO_GROUP}/{v}" != ISTIO_API
)

from netlab.spec.jobs import JOB_NAME_MAX, read_job  # noqa: E402 (it reads pod_template above)
from netlab.spec.statefulset import STATEFULSET_NAME_MAX, read_statefulset  # noqa: E402
from netlab.spec.storage import (  # noqa: E402
    CLASS_FIELDS,
    read_claim,
    read_storage_class,
    read_volume,
)

KINDS: dict[str, Kind] = {
    "Pod": Kind("v1", DNS_NAME_MAX, "spec", _pod, DNS_SUBDOMAIN_RE),
    "Deployment": Kind(
        "apps/v1", DEPLOYMENT_NAME_MAX, "spec.template.spec", _deployment, DNS_SUBDOMAIN_RE
    ),
    "Service": Kind("v1", DNS_LABEL_MAX, None, read_service, DNS_1035_LABEL_RE),
    "Namespace": Kind("v1", DNS_LABEL_MAX, None, _namespace, needs_spec=False),
    "VirtualService": Kind(
        ISTIO_API, DNS_NAME_MAX, None, read_virtual_service, DNS_SUBDOMAIN_RE, _ISTIO_ALSO
    ),
    "DestinationRule": Kind(
        ISTIO_API, DNS_NAME_MAX, None, read_destination_rule, DNS_SUBDOMAIN_RE, _ISTIO_ALSO
    ),
    "RateLimitPolicy": Kind(RATE_LIMIT_API, DNS_NAME_MAX, None, read_rate_limit, DNS_SUBDOMAIN_RE),
    "Job": Kind("batch/v1", JOB_NAME_MAX, "spec.template.spec", read_job),
    "ConfigMap": Kind("v1", DNS_NAME_MAX, None, read_config_map, DNS_SUBDOMAIN_RE,
                      needs_spec=False, top=CONFIG_MAP_FIELDS),
    "Secret": Kind("v1", DNS_NAME_MAX, None, read_secret, DNS_SUBDOMAIN_RE,
                   needs_spec=False, top=SECRET_FIELDS),
    "StorageClass": Kind("storage.k8s.io/v1", DNS_NAME_MAX, None, read_storage_class,
                         DNS_SUBDOMAIN_RE, needs_spec=False, top=CLASS_FIELDS),
    "PersistentVolumeClaim": Kind("v1", DNS_NAME_MAX, None, read_claim, DNS_SUBDOMAIN_RE),
    "PersistentVolume": Kind("v1", DNS_NAME_MAX, None, read_volume, DNS_SUBDOMAIN_RE),
    "StatefulSet": Kind("apps/v1", STATEFULSET_NAME_MAX, "spec.template.spec", read_statefulset),
}  # fmt: skip
MESH_KINDS = ("VirtualService", "DestinationRule", "RateLimitPolicy")


def _supported() -> str:
    return ", ".join(f"{kind} ({spec.api_version})" for kind, spec in KINDS.items())


def _metadata(doc: dict, kind: str, where: str, checker: Checker) -> Manifest | None:
    """Check apiVersion, metadata and the top-level keys; the manifest's identity.

    None only if there is no usable name (problems elsewhere are recorded, not fatal).
    """
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    prefix = f"{kind}/{name}: " if isinstance(name, str) and name else f"{where}: "
    rule = KINDS[kind]
    needed = ("apiVersion", "metadata", "spec") if rule.needs_spec else ("apiVersion", "metadata")
    top = TOP_FIELDS if rule.top is None else ("apiVersion", "kind", "metadata", *rule.top)
    checker.mapping(doc, prefix, top, required=needed)
    api, wanted = doc.get("apiVersion"), rule.api_version
    if api is not None and api != wanted and api not in rule.also:
        checker.add(
            prefix + "apiVersion", f"{kind} is {wanted}, not {api!r}", f"write apiVersion: {wanted}"
        )
    if (
        meta is None
        or checker.mapping(meta, prefix + "metadata", METADATA_FIELDS, ["name"]) is None
    ):
        return None
    path = prefix + "metadata"
    if name is not None:
        checker.name(name, join(path, "name"), f"{kind} name", rule.max_name, rule.name_re)
    if not isinstance(name, str):
        return None
    namespace = checker.take(meta, "namespace", path, "string", default=DEFAULT_NAMESPACE)
    if namespace is not None:
        checker.name(namespace, join(path, "namespace"), "namespace", DNS_LABEL_MAX, DNS_LABEL_RE)
    labels = checker.labels(meta, "labels", path)
    notes = checker.take(meta, "annotations", path, "mapping", default={}) or {}
    for key, value in notes.items():
        checker.check_type(value, join(join(path, "annotations"), key), "string")
    body = copy.deepcopy(doc)
    body.pop("status", None)
    for field in MANAGED_METADATA:
        body["metadata"].pop(field, None)
    body["metadata"]["namespace"] = namespace
    return Manifest(kind, name, namespace or DEFAULT_NAMESPACE, labels or {}, body, prefix)


def read_manifests(documents: list[tuple[int, dict]], checker: Checker) -> dict[str, list[Any]]:
    """Check each (stream index, manifest); the valid specs by kind, in document order."""
    found: dict[str, list[Any]] = {kind: [] for kind in KINDS}
    seen: dict[tuple[str, str, str], int] = {}
    for index, doc in documents:
        where, kind = f"documents[{index}]", doc.get("kind")
        if kind is None:
            checker.add(
                f"{where}: kind", "required field is missing", f"add 'kind:', one of {_supported()}"
            )
            continue
        if not checker.check_type(kind, f"{where}: kind", "string"):
            continue
        if kind not in KINDS:
            hint = suggest(kind, list(KINDS))
            fix = f"did you mean {hint!r}?" if hint else f"netlab supports {_supported()}"
            checker.add(f"{where}: kind", f"kind {kind!r} is not supported", fix)
            continue
        before = len(checker.problems)
        manifest = _metadata(doc, kind, where, checker)
        if manifest is None:
            continue
        key = (kind, manifest.namespace, manifest.name)
        if key in seen:
            checker.add(
                manifest.prefix + "metadata.name",
                f"a second {kind} {manifest.name!r} in namespace {manifest.namespace!r} "
                f"(the first is documents[{seen[key]}])",
                "rename one of them",
            )
        seen.setdefault(key, index)
        if doc.get("spec") is None and KINDS[kind].needs_spec:  # reported as missing
            continue
        spec = KINDS[kind].read(manifest, doc.get("spec"), checker)
        if spec is not None and len(checker.problems) == before:
            found[kind].append(spec)
    return found


def check_scheduling(lab: LabSpec, found: dict[str, list[Any]], checker: Checker) -> None:
    """Every nodeName/nodeSelector must match a node; the pod network must hold every pod."""
    nodes = {
        node.name: {**node.labels, HOSTNAME_LABEL: node.name, ZONE_LABEL: node.rack}
        for node in lab.nodes
    }
    for kind, specs in found.items():
        pod_path = KINDS[kind].pod_path
        for spec in specs if pod_path else ():
            path, template = f"{kind}/{spec.name}: {pod_path}", spec.template
            candidates = nodes
            if template.node_name is not None:
                if template.node_name not in nodes:
                    checker.add(
                        join(path, "nodeName"),
                        f"no node {template.node_name!r} in the lab",
                        did_you_mean(template.node_name, list(nodes), "nodes"),
                    )
                    continue
                candidates = {template.node_name: nodes[template.node_name]}
            wanted = dict(template.node_selector)
            if wanted and not any(
                wanted.items() <= labels.items() for labels in candidates.values()
            ):
                text = ", ".join(f"{k}={v}" for k, v in wanted.items())
                pinned = template.node_name
                where = f" (it is pinned to node {pinned!r} by nodeName)" if pinned else ""
                checker.add(
                    join(path, "nodeSelector"),
                    f"nodeSelector {text} matches no node{where}, so the pod cannot be scheduled",
                    "label a node with it (lab.racks[].nodes[].labels) or change the selector",
                )
    pods = len(found.get("Pod", ())) + sum(
        d.replicas for kind in ("Deployment", "StatefulSet") for d in found.get(kind, ())
    )
    room = len(nodes) * (2 ** (32 - lab.overlay.subnet_len) - POD_OVERHEAD)
    if pods > room:
        checker.add(
            "lab.overlay.SubnetLen",
            f"{pods} pods do not fit: {len(nodes)} nodes with a /{lab.overlay.subnet_len} pod "
            f"subnet each hold at most {room}",
            "use a shorter SubnetLen, more nodes or fewer replicas",
        )
