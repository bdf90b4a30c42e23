"""The lab as a graphviz picture: `build_dot()` is pure: the lab API's Topology, Pods, Services and Endpoints (plain
dicts) in, DOT text out. The picture, top to bottom:

- routers, with an edge to each rack they have a port on (labelled with the
  gateway address and the router's interface);
- one cluster per rack (name and underlay subnet) holding the rack's bridge and
  one sub-cluster per node: the node (name, underlay address, pod subnet, VTEP)
  above a compact table of its pods (name, IP), joined by the node's CNI bridge;
- the overlay: one "overlay" hub beside the routers (VNI, port, how many VXLAN
  tunnels, and which ones while they are few) with a dashed "VXLAN VNI n" edge to
  each rack; with `directRouting`, nodes of one rack reach each other by direct
  routes instead of tunnels (dotted "direct" edges, up to `DIRECT_EDGE_LIMIT`);
- Services (name, ClusterIP or "headless", ports) on the bottom row, with an edge
  to each endpoint pod's row (dashed: not ready); a Service with more than
  `ENDPOINT_EDGE_LIMIT` endpoints gets one counted edge per node instead (per rack
  past `NODE_EDGE_LIMIT` nodes) and a mark in its colour in its pods' rows.

Up to `ROW_LIMIT` nodes stand in one row; past it each rack becomes columns of
stacked nodes (about sqrt(nodes) high), so that the picture stays about square:
4 racks x 4 nodes x 8 pods is about 1300 x 1800 px. Racks, nodes and Services keep
their order (crossing minimisation is all but off): one lab, one picture.

Names reach the DOT text only through `dot.esc()`; graph IDs are generated
(`r0`, `k0`, `b0`, `n0`, `p0`, `s0`), never taken from names.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from netlab.draw.dot import DotWriter, Html, esc, html_lines

DIRECT_EDGE_LIMIT = 6  # more direct routes than this: counted, not drawn
LIST_LIMIT = 6  # up to this many tunnels are listed by name in the hub
ENDPOINT_EDGE_LIMIT = 12  # a Service with more endpoints: counted, per node
NODE_EDGE_LIMIT = 8  # endpoints on more nodes than this: counted per rack
ROW_LIMIT = 6  # more nodes than this: racks become columns of stacked nodes

FONT = "Helvetica"
COLORS = {
    "rack": "#eef3fb",
    "rack_border": "#7f9cc8",
    "node_cluster": "#f8fafd",
    "node_border": "#b8c6dc",
    "router": "#ffe3bf",
    "bridge": "#dde6f3",
    "service": "#dff2df",
    "headless": "#f1f8f1",
    "overlay": "#7a4fb0",
    "overlay_fill": "#f4eefb",
    "pods_head": "#e9edf3",
    "pending": "#fff4cc",
    "failed": "#fbd9d9",
}
VXLAN_EDGE = {"style": "dashed", "color": COLORS["overlay"], "fontcolor": COLORS["overlay"]}
DIRECT_EDGE = {"style": "dotted", "color": "#2f7f5f", "fontcolor": "#2f7f5f"}
LEGEND = (
    "solid: underlay links; dashed purple: VXLAN overlay; dotted green: direct routes; "
    "yellow rows: pods not ready, red: failed\n"
    "arrows: Service \u2192 endpoint pods (dashed: not ready; \u00d7N: N endpoints "
    "there, each marked \u25a0 in the Service's colour)"
)
SERVICE_EDGE_COLORS = ("#2e7d32", "#1565c0", "#c62828", "#6a1b9a", "#ef6c00", "#00838f")


def _meta(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "default", meta.get("name") or "?"


def _pod_ip(pod: dict[str, Any]) -> str:
    return (pod.get("status") or {}).get("podIP") or "-"


def _pod_state(pod: dict[str, Any]) -> str:
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    if phase in ("Failed", "Unknown"):
        return "failed"
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return "ready" if phase == "Running" and ready else "pending"


def _service_ports(service: dict[str, Any]) -> list[str]:
    ports = []
    for port in (service.get("spec") or {}).get("ports") or []:
        text = str(port.get("port", "?"))
        target = port.get("targetPort")
        if target is not None and str(target) != text:
            text += f"\u2192{target}"
        text += "/" + str(port.get("protocol") or "TCP")
        if port.get("name"):
            text = f"{port['name']} {text}"
        ports.append(text)
    return ports


@dataclass
class _Service:
    sid: str
    obj: dict[str, Any]
    color: str
    members: list[tuple[tuple[str, str], bool]]  # ((namespace, pod), ready), drawn pods only
    per_node: bool = False  # one counted edge per node instead of one per pod


class _Picture:
    """Builds one DOT graph; see the module docstring for the layout."""

    def __init__(
        self,
        topology: dict[str, Any],
        pods: list[dict[str, Any]],
        services: list[dict[str, Any]],
        endpoints: list[dict[str, Any]],
        show_pods: bool,
        show_namespace: bool,
    ):
        self.topology = topology
        self.show_pods = show_pods
        self.show_namespace = show_namespace
        self.dot = DotWriter()
        self.racks = list(topology.get("racks") or [])
        self.nodes = list(topology.get("nodes") or [])
        self.node_id = {node["name"]: f"n{i}" for i, node in enumerate(self.nodes)}
        self.pods = sorted(pods, key=_meta)
        self.pod_node = {_meta(p): (p.get("spec") or {}).get("nodeName") or "" for p in self.pods}
        self.pod_port: dict[tuple[str, str], tuple[str, str]] = {}  # -> (table id, port)
        self.rack_index: dict[str, int] = {}  # node name -> its rack's cluster index
        self.rack_bottom: dict[int, str] = {}  # rack index -> the graph id lowest in it
        # past ROW_LIMIT nodes, a rack is drawn as columns of nodes stacked about this
        # high, so that the picture stays about square rather than one long row
        many = len(self.nodes) > ROW_LIMIT
        self.stack = math.ceil(math.sqrt(len(self.nodes))) if many else 1
        by_ip = {_pod_ip(p): _meta(p) for p in self.pods if _pod_ip(p) != "-"}
        eps = {_meta(e): e for e in endpoints}
        self.services = []
        for index, service in enumerate(sorted(services, key=_meta)):
            members = [
                (pod, ready)
                for pod, ready in _endpoint_pods(eps.get(_meta(service)), by_ip)
                if pod in self.pod_node
            ]
            color = SERVICE_EDGE_COLORS[index % len(SERVICE_EDGE_COLORS)]
            per_node = not show_pods or len(members) > ENDPOINT_EDGE_LIMIT
            self.services.append(_Service(f"s{index}", service, color, members, per_node))
        self.backs: dict[tuple[str, str], list[_Service]] = defaultdict(list)
        for service in self.services:
            if service.per_node:
                for pod, _ready in service.members:
                    self.backs[pod].append(service)

    def name(self, namespace: str, name: str) -> str:
        """A pod's or Service's name, with its namespace when several are drawn
        and it is not `default`."""
        return f"{namespace}/{name}" if self.show_namespace and namespace != "default" else name

    # -- the whole graph -------------------------------------------------------

    def build(self) -> str:
        self._header()
        rack_names = [r["name"] for r in self.racks]
        groups = [
            (rack, [n for n in self.nodes if n.get("rack") == rack["name"]]) for rack in self.racks
        ]
        orphans = [n for n in self.nodes if n.get("rack") not in rack_names]
        if orphans:  # on a rack the topology does not list: drawn, without a bridge
            groups.append(({"name": "(no rack)", "subnet": "", "bridge": None}, orphans))
        for index, (rack, members) in enumerate(groups):
            for node in members:
                self.rack_index[node["name"]] = index
            self._rack(index, rack, members)
        unplaced = [p for p in self.pods if self.pod_node[_meta(p)] not in self.node_id]
        if unplaced and self.show_pods:
            self._pod_table("unscheduled", ["pods on no node"], unplaced)
        self._routers(rack_names)
        self._overlay([members for _rack, members in groups])
        for service in self.services:
            self._service(service)
        if self.services:  # all on the bottom row, whatever rank their pods are on
            self.dot.add("{ rank=sink; " + " ".join(s.sid for s in self.services) + " }")
        return self.dot.text()

    def _header(self) -> None:
        topo = self.topology
        overlay = topo.get("overlay") or {}
        name = (topo.get("metadata") or {}).get("name") or "lab"
        counts = [
            (len(self.racks), "rack"),
            (len(self.nodes), "node"),
            (len(self.pods), "pod"),
            (len(self.services), "service"),
        ]
        title = f"lab <b>{esc(name)}</b>: " + ", ".join(
            f"{n} {word}{'' if n == 1 else 's'}" for n, word in counts
        )
        sub = (
            f"pod network {esc(overlay.get('network', '?'))} over "
            f"{esc(overlay.get('backend', 'vxlan'))} VNI {esc(overlay.get('vni', '?'))} "
            f"UDP {esc(overlay.get('port', '?'))}, MTU {esc(overlay.get('mtu', '?'))}"
            f"{', direct routing within a rack' if overlay.get('directRouting') else ''}; "
            f"services {esc(topo.get('serviceNetwork', '?'))}"
        )
        d = self.dot
        d.stmt(
            "graph",
            label=Html(
                f"{title}<br/><font point-size='11'>{sub}</font>"
                f"<br/><font point-size='9' color='#555555'>{esc(LEGEND)}</font>"
            ),
            labelloc="t",
            fontname=FONT,
            fontsize="16",
            rankdir="TB",
            newrank="true",
            compound="true",
            nodesep="0.2",
            ranksep="0.4",
            # keep the topology's order (racks, nodes, Services) instead of
            # letting crossing minimisation shuffle it
            mclimit="0.01",
            outputorder="edgesfirst",
            bgcolor="white",
            pad="0.2",
        )
        d.stmt(
            "node", fontname=FONT, fontsize="10", shape="box", style="rounded,filled", margin="0.06"
        )
        d.stmt("edge", fontname=FONT, fontsize="9", dir="none", color="#555555")

    # -- racks, nodes, pods ----------------------------------------------------

    def _rack(self, index: int, rack: dict[str, Any], nodes: list[dict[str, Any]]) -> None:
        d = self.dot
        d.open(f"subgraph cluster_k{index}")
        d.stmt(
            "graph",
            label=Html(f"<b>{esc(rack['name'])}</b>  {esc(rack.get('subnet', ''))}"),
            style="rounded,filled",
            fillcolor=COLORS["rack"],
            color=COLORS["rack_border"],
            fontsize="13",
            labeljust="l",
        )
        bridge = f"b{index}" if rack.get("bridge", rack["name"]) else None
        if bridge:
            d.stmt(
                bridge,
                label=Html(f"bridge {esc(rack.get('bridge') or rack['name'])}"),
                style="filled",
                fillcolor=COLORS["bridge"],
                fontsize="9",
                height="0.25",
            )
        columns = math.ceil(len(nodes) / self.stack) if nodes else 0
        height = math.ceil(len(nodes) / columns) if nodes else 0  # balanced columns
        for start in range(0, len(nodes), height):  # a column of stacked nodes
            above = None
            for node in nodes[start : start + height]:
                if above:
                    d.stmt(f"{above} -> {self.node_id[node['name']]}", style="invis")
                above = self._node(node, bridge, stacked=above is not None)
                if start == 0:
                    self.rack_bottom[index] = above
        d.close()

    def _node(self, node: dict[str, Any], bridge: str | None, stacked: bool) -> str:
        """The node box above its pod table, in a cluster of their own; returns the
        graph id of the lower one. A node `stacked` under another is cabled to its
        bridge from the side."""
        d = self.dot
        nid = self.node_id[node["name"]]
        pods = [p for p in self.pods if self.pod_node[_meta(p)] == node["name"]]
        lines = [
            esc(node["name"]),
            f"{esc(node.get('uplink') or 'eth0')} {esc(node.get('address', '?'))}",
            f"pods {esc(node.get('podCIDR', '?'))}",
            f"VTEP {esc(node.get('vtepIP', '?'))}",
        ]
        if not self.show_pods:
            lines.append(f"<i>{len(pods)} pod{'' if len(pods) == 1 else 's'}</i>")
            d.stmt(nid, label=html_lines(*lines), fillcolor="white")
            lowest = nid
        else:
            d.open(f"subgraph cluster_{nid}")
            d.stmt(
                "graph",
                label="",
                style="rounded,filled",
                color=COLORS["node_border"],
                fillcolor=COLORS["node_cluster"],
            )
            d.stmt(nid, label=html_lines(*lines), fillcolor="white")
            head = [f"pods on {esc(node['name'])}"]
            if node.get("cniAddress"):
                head.append(f"<font point-size='8'>cni0 {esc(node['cniAddress'])}</font>")
            lowest = self._pod_table(f"p{nid[1:]}", head, pods)
            d.add(f"{nid} -> {lowest}")
            d.close()
        if bridge:
            d.stmt(f"{bridge} -> {nid}", headport="e" if stacked else None)
        return lowest

    def _pod_table(self, table: str, head: list[str], pods: list[dict[str, Any]]) -> str:
        """A plaintext HTML table, one row per pod (its port `rN` for Service edges)."""
        columns = 3 if any(_meta(p) in self.backs for p in pods) else 2
        rows = [
            f"<tr><td colspan='{columns}' bgcolor='{COLORS['pods_head']}'>"
            f"<b>{head[0]}</b>{''.join('<br/>' + h for h in head[1:])}</td></tr>"
        ]
        for index, pod in enumerate(pods):
            key = _meta(pod)
            port = f"r{index}"
            self.pod_port[key] = (table, port)
            state = _pod_state(pod)
            bg = f" bgcolor='{COLORS[state]}'" if state != "ready" else ""
            cells = [esc(self.name(*key)), esc(_pod_ip(pod))]
            if columns == 3:
                cells.append(
                    "".join(
                        f"<font color='{s.color}'>\u25a0</font>" for s in self.backs.get(key, [])
                    )
                )
            ports = [""] * (len(cells) - 1) + [f" port='{port}'"]  # edges end at the row's right
            rows.append(
                "<tr>"
                + "".join(
                    f"<td{p} align='left'{bg}>{c}</td>" for p, c in zip(ports, cells, strict=True)
                )
                + "</tr>"
            )
        if not pods:
            rows.append(f"<tr><td colspan='{columns}'><i>no pods</i></td></tr>")
        label = Html(
            "<table border='0' cellborder='1' cellspacing='0' cellpadding='2' bgcolor='white'>"
            + "".join(rows)
            + "</table>"
        )
        self.dot.stmt(table, label=label, shape="plain", fontsize="9")
        return table

    # -- routers and the overlay ------------------------------------------------

    def _routers(self, rack_names: list[str]) -> None:
        d = self.dot
        for index, router in enumerate(self.topology.get("routers") or []):
            rid = f"r{index}"
            d.stmt(
                rid,
                label=html_lines(esc(router["name"]), "router"),
                style="filled",
                fillcolor=COLORS["router"],
                fontsize="11",
                ordering="out",
            )
            for port in router.get("ports") or []:
                if port.get("rack") not in rack_names:
                    continue
                bridge = f"b{rack_names.index(port['rack'])}"
                label = Html(f"{esc(port.get('address', ''))}<br/>{esc(port.get('ifname', ''))}")
                d.stmt(f"{rid} -> {bridge}", label=label, penwidth="1.5")

    def _overlay_pairs(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(VXLAN tunnels, direct routes) between nodes, as name pairs: Flannel's vxlan
        backend tunnels to every peer, unless `directRouting` routes to a peer on the
        same subnet (rack) directly."""
        direct = bool((self.topology.get("overlay") or {}).get("directRouting"))
        tunnels, routes = [], []
        for a, b in combinations(self.nodes, 2):
            pair = (a["name"], b["name"])
            (routes if direct and a.get("rack") == b.get("rack") else tunnels).append(pair)
        return tunnels, routes

    def _overlay(self, racks: list[list[dict[str, Any]]]) -> None:
        """One "overlay" hub beside the routers (its label lists the tunnels, or counts
        them), a dashed VXLAN edge from it to each rack, and direct routes as dotted
        edges between nodes of a rack, up to `DIRECT_EDGE_LIMIT` of them.

        (A mesh of node-to-node edges is unreadable in dot: the nodes share one rank,
        and the labels of edges within a rank pile up.)"""
        tunnels, routes = self._overlay_pairs()
        d = self.dot
        if tunnels:
            self._hub(tunnels, routes)
            vni = esc((self.topology.get("overlay") or {}).get("vni", "?"))
            tunneled = {name for pair in tunnels for name in pair}
            for index, members in enumerate(racks):
                if any(node["name"] in tunneled for node in members):
                    has_bridge = index < len(self.racks)
                    target = f"b{index}" if has_bridge else self.node_id[members[0]["name"]]
                    d.stmt(
                        f"overlay -> {target}",
                        label=Html(f"VXLAN VNI {vni}"),
                        lhead=f"cluster_k{index}",
                        constraint="false",
                        **VXLAN_EDGE,
                    )
        if len(routes) <= DIRECT_EDGE_LIMIT:
            for a, b in routes:
                d.stmt(
                    f"{self.node_id[a]} -> {self.node_id[b]}",
                    label="direct",
                    constraint="false",
                    **DIRECT_EDGE,
                )

    def _hub(self, tunnels: list[tuple[str, str]], routes: list[tuple[str, str]]) -> None:
        overlay = self.topology.get("overlay") or {}
        lines = [
            "overlay",
            f"VXLAN VNI {esc(overlay.get('vni', '?'))}, UDP {esc(overlay.get('port', '?'))}",
            f"VTEP {esc(overlay.get('device', 'flannel.1'))} on each node",
            f"{len(tunnels)} tunnel{'' if len(tunnels) == 1 else 's'}"
            + (" (nodes on different racks)" if routes else " (every pair of nodes)"),
        ]
        if len(tunnels) <= LIST_LIMIT:
            lines += [f"{esc(a)} \u21c4 {esc(b)}" for a, b in tunnels]
        if routes:
            lines.append(f"{len(routes)} direct route{'' if len(routes) == 1 else 's'} (same rack)")
        self.dot.stmt(
            "overlay",
            label=html_lines(*lines),
            style="rounded,dashed,filled",
            fillcolor=COLORS["overlay_fill"],
            color=COLORS["overlay"],
            fontcolor=COLORS["overlay"],
        )

    # -- Services ----------------------------------------------------------------

    def _service(self, service: _Service) -> None:
        d = self.dot
        spec = service.obj.get("spec") or {}
        cluster_ip = spec.get("clusterIP")
        headless = cluster_ip in (None, "", "None")
        lines = [esc(self.name(*_meta(service.obj))), "headless" if headless else esc(cluster_ip)]
        lines += [esc(p) for p in _service_ports(service.obj)] or ["no ports"]
        d.stmt(
            service.sid,
            label=html_lines(*lines),
            style="rounded,filled" + (",dashed" if headless else ""),
            fillcolor=COLORS["headless" if headless else "service"],
            color=service.color,
            penwidth="1.5",
        )
        edge = {"color": service.color, "dir": "back", "arrowsize": "0.6"}
        if not service.per_node:
            for pod, ready in service.members:
                table, port = self.pod_port[pod]
                style = None if ready else "dashed"
                d.stmt(f"{table}:{port}:e -> {service.sid}", style=style, **edge)
            return
        # counted: one edge per node while few nodes have endpoints, else one per rack
        nodes = {self.pod_node[pod] for pod, _ready in service.members}
        per_rack = len(nodes) > NODE_EDGE_LIMIT
        counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for pod, ready in service.members:
            node = self.pod_node[pod]
            rack = self.rack_index.get(node)
            if node not in self.node_id:
                key = "unscheduled" if self.show_pods else ""
            elif per_rack:
                key = f"cluster_k{rack}"
            else:
                key = self.pod_port[pod][0] if self.show_pods else self.node_id[node]
            counts[key][0 if ready else 1] += 1
        for key, (ready, not_ready) in counts.items():
            if not key:
                continue
            if key.startswith("cluster_k"):
                target, ltail = self.rack_bottom[int(key[9:])], key
            else:
                target, ltail = key, None
            if ready:
                text = f"\u00d7{ready}" + (f" +{not_ready} unready" if not_ready else "")
            else:
                text = f"\u00d7{not_ready} unready"
            d.stmt(
                f"{target} -> {service.sid}",
                label=text,
                ltail=ltail,
                fontcolor=service.color,
                style=None if ready else "dashed",
                **edge,
            )


def _endpoint_pods(
    endpoints: dict[str, Any] | None, by_ip: dict[str, tuple[str, str]]
) -> list[tuple[tuple[str, str], bool]]:
    """((namespace, pod), ready) for each address of an Endpoints object, once each."""
    found: dict[tuple[str, str], bool] = {}
    for subset in (endpoints or {}).get("subsets") or []:
        for key, ready in (("addresses", True), ("notReadyAddresses", False)):
            for address in subset.get(key) or []:
                ref = address.get("targetRef") or {}
                if ref.get("name"):
                    pod = (ref.get("namespace") or _meta(endpoints)[0], ref["name"])
                else:
                    pod = by_ip.get(address.get("ip", ""))
                if pod and pod not in found:
                    found[pod] = ready
    return list(found.items())


def build_dot(
    topology: dict[str, Any],
    pods: list[dict[str, Any]],
    services: list[dict[str, Any]],
    endpoints: list[dict[str, Any]],
    show_pods: bool = True,
    show_namespace: bool = False,
) -> str:
    """The DOT text of the lab picture (see the module docstring)."""
    return _Picture(topology, pods, services, endpoints, show_pods, show_namespace).build()
