"""`netlab top pods|nodes`: CPU and memory from the lab's metrics.k8s.io API, in
`kubectl top`'s columns and units (CPU in millicores, rounded up; memory in whole
MiB; a node's percentages against its allocatable)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from fractions import Fraction

from netlab.client import LabClient
from netlab.errors import NetlabError
from netlab.node.metrics import parse_quantity
from netlab.tables import columns

BASE = "/apis/metrics.k8s.io/v1beta1"
WHAT = {
    "pods": "pods",
    "pod": "pods",
    "po": "pods",
    "nodes": "nodes",
    "node": "nodes",
    "no": "nodes",
}
NOT_YET = "metrics not available yet"


def configure(p: argparse.ArgumentParser) -> None:
    """The arguments `netlab top` gains beside the mesh's (-n and -o are shared)."""
    p.add_argument(
        "what",
        nargs="?",
        choices=sorted(WHAT),
        metavar="pods|nodes",
        help="CPU and memory of pods or nodes (kubectl top); without: the mesh's service pairs",
    )
    p.add_argument("name", nargs="?", help="one pod or node")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="pods of every namespace")
    p.add_argument("-l", "--selector", help="label selector, e.g. app=web")
    p.add_argument("--containers", action="store_true", help="one line per container")
    p.add_argument("--sort-by", choices=("cpu", "memory"), help="largest first")
    p.add_argument("--no-headers", action="store_true", help="no header line")


def run(args: argparse.Namespace, client: LabClient) -> int:
    if WHAT[args.what] == "pods":
        return _pods(args, client)
    return _nodes(args, client)


def _get(client: LabClient, path: str, selector: str | None) -> list[dict]:
    answer = client.get_path(path, {"labelSelector": selector})
    return answer["items"] if "items" in answer else [answer]


def _milli(quantity: str) -> int:
    """Millicores, rounded up, as kubectl's Quantity.MilliValue()."""
    return math.ceil(parse_quantity(quantity) * 1000)


def _pods(args: argparse.Namespace, client: LabClient) -> int:
    namespace = None if args.all_namespaces else (args.namespace or "default")
    path = f"{BASE}/namespaces/{namespace}/pods" if namespace else f"{BASE}/pods"
    if args.name:
        path += f"/{args.name}"
    items = _get(client, path, args.selector)
    if args.output == "json":
        print(json.dumps(items, indent=2))
        return 0
    if not items:
        pods = client.list("pods", namespace, args.selector, all_namespaces=namespace is None)
        if pods["items"]:
            raise NetlabError(NOT_YET)
        where = f" in {namespace} namespace" if namespace else ""
        print(f"No resources found{where}.", file=sys.stderr)
        return 0
    rows = []
    for item in items:
        meta = item["metadata"]
        first = [meta["namespace"]] if namespace is None else []
        usages = [(c["name"], c["usage"]) for c in item["containers"]]
        if args.containers:
            for name, usage in usages:
                rows.append([*first, meta["name"], name, _milli(usage["cpu"]),
                             parse_quantity(usage["memory"])])  # fmt: skip
        else:
            cpu = sum(_milli(u["cpu"]) for _, u in usages)
            memory = sum(parse_quantity(u["memory"]) for _, u in usages)
            rows.append([*first, meta["name"], cpu, memory])
    _sort(rows, args.sort_by)
    header = (["NAMESPACE"] if namespace is None else []) + (
        ["POD", "NAME"] if args.containers else ["NAME"]
    )
    header += ["CPU(cores)", "MEMORY(bytes)"]
    table = [[*r[:-2], f"{r[-2]}m", _mib(r[-1])] for r in rows]
    _print(header, table, args.no_headers)
    return 0


def _nodes(args: argparse.Namespace, client: LabClient) -> int:
    path = f"{BASE}/nodes" + (f"/{args.name}" if args.name else "")
    items = _get(client, path, args.selector)
    if args.output == "json":
        print(json.dumps(items, indent=2))
        return 0
    if not items:
        raise NetlabError(NOT_YET)
    if args.name:
        nodes = [client.get("nodes", args.name)]
    else:
        nodes = client.list("nodes", label_selector=args.selector)["items"]
    allocatable = {n["metadata"]["name"]: n.get("status", {}).get("allocatable", {}) for n in nodes}
    rows: list[list] = []
    missing = dict(allocatable)
    for item in items:
        name = item["metadata"]["name"]
        cpu, memory = _milli(item["usage"]["cpu"]), parse_quantity(item["usage"]["memory"])
        available = missing.pop(name, None)
        if available is None:  # a node the metrics know and the API no longer does
            continue
        rows.append([name, cpu, _percent(cpu, available.get("cpu"), 1000), memory,
                     _percent(memory, available.get("memory"), 1)])  # fmt: skip
    _sort(rows, args.sort_by, cpu_at=1, memory_at=3)
    table = [[n, f"{c}m", cp, _mib(m), mp] for n, c, cp, m, mp in rows]
    table += [[name, *["<unknown>"] * 4] for name in sorted(missing)]
    _print(["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"], table, args.no_headers)
    return 0


def _percent(used: int | Fraction, available: str | None, scale: int) -> str:
    """kubectl's percentage: used / allocatable, truncated."""
    try:
        total = parse_quantity(available or "") * scale
    except ValueError:
        return "<unknown>"
    if total <= 0:
        return "<unknown>"
    return f"{int(Fraction(used) * 100 / total)}%"


def _mib(size: int | Fraction) -> str:
    """Whole MiB, rounded down, as kubectl prints memory."""
    return f"{math.ceil(size) // (1 << 20)}Mi"


def _sort(rows: list[list], by: str | None, cpu_at: int = -2, memory_at: int = -1) -> None:
    if by is not None:
        rows.sort(key=lambda r: r[cpu_at if by == "cpu" else memory_at], reverse=True)


def _print(header: list[str], table: list[list], no_headers: bool) -> None:
    rows = table if no_headers else [header, *table]
    if rows:
        print("\n".join(columns(rows)))


def check(args: argparse.Namespace) -> None:
    """Flags that mean something only with pods or nodes, refused without them."""
    if args.what is None:
        used = [f for f, on in (("-A", args.all_namespaces), ("-l", args.selector),
                                ("--containers", args.containers), ("NAME", args.name)) if on]  # fmt: skip
        if used:
            raise NetlabError(
                f"{', '.join(used)}: only with `netlab top pods` or `netlab top nodes`"
            )
    elif WHAT[args.what] == "nodes" and (args.all_namespaces or args.containers):
        raise NetlabError("-A and --containers are for pods: `netlab top pods -A --containers`")
