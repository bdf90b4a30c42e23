"""`netlab top pods|nodes` prints kubectl top's columns and units from the metrics
API's answers (a fake client here; tests/root/test_top.py runs it against a lab)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from netlab.cli import parser
from netlab.errors import NetlabError
from netlab.node.metrics import node_metrics_object, pod_metrics_object
from netlab.topcmd import check, run

T0 = datetime(2026, 12, 6, 10, 0, 0, tzinfo=UTC)
MI = 1 << 20


class Client:
    def __init__(self, pods: list[dict], nodes: list[dict], store_pods: int = 1) -> None:
        self.pods, self.nodes, self.store_pods = pods, nodes, store_pods
        self.paths: list[tuple[str, dict]] = []

    def get_path(self, path: str, query: dict | None = None) -> dict:
        self.paths.append((path, query or {}))
        if "/nodes" in path:
            return {"items": self.nodes}
        items = [
            p for p in self.pods if path.endswith("/pods") or path.endswith(p["metadata"]["name"])
        ]
        return items[0] if not path.endswith("/pods") else {"items": items}

    def list(self, resource, namespace=None, label_selector=None, all_namespaces=False) -> dict:
        if resource == "pods":
            return {"items": [{}] * self.store_pods}
        return {
            "items": [
                {"metadata": {"name": "n1"}, "status": {"allocatable": {"cpu": "2", "memory": "8Gi"}}},
                {"metadata": {"name": "n2"}, "status": {"allocatable": {"cpu": "2", "memory": "8Gi"}}},
                {"metadata": {"name": "n9"}, "status": {"allocatable": {"cpu": "2", "memory": "8Gi"}}},
            ]
        }  # fmt: skip

    def get(self, resource, name, namespace=None) -> dict:
        return next(n for n in self.list("nodes")["items"] if n["metadata"]["name"] == name)


PODS = [
    pod_metrics_object(
        "default", "web-1", "", T0, 10, [("app", 1_500_001, 100 * MI), ("proxy", 0, 5 * MI + 1)]
    ),
    pod_metrics_object("shop", "db-0", "", T0, 10, [("db", 900_000_000, 300 * MI)]),
]
NODES = [
    node_metrics_object("n1", "", T0, 10, 500_000_000, 2 << 30),
    node_metrics_object("n2", "", T0, 10, 1_000_000, 1 * MI),
]


def _top(capsys, argv: list[str], client: Client) -> list[list[str]]:
    args = parser().parse_args(["top", *argv])
    check(args)
    assert run(args, client) == 0
    return [line.split() for line in capsys.readouterr().out.splitlines()]


def test_top_pods(capsys) -> None:
    client = Client(PODS, NODES)
    assert _top(capsys, ["pods", "-A"], client) == [
        ["NAMESPACE", "NAME", "CPU(cores)", "MEMORY(bytes)"],
        ["default", "web-1", "2m", "105Mi"],  # 1.500001m rounds up; whole MiB down
        ["shop", "db-0", "900m", "300Mi"],
    ]
    assert client.paths[-1] == ("/apis/metrics.k8s.io/v1beta1/pods", {"labelSelector": None})
    assert _top(capsys, ["pods", "--containers", "-l", "app=web"], client)[:2] == [
        ["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"],
        ["web-1", "app", "2m", "100Mi"],
    ]
    assert client.paths[-1] == (
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods",
        {"labelSelector": "app=web"},
    )
    assert _top(capsys, ["pod", "web-1", "-n", "default", "--no-headers"], client) == [
        ["web-1", "2m", "105Mi"]
    ]
    sorted_rows = _top(capsys, ["pods", "-A", "--sort-by", "cpu", "--no-headers"], client)
    assert [r[1] for r in sorted_rows] == ["db-0", "web-1"]


def test_top_nodes(capsys) -> None:
    assert _top(capsys, ["nodes"], Client(PODS, NODES)) == [
        ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"],
        ["n1", "500m", "25%", "2048Mi", "25%"],
        ["n2", "1m", "0%", "1Mi", "0%"],
        ["n9", "<unknown>", "<unknown>", "<unknown>", "<unknown>"],  # as kubectl shows it
    ]


def test_no_metrics(capsys) -> None:
    with pytest.raises(NetlabError, match="metrics not available yet"):
        _top(capsys, ["pods"], Client([], []))
    with pytest.raises(NetlabError, match="metrics not available yet"):
        _top(capsys, ["nodes"], Client([], []))
    args = parser().parse_args(["top", "pods", "-n", "empty"])
    assert run(args, Client([], [], store_pods=0)) == 0
    out, err = capsys.readouterr()
    assert out == "" and err == "No resources found in empty namespace.\n"


def test_flags_that_need_pods_or_nodes() -> None:
    for argv in (["-A"], ["--containers"], ["-l", "a=b"]):
        with pytest.raises(NetlabError, match="only with `netlab top pods`"):
            check(parser().parse_args(["top", *argv]))
    with pytest.raises(NetlabError, match="for pods"):
        check(parser().parse_args(["top", "nodes", "-A"]))
    args = parser().parse_args(["top", "-n", "shop", "--window", "2"])  # the mesh's, as before
    check(args)
    assert args.what is None and args.namespace == "shop" and args.window == 2
