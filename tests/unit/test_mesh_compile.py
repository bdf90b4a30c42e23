"""mesh.compile.compile_table: Kubernetes- and Istio-shaped dicts -> one pod's RouteTable.

The world is bookinfo's (productpage -> reviews v1/v2/v3 -> ratings, plus the
lab's zipkin), built by small factories; each test adds the policy it is about.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections import defaultdict
from typing import Any

import pytest

from mesh.compile import compile_table, pod_inputs
from mesh.table import (
    DEFAULT_RETRY,
    HTTP,
    ISTIO_RETRY_ON,
    LEAST_REQUEST,
    RANDOM,
    ROUND_ROBIN,
    TCP,
    Fault,
    InboundPort,
    RateLimit,
    Retry,
    Route,
    RouteTable,
    ServicePort,
    Workload,
)

# -- factories ---------------------------------------------------------------------


def pod(
    name: str,
    ip: str,
    labels: dict | None = None,
    node: str = "n1",
    ns: str = "default",
    owner: tuple[str, str] | None = None,
    ports: tuple = (("http", 9080),),
    phase: str = "Running",
) -> dict:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "labels": labels or {}}
    if owner:
        meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "controller": True}]
    containers = [{"name": "app", "ports": [{"name": n, "containerPort": p} for n, p in ports]}]
    return {
        "kind": "Pod",
        "metadata": meta,
        "spec": {"nodeName": node, "containers": containers},
        "status": {"phase": phase, "podIP": ip},
    }


def port(number: int = 9080, name: str | None = "http", target: Any = "http", **extra) -> dict:
    entry: dict[str, Any] = {"port": number, "protocol": "TCP", **extra}
    if name is not None:
        entry["name"] = name
    if target is not None:
        entry["targetPort"] = target
    return entry


def service(name: str, ip: str, selector: dict | None = None, ports=None, ns="default") -> dict:
    return {
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "clusterIP": ip,
            "selector": {"app": name} if selector is None else selector,
            "ports": [port()] if ports is None else ports,
        },
    }


def address(p: dict) -> dict:
    meta = p["metadata"]
    return {
        "ip": p["status"]["podIP"],
        "nodeName": p["spec"]["nodeName"],
        "targetRef": {"kind": "Pod", "name": meta["name"], "namespace": meta["namespace"]},
    }


def endpoints(name: str, ready=(), not_ready=(), ports=(("http", 9080),), ns="default") -> dict:
    subset: dict[str, Any] = {
        "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports]
    }
    if ready:
        subset["addresses"] = [address(p) for p in ready]
    if not_ready:
        subset["notReadyAddresses"] = [address(p) for p in not_ready]
    return {"kind": "Endpoints", "metadata": {"name": name, "namespace": ns}, "subsets": [subset]}


def dest(host: str, subset: str | None = None, weight: int | None = None, number=None) -> dict:
    d: dict[str, Any] = {"host": host}
    if subset:
        d["subset"] = subset
    if number is not None:
        d["port"] = {"number": number}
    entry: dict[str, Any] = {"destination": d}
    if weight is not None:
        entry["weight"] = weight
    return entry


def http(*routes: dict, name: str | None = None, match: list | None = None, **extra) -> dict:
    entry: dict[str, Any] = {"route": list(routes) or [dest("reviews")], **extra}
    if name:
        entry["name"] = name
    if match is not None:
        entry["match"] = match
    return entry


def vs(name: str, hosts, *routes: dict, ns="default", created=None, **spec) -> dict:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if created is not None:
        meta["creationTimestamp"] = created
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": meta,
        "spec": {"hosts": hosts, "http": list(routes), **spec},
    }


def dr(name: str, host: str, subsets=("v1", "v2", "v3"), lb=None, ns="default", **spec) -> dict:
    body: dict[str, Any] = {
        "host": host,
        "subsets": [
            s if isinstance(s, dict) else {"name": s, "labels": {"version": s}} for s in subsets
        ],
        **spec,
    }
    if lb is not None:
        body["trafficPolicy"] = {"loadBalancer": {"simple": lb}}
    return {"kind": "DestinationRule", "metadata": {"name": name, "namespace": ns}, "spec": body}


def rlp(name: str, target: str = "ratings", ns="default", **spec) -> dict:
    return {
        "apiVersion": "netlab.io/v1alpha1",
        "kind": "RateLimitPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"targetRef": {"kind": "Service", "name": target}, **spec},
    }


def node(name: str, zone: str | None = None, rack: str | None = None) -> dict:
    meta: dict[str, Any] = {"name": name, "labels": {}, "annotations": {}}
    if zone:
        meta["labels"]["topology.kubernetes.io/zone"] = zone
    if rack:
        meta["annotations"]["netlab.io/rack"] = rack
    return {"kind": "Node", "metadata": meta}


# -- the world ---------------------------------------------------------------------

PRODUCTPAGE = pod(
    "productpage-1",
    "10.244.1.10",
    {"app": "productpage", "version": "v1"},
    owner=("Deployment", "productpage"),
)
REVIEWS_V1 = pod("reviews-v1-1", "10.244.1.11", {"app": "reviews", "version": "v1"})
REVIEWS_V2 = pod("reviews-v2-1", "10.244.1.9", {"app": "reviews", "version": "v2"}, node="n3")
REVIEWS_V3 = pod("reviews-v3-1", "10.244.2.13", {"app": "reviews", "version": "v3"}, node="n3")
REVIEWS_V3_STARTING = pod(
    "reviews-v3-2", "10.244.2.14", {"app": "reviews", "version": "v3"}, node="n4"
)
RATINGS = pod("ratings-1", "10.244.2.20", {"app": "ratings", "version": "v1"}, node="n4")
ZIPKIN = pod("zipkin-1", "10.244.3.5", {"app": "zipkin"}, ns="kube-system", ports=())
REVIEWS_READY = (REVIEWS_V1, REVIEWS_V2, REVIEWS_V3)

IPS = {"productpage": "10.96.0.10", "reviews": "10.96.0.11", "ratings": "10.96.0.12"}
ZIPKIN_IP = "10.96.0.2"


def world() -> list[dict]:
    return [
        PRODUCTPAGE,
        *REVIEWS_READY,
        REVIEWS_V3_STARTING,
        RATINGS,
        ZIPKIN,
        *(service(name, ip) for name, ip in IPS.items()),
        service(
            "zipkin",
            ZIPKIN_IP,
            ports=[port(9411, "http-query", 9411)],
            ns="kube-system",
        ),
        endpoints("productpage", [PRODUCTPAGE]),
        endpoints("reviews", REVIEWS_READY, [REVIEWS_V3_STARTING]),
        endpoints("ratings", [RATINGS]),
        endpoints("zipkin", [ZIPKIN], ports=(("http-query", 9411),), ns="kube-system"),
        node("n1", zone="rack1"),
        node("n3", rack="rack2"),
        node("n4", zone="rack2", rack="ignored"),
    ]


LISTS = {
    "Service": "services",
    "Endpoints": "endpoints",
    "Pod": "pods",
    "VirtualService": "virtual_services",
    "DestinationRule": "destination_rules",
    "RateLimitPolicy": "rate_limits",
    "Node": "nodes",
}


def compile_(
    *extra: dict, base=None, me: str = "productpage-1", ns: str = "default", more=None, **kw
) -> RouteTable:
    """compile_table over the world (or `base`) plus `extra` objects, sorted into their
    lists by kind; `more` appends raw entries (anything) to a list by its name."""
    lists: dict[str, list] = defaultdict(list)
    for obj in [*(world() if base is None else base), *extra]:
        lists[LISTS[obj["kind"]]].append(obj)
    for name, items in (more or {}).items():
        lists[name].extend(items)
    return compile_table(
        ns,
        me,
        lists["services"],
        lists["endpoints"],
        lists["pods"],
        lists["virtual_services"],
        lists["destination_rules"],
        lists["rate_limits"],
        nodes=lists["nodes"],
        **kw,
    )


def reviews(table: RouteTable) -> ServicePort:
    return table.outbound(IPS["reviews"], 9080)


def ips(destination) -> list[str]:
    return [e.ip for e in destination.endpoints]


def named(table: RouteTable, method="GET", path="/reviews/0", headers=None) -> str | None:
    route = reviews(table).route(method, path, headers or {})
    return None if route is None else route.name


DEMO_VS = vs(
    "reviews",
    ["reviews"],
    http(
        dest("reviews", "v3"), name="jason", match=[{"headers": {"end-user": {"exact": "jason"}}}]
    ),
    http(dest("reviews", "v1", 90), dest("reviews", "v2", 10), name="split"),
)

# -- by address ----------------------------------------------------------------------


def test_every_service_port_is_reachable_by_cluster_ip_and_by_ready_endpoint():
    table = compile_()
    expected = {
        (IPS["productpage"], 9080): "productpage",
        (IPS["reviews"], 9080): "reviews",
        (IPS["ratings"], 9080): "ratings",
        (ZIPKIN_IP, 9411): "zipkin",
        ("10.244.1.10", 9080): "productpage",
        ("10.244.1.11", 9080): "reviews",
        ("10.244.1.9", 9080): "reviews",
        ("10.244.2.13", 9080): "reviews",
        ("10.244.2.20", 9080): "ratings",
        ("10.244.3.5", 9411): "zipkin",
    }  # not the starting reviews-v3-2 (10.244.2.14): only ready endpoints
    assert {a: sp.service for a, sp in table.by_address.items()} == expected
    sp = table.outbound("10.244.1.9", 9080)
    assert (sp.namespace, sp.service, sp.port, sp.protocol) == ("default", "reviews", 9080, HTTP)
    assert sp is reviews(table)  # one ServicePort, by ClusterIP and by endpoint
    assert (
        table.outbound(IPS["reviews"], 80) is None and table.outbound("10.244.2.14", 9080) is None
    )


def test_a_target_port_other_than_the_service_port_is_found_by_the_endpoint_port():
    web = pod("web-1", "10.244.1.30", {"app": "web"}, ports=(("http", 8080),))
    table = compile_(
        web,
        service("web", "10.96.0.30", ports=[port(80)]),
        endpoints("web", [web], ports=[("http", 8080)]),
    )
    assert table.outbound("10.96.0.30", 80).port == 80
    assert table.outbound("10.244.1.30", 8080).port == 80
    assert table.outbound("10.244.1.30", 80) is None
    assert [
        (e.ip, e.port) for e in table.outbound("10.96.0.30", 80).routes[0].destinations[0].endpoints
    ] == [("10.244.1.30", 8080)]


def test_a_headless_service_is_reachable_only_by_its_endpoints():
    db = pod("db-0", "10.244.1.40", {"app": "db"}, ports=(("tcp-db", 5432),))
    table = compile_(
        db,
        service("db", "None", ports=[port(5432, "tcp-db", 5432)]),
        endpoints("db", [db], ports=[("tcp-db", 5432)]),
    )
    assert table.outbound("10.244.1.40", 5432).protocol == TCP
    assert not [
        a for a, sp in table.by_address.items() if sp.service == "db" and a[0] != "10.244.1.40"
    ]


@pytest.mark.parametrize(
    "name, app_protocol, expected",
    [
        ("http", None, HTTP),
        (None, None, HTTP),
        ("grpc-api", None, HTTP),
        ("http2", None, HTTP),
        ("web", None, HTTP),
        ("tcp", None, TCP),
        ("tcp-db", None, TCP),
        ("mongo", None, TCP),
        ("mysql-primary", None, TCP),
        ("redis", None, TCP),
        ("https", None, TCP),
        ("tls-passthrough", None, TCP),
        ("TCP-Upper", None, TCP),
        ("http", "tcp", TCP),
        ("web", "TCP", TCP),
        ("web", "https", TCP),
        ("tcp-x", "http", HTTP),
        ("tcp-x", "grpc", HTTP),
    ],
)
def test_the_protocol_comes_from_the_port_name_or_app_protocol(name, app_protocol, expected):
    extra = {"appProtocol": app_protocol} if app_protocol else {}
    svc = service("db", "10.96.0.40", ports=[port(5432, name, 5432, **extra)])
    assert compile_(svc).outbound("10.96.0.40", 5432).protocol == expected


def test_udp_ports_are_not_proxied():
    dns = service(
        "dns",
        "10.96.0.53",
        ports=[port(53, "dns", 53, protocol="UDP"), port(53, "dns-tcp", 53)],
    )
    table = compile_(dns)
    assert table.outbound("10.96.0.53", 53).protocol == HTTP  # the TCP one (named dns-tcp)
    assert [p for (ip, p), sp in table.by_address.items() if sp.service == "dns"] == [53]


# -- without a VirtualService ---------------------------------------------------------


def test_without_a_virtual_service_one_default_route_to_every_ready_endpoint():
    sp = reviews(compile_())
    assert len(sp.routes) == 1
    route = sp.routes[0]
    assert (route.name, route.virtual_service, route.matches) == ("default", None, ())
    assert (route.timeout, route.fault, route.retries) == (None, None, DEFAULT_RETRY)
    [d] = route.destinations
    assert (d.namespace, d.service, d.port, d.subset, d.weight, d.lb) == (
        "default",
        "reviews",
        9080,
        None,
        100,
        ROUND_ROBIN,
    )
    # numeric IP order (10.244.1.9 before 10.244.1.11), not string order
    assert ips(d) == ["10.244.1.9", "10.244.1.11", "10.244.2.13"]
    v2 = d.endpoints[0]
    assert (v2.port, v2.pod, v2.node, dict(v2.labels)) == (
        9080,
        "default/reviews-v2-1",
        "n3",
        {"app": "reviews", "version": "v2"},
    )
    assert sp.route("DELETE", "/anything?x=1", {}) is route


def test_the_default_route_of_a_tcp_port_has_no_retries():
    svc = service("db", "10.96.0.40", ports=[port(5432, "tcp-db", 5432)])
    assert compile_(svc).outbound("10.96.0.40", 5432).routes[0].retries is None


@pytest.mark.parametrize(
    "simple, expected",
    [
        ("ROUND_ROBIN", ROUND_ROBIN),
        ("RANDOM", RANDOM),
        ("LEAST_REQUEST", LEAST_REQUEST),
        ("LEAST_CONN", LEAST_REQUEST),
        ("MAGLEV", ROUND_ROBIN),
        (["RANDOM"], ROUND_ROBIN),
    ],
)
def test_the_load_balancer_comes_from_the_destination_rule(simple, expected):
    table = compile_(dr("reviews", "reviews", lb=simple))
    assert reviews(table).routes[0].destinations[0].lb == expected


def test_a_subset_keeps_its_own_load_balancer_and_the_oldest_rule_sets_the_host_s():
    rule = dr(
        "reviews",
        "reviews",
        subsets=[
            {
                "name": "v1",
                "labels": {"version": "v1"},
                "trafficPolicy": {"loadBalancer": {"simple": "LEAST_REQUEST"}},
            },
            "v2",
        ],
        lb="RANDOM",
    )
    rule["metadata"]["creationTimestamp"] = "2024-01-01T00:00:00Z"
    newer = dr("reviews-newer", "reviews", subsets=["v3"], lb="ROUND_ROBIN")
    newer["metadata"]["creationTimestamp"] = "2024-02-01T00:00:00Z"
    split = vs(
        "reviews",
        ["reviews"],
        http(dest("reviews", "v1", 40), dest("reviews", "v2", 40), dest("reviews", "v3", 20)),
    )
    [route] = reviews(compile_(newer, rule, split)).routes
    assert [(d.subset, d.lb) for d in route.destinations] == [
        ("v1", LEAST_REQUEST),
        ("v2", RANDOM),
        ("v3", RANDOM),  # defined by the newer rule, the host's policy is the oldest's
    ]
    assert [ips(d) for d in route.destinations] == [
        ["10.244.1.11"],
        ["10.244.1.9"],
        ["10.244.2.13"],
    ]


# -- with a VirtualService ------------------------------------------------------------


@pytest.mark.parametrize(
    "host, vs_namespace, zone, applies",
    [
        ("reviews", "default", "cluster.local", True),
        ("reviews.default", "default", "cluster.local", True),
        ("reviews.default.svc", "default", "cluster.local", True),
        ("reviews.default.svc.cluster.local", "default", "cluster.local", True),
        ("reviews.default", "other", "cluster.local", True),
        ("reviews.default.svc.cluster.local", "other", "cluster.local", True),
        ("reviews", "other", "cluster.local", False),  # other/reviews: no such Service
        ("reviews.default.svc.example.org", "default", "cluster.local", False),
        ("reviews.default.svc.example.org", "default", "example.org", True),
        ("reviews.default.svc.cluster.local", "default", "example.org", False),
        ("*.default.svc.cluster.local", "default", "cluster.local", False),
        ("reviews.default.cluster", "default", "cluster.local", False),
    ],
)
def test_a_host_resolves_in_the_virtual_service_s_namespace(host, vs_namespace, zone, applies):
    routing = vs(
        "r", [host], http(dest("reviews.default.svc.cluster.local"), name="mine"), ns=vs_namespace
    )
    table = compile_(routing, zone=zone)
    assert named(table) == ("mine" if applies else "default")


def test_the_demo_routes_jason_to_v3_and_splits_the_rest():
    sp = reviews(compile_(DEMO_VS, dr("reviews", "reviews")))
    assert [r.name for r in sp.routes] == ["jason", "split"]
    jason, split = sp.routes
    assert {r.virtual_service for r in sp.routes} == {"default/reviews"}
    assert sp.route("GET", "/reviews/0", {"end-user": "jason"}) is jason
    assert sp.route("GET", "/reviews/0", {"end-user": "alice"}) is split
    assert sp.route("GET", "/reviews/0", {}) is split
    [v3] = jason.destinations
    assert (v3.subset, v3.weight, ips(v3)) == ("v3", 100, ["10.244.2.13"])  # the ready one
    assert [(d.subset, d.weight, ips(d)) for d in split.destinations] == [
        ("v1", 90, ["10.244.1.11"]),
        ("v2", 10, ["10.244.1.9"]),
    ]
    assert jason.retries == DEFAULT_RETRY and jason.timeout is None


MATCHING = vs(
    "reviews",
    ["reviews"],
    http(name="header-exact", match=[{"headers": {"End-User": {"exact": "jason"}}}]),
    http(name="header-prefix", match=[{"headers": {"x-group": {"prefix": "beta"}}}]),
    http(name="header-regex", match=[{"headers": {"x-user": {"regex": "a.c"}}}]),
    http(name="uri-exact", match=[{"uri": {"exact": "/exact"}}]),
    http(name="uri-prefix", match=[{"uri": {"prefix": "/api/"}}]),
    http(name="uri-regex", match=[{"uri": {"regex": "/items/[0-9]+"}}]),
    http(name="method-exact", match=[{"method": {"exact": "POST"}}]),
    http(name="method-prefix", match=[{"method": {"prefix": "PU"}}]),
    http(name="method-regex", match=[{"method": {"regex": "DEL.*"}}]),
    http(
        name="and-or",
        match=[
            {"uri": {"prefix": "/both"}, "headers": {"x-both": {"exact": "1"}}},
            {"uri": {"exact": "/either"}},
        ],
    ),
)


@pytest.mark.parametrize(
    "method, path, headers, expected",
    [
        ("GET", "/", {"end-user": "jason"}, "header-exact"),
        ("GET", "/", {"end-user": "jason2"}, None),
        ("GET", "/", {"x-group": "beta-testers"}, "header-prefix"),
        ("GET", "/", {"x-group": "alpha"}, None),
        ("GET", "/", {"x-user": "abc"}, "header-regex"),
        ("GET", "/", {"x-user": "xabc"}, None),  # a regex matches the whole value
        ("GET", "/", {"x-user": "abcd"}, None),
        ("GET", "/exact", {}, "uri-exact"),
        ("GET", "/exact?q=1", {}, "uri-exact"),  # the query is not part of the path
        ("GET", "/exact/", {}, None),
        ("GET", "/api/v1/x", {}, "uri-prefix"),
        ("GET", "/api", {}, None),
        ("GET", "/items/42", {}, "uri-regex"),
        ("GET", "/items/42/x", {}, None),
        ("POST", "/", {}, "method-exact"),
        ("PUT", "/", {}, "method-prefix"),
        ("PATCH", "/", {}, None),
        ("DELETE", "/", {}, "method-regex"),
        ("GET", "/both/x", {"x-both": "1"}, "and-or"),
        ("GET", "/both/x", {}, None),  # every condition of one entry
        ("GET", "/either", {}, "and-or"),  # any entry
        ("GET", "/reviews/0", {}, None),  # no route matches: no catch-all (Envoy's 404 NR)
    ],
)
def test_requests_match_the_first_route_whose_conditions_all_hold(method, path, headers, expected):
    assert named(compile_(MATCHING), method, path, headers) == expected


def test_an_unnamed_route_is_named_after_its_virtual_service_and_index():
    table = compile_(
        vs("reviews", ["reviews"], http(name="first", match=[{"uri": {"exact": "/a"}}]), http())
    )
    assert [r.name for r in reviews(table).routes] == ["first", "reviews-1"]


def test_the_destination_port_picks_the_port_of_a_multi_port_service():
    api = pod("api-1", "10.244.1.50", {"app": "api"}, ports=(("http", 8080), ("admin", 8081)))
    svc = service("api", "10.96.0.50", ports=[port(80, "http", "http"), port(81, "admin", "admin")])
    ep = endpoints("api", [api], ports=[("http", 8080), ("admin", 8081)])
    one = service("one", "10.96.0.51", {"app": "api"}, ports=[port(9000, "http", "http")])
    one_ep = endpoints("one", [api], ports=[("http", 8080)])
    routing = vs(
        "api",
        ["api"],
        http(dest("api", number=81), name="admin", match=[{"uri": {"prefix": "/admin"}}]),
        http(dest("one"), name="elsewhere", match=[{"uri": {"prefix": "/one"}}]),
        http(dest("api"), name="same-port"),
    )
    table = compile_(api, svc, ep, one, one_ep, routing)
    for service_port, same in ((80, 8080), (81, 8081)):
        routes = {
            r.name: r.destinations[0] for r in table.outbound("10.96.0.50", service_port).routes
        }
        assert (routes["admin"].port, routes["admin"].endpoints[0].port) == (81, 8081)
        assert (routes["elsewhere"].service, routes["elsewhere"].port) == ("one", 9000)
        assert (routes["same-port"].port, routes["same-port"].endpoints[0].port) == (
            service_port,
            same,
        )


def only_route(**extra) -> Route:
    [route] = reviews(compile_(vs("reviews", ["reviews"], http(**extra)))).routes
    return route


@pytest.mark.parametrize(
    "given, seconds",
    [
        ("1.5s", 1.5),
        ("250ms", 0.25),
        ("1m30s", 90.0),
        ("0s", None),  # Istio's "no timeout"
        ("soon", None),
        (5, None),
    ],
)
def test_a_timeout_is_lowered_to_seconds(given, seconds):
    assert only_route(timeout=given).timeout == seconds


def retry_on(*words: str) -> frozenset[str]:
    return frozenset(words)


@pytest.mark.parametrize(
    "given, expected",
    [
        (None, DEFAULT_RETRY),  # not given: Istio's default policy
        ({"attempts": 2}, Retry(2, None, ISTIO_RETRY_ON)),
        (
            {"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx, connect-failure"},
            Retry(3, 2.0, retry_on("5xx", "connect-failure")),
        ),
        (
            {"attempts": 1, "retryOn": "503,reset"},  # a status code brings its condition
            Retry(1, None, retry_on("503", "reset", "retriable-status-codes")),
        ),
        ({"attempts": 0}, None),  # retries turned off
        ({"perTryTimeout": "1s"}, None),  # attempts default to 0
    ],
)
def test_retries_are_lowered_as_istio_does(given, expected):
    assert only_route(retries=given).retries == expected
    if given is None:
        assert only_route().retries == expected


def delay(fixed: Any, **pct) -> dict:
    return {"delay": {"fixedDelay": fixed, **pct}}


def abort(status: Any, **pct) -> dict:
    return {"abort": {"httpStatus": status, **pct}}


def pct(value: Any) -> dict:
    return {"percentage": {"value": value}}


@pytest.mark.parametrize(
    "given, expected",
    [
        (None, None),
        (delay("7s", **pct(50)), Fault(delay=7.0, delay_fraction=0.5)),
        (abort(503, **pct(12.5)), Fault(abort_status=503, abort_fraction=0.125)),
        (abort(500), Fault(abort_status=500, abort_fraction=1.0)),  # as Istio documents it
        (abort(500, percentage=None), Fault(abort_status=500, abort_fraction=1.0)),
        (abort(500, percent=30), Fault(abort_status=500, abort_fraction=0.3)),  # v1alpha3
        (abort(500, **pct(250)), Fault(abort_status=500, abort_fraction=1.0)),
        (abort(500, **pct(True)), Fault(abort_status=500, abort_fraction=0.0)),
        ({**delay("100ms", **pct(10)), **abort(429, **pct(1))}, Fault(0.1, 0.1, 429, 0.01)),
        (abort(700), None),
        (abort("x"), None),
        (delay("later"), None),
    ],
)
def test_faults_are_lowered_to_seconds_and_fractions(given, expected):
    assert only_route(fault=given).fault == expected


@pytest.mark.parametrize(
    "stamps, winner",
    [
        ({"a": "2024-06-01T00:00:00Z", "b": "2024-01-01T00:00:00Z"}, "b"),
        ({"a": "2024-01-01T00:00:00Z", "b": "2024-06-01T00:00:00Z"}, "a"),
        ({"a": "2024-01-01T00:00:00Z", "b": "2024-01-01T00:00:00Z"}, "a"),  # then by name
        ({"a": None, "b": "2024-06-01T00:00:00Z"}, "b"),  # no timestamp: last
        ({"a": 12345, "b": "2024-06-01T00:00:00Z"}, "b"),
    ],
)
def test_of_two_virtual_services_for_a_host_the_oldest_wins(stamps, winner):
    objs = [
        vs(name, ["reviews"], http(name=f"from-{name}"), created=stamp)
        for name, stamp in stamps.items()
    ]
    for order in (objs, objs[::-1]):
        assert named(compile_(*order)) == f"from-{winner}"


def test_a_virtual_service_without_http_routes_leaves_the_default_route():
    assert named(compile_(vs("reviews", ["reviews"]))) == "default"


def test_a_virtual_service_does_not_route_a_tcp_port():
    svc = service("db", "10.96.0.40", ports=[port(5432, "tcp-db", 5432)])
    routing = vs("db", ["db"], http(dest("db"), name="http-only", match=[{"uri": {"prefix": "/"}}]))
    [route] = compile_(svc, routing).outbound("10.96.0.40", 5432).routes
    assert route.name == "default"


@pytest.mark.parametrize(
    "gateways, applies",
    [(None, True), ([], True), (["mesh"], True), (["ingress"], False), (["ingress", "mesh"], True)],
)
def test_a_virtual_service_applies_to_sidecars_when_its_gateways_include_the_mesh(
    gateways, applies
):
    extra = {} if gateways is None else {"gateways": gateways}
    table = compile_(vs("reviews", ["reviews"], http(name="mine"), **extra))
    assert named(table) == ("mine" if applies else "default")


def test_subset_selection_is_by_pod_labels_and_an_unknown_subset_has_no_endpoints():
    rule = dr(
        "reviews",
        "reviews",
        subsets=[
            "v1",
            {"name": "odd", "labels": {"version": 2}},
            {"name": "all", "labels": {"app": "reviews"}},
        ],
    )
    routing = vs(
        "reviews",
        ["reviews"],
        http(
            dest("reviews", "v1", 25),
            dest("reviews", "ghost", 25),
            dest("reviews", "odd", 25),
            dest("reviews", "all", 25),
        ),
    )
    [route] = reviews(compile_(rule, routing)).routes
    assert {d.subset: ips(d) for d in route.destinations} == {
        "v1": ["10.244.1.11"],
        "ghost": [],  # no DestinationRule defines it
        "odd": [],  # a label that is not a string selects nothing (not everything)
        "all": ["10.244.1.9", "10.244.1.11", "10.244.2.13"],
    }


# -- me and the workloads ----------------------------------------------------------------


def test_me_is_the_workload_of_my_pod():
    table = compile_()
    assert table.me == Workload(
        namespace="default",
        pod="productpage-1",
        ip="10.244.1.10",
        node="n1",
        rack="rack1",
        app="productpage",
        version="v1",
        services=("productpage",),
        labels={"app": "productpage", "version": "v1"},
    )


def test_every_pod_ip_has_its_workload_with_the_rack_of_its_node():
    table = compile_()
    assert set(table.workloads) == {
        "10.244.1.10",
        "10.244.1.11",
        "10.244.1.9",
        "10.244.2.13",
        "10.244.2.14",  # not ready yet, still a workload
        "10.244.2.20",
        "10.244.3.5",
    }
    v2 = table.workload("10.244.1.9")
    assert (v2.pod, v2.node, v2.rack, v2.app, v2.version, v2.services) == (
        "reviews-v2-1",
        "n3",
        "rack2",  # from the node's annotation
        "reviews",
        "v2",
        ("reviews",),
    )
    assert table.workload("10.244.2.14").rack == "rack2"  # the zone label wins
    assert table.workload("10.244.3.5").namespace == "kube-system"
    assert table.workload("10.244.3.5").services == ("zipkin",)
    assert table.workload("10.9.9.9") is None


@pytest.mark.parametrize(
    "labels, owner, app, version",
    [
        ({"app": "shop", "version": "v7"}, ("Deployment", "other"), "shop", "v7"),
        ({}, ("Deployment", "shop"), "shop", ""),
        ({}, ("ReplicaSet", "shop-5d8f9c"), "shop", ""),
        ({}, ("StatefulSet", "db"), "db", ""),
        ({}, None, "lonely-1", ""),
    ],
)
def test_a_workload_s_app_is_its_label_else_its_owner_else_its_name(labels, owner, app, version):
    p = pod("lonely-1", "10.244.1.60", labels, owner=owner)
    w = compile_(p, me="lonely-1").me
    assert (w.app, w.version, w.ip) == (app, version, "10.244.1.60")


def test_a_pod_selected_by_several_services_names_them_all():
    extra = service("reviews-canary", "10.96.0.61", {"app": "reviews", "version": "v2"})
    other_ns = service("reviews", "10.96.1.11", {"app": "reviews"}, ns="other")
    table = compile_(extra, other_ns, me="reviews-v2-1")
    assert table.me.services == ("reviews", "reviews-canary")
    assert table.workload("10.244.1.11").services == ("reviews",)


def test_an_unknown_pod_is_a_bare_workload():
    table = compile_(me="gone-1", ns="elsewhere")
    assert table.me == Workload("elsewhere", "gone-1", "")
    assert table.inbound == {}


def test_a_live_pod_wins_an_ip_that_a_finished_pod_had():
    done = pod("job-1", "10.244.1.11", {"app": "job"}, phase="Succeeded")
    table = compile_(done)
    assert table.workload("10.244.1.11").pod == "reviews-v1-1"


# -- inbound ----------------------------------------------------------------------------


def test_inbound_ports_carry_the_rate_limits_of_the_service():
    bucket = rlp("ratings", tokenBucket={"maxTokens": 10, "tokensPerFill": 5, "fillInterval": "2s"})
    elsewhere = rlp("reviews-limit", target="reviews", requestsPerSecond=3)
    table = compile_(bucket, elsewhere, me="ratings-1")
    assert table.inbound == {
        9080: InboundPort(
            9080, HTTP, "default/ratings", (RateLimit("default/ratings", 10, 5, 2.0),), ()
        )
    }


def test_inbound_ports_name_the_routes_of_the_service_s_virtual_service():
    table = compile_(DEMO_VS, dr("reviews", "reviews"), me="reviews-v1-1")
    [(number, inbound)] = table.inbound.items()
    assert (number, inbound.service, inbound.rate_limits) == (9080, "default/reviews", ())
    assert [r.name for r in inbound.routes] == ["jason", "split"]
    assert inbound.routes == reviews(table).routes


@pytest.mark.parametrize(
    "given, expected",
    [
        (
            {"tokenBucket": {"maxTokens": 10, "tokensPerFill": 5, "fillInterval": "2s"}},
            RateLimit("default/rl", 10, 5, 2.0),
        ),
        ({"tokenBucket": {"maxTokens": 7}}, RateLimit("default/rl", 7, 7, 1.0)),
        (
            {"tokenBucket": {"maxTokens": 7, "tokensPerFill": None, "fillInterval": "500ms"}},
            RateLimit("default/rl", 7, 7, 0.5),
        ),
        ({"requestsPerSecond": 4}, RateLimit("default/rl", 4, 4, 1.0)),
        ({"requestsPerSecond": 4, "tokenBucket": None}, RateLimit("default/rl", 4, 4, 1.0)),
        (
            {"requestsPerSecond": 4, "route": "split", "source": {"service": "productpage"}},
            RateLimit("default/rl", 4, 4, 1.0, "split", "default/productpage"),
        ),
        (
            {"requestsPerSecond": 4, "source": {"service": "client", "namespace": "tools"}},
            RateLimit("default/rl", 4, 4, 1.0, None, "tools/client"),
        ),
        ({"requestsPerSecond": 4, "source": None}, RateLimit("default/rl", 4, 4, 1.0)),
        ({"requestsPerSecond": 0}, None),
        ({"tokenBucket": {"maxTokens": 0}}, None),
        ({"tokenBucket": {"maxTokens": 5, "tokensPerFill": 0}}, None),
        ({"tokenBucket": {"maxTokens": 5, "fillInterval": "soon"}}, None),
        ({"tokenBucket": {"maxTokens": "many"}}, None),
        ({"requestsPerSecond": 4, "source": {"namespace": "tools"}}, None),
        ({}, None),
    ],
)
def test_rate_limit_policies_are_lowered_to_token_buckets(given, expected):
    table = compile_(rlp("rl", **given), me="ratings-1")
    assert table.inbound[9080].rate_limits == (() if expected is None else (expected,))


@pytest.mark.parametrize(
    "target_ref",
    [
        {"kind": "Deployment", "name": "ratings"},
        {"kind": "Service"},
        {"kind": "Service", "name": "ratings", "namespace": "other"},
        "ratings",
        None,
    ],
)
def test_a_rate_limit_policy_not_naming_my_service_does_not_apply(target_ref):
    policy = rlp("rl", requestsPerSecond=5)
    policy["spec"]["targetRef"] = target_ref
    assert compile_(policy, me="ratings-1").inbound[9080].rate_limits == ()


def test_rate_limits_are_in_policy_name_order():
    table = compile_(rlp("b", requestsPerSecond=2), rlp("a", requestsPerSecond=1), me="ratings-1")
    assert [r.name for r in table.inbound[9080].rate_limits] == ["default/a", "default/b"]


@pytest.mark.parametrize(
    "target, container_ports, expected",
    [
        (9090, (("http", 9080),), 9090),  # a number is the port
        ("9090", (("http", 9080),), 9090),
        (None, (("http", 9080),), 80),  # none given: the Service port
        ("web", (("web", 8080),), 8080),  # a name: the container port of that name
    ],
)
def test_the_inbound_port_is_the_resolved_target_port(target, container_ports, expected):
    app = pod("app-1", "10.244.1.70", {"app": "app"}, ports=container_ports)
    svc = service("app", "10.96.0.70", ports=[port(80, "http", target)])
    assert list(compile_(app, svc, me="app-1").inbound) == [expected]


def test_a_named_target_port_the_pod_does_not_list_is_found_in_its_endpoints():
    app = pod("app-1", "10.244.1.70", {"app": "app"}, ports=())
    svc = service("app", "10.96.0.70", ports=[port(80, "http", "web")])
    starting = endpoints("app", not_ready=[app], ports=[("http", 8080)])
    assert list(compile_(app, svc, starting, me="app-1").inbound) == [8080]
    assert compile_(app, svc, me="app-1").inbound == {}


def test_two_services_on_one_port_add_up_their_limits():
    canary = service("ratings-canary", "10.96.0.62", {"app": "ratings"})
    table = compile_(
        canary,
        rlp("a", requestsPerSecond=1),
        rlp("b", target="ratings-canary", requestsPerSecond=2),
        me="ratings-1",
    )
    inbound = table.inbound[9080]
    assert inbound.service == "default/ratings"
    assert [r.name for r in inbound.rate_limits] == ["default/a", "default/b"]


# -- collector and sampling ---------------------------------------------------------


def test_the_collector_is_zipkin_s_endpoints_and_sampling_is_copied():
    table = compile_(sampling=0.25, revision=7)
    assert (table.collector, table.sampling, table.revision) == ((("10.244.3.5", 9411),), 0.25, 7)
    assert compile_(collector_service=("kube-system", "nowhere")).collector == ()


@pytest.mark.parametrize(
    "given, expected", [(1, 1.0), (0, 0.0), (5, 1.0), (-1, 0.0), ("x", 1.0), (None, 1.0)]
)
def test_sampling_is_a_fraction(given, expected):
    assert compile_(sampling=given).sampling == expected


# -- tolerance ----------------------------------------------------------------------


def obj(name: str = "broken", **fields) -> dict:
    """An object of no particular shape: a name in `default`, then whatever is given."""
    return {"metadata": {"name": name, "namespace": "default"}, **fields}


def spec(name: str = "broken", **fields) -> dict:
    return obj(name, spec=fields)


def to_ratings(**fields) -> dict:
    return {"route": [dest("ratings")], **fields}


# Each case adds raw entries to the lists compile_table takes (by parameter name).
# fmt: off
BROKEN = [
    pytest.param({n: [None, 3, "x", [], {}] for n in LISTS.values()}, id="not objects"),
    pytest.param({n: [{"metadata": None, "spec": None, "status": None}] for n in LISTS.values()},
                 id="null fields"),
    pytest.param({"services": [{"metadata": {}, "spec": {"clusterIP": "10.96.0.99"}}]},
                 id="a service without a name"),
    pytest.param({"services": [spec(clusterIP="10.96.0.99", ports={"port": 80})]},
                 id="ports not a list"),
    pytest.param({"services": [spec(clusterIP="10.96.0.99", ports=[
        {"port": "abc"}, {"port": "²"}, {"port": True}, {"port": None}, 7,
        {"port": 80, "protocol": 6}, {"port": 81, "appProtocol": 5, "name": ["x"]}])]},
                 id="ports that are not numbers"),
    pytest.param({"services": [service("ghost", "10.96.0.99", {"app": 3})]},
                 id="a selector with a number"),
    pytest.param({"endpoints": [
        obj("reviews", subsets="x"),
        obj("productpage", subsets=[
            {"addresses": [{"nodeName": "n1"}, "x", None, {"ip": 5}],
             "ports": [{"name": "http", "port": "x"}]},
            {"addresses": [{"ip": "10.244.1.10", "targetRef": "pod"}], "ports": "http"},
            None])]},
                 id="endpoints of the wrong shapes"),
    pytest.param({"pods": [
        {"metadata": [], "status": {"podIP": "10.244.9.1"}},
        {"metadata": {"name": "p", "labels": ["a"], "ownerReferences": "x"},
         "spec": "x", "status": "x"},
        {"metadata": {"name": "q", "ownerReferences": [None, {"kind": 3}]},
         "status": {"podIP": 5}}]},
                 id="pods of the wrong shapes"),
    pytest.param({"virtual_services": [vs("a", "reviews", http(name="x"))]},
                 id="hosts a string"),
    pytest.param({"virtual_services": [spec(hosts=["reviews"], http={"route": []})]},
                 id="http not a list"),
    pytest.param({"virtual_services": [vs("a", ["ratings"],
        None, 3, {"route": "x"},
        {"route": [None, {"destination": "x"}, {"destination": {"host": 5}}]},
        to_ratings(match={"uri": {"exact": "/"}}),
        to_ratings(match=["jason", None]),
        to_ratings(match=[{"headers": [1]}, {"uri": "x"}, {"method": {"exact": 5}}]),
        to_ratings(match=[{"headers": {"x": {"regex": "("}}}]),
        to_ratings(match=[{"uri": {"regex": "[a-"}}]))]},
                 id="http entries of the wrong shapes"),
    pytest.param({"virtual_services": [
        vs("a", ["ghost", "ghost.nowhere.svc.cluster.local", "*", 5, None], http(dest("ghost")))]},
                 id="hosts naming no service"),
    pytest.param({"virtual_services": [
        vs("a", ["reviews"], http(dest("ghost"), dest("nowhere.else")))]},
                 id="destinations naming no service"),
    pytest.param({"virtual_services": [
        vs("a", ["reviews"], http(retries="x", fault=[], timeout=5, name=7),
           created=5, gateways="mesh")]},
                 id="fields of the wrong types"),
    pytest.param({"destination_rules": [
        spec("a", host=5, subsets="x"),
        spec("b", host="reviews",
             subsets=[None, {"name": 3}, {"name": "v1", "labels": "v1", "trafficPolicy": "x"}],
             trafficPolicy={"loadBalancer": {"simple": ["RANDOM"]}}),
        spec("c", host="reviews", trafficPolicy={"loadBalancer": "RANDOM"})]},
                 id="destination rules of the wrong shapes"),
    pytest.param({"rate_limits": [
        spec("a", targetRef="ratings"),
        spec("b", targetRef={"name": "ratings"}, tokenBucket="x"),
        spec("c", targetRef={"name": ["ratings"]}, requestsPerSecond="x"),
        spec("d", targetRef={"name": "ratings"}, tokenBucket={"maxTokens": 1, "fillInterval": 5})]},
                 id="rate limit policies of the wrong shapes"),
    pytest.param({"nodes": [
        {"metadata": {"name": "n1", "labels": "x", "annotations": []}},
        {"metadata": {"name": "n3", "annotations": {"netlab.io/rack": 5}}}]},
                 id="nodes of the wrong shapes"),
]
# fmt: on


@pytest.mark.parametrize("more", BROKEN)
def test_malformed_objects_are_skipped_never_raised(more):
    table = compile_(more=more)
    assert table.me.pod == "productpage-1" and table.me.ip == "10.244.1.10"
    ratings = table.outbound(IPS["ratings"], 9080)
    assert ratings is not None and ratings.protocol == HTTP
    for route in ratings.routes:  # whatever was left of a broken VirtualService for ratings
        for d in route.destinations:
            assert ips(d) == ["10.244.2.20"]
    assert table.outbound("10.244.2.20", 9080).service == "ratings"
    assert table.collector == (("10.244.3.5", 9411),)
    compile_(more=more, me="ratings-1")  # and from the other side


def test_a_route_with_a_match_it_cannot_use_is_dropped_not_widened():
    routing = vs(
        "reviews",
        ["reviews"],
        http(name="bad-regex", match=[{"headers": {"end-user": {"regex": "(jason"}}}]),
        http(name="not-a-list", match={"headers": {"end-user": {"exact": "bob"}}}),
        http(name="not-a-mapping", match=["jason"]),
        http(name="presence-only", match=[{"headers": {"end-user": {}}}]),
        http(name="null-fields", match=[{"uri": None, "headers": None, "method": None}]),
        http(name="rest", match=[{"uri": {"prefix": "/"}}]),
    )
    sp = reviews(compile_(routing))
    assert [r.name for r in sp.routes] == ["null-fields", "rest"]
    assert sp.route("GET", "/x", {"end-user": "jason"}).name == "null-fields"


def test_a_destination_naming_no_service_is_left_out_of_its_route():
    routing = vs(
        "reviews",
        ["reviews"],
        http(dest("ghost", weight=50), dest("reviews", "v1", 50), name="half"),
    )
    [route] = reviews(compile_(routing, dr("reviews", "reviews"))).routes
    assert [(d.service, d.subset) for d in route.destinations] == [("reviews", "v1")]


def test_a_virtual_service_for_no_service_changes_nothing():
    table = compile_(vs("ghost", ["ghost", "ghost.nowhere"], http(dest("ghost"), name="x")))
    assert table.by_address == compile_().by_address


def test_the_table_is_read_only():
    table = compile_()
    with pytest.raises(TypeError):
        table.by_address[("1.2.3.4", 1)] = None  # type: ignore[index]
    with pytest.raises(TypeError):
        table.me.labels["app"] = "other"  # type: ignore[index]


def test_a_regex_is_compiled_once_for_full_matches():
    table = compile_(MATCHING)
    [match] = next(r for r in reviews(table).routes if r.name == "uri-regex").matches
    assert (
        isinstance(match.uri.pattern, re.Pattern) and match.uri.pattern.pattern == "/items/[0-9]+"
    )


def test_pod_inputs_change_exactly_when_the_table_can():
    """A status-only change (conditions, container states) leaves both the inputs and
    the compiled table as they were; a label change moves both."""
    ready = copy.deepcopy(PRODUCTPAGE)
    ready["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    ready["status"]["containerStatuses"] = [{"name": "app", "ready": True}]
    relabelled = copy.deepcopy(PRODUCTPAGE)
    relabelled["metadata"]["labels"] = {**relabelled["metadata"]["labels"], "version": "v9"}
    others = [o for o in world() if o is not PRODUCTPAGE]

    def table_of(p: dict) -> RouteTable:
        return dataclasses.replace(compile_(p, base=others), revision=0)

    assert pod_inputs(ready) == pod_inputs(PRODUCTPAGE)
    assert table_of(ready) == table_of(PRODUCTPAGE)
    assert pod_inputs(relabelled) != pod_inputs(PRODUCTPAGE)
    assert table_of(relabelled) != table_of(PRODUCTPAGE)
