"""What `netlab capture TARGET [-i IFACE]` captures: targets resolved to
interfaces (namespace + interface name + label) from the lab API's objects.
Pure: no sockets, so every error is found before anything is opened."""

from __future__ import annotations

from typing import Any

from netlab.capture.sockets import Interface
from netlab.errors import NetlabError

KINDS = ("pod", "node", "rack", "router", "service", "all")
ALIASES = {"po": "pod", "no": "node", "svc": "service", "services": "service", "pods": "pod"}
NODE_INTERFACES = ("eth0", "flannel.1", "cni0")
USAGE = (
    "targets are pod/NAME, node/NAME (-i eth0|flannel.1|cni0), rack/NAME, router/NAME, "
    "service/NAME (its endpoint pods) or all"
)


def resolve(
    targets: list[str],
    interfaces: list[str],
    topology: dict[str, Any],
    pods: list[dict[str, Any]],
    endpoints: list[dict[str, Any]],
    namespace: str = "default",
) -> list[Interface]:
    """Every interface the targets name, in order, without duplicates.
    `interfaces` (from -i, comma lists allowed) picks the interfaces of nodes,
    routers and pods; empty means each target's default."""
    chosen = [name for item in interfaces for name in item.split(",") if name]
    result: list[Interface] = []
    for target in targets:
        for interface in _one(target, chosen, topology, pods, endpoints, namespace):
            if interface not in result:
                result.append(interface)
    if not result:
        raise NetlabError(f"nothing to capture: {USAGE}")
    return result


def _one(target, chosen, topology, pods, endpoints, namespace) -> list[Interface]:
    kind, _, name = target.partition("/")
    if not name and kind != "all":
        kind, name = "pod", kind  # a bare name is a pod, as kubectl takes it
    kind = ALIASES.get(kind, kind)
    if kind not in KINDS:
        raise NetlabError(f"capture target {target!r}: unknown kind {kind!r}; {USAGE}")
    nodes = {n["name"]: n for n in topology.get("nodes", [])}
    if kind == "all":
        found = [_node(node, chosen or ["eth0"]) for node in nodes.values()]
        if not chosen:
            found += [_router(router, []) for router in topology.get("routers", [])]
        return [i for group in found for i in group]
    if kind == "node":
        if name not in nodes:
            raise NetlabError(_missing("node", name, nodes))
        return _node(nodes[name], chosen or ["eth0"])
    if kind == "router":
        routers = {r["name"]: r for r in topology.get("routers", [])}
        if name not in routers:
            raise NetlabError(_missing("router", name, routers))
        return _router(routers[name], chosen)
    if kind == "rack":
        racks = {r["name"]: r for r in topology.get("racks", [])}
        if name not in racks:
            raise NetlabError(_missing("rack", name, racks))
        if chosen:
            raise NetlabError(f"rack/{name} is one bridge; -i does not apply to it")
        bridge = racks[name].get("bridge", name)
        return [Interface(f"rack/{name}:{bridge}", topology["netns"], bridge, promiscuous=True)]
    if kind == "pod":
        pod = _pod(pods, name, namespace)
        return [_pod_interface(pod, chosen)]
    return [_pod_interface(p, chosen) for p in _service_pods(name, namespace, pods, endpoints)]


def _node(node: dict, chosen: list[str]) -> list[Interface]:
    return [Interface(f"node/{node['name']}:{ifname}", node["netns"], ifname) for ifname in chosen]


def _router(router: dict, chosen: list[str]) -> list[Interface]:
    ports = [port["ifname"] for port in router.get("ports", [])]
    for ifname in chosen:
        if ifname not in ports:
            raise NetlabError(
                f"router/{router['name']} has no port {ifname}; it has {', '.join(ports)}"
            )
    return [
        Interface(f"router/{router['name']}:{ifname}", router["netns"], ifname)
        for ifname in chosen or ports
    ]


def _pod(pods: list[dict], name: str, namespace: str) -> dict:
    for pod in pods:
        meta = pod["metadata"]
        if meta["name"] == name and meta.get("namespace", "default") == namespace:
            return pod
    names = sorted(
        p["metadata"]["name"] for p in pods if p["metadata"].get("namespace") == namespace
    )
    hint = f"; pods in {namespace}: {', '.join(names[:12])}" if names else ""
    raise NetlabError(f'pod "{name}" not found in namespace {namespace}{hint} (`netlab get pods`)')


def _pod_interface(pod: dict, chosen: list[str]) -> Interface:
    meta = pod["metadata"]
    netns = meta.get("annotations", {}).get("netlab.io/netns")
    if not netns:
        raise NetlabError(f"pod {meta['name']} has no network namespace yet; wait until it runs")
    if len(chosen) > 1 or (chosen and chosen[0] != "eth0"):
        raise NetlabError(f"pod/{meta['name']} has one interface, eth0")
    label = (
        meta["name"]
        if meta.get("namespace") in (None, "default")
        else (f"{meta['namespace']}/{meta['name']}")
    )
    return Interface(f"pod/{label}:eth0", netns, "eth0")


def _service_pods(name: str, namespace: str, pods: list[dict], endpoints: list[dict]) -> list[dict]:
    for ep in endpoints:
        meta = ep["metadata"]
        if meta["name"] == name and meta.get("namespace", "default") == namespace:
            ips = {
                address["ip"]
                for subset in ep.get("subsets") or []
                for key in ("addresses", "notReadyAddresses")
                for address in subset.get(key) or []
            }
            chosen = [p for p in pods if p.get("status", {}).get("podIP") in ips]
            if not chosen:
                raise NetlabError(f"service/{name} has no endpoint pods to capture on")
            return chosen
    raise NetlabError(
        f'service "{name}" not found in namespace {namespace} (`netlab get services`)'
    )


def _missing(kind: str, name: str, known: dict) -> str:
    return f'{kind} "{name}" not found; the lab has {", ".join(sorted(known)) or "none"}'
