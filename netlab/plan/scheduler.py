"""Placing pods on nodes, and naming Deployment pods.

Deterministic: the same spec gives the same placement and the same names.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from netlab.errors import NetlabError
from netlab.spec.model import PodTemplate

# Kubernetes' "safe" alphabet for generated names: no vowels, no 0/1/3.
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


class Unschedulable(NetlabError):
    """No node satisfies a pod's nodeName/nodeSelector."""


@dataclass(frozen=True)
class Candidate:
    """What the scheduler knows of a node."""

    name: str
    rack: str
    labels: Mapping[str, str]
    max_pods: int | None = None


def eligible(template: PodTemplate, nodes: Sequence[Candidate]) -> list[Candidate]:
    """The nodes a pod may run on: nodeName, then nodeSelector (all labels match)."""
    result = []
    for node in nodes:
        if template.node_name and node.name != template.node_name:
            continue
        if all(node.labels.get(k) == v for k, v in template.node_selector.items()):
            result.append(node)
    return result


def place(
    template: PodTemplate,
    nodes: Sequence[Candidate],
    group: Iterable[str],
    load: Mapping[str, int],
) -> str:
    """Choose a node for one more pod of a group (a Deployment's pods).

    Spread first across racks, then across nodes (fewest pods of the same
    group), then to the least loaded node overall, then in node order.
    `group` lists the nodes the group's existing pods run on; `load` counts
    all pods per node.
    """
    matching = eligible(template, nodes)
    if not matching:
        raise Unschedulable(
            "no node matches the pod's nodeName/nodeSelector; "
            "change the selector or label a node in the lab file"
        )
    candidates = [n for n in matching if n.max_pods is None or load.get(n.name, 0) < n.max_pods]
    if not candidates:
        raise Unschedulable(
            f"0/{len(nodes)} nodes are available: {len(matching)} Too many pods (every node the "
            "pod may go to is at its maxPods); raise maxPods in the lab file or add a node"
        )
    group_nodes = list(group)
    rack_of = {node.name: node.rack for node in nodes}
    per_rack: dict[str, int] = {}
    per_node: dict[str, int] = {}
    for name in group_nodes:
        per_node[name] = per_node.get(name, 0) + 1
        rack = rack_of.get(name)
        if rack is not None:
            per_rack[rack] = per_rack.get(rack, 0) + 1
    order = {node.name: index for index, node in enumerate(nodes)}
    best = min(
        candidates,
        key=lambda n: (
            per_rack.get(n.rack, 0),
            per_node.get(n.name, 0),
            load.get(n.name, 0),
            order[n.name],
        ),
    )
    return best.name


def _encode(digest: bytes, length: int) -> str:
    number = int.from_bytes(digest, "big")
    chars = []
    for _ in range(length):
        number, rest = divmod(number, len(SAFE_ALPHABET))
        chars.append(SAFE_ALPHABET[rest])
    return "".join(chars)


def template_hash(template_manifest: Mapping) -> str:
    """A Deployment's pod-template-hash: 10 safe characters from the template."""
    canonical = json.dumps(template_manifest, sort_keys=True, separators=(",", ":"))
    return _encode(hashlib.sha256(canonical.encode()).digest(), 10)


def name_rng(lab: str, namespace: str, deployment: str, pod_hash: str) -> random.Random:
    """The random source for one ReplicaSet's pod names: seeded, so names are stable."""
    return random.Random(f"{lab}/{namespace}/{deployment}/{pod_hash}")


GENERATED_BASE_MAX = 58  # apimachinery's generateName: the base is cut so names fit 63


def pod_name(deployment: str, pod_hash: str, rng: random.Random, taken: set[str]) -> str:
    """`web-7d4b9c8f6x-x2kqp`: Deployment, template hash, five random safe characters
    (the base cut to 58 characters, as Kubernetes cuts a ReplicaSet's generateName)."""
    base = f"{deployment}-{pod_hash}-"[:GENERATED_BASE_MAX]
    while True:
        suffix = "".join(rng.choice(SAFE_ALPHABET) for _ in range(5))
        name = f"{base}{suffix}"
        if name not in taken:
            return name


def job_pod_name(job: str, rng: random.Random, taken: set[str]) -> str:
    """JOB-xxxxx: a Job's pods, 5 characters of the safe alphabet (not in `taken`)."""
    base = f"{job}-"[:GENERATED_BASE_MAX]
    while True:
        name = f"{base}{''.join(rng.choice(SAFE_ALPHABET) for _ in range(5))}"
        if name not in taken:
            return name
