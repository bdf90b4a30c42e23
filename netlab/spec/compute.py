"""Compute resources: a container's `resources` (requests and limits), a node's
`allocatable` in the lab file, and what follows from them: the pod's QoS class and
what it asks of a node's allocatable.

The rules are kube-apiserver's (pkg/apis/core/validation ValidateResourceRequirements,
its defaults and pkg/apis/core/helper/qos), in its words where it has them:
a request is at most its limit, no quantity is negative, a limit with no request is
the request too, and resources that cannot be overcommitted (hugepages, extended
resources such as example.com/gpu) need a limit equal to the request.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from netlab.spec.model import ContainerSpec, ResourceList, Resources
from netlab.spec.quantity import Quantity, QuantityError, bytes_, cpu_millis, fix_for, quantity_of
from netlab.spec.validate import (
    DNS_LABEL_MAX,
    DNS_SUBDOMAIN_RE,
    Checker,
    describe,
    join,
    suggest,
)

RESOURCE_FIELDS = ("limits", "requests")
CPU, MEMORY, EPHEMERAL_STORAGE = "cpu", "memory", "ephemeral-storage"
STANDARD = (CPU, MEMORY, EPHEMERAL_STORAGE)  # a container's standard resources
HUGEPAGES = "hugepages-"
QOS_RESOURCES = (CPU, MEMORY)
GUARANTEED, BURSTABLE, BEST_EFFORT = "Guaranteed", "Burstable", "BestEffort"
ALLOCATABLE_FIELDS = (CPU, MEMORY, "pods")
MAX_PODS = 65536
NAME_RULE = (
    "use cpu, memory, ephemeral-storage, hugepages-<size> (e.g. hugepages-2Mi) or an "
    "extended resource named with a domain, e.g. example.com/gpu"
)
_EXTENDED_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def _native(name: str) -> bool:
    """No domain, or a kubernetes.io one (IsNativeResource)."""
    return "/" not in name or "kubernetes.io/" in name


def overcommittable(name: str) -> bool:
    """A request may be below the limit (IsOvercommitAllowed): native, not hugepages."""
    return _native(name) and not name.startswith(HUGEPAGES)


def _name_problem(name: str) -> tuple[str, str] | None:
    """What is wrong with a container resource name (validateContainerResourceName)."""
    if "/" not in name:
        if name in STANDARD or name.startswith(HUGEPAGES):
            return None
        close = suggest(name, STANDARD)
        return "must be a standard resource for containers", (
            f"did you mean {close!r}?" if close else NAME_RULE
        )
    if _native(name):
        return None
    prefix, _, rest = name.partition("/")
    qualified = (
        len(prefix) <= 253
        and DNS_SUBDOMAIN_RE.fullmatch(prefix) is not None
        and len(f"requests.{rest}") <= DNS_LABEL_MAX
        and _EXTENDED_NAME_RE.fullmatch(rest) is not None
        and not name.startswith("requests.")
    )
    if qualified:
        return None
    return "doesn't follow extended resource name standard", NAME_RULE


def _quantity(value: Any, here: str, checker: Checker) -> Quantity | None:
    """One quantity of a resource list, non-negative; None (recorded) if it is not."""
    if value is None:
        checker.add(here, "expected a quantity, got null", "give one, e.g. 500m, or remove it")
        return None
    try:
        quantity = quantity_of(value)
    except QuantityError as exc:
        shown = f'"{value}"' if isinstance(value, str) else describe(value)
        checker.add(here, f"Invalid value: {shown}: {exc}", fix_for(value))
        return None
    if quantity.value < 0:
        checker.add(
            here,
            f'Invalid value: "{quantity}": must be greater than or equal to 0',
            "remove the '-'",
        )
        return None
    return quantity


def _resource_list(
    value: Any, path: str, checker: Checker, names: bool = True
) -> dict[str, tuple[Quantity, str]]:
    """A requests or limits mapping: resource name -> (quantity, its text as written)."""
    if value is None or not checker.check_type(value, path, "mapping"):
        return {}
    found = {}
    for name, given in value.items():
        here = join(path, name)
        if not isinstance(name, str):
            checker.add(here, f"resource name {name!r} is not a string", f"quote it: '{name}'")
            continue
        problem = _name_problem(name) if names else None
        if problem is not None:
            checker.add(here, f'Invalid value: "{name}": {problem[0]}', problem[1])
            continue
        quantity = _quantity(given, here, checker)
        if quantity is None:
            continue
        if not _native(name) and quantity.value.denominator != 1:
            checker.add(
                here,
                f'Invalid value: "{quantity}": must be an integer',
                "extended resources are counted in whole units, e.g. 1",
            )
            continue
        if name.startswith(HUGEPAGES) and not _divides(name, quantity):
            checker.add(
                here,
                f'Invalid value: "{quantity}": {quantity} is not positive integer multiple '
                f"of {name}",
                f"ask for a whole number of {name.removeprefix(HUGEPAGES)} pages",
            )
            continue
        found[name] = (quantity, given.strip() if isinstance(given, str) else str(given))
    return found


def _divides(name: str, quantity: Quantity) -> bool:
    """The hugepages quantity is a whole number of pages of the name's size."""
    try:
        size = quantity_of(name.removeprefix(HUGEPAGES)).value
    except QuantityError:
        return False
    return size > 0 and (quantity.value / size).denominator == 1


def _listed(found: dict[str, tuple[Quantity, str]]) -> ResourceList:
    cpu, memory = found.get(CPU), found.get(MEMORY)
    return ResourceList(
        cpu=None if cpu is None else cpu_millis(cpu[0]),
        memory=None if memory is None else bytes_(memory[0]),
        written=tuple((name, text) for name, (_, text) in found.items()),
    )


def read_resources(value: Any, path: str, checker: Checker) -> Resources:
    """A container's `resources` at `path`; problems are recorded on the checker."""
    if value is None:
        return Resources()
    spec = checker.mapping(value, path, RESOURCE_FIELDS)
    if spec is None:
        return Resources()
    limits = _resource_list(spec.get("limits"), join(path, "limits"), checker)
    requests = _resource_list(spec.get("requests"), join(path, "requests"), checker)
    for name, (request, text) in requests.items():
        here = join(join(path, "requests"), name)
        if name in limits:
            limit = limits[name][0]
            if not overcommittable(name) and request.value != limit.value:
                checker.add(
                    here,
                    f'Invalid value: "{request}": must be equal to {name} limit of {limit}',
                    f"{name} cannot be overcommitted: make the request equal to the limit, "
                    "or remove the request (it defaults to the limit)",
                )
            elif request.value > limit.value:
                checker.add(
                    here,
                    f'Invalid value: "{request}": must be less than or equal to {name} '
                    f"limit of {limit}",
                    f"raise limits.{name} to at least {request}, or lower the request",
                )
        elif not overcommittable(name):
            checker.add(
                join(join(path, "limits"), name),
                "Required value: Limit must be set for non overcommitable resources",
                f"add limits.{name}: {text} (equal to the request)",
            )
    pages = any(n.startswith(HUGEPAGES) for n in [*limits, *requests])
    if pages and not any(n in QOS_RESOURCES for n in [*limits, *requests]):
        checker.add(
            path, "Forbidden: HugePages require cpu or memory", "add a cpu or memory request"
        )
    defaulted = dict(requests)
    for name, given in limits.items():  # kube-apiserver's default: the request is the limit
        defaulted.setdefault(name, given)
    return Resources(requests=_listed(defaulted), limits=_listed(limits))


def read_allocatable(value: Any, path: str, checker: Checker) -> tuple[ResourceList, int | None]:
    """A node's `allocatable` in the lab file (cpu, memory, pods); the cpu and memory
    (their text canonical, as a Node shows them) and the pods (None if not given)."""
    spec = checker.mapping(value, path, ALLOCATABLE_FIELDS)
    if spec is None:
        return ResourceList(), None
    found = _resource_list({k: v for k, v in spec.items() if k != "pods"}, path, checker, False)
    pods = None
    if spec.get("pods") is not None:
        pods = _pods(spec["pods"], join(path, "pods"), checker)
    listed = _listed(found)
    canonical = tuple((name, str(quantity)) for name, (quantity, _) in found.items())
    return ResourceList(listed.cpu, listed.memory, canonical), pods


def _pods(value: Any, here: str, checker: Checker) -> int | None:
    """allocatable.pods: a whole number (or a quantity of one, "110"), 1..65536."""
    quantity = _quantity(value, here, checker)
    if quantity is None:
        return None
    if quantity.value.denominator != 1 or not 1 <= quantity.value <= MAX_PODS:
        checker.add(here, f"{value!r} is not a number of pods", f"use a whole 1..{MAX_PODS}")
        return None
    return int(quantity.value)


def pod_requests(containers: Iterable[ContainerSpec]) -> tuple[int, int]:
    """What a pod asks of a node: its containers' cpu (millicores) and memory (bytes)
    requests, summed (the scheduler's fit; the lab has no init containers)."""
    cpu = memory = 0
    for container in containers:
        cpu += container.resources.requests.cpu or 0
        memory += container.resources.requests.memory or 0
    return cpu, memory


def qos_class(containers: Iterable[ContainerSpec]) -> str:
    """Guaranteed, Burstable or BestEffort, as Kubernetes' ComputePodQOS decides: no
    cpu or memory request or limit anywhere is BestEffort; every container limiting
    both, with the pod's summed requests equal to its summed limits, is Guaranteed;
    anything else Burstable. Zero quantities count as not given."""
    requests: dict[str, int] = {}
    limits: dict[str, int] = {}
    guaranteed = True
    for container in containers:
        wanted, limited = container.resources.requests, container.resources.limits
        for name in QOS_RESOURCES:
            amount = getattr(wanted, name)
            if amount:  # > 0
                requests[name] = requests.get(name, 0) + amount
        found = set()
        for name in QOS_RESOURCES:
            amount = getattr(limited, name)
            if amount:
                found.add(name)
                limits[name] = limits.get(name, 0) + amount
        if found != set(QOS_RESOURCES):
            guaranteed = False
    if not requests and not limits:
        return BEST_EFFORT
    if guaranteed and all(limits.get(name) == amount for name, amount in requests.items()):
        if len(requests) == len(limits):
            return GUARANTEED
    return BURSTABLE
