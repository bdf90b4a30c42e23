"""lab.store and lab.controlPlane in a lab file; Jobs and Deployment strategies in manifests."""

from __future__ import annotations

import pytest

from netlab.errors import SpecError
from netlab.spec.load import check_store_url, parse_lab

LAB = """
lab:
  name: t
  racks: [{name: r1, subnet: 192.168.1.0/24, nodes: [n1, n2]}]
"""


@pytest.mark.parametrize(
    "value,problem",
    [
        ("embedded", None),
        ("etcd", None),
        ("etcd://127.0.0.1:2379", None),
        ("etcd://127.0.0.1:2379,localhost:2380", None),
        ("etcd://10.0.0.5:2379", "not a loopback address"),
        ("etcd://127.0.0.1", "has no port"),
        ("postgres://x", "is not a store"),
        (3, "is not a store"),
    ],
)
def test_store_settings(value, problem):
    found = check_store_url(value)
    assert (found is None) if problem is None else (problem in found)


def test_lab_file_store_and_timing():
    spec = parse_lab(
        LAB + "  store: etcd\n  controlPlane: {nodeGracePeriod: 40s, heartbeatInterval: 10s}\n"
    )
    assert spec.store == "etcd"
    assert (spec.control_plane.heartbeat, spec.control_plane.node_grace) == (10.0, 40.0)
    assert parse_lab(LAB).store == "embedded"
    assert parse_lab(LAB).control_plane.job_backoff == 10.0  # Kubernetes' first step
    fast = parse_lab(LAB + "  controlPlane: {jobBackoff: 200ms}\n").control_plane
    assert fast.job_backoff == 0.2


@pytest.mark.parametrize(
    "extra,field",
    [
        ("  store: etcd://192.168.1.9:2379\n", "lab.store"),
        (
            "  controlPlane: {nodeGracePeriod: 100ms, heartbeatInterval: 1s}\n",
            "lab.controlPlane.nodeGracePeriod",
        ),
        ("  controlPlane: {nodeGracePeriod: soon}\n", "lab.controlPlane.nodeGracePeriod"),
        ("  controlPlane: {grace: 1s}\n", "lab.controlPlane.grace"),
        ("  controlPlane: {jobBackoff: 2h}\n", "lab.controlPlane.jobBackoff"),
    ],
)
def test_bad_control_plane_settings_name_their_field(extra, field):
    with pytest.raises(SpecError) as err:
        parse_lab(LAB + extra)
    assert field in str(err.value)


JOB = """
---
apiVersion: batch/v1
kind: Job
metadata: {name: once}
spec:
  %s
  template:
    spec:
      restartPolicy: %s
      containers: [{name: c, command: ["true"]}]
"""


@pytest.mark.parametrize(
    "spec,policy,field",
    [
        ("completions: 0", "Never", "spec.completions"),
        ("backoffLimit: -1", "Never", "spec.backoffLimit"),
        ("activeDeadlineSeconds: 0", "Never", "spec.activeDeadlineSeconds"),
        ("parallelism: 2", "Always", "spec.template.spec.restartPolicy"),
        ("suspend: true", "Never", "spec.suspend"),
    ],
)
def test_bad_jobs_name_their_field(spec, policy, field):
    with pytest.raises(SpecError) as err:
        parse_lab(LAB + JOB % (spec, policy))
    assert field in str(err.value)


def test_a_job_with_its_defaults():
    (job,) = parse_lab(LAB + JOB % ("parallelism: 2", "OnFailure")).jobs
    assert (job.completions, job.parallelism, job.backoff_limit, job.active_deadline) == (
        1,
        2,
        6,
        None,
    )


def test_max_pods_is_a_capacity_the_scheduler_keeps():
    from netlab.plan import scheduler
    from netlab.plan.build import plan_lab

    text = LAB.replace("nodes: [n1, n2]", "nodes: [{name: n1, maxPods: 1}, {name: n2, maxPods: 2}]")
    spec = parse_lab(text)
    assert [n.max_pods for n in spec.nodes] == [1, 2]
    nodes = [scheduler.Candidate("n1", "r1", {}, 1), scheduler.Candidate("n2", "r1", {}, 2)]
    tmpl = parse_lab(LAB + JOB % ("", "Never")).jobs[0].template
    assert scheduler.place(tmpl, nodes, [], {"n1": 1, "n2": 0}) == "n2"
    with pytest.raises(scheduler.Unschedulable, match="Too many pods"):
        scheduler.place(tmpl, nodes, [], {"n1": 1, "n2": 2})
    # a lab file asking for more pods than the nodes hold is refused before anything is built
    crowded = (
        text
        + """
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 4
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, command: [sleep, "1"]}]}
"""
    )
    with pytest.raises(scheduler.Unschedulable, match="Too many pods"):
        plan_lab(parse_lab(crowded))


def test_bad_max_pods():
    with pytest.raises(SpecError, match="maxPods"):
        parse_lab(LAB.replace("nodes: [n1, n2]", "nodes: [{name: n1, maxPods: 0}]"))
