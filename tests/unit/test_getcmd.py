"""`netlab get` as kubectl get: several kinds, selectors, names, output forms; the
pure parts, and run() against an in-memory stand-in for the lab API."""

from __future__ import annotations

import argparse
import json

import pytest
import yaml

from netlab import getcmd
from netlab.errors import ApiError, NetlabError
from netlab.resources import DEFAULT_TABLE, LabelSelector

RES = DEFAULT_TABLE.resolve


def pod(name: str, labels: dict | None = None, ns: str = "default") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": {"containers": [{"name": "c"}], "nodeName": "n1"},
        "status": {"phase": "Running", "containerStatuses": [{"ready": True}]},
    }


def deployment(name: str, labels: dict | None = None) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "labels": labels or {}},
        "spec": {"replicas": 2},
        "status": {"readyReplicas": 2, "updatedReplicas": 2, "availableReplicas": 2},
    }


class FakeLab:
    """list and get over fixed objects, with label selectors as the API applies them."""

    def __init__(self, objects: dict[str, list[dict]]):
        self.objects = objects
        self.asked: list[tuple] = []

    def list(self, resource, namespace=None, label_selector=None, all_namespaces=False,
             field_selector=None):  # fmt: skip
        self.asked.append((resource, namespace, label_selector, field_selector))
        selector = LabelSelector.parse(label_selector)
        items = [
            o
            for o in self.objects.get(resource, [])
            if selector.matches(o["metadata"]["labels"])
            and (all_namespaces or o["metadata"]["namespace"] == namespace)
        ]
        return {"items": items, "metadata": {"resourceVersion": "7"}}

    def get(self, resource, name, namespace=None):
        for obj in self.objects.get(resource, []):
            if obj["metadata"]["name"] == name:
                return obj
        raise ApiError(404, f'{resource} "{name}" not found')


def args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    getcmd.configure(p)
    return p.parse_args(argv)


LAB = {
    "deployments": [deployment("web", {"app": "web"}), deployment("db", {"app": "db"})],
    "pods": [pod("web-1", {"app": "web"}), pod("db-1", {"app": "db"})],
}


@pytest.mark.parametrize(
    ("text", "plurals"),
    [
        ("pods", ["pods"]),
        ("deploy,pods", ["deployments", "pods"]),
        ("po,pod,pods", ["pods"]),  # one kind, named three ways: once
        ("svc,deployments.apps,ep", ["services", "deployments", "endpoints"]),
    ],
)
def test_kinds_are_read_as_kubectl_reads_them(text, plurals):
    assert [r.plural for r in getcmd.resources_of(text)] == plurals


@pytest.mark.parametrize("text", ["pods,", "pods,nosuch", ",pods"])
def test_a_bad_kind_list_is_refused(text):
    with pytest.raises(NetlabError):
        getcmd.resources_of(text)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["pods", "web-1", "-l", "app=web"], "name cannot be provided when a selector"),
        (["pods", "web-1", "--field-selector", "spec.nodeName=n1"], "name cannot be provided"),
        (["deploy,pods", "-w"], "only specify a single resource type"),
    ],
)
def test_what_kubectl_refuses_is_refused(argv, message, capsys):
    lab = FakeLab(LAB)
    with pytest.raises(NetlabError, match=message):
        getcmd.run(args(*argv), lab)
    assert lab.asked == []  # refused before asking


def test_several_kinds_print_a_table_each_with_kind_names(capsys):
    assert getcmd.run(args("deploy,pods"), FakeLab(LAB)) == 0
    out = capsys.readouterr().out
    deployments, pods = out.rstrip("\n").split("\n\n")
    assert deployments.splitlines()[0].split() == [
        "NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"
    ]  # fmt: skip
    assert [line.split()[0] for line in deployments.splitlines()[1:]] == [
        "deployment.apps/web",
        "deployment.apps/db",
    ]
    assert pods.splitlines()[0].split()[:3] == ["NAME", "READY", "STATUS"]
    assert [line.split()[0] for line in pods.splitlines()[1:]] == ["pod/web-1", "pod/db-1"]


def test_one_kind_keeps_plain_names_and_a_selector_goes_to_the_api(capsys):
    lab = FakeLab(LAB)
    assert (
        getcmd.run(args("pods", "-l", "app=web", "--field-selector", "spec.nodeName=n1"), lab) == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["web-1"]
    assert lab.asked == [("pods", "default", "app=web", "spec.nodeName=n1")]


def test_a_selector_applies_to_every_kind_and_an_empty_kind_is_left_out(capsys):
    lab = FakeLab({**LAB, "services": []})
    assert getcmd.run(args("deploy,svc,pods", "-l", "app=db", "-A"), lab) == 0
    out = capsys.readouterr().out
    assert "service" not in out
    tables = out.rstrip("\n").split("\n\n")
    assert [t.splitlines()[1].split()[:2] for t in tables] == [
        ["default", "deployment.apps/db"],
        ["default", "pod/db-1"],
    ]
    assert all(t.splitlines()[0].startswith("NAMESPACE") for t in tables)
    assert {a[2] for a in lab.asked} == {"app=db"} and {a[1] for a in lab.asked} == {None}


def test_nothing_found_in_any_kind(capsys):
    assert getcmd.run(args("deploy,pods", "-l", "app=none"), FakeLab(LAB)) == 0
    assert capsys.readouterr().out == "No resources found.\n"


def test_json_and_yaml_are_one_list_and_name_is_kind_slash_name(capsys):
    getcmd.run(args("deploy,pods", "-o", "json"), FakeLab(LAB))
    document = json.loads(capsys.readouterr().out)
    assert document["kind"] == "List" and [o["kind"] for o in document["items"]] == [
        "Deployment", "Deployment", "Pod", "Pod"
    ]  # fmt: skip
    getcmd.run(args("pods", "web-1", "-o", "yaml"), FakeLab(LAB))
    assert yaml.safe_load(capsys.readouterr().out)["metadata"]["name"] == "web-1"  # the object
    getcmd.run(args("pods,deploy", "-o", "name"), FakeLab(LAB))
    assert capsys.readouterr().out.split() == [
        "pod/web-1", "pod/db-1", "deployment.apps/web", "deployment.apps/db"
    ]  # fmt: skip


def test_names_across_kinds_report_what_one_kind_lacks(capsys):
    # kubectl get deploy,pods web: the Deployment, an error for the pod, status 1
    assert getcmd.run(args("deploy,pods", "web"), FakeLab(LAB)) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines()[1].split()[0] == "web"  # one kind found: plain names
    assert 'pods "web" not found' in captured.err
    with pytest.raises(NetlabError, match='pods "nosuch" not found'):
        getcmd.run(args("pods", "nosuch"), FakeLab(LAB))


def test_kind_names_follow_kubectl():
    assert [getcmd.kind_name(RES(r)) for r in ("po", "deploy", "jobs", "vs")] == [
        "pod",
        "deployment.apps",
        "job.batch",
        "virtualservice.networking.istio.io",
    ]


def test_a_kind_without_columns_of_its_own_prints_name_and_age():
    lease = {"metadata": {"name": "n1", "namespace": "kube-node-lease"}}
    text = getcmd.render([getcmd.Found(RES("leases"), [lease], "1")], None, False, True)
    assert [line.split() for line in text.splitlines()] == [
        ["NAME", "AGE"],
        ["lease.coordination.k8s.io/n1", "<unknown>"],
    ]
