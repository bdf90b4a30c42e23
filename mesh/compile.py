"""Lab objects -> one pod's `RouteTable`, the way istiod turns Kubernetes and
Istio objects into one Envoy's config.

Inputs are Kubernetes-shaped dicts as the lab API serves them. netlab
validates the Istio objects before storing them, so this compiles tolerantly:
whatever it cannot use (a field of the wrong type, a host that names no
Service, a regex that does not compile) is skipped with a debug log line,
never raised, so one odd object cannot take a sidecar's routing down.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from mesh.table import (
    DEFAULT_RETRY,
    HTTP,
    LEAST_REQUEST,
    RANDOM,
    ROUND_ROBIN,
    TCP,
    Destination,
    Endpoint,
    Fault,
    HeaderMatch,
    InboundPort,
    Match,
    RateLimit,
    Retry,
    Route,
    RouteTable,
    ServicePort,
    UriMatch,
    Workload,
)

log = logging.getLogger("mesh")

ZONE_LABEL = "topology.kubernetes.io/zone"
RACK_ANNOTATION = "netlab.io/rack"
TCP_PREFIXES = ("tcp", "mongo", "mysql", "redis", "https", "tls")  # not parsed as HTTP
LB = {"ROUND_ROBIN": ROUND_ROBIN, "RANDOM": RANDOM, "LEAST_REQUEST": LEAST_REQUEST}
LB["LEAST_CONN"] = LEAST_REQUEST  # Istio's deprecated alias
COLLECTOR_PORT = 9411
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_EMPTY: Mapping[str, str] = MappingProxyType({})
Key = tuple[str, str]  # (namespace, name)


def parse_duration(text: Any) -> float | None:
    """A protobuf/Istio (and Go) duration in seconds: '1s', '0.5s', '250ms', '1m',
    '1h', '100us', '1m30s'; None if malformed."""
    if not isinstance(text, str):
        return None
    text = text.strip()
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DURATION.match(text, pos)
        if m is None:
            return None
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return total if text else None


def pod_inputs(pod: dict) -> tuple:
    """What of a Pod `compile_table` reads: a Pod whose inputs are unchanged (a
    change in its conditions or container statuses) needs no new table. Kept
    beside the code that reads these fields, which must stay within them."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    containers = spec.get("containers") or []
    return (
        meta.get("labels"),
        meta.get("ownerReferences"),
        spec.get("nodeName"),
        status.get("podIP"),
        status.get("phase") in ("Succeeded", "Failed"),
        [c.get("ports") for c in containers if isinstance(c, dict)],
    )


# -- tolerant getters ----------------------------------------------------------------


def _d(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list:
    return value if isinstance(value, list) else []


def _s(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _i(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def _meta(obj: dict) -> tuple[str, str]:
    meta = _d(obj.get("metadata"))
    return (_s(meta.get("namespace")) or "default", _s(meta.get("name")) or "")


def _labels(obj: dict) -> dict[str, str]:
    labels = _d(_d(obj.get("metadata")).get("labels"))
    return {k: v for k, v in labels.items() if isinstance(k, str) and isinstance(v, str)}


def _string_map(value: Any) -> dict[str, str] | None:
    """A selector (subset labels, a Service's selector): None if any entry is not
    str -> str, since dropping a condition would widen what it selects."""
    raw = _d(value)
    if any(not isinstance(k, str) or not isinstance(v, str) for k, v in raw.items()):
        return None
    return dict(raw)


def _lb(policy: Any) -> str | None:
    simple = _d(_d(policy).get("loadBalancer")).get("simple")
    return LB.get(simple) if isinstance(simple, str) else None


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _ip_key(ep: Endpoint) -> tuple:
    try:
        return (0, int(ipaddress.ip_address(ep.ip)), ep.port)
    except ValueError:
        return (1, ep.ip, ep.port)


def resolve_host(host: Any, namespace: str, zone: str) -> Key | None:
    """'reviews', 'reviews.ns', 'reviews.ns.svc', 'reviews.ns.svc.<zone>' -> (ns, name)."""
    if not isinstance(host, str) or not host or "*" in host:
        return None
    parts = host.split(".")
    if len(parts) == 1:
        return namespace, parts[0]
    if len(parts) == 2 or (len(parts) == 3 and parts[2] == "svc"):
        return parts[1], parts[0]
    if len(parts) > 3 and parts[2] == "svc" and ".".join(parts[3:]) == zone:
        return parts[1], parts[0]
    return None


def _age(obj: dict) -> tuple:
    """Istio's precedence among objects for one host: the oldest, then by name."""
    meta = _d(obj.get("metadata"))
    stamp = meta.get("creationTimestamp")
    return (not isinstance(stamp, str), stamp if isinstance(stamp, str) else "", *_meta(obj))


@dataclass(frozen=True)
class _Port:
    """A Service's TCP port, as compiled."""

    port: int
    name: str | None
    protocol: str  # HTTP or TCP
    target: Any  # int, a container port name, or None (= port)


def _protocol(entry: dict) -> str:
    app = (_s(entry.get("appProtocol")) or "").lower()
    if app in ("http", "http2", "grpc", "h2c"):
        return HTTP
    if app.startswith(TCP_PREFIXES):
        return TCP
    name = (_s(entry.get("name")) or "").lower()
    return TCP if name.startswith(TCP_PREFIXES) else HTTP


def _service_ports(svc: dict) -> list[_Port]:
    ports = []
    for entry in _l(_d(svc.get("spec")).get("ports")):
        entry = _d(entry)
        number = _i(entry.get("port"))
        if number is None or (_s(entry.get("protocol")) or "TCP").upper() != "TCP":
            continue  # UDP and SCTP ports are not proxied
        ports.append(
            _Port(number, _s(entry.get("name")), _protocol(entry), entry.get("targetPort"))
        )
    return ports


def _workload(pod: dict, services: Iterable[tuple[str, dict[str, str]]], racks: dict) -> Workload:
    ns, name = _meta(pod)
    labels = _labels(pod)
    meta = _d(pod.get("metadata"))
    app = labels.get("app")
    if not app:
        for ref in _l(meta.get("ownerReferences")):
            ref = _d(ref)
            owner = _s(ref.get("name"))
            if owner and ref.get("kind") == "ReplicaSet":
                app = owner.rsplit("-", 1)[0]  # the Deployment's name, as Istio guesses it
            elif owner:
                app = owner  # a Deployment (as netlab names it), StatefulSet, DaemonSet, Job
            if app:
                break
    node = _s(_d(pod.get("spec")).get("nodeName")) or ""
    return Workload(
        namespace=ns,
        pod=name,
        ip=_s(_d(pod.get("status")).get("podIP")) or "",
        node=node,
        rack=racks.get(node, ""),
        app=app or name,
        version=labels.get("version", ""),
        services=tuple(sorted(svc for svc, selector in services if _selects(selector, labels))),
        labels=MappingProxyType(labels),
    )


class _Compiler:
    def __init__(self, zone: str) -> None:
        self.zone = zone
        self.services: dict[Key, dict] = {}
        self.ports: dict[Key, list[_Port]] = {}
        self.endpoints: dict[Key, dict] = {}
        self.pods: dict[Key, dict] = {}
        self.pod_by_ip: dict[str, dict] = {}
        self.pod_labels: dict[Key, Mapping[str, str]] = {}
        self.vs: dict[Key, dict] = {}  # host -> the VirtualService that routes it
        self.dr: dict[Key, list[dict]] = {}  # host -> its DestinationRules, oldest first
        self._routes: dict[tuple[Key, int], tuple[tuple[Route, ...], bool]] = {}
        self._dests: dict[tuple, tuple[Endpoint, ...]] = {}

    # -- indexes -----------------------------------------------------------------

    def index(self, services, endpoints, pods, virtual_services, destination_rules) -> None:
        for svc in services:
            if isinstance(svc, dict) and _meta(svc)[1]:
                self.services[_meta(svc)] = svc
                self.ports[_meta(svc)] = _service_ports(svc)
        for ep in endpoints:
            if isinstance(ep, dict) and _meta(ep)[1]:
                self.endpoints[_meta(ep)] = ep
        live = sorted(
            (p for p in pods if isinstance(p, dict) and _meta(p)[1]),
            key=lambda p: _d(p.get("status")).get("phase") not in ("Succeeded", "Failed"),
        )  # finished pods first: a live pod that reuses an IP wins it
        for pod in live:
            self.pods[_meta(pod)] = pod
            self.pod_labels[_meta(pod)] = MappingProxyType(_labels(pod))
            ip = _s(_d(pod.get("status")).get("podIP"))
            if ip:
                self.pod_by_ip[ip] = pod
        for vs in sorted((v for v in virtual_services if isinstance(v, dict)), key=_age):
            spec = _d(vs.get("spec"))
            gateways = _l(spec.get("gateways"))
            if gateways and "mesh" not in gateways:  # as Istio: none given means the mesh
                log.debug("VirtualService %s/%s: gateways %s, not the mesh", *_meta(vs), gateways)
                continue
            for host in _l(spec.get("hosts")):
                key = resolve_host(host, _meta(vs)[0], self.zone)
                if key is not None:
                    self.vs.setdefault(key, vs)  # the oldest wins
        for dr in sorted((d for d in destination_rules if isinstance(d, dict)), key=_age):
            key = resolve_host(_d(dr.get("spec")).get("host"), _meta(dr)[0], self.zone)
            if key is not None:
                self.dr.setdefault(key, []).append(dr)

    # -- endpoints -------------------------------------------------------------------

    def _subset(self, host: Key, subset: str | None) -> tuple[dict[str, str] | None, str]:
        """(labels to match, or None if the subset is not defined; lb policy)."""
        lb, labels = ROUND_ROBIN, {} if subset is None else None
        lb_set = False
        found = subset is None
        for dr in self.dr.get(host, []):
            spec = _d(dr.get("spec"))
            simple = _lb(spec.get("trafficPolicy"))
            if not lb_set and simple is not None:
                lb, lb_set = simple, True
            if found:
                continue
            for entry in _l(spec.get("subsets")):
                entry = _d(entry)
                if entry.get("name") == subset:
                    found = True
                    labels = _string_map(entry.get("labels"))  # None: unusable, selects nothing
                    own = _lb(entry.get("trafficPolicy"))
                    if own is not None:
                        lb, lb_set = own, True
                    break
        return labels, lb

    def ready(self, key: Key, port: _Port, not_ready: bool = False):
        """(ip, target port, address dict) of the Service port's ready endpoints
        (and the not-ready ones too, if asked)."""
        kinds = ("addresses", "notReadyAddresses") if not_ready else ("addresses",)
        out = []
        for subset in _l(self.endpoints.get(key, {}).get("subsets")):
            subset = _d(subset)
            targets = [
                _i(p.get("port"))
                for p in map(_d, _l(subset.get("ports")))
                if (_s(p.get("name")) == port.name)
                and (_s(p.get("protocol")) or "TCP").upper() == "TCP"
            ]
            addresses = [a for kind in kinds for a in _l(subset.get(kind))]
            for address in map(_d, addresses):
                ip = _s(address.get("ip"))
                if ip is None:
                    continue
                for target in targets:
                    if target is not None:
                        out.append((ip, target, address))
        return out

    def _pod_of(self, ip: str, address: dict) -> tuple[Key | None, dict | None]:
        ref = _d(address.get("targetRef"))
        if _s(ref.get("name")):
            key = (_s(ref.get("namespace")) or "default", ref["name"])
            return key, self.pods.get(key)
        pod = self.pod_by_ip.get(ip)
        return (_meta(pod), pod) if pod is not None else (None, None)

    def destination_endpoints(
        self, key: Key, port: _Port, subset_labels: Mapping[str, str]
    ) -> tuple[Endpoint, ...]:
        cache_key = (key, port.port, tuple(sorted(subset_labels.items())))
        cached = self._dests.get(cache_key)
        if cached is not None:
            return cached
        seen: dict[tuple[str, int], Endpoint] = {}
        for ip, target, address in self.ready(key, port):
            pod_key, pod = self._pod_of(ip, address)
            labels = self.pod_labels.get(pod_key, _EMPTY) if pod_key else _EMPTY
            if any(labels.get(k) != v for k, v in subset_labels.items()):
                continue
            node = _s(address.get("nodeName")) or (
                _s(_d(pod.get("spec")).get("nodeName")) if pod else None
            )
            pod_name = f"{pod_key[0]}/{pod_key[1]}" if pod_key else ""
            seen.setdefault((ip, target), Endpoint(ip, target, pod_name, node or "", labels))
        result = tuple(sorted(seen.values(), key=_ip_key))
        self._dests[cache_key] = result
        return result

    def destination(self, key: Key, port: int, subset: str | None, weight: int) -> Destination:
        found = next((p for p in self.ports.get(key, []) if p.port == port), None)
        labels, lb = self._subset(key, subset)
        endpoints: tuple[Endpoint, ...] = ()
        if found is not None and labels is not None:
            endpoints = self.destination_endpoints(key, found, labels)
        elif labels is None:
            log.debug("no DestinationRule defines subset %r of %s/%s", subset, *key)
        return Destination(key[0], key[1], port, endpoints, weight, subset, lb)

    # -- routes ------------------------------------------------------------------------

    def routes(self, key: Key, port: _Port) -> tuple[tuple[Route, ...], bool]:
        """(routes of a Service port, whether they come from a VirtualService)."""
        cached = self._routes.get((key, port.port))
        if cached is not None:
            return cached
        vs = self.vs.get(key)
        if vs is not None and not _l(_d(vs.get("spec")).get("http")):
            vs = None  # no http routes at all (a TCP-only VirtualService): the default route
        if vs is None or port.protocol == TCP:  # http routes do not apply to TCP ports
            dest = self.destination(key, port.port, None, 100)
            retries = DEFAULT_RETRY if port.protocol == HTTP else None
            default = Route("default", (dest,), retries=retries)
            result: tuple[tuple[Route, ...], bool] = ((default,), False)
        else:
            ns, name = _meta(vs)
            routes = []
            for index, http in enumerate(_l(_d(vs.get("spec")).get("http"))):
                try:
                    route = self._http_route(ns, name, index, _d(http), port)
                except (TypeError, ValueError, AttributeError, KeyError) as exc:
                    log.debug("VirtualService %s/%s http[%d] skipped: %s", ns, name, index, exc)
                    route = None
                if route is not None:
                    routes.append(route)
            result = (tuple(routes), True)
        self._routes[(key, port.port)] = result
        return result

    def _http_route(self, ns: str, vs_name: str, index: int, http: dict, port: _Port):
        if not isinstance(http.get("route"), list):
            log.debug("VirtualService %s/%s http[%d]: no route", ns, vs_name, index)
            return None
        raw = http.get("match")
        if raw is not None and not isinstance(raw, list):
            log.debug("VirtualService %s/%s http[%d]: match is not a list", ns, vs_name, index)
            return None
        matches = []
        for entry in raw or []:
            match = _match(entry) if isinstance(entry, dict) else None
            if match is None:
                log.debug(
                    "VirtualService %s/%s http[%d]: a match it cannot use", ns, vs_name, index
                )
                return None  # dropping one condition would widen the route
            matches.append(match)
        targets = [_d(r) for r in http["route"]]
        dests = []
        for target in targets:
            dest = _d(target.get("destination"))
            host = resolve_host(dest.get("host"), ns, self.zone)
            if host is None or host not in self.services:
                log.debug(
                    "VirtualService %s/%s: no Service for host %r", ns, vs_name, dest.get("host")
                )
                continue
            number = _i(_d(dest.get("port")).get("number"))
            if number is None:
                ports = self.ports.get(host, [])
                number = ports[0].port if len(ports) == 1 else port.port
            weight = _i(target.get("weight"))
            if weight is None:
                weight = 100 if len(targets) == 1 else 0
            dests.append(self.destination(host, number, _s(dest.get("subset")), weight))
        return Route(
            name=_s(http.get("name")) or f"{vs_name}-{index}",
            destinations=tuple(dests),
            matches=tuple(matches),
            timeout=_timeout(http.get("timeout")),
            retries=_retries(http.get("retries")),
            fault=_fault(_d(http.get("fault"))),
            virtual_service=f"{ns}/{vs_name}",
        )


# -- the pieces of an http route -----------------------------------------------------------


def _string_match(spec: dict) -> tuple[str, str, re.Pattern[str] | None] | None:
    for kind in ("exact", "prefix", "regex"):
        value = spec.get(kind)
        if isinstance(value, str):
            if kind != "regex":
                return kind, value, None
            try:
                return kind, value, re.compile(value)
            except (re.error, RecursionError):
                return None
    return None


def _match(entry: dict) -> Match | None:
    """One match entry; None if any condition is unusable. A field given as null
    is absent (as the validator reads it)."""
    uri = None
    if entry.get("uri") is not None:
        found = _string_match(_d(entry["uri"]))
        if found is None:
            return None
        uri = UriMatch(*found)
    headers = []
    raw = entry.get("headers")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return None
    for name, spec in raw.items():
        found = _string_match(_d(spec)) if isinstance(name, str) else None
        if found is None:
            return None
        headers.append(HeaderMatch(name.lower(), *found))
    method, method_pattern = None, None
    if entry.get("method") is not None:
        found = _string_match(_d(entry["method"]))
        if found is None:
            return None
        kind, value, pattern = found
        if kind == "exact":
            method = value.upper()
        elif kind == "prefix":
            method_pattern = re.compile(re.escape(value) + ".*", re.DOTALL)
        else:
            method_pattern = pattern
    return Match(uri, tuple(headers), method, method_pattern)


def _timeout(value: Any) -> float | None:
    seconds = parse_duration(value)
    return seconds if seconds else None  # "0s" is Istio's "no timeout"


def _fraction(spec: dict) -> float:
    """percentage.value (or v1alpha3's integer `percent`) as 0..1; 1 when not given,
    as Istio documents it (Envoy itself would then never fire the fault)."""
    if spec.get("percentage") is not None:
        value = _d(spec["percentage"]).get("value")
    elif spec.get("percent") is not None:
        value = spec["percent"]
    else:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return min(1.0, max(0.0, value / 100.0))


def _retries(value: Any) -> Retry | None:
    """An http route's retries, as Istio lowers them: none given (or not a mapping)
    -> Istio's default policy; attempts 0 (or missing) -> no retries; retryOn, if
    given, replaces the default conditions, and a status code in it brings
    `retriable-status-codes` along."""
    if not isinstance(value, dict):
        return DEFAULT_RETRY
    attempts = _i(value.get("attempts"))
    if attempts is None or attempts <= 0:
        return None
    on = _s(value.get("retryOn"))
    words = frozenset(w.strip() for w in on.split(",") if w.strip()) if on else frozenset()
    if any(w.isascii() and w.isdigit() for w in words):
        words |= {"retriable-status-codes"}
    per_try = _timeout(value.get("perTryTimeout"))
    if words:
        return Retry(attempts, per_try, words)
    return Retry(attempts, per_try)


def _fault(spec: dict) -> Fault | None:
    delay = _d(spec.get("delay"))
    abort = _d(spec.get("abort"))
    seconds = parse_duration(delay.get("fixedDelay")) if delay else None
    status = _i(abort.get("httpStatus")) if abort else None
    if status is not None and not 200 <= status <= 599:
        status = None
    if seconds is None and status is None:
        return None
    return Fault(
        delay=seconds,
        delay_fraction=_fraction(delay) if seconds is not None else 0.0,
        abort_status=status,
        abort_fraction=_fraction(abort) if status is not None else 0.0,
    )


def _rate_limit(policy: dict) -> tuple[Key, RateLimit] | None:
    """A RateLimitPolicy -> (its target Service, its bucket); None if unusable."""
    ns, name = _meta(policy)
    spec = _d(policy.get("spec"))
    target = _d(spec.get("targetRef"))
    if (target.get("kind") or "Service") != "Service" or not _s(target.get("name")):
        return None
    service = (_s(target.get("namespace")) or ns, target["name"])
    rps = _i(spec.get("requestsPerSecond"))
    if spec.get("tokenBucket") is not None:
        bucket = _d(spec["tokenBucket"])
        max_tokens = _i(bucket.get("maxTokens"))
        per_fill = max_tokens
        if bucket.get("tokensPerFill") is not None:
            per_fill = _i(bucket["tokensPerFill"])
        interval = parse_duration(
            "1s" if bucket.get("fillInterval") is None else bucket["fillInterval"]
        )
    elif rps is not None:
        max_tokens = per_fill = rps
        interval = 1.0
    else:
        return None
    if not max_tokens or max_tokens < 1 or not per_fill or per_fill < 1 or not interval:
        return None
    source = None
    if spec.get("source") is not None:
        src = _d(spec["source"])
        if not _s(src.get("service")):
            return None
        source = f"{_s(src.get('namespace')) or ns}/{src['service']}"
    route = _s(spec.get("route"))
    return service, RateLimit(f"{ns}/{name}", max_tokens, per_fill, interval, route, source)


def _target_port(port: _Port, pod: dict | None) -> int | None:
    target = port.target
    if target is None:
        return port.port
    number = _i(target)
    if number is not None:
        return number
    if not isinstance(target, str) or pod is None:
        return None
    for container in _l(_d(pod.get("spec")).get("containers")):
        for entry in map(_d, _l(_d(container).get("ports"))):
            if entry.get("name") == target and (_s(entry.get("protocol")) or "TCP") == "TCP":
                return _i(entry.get("containerPort"))
    return None


# -- the table ----------------------------------------------------------------------------


def compile_table(
    me_namespace: str,
    me_pod: str,
    services: list[dict],
    endpoints: list[dict],
    pods: list[dict],
    virtual_services: list[dict],
    destination_rules: list[dict],
    rate_limits: list[dict],
    revision: int = 0,
    zone: str = "cluster.local",
    sampling: float = 1.0,
    collector_service: tuple[str, str] = ("kube-system", "zipkin"),
    nodes: list[dict] = (),  # type: ignore[assignment]
) -> RouteTable:
    """The route table of pod `me_namespace/me_pod`, from the lab's objects."""
    c = _Compiler(zone)
    c.index(
        services or [], endpoints or [], pods or [], virtual_services or [], destination_rules or []
    )
    racks = {}
    for node in nodes or []:
        if isinstance(node, dict) and _meta(node)[1]:
            annotations = _d(_d(node.get("metadata")).get("annotations"))
            rack = _labels(node).get(ZONE_LABEL) or annotations.get(RACK_ANNOTATION)
            racks[_meta(node)[1]] = rack if isinstance(rack, str) else ""
    selectors: dict[str, list[tuple[str, dict[str, str]]]] = {}
    for (ns, name), svc in sorted(c.services.items()):
        selector = _string_map(_d(svc.get("spec")).get("selector"))
        if selector:
            selectors.setdefault(ns, []).append((name, selector))

    workloads: dict[str, Workload] = {}
    for pod in c.pod_by_ip.values():
        w = _workload(pod, selectors.get(_meta(pod)[0], []), racks)
        workloads[w.ip] = w
    my_pod = c.pods.get((me_namespace, me_pod))
    me = (
        _workload(my_pod, selectors.get(me_namespace, []), racks)
        if my_pod is not None
        else Workload(me_namespace, me_pod, "")
    )

    by_address: dict[tuple[str, int], ServicePort] = {}
    pod_addresses: dict[tuple[str, int], ServicePort] = {}
    for key in sorted(c.services):
        svc = c.services[key]
        cluster_ip = _s(_d(svc.get("spec")).get("clusterIP"))
        for port in c.ports[key]:
            routes, _ = c.routes(key, port)
            sp = ServicePort(key[0], key[1], port.port, port.protocol, routes)
            if cluster_ip and cluster_ip != "None":
                by_address.setdefault((cluster_ip, port.port), sp)
            for ip, target, _address in c.ready(key, port):
                pod_addresses.setdefault((ip, target), sp)
    for address, sp in pod_addresses.items():
        by_address.setdefault(address, sp)  # a ClusterIP never yields to a pod address

    limits: dict[Key, list[RateLimit]] = {}
    for policy in sorted((p for p in rate_limits or [] if isinstance(p, dict)), key=_meta):
        found = _rate_limit(policy)
        if found is None:
            log.debug("RateLimitPolicy %s/%s skipped", *_meta(policy))
            continue
        limits.setdefault(found[0], []).append(found[1])

    inbound: dict[int, InboundPort] = {}
    for name in me.services:
        key = (me_namespace, name)
        for port in c.ports.get(key, []):
            target = _target_port(port, my_pod)
            if target is None:
                mine_too = c.ready(key, port, not_ready=True)  # not ready while the sidecar starts
                target = next((t for ip, t, _ in mine_too if ip == me.ip), None)
            if target is None:
                continue
            routes, from_vs = c.routes(key, port)
            mine = tuple(limits.get(key, ()))
            old = inbound.get(target)
            if old is None:
                inbound[target] = InboundPort(
                    target, port.protocol, f"{key[0]}/{key[1]}", mine, routes if from_vs else ()
                )
            else:  # a second Service onto the same port: its limits apply too
                extra = tuple(r for r in mine if r not in old.rate_limits)
                inbound[target] = InboundPort(
                    old.port, old.protocol, old.service, old.rate_limits + extra, old.routes
                )

    return RouteTable(
        revision=revision,
        me=me,
        by_address=MappingProxyType(by_address),
        inbound=MappingProxyType(inbound),
        workloads=MappingProxyType(workloads),
        collector=_collector(c, collector_service),
        sampling=_sampling(sampling),
    )


def _sampling(value: Any) -> float:
    """The fraction of new traces sampled, within 0..1 (1 if it is not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return 1.0
    return min(1.0, max(0.0, float(value)))


def _collector(c: _Compiler, service: tuple[str, str]) -> tuple[tuple[str, int], ...]:
    key = (service[0], service[1])
    ports = c.ports.get(key, [])
    port = (
        next((p for p in ports if p.port == COLLECTOR_PORT), None)
        or next((p for p in ports if p.name == "http-query"), None)
        or (ports[0] if ports else None)
    )
    if port is None:
        return ()
    found = {(ip, target) for ip, target, _ in c.ready(key, port)}
    return tuple(sorted(found, key=lambda a: _ip_key(Endpoint(*a))))
