"""EndpointSlices from Endpoints' subsets (the pure builder), and the lab's Services
keeping them in step with the Endpoints they write."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from types import MappingProxyType

import pytest

from netlab.endpointslices import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MAX_ENDPOINTS,
    SERVICE_NAME_LABEL,
    endpoint_slices,
    slice_name,
)
from netlab.services import Candidate, Services
from netlab.spec import ContainerPort, ContainerSpec, ServicePort, ServiceSpec
from netlab.store import Store


def address(ip: str, pod: str, node: str = "n1") -> dict:
    return {
        "ip": ip,
        "nodeName": node,
        "targetRef": {"kind": "Pod", "name": pod, "namespace": "default"},
    }


PORT = {"port": 8080, "protocol": "TCP"}
NAMED = {"name": "http", "port": 8080, "protocol": "TCP"}


@pytest.mark.parametrize(
    ("subsets", "terminating", "expected"),
    [
        pytest.param(
            [{"addresses": [address("10.0.1.2", "web-1")], "ports": [PORT]}],
            (),
            [("10.0.1.2", True, True, False)],
            id="ready",
        ),
        pytest.param(
            [{"notReadyAddresses": [address("10.0.1.3", "web-2")], "ports": [PORT]}],
            (),
            [("10.0.1.3", False, False, False)],
            id="not-ready",
        ),
        pytest.param(
            [{"notReadyAddresses": [address("10.0.1.3", "web-2")], "ports": [PORT]}],
            {("default", "web-2")},
            [("10.0.1.3", False, False, True)],
            id="terminating",
        ),
        pytest.param(
            [
                {
                    "addresses": [address("10.0.1.2", "web-1")],
                    "notReadyAddresses": [address("10.0.1.3", "web-2")],
                    "ports": [PORT],
                }
            ],
            {("other", "web-2")},  # another namespace's pod of that name
            [("10.0.1.2", True, True, False), ("10.0.1.3", False, False, False)],
            id="mixed",
        ),
    ],
)
def test_conditions_follow_readiness_and_deletion(subsets, terminating, expected) -> None:
    (eps,) = endpoint_slices("default", "web", subsets, terminating=terminating)
    got = [
        (e["addresses"][0], *(e["conditions"][c] for c in ("ready", "serving", "terminating")))
        for e in eps["endpoints"]
    ]
    assert got == expected


def test_a_slice_has_what_kubectl_and_kube_proxy_read() -> None:
    subsets = [{"addresses": [address("10.0.1.2", "web-1", "n2")], "ports": [PORT]}]
    (eps,) = endpoint_slices("default", "web", subsets, {"tier": "front"})
    assert eps["apiVersion"] == "discovery.k8s.io/v1" and eps["kind"] == "EndpointSlice"
    assert eps["addressType"] == "IPv4"
    meta = eps["metadata"]
    assert meta["namespace"] == "default" and meta["name"].startswith("web-")
    assert meta["labels"] == {
        "tier": "front",
        SERVICE_NAME_LABEL: "web",
        MANAGED_BY_LABEL: MANAGED_BY,
    }
    assert meta["ownerReferences"][0]["kind"] == "Service"
    assert meta["ownerReferences"][0]["name"] == "web"
    (endpoint,) = eps["endpoints"]
    assert endpoint["nodeName"] == "n2"
    assert endpoint["targetRef"] == {"kind": "Pod", "name": "web-1", "namespace": "default"}
    # an unnamed Service port is named "" (kubectl dereferences the name)
    assert eps["ports"] == [{"name": "", "port": 8080, "protocol": "TCP"}]


def test_an_empty_service_has_one_empty_slice_under_the_name_it_keeps() -> None:
    (empty,) = endpoint_slices("default", "web", [])
    assert empty["endpoints"] == [] and empty["ports"] == []
    subsets = [{"addresses": [address("10.0.1.2", "web-1")], "ports": [NAMED]}]
    (filled,) = endpoint_slices("default", "web", subsets)
    assert filled["metadata"]["name"] == empty["metadata"]["name"]
    assert filled["ports"] == [NAMED]


def test_names_are_stable_and_differ_by_service_and_namespace() -> None:
    assert slice_name("web", "default") == slice_name("web", "default")
    assert slice_name("web", "default") != slice_name("web", "prod")
    assert slice_name("web", "default") != slice_name("api", "default")
    assert len(slice_name("web", "default")) == len("web-") + 5


def test_port_sets_get_a_slice_each() -> None:
    subsets = [
        {"addresses": [address("10.0.1.2", "a")], "ports": [NAMED]},
        {"addresses": [address("10.0.1.3", "b")], "ports": [{**NAMED, "port": 9090}]},
    ]
    slices = endpoint_slices("default", "web", subsets)
    assert [s["ports"][0]["port"] for s in slices] == [8080, 9090]
    assert len({s["metadata"]["name"] for s in slices}) == 2


def test_a_large_service_is_cut_into_slices_of_at_most_100() -> None:
    many = [
        address(f"10.0.{i // 250}.{i % 250 + 1}", f"p{i}") for i in range(MAX_ENDPOINTS * 2 + 1)
    ]
    slices = endpoint_slices("default", "web", [{"addresses": many, "ports": [PORT]}])
    assert [len(s["endpoints"]) for s in slices] == [MAX_ENDPOINTS, MAX_ENDPOINTS, 1]
    assert len({s["metadata"]["name"] for s in slices}) == 3
    listed = [e["addresses"][0] for s in slices for e in s["endpoints"]]
    assert listed == [a["ip"] for a in many]


# -- the lab's Services write them beside the Endpoints --------------------------------

WEB = ServiceSpec(
    "web",
    "default",
    (ServicePort(80, 8080),),
    selector=MappingProxyType({"app": "web"}),
)
CONTAINERS = (ContainerSpec("web", ports=(ContainerPort(8080),)),)


def pod(name: str, ip: str, ready: bool = True, terminating: bool = False) -> Candidate:
    labels = MappingProxyType({"app": "web"})
    return Candidate("default", name, labels, IPv4Address(ip), "n1", ready, CONTAINERS, terminating)


def slices(store: Store, service: str = "web") -> list[dict]:
    return store.list("endpointslices", "default", f"{SERVICE_NAME_LABEL}={service}")[0]


def test_services_keep_slices_in_step_with_endpoints() -> None:
    store = Store()
    services = Services(store, IPv4Network("10.96.0.0/12"), False, lambda: [])
    services.set([WEB])
    services.sync([])
    (placeholder,) = slices(store)
    assert placeholder["endpoints"] == []
    services.sync([pod("web-1", "10.244.1.2"), pod("web-2", "10.244.1.3", ready=False)])
    (eps,) = slices(store)
    assert eps["metadata"]["name"] == placeholder["metadata"]["name"]
    assert eps["metadata"]["uid"] == placeholder["metadata"]["uid"]  # updated, not replaced
    ready = {e["addresses"][0]: e["conditions"]["ready"] for e in eps["endpoints"]}
    assert ready == {"10.244.1.2": True, "10.244.1.3": False}
    endpoints = store.get("endpoints", "default", "web")
    assert [a["ip"] for a in endpoints["subsets"][0]["addresses"]] == ["10.244.1.2"]
    # a pod being deleted is terminating in the slice
    services.sync([pod("web-1", "10.244.1.2", ready=False, terminating=True)])
    (eps,) = slices(store)
    assert eps["endpoints"][0]["conditions"] == {
        "ready": False,
        "serving": False,
        "terminating": True,
    }
    # nothing changed: nothing written
    revision = store.revision
    services.sync([pod("web-1", "10.244.1.2", ready=False, terminating=True)])
    assert store.revision == revision
    services.remove("default", "web")
    assert slices(store) == []


def test_adopted_services_drop_slices_they_no_longer_have() -> None:
    store = Store()
    stale = endpoint_slices("default", "web", [])[0]
    stale["metadata"]["name"] = "web-stale"
    store.apply(stale)
    services = Services(store, IPv4Network("10.96.0.0/12"), False, lambda: [])
    services.adopt([WEB], {})
    services.sync([pod("web-1", "10.244.1.2")])
    (eps,) = slices(store)
    assert eps["metadata"]["name"] != "web-stale"
    assert eps["endpoints"][0]["addresses"] == ["10.244.1.2"]
