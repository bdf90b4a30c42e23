"""What the CLI prints: the lab table of `netlab up`, and kubectl-style lists."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from netlab.client import LabClient
from netlab.controllers.job import finished
from netlab.objects import condition_status
from netlab.spec.storage import DEFAULT_CLASS_ANNOTATION, access_modes_text


def _lab_table(title: str, rows: list[tuple[str, str, str, str, str]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("RACK", "NODE", "UNDERLAY IP", "POD SUBNET", "PODS"):
        table.add_column(column, no_wrap=column != "PODS")
    for row in rows:
        table.add_row(*row)
    return table


def print_lab(lab) -> None:
    """The table `netlab up` prints, from an in-process Lab."""
    rows = []
    pods = lab.pod_list()
    for node in lab.node_list():
        mine = sorted((p for p in pods if p.node == node.name), key=lambda p: p.address.ip)
        listing = "\n".join(f"{p.name} {p.address.ip}" for p in mine) or "-"
        rows.append((node.rack, node.name, str(node.address.ip), str(node.pod_cidr), listing))
    overlay = lab.spec.overlay
    title = (
        f"lab {lab.spec.name}: {len(lab.plan.racks)} racks, {len(rows)} nodes, {len(pods)} pods; "
        f"overlay {overlay.network} vxlan VNI {overlay.vni} port {overlay.port}"
    )
    Console(width=120).print(_lab_table(title, rows))


def print_lab_from_api(client: LabClient, name: str) -> None:
    nodes = client.list("nodes")["items"]
    pods = client.list("pods", all_namespaces=True)["items"]
    rows = []
    for node in nodes:
        node_name = node["metadata"]["name"]
        mine = [p for p in pods if p["spec"].get("nodeName") == node_name]
        listing = (
            "\n".join(f"{p['metadata']['name']} {p['status'].get('podIP', '')}" for p in mine)
            or "-"
        )
        rows.append(
            (
                node["metadata"]["annotations"].get("netlab.io/rack", ""),
                node_name,
                node["status"]["addresses"][0]["address"],
                node["spec"].get("podCIDR", ""),
                listing,
            )
        )
    Console(width=120).print(_lab_table(f"lab {name}: {len(nodes)} nodes, {len(pods)} pods", rows))


def age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    seconds = int((datetime.now(UTC) - then).total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def pod_status_text(pod: dict[str, Any]) -> tuple[str, int]:
    """kubectl's STATUS of a pod and how many of its containers are ready, as its
    printer works them out: the phase, unless a container waits or ended with a reason
    (CrashLoopBackOff, Error, Completed); Terminating once it is being deleted."""
    status = pod.get("status") or {}
    text = status.get("reason") or status.get("phase", "")
    ready, running = 0, False
    for c in reversed(status.get("containerStatuses") or []):
        state = c.get("state") or {}
        waiting, ended = state.get("waiting") or {}, state.get("terminated")
        if waiting.get("reason"):
            text = waiting["reason"]
        elif ended is not None:
            text = ended.get("reason") or f"ExitCode:{ended.get('exitCode', 0)}"
        elif c.get("ready") and "running" in state:
            running, ready = True, ready + 1
    if text == "Completed" and running:  # one container done, another still serving
        text = "Running"
    if pod["metadata"].get("deletionTimestamp"):
        text = "Terminating"
    return text, ready


def _pod_row(pod: dict[str, Any], wide: bool) -> list[str]:
    statuses = pod["status"].get("containerStatuses", [])
    status, ready = pod_status_text(pod)
    restarts = sum(c.get("restartCount", 0) for c in statuses)
    row = [
        pod["metadata"]["name"],
        f"{ready}/{len(statuses) or len(pod.get('spec', {}).get('containers', []))}",
        status,
        str(restarts),
        age(pod["metadata"].get("creationTimestamp")),
    ]
    if wide:
        row += [
            pod["status"].get("podIP", ""),
            pod["spec"].get("nodeName", ""),
            pod["metadata"].get("annotations", {}).get("netlab.io/rack", ""),
            pod["metadata"].get("annotations", {}).get("netlab.io/netns", ""),
        ]
    return row


def _node_status(node: dict[str, Any]) -> str:
    """kubectl's STATUS: Ready or NotReady, then SchedulingDisabled if cordoned."""
    text = "Ready" if condition_status(node, "Ready") == "True" else "NotReady"
    if (node.get("spec") or {}).get("unschedulable"):
        text += ",SchedulingDisabled"
    return text


def _node_row(node: dict[str, Any], wide: bool) -> list[str]:
    annotations = node["metadata"].get("annotations", {})
    row = [
        node["metadata"]["name"],
        _node_status(node),
        annotations.get("netlab.io/rack", ""),
        node["status"]["addresses"][0]["address"],
        node["spec"].get("podCIDR", ""),
        age(node["metadata"].get("creationTimestamp")),
    ]
    if wide:
        backend = json.loads(annotations.get("flannel.alpha.coreos.com/backend-data", "{}"))
        row += [backend.get("VtepMAC", ""), annotations.get("netlab.io/netns", "")]
    return row


def _deployment_row(dep: dict[str, Any], wide: bool) -> list[str]:
    status = dep.get("status", {})
    row = [
        dep["metadata"]["name"],
        f"{status.get('readyReplicas', 0)}/{dep['spec'].get('replicas', 0)}",
        str(status.get("updatedReplicas", 0)),
        str(status.get("availableReplicas", 0)),
        age(dep["metadata"].get("creationTimestamp")),
    ]
    if wide:
        selector = dep["spec"].get("selector", {}).get("matchLabels", {})
        row.append(",".join(f"{k}={v}" for k, v in selector.items()))
    return row


def _statefulset_row(sts: dict[str, Any], wide: bool) -> list[str]:
    status, spec = sts.get("status", {}), sts.get("spec", {})
    row = [
        sts["metadata"]["name"],
        f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
        age(sts["metadata"].get("creationTimestamp")),
    ]
    if wide:
        containers = (spec.get("template") or {}).get("spec", {}).get("containers") or []
        row.append(",".join(c.get("name", "") for c in containers))
        row.append(",".join(c.get("image", "") for c in containers))
    return row


def _revision_row(rev: dict[str, Any], wide: bool) -> list[str]:
    owner = next(iter(rev["metadata"].get("ownerReferences") or ()), {})
    controller = f"{owner.get('kind', '').lower()}.apps/{owner.get('name', '')}" if owner else ""
    return [
        rev["metadata"]["name"],
        controller,
        str(rev.get("revision", 0)),
        age(rev["metadata"].get("creationTimestamp")),
    ]


def _namespace_row(ns: dict[str, Any], wide: bool) -> list[str]:
    return [
        ns["metadata"]["name"],
        ns.get("status", {}).get("phase", "Active"),
        age(ns["metadata"].get("creationTimestamp")),
    ]


def _service_row(svc: dict[str, Any], wide: bool) -> list[str]:
    spec = svc.get("spec", {})
    ports = ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports", []))
    row = [
        svc["metadata"]["name"],
        spec.get("type", "ClusterIP"),
        spec.get("clusterIP") or "<none>",
        "<none>",
        ports or "<none>",
        age(svc["metadata"].get("creationTimestamp")),
    ]
    if wide:
        selector = spec.get("selector", {})
        row.append(",".join(f"{k}={v}" for k, v in selector.items()) or "<none>")
    return row


def _event_row(ev: dict[str, Any], wide: bool) -> list[str]:
    involved = ev.get("involvedObject") or {}
    row = [
        age(ev.get("lastTimestamp")),
        ev.get("type", ""),
        ev.get("reason", ""),
        f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
        ev.get("message", ""),
    ]
    if wide:
        row += [(ev.get("source") or {}).get("component", ""), str(ev.get("count", 1))]
    return row


def _endpoints_row(ep: dict[str, Any], wide: bool) -> list[str]:
    addresses = []
    for subset in ep.get("subsets", []):
        ports = [p["port"] for p in subset.get("ports", [])] or [None]
        for address in subset.get("addresses", []):
            addresses += [f"{address['ip']}:{port}" if port else address["ip"] for port in ports]
    shown = ",".join(addresses[:3]) + (
        f" + {len(addresses) - 3} more..." if len(addresses) > 3 else ""
    )
    row = [ep["metadata"]["name"], shown or "<none>", age(ep["metadata"].get("creationTimestamp"))]
    if wide:
        not_ready = [
            a["ip"] for subset in ep.get("subsets", []) for a in subset.get("notReadyAddresses", [])
        ]
        row.append(",".join(not_ready) or "<none>")
    return row


def _first_three(items: list[str]) -> str:
    """kubectl's list of at most three, then `+ N more...`; `<unset>` if empty."""
    shown = ",".join(items[:3]) + (f" + {len(items) - 3} more..." if len(items) > 3 else "")
    return shown or "<unset>"


def _endpoint_slice_row(eps: dict[str, Any], wide: bool) -> list[str]:
    ports = [str(p.get("port", p.get("name") or "*")) for p in eps.get("ports") or []]
    addresses = [a for e in eps.get("endpoints") or [] for a in e.get("addresses", [])]
    return [
        eps["metadata"]["name"],
        eps.get("addressType", ""),
        _first_three(ports),
        _first_three(addresses),
        age(eps["metadata"].get("creationTimestamp")),
    ]


def _virtual_service_row(vs: dict[str, Any], wide: bool) -> list[str]:
    spec = vs.get("spec", {})
    row = [
        vs["metadata"]["name"],
        json.dumps(spec.get("gateways", []), separators=(",", ":")),
        json.dumps(spec.get("hosts", []), separators=(",", ":")),
        age(vs["metadata"].get("creationTimestamp")),
    ]
    if wide:
        routes = []
        for i, http in enumerate(spec.get("http", [])):
            split = "+".join(
                f"{r['destination'].get('subset') or r['destination']['host']}"
                f"{':' + str(r['weight']) if 'weight' in r else ''}"
                for r in http.get("route", [])
            )
            routes.append(f"{http.get('name') or i}={split}")
        row.append(",".join(routes) or "<none>")
    return row


def _destination_rule_row(dr: dict[str, Any], wide: bool) -> list[str]:
    spec = dr.get("spec", {})
    row = [
        dr["metadata"]["name"],
        spec.get("host", ""),
        age(dr["metadata"].get("creationTimestamp")),
    ]
    if wide:
        subsets = [
            f"{s.get('name')}({','.join(f'{k}={v}' for k, v in s.get('labels', {}).items())})"
            for s in spec.get("subsets", [])
        ]
        row.append(" ".join(subsets) or "<none>")
    return row


def _rate_limit_row(rl: dict[str, Any], wide: bool) -> list[str]:
    spec = rl.get("spec", {})
    bucket = spec.get("tokenBucket")
    if bucket:
        limit = (
            f"{bucket.get('maxTokens')} max, {bucket.get('tokensPerFill', bucket.get('maxTokens'))}"
            f"/{bucket.get('fillInterval', '1s')}"
        )
    else:
        limit = f"{spec.get('requestsPerSecond')}/s"
    row = [
        rl["metadata"]["name"],
        f"service/{spec.get('targetRef', {}).get('name', '')}",
        limit,
        age(rl["metadata"].get("creationTimestamp")),
    ]
    if wide:
        source = spec.get("source", {}).get("service")
        row += [spec.get("route") or "<any>", f"service/{source}" if source else "<any>"]
    return row


def _replicaset_row(rs: dict[str, Any], wide: bool) -> list[str]:
    status = rs.get("status", {})
    row = [
        rs["metadata"]["name"],
        str(rs["spec"].get("replicas", 0)),
        str(status.get("replicas", 0)),
        str(status.get("readyReplicas", 0)),
        age(rs["metadata"].get("creationTimestamp")),
    ]
    if wide:
        selector = rs["spec"].get("selector", {}).get("matchLabels", {})
        row.append(",".join(f"{k}={v}" for k, v in selector.items()))
    return row


def _job_row(job: dict[str, Any], wide: bool) -> list[str]:
    status, spec = job.get("status", {}), job.get("spec", {})
    ended = finished(job) or "Running"
    row = [
        job["metadata"]["name"],
        ended,
        f"{status.get('succeeded', 0)}/{spec.get('completions', 1)}",
        str(status.get("failed", 0)),
        age(job["metadata"].get("creationTimestamp")),
    ]
    if wide:
        reason = next(
            (
                c.get("reason", "")
                for c in status.get("conditions") or ()
                if c.get("type") == "Failed"
            ),
            "",
        )
        row.append(reason)
    return row


def _config_row(obj: dict[str, Any], wide: bool) -> list[str]:
    """kubectl's DATA: how many keys (a ConfigMap's data and binaryData)."""
    keys = len(obj.get("data") or {}) + len(obj.get("binaryData") or {})
    return [obj["metadata"]["name"], str(keys), age(obj["metadata"].get("creationTimestamp"))]


def _secret_row(obj: dict[str, Any], wide: bool) -> list[str]:
    row = _config_row(obj, wide)
    return [row[0], obj.get("type") or "Opaque", *row[1:]]


def _claim_row(pvc: dict[str, Any], wide: bool) -> list[str]:
    spec, status = pvc.get("spec") or {}, pvc.get("status") or {}
    bound = bool(spec.get("volumeName"))
    row = [
        pvc["metadata"]["name"],
        "Terminating" if pvc["metadata"].get("deletionTimestamp") else status.get("phase", ""),
        spec.get("volumeName", ""),
        (status.get("capacity") or {}).get("storage", "") if bound else "",
        access_modes_text(status.get("accessModes") or ()) if bound else "",
        spec.get("storageClassName") or "",
        spec.get("volumeAttributesClassName") or "<unset>",
        age(pvc["metadata"].get("creationTimestamp")),
    ]
    if wide:
        row.append(spec.get("volumeMode") or "<unset>")
    return row


def _volume_row(pv: dict[str, Any], wide: bool) -> list[str]:
    spec, status = pv.get("spec") or {}, pv.get("status") or {}
    ref = spec.get("claimRef") or {}
    row = [
        pv["metadata"]["name"],
        (spec.get("capacity") or {}).get("storage", ""),
        access_modes_text(spec.get("accessModes") or ()),
        spec.get("persistentVolumeReclaimPolicy", ""),
        "Terminating" if pv["metadata"].get("deletionTimestamp") else status.get("phase", ""),
        f"{ref.get('namespace', '')}/{ref.get('name', '')}" if ref else "",
        spec.get("storageClassName") or "",
        spec.get("volumeAttributesClassName") or "<unset>",
        status.get("reason", ""),
        age(pv["metadata"].get("creationTimestamp")),
    ]
    if wide:
        row.append(spec.get("volumeMode") or "<unset>")
    return row


def _storage_class_row(sc: dict[str, Any], wide: bool) -> list[str]:
    name = sc["metadata"]["name"]
    if (sc["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true":
        name += " (default)"
    return [
        name,
        sc.get("provisioner", ""),
        sc.get("reclaimPolicy") or "Delete",
        sc.get("volumeBindingMode") or "Immediate",
        "true" if sc.get("allowVolumeExpansion") else "false",
        age(sc["metadata"].get("creationTimestamp")),
    ]


def _volume_attachment_row(va: dict[str, Any], wide: bool) -> list[str]:
    spec = va.get("spec") or {}
    return [
        va["metadata"]["name"],
        spec.get("attacher", ""),
        (spec.get("source") or {}).get("persistentVolumeName", ""),
        spec.get("nodeName", ""),
        "true" if (va.get("status") or {}).get("attached") else "false",
        age(va["metadata"].get("creationTimestamp")),
    ]


COLUMNS = {
    "pods": (
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        ["IP", "NODE", "RACK", "NETNS"],
        _pod_row,
    ),
    "nodes": (
        ["NAME", "STATUS", "RACK", "INTERNAL-IP", "POD-CIDR", "AGE"],
        ["VTEP-MAC", "NETNS"],
        _node_row,
    ),
    "deployments": (
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        ["SELECTOR"],
        _deployment_row,
    ),
    "replicasets": (["NAME", "DESIRED", "CURRENT", "READY", "AGE"], ["SELECTOR"], _replicaset_row),
    "jobs": (["NAME", "STATUS", "COMPLETIONS", "FAILED", "AGE"], ["REASON"], _job_row),
    "statefulsets": (["NAME", "READY", "AGE"], ["CONTAINERS", "IMAGES"], _statefulset_row),
    "controllerrevisions": (["NAME", "CONTROLLER", "REVISION", "AGE"], [], _revision_row),
    "namespaces": (["NAME", "STATUS", "AGE"], [], _namespace_row),
    "services": (
        ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"],
        ["SELECTOR"],
        _service_row,
    ),
    "endpoints": (["NAME", "ENDPOINTS", "AGE"], ["NOT-READY"], _endpoints_row),
    "configmaps": (["NAME", "DATA", "AGE"], [], _config_row),
    "secrets": (["NAME", "TYPE", "DATA", "AGE"], [], _secret_row),
    "endpointslices": (
        ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"],
        [],
        _endpoint_slice_row,
    ),
    "events": (
        ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        ["SOURCE", "COUNT"],
        _event_row,
    ),
    "virtualservices": (["NAME", "GATEWAYS", "HOSTS", "AGE"], ["ROUTES"], _virtual_service_row),
    "destinationrules": (["NAME", "HOST", "AGE"], ["SUBSETS"], _destination_rule_row),
    "ratelimitpolicies": (
        ["NAME", "TARGET", "LIMIT", "AGE"],
        ["ROUTE", "SOURCE"],
        _rate_limit_row,
    ),
    "persistentvolumeclaims": (
        ["NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS MODES", "STORAGECLASS",
         "VOLUMEATTRIBUTESCLASS", "AGE"],
        ["VOLUMEMODE"],
        _claim_row,
    ),
    "persistentvolumes": (
        ["NAME", "CAPACITY", "ACCESS MODES", "RECLAIM POLICY", "STATUS", "CLAIM",
         "STORAGECLASS", "VOLUMEATTRIBUTESCLASS", "REASON", "AGE"],
        ["VOLUMEMODE"],
        _volume_row,
    ),
    "storageclasses": (
        ["NAME", "PROVISIONER", "RECLAIMPOLICY", "VOLUMEBINDINGMODE", "ALLOWVOLUMEEXPANSION",
         "AGE"],
        [],
        _storage_class_row,
    ),
    "volumeattachments": (
        ["NAME", "ATTACHER", "PV", "NODE", "ATTACHED", "AGE"], [], _volume_attachment_row
    ),
}  # fmt: skip
CLUSTER_SCOPED = ("nodes", "namespaces", "persistentvolumes", "storageclasses", "volumeattachments")


def _name_age_row(obj: dict[str, Any], wide: bool) -> list[str]:
    return [obj["metadata"]["name"], age(obj["metadata"].get("creationTimestamp"))]


def render(
    resource: str,
    objs: list[dict[str, Any]],
    wide: bool = False,
    all_namespaces: bool = False,
    name_prefix: str = "",
) -> str:
    """kubectl's plain column layout; `name_prefix` (`deployment.apps/`) goes before
    each name, as kubectl writes them when several kinds are listed."""
    if not objs:
        return "No resources found."
    header, extra, row_of = COLUMNS.get(resource, (["NAME", "AGE"], [], _name_age_row))
    header = header + (extra if wide else [])
    rows = [row_of(obj, wide) for obj in objs]
    if name_prefix and "NAME" in header:
        at = header.index("NAME")
        rows = [[*row[:at], name_prefix + row[at], *row[at + 1 :]] for row in rows]
    if all_namespaces and resource not in CLUSTER_SCOPED:
        header = ["NAMESPACE", *header]
        rows = [
            [obj["metadata"].get("namespace", ""), *row]
            for obj, row in zip(objs, rows, strict=True)
        ]
    return "\n".join(columns([header, *rows]))


def columns(rows: list[list]) -> list[str]:
    """Rows as kubectl prints them: each column as wide as its widest cell, three spaces
    between (a row may have fewer cells than the first)."""
    widths = [max(len(str(r[i])) for r in rows if i < len(r)) for i in range(len(rows[0]))]
    return [
        "   ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in rows
    ]
