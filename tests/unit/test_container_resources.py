"""Containers' resources and nodes' allocatable in a lab file: read into millicores and
bytes, checked by kube-apiserver's rules with the field's path and a fix; a Node shows
the lab file's allocatable; the OCI runtime gets kubelet's cgroup numbers."""

from __future__ import annotations

import pytest

from netlab.node.limits import linux_resources, milli_cpu_to_quota, milli_cpu_to_shares
from netlab.nodeinfo import Machine, host_allocatable
from netlab.objects import node_object
from netlab.plan import plan_lab
from netlab.spec import LabBuilder, parse_lab
from netlab.spec.model import ResourceList, Resources
from tests.unit.test_spec import TWO_RACKS, pod, problems

MI, GI = 2**20, 2**30


def with_resources(text: str, kind: str = "Pod") -> str:
    """A lab with one pod (or a Deployment) whose container has `resources: text`."""
    lines = "\n".join(f"          {line}" for line in text.splitlines())
    container = f"""\
  containers:
    - name: app
      command: [sleep, infinity]
      resources:
{lines}
"""
    if kind == "Pod":
        return TWO_RACKS + pod("p", container.replace("\n      ", "\n      "))
    spec = "\n".join("      " + line for line in container.splitlines())
    return (
        TWO_RACKS
        + "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n"
        + "  selector: {matchLabels: {app: web}}\n  template:\n"
        + "    metadata: {labels: {app: web}}\n    spec:\n"
        + spec
        + "\n"
    )


def test_requests_and_limits_become_millicores_and_bytes():
    spec = parse_lab(
        with_resources(
            "requests: {cpu: 250m, memory: 64Mi}\n"
            "limits: {cpu: 1, memory: 0.5Gi, ephemeral-storage: 2G, example.com/gpu: 1}"
        )
    )
    (container,) = spec.pods[0].template.containers
    requests, limits = container.resources.requests, container.resources.limits
    assert (requests.cpu, requests.memory, limits.cpu, limits.memory) == (
        250,
        64 * MI,
        1000,
        GI // 2,
    )
    # other names are kept as written; each limit without a request is the request too
    assert limits.text() == {
        "cpu": "1",
        "memory": "0.5Gi",
        "ephemeral-storage": "2G",
        "example.com/gpu": "1",
    }
    assert requests.text() == {
        "cpu": "250m",
        "memory": "64Mi",
        "ephemeral-storage": "2G",
        "example.com/gpu": "1",
    }
    assert "resources" not in container.recorded


def test_no_resources_is_none_requested():
    spec = parse_lab(with_resources("{}"))
    assert spec.pods[0].template.containers[0].resources == Resources()


PATH = "t.yaml: Pod/p: spec.containers[0].resources"


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "limits: {memory: 1GB}",
            f'{PATH}.limits.memory: Invalid value: "1GB": quantities must match the regular '
            "expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'; drop the B: write 1G "
            "(powers of 10) or 1Gi (of 2)",
        ),
        (
            "requests: {cpu: 1mi}",
            f'{PATH}.requests.cpu: Invalid value: "1mi": unable to parse quantity\'s suffix; '
            "binary suffixes are written Mi, e.g. 128Mi",
        ),
        (
            "requests: {cpu: -1}",
            f'{PATH}.requests.cpu: Invalid value: "-1": must be greater than or equal to 0; '
            "remove the '-'",
        ),
        (
            "requests: {cpu: 1}\nlimits: {cpu: 500m}",
            f'{PATH}.requests.cpu: Invalid value: "1": must be less than or equal to cpu limit '
            "of 500m; raise limits.cpu to at least 1, or lower the request",
        ),
        (
            "requests: {memory: 1.5Gi}\nlimits: {memory: 1G}",
            f'{PATH}.requests.memory: Invalid value: "1536Mi": must be less than or equal to '
            "memory limit of 1G; raise limits.memory to at least 1536Mi, or lower the request",
        ),
        (
            "limits: {cpus: 1}",
            f'{PATH}.limits.cpus: Invalid value: "cpus": must be a standard resource for '
            "containers; did you mean 'cpu'?",
        ),
        (
            "limits: {nvidia.com/gpu: 500m}",
            f'{PATH}.limits.nvidia.com/gpu: Invalid value: "500m": must be an integer; '
            "extended resources are counted in whole units, e.g. 1",
        ),
        (
            "requests: {example.com/gpu: 1}",
            f"{PATH}.limits.example.com/gpu: Required value: Limit must be set for non "
            "overcommitable resources; add limits.example.com/gpu: 1 (equal to the request)",
        ),
        (
            "requests: {example.com/gpu: 1}\nlimits: {example.com/gpu: 2}",
            f'{PATH}.requests.example.com/gpu: Invalid value: "1": must be equal to '
            "example.com/gpu limit of 2; example.com/gpu cannot be overcommitted: make the "
            "request equal to the limit, or remove the request (it defaults to the limit)",
        ),
        (
            "limits: {hugepages-2Mi: 4Mi}",
            f"{PATH}: Forbidden: HugePages require cpu or memory; add a cpu or memory request",
        ),
        (
            "limits: {hugepages-2Mi: 3Mi, memory: 1Gi}",
            f'{PATH}.limits.hugepages-2Mi: Invalid value: "3Mi": 3Mi is not positive integer '
            "multiple of hugepages-2Mi; ask for a whole number of 2Mi pages",
        ),
        (
            "limits: {a/b/c: 1}",
            f'{PATH}.limits.a/b/c: Invalid value: "a/b/c": doesn\'t follow extended resource '
            "name standard; use cpu, memory, ephemeral-storage, hugepages-<size> (e.g. "
            "hugepages-2Mi) or an extended resource named with a domain, e.g. example.com/gpu",
        ),
        (
            "limits: {cpu: }",
            f"{PATH}.limits.cpu: expected a quantity, got null; give one, e.g. 500m, or remove it",
        ),
        (
            "limits: {cpu: true}",
            f"{PATH}.limits.cpu: Invalid value: the boolean true: quantities must match the "
            "regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'; write e.g. "
            "500m or 0.5 (cpu), 128Mi or 1G (memory)",
        ),
        (
            "claims: [{name: gpu}]",
            f"{PATH}.claims: unknown field 'claims'; did you mean 'limits'?",
        ),
    ],
)
def test_bad_resources_are_named_with_their_fix(text, expected):
    assert problems(with_resources(text)) == [expected]


def test_a_deployment_templates_resources_are_checked_at_their_path():
    (found,) = problems(with_resources("limits: {memory: lots}", kind="Deployment"))
    assert found.startswith(
        "t.yaml: Deployment/web: spec.template.spec.containers[0].resources.limits.memory: "
        'Invalid value: "lots"'
    )


# ---------------------------------------------------------------- nodes' allocatable


def allocatable(text: str) -> str:
    return TWO_RACKS.replace("nodes: [n3]", f"nodes: [{{name: n3, allocatable: {text}}}]")


def test_a_node_takes_its_allocatable_from_the_lab_file():
    spec = parse_lab(allocatable('{cpu: "2", memory: 4Gi, pods: 110}'))
    n3 = next(n for n in spec.nodes if n.name == "n3")
    assert n3.allocatable == ResourceList(2000, 4 * GI, (("cpu", "2"), ("memory", "4Gi")))
    assert n3.max_pods == 110
    # the written text is kept canonical, as a Node shows it
    spec = parse_lab(allocatable("{cpu: 1.5, memory: 4096Mi}"))
    n3 = next(n for n in spec.nodes if n.name == "n3")
    assert n3.allocatable.text() == {"cpu": "1500m", "memory": "4Gi"}


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "{cpu: two}",
            't.yaml: lab.racks[1].nodes[0].allocatable.cpu: Invalid value: "two": '
            "quantities must match",
        ),
        (
            "{memory: -1Gi}",
            't.yaml: lab.racks[1].nodes[0].allocatable.memory: Invalid value: "-1Gi": must be '
            "greater than or equal to 0",
        ),
        (
            "{pods: 1.5}",
            "t.yaml: lab.racks[1].nodes[0].allocatable.pods: 1.5 is not a number of pods",
        ),
        (
            "{gpus: 1}",
            "t.yaml: lab.racks[1].nodes[0].allocatable.gpus: unknown field 'gpus'",
        ),
        (
            "{pods: 10}, maxPods: 10",
            "t.yaml: lab.racks[1].nodes[0].maxPods: both maxPods and allocatable.pods are given",
        ),
    ],
)
def test_bad_allocatable(text, expected):
    (found,) = problems(allocatable(text))
    assert found.startswith(expected)


def test_the_node_object_shows_the_lab_files_allocatable_else_the_hosts():
    spec = parse_lab(allocatable('{cpu: "2", memory: 4Gi}'))
    machine = Machine("6.1", "Debian", "amd64", 8, 16 * 1024 * 1024, 100 * 1024 * 1024, "b")
    plan = plan_lab(spec, host_allocatable(machine))
    nodes = {n.name: n for n in plan.nodes}
    assert (nodes["n3"].allocatable.cpu, nodes["n3"].allocatable.memory) == (2000, 4 * GI)
    assert (nodes["n1"].allocatable.cpu, nodes["n1"].allocatable.memory) == (
        8000,
        (16 * 1024 - 100) * MI,
    )
    status = node_object(nodes["n3"], spec.overlay, "t", machine)["status"]
    assert status["allocatable"]["cpu"] == status["capacity"]["cpu"] == "2"
    assert status["allocatable"]["memory"] == status["capacity"]["memory"] == "4Gi"
    status = node_object(nodes["n1"], spec.overlay, "t", machine)["status"]
    assert status["capacity"]["cpu"] == "8"
    assert status["allocatable"]["memory"] == f"{16 * 1024 * 1024 - 100 * 1024}Ki"


def test_the_builder_sets_a_nodes_allocatable():
    b = LabBuilder("t")
    b.add_rack("r1", "192.168.1.0/24")
    b.add_node("n1", "r1", allocatable={"cpu": "500m", "memory": "1Gi", "pods": 4})
    b.add_node("n2", "r1")
    n1, n2 = b.build().nodes
    assert (n1.allocatable.cpu, n1.allocatable.memory, n1.max_pods) == (500, GI, 4)
    assert n2.allocatable == ResourceList()


# ---------------------------------------------------------------- the OCI runtime's numbers


@pytest.mark.parametrize(
    "millis, shares",
    # pkg/kubelet/cm helpers_linux_test.go; the docs: "250m is 256 shares" (1024 per cpu)
    [(0, 2), (1, 2), (2, 2), (3, 3), (250, 256), (500, 512), (1000, 1024), (10**9, 262144)],
)
def test_shares(millis, shares):
    assert milli_cpu_to_shares(millis) == shares


@pytest.mark.parametrize(
    "millis, quota",
    # the docs: the limit in millicores times 100 microseconds per 100 ms period; 1 ms least
    [(0, 0), (5, 1000), (9, 1000), (10, 1000), (200, 20000), (500, 50000), (1500, 150000)],
)
def test_quota(millis, quota):
    assert milli_cpu_to_quota(millis) == quota


def resources_of(text: str) -> Resources:
    return parse_lab(with_resources(text)).pods[0].template.containers[0].resources


def test_linux_resources_of_a_burstable_container():
    found = linux_resources(
        resources_of("requests: {cpu: 250m, memory: 64Mi}\nlimits: {cpu: 500m, memory: 128Mi}")
    )
    assert found == {
        "cpu": {"shares": 256, "period": 100000, "quota": 50000},
        "memory": {"limit": 128 * MI, "swap": 128 * MI, "reservation": 64 * MI},
    }


def test_linux_resources_of_a_best_effort_container():
    assert linux_resources(Resources()) == {"cpu": {"shares": 2, "period": 100000}}


def test_a_limit_alone_is_the_request_too():
    found = linux_resources(resources_of("limits: {cpu: 2, memory: 1Gi}"), cgroup2=True)
    assert found == {
        "cpu": {"shares": 2048, "period": 100000, "quota": 200000},
        "memory": {"limit": GI, "swap": GI, "reservation": GI},
        "unified": {"memory.oom.group": "1"},
    }
