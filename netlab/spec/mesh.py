"""Mesh policy in Istio's shapes: VirtualService, DestinationRule, and netlab's
RateLimitPolicy (Envoy's local rate limit as an object), plus `lab.mesh`.

The readers are rows of `netlab.spec.manifests.KINDS`: they check every field
(unknown fields are errors, with their path) and keep the manifest, with its
apiVersion normalized, as the object the store serves; the sidecars compile
those objects (`mesh.compile`). `check_mesh` runs once every Service is known:
hosts and destinations must name Services, subsets must be defined by a
DestinationRule, weights must sum to 100, a rate limit's route must exist.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mesh.compile import (  # read as the sidecars read them
    parse_duration,
    resolve_host,
)
from netlab.spec.model import (
    INJECT_LABEL,
    MeshSpec,
    PolicySpec,
    ServicePort,
    ServiceSpec,
    frozen_map,
)
from netlab.spec.validate import Checker, did_you_mean, item, join

if TYPE_CHECKING:
    from netlab.spec.manifests import Manifest

ISTIO_GROUP = "networking.istio.io"
ISTIO_VERSIONS = ("v1", "v1beta1", "v1alpha3")
ISTIO_API = f"{ISTIO_GROUP}/v1"  # what the lab stores and serves
RATE_LIMIT_API = "netlab.io/v1alpha1"
MESH_FIELDS = ("enabled", "tracing")
TRACING_FIELDS = ("sampling",)

VS_FIELDS = ("hosts", "gateways", "http", "exportTo")
HTTP_FIELDS = ("name", "match", "route", "timeout", "retries", "fault")
MATCH_FIELDS = ("name", "uri", "headers", "method")
STRING_MATCH = ("exact", "prefix", "regex")
ROUTE_FIELDS = ("destination", "weight", "headers")
DESTINATION_FIELDS = ("host", "subset", "port")
RETRY_FIELDS = ("attempts", "perTryTimeout", "retryOn")
RETRY_ON = (
    "5xx",
    "gateway-error",
    "reset",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "unavailable",
    "cancelled",
)
FAULT_FIELDS = ("delay", "abort")
DELAY_FIELDS = ("fixedDelay", "percentage")
ABORT_FIELDS = ("httpStatus", "percentage")
DR_FIELDS = ("host", "subsets", "trafficPolicy", "exportTo")
SUBSET_FIELDS = ("name", "labels", "trafficPolicy")
POLICY_FIELDS = ("loadBalancer",)
LB_FIELDS = ("simple",)
LB_POLICIES = ("ROUND_ROBIN", "RANDOM", "LEAST_REQUEST", "LEAST_CONN")
RL_FIELDS = ("targetRef", "route", "source", "tokenBucket", "requestsPerSecond")
TARGET_FIELDS = ("group", "kind", "name", "namespace")
SOURCE_FIELDS = ("service", "namespace")
BUCKET_FIELDS = ("maxTokens", "tokensPerFill", "fillInterval")
TOKENS_MAX = 10**9
RETRIES_MAX = 10
_DURATION_FIX = "write a duration like 1s, 250ms or 1.5s"

COLLECTOR_NAMESPACE, COLLECTOR_NAME = "kube-system", "zipkin"  # Istio's addon's names
COLLECTOR_PORT = 9411
COLLECTOR_LABELS = {"app": "zipkin"}


def collector_service() -> ServiceSpec:
    """The lab's trace collector's Service, where sidecars and apps send spans."""
    return ServiceSpec(
        COLLECTOR_NAME,
        COLLECTOR_NAMESPACE,
        (ServicePort(COLLECTOR_PORT, COLLECTOR_PORT, "TCP", "http-query"),),
        selector=frozen_map(COLLECTOR_LABELS),
        labels=frozen_map(COLLECTOR_LABELS),
    )


def _duration(obj: dict, key: str, path: str, checker: Checker, low: float = 0.0) -> float | None:
    if obj.get(key) is None:
        return None
    seconds = parse_duration(obj[key])
    here = join(path, key)
    if seconds is None:
        checker.add(here, f"{obj[key]!r} is not a duration", _DURATION_FIX)
    elif seconds <= low:
        checker.add(here, f"{obj[key]!r} must be longer than {low:g} s", _DURATION_FIX)
        return None
    return seconds


def _regex(value: str, path: str, checker: Checker) -> None:
    try:
        re.compile(value)
    except re.error as exc:
        checker.add(path, f"regex {value!r} does not compile: {exc}", "fix the expression")


def _string_match(value: Any, path: str, checker: Checker) -> None:
    spec = checker.mapping(value, path, STRING_MATCH)
    if spec is None:
        return
    given = [k for k in STRING_MATCH if spec.get(k) is not None]
    if len(given) != 1:
        checker.add(path, "give exactly one of exact, prefix, regex", "e.g. {exact: jason}")
        return
    kind = given[0]
    if checker.check_type(spec[kind], join(path, kind), "string") and kind == "regex":
        _regex(spec[kind], join(path, kind), checker)


def _percentage(obj: dict, path: str, checker: Checker) -> None:
    if obj.get("percentage") is None:
        return
    pct = checker.mapping(obj["percentage"], join(path, "percentage"), ("value",), ["value"])
    if pct is not None:
        checker.number_in(pct, "value", join(path, "percentage"), 0, 100)


def _http_route(value: Any, path: str, checker: Checker) -> None:
    http = checker.mapping(value, path, HTTP_FIELDS, required=("route",))
    if http is None:
        return
    checker.take(http, "name", path, "string")
    for i, match in enumerate(checker.take(http, "match", path, "list", default=[]) or []):
        here = item(join(path, "match"), i)
        spec = checker.mapping(match, here, MATCH_FIELDS)
        if spec is None:
            continue
        if spec.get("uri") is not None:
            _string_match(spec["uri"], join(here, "uri"), checker)
        if spec.get("method") is not None:
            _string_match(spec["method"], join(here, "method"), checker)
        headers = checker.take(spec, "headers", here, "mapping", default={}) or {}
        for name, condition in headers.items():
            _string_match(condition, join(join(here, "headers"), name), checker)
    routes = checker.take(http, "route", path, "list", default=[]) or []
    if not routes:
        checker.add(join(path, "route"), "no destinations", "add at least one destination")
    weights = []
    for i, route in enumerate(routes):
        here = item(join(path, "route"), i)
        spec = checker.mapping(route, here, ROUTE_FIELDS, required=("destination",))
        if spec is None:
            continue
        dest = checker.mapping(
            spec.get("destination", {}), join(here, "destination"), DESTINATION_FIELDS, ["host"]
        )
        if dest is not None:
            checker.take(dest, "host", join(here, "destination"), "string")
            checker.take(dest, "subset", join(here, "destination"), "string")
            if dest.get("port") is not None:
                port = checker.mapping(
                    dest["port"], join(here, "destination.port"), ("number",), ["number"]
                )
                if port is not None:
                    checker.int_in(port, "number", join(here, "destination.port"), 1, 65535)
        weight = checker.int_in(spec, "weight", here, 0, 100)
        weights.append(weight)
    given = [w for w in weights if w is not None]
    if len(routes) > 1 and len(given) == len(routes) and sum(given) != 100:
        checker.add(
            join(path, "route"),
            f"weights sum to {sum(given)}, not 100 ({' + '.join(map(str, given))})",
            "make the destinations' weights add up to 100",
        )
    elif len(routes) > 1 and len(given) != len(routes):
        checker.add(
            join(path, "route"),
            "with several destinations every one needs a weight",
            "give each destination a weight; the weights add up to 100",
        )
    _duration(http, "timeout", path, checker)
    if http.get("retries") is not None:
        here = join(path, "retries")
        retries = checker.mapping(http["retries"], here, RETRY_FIELDS, ["attempts"])
        if retries is not None:
            checker.int_in(retries, "attempts", here, 0, RETRIES_MAX)
            _duration(retries, "perTryTimeout", here, checker)
            on = checker.take(retries, "retryOn", here, "string")
            for word in (on or "").split(","):
                if word.strip() and word.strip() not in RETRY_ON and not word.strip().isdigit():
                    checker.add(
                        join(here, "retryOn"),
                        f"unknown retry condition {word.strip()!r}",
                        did_you_mean(word.strip(), RETRY_ON, "conditions"),
                    )
    if http.get("fault") is not None:
        here = join(path, "fault")
        fault = checker.mapping(http["fault"], here, FAULT_FIELDS) or {}
        if fault.get("delay") is not None:
            delay = checker.mapping(fault["delay"], join(here, "delay"), DELAY_FIELDS)
            if delay is not None:
                if delay.get("fixedDelay") is None:
                    checker.add(join(here, "delay.fixedDelay"), "required field is missing")
                _duration(delay, "fixedDelay", join(here, "delay"), checker)
                _percentage(delay, join(here, "delay"), checker)
        if fault.get("abort") is not None:
            abort = checker.mapping(fault["abort"], join(here, "abort"), ABORT_FIELDS)
            if abort is not None:
                if abort.get("httpStatus") is None:
                    checker.add(join(here, "abort.httpStatus"), "required field is missing")
                checker.int_in(abort, "httpStatus", join(here, "abort"), 200, 599)
                _percentage(abort, join(here, "abort"), checker)


def _policy(kind: str, manifest: Manifest, api: str) -> PolicySpec:
    body = copy.deepcopy(manifest.body)
    body["apiVersion"] = api
    return PolicySpec(kind, manifest.name, manifest.namespace, body)


def read_virtual_service(manifest: Manifest, value: Any, checker: Checker) -> PolicySpec | None:
    path = manifest.prefix + "spec"
    spec = checker.mapping(value, path, VS_FIELDS, required=("hosts",))
    if spec is None:
        return None
    hosts = checker.str_list(spec, "hosts", path)
    if hosts == []:
        checker.add(join(path, "hosts"), "no hosts", "name the Service, e.g. hosts: [reviews]")
    for i, gateway in enumerate(checker.str_list(spec, "gateways", path) or []):
        if gateway != "mesh":
            checker.add(
                item(join(path, "gateways"), i),
                f"gateway {gateway!r}: the lab has no ingress gateways",
                "remove gateways (or write [mesh]); routes apply to the sidecars",
            )
    checker.str_list(spec, "exportTo", path)
    for i, http in enumerate(checker.take(spec, "http", path, "list", default=[]) or []):
        _http_route(http, item(join(path, "http"), i), checker)
    return _policy("VirtualService", manifest, ISTIO_API)


def _traffic_policy(value: Any, path: str, checker: Checker) -> None:
    policy = checker.mapping(value, path, POLICY_FIELDS)
    if policy is None or policy.get("loadBalancer") is None:
        return
    here = join(path, "loadBalancer")
    lb = checker.mapping(policy["loadBalancer"], here, LB_FIELDS, ["simple"])
    if lb is not None and lb.get("simple") not in LB_POLICIES:
        checker.add(
            join(here, "simple"),
            f"load balancer {lb.get('simple')!r} is not supported",
            f"use one of {', '.join(LB_POLICIES)}",
        )


def read_destination_rule(manifest: Manifest, value: Any, checker: Checker) -> PolicySpec | None:
    path = manifest.prefix + "spec"
    spec = checker.mapping(value, path, DR_FIELDS, required=("host",))
    if spec is None:
        return None
    checker.take(spec, "host", path, "string")
    checker.str_list(spec, "exportTo", path)
    if spec.get("trafficPolicy") is not None:
        _traffic_policy(spec["trafficPolicy"], join(path, "trafficPolicy"), checker)
    seen: set[str] = set()
    for i, subset in enumerate(checker.take(spec, "subsets", path, "list", default=[]) or []):
        here = item(join(path, "subsets"), i)
        entry = checker.mapping(subset, here, SUBSET_FIELDS, required=("name",))
        if entry is None:
            continue
        name = checker.take(entry, "name", here, "string")
        if name in seen:
            checker.add(join(here, "name"), f"a second subset {name!r}", "rename one of them")
        seen.add(name)
        labels = checker.labels(entry, "labels", here)
        if labels == {}:
            checker.add(join(here, "labels"), "a subset needs labels", "e.g. labels: {version: v1}")
        if entry.get("trafficPolicy") is not None:
            _traffic_policy(entry["trafficPolicy"], join(here, "trafficPolicy"), checker)
    return _policy("DestinationRule", manifest, ISTIO_API)


def read_rate_limit(manifest: Manifest, value: Any, checker: Checker) -> PolicySpec | None:
    path = manifest.prefix + "spec"
    spec = checker.mapping(value, path, RL_FIELDS, required=("targetRef",))
    if spec is None:
        return None
    target = checker.mapping(
        spec.get("targetRef", {}), join(path, "targetRef"), TARGET_FIELDS, ["name"]
    )
    if target is not None:
        checker.take(target, "name", join(path, "targetRef"), "string")
        if target.get("kind", "Service") != "Service":
            checker.add(
                join(path, "targetRef.kind"),
                f"kind {target.get('kind')!r}: rate limits apply to Services",
                "write kind: Service",
            )
        if target.get("namespace", manifest.namespace) != manifest.namespace:
            checker.add(
                join(path, "targetRef.namespace"),
                "a rate limit applies to a Service of its own namespace",
                f"put the policy in namespace {target.get('namespace')!r}",
            )
    checker.take(spec, "route", path, "string")
    if spec.get("source") is not None:
        source = checker.mapping(spec["source"], join(path, "source"), SOURCE_FIELDS, ["service"])
        if source is not None:
            checker.take(source, "service", join(path, "source"), "string")
            checker.take(source, "namespace", join(path, "source"), "string")
    has_bucket, has_rps = (
        spec.get("tokenBucket") is not None,
        spec.get("requestsPerSecond") is not None,
    )
    if has_bucket == has_rps:
        checker.add(
            path,
            "give exactly one of tokenBucket and requestsPerSecond",
            "e.g. tokenBucket: {maxTokens: 10, tokensPerFill: 10, fillInterval: 1s}",
        )
    if has_rps:
        checker.int_in(spec, "requestsPerSecond", path, 1, TOKENS_MAX)
    if has_bucket:
        here = join(path, "tokenBucket")
        bucket = checker.mapping(spec["tokenBucket"], here, BUCKET_FIELDS, ["maxTokens"])
        if bucket is not None:
            checker.int_in(bucket, "maxTokens", here, 1, TOKENS_MAX)
            checker.int_in(bucket, "tokensPerFill", here, 1, TOKENS_MAX)
            _duration(bucket, "fillInterval", here, checker, low=0.001)
    return _policy("RateLimitPolicy", manifest, RATE_LIMIT_API)


def read_mesh(value: Any, checker: Checker) -> MeshSpec:
    """lab.mesh: {enabled: auto|true|false, tracing: {sampling: percent}}."""
    if value is None:
        return MeshSpec()
    conf = checker.mapping(value, "lab.mesh", MESH_FIELDS) or {}
    enabled = conf.get("enabled")
    if enabled is not None and enabled != "auto" and not isinstance(enabled, bool):
        checker.add("lab.mesh.enabled", f"{enabled!r} is not true, false or auto", "write auto")
        enabled = None
    tracing = checker.take(conf, "tracing", "lab.mesh", "mapping", default={}) or {}
    checker.mapping(tracing, "lab.mesh.tracing", TRACING_FIELDS)
    sampling = checker.number_in(tracing, "sampling", "lab.mesh.tracing", 0, 100, 100.0)
    return MeshSpec(
        enabled=None if enabled in (None, "auto") else enabled,
        sampling=100.0 if sampling is None else sampling,
    )


# ---------------------------------------------------------------- cross-checks


@dataclass
class MeshContext:
    """What the policies are checked against: every Service and DestinationRule
    that will exist (the lab's own and the new ones)."""

    services: Mapping[tuple[str, str], ServiceSpec]
    rules: list[PolicySpec] = field(default_factory=list)  # DestinationRules
    virtual_services: list[PolicySpec] = field(default_factory=list)
    zone: str = "cluster.local"


def _service(
    host: Any, namespace: str, path: str, ctx: MeshContext, checker: Checker
) -> ServiceSpec | None:
    if not isinstance(host, str):
        return None
    key = resolve_host(host, namespace, ctx.zone)
    service = ctx.services.get(key) if key else None
    if service is None:
        known = sorted(name for ns, name in ctx.services if ns == (key or (namespace,))[0])
        checker.add(
            path,
            f"no Service {host!r} in namespace {(key or (namespace,))[0]!r}",
            did_you_mean(host.split(".")[0], known, "Services"),
        )
    return service


def _subsets(ctx: MeshContext, service: ServiceSpec) -> set[str]:
    names: set[str] = set()
    for rule in ctx.rules:
        spec = rule.manifest.get("spec", {})
        key = resolve_host(spec.get("host", ""), rule.namespace, ctx.zone)
        if key == (service.namespace, service.name):
            names |= {s.get("name") for s in spec.get("subsets", []) if isinstance(s, dict)}
    return names


def check_mesh(policies: Iterable[PolicySpec], ctx: MeshContext, checker: Checker) -> None:
    """Hosts, destinations, subsets, ports and rate-limit scopes name what exists."""
    for policy in policies:
        prefix = f"{policy.kind}/{policy.name}: spec"
        spec = policy.manifest.get("spec", {})
        if policy.kind == "VirtualService":
            for i, host in enumerate(spec.get("hosts", [])):
                _service(host, policy.namespace, item(join(prefix, "hosts"), i), ctx, checker)
            for i, http in enumerate(spec.get("http", [])):
                for j, route in enumerate(http.get("route", [])):
                    here = join(
                        item(join(item(join(prefix, "http"), i), "route"), j), "destination"
                    )
                    dest = route.get("destination", {})
                    service = _service(
                        dest.get("host"), policy.namespace, join(here, "host"), ctx, checker
                    )
                    if service is None:
                        continue
                    subset = dest.get("subset")
                    if subset is not None and subset not in _subsets(ctx, service):
                        defined = sorted(_subsets(ctx, service) - {None})
                        checker.add(
                            join(here, "subset"),
                            f"no DestinationRule for {service.name!r} defines subset {subset!r}"
                            + (f" (defined: {', '.join(defined)})" if defined else ""),
                            "add it to the host's DestinationRule subsets, or fix the name",
                        )
                    number = (dest.get("port") or {}).get("number")
                    ports = [p.port for p in service.ports]
                    if number is not None and number not in ports:
                        checker.add(
                            join(here, "port.number"),
                            f"Service {service.name!r} has no port {number}",
                            f"use one of {', '.join(map(str, ports))}",
                        )
        elif policy.kind == "DestinationRule":
            _service(spec.get("host"), policy.namespace, join(prefix, "host"), ctx, checker)
        elif policy.kind == "RateLimitPolicy":
            target = spec.get("targetRef", {})
            here = join(prefix, "targetRef.name")
            service = _service(target.get("name"), policy.namespace, here, ctx, checker)
            route = spec.get("route")
            if service is not None and route is not None:
                names = _route_names(ctx, service)
                if route not in names:
                    checker.add(
                        join(prefix, "route"),
                        f"no VirtualService route named {route!r} for Service {service.name!r}",
                        did_you_mean(route, sorted(names), "routes")
                        if names
                        else "name a route (http[].name) in the Service's VirtualService",
                    )
            source = spec.get("source")
            if isinstance(source, dict):
                here = join(prefix, "source.service")
                ns = source.get("namespace", policy.namespace)
                _service(source.get("service"), ns, here, ctx, checker)


def _route_names(ctx: MeshContext, service: ServiceSpec) -> set[str]:
    names: set[str] = set()
    for vs in ctx.virtual_services:
        spec = vs.manifest.get("spec", {})
        hosts = [resolve_host(h, vs.namespace, ctx.zone) for h in spec.get("hosts", [])]
        if (service.namespace, service.name) in hosts:
            for i, http in enumerate(spec.get("http", [])):
                names.add(http.get("name") or f"{vs.name}-{i}")
    return names


def injected(template_labels: Mapping[str, str], namespace_labels: Mapping[str, str]) -> bool:
    """Istio's rule: the pod's label decides, else its namespace's (netlab.io/inject:
    "true", or Istio's own sidecar.istio.io/inject and istio-injection=enabled)."""
    for key in (INJECT_LABEL, "sidecar.istio.io/inject"):
        if key in template_labels:
            return template_labels[key] == "true"
    return (
        namespace_labels.get(INJECT_LABEL) == "true"
        or namespace_labels.get("istio-injection") == "enabled"
    )
