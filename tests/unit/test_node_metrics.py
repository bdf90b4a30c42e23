"""The metrics sampler with a fake clock and fake usage: CPU rates over the window,
working sets, containers coming and going, and metrics-server's shapes and units."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import pytest

from netlab.node.cgroups import Usage
from netlab.node.metrics import (
    ContainerCgroup,
    MetricsSampler,
    cpu_quantity,
    go_duration,
    memory_quantity,
    parse_quantity,
)

T0 = datetime(2026, 12, 6, 10, 0, 0, tzinfo=UTC)


def _usage(cpu_ns: int, working_set: int = 0) -> Usage:
    return Usage(cpu_ns, working_set, working_set, None, 0, 0, 0, 0)


class Fake:
    """A clock, a wall clock and the cgroups' counters, all moved by the test."""

    def __init__(self) -> None:
        self.t = 100.0
        self.counters: dict[Path, Usage | None] = {}
        self.containers: list[ContainerCgroup] = []

    def sampler(self, window: float = 10.0) -> MetricsSampler:
        return MetricsSampler(
            lambda: self.containers,
            window=window,
            clock=lambda: self.t,
            read=lambda dirs: self.counters.get(dirs["cpu"]),
            now=lambda: T0 + timedelta(seconds=self.t - 100.0),
        )

    def add(self, namespace, pod, container, node) -> Path:
        path = Path(f"/cg/{namespace}/{pod}/{container}")
        self.containers.append(ContainerCgroup(namespace, pod, container, node, {"cpu": path}))
        return path


def test_no_metrics_before_two_samples_then_the_rate() -> None:
    fake = Fake()
    web = fake.add("default", "web-1", "app", "n1")
    sampler = fake.sampler()
    fake.counters[web] = _usage(0, 4 << 20)
    sampler.sample()
    assert sampler.pod_metrics() == []
    fake.t += 1
    fake.counters[web] = _usage(250_000_000, 6 << 20)  # 0.25 s of CPU in 1 s
    sampler.sample()
    assert sampler.pod_metrics() == [
        {
            "kind": "PodMetrics",
            "apiVersion": "metrics.k8s.io/v1beta1",
            "metadata": {
                "name": "web-1",
                "namespace": "default",
                "creationTimestamp": "2026-12-06T10:00:01Z",
            },
            "timestamp": "2026-12-06T10:00:01Z",
            "window": "1s",
            "containers": [{"name": "app", "usage": {"cpu": "250m", "memory": "6Mi"}}],
        }
    ]


def test_the_rate_spans_the_window_once_there_is_one() -> None:
    fake = Fake()
    web = fake.add("default", "web-1", "app", "n1")
    sampler = fake.sampler(window=10.0)
    cpu = 0
    for second in range(31):  # 1 core busy for 20 s, then 0.5 core
        fake.counters[web] = _usage(cpu)
        sampler.sample()
        fake.t += 1
        cpu += 1_000_000_000 if second < 20 else 500_000_000
    (item,) = sampler.pod_metrics()
    assert item["window"] == "10s"
    assert item["containers"][0]["usage"]["cpu"] == "500m"  # the last 10 s alone
    # what is kept: the window's samples and the one before it, not all 31
    assert len(sampler._histories[("default", "web-1", "app")].samples) == 11


def test_pods_nodes_and_containers_that_end() -> None:
    fake = Fake()
    a1 = fake.add("default", "a", "app", "n1")
    a2 = fake.add("default", "a", "sidecar", "n1")
    b = fake.add("shop", "b", "app", "n2")
    sampler = fake.sampler()
    for cpu in (0, 2_000_000):
        for path in (a1, a2, b):
            fake.counters[path] = _usage(cpu, 1 << 20)
        sampler.sample()
        fake.t += 2
    pods = sampler.pod_metrics()
    assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in pods] == [
        ("default", "a"),
        ("shop", "b"),
    ]
    assert [c["name"] for c in pods[0]["containers"]] == ["app", "sidecar"]
    assert pods[0]["containers"][0]["usage"] == {"cpu": "1m", "memory": "1Mi"}
    nodes = sampler.node_metrics(["n1", "n2", "n3"])
    assert [(n["metadata"]["name"], n["usage"]) for n in nodes] == [
        ("n1", {"cpu": "2m", "memory": "2Mi"}),
        ("n2", {"cpu": "1m", "memory": "1Mi"}),
        ("n3", {"cpu": "0", "memory": "0"}),  # no containers: nothing used
    ]
    assert nodes[0]["kind"] == "NodeMetrics" and nodes[0]["window"] == "2s"
    # the sidecar's cgroup vanishes; pod b is deleted
    fake.counters[a2] = None
    fake.containers = fake.containers[:2]
    fake.counters[a1] = _usage(4_000_000, 1 << 20)
    sampler.sample()
    pods = sampler.pod_metrics()
    assert [p["metadata"]["name"] for p in pods] == ["a"]
    assert [c["name"] for c in pods[0]["containers"]] == ["app"]


def test_a_restarted_container_starts_over() -> None:
    fake = Fake()
    web = fake.add("default", "web", "app", "n1")
    sampler = fake.sampler()
    fake.counters[web] = _usage(5_000_000_000)
    sampler.sample()
    fake.t += 1
    fake.counters[web] = _usage(1_000)  # a new cgroup's counter, same name
    sampler.sample()
    assert sampler.pod_metrics() == []  # never a negative rate
    # a new cgroup directory for the container: a new history as well
    fake.t += 1
    fake.counters[web] = _usage(2_000)
    sampler.sample()
    assert sampler.pod_metrics()[0]["containers"][0]["usage"]["cpu"] == "1u"
    fake.containers = [ContainerCgroup("default", "web", "app", "n1", {"cpu": Path("/cg/new")})]
    fake.counters[Path("/cg/new")] = _usage(10)
    fake.t += 1
    sampler.sample()
    assert sampler.pod_metrics() == []


def test_the_thread_samples_until_stopped() -> None:
    listed = threading.Event()
    calls = []

    def containers():
        calls.append(1)
        listed.set()
        return []

    sampler = MetricsSampler(containers, interval=0.01)
    sampler.start()
    try:
        assert listed.wait(10)
    finally:
        sampler.stop()
    seen = len(calls)
    assert sampler._thread is None
    sampler.sample()  # still answers after stop; the thread made no more calls
    assert len(calls) == seen + 1


@pytest.mark.parametrize(
    ("nanocores", "text"),
    [
        (0, "0"),
        (2216637, "2216637n"),
        (2216630, "2216630n"),
        (12345000, "12345u"),
        (5_000_000, "5m"),
        (250_000_000, "250m"),
        (1_000_000_000, "1"),
        (1_500_000_000, "1500m"),
        (2_000_000_000_000, "2k"),
    ],
)
def test_cpu_quantity_is_apimachinerys_canonical_form(nanocores, text) -> None:
    assert cpu_quantity(nanocores) == text
    assert parse_quantity(text) == Fraction(nanocores, 10**9)


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0"),
        (1000, "1000"),
        (12345, "12345"),
        (14565376, "14224Ki"),
        (2 << 20, "2Mi"),
        (3 << 30, "3Gi"),
        (1025 * 1024, "1025Ki"),
    ],
)
def test_memory_quantity_is_binary_si(size, text) -> None:
    assert memory_quantity(size) == text
    assert parse_quantity(text) == size


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", Fraction(1, 2)), ("1G", 10**9), ("1e3", 1000), ("1.5", Fraction(3, 2)),
     ("128Mi", 128 << 20), ("16318084Ki", 16318084 * 1024), (".5", Fraction(1, 2))],
)  # fmt: skip
def test_parse_quantity(text, value) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("bad", ["", "1x", "1 Mi", "--1"])
def test_parse_quantity_refuses(bad) -> None:
    with pytest.raises(ValueError):
        parse_quantity(bad)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (10, "10s"),
        (10.421, "10.421s"),
        (0, "0s"),
        (0.5, "500ms"),
        (0.0015, "1.5ms"),
        (60.5, "1m0.5s"),
        (3725, "1h2m5s"),
        (0.000002, "2µs"),
    ],
)
def test_go_duration(seconds, text) -> None:
    assert go_duration(seconds) == text
