"""Placing pods on nodes, and naming Deployment pods.

Deterministic: the same spec gives the same placement and the same names.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from netlab.errors import NetlabError
from netlab.spec.compute import pod_requests
from netlab.spec.model import PodTemplate
from netlab.spec.quantity import format_cpu, format_memory

# Kubernetes' "safe" alphabet for generated names: no vowels, no 0/1/3.
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


AFFINITY = "node(s) didn't match Pod's node affinity/selector"
TOO_MANY_PODS = "Too many pods"


class Unschedulable(NetlabError):
    """No node may take the pod: `message` in kube-scheduler's words (a FailedScheduling
    Event's), then what would fix it."""

    def __init__(self, message: str, fix: str = "") -> None:
        self.scheduler_message, self.fix = message, fix
        super().__init__(f"{message} {fix}" if fix else message)


@dataclass(frozen=True)
class Candidate:
    """What the scheduler knows of a node: its labels and its allocatable pods, cpu
    (millicores) and memory (bytes); None: no bound."""

    name: str
    rack: str
    labels: Mapping[str, str]
    max_pods: int | None = None
    cpu: int | None = None
    memory: int | None = None


def eligible(template: PodTemplate, nodes: Sequence[Candidate]) -> list[Candidate]:
    """The nodes a pod may run on: nodeName, then nodeSelector (all labels match)."""
    result = []
    for node in nodes:
        if template.node_name and node.name != template.node_name:
            continue
        if all(node.labels.get(k) == v for k, v in template.node_selector.items()):
            result.append(node)
    return result


def unfit(
    node: Candidate,
    template: PodTemplate,
    wanted: tuple[int, int],
    pods: int,
    used: tuple[int, int],
) -> list[str]:
    """Why a node cannot take the pod, in kube-scheduler's words (none: it can):
    NodeAffinity's reason, else each of NodeResourcesFit's. `wanted`: the pod's cpu and
    memory requests; `pods`: the pods on the node; `used`: their requests."""
    if not eligible(template, [node]):
        return [AFFINITY]
    reasons = []
    if node.max_pods is not None and pods + 1 > node.max_pods:
        reasons.append(TOO_MANY_PODS)
    for resource, asked, free in (
        ("cpu", wanted[0], None if node.cpu is None else node.cpu - used[0]),
        ("memory", wanted[1], None if node.memory is None else node.memory - used[1]),
    ):
        if asked > 0 and free is not None and asked > free:
            reasons.append(f"Insufficient {resource}")
    return reasons


def unschedulable(total: int, reasons: Mapping[str, int], wanted: tuple[int, int]) -> Unschedulable:
    """kube-scheduler's FitError (`0/4 nodes are available: 4 Insufficient cpu.`), with
    what would fix each reason."""
    histogram = ", ".join(sorted(f"{count} {reason}" for reason, count in reasons.items()))
    fixes = []
    if AFFINITY in reasons:
        fixes.append("change the pod's nodeSelector/nodeName or label a node in the lab file")
    if TOO_MANY_PODS in reasons:
        fixes.append("raise the nodes' allocatable.pods (maxPods) in the lab file or add a node")
    short = [
        f"{shown} {name}"
        for name, shown in (("cpu", format_cpu(wanted[0])), ("memory", format_memory(wanted[1])))
        if f"Insufficient {name}" in reasons
    ]
    if short:
        names = " and ".join(s.split()[1] for s in short)
        fixes.append(
            f"the pod requests {' and '.join(short)}: lower its containers' "
            f"resources.requests, raise {names} in the nodes' allocatable "
            "(lab.racks[].nodes[].allocatable) or add a node"
        )
    fix = "; ".join(fixes)
    return Unschedulable(
        f"0/{total} nodes are available: {histogram or 'the lab has no nodes'}.",
        fix[:1].upper() + fix[1:],
    )


def place(
    template: PodTemplate,
    nodes: Sequence[Candidate],
    group: Iterable[str],
    load: Mapping[str, int],
    used: Mapping[str, tuple[int, int]] | None = None,
    excluded: Mapping[str, int] | None = None,
) -> str:
    """Choose a node for one more pod of a group (a Deployment's pods).

    Filter as kube-scheduler does (nodeName/nodeSelector, then pods, cpu and memory
    against each node's allocatable, less the requests of the pods on it: `used`), then
    spread first across racks, then across nodes (fewest pods of the same group), then
    to the node whose allocatable would be least used, the least loaded node overall,
    then in node order. `group` lists the nodes the group's existing pods run on;
    `load` counts all pods per node; `excluded` counts, by reason, nodes filtered out
    before (not ready, cordoned), for the message if no node fits.
    """
    used = used or {}
    wanted = pod_requests(template.containers)
    reasons = dict(excluded or {})
    candidates = []
    for node in nodes:
        why = unfit(node, template, wanted, load.get(node.name, 0), used.get(node.name, (0, 0)))
        for reason in why:
            reasons[reason] = reasons.get(reason, 0) + 1
        if not why:
            candidates.append(node)
    if not candidates:
        raise unschedulable(len(nodes) + sum((excluded or {}).values()), reasons, wanted)

    def share(node: Candidate) -> Fraction:  # how full its allocatable would be
        cpu, memory = used.get(node.name, (0, 0))
        full = [
            Fraction(now + asked, bound)
            for now, asked, bound in ((cpu, wanted[0], node.cpu), (memory, wanted[1], node.memory))
            if bound
        ]
        return max(full, default=Fraction(0))

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
            share(n),
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
